//! Liveness of one peer slot, judged only from our own successful reads on our own clock.

use crate::format::record::{RecordRaw, State};
use crate::format::{Corruption, NAME_LEN};

/// What this host believes about a peer slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// A free record.
    Free,
    /// Held, but not yet seen to advance since we started watching.
    Unknown,
    /// Advancing.
    Live,
    /// Marked itself self-fencing; not yet fenced.
    SelfFencing,
    /// Left cleanly.
    Leaving,
    /// Marked itself fenced.
    Fenced,
    /// Unchanged for the host-dead timeout between two of our successful reads.
    Dead,
    /// Fails validation: treated as not advancing.
    Corrupt,
    /// Never read successfully yet.
    Unread,
}

impl PeerState {
    /// States in which the host cannot be running VMs: safe to restart them elsewhere.
    pub fn is_gone(self) -> bool {
        matches!(self, PeerState::Dead | PeerState::Leaving | PeerState::Fenced | PeerState::Free)
    }
}

/// Tracking of one slot. Times are our monotonic milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub state: PeerState,
    pub host_uuid: uuid::Uuid,
    pub host_name: [u8; NAME_LEN],
    pub generation: u64,
    pub sequence: u64,
    pub record_state: State,
    pub corruption: Option<Corruption>,
    /// Whether the last read of this slot failed.
    pub unreadable: bool,
    /// Completion time of the read that first saw the current contents.
    pub last_change_ms: u64,
    /// Start time of the last successful read.
    pub last_read_ms: u64,
    /// The slot has been seen to change (sequence or generation) since we started.
    changed: bool,
    seen: bool,
    /// When it was declared dead, and how long it had been silent then.
    pub dead_at_ms: Option<u64>,
    pub silent_ms_at_death: u64,
}

/// A change of a peer's state worth reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    State { from: PeerState, to: PeerState },
    Restarted { old_generation: u64, new_generation: u64 },
}

impl Default for Peer {
    fn default() -> Self {
        Peer {
            state: PeerState::Unread,
            host_uuid: uuid::Uuid::nil(),
            host_name: [0; NAME_LEN],
            generation: 0,
            sequence: 0,
            record_state: State::Free,
            corruption: None,
            unreadable: false,
            last_change_ms: 0,
            last_read_ms: 0,
            changed: false,
            seen: false,
            dead_at_ms: None,
            silent_ms_at_death: 0,
        }
    }
}

impl Peer {
    pub fn host_name(&self) -> &str {
        crate::format::decode_name(&self.host_name).unwrap_or("?")
    }

    /// Age of the current contents as of our last successful read.
    pub fn age_ms(&self) -> u64 {
        self.last_read_ms.saturating_sub(self.last_change_ms)
    }

    /// A read of this slot failed: nothing changes, and in particular the peer does not age.
    pub fn read_failed(&mut self) {
        self.unreadable = true;
    }

    /// Updates from one successful read that started at `start_ms` and completed at `end_ms`.
    /// Returns up to two changes (a restart and a state change).
    pub fn observe(
        &mut self,
        read: Result<&RecordRaw, Corruption>,
        start_ms: u64,
        end_ms: u64,
        host_dead_ms: u64,
    ) -> [Option<PeerChange>; 2] {
        debug_assert!(start_ms <= end_ms);
        let mut changes = [None, None];
        // Our previous read of this slot failed: we cannot know what happened meanwhile.
        let gap = self.unreadable;
        self.unreadable = false;
        self.last_read_ms = start_ms;
        let before = self.state;
        match read {
            Err(c) => {
                // Contents we cannot trust never reset the clock while they stay corrupt. But
                // corruption seen after valid contents, or after reads of ours that failed, starts
                // it: the slot may have advanced until just before (a torn read after a read
                // outage of ours must not declare a live peer dead at once; found by tests/sim.rs).
                if !self.seen || self.corruption.is_none() || gap {
                    self.seen = true;
                    self.last_change_ms = end_ms;
                }
                self.corruption = Some(c);
            }
            Ok(raw) => {
                self.corruption = None;
                let uuid = uuid::Uuid::from_bytes(raw.host_uuid);
                let (generation, sequence) = (raw.generation.get(), raw.sequence.get());
                if !self.seen {
                    self.seen = true;
                    self.last_change_ms = end_ms;
                } else if uuid != self.host_uuid || generation != self.generation {
                    if raw.state() != State::Free && self.generation != 0 {
                        changes[0] = Some(PeerChange::Restarted {
                            old_generation: self.generation,
                            new_generation: generation,
                        });
                    }
                    self.changed = true;
                    self.last_change_ms = end_ms;
                } else if sequence != self.sequence {
                    self.changed = true;
                    self.last_change_ms = end_ms;
                }
                self.host_uuid = uuid;
                self.host_name = raw.host_name;
                self.generation = generation;
                self.sequence = sequence;
                self.record_state = raw.state();
            }
        }
        let silent_ms = start_ms.saturating_sub(self.last_change_ms);
        let held_state = if silent_ms >= host_dead_ms {
            PeerState::Dead
        } else if self.corruption.is_some() {
            PeerState::Corrupt
        } else if !self.changed {
            PeerState::Unknown
        } else if self.record_state == State::SelfFencing {
            PeerState::SelfFencing
        } else {
            PeerState::Live
        };
        self.state = match (self.corruption, self.record_state) {
            (Some(_), _) if held_state == PeerState::Dead => PeerState::Dead,
            (Some(_), _) => PeerState::Corrupt,
            (None, State::Free) => PeerState::Free,
            (None, State::Leaving) => PeerState::Leaving,
            (None, State::Fenced) => PeerState::Fenced,
            (None, _) => held_state,
        };
        if self.state == PeerState::Dead && before != PeerState::Dead {
            self.dead_at_ms = Some(start_ms);
            self.silent_ms_at_death = silent_ms;
        } else if self.state != PeerState::Dead {
            self.dead_at_ms = None;
        }
        if self.state != before {
            changes[1] = Some(PeerChange::State { from: before, to: self.state });
        }
        changes
    }
}
