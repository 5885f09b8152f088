//! PostgreSQL persistence: the event log, derived tables, database-driven monitoring and resume,
//! behind a small API that never blocks the reactor (docs/database.md; settings in
//! docs/configuration.md, "Database").
//!
//! Threads (none of them is the reactor):
//!
//! ```text reactor --submit (try_send)--> intake (bounded) --> dispatcher --try_send--> writers x
//!   DB_POOL_SIZE |   ^  <--Feedback--      | v   | replay              v spool file
//!   PostgreSQL reactor --query_events / mark_request_gone (try_send)--> reader ----------------^
//!   supervisor: writer advisory lock, migrations, readiness   listener: LISTEN -> Wallets/Requests
//!   DbMessage channel (bounded) + wake() --> reactor
//! ```
//!
//! Invariants: the reactor's calls are all `try_send` (never block); every queue is bounded; an
//! accepted event is committed exactly once in effect (idempotent writes), or waits in the spool
//! file, or, only when the intake queue itself is full, is counted in `dropped` (logged at error
//! level once per streak). Writers write only while this process holds the writer lock.

mod conn;
mod dispatch;
mod durable;
mod error;
mod fence;
pub mod migrate;
mod monitor;
mod reader;
mod rows;
mod spool;
mod sql;
mod stats;
mod writer;

pub use conn::WRITER_LOCK_KEY;
pub use error::DbError;
pub use fence::BUMP_TERM_SQL;
pub(crate) use fence::bump_term;
pub use reader::MAX_QUERY_ROWS;
pub use spool::SPOOL_FILE;
pub use stats::{DbStats, DbStatsSnapshot, LatencyHistogram};

use crate::config::DbConfig;
use crate::event::Published;
use conn::Shared;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use reader::ReaderJob;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod start;

/// Capacity of the reactor → dispatcher queue (events). When even this is full, `submit` drops.
pub const INTAKE_CAPACITY: usize = 65_536;
/// Capacity of the DB → reactor message queue.
pub const MESSAGE_CAPACITY: usize = 1024;
/// Capacity of the reader's queue (queries and gone marks).
pub const READER_CAPACITY: usize = 1024;

/// Namespace of the persistence layer's entry points.
pub struct Db;

/// A wallet to watch, from `watched_wallets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedWallet {
    /// Upper-case coin.
    pub coin: String,
    pub xpub: String,
    /// Token contract, for token wallets.
    pub contract: Option<String>,
    pub label: Option<String>,
}

impl WatchedWallet {
    /// The daemon's wallet key: the xpub, or `xpub_contract` for a token wallet.
    pub fn key(&self) -> String {
        match self.contract.as_deref() {
            Some(c) if !c.is_empty() => format!("{}_{}", self.xpub, c),
            _ => self.xpub.clone(),
        }
    }
}

/// An open payment request (status 0, 2 or 7, not marked gone), from `payment_requests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    /// Upper-case coin.
    pub coin: String,
    pub xpub: String,
    pub contract: Option<String>,
    pub request_id: String,
    pub status: i32,
    /// Decimal text, e.g. `"0.00018"`.
    pub sent_amount: String,
    pub tx_hashes: Vec<String>,
    pub confirmations: Option<i32>,
}

/// Messages from the database threads to the reactor (drain after `wake`).
#[derive(Debug)]
pub enum DbMessage {
    /// The full set of watched wallets: at start, after a reconnect, and after each change.
    Wallets(Vec<WatchedWallet>),
    /// The full set of open payment requests, likewise.
    Requests(Vec<PaymentRequest>),
    /// The answer to `query_events(query_id, ..)`.
    Events {
        query_id: u64,
        result: Result<Vec<Published>, String>,
    },
    /// The database became ready (true) or was lost (false).
    Connected(bool),
}

/// Where numbering continues after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// The epoch to number events in.
    pub epoch: String,
    /// The last seq used in that epoch (0 if none): the next event gets `last_seq + 1`.
    pub last_seq: u64,
    /// Highest known block height per upper-case coin (database and spool).
    pub tips: HashMap<String, u64>,
    /// The identities of the most recent events in the log (newest first, at most
    /// [`RECENT_IDENTITIES`]), so the de-duplicator knows what earlier runs delivered: a
    /// `get_updates` queue also holds events that did arrive live.
    pub recent: Vec<crate::event::Event>,
}

