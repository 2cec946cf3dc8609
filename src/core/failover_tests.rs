//! Failover rules on a tiny in-memory pool: every host's `Failover` over one shared "disk" of
//! extents, fake drivers, actions performed at once in round-robin order.

use super::failover::*;
use super::peer::{GoneProof, NotProven, PeerState};
use crate::format::host_state::{HostState, VmState};
use crate::planner::Protection;
use crate::vm::{Capacity, Inventory, ProtectionSettings, VmInfo, VmRunState};
use std::collections::BTreeMap;

#[derive(Clone)]
struct FakeVm {
    name: String,
    memory_mib: u64,
    level: Protection,
    order: Option<i64>,
    group: Option<String>,
    running: bool,
}

struct Host {
    fo: Failover,
    vms: BTreeMap<uuid::Uuid, FakeVm>,
    up: bool,
    gone: Result<GoneProof, NotProven>,
    /// Who its record lets take its silence as death (`SlotView::lists`).
    lists: Option<crate::format::record::Members>,
    state: PeerState,
    /// The incarnation its slot's record names (another host's uuid once an intruder took it).
    host_uuid: uuid::Uuid,
    generation: u64,
    /// Starts fail with this message.
    fail_starts: Option<String>,
    /// The next read of its own previous extent fails.
    fail_previous: bool,
    /// VMs its driver's inventory omits (they run or not as `vms` says).
    hidden: std::collections::BTreeSet<uuid::Uuid>,
    /// Its driver lists these VMs twice.
    doubled: std::collections::BTreeSet<uuid::Uuid>,
    /// Lookups by UUID fail with this message.
    fail_lookups: Option<String>,
    /// Lookups answered: (uuid, answer).
    lookups: Vec<(uuid::Uuid, Option<VmRunState>)>,
    /// Starts of these VMs fail (and leave them running: half-started).
    fail_start_vms: std::collections::BTreeSet<uuid::Uuid>,
    /// Destroys of these VMs fail.
    fail_destroy_vms: std::collections::BTreeSet<uuid::Uuid>,
    /// Destroys performed (uuid, at).
    destroys: Vec<(uuid::Uuid, u64)>,
}

struct Pool {
    hosts: Vec<Host>,
    /// Per slot: sequence, state, and the writer its header names (host uuid, generation).
    extents: Vec<(u64, Option<HostState>, (uuid::Uuid, u64))>,
    /// The extent sequences the records show: one step behind the extents, as a record write
    /// follows the extent write in the daemon.
    visible: Vec<u64>,
    now: u64,
    /// Every start performed: (host, uuid).
    starts: Vec<(u32, uuid::Uuid)>,
    /// (viewer, slot) -> the state the viewer sees instead of the truth.
    overrides: BTreeMap<(usize, usize), PeerState>,
    /// slot -> the generation every viewer still sees (a stale view of a retaken slot).
    stale_generation: BTreeMap<usize, u64>,
    /// Reads of these slots' extents fail.
    bad_extents: std::collections::BTreeSet<usize>,
    /// A VM an administrator started twice: the no-double-run check waits for diskbeat to act.
    allow_twice: bool,
}

fn uuid(n: u8) -> uuid::Uuid {
    uuid::Uuid::from_bytes([n; 16])
}

/// Host `s`'s daemon's uuid (never a VM's: those repeat one byte).
fn host_uuid(s: u32) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x4057_0000 + u128::from(s))
}

impl Pool {
    fn new(n: u32, memory_mib: u64) -> Pool {
        let hosts = (0..n)
            .map(|s| Host {
                fo: Failover::new(
                    FailoverConfig {
                        slot: s,
                        slot_count: n,
                        inventory_interval_ms: 100,
                        driver: true,
                        capacity_limit: Some(crate::format::host_state::HostCapacity {
                            memory_mib,
                            vcpus: 64,
                            accepts_restarts: true,
                        }),
                        hb_addrs: vec![],
                        tolerance_target: None,
                        start_landing_ms: 400,
                    },
                    0,
                ),
                vms: BTreeMap::new(),
                up: true,
                gone: Err(NotProven::Alive),
                lists: None,
                state: PeerState::Live,
                host_uuid: host_uuid(s),
                generation: 1,
                fail_starts: None,
                fail_previous: false,
                hidden: Default::default(),
                doubled: Default::default(),
                fail_lookups: None,
                lookups: vec![],
                fail_start_vms: Default::default(),
                fail_destroy_vms: Default::default(),
                destroys: vec![],
            })
            .collect();
        Pool {
            hosts,
            extents: vec![(0, None, (uuid::Uuid::nil(), 0)); n as usize],
            visible: vec![0; n as usize],
            now: 0,
            starts: vec![],
            overrides: BTreeMap::new(),
            stale_generation: BTreeMap::new(),
            bad_extents: Default::default(),
            allow_twice: false,
        }
    }

    fn add_vm(&mut self, host: u32, n: u8, memory_mib: u64, level: Protection, order: Option<i64>) {
        let vm = FakeVm { name: format!("vm{n}"), memory_mib, level, order, group: None, running: true };
        self.hosts[host as usize].vms.insert(uuid(n), vm);
    }

