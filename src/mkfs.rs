//! Formatting a heartbeat device. Every check runs before the first write: a refusal leaves the
//! device byte-identical.
//!
//! Before writing, mkfs looks for an old cluster everywhere one could be: the superblock, and a scan
//! of the first [`SCAN_SPAN`] bytes for record and mailbox sectors (a daemon whose superblock reads
//! fail keeps writing for up to T/2 after a wipe). Whenever it finds anything (a superblock, other
//! data, or heartbeat structures), it watches the device for writers before formatting: every
//! record and mailbox slot of the old layout, every block the new layout will write, and every
//! structure the scan found, for at least the time the old cluster itself needs to call a silent
//! host dead ([`required_watch`]). Any byte that changes refuses the format, even with `--force`.
//!
//! Write order (crash safety): invalidate any old superblock, write the probe area, record table,
//! mailbox table, extent headers and the cluster keyring (block 0 with a zero superblock and the
//! keyring at byte 512), flush, write the new superblock (the commit record, same keyring bytes),
//! flush, then read everything back. A crash at any point before the commit leaves no valid superblock;
//! a failed read-back zeroes the new superblock again. The device is held open exclusively
//! (`O_EXCL` on block devices) and `flock`ed from the first read to the last write, so two mkfs
//! on one host collide cleanly: the second one refuses and writes nothing.

use crate::disk::DiskError;
use crate::disk::{self, Disk, SlotView};
use crate::format::extent::Extent;
use crate::format::keyring::{self, Keyring};
use crate::format::layout::{Layout, LayoutError, Params, DEFAULT_EXTENT_SIZE, PROBE_REGION_SIZE};
use crate::format::mailbox::{Mailbox, MailboxRaw};
use crate::format::record::{Record, RecordRaw, State};
use crate::format::superblock::{Superblock, SuperblockError, SuperblockRaw};
use crate::format::{check_printable, encode_name, escape_name, NameError, ALIGN, MAX_SLOTS, STRUCT_SIZE};
use crate::io::{Access, AlignedBuf, Device, Dir, Engine, EngineKind, IoError, Op, Status};
use crate::timing::{Timing, TimingError, DEFAULT_BASE_TIMEOUT_MS, MAX_BASE_TIMEOUT_MS};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};
use zerocopy::FromBytes;

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
    /// The least time to watch for writers (`--observe`). It only ever lengthens the watch: a value
    /// below what the device needs ([`required_watch`]) is raised to it, with a warning.
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
    /// How long the device was watched for writers (0: nothing to watch, the device was blank).
    pub observed_ms: u32,
    /// The watch, when there was one.
    pub watch: Option<WatchReport>,
    pub write_us: u64,
    pub warnings: Vec<String>,
}

/// A slot that changed during the observation window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActiveSlot {
    pub slot: u32,
    pub host_name: String,
}

/// One kind of thing the watch covered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WatchedPart {
    /// `old_records`, `old_mailboxes`, `old_extent_headers`, `new_layout` (superblock, probe area,
    /// record and mailbox tables), `new_extent_headers` or `found_structures` (sectors the scan
    /// found).
    pub what: &'static str,
    /// Byte ranges of the device (before merging overlaps between parts).
    pub ranges: u64,
    pub bytes: u64,
}

/// What mkfs watched for writers before formatting, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WatchReport {
    /// Time between the end of the first read and the start of the last, at least `required_ms`.
    pub duration_ms: u64,
    /// The watch this device needs ([`required_watch`]).
    pub required_ms: u32,
    /// Where `required_ms` comes from.
    pub basis: String,
    /// `--observe`, when given (it can only lengthen the watch).
    pub requested_ms: Option<u32>,
    pub parts: Vec<WatchedPart>,
    /// Distinct bytes watched (after merging overlapping parts).
    pub bytes: u64,
    /// Bytes of the old layout beyond the end of the device (shrunk LUN): nothing to watch there.
    pub clipped_bytes: u64,
    /// Record and mailbox sectors the scan found (of any cluster, valid or not).
    pub found_structures: u64,
    /// Complete reads of everything watched, the first one included.
    pub passes: u32,
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
        "{path}: cannot lock the device for formatting ({reason}): another `diskbeat mkfs` is \
         probably formatting it right now. Wait for it to finish and check the result with \
         `diskbeat inspect {path}`"
    )]
    Locked { path: String, reason: String },
    #[error(
        "{path}: device too small: {slots} slots need {needed} bytes but the device has {device} bytes; \
         {fits} slots would fit (use --slots {fits}, or a larger LUN)"
    )]
    TooSmall { path: String, slots: u32, needed: u64, device: u64, fits: u32 },
    #[error(
        "{path}: already holds diskbeat cluster '{}' ({uuid}); refusing to overwrite it. \
         Stop every daemon of that cluster and re-run with --force to re-format", escape_name(.name)
    )]
    AlreadyFormatted { path: String, name: String, uuid: uuid::Uuid },
    #[error(
        "{path}: holds diskbeat cluster '{}' ({uuid}), whose layout does not match this device: \
         {mismatch}; refusing to overwrite it. Check that this is the right device, stop every \
         daemon of that cluster and re-run with --force to re-format", escape_name(.name)
    )]
    ExistingMismatch { path: String, name: String, uuid: uuid::Uuid, mismatch: String },
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
        "{path}: holds no diskbeat superblock but {count} heartbeat record or mailbox sectors (the \
         first at offset {first_offset}): the remains of a cluster whose superblock was wiped, and \
         whose daemons may still be running (or of an interrupted mkfs); refusing to overwrite it. Stop every daemon that used \
         this device, then re-run with --force (mkfs then watches those sectors for writers first)"
    )]
    Remnants { path: String, count: u64, first_offset: u64 },
    #[error(
        "{path}: a live cluster is using this device: {} changed during a {observed_ms} ms \
         observation; refusing even with --force. Stop those daemons first", describe_active(.active)
    )]
    LiveCluster { path: String, active: Vec<ActiveSlot>, observed_ms: u64 },
    #[error(
        "{path}: bytes at offset {offset} ({what}) changed during a {observed_ms} ms observation: \
         something is writing to this device; refusing even with --force. Find and stop the writer"
    )]
    LiveDevice { path: String, offset: u64, what: String, observed_ms: u64 },
    #[error(
        "{path}: cannot read bytes at offset {offset} while looking for writers ({reason}); refusing \
         to format a device that cannot be checked: fix the device and re-run mkfs"
    )]
    WatchRead { path: String, offset: u64, reason: String },
    #[error("cannot make the cluster key: {0}; nothing was written")]
    Random(String),
    #[error(
        "{path}: writing the {region} failed ({status:?}); the device holds no valid superblock now: \
             fix the device and re-run mkfs"
    )]
    WriteFailed { path: String, region: &'static str, status: Status },
    #[error(
        "{path}: the superblock commit write did not complete ({reason}); it may still land, so block \
         0 was zeroed again: {}", describe_invalidated(.invalidated)
    )]
    CommitFailed { path: String, reason: String, invalidated: Result<(), String> },
    #[error(
        "{path}: read-back verification failed ({what}): the device does not keep what is written to \
         it, or something else wrote to it meanwhile; {}", describe_invalidated(.invalidated)
    )]
    Verify { path: String, what: String, invalidated: Result<(), String> },
}

