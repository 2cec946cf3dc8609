//! Formatting a heartbeat device. Every check runs before the first write: a refusal leaves the
//! device byte-identical.
//!
//! Write order (crash safety): invalidate any old superblock, write the probe area, record table,
//! mailbox table and extent headers, flush, write the new superblock (the commit record), flush,
//! then read everything back. A crash at any point before the commit leaves no valid superblock.

use crate::disk::{self, Disk, DiskError, SlotView};
use crate::format::extent::Extent;
use crate::format::layout::{Layout, LayoutError, Params, DEFAULT_EXTENT_SIZE};
use crate::format::mailbox::Mailbox;
use crate::format::record::{Record, State};
use crate::format::superblock::{Superblock, SuperblockError};
use crate::format::{encode_name, NameError, ALIGN};
use crate::io::{Access, AlignedBuf, Device, Dir, Engine, EngineKind, IoError, Op, Status};
use crate::timing::{Timing, TimingError};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// What to format.
#[derive(Debug, Clone)]
pub struct MkfsOptions {
    pub slots: u32,
    pub cluster_name: String,
    /// Slot stride; `None` = the device's logical sector size.
    pub slot_size: Option<u32>,
    pub extent_size: u64,
    pub base_timeout_ms: u32,
    pub force: bool,
    /// How long `--force` watches an existing cluster for activity; `None` = its host-dead timeout.
    pub observe_ms: Option<u32>,
    pub engine: EngineKind,
    /// Fixed cluster UUID (tests); `None` = random.
    pub cluster_uuid: Option<uuid::Uuid>,
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            slots: 64,
            cluster_name: "diskbeat".into(),
            slot_size: None,
            extent_size: DEFAULT_EXTENT_SIZE,
            base_timeout_ms: crate::timing::DEFAULT_BASE_TIMEOUT_MS,
            force: false,
            observe_ms: None,
            engine: EngineKind::Auto,
            cluster_uuid: None,
        }
    }
}

/// What mkfs did.
#[derive(Debug, Clone)]
pub struct MkfsReport {
    pub superblock: Superblock,
    pub device_size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub engine: EngineKind,
    /// The cluster this format replaced (with `--force`).
    pub replaced: Option<(String, uuid::Uuid)>,
    pub observed_ms: u32,
    pub write_us: u64,
    pub warnings: Vec<String>,
}

/// A slot that changed during the observation window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActiveSlot {
    pub slot: u32,
    pub host_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MkfsError {
    #[error("invalid cluster name: {0}")]
    Name(#[from] NameError),
    #[error(transparent)]
    Timing(#[from] TimingError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(
        "{path}: device too small: {slots} slots need {needed} bytes but the device has {device} bytes; \
         {fits} slots would fit (use --slots {fits}, or a larger LUN)"
    )]
    TooSmall { path: String, slots: u32, needed: u64, device: u64, fits: u32 },
    #[error(
        "{path}: already holds diskbeat cluster '{name}' ({uuid}); refusing to overwrite it. \
         Stop every daemon of that cluster and re-run with --force to re-format"
    )]
    AlreadyFormatted { path: String, name: String, uuid: uuid::Uuid },
    #[error(
        "{path}: holds a corrupt diskbeat superblock ({reason}); refusing to overwrite it. \
         Check the device, then re-run with --force to re-format"
    )]
    CorruptExisting { path: String, reason: SuperblockError },
    #[error(
        "{path}: holds other data (non-zero bytes at offset {offset}: a partition table, LVM label or \
         file system?) and no diskbeat superblock; refusing to overwrite it. Check the device, then \
         re-run with --force"
    )]
    ForeignData { path: String, offset: u64 },
    #[error(
        "{path}: a live cluster is using this device: {} changed during a {observed_ms} ms \
         observation; refusing even with --force. Stop those daemons first", describe_active(.active)
    )]
    LiveCluster { path: String, active: Vec<ActiveSlot>, observed_ms: u32 },
    #[error(
        "{path}: bytes at offset {offset} changed during a {observed_ms} ms observation: something is \
         writing to this device; refusing even with --force"
    )]
    LiveDevice { path: String, offset: u64, observed_ms: u32 },
    #[error(
        "{path}: writing the {region} failed ({status:?}); the device holds no valid superblock now: \
             fix the device and re-run mkfs"
    )]
    WriteFailed { path: String, region: &'static str, status: Status },
    #[error(
        "{path}: read-back verification failed ({what}): the device does not keep what is written to it"
    )]
    Verify { path: String, what: String },
}

