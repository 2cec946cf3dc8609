//! O_DIRECT I/O engines: io_uring (the default) and pread/pwrite (for kernels without io_uring),
//! behind one interface.
//!
//! The caller describes a batch of [`Op`]s over buffers the engine owns (allocated once, page
//! aligned) and submits it with a timeout. Every op gets an [`Outcome`]; a failed op never stops
//! the others. A buffer whose I/O timed out stays pinned until the kernel completes it: the engine
//! switches to the buffer's spare copy and never hands the pinned copy out again until then.

pub mod buf;
pub mod device;
pub mod icmp;
mod sync;
pub mod sys;
mod uring;

pub use buf::AlignedBuf;
pub use device::{Access, Device};

use std::path::PathBuf;
use std::time::Duration;

/// Restores the default SIGPIPE action, so `diskbeat inspect | head` ends quietly like other
/// Unix tools instead of failing on a closed stdout.
pub fn default_sigpipe() {
    // SAFETY: called once at start, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Which engine runs the I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// io_uring when the kernel has it, else pread/pwrite.
    Auto,
    /// io_uring: one submission per batch, a linked timeout per op.
    Uring,
    /// pread/pwrite, one op at a time; a late op is reported as timed out.
    Sync,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Auto => "auto",
            EngineKind::Uring => "io_uring",
            EngineKind::Sync => "pread/pwrite",
        }
    }
}

/// Errors of the I/O layer.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{path}: {reason} ({hint})")]
    Open { path: PathBuf, reason: String, hint: String },
    #[error("cannot allocate I/O buffers: {0}")]
    Alloc(std::io::Error),
    #[error("io_uring is not available: {0} (use --engine sync, or check kernel.io_uring_disabled)")]
    UringUnavailable(std::io::Error),
    #[error("io_uring submission failed: {0}")]
    Submit(std::io::Error),
    #[error("flushing the device failed: {0}")]
    Flush(std::io::Error),
    #[error("misaligned I/O: {0} (a bug: please report it)")]
    Misaligned(String),
    #[error("batch of {got} ops exceeds the engine's {max}")]
    BatchTooLarge { got: usize, max: usize },
    #[error("every copy of buffer {0} is pinned by I/O that timed out and has not completed")]
    BufferBusy(usize),
}

/// Index of a buffer owned by the engine (in the order of `buffer_sizes` given to `Engine::new`).
pub type BufId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Read,
    Write,
}

/// One I/O: `len` bytes between device offset `offset` and `buf[buf_off..]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub dir: Dir,
    pub offset: u64,
    pub buf: BufId,
    pub buf_off: usize,
    pub len: usize,
}

/// What became of one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Done,
    /// The device returned an error (errno).
    Failed(i32),
    /// Transferred fewer bytes than asked.
    Short(usize),
    /// Not completed within the timeout (its buffer stays pinned until it does).
    TimedOut,
    /// Not submitted: every copy of its buffer is pinned.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// From the batch's submission to this op's completion.
    pub latency_us: u32,
}

impl Outcome {
    const PENDING: Outcome = Outcome { status: Status::TimedOut, latency_us: 0 };
    pub fn is_done(&self) -> bool {
        self.status == Status::Done
    }
}

/// A buffer with a spare copy, so that a copy pinned by a timed-out op is never reused.
struct PoolBuf {
    copies: [AlignedBuf; 2],
    /// Ops in flight past their timeout, per copy.
    pinned: [u32; 2],
    active: usize,
}

impl PoolBuf {
    /// Makes an unpinned copy active; false when both copies are pinned.
    fn settle(&mut self) -> bool {
        if self.pinned[self.active] == 0 {
            return true;
        }
        let other = 1 - self.active;
        if self.pinned[other] == 0 {
            self.active = other;
            return true;
        }
        false
    }

    /// An op the kernel may have accepted uses `copy`: keep it until its completion is reaped.
    fn pin(&mut self, copy: usize) {
        self.pinned[copy] += 1;
    }

