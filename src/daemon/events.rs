//! What the heartbeat node's and the failover core's events say: their kind, level, the slot and
//! VM they concern, their sentence and their facts. The log and `diskbeat events` both print
//! what these functions return (journal.rs), so they say the same thing in the same words.

use super::journal::{Level, NewEvent};
use super::status::{describe_event, peer_state_name};
use crate::core::failover::{DestroyWhy, FailoverEvent};
use crate::core::peer::{GoneProof, NotProven};
use crate::core::{Event, Node, Peer, PeerChange, PeerState};
use crate::format::escape_name;
use serde_json::json;

/// A slot's host name as events print it: `slot 2 'h3'` (escaped: names come from the disk).
pub fn slot_label(slot: u32, name: &str) -> String {
    if name.is_empty() {
        format!("slot {slot}")
    } else {
        format!("slot {slot} '{}'", escape_name(name))
    }
}

/// Why a peer's VMs may or may not run elsewhere, for a sentence.
pub fn gone_text(gone: Result<GoneProof, NotProven>) -> String {
    match gone {
        Ok(proof) => format!("its VMs are proven gone ({}): they are restarted elsewhere", proof_text(proof)),
        Err(why) => format!("its VMs are NOT proven gone ({}): they are not restarted", why.text()),
    }
}

pub fn proof_text(p: GoneProof) -> String {
    let why = match p {
        GoneProof::FencedMark => {
            "it fenced itself with an action that stops VMs and marked its record fenced"
        }
        GoneProof::WatchdogExpired => {
            "its record says a hardware watchdog was armed, and it has been silent for longer than the \
             watchdog takes to reset it"
        }
        GoneProof::OperatorConfirmed => "an operator confirmed it off (`diskbeat fence --confirm-down`)",
        GoneProof::FenceDevice => "its fence device confirmed it powered off",
    };
    format!("{}: {why}", p.name())
}

/// The event of a node event, with the node's view of the peer it concerns.
pub fn node_event(e: &Event, node: &Node) -> NewEvent {
    let peer = |slot: u32| node.peers().get(slot as usize);
    let (level, kind) = level_and_kind(e);
    let mut text = describe_event(e);
    let mut ev = NewEvent::new(level, kind, String::new());
    match e {
        Event::Peer { slot, change } => {
            let p = peer(*slot).copied().unwrap_or_default();
            text = text.replacen(&format!("slot {slot}"), &slot_label(*slot, p.host_name()), 1);
            ev = ev.slot(*slot, p.host_name());
            if let PeerChange::State { from, to } = change {
                text += &peer_state_detail(&p, *to);
                let gone = p.vms_gone();
                ev = ev.data(json!({
                    "from": peer_state_name(*from),
                    "to": peer_state_name(*to),
                    "generation": p.generation,
                    "proof": gone.ok().map(GoneProof::name),
                    "why_not": gone.err().map(NotProven::name),
                    "silent_ms": (*to == PeerState::Dead).then_some(p.silent_ms_at_death),
                }));
            }
        }
        Event::FenceDeviceIntent { slot, .. }
        | Event::FenceDeviceCalling { slot, .. }
        | Event::FenceDeviceResult { slot, .. }
        | Event::FenceDeviceProven { slot }
        | Event::FenceDeviceAborted { slot, .. } => {
            let p = peer(*slot).copied().unwrap_or_default();
            text = text.replacen(&format!("slot {slot}"), &slot_label(*slot, p.host_name()), 1);
            ev = ev.slot(*slot, p.host_name());
            ev = ev.data(match e {
                Event::FenceDeviceIntent { silent_ms, .. } => json!({ "silent_ms": silent_ms }),
                Event::FenceDeviceCalling { attempt, .. } => json!({ "attempt": attempt }),
                Event::FenceDeviceResult { outcome, took_ms, .. } => {
                    json!({ "outcome": outcome, "took_ms": took_ms })
                }
                Event::FenceDeviceAborted { why, .. } => json!({ "why": why }),
                _ => json!({ "generation": p.generation }),
            });
        }
        Event::PeerCorrupt { slot, .. } => {
            let p = peer(*slot).copied().unwrap_or_default();
            text = text.replacen(&format!("slot {slot}"), &slot_label(*slot, p.host_name()), 1);
            ev = ev.slot(*slot, p.host_name());
        }
        Event::SelfFence(reason) => ev = ev.data(json!({ "reason": reason })),
        Event::Partition { decision, we_survive, survivors } => {
            ev = ev.data(json!({
                "decision": decision.as_ref().ok(),
                "no_decision": decision.as_ref().err().map(|e| e.to_string()),
                "we_survive": we_survive,
                "survivors": survivors,
            }))
        }
        _ => {}
    }
    ev.text = text;
    ev
}

