//! The reactor's database side: messages from the persistence threads (watched wallets, open
//! payment requests, event-log answers, link state) and resume from the event log.
//!
//! Resume from the database: a client's session decides when the event log must be read (its
//! `since` is older than the ring holds, or its replay fell behind the ring) and what the answer
//! means (see `client::session`); here the read is sent to the persistence threads, routed back
//! to the session by query id (generation-checked), or timed out.

use super::Reactor;
use crate::db::{DbHandle, DbMessage, DbStats, PaymentRequest, WatchedWallet};
use crate::event::Published;
use crate::reactor::conn_id::ConnId;
use crossbeam_channel::Receiver;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// How long a resume waits for the event log before giving up (`resumed: false`).
const RESUME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The persistence threads as the reactor sees them (present when a database is configured).
pub(super) struct Persistence {
    /// Submits events and requests, reports durability, shuts the writers down.
    pub handle: DbHandle,
    /// Messages from the persistence threads (drained on the waker).
    pub messages: Receiver<DbMessage>,
    /// The persistence counters `get_status` and the dashboard report.
    pub stats: Arc<DbStats>,
}

impl Persistence {
    pub(super) fn new(handle: DbHandle, messages: Receiver<DbMessage>) -> Persistence {
        let stats = handle.stats();
        Persistence {
            handle,
            messages,
            stats,
        }
    }
}

/// The event-log reads sessions have in flight (client and session ticket), by query id.
#[derive(Default)]
pub(super) struct EventLogReads {
    /// Reads awaiting their answer or timeout, by query id.
    pending: HashMap<u64, PendingRead>,
    /// The last query id handed out (ids start at 1).
    last_query: u64,
}

impl EventLogReads {
    /// A fresh query id (shared with the cluster's event-log fill-ins).
    pub(super) fn next_query_id(&mut self) -> u64 {
        self.last_query += 1;
        self.last_query
    }
}

/// An event-log read in flight for a session.
#[derive(Debug)]
pub(super) struct PendingRead {
    /// The client (generation-checked: a closed client's answer is dropped).
    pub client: ConnId,
    /// The session's ticket for the read (a newer subscribe makes older ones moot).
    pub ticket: u32,
}

impl Reactor {
    /// Drains messages from the database threads.
    pub(super) fn on_db_messages(&mut self, now: Instant) {
        let Some(rx) = self.db.as_ref().map(|db| db.messages.clone()) else {
            return;
        };
        while let Ok(msg) = rx.try_recv() {
            match msg {
                DbMessage::Wallets(list) => {
                    self.db_wallets(&list, now);
                    self.cluster_remember_wallets(list);
                }
                DbMessage::Requests(list) => {
                    self.db_requests(&list, now);
                    self.cluster_remember_requests(list);
                }
                DbMessage::Events { query_id, result } => {
                    if self.cluster.is_none() {
                        self.resume_answer(query_id, result)
                    } else if !self.cluster_log_answer(query_id, &result, now) {
                        // A reply must not overtake events a cluster fill-in staged.
                        self.commit_fanout(now);
                        self.resume_answer(query_id, result)
                    }
                }
                DbMessage::Connected(up) => {
                    log::info!(
                        "[WORKER] Database {}",
                        if up {
                            "connected"
                        } else {
                            "unreachable; events spool locally"
                        }
                    );
                }
            }
        }
    }

    /// The full set of watched wallets: every coin's core takes its own.
    pub(super) fn db_wallets(&mut self, list: &[WatchedWallet], now: Instant) {
        for i in 0..self.daemons.len() {
            self.with_core(i, now, |core, out| core.on_db_wallets(list, now, out));
        }
    }

    /// The full set of open payment requests (the database is authoritative): every coin's core
    /// takes its own.
    pub(super) fn db_requests(&mut self, list: &[PaymentRequest], now: Instant) {
        for i in 0..self.daemons.len() {
            self.with_core(i, now, |core, out| core.on_db_requests(list, now, out));
        }
    }

    /// Reads `(after, up_to]` from the event log for session `ticket` of client `key`; the
    /// answer (or a timeout) goes back to the session.
    pub(super) fn ask_event_log(
        &mut self,
        key: usize,
        ticket: u32,
        after: u64,
        up_to: u64,
        now: Instant,
    ) {
        let query_id = self.reads.next_query_id();
        if let Some(db) = &self.db {
            db.handle
                .query_events(query_id, &self.pipeline.epoch, after, up_to);
        }
        let client = self.gens.id(key);
        self.reads
            .pending
            .insert(query_id, PendingRead { client, ticket });
        self.timers
            .schedule(now + RESUME_TIMEOUT, super::TimerOwner::Resume(query_id));
    }

    /// A resume the event log did not answer in time goes ahead with `resumed: false`.
    pub(super) fn resume_timeout(&mut self, query_id: u64) {
        if self.reads.pending.contains_key(&query_id) {
            self.resume_answer(query_id, Err("the event log did not answer in time".into()));
        }
    }

    /// The event log answered: its session decides (reply, replay the rows, or close).
    fn resume_answer(&mut self, query_id: u64, result: Result<Vec<Published>, String>) {
        let Some(read) = self.reads.pending.remove(&query_id) else {
            return;
        };
        if !self.gens.is_current(read.client) {
            return;
        }
        let key = read.client.key as usize;
        let filter = self.subs.get(key);
        let Some((session, _)) = self.clients.get_mut(key).and_then(|c| c.session_mut()) else {
            return;
        };
        let actions = session.on_event_log(read.ticket, result, &self.pipeline.epoch, filter);
        self.apply(key, actions, Instant::now());
    }
}
