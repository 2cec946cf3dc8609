//! Deterministic simulator of a pool of hosts sharing one heartbeat disk (TigerBeetle's VOPR shape).
//!
//! Every host runs the real [`Node`], driven exactly as `daemon::run` drives it: this file performs
//! the actions the node asks for (write, sweep, fence, watchdog, backup deadline, exit) against an
//! in-memory disk and feeds the results back. There is no copy of the heartbeat loop here: a rule
//! exists only in `src/core`. Hosts run on drifting clocks; the disk keeps a short history of every
//! sector so a read observes any instant of its I/O window.
//!
//! Faults: crashes and restarts (new incarnations), per-host path faults (errors, hangs, slow I/O
//! whose timed-out writes land late, torn writes, misdirected writes landing in another slot),
//! whole-disk outages, corrupted sectors, a wiped superblock, mailbox fence requests, clean leaves,
//! misconfigured intruders on a held slot, daemons frozen while their host lives (SIGSTOP), late
//! backup deadline threads, failing fence actions, hardware watchdogs (or none), pools of up to 64
//! slots.
//!
//! Invariants, checked at every step:
//! - a peer declared dead was silent on the disk for host-dead (ground truth: the last landing in
//!   its slot), and every incarnation of it that went live had stopped (crashed, fenced, exited,
//!   reset by its watchdog) unless it has no watchdog and cannot be proven gone (frozen, or its
//!   fence action failed): those must never be *proven* gone;
//! - a host whose VMs a peer holds proven gone (`Peer::vms_gone`) really has no VMs running;
//! - at most one unfenced live incarnation per slot; a fenced host writes only fence marks;
//! - fault-free runs: nobody fences or is refused, every join completes, every crash is detected
//!   within host-dead plus a few intervals.
//!
//! `cargo test --test sim` runs `SIM_RUNS` seeds (default 10,000; about 15 s on 2 cores: the test
//! profile optimizes this crate, with debug assertions on) from a random base seed printed at the
//! start, plus the fixed regression seeds. A failure
//! prints the seed and the command that replays it:
//! `SIM_SEED=<seed> SIM_TRACE=1 cargo test --test sim replay -- --nocapture`.

use diskbeat::core::{
    Action, Event, FenceOutcome, IoFailure, Node, NodeConfig, PeerChange, PeerState, Phase, SlotSource,
};
use diskbeat::format::mailbox::{Command, Mailbox};
use diskbeat::format::record::{Record, State};
use diskbeat::timing::Timing;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;

const CLUSTER: uuid::Uuid = uuid::Uuid::from_u128(0xd15c_bea7);
const SUPERBLOCK: [u8; 512] = [0x5b; 512];
/// Seeds that once failed (or exercise rare paths): always run. Each found a bug or a wrong
/// check while the simulator was brought up on `Node`:
/// - 1795551551824258093: re-expiring the watchdog on every failed fence attempt kept pinging it;
/// - 1795582631825231529: a leave reported written but misdirected disarmed the watchdog;
/// - 1795573254199419082: a join refused after its records were visible disarmed the watchdog;
/// - 1795658723470992310: a daemon frozen mid-sweep judged an older incarnation on thawing;
/// - 1795646172166987744: the same, with the newer incarnation reusing the generation (it took
///   over a corrupt slot);
/// - 1795642558795443522: a restarted incarnation's join pre-empted a peer's dead declaration.
const REGRESSION_SEEDS: &[u64] = &[
    0,
    1,
    7,
    42,
    1234,
    1795551551824258093,
    1795582631825231529,
    1795573254199419082,
    1795658723470992310,
    1795646172166987744,
    1795642558795443522,
];

// ---------------------------------------------------------------------------------------------
// Randomness and clocks

/// SplitMix64: small, fast, good enough, and stable across platforms and crate versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next() % (hi - lo + 1)
        }
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

/// A host's monotonic clock: offset plus a rate error in parts per million. True time is µs.
#[derive(Debug, Clone, Copy)]
struct Clock {
    offset_us: u64,
    ppm: i64,
}

impl Clock {
    fn random(rng: &mut Rng) -> Clock {
        Clock { offset_us: rng.range(0, 1_000_000_000), ppm: rng.range(0, 2000) as i64 - 1000 }
    }
    fn local_us(&self, t: u64) -> u64 {
        (i128::from(self.offset_us) + i128::from(t) + i128::from(t) * i128::from(self.ppm) / 1_000_000) as u64
    }
    fn local_ms(&self, t: u64) -> u64 {
        self.local_us(t) / 1000
    }
    /// The earliest true time at which this clock reads `ms`.
    fn true_at_ms(&self, ms: u64) -> u64 {
        let target = i128::from(ms) * 1000 - i128::from(self.offset_us);
        let mut t = (target * 1_000_000 / (1_000_000 + i128::from(self.ppm)) - 3).max(0) as u64;
        while self.local_ms(t) < ms {
            t += 1;
        }
        t
    }
}

// ---------------------------------------------------------------------------------------------
// The shared disk: every sector keeps its recent history so reads can see any instant.

type Sector = [u8; 512];

struct History {
    hist: VecDeque<(u64, Box<Sector>)>,
}

