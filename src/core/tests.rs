//! Deterministic tests of the node with a simulated clock and an in-memory disk.

use super::*;
use crate::format::encode_name;
use crate::format::mailbox::{Command, Mailbox, SENDER_TOOL};
use crate::format::record::{flags, Record, State};
use crate::format::Corruption;

const CLUSTER: uuid::Uuid = uuid::Uuid::from_u128(0xc1);
const T_MS: u32 = 4000; // interval 200, io 1000, self-fence 2000, host dead 4000
const SLOTS: u32 = 4;
const SB: [u8; 512] = [0x5b; 512];

/// An in-memory record table plus our mailbox and the superblock, with per-slot read failures.
struct Disk {
    slots: Vec<[u8; 512]>,
    fail: Vec<bool>,
    mailbox: [u8; 512],
    mailbox_fail: bool,
    superblock: [u8; 512],
}

impl SlotSource for Disk {
    fn slot(&self, slot: u32) -> Result<&[u8], IoFailure> {
        if self.fail[slot as usize] {
            Err(IoFailure::Failed(5))
        } else {
            Ok(&self.slots[slot as usize])
        }
    }
    fn mailbox(&self) -> Result<&[u8], IoFailure> {
        if self.mailbox_fail {
            Err(IoFailure::Failed(5))
        } else {
            Ok(&self.mailbox)
        }
    }
    fn superblock(&self) -> Result<&[u8], IoFailure> {
        Ok(&self.superblock)
    }
}

impl Disk {
    fn new() -> Disk {
        let mut s = Disk {
            slots: vec![[0; 512]; SLOTS as usize],
            fail: vec![false; SLOTS as usize],
            mailbox: [0; 512],
            mailbox_fail: false,
            superblock: SB,
        };
        for i in 0..SLOTS {
            Record::free(CLUSTER, i).encode(&mut s.slots[i as usize]);
        }
        Mailbox::empty(CLUSTER, 0).encode(&mut s.mailbox);
        s
    }
    fn put(&mut self, r: &Record) {
        r.encode(&mut self.slots[r.slot as usize]);
    }
    /// `r` as a writer of format 1.`minor` (< 7) wrote it: no `members` bitmap.
    fn put_old(&mut self, r: &Record, minor: u16) {
        assert!(minor < 7);
        let b = &mut self.slots[r.slot as usize];
        r.encode(b);
        b[14..16].copy_from_slice(&minor.to_le_bytes());
        b[444..508].fill(0);
        let crc = crate::format::checksum(&b[4..512]);
        b[..4].copy_from_slice(&crc.to_le_bytes());
    }
    fn get(&self, slot: u32) -> Record {
        Record::decode(&self.slots[slot as usize], &CLUSTER, slot).unwrap()
    }
    fn mail(&mut self, command: Command, request_id: u64, sender_slot: u32) {
        let mut m = Mailbox::empty(CLUSTER, 0);
        m.command = command;
        m.request_id = request_id;
        m.sender_slot = sender_slot;
        m.encode(&mut self.mailbox);
    }
}

fn peer_record(slot: u32, generation: u64, sequence: u64, state: State) -> Record {
    let mut r = Record::free(CLUSTER, slot);
    r.state = state;
    r.host_uuid = uuid::Uuid::from_u128(0x100 + u128::from(slot) + (u128::from(generation) << 32));
    r.generation = generation;
    r.sequence = sequence;
    r.set_host_name(&format!("peer{slot}")).unwrap();
    r
}

fn config() -> NodeConfig {
    NodeConfig {
        slot: 0,
        slot_count: SLOTS,
        cluster_uuid: CLUSTER,
        host_uuid: uuid::Uuid::from_u128(0xabc),
        host_name: encode_name("me").unwrap(),
        timing: crate::timing::Timing::from_base(T_MS).unwrap(),
        superblock: SB,
        watchdog: true,
        fence_stops_vms: true,
        skip_acquire_wait: false,
        networks: 0,
        weight: 1,
        isolation_configured: false,
        boot_id: uuid::Uuid::nil(),
        fence_suspicion_ms: 0,
    }
}

/// A node driven like the daemon drives it: every action performed at once against `disk`.
struct H {
    n: Node,
    disk: Disk,
    now: u64,
    write_fails: bool,
    fence_outcome: FenceOutcome,
    fences: u32,
    feeds: u32,
    exit: Option<u8>,
    actions: Vec<Action>,
    /// Fence device calls asked for (answered by the test with `handle_fence_device`).
    device_calls: Vec<(u32, uuid::Uuid, u64)>,
    /// Writes of ours the "engine" has not got back (reported with every sweep).
    writes_in_flight: u32,
}

impl H {
    fn new() -> H {
        H::with(config(), Disk::new())
    }
    fn with(cfg: NodeConfig, disk: Disk) -> H {
        H {
            n: Node::new(cfg, 0),
            disk,
            now: 0,
            write_fails: false,
            fence_outcome: FenceOutcome::Done,
            fences: 0,
            feeds: 0,
            exit: None,
            actions: Vec::new(),
            device_calls: Vec::new(),
            writes_in_flight: 0,
        }
    }

    /// Performs every action due now; returns the events.
    fn run(&mut self) -> Vec<Event> {
        while let Some(a) = self.n.poll_action(self.now) {
            self.actions.push(a);
            match a {
                Action::Write { record, timeout_ms } => {
                    assert!(timeout_ms >= 1);
                    let r = if self.write_fails {
                        Err(IoFailure::Failed(5))
                    } else {
                        self.disk.put(&record);
                        Ok(100)
                    };
                    self.n.handle_write(self.now + 1, r);
                }
                Action::Sweep { .. } => self.n.handle_sweep(
                    self.now + 1,
                    self.now + 2,
                    Some(&self.disk),
                    200,
                    self.writes_in_flight,
                ),
                Action::Fence { .. } => {
                    self.fences += 1;
                    self.n.handle_fence(self.now, self.fence_outcome);
                }
                Action::WritePeer { record, .. } => {
                    assert_ne!(record.slot, self.n.config().slot, "a peer write into our own slot");
                    let r = if self.write_fails {
                        Err(IoFailure::Failed(5))
                    } else {
                        self.disk.put(&record);
                        Ok(100)
                    };
                    self.n.handle_peer_write(self.now + 1, r);
                }
                Action::FenceDevice { slot, host_uuid, generation, .. } => {
                    self.device_calls.push((slot, host_uuid, generation))
                }
                Action::FeedWatchdog => self.feeds += 1,
                Action::Exit { code, .. } => self.exit = Some(code),
                _ => {}
            }
        }
        std::iter::from_fn(|| self.n.poll_event()).collect()
    }

    /// A stop request (SIGTERM), then whatever the node does at once.
    fn stop(&mut self) -> Vec<Event> {
        self.n.handle_stop(self.now);
        self.run()
    }

    /// Advances to the node's next wake-up and runs it (one cycle).
    fn cycle(&mut self) -> Vec<Event> {
        if let Some(at) = self.n.poll_timeout() {
            self.now = self.now.max(at);
        }
        self.run()
    }

    /// The whole LUN fails for us: every read and every write.
    fn lose_disk(&mut self) {
        self.disk.fail = vec![true; SLOTS as usize];
        self.write_fails = true;
    }

    fn go_live(&mut self) {
        for _ in 0..100 {
            self.cycle();
            if self.n.phase() == Phase::Live {
                return;
            }
        }
        panic!("never went live: {:?}", self.n.phase());
    }
}

/// A live node with peer `slot` seen advancing once.
fn with_live_peer(slot: u32) -> (H, Record) {
    let mut h = H::new();
    let mut p = peer_record(slot, 1, 1, State::Live);
    h.disk.put(&p);
    h.go_live();
    p.sequence += 1;
    h.disk.put(&p);
    h.cycle();
    assert_eq!(h.n.peers()[slot as usize].state, PeerState::Live);
    (h, p)
}

#[test]
fn joins_a_free_slot_after_verifying_then_reads_back_live() {
    let mut h = H::new();
    h.cycle();
    assert_eq!(h.n.phase(), Phase::Joining, "a free slot is taken at the first sweep");
    assert_eq!(h.disk.get(0).state, State::Joining);
    assert_eq!(h.disk.get(0).generation, 1);
    // Fed on every sweep while joining, writes landing or not: no watchdog proof yet.
    assert_eq!(h.disk.get(0).flags & flags::WATCHDOG_ARMED, 0, "a joining record claims no watchdog");
    let joined = h.now;
    while h.n.phase() == Phase::Joining {
        h.cycle();
        assert!(h.now < 4000, "join took too long");
    }
    assert_eq!(h.n.phase(), Phase::Live);
    assert!(h.now >= joined + 2000, "went live before 2 x io timeout");
    assert_eq!(h.disk.get(0).state, State::Live);
    // The deadline counts from the submission of the `live` write read back, one cycle earlier.
    assert_eq!(h.n.last_ok_ms(), h.now - 200);
    assert!(h.actions.contains(&Action::Ready));
    assert!(h.feeds > 1, "fed while joining too (the watchdog is armed from the start)");
    assert_eq!(h.disk.get(0).flags, flags::WATCHDOG_ARMED | flags::FENCE_STOPS_VMS);
}

