//! The durability gate: with a database, sequenced events wait here until the persistence
//! threads report them durable (committed to PostgreSQL, or `fsync`ed to the spool), and only
//! then reach clients, the ring and the handlers. So an event a client has seen is in the event
//! log after any crash, under the seq it had, and a restart never gives that seq to another
//! event (the restart continues after the highest durable seq).
//!
//! Sans-io: the reactor hands the gate a submit function (the database intake, which may be
//! full) and the current durable seq; the gate keeps order and says what to release.
//!
//! Invariants: events leave in seq order; an event is released only after it was accepted by
//! the database intake and its seq is at or below the durable seq; an event held to be stored
//! only ([`Gate::hold_store_only`]: a new cluster leader storing what the old one had already
//! published) is stored in the same order but never released; the gate holds at most
//! [`Gate::limit`] events before the reactor stops reading daemons (back-pressure) — it never
//! drops one.

use crate::event::Published;
use std::collections::VecDeque;
use std::sync::Arc;

/// Sequenced events waiting to become durable.
#[derive(Debug)]
pub struct Gate {
    /// Events in seq order, each with whether it is released once durable (else stored only);
    /// the first `submitted` of them were accepted by the database intake.
    held: VecDeque<(Arc<Published>, bool)>,
    submitted: usize,
    /// Held events at which the reactor pauses reading daemon links.
    limit: usize,
}

impl Gate {
    /// A gate that asks for back-pressure at `limit` held events.
    pub fn new(limit: usize) -> Gate {
        Gate {
            held: VecDeque::new(),
            submitted: 0,
            limit: limit.max(1),
        }
    }

    /// Holds a newly sequenced event (to be submitted by [`Gate::submit`], released by
    /// [`Gate::release`] once durable).
    pub fn hold(&mut self, p: Arc<Published>) {
        self.held.push_back((p, true));
    }

    /// Holds an event to be stored in order with the others but never released: clients already
    /// had it from elsewhere (the stream, when a new cluster leader stores the old leader's
    /// published but unstored events).
    pub fn hold_store_only(&mut self, p: Arc<Published>) {
        self.held.push_back((p, false));
    }

    /// Offers the events not yet accepted to `try_submit`, in order, until it refuses one.
    /// Returns whether every held event is now submitted.
    pub fn submit(&mut self, mut try_submit: impl FnMut(&Arc<Published>) -> bool) -> bool {
        while let Some((p, _)) = self.held.get(self.submitted) {
            if !try_submit(p) {
                return false;
            }
            self.submitted += 1;
        }
        true
    }

    /// Moves every submitted event with `seq <= durable` to `out`, in order; store-only events
    /// leave the gate without going to `out`.
    pub fn release(&mut self, durable: u64, out: &mut Vec<Arc<Published>>) {
        while self.submitted > 0 && self.held.front().is_some_and(|(p, _)| p.seq <= durable) {
            if let Some((p, publish)) = self.held.pop_front() {
                if publish {
                    out.push(p);
                }
                self.submitted -= 1;
            }
        }
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Events held but not yet accepted by the database intake.
    pub fn unsubmitted(&self) -> usize {
        self.held.len() - self.submitted
    }

    /// True when the reactor should stop reading daemons until the gate drains.
    pub fn is_full(&self) -> bool {
        self.held.len() >= self.limit
    }

    /// True when paused daemons may be read again (below half the limit).
    pub fn has_room(&self) -> bool {
        self.held.len() < self.limit.div_ceil(2)
    }

    /// The back-pressure limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Forgets the events the database intake has not accepted yet (a cluster node that stopped
    /// leading must not store events it sequenced: its successor numbers from what is stored);
    /// returns how many.
    pub fn drop_unsubmitted(&mut self) -> usize {
        let dropped = self.unsubmitted();
        self.held.truncate(self.submitted);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn ev(seq: u64) -> Arc<Published> {
        let e = Event::new("BTC".into(), "new_block", None);
        Arc::new(Published::new("e".into(), seq, &e, 0.0))
    }

    fn seqs(v: &[Arc<Published>]) -> Vec<u64> {
        v.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn dropping_the_unsubmitted_keeps_the_submitted() {
        let mut g = Gate::new(100);
        for seq in 1..=5 {
            g.hold(ev(seq));
        }
        let mut offered = 0;
        g.submit(|_| {
            offered += 1;
            offered <= 2
        });
        assert_eq!(g.drop_unsubmitted(), 3);
        assert_eq!((g.len(), g.unsubmitted()), (2, 0));
        let mut out = Vec::new();
        g.release(5, &mut out);
        assert_eq!(seqs(&out), [1, 2]);
    }

    #[test]
    fn nothing_leaves_before_it_is_durable() {
        let mut g = Gate::new(100);
        for seq in 1..=4 {
            g.hold(ev(seq));
        }
        assert!(g.submit(|_| true));
        let mut out = Vec::new();
        g.release(0, &mut out);
        assert!(out.is_empty());
        g.release(2, &mut out);
        assert_eq!(seqs(&out), [1, 2]);
        g.release(4, &mut out);
        assert_eq!(seqs(&out), [1, 2, 3, 4]);
        assert!(g.is_empty());
    }

    #[test]
    fn an_event_the_intake_refused_is_not_released_and_is_offered_again_in_order() {
        let mut g = Gate::new(100);
        for seq in 1..=3 {
            g.hold(ev(seq));
        }
        let mut accepted = Vec::new();
        let full = g.submit(|p| {
            if p.seq == 2 {
                return false;
            }
            accepted.push(p.seq);
            true
        });
        assert!(!full);
        assert_eq!(accepted, [1]);
        assert_eq!(g.unsubmitted(), 2);
        let mut out = Vec::new();
        // A durable seq beyond what was submitted (cannot happen, but must not leak events).
        g.release(3, &mut out);
        assert_eq!(seqs(&out), [1]);
        assert!(g.submit(|p| {
            accepted.push(p.seq);
            true
        }));
        assert_eq!(accepted, [1, 2, 3]);
        g.release(3, &mut out);
        assert_eq!(seqs(&out), [1, 2, 3]);
    }

    #[test]
    fn store_only_events_are_submitted_in_order_and_never_released() {
        let mut g = Gate::new(100);
        for seq in 1..=3 {
            g.hold_store_only(ev(seq));
        }
        for seq in 4..=5 {
            g.hold(ev(seq));
        }
        let mut submitted = Vec::new();
        assert!(g.submit(|p| {
            submitted.push(p.seq);
            true
        }));
        assert_eq!(submitted, [1, 2, 3, 4, 5], "stored first, in seq order");
        let mut out = Vec::new();
        g.release(3, &mut out);
        assert!(out.is_empty(), "durable, but clients had them already");
        assert_eq!(g.len(), 2);
        g.release(5, &mut out);
        assert_eq!(seqs(&out), [4, 5]);
        assert!(g.is_empty());
    }

    #[test]
    fn back_pressure_starts_at_the_limit_and_ends_below_half() {
        let mut g = Gate::new(4);
        for seq in 1..=4 {
            g.hold(ev(seq));
        }
        assert!(g.is_full());
        assert!(!g.has_room());
        g.submit(|_| true);
        let mut out = Vec::new();
        g.release(2, &mut out);
        assert!(!g.is_full());
        assert!(!g.has_room(), "still at half");
        g.release(3, &mut out);
        assert!(g.has_room());
    }
}
