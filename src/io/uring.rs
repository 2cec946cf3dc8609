//! io_uring engine: a batch is pushed as (op, linked timeout) pairs and submitted with one
//! `io_uring_enter`. Buffers are registered once (fixed buffers), the device fd is registered once.

use super::{Device, Dir, IoError, Op, Outcome, PoolBuf, Status};
use io_uring::{opcode, squeue, types, IoUring};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const TIMEOUT_BIT: u64 = 1 << 63;
const EPOCH_SHIFT: u32 = 33;
const EPOCH_MASK: u64 = (1 << 30) - 1;

/// user_data of an op: [63: timeout flag][33..63: epoch][32: buffer copy][16..32: buffer][0..16: op].
fn token(epoch: u64, buf: usize, copy: u8, op: usize) -> u64 {
    debug_assert!(buf < 1 << 16 && op < 1 << 16);
    (epoch << EPOCH_SHIFT) | (u64::from(copy) << 32) | ((buf as u64) << 16) | op as u64
}

pub(super) struct Uring {
    ring: IoUring,
    /// A second mapping of the ring's SQE array, to turn SQEs the kernel never consumed into
    /// NOPs (see `withdraw`). None if it could not be mapped: such SQEs then count as accepted.
    sqes: Option<memmap2::MmapMut>,
    /// SQEs ever pushed, wrapping: the ring's tail (a new ring starts at 0).
    sq_tail: u32,
    /// user_data of the SQEs the current batch pushed, in order (preallocated).
    pushed: Vec<u64>,
    fixed_buffers: bool,
    epoch: u64,
    /// Kept alive here: the kernel reads linked timeouts' timespecs at submission.
    link_ts: types::Timespec,
    /// Which ops of the current batch have completed or will never run (preallocated).
    completed: Vec<bool>,
    /// Test-only: failures the next submissions report (see `SubmitFault`).
    #[cfg(test)]
    faults: std::collections::VecDeque<SubmitFault>,
}

/// user_data of an SQE withdrawn from the queue (rewritten as a NOP). Its timeout bit is set, so
/// every reaper ignores its completion.
const WITHDRAWN: u64 = u64::MAX;
/// mmap offset of an io_uring's SQE array (kernel ABI, IORING_OFF_SQES).
const IORING_OFF_SQES: u64 = 0x1000_0000;

/// Test-only: makes one submission hand the kernel at most `accept` of the queued SQEs (for
/// real, without waiting), then report `errno` (0: report success with the count accepted, as
/// a kernel that accepted only some SQEs does).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(super) struct SubmitFault {
    pub accept: u32,
    pub errno: i32,
}

impl Drop for Uring {
    /// Hands the device fd back before the ring closes. A closed ring drops its registered files
    /// later, from a kernel worker (tens of ms on a quiet machine, seconds on a loaded one): an
    /// O_EXCL claim (mkfs) outlived the process and the next exclusive open (`mkfs --force`)
    /// met EBUSY. Daemons open without O_EXCL, so a restarted daemon never met it. Unregistering
    /// puts the file now; only requests still in flight keep their own reference.
    fn drop(&mut self) {
        let _ = self.ring.submitter().unregister_files();
    }
}

