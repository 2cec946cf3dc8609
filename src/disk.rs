//! A formatted heartbeat disk: the superblock, an engine with buffers sized for it, and the
//! sweep's ops built once. Shared by `inspect`, `probe`, `fence` and the daemon.
//!
//! A sweep reads the whole record table in contiguous chunks the device accepts, plus (for a
//! host) its own mailbox sector, in one submission. A chunk that fails with an error is read
//! again slot by slot, so one bad sector costs one slot, not the chunk; a chunk that times out is
//! not retried (the device is slow: retrying would double the delay).

use crate::format::extent::{self, Extent, ExtentCopy, Geometry, PAYLOAD_OFFSET};
use crate::format::mailbox::Mailbox;
use crate::format::record::Record;
use crate::format::superblock::{Superblock, SuperblockError};
use crate::format::Corruption;
use crate::io::{Access, AlignedBuf, BufId, Device, Dir, Engine, EngineKind, IoError, Op, Outcome, Status};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

pub const BUF_TABLE: BufId = 0;
pub const BUF_MAILBOX_READ: BufId = 1;
pub const BUF_RECORD: BufId = 2;
pub const BUF_MAILBOX_WRITE: BufId = 3;
pub const BUF_SUPERBLOCK: BufId = 4;
/// Data-extent I/O (`write_extent`, `read_extent`): the 4096-byte header block followed by room
/// for [`extent_payload_cap`] payload bytes.
pub const BUF_EXTENT: BufId = 5;

/// Largest payload `write_extent` writes and `read_extent` reads: 1 MiB - 4096 (1044480 bytes),
/// one copy of the default 2 MiB extent minus its 4096-byte header block (docs/FORMAT.md §7, "I/O
/// limits"). Bigger extents are valid, but this build moves at most this much, so every `Disk`
/// pins the same buffers.
pub const EXTENT_PAYLOAD_IO_MAX: usize = (1 << 20) - 4096;

/// Payload bytes this build moves for `layout` formatted as `superblock_minor`:
/// `min(copy_size - 4096, EXTENT_PAYLOAD_IO_MAX)` (copy_size: `extent::Geometry`).
pub fn extent_payload_cap(layout: &crate::format::Layout, superblock_minor: u16) -> usize {
    let g = Geometry::new(layout.extent_size, superblock_minor);
    (g.payload_capacity() as usize).min(EXTENT_PAYLOAD_IO_MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: cannot read the superblock: {reason}")]
    SuperblockRead { path: String, reason: String },
    #[error("{path}: no diskbeat superblock ({reason}); format it with `diskbeat mkfs {path}`")]
    NotFormatted { path: String, reason: Corruption },
    #[error(
        "{path}: the superblock is corrupt: {source}; do not use this disk for heartbeats until it is \
             re-formatted (`diskbeat mkfs --force`, after stopping every daemon)"
    )]
    Corrupt { path: String, source: SuperblockError },
    #[error(
        "{path}: formatted for {formatted}-byte sectors but the device now has {device}-byte logical \
             sectors; re-format it for this device"
    )]
    SectorMismatch { path: String, formatted: u32, device: u32 },
    #[error(
        "{path}: the device ({device} bytes) is smaller than its format needs ({needed} bytes): \
             was the LUN shrunk or the wrong device given?"
    )]
    Shrunk { path: String, device: u64, needed: u64 },
    #[error("slot {slot} does not exist: this disk has {}", crate::text::slot_range(*.count))]
    NoSuchSlot { slot: u32, count: u32 },
    #[error("slot {slot}'s data extent: {step} did not complete ({})", status_text(*.status))]
    ExtentIo { slot: u32, step: &'static str, status: Status },
    #[error(
        "slot {slot}'s data extent header is corrupt ({reason}): its sequence cannot be continued, \
         nothing was written"
    )]
    ExtentHeader { slot: u32, reason: Corruption },
    #[error("an extent payload of {len} bytes is larger than the {max} bytes this disk's extents take")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("payload kind {0} is not defined by this format version")]
    UnknownKind(u16),
}

/// Why a request did not complete, in words (reads and writes alike).
pub fn status_text(s: Status) -> String {
    match s {
        Status::Done => "completed".into(),
        Status::Failed(errno) => {
            format!("the device returned an error: {}", nix::errno::Errno::from_raw(errno).desc())
        }
        Status::Short(n) => format!("short transfer: {n} bytes"),
        Status::TimedOut => "timed out".into(),
        Status::Busy => {
            "not submitted: its buffer is still pinned by an earlier request that timed out".into()
        }
    }
}

