//! VM failover: inventory, the coordinator's restart plan, and claims that make every restart
//! happen at most once. Pure code like [`super::Node`]: no I/O, no clock; the daemon's VM thread
//! (and the simulator) perform [`FailoverAction`]s and feed the results back. docs/FAILOVER.md.
//!
//! Safety does not rest on the coordinator. A host starts a VM only after (1) it durably wrote a
//! `Starting` claim for it in its own extent, then (2) read, fresh from the disk, the extent of every
//! slot whose VMs are not proven gone, and found no other holder. Two hosts racing for one VM each
//! write before they read, so at least one sees the other's claim and withdraws (registers on a
//! disk: whoever reads second sees the first write). The coordinator only keeps the work useful:
//! one target per VM, capacity, order.
//!
//! Positive evidence only: an entry of ours that holds a VM stops holding it only on positive
//! evidence that the VM does not run here (diskbeat destroyed it, the driver reports it
//! `stopped`, or a lookup by UUID answers "not defined here"), never because an inventory omitted
//! it: drivers omit running VMs (a libvirtd restart, a partial list, a transient domain during a
//! migration), and a dropped entry lets an older claim of a dead host become the highest again.

use super::peer::{GoneProof, NotProven, PeerState};
use crate::format::host_state::{
    Assignment, Epoch, HostCapacity, HostState, Plan, Unplaced, UnplacedCode, VmEntry, VmState,
};
use crate::planner::Protection;
use crate::vm::{Inventory, VmRunState};
use std::collections::{BTreeMap, BTreeSet};

/// Restart attempts per VM and failure: the first target, then one retry elsewhere.
pub const MAX_ATTEMPTS: u8 = 2;

/// A failing destroy is retried after one inventory interval, doubling per failure, at most this
/// many intervals apart (2 T at the daemon's interval of T/4): never a busy loop, never given up.
pub const RETRY_MAX_INTERVALS: u64 = 8;

/// How often the driver's inventory is polled: every io timeout (T/4), at least 500 ms (a poll
/// may spawn a hook process). The daemon and the simulator both take it from here.
pub fn inventory_interval_ms(timing: &crate::timing::Timing) -> u64 {
    u64::from(timing.io_timeout_ms).max(500)
}

/// How long after it was asked a VM start may still make the VM run: 4 host-dead timeouts (the
/// driver's contract, docs/FAILOVER.md "Starts in flight"; the simulator's slowest start). A
/// daemon that dies (or leaves) with a start in flight cannot say whether it landed; the next
/// incarnation treats "not running here" as evidence only after this long.
pub fn start_landing_ms(timing: &crate::timing::Timing) -> u64 {
    4 * u64::from(timing.host_dead_ms)
}

/// [`FailoverConfig::start_landing_ms`] for a daemon whose predecessor may (`core::starts_may_land`)
/// or may not have left a start in flight on this boot.
pub fn start_landing_hold_ms(timing: &crate::timing::Timing, starts_may_land: bool) -> u64 {
    if starts_may_land {
        start_landing_ms(timing)
    } else {
        0
    }
}

/// One slot as the heartbeat node sees it, copied out of [`super::Node`] every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotView {
    pub state: PeerState,
    /// The record's host uuid and generation: the incarnation whose extent speaks for the slot.
    pub host_uuid: uuid::Uuid,
    pub generation: u64,
    /// The record's extent sequence: the extent is re-read when it changes.
    pub extent_sequence: u64,
    pub gone: Result<GoneProof, NotProven>,
    /// Who may take this slot's silence as death, by its last record (format 1.7 `members`;
    /// `None`: anyone). A host not listed sees it `silent`, never proven gone by its watchdog: a
    /// coordinator must not make it the target of a VM this slot holds (it could never start it).
    pub lists: Option<crate::format::record::Members>,
}

impl SlotView {
    pub const FREE: SlotView = SlotView {
        state: PeerState::Free,
        host_uuid: uuid::Uuid::nil(),
        generation: 0,
        extent_sequence: 0,
        gone: Err(NotProven::NoHost),
        lists: None,
    };

    /// A slot no host holds: its extent is history, never evidence.
    fn is_free(&self) -> bool {
        matches!(self.state, PeerState::Free)
    }
    /// Its VMs may run: its claims block others. Unread and corrupt slots count: unknown is not gone.
    fn may_hold(&self) -> bool {
        !self.is_free() && self.gone.is_err()
    }
}

/// Static settings.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    pub slot: u32,
    pub slot_count: u32,
    /// How often the driver's inventory is polled.
    pub inventory_interval_ms: u64,
    /// A VM driver is configured (else this host publishes no capacity and takes no restarts).
    pub driver: bool,
    /// Caps the capacity the driver reports (tests; hosts that keep memory for themselves).
    pub capacity_limit: Option<HostCapacity>,
    /// Heartbeat addresses published with the inventory.
    pub hb_addrs: Vec<std::net::SocketAddr>,
    /// Status warns when the pool tolerates fewer host failures than this.
    pub tolerance_target: Option<u32>,
    /// [`start_landing_ms`]: a start our previous incarnation began may land until this long
    /// after we read its state.
    pub start_landing_ms: u64,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverAction {
    /// Ask the VM driver for the inventory; answer with [`Failover::handle_inventory`].
    PollInventory,
    /// Read `slot`'s extent; answer with [`Failover::handle_extent`]. `fresh`: for a claim check,
    /// read it now even if its record's sequence did not change.
    ReadExtent { slot: u32, fresh: bool },
    /// Write this host state into our extent; answer with [`Failover::handle_published`].
    Publish(HostState),
    /// Start a VM here: our claim is durable and no other holder was found.
    /// `protection`: the VM's settings as its previous holder published them, stored again on
    /// this host after the start (the exec hook keeps them outside the definition).
    Start { uuid: uuid::Uuid, name: String, definition: Vec<u8>, protection: crate::vm::ProtectionSettings },
    /// Stop a VM here: a start that failed (so that `Failed` means "not running here"), or the
    /// copy of a VM that runs twice whose claim is not the highest. Answer with
    /// [`Failover::handle_destroy`].
    Destroy { uuid: uuid::Uuid, name: String, why: DestroyWhy },
    /// Ask the driver about one VM by UUID (the inventory omitted it); answer with
    /// [`Failover::handle_lookup`]: `Ok(None)` only for an explicit "not defined here".
    Lookup { uuid: uuid::Uuid, name: String },
}

/// The incarnation an extent header names as its writer (docs/FORMAT.md §7, "Writer identity").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentWriter {
    /// `None` for a header of minor < 6, which names no host: judged on the generation alone.
    pub host_uuid: Option<uuid::Uuid>,
    /// 0 when there is no valid header.
    pub generation: u64,
}

impl ExtentWriter {
    /// Whether this extent speaks for `v`'s slot: the incarnation its record names wrote it, or
    /// an operator confirmed the slot's host off (`diskbeat fence --confirm-down`): their word is
    /// about the machine, so it covers what any earlier daemon in the slot ran too. No automatic
    /// proof covers an earlier incarnation: host uuids are per daemon start, so nothing on the
    /// disk tells the host's previous daemon from another host that took the slot.
    fn names(&self, v: &SlotView) -> bool {
        let same = self.generation == v.generation && self.host_uuid.is_none_or(|u| u == v.host_uuid);
        same || (self.generation <= v.generation && v.gone == Ok(GoneProof::OperatorConfirmed))
    }
}

/// Why diskbeat destroys a VM on this host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DestroyWhy {
    /// Its start failed: it may have half-started.
    FailedStart,
    /// It also runs on `other_slot`, whose claim is higher (ties: the lower slot wins): this copy
    /// is the one to go (docs/FAILOVER.md, "Two copies").
    RunningTwice { other_slot: u32, other_claim: u64, our_claim: u64 },
}

impl DestroyWhy {
    pub fn text(&self) -> String {
        match self {
            DestroyWhy::FailedStart => "its start failed (it may have half-started)".into(),
            DestroyWhy::RunningTwice { other_slot, other_claim, our_claim } => format!(
                "it also runs on slot {other_slot}, which holds the higher claim ({other_claim} against this host's {our_claim}): this copy is stopped"
            ),
        }
    }
}

/// One VM of a restart plan: where it comes from and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMove {
    pub vm: String,
    pub uuid: uuid::Uuid,
    pub from_slot: u32,
    pub to_slot: u32,
    pub wave: u32,
    pub attempt: u8,
}

/// Something the failover core decided or saw: the daemon logs it and keeps it in its event
/// history (`diskbeat events`), in the same words. Polled with [`Failover::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverEvent {
    /// As coordinator: a new restart plan (numbers only grow across coordinators).
    Plan {
        number: u64,
        moves: Vec<PlannedMove>,
        unplaced: Vec<(String, u32, UnplacedCode)>,
    },
    /// This host took an assignment of the plan: its claim is written, then checked.
    Claimed {
        vm: String,
        uuid: uuid::Uuid,
        from_slot: u32,
        plan: u64,
        attempt: u8,
    },
    /// Another host holds a VM this host claimed: withdrawn before starting.
    Withdrawn {
        vm: String,
        uuid: uuid::Uuid,
        holder_slot: u32,
    },
    /// The claim check passed: the start is handed to the driver.
    Starting {
        vm: String,
        uuid: uuid::Uuid,
    },
    Started {
        vm: String,
        uuid: uuid::Uuid,
        took_ms: u64,
    },
    StartFailed {
        vm: String,
        uuid: uuid::Uuid,
        error: String,
    },
    /// A VM that ran on `from_slot` (proven gone, or lost by a restarted host) runs on `to_slot`
    /// now, with a newer claim: seen in `to_slot`'s extent (or our own start).
    Restarted {
        vm: String,
        uuid: uuid::Uuid,
        from_slot: u32,
        to_slot: u32,
        claim: u64,
    },
    /// Reported running here and on `other_slot` for the confirmation time: this copy goes.
    RunningTwice {
        vm: String,
        uuid: uuid::Uuid,
        other_slot: u32,
        other_claim: u64,
        our_claim: u64,
    },
    Destroying {
        vm: String,
        uuid: uuid::Uuid,
        why: DestroyWhy,
    },
    Destroyed {
        vm: String,
        uuid: uuid::Uuid,
        why: DestroyWhy,
    },
    DestroyFailed {
        vm: String,
        uuid: uuid::Uuid,
        why: DestroyWhy,
        error: String,
        retry_in_ms: u64,
    },
}

/// Events kept while nobody polls them (the daemon polls after every action).
const MAX_QUEUED_EVENTS: usize = 1024;

/// A destroy to do, or to retry after a failure.
#[derive(Debug, Clone)]
struct DestroyJob {
    name: String,
    why: DestroyWhy,
    failures: u32,
    /// Not before this time (0: at once).
    due_ms: u64,
    since_ms: u64,
    error: Option<String>,
}

/// One VM (or a slot's VMs) not where the plan wants it, and why (status: nothing waits
/// silently).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    /// The VM, when one is known by name.
    pub vm: Option<String>,
    /// The slot whose VMs wait, when the reason is a slot's.
    pub slot: Option<u32>,
    /// Since when (the clock `now_ms` is given in), when known.
    pub since_ms: Option<u64>,
    pub reason: String,
}

