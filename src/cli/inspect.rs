//! `diskbeat inspect`: the superblock and every used slot, as a table or JSON.

use super::output::{ms, print_json, print_pairs, print_table, superblock_json, superblock_lines};
use super::{CliError, CliResult, EXIT_DEGRADED, EXIT_OK};
use crate::disk::{Disk, DiskError};
use crate::format::escape_name;
use crate::format::mailbox::{Command, Mailbox, SENDER_TOOL};
use crate::inspect::{
    extent_report, inspect, keyring_report, mailbox_of, rfc3339, ExtentReport, KeyringReport, NetMatrix,
    Observed, SlotReport,
};
use crate::io::{Access, EngineKind};
use crate::text::count;
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
cluster key is shown by id and creation time (UTC, RFC 3339), never its bytes; --json gives each
key time twice: as Unix seconds (*_unix_s) and as RFC 3339 text (*_rfc3339).

Examples:
  diskbeat inspect /dev/mapper/hb-lun
  diskbeat inspect /dev/loop0 --all --sample 0
  diskbeat inspect /dev/loop0 --slot 3
  diskbeat inspect /dev/loop0 --json | jq '.slots[] | select(.state == \"live\")'
  diskbeat inspect /dev/loop0 --json | jq -c '.network.one_way'

Network (after the slot table; JSON \"network\"): who hears whom, as the records on the disk
say (each record's net_view: what its writer last heard). Listed: every non-free record whose
writer has the network enabled (flag net_enabled); disk-only hosts are named and left out.
Up to 16 hosts print as a grid (row hears column), more as one summary line per host.
  \"network\": {
    \"hosts\": [{\"slot\", \"name\", \"state\", \"weight\", \"isolation_configured\", \"isolated\",
               \"riding_through\", \"hears\": [slots], \"not_heard_by\": [slots]}],
    \"one_way\": [[a, b], ...],    each: a hears b, b does not hear a
    \"partitioned\": true|false,   some two listed hosts do not hear each other both ways
    \"disk_only\": [{\"slot\", \"name\", \"state\"}]
  }
hears and not_heard_by name listed hosts only (never the host itself), ascending.

Ride-through membership (format 1.7): each slot's JSON \"members\" lists the slots its writer
would need vouching packets from to ride through a loss of the disk, ascending (null for a
record of format 1.6 or older, which states none); --slot N prints it as \"members\" for a
network-enabled record.

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
    v.as_deref().filter(|n| !n.is_empty()).map_or_else(|| "-".into(), |n| escape_name(n).into_owned())
}

/// "id 2 (created 2023-11-14T22:15:00Z); previous id 1 verifies until 2023-11-14T22:21:40Z (400 s
/// left)": ids and times (UTC) only, never key bytes.
fn keyring_summary(k: &KeyringReport) -> String {
    if k.status != "ok" {
        return format!("{} ({})", k.status, k.reason.as_deref().unwrap_or("?"));
    }
    let mut s = format!("id {} (created {})", opt(&k.current_key_id), opt(&k.current_created_rfc3339));
    match (k.previous_key_id, k.previous_valid_until_unix_s) {
        (Some(id), Some(until)) if until > k.now_unix_s => s.push_str(&format!(
            "; previous id {id} verifies until {} ({} left)",
            rfc3339(until),
            ms((until - k.now_unix_s) * 1000)
        )),
        (Some(id), Some(until)) => s.push_str(&format!(
            "; previous id {id}, window ended at {} (no longer verifies)",
            rfc3339(until)
        )),
        _ => s.push_str("; no previous key"),
    }
    s
}

/// The mailbox of `--slot N` in words: "empty", or "fence request 123 from an operator tool
/// ('diskbeat-fence'), pending". `ack` is the slot's record's `mailbox_ack`, when readable.
fn mailbox_text(m: &Mailbox, ack: Option<u64>) -> String {
    let what = match m.command {
        Command::None => return "empty".into(),
        Command::Fence => "fence request",
        Command::Test => "test request",
    };
    let from = if m.sender_slot == SENDER_TOOL {
        "an operator tool".to_string()
    } else {
        format!("slot {}", m.sender_slot)
    };
    let name = match m.sender_name() {
        "" => String::new(),
        n => format!(" ('{}')", escape_name(n)),
    };
    let state = match ack {
        Some(a) if a == m.request_id => ", acknowledged",
        Some(_) => ", pending (not acknowledged yet)",
        None => "",
    };
    format!("{what} {} from {from}{name}{state}", m.request_id)
}