/// What `Disk::read_extent` found (on a double-buffered device: in the copy it settled on, see
/// [`ExtentCopies`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentRead {
    /// The header is valid and the payload matches its checksum: the caller's buffer holds the
    /// `payload_len` payload bytes. On a double-buffered device: the newest copy whose payload
    /// matches (the previous copy when the newest is torn).
    Payload(Extent),
    /// The header is valid but the payload does not match its checksum: torn, or being rewritten
    /// (a write between its payload and its header). Never data: read again later. On a
    /// double-buffered device: every copy with a valid header is torn; this is the newest header.
    Torn(Extent),
    /// The (newest valid) header's payload is larger than the caller's buffer or than
    /// [`EXTENT_PAYLOAD_IO_MAX`]: not read.
    TooLarge(Extent),
    /// No header validates (on a double-buffered device: neither copy's; the reason is copy A's).
    Corrupt(Corruption),
}

/// What one copy of an extent held at one `read_extent_copies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyView {
    /// The device has a single copy (formatted before 1.5): there is no copy B.
    Absent,
    /// The header does not validate.
    Corrupt(Corruption),
    /// A valid header whose payload was not read (an older copy: a newer one was complete).
    Header(Extent),
    /// A valid header and a payload matching its checksum.
    Payload(Extent),
    /// A valid header and a payload that does not match: torn, or being rewritten.
    Torn(Extent),
    /// A valid header announcing more than the caller's buffer or this build's I/O cap.
    TooLarge(Extent),
}

impl CopyView {
    /// The copy's header, when it validates.
    pub fn header(&self) -> Option<&Extent> {
        match self {
            CopyView::Header(h) | CopyView::Payload(h) | CopyView::Torn(h) | CopyView::TooLarge(h) => Some(h),
            CopyView::Absent | CopyView::Corrupt(_) => None,
        }
    }
}

/// `Disk::read_extent_copies`: the result and what each copy held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentCopies {
    /// What `read_extent` returns.
    pub read: ExtentRead,
    /// The copy `read` describes (`None` when no header validates).
    pub copy: Option<ExtentCopy>,
    pub a: CopyView,
    pub b: CopyView,
}

impl ExtentCopies {
    pub fn view(&self, copy: ExtentCopy) -> &CopyView {
        match copy {
            ExtentCopy::A => &self.a,
            ExtentCopy::B => &self.b,
        }
    }

    /// The payload came from the previous copy because the newest one (a higher sequence) is torn:
    /// its writer stopped between payload and header, or is writing it now.
    pub fn fell_back(&self) -> bool {
        match (self.read, self.copy) {
            (ExtentRead::Payload(h), Some(c)) => {
                matches!(self.view(c.other()), CopyView::Torn(o) if o.sequence > h.sequence)
            }
            _ => false,
        }
    }
}

/// Reads and validates the superblock with one aligned pread.
pub fn read_superblock(dev: &Device) -> Result<Superblock, DiskError> {
    read_superblock_bytes(dev).map(|(sb, _)| sb)
}

/// Reads and validates the superblock; also returns its first 512 bytes as read (the daemon
/// compares every sweep's copy with them).
pub fn read_superblock_bytes(dev: &Device) -> Result<(Superblock, [u8; 512]), DiskError> {
    let path = dev.path.display().to_string();
    let mut buf = AlignedBuf::new(4096).map_err(IoError::Alloc)?;
    let n = nix::sys::uio::pread(dev.fd.as_fd(), buf.as_mut_slice(), 0)
        .map_err(|e| DiskError::SuperblockRead { path: path.clone(), reason: e.desc().into() })?;
    if n < 512 {
        return Err(DiskError::SuperblockRead { path, reason: format!("short read ({n} bytes)") });
    }
    let mut raw = [0u8; 512];
    raw.copy_from_slice(&buf.as_slice()[..512]);
    match Superblock::decode(buf.as_slice()) {
        Ok(sb) => Ok((sb, raw)),
        Err(SuperblockError::Corrupt(c @ (Corruption::Zeroed | Corruption::BadMagic))) => {
            Err(DiskError::NotFormatted { path, reason: c })
        }
        Err(e) => Err(DiskError::Corrupt { path, source: e }),
    }
}

