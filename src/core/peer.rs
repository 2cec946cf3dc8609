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
    /// Unchanged for the host-dead timeout and unheard, but never declared dead: its last record
    /// does not list this host, so it may be riding through a disk outage without knowing we
    /// exist ([`NotProven::NotListed`]; docs/SAFETY.md, "Whole-LUN loss").
    Silent,
    /// Fails validation: treated as not advancing.
    Corrupt,
    /// Never read successfully yet.
    Unread,
}

/// Why a peer's VMs are proven gone (docs/SAFETY.md, "What proves a host's VMs gone").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoneProof {
    /// Its record says `fenced`, written after a fence action that stops VMs succeeded.
    FencedMark,
    /// Dead (silent for host-dead on our reads) and its last record says a hardware watchdog was
    /// armed: the watchdog reset the host at most one io timeout after its last verified cycle.
    WatchdogExpired,
    /// An operator ran `diskbeat fence --confirm-down` after checking the host is off: its
    /// record was marked fenced on their word (flag `operator_confirmed`).
    OperatorConfirmed,
    /// Its fence device confirmed it powered off (`off`, then `status` OFF), asked by a pool
    /// member, which marked its record fenced (flag `fence_device`, format 1.8).
    FenceDevice,
}

/// Why a peer's VMs are NOT proven gone: never restart them elsewhere automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotProven {
    /// Still heartbeating (or not yet silent for host-dead).
    Alive,
    /// Left cleanly: a stopped daemon does not stop its VMs.
    LeftCleanly,
    /// Fenced with an action that does not stop VMs (log-only).
    FencedLogOnly,
    /// Self-fencing (or its fence action failed): not done.
    Fencing,
    /// Silent for host-dead but no watchdog armed: its daemon may have died with VMs running.
    DeadWithoutWatchdog,
    /// The slot reads corrupt: who holds it, and whether a watchdog is armed, cannot be known.
    Corrupt,
    /// Never held (free) or never read.
    NoHost,
    /// Silent on the disk and the network, but its last record does not list this host as a
    /// member: it may be riding through an outage of the disk without knowing we exist, so it is
    /// never declared dead on silence (docs/SAFETY.md, "Whole-LUN loss").
    NotListed,
    /// Its slot holds a member's fence intent (format 1.8): a copy of an older record of it that
    /// may have replaced a newer one (a clean leave, which disarms the watchdog), so its watchdog
    /// flag proves nothing; only its fence device (or an operator) can (docs/SAFETY.md, "Fence
    /// devices"; tests/sim.rs found the same with a host's own late write over its leave).
    FenceIntent,
}

impl GoneProof {
    /// The name status and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            GoneProof::FencedMark => "fenced_mark",
            GoneProof::WatchdogExpired => "watchdog_expired",
            GoneProof::OperatorConfirmed => "operator_confirmed",
            GoneProof::FenceDevice => "fence_device",
        }
    }
}

impl NotProven {
    /// The name status and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            NotProven::Alive => "alive",
            NotProven::LeftCleanly => "left_cleanly",
            NotProven::FencedLogOnly => "fenced_log_only",
            NotProven::Fencing => "fencing",
            NotProven::DeadWithoutWatchdog => "dead_without_watchdog",
            NotProven::Corrupt => "corrupt",
            NotProven::NoHost => "no_host",
            NotProven::NotListed => "not_listed",
            NotProven::FenceIntent => "fence_intent",
        }
    }

    /// `name: why`, for people.
    pub fn text(self) -> String {
        let why = match self {
            NotProven::Alive => "still heartbeating",
            NotProven::LeftCleanly => "its daemon left cleanly, and a stopped daemon does not stop its VMs",
            NotProven::FencedLogOnly => "it fenced itself with a log-only action, which stops nothing",
            NotProven::Fencing => "it is fencing itself, or its fence action failed",
            NotProven::DeadWithoutWatchdog => {
                "silent, but no hardware watchdog was armed: its daemon may have died with VMs running"
            }
            NotProven::Corrupt => "its record is corrupt: who holds the slot cannot be known",
            NotProven::NoHost => "no host holds the slot",
            NotProven::FenceIntent => {
                "a member's fence intent replaced its record, which may have hidden a clean leave: only \
                 its fence device confirming it off (asked again every T) or an operator (`diskbeat fence \
                 --confirm-down`) proves its VMs gone"
            }
            NotProven::NotListed => {
                "silent, but its last record does not list this host: it may be riding through a disk \
                 outage without knowing us, so silence is no evidence (back, or `diskbeat fence \
                 --confirm-down` once it is off)"
            }
        };
        format!("{}: {why}", self.name())
    }
}

