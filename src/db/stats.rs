//! Live counters of the persistence layer, shared (`Arc`) between the reactor, which reads them
//! for `get_status`, `/ready` and `/metrics`, and the database threads, which update them.
//!
//! Invariants: every field is an atomic, so reading never blocks or locks; `queue_depth` counts
//! events accepted by `submit` that are neither committed nor in the spool yet; `spooled` counts
//! events in the spool file that are not yet committed to the database.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Counters of the persistence layer (`status.data.db`, docs/protocol.md, "`get_status`").
#[derive(Debug, Default)]
pub struct DbStats {
    /// Persistence is configured. `DbStats::default()` (persistence off) has it false.
    pub enabled: AtomicBool,
    /// The database is reachable, this worker holds its lock and the schema is current.
    pub connected: AtomicBool,
    /// Events accepted by `submit`, not yet committed and not yet in the spool.
    pub queue_depth: AtomicU64,
    /// Events committed to the database so far by this process (an event replayed from the
    /// spool that was already stored counts again; the row itself is never doubled).
    pub written: AtomicU64,
    /// Events waiting in the spool file now.
    pub spooled: AtomicU64,
    /// Events refused by `submit` because even the intake queue was full (they are lost for
    /// the database; clients still received them).
    pub dropped: AtomicU64,
    /// Events the database rejected even when written alone (logged at error level).
    pub failed: AtomicU64,
    /// Cluster mode: events not written because the node no longer leads (the database's
    /// fencing term moved on, docs/cluster.md, "Fencing"); never spooled nor retried.
    pub fenced: AtomicU64,
    /// Transactions committed by the writer pool.
    pub batches: AtomicU64,
    /// Commit latency of writer transactions (begin to commit acknowledged).
    pub commit_latency: LatencyHistogram,
}

/// A plain copy of [`DbStats`] at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DbStatsSnapshot {
    /// See [`DbStats::enabled`].
    pub enabled: bool,
    /// See [`DbStats::connected`].
    pub connected: bool,
    /// See [`DbStats::queue_depth`].
    pub queue_depth: u64,
    /// See [`DbStats::written`].
    pub written: u64,
    /// See [`DbStats::spooled`].
    pub spooled: u64,
    /// See [`DbStats::dropped`].
    pub dropped: u64,
    /// See [`DbStats::failed`].
    pub failed: u64,
    /// See [`DbStats::fenced`].
    pub fenced: u64,
    /// See [`DbStats::batches`].
    pub batches: u64,
}

impl DbStats {
    /// Reads every counter once (relaxed: each value is exact, the set is not atomic).
    pub fn snapshot(&self) -> DbStatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DbStatsSnapshot {
            enabled: self.enabled.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            queue_depth: r(&self.queue_depth),
            written: r(&self.written),
            spooled: r(&self.spooled),
            dropped: r(&self.dropped),
            failed: r(&self.failed),
            fenced: r(&self.fenced),
            batches: r(&self.batches),
        }
    }

    /// Subtracts without wrapping below zero.
    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }
}

/// Number of histogram buckets: 4 exact ones, then 4 per power of two up to 2^32 µs.
const BUCKETS: usize = 4 + 30 * 4;

/// A lock-free log-linear latency histogram in microseconds (about 25 % resolution).
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Observations recorded so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0.0..=1.0); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(upper_bound(i)));
            }
        }
        Some(Duration::from_micros(upper_bound(BUCKETS - 1)))
    }
}

/// Bucket index of a value in microseconds.
fn bucket_of(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // floor(log2), >= 2
    let sub = ((us >> (e - 2)) & 3) as usize;
    (4 + (e - 2) * 4 + sub).min(BUCKETS - 1)
}

/// Largest value (µs) that falls into bucket `i`.
fn upper_bound(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let e = (i - 4) / 4 + 2;
    let sub = ((i - 4) % 4) as u64;
    ((4 + sub + 1) << (e - 2)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bound_their_values() {
        for us in [
            0u64, 1, 3, 4, 5, 7, 8, 9, 15, 16, 100, 1000, 123_456, 10_000_000,
        ] {
            let b = bucket_of(us);
            assert!(upper_bound(b) >= us, "{us} above bucket {b}");
            if b > 0 {
                assert!(upper_bound(b - 1) < us, "{us} belongs lower than {b}");
            }
        }
    }

    #[test]
    fn quantiles_follow_the_distribution() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..99 {
            h.record(Duration::from_micros(1000));
        }
        h.record(Duration::from_millis(100));
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).unwrap();
        assert!(p50 >= Duration::from_micros(1000) && p50 < Duration::from_micros(1300));
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 < Duration::from_micros(1300), "p99 {p99:?}");
        let max = h.quantile(1.0).unwrap();
        assert!(max >= Duration::from_millis(100) && max < Duration::from_millis(130));
    }

    #[test]
    fn sub_saturates_at_zero() {
        let s = DbStats::default();
        s.queue_depth.store(2, Ordering::Relaxed);
        DbStats::sub(&s.queue_depth, 5);
        assert_eq!(s.snapshot().queue_depth, 0);
        assert!(!s.snapshot().enabled);
    }
}
