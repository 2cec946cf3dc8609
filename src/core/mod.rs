//! The heartbeat state machine: pure, deterministic, no I/O, no clock (quinn-proto's shape).
//!
//! [`Node`] holds every rule of the heartbeat loop. Its driver (the daemon in production, the
//! simulator in `tests/sim.rs`) only performs what [`Node::poll_action`] asks and feeds the results
//! back through the `handle_*` calls:
//!
//! ```text
//! loop {
//!     while let Some(action) = node.poll_action(now) { perform(action) -> node.handle_*(now, ..) }
//!     sleep until node.poll_timeout() (or a stop request: node.handle_stop(now))
//! }
//! ```
//!
//! Times are the driver's monotonic milliseconds, passed in.
//!
//! Allocation: [`Node`] allocates only in [`Node::new`] (its peers, queues and network state are
//! sized then). Its heartbeat path does not allocate: a steady-state cycle (`poll_timeout`,
//! `poll_action`, `handle_sweep`, `handle_write`, `poll_event`: `tests/core_alloc.rs`,
//! `benches/core.rs`), receiving a packet (`handle_packet`) and building a beat (`view_at`,
//! `beat_packet`) (`benches/net.rs`); events go into a queue sized in `new`.
//! [`failover::Failover`] does allocate (inventories, host states, restart plans, the
//! definitions of VMs to start): it runs on the daemon's VM thread, never on the heartbeat loop.

pub mod failover;
pub mod interlock;
pub mod net;
pub mod node;
pub mod own;
pub mod partition;
pub mod peer;

pub use node::{Node, DEVICE_JOBS};
pub use peer::{silence_rule, GoneProof, NotProven, Peer, PeerChange, PeerState, SilenceRule};

use crate::format::{Corruption, NAME_LEN};
use crate::timing::Timing;

/// Exit statuses of the heartbeat loop (and of `diskbeat daemon`).
pub const EXIT_LEFT: u8 = 0;
pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_FENCED: u8 = 3;
/// Stopped while its fence action kept failing: the host was NOT fenced by us.
pub const EXIT_FENCE_FAILED: u8 = 4;

/// Why a read or write did not complete (the core's own type: no dependency on the I/O layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IoFailure {
    /// Not completed within its timeout (or not submitted: buffers busy).
    TimedOut,
    /// The device returned an error (errno), or a short transfer (EIO).
    Failed(i32),
}

/// The bytes of one sweep (the disk in the daemon, memory in the simulator).
pub trait SlotSource {
    fn slot(&self, slot: u32) -> Result<&[u8], IoFailure>;
    fn mailbox(&self) -> Result<&[u8], IoFailure>;
    /// The superblock sector, read in the same submission as the table.
    fn superblock(&self) -> Result<&[u8], IoFailure>;
}

#[derive(Debug, Clone, Copy)]
pub struct NodeConfig {
    pub slot: u32,
    pub slot_count: u32,
    pub cluster_uuid: uuid::Uuid,
    /// Random per daemon start: a restart is a new incarnation.
    pub host_uuid: uuid::Uuid,
    pub host_name: [u8; NAME_LEN],
    pub timing: Timing,
    /// The first 512 bytes of the superblock as read at start: every sweep must read them again.
    pub superblock: [u8; 512],
    /// A hardware watchdog is armed and fed only by this loop (published in every record).
    pub watchdog: bool,
    /// The fence action stops this host's VMs when it succeeds (reboot, exec; not log-only).
    pub fence_stops_vms: bool,
    /// Test only: take the slot at the first read, without watching it for the host-dead timeout.
    pub skip_acquire_wait: bool,
    /// Heartbeat networks this host uses (0: disk only, no packets, no partition rule; at most
    /// [`net::MAX_NETWORKS`]).
    pub networks: u8,
    /// Partition weight (docs/PARTITIONS.md criterion 3; default 1).
    pub weight: u32,
    /// Isolation addresses are configured (their reachability comes in through
    /// `Node::handle_isolation`).
    pub isolation_configured: bool,
    /// The kernel boot id, written in every record (nil: unknown).
    pub boot_id: uuid::Uuid,
    /// How long a peer with a fence device must be silent on the network AND unchanged on the
    /// disk before the coordinator powers it off ([`Timing::fence_suspicion_ms`]; docs/SAFETY.md,
    /// "Fence devices"). Which peers have a device: [`Node::set_fence_devices`].
    pub fence_suspicion_ms: u64,
}

/// What a peer's fence device did (`off`, then `status` until OFF), for
/// [`Node::handle_fence_device`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceOutcome {
    /// `off` succeeded and `status` then reported OFF: the host is powered off.
    Off,
    /// The agent failed (non-zero exit, not found) or `status` never said OFF: proves nothing.
    Failed,
    /// The agent did not finish within the device timeout (killed): proves nothing.
    TimedOut,
}