/// Summary of one sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// From submission to the last completion of the main batch.
    pub latency_us: u32,
    /// Chunks that failed (error) or timed out.
    pub chunks_failed: u32,
    pub chunks_timed_out: u32,
    /// Slots whose bytes could not be read, after per-slot retries.
    pub slots_unreadable: u32,
    /// Whether the own mailbox (if any) was read.
    pub mailbox_ok: bool,
}

impl SweepStats {
    /// A sweep that read every slot and the own mailbox (if asked) in time.
    pub fn complete(&self) -> bool {
        self.chunks_failed == 0 && self.slots_unreadable == 0 && self.mailbox_ok
    }
}

/// An open, formatted heartbeat disk.
pub struct Disk {
    engine: Engine,
    sb: Superblock,
    /// `[chunk reads..][own mailbox read, superblock read (hosts only)][per-slot reads (retries)..]`.
    ops: Vec<Op>,
    chunks: usize,
    slots_per_chunk: u32,
    own_slot: Option<u32>,
}

impl Disk {
    /// Opens and validates a formatted device. `own_slot` adds that slot's mailbox to each sweep.
    pub fn open(
        path: &Path,
        access: Access,
        kind: EngineKind,
        own_slot: Option<u32>,
    ) -> Result<Disk, DiskError> {
        let dev = Device::open(path, access)?;
        let sb = read_superblock(&dev)?;
        Disk::with_superblock(dev, sb, kind, own_slot)
    }