/// A network-enabled record's ride-through membership (format 1.7) for `--slot N`: "0,1,3", or
/// "none". `None` (no line) for a record of minor 6 or older, which states none, and for a
/// record without `net_enabled`, whose bitmap means nothing.
fn members_text(r: &SlotReport) -> Option<String> {
    let m = r.members.as_ref().filter(|_| r.flags.contains(&"net_enabled"))?;
    Some(match m.len() {
        0 => "none".into(),
        _ => m.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
    })
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
    if let Some(n) = e.vm_count {
        s.push_str(&format!(", {}", count(n as u64, "VM", "VMs")));
    }
    if let (Some(copy), Some(other)) = (e.copy, e.other_copy) {
        s.push_str(&format!(" (copy {copy}; other copy {other})"));
    }
    // Who published it (mkfs's headers, sequence 0, name nobody).
    if e.sequence.is_some_and(|q| q > 0) {
        match &e.host_uuid {
            Some(u) => s.push_str(&format!("; writer {u} generation {}", opt(&e.generation))),
            None => {
                s.push_str(&format!("; writer generation {} (no host uuid before 1.6)", opt(&e.generation)))
            }
        }
        if e.record_incarnation == Some(false) {
            s.push_str(", not the record's incarnation");
        }
    }
    s
}

/// Above this many network-enabled hosts the grid gives way to one summary line per host.
const GRID_MAX_HOSTS: usize = 16;
/// Human output lists at most this many one-way links or unlinked pairs (JSON lists all).
const PAIRS_SHOWN: usize = 16;

/// `[0, 1, 2, 5, 7, 8]` -> "0-2,5,7-8"; "-" when empty.
fn ranges(slots: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < slots.len() {
        let mut j = i;
        while j + 1 < slots.len() && slots[j + 1] == slots[j] + 1 {
            j += 1;
        }
        out.push(if j == i { slots[i].to_string() } else { format!("{}-{}", slots[i], slots[j]) });
        i = j + 1;
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(",")
    }
}

/// Left-aligned table lines (two spaces between columns), indented by two spaces.
fn table_lines(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{:<w$}", c, w = widths[i])).collect();
        format!("  {}", parts.join("  ")).trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out
}