    fn views(&self) -> Vec<SlotView> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| SlotView {
                state: h.state,
                host_uuid: h.host_uuid,
                generation: h.generation,
                extent_sequence: self.visible[i],
                gone: h.gone,
                lists: h.lists,
            })
            .collect()
    }

    /// `host`'s daemon dies (its VMs keep running) and an intruder takes its slot at the same
    /// generation (another host uuid), then dies with its watchdog armed: the slot's record is
    /// proven gone, but the extent is still the one `host` wrote.
    fn intruder_takes_slot(&mut self, host: u32) {
        let h = &mut self.hosts[host as usize];
        h.up = false;
        h.host_uuid = uuid::Uuid::from_u128(0x1e7e_0000 + u128::from(host));
        h.state = PeerState::Dead;
        h.gone = Ok(GoneProof::WatchdogExpired);
    }

    /// Kills `host` (its VMs stop) and, once `proven`, shows it fenced to everyone.
    fn kill(&mut self, host: u32) {
        let h = &mut self.hosts[host as usize];
        h.up = false;
        for vm in h.vms.values_mut() {
            vm.running = false;
        }
        h.state = PeerState::Fenced;
        h.gone = Ok(GoneProof::FencedMark);
    }

    fn step(&mut self) {
        self.now += 50;
        let views = self.views();
        for i in 0..self.hosts.len() {
            if !self.hosts[i].up {
                continue;
            }
            let generation = self.hosts[i].generation;
            let mut views = views.clone();
            for (&slot, &generation) in &self.stale_generation {
                views[slot].generation = generation;
            }
            for (&(viewer, slot), &state) in &self.overrides {
                if viewer == i {
                    views[slot].state = state;
                }
            }
            self.hosts[i].fo.handle_slots(&views, generation, true);
            if self.hosts[i].fo.needs_previous(self.now) {
                let prev = if std::mem::take(&mut self.hosts[i].fail_previous) {
                    Err("EIO".to_string())
                } else {
                    Ok(self.extents[i].1.clone())
                };
                self.hosts[i].fo.handle_previous(self.now, prev);
            }
            for _ in 0..200 {
                let Some(action) = self.hosts[i].fo.poll_action(self.now) else { break };
                self.perform(i, action);
            }
            if !self.allow_twice {
                self.check_no_vm_twice();
            }
        }
        self.visible = self.extents.iter().map(|e| e.0).collect();
    }

    fn perform(&mut self, i: usize, action: FailoverAction) {
        let h = &mut self.hosts[i];
        match action {
            FailoverAction::PollInventory => {
                let vms: Vec<VmInfo> = h
                    .vms
                    .iter()
                    .filter(|(u, _)| !h.hidden.contains(u))
                    .flat_map(|(u, v)| std::iter::repeat_n((u, v), if h.doubled.contains(u) { 2 } else { 1 }))
                    .map(|(u, v)| VmInfo {
                        name: v.name.clone(),
                        uuid: *u,
                        memory_mib: v.memory_mib,
                        vcpus: 1,
                        state: if v.running { VmRunState::Running } else { VmRunState::Stopped },
                        protection: ProtectionSettings {
                            level: v.level,
                            order: v.order,
                            anti_affinity: v.group.clone(),
                        },
                        definition: format!("def-{}", v.name).into_bytes(),
                    })
                    .collect();
                let inv = Inventory { capacity: Capacity { memory_mib: 1 << 20, vcpus: 64 }, vms };
                h.fo.handle_inventory(self.now, Ok(inv));
            }
            FailoverAction::ReadExtent { slot, .. } if self.bad_extents.contains(&(slot as usize)) => {
                let seq = self.extents[slot as usize].0;
                h.fo.handle_extent(
                    slot,
                    seq,
                    ExtentWriter { host_uuid: None, generation: 0 },
                    Err("checksum mismatch".into()),
                );
            }
            FailoverAction::ReadExtent { slot, .. } => {
                let (seq, st, (host_uuid, generation)) = self.extents[slot as usize].clone();
                let writer = ExtentWriter { host_uuid: Some(host_uuid), generation };
                self.hosts[i].fo.handle_extent(slot, seq, writer, Ok(st));
            }
            FailoverAction::Publish(state) => {
                let e = &mut self.extents[i];
                e.0 += 1;
                e.1 = Some(state);
                e.2 = (h.host_uuid, h.generation);
                let seq = e.0;
                h.fo.handle_published(self.now, Ok(seq));
            }
            FailoverAction::Start { uuid, name, definition, .. } => {
                assert_eq!(definition, format!("def-{name}").into_bytes());
                let half = h.fail_start_vms.contains(&uuid);
                let r = match &h.fail_starts {
                    Some(why) => Err(why.clone()),
                    None if half => {
                        let origin =
                            self.hosts.iter().find_map(|o| o.vms.get(&uuid)).cloned().expect("known VM");
                        let h = &mut self.hosts[i];
                        h.vms.entry(uuid).or_insert(FakeVm { running: true, ..origin }).running = true;
                        Err("half-started, then failed".to_string())
                    }
                    None => {
                        // The definition carries the VM's settings: copy them from its origin.
                        let origin =
                            self.hosts.iter().find_map(|o| o.vms.get(&uuid)).cloned().expect("known VM");
                        let h = &mut self.hosts[i];
                        let vm = h.vms.entry(uuid).or_insert(FakeVm { running: false, ..origin });
                        vm.running = true;
                        self.starts.push((i as u32, uuid));
                        Ok(())
                    }
                };
                self.hosts[i].fo.handle_start(self.now, uuid, r);
            }
            FailoverAction::Destroy { uuid, .. } => {
                h.destroys.push((uuid, self.now));
                if h.fail_destroy_vms.contains(&uuid) {
                    h.fo.handle_destroy(self.now, uuid, Err("Permission denied".into()));
                    return;
                }
                if let Some(vm) = h.vms.get_mut(&uuid) {
                    vm.running = false;
                }
                h.fo.handle_destroy(self.now, uuid, Ok(()));
            }
            FailoverAction::Lookup { uuid, .. } => {
                let r = match &h.fail_lookups {
                    Some(why) => Err(why.clone()),
                    None => {
                        let state = h.vms.get(&uuid).map(|v| {
                            if v.running {
                                VmRunState::Running
                            } else {
                                VmRunState::Stopped
                            }
                        });
                        h.lookups.push((uuid, state));
                        Ok(state)
                    }
                };
                h.fo.handle_lookup(self.now, uuid, r);
            }
        }
    }

    fn check_no_vm_twice(&self) {
        let mut seen: BTreeMap<uuid::Uuid, usize> = BTreeMap::new();
        for (i, h) in self.hosts.iter().enumerate() {
            for (u, v) in &h.vms {
                if v.running {
                    if let Some(j) = seen.insert(*u, i) {
                        panic!("VM {} runs on hosts {j} and {i}", v.name);
                    }
                }
            }
        }
    }

    fn running_on(&self, n: u8) -> Vec<u32> {
        (0..self.hosts.len() as u32)
            .filter(|&i| self.hosts[i as usize].vms.get(&uuid(n)).is_some_and(|v| v.running))
            .collect()
    }

    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.step();
        }
    }
}

#[test]
fn a_fenced_hosts_vms_restart_once_by_protection_level() {
    let mut p = Pool::new(3, 1024);
    p.add_vm(2, 1, 256, Protection::Protect, Some(1));
    p.add_vm(2, 2, 256, Protection::Protect, None);
    p.add_vm(2, 3, 256, Protection::BestEffort, None);
    p.add_vm(2, 4, 256, Protection::None, None);
    p.add_vm(0, 5, 512, Protection::Protect, None);
    p.run(20);
    assert!(p.starts.is_empty(), "nothing restarts while every host is live");
    p.kill(2);
    p.run(40);
    for n in [1, 2, 3] {
        assert_eq!(p.running_on(n).len(), 1, "vm{n} runs again, once");
    }
    assert!(p.running_on(4).is_empty(), "protection none is never restarted");
    assert_eq!(p.starts.len(), 3);
    let plan = p.hosts[0].fo.status().plan.expect("coordinator publishes a plan");
    assert_eq!(plan.epoch.coordinator_slot, 0);
    assert!(plan.unplaced.iter().any(|u| u.uuid == uuid(4)));
}