/// A peer's extent as last read.
#[derive(Debug, Clone)]
enum Known {
    State(HostState),
    /// Never published (mkfs's empty extent): holds nothing.
    Empty,
    /// Unreadable, torn or undecodable: unknown.
    Bad(String),
    /// Published by another incarnation than the slot's record names (an intruder on the slot,
    /// the host a foreign record replaced, a previous incarnation not yet republished): never a
    /// reason to restart a VM, only a reason not to (`foreign_entries`); a claim check counts it.
    Foreign(HostState),
}

#[derive(Debug, Clone)]
struct ExtentCopy {
    generation: u64,
    /// The incarnation its header names.
    writer: ExtentWriter,
    /// The record extent sequence this copy answers (the one the read was asked for).
    sequence: u64,
    known: Known,
    /// Read after the slot stopped heartbeating: its last extent, whatever its last record says
    /// (a host can publish and die before a record carries the new sequence).
    last: bool,
    /// The last read failed: read again at this time (0: not scheduled yet).
    retry_at_ms: Option<u64>,
}

/// Whether a slot in this state writes no more (its extent is final until it comes back).
/// The slot's host stopped heartbeating for good: an extent read now is its last. Not `Silent`:
/// a host that does not list us may be riding through an outage of its own disk path and
/// publish again when it returns (tests/sim.rs: a copy read while silent was taken for final, and
/// an administrator's stop published after the outage was undone).
fn stopped(state: PeerState) -> bool {
    !matches!(
        state,
        PeerState::Live | PeerState::Unknown | PeerState::Unread | PeerState::Free | PeerState::Silent
    )
}

/// A claim check in progress: our `Starting` claims are durable; reading everyone else's.
#[derive(Debug, Clone)]
struct ClaimRound {
    uuids: BTreeSet<uuid::Uuid>,
    pending: BTreeSet<u32>,
    /// A slot that could not be read: its holdings are unknown, so nothing starts this round.
    blocked_by: Option<(u32, String)>,
    conflicts: BTreeMap<uuid::Uuid, u32>,
}

/// Why a VM of a silent host is not restarted (status).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    pub slot: u32,
    pub vms: Vec<String>,
    pub reason: NotProven,
}

/// One of our VMs the driver's inventory omits: still published (and held) as before, until
/// positive evidence says it does not run here (status).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MissingVm {
    pub name: String,
    /// When an inventory first omitted it (the clock `now_ms` is given in).
    pub since_ms: u64,
    pub why: String,
}

/// An entry of ours the driver's inventory omitted (in memory only: never published).
#[derive(Debug, Clone)]
struct Missing {
    since_ms: u64,
    /// Ask the driver about it by UUID (once per inventory that omits it).
    lookup_due: bool,
    why: String,
    /// The last lookup by UUID found it running here.
    runs: bool,
}

/// What the status shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailoverStatus {
    pub coordinator_slot: Option<u32>,
    pub is_coordinator: bool,
    pub plan: Option<Plan>,
    /// VMs of hosts that stopped heartbeating but are not proven gone: not restarted, and why.
    pub held: Vec<Held>,
    /// Our own claims and their states.
    pub own: Vec<(String, VmState)>,
    /// Our VMs the driver's inventory omits: kept, with their claims, never restarted elsewhere.
    pub missing: Vec<MissingVm>,
    pub driver_error: Option<String>,
    /// Why our claimed starts wait, if they do.
    pub blocked: Option<String>,
    /// VMs in our last state on the disk (`None`: nothing published yet).
    pub published_vms: Option<usize>,
    /// VMs two hosts that may both run them report as running (operator error: alarm).
    pub running_twice: Vec<(String, Vec<u32>)>,
    /// VMs (or a slot's VMs) not where the plan wants them, and why.
    pub waiting: Vec<Waiting>,
    /// The names of the plan's VMs (assignments and unplaced), by UUID: the plan on the disk
    /// carries UUIDs only.
    pub plan_names: BTreeMap<uuid::Uuid, String>,
    pub tolerance: Option<u32>,
    pub tolerance_target: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    Idle,
    Inventory,
    Read(u32),
    Publish,
    Destroy(uuid::Uuid),
    Lookup(uuid::Uuid),
}

/// A VM that must run again: (source slot, its entry, slots excluded as targets, attempt).
type Orphan = (u32, VmEntry, BTreeSet<u32>, u8);

/// Live targets: free capacity and the anti-affinity groups of what they hold.
type Targets = BTreeMap<u32, (HostCapacity, Vec<Option<String>>)>;
/// What a planner answer depends on: the VMs to place (UUID, claim) and the targets.
type PlacementKey = (Vec<(uuid::Uuid, u64)>, Targets);
/// A first-attempt orphan for the planner: (source slot, entry, excluded, attempt, claim).
type NewPlacement = (u32, VmEntry, BTreeSet<u32>, u8, u64);

/// The failover state machine of one host.
#[derive(Debug)]
pub struct Failover {
    cfg: FailoverConfig,
    slots: Vec<SlotView>,
    extents: Vec<Option<ExtentCopy>>,
    /// Our entries, by UUID: what we publish.
    own: BTreeMap<uuid::Uuid, VmEntry>,
    /// Our entries the last inventory omitted: kept as they were until positive evidence.
    missing: BTreeMap<uuid::Uuid, Missing>,
    /// Entries our previous incarnation held that the driver has not yet reported here: held
    /// (published `running`) until the driver says whether they run (then `running` or `lost`).
    unconfirmed: BTreeSet<uuid::Uuid>,
    /// Of those, the ones our previous incarnation was starting (its start may have been in
    /// flight when it died): "stopped" or "not defined here" is no evidence before this time.
    may_land_until: BTreeMap<uuid::Uuid, u64>,
    /// Entries confirmed not defined here, kept as `stopped` (with their claims) only while an
    /// older claim elsewhere would otherwise become the highest and restart the VM.
    absent: BTreeSet<uuid::Uuid>,
    capacity: Option<HostCapacity>,
    /// Our plan when we coordinate.
    plan: Option<Plan>,
    /// What we published last (or are publishing); `None` before the first publish.
    published: Option<HostState>,
    /// Our generation: the plan epoch carries it, and a new incarnation starts afresh.
    generation: u64,
    /// Our previous incarnation's entries, read once at start: VMs it ran become `Lost`.
    previous_read: bool,
    /// After a failed read of our own extent: when to read it again.
    previous_retry_ms: u64,
    next_inventory_ms: u64,
    inventory_seen: bool,
    driver_error: Option<String>,
    claim_round: Option<ClaimRound>,
    /// Starts approved by a claim round, not yet handed out.
    to_start: Vec<uuid::Uuid>,
    /// Starts handed out and not answered yet: several may run at once (equal restart orders).
    in_flight: BTreeSet<uuid::Uuid>,
    to_destroy: BTreeMap<uuid::Uuid, DestroyJob>,
    /// Slots whose extent read fails, since when (status; the first failure of a run of them).
    unreadable_since: BTreeMap<u32, u64>,
    /// Our VMs also reported running by another slot that may run them, since when (a copy is
    /// destroyed only once the double run outlasts [`Failover::twice_confirm_ms`]).
    twice_since: BTreeMap<uuid::Uuid, u64>,
    io: Io,
    /// The node is live (holds its slot, cycles verified): only then act.
    live: bool,
    /// A claim round was blocked by an unreadable slot: check again at this time.
    round_due_ms: Option<u64>,
    /// Why claimed starts wait (status).
    blocked: Option<String>,
    /// VMs in our last state whose write completed (status; `None` before the first).
    published_vms: Option<usize>,
    /// A publish failed: try again at this time (no busy loop on a failing disk).
    publish_after_ms: u64,
    /// The planner's last answer, reused while its inputs are unchanged (it may search).
    placement_cache: Option<(PlacementKey, Vec<Option<u32>>)>,
    /// Events not polled yet.
    events: std::collections::VecDeque<FailoverEvent>,
    /// When each start in flight was handed out (its duration, for the event).
    start_began_ms: BTreeMap<uuid::Uuid, u64>,
    /// Restarts (VM, claim) already reported; the ones on the disk when this daemon started are
    /// history, not news (`restarts_seeded`).
    restarts_seen: BTreeSet<(uuid::Uuid, u64)>,
    restarts_seeded: bool,
}

fn holds_top(entries: &[(u32, &VmEntry)]) -> Option<(u32, VmEntry)> {
    // Equal claims come from claims made at once: the one withdrawn before starting (`Failed`,
    // no attempt) says nothing about the VM, the other entry does (an administrator's stop, say).
    let withdrawn = |e: &VmEntry| e.state == VmState::Failed && e.attempt == 0;
    entries
        .iter()
        .max_by_key(|(slot, e)| (e.claim, !withdrawn(e), std::cmp::Reverse(*slot)))
        .map(|(s, e)| (*s, (*e).clone()))
}

impl Failover {
    pub fn new(cfg: FailoverConfig, now_ms: u64) -> Failover {
        assert!(cfg.slot < cfg.slot_count, "own slot out of range");
        let n = cfg.slot_count as usize;
        Failover {
            slots: vec![SlotView::FREE; n],
            extents: vec![None; n],
            own: BTreeMap::new(),
            missing: BTreeMap::new(),
            unconfirmed: BTreeSet::new(),
            may_land_until: BTreeMap::new(),
            absent: BTreeSet::new(),
            capacity: None,
            plan: None,
            published: None,
            generation: 0,
            previous_read: false,
            previous_retry_ms: 0,
            next_inventory_ms: now_ms,
            inventory_seen: !cfg.driver,
            driver_error: None,
            claim_round: None,
            to_start: Vec::new(),
            in_flight: BTreeSet::new(),
            to_destroy: BTreeMap::new(),
            unreadable_since: BTreeMap::new(),
            twice_since: BTreeMap::new(),
            io: Io::Idle,
            live: false,
            round_due_ms: None,
            blocked: None,
            published_vms: None,
            publish_after_ms: 0,
            placement_cache: None,
            events: std::collections::VecDeque::new(),
            start_began_ms: BTreeMap::new(),
            restarts_seen: BTreeSet::new(),
            restarts_seeded: false,
            cfg,
        }
    }

    pub fn config(&self) -> &FailoverConfig {
        &self.cfg
    }

    /// The next event to log and keep, oldest first.
    pub fn poll_event(&mut self) -> Option<FailoverEvent> {
        self.events.pop_front()
    }

