//! Shared pieces of human and JSON output.

use crate::format::escape_name;
use crate::format::superblock::Superblock;
use crate::timing::Timing;
use serde_json::{json, Value};

/// The superblock as JSON (the same object in every command that reports it).
pub fn superblock_json(sb: &Superblock) -> Value {
    let l = &sb.layout;
    let region = |r: crate::format::layout::Region| json!({ "offset": r.offset, "size": r.size });
    json!({
        "format_version": format!("{}.{}", crate::format::VERSION_MAJOR, sb.version_minor),
        "cluster_name": sb.cluster_name,
        "cluster_uuid": sb.cluster_uuid.to_string(),
        "sector_size": l.sector_size,
        "slot_size": l.slot_size,
        "slots": l.slot_count,
        "extent_size": l.extent_size,
        "base_timeout_ms": sb.base_timeout_ms,
        "timing": Timing::from_base(sb.base_timeout_ms).ok(),
        "device_size": sb.device_size,
        "format_time_unix_s": sb.format_time_unix_s,
        "regions": {
            "superblock": region(l.superblock),
            "probe": region(l.probe),
            "records": region(l.records),
            "mailboxes": region(l.mailboxes),
            "extents": region(l.extents),
        },
    })
}

/// Human summary of a superblock, one `label  value` line each.
pub fn superblock_lines(sb: &Superblock) -> Vec<(String, String)> {
    let l = &sb.layout;
    let mut lines = vec![
        ("cluster".into(), format!("{} ({})", escape_name(&sb.cluster_name), sb.cluster_uuid)),
        ("format version".into(), format!("{}.{}", crate::format::VERSION_MAJOR, sb.version_minor)),
        ("sector size".into(), format!("{} B", l.sector_size)),
        ("slots".into(), format!("{} x {} B", l.slot_count, l.slot_size)),
        ("data extent".into(), format!("{} per host", bytes(l.extent_size))),
    ];
    if let Ok(t) = Timing::from_base(sb.base_timeout_ms) {
        lines.push((
            "base timeout".into(),
            format!(
                "{} (interval {}, io timeout {}, self-fence {}, host dead {})",
                ms(t.base_timeout_ms.into()),
                ms(t.interval_ms.into()),
                ms(t.io_timeout_ms.into()),
                ms(t.self_fence_ms.into()),
                ms(t.host_dead_ms.into())
            ),
        ));
    }
    lines
}

/// The region table as rows.
pub fn region_rows(sb: &Superblock) -> Vec<[String; 4]> {
    let l = &sb.layout;
    [
        ("superblock", l.superblock),
        ("probe", l.probe),
        ("records", l.records),
        ("mailboxes", l.mailboxes),
        ("extents", l.extents),
    ]
    .iter()
    .map(|(name, r)| [name.to_string(), r.offset.to_string(), r.size.to_string(), bytes(r.size)])
    .collect()
}

/// Prints rows as a left-aligned table with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", format_table(header, rows));
}

/// Rows as a left-aligned table with a header, one line each (newline-terminated).
pub fn format_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{:<w$}", c, w = widths[i])).collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn print_pairs(pairs: &[(String, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("  {k:<w$}  {v}");
    }
}

/// `1536` -> "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `2500` -> "2.5 s", `800` -> "800 ms".
pub fn ms(v: u64) -> String {
    if v >= 1000 && v % 100 == 0 {
        let s = v as f64 / 1000.0;
        if s.fract() == 0.0 {
            format!("{s:.0} s")
        } else {
            format!("{s:.1} s")
        }
    } else {
        format!("{v} ms")
    }
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON values serialize"));
}
