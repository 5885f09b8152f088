//! Sans-io cache and coalescing of one daemon's enrichment lookups.
//!
//! The same transaction often arrives more than once in a short time: for several watched
//! wallets (one `new_transaction` per wallet), and again when a frame and a `get_updates` read
//! carry it. [`LookupCache::begin`] answers such a lookup from a recent answer, or lets it wait for
//! the call already in flight for that (method, tx) instead of making a second one;
//! [`LookupCache::finish`] hands the answer to every event that waited for it.
//!
//! Why the answers live only [`TTL`] (2 s): `confirmations` changes with every block, and an
//! answer is only worth reusing for the burst of duplicates that one daemon update produces. Two
//! seconds is far below a block interval on every supported chain, so a cached answer is never
//! older than the delays the daemon itself adds; a failed lookup is never cached (the next event
//! asks again).
//!
//! Invariants: at most `capacity` entries (answered plus in flight); when every entry is a call in
//! flight a new lookup is simply made uncoalesced ([`Begin::Call`] with `tracked == false`), so
//! the cache never refuses work; an answer with more than [`MAX_CACHED_OUTPUTS`] outputs is not
//! kept; every ticket handed to `begin` comes back exactly once, from `begin` (hit) or `finish`.

use super::enrich::{Found, LookupKey};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an answer is reused (see the module doc for why it is short).
pub const TTL: Duration = Duration::from_secs(2);
/// Entries per daemon (answered and in flight).
pub const CAPACITY: usize = 4096;
/// Answers with more outputs than this are used once and not kept (bounds the cache's memory).
pub const MAX_CACHED_OUTPUTS: usize = 64;

/// What to do with a new lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// Answered from the cache: fill the event now.
    Cached(Arc<Found>),
    /// A call for the same key is in flight: the ticket completes with it.
    Joined,
    /// Make the call. `tracked`: later lookups of the key join it (false when the cache is full
    /// of calls in flight).
    Call { tracked: bool },
}

#[derive(Debug)]
enum Entry {
    Answered { found: Arc<Found>, at: Instant },
    InFlight { owner: u64, waiters: Vec<u64> },
}

/// One daemon's recent lookup answers and calls in flight.
#[derive(Debug)]
pub struct LookupCache {
    entries: HashMap<LookupKey, Entry>,
    /// Answered keys, oldest first (an entry answered again is listed again; stale listings are
    /// skipped by comparing the time).
    order: VecDeque<(LookupKey, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl Default for LookupCache {
    fn default() -> Self {
        LookupCache::new(CAPACITY, TTL)
    }
}

impl LookupCache {
    /// A cache of at most `capacity` entries keeping answers for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> LookupCache {
        LookupCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// A lookup of `key` for the event with `ticket`.
    pub fn begin(&mut self, key: &LookupKey, ticket: u64, now: Instant) -> Begin {
        self.expire(now);
        match self.entries.get_mut(key) {
            Some(Entry::Answered { found, .. }) => return Begin::Cached(found.clone()),
            Some(Entry::InFlight { waiters, .. }) => {
                waiters.push(ticket);
                return Begin::Joined;
            }
            None => {}
        }
        if !self.make_room() {
            return Begin::Call { tracked: false };
        }
        let entry = Entry::InFlight {
            owner: ticket,
            waiters: Vec::new(),
        };
        self.entries.insert(key.clone(), entry);
        Begin::Call { tracked: true }
    }

    /// The call made for `owner`'s lookup of `key` ended (`found` is `None` on failure). Returns
    /// what was found and every ticket to complete with it: `owner` first, then those that
    /// joined, in the order they joined.
    pub fn finish(
        &mut self,
        key: &LookupKey,
        owner: u64,
        found: Option<Found>,
        now: Instant,
    ) -> (Option<Arc<Found>>, Vec<u64>) {
        let found = found.map(Arc::new);
        let mut tickets = vec![owner];
        let ours =
            matches!(self.entries.get(key), Some(Entry::InFlight { owner: o, .. }) if *o == owner);
        if !ours {
            return (found, tickets); // an untracked call
        }
        if let Some(Entry::InFlight { waiters, .. }) = self.entries.remove(key) {
            tickets.extend(waiters);
        }
        if let Some(f) = &found
            && f.outputs_len() <= MAX_CACHED_OUTPUTS
        {
            let entry = Entry::Answered {
                found: f.clone(),
                at: now,
            };
            self.entries.insert(key.clone(), entry);
            self.order.push_back((key.clone(), now));
        }
        (found, tickets)
    }

    /// Forgets every answer (the daemon reconnected: it may be another node now). Calls in
    /// flight stay tracked until they finish.
    pub fn clear_answers(&mut self) {
        self.entries
            .retain(|_, e| matches!(e, Entry::InFlight { .. }));
        self.order.clear();
    }

    /// Entries held (answered and in flight).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops answers older than the TTL.
    fn expire(&mut self, now: Instant) {
        while let Some((_, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Evicts the oldest answers until there is room for one entry; false if every entry is a
    /// call in flight.
    fn make_room(&mut self) -> bool {
        while self.entries.len() >= self.capacity {
            if self.order.is_empty() {
                return false;
            }
            self.pop_oldest();
        }
        true
    }

    /// Removes the oldest listed answer, if the listing is still current.
    fn pop_oldest(&mut self) {
        let Some((key, at)) = self.order.pop_front() else {
            return;
        };
        if matches!(self.entries.get(&key), Some(Entry::Answered { at: a, .. }) if *a == at) {
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests;