    /// Builds the engine and the sweep ops for an already validated superblock.
    pub fn with_superblock(
        dev: Device,
        sb: Superblock,
        kind: EngineKind,
        own_slot: Option<u32>,
    ) -> Result<Disk, DiskError> {
        let path = dev.path.display().to_string();
        let l = sb.layout;
        if l.sector_size < dev.logical_sector_size || l.slot_size < dev.logical_sector_size {
            return Err(DiskError::SectorMismatch {
                path,
                formatted: l.sector_size,
                device: dev.logical_sector_size,
            });
        }
        if dev.size_bytes < l.total_size() {
            return Err(DiskError::Shrunk { path, device: dev.size_bytes, needed: l.total_size() });
        }
        if let Some(s) = own_slot {
            if s >= l.slot_count {
                return Err(DiskError::NoSuchSlot { slot: s, count: l.slot_count });
            }
        }
        let slot = l.slot_size as usize;
        // A multiple of the logical sector size either way (512-byte slots: 512-byte sectors).
        let sb_len = slot.max(2 * crate::format::STRUCT_SIZE);
        let chunk_len = ((dev.max_io_bytes as usize / slot).max(1)) * slot;
        let table_len = l.record_table_len();
        let mut ops = Vec::new();
        let mut off = 0;
        while off < table_len {
            let len = chunk_len.min(table_len - off);
            ops.push(Op {
                dir: Dir::Read,
                offset: l.records.offset + off as u64,
                buf: BUF_TABLE,
                buf_off: off,
                len,
            });
            off += len;
        }
        let chunks = ops.len();
        if let Some(s) = own_slot {
            ops.push(Op {
                dir: Dir::Read,
                offset: l.mailbox_offset(s),
                buf: BUF_MAILBOX_READ,
                buf_off: 0,
                len: slot,
            });
            // The superblock, every sweep: a disk re-formatted or wiped under us is seen at once.
            // At least 1024 bytes: the keyring (bytes 512..1024) comes with it, so a running
            // daemon follows `diskbeat rekey`.
            ops.push(Op { dir: Dir::Read, offset: 0, buf: BUF_SUPERBLOCK, buf_off: 0, len: sb_len });
        }
        for s in 0..l.slot_count {
            let buf_off = s as usize * slot;
            ops.push(Op { dir: Dir::Read, offset: l.record_offset(s), buf: BUF_TABLE, buf_off, len: slot });
        }
        // BUF_EXTENT is appended (existing indices unchanged); one op index past the sweep's ops is
        // reserved for extent I/O, so it never overwrites a sweep's recorded outcomes.
        let extent_buf = PAYLOAD_OFFSET as usize + extent_payload_cap(&l, sb.version_minor);
        let sizes = [table_len, slot, slot, slot, sb_len, extent_buf];
        // Two op indexes past the sweep's: extent I/O, and single record/mailbox/probe writes, so
        // neither overwrites the outcomes the last sweep recorded.
        let engine = Engine::new(dev, kind, &sizes, ops.len() + 2)?;
        Ok(Disk { engine, sb, ops, chunks, slots_per_chunk: (chunk_len / slot) as u32, own_slot })
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    fn retry_base(&self) -> usize {
        self.chunks + 2 * usize::from(self.own_slot.is_some())
    }

    /// Reads the record table (and own mailbox) in one submission; retries failed chunks per slot.
    /// Never allocates. Read failures are reported per slot through `slot_bytes`.
    pub fn sweep(&mut self, timeout: Duration) -> Result<SweepStats, DiskError> {
        let main = self.retry_base();
        let outcomes = self.engine.submit_at(&self.ops[..main], 0, timeout)?;
        let mut stats = SweepStats {
            latency_us: outcomes.iter().map(|o| o.latency_us).max().unwrap_or(0),
            mailbox_ok: self.own_slot.is_none() || outcomes[self.chunks].is_done(),
            ..SweepStats::default()
        };
        let count = self.sb.layout.slot_count;
        for c in 0..self.chunks {
            let first = c as u32 * self.slots_per_chunk;
            let last = (first + self.slots_per_chunk).min(count);
            match self.engine.outcome(c).status {
                Status::Done => {}
                Status::TimedOut | Status::Busy => {
                    stats.chunks_failed += 1;
                    stats.chunks_timed_out += 1;
                    stats.slots_unreadable += last - first;
                }
                Status::Failed(_) | Status::Short(_) => {
                    stats.chunks_failed += 1;
                    let range = main + first as usize..main + last as usize;
                    let outcomes = self.engine.submit_at(&self.ops[range.clone()], range.start, timeout)?;
                    stats.slots_unreadable += outcomes.iter().filter(|o| !o.is_done()).count() as u32;
                }
            }
        }
        Ok(stats)
    }

    /// The bytes of `slot`'s record from the last sweep, or why they could not be read.
    pub fn slot_bytes(&self, slot: u32) -> Result<&[u8], Status> {
        assert!(slot < self.sb.layout.slot_count);
        let c = (slot / self.slots_per_chunk) as usize;
        let slot_len = self.sb.layout.slot_size as usize;
        let chunk = &self.ops[c];
        if let Some(data) = self.engine.data_at(chunk, c) {
            let off = (slot - c as u32 * self.slots_per_chunk) as usize * slot_len;
            return Ok(&data[off..off + slot_len]);
        }
        let chunk_status = self.engine.outcome(c).status;
        if matches!(chunk_status, Status::TimedOut | Status::Busy) {
            return Err(chunk_status);
        }
        let i = self.retry_base() + slot as usize;
        self.engine.data_at(&self.ops[i], i).ok_or(self.engine.outcome(i).status)
    }

    /// The own mailbox sector from the last sweep.
    pub fn mailbox_bytes(&self) -> Result<&[u8], Status> {
        assert!(self.own_slot.is_some(), "opened without an own slot");
        let i = self.chunks;
        self.engine.data_at(&self.ops[i], i).ok_or(self.engine.outcome(i).status)
    }

    /// The superblock sector from the last sweep (hosts only).
    pub fn superblock_bytes(&self) -> Result<&[u8], Status> {
        assert!(self.own_slot.is_some(), "opened without an own slot");
        let i = self.chunks + 1;
        self.engine.data_at(&self.ops[i], i).ok_or(self.engine.outcome(i).status)
    }

    /// Record writes (ours and peer records) that timed out and whose completion had not arrived
    /// at the last submission: they may still land. Read after a sweep, it counts the writes
    /// still out when the sweep's reads went in.
    pub fn record_writes_in_flight(&self) -> u32 {
        self.engine.pinned_ops_of(BUF_RECORD)
    }

    /// Writes `rec` into its slot with one submission. The encoded bytes are verified before the
    /// write (a record we could not read back is never written).
    pub fn write_record(&mut self, rec: &Record, timeout: Duration) -> Result<Outcome, DiskError> {
        let l = self.sb.layout;
        let slot_len = l.slot_size as usize;
        let buf = self.engine.buf_mut(BUF_RECORD)?;
        rec.encode(buf);
        debug_assert!(buf[512..slot_len].iter().all(|&b| b == 0), "slot padding must stay zero");
        assert_eq!(
            Record::decode(buf, &self.sb.cluster_uuid, rec.slot).as_ref(),
            Ok(rec),
            "record does not round-trip"
        );
        let op = Op {
            dir: Dir::Write,
            offset: l.record_offset(rec.slot),
            buf: BUF_RECORD,
            buf_off: 0,
            len: slot_len,
        };
        Ok(self.engine.submit_at(&[op], self.write_index(), timeout)?[0])
    }

    /// Writes `mb` into the mailbox of `mb.target_slot`.
    pub fn write_mailbox(&mut self, mb: &Mailbox, timeout: Duration) -> Result<Outcome, DiskError> {
        let l = self.sb.layout;
        if mb.target_slot >= l.slot_count {
            return Err(DiskError::NoSuchSlot { slot: mb.target_slot, count: l.slot_count });
        }
        let slot_len = l.slot_size as usize;
        let buf = self.engine.buf_mut(BUF_MAILBOX_WRITE)?;
        mb.encode(buf);
        assert_eq!(Mailbox::decode(buf, &self.sb.cluster_uuid, mb.target_slot).as_ref(), Ok(mb));
        let op = Op {
            dir: Dir::Write,
            offset: l.mailbox_offset(mb.target_slot),
            buf: BUF_MAILBOX_WRITE,
            buf_off: 0,
            len: slot_len,
        };
        Ok(self.engine.submit_at(&[op], self.write_index(), timeout)?[0])
    }

    /// Writes one record-sized block of the probe area (the only place `probe` writes on a
    /// formatted disk).
    pub fn write_probe(&mut self, index: u32, timeout: Duration) -> Result<Outcome, DiskError> {
        let l = self.sb.layout;
        let slot_len = l.slot_size as u64;
        let blocks = (l.probe.size / slot_len) as u32;
        let offset = l.probe.offset + u64::from(index % blocks) * slot_len;
        assert!(offset + slot_len <= l.probe.end());
        let buf = self.engine.buf_mut(BUF_RECORD)?;
        buf[..8].copy_from_slice(&u64::from(index).to_le_bytes());
        let op = Op { dir: Dir::Write, offset, buf: BUF_RECORD, buf_off: 0, len: slot_len as usize };
        Ok(self.engine.submit_at(&[op], self.write_index(), timeout)?[0])
    }
}

/// Data-extent I/O (docs/FORMAT.md §7). These methods run **outside the sweep's time budget**:
/// each is a few sequential requests, each with its own `timeout`, so a caller on the heartbeat
/// path must not call them between a sweep and its record write. They use their own buffer
/// (`BUF_EXTENT`) and op index, so they leave the last sweep's results (`slot_bytes`,
/// `mailbox_bytes`) intact. No allocation per call.
///
/// A device formatted by 1.5 or later holds two copies of every extent (A at extent offset 0, B
/// at `copy_size`); one formatted earlier, a single copy (A), read and written with the 1.2
/// protocol. [`Disk::extent_geometry`] says which.
impl Disk {
    /// The op index extent I/O records its outcome at: one past the sweep's ops.
    fn extent_index(&self) -> usize {
        self.ops.len()
    }

