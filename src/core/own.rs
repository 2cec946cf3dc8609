//! What may legitimately be in our own slot (o2hb's rule: anything else is a foreign writer).
//!
//! Only we write our slot, so every sweep must find exactly one of the records we wrote: the last
//! one (verified), or one we wrote earlier whose write did not complete in time (it may land late,
//! even after a later write), or the last verified one (a later write has not landed: lost or
//! misdirected). Anything else (another host's record, a clone with another sequence, garbage) is
//! foreign, seen on the first sweep after it lands, within one interval.

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
    /// The last record whose write completed: on the disk even if never read back (the sweeps
    /// after it failed), however many failed writes followed and pushed it out of the ring (a
    /// whole-LUN ride-through makes more than `UNCONFIRMED` of them).
    completed: Option<Record>,
    /// Records that may be in the slot without having been read back: submitted but not
    /// completed (timed out or failed: they may land late), or completed but superseded before a
    /// sweep read them back. A ring, fixed size.
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
        // The previous record may be on the disk without having been read back (its write
        // completed, then the sweeps failed, or the next write was misdirected): still ours.
        if let Some((prev, _)) = self.latest {
            if self.verified != Some(prev) && !self.unconfirmed.contains(&Some(prev)) {
                self.remember(prev);
            }
        }
        self.latest = Some((record, at_ms));
    }

    fn remember(&mut self, record: Record) {
        self.unconfirmed[self.next] = Some(record);
        self.next = (self.next + 1) % UNCONFIRMED;
    }

    /// The latest write completed: it is on the disk, read back or not.
    pub fn completed(&mut self) {
        if let Some((r, _)) = self.latest {
            self.completed = Some(r);
        }
    }

    /// The latest write did not complete: it may still land.
    pub fn unconfirmed(&mut self) {
        if let Some((r, _)) = self.latest {
            if !self.unconfirmed.contains(&Some(r)) {
                self.remember(r);
            }
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
            // Written, then never read back until now (found by tests/sim.rs: hosts fenced for
            // a "foreign" write, their own, when their reads came back after an outage).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sequence: u64) -> Record {
        let mut r = Record::free(uuid::Uuid::from_u128(1), 0);
        r.sequence = sequence;
        r
    }

    #[test]
    fn a_completed_write_never_read_back_stays_ours() {
        let mut own = OwnWrites::default();
        own.submitted(rec(1), 10);
        own.completed();
        assert_eq!(own.check(Some(&rec(1))), OwnCheck::Latest);
        // Completed, but the sweeps after it failed: never read back.
        own.submitted(rec(2), 20);
        own.completed();
        // Then more failed writes than the ring remembers (a long ride-through).
        for s in 3..3 + UNCONFIRMED as u64 + 5 {
            own.submitted(rec(s), s * 10);
            own.unconfirmed();
        }
        // The reads come back: the slot still holds record 2, ours.
        assert_eq!(own.check(Some(&rec(2))), OwnCheck::Stale);
        assert_eq!(own.check(Some(&rec(1))), OwnCheck::Foreign, "older than what we read back");
    }

    #[test]
    fn a_completed_write_whose_successor_was_misdirected_stays_ours() {
        let mut own = OwnWrites::default();
        own.submitted(rec(1), 10);
        own.completed();
        assert_eq!(own.check(Some(&rec(1))), OwnCheck::Latest);
        own.submitted(rec(2), 20);
        own.completed();
        // Reported done but landed elsewhere; the sweep in between failed.
        own.submitted(rec(3), 30);
        own.completed();
        own.submitted(rec(4), 40);
        own.unconfirmed();
        assert_eq!(own.check(Some(&rec(2))), OwnCheck::Stale);
        assert_eq!(own.check(Some(&rec(7))), OwnCheck::Foreign);
    }
}