fn describe_active(active: &[ActiveSlot]) -> String {
    let list: Vec<String> = active.iter().map(|a| format!("slot {} ({})", a.slot, a.host_name)).collect();
    format!("heartbeat record{} of {}", if active.len() == 1 { "" } else { "s" }, list.join(", "))
}

/// What the head of the device held before formatting.
pub(crate) enum Existing {
    Empty,
    Diskbeat(Superblock),
    Corrupt(SuperblockError),
    /// Not diskbeat's: the first non-zero byte is at `offset`.
    Foreign {
        offset: u64,
    },
}

/// Bytes checked for other data: the superblock block and the probe area. Partition tables,
/// LVM labels (byte 512) and file system superblocks (ext4 at 1024, xfs at 0) all live here.
const SIGNATURE_SPAN: usize = (ALIGN + crate::format::layout::PROBE_REGION_SIZE) as usize;

pub(crate) fn read_head(dev: &Device) -> Result<Existing, MkfsError> {
    let len = SIGNATURE_SPAN.min(dev.size_bytes as usize / 512 * 512);
    let mut buf = AlignedBuf::new(SIGNATURE_SPAN).map_err(IoError::Alloc)?;
    let path = dev.path.display().to_string();
    nix::sys::uio::pread(dev.fd.as_fd(), &mut buf.as_mut_slice()[..len], 0)
        .map_err(|e| DiskError::SuperblockRead { path, reason: e.desc().into() })?;
    let head = &buf.as_slice()[..len];
    Ok(match Superblock::decode(head) {
        Ok(sb) => Existing::Diskbeat(sb),
        Err(e) if head[4..12] == crate::format::superblock::MAGIC => Existing::Corrupt(e),
        Err(SuperblockError::Corrupt(
            crate::format::Corruption::Zeroed | crate::format::Corruption::BadMagic,
        )) => match head.iter().position(|&b| b != 0) {
            None => Existing::Empty,
            Some(offset) => Existing::Foreign { offset: offset as u64 },
        },
        Err(e) => Existing::Corrupt(e),
    })
}

