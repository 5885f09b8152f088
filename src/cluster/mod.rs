//! Cluster mode (docs/cluster.md): several workers on one database, one ingest leader elected
//! with a PostgreSQL advisory lock, every sequenced event appended by the leader to a Redis Stream
//! and delivered by every node, the leader too, from that stream.
//!
//! Parts:
//! * [`resp`], [`redis`]: a small blocking RESP2 client (sans-io decoder, table tests).
//! * [`stream`]: fenced `XADD` (seq-derived ids), `XREAD`/`XRANGE`, trim detection.
//! * [`leader`]: the elector thread (advisory lock, leader key in Redis, role changes).
//! * [`core`]: sans-io delivery order (stream, event-log fill-ins, no gap, no duplicate) and the
//!   takeover plan of a new leader.
//! * [`reader`], [`appender`]: the stream reader and stream appender threads.
//! * [`status`]: `data.cluster` of `get_status` and the `/metrics` lines.
//! * [`node`]: sans-io glue for the reactor: messages in, [`node::NodeAction`]s out.
//!
//! # The seam with the reactor
//!
//! [`ClusterHandle::start`] starts the three threads and returns a [`Receiver`] of
//! [`ClusterMessage`]; every message is followed by a call of the `wake` callback (the reactor
//! passes one that wakes its `mio::Waker`, as for `db::Db::start`). The reactor drains the
//! receiver with `try_recv` and hands each message to [`node::ClusterNode::on_message`], which
//! does the bookkeeping below and answers with [`node::NodeAction`]s to run (`Run(Action)`,
//! `Takeover`, `Lead`, `StopIngest`, `StepDown`). What that amounts to:
//! * [`ClusterMessage::Role`] `Leader { epoch, last_stored, term }`: calls
//!   [`ClusterHandle::takeover`] and waits for [`ClusterMessage::Takeover`]; then sets the
//!   writers' fencing term (`DbHandle::set_lead_term`), stores `plan.store` (through the
//!   durability gate: in order, never dropped, not appended again), sequences from
//!   `plan.next_seq` in the same epoch, and only then connects to the daemons.
//!   `Follower`: stops ingest (drops daemon links), keeps delivering.
//! * Leader, for each sequenced batch: [`ClusterHandle::append`] (never blocks). The appender
//!   answers [`ClusterMessage::Appended`] / [`ClusterMessage::Held`] (Redis away: held for a later
//!   append, deliver now), which the reactor feeds to [`core::Delivery::on_entries`];
//!   [`ClusterMessage::Fenced`] / [`ClusterMessage::Deposed`] mean another node leads: stop
//!   ingest at once and call [`ClusterHandle::step_down`].
//! * [`ClusterMessage::Entries`] / [`ClusterMessage::Trimmed`]: feed [`core::Delivery`]; run its
//!   [`core::Action`]s: `Deliver` → fan-out ([`Entry::to_published`]; the leader may reuse the
//!   `Published` it made for that seq), `FetchLog` → `DbHandle::query_events` (answer with
//!   `on_log_page` of the rows mapped by [`Entry::from_published`], or `on_log_failed`), `RetryLater` → a timer of [`LOG_RETRY`] then `on_retry`,
//!   `ReadStreamFrom` → [`ClusterHandle::read_from`].
//! * [`ClusterMessage::LeaderName`], [`ClusterMessage::RedisLink`]: status only
//!   ([`status::ClusterStatus`]).
//!
//! Nothing here blocks the reactor: every reactor-side call is a `try_send`.

pub mod appender;
pub mod core;
pub mod leader;
pub mod node;
pub mod reader;
pub mod redis;
pub mod resp;
pub mod status;
pub mod stream;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub use core::{Action, Delivery, Takeover};
pub use leader::Role;
pub use node::{ClusterNode, NodeAction};
pub use redis::RedisUrl;
pub use stream::Entry;

