//! The reactor's database side: messages from the persistence threads (watched wallets, open
//! payment requests, event-log answers, link state) and resume from the event log.
//!
//! Resume from the database: when a client's `since` is older than the ring holds, its filter is
//! installed at once but the client is paused in replay mode (the fan-out skips it), and the
//! event log is asked for `(since, boundary]` where `boundary` precedes the ring. When the answer
//! arrives the client gets `subscribed` (with `resumed` true only if the log had every seq), then
//! the log's events, then the ring from `boundary + 1`, then live — in order, without a gap or a
//! duplicate, paced by the client's reading (see `replay`).

use super::Reactor;
use crate::client::filter::Filter;
use crate::client::reply;
use crate::daemon::catchup::{self, OpenRequest};
use crate::db::{DbMessage, MAX_QUERY_ROWS, PaymentRequest, WatchedWallet};
use crate::event::Published;
use crate::reactor::conn_id::ConnId;
use crate::server::conn::Replay;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

/// How long a resume waits for the event log before giving up (`resumed: false`).
const RESUME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A client waiting for the event log to answer its resume.
#[derive(Debug)]
pub(super) struct PendingResume {
    pub client: ConnId,
    pub id: Option<Value>,
    pub filter: Filter,
    pub after: u64,
    pub up_to: u64,
    /// `last_seq` when the client subscribed (the `seq` of the reply).
    pub last: u64,
    /// A follow-up read for a replay that fell behind the ring (the reply was already sent).
    pub continuation: bool,
}

