//! The reader thread: answers `query_events` from the event log (for resume when memory no longer
//! holds the events) and records `mark_request_gone`, on its own connection, so neither waits
//! behind the writers.
//!
//! Invariants: a query returns at most [`MAX_QUERY_ROWS`] events, in seq order; it never answers
//! with a silent hole: when the rows found are not contiguous from `after_seq + 1` while events are
//! still queued or spooled, it waits up to 3 s for the writers to commit them, then answers an
//! error ("retry") instead of a partial list. One job at a time: a query that waits delays the
//! jobs behind it by as much.

use super::DbMessage;
use super::conn::{Shared, connect};
use super::error::{Failure, QueryError, classify};
use crate::event::{EventMeta, Published};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use postgres::Client;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Most events one `query_events` answer holds; ask again from the last seq for more.
pub const MAX_QUERY_ROWS: u64 = 100_000;
/// How long a query with a hole waits for queued events to be committed (well under the
/// reactor's 10 s resume timeout).
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// How often it looks again meanwhile.
const CATCH_UP_POLL: Duration = Duration::from_millis(20);

/// Work for the reader.
#[derive(Debug)]
pub(crate) enum ReaderJob {
    /// Events of `epoch` with `after < seq <= up_to`.
    Query {
        query_id: u64,
        epoch: String,
        after: u64,
        up_to: u64,
    },
    /// Leave this request out of the open set from now on.
    Gone { coin: String, request_id: String },
}

/// The reader's state.
pub(crate) struct Reader {
    pub pg: postgres::Config,
    pub jobs: Receiver<ReaderJob>,
    pub shared: Arc<Shared>,
    client: Option<Client>,
}

impl Reader {
    /// A reader fed by `jobs`.
    pub fn new(pg: postgres::Config, jobs: Receiver<ReaderJob>, shared: Arc<Shared>) -> Reader {
        Reader {
            pg,
            jobs,
            shared,
            client: None,
        }
    }

    /// The thread body: ends when the job queue closes or shutdown stops background threads.
    pub fn run(mut self) {
        loop {
            match self.jobs.recv_timeout(Duration::from_millis(250)) {
                Ok(ReaderJob::Query {
                    query_id,
                    epoch,
                    after,
                    up_to,
                }) => {
                    let result = self.query(&epoch, after, up_to).map_err(|e| e.to_string());
                    self.shared.tell(DbMessage::Events { query_id, result });
                }
                Ok(ReaderJob::Gone { coin, request_id }) => self.gone(&coin, &request_id),
                Err(RecvTimeoutError::Timeout) if self.shared.stopping() => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// The open connection, connecting when needed.
    fn client(&mut self) -> Result<&mut Client, QueryError> {
        if !self.shared.ready() {
            return Err(QueryError::NotConnected);
        }
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(connect(&self.pg).map_err(QueryError::Driver)?);
        }
        self.client.as_mut().ok_or(QueryError::NotConnected)
    }

    /// Drops the connection after a connection-level failure.
    fn failed(&mut self, e: postgres::Error) -> QueryError {
        if classify(&e) == Failure::Connection {
            self.client = None;
        }
        QueryError::Driver(e)
    }

    /// The events of `epoch` in `(after, up_to]`. When the rows found are not contiguous while
    /// events are still queued or spooled, the writers are given up to [`CATCH_UP_WAIT`] to
    /// commit them (a resume usually asks for events written a few milliseconds ago) before the
    /// answer is an error ("retry later"); never a list with a silent hole.
    fn query(&mut self, epoch: &str, after: u64, up_to: u64) -> Result<Vec<Published>, QueryError> {
        let give_up = Instant::now() + CATCH_UP_WAIT;
        loop {
            let out = self.query_once(epoch, after, up_to)?;
            let wanted = up_to.saturating_sub(after).min(MAX_QUERY_ROWS);
            let contiguous = out
                .iter()
                .enumerate()
                .all(|(i, p)| p.seq == after + 1 + i as u64)
                && out.len() as u64 == wanted;
            let stats = &self.shared.stats;
            let unwritten =
                stats.queue_depth.load(Ordering::Relaxed) + stats.spooled.load(Ordering::Relaxed);
            if contiguous || unwritten == 0 {
                return Ok(out);
            }
            let hopeless = !self.shared.ready() || self.shared.stopping();
            if hopeless || Instant::now() >= give_up {
                return Err(QueryError::NotPersisted { after, unwritten });
            }
            std::thread::sleep(CATCH_UP_POLL);
        }
    }

    /// One read of the rows of `epoch` in `(after, up_to]`, in seq order.
    fn query_once(
        &mut self,
        epoch: &str,
        after: u64,
        up_to: u64,
    ) -> Result<Vec<Published>, QueryError> {
        let after_i = i64::try_from(after).unwrap_or(i64::MAX);
        let up_to_i = i64::try_from(up_to).unwrap_or(i64::MAX);
        let limit = MAX_QUERY_ROWS as i64;
        let rows = self.client()?.query(
            "SELECT seq, payload::text, extract(epoch FROM created_at)::float8 FROM events
             WHERE epoch = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
            &[&epoch, &after_i, &up_to_i, &limit],
        );
        let rows = rows.map_err(|e| self.failed(e))?;
        let epoch: Arc<str> = epoch.into();
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let (seq, payload, ts): (i64, String, f64) = (
                r.try_get(0).map_err(QueryError::Driver)?,
                r.try_get(1).map_err(QueryError::Driver)?,
                r.try_get(2).map_err(QueryError::Driver)?,
            );
            let Ok(Value::Object(data)) = serde_json::from_str::<Value>(&payload) else {
                return Err(QueryError::BadPayload { seq });
            };
            let compact = Value::Object(data.clone()).to_string();
            let meta = EventMeta::from_data(&data);
            out.push(Published::from_payload(
                epoch.clone(),
                seq as u64,
                meta,
                &compact,
                ts,
            ));
        }
        Ok(out)
    }

    fn gone(&mut self, coin: &str, request_id: &str) {
        let coin = coin.to_uppercase();
        let result = self.client().and_then(|c| {
            c.execute(
                "INSERT INTO payment_requests_gone (coin, request_id) VALUES ($1, $2)
                 ON CONFLICT (coin, request_id) DO NOTHING",
                &[&coin, &request_id],
            )
            .map_err(QueryError::Driver)
        });
        match result {
            Ok(_) => log::info!("[DB] Payment request {coin}/{request_id} marked gone"),
            Err(e) => log::warn!(
                "[DB] Could not mark payment request {coin}/{request_id} gone ({e}); the next \
                 reconciliation will try again"
            ),
        }
        if let Some(c) = &self.client
            && c.is_closed()
        {
            self.client = None;
        }
    }
}
