//! The reactor's one timer structure: a min-heap of deadlines.
//!
//! Timers are never removed eagerly. Each entry names its owner and the owner checks, when the
//! entry fires, whether the deadline still applies (lazy cancellation by generation: a reused slab
//! slot has a new generation, so a stale entry for its predecessor is ignored). The poll timeout is
//! the earliest deadline.
//!
//! Memory: a burst of connections grows the heap by one entry per connection; once they have
//! fired and the heap is mostly empty its buffer is shrunk (never below [`KEEP_CAPACITY`]), so a
//! burst does not pin its peak for the life of the process.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Entries whose buffer is always kept (a shrink never goes below this).
pub const KEEP_CAPACITY: usize = 1024;

/// A min-heap of `(deadline, owner)` entries; `T` identifies the owner.
#[derive(Debug)]
pub struct Timers<T: Ord> {
    heap: BinaryHeap<Reverse<(Instant, T)>>,
}

impl<T: Ord + Copy> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
        }
    }
}

impl<T: Ord + Copy> Timers<T> {
    /// Schedules `owner` to be woken at `at`.
    pub fn schedule(&mut self, at: Instant, owner: T) {
        self.heap.push(Reverse((at, owner)));
    }

    /// How long the poll may sleep: until the earliest deadline (zero when one has passed), or
    /// `None` when there is no timer.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// Pops every owner whose deadline is `<= now` into `out`.
    pub fn expired(&mut self, now: Instant, out: &mut Vec<T>) {
        while let Some(Reverse((at, owner))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            out.push(owner);
        }
        self.shrink_if_sparse();
    }

    /// Gives back the buffer of a heap that is less than a quarter full (after a burst), keeping
    /// room for twice the current entries.
    fn shrink_if_sparse(&mut self) {
        let cap = self.heap.capacity();
        if cap > KEEP_CAPACITY && self.heap.len() < cap / 4 {
            self.heap
                .shrink_to((self.heap.len() * 2).max(KEEP_CAPACITY));
        }
    }

    /// Entries the heap's buffer can hold without growing.
    pub fn capacity(&self) -> usize {
        self.heap.capacity()
    }

    /// Number of pending entries (including stale ones).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// A fixed offset in `[0, interval / 4)` for connection `key`, so that connections accepted
/// together (thousands in a second) do not all reach their idle ping in the same turn. Slab keys
/// are dense, so they are spread with a multiplicative hash.
pub fn spread(key: usize, interval: Duration) -> Duration {
    let slot = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56; // 0..=255
    interval * slot as u32 / 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_under_a_quarter_and_spreads_neighbouring_keys() {
        let interval = Duration::from_secs(30);
        let offsets: Vec<Duration> = (0..1000).map(|k| spread(k, interval)).collect();
        assert!(offsets.iter().all(|d| *d < interval / 4));
        let mut buckets = [0usize; 8]; // eighths of the quarter interval
        for d in &offsets {
            buckets[(d.as_nanos() * 32 / interval.as_nanos()) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (80..=170).contains(&n)),
            "1,000 consecutive keys should spread evenly: {buckets:?}"
        );
        assert_eq!(spread(7, interval), spread(7, interval), "fixed per key");
        assert_eq!(spread(7, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_burst_of_timers_gives_its_memory_back_once_fired() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for k in 0..20_000u32 {
            timers.schedule(t0 + Duration::from_millis(u64::from(k % 100)), k);
        }
        assert!(timers.capacity() >= 20_000);
        timers.schedule(t0 + Duration::from_secs(60), u32::MAX); // a long-lived one stays
        let mut out = Vec::new();
        timers.expired(t0 + Duration::from_secs(1), &mut out);
        assert_eq!((out.len(), timers.len()), (20_000, 1));
        assert!(
            timers.capacity() <= 2 * KEEP_CAPACITY,
            "capacity {} kept after the burst",
            timers.capacity()
        );
        assert_eq!(timers.timeout(t0), Some(Duration::from_secs(60)));
    }

    #[test]
    fn fires_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_millis(30), 3u32);
        timers.schedule(t0 + Duration::from_millis(10), 1u32);
        timers.schedule(t0 + Duration::from_millis(20), 2u32);
        assert_eq!(timers.timeout(t0), Some(Duration::from_millis(10)));
        let mut out = Vec::new();
        timers.expired(t0 + Duration::from_millis(5), &mut out);
        assert!(out.is_empty());
        timers.expired(t0 + Duration::from_millis(20), &mut out);
        assert_eq!(out, vec![1, 2]);
        assert_eq!(timers.len(), 1);
        assert_eq!(
            timers.timeout(t0 + Duration::from_millis(40)),
            Some(Duration::ZERO)
        );
    }
}
