//! The reactor's enrichment lookups: every event of a frame (or of a `get_updates` answer) that
//! needs one is queued in daemon order at once, answered from the daemon's cache, joined to the
//! call in flight for the same (method, tx), or given a call; all the calls go to the RPC pool
//! together, which keeps up to `DAEMON_LOOKUP_WINDOW` in flight and queues the rest (bounded by
//! `rpc::MAX_QUEUED`; beyond it a lookup fails at once as overloaded and its event goes out with
//! the unknown fields null, counted in `cryptoworker_lookups_overloaded_total`).
//!
//! Events still leave in daemon order (`enrich::OrderedQueue`), released as the answers at the
//! front arrive; the reactor commits everything released in one turn as one batch per group.

use super::Reactor;
use super::daemons::Daemon;
use crate::daemon::catchup::Purpose;
use crate::daemon::enrich::{self, Found, LookupKey};
use crate::daemon::lookup::Begin;
use crate::daemon::rpc::CallError;
use crate::event::Event;
use crate::metrics::Metrics;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Reactor {
    /// Queues daemon events in order; those that need a lookup wait for it. The calls are made
    /// together, after the whole list is queued.
    pub(super) fn accept_events(&mut self, i: usize, events: Vec<Event>, now: Instant) {
        let enrich = self.config.daemon_enrich;
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        let family = d.link.config.family;
        let mut calls = Vec::new();
        let (mut hits, mut joined) = (0, 0);
        for ev in events {
            let Some(key) = enrich.then(|| enrich::lookup_for(&ev, family)).flatten() else {
                d.queue.push_ready(ev);
                continue;
            };
            let ticket = d.queue.push_waiting(ev);
            match d.lookups.begin(&key, ticket, now) {
                Begin::Cached(found) => {
                    hits += 1;
                    d.queue.complete(ticket, |ev| enrich::fill(ev, &found));
                }
                Begin::Joined => joined += 1,
                Begin::Call { .. } => calls.push((ticket, key)),
            }
        }
        let m = &self.metrics;
        m.lookup_cache_hits.fetch_add(hits, Ordering::Relaxed);
        m.lookups_coalesced.fetch_add(joined, Ordering::Relaxed);
        m.lookups.fetch_add(calls.len() as u64, Ordering::Relaxed);
        if calls.is_empty() {
            return;
        }
        for (ticket, key) in calls {
            let (method, params) = (key.method, key.params());
            self.rpc_enqueue(i, method, params, Purpose::Enrich(ticket, key), now);
        }
        self.rpc_dispatch(i);
    }
}

/// A lookup's call ended: fills the event that made it and every event that joined it (a
/// failure fills nothing: the unknown fields stay null), and counts failures.
pub(super) fn lookup_done(
    d: &mut Daemon,
    metrics: &Metrics,
    (ticket, key): (u64, &LookupKey),
    result: &Result<Value, CallError>,
    now: Instant,
) {
    let family = d.link.config.family;
    let found = match result {
        Ok(v) => Some(Found::from_answer(v, family)),
        Err(e) => {
            let counter = match e {
                CallError::Overloaded => &metrics.lookups_overloaded,
                _ => &metrics.lookups_failed,
            };
            metrics.inc(counter);
            log::debug!(
                "[WORKER] {} {} failed: {e}; event goes out with unknown fields null",
                d.link.coin,
                key.method
            );
            None
        }
    };
    let (found, tickets) = d.lookups.finish(key, ticket, found, now);
    for t in tickets {
        d.queue.complete(t, |ev| {
            if let Some(f) = &found {
                enrich::fill(ev, f);
            }
        });
    }
}
