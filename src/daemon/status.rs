//! The status the control socket serves: a snapshot the heartbeat loop updates in place (no
//! allocation per cycle) and the socket thread renders as JSON.

use super::report::*;
use crate::core::net::NetPeer;
use crate::core::node::PartitionStatus;
use crate::core::{Event, Node, Peer, PeerChange, PeerState, Phase};
use crate::format::decode_name;
use crate::stats::Histogram;
use crate::text::count;
use crate::timing::Timing;

/// Events `status` shows (the newest); `diskbeat events` has the whole history.
const RECENT_EVENTS: usize = 64;

pub struct Snapshot {
    pub now_ms: u64,
    pub slot: u32,
    pub name: String,
    pub device: String,
    pub engine: &'static str,
    pub host_uuid: uuid::Uuid,
    pub cluster_name: String,
    pub timing: Timing,
    pub phase: Phase,
    pub generation: u64,
    pub sequence: u64,
    pub last_ok_ms: u64,
    pub fence_deadline_ms: Option<u64>,
    pub fenced_at_ms: Option<u64>,
    pub fence_failures: u32,
    pub watchdog: bool,
    pub fence_stops_vms: bool,
    pub peers: Vec<Peer>,
    pub write_latency: Histogram,
    pub sweep_latency: Histogram,
    pub cycles: u64,
    pub failed_cycles: u64,
    /// The event history (`diskbeat events`); the newest are `status`'s `recent_events`.
    pub journal: super::journal::Journal,
    // Network heartbeats.
    pub hb_addrs: Vec<std::net::SocketAddr>,
    pub peer_addrs: crate::daemon::net::AddressBook,
    pub net_peers: Vec<NetPeer>,
    pub drops: crate::net::DropCounters,
    pub beats_sent: u64,
    pub partition: Option<PartitionStatus>,
    pub riding_through: bool,
    pub ride: Option<crate::core::RideStatus>,
    pub isolated: bool,
    pub isolation_configured: bool,
    pub weight: u32,
    pub members: u32,
    pub own_view: crate::format::record::NetView,
    /// The VM thread's view (`None` until its first step).
    pub failover: Option<crate::core::failover::FailoverStatus>,
    /// Peers being fenced through their devices: (slot, stage, attempts); capacity reserved.
    pub device_jobs: Vec<(u32, &'static str, u32)>,
    /// The heartbeat loop's own figures and the metrics endpoint's address (metrics.rs).
    pub metrics: super::metrics::SnapshotMetrics,
}

impl Snapshot {
    pub fn new(core: &Node, device: String, engine: &'static str, cluster_name: String) -> Snapshot {
        let cfg = core.config();
        Snapshot {
            now_ms: 0,
            slot: cfg.slot,
            name: decode_name(&cfg.host_name).unwrap_or("?").to_string(),
            device,
            engine,
            host_uuid: cfg.host_uuid,
            cluster_name,
            timing: cfg.timing,
            phase: core.phase(),
            generation: 0,
            sequence: 0,
            last_ok_ms: 0,
            fence_deadline_ms: None,
            fenced_at_ms: None,
            fence_failures: 0,
            watchdog: cfg.watchdog,
            fence_stops_vms: cfg.fence_stops_vms,
            peers: core.peers().to_vec(),
            write_latency: Histogram::default(),
            sweep_latency: Histogram::default(),
            cycles: 0,
            failed_cycles: 0,
            journal: super::journal::Journal::new(
                decode_name(&cfg.host_name).unwrap_or("?").to_string(),
                cfg.slot,
            ),
            hb_addrs: Vec::new(),
            peer_addrs: vec![[None; crate::core::net::MAX_NETWORKS]; core.peers().len()],
            net_peers: core.net().peers.clone(),
            drops: crate::net::DropCounters::new(),
            beats_sent: 0,
            partition: None,
            riding_through: false,
            ride: None,
            isolated: false,
            isolation_configured: cfg.isolation_configured,
            weight: cfg.weight,
            members: 0,
            own_view: crate::format::record::NetView::EMPTY,
            failover: None,
            device_jobs: Vec::with_capacity(crate::core::DEVICE_JOBS),
            metrics: Default::default(),
        }
    }

