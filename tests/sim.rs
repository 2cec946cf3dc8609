//! Deterministic simulator of a pool of hosts sharing one heartbeat disk (TigerBeetle's VOPR shape).
//!
//! Every host runs the real [`Node`], driven exactly as `daemon::run` drives it: this file performs
//! the actions the node asks for (write, sweep, fence, watchdog, backup deadline, exit) against an
//! in-memory disk and feeds the results back. There is no copy of the heartbeat loop here: a rule
//! exists only in `src/core`. Hosts run on drifting clocks; the disk keeps a short history of every
//! sector so a read observes any instant of its I/O window.
//!
//! Network heartbeats (runs of every kind but `disk`): hosts have 0 (disk only), 1 or 2 networks, a
//! partition weight, and maybe isolation addresses whose reachability the driver feeds every
//! interval. Beats are driven as the daemon drives them: `poll_beat`, one `view_at` per beat, one
//! `beat_packet` per peer slot that has a host (every host knows every slot's address), sent on
//! every network both ends have; beats go on while an I/O is in flight, stop while the daemon is
//! frozen or the host is down. Every directed link of every network has loss, delay plus jitter
//! (reordering), duplication, and cuts that change over time and heal: a whole host cut off,
//! splits of the pool into groups, one-way cuts, non-transitive cuts (a-b cut while a-c and b-c
//! work). A delivered packet is handed to the current incarnation of the receiving machine with
//! the receiver's clock at delivery (a frozen daemon's socket drops it). An adversary without the
//! key records delivered packets and re-injects old ones later (to the receiver, to other hosts,
//! on the other network, to a restarted receiver), and forges packets (`BadMac`).
//!
//! Faults: crashes and restarts (new incarnations), per-host path faults (errors, hangs, slow I/O
//! whose timed-out writes land late, torn writes, misdirected writes landing in another slot),
//! whole-disk outages, whole-LUN outages with the network up (ride-through) combined with a crash,
//! a cut, a split, a freeze, the disk coming back for one host first or a host joining a free slot,
//! corrupted sectors, a wiped superblock, mailbox fence requests, clean leaves, misconfigured
//! intruders on a held slot, daemons frozen while their host lives (SIGSTOP), late backup deadline
//! threads, failing fence actions, hardware watchdogs (or none), pools of up to 64 slots.
//!
//! Fence devices (a third of the runs, drawn from a stream of their own): most machines get a
//! device that the coordinator's node may call (`Action::FenceDevice`): truthful (powers the
//! machine off, then answers `off`), failing, hanging (answers `timed_out` after the device
//! timeout), late (answers failure, powers off later) or lying (answers `off`, powers nothing
//! off). Checked: DEVICE, a device is never called for a host that runs with a working disk
//! (only silent hosts: crashed, frozen, or with a failing path); VM SAFETY holds strictly for
//! every truthful device; LIAR, a host a lying device "powered off" stops running its VMs within
//! [`Sim::liar_bound`] (when it has a hardware watchdog; counted otherwise).
//!
//! Run kinds (drawn from a random stream of their own, so a `disk` run is the same run it was
//! before the network model existed): `disk` (no network; 30 % of them fault-free), `net-clean`
//! (fault-free disk, transient network faults only), `partition` (healthy disk, network cuts,
//! crashes, freezes), `lun` (whole-LUN outage with the network intact, plus at most one further
//! failure) and `chaos` (everything at once).
//!
//! Invariants, checked at every step:
//! - FOREIGN: a host that gives up its slot for a foreign write (fence, refused join) read
//!   something it did not write (not a record with its own host uuid and generation);
//! - SAFETY: a peer declared dead was silent on the disk for host-dead (ground truth: the last
//!   landing in its slot), and every incarnation of it that went live had stopped (crashed, fenced,
//!   exited, reset by its watchdog) unless it has no watchdog and cannot be proven gone (frozen, or
//!   its fence action failed): those must never be *proven* gone; ride-throughs included;
//! - a host whose VMs a peer holds proven gone (`Peer::vms_gone`) really has no VMs running;
//! - at most one unfenced live incarnation per slot; a fenced host writes only fence marks;
//! - fault-free runs (`disk` clean, `net-clean`): nobody fences (for any reason, partition
//!   included) or is refused, every join completes, every crash is detected within host-dead plus
//!   a few intervals (plus the ride-through bound for a host that joined recently);
//! - WATCHDOG: fed while live only after a newly verified write, within 2 io timeouts of it, or
//!   while riding through a whole-LUN loss on ground-truth evidence (every member sent, within the
//!   network timeout, a packet saying its disk is lost), and never past the ride-through bound;
//! - RIDE: a host riding through has that evidence (each member's newest vouching packet, sent
//!   within the network timeout and truly lost), and two hosts riding through have heard each
//!   other (one side only);
//! - LUN: with the whole LUN lost for every host and the network intact, nobody stops before the
//!   ride-through bound (ride_max past its storage deadline) while the outage lasts, hardware
//!   watchdogs and hanging I/O included; excused only when a host's storage deadline came before
//!   any member could vouch (a slow cycle just before the outage: see the design gaps at
//!   `NET_REGRESSION_SEEDS`; SIM_STRICT_LUN=1 fails those too);
//! - PARTITION (`partition` and `net-clean` runs): once the ground truth (links of both networks,
//!   isolation, the set of live hosts) has been stable for the decision window, no two live
//!   network-enabled hosts fail to hear each other both ways (see `Sim::partition_window`);
//! - PROTOCOL: a packet says `disk_lost` when its sender's last disk I/O failed or timed out;
//! - REPLAY: a packet is accepted only if its (generation, sequence) is above every one accepted
//!   by that incarnation on that network; replays to the same receiver and network are dropped as
//!   `Replay`/`StaleGeneration`, to another host as `WrongDestination`.
//!
//! `cargo test --test sim` runs `SIM_RUNS` seeds (default 10,000; about 30 s on 2 cores: the test
//! profile optimizes this crate, with debug assertions on) from a random base seed printed at the
//! start, plus the fixed regression seeds. A failure prints the seed and the command that replays
//! it: `SIM_SEED=<seed> SIM_TRACE=1 cargo test --test sim replay -- --nocapture` (`SIM_TRACE=2`
//! also traces every packet; `SIM_KIND=disk` forces a kind, as the disk regression seeds need).

use diskbeat::core::{
    silence_rule, Action, DeviceOutcome, Event, FenceOutcome, FenceReason, GoneProof, IoFailure, Node,
    NodeConfig, PeerChange, PeerState, Phase, RefuseReason, SilenceRule, SlotSource,
};
use diskbeat::format::mailbox::{Command, Mailbox};
use diskbeat::format::record::{Record, State};
use diskbeat::net::packet::DISK_AGE_NEVER;
use diskbeat::net::{DropReason, Packet};
use diskbeat::timing::Timing;
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::SplitMix64;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;

#[path = "sim/vms.rs"]
mod vms;

const CLUSTER: uuid::Uuid = uuid::Uuid::from_u128(0xd15c_bea7);
const SUPERBLOCK: [u8; 512] = [0x5b; 512];
/// Seeds that once failed (or exercise rare paths): always run, as `disk` runs (the kind they had
/// before the network model). Each found a bug or a wrong check while the simulator was brought
/// up on `Node`:
/// - 1795551551824258093: re-expiring the watchdog on every failed fence attempt kept pinging it;
/// - 1795582631825231529: a leave reported written but misdirected disarmed the watchdog;
/// - 1795573254199419082: a join refused after its records were visible disarmed the watchdog;
/// - 1795658723470992310: a daemon frozen mid-sweep judged an older incarnation on thawing;
/// - 1795646172166987744: the same, with the newer incarnation reusing the generation (it took
///   over a corrupt slot);
/// - 1795642558795443522: a restarted incarnation's join pre-empted a peer's dead declaration;
/// - 424252: a write completed but never read back (the sweep after it failed) was forgotten, and
///   the host fenced for a "foreign" write, its own, when its reads came back (FOREIGN; found it);
/// - 425608, 425657: the same with the next write misdirected (FOREIGN, with that part of the fix
///   reverted).
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
    424252,
    425608,
    425657,
];
/// Network seeds, run with the kind their seed draws. Each fails with the core bug (reverted) or
/// the mutation of src/core named (checked on the core as merged with main's ride-through rework),
/// and passes without:
/// - 424302 (lun): every sweep counted as a read although all its reads failed, so disk_age_ms
///   never reached the read gap and nobody could ride through (LUN; fixed); also the echo taken
///   at reception, or no echo bound at all (RIDE);
/// - 424246 (chaos): DISK_LOST followed only sweeps, not a write that failed or timed out
///   (PROTOCOL; fixed);
/// - 424294 (lun): our last completed write, never read back, was not ours; 425608, 425657
///   (disk, regression list): the same for an earlier one whose successor was misdirected: the
///   host fenced for a "foreign" write, its own, when its reads came back (FOREIGN; fixed);
/// - 424250 (partition): partition fences disabled, or the decision delay tripled; 424510
///   (partition): the decision delay doubled (PARTITION);
/// - 424644 (net-clean): no decision delay, or no mutual edges in the stability fingerprint;
///   424268 (net-clean): no participation window (a crashed peer's stale view keeps counting):
///   partition fences in fault-free runs;
/// - 424344 (lun): the echo taken at reception (RIDE); 424248 (lun): no echo bound, or no
///   evidence required from the members (RIDE);
/// - 424368 (lun): ride-through without its ride_max cap (RIDE);
/// - 424262 (lun): packets always claiming a lost disk (RIDE); a watchdog fed on packets (WATCHDOG);
/// - 424711 (lun: a host joins a free slot during the outage, cut off): no young-host rule: it
///   declares the riding hosts dead (SAFETY);
/// - 424242 (chaos): no replay guard, no destination check (REPLAY); a watchdog fed on packets
///   (WATCHDOG).
///
/// Not caught: heard peers declarable dead alone (the young-host rule and the members' vouches
/// cover every case generated; both off: 424711, SAFETY); a watchdog fed when a ride-through ends
/// (ride-through feeds never happen with the daemon's timing; caught with
/// SIM_WATCHDOG_IO_TIMEOUTS=3 SIM_KIND=lun).
///
/// Known design gaps the simulator shows (docs/SAFETY.md "Whole-LUN loss" to settle):
/// - hardware watchdogs defeated ride-through (closed): fed only after verified cycles, the
///   watchdog fired one io timeout after the last one, before the read gap let anyone ride
///   through (SIM_STRICT_LUN=1 was red at once, e.g. seed 1021). The network thread now feeds it
///   until the storage deadline and then on ride evidence (`Node::poll_net_feed`; the watchdog
///   still fires by ok + 0.75 T, or one io timeout past the ride deadline): in 10,000 runs, 0
///   hosts stopped early with watchdogs (was ~600), ~50,000 checked ride-through feeds;
/// - with hanging I/O, a host said its disk was lost only once an I/O of its timed out. Since
///   then a host also says so once no read has succeeded for the read gap, sweep still hanging;
///   a peer whose last verified write is a few intervals old (a slow cycle) can still reach its
///   storage deadline before that evidence arrives and fence (SIM_STRICT_LUN=1: seeds 905168,
///   77777797, as found);
/// - the end of an outage fenced whoever rode through (the first host whose reads worked again
///   said so, and the riders' evidence ended). Since then the evidence is each member's newest
///   *vouching* packet and a ride ends well once a write is verified again (unit test
///   `a_ride_through_survives_the_disk_coming_back`, tests/netns.rs
///   `whole_lun_loss_then_the_lun_comes_back_fences_nobody`); the simulator still counts some
///   riders fenced within 2 T after an outage it ended ("hosts fenced within 2 T after riding
///   through"), not investigated further;
/// - a restarted receiver accepts replays of packets its previous incarnation accepted (its
///   replay guard starts empty and the sender's generation on the disk is unchanged): a replaying
///   adversary can keep a dead peer "heard", delaying its dead declaration (liveness only; counted
///   as replays "accepted as new");
/// - a host taking over a corrupt slot restarts the generation count, so its packets repeat the
///   previous holder's (generation, sequence) range and peers drop them as replays on a network
///   where they heard the old holder, until its sequence passes the old one (liveness only; seed
///   1795619455533961636 once broke the RIDE check's bookkeeping, which now orders by send time).
///
/// And 1796602940664487292 (chaos): an intruder took slot 0, corrupted and unchanged for T, while
/// its holder rode through an outage of its disk path on a member's vouching (OWNERSHIP: two live
/// hosts on one slot); a slot is no longer taken while a member hears a host on it.
/// And 1796610684601464570 (chaos): a second bit flip restored a record the first had broken; the
/// ground truth took the restored (old) record for a landing and LIVENESS RULE saw a correct
/// dead declaration as early (a model fix: a restore is not a sign of life).
/// And 1796558208337237634 (net-clean, fence devices): a member's intent written 80 ms after a
/// crash restarted every reader's silence clock, so the clean-run bound from the crash did not
/// hold (a model fix: that check now skips slots a member wrote into).
/// And 1796633539897333998 (lun): a lying fence device's proof for a host riding through on a
/// member's vouching, the coordinator cut off from both; the ride has no cap since 1.7, so LIAR
/// now counts its bound from the ride's end (docs/SAFETY.md, "Fence devices").
const NET_REGRESSION_SEEDS: &[u64] = &[
    1796558208337237634,
    1796602940664487292,
    1796610684601464570,
    1796633539897333998,
    424302,
    424246,
    424294,
    424250,
    424510,
    424644,
    424268,
    424344,
    424248,
    424368,
    424262,
    424711,
    424242,
    1795619455533961636,
];

// ---------------------------------------------------------------------------------------------
// Randomness and clocks

/// The simulator's randomness: splitmix64 (`rand_xoshiro::SplitMix64`, Vigna's reference algorithm)
/// with the seed as its state. Recorded seeds replay only while this stream stays the same:
/// `rng_stream_is_the_recorded_splitmix64` pins it to outputs of the hand-written splitmix64 this
/// file used before the crate.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(SplitMix64::seed_from_u64(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
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