/// The "who hears whom" section of the human output. `no_record`: slots with no valid record
/// (corrupt or unreadable) and why, which the matrix cannot include.
fn network_lines(m: &NetMatrix, no_record: &[(u32, &str)]) -> Vec<String> {
    let mut out = vec!["Network: who hears whom (from the records on the disk)".to_string()];
    let label = |slot: u32| -> String {
        let name = m.hosts.iter().find(|h| h.slot == slot).map(|h| h.name.as_str()).unwrap_or("?");
        format!("{slot} ({})", escape_name(name))
    };
    if !m.disk_only.is_empty() {
        let list: Vec<String> = m
            .disk_only
            .iter()
            .map(|h| format!("{} {} ({})", h.slot, escape_name(&h.name), h.state))
            .collect();
        out.push(format!("  disk-only, excluded (network not enabled): {}", list.join(", ")));
    }
    if !no_record.is_empty() {
        let list: Vec<String> = no_record.iter().map(|(s, why)| format!("{s} ({why})")).collect();
        out.push(format!("  not in the matrix (no valid record): {}", list.join(", ")));
    }
    let n = m.hosts.len();
    if n == 0 {
        out.push("  No network-enabled host on the disk.".into());
        return out;
    }
    out.push(format!(
        "  {n} network-enabled host{}; each row is what that host last wrote (a stale record shows an old view).",
        if n == 1 { "" } else { "s" }
    ));
    if n > crate::core::partition::MAX_HOSTS {
        out.push(format!(
            "  More than {} network-enabled hosts: the partition rule decides for at most that many.",
            crate::core::partition::MAX_HOSTS
        ));
    }
    out.push(String::new());
    let compact = n > GRID_MAX_HOSTS;
    let isolation = |conf: bool, iso: bool| match (conf, iso) {
        (false, false) => "-",
        (true, false) => "ok",
        (true, true) => "ISOLATED",
        (false, true) => "isolated (not configured)",
    };
    let rows: Vec<Vec<String>> = m
        .hosts
        .iter()
        .map(|h| {
            let mut row = vec![
                h.slot.to_string(),
                escape_name(&h.name).into_owned(),
                h.state.to_string(),
                h.weight.to_string(),
                isolation(h.isolation_configured, h.isolated).to_string(),
                if h.riding_through { "yes" } else { "-" }.to_string(),
                format!("{} of {}", h.hears.len(), n - 1),
            ];
            if compact {
                let deaf: Vec<u32> = m
                    .hosts
                    .iter()
                    .map(|o| o.slot)
                    .filter(|&s| s != h.slot && h.hears.binary_search(&s).is_err())
                    .collect();
                row.push(ranges(&deaf));
                row.push(ranges(&h.not_heard_by));
            }
            row
        })
        .collect();
    let mut header = vec!["SLOT", "HOST", "STATE", "WEIGHT", "ISOLATION", "RIDING THROUGH", "HEARS"];
    if compact {
        header.extend(["DOES NOT HEAR", "NOT HEARD BY"]);
    }
    out.extend(table_lines(&header, &rows));
    out.push(
        "  (ISOLATION: - none configured, ok reaches an isolation address, ISOLATED reaches none)".into(),
    );
    if !compact {
        let w = m.hosts.iter().map(|h| h.slot.to_string().len()).max().unwrap_or(1).max(2);
        let lw = w.max("hears".len());
        out.push(String::new());
        out.push("  Row hears column: * self, Y hears, . does not hear.".into());
        let mut head = format!("  {:>lw$}", "hears");
        for h in &m.hosts {
            head.push_str(&format!(" {:>w$}", h.slot));
        }
        out.push(head);
        for (a, h) in m.hosts.iter().enumerate() {
            let mut line = format!("  {:>lw$}", h.slot);
            for b in 0..n {
                let c = if a == b {
                    "*"
                } else if m.hears(a, b) {
                    "Y"
                } else {
                    "."
                };
                line.push_str(&format!(" {c:>w$}"));
            }
            out.push(line);
        }
    } else {
        out.push(format!(
            "  ({n} hosts: a summary instead of the grid; --json lists every host's hears and not_heard_by)"
        ));
    }
    out.push(String::new());
    // At most PAIRS_SHOWN lines formatted (2048 hosts may have millions of pairs).
    let capped = |out: &mut Vec<String>, title: &str, pairs: &[[u32; 2]], f: &dyn Fn(u32, u32) -> String| {
        if pairs.is_empty() {
            return;
        }
        out.push(format!("  {title}:"));
        out.extend(pairs.iter().take(PAIRS_SHOWN).map(|&[a, b]| format!("    {}", f(a, b))));
        if pairs.len() > PAIRS_SHOWN {
            out.push(format!("    ... and {} more (--json lists all)", pairs.len() - PAIRS_SHOWN));
        }
    };
    let no_link = m.no_link();
    if !m.partitioned {
        out.push(
            "  Every listed host hears every other both ways: all links mutual, not partitioned.".into(),
        );
    } else {
        capped(
            &mut out,
            "one-way links (the partition rule counts only mutual links)",
            &m.one_way,
            &|a, b| format!("{} hears {}, {b} does not hear {a}", label(a), label(b)),
        );
        // In the summary each host's row already says whom it does not hear: no pair list.
        if !compact {
            capped(&mut out, "no link either way", &no_link, &|a, b| {
                format!("{} and {}", label(a), label(b))
            });
        }
        let deaf: Vec<String> = m.heard_by_none().into_iter().map(label).collect();
        if !deaf.is_empty() {
            out.push(format!("  not heard by anyone: {}", deaf.join(", ")));
        }
        out.push(format!(
            "  Partitioned: yes ({} one-way link{}, {} pair{} with no link).",
            m.one_way.len(),
            if m.one_way.len() == 1 { "" } else { "s" },
            no_link.len(),
            if no_link.len() == 1 { "" } else { "s" }
        ));
    }
    out
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
        let mut e = extent_report(&mut disk, r.slot, timing.io_timeout(), args.slot.is_some());
        e.compare_with_record(r);
        r.extent = Some(e);
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
            "network": result.network,
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
            (
                "network view".into(),
                match r.net_view.len() {
                    0 if r.status != "ok" => "-".into(),
                    0 => "hears nobody".into(),
                    _ => format!("hears slots {}", ranges(&r.net_view)),
                },
            ),
            ("mailbox ack".into(), opt(&r.mailbox_ack)),
            ("flags".into(), if r.flags.is_empty() { "-".into() } else { r.flags.join(", ") }),
            ("extent sequence".into(), r.extent_sequence.map_or("-".into(), |v| format!("{v} (record)"))),
            ("extent".into(), r.extent.as_ref().map_or("-".into(), extent_summary)),
        ];
        if let Some(m) = members_text(r) {
            // Right after the network view: both are what the writer says of its peers.
            let at = pairs.iter().position(|(k, _)| k == "network view").map_or(pairs.len(), |i| i + 1);
            pairs.insert(at, ("members".into(), m));
        }
        if let Some(h) = result.network.hosts.iter().find(|h| h.slot == s) {
            let others = result.network.hosts.len() - 1;
            pairs.push(("weight".into(), h.weight.to_string()));
            pairs.push((
                "net: hears".into(),
                format!(
                    "{} ({} of {})",
                    ranges(&h.hears),
                    h.hears.len(),
                    count(others as u64, "other network-enabled host", "other network-enabled hosts")
                ),
            ));
            pairs.push(("net: not heard by".into(), ranges(&h.not_heard_by)));
        } else if result.network.disk_only.iter().any(|h| h.slot == s) {
            pairs.push(("net".into(), "disk only (network not enabled)".into()));
        }
        if let Some(addrs) = r.extent.as_ref().and_then(|e| e.heartbeat_addrs.as_ref()) {
            pairs.push((
                "heartbeat addrs".into(),
                if addrs.is_empty() { "none".into() } else { addrs.join(", ") },
            ));
        }
        pairs.push((
            "mailbox".into(),
            match result.mailbox.as_ref().expect("read with the slot") {
                Ok(m) => mailbox_text(m, r.mailbox_ack),
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
        let no_record: Vec<(u32, &str)> =
            result.slots.iter().filter(|r| r.status != "ok").map(|r| (r.slot, r.status)).collect();
        println!();
        for line in network_lines(&result.network, &no_record) {
            println!("{line}");
        }
    }
    Ok(if degraded { EXIT_DEGRADED } else { EXIT_OK })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::{flags, Record, State};
    use crate::inspect::net_matrix;

    fn rec(slot: u32, hears: &[u32]) -> Record {
        let mut r = Record::free(uuid::Uuid::from_u128(7), slot);
        r.state = State::Live;
        r.set_host_name(&format!("hv-{slot}")).unwrap();
        r.flags = flags::NET_ENABLED;
        r.weight = 1;
        for &s in hears {
            r.net_view.set(s, true);
        }
        r
    }

    fn text(m: &NetMatrix, no_record: &[(u32, &str)]) -> String {
        network_lines(m, no_record).join("\n")
    }

    #[test]
    fn ranges_compress() {
        assert_eq!(ranges(&[]), "-");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8, 2047]), "0-2,5,7-8,2047");
    }

    #[test]
    fn grid_with_one_way_and_no_link() {
        // 0-1 mutual, 1 hears 12 (one way), 0 and 12 no link; 3 disk-only.
        let mut disk = rec(3, &[0]);
        disk.flags = 0;
        let mut r12 = rec(12, &[]);
        r12.flags |= flags::ISOLATION_CONFIGURED | flags::ISOLATED | flags::RIDING_THROUGH;
        r12.weight = 7;
        let mut r0 = rec(0, &[1]);
        r0.flags |= flags::ISOLATION_CONFIGURED;
        let m = net_matrix(&[r0, rec(1, &[0, 12]), disk, r12]);
        let t = text(&m, &[(5, "corrupt")]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Network: who hears whom (from the records on the disk)");
        assert!(t.contains("disk-only, excluded (network not enabled): 3 hv-3 (live)"), "{t}");
        assert!(t.contains("not in the matrix (no valid record): 5 (corrupt)"), "{t}");
        let grid: Vec<&str> = lines.iter().copied().skip_while(|l| !l.contains("Row hears column")).collect();
        assert_eq!(grid[1], "  hears  0  1 12");
        assert_eq!(grid[2], "      0  *  Y  .");
        assert_eq!(grid[3], "      1  Y  *  Y");
        assert_eq!(grid[4], "     12  .  .  *");
        assert!(t.contains("1 (hv-1) hears 12 (hv-12), 12 does not hear 1"), "{t}");
        assert!(t.contains("no link either way:\n    0 (hv-0) and 12 (hv-12)"), "{t}");
        assert!(!t.contains("not heard by anyone"), "1 hears 12: {t}");
        assert!(t.contains("Partitioned: yes (1 one-way link, 1 pair with no link)."), "{t}");
        let row = |slot: &str| {
            lines.iter().find(|l| l.split_whitespace().next() == Some(slot)).unwrap().to_string()
        };
        let r = row("12");
        assert!(
            r.contains("hv-12") && r.contains(" 7 ") && r.contains("ISOLATED") && r.contains("yes"),
            "{r}"
        );
        assert!(r.ends_with("0 of 2"), "{r}");
        let r = row("0");
        assert!(r.contains(" ok ") && r.ends_with("1 of 2"), "{r}");
    }

    #[test]
    fn mutual_everywhere_is_not_partitioned() {
        let m = net_matrix(&[rec(0, &[1]), rec(1, &[0])]);
        let t = text(&m, &[]);
        assert!(t.contains("all links mutual, not partitioned"), "{t}");
        assert!(!t.contains("one-way") && !t.contains("disk-only") && !t.contains("Partitioned: yes"), "{t}");
        assert!(text(&NetMatrix::default(), &[]).contains("No network-enabled host on the disk."));
    }

    #[test]
    fn names_are_escaped() {
        let mut r = rec(0, &[]);
        // Validation leaves control characters to the printer: the bytes as a record may hold them.
        let evil = "evil\u{1b}[2J";
        r.host_name[..evil.len()].copy_from_slice(evil.as_bytes());
        let t = text(&net_matrix(&[r, rec(1, &[])]), &[]);
        assert!(!t.contains('\u{1b}'), "{t}");
        assert!(t.contains("evil\\u{1b}[2J"), "{t}");
    }

    #[test]
    fn more_than_16_hosts_print_a_summary() {
        // 20 hosts, all hear each other except: 5 hears nobody, and nobody hears 19.
        let recs: Vec<Record> = (0..20u32)
            .map(|s| {
                let hears: Vec<u32> = if s == 5 { vec![] } else { (0..19).filter(|&o| o != s).collect() };
                rec(s, &hears)
            })
            .collect();
        let m = net_matrix(&recs);
        let t = text(&m, &[]);
        assert!(!t.contains("Row hears column"), "no grid above 16 hosts: {t}");
        assert!(t.contains("20 hosts: a summary instead of the grid"), "{t}");
        assert!(t.contains("DOES NOT HEAR") && t.contains("NOT HEARD BY"), "{t}");
        let cells = |slot: &str| -> Vec<String> {
            let line = t.lines().find(|l| l.split_whitespace().next() == Some(slot)).unwrap();
            line.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect()
        };
        // HEARS, DOES NOT HEAR, NOT HEARD BY.
        assert_eq!(cells("5")[6..], ["0 of 19", "0-4,6-19", "-"]);
        assert_eq!(cells("19")[6..], ["19 of 19", "-", "0-18"]);
        assert_eq!(cells("0")[6..], ["18 of 19", "19", "5"]);
        assert!(t.contains("not heard by anyone: 19 (hv-19)"), "{t}");
        // x hears 5 (19 links) and 19 hears x (19 links), [19, 5] in both: 37, 16 shown.
        assert_eq!(m.one_way.len(), 37);
        assert!(t.contains("... and 21 more (--json lists all)"), "{t}");
        assert!(t.contains("Partitioned: yes (37 one-way links, 0 pairs with no link)."), "{t}");
        // Every line stays readable: no grid row grows with the host count.
        assert!(t.lines().all(|l| l.chars().count() < 120), "{t}");
    }

    #[test]
    fn two_thousand_hosts_stay_quick() {
        // The most a disk holds: everyone hears only the even slots (a million one-way links).
        let evens: Vec<u32> = (0..2048).step_by(2).collect();
        let recs: Vec<Record> = (0..2048).map(|s| rec(s, &evens)).collect();
        let started = std::time::Instant::now();
        let m = net_matrix(&recs);
        let t = text(&m, &[]);
        assert_eq!(m.one_way.len(), 1024 * 1024);
        assert!(t.contains("More than 64 network-enabled hosts"), "{t}");
        assert!(t.contains(&format!("... and {} more", 1024 * 1024 - PAIRS_SHOWN)));
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    }
}