#[test]
fn refuses_a_slot_that_advances() {
    let mut h = H::new();
    let mut other = peer_record(0, 3, 10, State::Live);
    h.disk.put(&other);
    let ev = h.cycle();
    assert!(ev.iter().any(|e| matches!(e, Event::WaitingForSlot { .. })), "{ev:?}");
    other.sequence += 1;
    h.disk.put(&other);
    h.cycle();
    match h.n.phase() {
        Phase::Refused(RefuseReason::SlotInUse { host_name }) => {
            assert_eq!(crate::format::decode_name(&host_name), Some("peer0"))
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(h.exit, Some(EXIT_REFUSED));
    assert_eq!(h.disk.get(0), other, "a refused node never writes");
}

#[test]
fn takes_a_stale_slot_only_after_host_dead() {
    let mut h = H::new();
    h.disk.put(&peer_record(0, 3, 10, State::Live));
    while h.n.phase() == Phase::Acquiring {
        h.cycle();
    }
    assert!(h.now >= 2 + 4000, "took the slot after {} ms", h.now);
    assert_eq!(h.disk.get(0).generation, 4);
    h.go_live();
}

#[test]
fn clean_leave_then_immediate_restart() {
    let mut h = H::new();
    h.go_live();
    h.stop();
    assert_eq!(h.n.phase(), Phase::Leaving, "a leave counts once read back");
    h.cycle();
    assert_eq!(h.n.phase(), Phase::Stopped);
    assert_eq!(h.exit, Some(EXIT_LEFT));
    assert!(h.actions.contains(&Action::Exit { code: EXIT_LEFT, disarm_watchdog: true }));
    assert_eq!(h.disk.get(0).state, State::Leaving);
    let mut h2 = H::with(config(), h.disk);
    h2.n = Node::new(NodeConfig { host_uuid: uuid::Uuid::from_u128(0xdef), ..config() }, h.now);
    h2.now = h.now;
    h2.cycle();
    assert_eq!(h2.n.phase(), Phase::Joining, "no host-dead wait after a clean leave");
    assert_eq!(h2.disk.get(0).generation, 2);
}

#[test]
fn foreign_write_during_join_refuses() {
    let mut h = H::new();
    h.cycle();
    assert_eq!(h.n.phase(), Phase::Joining);
    h.disk.put(&peer_record(0, 1, 1, State::Joining));
    h.cycle();
    assert_eq!(h.n.phase(), Phase::Refused(RefuseReason::ForeignDuringJoin));
}

/// Hole: a second writer in our slot between our writes went unnoticed, because the own slot was
/// only compared right after our own write. Every kind of foreign content, written at any point
/// of the interval, must fence us at the next sweep, and we never write the slot again.
#[test]
fn any_foreign_content_between_our_writes_fences_within_one_interval() {
    type Make = fn(&Record) -> [u8; 512];
    let kinds: [(&str, Make); 5] = [
        ("clone with a higher sequence", |r| {
            let mut c = *r;
            c.sequence += 1;
            let mut b = [0; 512];
            c.encode(&mut b);
            b
        }),
        ("clone replaying an old sequence", |r| {
            let mut c = *r;
            c.sequence -= 3;
            let mut b = [0; 512];
            c.encode(&mut b);
            b
        }),
        ("another host's record", |_| {
            let mut b = [0; 512];
            peer_record(0, 9, 1, State::Live).encode(&mut b);
            b
        }),
        ("garbage", |_| [0xa5; 512]),
        ("zeroes", |_| [0; 512]),
    ];
    for (what, make) in kinds {
        let mut h = H::new();
        h.go_live();
        for _ in 0..3 {
            h.cycle();
        }
        // The intruder writes after our write, before our next sweep.
        let foreign = make(&h.disk.get(0));
        h.disk.slots[0] = foreign;
        let ev = h.cycle();
        assert_eq!(h.n.phase(), Phase::Fenced(FenceReason::ForeignWrite), "{what}: {ev:?}");
        assert_eq!(h.fences, 1, "{what}");
        for _ in 0..5 {
            h.cycle();
        }
        assert_eq!(h.disk.slots[0], foreign, "{what}: never write into a slot someone else uses");
    }
}

#[test]
fn our_own_late_write_is_not_foreign() {
    let mut h = H::new();
    h.go_live();
    h.cycle();
    // A write times out but lands later, after a newer one.
    h.write_fails = true;
    h.cycle();
    let Some(Action::Write { record: late, .. }) =
        h.actions.iter().rev().find(|a| matches!(a, Action::Write { .. })).copied()
    else {
        panic!()
    };
    h.write_fails = false;
    h.cycle();
    h.disk.put(&late);
    let ev = h.cycle();
    assert_eq!(h.n.phase(), Phase::Live, "{ev:?}");
    assert!(ev.iter().any(|e| matches!(e, Event::CycleFailed { own_stale: true, .. })), "{ev:?}");
    h.cycle();
    h.cycle();
    assert_eq!(h.n.phase(), Phase::Live);
}

/// Hole: after the superblock was zeroed or the disk re-formatted underneath, daemons kept
/// heartbeating with the old cluster UUID. A changed superblock is a lost disk.
#[test]
fn a_changed_superblock_fences_a_live_node_and_refuses_a_joining_one() {
    for change in [[0u8; 512], {
        let mut b = SB;
        b[100] ^= 1;
        b
    }] {
        let mut h = H::new();
        h.go_live();
        h.disk.superblock = change;
        let ev = h.cycle();
        assert!(ev.contains(&Event::SuperblockChanged), "{ev:?}");
        assert_eq!(h.n.phase(), Phase::Fenced(FenceReason::DiskChanged));
        let seq = h.disk.get(0).sequence;
        h.cycle();
        assert_eq!(h.disk.get(0).sequence, seq, "nothing written on a disk that is not ours");

        let mut h = H::new();
        h.cycle();
        assert_eq!(h.n.phase(), Phase::Joining);
        h.disk.superblock = change;
        h.cycle();
        assert_eq!(h.n.phase(), Phase::Refused(RefuseReason::DiskChanged));
    }
}

#[test]
fn peer_lifecycle_unknown_live_dead_restart_leave() {
    let mut h = H::new();
    let mut p = peer_record(1, 1, 5, State::Live);
    h.disk.put(&p);
    h.go_live();
    assert_eq!(h.n.peers()[1].state, PeerState::Unknown);
    p.sequence += 1;
    h.disk.put(&p);
    h.cycle();
    assert_eq!(h.n.peers()[1].state, PeerState::Live);
    let stopped_at = h.now + 2;
    let mut dead_at = None;
    for _ in 0..40 {
        let ev = h.cycle();
        if ev.iter().any(|e| {
            matches!(e, Event::Peer { slot: 1, change: PeerChange::State { to: PeerState::Dead, .. } })
        }) {
            dead_at = Some(h.now + 1);
            break;
        }
        assert_eq!(h.n.peers()[1].state, PeerState::Live, "dead too early at {}", h.now);
    }
    let dead_at = dead_at.expect("never declared dead");
    assert!(dead_at - stopped_at >= 4000, "declared dead after {} ms", dead_at - stopped_at);
    assert!(dead_at - stopped_at <= 4000 + 2 * 200);
    // No watchdog flag on its record: dead does not prove its VMs gone.
    assert_eq!(h.n.peers()[1].vms_gone(), Err(NotProven::DeadWithoutWatchdog));
    let p2 = peer_record(1, 2, 6, State::Live);
    h.disk.put(&p2);
    let ev = h.cycle();
    assert!(
        ev.contains(&Event::Peer {
            slot: 1,
            change: PeerChange::Restarted { old_generation: 1, new_generation: 2 }
        }),
        "{ev:?}"
    );
    assert_eq!(h.n.peers()[1].state, PeerState::Live);
    let mut p3 = p2;
    p3.sequence += 1;
    p3.state = State::Leaving;
    h.disk.put(&p3);
    h.cycle();
    assert_eq!(h.n.peers()[1].state, PeerState::Leaving);
    assert_eq!(h.n.peers()[1].vms_gone(), Err(NotProven::LeftCleanly), "a clean stop leaves VMs running");
    for _ in 0..30 {
        h.cycle();
        assert_eq!(h.n.peers()[1].state, PeerState::Leaving);
    }
}

/// What proves a host's VMs gone: a `fenced` mark from an action that stops VMs, or death with a
/// watchdog armed. Nothing else.
#[test]
fn vms_gone_only_on_proof() {
    let cases = [
        (State::Fenced, flags::FENCE_STOPS_VMS, Ok(GoneProof::FencedMark)),
        (State::Fenced, 0, Err(NotProven::FencedLogOnly)),
        (State::Fenced, flags::WATCHDOG_ARMED, Err(NotProven::FencedLogOnly)),
        (State::Leaving, flags::WATCHDOG_ARMED | flags::FENCE_STOPS_VMS, Err(NotProven::LeftCleanly)),
        (State::SelfFencing, flags::FENCE_FAILED | flags::FENCE_STOPS_VMS, Err(NotProven::Fencing)),
    ];
    for (state, f, want) in cases {
        let (mut h, mut p) = with_live_peer(2);
        p.sequence += 1;
        p.state = state;
        p.flags = f;
        h.disk.put(&p);
        h.cycle();
        assert_eq!(h.n.peers()[2].vms_gone(), want, "{state:?} flags {f:#x}");
    }
    // Dead with a watchdog armed: proven.
    let (mut h, mut p) = with_live_peer(2);
    p.sequence += 1;
    p.flags = flags::WATCHDOG_ARMED;
    h.disk.put(&p);
    for _ in 0..25 {
        h.cycle();
    }
    assert_eq!(h.n.peers()[2].state, PeerState::Dead);
    assert_eq!(h.n.peers()[2].vms_gone(), Ok(GoneProof::WatchdogExpired));
    // Dead through corruption: who holds the slot is unknown.
    let (mut h, _) = with_live_peer(3);
    h.disk.slots[3][100] ^= 0xff;
    for _ in 0..25 {
        h.cycle();
    }
    assert_eq!(h.n.peers()[3].state, PeerState::Dead);
    assert_eq!(h.n.peers()[3].vms_gone(), Err(NotProven::Corrupt));
}

/// Hole: a generation going backwards with an advancing sequence was accepted as a restart.
#[test]
fn generation_going_backwards_is_flagged_not_a_restart() {
    let (mut h, _) = with_live_peer(1);
    let newer = peer_record(1, 5, 100, State::Live);
    h.disk.put(&newer);
    h.cycle();
    let older = peer_record(1, 3, 101, State::Live);
    h.disk.put(&older);
    let ev = h.cycle();
    assert!(
        ev.contains(&Event::Peer { slot: 1, change: PeerChange::GenerationWentBack { from: 5, to: 3 } }),
        "{ev:?}"
    );
    assert!(!ev.iter().any(|e| matches!(e, Event::Peer { change: PeerChange::Restarted { .. }, .. })));
    assert!(h.n.peers()[1].conflict);
}

#[test]
fn our_failed_reads_never_age_a_peer() {
    let (mut h, mut p) = with_live_peer(2);
    h.disk.fail[2] = true;
    for _ in 0..60 {
        p.sequence += 1;
        h.disk.put(&p);
        h.cycle();
        assert_eq!(h.n.peers()[2].state, PeerState::Live, "a failed read aged the peer");
        assert!(h.n.peers()[2].unreadable);
    }
}

#[test]
fn corrupt_peer_is_reported_and_ages_like_silence() {
    let (mut h, _) = with_live_peer(3);
    h.disk.slots[3][100] ^= 0xff;
    let ev = h.cycle();
    assert!(
        ev.iter().any(|e| matches!(e, Event::PeerCorrupt { slot: 3, reason: Corruption::BadChecksum })),
        "{ev:?}"
    );
    assert_eq!(h.n.peers()[3].state, PeerState::Corrupt);
    for _ in 0..25 {
        h.cycle();
    }
    assert_eq!(h.n.peers()[3].state, PeerState::Dead);
}

#[test]
fn self_fences_at_the_deadline_not_before() {
    let mut h = H::new();
    h.go_live();
    h.write_fails = true;
    for _ in 0..5 {
        h.cycle();
        assert_eq!(h.n.phase(), Phase::Live, "a short outage recovers");
    }
    h.write_fails = false;
    h.cycle();
    h.cycle();
    h.write_fails = true;
    // The first failing cycle still verifies the last good write.
    h.cycle();
    let last_ok = h.n.last_ok_ms();
    let feeds = h.feeds;
    while h.n.phase() == Phase::Live {
        h.cycle();
        assert!(h.now <= last_ok + 2000);
        assert_eq!(h.n.last_ok_ms(), last_ok);
    }
    assert_eq!(h.feeds, feeds, "the watchdog is never fed after a failed cycle");
    assert_eq!(h.now, last_ok + 2000, "fenced exactly at the deadline (the node wakes for it)");
    assert!(matches!(h.n.phase(), Phase::Fenced(FenceReason::StorageLost { .. })));
    // Storage lost: the action came first, no mark; the fenced mark is attempted after.
    let writes: Vec<State> = h
        .actions
        .iter()
        .rev()
        .take_while(|a| !matches!(a, Action::Fence { .. }))
        .filter_map(|a| if let Action::Write { record, .. } = a { Some(record.state) } else { None })
        .collect();
    assert!(writes.iter().all(|s| *s == State::Fenced), "{writes:?}");
}

/// Found by tests/netns.rs (faultfs EIO for 600 ms): the write before an outage completes, the
/// sweep after it fails, and so does every write until the disk is back. Our slot then holds
/// that write, neither the latest submitted, nor read back, nor one that failed: it was taken for
/// another writer's, and the host fenced ("foreign write") instead of recovering.
#[test]
fn a_short_outage_of_reads_and_writes_recovers() {
    for cycles in [1, 3, 6] {
        let mut h = H::new();
        h.go_live();
        h.lose_disk();
        for _ in 0..cycles {
            h.cycle();
        }
        h.disk.fail = vec![false; SLOTS as usize];
        h.write_fails = false;
        for _ in 0..5 {
            h.cycle();
            assert_eq!(h.n.phase(), Phase::Live, "after {cycles} failed cycles");
        }
        assert!(h.n.last_ok_ms() + 400 >= h.now, "no verified cycle after the outage");
    }
}

/// Hole: a failed fence action was reported as success (`fenced`). Only a successful action may
/// be marked fenced; a failed one is retried, escalated to the watchdog and shown on the disk.
#[test]
fn a_failed_fence_action_is_retried_escalated_and_never_marked_fenced() {
    let mut h = H::new();
    h.go_live();
    h.fence_outcome = FenceOutcome::Failed;
    h.disk.mail(Command::Fence, 9, 1);
    for _ in 0..10 {
        h.cycle();
    }
    assert!(h.fences >= 5, "retried every interval: {} attempts", h.fences);
    assert!(matches!(h.n.phase(), Phase::SelfFencing(FenceReason::FenceRequest { .. })));
    assert!(h.actions.contains(&Action::ExpireWatchdog));
    let r = h.disk.get(0);
    assert_eq!(r.state, State::SelfFencing);
    assert_ne!(r.flags & flags::FENCE_FAILED, 0, "the failure is on the disk for `diskbeat fence`");
    assert_eq!(r.mailbox_ack, 9);
    assert!(!h
        .actions
        .iter()
        .any(|a| matches!(a, Action::Write { record, .. } if record.state == State::Fenced)));
    // A stop now exits with its own status, and the watchdog stays armed.
    h.stop();
    assert_eq!(h.exit, Some(EXIT_FENCE_FAILED));
    // Then it succeeds: marked fenced (retries stop).
    let mut h = H::new();
    h.go_live();
    h.fence_outcome = FenceOutcome::Failed;
    h.disk.mail(Command::Fence, 9, 1);
    h.cycle();
    h.cycle();
    h.fence_outcome = FenceOutcome::Done;
    for _ in 0..4 {
        h.cycle();
    }
    assert_eq!(h.disk.get(0).state, State::Fenced);
    assert_eq!(h.disk.get(0).flags & flags::FENCE_FAILED, 0);
}

#[test]
fn mailbox_fence_marks_first_then_acts() {
    let mut h = H::new();
    // A stale request from before we joined is ignored.
    h.disk.mail(Command::Fence, 77, SENDER_TOOL);
    h.go_live();
    for _ in 0..5 {
        h.cycle();
    }
    assert_eq!(h.n.phase(), Phase::Live);
    h.disk.mail(Command::Test, 78, SENDER_TOOL);
    let ev = h.cycle();
    assert!(ev.contains(&Event::MailboxTest { sender_slot: SENDER_TOOL, request_id: 78 }));
    h.cycle();
    assert_eq!(h.disk.get(0).mailbox_ack, 78);
    h.disk.mail(Command::Fence, 79, 2);
    let from = h.actions.len();
    h.cycle();
    let reason = FenceReason::FenceRequest { sender_slot: 2, request_id: 79 };
    let tail: Vec<Action> = h.actions[from..].to_vec();
    let mark = tail.iter().position(|a| matches!(a, Action::Write { record, .. } if record.state == State::SelfFencing && record.mailbox_ack == 79));
    let act = tail.iter().position(|a| matches!(a, Action::Fence { reason: r, attempt: 1 } if *r == reason));
    assert!(mark.is_some() && act.is_some() && mark < act, "mark before acting: {tail:?}");
    h.cycle();
    assert_eq!(h.disk.get(0).state, State::Fenced);
    assert_eq!(h.n.phase(), Phase::Fenced(reason));
    let seq = h.disk.get(0).sequence;
    for _ in 0..5 {
        h.cycle();
    }
    assert_eq!(h.disk.get(0).sequence, seq, "a fenced host stops writing");
    h.stop();
    assert_eq!(h.exit, Some(EXIT_FENCED));
}

/// Review finding: a fence that succeeds after a long outage must not write its `fenced` mark
/// (the old cluster's record) onto a disk re-formatted meanwhile; nor may a failed fence's retry
/// write its `self_fencing` mark there. Every mark follows a sweep that confirmed the disk is ours.
#[test]
fn fence_marks_are_written_only_onto_a_disk_confirmed_ours() {
    // A fenced mark after the disk changed.
    let mut h = H::new();
    h.go_live();
    h.fence_outcome = FenceOutcome::Failed;
    h.write_fails = true;
    while !matches!(h.n.phase(), Phase::SelfFencing(_)) {
        h.cycle();
    }
    h.cycle();
    h.write_fails = false;
    let before = h.disk.slots[0];
    h.disk.superblock = [0; 512];
    h.fence_outcome = FenceOutcome::Done;
    for _ in 0..10 {
        h.cycle();
    }
    assert!(matches!(h.n.phase(), Phase::Fenced(_)), "{:?}", h.n.phase());
    assert_eq!(h.disk.slots[0], before, "a mark was written onto a disk that is not ours");
    // A failed fence request retried after the disk changed: no more marks, the retries go on.
    let mut h = H::new();
    h.go_live();
    h.fence_outcome = FenceOutcome::Failed;
    h.disk.mail(Command::Fence, 9, 1);
    h.cycle();
    h.cycle();
    assert_eq!(h.disk.get(0).state, State::SelfFencing);
    let before = h.disk.slots[0];
    let fences = h.fences;
    h.disk.superblock = [0; 512];
    for _ in 0..5 {
        h.cycle();
    }
    assert_eq!(h.disk.slots[0], before, "a retry mark was written onto a disk that is not ours");
    assert!(h.fences > fences, "the action is still retried");
}

/// The backup thread fenced while the loop was stuck: the node stops heartbeating at once.
#[test]
fn a_backup_fence_is_reconciled() {
    let mut h = H::new();
    h.go_live();
    h.n.handle_backup_fence(h.now, FenceOutcome::Done);
    assert!(matches!(h.n.phase(), Phase::Fenced(FenceReason::StorageLost { .. })));
    h.cycle();
    h.cycle();
    assert_eq!(h.disk.get(0).state, State::Fenced);
    assert_eq!(h.fences, 0, "the action already ran");
    assert!(h.actions.contains(&Action::SetBackupDeadline { deadline_ms: None }));
}

/// A leave reported written but not on the disk (lost, misdirected) does not count: it is written
/// again, and the watchdog is never disarmed over a live record that promises it.
#[test]
fn a_leave_counts_only_once_read_back() {
    let mut h = H::new();
    h.go_live();
    h.n.handle_stop(h.now);
    let live = h.disk.get(0);
    // Writes "complete" but never land.
    let disk_before = h.disk.slots[0];
    for _ in 0..3 {
        h.run();
        h.disk.slots[0] = disk_before;
        h.cycle();
        h.disk.slots[0] = disk_before;
    }
    assert_eq!(h.n.phase(), Phase::Leaving);
    assert_eq!(h.exit, None);
    assert_eq!(h.disk.get(0), live);
    // Until the deadline: then it fences (and keeps the watchdog armed).
    for _ in 0..20 {
        h.cycle();
        h.disk.slots[0] = disk_before;
    }
    assert!(matches!(h.n.phase(), Phase::Fenced(FenceReason::StorageLost { .. })), "{:?}", h.n.phase());
}

/// A write of ours that timed out and is still in the kernel could land after the leave is read
/// back: a live record with the watchdog armed, over `leaving`, once the watchdog is disarmed,
/// and the pool would take the silent "armed" host for proven gone while its VMs run (found by
/// tests/sim.rs). The leave waits until the engine has every write back, rewriting `leaving`.
#[test]
fn a_leave_waits_for_writes_still_in_flight() {
    let mut h = H::new();
    h.go_live();
    // One write times out and stays in the kernel.
    h.write_fails = true;
    h.cycle();
    let late = h
        .actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Write { record, .. } => Some(*record),
            _ => None,
        })
        .unwrap();
    assert_eq!((late.state, late.flags & flags::WATCHDOG_ARMED != 0), (State::Live, true));
    h.write_fails = false;
    h.writes_in_flight = 1;
    h.cycle();
    let mut events = h.stop();
    for _ in 0..5 {
        events.extend(h.cycle());
    }
    assert_eq!(h.disk.get(0).state, State::Leaving, "the leave is on the disk");
    assert_eq!(h.n.phase(), Phase::Leaving, "but the leave waits");
    assert_eq!(h.exit, None);
    assert_eq!(events.iter().filter(|e| matches!(e, Event::LeaveWaits { writes_in_flight: 1 })).count(), 1);
    // The late write lands over the leave; the engine gets it back.
    h.disk.put(&late);
    h.writes_in_flight = 0;
    let mut events = Vec::new();
    for _ in 0..4 {
        events.extend(h.cycle());
    }
    assert!(events.contains(&Event::Left), "{events:?}");
    assert_eq!(h.disk.get(0).state, State::Leaving, "written again over the late write");
    let disarm = h.actions.iter().find_map(|a| match a {
        Action::Exit { disarm_watchdog, .. } => Some(*disarm_watchdog),
        _ => None,
    });
    assert_eq!(disarm, Some(true));
}