    fn emit(&mut self, e: FailoverEvent) {
        if self.events.len() == MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// The node's view of every slot (ours included), and whether the node is live.
    pub fn handle_slots(&mut self, views: &[SlotView], own_generation: u64, live: bool) {
        assert_eq!(views.len(), self.slots.len());
        for (copy, (old, new)) in self.extents.iter_mut().zip(self.slots.iter().zip(views)) {
            // Copies are kept per generation; another host at the same generation (an intruder
            // takes the slot's generation + 1, a corrupt slot's taker starts at 1) reads afresh.
            if old.host_uuid != new.host_uuid {
                *copy = None;
            }
        }
        self.slots.copy_from_slice(views);
        // Whether a copy speaks for its slot can change with the slot's proof (`ExtentWriter::names`).
        for (copy, v) in self.extents.iter_mut().zip(&self.slots) {
            let Some(c) = copy.as_mut() else { continue };
            let ours = c.writer.names(v);
            c.known = match std::mem::replace(&mut c.known, Known::Empty) {
                Known::State(st) if !ours => Known::Foreign(st),
                Known::Foreign(st) if ours => Known::State(st),
                k => k,
            };
        }
        if own_generation != self.generation {
            // A new incarnation of this host: nothing we claimed before carries over except
            // through the previous extent (read once, below).
            self.generation = own_generation;
        }
        self.live = live;
    }

    /// Our own previous extent, read once before the first publish: VMs our previous incarnation
    /// held and that no longer run here become `Lost`, so the pool restarts them (a rebooted host
    /// must not erase the evidence that they ran). "No longer run here" needs positive evidence:
    /// the driver reports them stopped, or a lookup by UUID finds them not defined here. Until
    /// then they are published as held (`running`), whatever the inventory omits. Stopped entries
    /// keep their claims (an administrator's stop must survive a daemon restart).
    ///
    /// `Err`: our extent could not be read. Nothing is published until it is (a failed read is
    /// not "no previous state": that would erase the evidence of the VMs it ran); tried again
    /// an interval later.
    pub fn handle_previous(&mut self, now_ms: u64, previous: Result<Option<HostState>, String>) {
        let previous = match previous {
            Ok(p) => p,
            Err(why) => {
                self.previous_retry_ms = now_ms + self.cfg.inventory_interval_ms;
                self.blocked =
                    Some(format!("our own extent cannot be read ({why}): nothing is published yet"));
                return;
            }
        };
        self.previous_read = true;
        self.blocked = None;
        let Some(prev) = previous else { return };
        for e in prev.vms {
            let ran = e.state.holds() || e.state == VmState::Lost;
            // Our previous incarnation was starting it: the start may still land (it died or
            // left with the start in flight), so "stopped" is no evidence until it cannot.
            let may_land = e.state == VmState::Starting && self.cfg.driver;
            if may_land {
                self.may_land_until.insert(e.uuid, now_ms.saturating_add(self.cfg.start_landing_ms));
            }
            match self.own.get_mut(&e.uuid) {
                // Already polled running here (a daemon restart leaves VMs running): not lost,
                // and publishing it `Lost` would invite a second start elsewhere. Keep the higher
                // claim.
                Some(cur) if cur.state == VmState::Running => cur.claim = cur.claim.max(e.claim),
                // The driver reports it stopped here: positive evidence.
                Some(cur) if cur.state == VmState::Stopped && !ran => cur.claim = cur.claim.max(e.claim),
                Some(_) if ran && !may_land => self.insert_lost(e),
                Some(_) if !ran => {}
                // Not reported by the driver (yet), or reported stopped while a start of ours
                // may still land: a holder stays held until the driver says (and the start
                // cannot land any more). Without a driver nothing can say: lost, as it was.
                Some(_) | None if e.state.holds() && self.cfg.driver => {
                    let mut held = e;
                    // `running`, not `starting`: no claim round may start it again from here.
                    held.state = VmState::Running;
                    held.failure = None;
                    self.unconfirmed.insert(held.uuid);
                    if self.inventory_seen {
                        let why = if may_land { self.may_land_why() } else { Self::NOT_LISTED.into() };
                        self.missing.insert(
                            held.uuid,
                            Missing { since_ms: now_ms, lookup_due: true, why, runs: false },
                        );
                    }
                    self.own.insert(held.uuid, held);
                }
                Some(_) => {}
                None if ran => self.insert_lost(e),
                None if e.state == VmState::Stopped => {
                    self.own.insert(e.uuid, e);
                }
                None => {}
            }
        }
    }

    const NOT_LISTED: &'static str = "the driver's inventory does not list it: still held here, with its \
                                      claim, until the driver reports it stopped or not defined here";

    fn may_land_why(&self) -> String {
        format!(
            "our previous daemon was starting it and may have died with the start in flight: held \
             here, with its claim, until the driver reports it running, or for {} ms (a start \
             lands within that or never)",
            self.cfg.start_landing_ms
        )
    }

    /// Whether a start our previous incarnation began may still make `uuid` run here.
    fn may_land(&self, uuid: uuid::Uuid, now_ms: u64) -> bool {
        self.may_land_until.get(&uuid).is_some_and(|&until| now_ms < until)
    }

    fn insert_lost(&mut self, mut e: VmEntry) {
        e.state = VmState::Lost;
        e.failure = None;
        self.may_land_until.remove(&e.uuid);
        self.unconfirmed.remove(&e.uuid);
        self.missing.remove(&e.uuid);
        self.own.insert(e.uuid, e);
    }

    /// Whether [`Failover::handle_previous`] is due now (once the node is live; after a failed
    /// read, again an interval later).
    pub fn needs_previous(&self, now_ms: u64) -> bool {
        !self.previous_read && now_ms >= self.previous_retry_ms
    }

    pub fn handle_inventory(&mut self, now_ms: u64, result: Result<Inventory, String>) {
        debug_assert_eq!(self.io, Io::Inventory);
        self.io = Io::Idle;
        self.next_inventory_ms = now_ms + self.cfg.inventory_interval_ms;
        let inv = match result.and_then(check_inventory) {
            Ok(inv) => inv,
            Err(e) => {
                // Keep what we published: a driver hiccup must not look like every VM stopping.
                self.driver_error = Some(e);
                return;
            }
        };
        self.driver_error = None;
        self.inventory_seen = true;
        let mut cap = HostCapacity {
            memory_mib: inv.capacity.memory_mib,
            vcpus: inv.capacity.vcpus,
            accepts_restarts: true,
        };
        if let Some(limit) = self.cfg.capacity_limit {
            cap.memory_mib = cap.memory_mib.min(limit.memory_mib);
            // vCPUs are overcommitted on every hypervisor: a configured count is what the host
            // offers, also above its physical CPUs (u32::MAX: not configured).
            if limit.vcpus != u32::MAX {
                cap.vcpus = limit.vcpus;
            }
            cap.accepts_restarts = limit.accepts_restarts;
        }
        self.capacity = Some(cap);
        let mut seen = BTreeSet::new();
        for vm in &inv.vms {
            seen.insert(vm.uuid);
            let landing = vm.state == VmRunState::Stopped && self.may_land(vm.uuid, now_ms);
            if landing && self.own.contains_key(&vm.uuid) {
                // Defined here and stopped, while our previous daemon's start may still land:
                // held as it is (asked again next inventory).
                let why = self.may_land_why();
                let m = self.missing.entry(vm.uuid).or_insert(Missing {
                    since_ms: now_ms,
                    lookup_due: false,
                    why: String::new(),
                    runs: false,
                });
                m.why = why;
                continue;
            }
            self.missing.remove(&vm.uuid);
            self.absent.remove(&vm.uuid);
            let previous = self.unconfirmed.remove(&vm.uuid);
            if vm.state == VmRunState::Running || !previous {
                self.may_land_until.remove(&vm.uuid);
            }
            let state = match vm.state {
                VmRunState::Running => VmState::Running,
                VmRunState::Stopped => VmState::Stopped,
            };
            let top_elsewhere = self.max_claim_elsewhere(vm.uuid);
            let held_elsewhere = self.held_elsewhere(vm.uuid);
            let pending_destroy =
                self.to_destroy.get(&vm.uuid).is_some_and(|j| j.why == DestroyWhy::FailedStart);
            let is_new = !self.own.contains_key(&vm.uuid);
            let entry = self.own.entry(vm.uuid).or_insert_with(|| VmEntry {
                uuid: vm.uuid,
                name: vm.name.clone(),
                memory_mib: vm.memory_mib,
                vcpus: vm.vcpus,
                state,
                protection: vm.protection.level,
                order: vm.protection.order,
                anti_affinity: vm.protection.anti_affinity.clone(),
                claim: 0,
                attempt: 0,
                failure: None,
                definition: vm.definition.clone(),
            });
            entry.name.clone_from(&vm.name);
            entry.memory_mib = vm.memory_mib;
            entry.vcpus = vm.vcpus;
            entry.protection = vm.protection.level;
            entry.order = vm.protection.order;
            entry.anti_affinity.clone_from(&vm.protection.anti_affinity);
            entry.definition.clone_from(&vm.definition);
            if is_new && state == VmState::Running && !held_elsewhere {
                // Found running here (started outside failover): the newest holder, above every
                // claim elsewhere, so a stopped entry elsewhere never outranks it.
                entry.claim = top_elsewhere + 1;
            }
            if previous && state == VmState::Stopped {
                // Our previous incarnation held it; it is stopped now: lost, restarted elsewhere.
                entry.state = VmState::Lost;
                entry.failure = None;
                continue;
            }
            match (entry.state, state) {
                // A start in flight or a claim round: the driver may not show it running yet.
                (VmState::Starting, VmState::Stopped) => {}
                // A failed start being destroyed (it may have half-started): it stays a holder,
                // `Starting` with its failure, until the destroy succeeds.
                (VmState::Starting, VmState::Running) if pending_destroy => {}
                // Failed means "not running here": a failed start the driver shows running is a
                // start we did not see succeed, so it runs.
                (_, VmState::Running) => {
                    if !entry.state.holds() {
                        // Started here outside failover (or again): the newest holder, unless a
                        // host that may run it holds it: then this is a second copy, and it
                        // must not outrank the first (`two_copies`).
                        if !held_elsewhere {
                            entry.claim = entry.claim.max(top_elsewhere + 1);
                        }
                        entry.attempt = 0;
                    }
                    entry.state = VmState::Running;
                    entry.failure = None;
                }
                // Lost stays lost (restart pending) until someone holds a higher claim.
                (VmState::Lost, VmState::Stopped) | (VmState::Failed, VmState::Stopped) => {}
                (_, VmState::Stopped) => entry.state = VmState::Stopped,
                (_, _) => {}
            }
        }
        // Not listed: positive evidence only. An omitted VM keeps its entry and claim, exactly as
        // published (a libvirtd restart, a partial list, a migration's transient domain all omit
        // VMs that run), and the driver is asked about it by UUID. Starting, Failed and Lost are
        // our own states, not the driver's: they stay as they are.
        for (uuid, e) in &self.own {
            if seen.contains(uuid) || self.absent.contains(uuid) {
                continue;
            }
            if matches!(e.state, VmState::Running | VmState::Stopped) {
                let m = self.missing.entry(*uuid).or_insert_with(|| Missing {
                    since_ms: now_ms,
                    lookup_due: true,
                    why: Self::NOT_LISTED.into(),
                    runs: false,
                });
                m.lookup_due = true;
            }
        }
        self.forget_settled_missing();
    }

    /// Drops `missing` marks of entries that are gone or in a state of our own.
    fn forget_settled_missing(&mut self) {
        let (own, absent) = (&self.own, &self.absent);
        self.missing.retain(|u, _| {
            !absent.contains(u)
                && own.get(u).is_some_and(|e| matches!(e.state, VmState::Running | VmState::Stopped))
        });
    }

    /// The driver's answer to a lookup by UUID of a VM its inventory omitted: `Ok(Some(state))`
    /// defined here, `Ok(None)` not defined here (positive evidence that it does not run here),
    /// `Err` no answer (nothing changes; asked again after the next inventory).
    pub fn handle_lookup(
        &mut self,
        now_ms: u64,
        uuid: uuid::Uuid,
        result: Result<Option<VmRunState>, String>,
    ) {
        debug_assert_eq!(self.io, Io::Lookup(uuid));
        self.io = Io::Idle;
        if !self.missing.contains_key(&uuid) {
            return; // Listed again meanwhile.
        }
        let top_elsewhere = self.max_claim_elsewhere(uuid);
        let previous = self.unconfirmed.contains(&uuid);
        if previous && self.may_land(uuid, now_ms) && !matches!(result, Ok(Some(VmRunState::Running))) {
            // Not running yet is no evidence while our previous daemon's start may still land.
            let why = self.may_land_why();
            if let Some(m) = self.missing.get_mut(&uuid) {
                m.why = why;
            }
            return;
        }
        let Some(e) = self.own.get_mut(&uuid) else {
            self.missing.remove(&uuid);
            return;
        };
        let mut runs = false;
        let why = match result {
            Err(err) => format!("{}; its lookup by UUID failed: {}", Self::NOT_LISTED, truncate(&err)),
            Ok(Some(VmRunState::Running)) => {
                self.unconfirmed.remove(&uuid);
                self.may_land_until.remove(&uuid);
                if !e.state.holds() {
                    e.claim = e.claim.max(top_elsewhere + 1);
                    e.attempt = 0;
                }
                e.state = VmState::Running;
                e.failure = None;
                runs = true;
                "the driver's inventory does not list it, but its lookup by UUID says it runs here".into()
            }
            Ok(Some(VmRunState::Stopped)) if previous => {
                let e = e.clone();
                self.insert_lost(e);
                return;
            }
            Ok(Some(VmRunState::Stopped)) => {
                // Positive evidence: defined here and not running.
                if e.state.holds() {
                    e.state = VmState::Stopped;
                }
                "the driver's inventory does not list it; its lookup by UUID says it is defined here \
                 and stopped"
                    .into()
            }
            Ok(None) if previous => {
                let e = e.clone();
                self.insert_lost(e);
                return;
            }
            Ok(None) => {
                // Positive evidence: not defined here, so not running here. It leaves our state,
                // unless an older claim elsewhere would then be the highest and restart a VM an
                // administrator undefined or moved: then it stays, `stopped`, with its claim.
                let claim = e.claim;
                self.missing.remove(&uuid);
                if self.older_claim_elsewhere(uuid, claim) {
                    let e = self.own.get_mut(&uuid).expect("present");
                    e.state = VmState::Stopped;
                    e.failure = None;
                    self.absent.insert(uuid);
                } else {
                    self.own.remove(&uuid);
                }
                return;
            }
        };
        if let Some(m) = self.missing.get_mut(&uuid) {
            m.why = why;
            m.runs = runs;
        }
    }

    /// Whether another slot's entry for `uuid` with a claim not above `claim` may exist (an
    /// unread or unreadable extent of a slot that is not free counts: unknown is not absent).
    fn older_claim_elsewhere(&self, uuid: uuid::Uuid, claim: u64) -> bool {
        for (s, v) in self.slots.iter().enumerate() {
            let s = s as u32;
            if s == self.cfg.slot || v.is_free() {
                continue;
            }
            match &self.extents[s as usize] {
                Some(ExtentCopy { known: Known::State(st), generation, .. })
                    if *generation == v.generation =>
                {
                    if st.vms.iter().any(|e| e.uuid == uuid && e.claim <= claim) {
                        return true;
                    }
                }
                Some(ExtentCopy { known: Known::Empty, generation, .. }) if *generation == v.generation => {}
                _ => return true,
            }
        }
        false
    }

    /// Forgets the `absent` entries no older claim elsewhere could replace any more (and the
    /// marks of entries that are no longer our `stopped` ones: taken again, listed again).
    fn prune_absent(&mut self) {
        let mut forget = Vec::new();
        for &u in &self.absent {
            match self.own.get(&u) {
                Some(e) if e.state == VmState::Stopped => {
                    if !self.older_claim_elsewhere(u, e.claim) {
                        forget.push((u, true));
                    }
                }
                _ => forget.push((u, false)),
            }
        }
        for (u, remove) in forget {
            self.absent.remove(&u);
            if remove {
                self.own.remove(&u);
            }
        }
    }

    /// `writer`: the incarnation the extent's header names (no uuid and generation 0 when there
    /// is no valid header). Only the one the slot's record names speaks for the slot.
    pub fn handle_extent(
        &mut self,
        slot: u32,
        asked_sequence: u64,
        writer: ExtentWriter,
        result: Result<Option<HostState>, String>,
    ) {
        debug_assert_eq!(self.io, Io::Read(slot));
        self.io = Io::Idle;
        let s = slot as usize;
        let ours = writer.names(&self.slots[s]);
        let known = match result {
            Ok(Some(state)) => Known::State(state),
            Ok(None) => Known::Empty,
            Err(e) => Known::Bad(e),
        };
        if let Some(round) = self.claim_round.as_mut() {
            if round.pending.remove(&slot) {
                let v = self.slots[s];
                // A slot we see as free or proven gone counts unless the incarnation we judged
                // wrote its extent: any other writer may run what it holds (a newer incarnation
                // our view missed, an intruder, the owner a foreign record hid). Any other slot
                // may run VMs: it always counts.
                let counts = v.may_hold() || !ours;
                match &known {
                    Known::State(st) if counts => {
                        for e in &st.vms {
                            // Another holder, or our claim already used elsewhere (an entry at
                            // our claim or above, in any state: a stale assignment, an
                            // administrator's stop after a restart): withdraw.
                            let used = self.own.get(&e.uuid).is_some_and(|o| e.claim >= o.claim);
                            if (e.state.holds() || used) && round.uuids.contains(&e.uuid) {
                                round.conflicts.entry(e.uuid).or_insert(slot);
                            }
                        }
                    }
                    Known::Bad(why) if v.may_hold() => {
                        round.blocked_by.get_or_insert((slot, why.clone()));
                    }
                    _ => {}
                }
            }
        }
        let known = match known {
            Known::State(st) if !ours => Known::Foreign(st),
            k => k,
        };
        // A failed read keeps the last good copy for planning (but never for a claim check),
        // and is tried again an interval later (`retry_at_ms`, set by `poll_action`).
        if matches!(known, Known::Bad(_)) {
            match self.extents[s].as_mut() {
                Some(c) if !matches!(c.known, Known::Bad(_)) => c.retry_at_ms = Some(0),
                _ => {
                    self.extents[s] = Some(ExtentCopy {
                        generation: self.slots[s].generation,
                        writer,
                        sequence: asked_sequence,
                        known,
                        last: false,
                        retry_at_ms: Some(0),
                    })
                }
            }
            return;
        }
        self.unreadable_since.remove(&slot);
        self.extents[s] = Some(ExtentCopy {
            generation: self.slots[s].generation,
            writer,
            sequence: asked_sequence,
            known,
            last: stopped(self.slots[s].state),
            retry_at_ms: None,
        });
    }

    /// Our extent write completed (`Ok(sequence)`) or failed.
    pub fn handle_published(&mut self, now_ms: u64, result: Result<u64, String>) {
        debug_assert_eq!(self.io, Io::Publish);
        self.io = Io::Idle;
        match result {
            // Claims written in this publish are durable: check everyone else's now (reads
            // issued after the write completed).
            Ok(_) => {
                self.published_vms = self.published.as_ref().map(|p| p.vms.len());
                self.begin_round();
            }
            Err(_) => {
                // Not durable: publish again, after an interval.
                self.published = None;
                self.publish_after_ms = now_ms + self.cfg.inventory_interval_ms;
            }
        }
    }

    /// Starts a claim check for our durable `Starting` claims not yet approved.
    fn begin_round(&mut self) {
        if self.claim_round.is_some() {
            return;
        }
        // A due round with nothing left to check is done too (else `poll_action` recursed on it
        // forever: seen in the simulator, a blocked round whose claim went away before it was due).
        self.round_due_ms = None;
        let uuids: BTreeSet<uuid::Uuid> = self
            .own
            .values()
            .filter(|e| {
                // A failed start whose destroy is pending is never started again here.
                e.state == VmState::Starting
                    && !self.to_start.contains(&e.uuid)
                    && !self.in_flight.contains(&e.uuid)
                    && !self.to_destroy.contains_key(&e.uuid)
            })
            .map(|e| e.uuid)
            .collect();
        if uuids.is_empty() {
            return;
        }
        // Every other slot: the ones that may run VMs, and the free or proven-gone ones too, in
        // case a newer incarnation holds them than the one we judged (`handle_extent`).
        let pending = (0..self.cfg.slot_count).filter(|&s| s != self.cfg.slot).collect();
        self.claim_round = Some(ClaimRound { uuids, pending, blocked_by: None, conflicts: BTreeMap::new() });
    }

    pub fn handle_start(&mut self, now_ms: u64, uuid: uuid::Uuid, result: Result<(), String>) {
        let was = self.in_flight.remove(&uuid);
        debug_assert!(was, "an answer to a start that was not handed out");
        let took_ms = self.start_began_ms.remove(&uuid).map_or(0, |t| now_ms.saturating_sub(t));
        let Some(e) = self.own.get_mut(&uuid) else { return };
        let vm = e.name.clone();
        match &result {
            Ok(()) => self.emit(FailoverEvent::Started { vm, uuid, took_ms }),
            Err(why) => self.emit(FailoverEvent::StartFailed { vm, uuid, error: truncate(why) }),
        }
        let e = self.own.get_mut(&uuid).expect("present");
        match result {
            Ok(()) => e.state = VmState::Running,
            Err(why) => {
                // It may have half-started: destroy first; only then is it `Failed`.
                e.failure = Some(truncate(&why));
                let job = DestroyJob {
                    name: e.name.clone(),
                    why: DestroyWhy::FailedStart,
                    failures: 0,
                    due_ms: 0,
                    since_ms: now_ms,
                    error: None,
                };
                self.to_destroy.insert(uuid, job);
            }
        }
    }

    /// A destroy's outcome. A failure keeps the VM a holder here (it may run) and is retried
    /// after a backoff (an inventory interval, doubling, at most [`RETRY_MAX_INTERVALS`]), so a
    /// destroy that fails for minutes costs one hook call per backoff, and nothing else waits.
    pub fn handle_destroy(&mut self, now_ms: u64, uuid: uuid::Uuid, result: Result<(), String>) {
        debug_assert_eq!(self.io, Io::Destroy(uuid));
        self.io = Io::Idle;
        let Some(mut job) = self.to_destroy.remove(&uuid) else { return };
        if !self.own.contains_key(&uuid) {
            return;
        }
        let (vm, why) = (job.name.clone(), job.why.clone());
        match &result {
            Ok(()) => self.emit(FailoverEvent::Destroyed { vm, uuid, why }),
            Err(error) => {
                let shift = job.failures.min(16);
                let retry_in_ms = (self.cfg.inventory_interval_ms << shift)
                    .min(self.cfg.inventory_interval_ms.saturating_mul(RETRY_MAX_INTERVALS));
                self.emit(FailoverEvent::DestroyFailed { vm, uuid, why, error: truncate(error), retry_in_ms })
            }
        }
        let e = self.own.get_mut(&uuid).expect("present");
        match result {
            Ok(()) => match job.why {
                // `Failed`: not running here, so restarted elsewhere. Only from `Starting`: the
                // entry stays there while its destroy is pending (`handle_inventory`).
                DestroyWhy::FailedStart if e.state == VmState::Starting => e.state = VmState::Failed,
                DestroyWhy::FailedStart => {}
                // Stopped by diskbeat: positive evidence; the claim stays (it is not the highest).
                DestroyWhy::RunningTwice { .. } => {
                    e.state = VmState::Stopped;
                    e.failure = None;
                }
            },
            Err(why) => {
                if job.why == DestroyWhy::FailedStart {
                    e.failure = Some(truncate(&format!("stopping after a failed start failed: {why}")));
                }
                job.failures = job.failures.saturating_add(1);
                let shift = (job.failures - 1).min(16);
                let delay_ms = (self.cfg.inventory_interval_ms << shift)
                    .min(self.cfg.inventory_interval_ms.saturating_mul(RETRY_MAX_INTERVALS));
                job.due_ms = now_ms.saturating_add(delay_ms);
                job.error = Some(truncate(&why));
                self.to_destroy.insert(uuid, job);
            }
        }
    }

    /// The next action, or `None` (then wait until [`Failover::poll_timeout`] or new input).
    pub fn poll_action(&mut self, now_ms: u64) -> Option<FailoverAction> {
        let action = self.next_action(now_ms);
        self.assert_invariants();
        action
    }

    fn next_action(&mut self, now_ms: u64) -> Option<FailoverAction> {
        if self.io != Io::Idle {
            return None;
        }
        if let Some((&uuid, job)) = self.to_destroy.iter().find(|(_, j)| now_ms >= j.due_ms) {
            self.io = Io::Destroy(uuid);
            let (name, why) = (job.name.clone(), job.why.clone());
            self.emit(FailoverEvent::Destroying { vm: name.clone(), uuid, why: why.clone() });
            return Some(FailoverAction::Destroy { uuid, name, why });
        }
        if self.cfg.driver && now_ms >= self.next_inventory_ms {
            self.io = Io::Inventory;
            return Some(FailoverAction::PollInventory);
        }
        if self.cfg.driver {
            if let Some((&uuid, m)) = self.missing.iter_mut().find(|(_, m)| m.lookup_due) {
                m.lookup_due = false;
                let name = self.own.get(&uuid).map_or_else(String::new, |e| e.name.clone());
                self.io = Io::Lookup(uuid);
                return Some(FailoverAction::Lookup { uuid, name });
            }
        }
        // Claim round reads come before anything else we read.
        if let Some(round) = &self.claim_round {
            if let Some(&slot) = round.pending.iter().next() {
                self.io = Io::Read(slot);
                return Some(FailoverAction::ReadExtent { slot, fresh: true });
            }
            let round = self.claim_round.take().expect("checked");
            self.finish_round(round, now_ms);
        }
        if self.round_due_ms.is_some_and(|t| now_ms >= t) && self.published.is_some() {
            self.begin_round();
            return self.next_action(now_ms);
        }
        if let Some(uuid) = self.to_start.pop() {
            if let Some(e) = self.own.get(&uuid) {
                if e.state == VmState::Starting {
                    // Not an `io`: the driver may run the starts of one wave at once.
                    self.in_flight.insert(uuid);
                    self.start_began_ms.insert(uuid, now_ms);
                    let vm = e.name.clone();
                    self.emit(FailoverEvent::Starting { vm, uuid });
                    let e = self.own.get(&uuid).expect("present");
                    let protection = crate::vm::ProtectionSettings {
                        level: e.protection,
                        order: e.order,
                        anti_affinity: e.anti_affinity.clone(),
                    };
                    return Some(FailoverAction::Start {
                        uuid,
                        name: e.name.clone(),
                        definition: e.definition.clone(),
                        protection,
                    });
                }
            }
        }
        // Extents whose record sequence changed (or a new generation).
        for s in 0..self.cfg.slot_count {
            if s == self.cfg.slot {
                continue;
            }
            let v = self.slots[s as usize];
            if v.is_free() || matches!(v.state, PeerState::Unread) {
                continue;
            }
            let retry = self.cfg.inventory_interval_ms;
            let stale = match self.extents[s as usize].as_mut() {
                None => true,
                Some(c) => match c.retry_at_ms {
                    // A failed read: again after an interval, not in a busy loop.
                    Some(0) => {
                        c.retry_at_ms = Some(now_ms + retry);
                        self.unreadable_since.entry(s).or_insert(now_ms);
                        false
                    }
                    Some(at) => now_ms >= at,
                    None => {
                        c.sequence != v.extent_sequence
                            || c.generation != v.generation
                            || (stopped(v.state) && !c.last)
                    }
                },
            };
            if stale {
                self.io = Io::Read(s);
                return Some(FailoverAction::ReadExtent { slot: s, fresh: false });
            }
        }
        if !self.live || !self.previous_read || !self.inventory_seen {
            return None;
        }
        self.coordinate();
        self.take_assignments();
        self.note_restarts();
        self.two_copies(now_ms);
        if self.to_destroy.values().any(|j| now_ms >= j.due_ms) {
            return self.next_action(now_ms);
        }
        self.forget_settled_missing();
        self.prune_absent();
        let state = self.host_state();
        if self.published.as_ref() != Some(&state) && now_ms >= self.publish_after_ms {
            self.published = Some(state.clone());
            self.io = Io::Publish;
            return Some(FailoverAction::Publish(state));
        }
        None
    }

    /// Checked after every poll, in release builds too: a violation panics (the daemon's panic
    /// hook fences this host with the message).
    fn assert_invariants(&self) {
        for u in &self.in_flight {
            assert!(self.own.contains_key(u), "a start in flight without a claim of ours: {u}");
        }
        for u in self.to_destroy.keys() {
            assert!(self.own.contains_key(u), "a destroy of a VM we do not publish: {u}");
        }
        if let Some(p) = &self.published {
            assert!(
                p.vms.iter().all(|e| e.claim <= crate::format::host_state::COUNTER_MAX),
                "claim out of range"
            );
        }
    }

    /// When to call [`Failover::poll_action`] again without new input.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.cfg.driver.then_some(self.next_inventory_ms);
        let destroy = self.to_destroy.values().map(|j| j.due_ms).min();
        let twice = self.twice_since.values().min().map(|t| t.saturating_add(self.twice_confirm_ms()));
        for x in
            [self.round_due_ms, (self.publish_after_ms > 0).then_some(self.publish_after_ms), destroy, twice]
                .into_iter()
                .flatten()
        {
            t = Some(t.map_or(x, |t| t.min(x)));
        }
        t
    }

