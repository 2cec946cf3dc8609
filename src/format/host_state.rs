//! Payload kind 2 (format 1.5), "host state": what a host publishes in its data extent for the
//! pool's failover: heartbeat addresses (as kind 1), capacity, every VM it holds with its protection
//! settings, claim and definition, and (on the coordinator) the restart plan. docs/FORMAT.md §7.
//!
//! Encoded as a sequence of typed entries (little-endian): `type u16, reserved u16 (0), len u32`,
//! then `len` bytes, then zero padding to 8 bytes. Unknown entry types of a newer minor are skipped.

use std::net::SocketAddr;

/// A VM's state in its holder's inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Running here (as the driver last reported).
    Running,
    /// Defined here, not running.
    Stopped,
    /// A restart here was claimed durably (intent written); the start may be under way.
    Starting,
    /// A restart here failed (the reason is in `failure`); this host never retries it.
    Failed,
    /// Ran here in a previous incarnation of this host and does not run now (the host rebooted or
    /// its daemon restarted after a fence): the pool restarts it, like a gone host's VM.
    Lost,
}

impl VmState {
    /// Running or about to be: a holder in this state that is not proven gone blocks every
    /// other host from starting the VM.
    pub fn holds(self) -> bool {
        matches!(self, VmState::Running | VmState::Starting)
    }
}

/// One VM in a host's inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEntry {
    pub uuid: uuid::Uuid,
    /// At most 255 bytes of UTF-8.
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub state: VmState,
    pub protection: crate::planner::Protection,
    pub order: Option<i64>,
    /// At most 255 bytes of UTF-8.
    pub anti_affinity: Option<String>,
    /// Claim number: each restart of the VM elsewhere takes the previous highest claim + 1, so the
    /// newest holder is the one with the highest claim (docs/FAILOVER.md).
    pub claim: u64,
    /// Restart attempt this claim belongs to (0: started locally, not by failover).
    pub attempt: u8,
    /// Why the start failed (state `Failed`), at most 255 bytes.
    pub failure: Option<String>,
    /// What a survivor needs to start it (libvirt domain XML; exec hook's string).
    pub definition: Vec<u8>,
}

/// Identifies one published plan: who made it, in which incarnation, and its number (plan numbers
/// only grow across coordinators: a new coordinator continues from the highest it read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Epoch {
    pub number: u64,
    pub coordinator_slot: u32,
    pub coordinator_generation: u64,
}

/// One VM assigned to one target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Assignment {
    pub uuid: uuid::Uuid,
    /// Where the definition is read from (the gone holder with the highest claim).
    pub source_slot: u32,
    pub source_generation: u64,
    pub target_slot: u32,
    /// The claim the target takes (source's claim + 1).
    pub claim: u64,
    /// 1 for the first attempt, 2 for the retry elsewhere.
    pub attempt: u8,
    /// Start wave: targets start wave w only when every earlier wave's VM runs or failed.
    pub wave: u32,
}

/// A VM of a gone host the plan does not restart, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unplaced {
    pub uuid: uuid::Uuid,
    pub source_slot: u32,
    /// `UnplacedCode` as u8.
    pub reason: UnplacedCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnplacedCode {
    /// Protection `none`.
    NotProtected = 1,
    /// No survivor has room.
    NoCapacity = 2,
    /// Its starts failed on two hosts.
    StartFailed = 3,
}

/// The coordinator's restart plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub epoch: Epoch,
    pub assignments: Vec<Assignment>,
    pub unplaced: Vec<Unplaced>,
}

/// What the host offers to VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HostCapacity {
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Accepts restarted VMs (false: maintenance).
    pub accepts_restarts: bool,
}

/// The whole payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostState {
    /// Heartbeat addresses, at most 2 (as host info, kind 1).
    pub hb_addrs: Vec<SocketAddr>,
    /// `None` when the host runs no VM driver (its VMs are unknown to the pool).
    pub capacity: Option<HostCapacity>,
    pub vms: Vec<VmEntry>,
    pub plan: Option<Plan>,
}
