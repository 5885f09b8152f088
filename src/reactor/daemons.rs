//! The reactor's daemon side: each coin's event link and RPC pool — sockets, tokens, timers,
//! the resolver — around the coin's sans-io core (`daemon::core`), whose actions it routes.
//!
//! Tokens: daemon `i` owns `DAEMON_BASE + i * DAEMON_STRIDE` for its event link and the next
//! `rpc::pool_shape(DAEMON_LOOKUP_WINDOW).0` tokens for its RPC connections.

use super::source::EventSource;
use super::{DAEMON_BASE, Reactor, Resolved, TimerOwner};
use crate::config::Config;
use crate::daemon::catchup::Purpose;
use crate::daemon::core::{Action, CoinCore};
use crate::daemon::link::{DaemonLink, LinkOutput};
use crate::daemon::rpc::{self, CallError, RpcDone, RpcPool};
use crate::event::Event;
use crate::metrics::Metrics;
use crossbeam_channel::{Receiver, Sender};
use mio::{Interest, Token};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

/// Tokens reserved per daemon (1 link + the largest RPC pool).
pub const DAEMON_STRIDE: usize = 512;
const _: () = assert!(1 + rpc::MAX_LOOKUP_CONNECTIONS + rpc::RESERVED <= DAEMON_STRIDE);

/// One coin's daemon: its sockets and its core.
#[derive(Debug)]
pub(super) struct Daemon {
    pub link: DaemonLink,
    pub rpc: RpcPool<Purpose>,
    pub core: CoinCore,
    /// The earliest deadline that has a timer entry (see `schedule_daemon`).
    pub timer_at: Option<Instant>,
}

impl Daemon {
    fn deadline(&self) -> Instant {
        let link = self.link.deadline();
        self.rpc.deadline().map_or(link, |r| r.min(link))
    }
}

impl EventSource for Daemon {
    fn name(&self) -> &str {
        &self.link.coin
    }

    fn connected(&self) -> bool {
        self.link.stats.connected
    }

    fn reconnects(&self) -> u64 {
        self.link.stats.reconnects
    }

    fn status(&self) -> Value {
        json!({
            "connected": self.link.stats.connected,
            "catching_up": self.core.catching_up(),
            "url": self.link.url(),
            "network": self.link.config.network,
            "height": self.core.height(),
            "last_event_at": self.core.last_event_at(),
            "reconnects": self.link.stats.reconnects,
            "events": self.core.events(),
        })
    }

    fn published(&mut self, timestamp: f64) {
        self.core.published(timestamp);
    }

    fn close(&mut self) {
        self.link.close();
    }
}

/// Every coin's daemon, and the daemon side's bookkeeping.
#[derive(Debug)]
pub(super) struct Daemons {
    list: Vec<Daemon>,
    /// Daemons with frames left to read (per-turn slice reached).
    pub carry: Vec<usize>,
    /// Links not read while the gate is full (back-pressure), read again once it drains.
    pub paused: Vec<usize>,
    /// The resolver threads' answers.
    pub resolved: (Sender<Resolved>, Receiver<Resolved>),
    /// Reused buffer of the cores' actions (routing never re-enters itself).
    actions: Vec<Action>,
    /// Reused buffer of a link's outputs (frames read in one readiness).
    outputs: Vec<LinkOutput>,
    /// Daemons with calls to start: dispatched once per turn, after every frame and answer of
    /// the turn was handled, so the turn's lookups share writes.
    dispatch_due: Vec<usize>,
}

impl Daemons {
    /// A daemon per configured coin, each with a timer entry for its first connect; `tips` are
    /// the last known heights (from the database).
    pub fn new(
        config: &Config,
        tips: &HashMap<String, u64>,
        metrics: &Arc<Metrics>,
        now: Instant,
        timers: &mut super::Timers<TimerOwner>,
    ) -> Daemons {
        let shape = rpc::pool_shape(config.daemon_lookup_window);
        let list = config
            .coins
            .iter()
            .enumerate()
            .map(|(i, c)| {
                timers.schedule(now, TimerOwner::Daemon(i));
                let auth = crate::http::client::basic_auth(&c.login, &c.password);
                let timeout = config.daemon_rpc_timeout;
                let height = tips.get(&c.coin).copied();
                Daemon {
                    rpc: RpcPool::new(&c.host, c.port, &auth, timeout, shape),
                    core: CoinCore::new(c, config.daemon_enrich, height, metrics.clone()),
                    link: DaemonLink::new(c.clone(), config.daemon_ping_interval, now),
                    timer_at: None,
                }
            })
            .collect();
        Daemons::with(list)
    }