impl PeerState {
    /// Whether the slot's host stopped heartbeating (for display); NOT a proof that its VMs are
    /// gone: use [`Peer::vms_gone`].
    pub fn is_silent(self) -> bool {
        matches!(
            self,
            PeerState::Dead | PeerState::Silent | PeerState::Leaving | PeerState::Fenced | PeerState::Free
        )
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
    /// `flags` of the last valid record (format 1.1).
    pub flags: u16,
    /// Who it hears on the network, per its last valid record.
    pub net_view: crate::format::record::NetView,
    /// Its partition weight, per its last valid record (format 1.4).
    pub weight: u32,
    /// Its data extent's sequence, per its last valid record: re-read the extent when it changes.
    pub extent_sequence: u64,
    /// Highest generation seen in this slot; a lower one later is flagged, never a restart.
    pub max_generation: u64,
    /// A record with a lower generation than one seen before was read (a stale or rogue writer).
    pub conflict: bool,
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
    /// Its ride-through membership, per its last valid record (format 1.7; `None`: an older
    /// writer, which caps its rides).
    pub members: Option<crate::format::record::Members>,
    /// `fencer_slot` of its last valid record (format 1.8; meaningful with `FENCE_INTENT` or
    /// `FENCE_DEVICE`).
    pub fencer_slot: u32,
}

/// What a host's silence on the disk can mean, by its newest record (docs/SAFETY.md, "Whole-LUN
/// loss").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceRule {
    /// Silent for host-dead (between two of our successful reads, unheard): dead.
    Evidence,
    /// A live, network-enabled writer older than format 1.7: it may ride through a disk outage
    /// for up to its cap (2 T past its storage deadline), which a recent joiner adds.
    Capped,
    /// A live, network-enabled writer whose ride-through membership does not include the
    /// reader: it may ride through for as long as its members vouch, without knowing the reader;
    /// its silence is never evidence for this reader.
    NotListed,
}

/// The rule for a writer whose newest record has `flags`, `state` and `members`, in a pool of
/// `slot_count` slots, read by `reader` (a slot; `None`: a tool that holds no slot).
pub fn silence_rule(
    flags: u16,
    state: crate::format::record::State,
    members: Option<crate::format::record::Members>,
    slot_count: u32,
    reader: Option<u32>,
) -> SilenceRule {
    use crate::format::record::{flags::NET_ENABLED, State, MEMBER_SLOTS};
    // Only a live writer with network heartbeats rides through, and only in pools whose every
    // slot a `members` bitmap can name.
    if slot_count > MEMBER_SLOTS || flags & NET_ENABLED == 0 || state != State::Live {
        return SilenceRule::Evidence;
    }
    match members {
        None => SilenceRule::Capped,
        Some(m) if reader.is_some_and(|r| m.get(r)) => SilenceRule::Evidence,
        Some(_) => SilenceRule::NotListed,
    }
}

/// A change of a peer's state worth reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    State {
        from: PeerState,
        to: PeerState,
    },
    Restarted {
        old_generation: u64,
        new_generation: u64,
    },
    /// The generation went backwards: a stale or rogue writer, flagged, never a restart.
    GenerationWentBack {
        from: u64,
        to: u64,
    },
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
            flags: 0,
            net_view: crate::format::record::NetView::EMPTY,
            weight: 0,
            extent_sequence: 0,
            max_generation: 0,
            conflict: false,
            corruption: None,
            unreadable: false,
            last_change_ms: 0,
            last_read_ms: 0,
            changed: false,
            seen: false,
            dead_at_ms: None,
            silent_ms_at_death: 0,
            members: None,
            fencer_slot: 0,
        }
    }
}

impl Peer {
    pub fn host_name(&self) -> &str {
        crate::format::decode_name(&self.host_name).unwrap_or("?")
    }

    /// Who may take this slot's silence as death, by its last valid record: `Some(members)` for a
    /// live, network-enabled 1.7 writer (only those it lists), `None` for anyone.
    pub fn silence_readers(&self, slot_count: u32) -> Option<crate::format::record::Members> {
        match silence_rule(self.flags, self.record_state, self.members, slot_count, None) {
            SilenceRule::NotListed => self.members,
            _ => None,
        }
    }

