//! The reactor's daemon side: driving each coin's link and RPC pool, enrichment in order,
//! catch-up on every (re)connect, and turning frames into published events.
//!
//! Tokens: daemon `i` owns `DAEMON_BASE + i * DAEMON_STRIDE` for its event link and the next
//! `rpc::pool_shape(DAEMON_LOOKUP_WINDOW).0` tokens for its RPC connections (enrichment lookups are
//! in `lookups`).

use super::{DAEMON_BASE, Reactor, TimerOwner, lookups};
use crate::daemon::catchup::{self, Purpose};
use crate::daemon::decode::{decode_frame, decode_updates};
use crate::daemon::enrich::OrderedQueue;
use crate::daemon::link::{DaemonLink, LinkOutput};
use crate::daemon::lookup::LookupCache;
use crate::daemon::recovery::{CATCHUP_WINDOW, Outcome, Planner, Summary};
use crate::daemon::rpc::{self, RpcDone, RpcPool};
use crate::event::{Event, now_unix};
use mio::{Interest, Token};
use serde_json::json;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

/// Tokens reserved per daemon (1 link + the largest RPC pool).
pub const DAEMON_STRIDE: usize = 512;
const _: () = assert!(1 + rpc::MAX_LOOKUP_CONNECTIONS + rpc::RESERVED <= DAEMON_STRIDE);

/// A daemon link plus what the reactor knows about its coin.
#[derive(Debug)]
pub(super) struct Daemon {
    pub link: DaemonLink,
    pub rpc: RpcPool<Purpose>,
    /// Events in arrival order, some waiting for enrichment.
    pub queue: OrderedQueue,
    /// Recent lookup answers and lookups in flight (cache and coalescing).
    pub lookups: LookupCache,
    /// Wallet keys to load on every (re)connect.
    pub wallets: Vec<String>,
    /// Open payment requests to reconcile on reconnect, by request id.
    pub requests: HashMap<String, catchup::OpenRequest>,
    /// Catch-up calls of the current connection, paced.
    pub plan: Planner,
    /// Highest block height seen for this coin.
    pub height: Option<u64>,
    /// The earliest deadline that has a timer entry (see `schedule_daemon`).
    pub timer_at: Option<Instant>,
    /// Events published for this coin.
    pub events: u64,
    pub last_event_at: Option<f64>,
}

impl Daemon {
    /// A daemon whose pool keeps `window` lookups in flight (plus the catch-up connections).
    pub fn new(link: DaemonLink, rpc_timeout: std::time::Duration, window: usize) -> Daemon {
        let c = &link.config;
        let auth = crate::http::client::basic_auth(&c.login, &c.password);
        Daemon {
            rpc: RpcPool::new(&c.host, c.port, &auth, rpc_timeout, rpc::pool_shape(window)),
            lookups: LookupCache::default(),
            wallets: c.wallets.clone(),
            plan: Planner::new(c.family, CATCHUP_WINDOW),
            link,
            queue: OrderedQueue::default(),
            requests: HashMap::new(),
            height: None,
            timer_at: None,
            events: 0,
            last_event_at: None,
        }
    }

    fn deadline(&self) -> Instant {
        let link = self.link.deadline();
        self.rpc.deadline().map_or(link, |r| r.min(link))
    }
}

impl Reactor {
    pub(super) fn daemon_ready(&mut self, offset: usize, now: Instant) {
        let (i, slot) = (offset / DAEMON_STRIDE, offset % DAEMON_STRIDE);
        let mut out = Vec::new();
        let mut done = Vec::new();
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        if slot == 0 {
            if self.gate.is_full() {
                return self.pause_link(i);
            }
            d.link.on_ready(now, &mut out);
        } else {
            d.rpc.on_ready(slot - 1, &mut done);
        }
        self.daemon_outputs(i, out, now);
        self.rpc_results(i, done);
        if slot != 0 {
            self.rpc_dispatch(i);
        }
    }

    pub(super) fn daemon_timer(&mut self, i: usize, now: Instant) {
        let mut out = Vec::new();
        let mut done = Vec::new();
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        if d.timer_at.is_some_and(|t| t <= now) {
            d.timer_at = None; // this entry fired; `daemon_outputs` schedules the next one
        }
        d.rpc.expire(now, &mut done);
        if now >= d.link.deadline() {
            d.link.on_timer(now, &mut out);
        }
        self.rpc_results(i, done);
        self.daemon_outputs(i, out, now);
        self.rpc_dispatch(i);
    }

