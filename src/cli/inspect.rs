//! `diskbeat inspect`: the superblock and every used slot, as a table or JSON.

use super::output::{ms, print_json, print_pairs, print_table, superblock_json, superblock_lines};
use super::{CliError, CliResult, EXIT_DEGRADED, EXIT_OK};
use crate::disk::{Disk, DiskError};
use crate::format::escape_name;
use crate::inspect::{
    extent_report, inspect, keyring_report, mailbox_of, ExtentReport, KeyringReport, Observed, SlotReport,
};
use crate::io::{Access, EngineKind};
use crate::timing::Timing;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Show the superblock and the slots of a heartbeat disk.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Reads the record table twice, --sample apart: a record whose sequence moved is 'advancing' (its
host is alive); one that did not is 'stale for at least' the sample. Ages are observed on this
machine's clock; other hosts' clocks are never used. Read-only: safe on a live cluster. The
cluster key is shown by id and creation time, never its bytes.

Examples:
  diskbeat inspect /dev/mapper/hb-lun
  diskbeat inspect /dev/loop0 --all --sample 0
  diskbeat inspect /dev/loop0 --slot 3
  diskbeat inspect /dev/loop0 --json | jq '.slots[] | select(.state == \"live\")'

Exit status: 0 all shown records valid, 1 cannot read the device or its superblock,
2 bad options (including a --slot the disk does not have), 3 some shown record is corrupt or
unreadable.")]
pub struct Args {
    /// Heartbeat device.
    pub device: PathBuf,
    /// Time between the two reads (e.g. 4s, 500ms; 0 = one read, no ages).
    /// Default: twice the cluster's heartbeat interval.
    #[arg(long, value_parser = crate::timing::parse_duration_ms)]
    pub sample: Option<u32>,
    /// Include free slots.
    #[arg(long)]
    pub all: bool,
    /// Print one slot in full (with its mailbox).
    #[arg(long)]
    pub slot: Option<u32>,
    /// I/O engine.
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    pub engine: EngineKind,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn age(r: &SlotReport) -> String {
    match (r.observed, r.stale_ms_at_least) {
        (Observed::Advancing, _) => "advancing".into(),
        (Observed::Restarted, _) => "restarted".into(),
        (Observed::Stale, Some(v)) => format!("stale >= {}", ms(v)),
        _ => "-".into(),
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_else(|| "-".into())
}

/// A host name read from disk, escaped for the terminal (`-` when there is none).
fn name(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "-".into(), |n| escape_name(n).into_owned())
}

/// "id 2 (created 1700000100); previous id 1, verifies until 1700000500 (400 s left)": ids and
/// times only, never key bytes.
fn keyring_summary(k: &KeyringReport) -> String {
    if k.status != "ok" {
        return format!("{} ({})", k.status, k.reason.as_deref().unwrap_or("?"));
    }
    let mut s = format!("id {} (created {} Unix s)", opt(&k.current_key_id), opt(&k.current_created_unix_s));
    match (k.previous_key_id, k.previous_valid_until_unix_s) {
        (Some(id), Some(until)) if until > k.now_unix_s => s.push_str(&format!(
            "; previous id {id} verifies until {until} Unix s ({} left)",
            ms((until - k.now_unix_s) * 1000)
        )),
        (Some(id), Some(until)) => {
            s.push_str(&format!("; previous id {id}, window ended at {until} Unix s (no longer verifies)"))
        }
        _ => s.push_str("; no previous key"),
    }
    s
}

fn net_summary(r: &SlotReport) -> String {
    match r.net_view.len() {
        0 if r.status != "ok" => "-".into(),
        0 => "none".into(),
        n if n <= 4 => r.net_view.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        n => format!("{n} hosts"),
    }
}

/// "sequence 3, host_info (kind 1), 32-byte payload ok", or why the header is not usable.
fn extent_summary(e: &ExtentReport) -> String {
    if e.status != "ok" {
        return format!("{} ({})", e.status, e.reason.as_deref().unwrap_or("?"));
    }
    let kind = e.kind.unwrap_or_default();
    let mut s = format!(
        "sequence {}, {} (kind {kind}), {}-byte payload",
        opt(&e.sequence),
        e.kind_name.unwrap_or("unknown"),
        opt(&e.payload_len)
    );
    if let Some(p) = e.payload {
        s.push(' ');
        s.push_str(p);
        if let (Some("invalid"), Some(why)) = (e.payload, &e.reason) {
            s.push_str(&format!(" ({why})"));
        }
    }
    s
}

pub fn run(args: Args) -> CliResult {
    let mut disk =
        Disk::open(&args.device, Access::ReadOnly, args.engine, args.slot).map_err(|e| match e {
            // A slot the disk does not have is bad input, like any other bad option.
            DiskError::NoSuchSlot { .. } => CliError::usage(e.to_string()),
            e => CliError::fail(e.to_string()),
        })?;
    let sb = disk.superblock().clone();
    let timing = Timing::from_base(sb.base_timeout_ms).map_err(|e| CliError::fail(e.to_string()))?;
    let sample_ms = args.sample.unwrap_or((2 * timing.interval_ms).max(100));
    let mut result = inspect(&mut disk, Duration::from_millis(sample_ms.into()), timing.io_timeout())
        .map_err(|e| CliError::fail(e.to_string()))?;
    if let Some(s) = args.slot {
        result.mailbox = Some(mailbox_of(&disk, s));
    }
    let wanted = |r: &SlotReport| match args.slot {
        Some(s) => r.slot == s,
        None => args.all || r.is_used(),
    };
    // Extent headers of the slots shown (one read each; with --slot, the payload too).
    for r in result.slots.iter_mut().filter(|r| wanted(r)) {
        r.extent = Some(extent_report(&mut disk, r.slot, timing.io_timeout(), args.slot.is_some()));
    }
    let shown: Vec<&SlotReport> = result.slots.iter().filter(|r| wanted(r)).collect();
    let keyring = keyring_report(&args.device, &sb);
    let degraded = shown.iter().any(|r| r.status != "ok");
    if args.json {
        let mailbox = result.mailbox.as_ref().map(|m| match m {
            Ok(m) => json!({
                "status": "ok",
                "command": m.command,
                "request_id": m.request_id,
                "sender_slot": (m.sender_slot != crate::format::mailbox::SENDER_TOOL).then_some(m.sender_slot),
                "sender_name": m.sender_name(),
            }),
            Err(reason) => json!({ "status": "corrupt", "reason": reason }),
        });
        let mut out = json!({
            "device": args.device,
            "engine": disk.engine().kind().as_str(),
            "sample_ms": result.sample.as_millis() as u64,
            "superblock": superblock_json(&sb),
            "keyring": keyring,
            "slots": shown,
        });
        if let Some(m) = mailbox {
            out["mailbox"] = m;
        }
        print_json(&out);
    } else if let Some(s) = args.slot {
        let r = shown.first().expect("slot exists: checked when opening");
        println!("{}: slot {s} of cluster {}", args.device.display(), escape_name(&sb.cluster_name));
        let mut pairs = vec![
            ("state".to_string(), r.state.to_string()),
            ("status".into(), r.reason.clone().map_or("ok".into(), |why| format!("{} ({why})", r.status))),
            ("host name".into(), name(&r.host_name)),
            ("host uuid".into(), opt(&r.host_uuid)),
            ("generation".into(), opt(&r.generation)),
            ("sequence".into(), opt(&r.sequence)),
            ("observed".into(), age(r)),
            (
                "writer monotonic".into(),
                r.monotonic_ms.map_or("-".into(), |v| format!("{v} ms (writer's clock)")),
            ),
            ("io timeout".into(), r.io_timeout_ms.map_or("-".into(), |v| ms(v.into()))),
            ("interval".into(), r.interval_ms.map_or("-".into(), |v| ms(v.into()))),
            ("network view".into(), format!("{:?}", r.net_view)),
            ("mailbox ack".into(), opt(&r.mailbox_ack)),
            ("flags".into(), if r.flags.is_empty() { "-".into() } else { r.flags.join(", ") }),
            ("extent sequence".into(), r.extent_sequence.map_or("-".into(), |v| format!("{v} (record)"))),
            ("extent".into(), r.extent.as_ref().map_or("-".into(), extent_summary)),
        ];
        if let Some(addrs) = r.extent.as_ref().and_then(|e| e.heartbeat_addrs.as_ref()) {
            pairs.push((
                "heartbeat addrs".into(),
                if addrs.is_empty() { "none".into() } else { addrs.join(", ") },
            ));
        }
        pairs.push((
            "mailbox".into(),
            match result.mailbox.as_ref().expect("read with the slot") {
                Ok(m) => {
                    format!("{:?} request {} from {}", m.command, m.request_id, escape_name(m.sender_name()))
                }
                Err(why) => format!("corrupt ({why})"),
            },
        ));
        print_pairs(&pairs);
    } else {
        println!("{}", args.device.display());
        let mut pairs = superblock_lines(&sb);
        pairs.push(("cluster key".into(), keyring_summary(&keyring)));
        pairs.push((
            "sampled".into(),
            if result.sample.is_zero() {
                "once (no ages)".into()
            } else {
                format!("twice, {} apart", ms(result.sample.as_millis() as u64))
            },
        ));
        print_pairs(&pairs);
        println!();
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|r| {
                vec![
                    r.slot.to_string(),
                    name(&r.host_name),
                    r.state.to_string(),
                    opt(&r.generation),
                    opt(&r.sequence),
                    age(r),
                    r.io_timeout_ms.map_or("-".into(), |v| ms(v.into())),
                    net_summary(r),
                    r.reason.clone().map_or("ok".into(), |why| format!("{}: {why}", r.status)),
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("No slot in use ({} free; --all lists them).", sb.layout.slot_count);
        } else {
            print_table(
                &["SLOT", "HOST", "STATE", "GEN", "SEQ", "AGE", "IO TIMEOUT", "NET VIEW", "RECORD"],
                &rows,
            );
        }
    }
    Ok(if degraded { EXIT_DEGRADED } else { EXIT_OK })
}
