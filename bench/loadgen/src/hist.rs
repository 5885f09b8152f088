//! A fixed-size log-linear latency histogram in microseconds (HdrHistogram style).
//!
//! Invariants: values below 256 µs get one bucket each; above that each power of two is split
//! into 128 linear sub-buckets, so a bucket's width is at most 1/128 (< 0.8 %) of its value.
//! The table has a fixed size ([`BUCKETS`]); larger values land in the last bucket, so recording
//! never allocates. The bucket layout is part of the report format: `bucket_low` is mirrored in
//! `bench/harness/stats.py`, which merges the raw counts of several processes.

/// Linear sub-buckets per power of two (2^7).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Number of buckets; covers values up to about 2^38 µs (three days).
pub const BUCKETS: usize = 4096;

/// Log-linear histogram of microsecond values.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Bucket index of a value.
pub fn bucket_of(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = v >> shift;
    let idx = (shift as u64) * SUB + sub;
    (idx as usize).min(BUCKETS - 1)
}

/// Lowest value that falls into bucket `idx`.
pub fn bucket_low(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < 2 * SUB {
        return idx;
    }
    let shift = idx / SUB - 1;
    let sub = idx - shift * SUB;
    sub << shift
}

/// Width of bucket `idx` (how many values share it).
pub fn bucket_width(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < 2 * SUB {
        1
    } else {
        1 << (idx / SUB - 1)
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    /// Records one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.total += 1;
        if v > self.max {
            self.max = v;
        }
    }

    /// Number of recorded values.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Largest recorded value (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Value at quantile `q` (0..=1): the midpoint of the bucket holding that rank, 0 if empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let mid = bucket_low(i) + bucket_width(i) / 2;
                return mid.min(self.max);
            }
        }
        self.max
    }

    /// Non-empty buckets as `(index, count)` pairs, for merging across processes.
    pub fn sparse(&self) -> Vec<(usize, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i, *c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        for v in 0..256 {
            assert_eq!(bucket_of(v), v as usize);
            assert_eq!(bucket_low(v as usize), v);
        }
    }

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = 0usize;
        for v in 1..2_000_000u64 {
            let b = bucket_of(v);
            assert!(b == prev || b == prev + 1, "gap at {v}");
            assert!(bucket_low(b) <= v && v < bucket_low(b) + bucket_width(b));
            assert!(bucket_width(b) * 128 <= v.max(128));
            prev = b;
        }
    }

    #[test]
    fn huge_values_saturate_in_last_bucket() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        assert_eq!(h.sparse(), vec![(BUCKETS - 1, 1)]);
        assert_eq!(h.max(), u64::MAX);
    }

    #[test]
    fn quantiles_follow_the_data() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.01, "p50 {p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.01, "p99 {p99}");
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(h.total(), 10_000);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