fn describe_active(active: &[ActiveSlot]) -> String {
    let list: Vec<String> =
        active.iter().map(|a| format!("slot {} ({})", a.slot, escape_name(&a.host_name))).collect();
    format!("heartbeat record{} of {}", if active.len() == 1 { "" } else { "s" }, list.join(", "))
}

fn describe_invalidated(invalidated: &Result<(), String>) -> String {
    match invalidated {
        Ok(()) => "the new superblock was invalidated again (block 0 zeroed), so the device holds no \
                   valid superblock: fix the device (or stop the other writer) and re-run mkfs"
            .into(),
        Err(e) => format!(
            "invalidating the new superblock ALSO failed ({e}): the device may hold a valid superblock \
             over slots that do not verify; do not use it for heartbeats until it is re-formatted"
        ),
    }
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
const SIGNATURE_SPAN: usize = (ALIGN + PROBE_REGION_SIZE) as usize;

pub(crate) fn read_head(dev: &Device) -> Result<Existing, MkfsError> {
    let len = SIGNATURE_SPAN.min(dev.size_bytes as usize / 512 * 512);
    let mut buf = AlignedBuf::new(SIGNATURE_SPAN).map_err(IoError::Alloc)?;
    let path = dev.path.display().to_string();
    let n = nix::sys::uio::pread(dev.fd.as_fd(), &mut buf.as_mut_slice()[..len], 0)
        .map_err(|e| DiskError::SuperblockRead { path: path.clone(), reason: e.desc().into() })?;
    if n < len {
        // Never classify unread (zero) bytes as blank (review finding).
        return Err(
            DiskError::SuperblockRead { path, reason: format!("short read: {n} of {len} bytes") }.into()
        );
    }
    let head = &buf.as_slice()[..len];
    // A keyring (bytes 512..1024) under a zero superblock is what an mkfs interrupted before its
    // commit leaves (§12): not other data. The scan then finds that mkfs's records (`Remnants`).
    let kr = keyring::OFFSET as usize..keyring::OFFSET as usize + STRUCT_SIZE;
    let keyring_only = len >= kr.end && head[kr.start + 4..kr.start + 12] == keyring::MAGIC;
    Ok(match Superblock::decode(head) {
        Ok(sb) => Existing::Diskbeat(sb),
        Err(e) if head[4..12] == crate::format::superblock::MAGIC => Existing::Corrupt(e),
        Err(SuperblockError::Corrupt(
            crate::format::Corruption::Zeroed | crate::format::Corruption::BadMagic,
        )) => {
            match head.iter().enumerate().position(|(i, &b)| b != 0 && !(keyring_only && kr.contains(&i))) {
                None => Existing::Empty,
                Some(offset) => Existing::Foreign { offset: offset as u64 },
            }
        }
        Err(e) => Existing::Corrupt(e),
    })
}

/// What the fields of a corrupt superblock still suggest (untrusted: only used to watch more).
#[derive(Default)]
struct CorruptHint {
    layout: Option<Layout>,
    base_timeout_ms: Option<u32>,
}

fn corrupt_hint(dev: &Device, scratch: &mut AlignedBuf) -> Result<CorruptHint, MkfsError> {
    let block = &read_at(dev, scratch, 0, ALIGN.min(dev_end(dev)))?[..STRUCT_SIZE];
    let raw = SuperblockRaw::ref_from_bytes(block).expect("512 bytes");
    let layout = Layout::new(Params {
        sector_size: raw.sector_size.get(),
        slot_size: raw.slot_size.get(),
        slot_count: raw.slot_count.get(),
        extent_size: raw.extent_size.get(),
    })
    .ok();
    let base = raw.base_timeout_ms.get();
    Ok(CorruptHint { layout, base_timeout_ms: Timing::from_base(base).is_ok().then_some(base) })
}

/// Bytes that can hold records or mailboxes under any valid layout: everything up to the end of
/// the largest possible mailbox table (2048 slots of 65536 bytes), about 256 MiB. mkfs scans all of
/// it (or the whole device, if smaller) for record and mailbox sectors.
pub const SCAN_SPAN: u64 = ALIGN + PROBE_REGION_SIZE + 2 * MAX_SLOTS as u64 * 65536;

/// Heartbeat structures the scan found.
#[derive(Default)]
struct Found {
    /// Offsets of 512-byte sectors whose bytes 4..12 are `DBRECORD` or `DBMAILBX`.
    sectors: Vec<u64>,
    /// The longest base timeout a valid, non-free record says its writer runs with, and where.
    timing: Option<(u32, String)>,
}

/// Last byte + 1 that O_DIRECT reads may cover: the device size in whole logical sectors.
fn dev_end(dev: &Device) -> u64 {
    dev.size_bytes / u64::from(dev.logical_sector_size) * u64::from(dev.logical_sector_size)
}

/// Reads `len` bytes (at most the scratch buffer) at `offset` with O_DIRECT. Both are multiples of
/// the logical sector size.
fn read_at<'a>(
    dev: &Device,
    scratch: &'a mut AlignedBuf,
    offset: u64,
    len: u64,
) -> Result<&'a [u8], MkfsError> {
    let len = len as usize;
    let buf = &mut scratch.as_mut_slice()[..len];
    let mut done = 0;
    while done < len {
        match nix::sys::uio::pread(dev.fd.as_fd(), &mut buf[done..], (offset + done as u64) as i64) {
            Ok(0) => {
                return Err(MkfsError::WatchRead {
                    path: dev.path.display().to_string(),
                    offset: offset + done as u64,
                    reason: "unexpected end of device".into(),
                })
            }
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(MkfsError::WatchRead {
                    path: dev.path.display().to_string(),
                    offset: offset + done as u64,
                    reason: e.desc().into(),
                })
            }
        }
    }
    Ok(&scratch.as_slice()[..len])
}