impl History {
    fn new(bytes: Sector) -> History {
        let mut hist = VecDeque::new();
        hist.push_back((0, Box::new(bytes)));
        History { hist }
    }
    fn current(&self) -> &Sector {
        &self.hist.back().expect("never empty").1
    }
    fn at(&self, t: u64) -> &Sector {
        for (when, bytes) in self.hist.iter().rev() {
            if *when <= t {
                return bytes;
            }
        }
        panic!("history pruned too far: read at {t}, oldest {}", self.hist[0].0);
    }
    fn put(&mut self, t: u64, bytes: Sector, keep_us: u64) {
        debug_assert!(self.hist.back().is_none_or(|h| h.0 <= t));
        self.hist.push_back((t, Box::new(bytes)));
        while self.hist.len() > 1 && self.hist[1].0 + keep_us < t {
            self.hist.pop_front();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Faults

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every I/O fails at once.
    Fail,
    /// Every I/O hangs; writes may land when the window ends, or never.
    Hang,
    /// I/O takes longer than the io timeout; timed-out writes land late.
    Slow,
    /// A third of the I/Os are slow (late landings overtake later writes).
    Flaky,
    ReadFail,
    WriteFail,
    /// Writes land torn (bad checksum).
    Torn,
    /// Half the writes land in another slot (and not in ours), reported done.
    Misdirect,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// None: the whole disk.
    machine: Option<usize>,
    start: u64,
    end: u64,
    mode: Mode,
}

enum IoResult {
    /// Completes after this many µs.
    Ok(u64),
    /// Fails after this many µs.
    Fail(u64),
    /// Takes this long (beyond any timeout); a write lands at `land` (if ever).
    Hang { land: Option<u64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FenceKind {
    /// The action resets the host: daemon and VMs gone.
    Reboot,
    /// The action stops the VMs (powers them off); the daemon keeps running.
    Exec,
    /// Nothing stops: the node publishes that its fence proves nothing.
    LogOnly,
}

// ---------------------------------------------------------------------------------------------
// Hosts

/// An I/O the node is waiting for.
enum Pending {
    Write(Result<u64, IoFailure>),
    /// `data`: the bytes read, captured when the I/O completes (a frozen daemon sees them later).
    Sweep {
        ts: u64,
        te: u64,
        reads: Vec<Result<u64, IoFailure>>,
        data: Option<Vec<Sector>>,
    },
    Fence(FenceOutcome),
}

struct Inc {
    machine: usize,
    slot: u32,
    node: Node,
    clock: Clock,
    alive: bool,
    started: u64,
    crashed: Option<u64>,
    /// The fence action ran (any kind) / the watchdog reset the host.
    fenced: Option<u64>,
    reset: Option<u64>,
    stopped: Option<u64>,
    live_at: Option<u64>,
    generation: u64,
    pending: Option<Pending>,
    /// Token of the current wake-up / I/O completion (stale events are ignored).
    token: u64,
    frozen_until: u64,
    was_frozen: bool,
    fence_failed: bool,
    fencer_done: bool,
    backup_deadline: Option<u64>,
    backup_result: Option<FenceOutcome>,
    stop: bool,
    stop_sent: bool,
    wd_token: u64,
    /// `last_ok_ms` at the last watchdog feed while live.
    fed_ok: Option<u64>,
    /// Last true time this observer declared each slot dead.
    dead_seen: Vec<Option<u64>>,
}

impl Inc {
    fn gone_at(&self) -> Option<u64> {
        [self.crashed, self.fenced, self.reset, self.stopped].into_iter().flatten().min()
    }
}

struct Machine {
    slot: u32,
    clock: Clock,
    incs: Vec<usize>,
    intruder: bool,
    watchdog: bool,
    fence: FenceKind,
    /// Whose VMs run on this machine (the incarnation that went live), if any.
    vms: Option<usize>,
}

/// The bytes one host's sweep saw.
struct View {
    slots: Vec<Sector>,
    errs: Vec<Option<IoFailure>>,
}

impl SlotSource for View {
    fn slot(&self, slot: u32) -> Result<&[u8], IoFailure> {
        match self.errs[slot as usize] {
            Some(e) => Err(e),
            None => Ok(&self.slots[slot as usize]),
        }
    }
    fn mailbox(&self) -> Result<&[u8], IoFailure> {
        self.slot(self.slots.len() as u32 - 2)
    }
    fn superblock(&self) -> Result<&[u8], IoFailure> {
        self.slot(self.slots.len() as u32 - 1)
    }
}

#[derive(Debug)]
enum Ev {
    Wake {
        inc: usize,
        token: u64,
    },
    IoDone {
        inc: usize,
        token: u64,
    },
    /// A sweep's reads completed in the kernel: capture what they saw.
    SweepData {
        inc: usize,
        token: u64,
    },
    Land {
        slot: u32,
        bytes: Box<Sector>,
        torn: bool,
    },
    Backup {
        inc: usize,
        deadline: u64,
    },
    Watchdog {
        inc: usize,
        token: u64,
    },
    Crash(usize),
    Restart(usize),
    Leave(usize),
    Freeze {
        machine: usize,
        len: u64,
    },
    MailboxReq {
        slot: u32,
        command: Command,
    },
    Corrupt(u32),
    WipeSuperblock,
    Intruder(u32),
    /// Clean runs: every live peer must have declared the crashed incarnation dead.
    CheckDetected {
        crashed: usize,
        at: u64,
    },
    /// Clean runs: an incarnation must be live by now.
    CheckJoined(usize),
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    runs: u64,
    clean_runs: u64,
    steps: u64,
    cycles: u64,
    faults: u64,
    crashes: u64,
    freezes: u64,
    incarnations: u64,
    dead_declarations: u64,
    unprovable_deaths: u64,
    proofs: u64,
    watchdog_resets: u64,
    fence_failures: u64,
    self_fences: u64,
    late_landings: u64,
    torn_landings: u64,
    misdirected: u64,
    went_live: u64,
    refusals: u64,
    /// Smallest (declaration - holder gone) seen, µs.
    min_margin_us: Option<u64>,
    sim_us: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.runs += o.runs;
        self.clean_runs += o.clean_runs;
        self.steps += o.steps;
        self.cycles += o.cycles;
        self.faults += o.faults;
        self.crashes += o.crashes;
        self.freezes += o.freezes;
        self.incarnations += o.incarnations;
        self.dead_declarations += o.dead_declarations;
        self.unprovable_deaths += o.unprovable_deaths;
        self.proofs += o.proofs;
        self.watchdog_resets += o.watchdog_resets;
        self.fence_failures += o.fence_failures;
        self.self_fences += o.self_fences;
        self.late_landings += o.late_landings;
        self.torn_landings += o.torn_landings;
        self.misdirected += o.misdirected;
        self.went_live += o.went_live;
        self.refusals += o.refusals;
        self.sim_us += o.sim_us;
        self.min_margin_us = match (self.min_margin_us, o.min_margin_us) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    timing: Timing,
    slot_count: u32,
    clean: bool,
    duration: u64,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    payloads: std::collections::HashMap<u64, Ev>,
    records: Vec<History>,
    mailboxes: Vec<History>,
    superblock: History,
    /// True times of recent landings in each record slot (see `put_record`).
    landings: Vec<VecDeque<u64>>,
    keep_us: u64,
    windows: Vec<Window>,
    fence_fail_windows: Vec<(usize, u64, u64)>,
    late_backup: bool,
    machines: Vec<Machine>,
    incs: Vec<Inc>,
    view: View,
    /// True start of the sweep whose results are being handed to a node (for check_dead).
    sweep_started: Option<u64>,
    next_request: u64,
    next_uuid: u128,
    stats: Stats,
    trace: bool,
}

type Res = Result<(), String>;

impl Sim {
    fn new(seed: u64, trace: bool) -> Sim {
        let mut rng = Rng(seed ^ 0x5eed_0000_d15c_bea7);
        let base = rng.pick(&[500u32, 800, 1000, 2000, 4000, 40_000]);
        let timing = Timing::from_base(base).expect("valid base");
        let big = rng.chance(0.05);
        let hosts = if big { rng.range(8, 24) as usize } else { rng.range(2, 8) as usize };
        let slot_count =
            if big { rng.range(hosts as u64, 64) as u32 } else { hosts as u32 + rng.range(0, 2) as u32 };
        let clean = rng.chance(0.3);
        let duration = u64::from(timing.host_dead_ms) * 1000 * rng.range(12, 30);
        let keep_us = u64::from(timing.io_timeout_ms) * 1000 * 4;
        let mut records = Vec::new();
        let mut mailboxes = Vec::new();
        for s in 0..slot_count {
            let mut b = [0u8; 512];
            Record::free(CLUSTER, s).encode(&mut b);
            records.push(History::new(b));
            Mailbox::empty(CLUSTER, s).encode(&mut b);
            mailboxes.push(History::new(b));
        }
        let view = View {
            slots: vec![[0; 512]; slot_count as usize + 2],
            errs: vec![None; slot_count as usize + 2],
        };
        let mut sim = Sim {
            seed,
            rng,
            timing,
            slot_count,
            clean,
            duration,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            payloads: Default::default(),
            records,
            mailboxes,
            superblock: History::new(SUPERBLOCK),
            landings: vec![VecDeque::from([0]); slot_count as usize],
            keep_us,
            windows: Vec::new(),
            fence_fail_windows: Vec::new(),
            late_backup: false,
            machines: Vec::new(),
            incs: Vec::new(),
            view,
            sweep_started: None,
            next_request: 1000,
            next_uuid: 1,
            stats: Stats { runs: 1, clean_runs: u64::from(clean), ..Stats::default() },
            trace,
        };
        for m in 0..hosts {
            sim.add_machine(m as u32, false);
            let at = sim.rng.range(0, u64::from(timing.interval_ms) * 1000 * 3);
            sim.schedule(at, Ev::Restart(m));
        }
        sim.plan_faults(hosts);
        sim
    }

    fn add_machine(&mut self, slot: u32, intruder: bool) -> usize {
        let clock = Clock::random(&mut self.rng);
        let watchdog = self.rng.chance(0.5);
        let fence = self.rng.pick(&[FenceKind::Reboot, FenceKind::Exec, FenceKind::Exec, FenceKind::LogOnly]);
        self.machines.push(Machine { slot, clock, incs: Vec::new(), intruder, watchdog, fence, vms: None });
        self.machines.len() - 1
    }

    fn t_us(&self, ms: u32) -> u64 {
        u64::from(ms) * 1000
    }

    fn plan_faults(&mut self, hosts: usize) {
        let d = self.duration;
        let t = self.timing;
        let host_dead = self.t_us(t.host_dead_ms);
        for _ in 0..self.rng.range(0, hosts as u64) {
            let m = self.rng.range(0, hosts as u64 - 1) as usize;
            let at = self.rng.range(host_dead, d * 3 / 4);
            self.schedule(at, Ev::Crash(m));
            self.stats.faults += 1;
        }
        for _ in 0..self.rng.range(0, 2) {
            let m = self.rng.range(0, hosts as u64 - 1) as usize;
            let at = self.rng.range(host_dead, d * 3 / 4);
            self.schedule(at, Ev::Leave(m));
        }
        if self.clean {
            return;
        }
        self.late_backup = self.rng.chance(0.3);
        for m in 0..hosts {
            for _ in 0..self.rng.range(0, 3) {
                let start = self.rng.range(0, d);
                let len = self.rng.range(self.t_us(t.interval_ms), host_dead * 3 / 2);
                let mode = self.rng.pick(&[
                    Mode::Fail,
                    Mode::Hang,
                    Mode::Slow,
                    Mode::Flaky,
                    Mode::Flaky,
                    Mode::ReadFail,
                    Mode::WriteFail,
                    Mode::Torn,
                    Mode::Misdirect,
                ]);
                self.windows.push(Window { machine: Some(m), start, end: start + len, mode });
                self.stats.faults += 1;
                if self.rng.chance(0.3) {
                    // A fence request while this host's storage is in trouble: the self-fence mark
                    // must not delay the fence past the deadline.
                    let at = self.rng.range(start, start + len);
                    self.schedule(at, Ev::MailboxReq { slot: m as u32, command: Command::Fence });
                    self.stats.faults += 1;
                }
            }
            if self.rng.chance(0.25) {
                // The daemon is frozen (SIGSTOP, a stuck kernel path) while its host and VMs run.
                let at = self.rng.range(0, d);
                let len = self.rng.range(self.t_us(t.interval_ms), host_dead * 2);
                self.schedule(at, Ev::Freeze { machine: m, len });
                self.stats.faults += 1;
            }
            if self.rng.chance(0.2) {
                let start = self.rng.range(0, d);
                let len = self.rng.range(self.t_us(t.interval_ms), host_dead * 2);
                self.fence_fail_windows.push((m, start, start + len));
                self.stats.faults += 1;
            }
        }
        for _ in 0..self.rng.range(0, 2) {
            let start = self.rng.range(0, d);
            let len = self.rng.range(self.t_us(t.interval_ms), host_dead);
            let mode = self.rng.pick(&[Mode::Fail, Mode::Hang, Mode::Flaky]);
            self.windows.push(Window { machine: None, start, end: start + len, mode });
            self.stats.faults += 1;
        }
        for _ in 0..self.rng.range(0, 3) {
            let slot = self.rng.range(0, u64::from(self.slot_count) - 1) as u32;
            let at = self.rng.range(0, d);
            let command = if self.rng.chance(0.7) { Command::Fence } else { Command::Test };
            self.schedule(at, Ev::MailboxReq { slot, command });
            self.stats.faults += 1;
        }
        for _ in 0..self.rng.range(0, 3) {
            let slot = self.rng.range(0, u64::from(self.slot_count) - 1) as u32;
            let at = self.rng.range(0, d);
            self.schedule(at, Ev::Corrupt(slot));
            self.stats.faults += 1;
        }
        if self.rng.chance(0.15) {
            let slot = self.rng.range(0, hosts as u64 - 1) as u32;
            let at = self.rng.range(0, d * 3 / 4);
            self.schedule(at, Ev::Intruder(slot));
            self.stats.faults += 1;
        }
        if self.rng.chance(0.03) {
            let at = self.rng.range(0, d);
            self.schedule(at, Ev::WipeSuperblock);
            self.stats.faults += 1;
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.payloads.insert(self.seq, ev);
    }

    fn note(&mut self, f: impl FnOnce() -> String) {
        if self.trace {
            println!("{:>12} {}", self.now, f());
        }
    }

    fn fail(&self, what: String) -> Res {
        Err(format!(
            "seed {}: {what}\nreplay: SIM_SEED={} SIM_TRACE=1 cargo test --test sim replay -- --nocapture",
            self.seed, self.seed
        ))
    }

    // --- I/O model ---------------------------------------------------------------------------

    fn mode_at(&self, machine: usize, t: u64) -> Option<(Mode, u64)> {
        // A whole-disk outage wins over a path fault.
        let mut found = None;
        for w in &self.windows {
            if w.start <= t && t < w.end {
                match w.machine {
                    None => return Some((w.mode, w.end)),
                    Some(m) if m == machine => found = Some((w.mode, w.end)),
                    _ => {}
                }
            }
        }
        found
    }

    fn normal_latency(&mut self) -> u64 {
        let io = self.t_us(self.timing.io_timeout_ms);
        if self.rng.chance(0.01) {
            self.rng.range(2_000, io / 2)
        } else {
            self.rng.range(30, 2_000)
        }
    }

    fn slow_latency(&mut self, t: u64) -> IoResult {
        let io = self.t_us(self.timing.io_timeout_ms);
        let lat = self.rng.range(io + 1, io * 3);
        // A slow write usually lands (late), sometimes never.
        let land = if self.rng.chance(0.8) { Some(t + self.rng.range(io / 2, lat)) } else { None };
        IoResult::Hang { land }
    }

    /// (result, torn, misdirected)
    fn io(&mut self, machine: usize, t: u64, write: bool) -> (IoResult, bool, bool) {
        let (mut torn, mut misdirect) = (false, false);
        let r = match self.mode_at(machine, t) {
            None => IoResult::Ok(self.normal_latency()),
            Some((mode, end)) => match mode {
                Mode::Fail => IoResult::Fail(self.rng.range(10, 500)),
                Mode::ReadFail if !write => IoResult::Fail(self.rng.range(10, 500)),
                Mode::WriteFail if write => IoResult::Fail(self.rng.range(10, 500)),
                Mode::ReadFail | Mode::WriteFail => IoResult::Ok(self.normal_latency()),
                Mode::Hang => {
                    let land = if self.rng.chance(0.5) { Some(end + self.rng.range(0, 5_000)) } else { None };
                    IoResult::Hang { land }
                }
                Mode::Slow => self.slow_latency(t),
                Mode::Flaky if self.rng.chance(0.35) => self.slow_latency(t),
                Mode::Flaky => IoResult::Ok(self.normal_latency()),
                Mode::Torn => {
                    torn = write && self.rng.chance(0.5);
                    IoResult::Ok(self.normal_latency())
                }
                Mode::Misdirect => {
                    misdirect = write && self.slot_count > 1 && self.rng.chance(0.5);
                    IoResult::Ok(self.normal_latency())
                }
            },
        };
        (r, torn, misdirect)
    }

    fn fence_fails(&self, machine: usize, t: u64) -> bool {
        self.fence_fail_windows.iter().any(|&(m, s, e)| m == machine && s <= t && t < e)
    }

    // --- main loop ---------------------------------------------------------------------------

    fn run(&mut self) -> Res {
        while let Some(Reverse((t, id))) = self.queue.pop() {
            if t > self.duration {
                break;
            }
            self.now = t;
            self.stats.steps += 1;
            let ev = self.payloads.remove(&id).expect("payload");
            self.step(ev)?;
        }
        self.stats.sim_us = self.duration;
        Ok(())
    }

    /// Events of a frozen daemon wait for it to thaw. Returns true if `ev` was postponed.
    fn postpone_if_frozen(&mut self, inc: usize, ev: Ev) -> Result<bool, Ev> {
        let x = &self.incs[inc];
        if x.alive && self.now < x.frozen_until {
            let at = x.frozen_until;
            self.schedule(at, ev);
            return Ok(true);
        }
        Err(ev)
    }

    fn step(&mut self, ev: Ev) -> Res {
        let ev = match ev {
            Ev::Wake { inc, .. } | Ev::IoDone { inc, .. } | Ev::Backup { inc, .. } => {
                match self.postpone_if_frozen(inc, ev) {
                    Ok(_) => return Ok(()),
                    Err(ev) => ev,
                }
            }
            ev => ev,
        };
        match ev {
            Ev::Wake { inc, token } => {
                if self.incs[inc].alive && self.incs[inc].token == token && self.incs[inc].pending.is_none() {
                    self.drive(inc)?;
                }
                Ok(())
            }
            Ev::SweepData { inc, token } => {
                if self.incs[inc].alive && self.incs[inc].token == token {
                    self.capture_sweep(inc);
                }
                Ok(())
            }
            Ev::IoDone { inc, token } => {
                if self.incs[inc].alive && self.incs[inc].token == token {
                    self.complete(inc)?;
                    self.drive(inc)?;
                }
                Ok(())
            }
            Ev::Land { slot, mut bytes, torn } => {
                if torn {
                    let at = self.rng.range(100, 511) as usize;
                    bytes[at..].fill(0xa5);
                    self.stats.torn_landings += 1;
                }
                self.note(|| format!("land slot {slot} torn={torn}"));
                self.put_record(slot, *bytes);
                Ok(())
            }
            Ev::Backup { inc, deadline } => {
                let x = &self.incs[inc];
                if x.alive && x.backup_deadline == Some(deadline) && !x.fencer_done {
                    self.note(|| format!("inc {inc} backup deadline thread fences"));
                    let outcome = self.fence_action(inc);
                    let x = &mut self.incs[inc];
                    if x.alive {
                        x.backup_result = Some(outcome);
                        x.backup_deadline = None;
                        if x.pending.is_none() {
                            self.wake(inc, self.now + 1);
                        }
                    }
                }
                Ok(())
            }
            Ev::Watchdog { inc, token } => {
                let x = &self.incs[inc];
                // It fires even after its daemon exited (still armed), unless the host is down.
                if x.wd_token == token && x.crashed.is_none() && x.reset.is_none() {
                    self.note(|| format!("inc {inc} WATCHDOG fires: host reset"));
                    self.stats.watchdog_resets += 1;
                    let now = self.now;
                    let x = &mut self.incs[inc];
                    x.alive = false;
                    x.reset = Some(now);
                    let m = x.machine;
                    self.machines[m].vms = None;
                    if self.rng.chance(0.7) {
                        let at = now + self.detect_bound() + self.rng.range(0, self.detect_bound());
                        self.schedule(at, Ev::Restart(m));
                    }
                }
                Ok(())
            }
            Ev::Crash(m) => {
                let Some(&i) = self.machines[m].incs.last() else { return Ok(()) };
                if !self.incs[i].alive {
                    return Ok(());
                }
                let phase = self.incs[i].node.phase();
                self.note(|| format!("inc {i} (machine {m}) crashes in {}", phase.name()));
                let now = self.now;
                let x = &mut self.incs[i];
                x.alive = false;
                x.crashed = Some(now);
                self.machines[m].vms = None;
                self.stats.crashes += 1;
                let bound = self.detect_bound();
                if self.clean && phase == Phase::Live {
                    self.schedule(now + bound, Ev::CheckDetected { crashed: i, at: now });
                }
                if self.rng.chance(0.8) {
                    let at = now + bound + self.rng.range(0, bound * 2);
                    self.schedule(at, Ev::Restart(m));
                }
                Ok(())
            }
            Ev::Restart(m) => self.restart(m),
            Ev::Leave(m) => {
                let Some(&i) = self.machines[m].incs.last() else { return Ok(()) };
                if !self.incs[i].alive {
                    return Ok(());
                }
                self.note(|| format!("inc {i} asked to stop"));
                self.incs[i].stop = true;
                if self.incs[i].pending.is_none() {
                    // The daemon sleeps in 20 ms steps: it sees the signal soon.
                    let at = self.now + self.rng.range(0, 20_000);
                    self.wake(i, at);
                }
                if self.rng.chance(0.7) {
                    let at = self.now + self.rng.range(0, self.detect_bound() * 2);
                    self.schedule(at, Ev::Restart(m));
                }
                Ok(())
            }
            Ev::Freeze { machine, len } => {
                let Some(&i) = self.machines[machine].incs.last() else { return Ok(()) };
                if self.incs[i].alive {
                    self.note(|| format!("inc {i} FROZEN for {len} us"));
                    self.stats.freezes += 1;
                    let until = self.now + len;
                    let x = &mut self.incs[i];
                    x.frozen_until = x.frozen_until.max(until);
                    x.was_frozen = true;
                }
                Ok(())
            }
            Ev::MailboxReq { slot, command } => {
                let mut m = Mailbox::empty(CLUSTER, slot);
                m.command = command;
                self.next_request += 1;
                m.request_id = self.next_request;
                m.sender_slot = diskbeat::format::mailbox::SENDER_TOOL;
                let mut b = [0u8; 512];
                m.encode(&mut b);
                self.note(|| format!("mailbox {slot} <- {command:?}"));
                let (now, keep) = (self.now, self.keep_us);
                self.mailboxes[slot as usize].put(now, b, keep);
                Ok(())
            }
            Ev::Corrupt(slot) => {
                let mut b = *self.records[slot as usize].current();
                let at = self.rng.range(0, 511) as usize;
                b[at] ^= 1 << self.rng.range(0, 7);
                self.note(|| format!("corrupt slot {slot} byte {at}"));
                self.put_record(slot, b);
                Ok(())
            }
            Ev::WipeSuperblock => {
                self.note(|| "superblock wiped".into());
                let (now, keep) = (self.now, self.keep_us);
                self.superblock.put(now, [0; 512], keep);
                Ok(())
            }
            Ev::Intruder(slot) => {
                let m = self.add_machine(slot, true);
                self.note(|| format!("intruder machine {m} on slot {slot}"));
                self.restart(m)
            }
            Ev::CheckDetected { crashed, at } => {
                let slot = self.incs[crashed].slot;
                // A new incarnation that took the slot (after watching it for host-dead) may
                // write before a peer's declaring sweep: then the peer sees a restart instead.
                if self
                    .incs
                    .iter()
                    .any(|y| y.slot == slot && y.started > at && y.node.record().generation > 0)
                {
                    return Ok(());
                }
                for (o, x) in self.incs.iter().enumerate() {
                    if x.alive
                        && x.slot != slot
                        && x.node.phase() == Phase::Live
                        && x.live_at.is_some_and(|l| l <= at)
                        && x.dead_seen[slot as usize].is_none_or(|d| d < at)
                    {
                        return self.fail(format!(
                            "liveness: inc {o} (slot {}) has not declared slot {slot} dead {} µs after inc \
                             {crashed} crashed at {at} (peer state {:?})",
                            x.slot,
                            self.now - at,
                            x.node.peers()[slot as usize].state
                        ));
                    }
                }
                Ok(())
            }
            Ev::CheckJoined(i) => {
                let x = &self.incs[i];
                if x.alive && x.live_at.is_none() && x.stopped.is_none() {
                    return self.fail(format!(
                        "liveness: inc {i} (slot {}) started at {} is still {} at {}",
                        x.slot,
                        x.started,
                        x.node.phase().name(),
                        self.now
                    ));
                }
                Ok(())
            }
        }
    }

    /// True-time bound for a healthy observer to declare a crashed peer dead.
    fn detect_bound(&self) -> u64 {
        let t = self.timing;
        // The last write is first seen by a sweep up to an interval after it landed, whose end (up
        // to an io timeout later) starts the clock; the declaring sweep starts up to an interval
        // after host-dead and ends up to an io timeout later; a cycle can slip by one more.
        let us = self.t_us(t.host_dead_ms) + 3 * self.t_us(t.interval_ms);
        // Jitter, I/O latency (two sweeps of up to an io timeout), clock rates (±0.1% each).
        us + us * 3 / 1000 + self.t_us(t.interval_ms) / 5 + 2 * self.t_us(t.io_timeout_ms) + 5_000
    }

    fn restart(&mut self, m: usize) -> Res {
        if let Some(&i) = self.machines[m].incs.last() {
            if self.incs[i].alive {
                // Only a fenced daemon that survived (log-only, exec) is restarted by its operator.
                if !matches!(self.incs[i].node.phase(), Phase::Fenced(_)) {
                    return Ok(());
                }
                let now = self.now;
                let x = &mut self.incs[i];
                x.alive = false;
                x.stopped = Some(now);
            }
        }
        // The new daemon opens the watchdog: the old one's countdown is its now.
        for &j in &self.machines[m].incs {
            self.incs[j].wd_token += 1;
        }
        let mach = &self.machines[m];
        let (slot, clock, watchdog, fence) = (mach.slot, mach.clock, mach.watchdog, mach.fence);
        self.next_uuid += 1;
        let cfg = NodeConfig {
            slot,
            slot_count: self.slot_count,
            cluster_uuid: CLUSTER,
            host_uuid: uuid::Uuid::from_u128((self.seed as u128) << 64 | self.next_uuid),
            host_name: diskbeat::format::encode_name(&format!("m{m}")).expect("name"),
            timing: self.timing,
            superblock: SUPERBLOCK,
            watchdog,
            fence_stops_vms: fence != FenceKind::LogOnly,
            skip_acquire_wait: false,
            networks: 0,
            weight: 1,
            isolation_configured: false,
        };
        let node = Node::new(cfg, clock.local_ms(self.now));
        let i = self.incs.len();
        self.incs.push(Inc {
            machine: m,
            slot,
            node,
            clock,
            alive: true,
            started: self.now,
            crashed: None,
            fenced: None,
            reset: None,
            stopped: None,
            live_at: None,
            generation: 0,
            pending: None,
            token: 0,
            frozen_until: 0,
            was_frozen: false,
            fence_failed: false,
            fencer_done: false,
            backup_deadline: None,
            backup_result: None,
            stop: false,
            stop_sent: false,
            wd_token: 0,
            fed_ok: None,
            dead_seen: vec![None; self.slot_count as usize],
        });
        self.machines[m].incs.push(i);
        self.stats.incarnations += 1;
        self.note(|| {
            format!("inc {i} starts on machine {m} slot {slot} (watchdog {watchdog}, fence {fence:?})")
        });
        if watchdog {
            // Armed when the daemon opens it.
            self.feed_watchdog(i);
        }
        self.wake(i, self.now);
        if self.clean {
            let t = self.timing;
            let bound = self.detect_bound() + 2 * self.t_us(t.io_timeout_ms) + 4 * self.t_us(t.interval_ms);
            self.schedule(self.now + bound, Ev::CheckJoined(i));
        }
        Ok(())
    }

    /// Bytes land in a record slot. The ground-truth silence clock restarts on every landing
    /// except corrupt bytes over corrupt bytes: the documented rule (docs/SAFETY.md) is that a slot
    /// that keeps failing validation ages like silence.
    fn put_record(&mut self, slot: u32, bytes: Sector) {
        let valid = |b: &Sector| Record::validate(b, &CLUSTER, slot).is_ok();
        let was_valid = valid(self.records[slot as usize].current());
        if valid(&bytes) || was_valid {
            let l = &mut self.landings[slot as usize];
            l.push_back(self.now);
            while l.len() > 64 {
                l.pop_front();
            }
        }
        let (now, keep) = (self.now, self.keep_us);
        self.records[slot as usize].put(now, bytes, keep);
    }

    fn wake(&mut self, i: usize, at: u64) {
        self.incs[i].token += 1;
        let token = self.incs[i].token;
        self.schedule(at, Ev::Wake { inc: i, token });
    }

    fn feed_watchdog(&mut self, i: usize) {
        self.incs[i].wd_token += 1;
        let token = self.incs[i].wd_token;
        let at = self.now + self.t_us(self.timing.io_timeout_ms);
        self.schedule(at, Ev::Watchdog { inc: i, token });
    }

    /// Runs the fence action for incarnation `i` now; returns its outcome.
    fn fence_action(&mut self, i: usize) -> FenceOutcome {
        if self.incs[i].fencer_done {
            return FenceOutcome::Done;
        }
        let m = self.incs[i].machine;
        if self.fence_fails(m, self.now) {
            self.note(|| format!("inc {i} fence action FAILS"));
            self.stats.fence_failures += 1;
            self.incs[i].fence_failed = true;
            return FenceOutcome::Failed;
        }
        let now = self.now;
        let x = &mut self.incs[i];
        x.fencer_done = true;
        x.fenced.get_or_insert(now);
        match self.machines[m].fence {
            FenceKind::Reboot => {
                x.alive = false;
                self.machines[m].vms = None;
                if self.rng.chance(0.6) {
                    let at = now + self.detect_bound() + self.rng.range(0, self.detect_bound());
                    self.schedule(at, Ev::Restart(m));
                }
            }
            FenceKind::Exec => self.machines[m].vms = None,
            FenceKind::LogOnly => {}
        }
        FenceOutcome::Done
    }

    /// The driver (daemon::run's loop): deliver pending inputs, then perform actions until the
    /// node waits for an I/O or a timer.
    fn drive(&mut self, i: usize) -> Res {
        if !self.incs[i].alive || self.incs[i].pending.is_some() {
            return Ok(());
        }
        let clock = self.incs[i].clock;
        if let Some(outcome) = self.incs[i].backup_result.take() {
            let local = clock.local_ms(self.now);
            self.incs[i].node.handle_backup_fence(local, outcome);
            self.drain_events(i)?;
        }
        if self.incs[i].stop && !self.incs[i].stop_sent {
            self.incs[i].stop_sent = true;
            let local = clock.local_ms(self.now);
            self.incs[i].node.handle_stop(local);
        }
        loop {
            if !self.incs[i].alive {
                return Ok(());
            }
            let local = clock.local_ms(self.now);
            let Some(action) = self.incs[i].node.poll_action(local) else { break };
            if self.trace && !matches!(action, Action::Write { .. }) {
                self.note(|| format!("inc {i} action {action:?}"));
            }
            match action {
                Action::Write { record, timeout_ms } => return self.start_write(i, record, timeout_ms),
                Action::Sweep { timeout_ms } => return self.start_sweep(i, timeout_ms),
                Action::Fence { .. } => {
                    self.note(|| format!("inc {i} fence action"));
                    let outcome = self.fence_action(i);
                    if !self.incs[i].alive {
                        return Ok(());
                    }
                    // An exec action takes a while.
                    let lat = self.rng.range(100, self.t_us(self.timing.interval_ms));
                    self.incs[i].pending = Some(Pending::Fence(outcome));
                    self.incs[i].token += 1;
                    let token = self.incs[i].token;
                    self.schedule(self.now + lat, Ev::IoDone { inc: i, token });
                    return Ok(());
                }
                Action::FeedWatchdog => {
                    self.check_feed(i)?;
                    if self.machines[self.incs[i].machine].watchdog {
                        self.feed_watchdog(i);
                    }
                }
                Action::ExpireWatchdog => {
                    // Setting the timeout pings the watchdog: the countdown restarts from now.
                    if self.machines[self.incs[i].machine].watchdog {
                        self.incs[i].wd_token += 1;
                        let token = self.incs[i].wd_token;
                        let at = self.now + self.t_us(self.timing.io_timeout_ms).min(1_000_000);
                        self.schedule(at, Ev::Watchdog { inc: i, token });
                    }
                }
                Action::Ready => {}
                Action::SetBackupDeadline { deadline_ms } => {
                    self.incs[i].backup_deadline = deadline_ms;
                    if let Some(d) = deadline_ms {
                        // The thread checks every interval/4; a late one (scheduling) adds more.
                        let step = self.t_us(self.timing.interval_ms) / 4;
                        let mut at = clock.true_at_ms(d).max(self.now) + self.rng.range(0, step);
                        if self.late_backup {
                            at += self.rng.range(0, self.t_us(self.timing.interval_ms));
                        }
                        self.schedule(at, Ev::Backup { inc: i, deadline: d });
                    }
                }
                Action::Exit { code, disarm_watchdog } => {
                    self.note(|| format!("inc {i} exits with {code} (disarm watchdog: {disarm_watchdog})"));
                    let now = self.now;
                    let x = &mut self.incs[i];
                    x.alive = false;
                    x.stopped = Some(now);
                    if disarm_watchdog {
                        x.wd_token += 1;
                    }
                    return Ok(());
                }
            }
            self.drain_events(i)?;
        }
        self.drain_events(i)?;
        if let Some(at_local) = self.incs[i].node.poll_timeout() {
            let at = clock.true_at_ms(at_local).max(self.now + 1);
            // Scheduling jitter.
            let at = at + self.rng.range(0, self.t_us(self.timing.interval_ms) / 20);
            self.wake(i, at);
        }
        Ok(())
    }

    fn start_write(&mut self, i: usize, rec: Record, timeout_ms: u64) -> Res {
        let t = self.now;
        if self.incs[i].fenced.is_some() && !matches!(rec.state, State::SelfFencing | State::Fenced) {
            return self.fail(format!(
                "inc {i} (slot {}) fenced at {:?} but writes a {:?} record",
                rec.slot, self.incs[i].fenced, rec.state
            ));
        }
        let bound = timeout_ms * 1000;
        let machine = self.incs[i].machine;
        let mut bytes = Box::new([0u8; 512]);
        rec.encode(&mut bytes[..]);
        let (r, torn, misdirect) = self.io(machine, t, true);
        let slot = if misdirect {
            self.stats.misdirected += 1;
            (rec.slot + 1 + self.rng.range(0, u64::from(self.slot_count) - 2) as u32) % self.slot_count
        } else {
            rec.slot
        };
        let (result, done) = match r {
            IoResult::Ok(lat) if lat <= bound => {
                let land = t + self.rng.range(0, lat);
                self.schedule(land, Ev::Land { slot, bytes, torn });
                (Ok(lat), t + lat)
            }
            IoResult::Ok(lat) => {
                let land = t + self.rng.range(bound, lat);
                self.schedule(land, Ev::Land { slot, bytes, torn });
                self.stats.late_landings += 1;
                (Err(IoFailure::TimedOut), t + bound)
            }
            IoResult::Fail(lat) => (Err(IoFailure::Failed(5)), t + lat.min(bound)),
            IoResult::Hang { land } => {
                if let Some(l) = land {
                    self.schedule(l.max(t + 1), Ev::Land { slot, bytes, torn });
                    self.stats.late_landings += 1;
                }
                (Err(IoFailure::TimedOut), t + bound)
            }
        };
        self.incs[i].pending = Some(Pending::Write(result));
        self.incs[i].token += 1;
        let token = self.incs[i].token;
        self.schedule(done.max(t + 1), Ev::IoDone { inc: i, token });
        Ok(())
    }

    fn start_sweep(&mut self, i: usize, timeout_ms: u64) -> Res {
        let ts = self.now;
        let bound = timeout_ms * 1000;
        let machine = self.incs[i].machine;
        let n = self.slot_count as usize + 2;
        let mut reads = Vec::with_capacity(n);
        let mut te = ts + 1;
        let whole_failure = self.mode_at(machine, ts).is_some() && self.rng.chance(0.02);
        for _ in 0..n {
            let (r, _, _) = self.io(machine, ts, false);
            let read = match r {
                IoResult::Ok(lat) if lat <= bound => {
                    te = te.max(ts + lat);
                    Ok(ts + self.rng.range(0, lat))
                }
                IoResult::Ok(_) | IoResult::Hang { .. } => {
                    te = te.max(ts + bound);
                    Err(IoFailure::TimedOut)
                }
                IoResult::Fail(lat) => {
                    te = te.max(ts + lat.min(bound));
                    Err(IoFailure::Failed(5))
                }
            };
            reads.push(read);
        }
        if whole_failure {
            reads.clear();
        }
        self.incs[i].pending = Some(Pending::Sweep { ts, te, reads, data: None });
        self.incs[i].token += 1;
        let token = self.incs[i].token;
        self.schedule(te, Ev::SweepData { inc: i, token });
        self.schedule(te, Ev::IoDone { inc: i, token });
        Ok(())
    }

    fn capture_sweep(&mut self, i: usize) {
        let n = self.slot_count as usize;
        let own = self.incs[i].slot as usize;
        let Some(Pending::Sweep { reads, data, .. }) = &mut self.incs[i].pending else { return };
        let mut out = Vec::with_capacity(reads.len());
        for (k, r) in reads.iter().enumerate() {
            let hist = if k < n {
                &self.records[k]
            } else if k == n {
                &self.mailboxes[own]
            } else {
                &self.superblock
            };
            out.push(match r {
                Ok(at) => *hist.at(*at),
                Err(_) => [0; 512],
            });
        }
        *data = Some(out);
    }

    /// SAFETY.md's watchdog rules: while live, the watchdog is fed only by a sweep that verified a
    /// new write, so no later than 2 io timeouts after that write's submission (`ok`): it then
    /// fires by ok + 3 io timeouts = 0.75 T, before any peer can declare the host dead.
    fn check_feed(&mut self, i: usize) -> Res {
        let x = &self.incs[i];
        if x.node.phase() != Phase::Live {
            return Ok(());
        }
        let ok_local = x.node.last_ok_ms();
        if x.fed_ok == Some(ok_local) {
            return self.fail(format!(
                "WATCHDOG: inc {i} fed its watchdog again without a newly verified write (ok {ok_local})"
            ));
        }
        self.incs[i].fed_ok = Some(ok_local);
        let x = &self.incs[i];
        let t = self.timing;
        let ok = x.clock.true_at_ms(ok_local);
        let bound = 2 * self.t_us(t.io_timeout_ms) + self.t_us(t.interval_ms) / 20;
        let slack = bound * 3 / 1000 + 2_000;
        if self.now > ok + bound + slack {
            return self.fail(format!(
                "WATCHDOG: inc {i} fed its watchdog {} µs after its last verified write (bound {bound} µs)",
                self.now - ok
            ));
        }
        Ok(())
    }

    /// Feeds the completed action's result to the node.
    fn complete(&mut self, i: usize) -> Res {
        self.sweep_started = None;
        let clock = self.incs[i].clock;
        let local = clock.local_ms(self.now);
        match self.incs[i].pending.take().expect("an action in flight") {
            Pending::Write(r) => self.incs[i].node.handle_write(local, r),
            Pending::Fence(outcome) => self.incs[i].node.handle_fence(local, outcome),
            Pending::Sweep { ts, te, reads, data } => {
                self.stats.cycles += 1;
                let data = data.expect("captured at completion");
                for (k, r) in reads.iter().enumerate() {
                    match r {
                        Ok(_) => {
                            self.view.slots[k] = data[k];
                            self.view.errs[k] = None;
                        }
                        Err(e) => self.view.errs[k] = Some(*e),
                    }
                }
                let (ls, le) = (clock.local_ms(ts), clock.local_ms(te).max(local));
                let slots = (!reads.is_empty()).then_some(&self.view as &dyn SlotSource);
                self.sweep_started = Some(ts);
                self.incs[i].node.handle_sweep(ls, le, slots, (le - ls) * 1000);
                self.check_dead_ground_truth(i, ts, &reads)?;
            }
        }
        self.drain_events(i)
    }

    /// Declarations made by this sweep: the slot really was silent for host-dead (less the
    /// clock-rate error) before the sweep started.
    fn check_dead_ground_truth(&mut self, i: usize, ts: u64, reads: &[Result<u64, IoFailure>]) -> Res {
        let host_dead = self.t_us(self.timing.host_dead_ms);
        let min_silence = host_dead - host_dead * 25 / 10_000;
        for (slot, p) in self.incs[i].node.peers().iter().enumerate() {
            // Only for valid contents: a slot that keeps reading corrupt ages like silence (the
            // documented rule), even if a short-lived valid record landed between two reads.
            if p.state == PeerState::Dead
                && p.corruption.is_none()
                && p.dead_at_ms == Some(self.incs[i].clock.local_ms(ts))
            {
                // The last landing this read could have seen.
                let Some(Ok(at)) = reads.get(slot) else { continue };
                let last = self.landings[slot].iter().rev().find(|&&l| l <= *at).copied().unwrap_or(0);
                let silent = ts.saturating_sub(last);
                if silent < min_silence {
                    return self.fail(format!(
                        "LIVENESS RULE: inc {i} declared slot {slot} dead after {silent} µs of silence on the \
                         disk (last landing at {last}), less than host-dead {host_dead} µs"
                    ));
                }
            }
        }
        Ok(())
    }

    fn drain_events(&mut self, i: usize) -> Res {
        while let Some(e) = self.incs[i].node.poll_event() {
            if self.trace {
                let slot = self.incs[i].slot;
                self.note(|| format!("inc {i} (slot {slot}): {e:?}"));
            }
            match e {
                Event::Peer { slot, change: PeerChange::State { to, .. } } => {
                    if to == PeerState::Dead {
                        self.stats.dead_declarations += 1;
                        self.incs[i].dead_seen[slot as usize] = Some(self.now);
                        self.check_dead(i, slot)?;
                    }
                    if matches!(to, PeerState::Dead | PeerState::Fenced) {
                        self.check_proof(i, slot)?;
                    }
                }
                Event::SelfFence(reason) => {
                    self.stats.self_fences += 1;
                    if self.clean {
                        return self.fail(format!(
                            "inc {i} (slot {}) self-fenced in a fault-free run: {reason:?}",
                            self.incs[i].slot
                        ));
                    }
                }
                Event::Refused(reason) => {
                    self.stats.refusals += 1;
                    if self.clean {
                        return self.fail(format!(
                            "inc {i} (slot {}) refused in a fault-free run: {reason:?}",
                            self.incs[i].slot
                        ));
                    }
                }
                Event::Live { generation } => {
                    self.stats.went_live += 1;
                    self.incs[i].live_at = Some(self.now);
                    self.incs[i].generation = generation;
                    let m = self.incs[i].machine;
                    self.machines[m].vms = Some(i);
                    self.check_owner(i)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether incarnation `j` may be declared dead while still around: no watchdog, and its
    /// daemon was frozen or its fence action failed (it cannot be proven gone; check_proof holds).
    fn unprovable(&self, j: usize) -> bool {
        let x = &self.incs[j];
        !self.machines[x.machine].watchdog && (x.was_frozen || x.fence_failed)
    }

    /// Every incarnation of `slot` that ever went live is gone before it is declared dead.
    fn check_dead(&mut self, observer: usize, slot: u32) -> Res {
        // A declaration is about what the observer read: the incarnation of that generation and
        // older ones, that went live before the declaring sweep started. A daemon frozen in the
        // middle of a sweep judges, on thawing, what it read before (correctly: that incarnation
        // was silent), while a newer one may have joined since, possibly reusing the generation
        // when it took over a corrupt slot (the generation was unreadable): declarations name
        // the host uuid (docs/SAFETY.md, Limits).
        let generation = self.incs[observer].node.peers()[slot as usize].generation;
        let read_from = self.sweep_started.unwrap_or(self.now);
        for j in 0..self.incs.len() {
            let x = &self.incs[j];
            if x.slot != slot || x.generation > generation || x.live_at.is_none_or(|l| l > read_from) {
                continue;
            }
            match x.gone_at() {
                Some(g) if g < self.now => {
                    let margin = self.now - g;
                    // Crashed hosts, frozen daemons (they fence when they thaw) and failed fence
                    // actions (retried) say nothing about the margin of the self-fence rule.
                    let measured = x.crashed.is_none() && !x.was_frozen && !x.fence_failed;
                    if measured && self.stats.min_margin_us.is_none_or(|m| margin < m) {
                        self.stats.min_margin_us = Some(margin);
                    }
                }
                _ if self.unprovable(j) => self.stats.unprovable_deaths += 1,
                _ => {
                    return self.fail(format!(
                        "SAFETY: inc {observer} (slot {}) declared slot {slot} dead at {} while inc {j} \
                         (machine {}, live since {:?}, phase {}, watchdog {}) had neither crashed, fenced, \
                         been reset nor exited",
                        self.incs[observer].slot,
                        self.now,
                        x.machine,
                        x.live_at,
                        x.node.phase().name(),
                        self.machines[x.machine].watchdog
                    ))
                }
            }
        }
        Ok(())
    }

    /// A peer proven gone (`vms_gone`) has no VMs running: the predicate failover will trust.
    fn check_proof(&mut self, observer: usize, slot: u32) -> Res {
        let peer = self.incs[observer].node.peers()[slot as usize];
        let Ok(proof) = peer.vms_gone() else { return Ok(()) };
        self.stats.proofs += 1;
        for m in &self.machines {
            let Some(j) = m.vms else { continue };
            let x = &self.incs[j];
            // The proof is about the incarnation that wrote the record (its inventory, in the
            // failover issue): another incarnation's VMs (one that left cleanly) are not covered.
            if x.slot == slot && x.node.config().host_uuid == peer.host_uuid {
                return self.fail(format!(
                    "VM SAFETY: inc {observer} (slot {}) holds slot {slot} generation {} proven gone ({proof:?}) \
                     while inc {j} (machine {}, generation {}, phase {}, frozen {}, fence failed {}) runs VMs",
                    self.incs[observer].slot,
                    peer.generation,
                    x.machine,
                    x.generation,
                    x.node.phase().name(),
                    x.was_frozen,
                    x.fence_failed
                ));
            }
        }
        Ok(())
    }

    /// Slot ownership: at most one unfenced live incarnation per slot.
    fn check_owner(&self, i: usize) -> Res {
        let slot = self.incs[i].slot;
        for (j, x) in self.incs.iter().enumerate() {
            if j != i && x.slot == slot && x.live_at.is_some() && x.gone_at().is_none_or(|g| g >= self.now) {
                if self.unprovable(j) {
                    continue;
                }
                return self.fail(format!(
                    "OWNERSHIP: inc {i} went live on slot {slot} at {} while inc {j} (machine {}, intruder {}, \
                     phase {}) is live and unfenced",
                    self.now,
                    x.machine,
                    self.machines[x.machine].intruder,
                    x.node.phase().name()
                ));
            }
        }
        Ok(())
    }
}

fn run_seed(seed: u64, trace: bool) -> Result<Stats, String> {
    // A panic inside the node (an invariant assertion) is a failure of this seed, reported with it.
    std::panic::catch_unwind(|| {
        let mut sim = Sim::new(seed, trace);
        sim.run()?;
        Ok(sim.stats)
    })
    .unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!(
            "seed {seed}: panicked: {what}\nreplay: SIM_SEED={seed} SIM_TRACE=1 cargo test --test sim replay -- --nocapture"
        ))
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Runs `count` seeds from `base` on every core; stops collecting after 5 failures.
fn run_many(base: u64, count: u64) -> (Stats, Vec<String>) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let results: Vec<(Stats, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut total = Stats::default();
                    let mut failures = Vec::new();
                    let mut k = t;
                    while k < count && failures.len() < 5 {
                        match run_seed(base.wrapping_add(k), false) {
                            Ok(st) => total.add(&st),
                            Err(e) => failures.push(e),
                        }
                        k += threads;
                    }
                    (total, failures)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("sim thread")).collect()
    });
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for (st, f) in results {
        total.add(&st);
        failures.extend(f);
    }
    (total, failures)
}

#[test]
fn simulate_many_seeds() {
    let started = std::time::Instant::now();
    // A fresh base seed every run (printed, so any failure can be replayed), unless given.
    let base = env_u64("SIM_BASE_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
    });
    let runs = env_u64("SIM_RUNS").unwrap_or(10_000);
    println!("sim: base seed {base}, {runs} runs (replay all: SIM_BASE_SEED={base} SIM_RUNS={runs})");
    let (mut total, mut failures) = run_many(base, runs);
    for &seed in REGRESSION_SEEDS {
        match run_seed(seed, false) {
            Ok(s) => total.add(&s),
            Err(e) => failures.push(e),
        }
    }
    let elapsed = started.elapsed();
    println!(
        "sim: {} runs ({} fault-free), {} steps, {} cycles, {} incarnations, {} faults planned ({} crashes, \
         {} freezes, {} late landings, {} torn, {} misdirected, {} failed fence actions), {} dead \
         declarations ({} of unprovable hosts), {} gone-proofs, {} watchdog resets, {} self-fences, {} refusals, \
         {} went live, min fence-to-dead margin {:?} µs, {:.0} simulated s, {:.2?} wall",
        total.runs,
        total.clean_runs,
        total.steps,
        total.cycles,
        total.incarnations,
        total.faults,
        total.crashes,
        total.freezes,
        total.late_landings,
        total.torn_landings,
        total.misdirected,
        total.fence_failures,
        total.dead_declarations,
        total.unprovable_deaths,
        total.proofs,
        total.watchdog_resets,
        total.self_fences,
        total.refusals,
        total.went_live,
        total.min_margin_us,
        total.sim_us as f64 / 1e6,
        elapsed
    );
    if !failures.is_empty() {
        let mut msg = String::new();
        for f in &failures {
            let _ = writeln!(msg, "{f}\n");
        }
        panic!("{} failing seed(s) (base seed {base}):\n{msg}", failures.len());
    }
}

/// `SIM_SEED=<seed> cargo test --test sim replay -- --nocapture` replays one seed.
#[test]
fn replay() {
    let Some(seed) = env_u64("SIM_SEED") else { return };
    let trace = std::env::var("SIM_TRACE").is_ok_and(|v| v != "0");
    match run_seed(seed, trace) {
        Ok(s) => println!("seed {seed}: ok {s:?}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn same_seed_same_run() {
    let a = run_seed(7, false).map(|s| (s.steps, s.cycles, s.dead_declarations));
    let b = run_seed(7, false).map(|s| (s.steps, s.cycles, s.dead_declarations));
    assert_eq!(a, b);
}