#[test]
fn a_dead_host_without_proof_keeps_its_vms_where_they_are() {
    let mut p = Pool::new(3, 1024);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    // Silent, but no fence mark and no watchdog: its VMs may still run.
    p.hosts[2].up = false;
    p.hosts[2].state = PeerState::Dead;
    p.hosts[2].gone = Err(NotProven::DeadWithoutWatchdog);
    p.run(40);
    assert!(p.starts.is_empty());
    let st = p.hosts[0].fo.status();
    assert_eq!(st.held.len(), 1, "status says which VMs are held and why");
    assert_eq!(st.held[0].reason, NotProven::DeadWithoutWatchdog);
}

#[test]
fn best_effort_only_while_capacity_remains() {
    let mut p = Pool::new(3, 600);
    p.add_vm(2, 1, 500, Protection::Protect, None);
    p.add_vm(2, 2, 500, Protection::Protect, None);
    p.add_vm(2, 3, 500, Protection::BestEffort, None);
    p.run(20);
    p.kill(2);
    p.run(40);
    assert_eq!(p.running_on(1).len(), 1);
    assert_eq!(p.running_on(2).len(), 1);
    assert!(
        p.running_on(3).is_empty(),
        "no room left for the best-effort VM: {:?} {:?} {:?}",
        p.running_on(1),
        p.running_on(2),
        p.running_on(3)
    );
}

#[test]
fn a_failed_start_is_retried_once_elsewhere_then_reported() {
    let mut p = Pool::new(4, 1024);
    p.add_vm(3, 1, 256, Protection::Protect, None);
    p.run(20);
    p.hosts[0].fail_starts = Some("no bridge".into());
    p.hosts[1].fail_starts = Some("no bridge".into());
    p.hosts[2].fail_starts = Some("no bridge".into());
    p.kill(3);
    p.run(60);
    assert!(p.running_on(1).is_empty());
    let plan = p.hosts[0].fo.status().plan.expect("plan");
    assert!(
        plan.unplaced
            .iter()
            .any(|u| u.uuid == uuid(1) && u.reason == crate::format::host_state::UnplacedCode::StartFailed),
        "{plan:?}"
    );
    // Exactly two hosts tried it.
    let failed: Vec<u32> = (0..3)
        .filter(|&i| p.hosts[i].fo.status().own.iter().any(|(_, s)| *s == VmState::Failed))
        .map(|i| i as u32)
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
}

#[test]
fn the_coordinator_dying_mid_plan_is_continued_by_the_next() {
    let mut p = Pool::new(4, 4096);
    for n in 1..=8 {
        p.add_vm(3, n, 256, Protection::Protect, Some(i64::from(n % 3)));
    }
    p.run(20);
    p.kill(3);
    // A few steps: the coordinator (slot 0) publishes its plan, some starts happen.
    p.run(3);
    p.kill(0);
    p.run(80);
    for n in 1..=8 {
        assert_eq!(p.running_on(n).len(), 1, "vm{n} runs exactly once");
    }
}

#[test]
fn two_coordinators_assigning_one_vm_to_two_targets_start_it_once() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    // Slot 1 sees slot 0 as not (yet) live: both coordinate, with different targets (0 and 1).
    p.overrides.insert((1, 0), PeerState::Unknown);
    p.kill(2);
    p.run(40);
    assert_eq!(p.running_on(1).len(), 1);
    assert_eq!(p.starts.len(), 1);
    let withdrawn = p.hosts[1].fo.status().own.iter().any(|(_, s)| *s == VmState::Failed);
    assert!(
        withdrawn,
        "the second claimant saw the first claim and withdrew: {:?} {:?} starts {:?}",
        p.hosts[1].fo.status(),
        p.hosts[0].fo.status().own,
        p.starts
    );
}

/// A daemon restarted while its VMs kept running: the new incarnation polled the driver (before
/// going live) and then read its previous extent. Found by the simulator (SIM_VMS=1, seed
/// 1795653712716736786): the previous extent's entries overwrote the running ones as `Lost`,
/// were published, and the coordinator restarted a VM that still ran.
#[test]
fn a_restarted_daemon_whose_vms_still_run_does_not_publish_them_lost() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    // The new incarnation: inventory first (the driver is polled before the node is live).
    let cfg = p.hosts[2].fo.config().clone();
    p.hosts[2].fo = Failover::new(cfg, p.now);
    p.hosts[2].generation = 2;
    let views = p.views();
    p.hosts[2].fo.handle_slots(&views, 2, false);
    let action = p.hosts[2].fo.poll_action(p.now).expect("inventory first");
    assert_eq!(action, FailoverAction::PollInventory);
    p.perform(2, action);
    p.run(40);
    assert_eq!(p.running_on(1), vec![2], "still runs where it ran, once");
    assert!(p.starts.is_empty(), "{:?}", p.starts);
    let published = p.extents[2].1.as_ref().expect("published");
    assert!(published.vms.iter().all(|e| e.state == VmState::Running), "{:?}", published.vms);
}

#[test]
fn restart_order_is_kept_across_targets_equal_orders_together() {
    let mut p = Pool::new(4, 4096);
    for (n, order) in [(1, 3), (2, 1), (3, 2), (4, 1), (5, 3), (6, 2)] {
        p.add_vm(3, n, 256, Protection::Protect, Some(order));
    }
    p.run(20);
    p.kill(3);
    p.run(60);
    let order_of = |u: &uuid::Uuid| p.hosts[3].vms[u].order.unwrap();
    let orders: Vec<i64> = p.starts.iter().map(|(_, u)| order_of(u)).collect();
    assert_eq!(orders.len(), 6, "{orders:?}");
    let mut sorted = orders.clone();
    sorted.sort();
    assert_eq!(orders, sorted, "a later order starts only after every earlier one runs");
}

#[test]
fn anti_affinity_groups_land_on_different_survivors() {
    let mut p = Pool::new(3, 4096);
    for n in 1..=2 {
        p.add_vm(2, n, 256, Protection::Protect, None);
        p.hosts[2].vms.get_mut(&uuid(n)).unwrap().group = Some("db".into());
    }
    p.run(20);
    p.kill(2);
    p.run(40);
    let (a, b) = (p.running_on(1), p.running_on(2));
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a, b, "one group member per host when capacity allows");
}

