//! The two long-lived control connections.
//!
//! * The supervisor owns the connection that holds the writer advisory lock. It (re)connects
//!   with backoff, takes the lock, applies migrations, records the epoch, and only then marks the
//!   database ready (`stats.connected`), which lets writers write. It checks the connection every
//!   500 ms; when it is lost the lock is gone with it, so the database is marked not ready until
//!   the lock is taken again. If another worker took the lock meanwhile, this one keeps spooling
//!   and says so at error level.
//! * The listener owns the connection that `LISTEN`s on `cryptoworker_watch` (fed by triggers on
//!   `watched_wallets` and `payment_requests`). At start, after every reconnect and on every
//!   notification it reads the full sets and sends [`DbMessage::Wallets`] / [`DbMessage::Requests`]
//!   to the reactor, then wakes it.

use super::conn::{Shared, connect, lock_holder, reconnect_backoff, store_epoch, try_lock};
use super::error::{DbError, describe};
use super::{DbMessage, PaymentRequest, WatchedWallet, migrate};
use crate::util::backoff::Backoff;
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Notification channel the migration's triggers notify.
pub const CHANNEL: &str = "cryptoworker_watch";
/// Largest set sent to the reactor (more rows are ignored, with a warning).
pub const MAX_SET: usize = 1_000_000;
/// Interval of the supervisor's liveness check.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Holds the writer lock and decides readiness.
pub(crate) struct Supervisor {
    pub pg: postgres::Config,
    pub shared: Arc<Shared>,
    /// The lock connection, already locked and migrated when `Db::start` reached the database.
    pub client: Option<Client>,
    /// Cluster mode: the elector's session holds the writer lock and the epoch is the
    /// database's, so the supervisor neither locks nor stores the epoch.
    pub cluster: bool,
}

impl Supervisor {
    /// The thread body; ends (dropping the lock) when shutdown stops the background threads.
    pub fn run(mut self) {
        let mut backoff = reconnect_backoff(Duration::from_millis(500));
        let mut failing = false;
        let mut lock_logged = false;
        while !self.shared.stopping() {
            if self.shared.ready()
                && let Some(c) = self.client.as_mut()
            {
                self.shared.nap(CHECK_EVERY);
                if self.shared.stopping() {
                    break;
                }
                if let Err(e) = c.is_valid(Duration::from_secs(3)) {
                    log::warn!(
                        "[DB] Lost the PostgreSQL connection ({}); events spool until it is back",
                        describe(&e)
                    );
                    self.client = None;
                    self.set_ready(false);
                }
                continue;
            }
            match self.acquire() {
                Ok(true) => {
                    backoff.reset();
                    failing = false;
                    lock_logged = false;
                    self.set_ready(true);
                }
                Ok(false) => {
                    if !lock_logged {
                        log::error!("[DB] {}; writes spool meanwhile", self.holder());
                        lock_logged = true;
                    }
                    self.shared.nap(Duration::from_secs(5));
                }
                Err(msg) => {
                    if failing {
                        log::debug!("[DB] PostgreSQL still unreachable: {msg}");
                    } else {
                        log::warn!("[DB] PostgreSQL unreachable ({msg}); retrying with backoff");
                        failing = true;
                    }
                    self.shared.nap(backoff.next_delay());
                }
            }
        }
        self.set_ready(false);
    }

    fn holder(&mut self) -> String {
        match self.client.as_mut() {
            Some(c) => lock_holder(c),
            None => "another cryptoworker holds the writer lock".into(),
        }
    }

    /// Connects if needed, takes the lock, migrates and stores the epoch. `Ok(false)`: locked.
    fn acquire(&mut self) -> Result<bool, AcquireError> {
        let mut c = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            _ => connect(&self.pg)?,
        };
        match self.cluster || try_lock(&mut c)? {
            true => {}
            false => {
                self.client = Some(c);
                return Ok(false);
            }
        }
        migrate::run(&mut c).map_err(AcquireError::Migration)?;
        if !self.cluster {
            store_epoch(&mut c, &self.shared.epoch)?;
        }
        self.client = Some(c);
        Ok(true)
    }

    fn set_ready(&self, ready: bool) {
        let was = self.shared.stats.connected.swap(ready, Ordering::AcqRel);
        if was != ready {
            if ready {
                log::info!("[DB] Connected to PostgreSQL (writer lock held, schema current)");
            }
            self.shared.tell(DbMessage::Connected(ready));
        }
    }
}

/// Why the supervisor could not become the writer this time (it backs off and tries again).
#[derive(Debug)]
enum AcquireError {
    /// Connecting, locking or storing the epoch failed.
    Driver(postgres::Error),
    /// A migration failed.
    Migration(DbError),
}

impl From<postgres::Error> for AcquireError {
    fn from(e: postgres::Error) -> AcquireError {
        AcquireError::Driver(e)
    }
}

