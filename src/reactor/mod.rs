//! The reactor: one thread, one `mio::Poll`, every socket.
//!
//! Each turn: poll (timeout = the earliest timer), handle every readiness event — daemon frames
//! and RPC answers go to the coin's sans-io core (`daemon::core`), whose actions are routed
//! (`daemons`): calls to the RPC pool (up to `DAEMON_LOOKUP_WINDOW` lookups in flight per daemon),
//! events, released in daemon order, sequenced and *staged* per filter group; client
//! messages are answered — then commit what is staged (one shared batch per group for everything
//! the turn released), flush every client that has output **once** (all its frames in one
//! `writev`), then fire the timers that are due. Other threads talk to the reactor only through
//! channels plus the [`mio::Waker`].
//!
//! The commit rule (see `commit`): staged events are not committed after every daemon or RPC
//! readiness event, only before anything that talks to clients (client, listener and waker
//! readiness; client, resume and accept timers), at the end of the turn's daemon work, and in
//! every flush. So a turn's events reach a client as one batch, and a client never gets an event
//! with `seq` at or below its `subscribed` reply's, nor misses one.
//!
//! State ([`Reactor`]): the `door` (listener, its address, the `accept` retry) and the client
//! slab with its generations, subscribers and admission counts (`clients`); the `daemons`; the
//! `pipeline` (sequencing, ring); the `timers`; the `turn`'s client work lists (dirty, carried
//! over, to flush again); the commit's reused `fanout_buffers` (`commit`); and, with a database,
//! `db` (handle, message channel, counters), the durability `gate` and the event-log `reads` in
//! flight (`persist`); in cluster mode, the `cluster` part (`cluster`: the cluster threads and
//! this node's delivery order; daemons exist only while the node leads).
//!
//! Invariants: nothing here blocks (no DNS, database, file I/O or blocking channel send); every
//! per-client queue is bounded; a connection's writable interest is registered exactly while its
//! outbox is non-empty; client slab keys are removed from the subscribers before the slot is
//! freed; nothing is staged while client input, replies or replay refills are handled (so events
//! never overtake or trail replies).

pub mod conn_id;
pub mod timers;

mod clients;
mod cluster;
mod commit;
mod daemons;
mod persist;
mod replay;
mod source;
mod status;

use crate::config::Config;
use crate::event::Published;
use crate::fanout::groups::Subscribers;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::pipeline::gate::Gate;
use crate::server::conn::ClientConn;
use conn_id::{ConnId, Generations};
use crossbeam_channel::{Receiver, Sender};
use daemons::Daemons;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::Value;
use slab::Slab;
use source::EventSource;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timers::Timers;

/// Token of the client listener.
pub const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the cross-thread waker.
pub const WAKER: Token = Token(usize::MAX - 2);
/// Daemon `i` uses tokens from `DAEMON_BASE + i * daemons::DAEMON_STRIDE` (link, then RPC).
pub const DAEMON_BASE: usize = 1 << 40;
/// Messages read from one client per turn before it is carried over (fairness).
const MAX_MESSAGES_PER_TURN: usize = 64;
/// Events waiting for durability at which daemon links stop being read.
const GATE_LIMIT: usize = crate::db::INTAKE_CAPACITY;
/// Poll timeout while the database intake is full and events wait to be offered again.
const GATE_RETRY: Duration = Duration::from_millis(5);
/// How long shutdown waits for clients to take their close frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Requests from other threads (the [`crate::worker::WorkerHandle`]).
#[derive(Debug)]
pub enum Control {
    /// Graceful shutdown: stop accepting, close clients with 1001, flush, exit.
    Shutdown,
    /// Reply with the `get_status` data object.
    Status(Sender<Value>),
}

/// The handler thread's queue, and how many handlers are registered (events are only queued
/// while there is at least one, so an unused handler thread costs nothing per event).
pub type HandlerQueue = (Sender<Arc<Published>>, Arc<std::sync::atomic::AtomicUsize>);

/// A resolver thread's answer for daemon `usize`.
type Resolved = (usize, io::Result<SocketAddr>);

/// Whose timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerOwner {
    Client(ConnId),
    Daemon(usize),
    /// A resume from the event log that must be answered by now.
    Resume(u64),
    /// Retry `accept` after it failed (EMFILE and friends).
    Accept,
    /// The cluster's event-log fill-in asks again.
    ClusterRetry,
    Shutdown,
}

