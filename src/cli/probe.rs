//! `diskbeat probe`: measure this storage with the daemon's engine and recommend a base timeout.

use super::output::{ms, print_json, print_table};
use super::{CliError, CliResult, EXIT_OK};
use crate::disk::{read_superblock, Disk, DiskError};
use crate::format::layout::{Layout, Params};

/// Smallest data extent: keeps the synthetic layout of an unformatted device small.
const MIN_EXTENT_SIZE: u64 = 2 * crate::format::ALIGN;
use crate::format::layout::Region;
use crate::format::superblock::Superblock;
use crate::io::{Access, AlignedBuf, Device, EngineKind};
use crate::probe::{probe, Percentiles};
use crate::timing::{Timing, DEFAULT_BASE_TIMEOUT_MS};
use serde_json::json;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Measure record-write and record-table-read latency.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Uses the same engine, buffers and requests as the daemon. On a formatted disk it writes only into
the probe area (never a slot: safe on a live cluster, though it adds load). On an unformatted
device it lays out a table of --slots slots and writes where the probe area would be, after saying
so, and puts back what was there afterwards (also on error and on Ctrl-C), checked by reading it
back: a blank device stays blank. A device holding other data is refused unless --force.

The recommended base timeout covers the worst latency seen with a 4x margin on the io timeout
(T/4). It cannot see multipath path failover or array controller failover: add those times.

Examples:
  diskbeat probe /dev/mapper/hb-lun --seconds 30
  diskbeat probe /dev/loop0 --engine sync --json

Exit status: 0 measured, 1 failed (including any failed or timed-out write: the measurements are
still shown, without a recommendation when every write failed; or the unformatted device could not
be restored), 2 bad options.")]
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
                version_minor: crate::format::VERSION_MINOR,
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
    // On an unformatted device, keep what probe is about to overwrite, to put it back afterwards.
    let probe_area = sb.layout.probe;
    let saved = if formatted { None } else { Some(read_region(&dev, probe_area).map_err(CliError::fail)?) };
    let stop = Arc::new(AtomicBool::new(false));
    // The first SIGINT/SIGTERM stops the measurement (then the device is put back); a second one
    // ends the process at once.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| CliError::fail(format!("cannot handle signal {sig}: {e}")))?;
    }
    let mut disk = Disk::with_superblock(dev, sb, args.engine, None).map_err(fail)?;
    let (engine, slot_size, slot_count) = (
        disk.engine().kind().as_str(),
        disk.superblock().layout.slot_size,
        disk.superblock().layout.slot_count,
    );
    if !args.json {
        eprintln!(
            "probe: {} for {:.1} s: {}-byte record writes and {}-slot table reads ({engine})",
            args.device.display(),
            args.seconds,
            slot_size,
            slot_count,
        );
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let bar =
        super::progress::wanted(args.json).then(|| super::progress::timed("probe", "measuring", duration));
    let mut advanced = |elapsed: Duration| {
        if let Some(bar) = &bar {
            bar.set_position(elapsed.as_millis() as u64);
        }
    };
    let result = probe(&mut disk, duration, io_timeout, &stop, &mut advanced);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let late_writes = disk.engine().pinned_ops();
    drop(disk);
    if let Some(saved) = &saved {
        restore_region(&args.device, probe_area, saved).map_err(|e| {
            CliError::fail(format!(
                "{}: could not put back bytes {}..{} that probe overwrote on this unformatted device: \
                 {e}. `diskbeat mkfs` will see other data there (use --force if the device is expendable)",
                args.device.display(),
                probe_area.offset,
                probe_area.end()
            ))
        })?;
        if late_writes > 0 {
            eprintln!(
                "probe: warning: {late_writes} probe writes timed out and had not completed when bytes \
                 {}..{} were put back: they may still land there",
                probe_area.offset,
                probe_area.end()
            );
        }
    }
    let r = result.map_err(fail)?;
    if args.json {
        print_json(&json!({
            "device": args.device,
            "engine": engine,
            "formatted": formatted,
            "restored": saved.is_some(),
            "slots": slot_count,
            "slot_size": slot_size,
            "table_bytes": r.table_bytes,
            "io_timeout_ms": io_timeout.as_millis() as u64,
            "elapsed_ms": r.elapsed_ms,
            "write": r.write,
            "table_read": r.sweep,
            "cycle": r.cycle,
            "errors": r.errors,
            "timeouts": r.timeouts,
            "writes": r.writes,
            "write_errors": r.write_errors,
            "write_timeouts": r.write_timeouts,
            "first_write_failure": r.first_write_failure,
            "interrupted": r.interrupted,
            "recommended_base_timeout_ms": (!r.all_writes_failed()).then_some(r.recommended_base_timeout_ms),
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
                row(&format!("record write ({slot_size} B)"), &r.write),
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
        if !r.all_writes_failed() {
            println!(
                "\nSmallest base timeout this storage supports with margin: {} (--timeout for mkfs and the daemon).",
                ms(r.recommended_base_timeout_ms.into())
            );
            println!("Add multipath / controller failover time on top: the probe cannot see it.");
        }
    }
    let failed_writes = r.write_errors + r.write_timeouts;
    let why = r.first_write_failure.as_deref().unwrap_or("?");
    if r.all_writes_failed() {
        return Err(CliError::fail(format!(
            "{}: every one of {} writes failed (first: {why}): this device cannot be written (read-only \
             LUN? failed path?); no timeout can be recommended",
            args.device.display(),
            r.writes
        )));
    }
    if failed_writes > 0 {
        return Err(CliError::fail(format!(
            "{}: {failed_writes} of {} writes failed or timed out (first: {why}): this storage is not \
             healthy enough to heartbeat on; the latencies above include the failures",
            args.device.display(),
            r.writes
        )));
    }
    if r.interrupted {
        return Err(CliError::fail(format!(
            "interrupted after {} ms{}",
            r.elapsed_ms,
            if saved.is_some() { "; the device was put back as it was" } else { "" }
        )));
    }
    Ok(EXIT_OK)
}

/// Reads `region` of the device (O_DIRECT).
fn read_region(dev: &Device, region: Region) -> Result<Vec<u8>, String> {
    let mut buf = AlignedBuf::new(region.size as usize).map_err(|e| e.to_string())?;
    let n = nix::sys::uio::pread(dev.fd.as_fd(), buf.as_mut_slice(), region.offset as i64)
        .map_err(|e| format!("reading bytes {}..{}: {}", region.offset, region.end(), e.desc()))?;
    if n != region.size as usize {
        return Err(format!("short read at {} ({n} bytes)", region.offset));
    }
    Ok(buf.as_slice().to_vec())
}

/// Puts `saved` back over `region` (O_DIRECT | O_DSYNC) unless it is already there, and checks it
/// by reading it back.
fn restore_region(path: &std::path::Path, region: Region, saved: &[u8]) -> Result<(), String> {
    let dev = Device::open(path, Access::ReadWrite).map_err(|e| e.to_string())?;
    if read_region(&dev, region)? == saved {
        return Ok(());
    }
    let mut buf = AlignedBuf::new(saved.len()).map_err(|e| e.to_string())?;
    buf.as_mut_slice().copy_from_slice(saved);
    let n = nix::sys::uio::pwrite(dev.fd.as_fd(), buf.as_slice(), region.offset as i64)
        .map_err(|e| format!("writing bytes {}..{}: {}", region.offset, region.end(), e.desc()))?;
    if n != saved.len() {
        return Err(format!("short write at {} ({n} bytes)", region.offset));
    }
    if read_region(&dev, region)? != saved {
        return Err("read back differs from what was written".into());
    }
    Ok(())
}
