//! [`Node`]: the whole heartbeat loop of one host as a pure state machine.
//!
//! A cycle, every interval: **sweep** (record table + own mailbox + superblock, one submission),
//! judge it, then **write** the next record. Sweeping first means every sweep checks our slot
//! against what we wrote during the whole interval before it: a foreign writer is seen within one
//! interval, whenever it writes (o2hb's rule). Our write is verified by the next sweep; the
//! self-fence clock counts from the submission of the last write read back (docs/SAFETY.md).
//!
//! States, each one screen: [`Acquire`] and [`Join`] (the slot lease), `Live`, [`Fencing`] (mark,
//! action, retries), `Fenced`, `Leaving`, and the terminal ones. The cycle position is [`Step`].

use super::net::NetState;
use super::own::{OwnCheck, OwnWrites};
use super::partition::{self, Decision, Host, NoDecision, SlotSet};
use super::PeerState;
use super::{silence_rule, EXIT_FENCED, EXIT_FENCE_FAILED, EXIT_LEFT, EXIT_REFUSED};
use super::{
    Action, DeviceAbort, DeviceOutcome, Event, FenceOutcome, FenceReason, IoFailure, NodeConfig, Peer, Phase,
    RefuseReason, RideStatus, SilenceRule, SlotSource,
};
use crate::format::mailbox::{Command, Mailbox};
use crate::format::record::NetView;
use crate::format::record::{flags, Members, Record, State, MEMBER_SLOTS};
use crate::format::NAME_LEN;
use crate::net::packet::{flags as packet_flags, DISK_AGE_NEVER};
use crate::net::{DropReason, Packet};
use crate::stats::Histogram;
use std::collections::VecDeque;

pub(crate) const EVENT_CAPACITY: usize = 4096;
const ACTION_CAPACITY: usize = 8;
/// Peers one host fences through their devices at once; more suspects wait for a free job.
pub const DEVICE_JOBS: usize = 8;

/// Where a fence-device job is (docs/SAFETY.md, "Fence devices"): intent written and read back,
/// device called, proof written and read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DevStage {
    /// Our intent goes into the slot after this cycle's own write.
    IntentDue,
    IntentWriting,
    /// The intent write completed then: a sweep starting later must read it back.
    IntentWritten {
        at_ms: u64,
    },
    /// The device is being called (since then).
    Calling {
        since_ms: u64,
    },
    /// The device confirmed off (then): the proof goes into the slot after a sweep that started
    /// later still reads our intent there.
    Confirmed {
        at_ms: u64,
    },
    /// That sweep read our intent: the proof goes in after this cycle's own write.
    ProofDue,
    ProofWriting,
    ProofWritten {
        at_ms: u64,
    },
    /// The device failed: suspected again (and called again) from then on.
    Failed {
        retry_at_ms: u64,
    },
}

/// One peer being fenced through its device: its last record (the intent is a copy of it, the
/// proof its `fenced` mark) and the stage.
#[derive(Debug, Clone, Copy)]
struct DeviceJob {
    record: Record,
    stage: DevStage,
    attempts: u32,
}

impl DeviceJob {
    fn intent(&self, fencer: u32) -> Record {
        let mut r = self.record;
        r.flags |= flags::FENCE_INTENT;
        r.fencer_slot = fencer;
        r
    }
    fn proof(&self, fencer: u32) -> Record {
        let mut r = self.record;
        r.state = State::Fenced;
        r.sequence += 1;
        r.flags = (r.flags & !(flags::FENCE_INTENT | flags::FENCE_FAILED))
            | flags::FENCE_DEVICE
            | flags::FENCE_STOPS_VMS;
        r.fencer_slot = fencer;
        r
    }
    fn same_incarnation(&self, r: &Record) -> bool {
        r.host_uuid == self.record.host_uuid && r.generation == self.record.generation
    }
}

/// (host uuid, generation, sequence) of a record.
type Identity = (uuid::Uuid, u64, u64);

/// Watching our slot before taking it (a delta lease: it must not change for host-dead).
#[derive(Debug, Clone, Copy)]
struct Acquire {
    started_ms: u64,
    /// The watched record's identity (None: corrupt), and since when.
    watch: Option<(Option<Identity>, u64)>,
    /// Submission time of a join write that did not complete: it may still land.
    join_attempt_ms: Option<u64>,
}

/// Our `joining` record is written: wait 2 x io timeout, re-read it, then write and read back a
/// first `live` record in time.
#[derive(Debug, Clone, Copy)]
struct Join {
    /// Submission of the first join write: peers may take it for dead host-dead after this.
    submitted_ms: u64,
    /// Completion of the (last) join write.
    written_ms: u64,
    /// The join was verified: `live` records are being written.
    verified: bool,
}

/// Fencing: optional `self_fencing` mark, then the action, retried every interval if it fails.
#[derive(Debug, Clone, Copy)]
struct Fencing {
    reason: FenceReason,
    /// Write a `self_fencing` mark before the (next) action: fence requests only (the disk is
    /// known writable and the slot ours). Never delays the action past the deadline.
    mark_pending: bool,
    attempts: u32,
    failed: bool,
    retry_at_ms: u64,
    /// The interlock made the action wait for a VM start: ask again at this time.
    wait_until_ms: u64,
}

#[derive(Debug, Clone, Copy)]
enum St {
    Acquiring(Acquire),
    Joining(Join),
    Live,
    Fencing(Fencing),
    /// The action succeeded and we survived it; the `fenced` mark is written once (if the slot is
    /// ours), then nothing more is written.
    Fenced {
        reason: FenceReason,
        mark_pending: bool,
    },
    /// Writing `leaving` until it is on the disk. `armed`: we were live, so the self-fence deadline
    /// still runs (a joining host holds no VMs).
    Leaving {
        armed: bool,
    },
    Stopped,
    Refused(RefuseReason),
}

/// Where the loop is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the next cycle.
    Idle {
        next_ms: u64,
    },
    Sweeping {
        cycle_ms: u64,
    },
    /// The sweep was judged; the cycle's write (if any) is next.
    SweepDone {
        cycle_ms: u64,
    },
    Writing {
        cycle_ms: u64,
        submitted_ms: u64,
    },
    /// Our write of this cycle is done; a fence intent or proof goes into a peer's slot next.
    PeerWriteDue {
        cycle_ms: u64,
    },
    PeerWriting {
        cycle_ms: u64,
        slot: u32,
    },
    FenceRunning,
    Exited,
}

/// The partition rule's state: the last decision and since when its inputs are unchanged.
#[derive(Debug, Clone, Copy)]
pub struct PartitionStatus {
    pub decision: Result<Decision, NoDecision>,
    /// Inputs (participants, mutual edges, weights, isolation) unchanged since.
    pub stable_since_ms: u64,
    pub fingerprint: u64,
    pub participants: u32,
    /// The participating slots.
    pub participant_set: SlotSet,
}

pub struct Node {
    cfg: NodeConfig,
    st: St,
    step: Step,
    /// The record we last wrote (or will write next).
    record: Record,
    own: OwnWrites,
    /// The sweep asked for a write this cycle.
    want_write: bool,
    stop_requested: bool,
    /// Submission time of the last write read back (see docs/SAFETY.md).
    last_ok_ms: u64,
    last_fed_ms: u64,
    /// Mailbox request id present when we joined: stale, never acted on.
    mailbox_ignore: u64,
    backup_deadline: Option<u64>,
    ready_sent: bool,
    /// A write was ever issued (our record may be on the disk).
    wrote_any: bool,
    /// The `leaving` record was written successfully.
    left_ok: bool,
    /// Writes of ours (own or peer records) whose completion had not arrived when the last
    /// sweep's reads were submitted: they may still land, over whatever we read back.
    writes_in_flight: u32,
    /// `LeaveWaits` was reported for this leave.
    leave_wait_reported: bool,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    events_dropped: u64,
    peers: Vec<Peer>,
    net: NetState,
    /// Peers holding their slot at our last successful sweep (the last membership).
    members: SlotSet,
    /// Every slot a record of ours listed as a member (format 1.7 `members`) since our last
    /// verified write, that one included: a peer that reads itself listed may declare us dead on
    /// silence, so it stays a member of any ride until a write of ours is verified again.
    listed: SlotSet,
    /// The `members` of our latest write.
    written_members: SlotSet,
    /// Start of our last sweep that read the table (any slot).
    last_read_start_ms: Option<u64>,
    /// Our last sweep read the table and our own slot.
    last_sweep_read_ok: bool,
    /// Our last write failed or timed out (docs/PROTOCOL.md, `disk_lost`: the last disk cycle
    /// failed or timed out).
    last_write_failed: bool,
    /// We reach none of our isolation addresses.
    isolated: bool,
    /// While the whole LUN is lost for every member: the deadline the network evidence allows.
    ride: Option<u64>,
    riding: bool,
    ride_fed_ms: u64,
    /// When the network thread last fed the watchdog (`poll_net_feed`).
    net_fed_ms: u64,
    /// When the current ride-through began.
    ride_since_ms: u64,
    /// Completion of our last `joining` write.
    joined_ms: Option<u64>,
    /// This incarnation went live: from then on the watchdog is fed only after verified cycles,
    /// so only then do our records say `watchdog_armed` (peers take "dead and armed" as proof).
    been_live: bool,
    part: Option<PartitionStatus>,
    pub write_latency: Histogram,
    pub sweep_latency: Histogram,
    pub cycles: u64,
    pub failed_cycles: u64,
    /// Host names whose fence device this host may call (from the daemon's config).
    fence_devices: Vec<[u8; NAME_LEN]>,
    /// Fence-device jobs by slot, at most [`DEVICE_JOBS`] (capacity reserved in `new`).
    dev_jobs: Vec<(u32, DeviceJob)>,
}