impl Uring {
    pub(super) fn new(dev: &Device, bufs: &mut [PoolBuf], max_ops: usize) -> Result<Uring, IoError> {
        assert!(max_ops < 1 << 16 && bufs.len() < 1 << 16);
        let entries = (2 * max_ops).next_power_of_two().max(8) as u32;
        let ring = IoUring::builder().build(entries).map_err(IoError::UringUnavailable)?;
        ring.submitter().register_files(&[dev.fd.as_raw_fd()]).map_err(IoError::UringUnavailable)?;
        let iovecs: Vec<libc::iovec> = bufs
            .iter_mut()
            .flat_map(|b| b.copies.iter_mut())
            .map(|c| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() })
            .collect();
        // SAFETY: every iovec points at an anonymous mapping owned by the engine, which outlives
        // the ring (the engine drops the ring before its buffers) and is never moved or unmapped
        // while registered.
        let fixed_buffers = unsafe { ring.submitter().register_buffers(&iovecs) }.is_ok();
        // Rewriting queued SQEs is only sound while the kernel reads them in io_uring_enter alone.
        assert!(!ring.params().is_setup_sqpoll(), "SQPOLL rings are not supported");
        let sqes_len = ring.params().sq_entries() as usize * std::mem::size_of::<squeue::Entry>();
        // SAFETY: maps the ring's own SQE array (MAP_SHARED, the same pages the io-uring crate
        // maps); the mapping lives in `Uring` and is only written between io_uring_enter calls
        // (see `withdraw`).
        let sqes = unsafe {
            memmap2::MmapOptions::new().offset(IORING_OFF_SQES).len(sqes_len).map_mut(ring.as_raw_fd())
        };
        // Without the mapping, SQEs the kernel did not take would stay queued for the next batch
        // (a stale heartbeat write racing a newer one; review finding): use the other engine.
        let sqes = sqes.map_err(IoError::UringUnavailable)?;
        // Timeouts are passed as io_uring_enter arguments (IORING_FEAT_EXT_ARG, 5.11+).
        if !ring.params().is_feature_ext_arg() {
            return Err(IoError::UringUnavailable(std::io::Error::other(
                "the kernel lacks IORING_FEAT_EXT_ARG (5.11+)",
            )));
        }
        Ok(Uring {
            ring,
            sqes: Some(sqes),
            sq_tail: 0,
            pushed: Vec::with_capacity(2 * max_ops),
            fixed_buffers,
            epoch: 0,
            link_ts: types::Timespec::new(),
            completed: vec![false; max_ops],
            #[cfg(test)]
            faults: Default::default(),
        })
    }

    #[cfg(test)]
    pub(super) fn inject_submit_faults(&mut self, faults: &[SubmitFault]) {
        self.faults.extend(faults.iter().copied());
    }

    /// One `io_uring_enter`: submits every queued SQE and waits for `want` completions at most
    /// until `wait`. The only place that submits, so tests can make it fail.
    fn enter(&mut self, want: usize, wait: &types::Timespec) -> std::io::Result<usize> {
        #[cfg(test)]
        if let Some(f) = self.faults.pop_front() {
            let n = f.accept.min(self.ring.submission().len() as u32);
            let mut accepted = 0;
            if n > 0 {
                // SAFETY: submits `n` SQEs that `run` queued (valid until their completions are
                // reaped), without waiting and without an argument struct.
                accepted = unsafe { self.ring.submitter().enter::<libc::sigset_t>(n, 0, 0, None) }?;
            }
            return match f.errno {
                0 => Ok(accepted),
                e => Err(std::io::Error::from_raw_os_error(e)),
            };
        }
        let args = types::SubmitArgs::new().timespec(wait);
        self.ring.submitter().submit_with_args(want, &args)
    }

    /// Collects completions of ops that timed out in earlier batches and unpins their buffers.
    pub(super) fn reap_late(&mut self, bufs: &mut [PoolBuf]) {
        for cqe in self.ring.completion() {
            let ud = cqe.user_data();
            if ud & TIMEOUT_BIT == 0 {
                let (buf, copy) = (((ud >> 16) & 0xffff) as usize, ((ud >> 32) & 1) as usize);
                bufs[buf].unpin(copy);
            }
        }
    }

    /// Takes the last `count` queued SQEs back: rewrites them as NOPs, so the kernel never runs
    /// them (it consumes the NOPs at the next submission). False if it cannot (the SQEs then
    /// stay queued, and count as accepted).
    fn withdraw(&mut self, count: usize) -> bool {
        let Some(map) = &mut self.sqes else { return false };
        debug_assert!(count <= self.pushed.len());
        let mask = self.ring.params().sq_entries() - 1;
        let slots = map.as_mut_ptr().cast::<squeue::Entry>();
        let first = self.pushed.len() - count;
        let slot = |k: usize| (self.sq_tail.wrapping_sub((count - k) as u32) & mask) as usize;
        // SAFETY: `slot` is below sq_entries, so the pointer stays inside the mapped SQE array;
        // no SQPOLL thread exists, so the kernel reads SQEs only inside io_uring_enter, which
        // nothing runs during this call (`&mut self`).
        unsafe {
            // Check first that the queue holds what we pushed where we expect it.
            if (0..count).any(|k| (*slots.add(slot(k))).get_user_data() != self.pushed[first + k]) {
                debug_assert!(false, "the submission queue does not hold this batch's SQEs");
                return false;
            }
            let nop = opcode::Nop::new().build().user_data(WITHDRAWN);
            for k in 0..count {
                std::ptr::write_volatile(slots.add(slot(k)), nop.clone());
            }
        }
        true
    }

    pub(super) fn run(
        &mut self,
        ops: &[Op],
        op_copy: &[u8],
        bufs: &mut [PoolBuf],
        outcomes: &mut [Outcome],
        timeout: Duration,
    ) -> Result<(), IoError> {
        self.epoch = (self.epoch + 1) & EPOCH_MASK;
        self.link_ts = types::Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
        let start = Instant::now();
        // The kernel cancels an op when its linked timeout fires; the grace covers the delivery
        // of the cancellation. Ops that the kernel cannot cancel are abandoned (and pinned).
        let deadline = start + timeout + (timeout / 4).max(Duration::from_millis(20));
        // NOPs withdrawn from an earlier batch may still be queued: let the kernel take them, so
        // they leave room for this batch. A failure here shows up as ops that find no room.
        if !self.ring.submission().is_empty() {
            let _ = self.enter(0, &types::Timespec::new());
        }
        self.pushed.clear();
        let mut pending = 0usize;
        for (i, op) in ops.iter().enumerate() {
            self.completed[i] = outcomes[i].status == Status::Busy;
            if self.completed[i] {
                continue;
            }
            let copy = op_copy[i];
            debug_assert_eq!(bufs[op.buf].pinned[copy as usize], 0, "op {i} was handed a pinned copy");
            let b = &mut bufs[op.buf].copies[copy as usize];
            // SAFETY (pointer use below): the range was checked to lie inside the buffer by
            // Engine::check; the buffer stays alive and untouched until the op's completion is
            // reaped, here or, after a timeout, in reap_late (its copy is pinned meanwhile), or
            // until its SQE is withdrawn unconsumed.
            let ptr = unsafe { b.as_mut_ptr().add(op.buf_off) };
            let fixed = types::Fixed(0);
            let index = (op.buf * 2 + copy as usize) as u16;
            let len = op.len as u32;
            let sqe = match (op.dir, self.fixed_buffers) {
                (Dir::Read, true) => opcode::ReadFixed::new(fixed, ptr, len, index).offset(op.offset).build(),
                (Dir::Write, true) => {
                    opcode::WriteFixed::new(fixed, ptr, len, index).offset(op.offset).build()
                }
                (Dir::Read, false) => opcode::Read::new(fixed, ptr, len).offset(op.offset).build(),
                (Dir::Write, false) => opcode::Write::new(fixed, ptr, len).offset(op.offset).build(),
            };
            let ud = token(self.epoch, op.buf, copy, i);
            let sqe = sqe.user_data(ud).flags(squeue::Flags::IO_LINK);
            let to = opcode::LinkTimeout::new(&self.link_ts).build().user_data(ud | TIMEOUT_BIT);
            // SAFETY: the buffers and `link_ts` outlive the submission (see above). Both entries
            // or neither are queued.
            let queued = unsafe { self.ring.submission().push_multiple(&[sqe, to]) }.is_ok();
            if !queued {
                // The queue is full of SQEs an earlier submission left: never queued, nothing to pin.
                self.completed[i] = true;
                outcomes[i] = Outcome { status: Status::Failed(libc::EAGAIN), latency_us: 0 };
                continue;
            }
            self.sq_tail = self.sq_tail.wrapping_add(2);
            self.pushed.extend_from_slice(&[ud, ud | TIMEOUT_BIT]);
            pending += 1;
        }
        // Submit (again, after transient errors and partial submissions) and wait until every op
        // completed or the deadline passed.
        let mut failure: Option<std::io::Error> = None;
        let mut hard = false;
        let mut first = true;
        while pending > 0 || first {
            let now = Instant::now();
            if now >= deadline && !first {
                break;
            }
            let remaining = deadline.saturating_duration_since(now);
            let wait = types::Timespec::new().sec(remaining.as_secs()).nsec(remaining.subsec_nanos());
            let queued = self.ring.submission().len();
            match self.enter(pending.min(1), &wait) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {
                    // Transient: the queued SQEs stay queued for the next try. Back off a little
                    // when the kernel took none, instead of spinning to the deadline.
                    if queued > 0 && self.ring.submission().len() == queued {
                        std::thread::sleep(remaining.min(Duration::from_millis(1)));
                    }
                    failure = Some(e);
                }
                Err(e) => {
                    failure = Some(e);
                    hard = true;
                }
            }
            first = false;
            for cqe in self.ring.completion() {
                let ud = cqe.user_data();
                if ud & TIMEOUT_BIT != 0 {
                    continue;
                }
                let (buf, copy) = (((ud >> 16) & 0xffff) as usize, ((ud >> 32) & 1) as usize);
                if (ud >> EPOCH_SHIFT) & EPOCH_MASK != self.epoch {
                    bufs[buf].unpin(copy);
                    continue;
                }
                let i = (ud & 0xffff) as usize;
                debug_assert!(!self.completed[i], "op {i} completed twice");
                self.completed[i] = true;
                pending -= 1;
                let res = cqe.result();
                let status = match res {
                    r if r == -libc::ECANCELED => Status::TimedOut,
                    r if r < 0 => Status::Failed(-r),
                    r if r as usize == ops[i].len => Status::Done,
                    r => Status::Short(r as usize),
                };
                outcomes[i] =
                    Outcome { status, latency_us: start.elapsed().as_micros().min(u32::MAX as u128) as u32 };
            }
            if hard {
                break;
            }
        }
        // SQEs the kernel never consumed (they are the newest): withdraw them, so their ops never
        // run and pin nothing. An op whose SQE was consumed but not its linked timeout's runs
        // without a timeout: it counts as accepted.
        let unconsumed = self.ring.submission().len().min(self.pushed.len());
        if unconsumed > 0 && self.withdraw(unconsumed) {
            let errno = failure.as_ref().and_then(std::io::Error::raw_os_error).unwrap_or(libc::EAGAIN);
            for &ud in &self.pushed[self.pushed.len() - unconsumed..] {
                if ud & TIMEOUT_BIT == 0 {
                    let i = (ud & 0xffff) as usize;
                    self.completed[i] = true;
                    outcomes[i] = Outcome { status: Status::Failed(errno), latency_us: 0 };
                }
            }
        }
        for (i, op) in ops.iter().enumerate() {
            if !self.completed[i] {
                // Accepted (or left queued) and not completed: never reuse this copy until its
                // completion arrives.
                bufs[op.buf].pin(op_copy[i] as usize);
                outcomes[i] = Outcome {
                    status: Status::TimedOut,
                    latency_us: start.elapsed().as_micros().min(u32::MAX as u128) as u32,
                };
            }
        }
        match failure {
            Some(e) if hard => Err(IoError::Submit(e)),
            _ => Ok(()),
        }
    }
}