/// The backup thread may fire while a leave is still being retried (its deadline runs then too).
#[test]
fn a_backup_fence_during_a_leave_is_reconciled() {
    let mut h = H::new();
    h.go_live();
    h.write_fails = true;
    h.stop();
    assert_eq!(h.n.phase(), Phase::Leaving);
    h.n.handle_backup_fence(h.now, FenceOutcome::Done);
    assert!(matches!(h.n.phase(), Phase::Fenced(FenceReason::StorageLost { .. })), "{:?}", h.n.phase());
    h.run();
    assert_eq!(h.exit, Some(EXIT_FENCED));
}

#[test]
fn a_stop_after_the_deadline_fences_instead_of_leaving() {
    let mut h = H::new();
    h.go_live();
    let d = h.n.fence_deadline_ms().unwrap();
    h.now = d + 5;
    h.stop();
    assert!(matches!(h.n.phase(), Phase::Fenced(_)));
    assert_ne!(h.disk.get(0).state, State::Leaving);
}

#[test]
fn unreadable_slot_while_acquiring_eventually_refuses() {
    let mut h = H::new();
    h.disk.fail[0] = true;
    while matches!(h.n.phase(), Phase::Acquiring) {
        h.cycle();
        assert!(h.now < 20_000);
    }
    assert_eq!(h.n.phase(), Phase::Refused(RefuseReason::Storage));
}