    pub(super) fn daemon_resolved(
        &mut self,
        i: usize,
        result: io::Result<SocketAddr>,
        now: Instant,
    ) {
        let mut out = Vec::new();
        if let Some(d) = self.daemons.get_mut(i) {
            d.link.resolved(result, now, &mut out);
        }
        self.daemon_outputs(i, out, now);
    }

    fn daemon_outputs(&mut self, i: usize, outputs: Vec<LinkOutput>, now: Instant) {
        for output in outputs {
            match output {
                LinkOutput::Register => self.register_daemon(i, 0),
                LinkOutput::Resolve(host, port) => self.resolve(i, host, port),
                LinkOutput::Connected => {
                    self.daemon_status(i, true, None);
                    self.log_connected_daemons();
                    self.catch_up(i, now);
                }
                LinkOutput::Disconnected(reason) => {
                    self.link_down(i, &reason);
                    self.daemon_status(i, false, Some(reason));
                    self.log_connected_daemons();
                }
                LinkOutput::Frame(text) => self.daemon_frame(i, &text, now),
                LinkOutput::More => self.daemon_carry.push(i),
            }
        }
        self.schedule_daemon(i);
    }

    /// Makes sure a timer entry exists for the daemon's earliest deadline. An entry is added
    /// only when the deadline moves earlier than the one already scheduled, so a busy link does
    /// not add a heap entry per frame.
    fn schedule_daemon(&mut self, i: usize) {
        if let Some(d) = self.daemons.get_mut(i) {
            let at = d.deadline();
            if d.timer_at.is_none_or(|t| at < t) {
                d.timer_at = Some(at);
                self.timers.schedule(at, TimerOwner::Daemon(i));
            }
        }
    }

    /// Registers the link socket (`slot` 0) or RPC connection `slot - 1`.
    fn register_daemon(&mut self, i: usize, slot: usize) {
        let registry = self.poll.registry();
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        let stream = if slot == 0 {
            d.link.stream()
        } else {
            d.rpc.stream(slot - 1)
        };
        if let Some(stream) = stream {
            let token = Token(DAEMON_BASE + i * DAEMON_STRIDE + slot);
            if let Err(e) =
                registry.register(stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                log::error!("[WORKER] cannot register a daemon socket: {e}");
            }
        }
    }

