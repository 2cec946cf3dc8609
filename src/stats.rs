//! Fixed-size latency histogram: recording never allocates (heartbeat path).
//!
//! Kept instead of a crate such as `hdrhistogram` on purpose: it lives inline in `Node` (a plain
//! 1 KiB array, no heap), so the node stays one allocation-free value that tests/core_alloc.rs
//! checks cycle by cycle and the daemon copies into its status snapshot with a memcpy; recording is
//! infallible (hdrhistogram's `record` returns a `Result` past its range); 8 sub-buckets per power
//! of two (within 12.5%) is all status and `probe`'s recommendation need.

/// Log-linear buckets: 8 sub-buckets per power of two from 1 us to ~2^31 us (35 min).
const SUB: usize = 8;
const POWERS: usize = 32;
const BUCKETS: usize = SUB * POWERS;

#[derive(Clone)]
pub struct Histogram {
    counts: [u32; BUCKETS],
    total: u64,
    max_us: u64,
    /// Saturating: Prometheus histograms carry a sum (the metrics endpoint).
    sum_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: [0; BUCKETS], total: 0, max_us: 0, sum_us: 0 }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(n={}, p50={}, max={})", self.total, self.percentile_us(0.5), self.max_us)
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let power = 63 - v.leading_zeros() as usize; // >= 3
    let sub = ((v >> (power - 3)) & (SUB as u64 - 1)) as usize;
    ((power - 2) * SUB + sub).min(BUCKETS - 1)
}

/// Upper bound of a bucket's values.
fn bucket_high(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let power = b / SUB + 2;
    let sub = (b % SUB) as u64;
    ((SUB as u64 + sub + 1) << (power - 3)) - 1
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        self.counts[bucket(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// The upper edge (inclusive) of the bucket `us` falls in: [`Histogram::count_le`] is exact
    /// at such an edge, and it is at most 12.5% above `us`.
    pub fn edge_us(us: u64) -> u64 {
        bucket_high(bucket(us))
    }

    /// Values recorded at most `edge_us`: exact when it is an edge ([`Histogram::edge_us`]),
    /// otherwise it counts the whole bucket `edge_us` falls in.
    pub fn count_le(&self, edge_us: u64) -> u64 {
        self.counts[..=bucket(edge_us)].iter().map(|&c| u64::from(c)).sum()
    }

    /// The sum of every value recorded (saturating).
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The value at quantile `q` (0..=1), to within one bucket (12.5%), never above the max.
    pub fn percentile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let want = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= want {
                return bucket_high(b).min(self.max_us);
            }
        }
        self.max_us
    }

    pub fn clear(&mut self) {
        *self = Histogram::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_and_tight() {
        let mut last = 0;
        for v in 0..100_000u64 {
            let b = bucket(v);
            assert!(b >= last);
            last = b;
            assert!(bucket_high(b) >= v, "v={v} b={b} high={}", bucket_high(b));
            assert!(bucket_high(b) <= v + v / 8 + 1, "v={v} high={}", bucket_high(b));
        }
    }

    #[test]
    fn percentiles() {
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let p50 = h.percentile_us(0.5);
        assert!((500..=570).contains(&p50), "{p50}");
        assert_eq!(h.percentile_us(1.0), 1000);
        assert_eq!(h.count(), 1000);
        assert_eq!(h.sum_us(), 500_500);
    }

    #[test]
    fn counts_at_edges_are_exact() {
        let mut h = Histogram::default();
        let values = [0u64, 1, 99, 100, 103, 104, 250, 255, 256, 1000, 1023, 1024, 9_999_999];
        for v in values {
            h.record(v);
        }
        for target in [100u64, 250, 1000, 2500, 10_000_000] {
            let edge = Histogram::edge_us(target);
            assert!(edge >= target && edge <= target + target / 8, "{target} -> {edge}");
            let exact = values.iter().filter(|&&v| v <= edge).count() as u64;
            assert_eq!(h.count_le(edge), exact, "edge {edge}");
        }
    }
}
