//! Connection plumbing shared by every database thread: the parsed PostgreSQL configuration, the
//! writer advisory lock, the reconnect backoff's parameters, and the state the
//! threads share ([`Shared`]).
//!
//! Invariants: the writer lock ([`WRITER_LOCK_KEY`]) is a session-level advisory lock, so it is
//! held exactly as long as the connection that took it; `Shared::stats.connected` is the single
//! "lock held and schema current" flag every writer checks before it writes.

use super::DbMessage;
use super::error::{DbError, describe};
use super::stats::DbStats;
use crate::util::backoff::{Backoff, Jitter};
use crossbeam_channel::Sender;
use postgres::{Client, NoTls};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Session advisory lock key held by the one worker allowed to write to a database.
pub const WRITER_LOCK_KEY: i64 = 0x6377_7772_6974_0001;

/// Parses a connection string or URL and fills in the worker's defaults where it is silent:
/// `application_name=cryptoworker`, a 5 s connect timeout, TCP keepalives after 30 s idle and a
/// 30 s TCP user timeout (so a dead link fails a blocked write instead of hanging it).
pub(crate) fn pg_config(url: &str) -> Result<postgres::Config, DbError> {
    let mut c: postgres::Config = url.parse().map_err(|e| {
        DbError::Config(format!(
            "DATABASE_URL is not a valid connection string: {e}"
        ))
    })?;
    if c.get_application_name().is_none() {
        c.application_name("cryptoworker");
    }
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(5));
    }
    if c.get_tcp_user_timeout().is_none() {
        c.tcp_user_timeout(Duration::from_secs(30));
    }
    c.notice_callback(|n| {
        log::debug!("[DB] PostgreSQL {}: {}", n.severity(), n.message());
    });
    c.keepalives(true);
    c.keepalives_idle(Duration::from_secs(30));
    Ok(c)
}

/// Opens one connection (no TLS, as the crate is built without it).
pub(crate) fn connect(pg: &postgres::Config) -> Result<Client, postgres::Error> {
    pg.connect(NoTls)
}

/// Tries to take the writer lock on `client`'s session. `Ok(false)` when another session holds it.
pub(crate) fn try_lock(client: &mut Client) -> Result<bool, postgres::Error> {
    let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK_KEY])?;
    Ok(row.get(0))
}

/// A human description of the session holding the writer lock, for the `Locked` error.
pub(crate) fn lock_holder(client: &mut Client) -> String {
    let hi = WRITER_LOCK_KEY >> 32;
    let lo = WRITER_LOCK_KEY & 0xffff_ffff;
    let q =
        "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local'),
                    current_database()
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             LIMIT 1";
    match client.query_opt(q, &[&hi, &lo]) {
        Ok(Some(r)) => format!(
            "another cryptoworker holds the writer lock on database '{}' (server pid {}, \
             application '{}', client {}); stop it or point this worker at another database",
            r.get::<_, String>(3),
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
        ),
        Ok(None) => "another cryptoworker holds the writer lock on this database; stop it or \
                     point this worker at another database"
            .to_string(),
        Err(e) => format!(
            "another cryptoworker holds the writer lock on this database ({})",
            describe(&e)
        ),
    }
}

/// Takes the writer lock or fails with [`DbError::Locked`].
pub(crate) fn lock_or_fail(client: &mut Client) -> Result<(), DbError> {
    match try_lock(client) {
        Ok(true) => Ok(()),
        Ok(false) => Err(DbError::Locked(lock_holder(client))),
        Err(e) => Err(DbError::Query(format!(
            "taking the writer lock: {}",
            describe(&e)
        ))),
    }
}

/// Records `epoch` as the worker's current epoch.
pub(crate) fn store_epoch(client: &mut Client, epoch: &str) -> Result<(), postgres::Error> {
    client.execute(
        "INSERT INTO worker_state (id, epoch) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, updated_at = now()",
        &[&epoch],
    )?;
    Ok(())
}

/// Ceiling of the database threads' reconnect backoff (supervisor, listener, writers): a
/// server that comes back is noticed within about this long, however long it was away.
pub(crate) const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The database threads' reconnect backoff: `min` doubling to [`RECONNECT_BACKOFF_MAX`], ±25 %.
pub(crate) fn reconnect_backoff(min: Duration) -> Backoff {
    Backoff::with_jitter(min, RECONNECT_BACKOFF_MAX, Jitter::Spread)
}