    /// Resolves a daemon host name on a short-lived thread (never on the reactor).
    fn resolve(&mut self, i: usize, host: String, port: u16) {
        let tx = self.resolved.0.clone();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let result = (host.as_str(), port)
                    .to_socket_addrs()
                    .and_then(|mut addrs| {
                        addrs
                            .next()
                            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
                    });
                let _ = tx.send((i, result));
                let _ = waker.wake();
            });
        if let Err(e) = spawned {
            let _ = self.resolved.0.send((i, Err(e)));
        }
    }

    /// Queues an RPC call for daemon `i` and starts it if a connection is free.
    pub(super) fn rpc_call(
        &mut self,
        i: usize,
        method: &'static str,
        params: serde_json::Value,
        purpose: Purpose,
        now: Instant,
    ) {
        self.rpc_enqueue(i, method, params, purpose, now);
        self.rpc_dispatch(i);
    }

    /// Queues an RPC call for daemon `i` (started by the next [`Reactor::rpc_dispatch`]); a call
    /// the full queue refuses fails at once as overloaded.
    pub(super) fn rpc_enqueue(
        &mut self,
        i: usize,
        method: &'static str,
        params: serde_json::Value,
        purpose: Purpose,
        now: Instant,
    ) {
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        if let Err(purpose) = d.rpc.call(method, params, purpose, now) {
            let failed = RpcDone {
                purpose,
                method,
                result: Err(rpc::CallError::Overloaded),
            };
            self.rpc_results(i, vec![failed]);
        }
    }

    /// Starts queued calls of daemon `i` on free connections (opening them as needed).
    pub(super) fn rpc_dispatch(&mut self, i: usize) {
        let mut registered = Vec::new();
        let mut done = Vec::new();
        if let Some(d) = self.daemons.get_mut(i) {
            let addr = d.link.peer;
            d.rpc.dispatch(addr, &mut registered, &mut done);
        }
        for slot in registered {
            self.register_daemon(i, slot + 1);
        }
        self.rpc_results(i, done);
        self.schedule_daemon(i);
    }

    /// Loads every watched wallet (then drains its `get_updates` queue), reads `getinfo`,
    /// reconciles every open payment request: planned at once, called paced (see `recovery`).
    fn catch_up(&mut self, i: usize, now: Instant) {
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        log::info!(
            "[WORKER] Catching up {}: {} wallets, {} open payment requests",
            d.link.coin,
            d.wallets.len(),
            d.requests.len()
        );
        d.plan.connected(&d.wallets, d.requests.keys(), now);
        self.rpc_call(i, "getinfo", json!({"xpub": null}), Purpose::GetInfo, now);
        self.pump_catchup(i, now);
    }

    /// Starts the catch-up calls the window allows; logs the summary when the catch-up is done.
    pub(super) fn pump_catchup(&mut self, i: usize, now: Instant) {
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        let calls = d.plan.next_calls(&d.requests);
        let finished = d.plan.finished(now);
        let coin = d.link.coin.clone();
        for (method, params, purpose) in calls {
            self.rpc_call(i, method, params, purpose, now);
        }
        if let Some((s, took, after_connect)) = finished {
            log_summary(&coin, &s, took, after_connect);
        }
    }

    /// The link went down: release events held for enrichment, abandon RPC calls.
    fn link_down(&mut self, i: usize, reason: &str) {
        let mut done = Vec::new();
        let mut ready = Vec::new();
        if let Some(d) = self.daemons.get_mut(i) {
            if let Some((s, left)) = d.plan.disconnected() {
                log::warn!(
                    "[WORKER] Catch-up of {} interrupted by the disconnect ({} calls left; all \
                     are made again at the next connect): {}",
                    d.link.coin,
                    left,
                    summary_text(&s)
                );
            }
            d.rpc.reset(reason, &mut done);
        }
        self.rpc_results(i, done);
        if let Some(d) = self.daemons.get_mut(i) {
            d.lookups.clear_answers();
            d.queue.drain_all(&mut ready);
        }
        for ev in ready {
            self.publish(i, ev);
        }
    }

    fn rpc_results(&mut self, i: usize, done: Vec<RpcDone<Purpose>>) {
        if done.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut synthesized = Vec::new();
        let mut recovered = Vec::new();
        for r in done {
            let Some(d) = self.daemons.get_mut(i) else {
                return;
            };
            let coin = d.link.coin.clone();
            match r.purpose {
                Purpose::Enrich(ticket, key) => {
                    lookups::lookup_done(d, &self.metrics, (ticket, &key), &r.result, now);
                }
                Purpose::LoadWallet(w) => {
                    let result = r.result.map(|_| ()).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        log::debug!(
                            "[WORKER] Loading {} on {coin} failed: {e}",
                            catchup::short(&w)
                        );
                    }
                    d.plan.loaded(&w, result);
                }
                Purpose::Drain(w) => match r.result {
                    Ok(list) => recovered.push((w, list)),
                    Err(e) => d.plan.drained(&w, Err(e.to_string())),
                },
                Purpose::GetInfo => match r.result {
                    Ok(v) => {
                        synthesized.extend(catchup::on_getinfo(&coin, d.height, &v));
                        if let Some(h) = v.get("blockchain_height").and_then(|h| h.as_u64()) {
                            // Known from now on, for the next reconnect's catch-up and status.
                            d.height = Some(d.height.map_or(h, |old| old.max(h)));
                        }
                    }
                    Err(e) => log::warn!("[WORKER] getinfo on {coin} failed: {e}"),
                },
                Purpose::Reconcile(id) => {
                    let (ev, outcome) =
                        catchup::on_get_request(&coin, &mut d.requests, &id, r.result);
                    if outcome == Outcome::Gone
                        && let Some(db) = &self.db
                    {
                        db.mark_request_gone(&coin, &id);
                    }
                    d.plan.reconciled(&id, outcome);
                    synthesized.extend(ev);
                }
            }
        }
        for ev in synthesized {
            self.publish(i, ev);
        }
        for (w, list) in recovered {
            self.recover_updates(i, &w, list, now);
        }
        self.release_ready(i);
        self.pump_catchup(i, now);
    }

    /// A wallet's `get_updates` answer: the events not delivered before go out in daemon order,
    /// with `"recovered": true` (enriched like live ones).
    fn recover_updates(&mut self, i: usize, wallet: &str, list: serde_json::Value, now: Instant) {
        let Some(d) = self.daemons.get(i) else {
            return;
        };
        let (coin, family) = (d.link.coin.clone(), d.link.config.family);
        let updates = match list {
            serde_json::Value::Array(updates) => updates,
            _ => {
                self.metrics.inc(&self.metrics.daemon_bad_frames);
                log::warn!(
                    "[WORKER] get_updates of {} on {coin} answered something other than a list",
                    catchup::short(wallet)
                );
                Vec::new()
            }
        };
        let events = decode_updates(updates, Some(wallet), &coin, family).events;
        let fresh: Vec<Event> = events
            .into_iter()
            .map(|ev| ev.with("recovered", json!(true)))
            .filter(|ev| !self.pipeline.dedup.contains(ev))
            .collect();
        if let Some(d) = self.daemons.get_mut(i) {
            d.plan.drained(wallet, Ok(fresh.len() as u64));
        }
        self.accept_events(i, fresh, now);
    }

    /// Publishes the events at the front of daemon `i`'s queue that no longer wait.
    fn release_ready(&mut self, i: usize) {
        let mut ready = Vec::new();
        if let Some(d) = self.daemons.get_mut(i) {
            d.queue.pop_ready(&mut ready);
        }
        for ev in ready {
            self.publish(i, ev);
        }
    }

    fn daemon_frame(&mut self, i: usize, text: &str, now: Instant) {
        let Some(d) = self.daemons.get(i) else {
            return;
        };
        let coin = d.link.coin.clone();
        let family = d.link.config.family;
        let decoded = match decode_frame(text, &coin, family) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.metrics.inc(&self.metrics.daemon_bad_frames);
                log::warn!("[WORKER] Ignored a bad frame from {coin}: {e}");
                return;
            }
        };
        for e in &decoded.skipped {
            self.metrics.inc(&self.metrics.daemon_bad_frames);
            log::warn!("[WORKER] Ignored a bad update from {coin}: {e}");
        }
        self.accept_events(i, decoded.events, now);
        self.release_ready(i);
    }

    /// Sequences an event of daemon `i` and fans it out.
    pub(super) fn publish(&mut self, i: usize, ev: Event) {
        if let Some(d) = self.daemons.get_mut(i) {
            catchup::observe(&ev, &mut d.height, &mut d.requests);
        }
        let Some(p) = self.pipeline.publish(&ev) else {
            self.metrics.inc(&self.metrics.duplicates_dropped);
            return;
        };
        if let Some(d) = self.daemons.get_mut(i) {
            d.events += 1;
            d.last_event_at = Some(p.timestamp);
        }
        self.emit(p);
    }

    /// Stops reading daemon `i` until the durability gate drains (back-pressure; logged once
    /// per pause).
    fn pause_link(&mut self, i: usize) {
        if self.paused_links.contains(&i) {
            return;
        }
        if self.paused_links.is_empty() {
            log::warn!(
                "[WORKER] {} events wait for the database to make them durable; pausing daemon \
                 reads until it catches up",
                self.gate.len()
            );
        }
        self.paused_links.push(i);
    }

    fn daemon_status(&mut self, i: usize, connected: bool, reason: Option<String>) {
        let Some(d) = self.daemons.get(i) else {
            return;
        };
        let mut ev = Event::new(d.link.coin.clone(), "daemon_status", None)
            .with("connected", json!(connected))
            .with("url", json!(d.link.url()))
            .with("network", json!(d.link.config.network));
        if let Some(r) = reason {
            ev = ev.with("reason", json!(r));
        }
        ev = ev.with("at", json!(now_unix()));
        self.publish(i, ev);
    }

    fn log_connected_daemons(&self) {
        let up = self
            .daemons
            .iter()
            .filter(|d| d.link.stats.connected)
            .count();
        log::info!("[WORKER] Connected daemons: {up}/{}", self.daemons.len());
    }
}