impl Node {
    pub fn new(cfg: NodeConfig, now_ms: u64) -> Node {
        assert!(cfg.slot < cfg.slot_count);
        cfg.timing.check().expect("timing checked by the caller");
        let mut record = Record::free(cfg.cluster_uuid, cfg.slot);
        record.host_uuid = cfg.host_uuid;
        record.host_name = cfg.host_name;
        record.io_timeout_ms = cfg.timing.io_timeout_ms;
        record.interval_ms = cfg.timing.interval_ms;
        record.boot_id = cfg.boot_id;
        record.net_view.set(cfg.slot, true);
        assert!(usize::from(cfg.networks) <= super::net::MAX_NETWORKS);
        let node = Node {
            cfg,
            st: St::Acquiring(Acquire { started_ms: now_ms, watch: None, join_attempt_ms: None }),
            step: Step::Idle { next_ms: now_ms },
            record,
            own: OwnWrites::default(),
            want_write: false,
            stop_requested: false,
            last_ok_ms: now_ms,
            last_fed_ms: 0,
            mailbox_ignore: 0,
            backup_deadline: None,
            ready_sent: false,
            wrote_any: false,
            left_ok: false,
            writes_in_flight: 0,
            leave_wait_reported: false,
            actions: VecDeque::with_capacity(ACTION_CAPACITY),
            events: VecDeque::with_capacity(EVENT_CAPACITY),
            events_dropped: 0,
            peers: vec![Peer::default(); cfg.slot_count as usize],
            net: NetState::new(cfg.slot_count),
            members: SlotSet::EMPTY,
            listed: SlotSet::EMPTY,
            written_members: SlotSet::EMPTY,
            last_read_start_ms: None,
            last_sweep_read_ok: false,
            last_write_failed: false,
            isolated: false,
            ride: None,
            riding: false,
            ride_fed_ms: 0,
            net_fed_ms: 0,
            ride_since_ms: 0,
            joined_ms: None,
            been_live: false,
            part: None,
            write_latency: Histogram::default(),
            sweep_latency: Histogram::default(),
            cycles: 0,
            failed_cycles: 0,
            fence_devices: Vec::new(),
            dev_jobs: Vec::with_capacity(DEVICE_JOBS),
        };
        node.assert_invariants();
        node
    }

    /// The hosts (by name) whose fence device this host may call when it coordinates
    /// (docs/SAFETY.md, "Fence devices"). Set once, before the first cycle.
    pub fn set_fence_devices(&mut self, names: &[[u8; NAME_LEN]]) {
        self.fence_devices = names.to_vec();
    }