impl std::fmt::Display for AcquireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcquireError::Driver(e) => f.write_str(&describe(e)),
            AcquireError::Migration(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AcquireError {}

/// Watches `watched_wallets` and `payment_requests`.
pub(crate) struct Listener {
    pub pg: postgres::Config,
    pub shared: Arc<Shared>,
}

impl Listener {
    /// The thread body.
    pub fn run(self) {
        let mut backoff = reconnect_backoff(Duration::from_millis(500));
        while !self.shared.stopping() {
            if !self.shared.ready() || !self.shared.ingesting() {
                self.shared.nap(Duration::from_millis(100));
                continue;
            }
            if let Err(e) = self.session(&mut backoff) {
                log::debug!("[DB] Listener connection ended: {}", describe(&e));
                self.shared.nap(backoff.next_delay());
            }
        }
    }

    /// One connection's life: LISTEN, send both sets, then follow notifications.
    fn session(&self, backoff: &mut Backoff) -> Result<(), postgres::Error> {
        let mut c = connect(&self.pg)?;
        c.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        backoff.reset();
        self.send_wallets(&mut c)?;
        self.send_requests(&mut c)?;
        while !self.shared.stopping() && self.shared.ingesting() {
            let (mut wallets, mut requests) = (false, false);
            let mut mark = |payload: &str| match payload {
                "wallets" => wallets = true,
                "requests" => requests = true,
                _ => {
                    wallets = true;
                    requests = true;
                }
            };
            let first = c
                .notifications()
                .timeout_iter(Duration::from_millis(500))
                .next()?;
            if let Some(first) = first {
                mark(first.payload());
                let mut notes = c.notifications();
                let mut more = notes.iter();
                while let Some(n) = more.next()? {
                    mark(n.payload());
                }
            }
            if wallets {
                self.send_wallets(&mut c)?;
            }
            if requests {
                self.send_requests(&mut c)?;
            }
        }
        Ok(())
    }

    fn send_wallets(&self, c: &mut Client) -> Result<(), postgres::Error> {
        let rows = c.query(
            "SELECT upper(coin), xpub, contract, label FROM watched_wallets
             ORDER BY 1, 2, 3 LIMIT $1",
            &[&(MAX_SET as i64 + 1)],
        )?;
        if rows.len() > MAX_SET {
            log::warn!("[DB] watched_wallets has more than {MAX_SET} rows; the rest are ignored");
        }
        let set: Vec<WatchedWallet> = rows.iter().take(MAX_SET).filter_map(wallet).collect();
        log::debug!("[DB] {} watched wallets", set.len());
        self.shared.tell(DbMessage::Wallets(set));
        Ok(())
    }

    fn send_requests(&self, c: &mut Client) -> Result<(), postgres::Error> {
        let rows = c.query(
            "SELECT upper(pr.coin), pr.xpub, pr.contract, pr.request_id, pr.status,
                    pr.sent_amount::text, pr.tx_hashes, pr.confirmations
             FROM payment_requests pr
             WHERE pr.status IN (0, 2, 7)
               AND NOT EXISTS (SELECT 1 FROM payment_requests_gone g
                               WHERE g.coin = upper(pr.coin) AND g.request_id = pr.request_id)
             ORDER BY 1, 4 LIMIT $1",
            &[&(MAX_SET as i64 + 1)],
        )?;
        if rows.len() > MAX_SET {
            log::warn!("[DB] more than {MAX_SET} open payment requests; the rest are ignored");
        }
        let set: Vec<PaymentRequest> = rows.iter().take(MAX_SET).filter_map(request).collect();
        log::debug!("[DB] {} open payment requests", set.len());
        self.shared.tell(DbMessage::Requests(set));
        Ok(())
    }
}

/// A `watched_wallets` row; `None` (logged) when a column has an unexpected type or NULL.
fn wallet(r: &postgres::Row) -> Option<WatchedWallet> {
    let w = (|| {
        Ok::<_, postgres::Error>(WatchedWallet {
            coin: r.try_get(0)?,
            xpub: r.try_get(1)?,
            contract: r.try_get(2)?,
            label: r.try_get(3)?,
        })
    })();
    w.map_err(|e| log::warn!("[DB] Skipping a watched_wallets row: {}", describe(&e)))
        .ok()
}

/// A `payment_requests` row; `None` (logged) when a column has an unexpected type or NULL.
fn request(r: &postgres::Row) -> Option<PaymentRequest> {
    let p = (|| {
        let hashes: Option<Vec<Option<String>>> = r.try_get(6)?;
        Ok::<_, postgres::Error>(PaymentRequest {
            coin: r.try_get(0)?,
            xpub: r.try_get(1)?,
            contract: r.try_get(2)?,
            request_id: r.try_get(3)?,
            status: r.try_get(4)?,
            sent_amount: r
                .try_get::<_, Option<String>>(5)?
                .unwrap_or_else(|| "0".into()),
            tx_hashes: hashes.unwrap_or_default().into_iter().flatten().collect(),
            confirmations: r.try_get(7)?,
        })
    })();
    p.map_err(|e| log::warn!("[DB] Skipping a payment_requests row: {}", describe(&e)))
        .ok()
}