    /// The completion of an op that pinned `copy` was reaped.
    fn unpin(&mut self, copy: usize) {
        debug_assert!(self.pinned[copy] > 0, "completion for copy {copy}, which no op pins");
        self.pinned[copy] = self.pinned[copy].saturating_sub(1);
    }
}

#[allow(clippy::large_enum_variant)] // one per engine, never moved after construction
enum Backend {
    Uring(uring::Uring),
    Sync,
}

/// An I/O engine over one device.
pub struct Engine {
    // Field order is drop order: the ring goes before the buffers registered with it.
    backend: Backend,
    bufs: Vec<PoolBuf>,
    dev: Device,
    max_ops: usize,
    outcomes: Vec<Outcome>,
    /// Buffer copy each op of the last batch used.
    op_copy: Vec<u8>,
}

impl Engine {
    /// Opens the engine with one buffer (plus its spare) per entry of `buffer_sizes`, and room
    /// for batches of up to `max_ops`. All allocation happens here.
    pub fn new(
        dev: Device,
        kind: EngineKind,
        buffer_sizes: &[usize],
        max_ops: usize,
    ) -> Result<Engine, IoError> {
        assert!(max_ops > 0);
        let mut bufs = Vec::with_capacity(buffer_sizes.len());
        for &size in buffer_sizes {
            let size = size.next_multiple_of(4096);
            bufs.push(PoolBuf {
                copies: [
                    AlignedBuf::new(size).map_err(IoError::Alloc)?,
                    AlignedBuf::new(size).map_err(IoError::Alloc)?,
                ],
                pinned: [0, 0],
                active: 0,
            });
        }
        let backend = match kind {
            EngineKind::Sync => Backend::Sync,
            EngineKind::Uring => Backend::Uring(uring::Uring::new(&dev, &mut bufs, max_ops)?),
            EngineKind::Auto => match uring::Uring::new(&dev, &mut bufs, max_ops) {
                Ok(u) => Backend::Uring(u),
                Err(IoError::UringUnavailable(_)) => Backend::Sync,
                Err(e) => return Err(e),
            },
        };
        Ok(Engine {
            backend,
            bufs,
            dev,
            max_ops,
            outcomes: vec![Outcome::PENDING; max_ops],
            op_copy: vec![0; max_ops],
        })
    }

    /// The engine actually in use (never `Auto`).
    pub fn kind(&self) -> EngineKind {
        match self.backend {
            Backend::Uring(_) => EngineKind::Uring,
            Backend::Sync => EngineKind::Sync,
        }
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }

    pub fn max_ops(&self) -> usize {
        self.max_ops
    }

    pub fn buffer_len(&self, id: BufId) -> usize {
        self.bufs[id].copies[0].len()
    }

    /// The copy of buffer `id` the next batch will use, to fill before a write.
    pub fn buf_mut(&mut self, id: BufId) -> Result<&mut [u8], IoError> {
        let b = &mut self.bufs[id];
        if !b.settle() {
            return Err(IoError::BufferBusy(id));
        }
        debug_assert_eq!(b.pinned[b.active], 0, "pinned copy of buffer {id} handed out");
        Ok(b.copies[b.active].as_mut_slice())
    }

    /// Makes every completed write durable (fdatasync: a cache flush on block devices).
    pub fn flush(&self) -> Result<(), IoError> {
        nix::unistd::fdatasync(std::os::fd::AsRawFd::as_raw_fd(&self.dev.fd))
            .map_err(|e| IoError::Flush(e.into()))
    }

    /// Ops still pinned by timeouts (completions not yet arrived).
    pub fn pinned_ops(&self) -> u32 {
        self.bufs.iter().map(|b| b.pinned[0] + b.pinned[1]).sum()
    }

    /// Ops on buffer `buf` still pinned by timeouts: a write among them may still land.
    pub fn pinned_ops_of(&self, buf: usize) -> u32 {
        self.bufs.get(buf).map_or(0, |b| b.pinned[0] + b.pinned[1])
    }