/// What a peer's new state means for its VMs (appended to `slot N: a -> b`).
fn peer_state_detail(p: &Peer, to: PeerState) -> String {
    match to {
        PeerState::Dead => format!(
            ": silent on the disk for {:.1} s between two of this host's reads; {}",
            p.silent_ms_at_death as f64 / 1000.0,
            gone_text(p.vms_gone())
        ),
        PeerState::Silent => format!(": silent on the disk, but {}", gone_text(p.vms_gone())),
        PeerState::SelfFencing => ": its record says it is fencing itself".into(),
        PeerState::Fenced | PeerState::Leaving => format!("; {}", gone_text(p.vms_gone())),
        PeerState::Corrupt => "; its record is corrupt: its VMs are not restarted".into(),
        _ => String::new(),
    }
}

fn level_and_kind(e: &Event) -> (Level, &'static str) {
    use Level::*;
    match e {
        Event::WaitingForSlot { .. } => (Info, "waiting_for_slot"),
        Event::SlotHolderHeard { .. } => (Warn, "slot_holder_heard"),
        Event::Joined { .. } => (Info, "joined"),
        Event::Live { .. } => (Info, "live"),
        Event::Refused(_) => (Error, "refused"),
        Event::SelfFence(_) => (Error, "self_fence"),
        Event::FenceDone => (Error, "fence_done"),
        Event::FenceFailed { .. } => (Error, "fence_failed"),
        Event::BackupFenced { .. } => (Warn, "backup_fence"),
        Event::Left => (Info, "left"),
        Event::LeaveWaits { .. } => (Warn, "leave_waits"),
        // A never-used slot seen for the first time is not news (64 lines at start otherwise).
        Event::Peer {
            change: PeerChange::State { from: PeerState::Unread, to: PeerState::Free }, ..
        } => (Debug, "peer_state"),
        Event::Peer { change: PeerChange::State { to, .. }, .. } => match to {
            PeerState::Dead | PeerState::Fenced | PeerState::SelfFencing | PeerState::Silent => {
                (Warn, "peer_state")
            }
            _ => (Info, "peer_state"),
        },
        Event::Peer { change: PeerChange::Restarted { .. }, .. } => (Info, "peer_restarted"),
        Event::Peer { change: PeerChange::GenerationWentBack { .. }, .. } => (Warn, "peer_generation_back"),
        Event::PeerCorrupt { .. } => (Warn, "peer_corrupt"),
        Event::CycleFailed { .. } => (Warn, "cycle_failed"),
        Event::SuperblockChanged => (Error, "superblock_changed"),
        Event::SuperblockUnreadable(_) => (Warn, "superblock_unreadable"),
        Event::SlowWrite { .. } => (Warn, "slow_write"),
        Event::SlowSweep { .. } => (Warn, "slow_sweep"),
        Event::MailboxTest { .. } => (Info, "mailbox_test"),
        Event::MailboxCorrupt { .. } => (Warn, "mailbox_corrupt"),
        Event::Partition { .. } => (Info, "partition"),
        Event::LunLost { .. } => (Error, "lun_lost"),
        Event::RideThroughEnded => (Error, "ride_through_ended"),
        Event::FenceDeviceIntent { .. } => (Warn, "fence_device_intent"),
        Event::FenceDeviceCalling { .. } => (Warn, "fence_device_calling"),
        Event::FenceDeviceResult { outcome: crate::core::DeviceOutcome::Off, .. } => {
            (Warn, "fence_device_result")
        }
        Event::FenceDeviceResult { .. } => (Error, "fence_device_result"),
        Event::FenceDeviceProven { .. } => (Warn, "fence_device_proven"),
        Event::FenceDeviceAborted { why: crate::core::DeviceAbort::ChangedAfterOff, .. } => {
            (Error, "fence_device_aborted")
        }
        Event::FenceDeviceAborted { .. } => (Info, "fence_device_aborted"),
    }
}