#[test]
fn the_backup_deadline_follows_the_self_fence_deadline() {
    let mut h = H::new();
    h.go_live();
    h.cycle();
    let d = h.n.fence_deadline_ms();
    assert!(d.is_some());
    let last = h.actions.iter().rev().find_map(|a| match a {
        Action::SetBackupDeadline { deadline_ms } => Some(*deadline_ms),
        _ => None,
    });
    assert_eq!(last, Some(d));
}

#[test]
fn events_are_bounded() {
    let mut h = H::new();
    h.go_live();
    for i in 0..10_000u64 {
        h.disk.put(&peer_record(1, i + 1, i, State::Live));
        h.cycle();
    }
    // (H drains events each cycle; the node's queue never grows past its capacity regardless.)
    assert!(h.n.events_len() <= node::EVENT_CAPACITY);
    let mut n = Node::new(config(), 0);
    for _ in 0..(node::EVENT_CAPACITY + 10) {
        n.handle_backup_fence(0, FenceOutcome::Failed);
    }
    assert_eq!(n.events_len(), node::EVENT_CAPACITY);
    assert!(n.events_dropped() >= 10);
}

#[test]
fn refuses_a_join_confirmed_too_late_for_peers() {
    let mut h = H::new();
    h.cycle();
    assert_eq!(h.n.phase(), Phase::Joining);
    h.disk.fail[0] = true;
    while h.now < 3800 {
        h.cycle();
        assert_eq!(h.n.phase(), Phase::Joining);
    }
    h.disk.fail[0] = false;
    for _ in 0..5 {
        h.cycle();
        assert_ne!(h.n.phase(), Phase::Live, "went live at {}, peers may declare us dead at 4000", h.now);
    }
    assert_eq!(h.n.phase(), Phase::Refused(RefuseReason::Storage));
}

#[test]
fn a_fence_request_never_delays_the_fence_past_the_deadline() {
    let mut h = H::new();
    h.go_live();
    h.cycle();
    let deadline = h.n.fence_deadline_ms().unwrap();
    h.write_fails = true;
    while h.now + 400 < deadline {
        h.cycle();
        assert_eq!(h.n.phase(), Phase::Live);
    }
    h.disk.mail(Command::Fence, 5, 1);
    // Mark writes hang until the deadline: the action still runs by the deadline.
    h.cycle();
    h.cycle();
    assert!(h.fences >= 1 && h.now <= deadline, "fenced at {} (deadline {deadline})", h.now);
}

#[test]
fn a_corrupt_read_after_our_read_outage_does_not_kill_a_live_peer() {
    let (mut h, mut p) = with_live_peer(2);
    h.disk.fail[2] = true;
    for _ in 0..30 {
        p.sequence += 1;
        h.disk.put(&p);
        h.cycle();
    }
    h.disk.fail[2] = false;
    h.disk.slots[2][100] ^= 0xff;
    h.cycle();
    assert_eq!(h.n.peers()[2].state, PeerState::Corrupt, "declared dead on a corrupt read after our outage");
    for _ in 0..25 {
        h.cycle();
    }
    assert_eq!(h.n.peers()[2].state, PeerState::Dead);
}

// --- network heartbeats, partitions, whole-LUN loss (docs/PARTITIONS.md, docs/SAFETY.md) ------

mod net {
    use super::*;
    use crate::format::record::NetView;
    use crate::net::packet::flags as pflags;
    use crate::net::{DropReason, Packet};

    fn net_config() -> NodeConfig {
        NodeConfig { networks: 1, ..config() }
    }

    fn view(slots: &[u32]) -> NetView {
        let mut v = NetView::EMPTY;
        for &s in slots {
            v.set(s, true);
        }
        v
    }

    /// A live, network-enabled peer record hearing `hears`.
    fn net_peer(slot: u32, sequence: u64, hears: &[u32], weight: u32) -> Record {
        let mut r = peer_record(slot, 1, sequence, State::Live);
        r.flags = flags::NET_ENABLED;
        r.weight = weight;
        r.net_view = view(hears);
        // A live peer lists whom it would need vouching from: us, and whom it hears.
        r.members.set(0);
        for &s in hears.iter().filter(|&&s| s != slot) {
            r.members.set(s);
        }
        r
    }

    fn packet(
        from: u32,
        sequence: u64,
        send_ms: u64,
        echo_ms: u64,
        disk_lost: bool,
        disk_age_ms: u64,
    ) -> Packet {
        Packet {
            cluster_uuid: CLUSTER,
            sender_slot: from,
            generation: 1,
            sequence,
            send_monotonic_ms: send_ms,
            disk_age_ms,
            flags: if disk_lost { pflags::DISK_LOST } else { 0 },
            net_view: view(&[0, from]),
            dest_slot: 0,
            echo_ms,
        }
    }