    /// The op index single writes (record, mailbox, probe) record their outcome at.
    fn write_index(&self) -> usize {
        self.ops.len() + 1
    }

    /// Where this device's extent copies lie (from its superblock's minor).
    pub fn extent_geometry(&self) -> Geometry {
        Geometry::new(self.sb.layout.extent_size, self.sb.version_minor)
    }

    /// Payload bytes this disk's extent I/O moves at most.
    pub fn extent_payload_cap(&self) -> usize {
        extent_payload_cap(&self.sb.layout, self.sb.version_minor)
    }

    /// One extent request through `BUF_EXTENT`; `Ok` only when it completed in full.
    fn extent_op(
        &mut self,
        slot: u32,
        step: &'static str,
        op: Op,
        timeout: Duration,
    ) -> Result<(), DiskError> {
        let index = self.extent_index();
        let status = self.engine.submit_at(&[op], index, timeout)?[0].status;
        match status {
            Status::Done => Ok(()),
            status => Err(DiskError::ExtentIo { slot, step, status }),
        }
    }

    fn check_slot(&self, slot: u32) -> Result<(), DiskError> {
        let count = self.sb.layout.slot_count;
        if slot >= count {
            return Err(DiskError::NoSuchSlot { slot, count });
        }
        Ok(())
    }

    /// Device offset of `copy`'s header block of `slot`'s extent.
    fn copy_base(&self, slot: u32, copy: ExtentCopy) -> u64 {
        self.sb.layout.extent_offset(slot) + self.extent_geometry().copy_offset(copy)
    }

