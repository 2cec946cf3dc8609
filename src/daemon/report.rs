//! The control socket's answer to `status`, typed: the daemon builds a [`StatusReport`] from its
//! snapshot (status.rs), serializes it as one JSON line, and `diskbeat status` reads it back into
//! the same structs. `status --json` prints exactly this shape; the field names are the contract
//! scripts rely on (`diskbeat status --help`).

use crate::core::partition::Reason;
use crate::core::peer::{GoneProof, NotProven};
use crate::core::FenceReason;
use crate::format::host_state::{Plan, VmState};
use crate::timing::Timing;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// The daemon's monotonic clock when it answered (every `*_ms` instant below is on it).
    pub now_ms: u64,
    #[serde(rename = "self")]
    pub me: SelfStatus,
    pub network: NetworkStatus,
    pub vms: VmsStatus,
    pub peers: Vec<PeerStatus>,
    /// The newest events (`diskbeat events` has the whole history), oldest first.
    pub recent_events: Vec<crate::daemon::journal::EventEntry>,
}

/// This host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelfStatus {
    pub slot: u32,
    pub name: String,
    /// `acquiring`, `joining`, `live`, `self_fencing`, `fenced`, `leaving`, `stopped`, ...
    pub state: String,
    pub host_uuid: String,
    pub cluster_name: String,
    pub device: String,
    pub engine: String,
    pub generation: u64,
    pub sequence: u64,
    pub last_ok_age_ms: u64,
    pub fence_deadline_in_ms: Option<u64>,
    pub fence_reason: Option<FenceReasonStatus>,
    pub fenced_at_ms: Option<u64>,
    pub fence_failures: u32,
    pub watchdog_armed: bool,
    pub fence_stops_vms: bool,
    pub timing: Timing,
    pub latency: Latencies,
    pub cycles: u64,
    pub failed_cycles: u64,
    /// Where the Prometheus endpoint listens (`metrics_addr`; `null`: off).
    #[serde(default)]
    pub metrics_addr: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FenceReasonStatus {
    pub kind: FenceReason,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latencies {
    /// As the io engine measured them (submission to completion), successful I/Os only.
    pub write: Latency,
    pub sweep: Latency,
    /// One cycle (a sweep and the write after it), wall time as the heartbeat loop measured it.
    #[serde(default)]
    pub cycle: Option<Latency>,
    /// Where these figures come from, in words ([`LATENCY_SOURCE`]).
    #[serde(default)]
    pub source: Option<String>,
}

/// Where the latency figures of [`Latencies`] come from.
pub const LATENCY_SOURCE: &str = "write and sweep: the io engine's own figures (submission to completion, \
                                   successful I/Os); cycle: the heartbeat loop's wall time for a sweep and the \
                                   write after it";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// The network side; only `enabled` when the daemon runs without network heartbeats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub enabled: bool,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<NetworkHeartbeat>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkHeartbeat {
    pub addresses: Vec<String>,
    /// The slots this host hears (its own view, as published on the disk).
    pub hears: Vec<u32>,
    pub beats_sent: u64,
    /// Dropped packets by reason (docs/PROTOCOL.md).
    pub drops: BTreeMap<String, u64>,
    pub drops_total: u64,
    pub weight: u32,
    pub isolation_configured: bool,
    pub isolated: bool,
    pub partition: Option<PartitionReport>,
    pub riding_through: bool,
    /// While riding through a whole-LUN outage: how long, who vouches, what ends it.
    #[serde(default)]
    pub ride: Option<RideReport>,
    pub members: u32,
}

/// A whole-LUN ride-through (docs/SAFETY.md, "Whole-LUN loss").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RideReport {
    /// Since this host's last verified write.
    pub disk_lost_for_ms: u64,
    /// Since its storage deadline passed with every member vouching.
    pub riding_for_ms: u64,
    /// Until it fences unless the evidence is renewed.
    pub ends_in_ms: u64,
    /// Until the ride-through cap (storage deadline + 2 T), kept only while a member runs a
    /// format older than 1.7; `null`: no cap.
    pub cap_in_ms: Option<u64>,
    /// The member whose evidence is oldest, when it (not the cap) sets `ends_in_ms`.
    pub limited_by_slot: Option<u32>,
    /// Every member that must keep vouching, with the age of its newest vouching packet's echo.
    pub vouching: Vec<RideMember>,
    pub ends_when: String,
    /// The rule for a further failure during the outage.
    pub rule: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RideMember {
    pub slot: u32,
    pub evidence_age_ms: Option<u64>,
}