    /// How long its contents have been unchanged, as of a read starting at `now_ms`.
    pub fn silent_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_change_ms)
    }

    /// Age of the current contents as of our last successful read.
    pub fn age_ms(&self) -> u64 {
        self.last_read_ms.saturating_sub(self.last_change_ms)
    }

    /// A read of this slot failed: nothing changes, and in particular the peer does not age.
    pub fn read_failed(&mut self) {
        self.unreadable = true;
    }

    /// Whether this peer's VMs are proven gone, so they may be restarted elsewhere.
    pub fn vms_gone(&self) -> Result<GoneProof, NotProven> {
        use crate::format::record::flags;
        match self.state {
            PeerState::Fenced if self.flags & flags::OPERATOR_CONFIRMED != 0 => {
                Ok(GoneProof::OperatorConfirmed)
            }
            PeerState::Fenced if self.flags & flags::FENCE_DEVICE != 0 => Ok(GoneProof::FenceDevice),
            PeerState::Fenced if self.flags & flags::FENCE_STOPS_VMS != 0 => Ok(GoneProof::FencedMark),
            PeerState::Fenced => Err(NotProven::FencedLogOnly),
            PeerState::Dead if self.corruption.is_some() || self.conflict => Err(NotProven::Corrupt),
            PeerState::Dead if self.flags & flags::FENCE_INTENT != 0 => Err(NotProven::FenceIntent),
            PeerState::Dead if self.flags & flags::WATCHDOG_ARMED != 0 => Ok(GoneProof::WatchdogExpired),
            PeerState::Dead => Err(NotProven::DeadWithoutWatchdog),
            PeerState::Leaving => Err(NotProven::LeftCleanly),
            PeerState::SelfFencing => Err(NotProven::Fencing),
            PeerState::Corrupt => Err(NotProven::Corrupt),
            PeerState::Silent => Err(NotProven::NotListed),
            PeerState::Live | PeerState::Unknown => Err(NotProven::Alive),
            PeerState::Free | PeerState::Unread => Err(NotProven::NoHost),
        }
    }

    /// Updates from one successful read that started at `start_ms` and completed at `end_ms`.
    /// Returns up to two changes (a restart and a state change).
    ///
    /// `reset_gap_ms`: if our previous successful read of this slot started this long before,
    /// the silence clock restarts at this read. We could not read the disk for a while, so a host
    /// that rode through a whole-LUN loss on network evidence (docs/SAFETY.md, "Whole-LUN loss")
    /// must get a full host-dead from now, not from before the outage.
    ///
    /// `declarable`: whether silence may be taken as death at all ([`silence_rule`]); if not, a
    /// slot silent for `host_dead_ms` is [`PeerState::Silent`], never `Dead`.
    pub fn observe(
        &mut self,
        read: Result<&RecordRaw, Corruption>,
        start_ms: u64,
        end_ms: u64,
        host_dead_ms: u64,
        reset_gap_ms: u64,
        declarable: bool,
    ) -> [Option<PeerChange>; 2] {
        debug_assert!(start_ms <= end_ms);
        let mut changes = [None, None];
        let long_gap = self.seen && start_ms.saturating_sub(self.last_read_ms) >= reset_gap_ms;
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
                } else if generation < self.max_generation && raw.state() != State::Free {
                    // Older than a generation already seen: not a restart (a restart always bumps
                    // it). A change all the same when the contents changed: the clock restarts
                    // (the safe direction). The same stale record read again is no change: it
                    // ages like any other (else a slot left holding it looks live for ever).
                    if uuid != self.host_uuid || generation != self.generation || sequence != self.sequence {
                        changes[0] = Some(PeerChange::GenerationWentBack {
                            from: self.max_generation,
                            to: generation,
                        });
                        self.changed = true;
                        self.last_change_ms = end_ms;
                    }
                    self.conflict = true;
                } else if uuid != self.host_uuid || generation != self.generation {
                    self.conflict = false;
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
                self.max_generation =
                    if raw.state() == State::Free { 0 } else { self.max_generation.max(generation) };
                self.sequence = sequence;
                self.record_state = raw.state();
                self.flags = raw.flags.get();
                self.net_view = crate::format::record::NetView(raw.net_view);
                self.weight = raw.weight.get();
                self.extent_sequence = raw.extent_sequence.get();
                self.members = raw.members();
                self.fencer_slot = raw.fencer_slot.get();
            }
        }
        if long_gap {
            self.last_change_ms = self.last_change_ms.max(end_ms);
        }
        let silent_ms = start_ms.saturating_sub(self.last_change_ms);
        let held_state = if silent_ms >= host_dead_ms && declarable {
            PeerState::Dead
        } else if silent_ms >= host_dead_ms {
            PeerState::Silent
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