    /// Copies the core's state in (fixed-size copies only).
    pub fn update(&mut self, core: &Node, now_ms: u64) {
        self.now_ms = now_ms;
        self.phase = core.phase();
        self.generation = core.record().generation;
        self.sequence = core.record().sequence;
        self.last_ok_ms = core.last_ok_ms();
        self.fence_deadline_ms = core.fence_deadline_ms();
        self.fence_failures = core.fence_failures();
        self.peers.copy_from_slice(core.peers());
        self.write_latency.clone_from(&core.write_latency);
        self.sweep_latency.clone_from(&core.sweep_latency);
        self.cycles = core.cycles;
        self.failed_cycles = core.failed_cycles;
        self.net_peers.copy_from_slice(&core.net().peers);
        self.drops.clone_from(&core.net().drops);
        self.beats_sent = core.net().beats_sent;
        self.partition = core.partition().copied();
        self.riding_through = core.riding_through();
        self.ride = core.ride_status(now_ms);
        self.isolated = core.isolated();
        self.members = core.members().len();
        self.own_view = core.view_at(now_ms);
        self.device_jobs.clear();
        self.device_jobs.extend(core.device_jobs());
    }
}

fn latency(h: &Histogram) -> Latency {
    Latency {
        count: h.count(),
        p50_us: h.percentile_us(0.5),
        p99_us: h.percentile_us(0.99),
        p999_us: h.percentile_us(0.999),
        max_us: h.max_us(),
    }
}

pub fn peer_state_name(s: PeerState) -> &'static str {
    match s {
        PeerState::Free => "free",
        PeerState::Unknown => "unknown",
        PeerState::Live => "live",
        PeerState::SelfFencing => "self_fencing",
        PeerState::Leaving => "leaving",
        PeerState::Fenced => "fenced",
        PeerState::Dead => "dead",
        PeerState::Silent => "silent",
        PeerState::Corrupt => "corrupt",
        PeerState::Unread => "unread",
    }
}

/// One peer's network state: per network heard or not and when last, what its packets say.
fn peer_network(s: &Snapshot, slot: usize) -> Option<PeerNetwork> {
    let np = s.net_peers.get(slot)?;
    let timeout = s.timing.net_timeout_ms();
    let addrs = s.peer_addrs.get(slot).copied().unwrap_or_default();
    let networks = (0..s.hb_addrs.len())
        .map(|n| PeerLink {
            network: n as u32,
            address: addrs.get(n).copied().flatten().map(|a| a.to_string()),
            heard: np.heard_on(n, s.now_ms, timeout),
            last_heard_ms_ago: np.heard_ms[n].map(|t| s.now_ms.saturating_sub(t)),
            packets: np.accepted[n],
        })
        .collect();
    let last_packet = np.last.map(|l| LastPacket {
        disk_lost: l.disk_lost,
        disk_age_ms: (l.disk_age_ms != crate::net::packet::DISK_AGE_NEVER).then_some(l.disk_age_ms),
        hears: l.net_view.iter().collect(),
    });
    Some(PeerNetwork { heard: np.heard(s.now_ms, timeout), networks, last_packet })
}

/// This host's network side: addresses, drops by reason, the partition decision and why.
fn network(s: &Snapshot) -> NetworkStatus {
    if s.hb_addrs.is_empty() {
        return NetworkStatus { enabled: false, heartbeat: None };
    }
    let partition = s.partition.map(|p| {
        let stable_for_ms = s.now_ms.saturating_sub(p.stable_since_ms);
        match p.decision {
            Ok(d) => PartitionReport {
                participants: p.participants,
                survivors: Some(d.survivors.iter().collect()),
                we_survive: Some(!d.must_fence(s.slot)),
                reason: Some(d.reason),
                no_decision: None,
                text: partition_reason_text(&d.reason),
                stable_for_ms,
                decision_delay_ms: Some(s.timing.partition_delay_ms()),
            },
            Err(e) => PartitionReport {
                participants: p.participants,
                survivors: None,
                we_survive: None,
                reason: None,
                no_decision: Some(e.to_string()),
                text: format!("no decision ({e}): nobody fences for a partition"),
                stable_for_ms,
                decision_delay_ms: None,
            },
        }
    });
    NetworkStatus {
        enabled: true,
        heartbeat: Some(NetworkHeartbeat {
            addresses: s.hb_addrs.iter().map(|a| a.to_string()).collect(),
            hears: s.own_view.iter().collect(),
            beats_sent: s.beats_sent,
            drops: s.drops.iter().map(|(k, v)| (k.to_string(), v)).collect(),
            drops_total: s.drops.total(),
            weight: s.weight,
            isolation_configured: s.isolation_configured,
            isolated: s.isolated,
            partition,
            riding_through: s.riding_through,
            ride: s.ride.map(|r| ride_report(s, &r)),
            members: s.members,
        }),
    }
}