/// The event of a failover event; `name(slot)` is that slot's host name as the node sees it.
pub fn failover_event(e: &FailoverEvent, name: &dyn Fn(u32) -> String) -> NewEvent {
    let label = |s: u32| slot_label(s, &name(s));
    let vm_text = |v: &str| format!("'{}'", escape_name(v));
    match e {
        FailoverEvent::Plan { number, moves, unplaced } => {
            let mut parts: Vec<String> = moves
                .iter()
                .map(|m| {
                    format!(
                        "{} from {} to {} (wave {}{})",
                        vm_text(&m.vm),
                        label(m.from_slot),
                        label(m.to_slot),
                        m.wave,
                        if m.attempt > 1 { format!(", attempt {}", m.attempt) } else { String::new() }
                    )
                })
                .collect();
            for (vm, from, code) in unplaced {
                parts.push(format!("{} of {} NOT restarted ({})", vm_text(vm), label(*from), unplaced_text(*code)));
            }
            let text = format!("restart plan {number} (this host coordinates): {}", parts.join("; "));
            NewEvent::new(Level::Warn, "plan", text).data(json!({
                "plan": number,
                "moves": moves.iter().map(|m| json!({
                    "vm": m.vm, "uuid": m.uuid, "from_slot": m.from_slot, "from_host": name(m.from_slot),
                    "to_slot": m.to_slot, "to_host": name(m.to_slot), "wave": m.wave, "attempt": m.attempt,
                })).collect::<Vec<_>>(),
                "unplaced": unplaced.iter().map(|(vm, from, code)| json!({
                    "vm": vm, "from_slot": from, "from_host": name(*from), "reason": code,
                })).collect::<Vec<_>>(),
            }))
        }
        FailoverEvent::Claimed { vm, uuid, from_slot, plan, attempt } => NewEvent::new(
            Level::Info,
            "vm_claimed",
            format!(
                "claimed {} of {} (plan {plan}, attempt {attempt}): starts once no other host is found holding it",
                vm_text(vm),
                label(*from_slot)
            ),
        )
        .vm(vm)
        .slot(*from_slot, name(*from_slot))
        .data(json!({ "uuid": uuid, "plan": plan, "attempt": attempt, "from_slot": from_slot })),
        FailoverEvent::Withdrawn { vm, uuid, holder_slot } => NewEvent::new(
            Level::Warn,
            "vm_withdrawn",
            format!("withdrew {}: {} holds it (nothing was started here)", vm_text(vm), label(*holder_slot)),
        )
        .vm(vm)
        .slot(*holder_slot, name(*holder_slot))
        .data(json!({ "uuid": uuid })),
        FailoverEvent::Starting { vm, uuid } => NewEvent::new(
            Level::Warn,
            "vm_starting",
            format!("starting {} here (claim checked: no other host holds it)", vm_text(vm)),
        )
        .vm(vm)
        .data(json!({ "uuid": uuid })),
        FailoverEvent::Started { vm, uuid, took_ms } => NewEvent::new(
            Level::Warn,
            "vm_started",
            format!("{} started here in {took_ms} ms", vm_text(vm)),
        )
        .vm(vm)
        .data(json!({ "uuid": uuid, "took_ms": took_ms })),
        FailoverEvent::StartFailed { vm, uuid, error } => NewEvent::new(
            Level::Error,
            "vm_start_failed",
            format!(
                "starting {} FAILED ({}): it is destroyed here (it may have half-started), then restarted \
                 elsewhere",
                vm_text(vm),
                escape_name(error)
            ),
        )
        .vm(vm)
        .data(json!({ "uuid": uuid, "error": error })),
        FailoverEvent::Restarted { vm, uuid, from_slot, to_slot, claim } => NewEvent::new(
            Level::Warn,
            "vm_restarted",
            format!("{} of {} runs on {} now (claim {claim})", vm_text(vm), label(*from_slot), label(*to_slot)),
        )
        .vm(vm)
        .slot(*from_slot, name(*from_slot))
        .data(json!({
            "uuid": uuid, "from_slot": from_slot, "from_host": name(*from_slot),
            "to_slot": to_slot, "to_host": name(*to_slot), "claim": claim,
        })),
        FailoverEvent::RunningTwice { vm, uuid, other_slot, other_claim, our_claim } => NewEvent::new(
            Level::Error,
            "vm_running_twice",
            format!(
                "{} runs here and on {}, whose claim is higher ({other_claim} against {our_claim}): this copy \
                 is destroyed",
                vm_text(vm),
                label(*other_slot)
            ),
        )
        .vm(vm)
        .slot(*other_slot, name(*other_slot))
        .data(json!({ "uuid": uuid, "other_claim": other_claim, "our_claim": our_claim })),
        FailoverEvent::Destroying { vm, uuid, why } => NewEvent::new(
            Level::Warn,
            "vm_destroying",
            format!("destroying {} here: {}", vm_text(vm), why.text()),
        )
        .vm(vm)
        .data(json!({ "uuid": uuid, "why": why })),
        FailoverEvent::Destroyed { vm, uuid, why } => NewEvent::new(
            Level::Warn,
            "vm_destroyed",
            format!("{} destroyed here ({})", vm_text(vm), destroy_short(why)),
        )
        .vm(vm)
        .data(json!({ "uuid": uuid, "why": why })),
        FailoverEvent::DestroyFailed { vm, uuid, why, error, retry_in_ms } => NewEvent::new(
            Level::Error,
            "vm_destroy_failed",
            format!(
                "destroying {} FAILED ({}): it may still run here and stays held; retried in {:.1} s",
                vm_text(vm),
                escape_name(error),
                *retry_in_ms as f64 / 1000.0
            ),
        )
        .vm(vm)
        .data(json!({ "uuid": uuid, "why": why, "error": error, "retry_in_ms": retry_in_ms })),
    }
}

fn destroy_short(why: &DestroyWhy) -> &'static str {
    match why {
        DestroyWhy::FailedStart => "after a failed start",
        DestroyWhy::RunningTwice { .. } => "it ran twice; the other copy holds the higher claim",
    }
}

fn unplaced_text(code: crate::format::host_state::UnplacedCode) -> &'static str {
    use crate::format::host_state::UnplacedCode;
    match code {
        UnplacedCode::NotProtected => "protection none",
        UnplacedCode::NoCapacity => "no survivor has room",
        UnplacedCode::StartFailed => "its starts failed on two hosts",
    }
}