/// Simulator seed 1795550365886270677: a target still saw a retaken slot as its old, proven-gone
/// generation, so its claim check skipped that slot, while the slot's new daemon held a
/// `Starting` claim for the same VM. A newer incarnation's extent counts (and, format 1.6, is no
/// reason to restart anything: it is not the incarnation they judged).
#[test]
fn a_claim_by_a_newer_incarnation_of_a_slot_seen_as_gone_blocks_the_start() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    p.kill(2);
    // Slot 2 is retaken by a new daemon (generation 2) that claims vm1 for itself; everyone
    // else still sees generation 1, fenced.
    p.hosts[2].generation = 2;
    p.stale_generation.insert(2, 1);
    let (_, st, writer) = &mut p.extents[2];
    *writer = (host_uuid(2), 2);
    let e = st.as_mut().expect("published").vms.iter_mut().find(|e| e.uuid == uuid(1)).expect("vm1");
    e.state = VmState::Starting;
    e.claim += 1;
    p.run(40);
    assert!(p.starts.is_empty(), "nobody starts a VM a live daemon claimed: {:?}", p.starts);
}

/// An extent written by another host (another uuid) at the slot's generation is not the slot's
/// (format 1.6, issue 15 point 5; simulator seed 2551): a daemon died leaving its VMs running, an
/// intruder took its slot at the same generation and died proven gone. The extent still lists
/// the first host's VMs: no evidence about the intruder's, so they are not restarted.
#[test]
fn an_extent_of_another_host_at_the_same_generation_is_no_evidence() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    assert_eq!(p.extents[2].2, (host_uuid(2), 1));
    p.intruder_takes_slot(2);
    assert_eq!(p.hosts[2].generation, p.extents[2].2 .1, "the same generation");
    p.run(40);
    assert_eq!(p.running_on(1), vec![2], "still runs where it ran, once");
    assert!(p.starts.is_empty(), "{:?}", p.starts);
    // The coordinator read the slot's final extent and planned nothing from it.
    let plan = p.hosts[0].fo.status().plan;
    assert!(plan.as_ref().is_none_or(|p| p.assignments.is_empty() && p.unplaced.is_empty()), "{plan:?}");
    assert!(p.hosts[0].fo.peer_state(2).is_none(), "not the intruder's state");
}

/// ... and its claims do not vanish: vm1, restarted on x (claim 1), keeps running there after an
/// intruder took x's slot at x's generation and died proven gone. x's extent is no evidence, but
/// ignoring it would leave host 2's older `running` entry (claim 0, proven gone) the highest, and
/// vm1 would be started again. Likewise an entry it lists `stopped` (simulator seed
/// 1796587644834111738: a previous incarnation's extent, before its successor republished).
#[test]
fn the_claims_of_another_hosts_extent_still_veto_restarts() {
    let mut p = Pool::new(3, 4096);
    let x = restarted_elsewhere(&mut p);
    p.intruder_takes_slot(x as u32);
    p.run(40);
    assert_eq!(p.running_on(1), vec![x as u32], "runs once, where it ran");
    assert_eq!(p.starts.len(), 1, "never started again: {:?}", p.starts);
    assert!(published(&p, 1 - x, 1).is_none(), "not even claimed");
    // An administrator's stop on x, then x's daemon restarts (a new incarnation, not yet
    // published): the `stopped` entry with the highest claim is still the last word.
    let mut p = Pool::new(3, 4096);
    let x = restarted_elsewhere(&mut p);
    p.hosts[x].vms.get_mut(&uuid(1)).unwrap().running = false;
    p.run(10);
    assert_eq!(published(&p, x, 1).map(|e| (e.state, e.claim)), Some((VmState::Stopped, 2)));
    let h = &mut p.hosts[x];
    (h.up, h.host_uuid, h.generation) = (false, uuid::Uuid::from_u128(0x2222), 2);
    p.run(40);
    assert!(p.running_on(1).is_empty() && p.starts.len() == 1, "{:?}", p.starts);
}

