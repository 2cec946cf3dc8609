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
//!
//! A VM driver call (one exec hook run) is killed after 3 io timeouts, at least 2 s
//! ([`Timing::vm_call_timeout_ms`]). A peer with a fence device is suspected after T/8 of
//! silence on both channels ([`Timing::fence_suspicion_ms`]); a device call is abandoned after 3
//! io timeouts, at least 10 s ([`Timing::fence_device_timeout_ms`]).

use std::time::Duration;

/// Smallest base timeout accepted.
pub const MIN_BASE_TIMEOUT_MS: u32 = 500;
/// Largest base timeout accepted (one hour).
pub const MAX_BASE_TIMEOUT_MS: u32 = 3_600_000;
/// The seed system's figure.
pub const DEFAULT_BASE_TIMEOUT_MS: u32 = 40_000;
/// Shortest VM driver call timeout: a process start and a small VM start fit, even at the
/// smallest T.
pub const MIN_VM_CALL_TIMEOUT_MS: u64 = 2000;
/// Shortest fence device timeout: an agent that logs into a BMC needs seconds.
pub const MIN_FENCE_DEVICE_TIMEOUT_MS: u64 = 10_000;

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

    /// A VM driver call (one exec hook run: inventory, start, destroy, protect) is killed after
    /// 3 io timeouts (0.75 T; 30 s at the default T), at least [`MIN_VM_CALL_TIMEOUT_MS`]. The
    /// VM thread makes the calls one at a time, polling the inventory every io timeout, and does
    /// nothing else meanwhile (no extent reads, no publishing, no claims): a hung hook delays
    /// failover by less than one host-dead time, and a call may still take three poll periods.
    pub fn vm_call_timeout_ms(&self) -> u64 {
        (3 * u64::from(self.io_timeout_ms)).max(MIN_VM_CALL_TIMEOUT_MS)
    }

    /// A peer with a fence device is suspected once it is silent on the network AND unchanged
    /// on the disk for this long: T/8 (2.5 intervals; 5 s at the default T), far below host-dead.
    /// A healthy writer looks unchanged for an interval to a reader sampling at the same rate,
    /// for two when its cycle slips by one: half an interval more is the margin. Safety does not
    /// rest on it (a confirmed power-off is the proof); it sets how often a stalled host is
    /// powered off. docs/SAFETY.md, "Fence devices".
    pub fn fence_suspicion_ms(&self) -> u64 {
        u64::from(self.base_timeout_ms) / 8
    }
    /// The configurable range of the suspicion time: from the default (never more eager) to
    /// below host-dead (beyond it the other proofs come first).
    pub fn fence_suspicion_range_ms(&self) -> std::ops::Range<u64> {
        self.fence_suspicion_ms()..u64::from(self.host_dead_ms)
    }
    /// A fence device call (`off`, then `status` until OFF) is abandoned, its agent killed, after
    /// 3 io timeouts, at least 10 s (a BMC over IPMI takes seconds): 30 s at the default T.
    pub fn fence_device_timeout_ms(&self) -> u64 {
        (3 * u64::from(self.io_timeout_ms)).max(MIN_FENCE_DEVICE_TIMEOUT_MS)
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

/// What a duration looks like, for error messages.
const DURATION_HINT: &str = "type e.g. 40s, 1.5s, 500ms or 2m; a bare number means seconds";

/// Parses a duration like `40s`, `1.5s`, `500ms`, `2m`, `1h`, `1m 30s` (humantime's syntax), or a
/// bare number, which means seconds (`3`, `0.5`). Rounds to the nearest millisecond.
pub fn parse_duration_ms(text: &str) -> Result<u32, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("'{text}' is negative: a duration is 0 or more ({DURATION_HINT})"));
    }
    // humantime wants a unit on every number; ours has always been optional (seconds).
    let seconds;
    let t = if t.bytes().any(|b| b.is_ascii_digit()) && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        seconds = format!("{t}s");
        seconds.as_str()
    } else {
        t
    };
    let d = humantime::parse_duration(t).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, .. } if !unit.is_empty() => {
            format!("'{text}' has an unknown unit '{unit}' (use ms, s, m or h: {DURATION_HINT})")
        }
        humantime::DurationError::NumberOverflow => {
            format!("'{text}' is out of range (at most 49 days, in steps no finer than 1 ns)")
        }
        _ => format!("'{text}' is not a duration ({DURATION_HINT})"),
    })?;
    let ms = (d.as_nanos() + 500_000) / 1_000_000;
    u32::try_from(ms).map_err(|_| format!("'{text}' is too long (at most 49 days)"))
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
    fn vm_call_timeout_derives_from_t() {
        let ms = |base| Timing::from_base(base).unwrap().vm_call_timeout_ms();
        assert_eq!(ms(DEFAULT_BASE_TIMEOUT_MS), 30_000);
        assert_eq!(ms(DEFAULT_BASE_TIMEOUT_MS), crate::vm::exec::DEFAULT_TIMEOUT_MS, "the CLI's default");
        assert_eq!(ms(4000), 3000);
        assert_eq!((ms(MIN_BASE_TIMEOUT_MS), ms(2000)), (2000, 2000), "the floor");
        assert_eq!(ms(MAX_BASE_TIMEOUT_MS), 2_700_000);
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
        for (text, ms) in [
            ("40s", 40_000),
            ("500ms", 500),
            ("1.5s", 1500),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1m 30s", 90_000),
            (" 40 s ", 40_000),
            ("10min", 600_000),
            // A bare number means seconds (docs and help texts say `--window 0`, `--sample 0`).
            ("3", 3000),
            ("0", 0),
            ("0.5", 500),
            ("0s", 0),
            // Rounded to the nearest millisecond.
            ("1.5ms", 2),
            ("1400us", 1),
            ("49d", 4_233_600_000),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_what_to_type() {
        for (text, needle) in [
            ("fast", "is not a duration (type e.g. 40s"),
            ("soon", "is not a duration"),
            ("", "is not a duration"),
            ("s", "is not a duration"),
            ("1.", "is not a duration"),
            ("-1s", "is negative"),
            ("-0.5", "is negative"),
            ("40x", "unknown unit 'x' (use ms, s, m or h"),
            ("40S", "unknown unit 'S'"),
            ("50d", "is too long (at most 49 days)"),
            ("99999999999999999999s", "is out of range"),
        ] {
            let e = parse_duration_ms(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.contains(&format!("'{text}'")), "{text}: {e}");
        }
    }

    #[test]
    fn recommendation() {
        assert_eq!(Timing::recommend_base_ms(100, 200), 1000);
        // 2 s worst latency -> io timeout >= 8 s -> T >= 32 s.
        assert_eq!(Timing::recommend_base_ms(2_000_000, 10_000), 32_000);
    }
}