/// The base timeout a record's writer runs with: the daemon writes io timeout = T/4 and interval =
/// T/20 into every record it writes. `None` for free records (mkfs writes zeros there).
fn record_base_ms(r: &Record) -> Option<u32> {
    if r.state == State::Free || (r.io_timeout_ms == 0 && r.interval_ms == 0) {
        return None;
    }
    let t = (4 * u64::from(r.io_timeout_ms)).max(20 * u64::from(r.interval_ms));
    Some(t.min(u64::from(MAX_BASE_TIMEOUT_MS)) as u32)
}

/// A valid record of any cluster in its own slot, from a 512-byte sector.
fn any_record(sector: &[u8]) -> Option<Record> {
    let raw: &RecordRaw = crate::format::validate(sector, None).ok()?;
    let cluster = uuid::Uuid::from_bytes(raw.header.cluster_uuid);
    Record::decode(sector, &cluster, raw.slot.get()).ok()
}

/// A valid mailbox of any cluster, from a 512-byte sector.
fn any_mailbox(sector: &[u8]) -> Option<Mailbox> {
    let raw: &MailboxRaw = crate::format::validate(sector, None).ok()?;
    let cluster = uuid::Uuid::from_bytes(raw.header.cluster_uuid);
    Mailbox::decode(sector, &cluster, raw.target_slot.get()).ok()
}

/// Reads the first [`SCAN_SPAN`] bytes and lists every record and mailbox sector in them.
fn scan(dev: &Device, scratch: &mut AlignedBuf) -> Result<Found, MkfsError> {
    let end = SCAN_SPAN.min(dev_end(dev));
    let chunk = scratch.len() as u64;
    let mut found = Found::default();
    let mut offset = 0;
    while offset < end {
        let len = chunk.min(end - offset);
        let data = read_at(dev, scratch, offset, len)?;
        for (i, sector) in data.chunks_exact(STRUCT_SIZE).enumerate() {
            let magic = &sector[4..12];
            if magic != crate::format::record::MAGIC && magic != crate::format::mailbox::MAGIC {
                continue;
            }
            let at = offset + (i * STRUCT_SIZE) as u64;
            found.sectors.push(at);
            if let Some(base) = any_record(sector).as_ref().and_then(|r| {
                record_base_ms(r)
                    .map(|b| (b, format!("record at offset {at} ('{}')", escape_name(r.host_name()))))
            }) {
                if found.timing.as_ref().is_none_or(|(t, _)| base.0 > *t) {
                    found.timing = Some(base);
                }
            }
        }
        offset += len;
    }
    Ok(found)
}

