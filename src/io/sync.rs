//! pread/pwrite engine: one op at a time. A blocking syscall cannot be cut short, so an op that
//! completes after the timeout is reported `TimedOut` and its data is not used.

use super::{Device, Dir, Op, Outcome, PoolBuf, Status};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

pub(super) fn run(
    dev: &Device,
    ops: &[Op],
    op_copy: &[u8],
    bufs: &mut [PoolBuf],
    outcomes: &mut [Outcome],
    timeout: Duration,
) {
    let start = Instant::now();
    for (i, op) in ops.iter().enumerate() {
        if outcomes[i].status == Status::Busy {
            continue;
        }
        let buf =
            &mut bufs[op.buf].copies[op_copy[i] as usize].as_mut_slice()[op.buf_off..op.buf_off + op.len];
        let op_start = Instant::now();
        let res = match op.dir {
            Dir::Read => nix::sys::uio::pread(dev.fd.as_fd(), buf, op.offset as i64),
            Dir::Write => nix::sys::uio::pwrite(dev.fd.as_fd(), buf, op.offset as i64),
        };
        let elapsed = op_start.elapsed();
        let status = match res {
            _ if elapsed > timeout => Status::TimedOut,
            Ok(n) if n == op.len => Status::Done,
            Ok(n) => Status::Short(n),
            Err(e) => Status::Failed(e as i32),
        };
        outcomes[i] =
            Outcome { status, latency_us: start.elapsed().as_micros().min(u32::MAX as u128) as u32 };
    }
}