    /// No daemon: a cluster follower's (it creates them when it leads).
    pub fn none() -> Daemons {
        Daemons::with(Vec::new())
    }

    /// `list` with empty bookkeeping.
    fn with(list: Vec<Daemon>) -> Daemons {
        Daemons {
            list,
            carry: Vec::new(),
            paused: Vec::new(),
            resolved: crossbeam_channel::unbounded(),
            actions: Vec::new(),
            outputs: Vec::new(),
            dispatch_due: Vec::new(),
        }
    }

    /// Every daemon as an event source.
    pub fn sources(&self) -> impl Iterator<Item = &dyn EventSource> {
        self.list.iter().map(|d| d as &dyn EventSource)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Daemon> {
        self.list.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Daemon> {
        self.list.get_mut(i)
    }

    /// Daemon `i` has calls to start before the turn ends.
    fn dispatch_later(&mut self, i: usize) {
        if !self.dispatch_due.contains(&i) {
            self.dispatch_due.push(i);
        }
    }
}

impl Reactor {
    pub(super) fn daemon_ready(&mut self, offset: usize, now: Instant) {
        let (i, slot) = (offset / DAEMON_STRIDE, offset % DAEMON_STRIDE);
        if slot == 0 && self.gate.is_full() {
            return self.pause_link(i);
        }
        let mut out = std::mem::take(&mut self.daemons.outputs);
        let mut done = Vec::new();
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        if slot == 0 {
            d.link.on_ready(now, &mut out);
        } else {
            d.rpc.on_ready(slot - 1, &mut done);
        }
        self.link_outputs(i, out.drain(..), now);
        self.daemons.outputs = out;
        self.rpc_answers(i, done, now);
        if slot != 0 {
            self.daemons.dispatch_later(i);
        }
    }

    /// Starts the calls the turn queued, daemon by daemon, and routes what fails at once; runs
    /// until no daemon has calls left to start.
    pub(super) fn dispatch_calls(&mut self, now: Instant) {
        while !self.daemons.dispatch_due.is_empty() {
            for i in std::mem::take(&mut self.daemons.dispatch_due) {
                self.rpc_dispatch(i, now);
            }
        }
    }

    pub(super) fn daemon_timer(&mut self, i: usize, now: Instant) {
        let mut out = Vec::new();
        let mut done = Vec::new();
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        if d.timer_at.is_some_and(|t| t <= now) {
            d.timer_at = None; // this entry fired; `link_outputs` schedules the next one
        }
        d.rpc.expire(now, &mut done);
        if now >= d.link.deadline() {
            d.link.on_timer(now, &mut out);
        }
        self.rpc_answers(i, done, now);
        self.link_outputs(i, out, now);
        self.daemons.dispatch_later(i);
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
        self.link_outputs(i, out, now);
    }

    fn link_outputs(
        &mut self,
        i: usize,
        outputs: impl IntoIterator<Item = LinkOutput>,
        now: Instant,
    ) {
        for output in outputs {
            match output {
                LinkOutput::Register => self.register_daemon(i, 0),
                LinkOutput::Resolve(host, port) => self.resolve(i, host, port),
                LinkOutput::Connected => {
                    self.log_connected_daemons();
                    self.with_core(i, now, |core, out| core.on_connected(now, out));
                }
                LinkOutput::Disconnected(reason) => self.link_down(i, reason, now),
                LinkOutput::Frame(text) => {
                    self.with_core(i, now, |core, out| core.on_frame(&text, now, out));
                }
                LinkOutput::More => self.daemons.carry.push(i),
            }
        }
        self.schedule_daemon(i);
    }

    /// The link went down: the core releases what it held, then the calls in flight are
    /// abandoned (their failures change nothing any more).
    fn link_down(&mut self, i: usize, reason: String, now: Instant) {
        let mut done = Vec::new();
        let why = reason.clone();
        self.with_core(i, now, |core, out| core.on_disconnected(reason, out));
        if let Some(d) = self.daemons.get_mut(i) {
            d.rpc.reset(&why, &mut done);
        }
        self.rpc_answers(i, done, now);
        self.log_connected_daemons();
    }

    /// Runs `feed` on daemon `i`'s core and routes the actions it returns.
    pub(super) fn with_core(
        &mut self,
        i: usize,
        now: Instant,
        feed: impl FnOnce(&mut CoinCore, &mut Vec<Action>),
    ) {
        let mut actions = std::mem::take(&mut self.daemons.actions);
        if let Some(d) = self.daemons.get_mut(i) {
            feed(&mut d.core, &mut actions);
        }
        self.route_actions(i, &mut actions, now);
        self.daemons.actions = actions;
    }

    /// Hands finished RPC calls to daemon `i`'s core and routes what it asks for next.
    fn rpc_answers(&mut self, i: usize, done: Vec<RpcDone<Purpose>>, now: Instant) {
        if done.is_empty() {
            return;
        }
        let mut actions = std::mem::take(&mut self.daemons.actions);
        self.feed_answers(i, done, now, &mut actions);
        self.route_actions(i, &mut actions, now);
        self.daemons.actions = actions;
    }

    fn feed_answers(
        &mut self,
        i: usize,
        done: Vec<RpcDone<Purpose>>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let dedup = &self.pipeline.dedup;
        if let Some(d) = self.daemons.list.get_mut(i) {
            d.core
                .on_rpc_done(done, now, &|ev| dedup.contains(ev), actions);
        }
    }

    /// Does what daemon `i`'s core asked, in order, until it asks for nothing more: events are
    /// published, calls queued on the RPC pool (started together at the end of the turn, see
    /// [`Reactor::dispatch_calls`]; a call the full queue refuses goes back to the core as
    /// overloaded), gone requests marked in the database.
    fn route_actions(&mut self, i: usize, actions: &mut Vec<Action>, now: Instant) {
        while !actions.is_empty() {
            let mut done = Vec::new();
            for action in actions.drain(..) {
                match action {
                    Action::Publish(ev) => self.publish(i, ev),
                    Action::Call {
                        method,
                        params,
                        purpose,
                    } => {
                        self.daemons.dispatch_later(i);
                        self.rpc_call(i, (method, params, purpose), now, &mut done);
                    }
                    Action::MarkGone(id) => self.mark_gone(i, &id),
                }
            }
            self.feed_answers(i, done, now, actions);
        }
    }

    /// Queues a call on daemon `i`'s pool; a call the full queue refuses fails at once.
    fn rpc_call(
        &mut self,
        i: usize,
        (method, params, purpose): (&'static str, Value, Purpose),
        now: Instant,
        done: &mut Vec<RpcDone<Purpose>>,
    ) {
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        if let Err(purpose) = d.rpc.call(method, params, purpose, now) {
            done.push(RpcDone {
                purpose,
                method,
                result: Err(CallError::Overloaded),
            });
        }
    }

    fn mark_gone(&mut self, i: usize, id: &str) {
        if let (Some(db), Some(d)) = (&self.db, self.daemons.list.get(i)) {
            db.handle.mark_request_gone(d.core.coin(), id);
        }
    }

    /// Starts queued calls of daemon `i` on free connections, then hands the core what ended.
    fn rpc_dispatch(&mut self, i: usize, now: Instant) {
        let mut done = Vec::new();
        self.start_calls(i, &mut done);
        self.rpc_answers(i, done, now);
    }

    /// Starts queued calls of daemon `i` on free connections (opening and registering them as
    /// needed); calls that fail at once land in `done`.
    fn start_calls(&mut self, i: usize, done: &mut Vec<RpcDone<Purpose>>) {
        let mut registered = Vec::new();
        if let Some(d) = self.daemons.get_mut(i) {
            let addr = d.link.peer;
            d.rpc.dispatch(addr, &mut registered, done);
        }
        for slot in registered {
            self.register_daemon(i, slot + 1);
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
        let Some(d) = self.daemons.list.get_mut(i) else {
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
        let tx = self.daemons.resolved.0.clone();
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
            let _ = self.daemons.resolved.0.send((i, Err(e)));
        }
    }

    /// Sequences an event of source `i` and fans it out.
    fn publish(&mut self, i: usize, ev: Event) {
        let Some(p) = self.pipeline.publish(&ev) else {
            self.metrics.inc(&self.metrics.duplicates_dropped);
            return;
        };
        if let Some(d) = self.daemons.get_mut(i) {
            d.published(p.timestamp);
        }
        self.emit(p);
    }

    /// Stops reading daemon `i` until the durability gate drains (back-pressure; logged once
    /// per pause).
    fn pause_link(&mut self, i: usize) {
        if self.daemons.paused.contains(&i) {
            return;
        }
        if self.daemons.paused.is_empty() {
            log::warn!(
                "[WORKER] {} events wait for the database to make them durable; pausing daemon \
                 reads until it catches up",
                self.gate.len()
            );
        }
        self.daemons.paused.push(i);
    }

    fn log_connected_daemons(&self) {
        let up = self.daemons.sources().filter(|s| s.connected()).count();
        log::info!("[WORKER] Connected daemons: {up}/{}", self.daemons.len());
    }
}