/// How long to watch a device for writers, from every base timeout T it reveals: the old
/// superblock's (valid, or the field of a corrupt one when in range), and each valid non-free
/// record's (its writer's T = max(4 × io_timeout_ms, 20 × interval_ms), capped at the largest valid
/// T, 1 h, so a crafted record cannot stall mkfs longer). The longest T wins, and the watch is
/// `T + 2 × T/20` (1.1 T):
///
/// * a live writer rewrites its record every interval (T/20); one that cannot write for T/2 fences
///   itself; its peers call it dead when its record did not change for T on their clock. A watch
///   of T with no change is therefore the cluster's own proof that nobody writes: shorter, and
///   mkfs would call dead a host that its own peers still consider alive.
/// * the two extra intervals cover our reads being up to one step apart and a writer whose last
///   beat landed just before our first read and whose next one is one interval late.
///
/// With no T at all, a floor. When diskbeat structures are on the device but none gives a T (a
/// corrupt superblock, records of another major version, all records unreadable), a cluster may
/// still be running with any T: watch 1.1 × the default base timeout (or the new cluster's, if
/// longer), as for a readable T (review finding: 4 s could miss a cluster with a long T). Only for
/// data that is not diskbeat's at all is the floor two heartbeat intervals of that T. (A daemon
/// running with a T longer than the default, whose superblock and records were all wiped, can be
/// missed: the floor is a floor, not a proof; `--observe` extends it.)
pub fn required_watch(sources: &[(u32, String)], diskbeat_seen: bool, new: &Timing) -> (u32, String) {
    match sources.iter().max_by_key(|(t, _)| *t) {
        Some((t, why)) => {
            let ms = u64::from(*t) + 2 * u64::from(*t / 20);
            (ms.min(u64::from(u32::MAX)) as u32, format!("{why}: base timeout {t} ms + 2 intervals"))
        }
        None if diskbeat_seen => {
            let t = DEFAULT_BASE_TIMEOUT_MS.max(new.base_timeout_ms);
            let ms = u64::from(t) + 2 * u64::from(t / 20);
            (
                ms.min(u64::from(u32::MAX)) as u32,
                format!("diskbeat structures with no readable timing: base timeout {t} ms + 2 intervals"),
            )
        }
        None => {
            let interval = (DEFAULT_BASE_TIMEOUT_MS / 20).max(new.interval_ms);
            (2 * interval, format!("floor: no readable timing on the device; 2 intervals of {interval} ms"))
        }
    }
}

/// A set of device ranges to watch, aligned to 4096 and clipped to the device.
struct WatchSet {
    end: u64,
    ranges: Vec<(u64, u64)>,
    parts: Vec<WatchedPart>,
    clipped_bytes: u64,
}

impl WatchSet {
    fn new(dev: &Device) -> WatchSet {
        WatchSet { end: dev_end(dev), ranges: Vec::new(), parts: Vec::new(), clipped_bytes: 0 }
    }

    /// Adds `[offset, offset + len)` (widened to 4096-byte blocks) to part `what`.
    fn add(&mut self, what: &'static str, offset: u64, len: u64) {
        let start = offset / ALIGN * ALIGN;
        let stop = (offset + len).div_ceil(ALIGN) * ALIGN;
        let clipped_stop = stop.min(self.end);
        self.clipped_bytes += stop - clipped_stop.max(start);
        if self.parts.last().is_none_or(|p| p.what != what) {
            self.parts.push(WatchedPart { what, ranges: 0, bytes: 0 });
        }
        if start < clipped_stop {
            let part = self.parts.last_mut().expect("pushed above");
            part.ranges += 1;
            part.bytes += clipped_stop - start;
            self.ranges.push((start, clipped_stop - start));
        }
    }

    /// Sorts and merges overlapping or adjacent ranges.
    fn merged(mut self) -> (Vec<(u64, u64)>, Vec<WatchedPart>, u64) {
        self.ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (off, len) in self.ranges {
            match out.last_mut() {
                Some((o, l)) if off <= *o + *l => *l = (*l).max(off + len - *o),
                _ => out.push((off, len)),
            }
        }
        (out, self.parts, self.clipped_bytes)
    }
}

/// What a changed sector is, for the refusal message.
fn describe_offset(offset: u64, old: Option<&Layout>, new: &Layout) -> String {
    let slot_of = |l: &Layout, region: crate::format::layout::Region| {
        (offset >= region.offset && offset < region.offset + l.record_table_len() as u64)
            .then(|| (offset - region.offset) / u64::from(l.slot_size))
    };
    if let Some(l) = old {
        if let Some(s) = slot_of(l, l.records) {
            return format!("record slot {s} of the old layout");
        }
        if let Some(s) = slot_of(l, l.mailboxes) {
            return format!("mailbox slot {s} of the old layout");
        }
        if offset >= l.extents.offset && offset < l.extents.offset + l.extents.size {
            return format!(
                "the extent of slot {} of the old layout",
                (offset - l.extents.offset) / l.extent_size
            );
        }
    }
    if offset < new.probe.offset {
        "the superblock".into()
    } else if offset < new.probe.end() {
        "the probe area: is `diskbeat probe` running?".into()
    } else if offset < new.mailboxes.end() {
        "where the new record and mailbox tables go".into()
    } else {
        "a block the new layout writes".into()
    }
}