/// The claim check counts an extent the slot's record does not name, even on a slot seen as
/// proven gone: another host at the same generation (an intruder), or a newer incarnation than
/// the one judged. Here it changes between planning and the claim check; the control (the
/// judged incarnation wrote it) starts the VM.
#[test]
fn an_extent_of_another_incarnation_still_blocks_a_claim_check() {
    let (u1, u2, intruder) = (host_uuid(1), host_uuid(2), uuid::Uuid::from_u128(0x1e7e));
    // (slot 2's record, the writer its extent names at the claim check, whether vm1 starts)
    for (record, writer, starts) in
        [((intruder, 1), (u2, 1), false), ((u2, 1), (u2, 2), false), ((u2, 1), (u2, 1), true)]
    {
        let mut fo = Failover::new(
            FailoverConfig {
                slot: 0,
                slot_count: 3,
                inventory_interval_ms: 100,
                driver: true,
                capacity_limit: None,
                hb_addrs: vec![],
                tolerance_target: None,
                start_landing_ms: 400,
            },
            0,
        );
        let view = |host_uuid, generation, state, gone| SlotView {
            state,
            host_uuid,
            generation,
            extent_sequence: 1,
            gone,
            lists: None,
        };
        let views = [
            view(host_uuid(0), 1, PeerState::Live, Err(NotProven::Alive)),
            view(u1, 1, PeerState::Fenced, Ok(GoneProof::FencedMark)),
            view(record.0, record.1, PeerState::Dead, Ok(GoneProof::WatchdogExpired)),
        ];
        fo.handle_slots(&views, 1, true);
        fo.handle_previous(0, Ok(None));
        let vm1 = |state, claim| HostState {
            vms: vec![crate::format::host_state::VmEntry {
                uuid: uuid(1),
                name: "vm1".into(),
                memory_mib: 256,
                vcpus: 1,
                state,
                protection: Protection::Protect,
                order: None,
                anti_affinity: None,
                claim,
                attempt: 0,
                failure: None,
                definition: b"def-vm1".to_vec(),
            }],
            ..HostState::default()
        };
        let mut claimed = false;
        let mut started = false;
        for _ in 0..100 {
            let Some(action) = fo.poll_action(0) else { break };
            match action {
                FailoverAction::PollInventory => {
                    let inv = Inventory { capacity: Capacity { memory_mib: 4096, vcpus: 8 }, vms: vec![] };
                    fo.handle_inventory(0, Ok(inv));
                }
                // Slot 1 (proven gone) ran vm1, claim 0. Slot 2 showed nothing when planned on,
                // then its extent holds vm1 (claim 1, running).
                FailoverAction::ReadExtent { slot: 1, .. } => {
                    let w = ExtentWriter { host_uuid: Some(u1), generation: 1 };
                    fo.handle_extent(1, 1, w, Ok(Some(vm1(VmState::Running, 0))));
                }
                FailoverAction::ReadExtent { slot, .. } => {
                    assert_eq!(slot, 2);
                    let (w, st) =
                        if claimed { (writer, Some(vm1(VmState::Running, 1))) } else { (record, None) };
                    let w = ExtentWriter { host_uuid: Some(w.0), generation: w.1 };
                    fo.handle_extent(2, 1, w, Ok(st));
                }
                FailoverAction::Publish(st) => {
                    claimed |= st.vms.iter().any(|e| e.uuid == uuid(1) && e.state == VmState::Starting);
                    fo.handle_published(0, Ok(1));
                }
                FailoverAction::Start { uuid: u, .. } => {
                    assert_eq!(u, uuid(1));
                    started = true;
                    fo.handle_start(0, u, Ok(()));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(claimed, "vm1 was claimed ({record:?}, {writer:?})");
        assert_eq!(started, starts, "record {record:?}, extent written by {writer:?}");
        if !starts {
            let st = fo.status();
            assert!(st.own.contains(&("vm1".to_string(), VmState::Failed)), "withdrawn: {:?}", st.own);
        }
    }
}

/// Simulator seed 1795648762360349516: a rebooted host whose first read of its own extent failed
/// took that as "no previous state" and published its VMs `stopped`: the evidence that they ran
/// was erased and nobody restarted them. A failed read is retried; nothing is published first.
#[test]
fn a_failed_read_of_our_previous_extent_is_retried_not_taken_as_empty() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    // Host 2 reboots quickly: its VMs are off, a new daemon (generation 2) starts, and its first
    // read of its own extent fails.
    let cfg = p.hosts[2].fo.config().clone();
    let h = &mut p.hosts[2];
    for vm in h.vms.values_mut() {
        vm.running = false;
    }
    h.generation = 2;
    h.fo = Failover::new(cfg, p.now);
    h.fail_previous = true;
    p.run(60);
    assert_eq!(p.running_on(1).len(), 1, "vm1 ran before the reboot: it runs again");
}

/// Kills host 2 (vm1's host) and lets vm1 restart on one survivor; returns that survivor. Host
/// 2's final extent keeps vm1 `running` with claim 1 (found running: above every claim elsewhere, 0): an older claim, proven gone.
fn restarted_elsewhere(p: &mut Pool) -> usize {
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    p.kill(2);
    p.run(40);
    let on = p.running_on(1);
    assert_eq!(on.len(), 1, "vm1 restarted once: {on:?}");
    assert_eq!(p.starts.len(), 1);
    on[0] as usize
}

fn published(p: &Pool, host: usize, n: u8) -> Option<crate::format::host_state::VmEntry> {
    p.extents[host].1.as_ref().and_then(|st| st.vms.iter().find(|e| e.uuid == uuid(n)).cloned())
}

/// The bug (found on real processes; simulator seed 1063): a VM restarted on host X,
/// then X's driver returned inventories without it. X dropped it from its published state, the
/// dead host's claim was the highest again, and the coordinator started it a second time.
/// Positive evidence only: an omitted VM keeps its entry and claim, and shows as missing.
#[test]
fn an_inventory_omitting_a_claimed_running_vm_keeps_it_and_its_claim() {
    let mut p = Pool::new(3, 4096);
    let x = restarted_elsewhere(&mut p);
    let before = published(&p, x, 1).expect("published");
    assert_eq!((before.state, before.claim), (VmState::Running, 2));
    // Its driver omits it, and cannot answer a lookup either (libvirtd restarting).
    p.hosts[x].hidden.insert(uuid(1));
    p.hosts[x].fail_lookups = Some("libvirtd restarting".into());
    p.run(40);
    assert_eq!(p.running_on(1), vec![x as u32], "still runs once, where it ran");
    assert_eq!(p.starts.len(), 1, "never started again: {:?}", p.starts);
    let e = published(&p, x, 1).expect("still published");
    assert_eq!((e.state, e.claim), (VmState::Running, 2), "published as before, with its claim");
    let st = p.hosts[x].fo.status();
    assert_eq!(st.missing.len(), 1, "{:?}", st.missing);
    assert_eq!(st.missing[0].name, "vm1");
    assert!(st.missing[0].why.contains("lookup by UUID failed"), "{}", st.missing[0].why);
    // A lookup that answers "runs here" keeps it; so does the inventory listing it again.
    p.hosts[x].fail_lookups = None;
    p.run(10);
    assert!(p.hosts[x].lookups.iter().any(|l| *l == (uuid(1), Some(VmRunState::Running))));
    assert!(p.hosts[x].fo.status().missing[0].why.contains("runs here"));
    p.hosts[x].hidden.clear();
    p.run(10);
    assert!(p.hosts[x].fo.status().missing.is_empty());
    assert_eq!(p.starts.len(), 1);
    assert_eq!(published(&p, x, 1).map(|e| (e.state, e.claim)), Some((VmState::Running, 2)));
}

/// The second case: an admin-stopped VM was restarted after its host's inventory came
/// back empty for a moment (its `stopped` entry, the highest claim, was dropped).
#[test]
fn an_admin_stopped_vm_omitted_from_an_inventory_is_not_restarted() {
    let mut p = Pool::new(3, 4096);
    let x = restarted_elsewhere(&mut p);
    p.hosts[x].vms.get_mut(&uuid(1)).unwrap().running = false;
    p.run(10);
    assert_eq!(published(&p, x, 1).map(|e| (e.state, e.claim)), Some((VmState::Stopped, 2)));
    p.hosts[x].hidden.insert(uuid(1));
    p.run(40);
    assert!(p.running_on(1).is_empty(), "stopped by the administrator: stays stopped");
    assert_eq!(p.starts.len(), 1, "{:?}", p.starts);
    assert_eq!(published(&p, x, 1).map(|e| (e.state, e.claim)), Some((VmState::Stopped, 2)));
    // The lookup said "defined here, stopped": positive evidence it does not run, and it stays.
    assert!(p.hosts[x].lookups.contains(&(uuid(1), Some(VmRunState::Stopped))));
}

/// A lookup that stopped answering "running" is positive evidence ("stopped"): the entry stops
/// holding but keeps its claim. Not defined here at all: the entry leaves, unless an older claim
/// elsewhere would then be the highest (it stays `stopped` then, so an undefined VM is not
/// restarted from a dead host's stale entry).
#[test]
fn only_a_lookup_by_uuid_finding_nothing_lets_an_omitted_vm_leave() {
    // No older claim anywhere: undefined here, it leaves our state.
    let mut p = Pool::new(3, 4096);
    p.add_vm(0, 1, 256, Protection::Protect, None);
    p.run(20);
    assert!(published(&p, 0, 1).is_some());
    p.hosts[0].vms.remove(&uuid(1));
    p.run(10);
    assert!(published(&p, 0, 1).is_none(), "confirmed absent: gone");
    assert!(p.hosts[0].lookups.contains(&(uuid(1), None)));
    assert!(p.hosts[0].fo.status().missing.is_empty());
    // Restarted here from a dead host, then undefined here by the administrator: it stays as
    // `stopped` with its claim, so host 2's stale `running` entry cannot restart it.
    let mut p = Pool::new(3, 4096);
    let x = restarted_elsewhere(&mut p);
    p.hosts[x].vms.remove(&uuid(1));
    p.run(40);
    assert!(p.hosts[x].lookups.contains(&(uuid(1), None)));
    assert!(p.running_on(1).is_empty());
    assert_eq!(p.starts.len(), 1, "{:?}", p.starts);
    assert_eq!(published(&p, x, 1).map(|e| (e.state, e.claim)), Some((VmState::Stopped, 2)));
}

/// An inventory that lists one UUID twice is a driver error: nothing in it is trusted, what was
/// published stays.
#[test]
fn an_inventory_listing_a_vm_twice_is_a_driver_error() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(0, 1, 256, Protection::Protect, None);
    p.add_vm(0, 2, 256, Protection::Protect, None);
    p.run(20);
    let before = p.extents[0].1.clone();
    p.hosts[0].doubled.insert(uuid(1));
    p.hosts[0].hidden.insert(uuid(2));
    p.run(10);
    let st = p.hosts[0].fo.status();
    assert!(st.driver_error.as_deref().is_some_and(|e| e.contains("twice")), "{:?}", st.driver_error);
    assert!(st.missing.is_empty(), "the lying inventory was not used: {:?}", st.missing);
    assert_eq!(p.extents[0].1, before);
}

/// A daemon restarted while its VMs kept running, whose driver's first inventories omit one:
/// the new incarnation must not publish it `lost` (it would be started a second time). It is
/// held as its previous incarnation published it until the driver says.
#[test]
fn a_restarted_daemon_whose_inventory_omits_a_running_vm_keeps_holding_it() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    let cfg = p.hosts[2].fo.config().clone();
    p.hosts[2].fo = Failover::new(cfg, p.now);
    p.hosts[2].generation = 2;
    p.hosts[2].hidden.insert(uuid(1));
    p.hosts[2].fail_lookups = Some("libvirtd restarting".into());
    p.run(40);
    assert!(p.starts.is_empty(), "{:?}", p.starts);
    assert_eq!(published(&p, 2, 1).map(|e| e.state), Some(VmState::Running));
    assert_eq!(p.hosts[2].fo.status().missing.len(), 1);
    // The lookup answers: it runs here.
    p.hosts[2].fail_lookups = None;
    p.run(10);
    assert!(p.starts.is_empty());
    assert_eq!(published(&p, 2, 1).map(|e| e.state), Some(VmState::Running));
}