impl Reactor {
    /// Drains messages from the database threads.
    pub(super) fn on_db_messages(&mut self, now: Instant) {
        let Some(rx) = self.db_rx.clone() else {
            return;
        };
        while let Ok(msg) = rx.try_recv() {
            match msg {
                DbMessage::Wallets(list) => self.db_wallets(&list, now),
                DbMessage::Requests(list) => self.db_requests(&list, now),
                DbMessage::Events { query_id, result } => self.resume_answer(query_id, result),
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

    /// The full set of watched wallets (plus those of open payment requests): load the new ones
    /// on connected daemons.
    fn db_wallets(&mut self, list: &[WatchedWallet], now: Instant) {
        let mut calls = Vec::new();
        for (i, d) in self.daemons.iter_mut().enumerate() {
            let coin = &*d.link.coin;
            let mut keys: BTreeSet<String> = d.link.config.wallets.iter().cloned().collect();
            keys.extend(
                list.iter()
                    .filter(|w| w.coin.eq_ignore_ascii_case(coin))
                    .map(WatchedWallet::key),
            );
            // Wallets that open payment requests name stay watched too.
            keys.extend(d.requests.values().map(|r| r.wallet.clone()));
            let added: Vec<String> = keys
                .iter()
                .filter(|k| !d.wallets.contains(k))
                .cloned()
                .collect();
            if added.is_empty() && keys.len() == d.wallets.len() {
                continue;
            }
            log::info!(
                "[WORKER] Watching {} wallets for {coin} ({} new)",
                keys.len(),
                added.len()
            );
            d.wallets = keys.into_iter().collect();
            if d.link.stats.connected {
                calls.extend(added.into_iter().map(|w| (i, w)));
            }
        }
        for (i, w) in calls {
            if let Some(d) = self.daemons.get_mut(i) {
                d.plan.add_wallets([&w]);
            }
            self.pump_catchup(i, now);
        }
    }

    /// The full set of open payment requests (the database is authoritative): remember them,
    /// reconcile the ones not yet asked in this connection (now, if the daemon is connected;
    /// else at its next connect), and watch their wallets.
    fn db_requests(&mut self, list: &[PaymentRequest], now: Instant) {
        let mut loads = Vec::new();
        for (i, d) in self.daemons.iter_mut().enumerate() {
            let mut open = std::collections::HashMap::new();
            for r in list
                .iter()
                .filter(|r| r.coin.eq_ignore_ascii_case(&d.link.coin))
            {
                if open.len() >= catchup::MAX_OPEN_REQUESTS {
                    log::warn!(
                        "[WORKER] More than {} open payment requests for {}; the rest are not reconciled",
                        catchup::MAX_OPEN_REQUESTS,
                        d.link.coin
                    );
                    break;
                }
                let wallet = WatchedWallet {
                    coin: r.coin.clone(),
                    xpub: r.xpub.clone(),
                    contract: r.contract.clone(),
                    label: None,
                }
                .key();
                if !d.wallets.contains(&wallet) {
                    d.wallets.push(wallet.clone());
                    if d.link.stats.connected {
                        loads.push((i, wallet.clone()));
                    }
                }
                open.insert(
                    r.request_id.clone(),
                    OpenRequest {
                        wallet,
                        status: i64::from(r.status),
                        sent_amount: r.sent_amount.clone(),
                    },
                );
            }
            d.requests = open;
            // Reconciled now if connected (once per connection), else at the next connect.
            d.plan.add_requests(d.requests.keys());
        }
        for (i, w) in loads {
            if let Some(d) = self.daemons.get_mut(i) {
                d.plan.add_wallets([&w]);
            }
        }
        for i in 0..self.daemons.len() {
            self.pump_catchup(i, now);
        }
    }

    /// Whether a resume for `since` should be served from the event log.
    pub(super) fn can_resume_from_db(&self, since: u64) -> bool {
        let Some(first) = self.pipeline.ring.first_seq() else {
            return self.db.is_some()
                && self.pipeline.last_seq.saturating_sub(since) <= MAX_QUERY_ROWS;
        };
        self.db.is_some() && first.saturating_sub(since + 1) <= MAX_QUERY_ROWS
    }

    /// Starts a resume from the event log for client `key`: the filter is installed, the client
    /// waits (nothing is sent, live events stay in the ring for it) until the log answers.
    pub(super) fn start_db_resume(
        &mut self,
        key: usize,
        id: Option<Value>,
        filter: Filter,
        since: u64,
    ) {
        let last = self.pipeline.last_seq;
        let up_to = self
            .pipeline
            .ring
            .first_seq()
            .map_or(last, |f| f.saturating_sub(1));
        self.next_query += 1;
        let query_id = self.next_query;
        let client = self.gens.id(key);
        let replay = Replay {
            waiting_query: Some(query_id),
            next_seq: up_to + 1,
            ..Replay::default()
        };
        if let Some(c) = self.clients.get_mut(key) {
            c.replay = Some(Box::new(replay));
        }
        self.subs.insert(key, filter.clone());
        let pending = PendingResume {
            client,
            id,
            filter,
            after: since,
            up_to,
            last,
            continuation: false,
        };
        self.ask_event_log(query_id, pending);
    }

    /// A replaying client needs `(after, up_to]`, which the ring no longer holds: read it from
    /// the event log, then continue from the ring.
    pub(super) fn continue_from_db(&mut self, key: usize, filter: Filter, after: u64, up_to: u64) {
        self.next_query += 1;
        let query_id = self.next_query;
        let client = self.gens.id(key);
        if let Some(r) = self.clients.get_mut(key).and_then(|c| c.replay.as_mut()) {
            r.waiting_query = Some(query_id);
            r.next_seq = up_to + 1;
        }
        let last = self.pipeline.last_seq;
        let pending = PendingResume {
            client,
            id: None,
            filter,
            after,
            up_to,
            last,
            continuation: true,
        };
        self.ask_event_log(query_id, pending);
    }

    fn ask_event_log(&mut self, query_id: u64, pending: PendingResume) {
        if let Some(db) = &self.db {
            db.query_events(query_id, &self.pipeline.epoch, pending.after, pending.up_to);
        }
        self.resumes.insert(query_id, pending);
        self.timers.schedule(
            Instant::now() + RESUME_TIMEOUT,
            super::TimerOwner::Resume(query_id),
        );
    }

    /// A resume the event log did not answer in time goes ahead with `resumed: false`.
    pub(super) fn resume_timeout(&mut self, query_id: u64) {
        if self.resumes.contains_key(&query_id) {
            self.resume_answer(query_id, Err("the event log did not answer in time".into()));
        }
    }

    /// The event log answered a resume: reply, then replay the log's events and the ring's.
    fn resume_answer(&mut self, query_id: u64, result: Result<Vec<Published>, String>) {
        let Some(r) = self.resumes.remove(&query_id) else {
            return;
        };
        let key = r.client.key as usize;
        if !self.gens.is_current(r.client) {
            return;
        }
        let rows = match result {
            Ok(rows) => rows,
            Err(e) => {
                log::warn!("[WORKER] Resume from the event log failed: {e}");
                Vec::new()
            }
        };
        let complete = rows.len() as u64 == r.up_to - r.after
            && rows.iter().zip(r.after + 1..).all(|(p, seq)| p.seq == seq);
        let epoch = self.pipeline.epoch.clone();
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        let Some(replay) = c
            .replay
            .as_mut()
            .filter(|p| p.waiting_query == Some(query_id))
        else {
            return; // the client subscribed again meanwhile
        };
        replay.waiting_query = None;
        if r.continuation {
            if !complete {
                self.metrics.inc(&self.metrics.slow_consumer_closes);
                log::warn!(
                    "[WORKER] Client {key} fell behind and the event log could not fill the gap; closing with 4008"
                );
                self.close_client(key, 4008, "slow consumer", Instant::now());
                return;
            }
            replay.backlog = rows
                .into_iter()
                .filter(|p| r.filter.matches(&p.meta))
                .map(Arc::new)
                .collect();
            self.mark_dirty(key);
            return;
        }
        if complete {
            replay.backlog = rows
                .into_iter()
                .filter(|p| r.filter.matches(&p.meta))
                .map(Arc::new)
                .collect();
        } else {
            // Not resumable: live from the moment it subscribed, no replay.
            replay.next_seq = r.last + 1;
        }
        c.send_text(&reply::subscribed(
            r.id.as_ref(),
            &r.filter,
            &epoch,
            r.last,
            Some(complete),
        ));
        self.mark_dirty(key);
    }
}