/// The partition rule on the current views: a decision, or why there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionReport {
    pub participants: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivors: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub we_survive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_decision: Option<String>,
    pub text: String,
    pub stable_for_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_delay_ms: Option<u64>,
}

/// The failover side; only `enabled` when the daemon has no VM driver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmsStatus {
    pub enabled: bool,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailoverReport {
    pub coordinator_slot: Option<u32>,
    pub is_coordinator: bool,
    pub plan: Option<Plan>,
    /// The names of the plan's VMs by UUID (the plan itself carries UUIDs only).
    #[serde(default)]
    pub plan_names: BTreeMap<String, String>,
    pub held: Vec<HeldVms>,
    pub own: Vec<OwnVm>,
    /// Our VMs the driver's inventory omits: still held here, never restarted elsewhere.
    #[serde(default)]
    pub missing: Vec<MissingVm>,
    pub driver_error: Option<String>,
    pub blocked: Option<String>,
    pub published_vms: Option<usize>,
    pub running_twice: Vec<RunningTwice>,
    /// VMs (or a slot's VMs) not where the plan wants them, and why.
    #[serde(default)]
    pub waiting: Vec<WaitingVm>,
    pub host_failures_tolerated: Option<u32>,
    pub tolerance_target: Option<u32>,
    pub below_target: bool,
}

/// VMs of a silent host that are not restarted, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldVms {
    pub slot: u32,
    pub vms: Vec<String>,
    pub why_not: NotProven,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnVm {
    pub name: String,
    pub state: VmState,
}

/// One of our VMs the driver's inventory omits, since when (daemon clock, as `at_ms` of events)
/// and for how long, and why it is still held here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingVm {
    pub name: String,
    pub since_ms: u64,
    pub missing_for_ms: u64,
    pub why: String,
}

/// A VM, or a slot's VMs, waiting, since when (daemon clock) and for how long, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitingVm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    pub since_ms: Option<u64>,
    pub waiting_for_ms: Option<u64>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningTwice {
    pub name: String,
    pub slots: Vec<u32>,
}

/// One other slot, as this host sees it on the disk and the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub slot: u32,
    pub name: String,
    /// `free`, `unknown`, `live`, `self_fencing`, `leaving`, `fenced`, `dead`, `corrupt`, `unread`.
    pub state: String,
    pub generation: u64,
    pub sequence: u64,
    pub age_ms: u64,
    pub host_uuid: String,
    pub unreadable: bool,
    pub corrupt_reason: Option<String>,
    pub dead_at_ms: Option<u64>,
    pub watchdog_armed: bool,
    pub fence_failed: bool,
    pub generation_conflict: bool,
    pub vms_gone: VmsGone,
    pub silent_ms_at_death: Option<u64>,
    pub network: Option<PeerNetwork>,
    /// This host is fencing the peer through its fence device (docs/SAFETY.md, "Fence
    /// devices"): `stage` is `intent`, `calling`, `proving` or `failed` (asked again after T).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_device: Option<FenceDeviceJob>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FenceDeviceJob {
    pub stage: String,
    pub attempts: u32,
}

/// Whether a peer's VMs are proven gone: `proof` when they are, `why_not` otherwise.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct VmsGone {
    pub proven: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<GoneProof>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_not: Option<NotProven>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerNetwork {
    pub heard: bool,
    pub networks: Vec<PeerLink>,
    pub last_packet: Option<LastPacket>,
}

/// One network to one peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerLink {
    pub network: u32,
    pub address: Option<String>,
    pub heard: bool,
    pub last_heard_ms_ago: Option<u64>,
    pub packets: u64,
}

/// What the peer's newest packet says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastPacket {
    pub disk_lost: bool,
    pub disk_age_ms: Option<u64>,
    pub hears: Vec<u32>,
}