/// A host that rebooted (its VMs are off) and whose inventory omits one: the lookup says
/// "defined here, stopped", positive evidence, so the VM is `lost` and restarted elsewhere once.
#[test]
fn a_rebooted_host_whose_inventory_omits_a_stopped_vm_marks_it_lost_after_the_lookup() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    let cfg = p.hosts[2].fo.config().clone();
    let h = &mut p.hosts[2];
    h.vms.get_mut(&uuid(1)).unwrap().running = false;
    h.generation = 2;
    h.fo = Failover::new(cfg, p.now);
    h.hidden.insert(uuid(1));
    p.run(60);
    assert!(p.hosts[2].lookups.contains(&(uuid(1), Some(VmRunState::Stopped))));
    let on = p.running_on(1);
    assert_eq!(on.len(), 1, "it ran before the reboot: it runs again, once");
    assert_ne!(on, vec![2]);
}

/// An administrator's stop survives a daemon restart: the new incarnation keeps the stopped
/// entry's claim, so an older claim of a dead host does not become the highest.
#[test]
fn an_admin_stop_survives_a_daemon_restart() {
    let mut p = Pool::new(3, 4096);
    let x = restarted_elsewhere(&mut p);
    p.hosts[x].vms.get_mut(&uuid(1)).unwrap().running = false;
    p.run(10);
    assert_eq!(published(&p, x, 1).map(|e| (e.state, e.claim)), Some((VmState::Stopped, 2)));
    let cfg = p.hosts[x].fo.config().clone();
    p.hosts[x].fo = Failover::new(cfg, p.now);
    p.hosts[x].generation = 2;
    p.run(40);
    assert!(p.running_on(1).is_empty(), "{:?}", p.starts);
    assert_eq!(p.starts.len(), 1);
    assert_eq!(published(&p, x, 1).map(|e| (e.state, e.claim)), Some((VmState::Stopped, 2)));
}

#[test]
fn a_destroy_that_keeps_failing_is_retried_with_backoff_and_holds_up_nothing_else() {
    // Host 1 has room for two VMs of the dead host 2; the start of vm1 half-starts and fails, and
    // every destroy of it fails. vm2, in a later wave on the same host, still starts.
    let mut p = Pool::new(3, 600);
    p.add_vm(0, 9, 500, Protection::None, None);
    p.add_vm(2, 1, 250, Protection::Protect, Some(1));
    p.add_vm(2, 2, 250, Protection::Protect, Some(2));
    p.hosts[1].fail_start_vms.insert(uuid(1));
    p.hosts[1].fail_destroy_vms.insert(uuid(1));
    p.run(20);
    p.kill(2);
    p.run(400); // 20 s at 50 ms a step, inventory interval 100 ms.
    assert_eq!(p.running_on(2), vec![1], "vm2 started on host 1 although vm1's destroy keeps failing");
    assert_eq!(p.running_on(1), vec![1], "vm1 may run on host 1 (half-started): never started elsewhere");
    let destroys = p.hosts[1].destroys.iter().filter(|(u, _)| *u == uuid(1)).count();
    // Backoff: 100, 200, 400 ms ... capped at 800 ms: about 25 calls in 20 s, not 400.
    assert!((5..=40).contains(&destroys), "{destroys} destroys in 20 s: no backoff");
    let st = p.hosts[1].fo.status();
    let w = st.waiting.iter().find(|w| w.vm.as_deref() == Some("vm1")).expect("status says why vm1 waits");
    assert!(w.reason.contains("Permission denied") && w.reason.contains("start failed"), "{}", w.reason);
    // Once the destroy works, vm1 is `Failed` here and restarted elsewhere (host 0 has no room
    // for it: it stays failed on host 1's side, with the reason).
    p.hosts[1].fail_destroy_vms.clear();
    p.run(40);
    assert!(p.running_on(1).is_empty(), "destroyed at last");
    assert!(p.hosts[1].fo.status().waiting.is_empty());
}

