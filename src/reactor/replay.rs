//! Paced replay for resuming clients: the reactor's side of [`Session::refill`]. A replaying
//! client is refilled from its session's cursor (event-log backlog, then the ring) each time its
//! socket takes what was queued, up to half its queue limit, so a resume never overflows the
//! queue by itself and memory per resuming client stays bounded by its queue limit.
//!
//! Invariant: nothing is staged while a client refills (a client that turns live here has seen
//! every released event, and a staged one would reach it a second time); see `commit`.
//!
//! [`Session::refill`]: crate::client::session::Session::refill

use super::Reactor;
use super::clients::stream_view;
use crate::server::outbox::Flush;
use std::time::Instant;

/// Write-and-refill rounds per client per turn before yielding to the others.
const MAX_ROUNDS: usize = 64;

impl Reactor {
    /// Refills a replaying client's queue up to half its limit and carries out what its session
    /// decides. Returns false if the client was closed (it fell behind the ring).
    fn refill(&mut self, key: usize, now: Instant) -> bool {
        debug_assert!(!self.subs.has_staged(), "refill with staged events");
        let low = (self.config.limits.client_queue_bytes / 2).max(1);
        let stream = stream_view(&self.pipeline, self.db.is_some());
        let filter = self.subs.get(key);
        let Some((session, outbox)) = self.clients.get_mut(key).and_then(|c| c.session_mut())
        else {
            return false;
        };
        let actions = session.refill(outbox, low, &stream, filter);
        if actions.is_empty() {
            return true;
        }
        self.apply(key, actions, now);
        self.clients.get(key).is_some_and(|c| c.is_open())
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
            let replaying = self
                .clients
                .get(key)?
                .session()
                .is_some_and(|s| !s.takes_live());
            if replaying && !self.refill(key, now) {
                return None;
            }
            let c = self.clients.get_mut(key)?;
            result = c.flush();
            let more = c.session().is_some_and(|s| s.replay_pending());
            if !matches!(result, Ok(Flush::Drained)) || !more {
                return Some(result);
            }
        }
        // Still replaying and the socket keeps up: continue next turn, after the others.
        self.turn.retry_flush.push(key);
        Some(result)
    }
}