    /// Slots being fenced through their devices, and what stage each is in (for status).
    pub fn device_jobs(&self) -> impl Iterator<Item = (u32, &'static str, u32)> + '_ {
        self.dev_jobs.iter().map(|(s, j)| {
            let stage = match j.stage {
                DevStage::IntentDue | DevStage::IntentWriting | DevStage::IntentWritten { .. } => "intent",
                DevStage::Calling { .. } => "calling",
                DevStage::Confirmed { .. }
                | DevStage::ProofDue
                | DevStage::ProofWriting
                | DevStage::ProofWritten { .. } => "proving",
                DevStage::Failed { .. } => "failed",
            };
            (*s, stage, j.attempts)
        })
    }

    // --- reports -------------------------------------------------------------------------------

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }
    pub fn phase(&self) -> Phase {
        match self.st {
            St::Acquiring(_) => Phase::Acquiring,
            St::Joining(_) => Phase::Joining,
            St::Live => Phase::Live,
            St::Fencing(f) => Phase::SelfFencing(f.reason),
            St::Fenced { reason, .. } => Phase::Fenced(reason),
            St::Leaving { .. } => Phase::Leaving,
            St::Stopped => Phase::Stopped,
            St::Refused(r) => Phase::Refused(r),
        }
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
    /// Network state: per peer, when it was heard on which network and what it said; drops.
    pub fn net(&self) -> &NetState {
        &self.net
    }
    /// The last membership: peers holding their slot at our last successful sweep.
    pub fn members(&self) -> &SlotSet {
        &self.members
    }
    /// The partition rule's last decision (None: not computed, or disk only).
    pub fn partition(&self) -> Option<&PartitionStatus> {
        self.part.as_ref()
    }
    /// Riding through a whole-LUN loss: past the storage deadline, alive on network evidence.
    pub fn riding_through(&self) -> bool {
        self.riding
    }
    /// The ride-through as operators see it (None: not riding).
    pub fn ride_status(&self, now_ms: u64) -> Option<RideStatus> {
        if !self.riding {
            return None;
        }
        let t = self.cfg.timing;
        let until_ms = self.ride?;
        let cap_ms = self.ride_cap_ms();
        let net_timeout = t.net_timeout_ms();
        let members = self.ride_members(now_ms);
        // The member whose newest vouching packet is oldest sets the deadline, unless the cap does.
        let limited_by = members
            .iter()
            .filter_map(|m| self.net.peers[m as usize].vouch_echo_ms.map(|e| (e, m)))
            .min()
            .filter(|(e, _)| cap_ms.is_none_or(|cap| e + net_timeout <= cap))
            .map(|(_, m)| m);
        Some(RideStatus {
            last_ok_ms: self.last_ok_ms,
            since_ms: self.ride_since_ms,
            until_ms,
            cap_ms,
            limited_by,
            members,
        })
    }
    pub fn isolated(&self) -> bool {
        self.isolated
    }
    /// Whether `slot` was heard (any network) within the network timeout before `now_ms`.
    pub fn hears(&self, slot: u32, now_ms: u64) -> bool {
        slot == self.cfg.slot
            || self
                .net
                .peers
                .get(slot as usize)
                .is_some_and(|p| p.heard(now_ms, self.cfg.timing.net_timeout_ms()))
    }
    /// A peer whose latest packet, received at `since_ms` or later, says it hears a host on our
    /// slot (its view lists slots heard within the network timeout before it sent).
    fn slot_heard_by(&self, since_ms: u64) -> Option<u32> {
        let me = self.cfg.slot;
        self.net.peers.iter().enumerate().find_map(|(slot, p)| {
            let last = p.last.as_ref()?;
            (slot as u32 != me && last.received_ms >= since_ms && last.net_view.get(me))
                .then_some(slot as u32)
        })
    }
    /// Our network view at `now_ms`: the slots heard on any network, and our own.
    pub fn view_at(&self, now_ms: u64) -> NetView {
        let mut v = NetView::EMPTY;
        v.set(self.cfg.slot, true);
        if self.cfg.networks > 0 {
            let timeout = self.cfg.timing.net_timeout_ms();
            for (slot, p) in self.net.peers.iter().enumerate() {
                if p.heard(now_ms, timeout) {
                    v.set(slot as u32, true);
                }
            }
        }
        v
    }
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }
    /// Failed attempts of the fence action so far (0 when not fencing or not yet tried).
    pub fn fence_failures(&self) -> u32 {
        match self.st {
            St::Fencing(f) if f.failed => f.attempts,
            _ => 0,
        }
    }
    pub fn has_exited(&self) -> bool {
        self.step == Step::Exited
    }
    #[cfg(test)]
    pub(crate) fn events_len(&self) -> usize {
        self.events.len()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The latest moment by which this host must have fenced itself if no cycle verifies. Stays
    /// armed while a decided fence waits for its mark: the mark never delays the action.
    pub fn fence_deadline_ms(&self) -> Option<u64> {
        let armed = match self.st {
            St::Live | St::Leaving { armed: true } => true,
            St::Fencing(f) => f.attempts == 0,
            _ => false,
        };
        armed.then(|| {
            let base = self.last_ok_ms + u64::from(self.cfg.timing.self_fence_ms);
            match (self.st, self.ride) {
                (St::Live, Some(until)) => base.max(until),
                _ => base,
            }
        })
    }

    /// When the next network beat is due (None: not beating).
    pub fn next_beat_ms(&self) -> Option<u64> {
        self.beating().then_some(self.net.next_beat_ms)
    }

    fn beating(&self) -> bool {
        self.cfg.networks > 0 && matches!(self.st, St::Joining(_) | St::Live | St::Leaving { .. })
    }

    /// When to call `poll_action` next; None while an action's result is awaited (or exited).
    pub fn poll_timeout(&self) -> Option<u64> {
        if let Step::PeerWriteDue { cycle_ms } = self.step {
            return Some(cycle_ms);
        }
        let Step::Idle { next_ms } = self.step else { return None };
        let mut at = next_ms;
        if let Some(d) = self.fence_deadline_ms() {
            at = at.min(d);
        }
        if let St::Fencing(f) = self.st {
            if f.failed {
                at = at.min(f.retry_at_ms);
            }
            if f.wait_until_ms > 0 {
                at = at.min(f.wait_until_ms);
            }
        }
        Some(at)
    }

    // --- inputs --------------------------------------------------------------------------------

    /// A stop was requested (SIGTERM): leave cleanly at once, or stop after fencing.
    pub fn handle_stop(&mut self, now_ms: u64) {
        self.stop_requested = true;
        if let Step::Idle { next_ms } = self.step {
            self.step = Step::Idle { next_ms: next_ms.min(now_ms) };
        }
    }

    /// A MAC-verified packet of protocol minor `version_minor` arrived on `network` (0 or 1) at
    /// `now_ms` (our clock, taken when it was received). Checked for protocol version,
    /// destination, replay and stale generation; dropped packets are counted by reason.
    pub fn handle_packet(
        &mut self,
        now_ms: u64,
        network: usize,
        version_minor: u16,
        packet: &Packet,
    ) -> Result<(), DropReason> {
        // Protocol 1.0 packets carry no destination or echo: never sent by any release.
        if version_minor == 0 {
            self.net.drops.record(DropReason::UnsupportedVersion);
            return Err(DropReason::UnsupportedVersion);
        }
        let r = self.net.accept(self.cfg.slot, now_ms, network, packet);
        match r {
            Err(reason) => self.net.drops.record(reason),
            Ok(()) => {
                let gap = self.cfg.timing.read_gap_ms();
                if packet.disk_lost() && packet.disk_age_ms >= gap && packet.disk_age_ms != DISK_AGE_NEVER {
                    let v = &mut self.net.peers[packet.sender_slot as usize].vouch_echo_ms;
                    *v = Some(v.map_or(packet.echo_ms, |e| e.max(packet.echo_ms)));
                }
                self.refresh_ride(now_ms);
            }
        }
        self.assert_invariants();
        r
    }

    /// A datagram failed verification before reaching the core (size, MAC, cluster...): counted.
    pub fn handle_drop(&mut self, reason: DropReason) {
        self.net.drops.record(reason);
    }

    /// Whether any isolation address answered within the last check (published in our record).
    pub fn handle_isolation(&mut self, reachable: bool) {
        self.isolated = self.cfg.isolation_configured && !reachable;
    }

    /// Whether a network beat is due now; if so, build one packet per peer with `beat_packet`.
    /// Whether the network thread, which never waits on the disk, feeds the watchdog now
    /// (docs/SAFETY.md, step 3 and "Whole-LUN loss"). While live and not fencing:
    /// - until the storage deadline `ok + self_fence`: the watchdog (timeout one io timeout)
    ///   then fires by `ok + self_fence + io_timeout` = `ok + 0.75 T`, the bound every peer's
    ///   proof relies on, whatever the heartbeat loop does meanwhile (blocked in a hanging I/O
    ///   that is about to fail, say). So a whole-LUN outage reaches the ride-through instead of
    ///   resetting the host one io timeout after its last good cycle;
    /// - past it, only while riding through on fresh network evidence (`ride_deadline`): the
    ///   watchdog then fires by the ride deadline + one io timeout, within the ride argument.
    ///
    /// At most once per interval. A hung or frozen daemon stops feeding, and resets its host.
    pub fn poll_net_feed(&mut self, now_ms: u64) -> bool {
        let t = self.cfg.timing;
        if !self.cfg.watchdog || !matches!(self.st, St::Live) {
            return false;
        }
        if now_ms < self.net_fed_ms + u64::from(t.interval_ms) {
            return false;
        }
        let storage_ms = self.last_ok_ms + u64::from(t.self_fence_ms);
        let evidence = now_ms < storage_ms || self.ride_deadline(now_ms).is_some_and(|until| now_ms < until);
        if evidence {
            self.net_fed_ms = now_ms;
        }
        evidence
    }

    pub fn poll_beat(&mut self, now_ms: u64) -> bool {
        if !self.beating() || now_ms < self.net.next_beat_ms {
            return false;
        }
        self.net.next_beat_ms = now_ms + self.cfg.timing.net_interval_ms();
        self.net.beat_sequence += 1;
        self.net.beats_sent += 1;
        self.net.first_beat_ms.get_or_insert(now_ms);
        true
    }

    /// The packet of the current beat for `dest_slot`, with `view` (from `view_at(now_ms)`,
    /// computed once per beat).
    pub fn beat_packet(&self, dest_slot: u32, now_ms: u64, view: &NetView) -> Packet {
        let echo_ms = self.net.peers.get(dest_slot as usize).and_then(|p| p.last).map_or(0, |l| l.send_ms);
        let disk_age_ms = self.last_read_start_ms.map_or(DISK_AGE_NEVER, |t| now_ms.saturating_sub(t));
        Packet {
            cluster_uuid: self.cfg.cluster_uuid,
            sender_slot: self.cfg.slot,
            generation: self.record.generation,
            sequence: self.net.beat_sequence,
            send_monotonic_ms: now_ms,
            disk_age_ms,
            // A write that hangs until it times out counts too: otherwise a host whose write hung
            // when the LUN went says its disk works for up to two io timeouts, and every peer
            // reaches its storage deadline before it can ride through (found by tests/sim.rs).
            // So does a sweep still hanging with no read done for the read gap (found by
            // tests/netns.rs: with 200 ms of network delay the vouches came too late).
            flags: if self.last_sweep_read_ok
                && !self.last_write_failed
                && disk_age_ms < self.cfg.timing.read_gap_ms()
            {
                0
            } else {
                packet_flags::DISK_LOST
            },
            net_view: *view,
            dest_slot,
            echo_ms,
        }
    }

    /// The write asked for completed (`Ok(latency_us)`) or did not.
    pub fn handle_write(&mut self, now_ms: u64, result: Result<u64, IoFailure>) {
        let Step::Writing { cycle_ms, submitted_ms } = self.step else {
            debug_assert!(false, "handle_write without a write in flight: {:?}", self.step);
            return;
        };
        let t = self.cfg.timing;
        if let Ok(us) = result {
            self.write_latency.record(us);
            if us > u64::from(t.io_timeout_ms) * 1000 / 2 {
                self.emit(Event::SlowWrite { latency_us: us });
            }
            self.own.completed();
        } else {
            self.own.unconfirmed();
        }
        let done = result.is_ok();
        self.last_write_failed = !done;
        if done && self.record.state == State::Joining {
            self.joined_ms = Some(now_ms);
        }
        match &mut self.st {
            St::Acquiring(a) => {
                if done {
                    self.st = St::Joining(Join { submitted_ms, written_ms: now_ms, verified: false });
                    self.emit(Event::Joined { generation: self.record.generation });
                } else {
                    a.join_attempt_ms.get_or_insert(submitted_ms);
                }
            }
            St::Joining(j) if !j.verified && done => j.written_ms = now_ms,
            St::Fencing(f) => f.mark_pending = false,
            St::Fenced { mark_pending, .. } => *mark_pending = false,
            _ => {}
        }
        if let (St::Live, Err(e)) = (self.st, result) {
            self.emit(Event::CycleFailed { write: Some(e), own_read: None, own_stale: false });
        }
        self.step = if done && matches!(self.st, St::Live) && self.peer_write_due().is_some() {
            Step::PeerWriteDue { cycle_ms }
        } else {
            Step::Idle { next_ms: cycle_ms + u64::from(t.interval_ms) }
        };
        self.check_deadline(now_ms);
        self.assert_invariants();
    }

    /// The peer write asked for (a fence intent or proof) completed (`Ok(latency_us)`) or not.
    /// Done: the next cycle starts at once, so its sweep reads the write back.
    pub fn handle_peer_write(&mut self, now_ms: u64, result: Result<u64, IoFailure>) {
        let Step::PeerWriting { cycle_ms, slot } = self.step else {
            debug_assert!(false, "handle_peer_write without a peer write in flight: {:?}", self.step);
            return;
        };
        let next = cycle_ms + u64::from(self.cfg.timing.interval_ms);
        let mut next_ms = next;
        if let Some((_, job)) = self.dev_jobs.iter_mut().find(|(s, _)| *s == slot) {
            job.stage = match (job.stage, result) {
                (DevStage::IntentWriting, Ok(_)) => DevStage::IntentWritten { at_ms: now_ms },
                (DevStage::ProofWriting, Ok(_)) => DevStage::ProofWritten { at_ms: now_ms },
                (DevStage::IntentWriting, Err(_)) => DevStage::IntentDue,
                (DevStage::ProofWriting, Err(_)) => DevStage::ProofDue,
                (other, _) => other,
            };
            if result.is_ok() {
                next_ms = now_ms;
            }
        }
        self.step = Step::Idle { next_ms: next_ms.min(next) };
        self.check_deadline(now_ms);
        self.assert_invariants();
    }

    /// Slot `slot`'s fence device answered for the incarnation (`host_uuid`, `generation`) we
    /// asked about. A late answer for a job we dropped is ignored (it proves nothing we use).
    pub fn handle_fence_device(
        &mut self,
        now_ms: u64,
        slot: u32,
        host_uuid: uuid::Uuid,
        generation: u64,
        outcome: DeviceOutcome,
    ) {
        let Some(i) = self.dev_jobs.iter().position(|(s, j)| {
            *s == slot
                && j.record.host_uuid == host_uuid
                && j.record.generation == generation
                && matches!(j.stage, DevStage::Calling { .. })
        }) else {
            return;
        };
        let job = &mut self.dev_jobs[i].1;
        let DevStage::Calling { since_ms } = job.stage else { unreachable!("matched above") };
        let took_ms = now_ms.saturating_sub(since_ms);
        job.stage = match outcome {
            DeviceOutcome::Off => DevStage::Confirmed { at_ms: now_ms },
            DeviceOutcome::Failed | DeviceOutcome::TimedOut => {
                DevStage::Failed { retry_at_ms: now_ms + u64::from(self.cfg.timing.host_dead_ms) }
            }
        };
        self.emit(Event::FenceDeviceResult { slot, outcome, took_ms });
        if outcome == DeviceOutcome::Off {
            // The proof follows at once: a sweep, our write, then the proof.
            if let Step::Idle { next_ms } = self.step {
                self.step = Step::Idle { next_ms: next_ms.min(now_ms) };
            }
        }
        self.assert_invariants();
    }

    /// The sweep asked for ran from `start_ms` to `end_ms`; `slots` is None if it failed as a whole.
    /// `writes_in_flight`: our writes that timed out and whose completion had not arrived when
    /// the sweep's reads were submitted (the engine's pinned ops): they may still land.
    pub fn handle_sweep(
        &mut self,
        start_ms: u64,
        end_ms: u64,
        slots: Option<&dyn SlotSource>,
        latency_us: u64,
        writes_in_flight: u32,
    ) {
        let Step::Sweeping { cycle_ms } = self.step else {
            debug_assert!(false, "handle_sweep without a sweep in flight: {:?}", self.step);
            return;
        };
        debug_assert!(start_ms <= end_ms);
        self.cycles += 1;
        self.want_write = false;
        self.writes_in_flight = writes_in_flight;
        self.last_sweep_read_ok = slots.is_some_and(|s| s.slot(self.cfg.slot).is_ok());
        if let Some(s) = slots {
            self.sweep_latency.record(latency_us);
            if latency_us > u64::from(self.cfg.timing.io_timeout_ms) * 1000 / 2 {
                self.emit(Event::SlowSweep { latency_us });
            }
            self.update_peers(s, start_ms, end_ms);
        }
        let mark_was_pending = matches!(
            self.st,
            St::Fencing(Fencing { mark_pending: true, .. }) | St::Fenced { mark_pending: true, .. }
        );
        let mut verified_live = false;
        match self.st {
            St::Acquiring(a) => self.acquire(a, slots, start_ms, end_ms),
            St::Joining(j) => self.join(j, slots, start_ms),
            St::Live => verified_live = self.live(slots),
            St::Leaving { armed } => self.leaving(slots, armed),
            _ => {}
        }
        // A sweep read the table only if some slot came back: when the LUN is gone every read
        // fails one by one (the engine still completes the sweep), and such a sweep must neither
        // reset our disk age nor feed the partition rule stale views (found by tests/sim.rs).
        // A peer's last read is never later than this: the read-gap rule of `Peer::observe`
        // relies on it.
        let read_any = slots.is_some_and(|s| (0..self.cfg.slot_count).any(|k| s.slot(k).is_ok()));
        if read_any {
            self.last_read_start_ms = Some(start_ms);
            if matches!(self.st, St::Live) {
                self.partition_check(end_ms);
            }
        } else if let Some(p) = &mut self.part {
            // Views we could not read are not known unchanged: once read again they must stay
            // unchanged for the whole decision delay (the hiccup does not count).
            p.stable_since_ms = end_ms;
        }
        // Fence devices only on a sweep that verified our cycle, while still live after it.
        if let (true, St::Live, Some(s)) = (verified_live, self.st, slots) {
            self.device_fencing(s, start_ms, end_ms);
        }
        self.refresh_ride(end_ms);
        if self.riding && !read_any {
            let until = self.ride.unwrap_or(0);
            let lost_for_ms = end_ms.saturating_sub(self.last_ok_ms);
            self.emit(Event::LunLost { members: self.members.len(), until_ms: until, lost_for_ms });
        }
        // A mark decided before this sweep goes only onto a disk this sweep confirmed ours.
        if mark_was_pending && !self.mark_allowed(slots) {
            self.drop_mark();
        }
        match self.st {
            St::Fencing(f) => self.want_write = f.mark_pending,
            St::Fenced { mark_pending, .. } => self.want_write = mark_pending,
            _ => {}
        }
        if matches!(self.st, St::Acquiring(_) | St::Joining(_)) && self.cfg.watchdog {
            // The watchdog is armed from the start; before we are live it only shows the loop
            // runs (no VMs yet). Once live it is fed after verified cycles only.
            self.push_action(Action::FeedWatchdog);
        }
        self.step = Step::SweepDone { cycle_ms };
        // A sweep that ends past the deadline owes the watchdog nothing, even if it verified a
        // write (a slow sweep while joining: found by tests/sim.rs, seed 1795660265272130837).
        if self.fence_deadline_ms().is_some_and(|d| end_ms >= d) {
            self.actions.retain(|a| *a != Action::FeedWatchdog);
        }
        self.check_deadline(end_ms);
        self.assert_invariants();
    }

    /// The fence action asked for finished (reboot never reports).
    pub fn handle_fence(&mut self, now_ms: u64, outcome: FenceOutcome) {
        if self.step != Step::FenceRunning {
            debug_assert!(false, "handle_fence without a fence in flight: {:?}", self.step);
            return;
        }
        self.fence_result(now_ms, outcome);
        self.assert_invariants();
    }

    /// The backup deadline thread ran the fence action while the loop was stuck (it fires only
    /// past the deadline, so the loop would have fenced too).
    pub fn handle_backup_fence(&mut self, now_ms: u64, outcome: FenceOutcome) {
        self.emit(Event::BackupFenced { ok: outcome == FenceOutcome::Done });
        match self.st {
            St::Live | St::Leaving { armed: true } => {
                self.self_fence(FenceReason::StorageLost { since_ms: self.last_ok_ms });
            }
            St::Fencing(f) if f.attempts == 0 => {}
            // Already acted on (or never armed): the loop's own outcome stands.
            _ => return,
        }
        if let St::Fencing(f) = &mut self.st {
            f.mark_pending = false;
        }
        self.fence_result(now_ms, outcome);
        self.assert_invariants();
    }

    // --- outputs -------------------------------------------------------------------------------

    /// The next thing to do, or None (then wait until `poll_timeout`, or for an awaited result).
    pub fn poll_action(&mut self, now_ms: u64) -> Option<Action> {
        if self.actions.is_empty()
            && !matches!(self.step, Step::Idle { .. } | Step::SweepDone { .. } | Step::PeerWriteDue { .. })
        {
            return None;
        }
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        let action = self.next_action(now_ms);
        let deadline = self.fence_deadline_ms();
        if deadline != self.backup_deadline {
            // The backup thread must know the new deadline before anything else happens.
            self.backup_deadline = deadline;
            if let Some(a) = action {
                self.actions.push_front(a);
            }
            self.assert_invariants();
            return Some(Action::SetBackupDeadline { deadline_ms: deadline });
        }
        self.assert_invariants();
        action.or_else(|| self.actions.pop_front())
    }

    fn next_action(&mut self, now_ms: u64) -> Option<Action> {
        self.refresh_ride(now_ms);
        // Deadline first: a host past its deadline fences, it never writes `leaving`.
        self.check_deadline(now_ms);
        if self.stop_requested {
            self.leave(now_ms);
        }
        if let St::Fencing(f) = self.st {
            let due = !f.mark_pending && (!f.failed || now_ms >= f.retry_at_ms) && now_ms >= f.wait_until_ms;
            if due
                && matches!(self.step, Step::Idle { .. } | Step::SweepDone { .. } | Step::PeerWriteDue { .. })
            {
                self.step = Step::FenceRunning;
                return Some(Action::Fence { reason: f.reason, attempt: f.attempts + 1 });
            }
        }
        if let Some(code) = self.exit_code() {
            if matches!(self.step, Step::Idle { .. }) {
                self.step = Step::Exited;
                let disarm_watchdog = match self.st {
                    St::Stopped => !self.wrote_any || self.left_ok,
                    // Our records were never there, or another writer replaced them.
                    St::Refused(RefuseReason::SlotInUse { .. } | RefuseReason::ForeignDuringJoin) => true,
                    St::Refused(_) => !self.wrote_any,
                    _ => false,
                };
                return Some(Action::Exit { code, disarm_watchdog });
            }
        }
        match self.step {
            Step::Idle { next_ms } if now_ms < next_ms => None,
            Step::Idle { .. } => {
                // Every write, marks included, follows a sweep of the same cycle: a mark goes only
                // onto a disk just seen to be ours (review: a fence that succeeded after a long
                // outage must not write the old cluster's record onto a re-formatted disk).
                self.step = Step::Sweeping { cycle_ms: now_ms };
                Some(Action::Sweep { timeout_ms: self.io_budget_ms(now_ms) })
            }
            Step::PeerWriteDue { cycle_ms } => {
                let due = if matches!(self.st, St::Live) { self.peer_write_due() } else { None };
                let Some((slot, record)) = due else {
                    self.step = Step::Idle { next_ms: cycle_ms + u64::from(self.cfg.timing.interval_ms) };
                    return self.next_action(now_ms);
                };
                for (s, job) in &mut self.dev_jobs {
                    if *s == slot {
                        job.stage = match job.stage {
                            DevStage::IntentDue => DevStage::IntentWriting,
                            DevStage::ProofDue => DevStage::ProofWriting,
                            other => other,
                        };
                    }
                }
                self.step = Step::PeerWriting { cycle_ms, slot };
                Some(Action::WritePeer { record, timeout_ms: self.io_budget_ms(now_ms) })
            }
            Step::SweepDone { cycle_ms } => {
                if self.want_write {
                    self.want_write = false;
                    return Some(self.write(cycle_ms, now_ms));
                }
                self.step = Step::Idle { next_ms: cycle_ms + u64::from(self.cfg.timing.interval_ms) };
                // Whatever the state change of this cycle allows now (a fence action).
                self.next_action(now_ms)
            }
            _ => None,
        }
    }

    fn exit_code(&self) -> Option<u8> {
        match self.st {
            St::Stopped => Some(EXIT_LEFT),
            St::Refused(_) => Some(EXIT_REFUSED),
            St::Fenced { mark_pending: false, .. } if self.stop_requested => Some(EXIT_FENCED),
            St::Fencing(f) if f.failed && self.stop_requested => Some(EXIT_FENCE_FAILED),
            _ => None,
        }
    }

    /// An I/O never runs past the self-fence deadline, so the deadline is checked on time. The
    /// engine may wait up to a quarter more than the timeout for cancellations: keep 4/5.
    fn io_budget_ms(&self, now_ms: u64) -> u64 {
        let io = u64::from(self.cfg.timing.io_timeout_ms);
        match self.fence_deadline_ms() {
            Some(d) => (d.saturating_sub(now_ms) * 4 / 5).clamp(1, io),
            None => io,
        }
    }

    /// Issues the next write of `record` (a new sequence).
    fn write(&mut self, cycle_ms: u64, now_ms: u64) -> Action {
        let fencing = matches!(self.st, St::Fencing(_) | St::Fenced { .. });
        debug_assert!(!fencing || matches!(self.record.state, State::SelfFencing | State::Fenced));
        self.record.sequence += 1;
        self.record.monotonic_ms = now_ms;
        let mut f = 0;
        // Only once live: while joining the watchdog is fed on every sweep, whether our writes
        // land or not, so "dead with the watchdog armed" would not prove a reset (VMs left running
        // by a previous incarnation's clean leave would be restarted elsewhere; sim seed
        // 1795571618523415356).
        if self.cfg.watchdog && (self.been_live || self.record.state == State::Live) {
            f |= flags::WATCHDOG_ARMED;
        }
        if self.cfg.fence_stops_vms {
            f |= flags::FENCE_STOPS_VMS;
        }
        if let St::Fencing(Fencing { failed: true, .. }) = self.st {
            f |= flags::FENCE_FAILED;
        }
        if self.cfg.networks > 0 {
            f |= flags::NET_ENABLED;
            self.record.weight = self.cfg.weight;
            self.record.net_view = self.view_at(now_ms);
            // Every slot we might need vouching from, and every slot a record of ours that may
            // be the last on the disk listed: a peer reading itself listed may declare us dead.
            let m = self.ride_members(now_ms);
            self.record.members = Members::EMPTY;
            for slot in m.iter() {
                self.record.members.set(slot);
            }
            self.written_members = m;
            self.listed = self.listed.union(&m);
        }
        if self.cfg.isolation_configured {
            f |= flags::ISOLATION_CONFIGURED;
            if self.isolated {
                f |= flags::ISOLATED;
            }
        }
        if self.riding {
            f |= flags::RIDING_THROUGH;
        }
        self.record.flags = f;
        self.wrote_any = true;
        self.own.submitted(self.record, now_ms);
        self.step = Step::Writing { cycle_ms, submitted_ms: now_ms };
        Action::Write { record: self.record, timeout_ms: self.io_budget_ms(now_ms) }
    }

    fn emit(&mut self, e: Event) {
        if self.events.len() == EVENT_CAPACITY {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    fn push_action(&mut self, a: Action) {
        // Feeds queued while the driver is busy (packets arrive during a long I/O) coalesce.
        if a == Action::FeedWatchdog && self.actions.contains(&a) {
            return;
        }
        debug_assert!(self.actions.len() < ACTION_CAPACITY);
        self.actions.push_back(a);
    }

    // --- rules ---------------------------------------------------------------------------------

    /// Self-fences if no cycle verified within the deadline. Idempotent.
    fn check_deadline(&mut self, now_ms: u64) {
        let Some(deadline) = self.fence_deadline_ms() else { return };
        if now_ms < deadline {
            return;
        }
        match &mut self.st {
            // Out of time for the mark: act now.
            St::Fencing(f) => f.mark_pending = false,
            _ => self.self_fence(FenceReason::StorageLost { since_ms: self.last_ok_ms }),
        }
    }

    fn self_fence(&mut self, reason: FenceReason) {
        if matches!(self.st, St::Fencing(_) | St::Fenced { .. }) {
            return;
        }
        debug_assert!(matches!(self.st, St::Live | St::Leaving { .. }), "fence decided in {:?}", self.st);
        self.emit(Event::SelfFence(reason));
        // A host fencing itself calls no devices; an answer in flight is ignored.
        self.dev_jobs.clear();
        self.ride = None;
        self.riding = false;
        // The slot is known ours and the disk writable: say so before acting.
        let mark_pending = matches!(reason, FenceReason::FenceRequest { .. } | FenceReason::Partition { .. });
        self.want_write = mark_pending;
        self.st = St::Fencing(Fencing {
            reason,
            mark_pending,
            attempts: 0,
            failed: false,
            retry_at_ms: 0,
            wait_until_ms: 0,
        });
        self.record.state = State::SelfFencing;
        if let FenceReason::FenceRequest { request_id, .. } = reason {
            self.record.mailbox_ack = request_id;
        }
    }

    fn fence_result(&mut self, now_ms: u64, outcome: FenceOutcome) {
        let St::Fencing(mut f) = self.st else { return };
        if outcome == FenceOutcome::Waiting {
            f.wait_until_ms = now_ms + super::FENCE_WAIT_POLL_MS;
            self.st = St::Fencing(f);
            self.step = Step::Idle { next_ms: f.wait_until_ms };
            return;
        }
        f.wait_until_ms = 0;
        f.attempts += 1;
        match outcome {
            FenceOutcome::Waiting => unreachable!("handled above"),
            FenceOutcome::Done => {
                self.emit(Event::FenceDone);
                self.record.state = State::Fenced;
                // Never write into a slot another host uses, or on a disk that is not ours.
                self.st = St::Fenced { reason: f.reason, mark_pending: f.reason.slot_is_ours() };
                self.step = Step::Idle { next_ms: now_ms };
            }
            FenceOutcome::Failed => {
                self.emit(Event::FenceFailed { attempt: f.attempts });
                // Once: shortening the timeout also pings most watchdogs, so repeating it every
                // retry would keep the host alive forever (found by tests/sim.rs).
                if self.cfg.watchdog && f.attempts == 1 {
                    self.push_action(Action::ExpireWatchdog);
                }
                f.failed = true;
                f.retry_at_ms = now_ms + u64::from(self.cfg.timing.interval_ms);
                // Say so on the disk where it is ours to write (fence requests: known writable).
                f.mark_pending = matches!(f.reason, FenceReason::FenceRequest { .. });
                self.st = St::Fencing(f);
                self.step = Step::Idle { next_ms: f.retry_at_ms };
            }
        }
    }

    /// Applies a stop request (once the deadline has been checked).
    fn leave(&mut self, now_ms: u64) {
        match self.st {
            St::Acquiring(_) => self.st = St::Stopped,
            St::Joining(_) | St::Live => {
                self.dev_jobs.clear();
                // Leaving ends a ride-through: the storage deadline applies again.
                self.riding = false;
                self.ride = None;
                self.st = St::Leaving { armed: matches!(self.st, St::Live) };
                self.record.state = State::Leaving;
                if let Step::Idle { next_ms } = self.step {
                    self.step = Step::Idle { next_ms: next_ms.min(now_ms) };
                }
            }
            _ => {}
        }
    }

    fn refuse(&mut self, reason: RefuseReason) {
        self.st = St::Refused(reason);
        self.want_write = false;
        self.emit(Event::Refused(reason));
    }

    /// Whether the superblock still is the one we started with. Unreadable: unknown (None).
    fn superblock_ok(&mut self, slots: &dyn SlotSource) -> Option<bool> {
        match slots.superblock() {
            Ok(bytes) if bytes.len() >= 512 && bytes[..512] == self.cfg.superblock[..] => Some(true),
            Ok(_) => {
                self.emit(Event::SuperblockChanged);
                Some(false)
            }
            Err(e) => {
                self.emit(Event::SuperblockUnreadable(e));
                None
            }
        }
    }

    fn update_peers(&mut self, slots: &dyn SlotSource, start_ms: u64, end_ms: u64) {
        let cluster = self.cfg.cluster_uuid;
        let t = self.cfg.timing;
        let host_dead_ms = u64::from(t.host_dead_ms);
        // Joined recently: a silent writer older than format 1.7 may be riding through a LUN loss
        // without knowing us, for at most its cap (docs/SAFETY.md, "Whole-LUN loss").
        let young = self.joined_ms.is_none_or(|j| start_ms < j + t.ride_max_ms() + host_dead_ms);
        self.members = SlotSet::EMPTY;
        for slot in 0..self.cfg.slot_count {
            if slot == self.cfg.slot {
                continue;
            }
            // Heard on the network: alive, whatever its slot says (dead = no disk AND no network).
            let heard = self.net.peers[slot as usize].heard(start_ms, t.net_timeout_ms());
            let peer = &mut self.peers[slot as usize];
            let Ok(bytes) = slots.slot(slot) else {
                peer.read_failed();
                if peer.state != PeerState::Dead && peer.state != PeerState::Unread && !peer.state.is_silent()
                {
                    self.members.insert(slot);
                }
                continue;
            };
            let read = Record::validate(bytes, &cluster, slot);
            let was_corrupt = peer.corruption;
            // What its newest valid record says: the one this read found, or the last one.
            let (writer_flags, writer_state, writer_members) = match read {
                Ok(raw) => (raw.flags.get(), raw.state(), raw.members()),
                Err(_) => (peer.flags, peer.record_state, peer.members),
            };
            // A live, network-enabled writer may ride through an outage of the disk: only a host
            // its last record lists (which it needs vouching from) may take its silence as death.
            let rule = silence_rule(
                writer_flags,
                writer_state,
                writer_members,
                self.cfg.slot_count,
                Some(self.cfg.slot),
            );
            let dead_ms = match rule {
                _ if heard => u64::MAX,
                SilenceRule::Capped if young => host_dead_ms + t.ride_max_ms(),
                _ => host_dead_ms,
            };
            let declarable = rule != SilenceRule::NotListed;
            let changes = peer.observe(read, start_ms, end_ms, dead_ms, t.read_gap_ms(), declarable);
            if read.is_ok() && peer.record_state != State::Free {
                self.net.raise_min_generation(slot, peer.generation);
            }
            if matches!(
                peer.state,
                PeerState::Live | PeerState::Unknown | PeerState::SelfFencing | PeerState::Corrupt
            ) {
                self.members.insert(slot);
            }
            if let (Err(reason), None) = (read, was_corrupt) {
                self.emit(Event::PeerCorrupt { slot, reason });
            }
            for change in changes.into_iter().flatten() {
                self.emit(Event::Peer { slot, change });
            }
        }
    }

    /// The partition rule on the views read from the disk (docs/PARTITIONS.md): participants are
    /// this host and every network-enabled peer whose `live` record advanced within the network
    /// timeout. A decision that puts us outside the survivors is acted on only once its inputs
    /// have been unchanged for the decision delay.
    fn partition_check(&mut self, now_ms: u64) {
        if self.cfg.networks == 0 {
            self.part = None;
            return;
        }
        let t = self.cfg.timing;
        let window = t.net_timeout_ms();
        let own = Host {
            slot: self.cfg.slot,
            view: &self.record.net_view,
            weight: self.cfg.weight,
            isolated: self.isolated,
            has_isolation_addresses: self.cfg.isolation_configured,
        };
        let mut hosts = [own; partition::MAX_HOSTS];
        let mut n = 1usize;
        let mut participants = 1u32;
        let mut participant_set = SlotSet::EMPTY;
        participant_set.insert(self.cfg.slot);
        // A view this sweep could not read (ours or a participant's) is not known unchanged.
        let mut unread = !self.last_sweep_read_ok;
        for (slot, p) in self.peers.iter().enumerate() {
            let participating = slot as u32 != self.cfg.slot
                && p.state == PeerState::Live
                && p.record_state == State::Live
                && p.flags & flags::NET_ENABLED != 0
                && p.last_read_ms.saturating_sub(p.last_change_ms) < window;
            if !participating {
                continue;
            }
            unread |= p.unreadable;
            participants += 1;
            participant_set.insert(slot as u32);
            if n < partition::MAX_HOSTS {
                hosts[n] = Host {
                    slot: slot as u32,
                    view: &p.net_view,
                    weight: p.weight,
                    isolated: p.flags & flags::ISOLATED != 0,
                    has_isolation_addresses: p.flags & flags::ISOLATION_CONFIGURED != 0,
                };
                n += 1;
            }
        }
        let hosts = &hosts[..n];
        // FNV-1a over exactly what the rule reads: slots, weights, isolation, mutual edges.
        let mut fp: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |v: u64| {
            for b in v.to_le_bytes() {
                fp = (fp ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        mix(u64::from(participants));
        for a in hosts {
            mix(u64::from(a.slot) | u64::from(a.weight) << 32);
            mix(u64::from(a.counts_isolated()));
            let mut edges = 0u64;
            for (j, b) in hosts.iter().enumerate() {
                if a.view.get(b.slot) {
                    edges |= 1 << j;
                }
            }
            mix(edges);
        }
        let decision = if participants as usize > partition::MAX_HOSTS {
            Err(NoDecision::TooManyHosts { hosts: participants as usize })
        } else {
            partition::decide(hosts)
        };
        let prev = self.part;
        // Views frozen by failed reads (a lost disk keeps the last ones read) are not stable
        // views: the clock restarts at every sweep that could not read them all.
        let me = self.cfg.slot;
        let outside = |d: &Result<Decision, NoDecision>| matches!(d, Ok(d) if d.must_fence(me));
        let stable_since_ms = match prev {
            Some(p) if p.fingerprint == fp && !unread => p.stable_since_ms,
            // Still outside the survivors, and the only change is that participants dropped
            // out (other losers fencing, one after another otherwise: found by tests/netns.rs
            // in a 2+2+1 split): the wait goes on. A newcomer restarts it.
            Some(p)
                if !unread
                    && outside(&p.decision)
                    && outside(&decision)
                    && participant_set.iter().all(|s| p.participant_set.contains(s))
                    && participants < p.participants =>
            {
                p.stable_since_ms
            }
            _ => now_ms,
        };
        self.part = Some(PartitionStatus {
            decision,
            stable_since_ms,
            fingerprint: fp,
            participants,
            participant_set,
        });
        let summary = |d: &Result<Decision, NoDecision>| match d {
            Ok(d) => (Ok(d.reason), !d.must_fence(me), d.survivors.len()),
            Err(e) => (Err(*e), true, 0),
        };
        let now = summary(&decision);
        if prev.map(|p| summary(&p.decision)) != Some(now) {
            self.emit(Event::Partition { decision: now.0, we_survive: now.1, survivors: now.2 });
        }
        if let Ok(d) = decision {
            if d.must_fence(me) && now_ms.saturating_sub(stable_since_ms) >= t.partition_delay_ms() {
                self.self_fence(FenceReason::Partition {
                    rule: d.reason,
                    survivors_lowest: d.survivors.lowest(),
                    survivors: d.survivors.len(),
                });
            }
        }
    }

    /// Re-evaluates the whole-LUN ride-through (docs/SAFETY.md, "Whole-LUN loss").
    fn refresh_ride(&mut self, now_ms: u64) {
        self.ride = self.ride_deadline(now_ms);
        let base = self.last_ok_ms + u64::from(self.cfg.timing.self_fence_ms);
        match self.ride {
            Some(until) if now_ms >= base => {
                if !self.riding {
                    self.ride_since_ms = now_ms;
                }
                self.riding = true;
                // The watchdog follows the network evidence while riding: fed once per interval
                // of new evidence, never beyond it.
                if self.cfg.watchdog && until >= self.ride_fed_ms + u64::from(self.cfg.timing.interval_ms) {
                    self.ride_fed_ms = until;
                    self.push_action(Action::FeedWatchdog);
                }
            }
            Some(_) => {}
            None => {
                if self.riding && matches!(self.st, St::Live) && now_ms < base {
                    // The disk came back: a verified cycle moved the deadline.
                    self.riding = false;
                } else if self.riding {
                    self.riding = false;
                    self.emit(Event::RideThroughEnded);
                }
            }
        }
    }

    /// How long we may stay up without the disk: only while every member of the last membership
    /// lost it too (each says so in a packet that echoes one of ours sent within the network
    /// timeout, with reads failing for at least the read gap), nobody heard says its disk works,
    /// and at most `ride_max` past the storage deadline. None: the storage deadline stands.
    ///
    /// Once riding, the ride goes on until a write of ours is verified (the disk is back) or the
    /// evidence ages: a member whose disk came back restarts its silence clocks at its first good
    /// read, after its last vouching packet, so that packet still bounds our deadline safely.
    /// Whom a ride needs vouching from: the last membership, every slot a record of ours that
    /// may be on the disk listed (`listed`), and every slot we hear now (a host whose disk works
    /// never vouches, so its presence ends the ride).
    pub fn ride_members(&self, now_ms: u64) -> SlotSet {
        let mut m = self.members.union(&self.listed);
        let timeout = self.cfg.timing.net_timeout_ms();
        if self.cfg.networks > 0 {
            for (slot, p) in self.net.peers.iter().enumerate() {
                if slot as u32 != self.cfg.slot && p.heard(now_ms, timeout) {
                    m.insert(slot as u32);
                }
            }
        }
        m
    }

    /// The ride-through cap (the storage deadline + 2 T), only while a member writes records
    /// older than format 1.7: such a host, joining during an outage, relies on it.
    fn ride_cap_ms(&self) -> Option<u64> {
        let t = self.cfg.timing;
        let old = self.members.iter().any(|m| {
            let p = &self.peers[m as usize];
            p.members.is_none() && p.flags & flags::NET_ENABLED != 0
        });
        old.then(|| self.last_ok_ms + u64::from(t.self_fence_ms) + t.ride_max_ms())
    }

    fn ride_deadline(&self, now_ms: u64) -> Option<u64> {
        let t = self.cfg.timing;
        if self.cfg.networks == 0 || !matches!(self.st, St::Live) {
            return None;
        }
        let gap = t.read_gap_ms();
        if !self.riding {
            // Entering: our own reads have failed for the read gap.
            if self.last_sweep_read_ok {
                return None;
            }
            match self.last_read_start_ms {
                Some(s) if now_ms >= s + gap => {}
                _ => return None,
            }
        }
        let members = self.ride_members(now_ms);
        if members.is_empty() || self.cfg.slot_count > MEMBER_SLOTS {
            return None;
        }
        let net_timeout = t.net_timeout_ms();
        let mut until = self.ride_cap_ms().unwrap_or(u64::MAX);
        let first_beat = self.net.first_beat_ms?;
        for m in members.iter() {
            let echo = self.net.peers[m as usize].vouch_echo_ms?;
            // The echo must be one of this incarnation's send times.
            if echo < first_beat || echo > now_ms {
                return None;
            }
            until = until.min(echo + net_timeout);
        }
        (until > now_ms).then_some(until)
    }

    fn acquire(&mut self, mut a: Acquire, slots: Option<&dyn SlotSource>, start_ms: u64, end_ms: u64) {
        let t = self.cfg.timing;
        let host_dead = u64::from(t.host_dead_ms);
        let own = slots.map(|s| s.slot(self.cfg.slot));
        // Give up when the slot cannot be read for twice the host-dead timeout.
        let Some(Ok(bytes)) = own else {
            if a.watch.is_none() && start_ms.saturating_sub(a.started_ms) >= 2 * host_dead {
                self.refuse(RefuseReason::Storage);
            }
            return;
        };
        match slots.map(|s| self.superblock_ok(s)) {
            Some(Some(false)) => return self.refuse(RefuseReason::DiskChanged),
            Some(None) => return,
            _ => {}
        }
        let read = Record::validate(bytes, &self.cfg.cluster_uuid, self.cfg.slot);
        if let (Some(submitted_ms), Ok(r)) = (a.join_attempt_ms, read) {
            if self.own.check(Some(&Record::from_raw(r))) != OwnCheck::Foreign {
                // Our join write landed after all.
                self.st = St::Joining(Join { submitted_ms, written_ms: start_ms, verified: false });
                self.emit(Event::Joined { generation: self.record.generation });
                return;
            }
        }
        let value =
            read.ok().map(|r| (uuid::Uuid::from_bytes(r.host_uuid), r.generation.get(), r.sequence.get()));
        let holder = read.map(|r| r.host_name).unwrap_or([0; NAME_LEN]);
        let free_now =
            matches!(read, Ok(r) if matches!(r.state(), State::Free | State::Leaving | State::Fenced));
        if let Some((Some(w), _)) = a.watch {
            if value != Some(w) && !free_now {
                // Moved while we watched: another host is using the slot.
                return self.refuse(RefuseReason::SlotInUse { host_name: holder });
            }
        }
        if let (Some((None, _)), Some(_)) = (a.watch, value) {
            if !free_now {
                // Was corrupt, now a valid held record: someone wrote it.
                return self.refuse(RefuseReason::SlotInUse { host_name: holder });
            }
        }
        let take = match a.watch {
            _ if free_now || (self.cfg.skip_acquire_wait && read.is_ok()) => true,
            None => {
                a.watch = Some((value, end_ms));
                self.emit(Event::WaitingForSlot { holder, wait_ms: host_dead });
                false
            }
            // Unchanged for the host-dead timeout between two successful reads: the previous
            // owner has fenced itself or died, unless a pool member still hears a host on this
            // slot: its holder may be riding through an outage of its own disk path (no cap since
            // format 1.7), unable to write. Watch again (found by tests/sim.rs).
            Some((v, since_ms)) if start_ms.saturating_sub(since_ms) >= host_dead => {
                let heard_since = since_ms + self.cfg.timing.net_timeout_ms();
                match self.slot_heard_by(heard_since) {
                    Some(by_slot) => {
                        a.watch = Some((v, end_ms));
                        self.emit(Event::SlotHolderHeard { by_slot });
                        false
                    }
                    None => true,
                }
            }
            Some(_) => false,
        };
        self.st = St::Acquiring(a);
        if take {
            let (g, s) = match read {
                Ok(r) => (r.generation.get(), r.sequence.get()),
                Err(_) => (self.record.generation, self.record.sequence),
            };
            self.record.generation = g + 1;
            self.record.sequence = self.record.sequence.max(s);
            self.record.state = State::Joining;
            self.want_write = true;
        }
    }

    fn join(&mut self, mut j: Join, slots: Option<&dyn SlotSource>, start_ms: u64) {
        let t = self.cfg.timing;
        let own = slots.map(|s| s.slot(self.cfg.slot));
        let Some(Ok(bytes)) = own else {
            if start_ms.saturating_sub(j.written_ms) > u64::from(t.host_dead_ms) {
                self.refuse(RefuseReason::Storage);
            }
            return;
        };
        let slots = slots.expect("own slot read");
        match self.superblock_ok(slots) {
            Some(false) => return self.refuse(RefuseReason::DiskChanged),
            None => return,
            Some(true) => {}
        }
        let read = Record::decode(bytes, &self.cfg.cluster_uuid, self.cfg.slot).ok();
        let check = self.own.check(read.as_ref());
        if check == OwnCheck::Foreign {
            return self.refuse(RefuseReason::ForeignDuringJoin);
        }
        if j.verified {
            // Live only once a `live` record was written and read back: the self-fence deadline
            // counts from a write peers can see. And it must land well before peers could take
            // the silent join record for dead (host-dead after its submission), with one interval
            // of margin for clock rates (both found by tests/sim.rs).
            let live_by = j.submitted_ms + u64::from(t.host_dead_ms) - u64::from(t.interval_ms);
            let (latest, submitted) = self.own.latest().expect("live record written");
            if check == OwnCheck::Latest && latest.state == State::Live && start_ms < live_by {
                self.st = St::Live;
                self.been_live = true;
                self.last_ok_ms = submitted;
                self.emit(Event::Live { generation: self.record.generation });
                self.verified_cycle();
                self.want_write = true;
                return;
            }
            if start_ms >= live_by {
                return self.refuse(RefuseReason::Storage);
            }
            self.want_write = true;
            return;
        }
        if check != OwnCheck::Latest {
            // An older join attempt of ours landed late: write the join again and wait anew.
            self.want_write = true;
            return;
        }
        if start_ms.saturating_sub(j.written_ms) < 2 * u64::from(t.io_timeout_ms) {
            return;
        }
        // Requests that were in our mailbox before we joined are not for this incarnation.
        if let Ok(Ok(m)) = slots.mailbox().map(|b| Mailbox::decode(b, &self.cfg.cluster_uuid, self.cfg.slot))
        {
            self.mailbox_ignore = m.request_id;
            self.record.mailbox_ack = m.request_id;
        }
        j.verified = true;
        self.st = St::Joining(j);
        self.record.state = State::Live;
        self.want_write = true;
    }

    /// A cycle verified: the watchdog is fed (and readiness signalled once).
    fn verified_cycle(&mut self) {
        if self.last_ok_ms <= self.last_fed_ms && self.ready_sent {
            return;
        }
        self.last_fed_ms = self.last_ok_ms;
        if self.cfg.watchdog {
            self.push_action(Action::FeedWatchdog);
        }
        if !self.ready_sent {
            self.ready_sent = true;
            self.push_action(Action::Ready);
        }
    }

    /// Judges a sweep while live; true if it verified our cycle (the disk is ours, our slot holds
    /// our latest write).
    fn live(&mut self, slots: Option<&dyn SlotSource>) -> bool {
        self.want_write = true;
        let Some(slots) = slots else {
            self.failed_cycles += 1;
            self.emit(Event::CycleFailed {
                write: None,
                own_read: Some(IoFailure::TimedOut),
                own_stale: false,
            });
            return false;
        };
        let superblock = self.superblock_ok(slots);
        if superblock == Some(false) {
            self.want_write = false;
            self.self_fence(FenceReason::DiskChanged);
            return false;
        }
        // Our own slot must hold exactly what we wrote.
        let own = slots.slot(self.cfg.slot);
        let check = match own {
            Err(_) => None,
            Ok(bytes) => {
                let read = Record::decode(bytes, &self.cfg.cluster_uuid, self.cfg.slot).ok();
                match self.own.check(read.as_ref()) {
                    OwnCheck::Foreign => {
                        self.want_write = false;
                        self.self_fence(FenceReason::ForeignWrite);
                        return false;
                    }
                    c => Some(c),
                }
            }
        };
        let mailbox_ok = self.mailbox(slots);
        if let St::Fencing(_) = self.st {
            if superblock != Some(true) || check.is_none() {
                // The disk is not confirmed ours this cycle: act without marking.
                self.drop_mark();
            }
            return false;
        }
        if check == Some(OwnCheck::Latest) {
            // Our latest write is what the disk holds: no earlier record of ours can be read.
            self.listed = self.written_members;
        }
        if check == Some(OwnCheck::Latest) && mailbox_ok && superblock == Some(true) {
            let (_, submitted) = self.own.latest().expect("a verified write");
            self.last_ok_ms = self.last_ok_ms.max(submitted);
            self.verified_cycle();
            true
        } else {
            self.failed_cycles += 1;
            self.emit(Event::CycleFailed {
                write: None,
                own_read: own.err(),
                own_stale: check == Some(OwnCheck::Stale),
            });
            false
        }
    }

    // --- fence devices (docs/SAFETY.md, "Fence devices") -------------------------------------

    /// Whether peer `slot` answers on some channel within the suspicion time: its record changed,
    /// or (network-enabled) a packet of it arrived.
    fn responsive(&self, slot: u32, start_ms: u64) -> bool {
        let p = &self.peers[slot as usize];
        let s = self.cfg.fence_suspicion_ms;
        p.silent_ms(start_ms) < s || self.net.peers[slot as usize].heard(start_ms, s)
    }

    /// The coordinator for fence devices: the lowest live slot that is not itself suspected (a
    /// dead coordinator must not hold up its own fencing), ours included. The failover
    /// coordinator is the same slot once the suspect is proven gone.
    fn device_coordinator(&self, start_ms: u64) -> bool {
        (0..self.cfg.slot).all(|s| {
            let p = &self.peers[s as usize];
            p.state != PeerState::Live || !self.responsive(s, start_ms)
        })
    }

    /// Whether peer `slot` is suspected: held by a live (or self-fencing) writer whose VMs are not
    /// proven gone, its record valid and unchanged for the suspicion time between our successful
    /// reads, and, if it sends network heartbeats, not heard on any network for as long while we
    /// listened. A disk-only peer is suspected only once dead on the disk (host-dead).
    fn suspected(&self, slot: u32, start_ms: u64) -> Option<u64> {
        let p = &self.peers[slot as usize];
        let s = self.cfg.fence_suspicion_ms;
        let held = matches!(p.record_state, State::Live | State::SelfFencing)
            && matches!(
                p.state,
                PeerState::Live
                    | PeerState::Unknown
                    | PeerState::SelfFencing
                    | PeerState::Dead
                    | PeerState::Silent
            );
        if !held || p.unreadable || p.corruption.is_some() || p.conflict || p.vms_gone().is_ok() {
            return None;
        }
        let silent_ms = p.silent_ms(start_ms);
        if silent_ms < s {
            return None;
        }
        let unheard = if p.flags & flags::NET_ENABLED != 0 && self.cfg.networks > 0 {
            let listening = self.net.first_beat_ms.is_some_and(|f| start_ms >= f + s);
            listening && !self.net.peers[slot as usize].heard(start_ms, s)
        } else {
            p.state == PeerState::Dead
        };
        unheard.then_some(silent_ms)
    }

    /// The next intent or proof to write, if any (one per cycle).
    fn peer_write_due(&self) -> Option<(u32, Record)> {
        self.dev_jobs.iter().find_map(|(slot, j)| match j.stage {
            DevStage::IntentDue => Some((*slot, j.intent(self.cfg.slot))),
            DevStage::ProofDue => Some((*slot, j.proof(self.cfg.slot))),
            _ => None,
        })
    }

    /// After a sweep that verified our cycle: moves every fence-device job on by what the sweep
    /// read, and starts one for every newly suspected peer with a device while we coordinate.
    fn device_fencing(&mut self, slots: &dyn SlotSource, start_ms: u64, end_ms: u64) {
        if self.fence_devices.is_empty() || self.cfg.fence_suspicion_ms == 0 {
            return;
        }
        let me = self.cfg.slot;
        let cluster = self.cfg.cluster_uuid;
        let coordinator = self.device_coordinator(start_ms);
        let mut i = 0;
        while i < self.dev_jobs.len() {
            let (slot, mut job) = self.dev_jobs[i];
            let read = slots.slot(slot).ok().and_then(|b| Record::decode(b, &cluster, slot).ok());
            let mut drop: Option<Option<DeviceAbort>> = None;
            let other_incarnation = read.is_some_and(|r| !job.same_incarnation(&r));
            match job.stage {
                // Not read back yet, or the device is being asked: nothing to judge.
                DevStage::IntentWriting | DevStage::ProofWriting | DevStage::Calling { .. } => {}
                _ if other_incarnation => drop = Some(Some(DeviceAbort::SlotAdvanced)),
                DevStage::IntentDue if !coordinator => drop = Some(Some(DeviceAbort::NotCoordinator)),
                DevStage::IntentDue => {
                    if read.is_some_and(|r| r.sequence != job.record.sequence) {
                        drop = Some(Some(DeviceAbort::SlotAdvanced));
                    }
                }
                DevStage::IntentWritten { at_ms } if start_ms >= at_ms => match read {
                    Some(r) if r == job.intent(me) && coordinator => {
                        job.attempts += 1;
                        job.stage = DevStage::Calling { since_ms: end_ms };
                        self.emit(Event::FenceDeviceCalling { slot, attempt: job.attempts });
                        self.push_action(Action::FenceDevice {
                            slot,
                            host_name: job.record.host_name,
                            host_uuid: job.record.host_uuid,
                            generation: job.record.generation,
                            attempt: job.attempts,
                        });
                    }
                    Some(r) if r == job.intent(me) => drop = Some(Some(DeviceAbort::NotCoordinator)),
                    Some(r) if r.flags & flags::FENCE_INTENT != 0 && r.sequence == job.record.sequence => {
                        drop = Some(Some(DeviceAbort::OtherFencer { fencer_slot: r.fencer_slot }));
                    }
                    Some(_) => drop = Some(Some(DeviceAbort::SlotAdvanced)),
                    // Unreadable this time: read it again next cycle.
                    None => {}
                },
                DevStage::Confirmed { at_ms } if start_ms >= at_ms => match read {
                    Some(r) if r == job.intent(me) => job.stage = DevStage::ProofDue,
                    Some(_) => drop = Some(Some(DeviceAbort::ChangedAfterOff)),
                    None => {}
                },
                // Not written yet (our own write failed): the next sweep judges again.
                DevStage::ProofDue => match read {
                    Some(r) if r == job.intent(me) => {}
                    Some(_) => drop = Some(Some(DeviceAbort::ChangedAfterOff)),
                    None => job.stage = DevStage::Confirmed { at_ms: 0 },
                },
                DevStage::ProofWritten { at_ms } if start_ms >= at_ms => match read {
                    Some(r) if r == job.proof(me) => {
                        self.emit(Event::FenceDeviceProven { slot });
                        drop = Some(None);
                    }
                    // Our proof did not land (lost write): the intent still stands, write again.
                    Some(r) if r == job.intent(me) => job.stage = DevStage::ProofDue,
                    Some(_) => drop = Some(Some(DeviceAbort::ChangedAfterOff)),
                    None => {}
                },
                DevStage::Failed { retry_at_ms } if start_ms >= retry_at_ms => drop = Some(None),
                DevStage::IntentWritten { .. }
                | DevStage::ProofWritten { .. }
                | DevStage::Confirmed { .. }
                | DevStage::Failed { .. } => {}
            }
            match drop {
                Some(why) => {
                    if let Some(why) = why {
                        self.emit(Event::FenceDeviceAborted { slot, why });
                    }
                    self.dev_jobs.swap_remove(i);
                }
                None => {
                    self.dev_jobs[i].1 = job;
                    i += 1;
                }
            }
        }
        if !coordinator {
            return;
        }
        for slot in 0..self.cfg.slot_count {
            if self.dev_jobs.len() == DEVICE_JOBS {
                break;
            }
            if slot == me || self.dev_jobs.iter().any(|(s, _)| *s == slot) {
                continue;
            }
            let p = &self.peers[slot as usize];
            if !self.fence_devices.contains(&p.host_name) {
                continue;
            }
            let Some(silent_ms) = self.suspected(slot, start_ms) else { continue };
            let Some(record) = slots.slot(slot).ok().and_then(|b| Record::decode(b, &cluster, slot).ok())
            else {
                continue;
            };
            // A lower live member's intent stands: that member calls the device. A higher
            // member's is taken over (it wrote while it thought it coordinated; both may call
            // `off`, which is idempotent), or it would block the device for as long as it lives.
            if record.flags & flags::FENCE_INTENT != 0 {
                let f = record.fencer_slot;
                if f < me && self.peers.get(f as usize).is_some_and(|p| p.state == PeerState::Live) {
                    continue;
                }
            }
            let mut record = record;
            // Re-encoded in our minor: only the bits it defines (a newer minor's are dropped).
            record.flags &= flags::KNOWN & !(flags::FENCE_INTENT | flags::FENCE_DEVICE);
            record.fencer_slot = 0;
            self.emit(Event::FenceDeviceIntent { slot, silent_ms });
            self.dev_jobs.push((slot, DeviceJob { record, stage: DevStage::IntentDue, attempts: 0 }));
        }
    }

    /// Whether a fence mark may be written after this sweep: the superblock is the one we started
    /// with and our slot holds nothing foreign.
    fn mark_allowed(&mut self, slots: Option<&dyn SlotSource>) -> bool {
        let Some(slots) = slots else { return false };
        if self.superblock_ok(slots) != Some(true) {
            return false;
        }
        match slots.slot(self.cfg.slot) {
            Ok(bytes) => {
                let read = Record::decode(bytes, &self.cfg.cluster_uuid, self.cfg.slot).ok();
                self.own.check(read.as_ref()) != OwnCheck::Foreign
            }
            Err(_) => false,
        }
    }

    /// The mark cannot be written safely now: the action (or exit) goes ahead without it.
    fn drop_mark(&mut self) {
        match &mut self.st {
            St::Fencing(f) => f.mark_pending = false,
            St::Fenced { mark_pending, .. } => *mark_pending = false,
            _ => {}
        }
    }

    /// A leave counts only once the `leaving` record is read back (a write reported done may have
    /// landed elsewhere: found by tests/sim.rs with misdirected writes). Until then it is written
    /// again every cycle and, if we were live, the self-fence deadline runs: peers would otherwise
    /// see a silent live record whose watchdog flag promises a reset a disarmed watchdog never does.
    fn leaving(&mut self, slots: Option<&dyn SlotSource>, armed: bool) {
        self.want_write = true;
        let Some(slots) = slots else { return };
        let lost = match self.superblock_ok(slots) {
            Some(false) => Some(FenceReason::DiskChanged),
            _ => match slots.slot(self.cfg.slot) {
                Err(_) => return,
                Ok(bytes) => {
                    let read = Record::decode(bytes, &self.cfg.cluster_uuid, self.cfg.slot).ok();
                    match self.own.check(read.as_ref()) {
                        OwnCheck::Foreign => Some(FenceReason::ForeignWrite),
                        OwnCheck::Latest => {
                            let (latest, submitted) = self.own.latest().expect("a verified write");
                            self.last_ok_ms = self.last_ok_ms.max(submitted);
                            if latest.state == State::Leaving && self.writes_in_flight > 0 {
                                // An older write of ours (live, watchdog armed) may still land
                                // over the leave, and a silent "armed" host is proven gone while
                                // its VMs run on: keep writing `leaving` until the engine has
                                // every write back (docs/SAFETY.md, clean leaves).
                                if !self.leave_wait_reported {
                                    self.leave_wait_reported = true;
                                    self.emit(Event::LeaveWaits { writes_in_flight: self.writes_in_flight });
                                }
                            } else if latest.state == State::Leaving {
                                self.want_write = false;
                                self.st = St::Stopped;
                                self.left_ok = true;
                                self.emit(Event::Left);
                            }
                            None
                        }
                        OwnCheck::Stale => None,
                    }
                }
            },
        };
        if let Some(reason) = lost {
            self.want_write = false;
            if armed {
                self.self_fence(reason);
            } else {
                // Never live: no VMs, nothing to fence; our records are not trusted by anyone.
                self.st = St::Stopped;
            }
        }
    }

    /// Acts on our mailbox; false if it could not be read.
    fn mailbox(&mut self, slots: &dyn SlotSource) -> bool {
        let Ok(bytes) = slots.mailbox() else { return false };
        match Mailbox::decode(bytes, &self.cfg.cluster_uuid, self.cfg.slot) {
            Ok(m)
                if m.request_id != 0
                    && m.request_id != self.mailbox_ignore
                    && m.request_id != self.record.mailbox_ack =>
            {
                match m.command {
                    Command::Fence => {
                        self.want_write = false;
                        self.self_fence(FenceReason::FenceRequest {
                            sender_slot: m.sender_slot,
                            request_id: m.request_id,
                        });
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
        true
    }

    /// Our data extent now holds a payload under this header sequence (published from the next
    /// write on, so readers re-read it).
    pub fn set_extent_sequence(&mut self, sequence: u64) {
        self.record.extent_sequence = sequence;
    }

    /// Checked after every input, in release builds too (TigerBeetle's practice): a violation
    /// panics, and the daemon's panic hook runs the fence action with the panic's message before
    /// aborting. A few comparisons: no allocation.
    fn assert_invariants(&self) {
        assert_eq!(self.record.slot, self.cfg.slot);
        assert_eq!(self.record.host_uuid, self.cfg.host_uuid);
        match self.st {
            St::Live => assert_eq!(self.record.state, State::Live),
            St::Joining(j) => {
                assert_eq!(self.record.state, if j.verified { State::Live } else { State::Joining });
                assert!(j.submitted_ms <= j.written_ms);
            }
            St::Fencing(f) => {
                assert_eq!(self.record.state, State::SelfFencing);
                assert!(!f.failed || f.attempts > 0);
            }
            St::Fenced { .. } => assert_eq!(self.record.state, State::Fenced),
            St::Leaving { .. } => assert_eq!(self.record.state, State::Leaving),
            St::Acquiring(_) | St::Stopped | St::Refused(_) => {}
        }
        if self.fence_deadline_ms().is_some() {
            assert!(matches!(self.st, St::Live | St::Leaving { armed: true } | St::Fencing(_)));
        }
        if self.riding {
            assert!(matches!(self.st, St::Live) && self.ride.is_some());
        }
        if let Some((latest, submitted)) = self.own.latest() {
            assert!(latest.sequence <= self.record.sequence);
            if matches!(self.st, St::Live) {
                assert!(self.last_ok_ms <= submitted);
            }
        }
        if self.step == Step::Exited {
            assert!(self.exit_code().is_some());
        }
        assert!(self.actions.len() <= ACTION_CAPACITY);
        assert!(self.dev_jobs.len() <= DEVICE_JOBS);
    }
}