/// The first 1000 outputs for several seeds, as the hand-written splitmix64 this file used until
/// the switch to `rand_xoshiro` gave them (first, 1000th, and an order-sensitive fold of all 1000;
/// the switch's commit compared the two generators output by output). A change here changes what
/// every recorded seed replays.
#[test]
fn rng_stream_is_the_recorded_splitmix64() {
    let recorded: [(u64, u64, u64, u64); 7] = [
        (0x0, 0xe220a8397b1dcdaf, 0x14e0abb2bfcf7c3e, 0xe0cfe0dcd1e7db95),
        (0x1, 0x910a2dec89025cc1, 0xe71894b1b5034fb7, 0xa8a79351a896c3f0),
        (0x7, 0x63cbe1e459320dd7, 0x9793fb91046fffee, 0x5f65c5e48fa372fa),
        (0x67932, 0xc8599235b61352eb, 0xe7a9508f330e431c, 0xc0b7263d83e36161),
        (0x18eb526196e1d1a4, 0x62e181f3a4221495, 0x050dfe4cae829f50, 0x88b7bbbbdfb06353),
        (0xffffffffffffffff, 0xe4d971771b652c20, 0x82bd385046d33fbf, 0x9a0260016abdc654),
        (0x5eed0000d15ac795, 0x3f97b6807cbcb1e1, 0x7c5780d2805c6b88, 0x605207f08a6b904b),
    ];
    for (seed, first, last, fold) in recorded {
        let mut rng = Rng::new(seed);
        let got_first = rng.next();
        let (mut got_last, mut got_fold) = (got_first, got_first);
        for _ in 1..1000 {
            got_last = rng.next();
            got_fold = (got_fold ^ got_last).wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!((got_first, got_last, got_fold), (first, last, fold), "seed {seed:#x}");
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
    /// Takes this long (beyond any timeout); a write lands at `land` (if ever). Its completion
    /// reaches the engine at `settle` (no landing after it).
    Hang { land: Option<u64>, settle: u64 },
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

/// What a run exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No network: the simulator as it was before network heartbeats (30 % fault-free).
    Disk,
    /// Fault-free disk; transient network faults only (loss <= 30 %, delay and jitter well below
    /// the network timeout, duplicates, reordering, replays): nobody may fence.
    NetClean,
    /// Healthy disk; network cuts changing over time, crashes, freezes: the PARTITION invariant.
    Partition,
    /// A whole-LUN outage for every host with the network intact, plus at most one further failure.
    Lun,
    /// Disk faults, network faults, outages, the adversary: everything at once.
    Chaos,
}

impl Kind {
    const ALL: [Kind; 5] = [Kind::Disk, Kind::NetClean, Kind::Partition, Kind::Lun, Kind::Chaos];
    fn name(self) -> &'static str {
        match self {
            Kind::Disk => "disk",
            Kind::NetClean => "net-clean",
            Kind::Partition => "partition",
            Kind::Lun => "lun",
            Kind::Chaos => "chaos",
        }
    }
    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

// ---------------------------------------------------------------------------------------------
// The network

/// One directed link of one network.
#[derive(Debug, Clone, Copy, Default)]
struct LinkParams {
    loss: f64,
    delay_us: u64,
    jitter_us: u64,
    dup: f64,
}

#[derive(Debug, Clone)]
enum Cut {
    /// Every link to and from this machine.
    Isolate(usize),
    /// Links between machines of different groups (a machine not listed is in group 0).
    Split(Vec<u8>),
    /// One direction only: from -> to.
    OneWay(usize, usize),
    /// Every link from this machine (it still hears the others): asymmetric isolation.
    Mute(usize),
    /// Both directions between two machines (non-transitive when both still reach a third).
    Pair(usize, usize),
}

impl Cut {
    fn cuts(&self, from: usize, to: usize) -> bool {
        match self {
            Cut::Isolate(m) => from == *m || to == *m,
            Cut::Split(g) => g.get(from).copied().unwrap_or(0) != g.get(to).copied().unwrap_or(0),
            Cut::OneWay(a, b) => from == *a && to == *b,
            Cut::Mute(m) => from == *m,
            Cut::Pair(a, b) => (from == *a && to == *b) || (from == *b && to == *a),
        }
    }
}

#[derive(Debug, Clone)]
struct CutWin {
    start: u64,
    end: u64,
    /// Bit n: network n is cut.
    nets: u8,
    cut: Cut,
}

/// The further failure of a whole-LUN outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LunFailure {
    None,
    Crash,
    Isolate,
    Split,
    OneWay,
    /// The disk comes back for one host before the others.
    DiskBackFirst,
    /// A new host joins a free slot during the outage (its path to the disk works).
    Join,
    Freeze,
}

#[derive(Debug, Clone, Copy)]
struct Lun {
    start: u64,
    end: u64,
    failure: LunFailure,
    mode: Mode,
}

/// How the adversary re-injects a recorded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplayKind {
    /// To the incarnation that accepted it, same network: must be dropped (Replay, StaleGeneration).
    Same,
    /// To a host of another slot: must be dropped (WrongDestination).
    OtherHost,
    /// To the same incarnation on its other network (chaos runs): a relay; accepted only if new
    /// on that network.
    OtherNetwork,
    /// To a later incarnation of the receiving machine (chaos runs): its replay guard is fresh.
    NewIncarnation,
}

/// A delivered packet the adversary recorded.
#[derive(Debug, Clone, Copy)]
struct Captured {
    pkt: Packet,
    net: u8,
    machine: usize,
    inc: usize,
    /// True time it was sent.
    sent: u64,
    /// True start of the sender's last sweep that read a slot, when it sent it.
    read_at: Option<u64>,
}

/// The newest packet an incarnation accepted from one slot (ground truth for ride-through).
#[derive(Debug, Clone, Copy)]
struct Heard {
    gs: (u64, u64),
    /// True times.
    sent: u64,
    received: u64,
    /// Says its disk is lost (DISK_LOST, disk age at least the read gap).
    lost: bool,
    /// Ground truth: the sender had read no slot for the read gap when it sent it.
    truly_lost: bool,
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
    /// A fence intent or proof written into another slot.
    PeerWrite(Result<u64, IoFailure>),
}

/// A machine's fence device, as the simulator plays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Device {
    Truthful,
    Fails,
    Hangs,
    /// Answers failure, powers the machine off later.
    Late,
    /// Answers `off`, powers nothing off.
    Liar,
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
    /// Token of the current I/O completion (stale events are ignored).
    token: u64,
    /// Token and time of the current wake-up (stale ones are ignored).
    wake_token: u64,
    wake_sched: Option<u64>,
    beat_token: u64,
    beat_sched: Option<u64>,
    frozen_until: u64,
    was_frozen: bool,
    fence_failed: bool,
    fencer_done: bool,
    /// When each of its timed-out writes (own and peer records) comes back to its engine: it
    /// lands, if ever, before then.
    writes_out: Vec<u64>,
    /// The fence interlock, the daemon's own code (`core::interlock`): fencing from the first
    /// fence attempt on (no start begins, nothing is published); starts in flight.
    interlock: diskbeat::core::interlock::Interlock,
    /// A fence attempt waiting for the VM start in flight (the interlock): when it acts, its
    /// outcome, and whether the backup deadline thread made it.
    fence_go: Option<(u64, FenceOutcome, bool)>,
    /// The daemon died with its host running (VM runs): restarted by `VmEv::DaemonCrash` only.
    daemon_crashed: bool,
    /// The boot this daemon runs in: kept by a restart after a daemon crash (the host ran on).
    boot_id: uuid::Uuid,
    /// The previous daemon of its slot ran on this boot: a start it asked for may still land.
    starts_may_land: bool,
    /// Its machine lost power (crash, watchdog reset, reboot fence) while it ran or after: the
    /// next daemon there runs on a new boot.
    power_cycled: bool,
    backup_deadline: Option<u64>,
    backup_result: Option<FenceOutcome>,
    stop: bool,
    stop_sent: bool,
    wd_token: u64,
    /// `last_ok_ms` at the last watchdog feed while live.
    fed_ok: Option<u64>,
    /// Last true time this observer declared each slot dead.
    dead_seen: Vec<Option<u64>>,
    /// Last completion of a `joining` write (true time): the node is "young" for a while after.
    joined_at: Option<u64>,
    /// Last isolation reachability fed.
    iso_fed: Option<u64>,
    /// Per sender slot and network: the highest (generation, sequence) accepted.
    accepted: Vec<[Option<(u64, u64)>; 2]>,
    /// Per sender slot: the newest packet accepted, by (generation, sequence).
    newest: Vec<Option<Heard>>,
    /// Per sender slot: the newest accepted packet that vouched (said its disk is lost).
    vouched: Vec<Option<Heard>>,
    /// Live when the whole-LUN outage began.
    lun_live: bool,
    /// True start of the last sweep that read a slot.
    read_ok_at: Option<u64>,
    /// What the last sweep read in our own slot (None: the read failed).
    own_read: Option<Sector>,
    /// The last disk I/O of the heartbeat loop that completed (write, or sweep of our own slot)
    /// failed or timed out.
    io_failed: bool,
    rode: bool,
}

impl Inc {
    fn gone_at(&self) -> Option<u64> {
        [self.crashed, self.fenced, self.reset, self.stopped].into_iter().flatten().min()
    }
    fn frozen(&self, now: u64) -> bool {
        now < self.frozen_until
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
    /// Heartbeat networks (0: disk only).
    networks: u8,
    weight: u32,
    isolation: bool,
    /// Extra loss on every link of this machine (a bad NIC).
    loss: f64,
    /// Its fence device, if the pool has one for it.
    device: Option<Device>,
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
    Thaw(usize),
    MailboxReq {
        slot: u32,
        command: Command,
    },
    Corrupt(u32),
    WipeSuperblock,
    Intruder(u32),
    /// Clean runs: every live peer must have declared the crashed incarnation dead. `extended`:
    /// the second check, for observers that joined recently (they wait ride_max longer).
    CheckDetected {
        crashed: usize,
        at: u64,
        extended: bool,
    },
    /// Clean runs: an incarnation must be live by now.
    CheckJoined(usize),
    /// A network beat is due.
    Beat {
        inc: usize,
        token: u64,
    },
    /// A packet arrives at machine `to` (`to_inc`: a replay aimed at one incarnation).
    Deliver {
        from: usize,
        to: usize,
        to_inc: Option<usize>,
        net: u8,
        pkt: Box<Packet>,
        sent: u64,
        read_at: Option<u64>,
        replay: Option<ReplayKind>,
    },
    /// The adversary re-injects a recorded packet.
    Replay,
    /// The adversary sends a forged packet to a machine.
    Forge(usize),
    /// A cut or an isolation window starts or ends.
    NetChange(&'static str),
    PartitionCheck,
    LunStart,
    LunEnd,
    /// VMs and failover (`vms.rs`).
    Vm(vms::VmEv),
    /// A fence device answers the node that called it.
    DeviceAnswer {
        inc: usize,
        slot: u32,
        host_uuid: uuid::Uuid,
        generation: u64,
        outcome: DeviceOutcome,
    },
    /// A fence device powers a machine off.
    PowerOff(usize),
    /// LIAR: a host a lying device reported off must have stopped running VMs by now (checked
    /// again 2 T later while it rides through a whole-LUN outage).
    LiarCheck {
        inc: usize,
        proven_at: u64,
    },
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    runs: u64,
    clean_runs: u64,
    kinds: [u64; 5],
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
    /// Daemons that refused to start: a previous daemon of the same boot died holding the slot
    /// with a watchdog armed (`core::breaks_watchdog_promise`).
    promise_refusals: u64,
    self_fences: u64,
    late_landings: u64,
    torn_landings: u64,
    misdirected: u64,
    went_live: u64,
    refusals: u64,
    /// Smallest (declaration - holder gone) seen, µs.
    min_margin_us: Option<u64>,
    sim_us: u64,
    beats: u64,
    packets: u64,
    lost: u64,
    cut: u64,
    duplicates: u64,
    delivered: u64,
    accepted: u64,
    replays: u64,
    /// Replays accepted as new: on the other network, or by a restarted receiver.
    replays_accepted: u64,
    forgeries: u64,
    cuts: u64,
    partition_fences: u64,
    partition_checks: u64,
    /// Partition checks while some running network-enabled hosts did not hear each other.
    partitioned_checks: u64,
    lun_outages: u64,
    ride_throughs: u64,
    ride_feeds: u64,
    /// Watchdog feeds by the network thread (`Node::poll_net_feed`).
    net_feeds: u64,
    /// Hosts that rode through and fenced within 2 T after the disk came back.
    fenced_after_lun: u64,
    /// Hosts stopped during a pure whole-LUN outage before the ride-through bound because some
    /// host's storage deadline came before any member could vouch (the known design gap).
    lun_early_stops: u64,
    /// Runs with fence devices; device calls; confirmed power-offs; calls for a host still
    /// running (frozen or with a failing path); proofs a lying device made for a running host.
    device_runs: u64,
    device_calls: u64,
    device_offs: u64,
    device_running_targets: u64,
    device_lies_proven: u64,
    /// VMs that ran twice after a lying device's proof (bounded by LIAR, not TWICE).
    twice_after_liar: u64,
    /// Lying proofs the running host's own later write overwrote (it never saw them).
    liar_overwritten: u64,
    /// Hosts that fenced or were refused for a member's intent or proof in their slot.
    device_pills: u64,
    /// Protected VMs overdue for a restart in runs with fence devices (counted, not failed).
    device_overdue: u64,
    vm: vms::VmStats,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.runs += o.runs;
        self.clean_runs += o.clean_runs;
        for k in 0..self.kinds.len() {
            self.kinds[k] += o.kinds[k];
        }
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
        self.promise_refusals += o.promise_refusals;
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
        self.beats += o.beats;
        self.packets += o.packets;
        self.lost += o.lost;
        self.cut += o.cut;
        self.duplicates += o.duplicates;
        self.delivered += o.delivered;
        self.accepted += o.accepted;
        self.replays += o.replays;
        self.replays_accepted += o.replays_accepted;
        self.forgeries += o.forgeries;
        self.cuts += o.cuts;
        self.partition_fences += o.partition_fences;
        self.partition_checks += o.partition_checks;
        self.partitioned_checks += o.partitioned_checks;
        self.lun_outages += o.lun_outages;
        self.ride_throughs += o.ride_throughs;
        self.ride_feeds += o.ride_feeds;
        self.net_feeds += o.net_feeds;
        self.fenced_after_lun += o.fenced_after_lun;
        self.lun_early_stops += o.lun_early_stops;
        self.device_runs += o.device_runs;
        self.device_calls += o.device_calls;
        self.device_offs += o.device_offs;
        self.device_running_targets += o.device_running_targets;
        self.device_lies_proven += o.device_lies_proven;
        self.twice_after_liar += o.twice_after_liar;
        self.liar_overwritten += o.liar_overwritten;
        self.device_pills += o.device_pills;
        self.device_overdue += o.device_overdue;
        self.vm.add(&o.vm);
    }
}

struct Sim {
    seed: u64,
    kind: Kind,
    /// The kind was forced (SIM_KIND): the replay command must say so.
    forced: bool,
    rng: Rng,
    /// Everything about the network draws from this stream (a `disk` run never touches it).
    nrng: Rng,
    timing: Timing,
    slot_count: u32,
    clean: bool,
    duration: u64,
    now: u64,
    seq: u64,
    /// (time, sequence: the order of events at one time, payload index).
    queue: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// Event payloads, and the indexes free for reuse (a hash map cost more than the network).
    payloads: Vec<Option<Ev>>,
    free: Vec<u32>,
    records: Vec<History>,
    mailboxes: Vec<History>,
    superblock: History,
    /// True times of recent landings in each record slot (see `put_record`).
    landings: Vec<VecDeque<u64>>,
    /// Per slot: the last landing of a member's fence intent or proof (`u64::MAX`: its machine was
    /// powered off by a device, and its hung writes may land late, over the proof). Such writes
    /// bury landings no reader saw: the ground-truth silence checks skip that slot (a gap).
    intent_landed: Vec<Option<u64>>,
    keep_us: u64,
    windows: Vec<Window>,
    fence_fail_windows: Vec<(usize, u64, u64)>,
    late_backup: bool,
    machines: Vec<Machine>,
    /// Machines configured for each slot (the address a packet for that slot goes to).
    slot_machines: Vec<Vec<usize>>,
    incs: Vec<Inc>,
    view: View,
    /// True start of the sweep whose results are being handed to a node (for check_dead).
    sweep_started: Option<u64>,
    next_request: u64,
    next_uuid: u128,
    // --- network
    nets_default: u8,
    mixed_nets: bool,
    weights: bool,
    isolation_share: f64,
    /// No host has a hardware watchdog (half the `lun` runs).
    no_watchdogs: bool,
    /// SIM_STRICT_LUN=1: the LUN invariant holds with hardware watchdogs too.
    strict_lun: bool,
    /// RESTART fails the run (the default); SIM_STRICT_RESTART=0 only counts violations (for exploring).
    strict_restart: bool,
    /// The hardware watchdog fires this long after its last feed: one io timeout, as the daemon
    /// sets it (at most: whole seconds, rounded down). SIM_WATCHDOG_IO_TIMEOUTS=n (what-if, not
    /// the daemon's behaviour): n io timeouts, so that ride-through watchdog feeds happen at all
    /// (see the design gaps at `NET_REGRESSION_SEEDS`) and their checks can be exercised: use it
    /// with SIM_KIND=lun (10,000 runs: ~175,000 checked feeds). Elsewhere it breaks what the
    /// WatchdogExpired proof assumes, and VM SAFETY fails as it should.
    watchdog_us: u64,
    link: LinkParams,
    cuts: Vec<CutWin>,
    /// (machine, start, end): its isolation addresses do not answer.
    iso_down: Vec<(usize, u64, u64)>,
    adversary: bool,
    cross_replays: bool,
    captured: Vec<Captured>,
    /// Last change of the ground truth the partition rule depends on (see `partition_window`).
    part_epoch: u64,
    check_partition: bool,
    lun: Option<Lun>,
    stats: Stats,
    trace: u8,
    /// VMs, drivers, extents and failover threads (`SIM_VMS`); `None`: the heartbeat alone.
    vmw: Option<Box<vms::VmWorld>>,
}

type Res = Result<(), String>;

impl Sim {
    fn new(seed: u64, trace: u8, forced: Option<Kind>, with_vms: bool) -> Sim {
        let mut rng = Rng::new(seed ^ 0x5eed_0000_d15c_bea7);
        let mut nrng = Rng::new(seed ^ 0x0e70_0000_5eed_0001);
        let kind = forced.unwrap_or_else(|| match nrng.range(0, 99) {
            0..=34 => Kind::Disk,
            35..=54 => Kind::NetClean,
            55..=74 => Kind::Partition,
            75..=86 => Kind::Lun,
            _ => Kind::Chaos,
        });
        let base = rng.pick(&[500u32, 800, 1000, 2000, 4000, 40_000]);
        let timing = Timing::from_base(base).expect("valid base");
        let big = rng.chance(0.05);
        let mut hosts = if big { rng.range(8, 24) as usize } else { rng.range(2, 8) as usize };
        let mut slot_count =
            if big { rng.range(hosts as u64, 64) as u32 } else { hosts as u32 + rng.range(0, 2) as u32 };
        let clean = rng.chance(0.3);
        let host_dead = u64::from(timing.host_dead_ms) * 1000;
        let mut duration = host_dead * rng.range(12, 30);
        let clean = match kind {
            Kind::Disk => clean,
            Kind::NetClean => true,
            _ => false,
        };
        // Packets cost (hosts x peers x networks, 20 beats per T): network runs are mostly small
        // pools, and a few larger ones with one network.
        let mut nets_default = nrng.pick(&[1u8, 2, 2]);
        if kind != Kind::Disk {
            if big && nrng.chance(0.2) && kind != Kind::Lun {
                hosts = hosts.min(16);
                slot_count = slot_count.max(hosts as u32);
                nets_default = 1;
                duration = host_dead * 10;
            } else {
                hosts = nrng.range(2, if kind == Kind::Lun { 6 } else { 7 }) as usize;
                slot_count = hosts as u32 + nrng.range(0, 2) as u32;
                duration = host_dead
                    * match kind {
                        Kind::Partition => nrng.range(12, 25),
                        _ => nrng.range(8, 18),
                    };
            }
            if kind == Kind::Lun {
                // A free slot for a host joining during the outage.
                slot_count = hosts as u32 + 1;
            }
        }
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
        let networked = kind != Kind::Disk;
        let mixed_nets = networked && nrng.chance(0.15);
        let weights = networked && nrng.chance(0.3);
        let isolation_share =
            if matches!(kind, Kind::NetClean | Kind::Partition | Kind::Chaos) && nrng.chance(0.4) {
                0.6
            } else {
                0.0
            };
        let nrng_no_watchdogs = nrng.chance(0.5);
        let mut sim = Sim {
            seed,
            kind,
            forced: forced.is_some(),
            rng,
            nrng,
            timing,
            slot_count,
            clean,
            duration,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            payloads: Vec::new(),
            free: Vec::new(),
            records,
            mailboxes,
            superblock: History::new(SUPERBLOCK),
            landings: vec![VecDeque::from([0]); slot_count as usize],
            intent_landed: vec![None; slot_count as usize],
            keep_us,
            windows: Vec::new(),
            fence_fail_windows: Vec::new(),
            late_backup: false,
            machines: Vec::new(),
            slot_machines: vec![Vec::new(); slot_count as usize],
            incs: Vec::new(),
            view,
            sweep_started: None,
            next_request: 1000,
            next_uuid: 1,
            nets_default: if networked { nets_default } else { 0 },
            mixed_nets,
            weights,
            isolation_share,
            no_watchdogs: kind == Kind::Lun && nrng_no_watchdogs,
            strict_lun: env_u64("SIM_STRICT_LUN").is_some_and(|v| v != 0),
            strict_restart: env_u64("SIM_STRICT_RESTART").is_none_or(|v| v != 0),
            watchdog_us: u64::from(timing.io_timeout_ms)
                * 1000
                * env_u64("SIM_WATCHDOG_IO_TIMEOUTS").unwrap_or(1),
            link: LinkParams::default(),
            cuts: Vec::new(),
            iso_down: Vec::new(),
            adversary: false,
            cross_replays: false,
            captured: Vec::new(),
            part_epoch: 0,
            check_partition: matches!(kind, Kind::Partition | Kind::NetClean),
            lun: None,
            stats: Stats { runs: 1, clean_runs: u64::from(clean), ..Stats::default() },
            trace,
            vmw: None,
        };
        sim.stats.kinds[Kind::ALL.iter().position(|&k| k == kind).expect("a kind")] = 1;
        for m in 0..hosts {
            sim.add_machine(m as u32, false);
            let at = sim.rng.range(0, u64::from(timing.interval_ms) * 1000 * 3);
            sim.schedule(at, Ev::Restart(m));
        }
        // Fence devices, from a stream of their own: runs without them are the runs they were.
        let mut drng = Rng::new(seed ^ 0xde71_ce5e_ed00_0001);
        if drng.chance(1.0 / 3.0) {
            sim.stats.device_runs = 1;
            for m in 0..hosts {
                if drng.chance(0.85) {
                    let d = [
                        Device::Truthful,
                        Device::Truthful,
                        Device::Truthful,
                        Device::Truthful,
                        Device::Fails,
                        Device::Hangs,
                        Device::Late,
                        Device::Liar,
                    ];
                    sim.machines[m].device = Some(d[drng.range(0, d.len() as u64 - 1) as usize]);
                }
            }
        }
        match kind {
            Kind::Disk => sim.plan_faults(hosts),
            Kind::NetClean => {
                sim.plan_faults(hosts);
                sim.plan_net(hosts);
            }
            Kind::Partition => {
                sim.plan_partition_faults(hosts);
                sim.plan_net(hosts);
            }
            Kind::Lun => {
                sim.plan_lun(hosts, true);
                sim.plan_net(hosts);
            }
            Kind::Chaos => {
                sim.plan_faults(hosts);
                if sim.nrng.chance(0.3) {
                    sim.plan_lun(hosts, false);
                }
                sim.plan_net(hosts);
            }
        }
        if sim.check_partition {
            // The first check: the pool formed.
            let at = sim.partition_window();
            sim.schedule(at, Ev::PartitionCheck);
        }
        if with_vms {
            sim.vms_plan();
            // A quiet tail (faults were planned within the run's first duration): every restart
            // that is due gets its chance.
            sim.duration += 6 * host_dead;
        }
        sim
    }