pub fn describe_event(e: &Event) -> String {
    let name = |n: &[u8; 64]| decode_name(n).unwrap_or("?").to_string();
    match e {
        Event::WaitingForSlot { holder, wait_ms } => {
            format!("slot held by '{}': watching it for {wait_ms} ms before taking it", name(holder))
        }
        Event::SlotHolderHeard { by_slot } => format!(
            "the slot's record has not changed, but slot {by_slot} still hears a host on this slot over the \
             network (its holder may be riding through a disk outage): watching it again; if this host \
             should not use this slot, stop it and pick a free one"
        ),
        Event::Joined { generation } => format!("joining with generation {generation}"),
        Event::Live { generation } => format!("live with generation {generation}"),
        Event::Refused(r) => format!("refused: {}", refuse_text(r)),
        Event::SelfFence(r) => format!("self-fencing: {}", super::fence::describe(r)),
        Event::FenceDone => "fence action completed: this host is fenced".into(),
        Event::FenceFailed { attempt } => {
            format!(
                "fence action FAILED (attempt {attempt}): this host is NOT fenced; retrying every interval"
            )
        }
        Event::BackupFenced { ok } => format!(
            "the backup deadline thread ran the fence action ({})",
            if *ok { "succeeded" } else { "FAILED" }
        ),
        Event::SuperblockChanged => {
            "the superblock changed under us (re-formatted, wiped or another LUN): the disk is lost".into()
        }
        Event::SuperblockUnreadable(e) => format!("superblock unreadable this cycle ({e:?})"),
        Event::Left => "left cleanly".into(),
        Event::LeaveWaits { writes_in_flight } => format!(
            "leaving: the leave record is on the disk, but {writes_in_flight} earlier write(s) timed out and \
             the kernel has not returned them; one could still land over the leave (and tell the pool this \
             host's watchdog is armed), so the leave waits for them, rewriting its record every interval \
             (check the storage path)"
        ),
        Event::Peer { slot, change: PeerChange::State { from, to } } => {
            format!("slot {slot}: {} -> {}", peer_state_name(*from), peer_state_name(*to))
        }
        Event::Peer { slot, change: PeerChange::Restarted { old_generation, new_generation } } => {
            format!("slot {slot}: restarted (generation {old_generation} -> {new_generation})")
        }
        Event::Peer { slot, change: PeerChange::GenerationWentBack { from, to } } => format!(
            "slot {slot}: generation went BACK from {from} to {to}: a stale or rogue writer (not a restart)"
        ),
        Event::PeerCorrupt { slot, reason } => format!("slot {slot}: corrupt record ({reason})"),
        Event::CycleFailed { write, own_read, own_stale } => format!(
            "cycle not verified (write: {write:?}, own read: {own_read:?}{})",
            if *own_stale { ", our latest write is not on the disk" } else { "" }
        ),
        Event::SlowWrite { latency_us } => format!("slow write: {latency_us} us (over half the io timeout)"),
        Event::SlowSweep { latency_us } => format!("slow sweep: {latency_us} us (over half the io timeout)"),
        Event::MailboxTest { sender_slot, request_id } => {
            format!("mailbox test {request_id} from {sender_slot}")
        }
        Event::MailboxCorrupt { reason } => format!("own mailbox corrupt ({reason})"),
        // A change of the current views, not yet an act: a host only fences once the views
        // stayed so for the decision delay (then `self-fencing: network partition ...` follows).
        Event::Partition { decision: Ok(r), we_survive: true, survivors: 1 } => {
            format!("partition views: this host survives alone ({})", partition_reason_text(r))
        }
        Event::Partition { decision: Ok(r), we_survive: true, survivors } => format!(
            "partition views: this host survives with {} ({})",
            count(u64::from(*survivors), "host", "hosts"),
            partition_reason_text(r)
        ),
        Event::Partition { decision: Ok(r), we_survive: false, survivors } => format!(
            "partition views (tentative): this host is outside the surviving part ({} survive; {}); \
             it fences itself only if the views stay so for the decision delay",
            count(u64::from(*survivors), "host", "hosts"),
            partition_reason_text(r)
        ),
        Event::Partition { decision: Err(e), .. } => {
            format!("partition rule: no decision ({e}): nobody fences for a partition")
        }
        Event::LunLost { members, until_ms, lost_for_ms } => format!(
            "HEARTBEAT DISK LOST FOR THE WHOLE POOL for {:.1} s: all {members} members lost it too and still hear \
             each other; nobody fences (riding through until monotonic {until_ms} ms at the latest, while every \
             member keeps vouching; a verified write ends the ride well)",
            *lost_for_ms as f64 / 1000.0
        ),
        Event::RideThroughEnded => {
            "whole-LUN ride-through ended: a member is no longer heard, or its disk works: fencing".into()
        }
        Event::FenceDeviceIntent { slot, silent_ms } => format!(
            "slot {slot}: silent on the network and unchanged on the disk for {:.1} s: writing this host's \
             fence intent into its slot before calling its fence device",
            *silent_ms as f64 / 1000.0
        ),
        Event::FenceDeviceCalling { slot, attempt } => format!(
            "slot {slot}: intent read back: calling its fence device (off, then status until OFF), attempt \
             {attempt}"
        ),
        Event::FenceDeviceResult { slot, outcome, took_ms } => {
            let what = match outcome {
                crate::core::DeviceOutcome::Off => "confirmed it powered off: writing the proof into its slot",
                crate::core::DeviceOutcome::Failed => {
                    "FAILED: nothing is proven; its VMs wait for the other proofs (asked again after T)"
                }
                crate::core::DeviceOutcome::TimedOut => {
                    "TIMED OUT (agent killed): nothing is proven; its VMs wait for the other proofs (asked \
                     again after T)"
                }
            };
            format!("slot {slot}: fence device {what} ({:.1} s)", *took_ms as f64 / 1000.0)
        }
        Event::FenceDeviceProven { slot } => {
            format!("slot {slot}: marked fenced by its fence device (read back): its VMs are proven gone")
        }
        Event::FenceDeviceAborted { slot, why } => {
            let why = match why {
                crate::core::DeviceAbort::SlotAdvanced => "its record advanced: it is alive".to_string(),
                crate::core::DeviceAbort::OtherFencer { fencer_slot } => {
                    format!("slot {fencer_slot}'s fence intent is in its slot: that host calls the device")
                }
                crate::core::DeviceAbort::NotCoordinator => "a lower live slot coordinates now".to_string(),
                crate::core::DeviceAbort::ChangedAfterOff => "the device said off, but the host wrote its \
                     slot after: NOT marked fenced (a device that reports off for a running host?)"
                    .to_string(),
            };
            format!("slot {slot}: fence device not used: {why}")
        }
    }
}

