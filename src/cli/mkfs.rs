//! `diskbeat mkfs`: format a device into per-host slots.

use super::output::{
    bytes, ms, print_json, print_pairs, print_table, region_rows, superblock_json, superblock_lines,
};
use super::{CliError, CliResult, EXIT_OK};
use crate::format::escape_name;
use crate::io::EngineKind;
use crate::mkfs::{mkfs, MkfsError, MkfsOptions, Progress};
use serde_json::json;
use std::path::PathBuf;

/// Format DEVICE as a heartbeat disk.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  diskbeat mkfs /dev/mapper/hb-lun --cluster pool-a --slots 64
  diskbeat mkfs /dev/sdx --slots 2048 --slot-size 4096 --timeout 60s   # 512e LUN
  diskbeat mkfs /dev/loop0 --force --json                              # re-format, JSON report

Refuses, writing nothing, when the device is too small, already holds a diskbeat cluster, other
data, or heartbeat records left by a wiped superblock (unless --force), or when anything still
writes to it (even with --force).

Whenever the device is not blank, mkfs first watches it for writers: every record and mailbox
slot of the old layout, every block the new layout writes and every record or mailbox sector found
in its first 256 MiB, for the old cluster's base timeout T plus two intervals (from the old
superblock, or from the timings the old records carry; a few seconds when nothing says). With the
default T = 40 s that is 44 s. --observe can lengthen the watch, never shorten it.

Exit status: 0 formatted, 1 refused or failed, 2 bad options.")]
pub struct Args {
    /// Block device (or regular file) to format.
    pub device: PathBuf,
    /// Number of host slots (1-2048).
    #[arg(long, default_value_t = 64)]
    pub slots: u32,
    /// Cluster name (stored in the superblock; at most 64 bytes).
    #[arg(long, default_value = "diskbeat")]
    pub cluster: String,
    /// Slot stride in bytes; default: the logical sector size. Use 4096 on 512e devices.
    #[arg(long)]
    pub slot_size: Option<u32>,
    /// Size of each host's data extent in bytes (a multiple of 8192: two copies; default 2 MiB,
    /// room for about 200 VMs, see docs/FORMAT.md "Sizing the data extent").
    #[arg(long, visible_alias = "extent-size", default_value_t = crate::format::layout::DEFAULT_EXTENT_SIZE)]
    pub data_size: u64,
    /// Base timeout T the cluster runs with (e.g. 40s, 2s, 500ms); every timeout derives from it.
    #[arg(long, default_value = "40s", value_parser = crate::timing::parse_duration_ms)]
    pub timeout: u32,
    /// Overwrite an existing diskbeat cluster or other data (never a live cluster).
    #[arg(long)]
    pub force: bool,
    /// Watch for writers at least this long (only lengthens the watch; default and minimum: the old
    /// cluster's base timeout plus two intervals, see below).
    #[arg(long, value_parser = crate::timing::parse_duration_ms)]
    pub observe: Option<u32>,
    /// I/O engine.
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    pub engine: EngineKind,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// mkfs's progress on stderr: lines (none under --json), and a bar for the writer watch when
/// stderr is a terminal (instead of the periodic "watching: ..." lines).
struct CliProgress {
    json: bool,
    bars: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress for CliProgress {
    fn note(&mut self, text: &str) {
        match (&self.bar, self.json) {
            (_, true) => {}
            (Some(bar), false) => bar.suspend(|| eprintln!("mkfs: {text}")),
            (None, false) => eprintln!("mkfs: {text}"),
        }
    }

    fn watching(&mut self, elapsed_ms: u64, window_ms: u64) {
        if !self.bars {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            super::progress::timed(
                "mkfs",
                "watching for writers",
                std::time::Duration::from_millis(window_ms),
            )
        });
        bar.set_position(elapsed_ms);
    }

    fn watch_note(&mut self, text: &str) {
        if self.bar.is_none() {
            self.note(text);
        }
    }

    fn watch_ended(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for CliProgress {
    fn drop(&mut self) {
        self.watch_ended();
    }
}

pub fn run(args: Args) -> CliResult {
    let opts = MkfsOptions {
        slots: args.slots,
        cluster_name: args.cluster.clone(),
        slot_size: args.slot_size,
        extent_size: args.data_size,
        base_timeout_ms: args.timeout,
        force: args.force,
        observe_ms: args.observe,
        engine: args.engine,
        cluster_uuid: None,
    };
    let json = args.json;
    let mut progress = CliProgress { json, bars: super::progress::wanted(json), bar: None };
    let result = mkfs(&args.device, &opts, &mut progress);
    drop(progress);
    let report = result.map_err(|e| match e {
        MkfsError::Name(_) | MkfsError::Timing(_) | MkfsError::Layout(_) => CliError::usage(e.to_string()),
        e => CliError::fail(e.to_string()),
    })?;
    for w in &report.warnings {
        eprintln!("mkfs: warning: {w}");
    }
    let sb = &report.superblock;
    if json {
        print_json(&json!({
            "device": args.device,
            "device_size": report.device_size,
            "logical_sector_size": report.logical_sector_size,
            "physical_sector_size": report.physical_sector_size,
            "superblock": superblock_json(sb),
            "engine": report.engine.as_str(),
            "write_ms": report.write_us as f64 / 1000.0,
            "observed_ms": report.observed_ms,
            "watch": report.watch,
            "replaced": report.replaced.as_ref().map(|(n, u)| json!({"cluster_name": n, "cluster_uuid": u.to_string()})),
            "warnings": report.warnings,
        }));
    } else {
        println!("Formatted {} ({} bytes)", args.device.display(), report.device_size);
        if let Some((name, uuid)) = &report.replaced {
            println!("  replaced cluster '{}' ({uuid})", escape_name(name));
        }
        if let Some(w) = &report.watch {
            let parts: Vec<&str> = w.parts.iter().map(|p| p.what).collect();
            println!(
                "  watched {} ({}) for {}, {} reads: no writer",
                bytes(w.bytes),
                parts.join(", "),
                ms(w.duration_ms),
                w.passes
            );
        }
        print_pairs(&superblock_lines(sb));
        println!();
        let rows: Vec<Vec<String>> = region_rows(sb).into_iter().map(Vec::from).collect();
        print_table(&["REGION", "OFFSET", "SIZE", ""], &rows);
        println!();
        println!(
            "Wrote {} slots in {:.1} ms ({}).",
            sb.layout.slot_count,
            report.write_us as f64 / 1000.0,
            report.engine.as_str()
        );
    }
    Ok(EXIT_OK)
}