    /// The single place that checks alignment of every buffer, offset and length.
    fn check(&self, op: &Op) -> Result<(), IoError> {
        let sector = self.dev.logical_sector_size as u64;
        let fail = |what: &str| Err(IoError::Misaligned(format!("{what} in {op:?} (sector size {sector})")));
        if op.buf >= self.bufs.len() {
            return fail("unknown buffer");
        }
        if op.len == 0 || op.len as u64 % sector != 0 {
            return fail("length not a multiple of the sector size");
        }
        if op.offset % sector != 0 {
            return fail("device offset not sector aligned");
        }
        if op.buf_off as u64 % sector != 0 {
            return fail("buffer offset not sector aligned");
        }
        if op.buf_off + op.len > self.buffer_len(op.buf) {
            return fail("op runs past its buffer");
        }
        if op.offset + op.len as u64 > self.dev.size_bytes {
            return fail("op runs past the end of the device");
        }
        if op.dir == Dir::Write && self.dev.access == Access::ReadOnly {
            return fail("write on a read-only device");
        }
        Ok(())
    }

    /// Runs `ops` as one batch with a timeout per op and returns one outcome per op.
    pub fn submit(&mut self, ops: &[Op], timeout: Duration) -> Result<&[Outcome], IoError> {
        self.submit_at(ops, 0, timeout)
    }

    /// As `submit`, recording the outcomes at op indexes `base..base + ops.len()`, so that several
    /// batches (a sweep and its per-slot retries) can be read back with `data_at` together.
    pub fn submit_at(&mut self, ops: &[Op], base: usize, timeout: Duration) -> Result<&[Outcome], IoError> {
        if base + ops.len() > self.max_ops {
            return Err(IoError::BatchTooLarge { got: base + ops.len(), max: self.max_ops });
        }
        for op in ops {
            self.check(op)?;
        }
        if let Backend::Uring(u) = &mut self.backend {
            u.reap_late(&mut self.bufs);
        }
        let range = base..base + ops.len();
        let outcomes = &mut self.outcomes[range.clone()];
        let op_copy = &mut self.op_copy[range.clone()];
        for (i, op) in ops.iter().enumerate() {
            let b = &mut self.bufs[op.buf];
            outcomes[i] =
                if b.settle() { Outcome::PENDING } else { Outcome { status: Status::Busy, latency_us: 0 } };
            debug_assert!(
                outcomes[i].status == Status::Busy || b.pinned[b.active] == 0,
                "pinned copy of buffer {} handed to op {i}",
                op.buf
            );
            op_copy[i] = b.active as u8;
        }
        match &mut self.backend {
            Backend::Uring(u) => u.run(ops, op_copy, &mut self.bufs, outcomes, timeout)?,
            Backend::Sync => sync::run(&self.dev, ops, op_copy, &mut self.bufs, outcomes, timeout),
        }
        Ok(&self.outcomes[range])
    }

    /// The bytes op `i` of the last batch `ops` (submitted at base 0) transferred, if it completed.
    pub fn data(&self, ops: &[Op], i: usize) -> Option<&[u8]> {
        self.data_at(&ops[i], i)
    }

    /// The bytes `op`, recorded at index `index`, transferred, if it completed. Ranges of the ops
    /// of one buffer never overlap, so a pinned neighbour does not touch these bytes.
    pub fn data_at(&self, op: &Op, index: usize) -> Option<&[u8]> {
        if !self.outcomes[index].is_done() {
            return None;
        }
        let copy = &self.bufs[op.buf].copies[self.op_copy[index] as usize];
        Some(&copy.as_slice()[op.buf_off..op.buf_off + op.len])
    }

    /// The outcome recorded at op index `index` by the last batch that covered it.
    pub fn outcome(&self, index: usize) -> Outcome {
        self.outcomes[index]
    }
}

#[cfg(test)]
impl Engine {
    /// Makes the next io_uring submissions fail as `faults` say (see `uring::SubmitFault`).
    fn inject_submit_faults(&mut self, faults: &[uring::SubmitFault]) {
        match &mut self.backend {
            Backend::Uring(u) => u.inject_submit_faults(faults),
            Backend::Sync => panic!("submit faults need the io_uring engine"),
        }
    }
}

#[cfg(test)]
mod tests;