/// One line on why the partition rule picked its survivors.
pub fn partition_reason_text(r: &crate::core::partition::Reason) -> String {
    use crate::core::partition::Reason;
    match r {
        Reason::Whole { hosts: 1 } => "no partition: this host is the only participant".into(),
        Reason::Whole { hosts: 2 } => "no partition: both hosts hear each other".into(),
        Reason::Whole { hosts } => format!("no partition: all {hosts} hosts hear each other"),
        Reason::Largest { size, rival_size } => {
            format!("largest part: {} against {rival_size}", count(u64::from(*size), "host", "hosts"))
        }
        Reason::LessIsolated { isolated, rival_isolated } => format!(
            "equal size; fewer isolated hosts ({isolated} against {rival_isolated} that reach no isolation address)"
        ),
        Reason::Heavier { weight, rival_weight } => {
            format!("equal size and isolation; heavier ({weight} against {rival_weight})")
        }
        Reason::LowestSlot => "equal size, isolation and weight: the part with the lowest slot".into(),
    }
}

pub fn refuse_text(r: &crate::core::RefuseReason) -> String {
    match r {
        crate::core::RefuseReason::SlotInUse { host_name } => format!(
            "another host ('{}') is heartbeating in this slot; pick another --slot",
            decode_name(host_name).unwrap_or("?")
        ),
        crate::core::RefuseReason::ForeignDuringJoin => {
            "another host wrote this slot while we were joining; pick another --slot".into()
        }
        crate::core::RefuseReason::Storage => "cannot read or write our slot; check the device".into(),
        crate::core::RefuseReason::DiskChanged => {
            "the superblock changed while joining (re-formatted or replaced); restart the daemon".into()
        }
    }
}

