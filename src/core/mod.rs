//! The membership core: pure, deterministic, no I/O, no clock.
//!
//! The daemon drives it once per heartbeat interval:
//! 1. `record_to_write(now)`: the record to write this cycle, if any;
//! 2. the daemon writes it and sweeps the record table (+ own mailbox);
//! 3. `handle_cycle(input)`: the write outcome, the sweep's bytes and its start/end times;
//! 4. `poll_event()` for things to log, `fence_due()` for a fence action to carry out;
//! 5. `check_deadline(now)` may be called at any time (the self-fence deadline does not wait for I/O).
//!
//! Times are the daemon's monotonic milliseconds, passed in. Nothing here allocates after `new`.

pub mod peer;

pub use peer::{Peer, PeerChange, PeerState};

use crate::format::mailbox::{Command, Mailbox};
use crate::format::record::{NetView, Record, RecordRaw, State};
use crate::format::{Corruption, NAME_LEN};
use crate::io::Status;
use crate::stats::Histogram;
use crate::timing::Timing;
use std::collections::VecDeque;

/// Source of one sweep's bytes (the disk in the daemon, memory in the simulator).
pub trait SlotSource {
    fn slot(&self, slot: u32) -> Result<&[u8], Status>;
    fn mailbox(&self) -> Result<&[u8], Status>;
}

impl SlotSource for crate::disk::Disk {
    fn slot(&self, slot: u32) -> Result<&[u8], Status> {
        self.slot_bytes(slot)
    }
    fn mailbox(&self) -> Result<&[u8], Status> {
        self.mailbox_bytes()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CoreConfig {
    pub slot: u32,
    pub slot_count: u32,
    pub cluster_uuid: uuid::Uuid,
    /// Random per daemon start: a restart is a new incarnation.
    pub host_uuid: uuid::Uuid,
    pub host_name: [u8; NAME_LEN],
    pub timing: Timing,
}

/// One heartbeat cycle's results.
pub struct CycleInput<'a> {
    /// When the write was submitted (or the cycle started, if nothing was written).
    pub cycle_start_ms: u64,
    /// Outcome of writing `record_to_write`'s record, if one was written.
    pub write: Option<(Status, u64)>,
    pub sweep_start_ms: u64,
    pub sweep_end_ms: u64,
    /// The sweep ran (individual slots may still have failed); false: the engine itself failed.
    pub sweep_ran: bool,
    pub sweep_latency_us: u64,
    pub slots: &'a dyn SlotSource,
}

/// Why this host fences itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum FenceReason {
    /// No successful write and sweep within the self-fence deadline.
    StorageLost { since_ms: u64 },
    /// Another writer is using our slot.
    ForeignWrite,
    /// A fence request arrived in our mailbox.
    FenceRequest { sender_slot: u32, request_id: u64 },
}

/// Why this host will not (or no longer) use its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The slot's record is advancing: another host uses it.
    SlotInUse { host_name: [u8; NAME_LEN] },
    /// While joining, something else was written into our slot.
    ForeignDuringJoin,
    /// The slot could not be read or written for the host-dead timeout while acquiring.
    Storage,
}

/// This host's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Watching our slot before taking it.
    Acquiring,
    /// `joining` written; waiting 2 x io timeout before verifying it, then writing and reading
    /// back a first `live` heartbeat.
    Joining,
    Live,
    SelfFencing(FenceReason),
    Fenced(FenceReason),
    /// A clean leave is being written.
    Leaving,
    /// Stopped after a clean leave (or before ever writing).
    Stopped,
    Refused(RefuseReason),
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Acquiring => "acquiring",
            Phase::Joining => "joining",
            Phase::Live => "live",
            Phase::SelfFencing(_) => "self_fencing",
            Phase::Fenced(_) => "fenced",
            Phase::Leaving => "leaving",
            Phase::Stopped => "stopped",
            Phase::Refused(_) => "refused",
        }
    }
}

/// Something to log or report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Our slot holds a record that might be in use: watching it before taking it.
    WaitingForSlot {
        holder: [u8; NAME_LEN],
        wait_ms: u64,
    },
    Joined {
        generation: u64,
    },
    Live {
        generation: u64,
    },
    Refused(RefuseReason),
    SelfFence(FenceReason),
    Left,
    Peer {
        slot: u32,
        change: PeerChange,
    },
    PeerCorrupt {
        slot: u32,
        reason: Corruption,
    },
    /// Our own write or read failed this cycle.
    CycleFailed {
        write: Option<Status>,
        own_read: Option<Status>,
    },
    SlowWrite {
        latency_us: u64,
    },
    SlowSweep {
        latency_us: u64,
    },
    MailboxTest {
        sender_slot: u32,
        request_id: u64,
    },
    MailboxCorrupt {
        reason: Corruption,
    },
}