    fn finish_round(&mut self, round: ClaimRound, now_ms: u64) {
        for uuid in &round.uuids {
            let Some(e) = self.own.get_mut(uuid) else { continue };
            if e.state != VmState::Starting {
                continue;
            }
            if let Some(slot) = round.conflicts.get(uuid) {
                // Another host holds it (or claimed it at the same time): withdraw. Nothing was
                // started, so `Failed` is true at once; attempt 0 says no attempt was made (the
                // VM is planned again anywhere, this host included, once nobody holds it).
                e.state = VmState::Failed;
                e.attempt = 0;
                e.failure = Some(format!("slot {slot} holds it: withdrawn before starting"));
                let (vm, holder_slot) = (e.name.clone(), *slot);
                self.emit(FailoverEvent::Withdrawn { vm, uuid: *uuid, holder_slot });
            } else if round.blocked_by.is_none() {
                self.to_start.push(*uuid);
            }
        }
        if let Some((slot, why)) = &round.blocked_by {
            // Unknown holdings: our claims stay (they block others) and are checked again later.
            self.blocked = Some(format!("slot {slot}'s extent cannot be read ({why}): starts wait"));
            self.round_due_ms = Some(now_ms + self.cfg.inventory_interval_ms);
        } else {
            self.blocked = None;
        }
        // Start in restart order: `to_start` is popped from the end.
        let own = &self.own;
        self.to_start.sort_by_key(|u| std::cmp::Reverse(own.get(u).map(|e| (e.order.is_none(), e.order))));
    }