/// The failover side: role, plan, held VMs and why, host failures tolerated.
fn vms(s: &Snapshot) -> VmsStatus {
    let Some(f) = &s.failover else { return VmsStatus { enabled: false, failover: None } };
    let held = f
        .held
        .iter()
        .map(|h| HeldVms {
            slot: h.slot,
            vms: h.vms.clone(),
            why_not: h.reason,
            text: format!(
                "slot {} stopped heartbeating but its VMs are not proven gone ({}): they are NOT restarted; \
                 once you have verified the host is off, run `diskbeat fence {} --confirm-down {}`",
                h.slot,
                h.reason.text(),
                s.device,
                h.slot
            ),
        })
        .collect();
    let below_target = matches!((f.tolerance, f.tolerance_target), (Some(t), Some(target)) if t < target);
    VmsStatus {
        enabled: true,
        failover: Some(FailoverReport {
            coordinator_slot: f.coordinator_slot,
            is_coordinator: f.is_coordinator,
            plan: f.plan.clone(),
            plan_names: f.plan_names.iter().map(|(u, n)| (u.to_string(), n.clone())).collect(),
            held,
            own: f.own.iter().map(|(name, state)| OwnVm { name: name.clone(), state: *state }).collect(),
            missing: f
                .missing
                .iter()
                .map(|m| MissingVm {
                    name: m.name.clone(),
                    since_ms: m.since_ms,
                    missing_for_ms: s.now_ms.saturating_sub(m.since_ms),
                    why: m.why.clone(),
                })
                .collect(),
            driver_error: f.driver_error.clone(),
            blocked: f.blocked.clone(),
            published_vms: f.published_vms,
            running_twice: f
                .running_twice
                .iter()
                .map(|(name, slots)| RunningTwice { name: name.clone(), slots: slots.clone() })
                .collect(),
            waiting: f
                .waiting
                .iter()
                .map(|w| WaitingVm {
                    vm: w.vm.clone(),
                    slot: w.slot,
                    since_ms: w.since_ms,
                    waiting_for_ms: w.since_ms.map(|t| s.now_ms.saturating_sub(t)),
                    reason: w.reason.clone(),
                })
                .collect(),
            host_failures_tolerated: f.tolerance,
            tolerance_target: f.tolerance_target,
            below_target,
        }),
    }
}