/// What a long mkfs reports while it runs: lines for people, and how far the writer watch got (so
/// the command line can draw a bar; this module draws nothing). A closure taking a line is one.
pub trait Progress {
    /// A line for people.
    fn note(&mut self, text: &str);
    /// The writer watch has run `elapsed_ms` of `window_ms` with no change (at its start, then
    /// after every pass).
    fn watching(&mut self, _elapsed_ms: u64, _window_ms: u64) {}
    /// A periodic line about the watch ("watching: 5 s of 44 s"); a bar shows the same.
    fn watch_note(&mut self, text: &str) {
        self.note(text)
    }
    /// The watch ended (nothing changed, or a writer was found).
    fn watch_ended(&mut self) {}
}

impl<F: FnMut(&str)> Progress for F {
    fn note(&mut self, text: &str) {
        self(text)
    }
}

/// Watches `ranges` for at least `window_ms`: reads everything once, then again every step,
/// comparing whole blocks byte for byte with the first read. Returns the refusal at the first
/// change, or the number of passes and the time watched.
#[allow(clippy::too_many_arguments)]
fn watch(
    dev: &Device,
    scratch: &mut AlignedBuf,
    ranges: &[(u64, u64)],
    window_ms: u32,
    old: Option<&Layout>,
    new: &Layout,
    progress: &mut dyn Progress,
) -> Result<(u32, u64), MkfsError> {
    let chunk = scratch.len() as u64;
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let mut snapshot = Vec::with_capacity(total as usize);
    for &(off, len) in ranges {
        let mut pos = 0;
        while pos < len {
            let n = chunk.min(len - pos);
            snapshot.extend_from_slice(read_at(dev, scratch, off + pos, n)?);
            pos += n;
        }
    }
    let window = Duration::from_millis(u64::from(window_ms));
    let step = (window / 20).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let report_every = Duration::from_secs(5);
    let start = Instant::now();
    let mut next_report = report_every;
    let mut passes = 1;
    let window_total_ms = window.as_millis() as u64;
    progress.watching(0, window_total_ms);
    loop {
        let elapsed = start.elapsed();
        if elapsed < window {
            std::thread::sleep(step.min(window - elapsed));
        }
        let pass_start = start.elapsed();
        passes += 1;
        let mut changed: Vec<(u64, [u8; STRUCT_SIZE])> = Vec::new();
        let mut at = 0usize;
        for &(off, len) in ranges {
            let mut pos = 0;
            while pos < len {
                let n = chunk.min(len - pos);
                let now = read_at(dev, scratch, off + pos, n)?;
                let was = &snapshot[at..at + n as usize];
                if now != was {
                    for (i, (a, b)) in now.chunks(STRUCT_SIZE).zip(was.chunks(STRUCT_SIZE)).enumerate() {
                        if a != b && changed.len() < 64 {
                            let mut sector = [0u8; STRUCT_SIZE];
                            sector.copy_from_slice(a);
                            changed.push((off + pos + (i * STRUCT_SIZE) as u64, sector));
                        }
                    }
                }
                at += n as usize;
                pos += n;
            }
        }
        let observed_ms = pass_start.as_millis() as u64;
        if let Some((first, _)) = changed.first() {
            let path = dev.path.display().to_string();
            let mut active: Vec<ActiveSlot> = changed
                .iter()
                .filter_map(|(_, s)| any_record(s))
                .filter(|r| r.state != State::Free)
                .map(|r| ActiveSlot { slot: r.slot, host_name: r.host_name().to_owned() })
                .collect();
            active.dedup();
            if !active.is_empty() {
                return Err(MkfsError::LiveCluster { path, active, observed_ms });
            }
            let what = match changed.iter().find_map(|(_, s)| any_mailbox(s)) {
                Some(m) => format!(
                    "a mailbox of slot {} written by '{}'",
                    m.target_slot,
                    escape_name(m.sender_name())
                ),
                None => describe_offset(*first, old, new),
            };
            return Err(MkfsError::LiveDevice { path, offset: *first, what, observed_ms });
        }
        if pass_start >= window {
            return Ok((passes, observed_ms));
        }
        progress.watching(observed_ms.min(window_total_ms), window_total_ms);
        if pass_start >= next_report {
            progress.watch_note(&format!(
                "watching: {} s of {} s, no change so far",
                pass_start.as_secs(),
                window.as_secs_f64().ceil() as u64
            ));
            next_report += report_every;
        }
    }
}

/// Takes an exclusive `flock` on the device's open file (released when the guard drops). `O_EXCL`
/// already excludes a second mkfs on a block device; the lock also covers image files.
fn lock(dev: &Device) -> Result<nix::fcntl::Flock<OwnedFd>, MkfsError> {
    let path = dev.path.display().to_string();
    let fd =
        dev.fd.try_clone().map_err(|e| MkfsError::Locked { path: path.clone(), reason: e.to_string() })?;
    nix::fcntl::Flock::lock(fd, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        MkfsError::Locked {
            path,
            reason: if e == nix::errno::Errno::EWOULDBLOCK { "it is locked".into() } else { e.desc().into() },
        }
    })
}

