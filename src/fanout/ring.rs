//! Bounded in-memory history of published events, for resume (docs/protocol.md, "Resume").
//!
//! Invariants: the ring holds at most `capacity` events; the events it holds have consecutive
//! sequence numbers `base+1 ..= base+len` of one epoch. Pushing an event that breaks this (a
//! gap, a repeat, another epoch) starts the history afresh after that event's predecessor, so a
//! replay from the ring is always complete or refused, never silently gappy.
//!
//! A fresh ring expects sequence 1 next; a worker resuming an epoch from the database starts it
//! with [`Ring::starting_after`] so that older sequence numbers are reported as not held (and
//! read from the database) rather than as an empty replay.

use crate::event::Published;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// Why a replay cannot come from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotHeld {
    /// The oldest sequence number held (the next one to be assigned when the ring is empty):
    /// events before it must come from elsewhere.
    pub first_seq: u64,
    /// The last sequence number held (or assigned before the ring started). A `since` above it
    /// is "beyond the last sequence number": no source can replay it.
    pub last_seq: u64,
}

impl NotHeld {
    /// Whether the requested position is after the last event ever assigned.
    pub fn is_beyond(&self, since: u64) -> bool {
        since > self.last_seq
    }
}

impl fmt::Display for NotHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "events held in memory are {}..={}",
            self.first_seq, self.last_seq
        )
    }
}

impl std::error::Error for NotHeld {}

/// The last `capacity` published events.
#[derive(Debug)]
pub struct Ring {
    /// Held events, oldest first, consecutive seqs.
    buf: VecDeque<Arc<Published>>,
    /// Most events held.
    capacity: usize,
    /// Sequence number just before the oldest held event (the last assigned when empty).
    base: u64,
}

impl Ring {
    /// An empty ring expecting sequence number 1 next.
    pub fn new(capacity: usize) -> Ring {
        Ring::starting_after(capacity, 0)
    }

    /// An empty ring whose epoch already assigned sequence numbers up to `last_seq`.
    pub fn starting_after(capacity: usize, last_seq: u64) -> Ring {
        Ring {
            buf: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            base: last_seq,
        }
    }

    /// Appends the next event, evicting the oldest when full. Sequence numbers are expected to
    /// increase by one within one epoch; otherwise the history restarts (see module docs).
    pub fn push(&mut self, ev: Arc<Published>) {
        let expected = self.base + self.buf.len() as u64 + 1;
        let same_epoch = self.buf.front().is_none_or(|f| f.epoch == ev.epoch);
        if ev.seq != expected || !same_epoch {
            log::warn!(
                "[FANOUT] Replay history restarted: got seq {} (epoch {}), expected {expected}",
                ev.seq,
                ev.epoch
            );
            self.buf.clear();
            self.base = ev.seq.saturating_sub(1);
        }
        if self.capacity == 0 {
            self.base = ev.seq;
            return;
        }
        if self.buf.len() == self.capacity {
            self.buf.pop_front();
            self.base += 1;
        }
        self.buf.push_back(ev);
    }

    /// Oldest held sequence number.
    pub fn first_seq(&self) -> Option<u64> {
        self.buf.front().map(|e| e.seq)
    }

    /// Newest held sequence number.
    pub fn last_seq(&self) -> Option<u64> {
        self.buf.back().map(|e| e.seq)
    }

    /// Events with seq > `since`, oldest first, if the ring holds all of them
    /// (`first_seq - 1 <= since <= last_seq`); `since == last_seq` gives an empty replay.
    pub fn since(&self, since: u64) -> Result<impl Iterator<Item = &Arc<Published>>, NotHeld> {
        let last = self.base + self.buf.len() as u64;
        if since < self.base || since > last {
            return Err(NotHeld {
                first_seq: self.base + 1,
                last_seq: last,
            });
        }
        // since - base <= len, so this fits in usize.
        let skip = (since - self.base) as usize;
        Ok(self.buf.range(skip..))
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn ev(epoch: &str, seq: u64) -> Arc<Published> {
        let e = Event::new("BTC".into(), "new_block", None);
        Arc::new(Published::new(epoch.into(), seq, &e, 1.0))
    }

    fn seqs(r: &Ring, since: u64) -> Result<Vec<u64>, NotHeld> {
        r.since(since).map(|it| it.map(|e| e.seq).collect())
    }

    #[test]
    fn empty_ring() {
        let r = Ring::new(3);
        assert_eq!((r.first_seq(), r.last_seq(), r.len()), (None, None, 0));
        assert_eq!(seqs(&r, 0), Ok(vec![]));
        let e = seqs(&r, 1).unwrap_err();
        assert!(e.is_beyond(1));
    }

    #[test]
    fn replays_and_evicts() {
        let mut r = Ring::new(3);
        for s in 1..=5 {
            r.push(ev("e", s));
        }
        assert_eq!(
            (r.first_seq(), r.last_seq(), r.len()),
            (Some(3), Some(5), 3)
        );
        assert_eq!(seqs(&r, 2), Ok(vec![3, 4, 5]));
        assert_eq!(seqs(&r, 4), Ok(vec![5]));
        assert_eq!(seqs(&r, 5), Ok(vec![]));
        let old = seqs(&r, 1).unwrap_err();
        assert_eq!(
            old,
            NotHeld {
                first_seq: 3,
                last_seq: 5
            }
        );
        assert!(!old.is_beyond(1));
        assert!(seqs(&r, 6).unwrap_err().is_beyond(6));
    }

    #[test]
    fn starting_after_a_database_epoch() {
        let mut r = Ring::starting_after(10, 5000);
        assert_eq!(seqs(&r, 5000), Ok(vec![]));
        assert_eq!(seqs(&r, 100).unwrap_err().first_seq, 5001);
        r.push(ev("e", 5001));
        assert_eq!(seqs(&r, 5000), Ok(vec![5001]));
    }

    #[test]
    fn gaps_and_epoch_changes_restart_the_history() {
        let mut r = Ring::new(10);
        r.push(ev("e", 1));
        r.push(ev("e", 2));
        r.push(ev("e", 7));
        assert_eq!(seqs(&r, 6), Ok(vec![7]));
        assert!(seqs(&r, 2).is_err(), "3..=6 were never held");
        r.push(ev("f", 8));
        assert_eq!(r.len(), 1);
        assert!(seqs(&r, 6).is_err(), "7 belongs to another epoch");
    }

    #[test]
    fn zero_capacity_holds_nothing_but_tracks_the_sequence() {
        let mut r = Ring::new(0);
        r.push(ev("e", 1));
        r.push(ev("e", 2));
        assert_eq!(r.len(), 0);
        assert_eq!(seqs(&r, 2), Ok(vec![]));
        assert_eq!(
            seqs(&r, 1).unwrap_err(),
            NotHeld {
                first_seq: 3,
                last_seq: 2
            }
        );
    }
}
