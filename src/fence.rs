//! `diskbeat fence`: ask a host to fence itself through its mailbox, and confirm it did.
//!
//! Success needs proof: the target's record says `fenced` with our request acknowledged, or its
//! record stopped changing for the host-dead timeout between two of our successful reads (it
//! fenced itself or died: SBD's msgwait, judged on our clock).

use crate::core::{NotProven, Peer, PeerState, SilenceRule};
use crate::disk::{Disk, DiskError};
use crate::format::escape_name;
use crate::format::mailbox::{Command, Mailbox, SENDER_TOOL};
use crate::format::record::{flags, Record, State};
use crate::io::{Access, EngineKind};
use crate::timing::Timing;
use std::path::Path;
use std::time::Instant;

/// How a fence was confirmed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Confirmed {
    /// The target marked itself fenced and acknowledged the request.
    Fenced,
    /// The target's record stopped for the host-dead timeout.
    Stopped { silent_ms: u64 },
    /// It had already left cleanly or was already fenced: nothing was sent.
    AlreadyGone { state: String },
    /// `--confirm-down`: silent for the host-dead timeout, then marked fenced on the operator's word.
    OperatorConfirmed { silent_ms: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Timing(#[from] crate::timing::TimingError),
    #[error("slot {0} is free: no host holds it, nothing to fence")]
    Free(u32),
    #[error("slot {slot} cannot be read or is corrupt ({reason}); cannot fence or confirm through it")]
    Unusable { slot: u32, reason: String },
    #[error(
        "slot {slot} now holds '{}', not '{}': nothing was written", escape_name(.found), escape_name(.expected)
    )]
    NotTheHost { slot: u32, expected: String, found: String },
    #[error("writing the fence request failed ({0}); the request was not delivered")]
    WriteFailed(String),
    #[error(
        "slot {slot} was taken by a new incarnation of '{}' (generation {generation}): the request was \
         not for it", escape_name(.name)
    )]
    Restarted { slot: u32, name: String, generation: u64 },
    #[error(
        "slot {slot} ('{}') acknowledged the request but its fence action FAILED: the host is NOT fenced \
         and its VMs may be running; do NOT restart them (it keeps retrying; check its logs, or power it off)",
        escape_name(.name)
    )]
    ActionFailed { slot: u32, name: String },
    #[error(
        "slot {slot} ('{}') is still being written: its daemon runs, so the host is NOT down; nothing was \
         changed (fence it with `diskbeat fence` instead)", escape_name(.name)
    )]
    StillWriting { slot: u32, name: String },
    #[error(
        "slot {slot} ('{}') neither fenced nor stopped within {waited_ms} ms: do NOT restart its VMs",
        escape_name(.name)
    )]
    Timeout { slot: u32, name: String, waited_ms: u64 },
    #[error(
        "slot {slot} ('{}') went silent without taking the fence request ({waited_ms} ms): it may be riding \
         through a heartbeat-disk outage on network evidence, so silence proves nothing to a tool; do NOT \
         restart its VMs (check the host, or `diskbeat fence --confirm-down {slot}` once it is off)",
        escape_name(.name)
    )]
    MayBeRiding { slot: u32, name: String, waited_ms: u64 },
}

/// Result of a successful fence.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FenceReport {
    pub slot: u32,
    pub host_name: String,
    pub generation: u64,
    pub request_id: Option<u64>,
    #[serde(flatten)]
    pub confirmed: Confirmed,
    /// Whether the target's VMs are proven gone (docs/SAFETY.md): a `fenced` mark from an action
    /// that stops VMs, or silence with an armed watchdog. A clean leave or a log-only fence is not.
    pub vms_gone: bool,
    /// Why not, when they are not.
    pub why_not: Option<crate::core::NotProven>,
    pub elapsed_ms: u64,
}

