//! Paced replay for resuming clients: missed events are queued as the client drains its
//! outbound queue, from the event-log backlog first, then from the ring, until the client has
//! caught up with the live stream. A resume therefore never overflows the queue by itself (a
//! client closed with 4008 can always come back with `since`), and memory per resuming client
//! stays bounded by its queue limit.
//!
//! Invariant: a client with a [`Replay`] is skipped by the fan-out; the ring holds every event
//! from `next_seq` on (else the client fell too far behind and is closed with 4008), so the
//! switch back to live delivery has no gap and no duplicate.

use super::Reactor;
use crate::server::conn::Replay;
use crate::server::outbox::Flush;
use std::time::Instant;

/// Write-and-refill rounds per client per turn before yielding to the others.
const MAX_ROUNDS: usize = 64;

impl Reactor {
    /// Starts replaying from `next_seq` (and `backlog`, if given) for client `key`.
    pub(super) fn start_replay(&mut self, key: usize, replay: Replay) {
        if let Some(c) = self.clients.get_mut(key) {
            c.replay = Some(Box::new(replay));
        }
        self.mark_dirty(key);
    }

    /// Refills a replaying client's queue up to half its limit. Returns false if the client had
    /// to be closed (it fell behind the ring).
    fn refill(&mut self, key: usize, now: Instant) -> bool {
        // Nothing may be staged: a client that turns live here has seen every event up to
        // `last_seq`, and a staged event would reach it a second time.
        debug_assert!(!self.subs.has_staged(), "refill with staged events");
        let low = (self.config.limits.client_queue_bytes / 2).max(1);
        let last = self.pipeline.last_seq;
        let Some(c) = self.clients.get_mut(key) else {
            return false;
        };
        let (Some(r), Some(filter)) = (c.replay.as_mut(), self.subs.get(key)) else {
            c.replay = None;
            return true;
        };
        if r.waiting_query.is_some() {
            return true;
        }
        while c.outbox.queued_bytes() < low {
            if let Some(p) = r.backlog.pop_front() {
                c.outbox.push_event(p);
                continue;
            }
            if r.next_seq > last {
                c.replay = None; // caught up: live from here
                return true;
            }
            let Ok(events) = self.pipeline.ring.since(r.next_seq - 1) else {
                let after = r.next_seq - 1;
                return self.fell_behind_ring(key, after, now);
            };
            for p in events {
                r.next_seq = p.seq + 1;
                if filter.matches(&p.meta) {
                    c.outbox.push_event(p.clone());
                    if c.outbox.queued_bytes() >= low {
                        break;
                    }
                }
            }
        }
        true
    }

    /// The ring no longer holds what a replaying client needs next: continue from the event
    /// log when there is one, else close with 4008 (the client may resume again).
    fn fell_behind_ring(&mut self, key: usize, after: u64, now: Instant) -> bool {
        let filter = self.subs.get(key).cloned();
        let first = self.pipeline.ring.first_seq();
        if let (Some(filter), Some(first), true) = (filter, first, self.db.is_some())
            && first > after + 1
        {
            self.continue_from_db(key, filter, after, first - 1);
            return true;
        }
        self.metrics.inc(&self.metrics.slow_consumer_closes);
        log::warn!("[WORKER] Client {key} fell behind the resume ring; closing with 4008");
        self.close_client(key, 4008, "slow consumer", now);
        false
    }

    /// Flushes a client, refilling it from its replay while the socket takes everything.
    /// Returns the flush outcome, or `None` when the connection is gone.
    pub(super) fn flush_client(
        &mut self,
        key: usize,
        now: Instant,
    ) -> Option<std::io::Result<Flush>> {
        let mut result = Ok(Flush::Drained);
        for _ in 0..MAX_ROUNDS {
            let replaying = self.clients.get(key)?.replay.is_some();
            if replaying && !self.refill(key, now) {
                return None;
            }
            let c = self.clients.get_mut(key)?;
            result = c.flush();
            let more = c.replay.as_ref().is_some_and(|r| r.waiting_query.is_none());
            if !matches!(result, Ok(Flush::Drained)) || !more {
                return Some(result);
            }
        }
        // Still replaying and the socket keeps up: continue next turn, after the others.
        self.retry_flush.push(key);
        Some(result)
    }
}