/// Everything the reactor thread owns.
pub struct Reactor {
    poll: Poll,
    /// The client listener, its address and its `accept` retry.
    door: clients::Door,
    clients: Slab<ClientConn>,
    gens: Generations,
    subs: Subscribers,
    /// Open sessions, in total and per address.
    admission: crate::client::admission::Admission,
    /// Every coin's daemon (sockets, timers and the coin's core).
    daemons: Daemons,
    pipeline: Pipeline,
    timers: Timers<TimerOwner>,
    /// Clients with work left for this turn or the next.
    turn: TurnWork,
    control: Receiver<Control>,
    waker: Arc<Waker>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    handlers: Option<HandlerQueue>,
    started: Instant,
    shutdown_deadline: Option<Instant>,
    known_coins: Vec<String>,
    /// Reused buffers of [`Reactor::commit_fanout`].
    fanout_buffers: commit::FanoutBuffers,
    /// Persistence, when configured.
    db: Option<persist::Persistence>,
    /// Sequenced events waiting to be durable before clients see them (database on only).
    gate: Gate,
    /// Event-log reads in flight for sessions.
    reads: persist::EventLogReads,
    /// Cluster mode (`REDIS_URL`): the cluster threads and this node's delivery state.
    cluster: Option<cluster::ClusterPart>,
}

/// The per-turn client work lists (slab keys; each list keeps its allocation across turns).
#[derive(Default)]
struct TurnWork {
    /// Clients with queued output to flush at the end of this turn.
    dirty: Vec<usize>,
    /// Clients that hit the per-turn message cap and still have input.
    carry: Vec<usize>,
    /// Replaying clients to flush again next turn (fairness cap reached).
    retry_flush: Vec<usize>,
}

/// What `Reactor::new` needs besides the config.
pub struct ReactorParts {
    pub poll: Poll,
    pub waker: Arc<Waker>,
    pub control: Receiver<Control>,
    pub metrics: Arc<Metrics>,
    pub handlers: Option<HandlerQueue>,
    pub epoch: Arc<str>,
    pub last_seq: u64,
    /// Persistence handle and its message channel, when configured.
    pub db: Option<(crate::db::DbHandle, Receiver<crate::db::DbMessage>)>,
    /// Last known block height per coin (from the database), for catch-up.
    pub tips: HashMap<String, u64>,
    /// Identities of the events earlier runs delivered, newest first (de-duplication).
    pub recent: Vec<crate::event::Event>,
}

impl Reactor {
    /// Binds the listener and prepares the daemon links (they connect on the first turn).
    pub fn new(config: Arc<Config>, parts: ReactorParts) -> io::Result<Reactor> {
        let addr = resolve_listen_addr(&config.worker_host, config.worker_port)?;
        let mut listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        parts
            .poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let now = Instant::now();
        let mut timers = Timers::default();
        let cluster = match (&config.cluster, &config.db) {
            (Some(cfg), Some(db)) => Some(cluster::ClusterPart::start(
                cfg,
                &db.url,
                parts.epoch.clone(),
                parts.last_seq,
                parts.tips.clone(),
                parts.waker.clone(),
            )?),
            _ => None,
        };
        let daemons = if cluster.is_some() {
            Daemons::none() // created when this node leads
        } else {
            Daemons::new(&config, &parts.tips, &parts.metrics, now, &mut timers)
        };
        let known_coins = config.coins.iter().map(|c| c.coin.clone()).collect();
        Ok(Reactor {
            poll: parts.poll,
            door: clients::Door::new(listener, local_addr),
            clients: Slab::new(),
            gens: Generations::default(),
            subs: Subscribers::new(),
            admission: Default::default(),
            daemons,
            pipeline: Pipeline::new(parts.epoch, parts.last_seq, config.limits.ring_size)
                .remembering(&parts.recent),
            timers,
            turn: TurnWork::default(),
            control: parts.control,
            waker: parts.waker,
            config,
            metrics: parts.metrics,
            handlers: parts.handlers,
            started: now,
            shutdown_deadline: None,
            known_coins,
            fanout_buffers: Default::default(),
            db: parts
                .db
                .map(|(handle, messages)| persist::Persistence::new(handle, messages)),
            gate: Gate::new(GATE_LIMIT),
            reads: Default::default(),
            cluster,
        })
    }