/// Why a host's VMs are not proven gone, for people: the name `status` and `--json` use
/// (`fenced_log_only`, ...), then what it means.
pub fn why_not_text(why: NotProven) -> String {
    let name = serde_json::to_value(why).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let meaning = match why {
        NotProven::Alive => "it is still heartbeating",
        NotProven::LeftCleanly => "it left cleanly, and stopping its daemon does not stop its VMs",
        NotProven::FencedLogOnly => "its fence action is log-only, which stops nothing",
        NotProven::Fencing => "it has not finished fencing itself (or its fence action failed)",
        NotProven::DeadWithoutWatchdog => {
            "it went silent with no hardware watchdog armed: its daemon may have died with its VMs running"
        }
        NotProven::Corrupt => {
            "its slot reads corrupt, so who holds it and whether a watchdog is armed is unknown"
        }
        NotProven::NoHost => "no host holds the slot",
        NotProven::NotListed => {
            "it went silent, but its last record does not list this host: it may be riding through a \
             disk outage without knowing us"
        }
        NotProven::FenceIntent => {
            "its slot holds a pool member's fence intent, a copy that may have replaced a clean leave: only \
             its fence device, or an operator, can prove it off"
        }
    };
    format!("{name}: {meaning}")
}

/// Opens the device and reads `slot`'s record (one sweep): what both `fence` and `confirm_down`
/// start from.
fn open_target(
    path: &Path,
    slot: u32,
    engine: EngineKind,
) -> Result<(Disk, crate::format::superblock::Superblock, Timing, Record), FenceError> {
    let mut disk = Disk::open(path, Access::ReadWrite, engine, None)?;
    let sb = disk.superblock().clone();
    if slot >= sb.layout.slot_count {
        return Err(DiskError::NoSuchSlot { slot, count: sb.layout.slot_count }.into());
    }
    let timing = Timing::from_base(sb.base_timeout_ms)?;
    disk.sweep(timing.io_timeout())?;
    let target = match disk.slot_bytes(slot) {
        Err(s) => Err(crate::inspect::status_reason(s)),
        Ok(b) => Record::decode(b, &sb.cluster_uuid, slot).map_err(|c| c.to_string()),
    }
    .map_err(|reason| FenceError::Unusable { slot, reason })?;
    Ok((disk, sb, timing, target))
}

fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

pub fn fence(
    path: &Path,
    slot: u32,
    engine: EngineKind,
    progress: &mut dyn FnMut(&str),
) -> Result<FenceReport, FenceError> {
    fence_host(path, slot, None, engine, progress)
}