/// One line for a finished catch-up: at info level for a (re)connect's and for any that moved,
/// recovered or checked a lot; at debug level for the small quiet ones a new wallet or request
/// starts (an application creating invoices would otherwise log one line each); a failure is a
/// warning either way.
fn log_summary(coin: &str, s: &Summary, took: std::time::Duration, after_connect: bool) {
    let notable = after_connect
        || s.requests_moved + s.requests_gone + s.events_recovered > 0
        || s.requests_reconciled + s.wallets_loaded >= 100;
    let what = if after_connect {
        "Caught up"
    } else {
        "Checked new wallets/requests of"
    };
    let line = format!(
        "[WORKER] {what} {coin} in {:.1} s: {}",
        took.as_secs_f64(),
        summary_text(s)
    );
    if s.failed > 0 {
        log::warn!("{line}");
    } else if notable {
        log::info!("{line}");
    } else {
        log::debug!("{line}");
    }
}

fn summary_text(s: &Summary) -> String {
    let mut text = format!(
        "{} wallets loaded, {} drained ({} events recovered), {} payment requests reconciled \
         ({} moved, {} gone)",
        s.wallets_loaded,
        s.wallets_drained,
        s.events_recovered,
        s.requests_reconciled + s.requests_gone,
        s.requests_moved,
        s.requests_gone
    );
    if s.failed > 0 {
        text.push_str(&format!(
            ", {} failed after retries (first: {})",
            s.failed,
            s.first_error.as_deref().unwrap_or("?")
        ));
    }
    text
}