/// State shared by the database threads and the handle.
pub(crate) struct Shared {
    /// Counters; `stats.connected` doubles as the "writers may write" flag.
    pub stats: Arc<DbStats>,
    /// The epoch this process numbers events in.
    pub epoch: Arc<str>,
    /// Messages to the reactor.
    pub messages: Sender<DbMessage>,
    /// Wakes the reactor after a message.
    pub wake: Arc<dyn Fn() + Send + Sync>,
    /// Set by `shutdown`: background loops (supervisor, listener, reader) end.
    pub stop: AtomicBool,
    /// Set by the dispatcher when it closes the writers' queue: idle writers end.
    pub closing: AtomicBool,
    /// The durability watermark (see `durable.rs`): every live event with a seq at or below it
    /// is committed or `fsync`ed to the spool. Written by the dispatcher, read by the reactor.
    pub durable_seq: AtomicU64,
    /// Whether this process ingests (always, outside cluster mode; a cluster node while it
    /// leads): writers open connections and the listener follows wallets and requests only then.
    pub ingesting: AtomicBool,
    /// Cluster mode only: the term this node leads with (0 while it does not lead); every
    /// writer transaction checks it against `cluster_term` (see `fence.rs`). `None` outside
    /// cluster mode, where no check is made.
    pub lead_term: Option<AtomicU64>,
    /// A fenced batch was logged since the last term change (one warning per change).
    pub fenced_warned: AtomicBool,
    /// Shutdown deadline in ms after `base`; `u64::MAX` while running.
    deadline_ms: AtomicU64,
    base: Instant,
}

impl Shared {
    /// Shared state for a new set of threads.
    pub fn new(
        stats: Arc<DbStats>,
        epoch: Arc<str>,
        messages: Sender<DbMessage>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Shared {
        Shared {
            stats,
            epoch,
            messages,
            wake,
            stop: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            durable_seq: AtomicU64::new(0),
            ingesting: AtomicBool::new(true),
            lead_term: None,
            fenced_warned: AtomicBool::new(false),
            deadline_ms: AtomicU64::new(u64::MAX),
            base: Instant::now(),
        }
    }

    /// True while the database is reachable, locked by us and migrated.
    pub fn ready(&self) -> bool {
        self.stats.connected.load(Ordering::Acquire)
    }

    /// True while this process ingests (see [`Shared::ingesting`]).
    pub fn ingesting(&self) -> bool {
        self.ingesting.load(Ordering::Acquire)
    }

    /// The term a writer transaction must find in `cluster_term` (cluster mode), else `None`.
    pub fn fence_term(&self) -> Option<u64> {
        self.lead_term.as_ref().map(|t| t.load(Ordering::Acquire))
    }

    /// Cluster mode: this node leads with `term` from now on (0: it does not lead).
    pub fn set_lead_term(&self, term: u64) {
        if let Some(t) = &self.lead_term {
            t.store(term, Ordering::Release);
            self.fenced_warned.store(false, Ordering::Release);
        }
    }

    /// True once shutdown began.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sets the shutdown deadline.
    pub fn set_deadline(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.base).as_millis() as u64;
        self.deadline_ms.store(ms, Ordering::Release);
    }

    /// The shutdown deadline, if shutdown began.
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline_ms.load(Ordering::Acquire) {
            u64::MAX => None,
            ms => Some(self.base + Duration::from_millis(ms)),
        }
    }

    /// True when a shutdown deadline is set and has passed.
    pub fn past_deadline(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Sends a message to the reactor (waiting at most 2 s if its queue is full) and wakes it.
    pub fn tell(&self, msg: DbMessage) {
        match self.messages.send_timeout(msg, Duration::from_secs(2)) {
            Ok(()) => (self.wake)(),
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => {
                log::warn!(
                    "[DB] Reactor message queue full for 2 s; a database message was dropped"
                )
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {}
        }
    }

    /// Sleeps up to `d`, in short slices, returning early when shutdown begins.
    pub fn nap(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_parsed_with_worker_defaults() {
        let c = pg_config("postgres://u@127.0.0.1:5432/db").unwrap();
        assert_eq!(c.get_application_name(), Some("cryptoworker"));
        assert_eq!(c.get_dbname(), Some("db"));
        assert!(matches!(
            pg_config("postgres://u@h:notaport/db"),
            Err(DbError::Config(_))
        ));
    }

    #[test]
    fn deadline_is_unset_until_shutdown() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let s = Shared::new(Arc::default(), "e".into(), tx, Arc::new(|| {}));
        assert!(s.deadline().is_none() && !s.past_deadline());
        s.set_deadline(Instant::now());
        assert!(s.past_deadline());
    }
}