/// Event identities read back at start to prime de-duplication across restarts.
pub const RECENT_IDENTITIES: i64 = 50_000;

/// The reactor's handle: every call is cheap and never blocks.
pub struct DbHandle {
    intake: Option<Sender<Arc<Published>>>,
    reader: Option<Sender<ReaderJob>>,
    messages: Sender<DbMessage>,
    shared: Arc<Shared>,
    /// A `dropped` streak is in progress (its error line was logged).
    dropping: AtomicBool,
    dispatcher: Option<JoinHandle<()>>,
    /// Writers, supervisor, listener, reader.
    others: Vec<JoinHandle<()>>,
}

impl Db {
    /// Starts persistence; see `start.rs` for the steps. Call before the reactor starts (it may
    /// block up to `connect_timeout` plus the migrations).
    ///
    /// Reachable database: takes the writer lock (`DbError::Locked` when another worker holds it),
    /// applies migrations and reads [`Resume`] (epoch and last seq survive restarts, spooled
    /// events included). Unreachable within `connect_timeout`: starts with a new epoch; the
    /// threads keep retrying, then lock, migrate and replay the spool once it is reachable.
    /// A refused login or an unknown database is an error at once.
    pub fn start(
        cfg: &DbConfig,
        wake: Arc<dyn Fn() + Send + Sync>,
        connect_timeout: Duration,
    ) -> Result<(DbHandle, Receiver<DbMessage>, Resume), DbError> {
        start::start(cfg, wake, connect_timeout, false)
    }

    /// [`Db::start`] for a cluster node (docs/cluster.md, "Election"): the writer lock is the
    /// elector's, so this does not take it (writes are idempotent per `(epoch, seq)`, and only
    /// the leader submits events); the epoch is the database's and is never replaced (a fresh
    /// database gets one, the same for every node starting at once).
    pub fn start_in_cluster(
        cfg: &DbConfig,
        wake: Arc<dyn Fn() + Send + Sync>,
        connect_timeout: Duration,
    ) -> Result<(DbHandle, Receiver<DbMessage>, Resume), DbError> {
        start::start(cfg, wake, connect_timeout, true)
    }

    /// Applies pending migrations (`cryptoworker migrate`); returns the file names applied now.
    pub fn migrate(url: &str) -> Result<Vec<String>, DbError> {
        let pg = conn::pg_config(url)?;
        let mut client = conn::connect(&pg).map_err(|e| DbError::Connect(error::describe(&e)))?;
        migrate::run(&mut client)
    }
}