#[test]
fn an_unreadable_extent_of_a_gone_host_holds_only_its_own_vms() {
    let mut p = Pool::new(4, 1024);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.add_vm(3, 2, 256, Protection::Protect, None);
    p.run(20);
    p.bad_extents.insert(3);
    p.kill(2);
    p.kill(3);
    p.run(40);
    assert_eq!(p.running_on(1).len(), 1, "the readable gone host's VM is restarted");
    assert!(p.running_on(2).is_empty(), "the unreadable one's VM waits for its final extent");
    let st = p.hosts[0].fo.status();
    let w = st.waiting.iter().find(|w| w.slot == Some(3)).expect("status says slot 3's VMs wait");
    assert!(w.reason.contains("cannot be read") && w.reason.contains("vm2"), "{}", w.reason);
    assert!(w.since_ms.is_some());
    p.bad_extents.clear();
    p.run(40);
    assert_eq!(p.running_on(2).len(), 1, "restarted once the extent reads");
    assert!(p.hosts[0].fo.status().waiting.is_empty());
}

#[test]
fn a_second_copy_started_by_hand_is_destroyed_and_the_first_keeps_running() {
    let mut p = Pool::new(3, 1024);
    p.add_vm(0, 1, 256, Protection::Protect, None);
    p.run(20);
    // vm1 is defined on host 1 too (stopped), and an administrator starts it there: two copies.
    p.add_vm(1, 1, 256, Protection::Protect, None);
    p.hosts[1].vms.get_mut(&uuid(1)).expect("defined").running = false;
    p.run(20);
    p.allow_twice = true;
    p.hosts[1].vms.get_mut(&uuid(1)).expect("defined").running = true;
    p.run(40);
    assert_eq!(p.running_on(1), vec![0], "the copy that came second (lower claim) is destroyed");
    assert_eq!(p.hosts[1].destroys.len(), 1);
    assert!(p.hosts[0].destroys.is_empty(), "the holder of the highest claim keeps its copy");
    let st = p.hosts[1].fo.status();
    assert!(st.own.iter().any(|(n, s)| n == "vm1" && *s == VmState::Stopped));
    assert!(st.running_twice.is_empty());
    // A copy that appears without a previous entry here is destroyed the same way.
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(40);
    assert_eq!(p.running_on(1), vec![0]);
}

#[test]
fn two_copies_with_a_restarted_vm_keep_the_restarted_one() {
    // A restart elsewhere raised the claim; the old host (its fence was a lie: it runs) keeps
    // its copy with the older claim: that copy is the one destroyed.
    let mut p = Pool::new(3, 1024);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    p.allow_twice = true;
    p.hosts[2].gone = Ok(GoneProof::FencedMark);
    p.hosts[2].state = PeerState::Fenced;
    p.run(40);
    let restarted = p.running_on(1).into_iter().find(|&h| h != 2).expect("restarted");
    // The "fenced" host comes back live with its VM running: two copies.
    p.hosts[2].gone = Err(NotProven::Alive);
    p.hosts[2].state = PeerState::Live;
    p.run(40);
    assert_eq!(p.running_on(1), vec![restarted], "the old copy (lower claim) is destroyed");
}

/// A host came back and died before its first publish (simulator seed 5910): its slot's extent
/// is its previous daemon's, which no automatic proof covers (host uuids are per daemon start,
/// so nothing tells the host's previous daemon from another host). Its VMs are held, and status
/// says why and what ends it; an operator's `--confirm-down`, which is about the machine, covers
/// every earlier incarnation's extent and the VMs restart.
#[test]
fn an_earlier_incarnations_extent_holds_its_vms_until_an_operator_confirms() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    p.kill(2);
    let h = &mut p.hosts[2];
    (h.host_uuid, h.generation) = (uuid::Uuid::from_u128(0x2_0002), 2);
    (h.state, h.gone) = (PeerState::Dead, Ok(GoneProof::WatchdogExpired));
    p.run(40);
    assert!(p.running_on(1).is_empty() && p.starts.is_empty(), "held: {:?}", p.starts);
    let waiting = p.hosts[0].fo.status().waiting;
    assert!(
        waiting.iter().any(|w| w.vm.as_deref() == Some("vm1")
            && w.reason.contains("earlier or other incarnation")
            && w.reason.contains("--confirm-down 2")),
        "{waiting:?}"
    );
    p.hosts[2].gone = Ok(GoneProof::OperatorConfirmed);
    p.run(40);
    assert_eq!(p.running_on(1).len(), 1, "restarted once on the operator's word: {:?}", p.starts);
    p.check_no_vm_twice();
}

/// A daemon died with a start in flight (its extent says `starting`, the VM is not defined here
/// yet): "not defined here" is no evidence until the start can no longer land
/// (`FailoverConfig::start_landing_ms`). Before the bound the VM stays held; a start that lands
/// late makes it run here, once; one that never lands lets it restart elsewhere, once.
#[test]
fn a_start_in_flight_when_the_daemon_died_holds_the_vm_until_it_can_no_longer_land() {
    for lands in [true, false] {
        let mut p = Pool::new(3, 4096);
        p.add_vm(1, 1, 256, Protection::Protect, None);
        p.run(20);
        // Host 1 is fenced; host 2 had claimed vm1 and was starting it when its daemon died.
        let mut entry = published(&p, 1, 1).expect("published");
        entry.state = VmState::Starting;
        entry.claim += 1;
        p.kill(1);
        p.extents[2].1.as_mut().expect("host 2 published").vms.push(entry);
        p.extents[2].0 += 1;
        let cfg = p.hosts[2].fo.config().clone();
        assert!(cfg.start_landing_ms >= 300, "the test lands the start before the bound");
        p.hosts[2].generation = 2;
        p.hosts[2].fo = Failover::new(cfg, p.now);
        p.run(5);
        assert!(p.hosts[2].lookups.contains(&(uuid(1), None)), "looked up: not defined here (yet)");
        assert!(p.starts.is_empty(), "restarted while a start may still land: {:?}", p.starts);
        let missing = p.hosts[2].fo.status().missing;
        assert!(missing.iter().any(|m| m.why.contains("start in flight")), "{missing:?}");
        if lands {
            let origin = p.hosts[1].vms[&uuid(1)].clone();
            p.hosts[2].vms.insert(uuid(1), FakeVm { running: true, ..origin });
        }
        p.run(40);
        if lands {
            assert!(p.starts.is_empty(), "{:?}", p.starts);
            assert_eq!(p.running_on(1), vec![2]);
        } else {
            assert_eq!(p.starts.len(), 1, "{:?}", p.starts);
            assert_eq!(p.running_on(1).len(), 1);
        }
    }
}

