//! What may legitimately be in our own slot (o2hb's rule: anything else is a foreign writer).
//!
//! Only we write our slot, so every sweep must find exactly one of the records we wrote: the last
//! one (verified), or one we wrote earlier whose write did not complete in time (it may land late,
//! even after a later write), or the last verified one (a later write has not landed: lost or
//! misdirected), or the last one whose write completed (never read back: the sweep after it
//! failed, and a later write failed too). Anything else (another host's record, a clone with
//! another sequence, garbage) is foreign, seen on the first sweep after it lands, within one
//! interval.

use crate::format::record::Record;

/// Unconfirmed writes remembered; an older one landing after it was forgotten is taken as foreign
/// (a fence: safe, and it takes more than this many consecutive timed-out writes).
pub const UNCONFIRMED: usize = 32;

/// How our slot's contents relate to what we wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnCheck {
    /// Exactly the last record we submitted: it is on the disk.
    Latest,
    /// An earlier record of ours (the last verified one, or a late write): not foreign, but our
    /// latest write is not (yet) there.
    Stale,
    /// Not something we wrote.
    Foreign,
}

/// The records we wrote that may be in our slot.
pub struct OwnWrites {
    /// The last record submitted, and when it was submitted.
    latest: Option<(Record, u64)>,
    /// The last record read back from the slot.
    verified: Option<Record>,
    /// The last record whose write completed: on the disk unless a later write landed.
    completed: Option<Record>,
    /// Submitted but not completed records (timed out or failed): a ring, fixed size.
    unconfirmed: Box<[Option<Record>; UNCONFIRMED]>,
    next: usize,
}

impl Default for OwnWrites {
    fn default() -> Self {
        OwnWrites {
            latest: None,
            verified: None,
            completed: None,
            unconfirmed: Box::new([None; UNCONFIRMED]),
            next: 0,
        }
    }
}

impl OwnWrites {
    pub fn submitted(&mut self, record: Record, at_ms: u64) {
        debug_assert!(self.latest.is_none_or(|(r, _)| r.sequence < record.sequence));
        self.latest = Some((record, at_ms));
    }

    /// The latest write completed: it is on the disk (until a later one lands).
    pub fn completed(&mut self) {
        if let Some((r, _)) = self.latest {
            self.completed = Some(r);
        }
    }

    /// The latest write did not complete: it may still land.
    pub fn unconfirmed(&mut self) {
        if let Some((r, _)) = self.latest {
            self.unconfirmed[self.next] = Some(r);
            self.next = (self.next + 1) % UNCONFIRMED;
        }
    }

    pub fn latest(&self) -> Option<(Record, u64)> {
        self.latest
    }

    /// Classifies the decoded contents of our slot (`None`: fails validation).
    pub fn check(&mut self, read: Option<&Record>) -> OwnCheck {
        let Some(read) = read else { return OwnCheck::Foreign };
        if let Some((latest, _)) = self.latest {
            if *read == latest {
                self.verified = Some(latest);
                return OwnCheck::Latest;
            }
        }
        if self.verified.as_ref() == Some(read) {
            return OwnCheck::Stale;
        }
        if self.completed.as_ref() == Some(read) {
            // Written, never read back (the sweep after it failed), and the writes since failed:
            // a disk outage of a cycle or more, not another writer.
            self.verified = Some(*read);
            return OwnCheck::Stale;
        }
        if let Some(i) = self.unconfirmed.iter().position(|u| u.as_ref() == Some(read)) {
            // A late landing: it cannot land twice.
            self.unconfirmed[i] = None;
            self.verified = Some(*read);
            return OwnCheck::Stale;
        }
        OwnCheck::Foreign
    }
}