/// Why a fence device call was not made or its result not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAbort {
    /// The peer's record advanced (or another incarnation took the slot): it is alive.
    SlotAdvanced,
    /// Another member's fence intent is in the slot: that member calls the device.
    OtherFencer { fencer_slot: u32 },
    /// A lower live slot is the coordinator now: it decides.
    NotCoordinator,
    /// The device said off, but the slot no longer holds our intent: the host wrote after we
    /// read it (a device that reports off for a running host, or a late write). No proof.
    ChangedAfterOff,
}

/// What the driver must do next.
// Polled one at a time and moved, never stored in bulk: boxing the record would allocate on the
// heartbeat path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write `record` into our slot, abandoning it after `timeout_ms`; then `handle_write`.
    Write { record: crate::format::record::Record, timeout_ms: u64 },
    /// Read the record table, our mailbox and the superblock in one submission, abandoning it
    /// after `timeout_ms`; then `handle_sweep`.
    Sweep { timeout_ms: u64 },
    /// Carry out the fence action now; then `handle_fence`.
    Fence { reason: FenceReason, attempt: u32 },
    /// Write `record` into ANOTHER slot (`record.slot`): a fence intent or a fence-device proof
    /// for that slot's host (format 1.8), abandoning it after `timeout_ms`; then
    /// `handle_peer_write`.
    WritePeer { record: crate::format::record::Record, timeout_ms: u64 },
    /// Ask slot `slot`'s fence device to power its host off, then confirm with `status`, without
    /// blocking the loop; then `handle_fence_device` with the same slot and incarnation.
    FenceDevice { slot: u32, host_name: [u8; NAME_LEN], host_uuid: uuid::Uuid, generation: u64, attempt: u32 },
    /// A cycle succeeded: feed the hardware watchdog.
    FeedWatchdog,
    /// A fence action failed: make the watchdog fire as soon as it can (stop feeding it, shortest
    /// timeout). The host must not outlive a failed fence for long.
    ExpireWatchdog,
    /// Live for the first time (systemd readiness).
    Ready,
    /// The backup deadline thread must fence at this time if the loop has not moved it (None: off).
    SetBackupDeadline { deadline_ms: Option<u64> },
    /// Stop the loop with this exit status. `disarm_watchdog`: the watchdog may be disarmed (a
    /// clean leave is on the disk, or nothing of ours ever was); otherwise it stays armed and
    /// resets the host, keeping the promise the `watchdog_armed` flag made to peers.
    Exit { code: u8, disarm_watchdog: bool },
}

/// Why this host fences itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum FenceReason {
    /// No verified heartbeat within the self-fence deadline.
    StorageLost { since_ms: u64 },
    /// Our slot holds something we did not write: another writer is using it.
    ForeignWrite,
    /// The superblock changed or became invalid under us (re-formatted, wiped, another LUN).
    DiskChanged,
    /// A fence request arrived in our mailbox.
    FenceRequest { sender_slot: u32, request_id: u64 },
    /// The network is partitioned and the views on the disk, stable for the decision delay, put
    /// this host outside the surviving part (docs/PARTITIONS.md).
    Partition { rule: partition::Reason, survivors_lowest: Option<u32>, survivors: u32 },
}

impl FenceReason {
    /// Whether our slot may still be written (a mark) after deciding to fence.
    pub fn slot_is_ours(self) -> bool {
        !matches!(self, FenceReason::ForeignWrite | FenceReason::DiskChanged)
    }
}

/// Result of a fence action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceOutcome {
    /// The action completed (exec: exit status 0) and this host is still running (log-only,
    /// exec). `reboot` never reports.
    Done,
    /// The action failed (exec: non-zero status, missing command, timeout).
    Failed,
    /// The action has not run: a VM start is in flight (the fence interlock). Nothing starts or
    /// is published any more; the node asks again [`FENCE_WAIT_POLL_MS`] later, so the heartbeat
    /// loop never waits for the VM thread. Not an attempt: the interlock fails the attempt once
    /// the start outlasts its limit.
    Waiting,
}

/// Whether a daemon starting on boot `boot_id` must refuse its slot: the slot's last record is
/// from a daemon of this same boot that died holding the slot with a watchdog armed (not left,
/// not fenced). Its peers will take that host for reset once its watchdog fires; a new daemon
/// feeding the watchdog would break that promise while its VMs run (docs/SAFETY.md, "Daemon
/// death"). The daemon checks it at start; the simulator at every daemon restart.
pub fn breaks_watchdog_promise(last: &crate::format::record::Record, boot_id: uuid::Uuid) -> bool {
    use crate::format::record::{flags, State};
    let held = matches!(last.state, State::Joining | State::Live | State::SelfFencing);
    !boot_id.is_nil() && held && last.boot_id == boot_id && last.flags & flags::WATCHDOG_ARMED != 0
}