    /// Every entry of every slot that may still hold VMs or is proven gone, with its slot.
    fn all_entries(&self) -> Vec<(u32, &VmEntry)> {
        let mut out = Vec::new();
        for (s, copy) in self.extents.iter().enumerate() {
            let s = s as u32;
            if s == self.cfg.slot || self.slots[s as usize].is_free() {
                continue;
            }
            if let Some(ExtentCopy { known: Known::State(st), generation, .. }) = copy {
                if *generation != self.slots[s as usize].generation {
                    continue;
                }
                out.extend(st.vms.iter().map(|e| (s, e)));
            }
        }
        out.extend(self.own.values().map(|e| (self.cfg.slot, e)));
        out
    }

    /// Whether `slot`'s claims block others: ours always; a peer's unless proven gone or free.
    fn may_hold(&self, slot: u32) -> bool {
        slot == self.cfg.slot || self.slots[slot as usize].may_hold()
    }

    /// Entries of extents another incarnation wrote (`Known::Foreign`, free slots included): their
    /// writer may run what they hold, or stopped what they list last, so they veto restarts.
    fn foreign_entries(&self) -> Vec<(u32, &VmEntry)> {
        let mut out = Vec::new();
        for (s, copy) in self.extents.iter().enumerate().filter(|(s, _)| *s as u32 != self.cfg.slot) {
            if let Some(ExtentCopy { known: Known::Foreign(st), .. }) = copy {
                out.extend(st.vms.iter().map(|e| (s as u32, e)));
            }
        }
        out
    }

    /// Whether another incarnation's extent holds `uuid` or lists it with a claim of `claim` or
    /// newer: a restart from an older claim would pass it over.
    fn foreign_veto(&self, uuid: uuid::Uuid, claim: u64) -> bool {
        self.foreign_entries().iter().any(|(_, e)| e.uuid == uuid && (e.state.holds() || e.claim >= claim))
    }

    /// Whether another slot that may run VMs holds `uuid`.
    fn held_elsewhere(&self, uuid: uuid::Uuid) -> bool {
        self.all_entries()
            .iter()
            .any(|(s, e)| *s != self.cfg.slot && e.uuid == uuid && e.state.holds() && self.may_hold(*s))
    }

    /// How long a VM must be seen running here and on another host before this host's copy is
    /// destroyed: two inventory intervals, so a view of the other host's extent that is one
    /// publish behind (it stopped its copy a moment ago) never destroys the only copy.
    pub fn twice_confirm_ms(&self) -> u64 {
        self.cfg.inventory_interval_ms.saturating_mul(2)
    }

    /// Two copies: every VM the driver reports running here that another slot that may run VMs
    /// also reports running. The copy whose claim is not the highest (ties: the higher slot
    /// loses) is destroyed, by its own host, once the double run outlasts
    /// [`Failover::twice_confirm_ms`]. Both hosts rank the same published entries the same way,
    /// so exactly one of them acts; docs/FAILOVER.md, "Two copies".
    fn two_copies(&mut self, now_ms: u64) {
        let mut seen = BTreeSet::new();
        let mut losers = Vec::new();
        for (s, e) in self.all_entries() {
            if s == self.cfg.slot || e.state != VmState::Running || !self.may_hold(s) {
                continue;
            }
            let Some(ours) = self.own.get(&e.uuid) else { continue };
            // Ours must be known to run: reported by the driver (its inventory or a lookup by
            // UUID), not merely held.
            if ours.state != VmState::Running
                || self.missing.get(&e.uuid).is_some_and(|m| !m.runs)
                || self.unconfirmed.contains(&e.uuid)
                || self.in_flight.contains(&e.uuid)
            {
                continue;
            }
            seen.insert(e.uuid);
            let theirs = (e.claim, std::cmp::Reverse(s));
            let mine = (ours.claim, std::cmp::Reverse(self.cfg.slot));
            if theirs > mine {
                losers.push((e.uuid, s, e.claim, ours.claim, ours.name.clone()));
            }
        }
        self.twice_since.retain(|u, _| seen.contains(u));
        for u in &seen {
            self.twice_since.entry(*u).or_insert(now_ms);
        }
        let confirm_ms = self.twice_confirm_ms();
        for (uuid, other_slot, other_claim, our_claim, name) in losers {
            let since = self.twice_since[&uuid];
            if now_ms < since.saturating_add(confirm_ms) || self.to_destroy.contains_key(&uuid) {
                continue;
            }
            let why = DestroyWhy::RunningTwice { other_slot, other_claim, our_claim };
            let vm = name.clone();
            self.emit(FailoverEvent::RunningTwice { vm, uuid, other_slot, other_claim, our_claim });
            let job = DestroyJob { name, why, failures: 0, due_ms: 0, since_ms: now_ms, error: None };
            self.to_destroy.insert(uuid, job);
        }
    }

