//! `diskbeat probe`: measure this storage with the daemon's engine and recommend a base timeout.

use super::output::{ms, print_json, print_table};
use super::{CliError, CliResult, EXIT_OK};
use crate::disk::{read_superblock, Disk, DiskError};
use crate::format::layout::{Layout, Params};

/// Smallest data extent: keeps the synthetic layout of an unformatted device small.
const MIN_EXTENT_SIZE: u64 = 2 * crate::format::ALIGN;
use crate::format::superblock::Superblock;
use crate::io::{Access, Device, EngineKind};
use crate::probe::{probe, Percentiles};
use crate::timing::{Timing, DEFAULT_BASE_TIMEOUT_MS};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Measure record-write and record-table-read latency.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Uses the same engine, buffers and requests as the daemon. On a formatted disk it writes only into
the probe area (never a slot: safe on a live cluster, though it adds load). On an empty device it
lays out a table of --slots slots and writes where the probe area would be, after saying so; a
device holding other data is refused unless --force.

The recommended base timeout covers the worst latency seen with a 4x margin on the io timeout
(T/4). It cannot see multipath path failover or array controller failover: add those times.

Examples:
  diskbeat probe /dev/mapper/hb-lun --seconds 30
  diskbeat probe /dev/loop0 --engine sync --json

Exit status: 0 measured, 1 failed, 2 bad options.")]
pub struct Args {
    /// Heartbeat device.
    pub device: PathBuf,
    /// How long to measure.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Slots to lay out on an unformatted device (a formatted one uses its own).
    #[arg(long, default_value_t = 2048)]
    pub slots: u32,
    /// io timeout per request (default: from the disk's base timeout, or 10 s).
    #[arg(long, value_parser = crate::timing::parse_duration_ms)]
    pub io_timeout: Option<u32>,
    /// Probe a device that holds data which is not diskbeat's (writes into its first 68 KiB).
    #[arg(long)]
    pub force: bool,
    /// I/O engine.
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    pub engine: EngineKind,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> CliResult {
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err(CliError::usage("--seconds must be between 0 and 3600"));
    }
    let fail = |e: DiskError| CliError::fail(e.to_string());
    let dev = Device::open(&args.device, Access::ReadWrite).map_err(|e| CliError::fail(e.to_string()))?;
    let (sb, formatted) = match read_superblock(&dev) {
        Ok(sb) => (sb, true),
        Err(DiskError::NotFormatted { .. }) => {
            let foreign = matches!(crate::mkfs::read_head(&dev), Ok(crate::mkfs::Existing::Foreign { .. }));
            if foreign && !args.force {
                return Err(CliError::fail(format!(
                    "{}: holds data that is not a diskbeat disk; probe would overwrite its first blocks. \
                     Use --force if that data is expendable",
                    args.device.display()
                )));
            }
            let layout = Layout::new(Params {
                sector_size: dev.logical_sector_size,
                slot_size: dev.logical_sector_size,
                slot_count: args.slots,
                extent_size: MIN_EXTENT_SIZE,
            })
            .map_err(|e| CliError::usage(e.to_string()))?;
            if layout.total_size() > dev.size_bytes {
                return Err(CliError::fail(format!(
                    "{}: too small for a {}-slot table; use fewer --slots",
                    args.device.display(),
                    args.slots
                )));
            }
            let sb = Superblock {
                cluster_uuid: uuid::Uuid::nil(),
                cluster_name: "probe".into(),
                version_minor: 0,
                layout,
                base_timeout_ms: DEFAULT_BASE_TIMEOUT_MS,
                device_size: dev.size_bytes,
                format_time_unix_s: 0,
            };
            eprintln!(
                "probe: {} is not formatted: writing bytes {}..{} (where the probe area would be)",
                args.device.display(),
                layout.probe.offset,
                layout.probe.end()
            );
            (sb, false)
        }
        Err(DiskError::Corrupt { .. }) if !args.force => {
            return Err(CliError::fail(format!(
                "{}: the diskbeat superblock is corrupt, so the probe area is unknown; use --force to \
                 probe anyway (writes into the first 68 KiB)",
                args.device.display()
            )))
        }
        Err(DiskError::Corrupt { .. }) => {
            return Err(CliError::fail(
                "probing a disk with a corrupt superblock is not supported; re-format it",
            ))
        }
        Err(e) => return Err(fail(e)),
    };
    let timing = Timing::from_base(sb.base_timeout_ms).map_err(|e| CliError::fail(e.to_string()))?;
    let io_timeout = Duration::from_millis(u64::from(args.io_timeout.unwrap_or(timing.io_timeout_ms)));
    let mut disk = Disk::with_superblock(dev, sb, args.engine, None).map_err(fail)?;
    if !args.json {
        eprintln!(
            "probe: {} for {:.1} s: {}-byte record writes and {}-slot table reads ({})",
            args.device.display(),
            args.seconds,
            disk.superblock().layout.slot_size,
            disk.superblock().layout.slot_count,
            disk.engine().kind().as_str()
        );
    }
    let r = probe(&mut disk, Duration::from_secs_f64(args.seconds), io_timeout).map_err(fail)?;
    if args.json {
        print_json(&json!({
            "device": args.device,
            "engine": disk.engine().kind().as_str(),
            "formatted": formatted,
            "slots": disk.superblock().layout.slot_count,
            "slot_size": disk.superblock().layout.slot_size,
            "table_bytes": r.table_bytes,
            "io_timeout_ms": io_timeout.as_millis() as u64,
            "elapsed_ms": r.elapsed_ms,
            "write": r.write,
            "table_read": r.sweep,
            "cycle": r.cycle,
            "errors": r.errors,
            "timeouts": r.timeouts,
            "recommended_base_timeout_ms": r.recommended_base_timeout_ms,
        }));
    } else {
        let row = |name: &str, p: &Percentiles| {
            vec![
                name.to_string(),
                p.samples.to_string(),
                p.p50_us.to_string(),
                p.p99_us.to_string(),
                p.p999_us.to_string(),
                p.max_us.to_string(),
            ]
        };
        print_table(
            &["OPERATION", "SAMPLES", "P50 US", "P99 US", "P99.9 US", "MAX US"],
            &[
                row(&format!("record write ({} B)", disk.superblock().layout.slot_size), &r.write),
                row(&format!("table read ({} B)", r.table_bytes), &r.sweep),
                row("write + read", &r.cycle),
            ],
        );
        if r.errors + r.timeouts > 0 {
            println!(
                "\n{} errors and {} timeouts during the probe: this storage is not healthy.",
                r.errors, r.timeouts
            );
        }
        println!(
            "\nSmallest base timeout this storage supports with margin: {} (--timeout for mkfs and the daemon).",
            ms(r.recommended_base_timeout_ms.into())
        );
        println!("Add multipath / controller failover time on top: the probe cannot see it.");
    }
    Ok(EXIT_OK)
}