/// Default of `REDIS_KEY_PREFIX`.
pub const DEFAULT_KEY_PREFIX: &str = "cryptoworker:";
/// Default of `REDIS_STREAM_MAXLEN`.
pub const DEFAULT_STREAM_MAXLEN: u64 = 100_000;
/// Capacity of the cluster → reactor message queue.
pub const MESSAGE_CAPACITY: usize = 1024;
/// Capacity of the reactor → appender queue (batches).
pub const APPEND_CAPACITY: usize = 4096;
/// Delay before an event-log query that found nothing new is asked again.
pub const LOG_RETRY: Duration = Duration::from_millis(250);

/// Cluster settings (`REDIS_URL`, `WORKER_NODE_ID`, `REDIS_KEY_PREFIX`, `REDIS_STREAM_MAXLEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis: RedisUrl,
    /// Unique, readable node name; default `hostname:port`.
    pub node_id: String,
    /// Prefix of every Redis key of this cluster, so clusters can share one Redis.
    pub key_prefix: String,
    /// `XADD MAXLEN ~` of the stream.
    pub stream_maxlen: u64,
}

impl ClusterConfig {
    /// The stream key.
    pub fn stream_key(&self) -> String {
        format!("{}events", self.key_prefix)
    }

    /// The leader key: the leader's node id, with a TTL (see [`leader::LEASE`]).
    pub fn leader_key(&self) -> String {
        format!("{}leader", self.key_prefix)
    }

    /// The cluster's name for metrics labels: the prefix without its trailing `:`.
    pub fn cluster_name(&self) -> &str {
        self.key_prefix.trim_end_matches(':')
    }
}

/// The default node id: `hostname:port`.
pub fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{port}")
}

/// What the cluster threads tell the reactor (each message is followed by a wake).
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterMessage {
    /// The elector's verdict changed.
    Role(Role),
    /// The node named in the leader key (for display), `None` when nobody holds it.
    LeaderName(Option<String>),
    /// Stream entries after the reader's position, ascending.
    Entries(Vec<Entry>),
    /// The stream starts at `first`: the entries between the reader's position and it are gone.
    Trimmed { first: u64 },
    /// The stream reader's Redis link went up or down.
    RedisLink { up: bool },
    /// The answer to [`ClusterHandle::takeover`]; `stream_checked` is false when Redis could not
    /// be asked in time (the plan then continues from the event log alone).
    Takeover {
        plan: Takeover,
        stream_checked: bool,
    },
    /// These entries are in the stream.
    Appended(Vec<Entry>),
    /// Redis is away: these entries wait in the appender's backlog; deliver them now.
    Held(Vec<Entry>),
    /// Redis refused seq `seq` (the stream already holds it or a later one): stop leading.
    Fenced { seq: u64 },
    /// The leader key names another node: stop leading.
    Deposed { leader: String },
    /// The appender's backlog overflowed while Redis was away: `count` entries will reach the
    /// followers through the event log instead.
    Dropped { count: u64 },
}

/// Sends to the reactor and wakes it; blocks while the queue is full (the reactor drains it),
/// giving up when `stop` is set. `false` when the reactor is gone or stopping.
pub(crate) struct Outbox {
    pub tx: Sender<ClusterMessage>,
    pub wake: Arc<dyn Fn() + Send + Sync>,
    pub stop: Arc<AtomicBool>,
}