    /// A record unchanged for T is not taken while a pool member still hears a host on the slot:
    /// its holder may be riding through an outage of its own disk path, unable to write (found
    /// by tests/sim.rs: an intruder took a rider's corrupted slot and went live beside it).
    #[test]
    fn a_held_slot_is_not_taken_while_a_member_hears_its_holder() {
        let mut h = H::with(net_config(), Disk::new());
        h.disk.put(&peer_record(0, 3, 10, State::Live));
        let mut seq = 0;
        let mut events = Vec::new();
        // Slot 1, riding through (disk lost), hears slot 0 for 10 T.
        while h.now < 40_000 {
            seq += 1;
            let p = packet(1, seq, h.now, 0, true, 5_000);
            assert_eq!(h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &p), Ok(()));
            events.extend(h.cycle());
        }
        assert_eq!(h.n.phase(), Phase::Acquiring, "took a slot whose holder is heard");
        assert!(events.iter().any(|e| matches!(e, Event::SlotHolderHeard { by_slot: 1 })), "{events:?}");
        // The holder is gone: slot 1 no longer hears it, and the slot is taken a T later.
        let gone = h.now;
        while h.n.phase() == Phase::Acquiring && h.now < gone + 20_000 {
            seq += 1;
            let p = Packet { net_view: view(&[1]), ..packet(1, seq, h.now, 0, true, 5_000) };
            assert_eq!(h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &p), Ok(()));
            h.cycle();
        }
        assert_ne!(h.n.phase(), Phase::Acquiring);
        assert_eq!(h.disk.get(0).generation, 4);
    }

    /// Peers `slots` (each hearing `hears`) advance one sequence each cycle; runs `n` cycles.
    fn advance(h: &mut H, peers: &mut [Record], n: usize) {
        for _ in 0..n {
            for p in peers.iter_mut() {
                p.sequence += 1;
                h.disk.put(p);
            }
            h.cycle();
        }
    }

    #[test]
    fn the_minority_fences_only_after_the_views_were_stable_for_the_decision_delay() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        // Peers 1 and 2 hear each other, not us; we hear nobody: {1, 2} is the larger part.
        let mut peers = [net_peer(1, 1, &[1, 2], 1), net_peer(2, 1, &[1, 2], 1)];
        advance(&mut h, &mut peers, 3);
        let d = h.n.partition().expect("computed").decision.unwrap();
        assert!(d.must_fence(0));
        assert_eq!(d.survivors.iter().collect::<Vec<_>>(), vec![1, 2]);
        let since = h.n.partition().unwrap().stable_since_ms;
        let delay = h.n.config().timing.partition_delay_ms();
        while h.n.phase() == Phase::Live {
            advance(&mut h, &mut peers, 1);
            assert!(h.now < since + delay + 400, "not fenced 0.6 T after the views were stable");
        }
        // The sweep that decided ended 2 ms after the cycle started.
        assert!(
            h.now + 2 >= since + delay,
            "fenced {} ms before the views were stable for 0.6 T",
            since + delay - h.now
        );
        advance(&mut h, &mut peers, 3);
        assert!(
            matches!(h.n.phase(), Phase::Fenced(FenceReason::Partition { survivors: 2, .. })),
            "{:?}",
            h.n.phase()
        );
        assert_eq!(h.fences, 1);
        // The mark says so on the disk: survivors see `fenced`, not silence.
        assert_eq!(h.disk.get(0).state, State::Fenced);
    }

    #[test]
    fn losers_fence_together_when_another_loser_drops_out_first() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        // Parts {1, 2}, {0} (us) and {3}: {1, 2} survives; we and 3 lose.
        let mut peers = [net_peer(1, 1, &[1, 2], 1), net_peer(2, 1, &[1, 2], 1), net_peer(3, 1, &[3], 1)];
        advance(&mut h, &mut peers, 2);
        let since = h.n.partition().unwrap().stable_since_ms;
        assert!(h.n.partition().unwrap().decision.unwrap().must_fence(0));
        // Slot 3 fences first (its sweep came earlier): it leaves the participants.
        while h.now < since + 1200 {
            advance(&mut h, &mut peers, 1);
        }
        peers[2].state = State::SelfFencing;
        while h.n.phase() == Phase::Live {
            advance(&mut h, &mut peers, 1);
            assert!(h.now < since + 2400 + 400, "the other loser's fence restarted our wait");
        }
        assert!(matches!(h.n.phase(), Phase::Fenced(FenceReason::Partition { .. })));
    }

    #[test]
    fn a_newcomer_restarts_the_wait() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        let mut peers = [net_peer(1, 1, &[1, 2], 1), net_peer(2, 1, &[1, 2], 1)];
        advance(&mut h, &mut peers, 2);
        let since = h.n.partition().unwrap().stable_since_ms;
        while h.now < since + 1200 {
            advance(&mut h, &mut peers, 1);
        }
        // Slot 3 joins the majority part: still outside, but the inputs grew: wait anew.
        let mut all = [peers[0], peers[1], net_peer(3, 1, &[1, 2, 3], 1)];
        all[0].net_view = view(&[1, 2, 3]);
        all[1].net_view = view(&[1, 2, 3]);
        let joined = h.now;
        while h.n.phase() == Phase::Live {
            advance(&mut h, &mut all, 1);
        }
        assert!(h.now >= joined + 2400, "fenced {} ms after the inputs changed", h.now - joined);
    }

    #[test]
    fn a_view_that_keeps_changing_never_fences() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        let mut peers = [net_peer(1, 1, &[1, 2], 1), net_peer(2, 1, &[1, 2], 1)];
        for i in 0..60 {
            // Peer 1's view flaps every 2 s (less than 0.6 T = 2.4 s): never stable.
            peers[0].net_view = if (i / 10) % 2 == 0 { view(&[1, 2]) } else { view(&[1]) };
            advance(&mut h, &mut peers, 1);
        }
        assert_eq!(h.n.phase(), Phase::Live);
    }

    #[test]
    fn a_crashed_peer_with_a_stale_view_never_makes_the_survivor_fence() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        // Peer 1 is heavier: in a 1-1 split it would win. It heard us until it crashed.
        let mut peers = [net_peer(1, 1, &[0, 1], 5)];
        let mut seq = 0;
        for _ in 0..10 {
            seq += 1;
            h.n.handle_packet(
                h.now,
                0,
                crate::net::VERSION_MINOR,
                &packet(1, seq, 1000 + h.now, 0, false, 10),
            )
            .unwrap();
            advance(&mut h, &mut peers, 1);
        }
        assert!(h.n.hears(1, h.now));
        // Crash: no more packets, no more records. Its last record still says it hears us.
        for _ in 0..(5 * 20) {
            h.cycle();
            assert_eq!(h.n.phase(), Phase::Live, "fenced because of a crashed peer's stale view");
        }
        assert_eq!(h.n.peers()[1].state, PeerState::Dead);
    }

    #[test]
    fn a_partitioned_heavier_peer_wins_a_one_one_split() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        // The control for the test above: the peer keeps heartbeating on the disk, unheard.
        let mut peers = [net_peer(1, 1, &[1], 5)];
        advance(&mut h, &mut peers, 30);
        assert!(matches!(h.n.phase(), Phase::Fenced(FenceReason::Partition { .. })), "{:?}", h.n.phase());
    }

    #[test]
    fn packets_for_another_slot_replays_and_stale_generations_are_dropped_and_counted() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        let mut peers = [{
            let mut r = net_peer(1, 1, &[0, 1], 1);
            r.generation = 3;
            r
        }];
        advance(&mut h, &mut peers, 2);
        let mut p = packet(1, 10, 5, 0, false, 10);
        p.generation = 3;
        assert_eq!(h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &p), Ok(()));
        assert_eq!(h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &p), Err(DropReason::Replay));
        // The same beat on the other network is not a replay.
        assert_eq!(h.n.handle_packet(h.now, 1, crate::net::VERSION_MINOR, &p), Ok(()));
        // Protocol 1.0 packets (no destination, no echo) are dropped before anything else.
        let next = Packet { sequence: 10_000, ..p };
        assert_eq!(h.n.handle_packet(h.now, 0, 0, &next), Err(DropReason::UnsupportedVersion));
        assert_eq!(
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &next),
            Ok(()),
            "not taken as a replay"
        );
        let older = Packet { sequence: 9, ..p };
        assert_eq!(h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &older), Err(DropReason::Replay));
        let stale = Packet { generation: 2, sequence: 99, ..p };
        assert_eq!(
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &stale),
            Err(DropReason::StaleGeneration),
            "the disk shows 3"
        );
        let elsewhere = Packet { dest_slot: 2, sequence: 11, ..p };
        assert_eq!(
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &elsewhere),
            Err(DropReason::WrongDestination)
        );
        let from_us = Packet { sender_slot: 0, sequence: 12, ..p };
        assert_eq!(
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &from_us),
            Err(DropReason::BadSlot)
        );
        h.n.handle_drop(DropReason::BadMac);
        let d = &h.n.net().drops;
        assert_eq!(
            (
                d.get(DropReason::Replay),
                d.get(DropReason::StaleGeneration),
                d.get(DropReason::WrongDestination)
            ),
            (2, 1, 1)
        );
        assert_eq!((d.get(DropReason::BadSlot), d.get(DropReason::BadMac), d.total()), (1, 1, 7));
        assert_eq!(d.get(DropReason::UnsupportedVersion), 1);
    }

    #[test]
    fn a_peer_heard_on_the_network_is_not_declared_dead_by_disk_silence() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        let mut peers = [net_peer(1, 1, &[0, 1], 1)];
        advance(&mut h, &mut peers, 2);
        // Its records stop (it lost the disk), its packets keep coming.
        for i in 0..(4 * 20) {
            h.n.handle_packet(
                h.now,
                0,
                crate::net::VERSION_MINOR,
                &packet(1, 100 + i, 1 + h.now, 0, true, 5000),
            )
            .unwrap();
            h.cycle();
            assert_ne!(h.n.peers()[1].state, PeerState::Dead, "dead while heard, at {}", h.now);
        }
    }

    // --- fence devices (docs/SAFETY.md, "Fence devices") ---------------------------------------

    /// A live node (slot 0, one network, devices for peer1's host) and peer 1, seen advancing
    /// and heard; our beats have started (we listen).
    fn with_device_peer() -> (H, Record) {
        with_device_peer_watchdog(true)
    }

    fn with_device_peer_watchdog(watchdog: bool) -> (H, Record) {
        let cfg = NodeConfig { fence_suspicion_ms: 500, ..net_config() };
        let mut h = H::with(cfg, Disk::new());
        h.n.set_fence_devices(&[encode_name("peer1").unwrap()]);
        h.go_live();
        assert!(h.n.poll_beat(h.now));
        let mut p = net_peer(1, 1, &[0, 1], 1);
        if watchdog {
            p.flags |= flags::WATCHDOG_ARMED;
        }
        for i in 0..3 {
            p.sequence += 1;
            h.disk.put(&p);
            h.n.handle_packet(
                h.now,
                0,
                crate::net::VERSION_MINOR,
                &packet(1, 10 + i, 1 + h.now, 0, false, 0),
            )
            .unwrap();
            h.cycle();
        }
        assert_eq!(h.n.peers()[1].state, PeerState::Live);
        (h, p)
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::FenceDeviceIntent { .. } => Some("intent"),
                Event::FenceDeviceCalling { .. } => Some("calling"),
                Event::FenceDeviceResult { .. } => Some("result"),
                Event::FenceDeviceProven { .. } => Some("proven"),
                Event::FenceDeviceAborted { .. } => Some("aborted"),
                _ => None,
            })
            .collect()
    }

    /// Cycles until the node asks for a device call (at most `limit_ms`), collecting events.
    fn until_call(h: &mut H, limit_ms: u64, events: &mut Vec<Event>) -> bool {
        let until = h.now + limit_ms;
        while h.device_calls.is_empty() && h.now < until {
            events.extend(h.cycle());
            h.now += 1;
        }
        !h.device_calls.is_empty()
    }

    #[test]
    fn a_peer_silent_on_both_channels_is_powered_off_through_its_device_then_proven_gone() {
        let (mut h, p) = with_device_peer();
        let silent_from = h.now;
        let mut events = Vec::new();
        assert!(until_call(&mut h, 2000, &mut events), "no device call");
        // Not before the suspicion time; the intent was in its slot, read back, before the call.
        assert!(h.now >= silent_from + 500, "called after {} ms", h.now - silent_from);
        assert!(h.now < silent_from + 1200, "called after {} ms (T/8 + a few cycles)", h.now - silent_from);
        assert_eq!(h.device_calls, vec![(1, p.host_uuid, 1)]);
        let intent = h.disk.get(1);
        assert_eq!(
            (intent.flags & flags::FENCE_INTENT, intent.fencer_slot, intent.sequence),
            (flags::FENCE_INTENT, 0, p.sequence)
        );
        assert_eq!(
            h.n.peers()[1].vms_gone(),
            Err(NotProven::Alive),
            "nothing proven before the device answers"
        );
        h.n.handle_fence_device(h.now, 1, p.host_uuid, 1, DeviceOutcome::Off);
        for _ in 0..3 {
            events.extend(h.cycle());
        }
        assert_eq!(kinds(&events), ["intent", "calling", "result", "proven"]);
        let proof = h.disk.get(1);
        assert_eq!(proof.state, State::Fenced);
        assert_eq!(
            proof.flags & (flags::FENCE_DEVICE | flags::FENCE_STOPS_VMS | flags::FENCE_INTENT),
            flags::FENCE_DEVICE | flags::FENCE_STOPS_VMS
        );
        assert_eq!((proof.sequence, proof.host_uuid, proof.generation), (p.sequence + 1, p.host_uuid, 1));
        assert_eq!(h.n.peers()[1].state, PeerState::Fenced);
        assert_eq!(h.n.peers()[1].vms_gone(), Ok(GoneProof::FenceDevice), "long before host-dead");
        // Done: no second call for the same incarnation.
        for _ in 0..20 {
            h.cycle();
        }
        assert_eq!(h.device_calls.len(), 1);
    }

    /// A network cut with the disk healthy: the record advances, the device is never called
    /// (its host sees the same cut and the partition rule decides).
    #[test]
    fn an_unheard_peer_whose_record_advances_is_never_powered_off() {
        let (mut h, mut p) = with_device_peer();
        let mut events = Vec::new();
        let start = h.now;
        while h.now < start + 3 * 4000 {
            p.sequence += 1;
            h.disk.put(&p);
            events.extend(h.cycle());
        }
        assert!(h.device_calls.is_empty() && kinds(&events).is_empty(), "{:?}", kinds(&events));
        // And a peer silent on the disk but still heard (it lost its disk path) is not either.
        let start = h.now;
        let mut seq = 100;
        while h.now < start + 3000 {
            seq += 1;
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(1, seq, 1 + h.now, 0, true, 5000))
                .unwrap();
            events.extend(h.cycle());
        }
        assert!(h.device_calls.is_empty() && kinds(&events).is_empty(), "{:?}", kinds(&events));
    }

    /// A device that fails or hangs proves nothing: the pool falls back to the other proofs (a
    /// watchdog after host-dead); without one, the device is asked again every T.
    #[test]
    fn a_failed_device_proves_nothing_and_is_asked_again_after_t() {
        for watchdog in [true, false] {
            let (mut h, p) = with_device_peer_watchdog(watchdog);
            let mut events = Vec::new();
            assert!(until_call(&mut h, 2000, &mut events));
            let first = h.now;
            h.n.handle_fence_device(h.now, 1, p.host_uuid, 1, DeviceOutcome::TimedOut);
            h.device_calls.clear();
            let again = until_call(&mut h, 6000, &mut events);
            assert_eq!(h.disk.get(1).state, State::Live, "no proof from a failed device");
            if watchdog {
                // The intent may have replaced a clean leave: its watchdog flag proves nothing
                // now; the device is asked again after T.
                assert!(again, "asked again");
                assert_eq!(h.n.peers()[1].vms_gone(), Err(NotProven::FenceIntent));
                assert_eq!(kinds(&events), ["intent", "calling", "result", "intent", "calling"]);
            } else {
                assert!(again, "asked again");
                assert!(h.now >= first + 4000, "retried after T, not before ({} ms)", h.now - first);
                assert_eq!(h.n.peers()[1].vms_gone(), Err(NotProven::FenceIntent));
                assert_eq!(kinds(&events), ["intent", "calling", "result", "intent", "calling"]);
            }
        }
    }

    /// A device that says off while the host writes on (it lies, or the host came back): no
    /// proof is written, nothing restarts on that word.
    #[test]
    fn no_proof_when_the_host_writes_after_the_device_said_off() {
        let (mut h, mut p) = with_device_peer();
        let mut events = Vec::new();
        assert!(until_call(&mut h, 2000, &mut events));
        p.sequence += 1;
        h.disk.put(&p);
        h.n.handle_fence_device(h.now, 1, p.host_uuid, 1, DeviceOutcome::Off);
        for _ in 0..3 {
            events.extend(h.cycle());
        }
        assert_eq!(kinds(&events), ["intent", "calling", "result", "aborted"]);
        assert!(events.contains(&Event::FenceDeviceAborted { slot: 1, why: DeviceAbort::ChangedAfterOff }));
        assert_eq!(h.disk.get(1), p, "the host's own record stands");
        assert_eq!(h.n.peers()[1].vms_gone(), Err(NotProven::Alive));
    }

    /// A higher member's intent in the slot (it coordinated while we looked unresponsive) is taken
    /// over by the coordinator: it never blocks the device.
    #[test]
    fn a_higher_members_intent_is_taken_over_by_the_coordinator() {
        let (mut h, p) = with_device_peer();
        let mut other = net_peer(2, 1, &[0, 2], 1);
        let mut intent = p;
        intent.flags |= flags::FENCE_INTENT;
        intent.fencer_slot = 2;
        h.disk.put(&intent);
        let mut events = Vec::new();
        let start = h.now;
        while h.now < start + 2000 && h.device_calls.is_empty() {
            other.sequence += 1;
            h.disk.put(&other);
            events.extend(h.cycle());
        }
        assert_eq!(h.device_calls.len(), 1, "{:?}", kinds(&events));
        assert_eq!(h.disk.get(1).fencer_slot, 0, "our intent replaced slot 2's");
    }

    /// A lower live member's intent in the slot: that member calls; we do not (we are slot 2).
    #[test]
    fn a_member_below_a_live_coordinator_never_calls_even_with_its_intent_in_the_slot() {
        let cfg = NodeConfig { slot: 2, fence_suspicion_ms: 500, ..net_config() };
        let mut h = H::with(cfg, Disk::new());
        h.n.set_fence_devices(&[encode_name("peer1").unwrap()]);
        h.go_live();
        assert!(h.n.poll_beat(h.now));
        let mut p = net_peer(1, 1, &[1, 2], 1);
        p.members.set(2);
        let mut lower = net_peer(0, 1, &[0, 2], 1);
        lower.members.set(2);
        for _ in 0..3 {
            p.sequence += 1;
            lower.sequence += 1;
            h.disk.put(&p);
            h.disk.put(&lower);
            h.cycle();
        }
        // Slot 0 is live and heard, so it coordinates; slot 1 goes silent and 0 writes its intent.
        let mut intent = p;
        intent.flags |= flags::FENCE_INTENT;
        intent.fencer_slot = 0;
        h.disk.put(&intent);
        let start = h.now;
        let mut seq = 1000;
        while h.now < start + 2000 {
            lower.sequence += 1;
            h.disk.put(&lower);
            seq += 1;
            let mut pk = packet(0, seq, 1 + h.now, 0, false, 0);
            pk.dest_slot = 2;
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &pk).unwrap();
            h.cycle();
        }
        assert!(h.device_calls.is_empty());
        assert_eq!(h.disk.get(1), intent);
    }

    #[test]
    fn after_our_own_read_gap_every_peer_gets_a_full_host_dead_again() {
        let (mut h, _p) = with_live_peer(2);
        // Our reads fail for 1.5 s (more than the read gap T/4); the peer went silent meanwhile.
        h.disk.fail[2] = true;
        let gap_start = h.now;
        while h.now < gap_start + 1500 {
            h.cycle();
        }
        h.disk.fail[2] = false;
        let back = h.now;
        while h.now < back + 3800 {
            h.cycle();
            assert_ne!(
                h.n.peers()[2].state,
                PeerState::Dead,
                "dead {} ms after our reads came back",
                h.now - back
            );
        }
        for _ in 0..5 {
            h.cycle();
        }
        assert_eq!(h.n.peers()[2].state, PeerState::Dead);
    }

    /// Us and peer 1, both network-enabled, hearing each other. Returns the harness and our
    /// last beat's send time.
    fn pair_live() -> (H, [Record; 1]) {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        let mut peers = [net_peer(1, 1, &[0, 1], 1)];
        advance(&mut h, &mut peers, 2);
        (h, peers)
    }

    /// Our beat now (its send time is what the peer echoes).
    fn beat(h: &mut H) -> u64 {
        if h.n.poll_beat(h.now) {
            let v = h.n.view_at(h.now);
            assert_eq!(h.n.beat_packet(1, h.now, &v).send_monotonic_ms, h.now);
        }
        h.now
    }

    #[test]
    fn the_whole_lun_lost_for_every_member_is_ridden_through_while_the_evidence_is_fresh() {
        let (mut h, _peers) = pair_live();
        let deadline = h.n.last_ok_ms() + 2000;
        // The disk goes away for everyone: our reads and writes fail.
        h.lose_disk();
        let mut seq = 10_000;
        let mut lun_lost = 0;
        // The peer says, every interval, that it lost the disk too, echoing our latest beat.
        while h.now < deadline + 3000 {
            let sent = beat(&mut h);
            seq += 1;
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(1, seq, 50, sent, true, 1500))
                .unwrap();
            let events = h.cycle();
            lun_lost += events.iter().filter(|e| matches!(e, Event::LunLost { members: 1, .. })).count();
            assert_eq!(h.n.phase(), Phase::Live, "fenced at {} (storage deadline {deadline})", h.now);
        }
        assert!(h.n.riding_through());
        // Said every cycle, though each read failed on its own (the sweep itself returned).
        assert!(lun_lost >= 10, "{lun_lost} LunLost events while riding through");
        assert!(h.n.fence_deadline_ms().unwrap() > deadline);
        // The peer's disk comes back (not ours): its packets say so. Its last vouching packet
        // still bounds our deadline (it restarts its silence clocks at its first good read):
        // we fence once that evidence is older than the net timeout, not before, not after.
        let last_vouch = h.now - 200;
        while h.n.phase() == Phase::Live {
            let sent = beat(&mut h);
            seq += 1;
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(1, seq, 60, sent, false, 10))
                .unwrap();
            h.cycle();
            assert!(h.now <= last_vouch + 2000 + 200, "rode on past the last vouching packet's echo");
        }
        assert!(h.now + 200 >= last_vouch + 2000, "fenced {} ms early", last_vouch + 2000 - h.now);
        assert!(matches!(h.n.phase(), Phase::Fenced(FenceReason::StorageLost { .. })), "{:?}", h.n.phase());
    }

    #[test]
    fn a_ride_through_survives_the_disk_coming_back() {
        let (mut h, mut peers) = pair_live();
        let deadline = h.n.last_ok_ms() + 2000;
        h.lose_disk();
        let mut seq = 10_000;
        while h.now < deadline + 2000 {
            let sent = beat(&mut h);
            seq += 1;
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(1, seq, 50, sent, true, 1500))
                .unwrap();
            h.cycle();
        }
        assert!(h.n.riding_through());
        // The LUN comes back for everyone: the peer says so, its records advance again.
        h.disk.fail = vec![false; SLOTS as usize];
        h.write_fails = false;
        for _ in 0..30 {
            let sent = beat(&mut h);
            seq += 1;
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(1, seq, 60, sent, false, 10))
                .unwrap();
            advance(&mut h, &mut peers, 1);
            assert_eq!(h.n.phase(), Phase::Live, "fenced after the disk came back, at {}", h.now);
        }
        assert!(!h.n.riding_through());
        assert!(h.n.last_ok_ms() + 1000 > h.now, "no verified write since the disk came back");
        assert_eq!(h.n.peers()[1].state, PeerState::Live);
    }

    /// The network thread feeds the watchdog (issue 16): until the storage deadline whatever the
    /// disk does (the watchdog then fires by ok + 0.75 T, as every proof assumes), then only on
    /// ride-through evidence; never more than once per interval, never once fencing.
    #[test]
    fn the_network_thread_feeds_the_watchdog_until_the_deadline_then_only_on_ride_evidence() {
        // Without the peer's vouching: fed until the storage deadline, never after.
        let (mut h, _peers) = pair_live();
        let deadline = h.n.last_ok_ms() + 2000;
        h.lose_disk();
        let mut feeds = Vec::new();
        while h.n.phase() == Phase::Live && h.now < deadline + 2000 {
            if h.n.poll_net_feed(h.now) {
                feeds.push(h.now);
            }
            assert!(!h.n.poll_net_feed(h.now), "at most once per interval");
            h.cycle();
        }
        assert!(feeds.len() >= 5, "fed through the storage grace: {feeds:?}");
        assert!(feeds.iter().all(|&f| f < deadline), "fed past the deadline without evidence: {feeds:?}");
        assert!(!h.n.poll_net_feed(h.now + 1000), "never once fencing");

        // A hung heartbeat loop (a stuck thread: the node stays live, nothing but the network
        // thread runs): feeding stops at the storage deadline, so the watchdog resets the host.
        let (mut h, _peers) = pair_live();
        let deadline = h.n.last_ok_ms() + 2000;
        let mut last = 0;
        for now in (h.now..deadline + 3000).step_by(50) {
            if h.n.poll_net_feed(now) {
                last = now;
            }
        }
        assert_eq!(h.n.phase(), Phase::Live);
        assert!(last > 0 && last < deadline, "last feed {last}, deadline {deadline}");

        // With every member vouching: fed past the storage deadline, while riding.
        let (mut h, _peers) = pair_live();
        let deadline = h.n.last_ok_ms() + 2000;
        h.lose_disk();
        let mut seq = 10_000;
        let mut late = 0;
        while h.now < deadline + 2000 {
            let sent = beat(&mut h);
            seq += 1;
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(1, seq, 50, sent, true, 1500))
                .unwrap();
            if h.n.poll_net_feed(h.now) && h.now >= deadline {
                assert!(h.n.riding_through(), "fed past the deadline only while riding");
                late += 1;
            }
            h.cycle();
        }
        assert_eq!(h.n.phase(), Phase::Live);
        assert!(late > 5, "fed on ride evidence: {late}");
    }

    /// Seen in tests/netns.rs (before 50ed769 skipped the rule on sweeps that read nothing): the
    /// disk failed for the whole pool just after the hosts started hearing each other, before
    /// their records said so. The last views read (peers 1 and 2 not hearing us) stayed frozen;
    /// frozen is not stable: we must ride through, not fence for a partition the network does
    /// not have.
    #[test]
    fn views_frozen_by_a_lost_disk_never_fence_for_a_partition() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        // On the disk, 1 and 2 hear each other but not us yet: {1, 2} beats {0}.
        let mut peers = [net_peer(1, 1, &[1, 2], 1), net_peer(2, 1, &[1, 2], 1)];
        let mut seq = 0;
        let mut hear_all = |h: &mut H, disk_lost: bool| {
            let sent = beat(h);
            seq += 1;
            for from in [1, 2] {
                let mut p = packet(from, seq, 50 + h.now, sent, disk_lost, if disk_lost { 1500 } else { 10 });
                p.net_view = view(&[0, 1, 2]);
                h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &p).unwrap();
            }
        };
        for _ in 0..2 {
            hear_all(&mut h, false);
            advance(&mut h, &mut peers, 1);
        }
        assert!(h.n.partition().unwrap().decision.unwrap().must_fence(0), "the stale views put us outside");
        // The disk is lost for everyone; on the network, everyone hears everyone.
        h.lose_disk();
        let deadline = h.n.last_ok_ms() + 2000;
        while h.now < deadline + 4000 {
            hear_all(&mut h, true);
            h.cycle();
            assert_eq!(h.n.phase(), Phase::Live, "at {} (storage deadline {deadline})", h.now);
        }
        assert!(h.n.riding_through());
    }

    /// The short version: a disk hiccup (shorter than the self-fence deadline) just after a view
    /// change. The time the views could not be read must not count towards their stability, or
    /// the first sweep after the hiccup fences on the views read before it.
    #[test]
    fn a_disk_hiccup_does_not_count_towards_stable_views() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        // On the disk, 1 and 2 hear each other but not us yet: {1, 2} beats {0}.
        let mut peers = [net_peer(1, 1, &[1, 2], 1), net_peer(2, 1, &[1, 2], 1)];
        let mut seq = 0;
        let mut hear_all = |h: &mut H| {
            let sent = beat(h);
            seq += 1;
            for from in [1, 2] {
                let mut p = packet(from, seq, 50 + h.now, sent, false, 10);
                p.net_view = view(&[0, 1, 2]);
                h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &p).unwrap();
            }
        };
        let delay = h.n.config().timing.partition_delay_ms();
        // Stable (read unchanged) for 1.4 s of the 2.4 s decision delay.
        loop {
            hear_all(&mut h);
            advance(&mut h, &mut peers, 1);
            let p = h.n.partition().unwrap();
            if p.decision.unwrap().must_fence(0) && h.now >= p.stable_since_ms + 1400 {
                break;
            }
        }
        let since = h.n.partition().unwrap().stable_since_ms;
        assert!(h.now < since + delay, "already stable for the decision delay");
        // 1.2 s without a readable disk (every host: nobody writes), under the 2 s deadline.
        h.lose_disk();
        let back = h.now + 1200;
        while h.now < back {
            hear_all(&mut h);
            h.cycle();
        }
        assert!(h.now >= since + delay, "the hiccup did not outlast the decision delay");
        h.disk.fail = vec![false; SLOTS as usize];
        h.write_fails = false;
        // The first sweeps read the views from before the hiccup; then the peers' new records
        // say they hear us.
        for k in 0..20 {
            hear_all(&mut h);
            if k >= 2 {
                for p in &mut peers {
                    p.net_view = view(&[0, 1, 2]);
                }
            }
            advance(&mut h, &mut peers, 1);
            assert_eq!(h.n.phase(), Phase::Live, "cycle {k} after the hiccup, at {}", h.now);
        }
        assert!(!h.n.partition().unwrap().decision.unwrap().must_fence(0));
    }

    /// Partial: our slot reads, the slots of 1 and 2 (whose last views read do not have us)
    /// fail. Views we cannot read are not stable views, whatever the other reads do.
    #[test]
    fn unreadable_participants_views_are_not_stable_views() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        let mut peers = [net_peer(1, 1, &[1, 2], 1), net_peer(2, 1, &[1, 2], 1)];
        let mut seq = 0;
        let mut hear_all = |h: &mut H| {
            seq += 1;
            for from in [1, 2] {
                let mut p = packet(from, seq, 50 + h.now, 0, false, 10);
                p.net_view = view(&[0, 1, 2]);
                h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &p).unwrap();
            }
        };
        hear_all(&mut h);
        advance(&mut h, &mut peers, 2);
        assert!(h.n.partition().unwrap().decision.unwrap().must_fence(0));
        h.disk.fail[1] = true;
        h.disk.fail[2] = true;
        let until = h.now + 2 * h.n.config().timing.partition_delay_ms();
        while h.now < until {
            hear_all(&mut h);
            h.cycle();
            assert_eq!(h.n.phase(), Phase::Live, "fenced on views it could not read, at {}", h.now);
        }
    }

    #[test]
    fn ride_through_ends_when_the_echo_is_older_than_the_network_timeout() {
        let (mut h, _peers) = pair_live();
        let deadline = h.n.last_ok_ms() + 2000;
        h.lose_disk();
        let mut seq = 10_000;
        let mut echoed = 0;
        while h.now < deadline + 1000 {
            echoed = beat(&mut h);
            seq += 1;
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(1, seq, 50, echoed, true, 1500))
                .unwrap();
            h.cycle();
        }
        assert_eq!(h.n.phase(), Phase::Live);
        // Packets keep arriving but echo an old beat of ours (delayed, or the peer stopped
        // hearing us): not fresh evidence.
        while h.n.phase() == Phase::Live {
            seq += 1;
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(1, seq, 50, echoed, true, 1500))
                .unwrap();
            h.cycle();
            assert!(h.now < echoed + 2000 + 400, "still riding at {} (echo {echoed})", h.now);
        }
        assert!(h.now >= echoed + 2000 - 200);
    }

    #[test]
    fn no_ride_through_when_a_member_reports_a_working_disk_or_is_not_heard() {
        for peer_lost in [false, true] {
            let (mut h, _peers) = pair_live();
            let deadline = h.n.last_ok_ms() + 2000;
            h.lose_disk();
            let mut seq = 10_000;
            while h.n.phase() == Phase::Live {
                let sent = beat(&mut h);
                seq += 1;
                if peer_lost {
                    // Lost the disk, but only for 500 ms: less than the read gap.
                    h.n.handle_packet(
                        h.now,
                        0,
                        crate::net::VERSION_MINOR,
                        &packet(1, seq, 50, sent, true, 500),
                    )
                    .unwrap();
                } else {
                    h.n.handle_packet(
                        h.now,
                        0,
                        crate::net::VERSION_MINOR,
                        &packet(1, seq, 50, sent, false, 100),
                    )
                    .unwrap();
                }
                h.cycle();
                assert!(h.now <= deadline + 200);
            }
            assert!(matches!(h.n.phase(), Phase::Fenced(FenceReason::StorageLost { .. })));
        }
    }

    /// No time limit while every member vouches (format 1.7 members): 10 T of outage, then the
    /// evidence stops and the host fences within the network timeout of the last vouch.
    #[test]
    fn ride_through_lasts_as_long_as_every_member_vouches() {
        let (mut h, _peers) = pair_live();
        let deadline = h.n.last_ok_ms() + 2000;
        h.lose_disk();
        let mut seq = 10_000;
        let mut last_sent = 0;
        while h.now < deadline + 40_000 {
            last_sent = beat(&mut h);
            seq += 1;
            h.n.handle_packet(
                h.now,
                0,
                crate::net::VERSION_MINOR,
                &packet(1, seq, 50, last_sent, true, 5000),
            )
            .unwrap();
            h.cycle();
            assert_eq!(
                h.n.phase(),
                Phase::Live,
                "fenced {} ms into a ride with fresh evidence",
                h.now - deadline
            );
        }
        assert!(h.n.riding_through());
        assert_eq!(h.n.ride_status(h.now).map(|r| r.cap_ms), Some(None), "no cap with 1.7 members");
        while h.n.phase() == Phase::Live {
            h.cycle();
            assert!(h.now <= last_sent + 2000 + 400, "rode on evidence older than the network timeout");
        }
    }

    /// A member writing records older than format 1.7 may join during an outage relying on the
    /// cap: while one is a member, the ride stops at the storage deadline + 2 T.
    #[test]
    fn ride_through_is_bounded_by_ride_max_while_a_member_is_older_than_1_7() {
        let (mut h, peers) = pair_live();
        let mut old = peers[0];
        old.sequence += 1;
        h.disk.put_old(&old, 6);
        h.cycle();
        let deadline = h.n.last_ok_ms() + 2000;
        let ride_max = h.n.config().timing.ride_max_ms();
        h.lose_disk();
        let mut seq = 10_000;
        while h.n.phase() == Phase::Live {
            let sent = beat(&mut h);
            seq += 1;
            h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(1, seq, 50, sent, true, 5000))
                .unwrap();
            h.cycle();
            assert!(h.now <= deadline + ride_max + 200, "rode through past ride_max");
        }
        assert!(h.now >= deadline + ride_max - 200, "stopped riding early, at {}", h.now - deadline);
    }

    #[test]
    fn a_disk_only_member_or_a_single_host_never_rides_through() {
        // A member without network heartbeats cannot vouch for anything.
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        let mut peers = [peer_record(1, 1, 1, State::Live)];
        advance(&mut h, &mut peers, 2);
        let deadline = h.n.last_ok_ms() + 2000;
        h.lose_disk();
        while h.n.phase() == Phase::Live {
            h.cycle();
        }
        assert!(h.now <= deadline + 200);
        // Alone: nobody vouches.
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        let deadline = h.n.last_ok_ms() + 2000;
        h.lose_disk();
        while h.n.phase() == Phase::Live {
            h.cycle();
        }
        assert!(h.now <= deadline + 200);
    }

    #[test]
    fn a_young_host_gives_silent_network_peers_older_than_1_7_the_ride_through_bound_too() {
        let mut h = H::with(net_config(), Disk::new());
        let mut p = net_peer(1, 1, &[1], 1);
        h.disk.put_old(&p, 6);
        h.go_live();
        p.sequence += 1;
        h.disk.put_old(&p, 6);
        h.cycle();
        let silent_from = h.now;
        // The peer stops (it may be riding through a LUN loss we did not see: we are new). We
        // joined after time 0: until host-dead + ride_max after that we are young.
        let young_until = 4000 + h.n.config().timing.ride_max_ms();
        while h.now + 200 < young_until.min(silent_from + young_until) {
            h.cycle();
            assert_ne!(h.n.peers()[1].state, PeerState::Dead, "dead after {} ms", h.now - silent_from);
        }
        for _ in 0..10 {
            h.cycle();
        }
        assert_eq!(h.n.peers()[1].state, PeerState::Dead);
    }

    /// A live, network-enabled 1.7 peer whose last record does not list us may be riding through
    /// an outage without knowing we exist: its silence is never death for us (`silent`, not
    /// proven); one that lists us is declared dead after host-dead, young or not.
    #[test]
    fn a_silent_peer_is_declared_dead_only_by_a_host_its_last_record_lists() {
        for listed in [false, true] {
            let mut h = H::with(net_config(), Disk::new());
            let mut p = net_peer(1, 1, &[1], 1);
            if !listed {
                p.members = crate::format::record::Members::EMPTY;
            }
            h.disk.put(&p);
            h.go_live();
            p.sequence += 1;
            h.disk.put(&p);
            h.cycle();
            let silent_from = h.now;
            while h.now < silent_from + 40_000 && h.n.peers()[1].state != PeerState::Dead {
                h.cycle();
            }
            if listed {
                assert_eq!(h.n.peers()[1].state, PeerState::Dead);
                assert!(h.now < silent_from + 4000 + 400, "declared dead after {} ms", h.now - silent_from);
            } else {
                assert_eq!(h.n.peers()[1].state, PeerState::Silent);
                assert_eq!(h.n.peers()[1].vms_gone(), Err(NotProven::NotListed));
                assert!(!h.n.members().contains(1), "a silent peer is no member");
            }
        }
    }

    /// Our records list whom a ride would need vouching from: the last membership and every
    /// host we hear; that stays listed until a write of ours is verified again.
    #[test]
    fn records_list_the_ride_membership() {
        let mut h = H::with(net_config(), Disk::new());
        h.go_live();
        let mut peers = [net_peer(1, 1, &[0, 1], 1)];
        advance(&mut h, &mut peers, 2);
        // Slot 2 is heard on the network but holds no slot on the disk we read.
        h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(2, 1, 5, 0, false, 10)).unwrap();
        advance(&mut h, &mut peers, 2);
        let r = h.disk.get(0);
        assert_eq!(r.members.iter().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn records_publish_the_view_weight_and_isolation() {
        let mut h =
            H::with(NodeConfig { weight: 7, isolation_configured: true, ..net_config() }, Disk::new());
        h.go_live();
        h.n.handle_isolation(false);
        let mut peers = [net_peer(1, 1, &[0, 1], 1)];
        h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &packet(1, 1, 5, 0, false, 10)).unwrap();
        advance(&mut h, &mut peers, 2);
        let r = h.disk.get(0);
        assert_eq!(r.weight, 7);
        assert_eq!(r.net_view.iter().collect::<Vec<_>>(), vec![0, 1]);
        let f = flags::NET_ENABLED | flags::ISOLATION_CONFIGURED | flags::ISOLATED;
        assert_eq!(r.flags & f, f);
        h.n.handle_isolation(true);
        advance(&mut h, &mut peers, 1);
        assert_eq!(h.disk.get(0).flags & flags::ISOLATED, 0);
    }
}