/// [`fence`], refused (nothing written) unless the slot's record names `expect_name` when one is
/// given: a caller that chose the slot by host name (the fence agent) never fences whoever holds
/// it by the time the request would be written.
pub fn fence_host(
    path: &Path,
    slot: u32,
    expect_name: Option<&str>,
    engine: EngineKind,
    progress: &mut dyn FnMut(&str),
) -> Result<FenceReport, FenceError> {
    let start = Instant::now();
    let (mut disk, sb, timing, target) = open_target(path, slot, engine)?;
    let name = target.host_name().to_string();
    if let Some(expected) = expect_name.filter(|e| *e != name) {
        return Err(FenceError::NotTheHost { slot, expected: expected.into(), found: name });
    }
    let report = |confirmed, request_id, proof: Result<crate::core::GoneProof, NotProven>| FenceReport {
        slot,
        host_name: name.clone(),
        generation: target.generation,
        request_id,
        confirmed,
        vms_gone: proof.is_ok(),
        why_not: proof.err(),
        elapsed_ms: now_ms(start),
    };
    let marked = |r: &Record| match r.state {
        State::Fenced if r.flags & flags::FENCE_STOPS_VMS != 0 => Ok(crate::core::GoneProof::FencedMark),
        State::Fenced => Err(NotProven::FencedLogOnly),
        _ => Err(NotProven::LeftCleanly),
    };
    match target.state {
        State::Free => return Err(FenceError::Free(slot)),
        State::Leaving | State::Fenced => {
            let proof = marked(&target);
            return Ok(report(Confirmed::AlreadyGone { state: target.state.as_str().into() }, None, proof));
        }
        State::Joining | State::Live | State::SelfFencing => {}
    }
    let request_id = loop {
        let id = uuid::Uuid::new_v4().as_u64_pair().0;
        if id != 0 && id != target.mailbox_ack {
            break id;
        }
    };
    let mut m = Mailbox::empty(sb.cluster_uuid, slot);
    m.command = Command::Fence;
    m.request_id = request_id;
    m.sender_slot = SENDER_TOOL;
    m.set_sender_name("diskbeat-fence").expect("valid name");
    let o = disk.write_mailbox(&m, timing.io_timeout())?;
    if !o.is_done() {
        return Err(FenceError::WriteFailed(crate::inspect::status_reason(o.status)));
    }
    progress(&format!(
        "fence request {request_id} written to slot {slot} ('{}'); waiting for it to fence (up to {} ms)",
        escape_name(&name),
        2 * timing.host_dead_ms
    ));
    let mut peer = Peer::default();
    let limit_ms = 2 * u64::from(timing.host_dead_ms) + u64::from(timing.io_timeout_ms);
    loop {
        std::thread::sleep(timing.interval());
        let s = now_ms(start);
        disk.sweep(timing.io_timeout())?;
        let e = now_ms(start);
        match disk.slot_bytes(slot) {
            Err(_) => peer.read_failed(),
            Ok(bytes) => {
                let read = Record::validate(bytes, &sb.cluster_uuid, slot);
                if let Ok(raw) = read {
                    let r = Record::from_raw(raw);
                    if r.generation != target.generation || r.host_uuid != target.host_uuid {
                        return Err(FenceError::Restarted {
                            slot,
                            name: r.host_name().into(),
                            generation: r.generation,
                        });
                    }
                    if r.state == State::Fenced && r.mailbox_ack == request_id {
                        return Ok(report(Confirmed::Fenced, Some(request_id), marked(&r)));
                    }
                    if r.state == State::SelfFencing
                        && r.mailbox_ack == request_id
                        && r.flags & flags::FENCE_FAILED != 0
                    {
                        return Err(FenceError::ActionFailed { slot, name });
                    }
                }
                // A tool holds no slot: it is listed by nobody. A live, network-enabled target
                // may be riding through a disk outage, so its silence is no evidence; one that
                // took the request writes `self_fencing` first, after which silence is.
                let (f, st, m) = match read {
                    Ok(raw) => (raw.flags.get(), raw.state(), raw.members()),
                    Err(_) => (peer.flags, peer.record_state, peer.members),
                };
                let rule = crate::core::silence_rule(f, st, m, sb.layout.slot_count, None);
                let dead_ms = match rule {
                    SilenceRule::Capped => u64::from(timing.host_dead_ms) + timing.ride_max_ms(),
                    _ => u64::from(timing.host_dead_ms),
                };
                let declarable = rule != SilenceRule::NotListed;
                peer.observe(read, s, e, dead_ms, timing.read_gap_ms(), declarable);
                if peer.state == PeerState::Dead {
                    return Ok(report(
                        Confirmed::Stopped { silent_ms: peer.silent_ms_at_death },
                        Some(request_id),
                        peer.vms_gone(),
                    ));
                }
            }
        }
        if now_ms(start) > limit_ms {
            if peer.state == PeerState::Silent {
                return Err(FenceError::MayBeRiding { slot, name, waited_ms: now_ms(start) });
            }
            return Err(FenceError::Timeout { slot, name, waited_ms: now_ms(start) });
        }
    }
}

