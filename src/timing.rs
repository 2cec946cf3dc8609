//! Every timeout derives from one base timeout T (docs/SAFETY.md derives the ratios).
//!
//! | name            | value  | meaning |
//! |-----------------|--------|---------|
//! | interval        | T/20   | one write + one sweep per interval (xha: ~10 beats per window were too few) |
//! | io timeout      | T/4    | a write or sweep that takes longer has failed |
//! | self-fence      | T/2    | no successful write and sweep for this long: fence yourself |
//! | host dead       | T      | a peer's sequence unchanged this long (on our clock): dead |
//!
//! Safety inequality: host_dead > self_fence + interval + io_timeout (T > 0.8 T).

use std::time::Duration;

/// Smallest base timeout accepted.
pub const MIN_BASE_TIMEOUT_MS: u32 = 500;
/// Largest base timeout accepted (one hour).
pub const MAX_BASE_TIMEOUT_MS: u32 = 3_600_000;
/// The seed system's figure.
pub const DEFAULT_BASE_TIMEOUT_MS: u32 = 40_000;

/// Timeouts derived from a base timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    pub base_timeout_ms: u32,
    pub interval_ms: u32,
    pub io_timeout_ms: u32,
    pub self_fence_ms: u32,
    pub host_dead_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error(
        "base timeout {0} ms is out of range: use {MIN_BASE_TIMEOUT_MS} ms to {MAX_BASE_TIMEOUT_MS} ms \
         (run `diskbeat probe` for the smallest value this storage supports)"
    )]
    OutOfRange(u32),
    #[error(
        "unsafe timing: host-dead {host_dead_ms} ms must exceed self-fence {self_fence_ms} ms + interval \
         {interval_ms} ms + io timeout {io_timeout_ms} ms, or a peer could be declared dead before it fenced"
    )]
    Unsafe { host_dead_ms: u32, self_fence_ms: u32, interval_ms: u32, io_timeout_ms: u32 },
}

impl Timing {
    pub fn from_base(base_timeout_ms: u32) -> Result<Timing, TimingError> {
        if !(MIN_BASE_TIMEOUT_MS..=MAX_BASE_TIMEOUT_MS).contains(&base_timeout_ms) {
            return Err(TimingError::OutOfRange(base_timeout_ms));
        }
        let t = Timing {
            base_timeout_ms,
            interval_ms: base_timeout_ms / 20,
            io_timeout_ms: base_timeout_ms / 4,
            self_fence_ms: base_timeout_ms / 2,
            host_dead_ms: base_timeout_ms,
        };
        t.check()?;
        Ok(t)
    }

    /// The safety inequality (docs/SAFETY.md): a peer is declared dead only after it must have
    /// fenced itself.
    pub fn check(&self) -> Result<(), TimingError> {
        let bound =
            u64::from(self.self_fence_ms) + u64::from(self.interval_ms) + u64::from(self.io_timeout_ms);
        if u64::from(self.host_dead_ms) <= bound {
            return Err(TimingError::Unsafe {
                host_dead_ms: self.host_dead_ms,
                self_fence_ms: self.self_fence_ms,
                interval_ms: self.interval_ms,
                io_timeout_ms: self.io_timeout_ms,
            });
        }
        Ok(())
    }

    /// Network heartbeats go out every interval, like disk beats.
    pub fn net_interval_ms(&self) -> u64 {
        u64::from(self.interval_ms)
    }
    /// A peer is heard on a network while its last accepted packet there is younger than T/2
    /// (10 beats: 30 % loss drops 10 in a row with probability 6e-6).
    pub fn net_timeout_ms(&self) -> u64 {
        u64::from(self.self_fence_ms)
    }
    /// A partition decision waits until the views on the disk have been unchanged this long:
    /// 2 x (interval + io timeout) = 0.6 T, one write and one read of every host
    /// (docs/PARTITIONS.md, "Equal views: the stability delay").
    pub fn partition_delay_ms(&self) -> u64 {
        2 * (u64::from(self.interval_ms) + u64::from(self.io_timeout_ms))
    }
    /// A host that lost the heartbeat disk together with every member rides through at most this
    /// long past its self-fence deadline (2 T), and a host that joined recently waits this much
    /// longer before declaring a silent peer dead (docs/SAFETY.md, "Whole-LUN loss").
    pub fn ride_max_ms(&self) -> u64 {
        2 * u64::from(self.host_dead_ms)
    }
    /// A host whose disk reads have failed this long (the io timeout) says so in its packets
    /// (`disk_age_ms`), and restarts every peer's silence clock when its reads work again.
    pub fn read_gap_ms(&self) -> u64 {
        u64::from(self.io_timeout_ms)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.into())
    }
    pub fn io_timeout(&self) -> Duration {
        Duration::from_millis(self.io_timeout_ms.into())
    }

    /// The smallest base timeout (whole seconds, at least 1 s) whose io timeout covers the worst
    /// observed latency `max_latency_us` with a 4x margin and whose interval covers a
    /// write + sweep cycle at p99.9 (`cycle_p999_us`) twice over.
    pub fn recommend_base_ms(max_latency_us: u64, cycle_p999_us: u64) -> u32 {
        let by_io_us = max_latency_us.saturating_mul(4 * 4);
        let by_cycle_us = cycle_p999_us.saturating_mul(2 * 20);
        let us = by_io_us.max(by_cycle_us).max(1_000_000);
        let ms = us.div_ceil(1_000_000) * 1000;
        ms.min(u64::from(MAX_BASE_TIMEOUT_MS)) as u32
    }
}

/// Parses a duration like `40s`, `2s`, `500ms`, `1m` (a bare number means seconds).
pub fn parse_duration_ms(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1u64)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else {
        (t, 1000)
    };
    let value: f64 =
        num.trim().parse().map_err(|_| format!("'{text}' is not a duration (try 40s, 2s or 500ms)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("'{text}' is not a positive duration"));
    }
    let ms = (value * mult as f64).round();
    if ms > u32::MAX as f64 {
        return Err(format!("'{text}' is too long"));
    }
    Ok(ms as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timing_is_safe() {
        let t = Timing::from_base(DEFAULT_BASE_TIMEOUT_MS).unwrap();
        assert_eq!(
            (t.interval_ms, t.io_timeout_ms, t.self_fence_ms, t.host_dead_ms),
            (2000, 10_000, 20_000, 40_000)
        );
        for base in [MIN_BASE_TIMEOUT_MS, 1000, 1234, 7777, MAX_BASE_TIMEOUT_MS] {
            Timing::from_base(base).unwrap();
        }
    }

    #[test]
    fn rejects_unsafe_and_out_of_range() {
        assert!(Timing::from_base(100).is_err());
        let mut t = Timing::from_base(40_000).unwrap();
        t.self_fence_ms = 30_000;
        assert!(matches!(t.check(), Err(TimingError::Unsafe { .. })));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("40s"), Ok(40_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("3"), Ok(3000));
        assert!(parse_duration_ms("fast").is_err());
        assert!(parse_duration_ms("-1s").is_err());
    }

    #[test]
    fn recommendation() {
        assert_eq!(Timing::recommend_base_ms(100, 200), 1000);
        // 2 s worst latency -> io timeout >= 8 s -> T >= 32 s.
        assert_eq!(Timing::recommend_base_ms(2_000_000, 10_000), 32_000);
    }
}