#[test]
fn an_echo_from_another_boot_is_not_evidence() {
    use crate::net::packet::flags as pflags;
    use crate::net::Packet;
    let mut h = H::with(NodeConfig { networks: 1, ..config() }, Disk::new());
    h.go_live();
    let mut p = peer_record(1, 1, 1, State::Live);
    p.flags = flags::NET_ENABLED;
    for _ in 0..3 {
        p.sequence += 1;
        h.disk.put(&p);
        h.cycle();
    }
    assert!(h.n.poll_beat(h.now));
    let deadline = h.n.last_ok_ms() + 2000;
    h.lose_disk();
    let mut seq = 0;
    while h.n.phase() == Phase::Live {
        seq += 1;
        // The peer echoes a send time of our previous boot: later than our clock now.
        let pkt = Packet {
            cluster_uuid: CLUSTER,
            sender_slot: 1,
            generation: 1,
            sequence: seq,
            send_monotonic_ms: 5,
            disk_age_ms: 5000,
            flags: pflags::DISK_LOST,
            net_view: crate::format::record::NetView::EMPTY,
            dest_slot: 0,
            echo_ms: 10_000_000,
        };
        h.n.handle_packet(h.now, 0, crate::net::VERSION_MINOR, &pkt).unwrap();
        h.cycle();
        assert!(h.now <= deadline + 200, "rode through on an echo from another boot");
    }
}