    fn max_claim_elsewhere(&self, uuid: uuid::Uuid) -> u64 {
        self.all_entries()
            .into_iter()
            .chain(self.foreign_entries())
            .filter(|(s, e)| *s != self.cfg.slot && e.uuid == uuid)
            .map(|(_, e)| e.claim)
            .max()
            .unwrap_or(0)
    }

    /// The coordinator: the lowest live slot (ours included).
    pub fn coordinator(&self) -> Option<u32> {
        (0..self.cfg.slot_count).find(|&s| {
            if s == self.cfg.slot {
                self.live
            } else {
                self.slots[s as usize].state == PeerState::Live
            }
        })
    }

    /// The plan we act on: our coordinator's.
    fn current_plan(&self) -> Option<&Plan> {
        let c = self.coordinator()?;
        if c == self.cfg.slot {
            return self.plan.as_ref();
        }
        match &self.extents[c as usize] {
            Some(ExtentCopy { known: Known::State(st), generation, .. })
                if *generation == self.slots[c as usize].generation =>
            {
                st.plan.as_ref()
            }
            _ => None,
        }
    }

    /// Proven-gone slots whose final extent is not read (or not readable), with why.
    fn gone_without_final_extent(&self) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for (s, v) in self.slots.iter().enumerate() {
            if s as u32 == self.cfg.slot || v.gone.is_err() || v.is_free() {
                continue;
            }
            let why = match &self.extents[s] {
                Some(c) if c.last && c.generation == v.generation && !matches!(c.known, Known::Bad(_)) => {
                    continue
                }
                Some(ExtentCopy { known: Known::Bad(why), .. }) => {
                    format!("its extent cannot be read: {why}")
                }
                Some(c) if c.retry_at_ms.is_some() => "its extent cannot be read (retrying)".to_string(),
                _ => "its final extent is not read yet".to_string(),
            };
            out.push((s as u32, why));
        }
        out
    }

    /// VMs that must run again: (source slot, its entry, slots excluded as targets, attempt).
    fn orphans(&self) -> (Vec<Orphan>, Vec<Unplaced>) {
        let mut by_uuid: BTreeMap<uuid::Uuid, Vec<(u32, &VmEntry)>> = BTreeMap::new();
        for (s, e) in self.all_entries() {
            by_uuid.entry(e.uuid).or_default().push((s, e));
        }
        // A VM a proven-gone slot without a final extent may hold (by its last good copy) waits
        // for that extent: the copy may be stale (an administrator's stop since).
        let waiting: BTreeSet<u32> = self.gone_without_final_extent().iter().map(|(s, _)| *s).collect();
        by_uuid.retain(|_, entries| !entries.iter().any(|(s, _)| waiting.contains(s)));
        let mut out = Vec::new();
        let mut unplaced = Vec::new();
        for (uuid, entries) in by_uuid {
            // Held by a host that may run it: not ours to restart.
            if entries.iter().any(|(s, e)| e.state.holds() && self.may_hold(*s)) {
                continue;
            }
            let Some((src, top)) = holds_top(&entries) else { continue };
            if self.foreign_veto(uuid, top.claim) {
                continue;
            }
            let gone = src != self.cfg.slot && self.slots[src as usize].gone.is_ok();
            let (needs, attempt, excluded) = match top.state {
                VmState::Running | VmState::Starting if gone => (true, 1, BTreeSet::new()),
                VmState::Lost => (true, 1, BTreeSet::new()),
                // Withdrawn before starting: no attempt was made, no target failed.
                VmState::Failed if top.attempt == 0 => (true, 1, BTreeSet::new()),
                VmState::Failed if top.attempt < MAX_ATTEMPTS => {
                    let excl: BTreeSet<u32> = entries
                        .iter()
                        .filter(|(_, e)| {
                            e.state == VmState::Failed
                                && e.attempt > 0
                                && e.claim >= top.claim.saturating_sub(1)
                        })
                        .map(|(s, _)| *s)
                        .collect();
                    (true, top.attempt + 1, excl)
                }
                VmState::Failed => {
                    unplaced.push(Unplaced { uuid, source_slot: src, reason: UnplacedCode::StartFailed });
                    (false, 0, BTreeSet::new())
                }
                _ => (false, 0, BTreeSet::new()),
            };
            if !needs {
                continue;
            }
            if top.protection == Protection::None {
                unplaced.push(Unplaced { uuid, source_slot: src, reason: UnplacedCode::NotProtected });
                continue;
            }
            let mut excluded = excluded;
            // A holder proven gone by silence (its watchdog) is proven only to the hosts its last
            // record lists: the others would see it `silent`, count its claim, and never start it.
            // Only live candidates are named, so the usual case keeps an empty set (a first
            // attempt, placed by the planner).
            for (s, e) in &entries {
                let v = &self.slots[*s as usize];
                if let (true, Ok(GoneProof::WatchdogExpired), Some(m)) = (e.state.holds(), v.gone, v.lists) {
                    excluded.extend((0..self.cfg.slot_count).filter(|&t| {
                        let candidate = if t == self.cfg.slot {
                            self.live
                        } else {
                            self.slots[t as usize].state == PeerState::Live
                        };
                        t != *s && candidate && !m.get(t)
                    }));
                }
            }
            let _ = uuid;
            out.push((src, top, excluded, attempt));
        }
        (out, unplaced)
    }

    /// Live targets with their free capacity (VMs they hold subtracted).
    fn targets(&self) -> Targets {
        let mut t = BTreeMap::new();
        for s in 0..self.cfg.slot_count {
            let (cap, vms): (Option<HostCapacity>, Vec<&VmEntry>) = if s == self.cfg.slot {
                (self.capacity, self.own.values().collect())
            } else if self.slots[s as usize].state == PeerState::Live {
                match &self.extents[s as usize] {
                    Some(ExtentCopy { known: Known::State(st), generation, .. })
                        if *generation == self.slots[s as usize].generation =>
                    {
                        (st.capacity, st.vms.iter().collect())
                    }
                    _ => (None, vec![]),
                }
            } else {
                (None, vec![])
            };
            let Some(mut cap) = cap else { continue };
            if !cap.accepts_restarts {
                continue;
            }
            let mut groups = Vec::new();
            for e in vms.iter().filter(|e| e.state.holds()) {
                cap.memory_mib = cap.memory_mib.saturating_sub(e.memory_mib);
                cap.vcpus = cap.vcpus.saturating_sub(e.vcpus);
                groups.push(e.anti_affinity.clone());
            }
            t.insert(s, (cap, groups));
        }
        t
    }

    /// As coordinator: (re)compute the plan from what is on the disk.
    fn coordinate(&mut self) {
        if self.coordinator() != Some(self.cfg.slot) {
            self.plan = None;
            return;
        }
        // The final extent of a proven-gone slot is the input for its VMs: until it is read,
        // they wait (and only they: every other slot's VMs are planned as usual).
        let (orphans, mut unplaced) = self.orphans();
        let mut targets = self.targets();
        // Previous plan (ours, or the highest one on the disk): keep assignments still pending
        // on live targets, so a target already acting is never overtaken.
        let prev = self.highest_plan();
        let mut assignments: Vec<Assignment> = Vec::new();
        // Starts under way (the target holds our claim as `Starting`): kept until they run or
        // fail, so later waves wait for them. Their capacity is already counted by `targets`.
        if let Some(p) = &prev {
            for a in &p.assignments {
                let starting = self.all_entries().iter().any(|(s, e)| {
                    *s == a.target_slot
                        && e.uuid == a.uuid
                        && e.claim == a.claim
                        && e.state == VmState::Starting
                });
                if starting
                    && (self.slots[a.target_slot as usize].state == PeerState::Live
                        || a.target_slot == self.cfg.slot)
                {
                    assignments.push(a.clone());
                }
            }
        }
        let mut rest = Vec::new();
        for (src, top, excluded, attempt) in orphans {
            let claim = top.claim + 1;
            let kept = prev.as_ref().and_then(|p| {
                p.assignments
                    .iter()
                    .find(|a| a.uuid == top.uuid && a.claim == claim && targets.contains_key(&a.target_slot))
            });
            match kept {
                Some(a) => {
                    take_room(&mut targets, a.target_slot, &top);
                    assignments.push(Assignment {
                        source_slot: src,
                        source_generation: self.slots[src as usize].generation,
                        ..a.clone()
                    });
                }
                None => rest.push((src, top, excluded, attempt, claim)),
            }
        }
        // New placements. First attempts go through the planner (exact packing of the protected
        // VMs, anti-affinity where possible, best-effort on what is left): the same planner that
        // computes "host failures tolerated", so a pool it says survives is placed in full.
        let (first, retries): (Vec<_>, Vec<_>) = rest.into_iter().partition(|r| r.2.is_empty());
        let placed = self.place_with_planner(&first, &targets);
        for ((src, top, _, attempt, claim), target) in first.into_iter().zip(placed) {
            let source_generation = self.slots[src as usize].generation;
            let placed: NewPlacement = (src, top, BTreeSet::new(), attempt, claim);
            settle(&mut targets, target, &placed, source_generation, &mut assignments, &mut unplaced);
        }
        // Retries (a start failed on some host) avoid that host: best fit on the rest.
        let mut retries = retries;
        retries.sort_by(|a, b| {
            let (x, y) = (&a.1, &b.1);
            (x.protection != Protection::Protect)
                .cmp(&(y.protection != Protection::Protect))
                .then(crate::planner::plan::order_key(x.order).cmp(&crate::planner::plan::order_key(y.order)))
                .then(y.memory_mib.cmp(&x.memory_mib))
                .then(x.name.cmp(&y.name))
        });
        for placed in retries {
            let (src, top, excluded) = (placed.0, &placed.1, &placed.2);
            let fits = |cap: &HostCapacity| cap.memory_mib >= top.memory_mib && cap.vcpus >= top.vcpus;
            // Best fit by free memory; a host without the VM's anti-affinity group first.
            let choice = targets
                .iter()
                .filter(|(s, (cap, _))| !excluded.contains(s) && fits(cap))
                .min_by_key(|(s, (cap, groups))| {
                    let clash = top.anti_affinity.is_some() && groups.contains(&top.anti_affinity);
                    (clash, cap.memory_mib - top.memory_mib, **s)
                })
                .map(|(s, _)| *s);
            let source_generation = self.slots[src as usize].generation;
            settle(&mut targets, choice, &placed, source_generation, &mut assignments, &mut unplaced);
        }
        // Waves by restart order (unordered last); equal orders start together.
        let order_of = |a: &Assignment| -> Option<i64> {
            self.all_entries()
                .iter()
                .find(|(s, e)| *s == a.source_slot && e.uuid == a.uuid)
                .and_then(|(_, e)| e.order)
        };
        let mut orders: Vec<(bool, i64)> =
            assignments.iter().map(|a| crate::planner::plan::order_key(order_of(a))).collect();
        orders.sort();
        orders.dedup();
        for a in &mut assignments {
            let k = crate::planner::plan::order_key(order_of(a));
            a.wave = orders.iter().position(|o| *o == k).expect("present") as u32;
        }
        assignments.sort_by_key(|a| (a.wave, a.uuid));
        unplaced.sort_by_key(|u| u.uuid);
        if assignments.is_empty() && unplaced.is_empty() {
            self.plan = None;
            return;
        }
        let same = prev.as_ref().is_some_and(|p| {
            p.assignments == assignments
                && p.unplaced == unplaced
                && p.epoch.coordinator_slot == self.cfg.slot
                && p.epoch.coordinator_generation == self.generation
        });
        if same {
            self.plan = prev;
            return;
        }
        let number = prev.as_ref().map_or(0, |p| p.epoch.number).max(self.max_plan_number()) + 1;
        let plan = Plan {
            epoch: Epoch { number, coordinator_slot: self.cfg.slot, coordinator_generation: self.generation },
            assignments,
            unplaced,
        };
        let event = self.plan_event(&plan);
        self.emit(event);
        self.plan = Some(plan);
    }

    fn vm_name(&self, slot: u32, uuid: uuid::Uuid) -> String {
        let entries = self.all_entries();
        let of = |s: Option<u32>| entries.iter().find(|(x, e)| s.is_none_or(|s| *x == s) && e.uuid == uuid);
        of(Some(slot)).or_else(|| of(None)).map_or_else(|| uuid.to_string(), |(_, e)| e.name.clone())
    }

    fn plan_event(&self, p: &Plan) -> FailoverEvent {
        let moves = p
            .assignments
            .iter()
            .map(|a| PlannedMove {
                vm: self.vm_name(a.source_slot, a.uuid),
                uuid: a.uuid,
                from_slot: a.source_slot,
                to_slot: a.target_slot,
                wave: a.wave,
                attempt: a.attempt,
            })
            .collect();
        let unplaced = p
            .unplaced
            .iter()
            .map(|u| (self.vm_name(u.source_slot, u.uuid), u.source_slot, u.reason))
            .collect();
        FailoverEvent::Plan { number: p.epoch.number, moves, unplaced }
    }

    /// Reports every VM that runs on a host with a newer claim than the one it had on a slot
    /// proven gone (or that lost it: a restarted host's `lost` entry): the answer to "where did
    /// its VMs go" on every host that reads the extents, not only the coordinator and the target.
    fn note_restarts(&mut self) {
        let mut found = Vec::new();
        let mut current = BTreeSet::new();
        {
            // By VM: one pass over the entries, not one per running entry.
            let mut by_uuid: BTreeMap<uuid::Uuid, Vec<(u32, &VmEntry)>> = BTreeMap::new();
            for (s, e) in self.all_entries() {
                by_uuid.entry(e.uuid).or_default().push((s, e));
            }
            for entries in by_uuid.values() {
                // The newest claim a gone (or lost) holder had: where the VM came from.
                let source = |below: u64, to: u32| {
                    entries
                        .iter()
                        .filter(|(s, o)| {
                            *s != to
                                && o.claim < below
                                && (o.state == VmState::Lost
                                    || o.state.holds() && self.slots[*s as usize].gone.is_ok())
                        })
                        .max_by_key(|(_, o)| o.claim)
                        .map(|(s, _)| *s)
                };
                for (to, e) in entries {
                    if e.state != VmState::Running || !self.may_hold(*to) {
                        continue;
                    }
                    let Some(from) = source(e.claim, *to) else { continue };
                    current.insert((e.uuid, e.claim));
                    if !self.restarts_seen.contains(&(e.uuid, e.claim)) {
                        found.push(FailoverEvent::Restarted {
                            vm: e.name.clone(),
                            uuid: e.uuid,
                            from_slot: from,
                            to_slot: *to,
                            claim: e.claim,
                        });
                    }
                }
            }
        }
        // Extents on the disk when this daemon started hold old restarts: history, once every
        // slot's extent has been read.
        let seeded = self.restarts_seeded;
        if !seeded {
            let all_read = (0..self.cfg.slot_count).all(|s| {
                let v = self.slots[s as usize];
                s == self.cfg.slot
                    || v.is_free()
                    || v.state == PeerState::Unread
                    || self.extents[s as usize].is_some()
            });
            if !all_read {
                return;
            }
            self.restarts_seeded = true;
        }
        for e in found {
            if seeded {
                self.emit(e);
            }
        }
        // Only restarts still on the disk are remembered (bounded by the VMs that exist).
        self.restarts_seen = current;
    }

    /// Targets for first-attempt orphans, by the planner (`planner::restart_plan`): the live
    /// targets' free capacity and groups, the orphans on one failed pseudo-host. `None`: no room.
    fn place_with_planner(&mut self, orphans: &[NewPlacement], targets: &Targets) -> Vec<Option<u32>> {
        use crate::planner::{Host, Pool, Vm};
        if orphans.is_empty() {
            return Vec::new();
        }
        let key: PlacementKey = (orphans.iter().map(|o| (o.1.uuid, o.4)).collect(), targets.clone());
        if let Some((k, answer)) = &self.placement_cache {
            if *k == key {
                return answer.clone();
            }
        }
        let mut pool = Pool::default();
        let slots: Vec<u32> = targets.keys().copied().collect();
        for (&t, (cap, groups)) in targets {
            let h = pool.hosts.len();
            pool.hosts.push(Host {
                name: format!("slot{t}"),
                memory_mib: cap.memory_mib,
                max_vcpus: Some(u64::from(cap.vcpus)),
                accepts_restarts: true,
            });
            // What the target holds already counts in its free capacity; only its groups matter.
            for (i, g) in groups.iter().flatten().enumerate() {
                pool.vms.push(Vm {
                    name: format!("~held-{t}-{i}"),
                    memory_mib: 0,
                    vcpus: 0,
                    protection: Protection::None,
                    order: None,
                    host: Some(h),
                    anti_affinity: Some(g.clone()),
                });
            }
        }
        let failed = pool.hosts.len();
        pool.hosts.push(Host {
            name: "~failed".into(),
            memory_mib: 0,
            max_vcpus: None,
            accepts_restarts: false,
        });
        let first_orphan = pool.vms.len();
        for o in orphans {
            pool.vms.push(Vm {
                name: format!("~{}", o.1.uuid),
                memory_mib: o.1.memory_mib,
                vcpus: u64::from(o.1.vcpus),
                protection: o.1.protection,
                order: o.1.order,
                host: Some(failed),
                anti_affinity: o.1.anti_affinity.clone(),
            });
        }
        // Bounded search (counted in nodes, never in time), recomputed only when inputs change.
        let budget = crate::planner::Budget { max_nodes: 2_000_000, max_nodes_per_set: 200_000 };
        let plan = crate::planner::restart_plan(&pool, &[failed], budget);
        let mut answer = vec![None; orphans.len()];
        for p in &plan.placements {
            debug_assert!(
                p.vm >= first_orphan && p.host < slots.len(),
                "the planner places orphans on targets"
            );
            if let (Some(i), Some(&slot)) = (p.vm.checked_sub(first_orphan), slots.get(p.host)) {
                answer[i] = Some(slot);
            }
        }
        self.placement_cache = Some((key, answer.clone()));
        answer
    }

    fn max_plan_number(&self) -> u64 {
        let mut m = self.plan.as_ref().map_or(0, |p| p.epoch.number);
        for c in self.extents.iter().flatten() {
            // Another incarnation's plan counts too: numbers only grow, whoever published them.
            if let Known::State(st) | Known::Foreign(st) = &c.known {
                if let Some(p) = &st.plan {
                    m = m.max(p.epoch.number);
                }
            }
        }
        m
    }

    /// Our own plan if we made one this incarnation, else the highest-numbered plan on the disk.
    fn highest_plan(&self) -> Option<Plan> {
        if let Some(p) = &self.plan {
            return Some(p.clone());
        }
        self.extents
            .iter()
            .flatten()
            .filter_map(|c| match &c.known {
                Known::State(st) => st.plan.as_ref(),
                _ => None,
            })
            .max_by_key(|p| p.epoch)
            .cloned()
    }

    /// As a target: claim the assignments of the current plan that are ours and released.
    fn take_assignments(&mut self) {
        if self.claim_round.is_some() || !self.cfg.driver {
            return;
        }
        let Some(plan) = self.current_plan().cloned() else { return };
        let entries: Vec<(u32, VmEntry)> =
            self.all_entries().into_iter().map(|(s, e)| (s, e.clone())).collect();
        // The lowest wave with work left anywhere: later waves wait for it.
        // A start that failed is done for the waves, also while its destroy is retried
        // (`Starting` with its failure): later waves never wait on a wedged hypervisor.
        let done = |a: &Assignment| {
            entries.iter().any(|(_, e)| {
                e.uuid == a.uuid
                    && (e.claim > a.claim
                        || e.claim == a.claim
                            && (matches!(e.state, VmState::Running | VmState::Failed)
                                || e.state == VmState::Starting && e.failure.is_some()))
            })
        };
        let open_wave = plan.assignments.iter().filter(|a| !done(a)).map(|a| a.wave).min();
        let Some(open_wave) = open_wave else { return };
        let me = self.cfg.slot;
        for a in plan.assignments.iter().filter(|a| a.target_slot == me && a.wave == open_wave) {
            if self.own.get(&a.uuid).is_some_and(|e| e.claim >= a.claim) {
                continue; // Taken (or withdrawn) already.
            }
            // A stale assignment: its claim is used elsewhere already (any state).
            if entries.iter().any(|(s, e)| *s != self.cfg.slot && e.uuid == a.uuid && e.claim >= a.claim) {
                continue;
            }
            // Someone that may run it holds it: the coordinator will catch up.
            let held = entries.iter().any(|(s, e)| {
                *s != self.cfg.slot && e.uuid == a.uuid && e.state.holds() && self.may_hold(*s)
            });
            if held {
                continue;
            }
            let Some((_, src)) = entries.iter().find(|(s, e)| *s == a.source_slot && e.uuid == a.uuid) else {
                continue; // The source's extent is not read yet.
            };
            if self.foreign_veto(a.uuid, src.claim) {
                continue;
            }
            let mut e = src.clone();
            e.state = VmState::Starting;
            e.claim = a.claim;
            e.attempt = a.attempt;
            e.failure = None;
            let (vm, from_slot, attempt, number) =
                (e.name.clone(), a.source_slot, a.attempt, plan.epoch.number);
            self.own.insert(a.uuid, e);
            self.emit(FailoverEvent::Claimed { vm, uuid: a.uuid, from_slot, plan: number, attempt });
        }
    }

    fn host_state(&self) -> HostState {
        HostState {
            hb_addrs: self.cfg.hb_addrs.clone(),
            capacity: self.capacity,
            vms: self.own.values().cloned().collect(),
            plan: self.plan.clone(),
        }
    }

    /// The heartbeat addresses `slot` published, if its extent was read.
    pub fn peer_addrs(&self, slot: u32) -> Option<&[std::net::SocketAddr]> {
        match self.extents.get(slot as usize)? {
            Some(ExtentCopy { known: Known::State(st), .. }) => Some(&st.hb_addrs),
            _ => None,
        }
    }

    /// Peers' published states (for `plan --device` style views and status).
    pub fn peer_state(&self, slot: u32) -> Option<&HostState> {
        match self.extents.get(slot as usize)? {
            Some(ExtentCopy { known: Known::State(st), generation, .. })
                if *generation == self.slots[slot as usize].generation =>
            {
                Some(st)
            }
            _ => None,
        }
    }

    pub fn status(&self) -> FailoverStatus {
        let coordinator = self.coordinator();
        let mut held = Vec::new();
        for (s, v) in self.slots.iter().enumerate() {
            let s = s as u32;
            if s == self.cfg.slot
                || v.is_free()
                || v.state == PeerState::Live
                || v.state == PeerState::Unknown
            {
                continue;
            }
            if let (Err(reason), Some(ExtentCopy { known: Known::State(st), .. })) =
                (v.gone, &self.extents[s as usize])
            {
                let vms: Vec<String> =
                    st.vms.iter().filter(|e| e.state.holds()).map(|e| e.name.clone()).collect();
                if !vms.is_empty() {
                    held.push(Held { slot: s, vms, reason });
                }
            }
        }
        let mut running: BTreeMap<uuid::Uuid, (String, Vec<u32>)> = BTreeMap::new();
        for (s, e) in self.all_entries() {
            // Our own entries only while live: once fenced they are what we last published, and
            // the fence stopped what they list (a fenced host's alarm was false: tests/failover_libvirt.rs).
            let mine = s == self.cfg.slot && self.live;
            if e.state == VmState::Running
                && (mine || (s != self.cfg.slot && self.slots[s as usize].may_hold()))
            {
                running.entry(e.uuid).or_insert_with(|| (e.name.clone(), vec![])).1.push(s);
            }
        }
        FailoverStatus {
            coordinator_slot: coordinator,
            is_coordinator: coordinator == Some(self.cfg.slot),
            plan: self.current_plan().cloned(),
            plan_names: self
                .current_plan()
                .map(|p| {
                    let vms = p.assignments.iter().map(|a| (a.source_slot, a.uuid));
                    vms.chain(p.unplaced.iter().map(|u| (u.source_slot, u.uuid)))
                        .map(|(slot, uuid)| (uuid, self.vm_name(slot, uuid)))
                        .collect()
                })
                .unwrap_or_default(),
            held,
            own: self.own.values().map(|e| (e.name.clone(), e.state)).collect(),
            missing: self
                .missing
                .iter()
                .filter_map(|(u, m)| {
                    let e = self.own.get(u)?;
                    Some(MissingVm { name: e.name.clone(), since_ms: m.since_ms, why: m.why.clone() })
                })
                .collect(),
            driver_error: self.driver_error.clone(),
            blocked: self.blocked.clone(),
            published_vms: self.published_vms,
            running_twice: running.into_values().filter(|(_, s)| s.len() > 1).collect(),
            waiting: self.waiting(),
            tolerance: None,
            tolerance_target: self.cfg.tolerance_target,
        }
    }

    /// Every VM that waits, and why: destroys being retried, double runs being confirmed,
    /// proven-gone slots whose final extent is not read.
    fn waiting(&self) -> Vec<Waiting> {
        let mut out = Vec::new();
        for (s, why) in self.gone_without_final_extent() {
            let vms: Vec<String> = match &self.extents[s as usize] {
                Some(ExtentCopy { known: Known::State(st), .. }) => {
                    st.vms.iter().filter(|e| e.state.holds()).map(|e| e.name.clone()).collect()
                }
                _ => Vec::new(),
            };
            let which = if vms.is_empty() {
                "its VMs (none known)".to_string()
            } else {
                format!(
                    "its VMs ({})",
                    vms.iter().map(|n| crate::format::escape_name(n)).collect::<Vec<_>>().join(", ")
                )
            };
            out.push(Waiting {
                vm: None,
                slot: Some(s),
                since_ms: self.unreadable_since.get(&s).copied(),
                reason: format!(
                    "slot {s} is proven gone but {why}: {which} are not restarted until it is read; \
                     every other host's VMs fail over as usual"
                ),
            });
        }
        // (VMs held by a slot not proven gone are in `held`.) Held by an extent that does not
        // speak for its slot:
        let running_live: BTreeSet<uuid::Uuid> = self
            .all_entries()
            .iter()
            .filter(|(s, e)| {
                e.state.holds() && (*s == self.cfg.slot || self.slots[*s as usize].state == PeerState::Live)
            })
            .map(|(_, e)| e.uuid)
            .collect();
        for (s, copy) in self.extents.iter().enumerate() {
            let Some(ExtentCopy { known: Known::Foreign(st), writer, .. }) = copy else { continue };
            let s = s as u32;
            if s == self.cfg.slot || self.slots[s as usize].state == PeerState::Live {
                continue;
            }
            for e in st.vms.iter().filter(|e| e.state.holds() && !running_live.contains(&e.uuid)) {
                out.push(Waiting {
                    vm: Some(e.name.clone()),
                    slot: Some(s),
                    since_ms: None,
                    reason: format!(
                        "held by slot {s}'s extent, written by an earlier or other incarnation (generation {}) \
                         than the one its record names: held until that host republishes it, or an operator \
                         confirms the slot's host off (`diskbeat fence --confirm-down {s}`)",
                        writer.generation
                    ),
                });
            }
        }
        for job in self.to_destroy.values() {
            let tries = match (&job.error, job.failures) {
                (Some(e), n) => format!(
                    "; failed {}, last: {e}; retried with backoff",
                    crate::text::count(u64::from(n), "time", "times")
                ),
                (None, _) => String::new(),
            };
            out.push(Waiting {
                vm: Some(job.name.clone()),
                slot: None,
                since_ms: Some(job.since_ms),
                reason: format!("being destroyed here: {}{tries}", job.why.text()),
            });
        }
        for (u, since) in &self.twice_since {
            if self.to_destroy.contains_key(u) {
                continue;
            }
            let Some(e) = self.own.get(u) else { continue };
            out.push(Waiting {
                vm: Some(e.name.clone()),
                slot: None,
                since_ms: Some(*since),
                reason: format!(
                    "reported running here and on another host: the copy without the highest claim is \
                     destroyed once this lasts {} ms",
                    self.twice_confirm_ms()
                ),
            });
        }
        out
    }

    /// The live pool as the planner sees it: live hosts' capacity and the VMs they run.
    pub fn pool(&self) -> crate::planner::Pool {
        let mut pool = crate::planner::Pool::default();
        for s in 0..self.cfg.slot_count {
            let st: Option<(Option<HostCapacity>, Vec<&VmEntry>)> = if s == self.cfg.slot {
                Some((self.capacity, self.own.values().collect()))
            } else if self.slots[s as usize].state == PeerState::Live {
                self.peer_state(s).map(|st| (st.capacity, st.vms.iter().collect()))
            } else {
                None
            };
            let Some((Some(cap), vms)) = st else { continue };
            add_to_pool(&mut pool, s, cap, vms);
        }
        pool
    }
}