const EVENT_CAPACITY: usize = 4096;

/// Acquisition bookkeeping.
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// (uuid, generation, sequence) of the watched record, or None for corrupt contents.
    value: Option<(uuid::Uuid, u64, u64)>,
    since_ms: u64,
}

pub struct Core {
    cfg: CoreConfig,
    phase: Phase,
    /// The record we last wrote (or are about to write).
    record: Record,
    /// Whether `record` must be written this cycle.
    write_pending: bool,
    started_ms: u64,
    watch: Option<Watch>,
    join_written_ms: Option<u64>,
    /// The join was verified: a `live` heartbeat is being written; live once it is read back.
    join_verified: bool,
    /// Submission time of the join write: peers may take it for dead host-dead after this.
    join_submitted_ms: u64,
    /// Submission time of the write of the last successful cycle (see docs/SAFETY.md).
    last_ok_ms: u64,
    /// Mailbox request id present when we joined: stale, never acted on.
    mailbox_ignore: u64,
    fence_pending: bool,
    skip_watch: bool,
    peers: Vec<Peer>,
    events: VecDeque<Event>,
    events_dropped: u64,
    pub write_latency: Histogram,
    pub sweep_latency: Histogram,
    pub cycles: u64,
    pub failed_cycles: u64,
}

impl Core {
    pub fn new(cfg: CoreConfig, now_ms: u64) -> Core {
        assert!(cfg.slot < cfg.slot_count);
        cfg.timing.check().expect("timing checked by the caller");
        let mut record = Record::free(cfg.cluster_uuid, cfg.slot);
        record.host_uuid = cfg.host_uuid;
        record.host_name = cfg.host_name;
        record.io_timeout_ms = cfg.timing.io_timeout_ms;
        record.interval_ms = cfg.timing.interval_ms;
        record.net_view.set(cfg.slot, true);
        Core {
            cfg,
            phase: Phase::Acquiring,
            record,
            write_pending: false,
            started_ms: now_ms,
            watch: None,
            join_written_ms: None,
            join_verified: false,
            join_submitted_ms: 0,
            last_ok_ms: now_ms,
            mailbox_ignore: 0,
            fence_pending: false,
            skip_watch: false,
            peers: vec![Peer::default(); cfg.slot_count as usize],
            events: VecDeque::with_capacity(EVENT_CAPACITY),
            events_dropped: 0,
            write_latency: Histogram::default(),
            sweep_latency: Histogram::default(),
            cycles: 0,
            failed_cycles: 0,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }
    /// The record we last wrote (or will write next).
    pub fn record(&self) -> &Record {
        &self.record
    }
    pub fn last_ok_ms(&self) -> u64 {
        self.last_ok_ms
    }
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    fn emit(&mut self, e: Event) {
        if self.events.len() == EVENT_CAPACITY {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the next cycle should start.
    pub fn next_cycle_ms(&self, cycle_start_ms: u64) -> u64 {
        cycle_start_ms + u64::from(self.cfg.timing.interval_ms)
    }

    /// The latest moment by which this host must have fenced itself if no cycle succeeds.
    /// Still set while a decided fence waits for its `self_fencing` mark: the mark must never delay
    /// the action past the deadline (the backup thread and the I/O bound stay armed).
    pub fn fence_deadline_ms(&self) -> Option<u64> {
        let armed = match self.phase {
            Phase::Live => true,
            Phase::SelfFencing(_) => self.fence_pending,
            _ => false,
        };
        armed.then(|| self.last_ok_ms + u64::from(self.cfg.timing.self_fence_ms))
    }

    /// Whether the phase still writes heartbeats (the daemon keeps cycling).
    pub fn is_running(&self) -> bool {
        !matches!(self.phase, Phase::Stopped | Phase::Refused(_))
    }

    /// The record to write this cycle, or None. Bumps the sequence.
    pub fn record_to_write(&mut self, now_ms: u64) -> Option<Record> {
        let write = match self.phase {
            Phase::Live => true,
            Phase::Acquiring | Phase::Joining | Phase::Leaving | Phase::SelfFencing(_) | Phase::Fenced(_) => {
                self.write_pending
            }
            Phase::Stopped | Phase::Refused(_) => false,
        };
        if !write {
            return None;
        }
        self.record.sequence += 1;
        self.record.monotonic_ms = now_ms;
        self.write_pending = true;
        Some(self.record)
    }

    /// Test only: take the slot at the first read, without watching it for the host-dead timeout.
    /// Lets two daemons be forced onto one slot to exercise foreign-write detection.
    pub fn skip_acquire_wait(&mut self) {
        self.skip_watch = true;
    }

    /// Requests a clean leave (SIGTERM): `leaving` is written next cycle, then the core stops.
    pub fn leave(&mut self) {
        match self.phase {
            Phase::Acquiring | Phase::Refused(_) => self.phase = Phase::Stopped,
            Phase::Joining | Phase::Live => {
                self.phase = Phase::Leaving;
                self.record.state = State::Leaving;
                self.write_pending = true;
            }
            // A fenced host stays fenced: its record already says so.
            Phase::SelfFencing(_) | Phase::Fenced(_) | Phase::Leaving | Phase::Stopped => {
                if matches!(self.phase, Phase::Fenced(_)) {
                    self.phase = Phase::Stopped;
                }
            }
        }
    }

    /// Self-fences now if no cycle succeeded within the deadline. Callable at any time.
    pub fn check_deadline(&mut self, now_ms: u64) {
        if let Some(deadline) = self.fence_deadline_ms() {
            if now_ms >= deadline {
                if matches!(self.phase, Phase::SelfFencing(_)) {
                    // Out of time for the mark: act now.
                    self.write_pending = false;
                } else {
                    self.self_fence(FenceReason::StorageLost { since_ms: self.last_ok_ms });
                }
            }
        }
    }

    fn self_fence(&mut self, reason: FenceReason) {
        if matches!(self.phase, Phase::SelfFencing(_) | Phase::Fenced(_)) {
            return;
        }
        self.emit(Event::SelfFence(reason));
        self.phase = Phase::SelfFencing(reason);
        self.fence_pending = true;
        // Mark `self_fencing` first only when the disk is known writable and the slot is ours.
        self.write_pending = matches!(reason, FenceReason::FenceRequest { .. });
        self.record.state = State::SelfFencing;
        if let FenceReason::FenceRequest { request_id, .. } = reason {
            self.record.mailbox_ack = request_id;
        }
    }

    /// The fence action to carry out now, once. The mark (if any) has been attempted first.
    pub fn fence_due(&mut self) -> Option<FenceReason> {
        match self.phase {
            Phase::SelfFencing(reason) if self.fence_pending && !self.write_pending => {
                self.fence_pending = false;
                Some(reason)
            }
            _ => None,
        }
    }

    /// The fence action ran and the host survived it (log-only, exec): mark `fenced`.
    pub fn fence_done(&mut self) {
        if let Phase::SelfFencing(reason) = self.phase {
            self.phase = Phase::Fenced(reason);
            self.record.state = State::Fenced;
            // Never write into a slot another host is using.
            self.write_pending = reason != FenceReason::ForeignWrite;
        }
    }

    /// Processes one cycle.
    pub fn handle_cycle(&mut self, input: &CycleInput<'_>) {
        self.cycles += 1;
        let t = self.cfg.timing;
        let wrote = input.write.map(|(s, _)| s);
        if let Some((_, us)) = input.write {
            self.write_latency.record(us);
            if us > u64::from(t.io_timeout_ms) * 1000 / 2 {
                self.emit(Event::SlowWrite { latency_us: us });
            }
        }
        if input.sweep_ran {
            self.sweep_latency.record(input.sweep_latency_us);
            if input.sweep_latency_us > u64::from(t.io_timeout_ms) * 1000 / 2 {
                self.emit(Event::SlowSweep { latency_us: input.sweep_latency_us });
            }
        }
        let write_done = wrote == Some(Status::Done);
        if wrote.is_some() {
            // Pending writes are attempted once (marks) or every cycle (heartbeats).
            self.write_pending = false;
        }
        if input.sweep_ran {
            self.update_peers(input);
        }
        let own = if input.sweep_ran { input.slots.slot(self.cfg.slot) } else { Err(Status::Busy) };
        match self.phase {
            Phase::Acquiring => self.acquire(own, input, wrote),
            Phase::Joining => self.verify_join(own, input, write_done),
            Phase::Live => self.live_cycle(own, input, write_done, wrote),
            Phase::Leaving if wrote.is_some() => {
                self.phase = Phase::Stopped;
                self.emit(Event::Left);
            }
            _ => {}
        }
    }

    fn update_peers(&mut self, input: &CycleInput<'_>) {
        let cluster = self.cfg.cluster_uuid;
        let host_dead_ms = u64::from(self.cfg.timing.host_dead_ms);
        for slot in 0..self.cfg.slot_count {
            if slot == self.cfg.slot {
                continue;
            }
            let peer = &mut self.peers[slot as usize];
            let changes = match input.slots.slot(slot) {
                Err(_) => {
                    peer.read_failed();
                    continue;
                }
                Ok(bytes) => {
                    let read = Record::validate(bytes, &cluster, slot);
                    let was_corrupt = peer.corruption;
                    let changes = peer.observe(read, input.sweep_start_ms, input.sweep_end_ms, host_dead_ms);
                    if let (Err(reason), None) = (read, was_corrupt) {
                        self.emit(Event::PeerCorrupt { slot, reason });
                    }
                    changes
                }
            };
            for change in changes.into_iter().flatten() {
                self.emit(Event::Peer { slot, change });
            }
        }
    }

    fn acquire(&mut self, own: Result<&[u8], Status>, input: &CycleInput<'_>, wrote: Option<Status>) {
        let t = self.cfg.timing;
        if let Some(status) = wrote {
            // Our `joining` write.
            if status == Status::Done {
                self.phase = Phase::Joining;
                self.join_written_ms = Some(input.sweep_start_ms);
                self.join_submitted_ms = input.cycle_start_ms;
                self.emit(Event::Joined { generation: self.record.generation });
            }
            return;
        }
        // Give up when the slot cannot be read, or our join cannot be written, for twice the
        // host-dead timeout.
        if self.watch.is_none()
            && input.sweep_start_ms.saturating_sub(self.started_ms) >= 2 * u64::from(t.host_dead_ms)
        {
            return self.refuse(RefuseReason::Storage);
        }
        if self.write_pending {
            return;
        }
        let Ok(bytes) = own else { return };
        let read = Record::validate(bytes, &self.cfg.cluster_uuid, self.cfg.slot);
        let value =
            read.ok().map(|r| (uuid::Uuid::from_bytes(r.host_uuid), r.generation.get(), r.sequence.get()));
        let free_now =
            matches!(read, Ok(r) if matches!(r.state(), State::Free | State::Leaving | State::Fenced));
        match self.watch {
            Some(w) if w.value.is_some() && value != w.value => {
                // Moved while we watched: another host is using the slot.
                let holder = read.map(|r| r.host_name).unwrap_or([0; NAME_LEN]);
                if !free_now {
                    return self.refuse(RefuseReason::SlotInUse { host_name: holder });
                }
            }
            _ => {}
        }
        if free_now || (self.skip_watch && read.is_ok()) {
            return self.start_join(read.expect("valid"));
        }
        match self.watch {
            None => {
                let holder = read.map(|r| r.host_name).unwrap_or([0; NAME_LEN]);
                self.watch = Some(Watch { value, since_ms: input.sweep_end_ms });
                self.emit(Event::WaitingForSlot { holder, wait_ms: u64::from(t.host_dead_ms) });
            }
            Some(w) if w.value.is_none() && value.is_some() => {
                // Was corrupt, now a valid held record: someone wrote it.
                let holder = read.map(|r| r.host_name).unwrap_or([0; NAME_LEN]);
                self.refuse(RefuseReason::SlotInUse { host_name: holder });
            }
            Some(w) => {
                if input.sweep_start_ms.saturating_sub(w.since_ms) >= u64::from(t.host_dead_ms) {
                    // Unchanged for the host-dead timeout between two successful reads: the
                    // previous owner has fenced itself or died.
                    match read {
                        Ok(r) => self.start_join(r),
                        Err(_) => {
                            let (g, s) = (self.record.generation, self.record.sequence);
                            self.begin_join_record(g, s)
                        }
                    }
                }
            }
        }
    }

    fn start_join(&mut self, current: &RecordRaw) {
        self.begin_join_record(current.generation.get(), current.sequence.get());
    }

    fn begin_join_record(&mut self, generation: u64, sequence: u64) {
        self.record.generation = generation + 1;
        self.record.sequence = sequence;
        self.record.state = State::Joining;
        self.write_pending = true;
    }

    fn refuse(&mut self, reason: RefuseReason) {
        self.phase = Phase::Refused(reason);
        self.write_pending = false;
        self.emit(Event::Refused(reason));
    }

    fn verify_join(&mut self, own: Result<&[u8], Status>, input: &CycleInput<'_>, write_done: bool) {
        let t = self.cfg.timing;
        let written = self.join_written_ms.expect("set when joining");
        let Ok(bytes) = own else {
            if input.sweep_start_ms - written > u64::from(t.host_dead_ms) {
                self.refuse(RefuseReason::Storage);
            }
            return;
        };
        let read = Record::decode(bytes, &self.cfg.cluster_uuid, self.cfg.slot);
        let ours = read == Ok(self.record);
        if self.join_verified {
            // Live only once a `live` heartbeat was written and read back: the self-fence deadline
            // must count from a write peers can see, never from the older join write. And that
            // heartbeat must land well before peers could take the silent join record for dead
            // (host-dead after its submission), or a slow sweep that read the join record could
            // declare us dead just after we went live (both found by tests/sim.rs). One interval
            // of margin covers clock rate differences between hosts.
            let live_by = self.join_submitted_ms + u64::from(t.host_dead_ms) - u64::from(t.interval_ms);
            let in_time = input.sweep_start_ms < live_by;
            if write_done && ours && in_time {
                self.phase = Phase::Live;
                self.last_ok_ms = input.cycle_start_ms;
                self.emit(Event::Live { generation: self.record.generation });
                return;
            }
            // An older write of ours (the join, or a timed-out attempt landing late) is fine.
            let older_ours = matches!(read, Ok(r) if r.host_uuid == self.record.host_uuid
                && r.generation == self.record.generation
                && r.sequence < self.record.sequence);
            if !ours && !older_ours {
                return self.refuse(RefuseReason::ForeignDuringJoin);
            }
            if !in_time {
                return self.refuse(RefuseReason::Storage);
            }
            self.write_pending = true;
            return;
        }
        if !ours {
            return self.refuse(RefuseReason::ForeignDuringJoin);
        }
        if input.sweep_start_ms.saturating_sub(written) < 2 * u64::from(t.io_timeout_ms) {
            return;
        }
        // Requests that were in our mailbox before we joined are not for this incarnation.
        if let Ok(Ok(m)) =
            input.slots.mailbox().map(|b| Mailbox::decode(b, &self.cfg.cluster_uuid, self.cfg.slot))
        {
            self.mailbox_ignore = m.request_id;
            self.record.mailbox_ack = m.request_id;
        }
        self.join_verified = true;
        self.record.state = State::Live;
        self.write_pending = true;
    }

    fn live_cycle(
        &mut self,
        own: Result<&[u8], Status>,
        input: &CycleInput<'_>,
        write_done: bool,
        wrote: Option<Status>,
    ) {
        // Our own slot must hold exactly what we last wrote.
        let own_ok = match own {
            Err(_) => false,
            Ok(bytes) => match Record::decode(bytes, &self.cfg.cluster_uuid, self.cfg.slot) {
                Ok(r) if r == self.record => true,
                // An older write of ours (one that timed out may land late): not foreign.
                Ok(r)
                    if r.host_uuid == self.record.host_uuid
                        && r.generation == self.record.generation
                        && r.sequence < self.record.sequence =>
                {
                    false
                }
                _ => return self.self_fence(FenceReason::ForeignWrite),
            },
        };
        let mailbox = input.slots.mailbox();
        let mailbox_ok = mailbox.is_ok();
        if let Ok(bytes) = mailbox {
            match Mailbox::decode(bytes, &self.cfg.cluster_uuid, self.cfg.slot) {
                Ok(m)
                    if m.request_id != 0
                        && m.request_id != self.mailbox_ignore
                        && m.request_id != self.record.mailbox_ack =>
                {
                    match m.command {
                        Command::Fence => {
                            return self.self_fence(FenceReason::FenceRequest {
                                sender_slot: m.sender_slot,
                                request_id: m.request_id,
                            })
                        }
                        Command::Test => {
                            self.record.mailbox_ack = m.request_id;
                            self.emit(Event::MailboxTest {
                                sender_slot: m.sender_slot,
                                request_id: m.request_id,
                            });
                        }
                        Command::None => {}
                    }
                }
                Ok(_) => {}
                Err(reason) => self.emit(Event::MailboxCorrupt { reason }),
            }
        }
        if write_done && own_ok && mailbox_ok {
            self.last_ok_ms = input.cycle_start_ms;
        } else {
            self.failed_cycles += 1;
            let own_read = if own_ok { None } else { Some(own.err().unwrap_or(Status::Done)) };
            self.emit(Event::CycleFailed { write: wrote.filter(|s| *s != Status::Done), own_read });
        }
        self.check_deadline(input.sweep_end_ms);
    }

    /// This host's network view (filled by the network layer in a later phase).
    pub fn set_net_view(&mut self, view: NetView) {
        self.record.net_view = view;
    }
}

#[cfg(test)]
mod tests;