/// `diskbeat fence --confirm-down`: the operator vouches that the host in `slot` is off (powered
/// down, its VMs stopped), like Pacemaker's manual fence confirmation. The only way the pool
/// restarts the VMs of a host that died without a watchdog and without a fence mark.
///
/// Refused unless the slot's record stays unchanged for the host-dead timeout on our own reads
/// (a daemon still writing it is not down). Then its record is rewritten as `fenced` by the
/// operator (flags `fence_stops_vms` and `operator_confirmed`, same generation, sequence + 1).
/// If the host was in fact alive, its next sweep sees the foreign write and it fences itself; but
/// its VMs may already run twice by then: this is the operator's word, and only that.
pub fn confirm_down(
    path: &Path,
    slot: u32,
    engine: EngineKind,
    progress: &mut dyn FnMut(&str),
) -> Result<FenceReport, FenceError> {
    let start = Instant::now();
    let (mut disk, sb, timing, target) = open_target(path, slot, engine)?;
    let name = target.host_name().to_string();
    // The sequence was read from the disk: a hostile u64::MAX must not wrap (or panic), and is
    // refused before the host-dead wait.
    let next_sequence = target.sequence.checked_add(1).ok_or_else(|| FenceError::Unusable {
        slot,
        reason: format!("its sequence {} cannot be incremented", target.sequence),
    })?;
    let report = |confirmed, proof: Result<crate::core::GoneProof, NotProven>| FenceReport {
        slot,
        host_name: name.clone(),
        generation: target.generation,
        request_id: None,
        confirmed,
        vms_gone: proof.is_ok(),
        why_not: proof.err(),
        elapsed_ms: now_ms(start),
    };
    match target.state {
        State::Free => return Err(FenceError::Free(slot)),
        State::Fenced if target.flags & flags::FENCE_STOPS_VMS != 0 => {
            let proof = Ok(crate::core::GoneProof::FencedMark);
            return Ok(report(Confirmed::AlreadyGone { state: target.state.as_str().into() }, proof));
        }
        _ => {}
    }
    progress(&format!(
        "watching slot {slot} ('{}') for {} ms: it must not change (a daemon still writing it is not down)",
        escape_name(&name),
        timing.host_dead_ms
    ));
    let mut peer = Peer::default();
    let limit_ms = 2 * u64::from(timing.host_dead_ms) + u64::from(timing.io_timeout_ms);
    let silent_ms = loop {
        let s = now_ms(start);
        disk.sweep(timing.io_timeout())?;
        let e = now_ms(start);
        match disk.slot_bytes(slot) {
            Err(_) => peer.read_failed(),
            Ok(bytes) => {
                let read = Record::validate(bytes, &sb.cluster_uuid, slot);
                match read {
                    Ok(raw) if Record::from_raw(raw) != target => {
                        return Err(FenceError::StillWriting { slot, name });
                    }
                    _ => {}
                }
                // The operator's word, not silence, is the evidence here.
                peer.observe(read, s, e, u64::from(timing.host_dead_ms), timing.read_gap_ms(), true);
                if matches!(peer.state, PeerState::Dead | PeerState::Fenced | PeerState::Leaving)
                    && peer.age_ms() >= u64::from(timing.host_dead_ms)
                {
                    break peer.age_ms();
                }
            }
        }
        if now_ms(start) > limit_ms {
            return Err(FenceError::Timeout { slot, name, waited_ms: now_ms(start) });
        }
        std::thread::sleep(timing.interval());
    };
    let mut rec = target;
    rec.state = State::Fenced;
    rec.sequence = next_sequence;
    // A member's fence intent may be what the slot holds: the mark is the operator's alone.
    rec.flags = (rec.flags & flags::KNOWN & !(flags::FENCE_INTENT | flags::FENCE_DEVICE))
        | flags::FENCE_STOPS_VMS
        | flags::OPERATOR_CONFIRMED;
    rec.fencer_slot = 0;
    let o = disk.write_record(&rec, timing.io_timeout())?;
    if !o.is_done() {
        return Err(FenceError::WriteFailed(crate::inspect::status_reason(o.status)));
    }
    disk.sweep(timing.io_timeout())?;
    match disk.slot_bytes(slot).ok().map(|b| Record::decode(b, &sb.cluster_uuid, slot)) {
        Some(Ok(r)) if r == rec => {}
        _ => return Err(FenceError::WriteFailed("the confirmation did not read back".into())),
    }
    progress(&format!("slot {slot} marked fenced by the operator after {silent_ms} ms of silence"));
    Ok(report(Confirmed::OperatorConfirmed { silent_ms }, Ok(crate::core::GoneProof::OperatorConfirmed)))
}
