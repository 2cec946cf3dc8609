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
    fixed_buffers: bool,
    epoch: u64,
    /// Kept alive here: the kernel reads linked timeouts' timespecs at submission.
    link_ts: types::Timespec,
    /// Which ops of the current batch have completed (preallocated).
    completed: Vec<bool>,
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
        Ok(Uring {
            ring,
            fixed_buffers,
            epoch: 0,
            link_ts: types::Timespec::new(),
            completed: vec![false; max_ops],
        })
    }

    /// Collects completions of ops that timed out in earlier batches and unpins their buffers.
    pub(super) fn reap_late(&mut self, bufs: &mut [PoolBuf]) {
        for cqe in self.ring.completion() {
            let ud = cqe.user_data();
            if ud & TIMEOUT_BIT == 0 {
                let (buf, copy) = (((ud >> 16) & 0xffff) as usize, ((ud >> 32) & 1) as usize);
                bufs[buf].pinned[copy] -= 1;
            }
        }
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
        let mut pending = 0usize;
        for (i, op) in ops.iter().enumerate() {
            self.completed[i] = outcomes[i].status == Status::Busy;
            if self.completed[i] {
                continue;
            }
            let copy = op_copy[i];
            let b = &mut bufs[op.buf].copies[copy as usize];
            // SAFETY (pointer use below): the range was checked to lie inside the buffer by
            // Engine::check; the buffer stays alive and untouched until the op's completion is
            // reaped, here or, after a timeout, in reap_late (its copy is pinned meanwhile).
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
            // SAFETY: the ring has room for 2 * max_ops entries and a batch has at most max_ops
            // ops; the buffers and `link_ts` outlive the submission (see above).
            unsafe {
                let mut sq = self.ring.submission();
                sq.push(&sqe).expect("ring sized for the batch");
                sq.push(&to).expect("ring sized for the batch");
            }
            pending += 1;
        }
        // The kernel cancels an op when its linked timeout fires; the grace covers the delivery
        // of the cancellation. Ops that the kernel cannot cancel are abandoned (and pinned).
        let deadline = start + timeout + (timeout / 4).max(Duration::from_millis(20));
        let mut first = true;
        while pending > 0 || first {
            let now = Instant::now();
            if now >= deadline && !first {
                break;
            }
            let remaining = deadline.saturating_duration_since(now);
            let wait = types::Timespec::new().sec(remaining.as_secs()).nsec(remaining.subsec_nanos());
            let args = types::SubmitArgs::new().timespec(&wait);
            match self.ring.submitter().submit_with_args(pending.min(1), &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(IoError::Submit(e)),
            }
            first = false;
            for cqe in self.ring.completion() {
                let ud = cqe.user_data();
                if ud & TIMEOUT_BIT != 0 {
                    continue;
                }
                let (buf, copy) = (((ud >> 16) & 0xffff) as usize, ((ud >> 32) & 1) as usize);
                if (ud >> EPOCH_SHIFT) & EPOCH_MASK != self.epoch {
                    bufs[buf].pinned[copy] -= 1;
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
        }
        for (i, op) in ops.iter().enumerate() {
            if !self.completed[i] {
                // Still in flight: never reuse this copy until its completion arrives.
                bufs[op.buf].pinned[op_copy[i] as usize] += 1;
                outcomes[i] =
                    Outcome { status: Status::TimedOut, latency_us: start.elapsed().as_micros() as u32 };
            }
        }
        Ok(())
    }
}
