//! The sans-io core of one coin: everything the worker decides about a coin's events, with no
//! socket, no timer and no database in sight.
//!
//! The reactor feeds it what happened — the link came up or went down, a frame arrived, an RPC
//! call ended, the database's set of watched wallets or open payment requests changed — with the
//! current `now`, and routes the [`Action`]s it returns: publish an event (always in daemon
//! order), make an RPC call, mark a payment request gone. The core owns the coin's state:
//! the events waiting for enrichment in daemon order (`enrich::OrderedQueue`), the lookup cache
//! (`lookup`), the watched wallets, the open payment requests, the block height, the catch-up
//! planner (`recovery`) and the counters `get_status` shows.
//!
//! Actions go into a buffer the caller owns and reuses (nothing is allocated per event for
//! them); the caller drains it after every call. Answers to the calls come back through
//! [`CoinCore::on_rpc_done`], tagged with the [`Purpose`] the call was made for, in any order:
//! events still leave in daemon order.
//!
//! Invariants: an event is published at most once and in daemon order; every event handed in
//! leaves (enriched, or with its unknown fields null after a failed lookup, or at the latest
//! when the link goes down); every state the catch-up needs (heights, open requests) is observed
//! from the events as they are published.

mod answers;
mod report;
mod sets;

use super::catchup::{self, OpenRequest, Purpose};
use super::decode::decode_frame;
use super::enrich::{self, OrderedQueue};
use super::lookup::{Begin, LookupCache};
use super::recovery::{CATCHUP_WINDOW, Planner};
use crate::config::{CoinConfig, Family};
use crate::event::{Event, now_unix};
use crate::metrics::Metrics;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What the core asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Sequence and fan out this event. Publish actions come in daemon order.
    Publish(Event),
    /// Make this JSON-RPC call (a wallet load is a `getbalance` with [`Purpose::LoadWallet`]);
    /// its end comes back through [`CoinCore::on_rpc_done`] with the same `purpose`.
    Call {
        method: &'static str,
        params: Value,
        purpose: Purpose,
    },
    /// The daemon no longer knows this payment request: mark it gone in the database.
    MarkGone(String),
}

/// The state and policy of one coin.
#[derive(Debug)]
pub struct CoinCore {
    coin: Arc<str>,
    family: Family,
    network: String,
    url: String,
    /// Whether events are enriched (`DAEMON_ENRICH`).
    enrich: bool,
    metrics: Arc<Metrics>,
    /// Events in arrival order, some waiting for enrichment.
    queue: OrderedQueue,
    /// Recent lookup answers and lookups in flight (cache and coalescing).
    lookups: LookupCache,
    /// Wallet keys configured with `{COIN}_WALLETS` (always watched).
    configured: Vec<String>,
    /// Wallet keys to load on every (re)connect.
    wallets: Vec<String>,
    /// Open payment requests to reconcile on reconnect, by request id.
    requests: HashMap<String, OpenRequest>,
    /// Catch-up calls of the current connection, paced.
    plan: Planner,
    connected: bool,
    /// Highest block height seen for this coin.
    height: Option<u64>,
    /// Events of this coin that were sequenced (not duplicates).
    events: u64,
    last_event_at: Option<f64>,
    /// Reused buffer of events leaving the queue.
    ready: Vec<Event>,
}

impl CoinCore {
    /// The core of the coin `config` describes; `height` is the last one known (from the
    /// database), so the first connect can tell whether blocks were missed.
    pub fn new(
        config: &CoinConfig,
        enrich: bool,
        height: Option<u64>,
        metrics: Arc<Metrics>,
    ) -> CoinCore {
        CoinCore {
            coin: config.coin.as_str().into(),
            family: config.family,
            network: config.network.clone(),
            url: format!("ws://{}:{}/ws", config.host, config.port),
            enrich,
            metrics,
            queue: OrderedQueue::default(),
            lookups: LookupCache::default(),
            configured: config.wallets.clone(),
            wallets: config.wallets.clone(),
            requests: HashMap::new(),
            plan: Planner::new(config.family, CATCHUP_WINDOW),
            connected: false,
            height,
            events: 0,
            last_event_at: None,
            ready: Vec::new(),
        }
    }

    /// The coin symbol.
    pub fn coin(&self) -> &Arc<str> {
        &self.coin
    }

    /// Highest block height seen.
    pub fn height(&self) -> Option<u64> {
        self.height
    }

    /// Events of this coin sequenced so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// When the last of them was sequenced (Unix seconds).
    pub fn last_event_at(&self) -> Option<f64> {
        self.last_event_at
    }

    /// Whether this connection's catch-up (wallets loaded and drained, requests reconciled) is
    /// still under way.
    pub fn catching_up(&self) -> bool {
        self.connected && self.plan.in_progress()
    }

    /// Events waiting in the ordered queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The driver sequenced one of this core's events (a duplicate is not reported).
    pub fn published(&mut self, timestamp: f64) {
        self.events += 1;
        self.last_event_at = Some(timestamp);
    }