    /// The address clients connect to (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.door.local_addr
    }

    /// Runs until a graceful shutdown completes.
    pub fn run(mut self) -> io::Result<()> {
        log::info!("[WORKER] Starting worker for coins: {:?}", self.known_coins);
        log::info!(
            "[WORKER] Listening for clients on ws://{}/",
            self.door.local_addr
        );
        let mut events = Events::with_capacity(1024);
        let mut expired = Vec::new();
        loop {
            let now = Instant::now();
            let busy = !self.turn.carry.is_empty()
                || !self.turn.retry_flush.is_empty()
                || !self.daemons.carry.is_empty();
            let timeout = if busy {
                Some(Duration::ZERO)
            } else if self.gate.unsubmitted() > 0 {
                Some(
                    self.timers
                        .timeout(now)
                        .map_or(GATE_RETRY, |t| t.min(GATE_RETRY)),
                )
            } else {
                self.timers.timeout(now)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            self.handle_events(&events, now);
            self.release_durable();
            // The end of the turn's daemon work: one batch per group for all it released.
            self.commit_fanout(now);
            for key in std::mem::take(&mut self.turn.carry) {
                self.commit_fanout(now);
                self.client_readable(key, now);
            }
            for key in std::mem::take(&mut self.turn.retry_flush) {
                self.mark_dirty(key);
            }
            self.flush_dirty(now);
            self.timers.expired(now, &mut expired);
            for owner in expired.drain(..) {
                if owner.commits_first() {
                    self.commit_fanout(now);
                }
                self.on_timer(owner, now);
            }
            self.dispatch_calls(now);
            self.flush_dirty(now);
            if self.shutdown_complete(now) {
                break;
            }
        }
        self.finish_shutdown();
        Ok(())
    }

    /// Handles one poll's readiness events, the daemons carried over from the last turn, and
    /// starts the lookups they queued.
    fn handle_events(&mut self, events: &Events, now: Instant) {
        for event in events.iter() {
            if commit::commits_first(event.token()) {
                self.commit_fanout(now);
            }
            self.dispatch(event.token(), now);
        }
        for i in std::mem::take(&mut self.daemons.carry) {
            self.daemon_ready(i * daemons::DAEMON_STRIDE, now);
        }
        self.dispatch_calls(now);
    }

    fn dispatch(&mut self, token: Token, now: Instant) {
        match token {
            LISTENER => self.accept(now),
            WAKER => self.on_wake(now),
            Token(t) if t >= DAEMON_BASE => self.daemon_ready(t - DAEMON_BASE, now),
            Token(key) => self.client_ready(key, now),
        }
    }

    fn on_wake(&mut self, now: Instant) {
        while let Ok(msg) = self.control.try_recv() {
            match msg {
                Control::Shutdown => self.begin_shutdown(now),
                Control::Status(reply) => {
                    let _ = reply.send(self.status_json());
                }
            }
        }
        while let Ok((i, result)) = self.daemons.resolved.1.try_recv() {
            self.daemon_resolved(i, result, now);
        }
        self.on_db_messages(now);
        self.on_cluster_messages(now);
    }

    fn on_timer(&mut self, owner: TimerOwner, now: Instant) {
        match owner {
            TimerOwner::Client(id) if self.gens.is_current(id) => {
                self.client_timer(id.key as usize, now)
            }
            TimerOwner::Client(_) => {}
            TimerOwner::Daemon(i) => self.daemon_timer(i, now),
            TimerOwner::Resume(query_id) => self.resume_timeout(query_id),
            TimerOwner::Accept => {
                if self.door.accept_retry_at.is_some_and(|at| at <= now) {
                    self.accept(now);
                }
            }
            TimerOwner::ClusterRetry => self.cluster_retry(now),
            TimerOwner::Shutdown => {}
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key)
            && !c.dirty
        {
            c.dirty = true;
            self.turn.dirty.push(key);
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        log::info!(
            "[WORKER] Shutting down: closing {} clients with 1001",
            self.admission.open_clients()
        );
        if let Some(mut l) = self.door.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_client(key, 1001, "worker shutting down", now);
        }
        for d in self.daemons.iter_mut() {
            d.close();
        }
        let deadline = now + SHUTDOWN_GRACE;
        self.shutdown_deadline = Some(deadline);
        self.timers.schedule(deadline, TimerOwner::Shutdown);
    }

    fn shutdown_complete(&self, now: Instant) -> bool {
        match self.shutdown_deadline {
            Some(deadline) => self.clients.is_empty() || now >= deadline,
            None => false,
        }
    }

    fn finish_shutdown(&mut self) {
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.remove_client(key);
        }
        // Held events the intake had no room for yet: offer them once more before the flush.
        self.submit_held();
        if let Some(db) = self.db.take() {
            log::info!("[WORKER] Flushing the database queue");
            db.handle.shutdown(Duration::from_secs(10));
        }
        self.stop_cluster();
        log::info!("[WORKER] Stopped after {} events", self.pipeline.published);
    }
}

/// The listener address: an IP literal or `localhost` (names are refused rather than resolved
/// on the reactor thread).
fn resolve_listen_addr(host: &str, port: u16) -> io::Result<SocketAddr> {
    crate::daemon::link::literal_addr(host, port).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("WORKER_HOST {host:?} is not an IP address"),
        )
    })
}
