//! Deterministic tests of the core with a simulated clock and an in-memory disk.

use super::*;
use crate::format::encode_name;
use crate::format::mailbox::SENDER_TOOL;

const CLUSTER: uuid::Uuid = uuid::Uuid::from_u128(0xc1);
const T_MS: u32 = 4000; // interval 200, io 1000, self-fence 2000, host dead 4000
const SLOTS: u32 = 4;

/// An in-memory record table plus our mailbox, with per-slot read failures.
struct Sim {
    slots: Vec<[u8; 512]>,
    fail: Vec<bool>,
    mailbox: [u8; 512],
    mailbox_fail: bool,
}

impl SlotSource for Sim {
    fn slot(&self, slot: u32) -> Result<&[u8], Status> {
        if self.fail[slot as usize] {
            Err(Status::Failed(5))
        } else {
            Ok(&self.slots[slot as usize])
        }
    }
    fn mailbox(&self) -> Result<&[u8], Status> {
        if self.mailbox_fail {
            Err(Status::Failed(5))
        } else {
            Ok(&self.mailbox)
        }
    }
}

impl Sim {
    fn new() -> Sim {
        let mut s = Sim {
            slots: vec![[0; 512]; SLOTS as usize],
            fail: vec![false; SLOTS as usize],
            mailbox: [0; 512],
            mailbox_fail: false,
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
    fn get(&self, slot: u32) -> Record {
        Record::decode(&self.slots[slot as usize], &CLUSTER, slot).unwrap()
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

fn core(now: u64) -> Core {
    Core::new(
        CoreConfig {
            slot: 0,
            slot_count: SLOTS,
            cluster_uuid: CLUSTER,
            host_uuid: uuid::Uuid::from_u128(0xabc),
            host_name: encode_name("me").unwrap(),
            timing: Timing::from_base(T_MS).unwrap(),
        },
        now,
    )
}

/// Runs one cycle at `now`: writes what the core asks (unless `write_fails`), sweeps the sim.
fn cycle(c: &mut Core, sim: &mut Sim, now: u64, write_fails: bool) -> Vec<Event> {
    let rec = c.record_to_write(now);
    let write = rec.map(|r| {
        if write_fails {
            (Status::Failed(5), 100)
        } else {
            sim.put(&r);
            (Status::Done, 100)
        }
    });
    c.handle_cycle(&CycleInput {
        cycle_start_ms: now,
        write,
        sweep_start_ms: now + 1,
        sweep_end_ms: now + 2,
        sweep_ran: true,
        sweep_latency_us: 200,
        slots: sim,
    });
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Brings a fresh core to Live on a free slot; returns the time reached.
fn go_live(c: &mut Core, sim: &mut Sim, mut now: u64) -> u64 {
    for _ in 0..100 {
        cycle(c, sim, now, false);
        now += 200;
        if c.phase() == Phase::Live {
            return now;
        }
    }
    panic!("never went live: {:?}", c.phase());
}

/// A live core with peer `slot` seen advancing once (state `Live`). Returns the sim, the core,
/// the peer's record as last written and the time reached.
fn with_live_peer(slot: u32) -> (Sim, Core, Record, u64) {
    let mut sim = Sim::new();
    let mut c = core(0);
    let mut p = peer_record(slot, 1, 1, State::Live);
    sim.put(&p);
    let now = go_live(&mut c, &mut sim, 0);
    p.sequence += 1;
    sim.put(&p);
    cycle(&mut c, &mut sim, now, false);
    (sim, c, p, now)
}

#[test]
fn joins_a_free_slot_after_verifying() {
    let mut sim = Sim::new();
    let mut c = core(0);
    cycle(&mut c, &mut sim, 0, false);
    assert_eq!(c.phase(), Phase::Acquiring);
    cycle(&mut c, &mut sim, 200, false);
    assert_eq!(c.phase(), Phase::Joining);
    assert_eq!(sim.get(0).state, State::Joining);
    assert_eq!(sim.get(0).generation, 1);
    // No write while joining; live only after 2 x io timeout.
    let mut now = 400;
    while c.phase() == Phase::Joining {
        assert!(now < 200 + 2 * 1000 + 400, "join took too long");
        cycle(&mut c, &mut sim, now, false);
        now += 200;
    }
    assert_eq!(c.phase(), Phase::Live);
    assert!(now - 200 + 1 >= 201 + 2000, "went live before 2 x io timeout");
    cycle(&mut c, &mut sim, now, false);
    assert_eq!(sim.get(0).state, State::Live);
}

#[test]
fn goes_live_only_with_a_written_heartbeat() {
    // The self-fence clock must start at a write peers can see: they start their host-dead clock
    // when they first read it. Live must not start the clock at a cycle that wrote nothing.
    let mut sim = Sim::new();
    let mut c = core(0);
    let (mut now, mut last_write) = (0, None);
    while c.phase() != Phase::Live {
        assert!(now < 10_000, "never went live");
        let before = sim.get(0);
        cycle(&mut c, &mut sim, now, false);
        if sim.get(0) != before {
            last_write = Some(now);
        }
        now += 200;
    }
    assert_eq!(Some(c.last_ok_ms()), last_write, "self-fence clock not started at the last write");
    assert_eq!(sim.get(0).state, State::Live);
    assert_eq!(c.fence_deadline_ms(), Some(c.last_ok_ms() + 2000));
}

#[test]
fn refuses_a_slot_that_advances() {
    let mut sim = Sim::new();
    let mut other = peer_record(0, 3, 10, State::Live);
    sim.put(&other);
    let mut c = core(0);
    let ev = cycle(&mut c, &mut sim, 0, false);
    assert!(ev.iter().any(|e| matches!(e, Event::WaitingForSlot { .. })), "{ev:?}");
    other.sequence += 1;
    sim.put(&other);
    cycle(&mut c, &mut sim, 200, false);
    match c.phase() {
        Phase::Refused(RefuseReason::SlotInUse { host_name }) => {
            assert_eq!(crate::format::decode_name(&host_name), Some("peer0"))
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(c.record_to_write(400), None, "a refused core never writes");
    assert_eq!(sim.get(0), other);
}

#[test]
fn takes_a_stale_slot_only_after_host_dead() {
    let mut sim = Sim::new();
    sim.put(&peer_record(0, 3, 10, State::Live));
    let mut c = core(0);
    let mut now = 0;
    while c.phase() == Phase::Acquiring {
        cycle(&mut c, &mut sim, now, false);
        now += 200;
    }
    // The join write happened in the cycle at now - 200; the watch started at 2 (first read end).
    assert!(now - 200 >= 2 + 4000, "took the slot after {now} ms");
    assert_eq!(sim.get(0).generation, 4);
    go_live(&mut c, &mut sim, now);
}

#[test]
fn clean_leave_allows_an_immediate_restart() {
    let mut sim = Sim::new();
    let mut c = core(0);
    let now = go_live(&mut c, &mut sim, 0);
    c.leave();
    cycle(&mut c, &mut sim, now, false);
    assert_eq!(c.phase(), Phase::Stopped);
    assert_eq!(sim.get(0).state, State::Leaving);
    let mut c2 = core(now);
    cycle(&mut c2, &mut sim, now + 200, false);
    cycle(&mut c2, &mut sim, now + 400, false);
    assert_eq!(c2.phase(), Phase::Joining, "no host-dead wait after a clean leave");
    assert_eq!(sim.get(0).generation, 2);
}

#[test]
fn foreign_write_during_join_refuses() {
    let mut sim = Sim::new();
    let mut c = core(0);
    cycle(&mut c, &mut sim, 0, false);
    cycle(&mut c, &mut sim, 200, false);
    assert_eq!(c.phase(), Phase::Joining);
    sim.put(&peer_record(0, 1, 1, State::Joining));
    cycle(&mut c, &mut sim, 400, false);
    assert_eq!(c.phase(), Phase::Refused(RefuseReason::ForeignDuringJoin));
}

#[test]
fn foreign_write_while_live_self_fences_without_writing() {
    let mut sim = Sim::new();
    let mut c = core(0);
    let now = go_live(&mut c, &mut sim, 0);
    let intruder = peer_record(0, 9, 1, State::Live);
    sim.put(&intruder);
    // Our write this cycle lands first, then the intruder's: simulate by writing after ours.
    let rec = c.record_to_write(now).unwrap();
    sim.put(&rec);
    sim.put(&intruder);
    c.handle_cycle(&CycleInput {
        cycle_start_ms: now,
        write: Some((Status::Done, 10)),
        sweep_start_ms: now + 1,
        sweep_end_ms: now + 2,
        sweep_ran: true,
        sweep_latency_us: 10,
        slots: &sim,
    });
    assert_eq!(c.phase(), Phase::SelfFencing(FenceReason::ForeignWrite));
    assert_eq!(c.record_to_write(now + 200), None, "never write into a slot someone else uses");
    assert_eq!(c.fence_due(), Some(FenceReason::ForeignWrite));
    assert_eq!(c.fence_due(), None, "the action runs once");
    c.fence_done();
    assert_eq!(c.record_to_write(now + 400), None);
    assert_eq!(sim.get(0), intruder);
}

#[test]
fn peer_lifecycle_unknown_live_dead_restart_leave() {
    let mut sim = Sim::new();
    let mut c = core(0);
    let mut p = peer_record(1, 1, 5, State::Live);
    sim.put(&p);
    let mut now = go_live(&mut c, &mut sim, 0);
    // Not advancing since we started: unknown, then dead once silent for host-dead.
    assert_eq!(c.peers()[1].state, PeerState::Unknown);
    p.sequence += 1;
    sim.put(&p);
    cycle(&mut c, &mut sim, now, false);
    assert_eq!(c.peers()[1].state, PeerState::Live);
    let stopped_at = now + 2; // end of the read that saw the last change
    let mut dead_at = None;
    for _ in 0..40 {
        now += 200;
        let ev = cycle(&mut c, &mut sim, now, false);
        if ev.iter().any(|e| {
            matches!(e, Event::Peer { slot: 1, change: PeerChange::State { to: PeerState::Dead, .. } })
        }) {
            dead_at = Some(now + 1);
            break;
        }
        assert_eq!(c.peers()[1].state, PeerState::Live, "dead too early at {now}");
    }
    let dead_at = dead_at.expect("never declared dead");
    assert!(dead_at - stopped_at >= 4000, "declared dead after {} ms", dead_at - stopped_at);
    assert!(dead_at - stopped_at <= 4000 + 2 * 200);
    assert!(c.peers()[1].silent_ms_at_death >= 4000);
    // It restarts: a new generation is reported.
    let p2 = peer_record(1, 2, 6, State::Live);
    sim.put(&p2);
    now += 200;
    let ev = cycle(&mut c, &mut sim, now, false);
    assert!(
        ev.contains(&Event::Peer {
            slot: 1,
            change: PeerChange::Restarted { old_generation: 1, new_generation: 2 }
        }),
        "{ev:?}"
    );
    assert_eq!(c.peers()[1].state, PeerState::Live);
    // It leaves cleanly: seen at once, never dead.
    let mut p3 = p2;
    p3.sequence += 1;
    p3.state = State::Leaving;
    sim.put(&p3);
    now += 200;
    cycle(&mut c, &mut sim, now, false);
    assert_eq!(c.peers()[1].state, PeerState::Leaving);
    for _ in 0..30 {
        now += 200;
        cycle(&mut c, &mut sim, now, false);
        assert_eq!(c.peers()[1].state, PeerState::Leaving);
    }
}

#[test]
fn our_failed_reads_never_age_a_peer() {
    let (mut sim, mut c, mut p, mut now) = with_live_peer(2);
    assert_eq!(c.peers()[2].state, PeerState::Live);
    // Our reads of slot 2 fail for 3 x host-dead while the peer keeps writing.
    sim.fail[2] = true;
    for _ in 0..60 {
        now += 200;
        p.sequence += 1;
        sim.put(&p);
        cycle(&mut c, &mut sim, now, false);
        assert_eq!(c.peers()[2].state, PeerState::Live, "a failed read aged the peer");
        assert!(c.peers()[2].unreadable);
    }
    sim.fail[2] = false;
    now += 200;
    cycle(&mut c, &mut sim, now, false);
    assert_eq!(c.peers()[2].state, PeerState::Live);
    // A sweep that did not run at all (engine failure) changes nothing either.
    c.record_to_write(now + 200);
    c.handle_cycle(&CycleInput {
        cycle_start_ms: now + 200,
        write: Some((Status::Done, 1)),
        sweep_start_ms: now + 9000,
        sweep_end_ms: now + 9001,
        sweep_ran: false,
        sweep_latency_us: 0,
        slots: &sim,
    });
    assert_eq!(c.peers()[2].state, PeerState::Live);
}

#[test]
fn corrupt_peer_is_reported_and_ages_like_silence() {
    let (mut sim, mut c, _, mut now) = with_live_peer(3);
    sim.slots[3][100] ^= 0xff;
    now += 200;
    let ev = cycle(&mut c, &mut sim, now, false);
    assert!(
        ev.iter().any(|e| matches!(e, Event::PeerCorrupt { slot: 3, reason: Corruption::BadChecksum })),
        "{ev:?}"
    );
    assert_eq!(c.peers()[3].state, PeerState::Corrupt);
    for _ in 0..25 {
        now += 200;
        cycle(&mut c, &mut sim, now, false);
    }
    assert_eq!(c.peers()[3].state, PeerState::Dead);
}

#[test]
fn self_fences_at_the_deadline_not_before() {
    let mut sim = Sim::new();
    let mut c = core(0);
    let mut now = go_live(&mut c, &mut sim, 0);
    cycle(&mut c, &mut sim, now, false);
    let last_ok = c.last_ok_ms();
    assert_eq!(last_ok, now);
    // Writes fail: a short outage (< self-fence) recovers without fencing.
    for _ in 0..5 {
        now += 200;
        cycle(&mut c, &mut sim, now, true);
        assert_eq!(c.phase(), Phase::Live);
    }
    now += 200;
    cycle(&mut c, &mut sim, now, false);
    let last_ok = c.last_ok_ms();
    loop {
        now += 200;
        cycle(&mut c, &mut sim, now, true);
        if c.phase() != Phase::Live {
            break;
        }
        assert!(now + 2 < last_ok + 2000);
    }
    assert!(now + 2 >= last_ok + 2000, "fenced {} ms after the last good cycle", now + 2 - last_ok);
    assert!(matches!(c.phase(), Phase::SelfFencing(FenceReason::StorageLost { .. })));
    // Storage is lost: the action comes first, no mark is attempted.
    assert!(c.fence_due().is_some());
    c.fence_done();
    assert!(matches!(c.phase(), Phase::Fenced(_)));
    assert_eq!(
        c.record_to_write(now).map(|r| r.state),
        Some(State::Fenced),
        "marked fenced after the action"
    );
}

#[test]
fn deadline_fires_without_any_cycle() {
    let mut sim = Sim::new();
    let mut c = core(0);
    let now = go_live(&mut c, &mut sim, 0);
    let deadline = c.fence_deadline_ms().unwrap();
    c.check_deadline(deadline - 1);
    assert_eq!(c.phase(), Phase::Live);
    c.check_deadline(deadline);
    assert!(matches!(c.phase(), Phase::SelfFencing(FenceReason::StorageLost { .. })));
    assert!(deadline > now);
}

#[test]
fn mailbox_fence_marks_first_then_acts() {
    let mut sim = Sim::new();
    // A stale request from before we joined is ignored.
    let mut m = Mailbox::empty(CLUSTER, 0);
    m.command = Command::Fence;
    m.request_id = 77;
    m.encode(&mut sim.mailbox);
    let mut c = core(0);
    let mut now = go_live(&mut c, &mut sim, 0);
    for _ in 0..5 {
        cycle(&mut c, &mut sim, now, false);
        now += 200;
    }
    assert_eq!(c.phase(), Phase::Live);
    // A test message is acknowledged in the record.
    m.command = Command::Test;
    m.request_id = 78;
    m.encode(&mut sim.mailbox);
    let ev = cycle(&mut c, &mut sim, now, false);
    assert!(ev.contains(&Event::MailboxTest { sender_slot: SENDER_TOOL, request_id: 78 }));
    now += 200;
    cycle(&mut c, &mut sim, now, false);
    assert_eq!(sim.get(0).mailbox_ack, 78);
    // A fence request: self_fencing is written first, then the action, then fenced.
    m.command = Command::Fence;
    m.request_id = 79;
    m.sender_slot = 2;
    m.encode(&mut sim.mailbox);
    now += 200;
    cycle(&mut c, &mut sim, now, false);
    let reason = FenceReason::FenceRequest { sender_slot: 2, request_id: 79 };
    assert_eq!(c.phase(), Phase::SelfFencing(reason));
    assert_eq!(c.fence_due(), None, "mark before acting");
    now += 200;
    cycle(&mut c, &mut sim, now, false);
    assert_eq!(sim.get(0).state, State::SelfFencing);
    assert_eq!(sim.get(0).mailbox_ack, 79);
    assert_eq!(c.fence_due(), Some(reason));
    c.fence_done();
    now += 200;
    cycle(&mut c, &mut sim, now, false);
    assert_eq!(sim.get(0).state, State::Fenced);
    let seq = sim.get(0).sequence;
    for _ in 0..5 {
        now += 200;
        cycle(&mut c, &mut sim, now, false);
    }
    assert_eq!(sim.get(0).sequence, seq, "a fenced host stops writing");
}

#[test]
fn unreadable_slot_while_acquiring_eventually_refuses() {
    let mut sim = Sim::new();
    sim.fail[0] = true;
    let mut c = core(0);
    let mut now = 0;
    while matches!(c.phase(), Phase::Acquiring) {
        cycle(&mut c, &mut sim, now, false);
        now += 200;
        assert!(now < 20_000);
    }
    assert_eq!(c.phase(), Phase::Refused(RefuseReason::Storage));
}

#[test]
fn no_allocation_growth_in_steady_state() {
    // Events are bounded: a flood of peer changes never grows the queue past its capacity.
    let mut sim = Sim::new();
    let mut c = core(0);
    let mut now = go_live(&mut c, &mut sim, 0);
    for i in 0..10_000u64 {
        let p = peer_record(1, i + 1, i, State::Live);
        sim.put(&p);
        c.record_to_write(now);
        c.handle_cycle(&CycleInput {
            cycle_start_ms: now,
            write: Some((Status::Done, 1)),
            sweep_start_ms: now,
            sweep_end_ms: now,
            sweep_ran: true,
            sweep_latency_us: 1,
            slots: &sim,
        });
        // Keep our own slot consistent with what we "wrote".
        sim.put(c.record());
        now += 200;
    }
    assert!(c.events.len() <= EVENT_CAPACITY);
    assert!(c.events_dropped() > 0);
}

/// Regression (tests/sim.rs): a joining host went live with `last_ok` = the verification cycle,
/// although the last write peers had seen was the older join write. Its self-fence deadline
/// (last_ok + T/2 ~ join + T) was no earlier than the moment peers could declare the silent join
/// record dead (join + T), and with slow own reads it could go live after that moment.
#[test]
fn goes_live_only_once_a_live_heartbeat_is_read_back() {
    let mut sim = Sim::new();
    let mut c = core(0);
    cycle(&mut c, &mut sim, 0, false);
    cycle(&mut c, &mut sim, 200, false);
    assert_eq!(c.phase(), Phase::Joining);
    let mut now = 400;
    // Verified after 2 x io timeout: a `live` record is written next, but we are not live yet.
    while c.record_to_write(now).is_none() {
        cycle(&mut c, &mut sim, now, false);
        assert_eq!(c.phase(), Phase::Joining);
        now += 200;
        assert!(now < 4000);
    }
    // (record_to_write above bumped the sequence; the write below fails.)
    cycle(&mut c, &mut sim, now, true);
    assert_eq!(c.phase(), Phase::Joining, "live without a heartbeat peers could see");
    now += 200;
    cycle(&mut c, &mut sim, now, false);
    assert_eq!(c.phase(), Phase::Live);
    assert_eq!(sim.get(0).state, State::Live);
    assert_eq!(c.last_ok_ms(), now, "the deadline counts from the heartbeat read back");
}

#[test]
fn refuses_a_join_confirmed_too_late_for_peers() {
    let mut sim = Sim::new();
    let mut c = core(0);
    cycle(&mut c, &mut sim, 0, false);
    cycle(&mut c, &mut sim, 200, false);
    assert_eq!(c.phase(), Phase::Joining);
    // Our reads fail until just before peers may take the join record (written at 200) for dead
    // (200 + host-dead 4000): verifying then would put us live after peers declared us dead.
    sim.fail[0] = true;
    let mut now = 400;
    while now < 3800 {
        cycle(&mut c, &mut sim, now, false);
        assert_eq!(c.phase(), Phase::Joining);
        now += 200;
    }
    sim.fail[0] = false;
    for _ in 0..5 {
        cycle(&mut c, &mut sim, now, false);
        assert_ne!(c.phase(), Phase::Live, "went live at {now}, peers may declare us dead at 4200");
        now += 200;
    }
    assert_eq!(c.phase(), Phase::Refused(RefuseReason::Storage));
}

/// Regression: a fence request read just before the self-fence deadline switched the phase to
/// `SelfFencing`, which dropped the deadline (`fence_deadline_ms` was None outside `Live`). The
/// daemon then disarmed its backup thread and gave the mark write and the sweep a full io timeout
/// each: the action could run ~interval + 2 x io after the deadline, after peers declared us dead.
#[test]
fn a_fence_request_never_delays_the_fence_past_the_deadline() {
    let mut sim = Sim::new();
    let mut c = core(0);
    let mut now = go_live(&mut c, &mut sim, 0);
    cycle(&mut c, &mut sim, now, false);
    let deadline = c.fence_deadline_ms().unwrap();
    // Writes fail from now on; the mailbox is still readable.
    while now + 200 + 2 < deadline {
        now += 200;
        cycle(&mut c, &mut sim, now, true);
        assert_eq!(c.phase(), Phase::Live);
    }
    let mut m = Mailbox::empty(CLUSTER, 0);
    m.command = Command::Fence;
    m.request_id = 5;
    m.encode(&mut sim.mailbox);
    now += 200;
    cycle(&mut c, &mut sim, now, true);
    assert!(matches!(c.phase(), Phase::SelfFencing(FenceReason::FenceRequest { .. })));
    assert_eq!(c.fence_deadline_ms(), Some(deadline), "the deadline stays armed while marking");
    assert_eq!(c.fence_due(), None, "mark first while there is time");
    // At the deadline the mark is skipped: the action is due without another write.
    c.check_deadline(deadline);
    assert_eq!(c.record_to_write(deadline), None);
    assert!(matches!(c.fence_due(), Some(FenceReason::FenceRequest { .. })));
    c.fence_done();
    assert_eq!(c.fence_deadline_ms(), None);
}

/// Regression (tests/sim.rs): after our reads of a live peer's slot failed for longer than the
/// host-dead timeout, the first successful read hit a corrupt (torn) sector. Corrupt contents
/// never reset the peer's clock, so its silence counted our own outage: declared dead at once.
#[test]
fn a_corrupt_read_after_our_read_outage_does_not_kill_a_live_peer() {
    let (mut sim, mut c, mut p, mut now) = with_live_peer(2);
    assert_eq!(c.peers()[2].state, PeerState::Live);
    sim.fail[2] = true;
    for _ in 0..30 {
        now += 200;
        p.sequence += 1;
        sim.put(&p);
        cycle(&mut c, &mut sim, now, false);
    }
    sim.fail[2] = false;
    sim.slots[2][100] ^= 0xff;
    now += 200;
    cycle(&mut c, &mut sim, now, false);
    assert_eq!(c.peers()[2].state, PeerState::Corrupt, "declared dead on a corrupt read after our outage");
    // Corruption that persists still ages the peer to dead.
    for _ in 0..25 {
        now += 200;
        cycle(&mut c, &mut sim, now, false);
    }
    assert_eq!(c.peers()[2].state, PeerState::Dead);
}