    /// Reads and validates the header of one copy (one 4096-byte read).
    fn read_copy_header(
        &mut self,
        slot: u32,
        copy: ExtentCopy,
        timeout: Duration,
    ) -> Result<Result<Extent, Corruption>, DiskError> {
        let op = Op {
            dir: Dir::Read,
            offset: self.copy_base(slot, copy),
            buf: BUF_EXTENT,
            buf_off: 0,
            len: PAYLOAD_OFFSET as usize,
        };
        let step = match copy {
            ExtentCopy::A => "reading the header (copy A)",
            ExtentCopy::B => "reading the header (copy B)",
        };
        self.extent_op(slot, step, op, timeout)?;
        let bytes = self.engine.data_at(&op, self.extent_index()).expect("completed");
        let copy_size = self.extent_geometry().copy_size;
        Ok(Extent::decode(bytes, &self.sb.cluster_uuid, slot, copy_size))
    }

    /// Both copies' headers (`[A, B]`; B is `None` on a single-copy device).
    fn read_copy_headers(
        &mut self,
        slot: u32,
        timeout: Duration,
    ) -> Result<[Option<Result<Extent, Corruption>>; 2], DiskError> {
        self.check_slot(slot)?;
        let a = self.read_copy_header(slot, ExtentCopy::A, timeout)?;
        let b = match self.extent_geometry().copies {
            2 => Some(self.read_copy_header(slot, ExtentCopy::B, timeout)?),
            _ => None,
        };
        Ok([Some(a), b])
    }

    /// The copy holding the newest valid header: the higher sequence, A on a tie (mkfs writes
    /// both with sequence 0), `None` when no header validates.
    fn newest(headers: &[Option<Result<Extent, Corruption>>; 2]) -> Option<(ExtentCopy, Extent)> {
        let valid = |i: usize| headers[i].as_ref().and_then(|h| h.as_ref().ok()).copied();
        match (valid(0), valid(1)) {
            (Some(a), Some(b)) if b.sequence > a.sequence => Some((ExtentCopy::B, b)),
            (Some(a), _) => Some((ExtentCopy::A, a)),
            (None, Some(b)) => Some((ExtentCopy::B, b)),
            (None, None) => None,
        }
    }

    /// Reads `slot`'s newest valid extent header (on a double-buffered device, the higher
    /// sequence of the two copies; the payload is not checked). `Err(DiskError)` when a read
    /// failed; `Ok(Err(reason))` when no header validates (the reason is copy A's).
    pub fn read_extent_header(
        &mut self,
        slot: u32,
        timeout: Duration,
    ) -> Result<Result<Extent, Corruption>, DiskError> {
        let headers = self.read_copy_headers(slot, timeout)?;
        Ok(match Disk::newest(&headers) {
            Some((_, h)) => Ok(h),
            None => Err(headers[0].expect("copy A is always read").expect_err("no valid header")),
        })
    }

    /// Reads `copy`'s payload as announced by its valid header `h` into `BUF_EXTENT` and checks
    /// it; on a match, copies it into `out[..payload_len]` (when given). Never leaves torn bytes
    /// in `out`.
    fn check_copy_payload(
        &mut self,
        slot: u32,
        copy: ExtentCopy,
        h: Extent,
        out: Option<&mut [u8]>,
        timeout: Duration,
    ) -> Result<CopyView, DiskError> {
        let len = h.payload_len as usize;
        if len > self.extent_payload_cap() || out.as_ref().is_some_and(|o| len > o.len()) {
            return Ok(CopyView::TooLarge(h));
        }
        let header_len = PAYLOAD_OFFSET as usize;
        let data: &[u8] = if len == 0 {
            &[]
        } else {
            let op = Op {
                dir: Dir::Read,
                offset: self.copy_base(slot, copy) + PAYLOAD_OFFSET,
                buf: BUF_EXTENT,
                buf_off: header_len,
                len: len.next_multiple_of(header_len),
            };
            self.extent_op(slot, "reading the payload", op, timeout)?;
            &self.engine.data_at(&op, self.extent_index()).expect("completed")[..len]
        };
        if crate::format::checksum(data) != h.payload_crc32c {
            return Ok(CopyView::Torn(h));
        }
        if let Some(out) = out {
            out[..len].copy_from_slice(data);
            // Both sides of the read: what the caller gets is what the header vouches for.
            debug_assert_eq!(crate::format::checksum(&out[..len]), h.payload_crc32c);
        }
        Ok(CopyView::Payload(h))
    }