    /// The link is up: `daemon_status`, then the catch-up — `getinfo`, every wallet loaded and
    /// drained, every open payment request reconciled (planned at once, called paced).
    pub fn on_connected(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.connected = true;
        let status = self.status_event(true, None);
        self.emit(status, out);
        log::info!(
            "[WORKER] Catching up {}: {} wallets, {} open payment requests",
            self.coin,
            self.wallets.len(),
            self.requests.len()
        );
        self.plan
            .connected(&self.wallets, self.requests.keys(), now);
        out.push(Action::Call {
            method: "getinfo",
            params: json!({"xpub": null}),
            purpose: Purpose::GetInfo,
        });
        self.pump_catchup(now, out);
    }

    /// The link went down: the catch-up stops, every held event goes out (those still waiting
    /// for a lookup with their unknown fields null), then `daemon_status`. The calls still in
    /// flight are abandoned by the driver and reported through [`CoinCore::on_rpc_done`] as
    /// failures, which then change nothing.
    pub fn on_disconnected(&mut self, reason: String, out: &mut Vec<Action>) {
        self.connected = false;
        if let Some((s, left)) = self.plan.disconnected() {
            report::interrupted(&self.coin, &s, left);
        }
        self.lookups.clear_answers();
        let mut ready = std::mem::take(&mut self.ready);
        self.queue.drain_all(&mut ready);
        for ev in ready.drain(..) {
            self.emit(ev, out);
        }
        self.ready = ready;
        let status = self.status_event(false, Some(reason));
        self.emit(status, out);
    }

    /// One text frame from the daemon: its events are queued in daemon order, those that need a
    /// lookup wait for it, the rest go out as soon as nothing waits before them.
    pub fn on_frame(&mut self, text: &str, now: Instant, out: &mut Vec<Action>) {
        let decoded = match decode_frame(text, &self.coin, self.family) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.metrics.inc(&self.metrics.daemon_bad_frames);
                log::warn!("[WORKER] Ignored a bad frame from {}: {e}", self.coin);
                return;
            }
        };
        for e in &decoded.skipped {
            self.metrics.inc(&self.metrics.daemon_bad_frames);
            log::warn!("[WORKER] Ignored a bad update from {}: {e}", self.coin);
        }
        self.accept(decoded.events, now, out);
        self.release_ready(out);
    }

    /// Queues events in order; those that need a lookup wait for it (answered from the cache,
    /// joined to the call in flight for the same transaction, or given a call).
    fn accept(&mut self, events: Vec<Event>, now: Instant, out: &mut Vec<Action>) {
        let (mut hits, mut joined, mut calls) = (0, 0, 0);
        for ev in events {
            let key = if self.enrich {
                enrich::lookup_for(&ev, self.family)
            } else {
                None
            };
            let Some(key) = key else {
                self.queue.push_ready(ev);
                continue;
            };
            let ticket = self.queue.push_waiting(ev);
            match self.lookups.begin(&key, ticket, now) {
                Begin::Cached(found) => {
                    hits += 1;
                    self.queue.complete(ticket, |ev| enrich::fill(ev, &found));
                }
                Begin::Joined => joined += 1,
                Begin::Call { .. } => {
                    calls += 1;
                    out.push(Action::Call {
                        method: key.method,
                        params: key.params(),
                        purpose: Purpose::Enrich(ticket, key),
                    });
                }
            }
        }
        let m = &self.metrics;
        m.lookup_cache_hits.fetch_add(hits, Ordering::Relaxed);
        m.lookups_coalesced.fetch_add(joined, Ordering::Relaxed);
        m.lookups.fetch_add(calls, Ordering::Relaxed);
    }

    /// Publishes the events at the front of the queue that no longer wait.
    fn release_ready(&mut self, out: &mut Vec<Action>) {
        let mut ready = std::mem::take(&mut self.ready);
        self.queue.pop_ready(&mut ready);
        for ev in ready.drain(..) {
            self.emit(ev, out);
        }
        self.ready = ready;
    }

    /// Hands an event out, noting the heights and open requests it tells of.
    fn emit(&mut self, ev: Event, out: &mut Vec<Action>) {
        catchup::observe(&ev, &mut self.height, &mut self.requests);
        out.push(Action::Publish(ev));
    }

    /// Asks for the catch-up calls the window allows; logs the summary when the catch-up is done.
    fn pump_catchup(&mut self, now: Instant, out: &mut Vec<Action>) {
        for (method, params, purpose) in self.plan.next_calls(&self.requests) {
            out.push(Action::Call {
                method,
                params,
                purpose,
            });
        }
        if let Some((s, took, after_connect)) = self.plan.finished(now) {
            report::finished(&self.coin, &s, took, after_connect);
        }
    }

    fn status_event(&self, connected: bool, reason: Option<String>) -> Event {
        let mut ev = Event::new(self.coin.clone(), "daemon_status", None)
            .with("connected", json!(connected))
            .with("url", json!(self.url))
            .with("network", json!(self.network));
        if let Some(r) = reason {
            ev = ev.with("reason", json!(r));
        }
        ev.with("at", json!(now_unix()))
    }
}

#[cfg(test)]
mod tests;