/// Adds slot `slot`'s host (named `slotN`, the name `plan --fail` takes) with capacity `cap` and
/// the VMs it holds to a planner pool: the live pool as the disk publishes it.
pub fn add_to_pool<'a>(
    pool: &mut crate::planner::Pool,
    slot: u32,
    cap: HostCapacity,
    vms: impl IntoIterator<Item = &'a VmEntry>,
) {
    let h = pool.hosts.len();
    pool.hosts.push(crate::planner::Host {
        name: format!("slot{slot}"),
        memory_mib: cap.memory_mib,
        max_vcpus: Some(u64::from(cap.vcpus)),
        accepts_restarts: cap.accepts_restarts,
    });
    for e in vms.into_iter().filter(|e| e.state.holds()) {
        pool.vms.push(crate::planner::Vm {
            name: e.name.clone(),
            memory_mib: e.memory_mib,
            vcpus: u64::from(e.vcpus),
            protection: e.protection,
            order: e.order,
            host: Some(h),
            anti_affinity: e.anti_affinity.clone(),
        });
    }
}

/// Counts `vm` against `target`'s free capacity and groups.
fn take_room(targets: &mut Targets, target: u32, vm: &VmEntry) {
    let (cap, groups) = targets.get_mut(&target).expect("a live target");
    cap.memory_mib = cap.memory_mib.saturating_sub(vm.memory_mib);
    cap.vcpus = cap.vcpus.saturating_sub(vm.vcpus);
    groups.push(vm.anti_affinity.clone());
}