impl DbHandle {
    /// Queues an event for persistence. Never blocks: when the intake queue is full the event is
    /// counted in `dropped` and one error line is logged per streak.
    pub fn submit(&self, ev: Arc<Published>) {
        let Some(intake) = &self.intake else { return };
        let stats = &self.shared.stats;
        stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        match intake.try_send(ev) {
            Ok(()) => {
                if self.dropping.load(Ordering::Relaxed) {
                    self.dropping.store(false, Ordering::Relaxed);
                    log::warn!("[DB] Intake queue has room again; events are persisted again");
                }
            }
            Err(TrySendError::Full(ev) | TrySendError::Disconnected(ev)) => {
                DbStats::sub(&stats.queue_depth, 1);
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    log::error!(
                        "[DB] Intake queue full ({INTAKE_CAPACITY} events): event {} and \
                         following are NOT persisted until it drains",
                        ev.seq
                    );
                }
            }
        }
    }

    /// Queues an event for persistence when the intake queue has room; gives it back when it
    /// is full (the caller keeps it and offers it again: nothing is dropped). Used with the
    /// durability gate, which releases an event to clients only at or below [`Self::durable_seq`].
    pub fn try_submit(&self, ev: &Arc<Published>) -> bool {
        let Some(intake) = &self.intake else {
            return false;
        };
        let stats = &self.shared.stats;
        stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        match intake.try_send(ev.clone()) {
            Ok(()) => true,
            Err(_) => {
                DbStats::sub(&stats.queue_depth, 1);
                false
            }
        }
    }

    /// The durability watermark: every event of this run with a seq at or below it is committed
    /// to PostgreSQL or `fsync`ed to the spool.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    /// Asks for the events of `epoch` with `after_seq < seq <= up_to_seq` (at most
    /// [`MAX_QUERY_ROWS`], in order). The answer comes as [`DbMessage::Events`] with `query_id`;
    /// when the reader's queue is full the answer is an immediate error.
    pub fn query_events(&self, query_id: u64, epoch: &str, after_seq: u64, up_to_seq: u64) {
        let job = ReaderJob::Query {
            query_id,
            epoch: epoch.to_string(),
            after: after_seq,
            up_to: up_to_seq,
        };
        let sent = self.reader.as_ref().map(|r| r.try_send(job));
        if !matches!(sent, Some(Ok(()))) {
            let result = Err("database query queue full or closed; retry later".to_string());
            if self
                .messages
                .try_send(DbMessage::Events { query_id, result })
                .is_ok()
            {
                (self.shared.wake)();
            }
        }
    }

    /// Records that the daemon no longer knows this request: it leaves the open set.
    pub fn mark_request_gone(&self, coin: &str, request_id: &str) {
        let job = ReaderJob::Gone {
            coin: coin.to_string(),
            request_id: request_id.to_string(),
        };
        if let Some(r) = &self.reader
            && r.try_send(job).is_err()
        {
            log::warn!("[DB] Reader queue full; request {coin}/{request_id} not marked gone");
        }
    }

    /// Cluster mode: whether this node ingests now (it leads). A follower's writers open no
    /// connection and its listener follows no wallet or request (the reader serves resumes and
    /// fill-ins either way); a writer already connected stays so, to store what was submitted.
    pub fn set_ingesting(&self, on: bool) {
        self.shared.ingesting.store(on, Ordering::Release);
    }

    /// Cluster mode: the fencing term this node leads with, from the elector's takeover (0 when
    /// it stops leading). Every writer transaction checks it against the database's term and
    /// drops the batch when they differ (docs/cluster.md, "Fencing"). No effect outside cluster
    /// mode.
    pub fn set_lead_term(&self, term: u64) {
        self.shared.set_lead_term(term);
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<DbStats> {
        self.shared.stats.clone()
    }

    /// The epoch events are numbered in (same as [`Resume::epoch`]).
    pub fn epoch(&self) -> &str {
        &self.shared.epoch
    }

    /// Stops persistence: writes what it can to the database before `timeout`, puts the rest in
    /// the spool (fsync'd), releases the writer lock and joins the threads.
    pub fn shutdown(mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.shared.set_deadline(deadline);
        self.intake = None;
        self.reader = None;
        let grace = deadline + Duration::from_secs(3);
        if let Some(d) = self.dispatcher.take() {
            join_until(d, grace, "dispatcher");
        }
        self.shared.stop.store(true, Ordering::Release);
        for h in std::mem::take(&mut self.others) {
            join_until(h, grace + Duration::from_secs(2), "database thread");
        }
    }
}

impl Drop for DbHandle {
    /// Without `shutdown`: the threads spool what is left and end on their own (not joined).
    fn drop(&mut self) {
        if self.dispatcher.is_some() {
            self.shared.set_deadline(Instant::now());
            self.shared.stop.store(true, Ordering::Release);
        }
    }
}

/// Joins a thread if it ends before `until`; otherwise leaves it detached (logged).
fn join_until(h: JoinHandle<()>, until: Instant, what: &str) {
    while !h.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    if h.is_finished() {
        if h.join().is_err() {
            log::error!("[DB] The {what} thread panicked");
        }
    } else {
        log::error!("[DB] The {what} thread did not stop in time; leaving it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallet_key_is_xpub_or_xpub_contract() {
        let mut w = WatchedWallet {
            coin: "ETH".into(),
            xpub: "0xabc".into(),
            contract: None,
            label: None,
        };
        assert_eq!(w.key(), "0xabc");
        w.contract = Some("0xtoken".into());
        assert_eq!(w.key(), "0xabc_0xtoken");
        w.contract = Some(String::new());
        assert_eq!(w.key(), "0xabc");
    }
}
