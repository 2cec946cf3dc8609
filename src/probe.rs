//! Latency probe: the daemon's own engine, buffers and ops, timed on this storage.

use crate::disk::{Disk, DiskError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (sorted in place).
    pub fn from_samples(samples: &mut [u64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        Percentiles {
            samples: samples.len() as u64,
            mean_us: samples.iter().sum::<u64>() as f64 / samples.len() as f64,
            p50_us: rank(0.50),
            p99_us: rank(0.99),
            p999_us: rank(0.999),
            max_us: *samples.last().expect("non-empty"),
        }
    }
}

/// What a probe measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeResult {
    pub write: Percentiles,
    pub sweep: Percentiles,
    /// One write followed by one sweep, as in a heartbeat cycle.
    pub cycle: Percentiles,
    /// Failed (error) writes and table reads.
    pub errors: u64,
    pub timeouts: u64,
    /// Writes attempted, and how many of them failed or timed out (also counted above).
    pub writes: u64,
    pub write_errors: u64,
    pub write_timeouts: u64,
    /// Why the first failed write failed.
    pub first_write_failure: Option<String>,
    /// Stopped early (SIGINT/SIGTERM).
    pub interrupted: bool,
    pub table_bytes: u64,
    pub elapsed_ms: u64,
    /// Smallest base timeout this storage supports with margin (see `Timing::recommend_base_ms`).
    pub recommended_base_timeout_ms: u32,
}

impl ProbeResult {
    /// Every write failed or timed out: the storage cannot be written at all (read-only LUN, dead
    /// path), and the latencies measured are those of failures.
    pub fn all_writes_failed(&self) -> bool {
        self.writes > 0 && self.write_errors + self.write_timeouts == self.writes
    }
}

/// Alternates record-sized writes into the probe area and full sweeps for `duration`, or until
/// `stop` is set (checked once per cycle). `progress` gets the time elapsed after every cycle
/// (outside the timed operations), for a progress bar.
pub fn probe(
    disk: &mut Disk,
    duration: Duration,
    io_timeout: Duration,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Duration),
) -> Result<ProbeResult, DiskError> {
    let mut writes = Vec::with_capacity(100_000);
    let mut sweeps = Vec::with_capacity(100_000);
    let mut cycles = Vec::with_capacity(100_000);
    let (mut errors, mut timeouts) = (0u64, 0u64);
    let (mut write_errors, mut write_timeouts) = (0u64, 0u64);
    let start = Instant::now();
    let mut i = 0u32;
    let mut interrupted = false;
    let mut first_write_failure = None;
    while start.elapsed() < duration {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let t0 = Instant::now();
        let w = disk.write_probe(i, io_timeout)?;
        let t1 = Instant::now();
        let s = disk.sweep(io_timeout)?;
        let t2 = Instant::now();
        match w.status {
            crate::io::Status::Done => {}
            crate::io::Status::TimedOut => write_timeouts += 1,
            _ => write_errors += 1,
        }
        if !w.is_done() && first_write_failure.is_none() {
            first_write_failure = Some(write_failure(w.status));
        }
        timeouts += u64::from(s.chunks_timed_out);
        errors += u64::from(s.chunks_failed - s.chunks_timed_out);
        writes.push((t1 - t0).as_micros() as u64);
        sweeps.push((t2 - t1).as_micros() as u64);
        cycles.push((t2 - t0).as_micros() as u64);
        i = i.wrapping_add(1);
        progress(start.elapsed());
    }
    let writes_done = writes.len() as u64;
    errors += write_errors;
    timeouts += write_timeouts;
    let write = Percentiles::from_samples(&mut writes);
    let sweep = Percentiles::from_samples(&mut sweeps);
    let cycle = Percentiles::from_samples(&mut cycles);
    Ok(ProbeResult {
        write,
        sweep,
        cycle,
        errors,
        timeouts,
        writes: writes_done,
        write_errors,
        write_timeouts,
        first_write_failure,
        interrupted,
        table_bytes: disk.superblock().layout.record_table_len() as u64,
        elapsed_ms: start.elapsed().as_millis() as u64,
        recommended_base_timeout_ms: crate::timing::Timing::recommend_base_ms(
            write.max_us.max(sweep.max_us),
            cycle.p999_us,
        ),
    })
}

fn write_failure(s: crate::io::Status) -> String {
    match s {
        crate::io::Status::Failed(errno) => nix::errno::Errno::from_raw(errno).desc().into(),
        crate::io::Status::Short(n) => format!("short write ({n} bytes)"),
        crate::io::Status::TimedOut => "timed out".into(),
        crate::io::Status::Busy => "buffer pinned by an earlier timed-out write".into(),
        crate::io::Status::Done => "ok".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<u64> = (1..=1000).collect();
        let p = Percentiles::from_samples(&mut v);
        assert_eq!((p.p50_us, p.p99_us, p.p999_us, p.max_us), (500, 990, 999, 1000));
        assert_eq!(Percentiles::from_samples(&mut []).samples, 0);
    }
}