impl Outbox {
    pub fn send(&self, mut msg: ClusterMessage) -> bool {
        loop {
            match self.tx.send_timeout(msg, Duration::from_millis(100)) {
                Ok(()) => {
                    (self.wake)();
                    return true;
                }
                Err(crossbeam_channel::SendTimeoutError::Timeout(m)) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    (self.wake)();
                    msg = m;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps up to `d` in short steps; `false` when stopping.
    pub fn nap(&self, d: Duration) -> bool {
        let end = std::time::Instant::now() + d;
        while !self.stopping() {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        false
    }
}

/// The running cluster threads.
pub struct ClusterHandle {
    reader: Sender<reader::ReaderCommand>,
    appender: Sender<appender::AppendJob>,
    stop: Arc<AtomicBool>,
    step_down: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// What [`ClusterHandle::start`] needs besides the config.
pub struct StartOptions {
    /// libpq-style URL of the database (the elector's connection).
    pub database_url: String,
    /// The advisory lock key that elects the leader (the database's writer lock).
    pub lock_key: i64,
    /// The stream reader starts after this seq (the last event the node already has).
    pub read_after: u64,
}

impl ClusterHandle {
    /// Starts the elector, the stream reader and the stream appender.
    pub fn start(
        cfg: &ClusterConfig,
        opts: StartOptions,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<(ClusterHandle, Receiver<ClusterMessage>)> {
        let (tx, rx) = crossbeam_channel::bounded(MESSAGE_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let outbox = || Outbox {
            tx: tx.clone(),
            wake: wake.clone(),
            stop: stop.clone(),
        };
        let (reader_tx, reader_rx) = crossbeam_channel::bounded(16);
        let (append_tx, append_rx) = crossbeam_channel::bounded(APPEND_CAPACITY);
        let step_down = Arc::new(AtomicBool::new(false));
        let elector =
            leader::Elector::new(cfg, &opts.database_url, opts.lock_key, step_down.clone())
                .map_err(std::io::Error::other)?;
        let mut threads = Vec::new();
        let out = outbox();
        threads.push(spawn("cw-cluster-elector", move || elector.run(&out))?);
        let r = reader::StreamReader::new(cfg, opts.read_after, reader_rx, outbox());
        threads.push(spawn("cw-cluster-reader", move || r.run())?);
        let a = appender::Appender::new(cfg, append_rx, outbox());
        threads.push(spawn("cw-cluster-append", move || a.run())?);
        let handle = ClusterHandle {
            reader: reader_tx,
            appender: append_tx,
            stop,
            step_down,
            threads,
        };
        Ok((handle, rx))
    }

    /// Queues sequenced entries for the stream (leader only). Never blocks: when the queue is
    /// full the entries come back (deliver them; followers get them from the event log).
    pub fn append(&self, entries: Vec<Entry>) -> Result<(), Vec<Entry>> {
        match self
            .appender
            .try_send(appender::AppendJob::Entries(entries))
        {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(appender::AppendJob::Entries(e)))
            | Err(TrySendError::Disconnected(appender::AppendJob::Entries(e))) => Err(e),
            Err(_) => Err(Vec::new()),
        }
    }

    /// Tells the appender to drop what it has not appended yet (this node stopped leading: the
    /// stream belongs to the next leader). Best effort: a full queue is drained by the next
    /// takeover, which clears the backlog too.
    pub fn forget_appends(&self) {
        let _ = self.appender.try_send(appender::AppendJob::Forget);
    }

    /// Asks the appender for the takeover plan (answer: [`ClusterMessage::Takeover`]).
    pub fn takeover(&self, epoch: &str, last_stored: u64) -> bool {
        let job = appender::AppendJob::Takeover {
            epoch: epoch.into(),
            last_stored,
        };
        self.appender.try_send(job).is_ok()
    }

    /// Gives the leadership up (after [`ClusterMessage::Fenced`] / [`ClusterMessage::Deposed`]):
    /// the elector ends its session within [`leader::RETRY`], reports [`Role::Follower`] and
    /// competes again after [`leader::STEP_DOWN_PAUSE`], so some node redoes a clean takeover.
    pub fn step_down(&self) {
        self.step_down.store(true, Ordering::Relaxed);
    }

    /// Moves the stream reader to the entries after `after`.
    pub fn read_from(&self, after: u64) -> bool {
        self.reader
            .try_send(reader::ReaderCommand::ReadFrom(after))
            .is_ok()
    }

    /// Stops the threads (the elector's session, and so the lock, ends with it) and waits.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ClusterHandle {
    /// Tells the threads to stop (without waiting; [`ClusterHandle::stop`] waits).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}