    /// Publishes `payload` of `kind` in `slot`'s extent and returns the new header sequence (put
    /// it in the record's `extent_sequence`). docs/FORMAT.md §7, in order:
    ///
    /// (0) read the headers (both copies on a double-buffered device; refused if one does not
    /// validate: the sequence to continue from would be unknown) and, on a double-buffered
    /// device, check the newest copy's payload. The **target** is the copy that does not hold the
    /// newest valid contents: the older copy, or the newest one when its payload is torn (the
    /// older one is then the last complete copy and is kept). A single-copy device's target is
    /// its only copy. The new sequence is the highest of the headers + 1.
    /// (1) write the payload into the target's payload area, zero-padded to 4096-byte blocks
    /// (skipped for an empty payload); (2) only after it completed, write the target's header
    /// block. Writes are O_DSYNC (the engine's), so "completed" means durable. Any failure stops
    /// before the next step; the other copy is never written, so readers keep seeing it.
    ///
    /// `host_uuid` and `generation` name the writer: the incarnation whose record the slot holds
    /// (format 1.6; readers take the payload as that record's only if the two match).
    pub fn write_extent(
        &mut self,
        slot: u32,
        kind: u16,
        host_uuid: uuid::Uuid,
        generation: u64,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<u64, DiskError> {
        self.check_slot(slot)?;
        if !extent::kind_defined(crate::format::VERSION_MINOR, kind) {
            return Err(DiskError::UnknownKind(kind));
        }
        let max = self.extent_payload_cap();
        if payload.len() > max {
            return Err(DiskError::PayloadTooLarge { len: payload.len(), max });
        }
        let headers = self.read_copy_headers(slot, timeout)?;
        let mut highest = 0;
        for h in headers.iter().flatten() {
            match h {
                Ok(h) => highest = highest.max(h.sequence),
                Err(reason) => return Err(DiskError::ExtentHeader { slot, reason: *reason }),
            }
        }
        let (newest, newest_header) = Disk::newest(&headers).expect("every header validated");
        let target = if self.extent_geometry().copies == 1 {
            ExtentCopy::A
        } else {
            match self.check_copy_payload(slot, newest, newest_header, None, timeout)? {
                CopyView::Torn(_) => newest,
                _ => newest.other(),
            }
        };
        let sequence = highest
            .checked_add(1)
            .ok_or(DiskError::ExtentHeader { slot, reason: Corruption::BadField("sequence") })?;
        // The rule, before any write: never the copy holding the newest complete contents (on a
        // double-buffered device), and a sequence above every header's.
        assert!(headers.iter().flatten().flatten().all(|h| h.sequence < sequence));
        let header_len = PAYLOAD_OFFSET as usize;
        let base = self.copy_base(slot, target);
        if !payload.is_empty() {
            let len = payload.len().next_multiple_of(header_len);
            let buf = self.engine.buf_mut(BUF_EXTENT)?;
            buf[header_len..header_len + payload.len()].copy_from_slice(payload);
            buf[header_len + payload.len()..header_len + len].fill(0);
            let op = Op {
                dir: Dir::Write,
                offset: base + PAYLOAD_OFFSET,
                buf: BUF_EXTENT,
                buf_off: header_len,
                len,
            };
            self.extent_op(slot, "writing the payload", op, timeout)?;
        }
        let header = Extent {
            kind,
            generation,
            host_uuid,
            sequence,
            payload_len: payload.len() as u64,
            payload_crc32c: crate::format::checksum(payload),
            ..Extent::empty(self.sb.cluster_uuid, slot)
        };
        let copy_size = self.extent_geometry().copy_size;
        let buf = self.engine.buf_mut(BUF_EXTENT)?;
        buf[..header_len].fill(0);
        header.encode(buf);
        assert_eq!(
            Extent::decode(buf, &self.sb.cluster_uuid, slot, copy_size),
            Ok(header),
            "extent header does not round-trip"
        );
        let op = Op { dir: Dir::Write, offset: base, buf: BUF_EXTENT, buf_off: 0, len: header_len };
        self.extent_op(slot, "writing the header", op, timeout)?;
        Ok(sequence)
    }

    /// Reads `slot`'s extent: its newest valid header whose payload matches, the payload copied
    /// into `buf[..payload_len]` (`Payload`); `buf` is only written with a payload that matched.
    /// `Err` only for I/O that did not complete. See [`Disk::read_extent_copies`].
    pub fn read_extent(
        &mut self,
        slot: u32,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<ExtentRead, DiskError> {
        self.read_extent_copies(slot, buf, timeout).map(|c| c.read)
    }

    /// As `read_extent`, also saying which copy the result comes from and what each copy held.
    /// Reads both headers, then the payload of the newest valid one (higher sequence; A on a
    /// tie); when that payload is torn, the other copy's (`fell_back`). The newest header is
    /// returned `TooLarge` without falling back (the caller's buffer is too small for the current
    /// contents). A single-copy device has copy A only (`b` is `Absent`).
    pub fn read_extent_copies(
        &mut self,
        slot: u32,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<ExtentCopies, DiskError> {
        let headers = self.read_copy_headers(slot, timeout)?;
        let initial = |h: &Option<Result<Extent, Corruption>>| match h {
            None => CopyView::Absent,
            Some(Ok(h)) => CopyView::Header(*h),
            Some(Err(c)) => CopyView::Corrupt(*c),
        };
        let mut views = [initial(&headers[0]), initial(&headers[1])];
        let index = |c: ExtentCopy| c as usize;
        let Some((newest, h)) = Disk::newest(&headers) else {
            let reason = headers[0].expect("copy A is always read").expect_err("no valid header");
            return Ok(ExtentCopies {
                read: ExtentRead::Corrupt(reason),
                copy: None,
                a: views[0],
                b: views[1],
            });
        };
        let mut result = (ExtentRead::Torn(h), newest);
        views[index(newest)] = self.check_copy_payload(slot, newest, h, Some(&mut *buf), timeout)?;
        match views[index(newest)] {
            CopyView::Payload(h) => result = (ExtentRead::Payload(h), newest),
            CopyView::TooLarge(h) => result = (ExtentRead::TooLarge(h), newest),
            _ => {
                let older = newest.other();
                if let CopyView::Header(o) = views[index(older)] {
                    views[index(older)] =
                        self.check_copy_payload(slot, older, o, Some(&mut *buf), timeout)?;
                    if let CopyView::Payload(o) = views[index(older)] {
                        result = (ExtentRead::Payload(o), older);
                    }
                }
            }
        }
        // Both sides of the read: a payload result is a copy whose header validated and whose
        // payload matched; the newest copy is never passed over unless it is torn.
        if let ExtentRead::Payload(p) = result.0 {
            assert_eq!(views[index(result.1)], CopyView::Payload(p));
            assert!(result.1 == newest || matches!(views[index(newest)], CopyView::Torn(_)));
        }
        Ok(ExtentCopies { read: result.0, copy: Some(result.1), a: views[0], b: views[1] })
    }
}

fn io_failure(status: Status) -> crate::core::IoFailure {
    match status {
        Status::TimedOut | Status::Busy => crate::core::IoFailure::TimedOut,
        Status::Failed(errno) => crate::core::IoFailure::Failed(errno),
        Status::Short(_) | Status::Done => crate::core::IoFailure::Failed(libc::EIO),
    }
}

impl crate::core::SlotSource for Disk {
    fn slot(&self, slot: u32) -> Result<&[u8], crate::core::IoFailure> {
        self.slot_bytes(slot).map_err(io_failure)
    }
    fn mailbox(&self) -> Result<&[u8], crate::core::IoFailure> {
        self.mailbox_bytes().map_err(io_failure)
    }
    fn superblock(&self) -> Result<&[u8], crate::core::IoFailure> {
        self.superblock_bytes().map_err(io_failure)
    }
}

/// The core's view of a write's outcome: `Ok(latency_us)` or why it did not complete.
pub fn write_result(outcome: &Outcome) -> Result<u64, crate::core::IoFailure> {
    match outcome.status {
        Status::Done => Ok(u64::from(outcome.latency_us)),
        s => Err(io_failure(s)),
    }
}

/// What one slot held at one sweep (tools only, never on the heartbeat path).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotView {
    Record(Record),
    Corrupt(Corruption),
    Unreadable(Status),
}

impl SlotView {
    pub fn record(&self) -> Option<&Record> {
        match self {
            SlotView::Record(r) => Some(r),
            _ => None,
        }
    }
}

impl Disk {
    /// Decodes every slot of the last sweep (tools only: this allocates).
    pub fn snapshot(&self) -> Vec<SlotView> {
        (0..self.sb.layout.slot_count)
            .map(|s| match self.slot_bytes(s) {
                Err(status) => SlotView::Unreadable(status),
                Ok(bytes) => match Record::decode(bytes, &self.sb.cluster_uuid, s) {
                    Ok(r) => SlotView::Record(r),
                    Err(c) => SlotView::Corrupt(c),
                },
            })
            .collect()
    }
}