    fn add_machine(&mut self, slot: u32, intruder: bool) -> usize {
        let clock = Clock::random(&mut self.rng);
        let watchdog = self.rng.chance(0.5) && !self.no_watchdogs;
        let fence = self.rng.pick(&[FenceKind::Reboot, FenceKind::Exec, FenceKind::Exec, FenceKind::LogOnly]);
        let mut networks = self.nets_default;
        if self.mixed_nets && self.nrng.chance(0.3) {
            // A pool being reconfigured: some hosts on one network, some on two, some disk only
            // (never in `lun` runs: a disk-only member rules ride-through out by design).
            networks =
                if self.kind == Kind::Lun { self.nrng.range(1, 2) } else { self.nrng.range(0, 2) } as u8;
        }
        let weight = if self.weights { self.nrng.range(1, 5) as u32 } else { 1 };
        let isolation = networks > 0 && self.nrng.chance(self.isolation_share);
        self.machines.push(Machine {
            slot,
            clock,
            incs: Vec::new(),
            intruder,
            watchdog,
            fence,
            vms: None,
            networks,
            weight,
            isolation,
            loss: 0.0,
            device: None,
        });
        let m = self.machines.len() - 1;
        self.slot_machines[slot as usize].push(m);
        m
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

    /// `partition` runs: the disk stays healthy; hosts crash, leave, freeze, fail to fence.
    fn plan_partition_faults(&mut self, hosts: usize) {
        let d = self.duration;
        let t = self.timing;
        let host_dead = self.t_us(t.host_dead_ms);
        let iv = self.t_us(t.interval_ms);
        for _ in 0..self.nrng.range(0, 2) {
            let m = self.nrng.range(0, hosts as u64 - 1) as usize;
            let at = self.nrng.range(host_dead, d * 3 / 4);
            self.schedule(at, Ev::Crash(m));
            self.stats.faults += 1;
        }
        if self.nrng.chance(0.3) {
            let m = self.nrng.range(0, hosts as u64 - 1) as usize;
            let at = self.nrng.range(host_dead, d * 3 / 4);
            self.schedule(at, Ev::Leave(m));
        }
        for m in 0..hosts {
            if self.nrng.chance(0.1) {
                let at = self.nrng.range(0, d);
                let len = self.nrng.range(iv, host_dead * 2);
                self.schedule(at, Ev::Freeze { machine: m, len });
                self.stats.faults += 1;
            }
            if self.nrng.chance(0.15) {
                let start = self.nrng.range(0, d);
                let len = self.nrng.range(iv, host_dead * 2);
                self.fence_fail_windows.push((m, start, start + len));
                self.stats.faults += 1;
            }
        }
    }

    /// A whole-LUN outage for every host (the network stays up), and maybe one further failure.
    fn plan_lun(&mut self, hosts: usize, own_run: bool) {
        let t = self.timing;
        let host_dead = self.t_us(t.host_dead_ms);
        let iv = self.t_us(t.interval_ms);
        let start = if own_run {
            self.nrng.range(3 * host_dead, 5 * host_dead)
        } else {
            self.nrng.range(2 * host_dead, self.duration * 2 / 3)
        };
        let mut len = self.nrng.range(host_dead / 2, host_dead * 7 / 2);
        // Rides have no time limit: outages far longer than the old 2 T cap (8 to 14 T), from the
        // same draw, so a replayed seed keeps its scenario.
        if len > 2 * host_dead {
            len *= 4;
        }
        let end = start + len;
        let failure = self.nrng.pick(&[
            LunFailure::None,
            LunFailure::None,
            LunFailure::None,
            LunFailure::Crash,
            LunFailure::Isolate,
            LunFailure::Split,
            LunFailure::OneWay,
            LunFailure::DiskBackFirst,
            LunFailure::Join,
            LunFailure::Freeze,
        ]);
        let mode = self.nrng.pick(&[Mode::Fail, Mode::Fail, Mode::Hang, Mode::ReadFail]);
        let mut ends = vec![end; hosts];
        let when = start + self.nrng.range(0, 2 * host_dead);
        let cut_len = self.nrng.range(host_dead / 2, 3 * host_dead);
        let m = self.nrng.range(0, hosts as u64 - 1) as usize;
        let other = (m + 1 + self.nrng.range(0, hosts as u64 - 2) as usize) % hosts;
        match failure {
            LunFailure::None => {}
            LunFailure::Crash => {
                let at = start + self.nrng.range(0, 5 * host_dead / 2);
                self.schedule(at, Ev::Crash(m));
            }
            LunFailure::Isolate => self.add_cut(when, cut_len, 0b11, Cut::Isolate(m)),
            LunFailure::Split => {
                let g = self.random_groups();
                self.add_cut(when, cut_len, 0b11, Cut::Split(g))
            }
            LunFailure::OneWay => self.add_cut(when, cut_len, 0b11, Cut::OneWay(m, other)),
            LunFailure::DiskBackFirst => {
                ends[m] = start + self.nrng.range(host_dead / 4, len);
                if self.nrng.chance(0.5) {
                    // Its packets saying its disk works again do not get through.
                    self.add_cut(ends[m], 2 * host_dead, 0b11, Cut::Mute(m));
                }
            }
            LunFailure::Join => {
                let free = (0..self.slot_count).find(|&s| self.slot_machines[s as usize].is_empty());
                if let Some(slot) = free {
                    let n = self.add_machine(slot, false);
                    self.schedule(when, Ev::Restart(n));
                    // Heard by the riding hosts (they stop riding), or not by one of them, by none,
                    // or hearing them while they do not hear it: then only its young-host rule
                    // keeps it from declaring them dead while they ride through.
                    let cut = match self.nrng.range(0, 3) {
                        0 => None,
                        1 => Some(Cut::Pair(n, m)),
                        2 => Some(Cut::Isolate(n)),
                        _ => Some(Cut::Mute(n)),
                    };
                    if let Some(cut) = cut {
                        self.add_cut(start, len + 2 * host_dead, 0b11, cut);
                    }
                }
            }
            LunFailure::Freeze => {
                let flen = self.nrng.range(iv, 2 * host_dead);
                self.schedule(when, Ev::Freeze { machine: m, len: flen });
            }
        }
        for (m, &end) in ends.iter().enumerate() {
            self.windows.push(Window { machine: Some(m), start, end, mode });
        }
        self.stats.faults += 1;
        self.lun = Some(Lun { start, end, failure, mode });
        if own_run {
            self.duration = end + 4 * host_dead;
        }
        self.schedule(start, Ev::LunStart);
        self.schedule(end, Ev::LunEnd);
    }

    /// Groups for a split: 2 or 3 (3+2, 2+2+1...), never all in one.
    fn random_groups(&mut self) -> Vec<u8> {
        let n = self.machines.len();
        let groups = self.nrng.range(2, 3.min(n as u64));
        let mut g: Vec<u8> = (0..n).map(|_| self.nrng.range(0, groups - 1) as u8).collect();
        if g.iter().all(|&x| x == g[0]) {
            g[0] = (g[0] + 1) % groups as u8;
        }
        g
    }

    fn add_cut(&mut self, start: u64, len: u64, nets: u8, cut: Cut) {
        self.cuts.push(CutWin { start, end: start + len, nets, cut });
        self.stats.cuts += 1;
        self.schedule(start, Ev::NetChange("cut starts"));
        self.schedule(start + len, Ev::NetChange("cut heals"));
    }

    /// Link parameters, isolation reachability, cuts and the adversary for network runs.
    fn plan_net(&mut self, hosts: usize) {
        let t = self.timing;
        let iv = self.t_us(t.interval_ms);
        let host_dead = self.t_us(t.host_dead_ms);
        let d = self.duration;
        let n = &mut self.nrng;
        self.link = match self.kind {
            Kind::Disk => return,
            // Transient faults: delay + jitter at most 3 intervals (0.3 of the network timeout).
            Kind::NetClean | Kind::Chaos => LinkParams {
                loss: n.pick(&[0.0, 0.0, 0.01, 0.05, 0.1, 0.2, 0.3]),
                delay_us: n.range(50, iv),
                jitter_us: n.range(0, 2 * iv),
                dup: n.pick(&[0.0, 0.0, 0.01, 0.1]),
            },
            // Links that are not cut stay reliable: a view that flaps keeps the decision delay
            // from ever elapsing (availability, not what this invariant is about).
            Kind::Partition => LinkParams {
                loss: n.pick(&[0.0, 0.0, 0.01, 0.05]),
                delay_us: n.range(50, iv / 2),
                jitter_us: n.range(0, iv),
                dup: n.pick(&[0.0, 0.01, 0.05]),
            },
            Kind::Lun => LinkParams {
                loss: 0.0,
                delay_us: n.range(50, iv / 4),
                jitter_us: n.range(0, iv / 4),
                dup: n.pick(&[0.0, 0.02]),
            },
        };
        if matches!(self.kind, Kind::NetClean | Kind::Chaos) {
            for m in 0..self.machines.len() {
                if self.nrng.chance(0.1) {
                    // A bad NIC: still at most 30 % loss.
                    self.machines[m].loss = self.nrng.range(0, 30) as f64 / 100.0;
                }
            }
        }
        for m in 0..self.machines.len() {
            if !self.machines[m].isolation {
                continue;
            }
            for _ in 0..self.nrng.range(0, 2) {
                let start = self.nrng.range(0, d);
                let len = self.nrng.range(iv, 3 * host_dead);
                self.iso_down.push((m, start, start + len));
                self.schedule(start, Ev::NetChange("isolation addresses unreachable"));
                self.schedule(start + len, Ev::NetChange("isolation addresses reachable"));
            }
        }
        let cuts = match self.kind {
            Kind::Partition => self.nrng.range(1, 4),
            Kind::Chaos => self.nrng.range(0, 3),
            _ => 0,
        };
        for _ in 0..cuts {
            let start = self.nrng.range(2 * host_dead, d * 85 / 100);
            // Some heal before the rule may act, most last long enough to be decided.
            let len = self.nrng.range(host_dead / 2, 8 * host_dead);
            let nets = if self.nrng.chance(0.7) { 0b11 } else { 1 << self.nrng.range(0, 1) };
            let machines = self.machines.len() as u64;
            let a = self.nrng.range(0, machines - 1) as usize;
            let b = (a + 1 + self.nrng.range(0, machines - 2) as usize) % machines as usize;
            let cut = match self.nrng.range(0, 4) {
                0 => Cut::Isolate(a),
                1 => Cut::Split(self.random_groups()),
                2 => Cut::OneWay(a, b),
                3 => Cut::Mute(a),
                _ => Cut::Pair(a, b),
            };
            self.add_cut(start, len, nets, cut);
        }
        self.adversary = self.nrng.chance(0.6);
        self.cross_replays = self.kind == Kind::Chaos;
        if self.adversary {
            for _ in 0..self.nrng.range(5, 40) {
                let at = self.nrng.range(0, d);
                self.schedule(at, Ev::Replay);
            }
            for _ in 0..self.nrng.range(0, 4) {
                let at = self.nrng.range(0, d);
                let m = self.nrng.range(0, hosts as u64 - 1) as usize;
                self.schedule(at, Ev::Forge(m));
            }
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let k = match self.free.pop() {
            Some(k) => {
                self.payloads[k as usize] = Some(ev);
                k
            }
            None => {
                self.payloads.push(Some(ev));
                self.payloads.len() as u32 - 1
            }
        };
        self.queue.push(Reverse((at, self.seq, k)));
    }

    fn note(&mut self, f: impl FnOnce() -> String) {
        if self.trace > 0 {
            println!("{:>12} {}", self.now, f());
        }
    }

    fn fail(&self, what: String) -> Res {
        let mut kind = if self.forced { format!(" SIM_KIND={}", self.kind.name()) } else { String::new() };
        if self.vmw.is_some() {
            kind.push_str(" SIM_VMS=1");
        }
        Err(format!(
            "seed {} ({} run): {what}\nreplay: SIM_SEED={}{kind} SIM_TRACE=1 cargo test --test sim replay -- \
             --nocapture",
            self.seed,
            self.kind.name(),
            self.seed
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
        IoResult::Hang { land, settle: t + lat }
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
                    // A write that never lands fails once the storage answers again.
                    IoResult::Hang { land, settle: land.unwrap_or(end + 5_000) }
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

    // --- network model -----------------------------------------------------------------------

    /// Ground truth: packets from machine `from` reach machine `to` on network `net` at `t` (both
    /// have that network, and no cut is in the way; loss aside).
    fn link_up(&self, from: usize, to: usize, net: u8, t: u64) -> bool {
        if net >= self.machines[from].networks.min(self.machines[to].networks) {
            return false;
        }
        !self
            .cuts
            .iter()
            .any(|c| c.start <= t && t < c.end && c.nets & (1 << net) != 0 && c.cut.cuts(from, to))
    }

    /// Ground truth: `to` hears `from` on some network.
    fn hears(&self, to: usize, from: usize, t: u64) -> bool {
        (0..2).any(|n| self.link_up(from, to, n, t))
    }

    /// Ground truth: machine `m` reaches one of its isolation addresses.
    fn reachable(&self, m: usize, t: u64) -> bool {
        let nets = self.machines[m].networks;
        let all = (1u8 << nets) - 1;
        !self.iso_down.iter().any(|&(x, s, e)| x == m && s <= t && t < e)
            && !self.cuts.iter().any(|c| {
                c.start <= t
                    && t < c.end
                    && c.nets & all == all
                    && matches!(c.cut, Cut::Isolate(x) | Cut::Mute(x) if x == m)
            })
    }

    fn link_params(&self, from: usize, to: usize) -> LinkParams {
        let loss = self.link.loss.max(self.machines[from].loss).max(self.machines[to].loss);
        LinkParams { loss, ..self.link }
    }

    /// The daemon checks its isolation addresses every interval.
    fn feed_isolation(&mut self, i: usize) {
        let m = self.incs[i].machine;
        if !self.machines[m].isolation {
            return;
        }
        let iv = self.t_us(self.timing.interval_ms);
        if self.incs[i].iso_fed.is_some_and(|f| self.now < f + iv) {
            return;
        }
        let reachable = self.reachable(m, self.now);
        self.incs[i].iso_fed = Some(self.now);
        self.incs[i].node.handle_isolation(reachable);
    }

    /// The network thread's watchdog feed (`Node::poll_net_feed`; it never waits on the disk),
    /// checked against SAFETY.md: before the storage deadline, or on ride-through evidence.
    fn net_feed(&mut self, i: usize) -> Res {
        let x = &self.incs[i];
        if !x.alive || x.frozen(self.now) {
            return Ok(());
        }
        let local = x.clock.local_ms(self.now);
        if !self.incs[i].node.poll_net_feed(local) {
            return Ok(());
        }
        let x = &self.incs[i];
        let t = self.timing;
        let storage = x.clock.true_at_ms(x.node.last_ok_ms() + u64::from(t.self_fence_ms));
        // Clock rates and millisecond rounding aside.
        let slack = self.t_us(t.self_fence_ms) * 3 / 1000 + 2_000;
        if self.now > storage + slack {
            self.stats.ride_feeds += 1;
            self.ride_evidence(i, "WATCHDOG: fed by the network thread past the storage deadline")?;
        }
        self.stats.net_feeds += 1;
        if self.machines[self.incs[i].machine].watchdog {
            self.feed_watchdog(i);
        }
        Ok(())
    }

    /// A beat timer fired: send one packet per peer slot with a host, on every common network.
    fn beat(&mut self, i: usize) -> Res {
        self.feed_isolation(i);
        self.net_feed(i)?;
        let clock = self.incs[i].clock;
        let local = clock.local_ms(self.now);
        if self.incs[i].node.poll_beat(local) {
            self.stats.beats += 1;
            let view = self.incs[i].node.view_at(local);
            let (m, own) = (self.incs[i].machine, self.incs[i].slot);
            let nets = self.machines[m].networks;
            if self.trace > 0 {
                let v: Vec<u32> = view.iter().collect();
                self.note(|| format!("inc {i} (slot {own}) beats, view {v:?}"));
            }
            for d in 0..self.slot_count {
                if d == own || self.slot_machines[d as usize].iter().all(|&t| t == m) {
                    continue;
                }
                let pkt = self.incs[i].node.beat_packet(d, local, &view);
                if self.incs[i].io_failed && !pkt.disk_lost() {
                    // docs/PROTOCOL.md: `disk_lost` = the last disk cycle failed or timed out and
                    // none completed since.
                    return self.fail(format!(
                        "PROTOCOL: inc {i} (slot {own}) says its disk works (disk_lost clear) although its last \
                         disk I/O failed"
                    ));
                }
                for k in 0..self.slot_machines[d as usize].len() {
                    let to = self.slot_machines[d as usize][k];
                    if to == m {
                        continue;
                    }
                    for n in 0..nets.min(self.machines[to].networks) {
                        self.send(m, to, n, &pkt, self.incs[i].read_ok_at);
                    }
                }
            }
        }
        self.schedule_beat(i);
        Ok(())
    }

    fn send(&mut self, from: usize, to: usize, net: u8, pkt: &Packet, read_at: Option<u64>) {
        let p = self.link_params(from, to);
        self.stats.packets += 1;
        if p.loss > 0.0 && self.nrng.chance(p.loss) {
            self.stats.lost += 1;
            return;
        }
        let delay = p.delay_us + self.nrng.range(0, p.jitter_us);
        let sent = self.now;
        let ev =
            Ev::Deliver { from, to, to_inc: None, net, pkt: Box::new(*pkt), sent, read_at, replay: None };
        self.schedule(sent + delay.max(1), ev);
        if p.dup > 0.0 && self.nrng.chance(p.dup) {
            self.stats.duplicates += 1;
            let extra = self.nrng.range(1, self.t_us(self.timing.interval_ms));
            let ev =
                Ev::Deliver { from, to, to_inc: None, net, pkt: Box::new(*pkt), sent, read_at, replay: None };
            self.schedule(sent + delay + extra, ev);
        }
    }

    fn schedule_beat(&mut self, i: usize) {
        let x = &self.incs[i];
        if !x.alive {
            return;
        }
        let Some(b) = x.node.next_beat_ms() else { return };
        let at = x.clock.true_at_ms(b).max(self.now + 1);
        if x.beat_sched.is_some_and(|s| s <= at) {
            return;
        }
        let at = at + self.nrng.range(0, self.t_us(self.timing.interval_ms) / 20);
        let x = &mut self.incs[i];
        x.beat_token += 1;
        x.beat_sched = Some(at);
        let token = x.beat_token;
        self.schedule(at, Ev::Beat { inc: i, token });
    }

    /// A packet reaches incarnation `i` on `net` (a legitimate delivery or a replay).
    fn receive(
        &mut self,
        i: usize,
        net: u8,
        pkt: &Packet,
        (sent, read_at): (u64, Option<u64>),
        replay: Option<ReplayKind>,
    ) -> Res {
        let x = &self.incs[i];
        if !x.alive || x.frozen(self.now) || net >= self.machines[x.machine].networks {
            // A frozen daemon reads nothing; its socket buffer overflows.
            return Ok(());
        }
        let local = x.clock.local_ms(self.now);
        let r = self.incs[i].node.handle_packet(local, usize::from(net), diskbeat::net::VERSION_MINOR, pkt);
        self.stats.delivered += 1;
        self.net_feed(i)?;
        if self.trace > 1 || (self.trace > 0 && replay.is_some()) {
            let slot = self.incs[i].slot;
            self.note(|| {
                format!(
                    "inc {i} (slot {slot}) net {net} <- slot {} gen {} seq {} lost {} age {} echo {} ({replay:?}): \
                     {r:?}",
                    pkt.sender_slot,
                    pkt.generation,
                    pkt.sequence,
                    pkt.disk_lost(),
                    pkt.disk_age_ms,
                    pkt.echo_ms
                )
            });
        }
        let sender = pkt.sender_slot as usize;
        let gs = (pkt.generation, pkt.sequence);
        match r {
            Ok(()) => {
                self.stats.accepted += 1;
                let highest = self.incs[i].accepted[sender][usize::from(net)];
                if highest.is_some_and(|h| gs <= h) {
                    return self.fail(format!(
                        "REPLAY: inc {i} accepted slot {sender}'s packet {gs:?} on network {net} after {highest:?} \
                         ({replay:?})"
                    ));
                }
                self.incs[i].accepted[sender][usize::from(net)] = Some(gs);
                match replay {
                    Some(ReplayKind::Same | ReplayKind::OtherHost) => {
                        return self.fail(format!(
                            "REPLAY: inc {i} accepted a replayed packet of slot {sender} {gs:?} on network {net} \
                             ({replay:?})"
                        ))
                    }
                    Some(_) => self.stats.replays_accepted += 1,
                    None => {}
                }
                let gap = self.timing.read_gap_ms();
                let lost = pkt.disk_lost() && pkt.disk_age_ms >= gap && pkt.disk_age_ms != DISK_AGE_NEVER;
                // Clock rates and millisecond rounding: the sender's read gap on its own clock.
                let gap_us = gap * 1000;
                let truly_lost = read_at.is_none_or(|r| sent - r + gap_us * 2 / 1000 + 2_000 >= gap_us);
                let newest = &mut self.incs[i].newest[sender];
                let heard = Heard { gs, sent, received: self.now, lost, truly_lost };
                if newest.is_none_or(|h| gs > h.gs) {
                    *newest = Some(heard);
                }
                let vouched = &mut self.incs[i].vouched[sender];
                // Newest by true send time, like the node's newest echo: a generation can repeat
                // (a host taking over a corrupt slot restarts the count), so (gen, seq) cannot
                // order two incarnations' packets.
                if lost && vouched.is_none_or(|h| sent > h.sent) {
                    *vouched = Some(heard);
                }
                if self.adversary && self.nrng.chance(0.05) {
                    let c = Captured { pkt: *pkt, net, machine: self.incs[i].machine, inc: i, sent, read_at };
                    if self.captured.len() < 64 {
                        self.captured.push(c);
                    } else {
                        let k = self.nrng.range(0, 63) as usize;
                        self.captured[k] = c;
                    }
                }
                // The daemon's loop polls the node on every packet; here only when that can make a
                // difference (the rest of the time the poll would find nothing due): the packet
                // moved the fence deadline (ride-through evidence: the backup thread must know),
                // or the node rides through (watchdog feeds, the ride ending).
                let x = &self.incs[i];
                if x.node.riding_through() || x.node.fence_deadline_ms() != x.backup_deadline {
                    self.poke(i)
                } else {
                    Ok(())
                }
            }
            Err(e) => {
                let expected = match replay {
                    None => !matches!(e, DropReason::WrongDestination | DropReason::BadSlot),
                    Some(ReplayKind::Same) => matches!(e, DropReason::Replay | DropReason::StaleGeneration),
                    Some(ReplayKind::OtherHost) => e == DropReason::WrongDestination,
                    Some(_) => true,
                };
                if !expected {
                    return self.fail(format!(
                        "REPLAY: inc {i} dropped slot {sender}'s packet {gs:?} (network {net}, {replay:?}) as {e:?}"
                    ));
                }
                Ok(())
            }
        }
    }

    /// The adversary re-injects one recorded packet.
    fn replay(&mut self) -> Res {
        if self.captured.is_empty() {
            return Ok(());
        }
        let c = self.captured[self.nrng.range(0, self.captured.len() as u64 - 1) as usize];
        let mut kind = self.nrng.pick(&[
            ReplayKind::Same,
            ReplayKind::Same,
            ReplayKind::Same,
            ReplayKind::OtherHost,
            ReplayKind::OtherNetwork,
            ReplayKind::NewIncarnation,
        ]);
        if !self.cross_replays && matches!(kind, ReplayKind::OtherNetwork | ReplayKind::NewIncarnation) {
            kind = ReplayKind::Same;
        }
        let (target, net) = match kind {
            ReplayKind::Same => (Some(c.inc), c.net),
            ReplayKind::OtherHost => {
                let m = self.nrng.range(0, self.machines.len() as u64 - 1) as usize;
                if self.machines[m].slot == c.pkt.dest_slot {
                    return Ok(());
                }
                (self.machines[m].incs.last().copied(), c.net)
            }
            ReplayKind::OtherNetwork => (Some(c.inc), 1 - c.net),
            ReplayKind::NewIncarnation => {
                let last = self.machines[c.machine].incs.last().copied();
                if last == Some(c.inc) {
                    return Ok(());
                }
                (last, c.net)
            }
        };
        let Some(j) = target else { return Ok(()) };
        self.stats.replays += 1;
        self.receive(j, net, &c.pkt, (c.sent, c.read_at), Some(kind))
    }

    /// The node got an input outside its own timers (a packet): let it act, as the daemon's loop
    /// does when its socket wakes it.
    fn poke(&mut self, i: usize) -> Res {
        if !self.incs[i].alive {
            return Ok(());
        }
        if self.incs[i].pending.is_some() {
            self.poll_queued(i)
        } else {
            self.drive(i)
        }
    }

    /// While an I/O is in flight the node can only hand out queued actions (watchdog feeds).
    fn poll_queued(&mut self, i: usize) -> Res {
        let clock = self.incs[i].clock;
        loop {
            if !self.incs[i].alive {
                return Ok(());
            }
            let local = clock.local_ms(self.now);
            let Some(action) = self.incs[i].node.poll_action(local) else { break };
            if matches!(
                action,
                Action::Write { .. } | Action::Sweep { .. } | Action::Fence { .. } | Action::Exit { .. }
            ) {
                return self.fail(format!("inc {i} asked for {action:?} while an I/O is in flight"));
            }
            self.immediate_action(i, action)?;
            self.drain_events(i)?;
        }
        self.drain_events(i)?;
        self.schedule_beat(i);
        self.check_riding(i)
    }

    /// Ground truth the partition rule depends on changed (links, isolation, the live set).
    fn bump_epoch(&mut self) {
        self.vms_disturb();
        if self.kind == Kind::Disk {
            return;
        }
        self.part_epoch = self.now;
        if self.check_partition {
            let at = self.now + self.partition_window();
            self.schedule(at, Ev::PartitionCheck);
        }
    }

    /// How long after the last change of the ground truth (links of both networks, isolation
    /// reachability, the set of live network-enabled hosts) the partition rule must have acted:
    /// net_timeout + partition_delay + 2 (interval + io timeout) + 3 intervals + packet delay.
    /// The last packet over a cut link arrives before the cut (cuts apply at delivery), so views
    /// lose it within the network timeout; the new view goes out with the next write (within an
    /// interval plus the write's latency), every host reads it with its next sweep (an interval
    /// plus the read's latency), and acts at the first sweep (an interval plus its latency) once
    /// its inputs have been stable for the decision delay: three intervals and three latencies,
    /// each at most half an io timeout on a healthy disk. Slack: the longest packet delay (a view
    /// gaining a host), wake-up jitter, clock rates.
    fn partition_window(&self) -> u64 {
        let t = self.timing;
        let (iv, io) = (self.t_us(t.interval_ms), self.t_us(t.io_timeout_ms));
        let us = (t.net_timeout_ms() + t.partition_delay_ms()) * 1000
            + 2 * (iv + io)
            + 3 * iv
            + self.link.delay_us
            + self.link.jitter_us;
        us + us * 3 / 1000 + 5_000
    }

    /// PARTITION: two live network-enabled hosts that do not hear each other both ways, once the
    /// ground truth has been stable for the decision window.
    ///
    /// Exempt, by design: disk-only hosts (they publish no view and never fence for a partition),
    /// frozen daemons (their host is not running the rule; it fences by storage when it thaws),
    /// intruders (two machines on one slot: one address). Above 64 participants the rule makes no
    /// decision, but pools here have at most 64 slots. Joining hosts are not live; a host going
    /// live, a host stopping, a freeze, a thaw, a cut or heal, an isolation change all restart the
    /// window. Between two such changes the set of violating pairs can only shrink, so checking
    /// when the window after each change ends checks every step.
    fn check_partition_now(&mut self) -> Res {
        if self.now < self.part_epoch + self.partition_window() {
            return Ok(());
        }
        self.stats.partition_checks += 1;
        let net_hosts: Vec<usize> = (0..self.machines.len())
            .filter(|&m| {
                let mm = &self.machines[m];
                mm.networks > 0 && mm.incs.last().is_some_and(|&i| self.incs[i].alive)
            })
            .collect();
        if net_hosts.iter().enumerate().any(|(k, &a)| {
            net_hosts[k + 1..].iter().any(|&b| !self.hears(a, b, self.now) || !self.hears(b, a, self.now))
        }) {
            self.stats.partitioned_checks += 1;
        }
        let live: Vec<usize> = (0..self.incs.len())
            .filter(|&i| {
                let x = &self.incs[i];
                let m = &self.machines[x.machine];
                x.alive
                    && x.node.phase() == Phase::Live
                    && !x.frozen(self.now)
                    && m.networks > 0
                    && !m.intruder
            })
            .collect();
        for (k, &a) in live.iter().enumerate() {
            for &b in &live[k + 1..] {
                let (ma, mb) = (self.incs[a].machine, self.incs[b].machine);
                if self.hears(ma, mb, self.now) && self.hears(mb, ma, self.now) {
                    continue;
                }
                let part = |i: usize| self.incs[i].node.partition().map(|p| (p.decision, p.stable_since_ms));
                return self.fail(format!(
                    "PARTITION: inc {a} (slot {}) and inc {b} (slot {}) are both live at {} but do not hear each \
                     other both ways ({} hears {}: {}, {} hears {}: {}), stable since {} (window {} µs); \
                     decisions: {:?} / {:?}",
                    self.incs[a].slot,
                    self.incs[b].slot,
                    self.now,
                    self.incs[a].slot,
                    self.incs[b].slot,
                    self.hears(ma, mb, self.now),
                    self.incs[b].slot,
                    self.incs[a].slot,
                    self.hears(mb, ma, self.now),
                    self.part_epoch,
                    self.partition_window(),
                    part(a),
                    part(b)
                ));
            }
        }
        Ok(())
    }

    /// RIDE / WATCHDOG: incarnation `i` stays up past its storage deadline (or feeds its watchdog
    /// without a verified write) only on ground-truth evidence: every member of its last
    /// membership sent it, within the network timeout, a packet saying its disk is lost; nobody it
    /// heard within the network timeout says its disk works; and never past the ride-through cap.
    fn ride_evidence(&self, i: usize, what: &str) -> Res {
        let t = self.timing;
        let x = &self.incs[i];
        let nt = t.net_timeout_ms() * 1000;
        // No cap: every record here is format 1.7 (members listed). What bounds a ride is the
        // evidence below, and SAFETY (`check_dead`) checks that nobody declares a rider dead.
        let members = x.node.ride_members(x.clock.local_ms(self.now));
        if members.is_empty() {
            return self.fail(format!("{what}: inc {i} (slot {}) has no member to vouch for it", x.slot));
        }
        // The echo proves the member's packet left after ours (sent within the network timeout on
        // our clock): clock rates and millisecond rounding aside, within the network timeout.
        let oldest = self.now.saturating_sub(nt + nt * 2 / 1000 + 2_000);
        // Each member's newest vouching packet (a member whose disk came back since restarts its
        // silence clocks, so its last vouch still bounds us: docs/SAFETY.md).
        for m in members.iter() {
            match x.vouched[m as usize] {
                Some(h) if h.lost && h.truly_lost && h.sent >= oldest => {}
                h => {
                    return self.fail(format!(
                    "{what}: inc {i} (slot {}) at {}: member slot {m}'s newest vouching packet {h:?} is no \
                         evidence (must be truly lost, sent after {oldest})",
                    x.slot, self.now
                ))
                }
            }
        }
        Ok(())
    }

    /// After every input: a host riding through must have the evidence, and two riding hosts must
    /// have heard each other (only one side keeps running).
    fn check_riding(&mut self, i: usize) -> Res {
        let x = &self.incs[i];
        if !x.alive || !x.node.riding_through() {
            return Ok(());
        }
        if !x.rode {
            self.incs[i].rode = true;
            self.stats.ride_throughs += 1;
        }
        self.ride_evidence(i, "RIDE: riding through")?;
        let x = &self.incs[i];
        let nt = self.timing.net_timeout_ms() * 1000;
        let oldest = self.now.saturating_sub(nt + nt * 2 / 1000 + 2_000);
        for (j, y) in self.incs.iter().enumerate() {
            if j == i || !y.alive || y.frozen(self.now) || !y.node.riding_through() || y.slot == x.slot {
                continue;
            }
            let heard = |a: &Inc, b: &Inc| a.newest[b.slot as usize].is_some_and(|h| h.received >= oldest);
            if !heard(x, y) && !heard(y, x) {
                return self.fail(format!(
                    "LUN SPLIT: inc {i} (slot {}) and inc {j} (slot {}) both ride through at {} without having \
                     heard each other within the network timeout",
                    x.slot, y.slot, self.now
                ));
            }
        }
        Ok(())
    }

    /// LUN: with the whole LUN lost for every host and the network intact (no further failure),
    /// a host live when the outage began stops no earlier than its ride-through bound.
    fn check_lun_stop(&mut self, i: usize, what: &str) -> Res {
        let Some(l) = self.lun else { return Ok(()) };
        let x = &self.incs[i];
        if !x.lun_live {
            return Ok(());
        }
        let t = self.timing;
        let host_dead = self.t_us(t.host_dead_ms);
        if self.now >= l.end && self.now < l.end + 2 * host_dead && x.rode {
            self.stats.fenced_after_lun += 1;
        }
        if self.kind != Kind::Lun || l.failure != LunFailure::None || self.now < l.start || self.now >= l.end
        {
            return Ok(());
        }
        // Known design gap 2 (see NET_REGRESSION_SEEDS), a slow cycle just before the outage:
        // some host's storage deadline came before any member could vouch (reads failed for the
        // read gap, then a beat and its delivery); it fences, and every host that counted it as a
        // member loses its evidence. Counted, checked only with SIM_STRICT_LUN=1.
        let vouch_by = l.start + self.t_us(t.interval_ms) * 3 + t.read_gap_ms() * 1000;
        let early_deadline = self.incs.iter().any(|y| {
            y.lun_live
                && y.clock.true_at_ms(y.node.last_ok_ms() + u64::from(t.self_fence_ms)) < vouch_by + 2_000
        });
        if early_deadline && !self.strict_lun {
            self.stats.lun_early_stops += 1;
            return Ok(());
        }
        let x = &self.incs[i];
        self.fail(format!(
            "LUN: inc {i} (slot {}) {what} at {} during a whole-LUN outage ({}..{}, I/O {:?}) with the network \
             intact and no further failure (riding: {})",
            x.slot, self.now, l.start, l.end, l.mode, x.rode
        ))
    }

    // --- main loop ---------------------------------------------------------------------------

    fn run(&mut self) -> Res {
        if self.trace > 0 {
            println!(
                "{} run: {:?}, {} slots, {} µs, clean {}, link {:?}, cuts {:?}, isolation down {:?}, lun {:?}, \
                 windows {:?}, adversary {}",
                self.kind.name(),
                self.timing,
                self.slot_count,
                self.duration,
                self.clean,
                self.link,
                self.cuts,
                self.iso_down,
                self.lun,
                self.windows,
                self.adversary
            );
        }
        while let Some(Reverse((t, _, k))) = self.queue.pop() {
            if t > self.duration {
                break;
            }
            self.now = t;
            self.stats.steps += 1;
            let ev = self.payloads[k as usize].take().expect("payload");
            self.free.push(k);
            self.step(ev)?;
        }
        self.stats.sim_us = self.duration;
        Ok(())
    }

    /// Events of a frozen daemon wait for it to thaw. Returns true if `ev` was postponed.
    fn postpone_if_frozen(&mut self, inc: usize, ev: Ev) -> Result<bool, Ev> {
        let x = &mut self.incs[inc];
        if x.alive && self.now < x.frozen_until {
            let at = x.frozen_until;
            match ev {
                Ev::Wake { token, .. } if token == x.wake_token => x.wake_sched = Some(at),
                Ev::Beat { token, .. } if token == x.beat_token => x.beat_sched = Some(at),
                _ => {}
            }
            self.schedule(at, ev);
            return Ok(true);
        }
        Err(ev)
    }

    fn step(&mut self, ev: Ev) -> Res {
        let ev = match ev {
            Ev::Wake { inc, .. } | Ev::IoDone { inc, .. } | Ev::Backup { inc, .. } | Ev::Beat { inc, .. } => {
                match self.postpone_if_frozen(inc, ev) {
                    Ok(_) => return Ok(()),
                    Err(ev) => ev,
                }
            }
            ev => ev,
        };
        if matches!(
            ev,
            Ev::MailboxReq { .. }
                | Ev::Corrupt(_)
                | Ev::WipeSuperblock
                | Ev::Intruder(_)
                | Ev::LunStart
                | Ev::LunEnd
                | Ev::Thaw(_)
                | Ev::NetChange(_)
                | Ev::Restart(_)
                | Ev::Leave(_)
                | Ev::Freeze { .. }
                | Ev::Crash(_)
        ) {
            self.vms_disturb();
        }
        match ev {
            Ev::Vm(e) => self.vm_event(e),
            Ev::Wake { inc, token } => {
                if self.incs[inc].alive && self.incs[inc].wake_token == token {
                    self.incs[inc].wake_sched = None;
                    if self.incs[inc].pending.is_none() {
                        self.drive(inc)?;
                    }
                }
                Ok(())
            }
            Ev::Beat { inc, token } => {
                if self.incs[inc].alive && self.incs[inc].beat_token == token {
                    self.incs[inc].beat_sched = None;
                    self.beat(inc)?;
                }
                Ok(())
            }
            Ev::Deliver { from, to, to_inc, net, pkt, sent, read_at, replay } => {
                if replay.is_none() && !self.link_up(from, to, net, self.now) {
                    self.stats.cut += 1;
                    return Ok(());
                }
                let Some(i) = to_inc.or_else(|| self.machines[to].incs.last().copied()) else {
                    return Ok(());
                };
                self.receive(i, net, &pkt, (sent, read_at), replay)
            }
            Ev::Replay => self.replay(),
            Ev::Forge(m) => {
                if let Some(&i) = self.machines[m].incs.last() {
                    if self.incs[i].alive && !self.incs[i].frozen(self.now) {
                        self.stats.forgeries += 1;
                        self.incs[i].node.handle_drop(DropReason::BadMac);
                    }
                }
                Ok(())
            }
            Ev::NetChange(what) => {
                self.note(|| format!("network: {what}"));
                self.bump_epoch();
                Ok(())
            }
            Ev::Thaw(i) => {
                self.note(|| format!("inc {i} thaws"));
                self.bump_epoch();
                Ok(())
            }
            Ev::PartitionCheck => self.check_partition_now(),
            Ev::LunStart => {
                self.stats.lun_outages += 1;
                self.note(|| "WHOLE LUN LOST".into());
                for x in &mut self.incs {
                    x.lun_live = x.alive && x.node.phase() == Phase::Live;
                }
                Ok(())
            }
            Ev::LunEnd => {
                self.note(|| "whole LUN back".into());
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
                if let Some((go, _, _)) = self.incs[inc].fence_go {
                    // Attempts are serialized (`Fencer::running`): after the one waiting.
                    self.schedule(go + 1, Ev::Backup { inc, deadline });
                    return Ok(());
                }
                let x = &self.incs[inc];
                if x.alive && x.backup_deadline == Some(deadline) && !x.fencer_done {
                    self.note(|| format!("inc {inc} backup deadline thread fences"));
                    let (outcome, _) = self.fence_action(inc, true);
                    let x = &mut self.incs[inc];
                    // A deferred attempt reports when it acts (`VmEv::FenceGo`).
                    if x.alive && x.fence_go.is_none() {
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
                    if self.incs[inc].alive {
                        self.check_lun_stop(inc, "was reset by its watchdog")?;
                    }
                    let now = self.now;
                    let x = &mut self.incs[inc];
                    x.alive = false;
                    x.reset = Some(now);
                    x.power_cycled = true;
                    let m = x.machine;
                    self.machines[m].vms = None;
                    self.vms_host_stopped(m, true);
                    self.bump_epoch();
                    // A daemon that died with its host running is restarted by its own event
                    // (one restart pending per machine: a stale one would take over the watchdog
                    // of a later incarnation whose daemon just died).
                    if !self.incs[inc].daemon_crashed && self.rng.chance(0.7) {
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
                x.power_cycled = true;
                self.machines[m].vms = None;
                self.vms_host_stopped(m, true);
                self.stats.crashes += 1;
                self.bump_epoch();
                let bound = self.detect_bound();
                if self.clean && phase == Phase::Live {
                    self.schedule(now + bound, Ev::CheckDetected { crashed: i, at: now, extended: false });
                }
                if self.rng.chance(0.8) {
                    let at = now + bound + self.rng.range(0, bound * 2);
                    self.schedule(at, Ev::Restart(m));
                }
                Ok(())
            }
            Ev::Restart(m) => self.restart(m),
            Ev::DeviceAnswer { inc, slot, host_uuid, generation, outcome } => {
                if !self.incs[inc].alive {
                    return Ok(());
                }
                if self.incs[inc].frozen(self.now) {
                    let at = self.incs[inc].frozen_until;
                    self.schedule(at, Ev::DeviceAnswer { inc, slot, host_uuid, generation, outcome });
                    return Ok(());
                }
                if outcome == DeviceOutcome::Off {
                    self.stats.device_offs += 1;
                }
                let local = self.incs[inc].clock.local_ms(self.now);
                self.incs[inc].node.handle_fence_device(local, slot, host_uuid, generation, outcome);
                self.drain_events(inc)?;
                if self.incs[inc].pending.is_none() {
                    self.drive(inc)?;
                }
                Ok(())
            }
            Ev::PowerOff(m) => {
                self.note(|| format!("machine {m} powered off by its fence device"));
                let slot = self.machines[m].slot as usize;
                // Its hung writes may still land (late), even over the proof: a known gap.
                self.intent_landed[slot] = Some(u64::MAX);
                match self.machines[m].incs.last() {
                    Some(&i) if self.incs[i].alive => self.step(Ev::Crash(m)),
                    Some(&i) => {
                        // Its daemon is gone, but the machine (and whatever VMs it ran) was up.
                        self.incs[i].power_cycled = true;
                        self.vms_disturb();
                        self.machines[m].vms = None;
                        self.vms_host_stopped(m, true);
                        self.bump_epoch();
                        Ok(())
                    }
                    None => Ok(()),
                }
            }
            Ev::LiarCheck { inc, proven_at } => {
                let x = &self.incs[inc];
                let m = x.machine;
                // The proof still stands in its slot: the host must have read it (a record it did
                // not write) and fenced, or been reset by its watchdog. If its own later write
                // overwrote the proof, it never learns: the failover's two-copies rule ends the
                // double run instead (counted).
                let uuid = x.node.config().host_uuid;
                let stands = Record::decode(self.records[x.slot as usize].current(), &CLUSTER, x.slot)
                    .is_ok_and(|r| {
                        r.host_uuid == uuid && r.flags & diskbeat::format::record::flags::FENCE_DEVICE != 0
                    });
                if x.alive && self.machines[m].vms == Some(inc) && !stands {
                    self.stats.liar_overwritten += 1;
                    return Ok(());
                }
                if x.alive && self.machines[m].vms == Some(inc) && x.node.riding_through() {
                    // Riding through a whole-LUN outage on its members' vouching, it cannot read
                    // the proof, for as long as they vouch (no cap since format 1.7): the bound
                    // counts from the ride's end (the check comes again).
                    let at = self.now + self.t_us(self.timing.host_dead_ms) * 2;
                    self.schedule(at, Ev::LiarCheck { inc, proven_at });
                    return Ok(());
                }
                if x.alive && self.machines[m].vms == Some(inc) && self.machines[m].watchdog {
                    return self.fail(format!(
                        "LIAR: inc {inc} (machine {m}, slot {}) still runs its VMs {} µs after a lying fence \
                         device's proof at {proven_at} (bound {} µs; phase {})",
                        x.slot,
                        self.now - proven_at,
                        self.liar_bound(),
                        x.node.phase().name()
                    ));
                }
                Ok(())
            }
            Ev::Leave(m) => {
                let Some(&i) = self.machines[m].incs.last() else { return Ok(()) };
                if !self.incs[i].alive {
                    return Ok(());
                }
                self.note(|| format!("inc {i} asked to stop"));
                self.incs[i].stop = true;
                self.bump_epoch();
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
                    if self.kind != Kind::Disk {
                        self.bump_epoch();
                        self.schedule(until, Ev::Thaw(i));
                    }
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
                // A flip that makes the bytes valid again restores the record the last flip
                // broke (no bit flip forges a checksum): old content, not a sign of life.
                let restored = Record::validate(&b, &CLUSTER, slot).is_ok();
                self.put_record_as(slot, b, !restored);
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
            Ev::CheckDetected { crashed, at, extended } => {
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
                // A host the crashed one's last record does not list never takes its silence as
                // death (it may be riding through a LUN loss that host never saw): it must show the
                // slot `silent` instead.
                let rule = |reader: u32| {
                    Record::validate(self.records[slot as usize].current(), &CLUSTER, slot).map_or(
                        SilenceRule::Evidence,
                        |r| {
                            silence_rule(r.flags.get(), r.state(), r.members(), self.slot_count, Some(reader))
                        },
                    )
                };
                let _ = extended;
                // A member's fence intent written into the slot changes its record: every reader's
                // silence clock starts again there (and the device's proof may follow), so the
                // bound from the crash does not apply (DEVICE checks when the intent was due).
                if self.intent_landed[slot as usize].is_some() {
                    return Ok(());
                }
                for (o, x) in self.incs.iter().enumerate() {
                    if rule(x.slot) == SilenceRule::NotListed {
                        continue;
                    }
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
        // The same boot while the machine has not lost power since the previous daemon started
        // (it crashed alone, left, or fenced without a reboot).
        self.next_uuid += 1;
        let fresh_boot = uuid::Uuid::from_u128((self.seed as u128) << 64 | self.next_uuid | 1 << 63);
        let boot_id = match self.machines[m].incs.last() {
            Some(&p) if !self.incs[p].power_cycled => self.incs[p].boot_id,
            _ => fresh_boot,
        };
        // The daemon's start check, the core's rule: a previous daemon of this boot that died
        // holding the slot with a watchdog armed is the watchdog's to end, not ours.
        let slot = self.machines[m].slot;
        let last = Record::decode(self.records[slot as usize].current(), &CLUSTER, slot);
        if last.is_ok_and(|r| diskbeat::core::breaks_watchdog_promise(&r, boot_id)) {
            self.note(|| format!("machine {m}: the new daemon refuses (watchdog promise of this boot)"));
            self.stats.promise_refusals += 1;
            return Ok(());
        }
        let starts_may_land = diskbeat::core::starts_may_land(last.as_ref().ok(), boot_id);
        // The new daemon opens the watchdog: the old one's countdown is its now.
        for &j in &self.machines[m].incs {
            self.incs[j].wd_token += 1;
        }
        let mach = &self.machines[m];
        let (slot, clock, watchdog, fence) = (mach.slot, mach.clock, mach.watchdog, mach.fence);
        let (networks, weight, isolation) = (mach.networks, mach.weight, mach.isolation);
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
            networks,
            weight,
            isolation_configured: isolation,
            boot_id,
            fence_suspicion_ms: self.timing.fence_suspicion_ms(),
        };
        let mut node = Node::new(cfg, clock.local_ms(self.now));
        // Every host's config lists every device of the pool (its own is never called).
        let devices: Vec<[u8; 64]> = (0..self.machines.len())
            .filter(|&k| self.machines[k].device.is_some() && !self.machines[k].intruder)
            .map(|k| diskbeat::format::encode_name(&format!("m{k}")).expect("name"))
            .collect();
        node.set_fence_devices(&devices);
        let i = self.incs.len();
        let n = self.slot_count as usize;
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
            wake_token: 0,
            wake_sched: None,
            beat_token: 0,
            beat_sched: None,
            frozen_until: 0,
            was_frozen: false,
            fence_failed: false,
            writes_out: Vec::new(),
            interlock: diskbeat::core::interlock::Interlock::new(),
            fence_go: None,
            daemon_crashed: false,
            boot_id,
            starts_may_land,
            power_cycled: false,
            fencer_done: false,
            backup_deadline: None,
            backup_result: None,
            stop: false,
            stop_sent: false,
            wd_token: 0,
            fed_ok: None,
            dead_seen: vec![None; n],
            joined_at: None,
            iso_fed: None,
            accepted: if networks > 0 { vec![[None; 2]; n] } else { Vec::new() },
            newest: if networks > 0 { vec![None; n] } else { Vec::new() },
            vouched: if networks > 0 { vec![None; n] } else { Vec::new() },
            lun_live: false,
            read_ok_at: None,
            own_read: None,
            io_failed: false,
            rode: false,
        });
        self.machines[m].incs.push(i);
        self.stats.incarnations += 1;
        self.note(|| {
            format!(
                "inc {i} starts on machine {m} slot {slot} (watchdog {watchdog}, fence {fence:?}, networks \
                 {networks}, weight {weight}, isolation {isolation})"
            )
        });
        self.feed_isolation(i);
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
        self.vms_inc_started(i);
        Ok(())
    }

    /// Bytes land in a record slot. The ground-truth silence clock restarts on every landing
    /// except corrupt bytes over corrupt bytes: the documented rule (docs/SAFETY.md) is that a slot
    /// that keeps failing validation ages like silence.
    fn put_record(&mut self, slot: u32, bytes: Sector) {
        self.put_record_as(slot, bytes, true)
    }

    /// As `put_record`; `new` false: bytes the slot held before (never a landing).
    fn put_record_as(&mut self, slot: u32, bytes: Sector, new: bool) {
        let valid = |b: &Sector| Record::validate(b, &CLUSTER, slot).is_ok();
        let was_valid = valid(self.records[slot as usize].current());
        // A member's fence intent is a copy of the host's last record (same sequence): not a sign
        // of life. Its proof is a `fenced` mark, never declared dead.
        use diskbeat::format::record::flags::{FENCE_DEVICE, FENCE_INTENT};
        let intent = Record::validate(&bytes, &CLUSTER, slot)
            .is_ok_and(|r| r.flags.get() & (FENCE_INTENT | FENCE_DEVICE) != 0);
        // For the rest of the run: a member's write can bury a landing no reader saw, and a
        // lying device's host, or a powered-off host's hung writes, can land over it later.
        if intent {
            self.intent_landed[slot as usize] = Some(u64::MAX);
        }
        if (valid(&bytes) || was_valid) && !intent && new {
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
        let x = &mut self.incs[i];
        x.wake_token += 1;
        x.wake_sched = Some(at);
        let token = x.wake_token;
        self.schedule(at, Ev::Wake { inc: i, token });
    }

    /// An I/O starts: a wake-up scheduled before it is moot (the completion drives the node).
    fn io_token(&mut self, i: usize) -> u64 {
        let x = &mut self.incs[i];
        x.token += 1;
        x.wake_token += 1;
        x.wake_sched = None;
        x.token
    }

    fn feed_watchdog(&mut self, i: usize) {
        self.incs[i].wd_token += 1;
        let token = self.incs[i].wd_token;
        let at = self.now + self.watchdog_us;
        self.schedule(at, Ev::Watchdog { inc: i, token });
    }

    /// `Fencer::fence` for incarnation `i`: asks the interlock (the daemon's code), which makes
    /// this host fencing and lets the action wait for the VM start in flight up to the exec
    /// timeout, or fail. Returns the outcome and how long the attempt waited; an attempt that
    /// waits acts at `VmEv::FenceGo` (`fence_go`), asking the interlock again.
    fn fence_action(&mut self, i: usize, backup: bool) -> (FenceOutcome, u64) {
        if self.incs[i].fencer_done {
            return (FenceOutcome::Done, 0);
        }
        let now = self.now;
        if let Some((go, outcome, _)) = self.incs[i].fence_go {
            if !backup {
                // The backup thread's attempt holds `Fencer::running`: the loop does not wait.
                return (FenceOutcome::Waiting, 0);
            }
            return (outcome, go.saturating_sub(now));
        }
        use diskbeat::core::interlock::Gate;
        let limit_ms = u64::from(self.timing.io_timeout_ms);
        let local = self.incs[i].clock.local_ms(now);
        match self.incs[i].interlock.fence_gate(local, limit_ms) {
            Gate::Go => return (self.fence_now(i), 0),
            // The heartbeat loop's attempt never waits: the node asks again shortly.
            Gate::Wait if !backup => return (FenceOutcome::Waiting, 0),
            Gate::Fail if !backup => {
                self.note(|| format!("inc {i} fence FAILS: a VM start is still in flight"));
                self.stats.fence_failures += 1;
                self.vm_interlock_timeout();
                self.incs[i].fence_failed = true;
                return (FenceOutcome::Failed, 0);
            }
            // The backup thread waits (`Fencer::fence_waiting`), modelled below.
            Gate::Wait | Gate::Fail => {}
        }
        // Starts are in flight: the VM thread's current one ends at a known time.
        let wait = self.vm_start_in_flight(i);
        let io = self.t_us(self.timing.io_timeout_ms);
        if wait > io {
            // The daemon asks again until the limit; then the interlock fails the attempt.
            let at = local + limit_ms;
            let gate = self.incs[i].interlock.fence_gate(at, limit_ms);
            assert_eq!(gate, Gate::Fail, "a start in flight for the whole limit fails the attempt");
            self.note(|| format!("inc {i} fence FAILS: a VM start is still in flight"));
            self.stats.fence_failures += 1;
            self.vm_interlock_timeout();
            self.incs[i].fence_failed = true;
            return (FenceOutcome::Failed, io);
        }
        let go = now + wait + 1;
        let m = self.incs[i].machine;
        let outcome = if self.fence_fails(m, go) { FenceOutcome::Failed } else { FenceOutcome::Done };
        self.note(|| format!("inc {i} fence waits {wait} µs for the VM start in flight"));
        self.incs[i].fence_go = Some((go, outcome, backup));
        self.schedule(go, Ev::Vm(vms::VmEv::FenceGo(i)));
        (outcome, go - now)
    }

    /// Runs the fence action for incarnation `i` now; returns its outcome.
    fn fence_now(&mut self, i: usize) -> FenceOutcome {
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
                x.power_cycled = true;
                self.machines[m].vms = None;
                self.vms_host_stopped(m, true);
                if self.rng.chance(0.6) {
                    let at = now + self.detect_bound() + self.rng.range(0, self.detect_bound());
                    self.schedule(at, Ev::Restart(m));
                }
            }
            FenceKind::Exec => {
                self.machines[m].vms = None;
                self.vms_host_stopped(m, false);
            }
            FenceKind::LogOnly => {}
        }
        self.bump_epoch();
        FenceOutcome::Done
    }

    /// The driver (daemon::run's loop): deliver pending inputs, then perform actions until the
    /// node waits for an I/O or a timer.
    fn drive(&mut self, i: usize) -> Res {
        self.drive_inner(i)?;
        self.schedule_beat(i);
        self.check_riding(i)
    }

    fn drive_inner(&mut self, i: usize) -> Res {
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
            if self.trace > 0 && !matches!(action, Action::Write { .. }) {
                self.note(|| format!("inc {i} action {action:?}"));
            }
            match action {
                Action::Write { record, timeout_ms } => {
                    return self.start_write(i, record, timeout_ms, false)
                }
                Action::WritePeer { record, timeout_ms } => {
                    return self.start_write(i, record, timeout_ms, true)
                }
                Action::Sweep { timeout_ms } => return self.start_sweep(i, timeout_ms),
                Action::Fence { .. } => {
                    self.note(|| format!("inc {i} fence action"));
                    let (outcome, wait) = self.fence_action(i, false);
                    if !self.incs[i].alive {
                        return Ok(());
                    }
                    // An exec action takes a while; asking the interlock does not.
                    let lat = if outcome == FenceOutcome::Waiting {
                        1
                    } else {
                        wait + self.rng.range(100, self.t_us(self.timing.interval_ms))
                    };
                    self.incs[i].pending = Some(Pending::Fence(outcome));
                    let token = self.io_token(i);
                    self.schedule(self.now + lat, Ev::IoDone { inc: i, token });
                    return Ok(());
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
                    self.bump_epoch();
                    return Ok(());
                }
                a => self.immediate_action(i, a)?,
            }
            self.drain_events(i)?;
        }
        self.drain_events(i)?;
        if let Some(at_local) = self.incs[i].node.poll_timeout() {
            let at = clock.true_at_ms(at_local).max(self.now + 1);
            // Scheduling jitter.
            let at = at + self.rng.range(0, self.t_us(self.timing.interval_ms) / 20);
            // An earlier wake-up still scheduled does (the node says again when it wants more).
            if self.incs[i].wake_sched.is_none_or(|w| w > at) {
                self.wake(i, at);
            }
        }
        Ok(())
    }

    /// Actions that complete at once (no I/O of the heartbeat loop).
    fn immediate_action(&mut self, i: usize, action: Action) -> Res {
        let clock = self.incs[i].clock;
        match action {
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
            Action::FenceDevice { slot, host_name, host_uuid, generation, .. } => {
                self.call_device(i, slot, host_name, host_uuid, generation)?;
            }
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
            Action::Write { .. }
            | Action::WritePeer { .. }
            | Action::Sweep { .. }
            | Action::Fence { .. }
            | Action::Exit { .. } => {
                unreachable!("not an immediate action: {action:?}")
            }
        }
        Ok(())
    }

    fn start_write(&mut self, i: usize, rec: Record, timeout_ms: u64, peer: bool) -> Res {
        let t = self.now;
        if peer && (rec.slot == self.incs[i].slot || self.incs[i].fenced.is_some()) {
            return self
                .fail(format!("inc {i} (slot {}) writes slot {} as a peer", self.incs[i].slot, rec.slot));
        }

        if !peer && self.incs[i].fenced.is_some() && !matches!(rec.state, State::SelfFencing | State::Fenced)
        {
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
                self.incs[i].writes_out.push(t + lat);
                (Err(IoFailure::TimedOut), t + bound)
            }
            IoResult::Fail(lat) => (Err(IoFailure::Failed(5)), t + lat.min(bound)),
            IoResult::Hang { land, settle } => {
                if let Some(l) = land {
                    self.schedule(l.max(t + 1), Ev::Land { slot, bytes, torn });
                    self.stats.late_landings += 1;
                }
                self.incs[i].writes_out.push(settle.max(t + 1));
                (Err(IoFailure::TimedOut), t + bound)
            }
        };
        self.incs[i].pending = Some(if peer { Pending::PeerWrite(result) } else { Pending::Write(result) });
        let token = self.io_token(i);
        self.schedule(done.max(t + 1), Ev::IoDone { inc: i, token });
        Ok(())
    }

    /// Whether a member wrote a fence intent or proof into `slot` within the last 2 T.
    fn member_wrote(&self, slot: u32) -> bool {
        let host_dead = self.t_us(self.timing.host_dead_ms);
        self.intent_landed[slot as usize]
            .is_some_and(|at| at == u64::MAX || self.now.saturating_sub(at) < 2 * host_dead)
    }

    /// DEVICE: a member decides to power a host off (its intent) only if the host's slot did not
    /// advance for the suspicion time (ground truth: the last landing of the host's own writes
    /// before the deciding sweep started, less the clock-rate error).
    fn check_suspicion(&mut self, i: usize, slot: u32) -> Res {
        let suspicion = self.timing.fence_suspicion_ms() * 1000;
        let min_silence = suspicion - suspicion * 25 / 10_000;
        let read_at = self.sweep_started.unwrap_or(self.now);
        let last = self.landings[slot as usize].iter().rev().find(|&&l| l <= read_at).copied().unwrap_or(0);
        let host_dead = self.t_us(self.timing.host_dead_ms);
        let buried = self.intent_landed[slot as usize]
            .is_some_and(|at| at == u64::MAX || read_at.saturating_sub(at) < 2 * host_dead);
        if read_at.saturating_sub(last) < min_silence && !buried {
            return self.fail(format!(
                "DEVICE: inc {i} decides to power off slot {slot} {} µs after its slot last advanced \
                 (suspicion {suspicion} µs)",
                read_at.saturating_sub(last)
            ));
        }
        Ok(())
    }

    /// True-time bound for a host a lying device reported off to stop running VMs: its own
    /// deadline (self-fence after its last verified cycle, which was at least the suspicion time
    /// before the call), its watchdog (one io timeout), and a fence action (an interval), counted
    /// from the proof (docs/SAFETY.md, "Fence devices").
    fn liar_bound(&self) -> u64 {
        let t = self.timing;
        self.t_us(t.self_fence_ms) + self.t_us(t.io_timeout_ms) + 2 * self.t_us(t.interval_ms)
    }

    /// `Action::FenceDevice` from inc `i`: the target machine's device does what its kind does.
    fn call_device(
        &mut self,
        i: usize,
        slot: u32,
        host_name: [u8; 64],
        host_uuid: uuid::Uuid,
        generation: u64,
    ) -> Res {
        self.stats.device_calls += 1;
        let name = diskbeat::format::decode_name(&host_name).unwrap_or("?").to_string();
        let Some(m) =
            name.strip_prefix('m').and_then(|n| n.parse::<usize>().ok()).filter(|&m| m < self.machines.len())
        else {
            return self.fail(format!("inc {i} calls a device for unknown host {name:?}"));
        };
        let Some(device) = self.machines[m].device else {
            return self.fail(format!("inc {i} calls a device for {name}, which has none"));
        };
        self.note(|| format!("inc {i} calls {name}'s fence device ({device:?}) for slot {slot}"));
        if let Some(&j) = self.machines[m].incs.last() {
            if self.incs[j].alive && self.incs[j].slot == slot {
                // Frozen, a failing path, or a cycle slower than the suspicion time while every
                // network to it is cut: powered off although it runs (an availability cost only).
                self.stats.device_running_targets += 1;
            }
        }
        let lat = self.rng.range(50_000, 1_500_000);
        let timeout = self.timing.fence_device_timeout_ms() * 1000;
        let (answer_at, outcome, off_at) = match device {
            Device::Truthful => (self.now + lat, DeviceOutcome::Off, Some(self.now + lat / 2)),
            Device::Fails => (self.now + lat, DeviceOutcome::Failed, None),
            Device::Hangs => (self.now + timeout, DeviceOutcome::TimedOut, None),
            Device::Late => {
                let off = self.now + lat + self.rng.range(0, self.t_us(self.timing.host_dead_ms));
                (self.now + lat, DeviceOutcome::Failed, Some(off))
            }
            Device::Liar => (self.now + lat, DeviceOutcome::Off, None),
        };
        if let Some(at) = off_at {
            self.schedule(at, Ev::PowerOff(m));
        }
        self.schedule(answer_at, Ev::DeviceAnswer { inc: i, slot, host_uuid, generation, outcome });
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
        let token = self.io_token(i);
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
    /// fires by ok + 3 io timeouts = 0.75 T, before any peer can declare the host dead. The one
    /// exception: riding through a whole-LUN loss, fed on network evidence (`ride_evidence`).
    fn check_feed(&mut self, i: usize) -> Res {
        let x = &self.incs[i];
        // Before going live the watchdog only shows the loop runs (no VMs yet). After, the rules
        // hold in every phase: a feed queued by a cycle may be performed after that same cycle
        // decided to fence, but a feed is never owed to the fence itself.
        if matches!(x.node.phase(), Phase::Acquiring | Phase::Joining) {
            return Ok(());
        }
        let ok_local = x.node.last_ok_ms();
        if x.fed_ok == Some(ok_local) {
            self.stats.ride_feeds += 1;
            return self.ride_evidence(i, "WATCHDOG: fed again without a newly verified write");
        }
        self.incs[i].fed_ok = Some(ok_local);
        let x = &self.incs[i];
        let t = self.timing;
        let ok = x.clock.true_at_ms(ok_local);
        let bound = 2 * self.t_us(t.io_timeout_ms) + self.t_us(t.interval_ms) / 20;
        let slack = bound * 3 / 1000 + 2_000;
        // (With a longer what-if watchdog a daemon frozen for more than an io timeout survives to
        // feed it late: the bound assumes the watchdog reset that host.)
        if self.now > ok + bound + slack && self.watchdog_us == self.t_us(t.io_timeout_ms) {
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
            Pending::Write(r) => {
                self.incs[i].io_failed = r.is_err();
                let joining = self.incs[i].node.record().state == State::Joining;
                self.incs[i].node.handle_write(local, r);
                if joining && r.is_ok() {
                    self.incs[i].joined_at = Some(self.now);
                }
            }
            Pending::Fence(outcome) => self.incs[i].node.handle_fence(local, outcome),
            Pending::PeerWrite(r) => self.incs[i].node.handle_peer_write(local, r),
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
                let own = self.incs[i].slot as usize;
                self.incs[i].own_read = matches!(reads.get(own), Some(Ok(_))).then(|| data[own]);
                self.incs[i].io_failed = self.incs[i].own_read.is_none();
                if reads.iter().take(self.slot_count as usize).any(|r| r.is_ok()) {
                    self.incs[i].read_ok_at = Some(ts);
                }
                let (ls, le) = (clock.local_ms(ts), clock.local_ms(te).max(local));
                let slots = (!reads.is_empty()).then_some(&self.view as &dyn SlotSource);
                self.sweep_started = Some(ts);
                // What the engine reports: writes whose completion had not come back when the
                // sweep's reads went in (the daemon's pinned buffers).
                self.incs[i].writes_out.retain(|&s| s > ts);
                let in_flight = self.incs[i].writes_out.len() as u32;
                self.incs[i].node.handle_sweep(ls, le, slots, (le - ls) * 1000, in_flight);
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
            let buried = self.intent_landed[slot]
                .is_some_and(|at| at == u64::MAX || ts.saturating_sub(at) < 2 * host_dead);
            if p.state == PeerState::Dead
                && p.corruption.is_none()
                && p.dead_at_ms == Some(self.incs[i].clock.local_ms(ts))
                && !buried
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
            if self.trace > 0 {
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
                    if to == PeerState::Fenced
                        && self.incs[i].node.peers()[slot as usize].vms_gone() == Ok(GoneProof::FenceDevice)
                    {
                        // Powered off by its device: the detection clean runs check.
                        self.incs[i].dead_seen[slot as usize] = Some(self.now);
                    }
                    if matches!(to, PeerState::Dead | PeerState::Fenced) {
                        self.check_proof(i, slot)?;
                    }
                }
                Event::FenceDeviceIntent { slot, .. } => self.check_suspicion(i, slot)?,
                Event::SelfFence(reason) => {
                    self.stats.self_fences += 1;
                    if reason == FenceReason::ForeignWrite {
                        self.check_foreign(i, "self-fenced for a foreign write")?;
                    }
                    if matches!(reason, FenceReason::Partition { .. }) {
                        self.stats.partition_fences += 1;
                    }
                    self.bump_epoch();
                    self.check_lun_stop(i, &format!("self-fenced ({reason:?})"))?;
                    // A member's fence intent or proof in our slot is a poison pill by design.
                    let pill = reason == FenceReason::ForeignWrite && self.member_wrote(self.incs[i].slot);
                    if pill {
                        self.stats.device_pills += 1;
                    }
                    if self.clean && !pill {
                        return self.fail(format!(
                            "inc {i} (slot {}) self-fenced in a fault-free run: {reason:?}",
                            self.incs[i].slot
                        ));
                    }
                }
                Event::Refused(reason) => {
                    self.stats.refusals += 1;
                    if reason == RefuseReason::ForeignDuringJoin {
                        self.check_foreign(i, "refused for a foreign write during its join")?;
                    }
                    // A member's late intent (a retried device, for the previous incarnation) may
                    // land over a join: refused, and the next daemon start joins.
                    let pill =
                        reason == RefuseReason::ForeignDuringJoin && self.member_wrote(self.incs[i].slot);
                    if pill {
                        self.stats.device_pills += 1;
                    }
                    if self.clean && !pill {
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
                    self.bump_epoch();
                    self.check_owner(i)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// FOREIGN: a host that gives up its slot for a foreign write really read something it did not
    /// write: not a record of its own (same host uuid and generation).
    fn check_foreign(&self, i: usize, what: &str) -> Res {
        let x = &self.incs[i];
        let Some(bytes) = x.own_read else { return Ok(()) };
        let Ok(r) = Record::decode(&bytes, &CLUSTER, x.slot) else { return Ok(()) };
        // A member's fence intent or proof is a copy of our record written by another host.
        let member = r.flags
            & (diskbeat::format::record::flags::FENCE_INTENT | diskbeat::format::record::flags::FENCE_DEVICE)
            != 0;
        if r.host_uuid == x.node.config().host_uuid && r.generation == x.node.record().generation && !member {
            return self.fail(format!(
                "FOREIGN: inc {i} (slot {}) {what} at {}, but its slot holds its own record (sequence {}, {:?}; \
                 its latest is sequence {})",
                x.slot,
                self.now,
                r.sequence,
                r.state,
                x.node.record().sequence
            ));
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
            if x.slot == slot
                && x.node.config().host_uuid == peer.host_uuid
                && proof == GoneProof::FenceDevice
                && m.device == Some(Device::Liar)
            {
                // A lying device: bounded, not prevented (docs/SAFETY.md, "Fence devices").
                self.stats.device_lies_proven += 1;
                let at = self.now + self.liar_bound();
                let proven_at = self.now;
                self.schedule(at, Ev::LiarCheck { inc: j, proven_at });
                return Ok(());
            }
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

fn run_seed(seed: u64, trace: u8, kind: Option<Kind>) -> Result<Stats, String> {
    run_seed_with(seed, trace, kind, false)
}

fn run_seed_with(seed: u64, trace: u8, kind: Option<Kind>, with_vms: bool) -> Result<Stats, String> {
    // A panic inside the node (an invariant assertion) is a failure of this seed, reported with it.
    std::panic::catch_unwind(|| {
        let mut sim = Sim::new(seed, trace, kind, with_vms);
        let r = sim.run();
        if let Some(w) = &sim.vmw {
            sim.stats.vm = w.stats;
        }
        r?;
        Ok(sim.stats)
    })
    .unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let mut kind = kind.map_or(String::new(), |k| format!(" SIM_KIND={}", k.name()));
        if with_vms {
            kind.push_str(" SIM_VMS=1");
        }
        Err(format!(
            "seed {seed}: panicked: {what}\nreplay: SIM_SEED={seed}{kind} SIM_TRACE=1 cargo test --test sim replay -- \
             --nocapture"
        ))
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn env_kind() -> Option<Kind> {
    let k = std::env::var("SIM_KIND").ok()?;
    Some(
        Kind::parse(&k)
            .unwrap_or_else(|| panic!("SIM_KIND={k}: one of disk, net-clean, partition, lun, chaos")),
    )
}

/// Runs `count` seeds from `base` on every core; stops collecting after 5 failures.
fn run_many(base: u64, count: u64, kind: Option<Kind>, with_vms: bool) -> (Stats, Vec<String>) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let results: Vec<(Stats, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut total = Stats::default();
                    let mut failures = Vec::new();
                    let mut k = t;
                    while k < count && failures.len() < 5 {
                        match run_seed_with(base.wrapping_add(k), 0, kind, with_vms) {
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
    let kind = env_kind();
    let kind_env = kind.map_or(String::new(), |k| format!(" SIM_KIND={}", k.name()));
    println!(
        "sim: base seed {base}, {runs} runs (replay all: SIM_BASE_SEED={base} SIM_RUNS={runs}{kind_env})"
    );
    let (mut total, mut failures) = run_many(base, runs, kind, false);
    for &seed in REGRESSION_SEEDS {
        match run_seed(seed, 0, Some(Kind::Disk)) {
            Ok(s) => total.add(&s),
            Err(e) => failures.push(e),
        }
    }
    for &seed in NET_REGRESSION_SEEDS {
        match run_seed(seed, 0, None) {
            Ok(s) => total.add(&s),
            Err(e) => failures.push(e),
        }
    }
    let elapsed = started.elapsed();
    let kinds: Vec<String> =
        Kind::ALL.iter().zip(total.kinds).map(|(k, n)| format!("{n} {}", k.name())).collect();
    println!(
        "sim: {} runs ({}; {} fault-free), {} steps, {} cycles, {} incarnations, {} faults planned ({} crashes, \
         {} freezes, {} late landings, {} torn, {} misdirected, {} failed fence actions), {} dead \
         declarations ({} of unprovable hosts), {} gone-proofs, {} watchdog resets, {} self-fences, {} refusals, \
         {} daemon starts refused for the watchdog promise, {} went live, min fence-to-dead margin {:?} µs, {:.0} simulated s, {:.2?} wall",
        total.runs,
        kinds.join(", "),
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
        total.promise_refusals,
        total.went_live,
        total.min_margin_us,
        total.sim_us as f64 / 1e6,
        elapsed
    );
    println!(
        "sim fence devices: {} runs with devices, {} device calls, {} confirmed off, {} calls for a host still \
         running (frozen or failing path), {} proofs by a lying device ({} VM double runs they caused, bounded by LIAR; \
         {} overwritten by the running host's own writes), {} hosts stopped by a member's intent or proof in their slot, {} restarts overdue in runs with devices",
        total.device_runs,
        total.device_calls,
        total.device_offs,
        total.device_running_targets,
        total.device_lies_proven,
        total.twice_after_liar,
        total.liar_overwritten,
        total.device_pills,
        total.device_overdue
    );
    println!(
        "sim network: {} beats, {} packets ({} lost, {} cut, {} duplicated), {} delivered, {} accepted; {} \
         replays ({} accepted as new: other network or restarted receiver), {} forgeries; {} cuts, {} partition \
         checks ({} with a partition in force), {} partition fences; {} whole-LUN outages, {} ride-throughs, {} ride-through watchdog feeds ({} network-thread feeds in all), {} \
         hosts fenced within 2 T after riding through to the end of the outage, {} hosts stopped before the \
         ride-through bound in pure whole-LUN outages (a storage deadline before anyone could vouch)",
        total.beats,
        total.packets,
        total.lost,
        total.cut,
        total.duplicates,
        total.delivered,
        total.accepted,
        total.replays,
        total.replays_accepted,
        total.forgeries,
        total.cuts,
        total.partition_checks,
        total.partitioned_checks,
        total.partition_fences,
        total.lun_outages,
        total.ride_throughs,
        total.ride_feeds,
        total.net_feeds,
        total.fenced_after_lun,
        total.lun_early_stops
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
    let trace = env_u64("SIM_TRACE").unwrap_or(0) as u8;
    let with_vms = env_u64("SIM_VMS").is_some_and(|v| v != 0);
    match run_seed_with(seed, trace, env_kind(), with_vms) {
        Ok(s) => println!("seed {seed}: ok {s:?}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn same_seed_same_run() {
    for kind in Kind::ALL {
        let a = run_seed(7, 0, Some(kind)).map(|s| (s.steps, s.cycles, s.dead_declarations, s.packets));
        let b = run_seed(7, 0, Some(kind)).map(|s| (s.steps, s.cycles, s.dead_declarations, s.packets));
        assert_eq!(a, b, "{kind:?}");
    }
}

/// Seeds of `simulate_failover_many_seeds` (run with SIM_VMS=1):
/// - 0 (partition): catches `SlotView::may_hold` treating an unproven Dead slot as gone (TWICE);
/// - 1795653712716736786 (net-clean): a restarted daemon whose VMs still ran published them
///   `Lost` (inventory polled before the previous extent was read) and the coordinator started
///   one again (TWICE; fixed in `Failover::handle_previous`);
/// - 1795639239191549409 (partition): a start raced its host's exec fence; closed by the fence
///   interlock (modelled: FENCE RACE fails the run);
/// - 1795639239191549475 (disk): a fenced host's VM thread published its VMs `Stopped` after the
///   fence stopped them, erasing the evidence; closed by the interlock (EVIDENCE fails the run).
///
/// - 1795550365886270677 (disk) TWICE: a target whose node still showed a retaken slot as its
///   old, proven-gone generation skipped that slot in its claim check while the new generation
///   held a `Starting` claim for the same VM. Fixed: the claim check reads every slot and counts a
///   newer incarnation's extent (unit test
///   `a_claim_by_a_newer_incarnation_of_a_slot_seen_as_gone_blocks_the_start`). After the fix
///   the seed no longer reaches that state (the runs diverge), so the unit test guards it.
///
/// Not caught in 1,000 runs: `handle_extent` ignoring conflicts (two claimants racing for one VM
/// are rare: ~16 withdrawals per 1,000 runs, each also blocked by the plan's single target).
///
/// Found by CI's random base seeds, fixed, and kept:
/// - 1795648762360349516 (chaos): a rebooted host took a failed read of its own extent as "no
///   previous state" and published its VMs `stopped` (EVIDENCE; fixed in `handle_previous`);
/// - 1795571618523415356 (disk): a joining daemon's record said `watchdog_armed` while its
///   watchdog was fed on every sweep; it died joining, "dead and armed" was taken as proof, and
///   VMs a clean leave had left running were started elsewhere (TWICE; fixed in the node).
///
/// Lying drivers (inventories that omit VMs; `Lies` in sim/vms.rs), positive evidence only
/// (`Failover::handle_inventory`, `handle_lookup`, `handle_previous`):
/// - 1063 (disk): vm5 restarted on machine 2; machine 2's inventory omits it; machine 2 dropped
///   it from its state, the `Lost` claim of machine 1's rebooted incarnation was the highest
///   again, and machine 1 started vm5 while it ran on machine 2 (TWICE; red on the core before
///   the fix, and with the old "gone from the driver: dropped" rule put back);
/// - 1193 (disk): a daemon that left cleanly (its VMs kept running) rejoined and its first
///   inventories omitted vm6; with the previous incarnation's holders marked `Lost` at once (the
///   old rule) vm6 was started on machine 3 too (TWICE);
/// - 1667 (disk): vm1, restarted on machine 3 (claim 1), stopped there by the administrator;
///   machine 3's next incarnation, with its previous incarnation's `stopped` entries dropped (the
///   old rule), republished vm1 `stopped` with claim 0, the rebooted first host's `Lost` claim 0
///   won the tie, and vm1 was started again (ADMIN).
///
/// Extents bound to their writer (format 1.6, `Failover::handle_extent`), once a known gap that
/// only counted double runs in runs with intruders or misdirected writes:
/// - 2551 (disk): machine 1's daemon crashed (no watchdog, VMs kept running); an intruder took
///   slot 1, went live with an armed watchdog and died proven gone; slot 1's extent, still machine
///   1's, was taken as the intruder's and vm4 was started while it ran on machine 1 (TWICE; red on
///   the core before 1.6 with SIM_STRICT_FOREIGN=1, and with the writer check of `handle_extent`
///   reverted, as are 9951 (disk) and 12413 (chaos));
/// - 1796587644834111738 (chaos): with another incarnation's extent simply ignored, a restarted
///   daemon's predecessor's `stopped` entry (an administrator's stop, the highest claim) no longer
///   counted before the new daemon republished it, and an older `lost` claim restarted the VM
///   (ADMIN; red with `Failover::foreign_veto` always false).
///
/// RESTART strict in every run (was counted as OVERDUE, ~2 per 100 runs); each was a simulator
/// model gap, and each replays green only with its fix:
/// - 6631 (disk): the coordinator crashed (no watchdog) right after claiming vm1 `starting`; vm1
///   was due by its first host's proof while the claim's holder was dead and unproven: diskbeat
///   rightly waits (status: `held`), the rule now asks every holding slot to be proven or back;
/// - 5910 (disk): machine 17 came back, went live and was reset by its watchdog before its first
///   publish; its extent is its previous daemon's, which no automatic proof covers (FAILOVER.md,
///   "Whose extent"): held until the host is back or an operator confirms it down;
/// - 5420 (disk): an intruder (which runs no failover in the simulator) was the coordinator;
/// - 1796544995873439085 (lun): an administrator's copy, started while the pool's claim check
///   for a restart was in flight and published after it, ran beside the restarted copy until
///   COPIES resolved it (TWICE, excused only for a start issued before the copy was known);
/// - 1796637155063622831 (net-clean): a copy a lying driver hid from its first inventory on
///   (diskbeat never had evidence of it: counted, not failed);
/// - 1796527387093314445 (disk): as 5910, with the earlier incarnation's `lost` entries.
///
/// Starts in flight across incarnations (`Failover::handle_previous`, `start_landing_ms`):
/// - 1796605498915313360 (disk): machine 1's daemon left cleanly while its start of vm9 hung;
///   the next incarnation's lookup found vm9 not defined yet, published it `lost`, vm9 was
///   restarted on machine 4, and the hung start landed on machine 1 (TWICE; red with the
///   previous `starting` entry trusted to be settled).
///
/// Withdrawn claims (`Failover::finish_round`, `orphans`):
/// - 1796607741523327741 (disk): vm1's claim on the only live host was withdrawn because an
///   earlier incarnation's extent of slot 0 still held it; the withdrawal counted as a failed
///   attempt that excluded that host, so once slot 0 was cleared vm1 had no target (RESTART;
///   the same on the commit before this rule: a model gap, now attempt 0 = no attempt made).
/// - 1796553228508610080, 1796553228508603455 (disk): a slot left holding a record older than
///   a generation seen before (GenerationWentBack) looked live for ever: every read of the same
///   stale record restarted its silence clock; the coordinator kept it as a target that never
///   started its wave, and later waves waited (RESTART; `Peer::observe` now counts only a
///   changed record);
/// - 1796553228508609409 (lun): a host that joined during the outage was given a VM of a host
///   proven gone by its watchdog, whose last record did not list it: it saw that host `silent`,
///   counted its claim and never started the VM (RESTART; the coordinator now excludes such
///   targets, `SlotView::lists`).
/// - 1796529618558056709 (lun, 11 T outage): an administrator's second copy started on a host
///   riding through could not be resolved until the disk came back (no extent to read or write):
///   COPIES now waits for the disk too (a model gap).
/// - 1796547049831033352 (chaos): a live write that timed out landed over its host's clean leave
///   after the leave was read back; silent with "watchdog armed" on the disk, the host was taken
///   for proven gone while its VMs ran (VM SAFETY; the leave now waits for its writes in flight).
/// - 1796593142738191162 (disk, fence devices): a host powered off by its device came back at
///   once and, as coordinator, claimed a VM already restarted elsewhere with the same claim, then
///   withdrew; when the administrator stopped the VM there, the withdrawn entry (lower slot) won
///   the tie and the VM was started again (ADMIN; `holds_top` now ranks a withdrawal last).
/// - 1796593142738184592 (disk): a copy a lying driver hid while its daemon published was listed
///   only after that daemon fenced (log-only: it publishes nothing); the model counted it as
///   evidence diskbeat had (TWICE; a model fix: a fenced daemon's inventory is no evidence).
/// - 1796535973061660603 (lun): the coordinator took a copy of a riding host's extent, read
///   while that host was `silent` to it, for the host's last; the administrator's stop the host
///   published during the outage was undone once it fenced (ADMIN; fixed in `stopped`).
const FAILOVER_REGRESSION_SEEDS: &[u64] = &[
    1796535973061660603,
    1796593142738191162,
    1796593142738184592,
    1796547049831033352,
    1796529618558056709,
    1796605498915313360,
    1796607741523327741,
    1796553228508610080,
    1796553228508603455,
    1796553228508609409,
    1796527387093314445,
    6631,
    5910,
    5420,
    1796544995873439085,
    1796637155063622831,
    0,
    1,
    7,
    42,
    1234,
    1795653712716736786,
    1795639239191549409,
    1795639239191549475,
    1795648762360349516,
    1795571618523415356,
    1063,
    1193,
    1667,
    2551,
    9951,
    12413,
    1796587644834111738,
];

/// The pool with VMs and failover: every incarnation runs the real `Failover` (see `vms.rs`).
/// `SIM_FO_RUNS` seeds (default 10,000) from a random base seed, plus the regression seeds.
#[test]
fn simulate_failover_many_seeds() {
    let started = std::time::Instant::now();
    let base = env_u64("SIM_BASE_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) ^ 0xf0
    });
    let runs = env_u64("SIM_FO_RUNS").unwrap_or(10_000);
    let kind = env_kind();
    let kind_env = kind.map_or(String::new(), |k| format!(" SIM_KIND={}", k.name()));
    println!("sim failover: base seed {base}, {runs} runs (replay all: SIM_BASE_SEED={base} SIM_FO_RUNS={runs}{kind_env})");
    let (mut total, mut failures) = run_many(base, runs, kind, true);
    for &seed in FAILOVER_REGRESSION_SEEDS {
        match run_seed_with(seed, 0, None, true) {
            Ok(s) => total.add(&s),
            Err(e) => failures.push(e),
        }
    }
    let v = total.vm;
    println!(
        "sim failover fence devices: {} runs with devices, {} calls, {} confirmed off, {} proofs by a lying device \
         ({} VM double runs they caused, bounded by LIAR; {} overwritten by the host's own writes), {} restarts \
         overdue in runs with devices (counted, not failed)",
        total.device_runs,
        total.device_calls,
        total.device_offs,
        total.device_lies_proven,
        total.twice_after_liar,
        total.liar_overwritten,
        total.device_overdue
    );
    println!(
        "sim failover: {} runs ({} with tight capacity), {} VMs, {} crashes, {} daemon crashes (VMs kept running), \
         {} coordinator crashes, {} plans published, {} starts ({} failed, {} hung), {} claims withdrawn \
         (conflicts), {} VMs running again after stopping ({} of them due under the RESTART rule, slowest \
         {}% of T past due); not restarted in time, excused: {} too little capacity, {} after a failed start, \
         {} previous extent unread, {} never published (their host never went live), {} OVERDUE (a failure unless SIM_STRICT_RESTART=0); fence interlock: {} fences waited for a VM start, {} failed (start outlasted the exec timeout), {} starts refused, {} publishes skipped while fencing; {} publishes ({} failed), {} extent reads ({} failed); {:.0} simulated s, \
         {:.2?} wall",
        total.runs,
        v.tight_runs,
        v.vms,
        total.crashes,
        v.daemon_crashes,
        v.coordinator_crashes,
        v.plans,
        v.starts,
        v.start_failures,
        v.hangs,
        v.withdrawn,
        v.restarts,
        v.due_restarts,
        v.max_due_ratio_pct,
        v.tight_capacity,
        v.after_failed_start,
        v.missed_previous,
        v.never_published,
        v.overdue,
        v.interlock_waits,
        v.interlock_timeouts,
        v.refused_starts,
        v.skipped_publishes,
        v.publishes,
        v.publish_failures,
        v.reads,
        v.read_failures,
        total.sim_us as f64 / 1e6,
        started.elapsed()
    );
    println!(
        "sim failover, lying drivers: {} runs with lies, {} inventories lied ({} VM omissions, {} VMs listed \
         twice), {} lookups by UUID ({} failed), {} VMs stopped by the administrator, {} failover starts \
         while a copy ran that its driver had hidden from every inventory (diskbeat never saw it)",
        v.lying_runs,
        v.lies,
        v.omissions,
        v.duplicates,
        v.lookups,
        v.lookup_failures,
        v.admin_stops,
        v.hidden_twice
    );
    println!(
        "sim failover, broken destroys and second copies: {} destroys ({} failed: drivers that cannot \
         stop a VM for T to 10 T), {} VMs started a second time by the administrator ({} resolved to one copy, \
         {} failover starts while such a copy ran)",
        v.destroys,
        v.destroy_failures,
        v.admin_twice,
        v.copies_resolved,
        v.twice_after_admin
    );
    if !failures.is_empty() {
        let mut msg = String::new();
        for f in &failures {
            let _ = writeln!(msg, "{f}\n");
        }
        panic!("{} failing seed(s) (base seed {base}):\n{msg}", failures.len());
    }
}