/// The report the control socket serves. `all` includes free and never-read slots.
pub fn render(s: &Snapshot, all: bool) -> StatusReport {
    let peers = s
        .peers
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            *i as u32 != s.slot && (all || !matches!(p.state, PeerState::Free | PeerState::Unread))
        })
        .map(|(i, p)| PeerStatus {
            slot: i as u32,
            name: p.host_name().to_string(),
            state: peer_state_name(p.state).to_string(),
            generation: p.generation,
            sequence: p.sequence,
            age_ms: p.age_ms(),
            host_uuid: p.host_uuid.to_string(),
            unreadable: p.unreadable,
            corrupt_reason: p.corruption.map(|c| c.to_string()),
            dead_at_ms: p.dead_at_ms,
            watchdog_armed: p.flags & crate::format::record::flags::WATCHDOG_ARMED != 0,
            fence_failed: p.flags & crate::format::record::flags::FENCE_FAILED != 0,
            generation_conflict: p.conflict,
            vms_gone: match p.vms_gone() {
                Ok(proof) => VmsGone { proven: true, proof: Some(proof), why_not: None },
                Err(why) => VmsGone { proven: false, proof: None, why_not: Some(why) },
            },
            silent_ms_at_death: p.dead_at_ms.map(|_| p.silent_ms_at_death),
            network: peer_network(s, i),
            fence_device: s.device_jobs.iter().find(|(slot, _, _)| *slot == i as u32).map(
                |(_, stage, attempts)| super::report::FenceDeviceJob {
                    stage: stage.to_string(),
                    attempts: *attempts,
                },
            ),
        })
        .collect();
    let fence_reason = match s.phase {
        Phase::SelfFencing(r) | Phase::Fenced(r) => {
            Some(FenceReasonStatus { kind: r, text: super::fence::describe(&r) })
        }
        _ => None,
    };
    StatusReport {
        now_ms: s.now_ms,
        me: SelfStatus {
            slot: s.slot,
            name: s.name.clone(),
            state: s.phase.name().to_string(),
            host_uuid: s.host_uuid.to_string(),
            cluster_name: s.cluster_name.clone(),
            device: s.device.clone(),
            engine: s.engine.to_string(),
            generation: s.generation,
            sequence: s.sequence,
            last_ok_age_ms: s.now_ms.saturating_sub(s.last_ok_ms),
            fence_deadline_in_ms: s.fence_deadline_ms.map(|d| d.saturating_sub(s.now_ms)),
            fence_reason,
            fenced_at_ms: s.fenced_at_ms,
            fence_failures: s.fence_failures,
            watchdog_armed: s.watchdog,
            fence_stops_vms: s.fence_stops_vms,
            timing: s.timing,
            latency: Latencies {
                write: latency(&s.write_latency),
                sweep: latency(&s.sweep_latency),
                cycle: Some(latency(&s.metrics.figures.cycle_latency)),
                source: Some(LATENCY_SOURCE.to_string()),
            },
            cycles: s.cycles,
            failed_cycles: s.failed_cycles,
            metrics_addr: s.metrics.addr.map(|a| a.to_string()),
        },
        network: network(s),
        vms: vms(s),
        peers,
        recent_events: s.journal.last(RECENT_EVENTS).cloned().collect(),
    }
}

/// The ride-through as `status` reports it: how long, who vouches, what ends it.
fn ride_report(s: &Snapshot, r: &crate::core::RideStatus) -> crate::daemon::report::RideReport {
    use crate::daemon::report::{RideMember, RideReport};
    let now = s.now_ms;
    let vouching: Vec<RideMember> = r
        .members
        .iter()
        .map(|m| RideMember {
            slot: m,
            evidence_age_ms: s.net_peers[m as usize].vouch_echo_ms.map(|e| now.saturating_sub(e)),
        })
        .collect();
    let ends_in_ms = r.until_ms.saturating_sub(now);
    let cap_in_ms = r.cap_ms.map(|c| c.saturating_sub(now));
    let limit = match r.limited_by {
        Some(m) => format!("slot {m}'s evidence is the oldest"),
        None => "the ride-through cap (storage deadline + 2 T)".to_string(),
    };
    let cap = match cap_in_ms {
        Some(c) => format!(
            ", and at the latest in {:.1} s (the cap, kept while a member runs a format older than 1.7)",
            c as f64 / 1000.0
        ),
        None => ", with no time limit while they do".to_string(),
    };
    let ends_when = format!(
        "ends well when a write of ours is verified (the disk is back); this host fences in {:.1} s unless every \
         member vouches again meanwhile ({limit}){cap}; a member that goes unheard, crashes, or whose disk works \
         again stops vouching, and a host heard on the network whose disk works never vouches",
        ends_in_ms as f64 / 1000.0,
    );
    RideReport {
        disk_lost_for_ms: now.saturating_sub(r.last_ok_ms),
        riding_for_ms: now.saturating_sub(r.since_ms),
        ends_in_ms,
        cap_in_ms,
        limited_by_slot: r.limited_by,
        vouching,
        ends_when,
        rule: "unanimity: every member must keep vouching; a further failure (a member crashes, is cut off, or \
               its disk works again while ours does not) ends the ride for every host, which fences within the \
               network timeout of that member's last vouching packet (no quorum: docs/SAFETY.md, \"Why not a \
               quorum\")"
            .to_string(),
    }
}