/// Watches an existing cluster's record table for `window_ms`: any record whose sequence or
/// generation changes means a live host. Returns at the first change.
fn observe_cluster(
    path: &Path,
    window_ms: u32,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<ActiveSlot>, MkfsError> {
    let mut disk = Disk::open(path, Access::ReadOnly, EngineKind::Auto, None)?;
    let timing = Timing::from_base(disk.superblock().base_timeout_ms).map_err(MkfsError::Timing)?;
    let io_timeout = timing.io_timeout();
    disk.sweep(io_timeout)?;
    let before = disk.snapshot();
    let start = Instant::now();
    let step = Duration::from_millis(u64::from(timing.interval_ms.clamp(10, 1000)));
    progress(&format!("watching the existing cluster for {} ms for live hosts", window_ms));
    loop {
        std::thread::sleep(step.min(Duration::from_millis(u64::from(window_ms))));
        disk.sweep(io_timeout)?;
        let active: Vec<ActiveSlot> = disk
            .snapshot()
            .iter()
            .zip(&before)
            .enumerate()
            .filter_map(|(slot, (now, was))| match (now, was) {
                (SlotView::Record(a), SlotView::Record(b))
                    if a.sequence != b.sequence || a.generation != b.generation =>
                {
                    Some(ActiveSlot { slot: slot as u32, host_name: a.host_name().to_owned() })
                }
                // A slot that went from unreadable/corrupt to a valid live record is someone writing.
                (SlotView::Record(a), _) if a.state != State::Free && now != was => {
                    Some(ActiveSlot { slot: slot as u32, host_name: a.host_name().to_owned() })
                }
                _ => None,
            })
            .collect();
        if !active.is_empty() || start.elapsed() >= Duration::from_millis(u64::from(window_ms)) {
            return Ok(active);
        }
    }
}

/// Watches raw bytes `[0, len)` for changes (no readable superblock to guide us).
fn observe_raw(dev: &Device, len: u64, window_ms: u32) -> Result<Option<u64>, MkfsError> {
    let len = len.min(32 << 20) as usize;
    let mut a = AlignedBuf::new(len).map_err(IoError::Alloc)?;
    let mut b = AlignedBuf::new(len).map_err(IoError::Alloc)?;
    let read = |buf: &mut AlignedBuf| {
        nix::sys::uio::pread(dev.fd.as_fd(), buf.as_mut_slice(), 0).map_err(|e| DiskError::SuperblockRead {
            path: dev.path.display().to_string(),
            reason: e.desc().into(),
        })
    };
    read(&mut a)?;
    std::thread::sleep(Duration::from_millis(u64::from(window_ms)));
    read(&mut b)?;
    Ok(a.as_slice().iter().zip(b.as_slice()).position(|(x, y)| x != y).map(|p| p as u64))
}

/// Formats `path`. `progress` receives human-readable progress lines.
pub fn mkfs(
    path: &Path,
    opts: &MkfsOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<MkfsReport, MkfsError> {
    let path_s = path.display().to_string();
    encode_name(&opts.cluster_name)?;
    let timing = Timing::from_base(opts.base_timeout_ms)?;
    let dev = Device::open(path, Access::Exclusive)?;
    let sector = dev.logical_sector_size;
    let params = Params {
        sector_size: sector,
        slot_size: opts.slot_size.unwrap_or(sector),
        slot_count: opts.slots,
        extent_size: opts.extent_size,
    };
    let layout = Layout::new(params)?;
    if layout.total_size() > dev.size_bytes {
        return Err(MkfsError::TooSmall {
            path: path_s,
            slots: opts.slots,
            needed: layout.total_size(),
            device: dev.size_bytes,
            fits: Layout::max_slots_for(dev.size_bytes, params),
        });
    }
    let mut warnings = Vec::new();
    if params.slot_size < dev.physical_sector_size {
        warnings.push(format!(
            "the device has {}-byte physical sectors but slots are {} bytes: a record write is a \
             read-modify-write of a physical sector shared with other hosts' records; use --slot-size {}",
            dev.physical_sector_size, params.slot_size, dev.physical_sector_size
        ));
    }

    // Every refusal happens before this point's writes.
    let existing = read_head(&dev)?;
    let mut replaced = None;
    let mut observed_ms = 0;
    match existing {
        Existing::Empty => {}
        Existing::Diskbeat(old) if !opts.force => {
            return Err(MkfsError::AlreadyFormatted {
                path: path_s,
                name: old.cluster_name,
                uuid: old.cluster_uuid,
            })
        }
        Existing::Corrupt(reason) if !opts.force => {
            return Err(MkfsError::CorruptExisting { path: path_s, reason })
        }
        Existing::Foreign { offset } if !opts.force => {
            return Err(MkfsError::ForeignData { path: path_s, offset })
        }
        Existing::Diskbeat(old) => {
            let window = opts.observe_ms.unwrap_or(Timing::from_base(old.base_timeout_ms)?.host_dead_ms);
            let active = observe_cluster(path, window, progress)?;
            observed_ms = window;
            if !active.is_empty() {
                return Err(MkfsError::LiveCluster { path: path_s, active, observed_ms: window });
            }
            replaced = Some((old.cluster_name, old.cluster_uuid));
        }
        Existing::Corrupt(_) | Existing::Foreign { .. } => {
            let window = opts.observe_ms.unwrap_or(timing.host_dead_ms);
            progress(&format!("watching the device for {window} ms for writers"));
            if let Some(offset) = observe_raw(&dev, layout.mailboxes.end(), window)? {
                return Err(MkfsError::LiveDevice { path: path_s, offset, observed_ms: window });
            }
            observed_ms = window;
        }
    }

    let cluster_uuid = opts.cluster_uuid.unwrap_or_else(uuid::Uuid::new_v4);
    let sb = Superblock {
        cluster_uuid,
        cluster_name: opts.cluster_name.clone(),
        version_minor: crate::format::VERSION_MINOR,
        layout,
        base_timeout_ms: timing.base_timeout_ms,
        device_size: dev.size_bytes,
        format_time_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let device_size = dev.size_bytes;
    let (logical, physical) = (dev.logical_sector_size, dev.physical_sector_size);
    let start = Instant::now();
    let engine = write_all(dev, &sb, opts.engine, progress)?;
    let write_us = start.elapsed().as_micros() as u64;
    let engine_kind = engine.kind();
    drop(engine);
    verify(path, &sb)?;
    Ok(MkfsReport {
        superblock: sb,
        device_size,
        logical_sector_size: logical,
        physical_sector_size: physical,
        engine: engine_kind,
        replaced,
        observed_ms,
        write_us,
        warnings,
    })
}

const B_SUPER: usize = 0;
const B_PROBE: usize = 1;
const B_RECORDS: usize = 2;
const B_MAILBOXES: usize = 3;
const B_EXTENTS: usize = 4;
const BATCH: usize = 256;

fn write_all(
    dev: Device,
    sb: &Superblock,
    kind: EngineKind,
    progress: &mut dyn FnMut(&str),
) -> Result<Engine, MkfsError> {
    let l = sb.layout;
    let path = dev.path.display().to_string();
    let chunk = dev.max_io_bytes as usize;
    let n = l.slot_count as usize;
    let sizes = [
        ALIGN as usize,
        l.probe.size as usize,
        l.records.size as usize,
        l.mailboxes.size as usize,
        n * ALIGN as usize,
    ];
    let mut engine = Engine::new(dev, kind, &sizes, BATCH)?;
    let timeout = Duration::from_secs(30);

    // Images, built in the engine's own buffers.
    engine.buf_mut(B_SUPER)?.fill(0);
    engine.buf_mut(B_PROBE)?.fill(0);
    let slot = l.slot_size as usize;
    {
        let recs = engine.buf_mut(B_RECORDS)?;
        recs.fill(0);
        for s in 0..l.slot_count {
            Record::free(sb.cluster_uuid, s).encode(&mut recs[s as usize * slot..]);
        }
    }
    {
        let mbs = engine.buf_mut(B_MAILBOXES)?;
        mbs.fill(0);
        for s in 0..l.slot_count {
            Mailbox::empty(sb.cluster_uuid, s).encode(&mut mbs[s as usize * slot..]);
        }
    }
    {
        let ext = engine.buf_mut(B_EXTENTS)?;
        ext.fill(0);
        for s in 0..l.slot_count {
            Extent::empty(sb.cluster_uuid, s).encode(&mut ext[s as usize * ALIGN as usize..]);
        }
    }

    let run = |engine: &mut Engine, ops: &[Op], region: &'static str| -> Result<(), MkfsError> {
        for batch in ops.chunks(BATCH) {
            let outcomes = engine.submit(batch, timeout)?;
            if let Some(bad) = outcomes.iter().find(|o| !o.is_done()) {
                return Err(MkfsError::WriteFailed { path: path.clone(), region, status: bad.status });
            }
        }
        Ok(())
    };
    let contiguous = |buf: usize, offset: u64, len: usize| -> Vec<Op> {
        (0..len)
            .step_by(chunk)
            .map(|off| Op {
                dir: Dir::Write,
                offset: offset + off as u64,
                buf,
                buf_off: off,
                len: chunk.min(len - off),
            })
            .collect()
    };

    let superblock_op = [Op { dir: Dir::Write, offset: 0, buf: B_SUPER, buf_off: 0, len: ALIGN as usize }];
    // 1. Invalidate any old superblock first: a crash from here on leaves no valid-looking disk.
    run(&mut engine, &superblock_op, "superblock")?;
    engine.flush()?;
    progress(&format!("writing {} slots", l.slot_count));
    run(&mut engine, &contiguous(B_PROBE, l.probe.offset, l.probe.size as usize), "probe area")?;
    run(&mut engine, &contiguous(B_RECORDS, l.records.offset, l.records.size as usize), "record table")?;
    run(
        &mut engine,
        &contiguous(B_MAILBOXES, l.mailboxes.offset, l.mailboxes.size as usize),
        "mailbox table",
    )?;
    let ext_ops: Vec<Op> = (0..l.slot_count)
        .map(|s| Op {
            dir: Dir::Write,
            offset: l.extent_offset(s),
            buf: B_EXTENTS,
            buf_off: s as usize * ALIGN as usize,
            len: ALIGN as usize,
        })
        .collect();
    run(&mut engine, &ext_ops, "extent headers")?;
    engine.flush()?;
    // 2. Commit.
    sb.encode(engine.buf_mut(B_SUPER)?)
        .map_err(|e| MkfsError::Verify { path: path.clone(), what: e.to_string() })?;
    run(&mut engine, &superblock_op, "superblock")?;
    engine.flush()?;
    Ok(engine)
}

/// Reads the formatted device back: the superblock and every record.
fn verify(path: &Path, sb: &Superblock) -> Result<(), MkfsError> {
    let fail = |what: String| MkfsError::Verify { path: path.display().to_string(), what };
    let dev = Device::open(path, Access::ReadOnly)?;
    let read = disk::read_superblock(&dev)?;
    if &read != sb {
        return Err(fail("superblock differs".into()));
    }
    let mut d = Disk::with_superblock(dev, read, EngineKind::Auto, None)?;
    let stats = d.sweep(Duration::from_secs(30))?;
    if !stats.complete() {
        return Err(fail(format!("{} slots unreadable", stats.slots_unreadable)));
    }
    for (slot, view) in d.snapshot().iter().enumerate() {
        match view {
            SlotView::Record(r) if *r == Record::free(sb.cluster_uuid, slot as u32) => {}
            other => return Err(fail(format!("slot {slot} reads back as {other:?}"))),
        }
    }
    Ok(())
}