/// A host proven gone by its watchdog is proven only to the hosts its last record lists: a host
/// it does not list (it joined while the other rode through an outage, say) sees it `silent` and
/// could never start its VMs, so the coordinator does not make it their target (here the only
/// host with room: the VM stays unplaced rather than assigned where it can never start).
#[test]
fn a_vm_of_a_host_proven_gone_by_silence_is_not_given_to_a_host_it_does_not_list() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.add_vm(0, 9, 4000, Protection::None, None);
    p.run(20);
    let h = &mut p.hosts[2];
    h.up = false;
    for vm in h.vms.values_mut() {
        vm.running = false;
    }
    h.state = PeerState::Dead;
    h.gone = Ok(GoneProof::WatchdogExpired);
    let mut m = crate::format::record::Members::EMPTY;
    m.set(0);
    h.lists = Some(m);
    p.run(40);
    assert!(p.starts.is_empty(), "started where it could never be proven: {:?}", p.starts);
    let plan = p.hosts[0].fo.status().plan.expect("a plan");
    assert!(plan.assignments.iter().all(|a| a.target_slot != 1), "{plan:?}");
}

/// Events answer "where did its VMs go" on every host: the coordinator's plan, the target's
/// claim, start and its duration, and a `Restarted` seen by every live host, once per restart;
/// nothing about restarts that happened before a daemon started.
#[test]
fn every_host_reports_where_a_dead_hosts_vms_went_once() {
    let mut p = Pool::new(3, 1024);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.add_vm(2, 4, 256, Protection::None, None);
    p.run(20);
    let drain =
        |p: &mut Pool, i: usize| std::iter::from_fn(|| p.hosts[i].fo.poll_event()).collect::<Vec<_>>();
    for i in 0..3 {
        assert!(drain(&mut p, i).is_empty(), "host {i}: no event while nothing happens");
    }
    p.kill(2);
    p.run(40);
    let target = p.running_on(1)[0];
    let mut restarted = Vec::new();
    for i in 0..2 {
        let evs = drain(&mut p, i);
        let plans: Vec<_> = evs.iter().filter(|e| matches!(e, FailoverEvent::Plan { .. })).collect();
        if i == 0 {
            let Some(FailoverEvent::Plan { moves, unplaced, .. }) = plans.first() else {
                panic!("the coordinator reports its plan: {evs:?}")
            };
            assert_eq!((moves[0].vm.as_str(), moves[0].from_slot, moves[0].to_slot), ("vm1", 2, target));
            assert!(unplaced.iter().any(|(vm, from, _)| vm == "vm4" && *from == 2), "{unplaced:?}");
        } else {
            assert!(plans.is_empty(), "only the coordinator plans: {evs:?}");
        }
        if i as u32 == target {
            let kinds: Vec<&str> = evs
                .iter()
                .filter_map(|e| match e {
                    FailoverEvent::Claimed { from_slot: 2, .. } => Some("claimed"),
                    FailoverEvent::Starting { .. } => Some("starting"),
                    FailoverEvent::Started { .. } => Some("started"),
                    _ => None,
                })
                .collect();
            assert_eq!(kinds, ["claimed", "starting", "started"], "{evs:?}");
        }
        restarted.extend(evs.into_iter().filter_map(|e| match e {
            FailoverEvent::Restarted { vm, from_slot: 2, to_slot, .. } => Some((i, vm, to_slot)),
            _ => None,
        }));
    }
    assert_eq!(restarted, [(0, "vm1".to_string(), target), (1, "vm1".to_string(), target)]);
    // Status names the plan's VMs (the plan on the disk has UUIDs only).
    assert_eq!(p.hosts[1].fo.status().plan_names.get(&uuid(4)).map(String::as_str), Some("vm4"));
    // A daemon that starts now finds that restart on the disk: history, not news.
    let h = &mut p.hosts[1 - target as usize];
    h.generation += 1;
    h.fo = Failover::new(h.fo.config().clone(), p.now);
    p.run(20);
    let late = drain(&mut p, 1 - target as usize);
    assert!(!late.iter().any(|e| matches!(e, FailoverEvent::Restarted { .. })), "{late:?}");
}

/// A host riding through an outage of its own disk path is `Silent` to observers it does not
/// list, and publishes again once its path returns: an extent read while it is silent is not its
/// last. Here its administrator then stops a VM (the extent says so; no record carries the new
/// extent sequence) and the host fences: the coordinator must read the extent again, and restart
/// nothing (tests/sim.rs: ADMIN, a copy read while silent was taken for final).
#[test]
fn an_extent_read_while_its_host_is_silent_is_not_its_last() {
    let mut p = Pool::new(3, 4096);
    p.add_vm(2, 1, 256, Protection::Protect, None);
    p.run(20);
    p.hosts[2].state = PeerState::Silent;
    p.hosts[2].gone = Err(NotProven::NotListed);
    // It publishes while silent (a new VM): the others read that extent now.
    p.add_vm(2, 2, 256, Protection::None, None);
    p.run(20);
    assert!(published(&p, 2, 2).is_some());
    // Its administrator stops vm1; the extent says so (same sequence: no record shows it).
    p.hosts[2].up = false;
    p.hosts[2].vms.get_mut(&uuid(1)).unwrap().running = false;
    let st = p.extents[2].1.as_mut().unwrap();
    st.vms.iter_mut().find(|e| e.uuid == uuid(1)).unwrap().state = VmState::Stopped;
    // Then it fences: its VMs are proven gone.
    p.hosts[2].state = PeerState::Fenced;
    p.hosts[2].gone = Ok(GoneProof::FencedMark);
    p.run(40);
    assert!(p.starts.is_empty(), "an administrator's stop was undone: {:?}", p.starts);
}

/// `running_twice` (status) counts this host's own entries only while it is live: once fenced,
/// they are what it last published, and its fence stopped what they list (a fenced partition
/// loser reported a guest it no longer ran: tests/failover_libvirt.rs).
#[test]
fn a_host_that_is_not_live_reports_no_double_run_of_its_own_entries() {
    let mut p = Pool::new(2, 4096);
    p.add_vm(0, 1, 256, Protection::Protect, None);
    p.run(20);
    // The administrator starts a second copy on host 1.
    p.allow_twice = true;
    p.add_vm(1, 1, 256, Protection::Protect, None);
    p.run(4);
    assert_eq!(p.hosts[0].fo.status().running_twice.len(), 1, "live: reported");
    let views = p.views();
    p.hosts[0].fo.handle_slots(&views, 1, false);
    assert!(p.hosts[0].fo.status().running_twice.is_empty(), "not live: its own entries are not evidence");
}