/// Formats `path`. `progress` receives human-readable progress lines and the writer watch's
/// progress.
pub fn mkfs(path: &Path, opts: &MkfsOptions, progress: &mut dyn Progress) -> Result<MkfsReport, MkfsError> {
    let path_s = path.display().to_string();
    check_printable(&opts.cluster_name)?;
    encode_name(&opts.cluster_name)?;
    let timing = Timing::from_base(opts.base_timeout_ms)?;
    let dev = Device::open(path, Access::Exclusive)?;
    let _lock = lock(&dev)?;
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

    // Every refusal happens before the first write.
    let mut scratch = AlignedBuf::new(dev.max_io_bytes.max(ALIGN as u32) as usize).map_err(IoError::Alloc)?;
    let existing = read_head(&dev)?;
    progress.note(&format!(
        "looking for heartbeat records and mailboxes in the first {} MiB",
        SCAN_SPAN.min(dev.size_bytes) >> 20
    ));
    let found = scan(&dev, &mut scratch)?;
    match &existing {
        _ if opts.force => {}
        Existing::Empty if found.sectors.is_empty() => {}
        Existing::Empty => {
            return Err(MkfsError::Remnants {
                path: path_s,
                count: found.sectors.len() as u64,
                first_offset: found.sectors[0],
            })
        }
        Existing::Diskbeat(old) => {
            let mismatch = if old.layout.total_size() > dev.size_bytes {
                Some(format!(
                    "its layout needs {} bytes but the device has {} (the LUN was shrunk, or the \
                     superblock was copied from a bigger LUN)",
                    old.layout.total_size(),
                    dev.size_bytes
                ))
            } else if old.layout.sector_size < dev.logical_sector_size {
                Some(format!(
                    "it was formatted for {}-byte sectors but the device has {}-byte logical sectors",
                    old.layout.sector_size, dev.logical_sector_size
                ))
            } else {
                None
            };
            let (name, uuid) = (old.cluster_name.clone(), old.cluster_uuid);
            return Err(match mismatch {
                Some(mismatch) => MkfsError::ExistingMismatch { path: path_s, name, uuid, mismatch },
                None => MkfsError::AlreadyFormatted { path: path_s, name, uuid },
            });
        }
        Existing::Corrupt(reason) => {
            return Err(MkfsError::CorruptExisting { path: path_s, reason: reason.clone() })
        }
        Existing::Foreign { offset } => return Err(MkfsError::ForeignData { path: path_s, offset: *offset }),
    }

    // Past the refusals: either the device is blank (nothing to watch), or this is --force over
    // something, which is watched before anything is written.
    let mut replaced = None;
    let mut watch_report = None;
    if !matches!(existing, Existing::Empty) || !found.sectors.is_empty() {
        let mut sources: Vec<(u32, String)> = Vec::new();
        let old_layout = match &existing {
            Existing::Diskbeat(old) => {
                sources.push((old.base_timeout_ms, "the old superblock".into()));
                replaced = Some((old.cluster_name.clone(), old.cluster_uuid));
                Some(old.layout)
            }
            Existing::Corrupt(_) => {
                let hint = corrupt_hint(&dev, &mut scratch)?;
                if let Some(t) = hint.base_timeout_ms {
                    sources.push((t, "the corrupt old superblock's base_timeout_ms field".into()));
                }
                hint.layout
            }
            _ => None,
        };
        sources.extend(found.timing.clone());
        let diskbeat_seen =
            matches!(existing, Existing::Diskbeat(_) | Existing::Corrupt(_)) || !found.sectors.is_empty();
        let (required_ms, basis) = required_watch(&sources, diskbeat_seen, &timing);
        let window_ms = opts.observe_ms.unwrap_or(0).max(required_ms);
        if let Some(asked) = opts.observe_ms.filter(|&o| o < required_ms) {
            warnings.push(format!(
                "--observe {asked} ms is shorter than this device needs: watched {required_ms} ms \
                 instead ({basis}); --observe can only lengthen the watch"
            ));
        }
        let mut set = WatchSet::new(&dev);
        if let Some(l) = &old_layout {
            set.add("old_records", l.records.offset, l.record_table_len() as u64);
            set.add("old_mailboxes", l.mailboxes.offset, l.record_table_len() as u64);
            // Hosts publish in their extents (payload, then header): watch each header, both
            // copies' (format 1.5; on an older layout the second is a payload block, which a
            // live writer changes too).
            let g = crate::format::extent::Geometry::new(l.extent_size, crate::format::VERSION_MINOR);
            for s in 0..l.slot_count {
                for &c in g.all() {
                    set.add("old_extent_headers", l.extent_offset(s) + g.copy_offset(c), ALIGN);
                }
            }
        }
        set.add("new_layout", 0, layout.mailboxes.end());
        let g = crate::format::extent::Geometry::new(layout.extent_size, crate::format::VERSION_MINOR);
        for s in 0..layout.slot_count {
            for &c in g.all() {
                set.add("new_extent_headers", layout.extent_offset(s) + g.copy_offset(c), ALIGN);
            }
        }
        for &at in &found.sectors {
            set.add("found_structures", at, STRUCT_SIZE as u64);
        }
        let (ranges, parts, clipped_bytes) = set.merged();
        let bytes: u64 = ranges.iter().map(|r| r.1).sum();
        progress.note(&format!(
            "watching {} bytes in {} ranges ({}{} record/mailbox sectors found) for {} ms for writers ({basis})",
            bytes,
            ranges.len(),
            if old_layout.is_some() { "old record and mailbox tables, new layout, " } else { "new layout, " },
            found.sectors.len(),
            window_ms,
        ));
        if clipped_bytes > 0 {
            progress.note(&format!(
                "{clipped_bytes} bytes of the old layout lie beyond the end of the device: not watched"
            ));
        }
        let watched = watch(&dev, &mut scratch, &ranges, window_ms, old_layout.as_ref(), &layout, progress);
        progress.watch_ended();
        let (passes, duration_ms) = watched?;
        watch_report = Some(WatchReport {
            duration_ms,
            required_ms,
            basis,
            requested_ms: opts.observe_ms,
            parts,
            bytes,
            clipped_bytes,
            found_structures: found.sectors.len() as u64,
            passes,
        });
    }

    let cluster_uuid = opts.cluster_uuid.unwrap_or_else(uuid::Uuid::new_v4);
    let key = crate::rekey::generate_key().map_err(MkfsError::Random)?;
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
    // The engine owns the exclusive open until the read-back is done: nobody else can claim the
    // device in between, and a failed read-back can still zero the superblock.
    let keyring = Keyring::first(cluster_uuid, key, sb.format_time_unix_s);
    let mut engine = write_all(dev, &sb, &keyring, opts.engine, progress)?;
    let write_us = start.elapsed().as_micros() as u64;
    verify_or_invalidate(&mut engine, path, &sb, &keyring)?;
    Ok(MkfsReport {
        superblock: sb,
        device_size,
        logical_sector_size: logical,
        physical_sector_size: physical,
        engine: engine.kind(),
        replaced,
        observed_ms: watch_report.as_ref().map_or(0, |w| w.duration_ms.min(u64::from(u32::MAX)) as u32),
        watch: watch_report,
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
    keyring: &Keyring,
    kind: EngineKind,
    progress: &mut dyn Progress,
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
    progress.note(&format!("writing {} slots", l.slot_count));
    run(&mut engine, &contiguous(B_PROBE, l.probe.offset, l.probe.size as usize), "probe area")?;
    run(&mut engine, &contiguous(B_RECORDS, l.records.offset, l.records.size as usize), "record table")?;
    run(
        &mut engine,
        &contiguous(B_MAILBOXES, l.mailboxes.offset, l.mailboxes.size as usize),
        "mailbox table",
    )?;
    // Every copy's header (format 1.5: A and B, the same empty header, sequence 0).
    let geometry = crate::format::extent::Geometry::new(l.extent_size, sb.version_minor);
    let ext_ops: Vec<Op> = (0..l.slot_count)
        .flat_map(|s| {
            geometry.all().iter().map(move |&c| Op {
                dir: Dir::Write,
                offset: l.extent_offset(s) + geometry.copy_offset(c),
                buf: B_EXTENTS,
                buf_off: s as usize * ALIGN as usize,
                len: ALIGN as usize,
            })
        })
        .collect();
    run(&mut engine, &ext_ops, "extent headers")?;
    // The keyring, in block 0 under a still-zero superblock: durable before the commit, so a valid
    // superblock always has its keyring (on 512-byte sectors block 0 is 8 writes, not one).
    keyring.encode(&mut engine.buf_mut(B_SUPER)?[keyring::OFFSET as usize..]);
    run(&mut engine, &superblock_op, "cluster keyring")?;
    engine.flush()?;
    // 2. Commit: the superblock in bytes 0..512, the same keyring bytes at 512.
    sb.encode(engine.buf_mut(B_SUPER)?).map_err(|e| MkfsError::Verify {
        path: path.clone(),
        what: format!("encoding the superblock: {e}"),
        invalidated: Ok(()),
    })?;
    // A commit that timed out may still land later: never report "no valid superblock" without
    // zeroing block 0 again (review finding).
    let committed = run(&mut engine, &superblock_op, "superblock").and_then(|()| Ok(engine.flush()?));
    if let Err(e) = committed {
        let invalidated = invalidate(&mut engine);
        return Err(MkfsError::CommitFailed { path: path.clone(), reason: e.to_string(), invalidated });
    }
    Ok(engine)
}

/// Reads the device back (`verify`); if that fails for any reason, zeroes the superblock block
/// again through the still-open exclusive engine, so that no valid superblock is left over slots
/// that do not hold what mkfs wrote (e.g. another program wrote them meanwhile).
fn verify_or_invalidate(
    engine: &mut Engine,
    path: &Path,
    sb: &Superblock,
    keyring: &Keyring,
) -> Result<(), MkfsError> {
    let what = match verify(path, sb, keyring) {
        Ok(()) => return Ok(()),
        Err(MkfsError::Verify { what, .. }) => what,
        Err(e) => e.to_string(),
    };
    Err(MkfsError::Verify { path: path.display().to_string(), what, invalidated: invalidate(engine) })
}

/// Writes zeros over block 0 and flushes.
fn invalidate(engine: &mut Engine) -> Result<(), String> {
    engine.buf_mut(B_SUPER).map_err(|e| e.to_string())?.fill(0);
    let op = Op { dir: Dir::Write, offset: 0, buf: B_SUPER, buf_off: 0, len: ALIGN as usize };
    let status = engine.submit(&[op], Duration::from_secs(30)).map_err(|e| e.to_string())?[0].status;
    if status != Status::Done {
        return Err(format!("writing zeros over the superblock: {status:?}"));
    }
    engine.flush().map_err(|e| e.to_string())
}

/// Reads the formatted device back: the superblock, the keyring and every record.
fn verify(path: &Path, sb: &Superblock, keyring: &Keyring) -> Result<(), MkfsError> {
    let fail =
        |what: String| MkfsError::Verify { path: path.display().to_string(), what, invalidated: Ok(()) };
    let dev = Device::open(path, Access::ReadOnly)?;
    let read = disk::read_superblock(&dev)?;
    if &read != sb {
        return Err(fail("superblock differs".into()));
    }
    match crate::rekey::read_keyring(path, sb)? {
        Ok(k) if k == *keyring => {}
        Ok(_) => return Err(fail("cluster keyring differs".into())),
        Err(c) => return Err(fail(format!("cluster keyring does not validate: {c}"))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};

    fn image(len: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        // O_DIRECT needs a real file system (not tmpfs).
        let dir = tempfile::Builder::new().prefix("diskbeat-unit").tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("disk.img");
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        (dir, path)
    }

    fn read_block(path: &Path, offset: u64) -> Vec<u8> {
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).unwrap();
        let mut buf = AlignedBuf::new(4096).unwrap();
        f.read_exact_at(buf.as_mut_slice(), offset).unwrap();
        buf.as_slice().to_vec()
    }

    fn write_block(path: &Path, offset: u64, data: &[u8]) {
        let f = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).unwrap();
        let mut buf = AlignedBuf::new(4096).unwrap();
        buf.as_mut_slice().copy_from_slice(data);
        f.write_all_at(buf.as_slice(), offset).unwrap();
    }

    fn superblock(layout: Layout) -> Superblock {
        Superblock {
            cluster_uuid: uuid::Uuid::new_v4(),
            cluster_name: "unit".into(),
            version_minor: crate::format::VERSION_MINOR,
            layout,
            base_timeout_ms: 1000,
            device_size: 8 << 20,
            format_time_unix_s: 0,
        }
    }

    /// Formats an image up to the commit, then lets `meddle` write to it before the read-back.
    fn commit_then(meddle: impl FnOnce(&Path, &Superblock)) -> (Result<(), MkfsError>, Vec<u8>) {
        let (_dir, path) = image(8 << 20);
        let layout =
            Layout::new(Params { sector_size: 512, slot_size: 512, slot_count: 8, extent_size: 65536 })
                .unwrap();
        let sb = superblock(layout);
        let dev = Device::open(&path, Access::Exclusive).unwrap();
        let keyring = Keyring::first(sb.cluster_uuid, crate::rekey::generate_key().unwrap(), 0);
        let mut engine = write_all(dev, &sb, &keyring, EngineKind::Sync, &mut |_: &str| {}).unwrap();
        meddle(&path, &sb);
        let result = verify_or_invalidate(&mut engine, &path, &sb, &keyring);
        (result, read_block(&path, 0))
    }

    #[test]
    fn a_good_read_back_keeps_the_superblock() {
        let (result, block0) = commit_then(|_, _| {});
        result.unwrap();
        assert_eq!(&block0[4..12], b"DISKBEAT");
        assert_eq!(&block0[516..524], b"DBKEYRNG", "the keyring sits at byte 512 of block 0");
        assert!(block0[1024..].iter().all(|&b| b == 0), "bytes 1024..4096 stay zero");
    }

    #[test]
    fn a_failed_read_back_leaves_no_valid_superblock() {
        // Another writer (a second mkfs of another cluster, say) overwrote the record table after
        // our flush: the superblock we committed must not stay valid over those slots.
        let (result, block0) = commit_then(|path, sb| {
            let other = Record::free(uuid::Uuid::new_v4(), 0);
            let mut block = vec![0u8; 4096];
            other.encode(&mut block);
            write_block(path, sb.layout.records.offset, &block);
        });
        match result {
            Err(e @ MkfsError::Verify { invalidated: Ok(()), .. }) => {
                let text = e.to_string();
                assert!(text.contains("slot 0 reads back as"), "{text}");
                assert!(text.contains("invalidated again (block 0 zeroed)"), "{text}");
            }
            other => panic!("expected a verification failure, got {other:?}"),
        }
        assert!(block0.iter().all(|&b| b == 0), "a valid superblock was left over corrupt slots");
    }

    #[test]
    fn watch_derivation() {
        let new = Timing::from_base(40_000).unwrap();
        assert_eq!(required_watch(&[(40_000, "sb".into())], false, &new).0, 44_000);
        assert_eq!(required_watch(&[(1000, "a".into()), (4000, "b".into())], true, &new).0, 4400);
        // Diskbeat structures without a readable T: the default T's full watch, never 4 s.
        assert_eq!(required_watch(&[], true, &new).0, 44_000);
        let (floor, why) = required_watch(&[], false, &new);
        assert_eq!(floor, 4000, "{why}");
        assert_eq!(required_watch(&[], false, &Timing::from_base(120_000).unwrap()).0, 12_000);
        let mut r = Record::free(uuid::Uuid::nil(), 0);
        assert_eq!(record_base_ms(&r), None, "free records carry no timing");
        r.state = State::Live;
        (r.io_timeout_ms, r.interval_ms) = (10_000, 2000);
        assert_eq!(record_base_ms(&r), Some(40_000));
        (r.io_timeout_ms, r.interval_ms) = (u32::MAX, 0);
        assert_eq!(record_base_ms(&r), Some(MAX_BASE_TIMEOUT_MS), "capped");
    }
}