/// Records where a new placement went: an assignment on `target`, or `no-capacity`.
fn settle(
    targets: &mut Targets,
    target: Option<u32>,
    (src, top, _, attempt, claim): &NewPlacement,
    source_generation: u64,
    assignments: &mut Vec<Assignment>,
    unplaced: &mut Vec<Unplaced>,
) {
    match target {
        Some(t) => {
            take_room(targets, t, top);
            assignments.push(Assignment {
                uuid: top.uuid,
                source_slot: *src,
                source_generation,
                target_slot: t,
                claim: *claim,
                attempt: *attempt,
                wave: 0,
            });
        }
        None => {
            unplaced.push(Unplaced { uuid: top.uuid, source_slot: *src, reason: UnplacedCode::NoCapacity })
        }
    }
}

/// An inventory that lists one UUID twice is a driver error: none of it is trusted.
fn check_inventory(inv: Inventory) -> Result<Inventory, String> {
    let mut seen = BTreeSet::new();
    for vm in &inv.vms {
        if !seen.insert(vm.uuid) {
            return Err(format!(
                "the driver listed VM '{}' ({}) twice: its inventory is not trusted",
                truncate(&vm.name),
                vm.uuid
            ));
        }
    }
    Ok(inv)
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: VmState, claim: u64, attempt: u8) -> VmEntry {
        VmEntry {
            uuid: uuid::Uuid::from_u128(1),
            name: "vm".into(),
            memory_mib: 256,
            vcpus: 1,
            state,
            protection: Protection::Protect,
            order: None,
            anti_affinity: None,
            claim,
            attempt,
            failure: None,
            definition: Vec::new(),
        }
    }

    /// Two hosts claimed one VM at once (claim 2): slot 1 withdrew before starting, slot 2 ran
    /// it and its administrator stopped it. The stop is what the pool knows of the VM; slot 1's
    /// withdrawal, though from the lower slot, must not make it "failed, to be restarted"
    /// (tests/sim.rs: ADMIN, a VM the administrator stopped was started again).
    #[test]
    fn a_withdrawn_claim_never_outranks_an_equal_claim_that_says_more() {
        let withdrawn = entry(VmState::Failed, 2, 0);
        let stopped = entry(VmState::Stopped, 2, 1);
        let (slot, top) = holds_top(&[(1, &withdrawn), (2, &stopped)]).unwrap();
        assert_eq!((slot, top.state), (2, VmState::Stopped));
        // Otherwise the lower slot wins a tie, and a higher claim always wins.
        let running = entry(VmState::Running, 2, 1);
        assert_eq!(holds_top(&[(1, &running), (2, &stopped)]).unwrap().0, 1);
        let newer = entry(VmState::Failed, 3, 0);
        assert_eq!(holds_top(&[(1, &newer), (2, &stopped)]).unwrap().0, 1);
    }
}