/// Whether a VM start the previous daemon of this slot asked for may still land on this host: not
/// if the slot's last record names another boot than ours (the host rebooted since: whatever
/// its hypervisor was starting died with it). Unknown boots (nil) may. `Failover` holds the
/// previous daemon's `starting` entries for [`failover::start_landing_ms`] only when this holds.
pub fn starts_may_land(last: Option<&crate::format::record::Record>, boot_id: uuid::Uuid) -> bool {
    match last {
        Some(r) => boot_id.is_nil() || r.boot_id.is_nil() || r.boot_id == boot_id,
        None => true,
    }
}

/// A whole-LUN ride-through, for status (docs/SAFETY.md, "Whole-LUN loss"). Times are the
/// node's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RideStatus {
    /// Our last verified write: the outage began after it.
    pub last_ok_ms: u64,
    /// When the ride began (our storage deadline passed with every member vouching).
    pub since_ms: u64,
    /// The deadline the members' newest vouching packets allow now.
    pub until_ms: u64,
    /// The ride-through cap (the storage deadline + 2 T), only while a member runs a format
    /// older than 1.7 (docs/SAFETY.md, "Whole-LUN loss"); `None`: no cap.
    pub cap_ms: Option<u64>,
    /// The member whose evidence is oldest, when it (not the cap) sets `until_ms`.
    pub limited_by: Option<u32>,
    /// The members that must keep vouching.
    pub members: partition::SlotSet,
}

/// How soon a fence that is [`FenceOutcome::Waiting`] is asked again.
pub const FENCE_WAIT_POLL_MS: u64 = 5;

/// Why this host will not (or no longer) use its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The slot's record is advancing: another host uses it.
    SlotInUse { host_name: [u8; NAME_LEN] },
    /// While joining, something else was written into our slot.
    ForeignDuringJoin,
    /// The slot could not be read or written for the host-dead timeout while acquiring.
    Storage,
    /// The superblock changed or became invalid before we went live.
    DiskChanged,
}

/// This host's phase, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Watching our slot before taking it.
    Acquiring,
    /// `joining` written; waiting 2 x io timeout before verifying it, then writing and reading
    /// back a first `live` heartbeat.
    Joining,
    Live,
    /// Decided to fence: the mark and the action are under way (or the action failed and is
    /// being retried).
    SelfFencing(FenceReason),
    /// The fence action succeeded and this host survived it (log-only, exec).
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
    /// Our slot's record stayed unchanged, but pool member `by_slot` still hears a host on it
    /// over the network: watching it again.
    SlotHolderHeard {
        by_slot: u32,
    },
    Joined {
        generation: u64,
    },
    Live {
        generation: u64,
    },
    Refused(RefuseReason),
    SelfFence(FenceReason),
    /// The fence action completed and this host survived it.
    FenceDone,
    /// The fence action failed; it is retried every interval.
    FenceFailed {
        attempt: u32,
    },
    /// The backup deadline thread ran the fence action while the loop was stuck.
    BackupFenced {
        ok: bool,
    },
    Left,
    /// The `leaving` record is on the disk, but writes of ours that timed out have not come
    /// back from the kernel and could still land over it: the leave waits for them.
    LeaveWaits {
        writes_in_flight: u32,
    },
    Peer {
        slot: u32,
        change: PeerChange,
    },
    PeerCorrupt {
        slot: u32,
        reason: Corruption,
    },
    /// Our cycle did not verify: why.
    CycleFailed {
        write: Option<IoFailure>,
        own_read: Option<IoFailure>,
        own_stale: bool,
    },
    /// The superblock read back differs from the one we started with, or is unreadable.
    SuperblockChanged,
    SuperblockUnreadable(IoFailure),
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
    /// The partition decision changed (computed from the views on the disk).
    Partition {
        decision: Result<partition::Reason, partition::NoDecision>,
        we_survive: bool,
        survivors: u32,
    },
    /// The whole heartbeat LUN is lost for us and every member, who all still hear each other:
    /// nobody fences (docs/SAFETY.md, "Whole-LUN loss"). Emitted every cycle while it lasts.
    LunLost {
        members: u32,
        until_ms: u64,
        /// Since our last verified write (the outage began after it).
        lost_for_ms: u64,
    },
    /// Riding through ended without the disk coming back: the rule no longer holds.
    RideThroughEnded,
    /// Slot `slot`'s host is silent on the network and unchanged on the disk for the suspicion
    /// time: as the coordinator we wrote our fence intent into its slot.
    FenceDeviceIntent {
        slot: u32,
        silent_ms: u64,
    },
    /// Our intent read back: the fence device is being called.
    FenceDeviceCalling {
        slot: u32,
        attempt: u32,
    },
    /// The fence device answered (and how long the call took).
    FenceDeviceResult {
        slot: u32,
        outcome: DeviceOutcome,
        took_ms: u64,
    },
    /// The proof (`fenced`, `fence_device`) is on the disk, read back: its VMs may restart.
    FenceDeviceProven {
        slot: u32,
    },
    /// No call, or no proof, and why.
    FenceDeviceAborted {
        slot: u32,
        why: DeviceAbort,
    },
}

#[cfg(test)]
mod failover_tests;
#[cfg(test)]
mod tests;
