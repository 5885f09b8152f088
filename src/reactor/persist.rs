//! The reactor's database side: messages from the persistence threads (watched wallets, open
//! payment requests, event-log answers, link state) and resume from the event log.
//!
//! Resume from the database: when a client's `since` is older than the ring holds, its filter is
//! installed at once but live events are *held* for it, the event log is asked for
//! `(since, boundary]`, and the ring's part `(boundary, last]` is captured. When the answer
//! arrives the client gets `subscribed` (with `resumed` true only if the log had every seq),
//! then the log's events, the ring's part and the held live events — in order, without a gap or
//! a duplicate.

use super::Reactor;
use crate::client::reply;
use crate::daemon::catchup::{self, OpenRequest};
use crate::db::{DbMessage, MAX_QUERY_ROWS, PaymentRequest, WatchedWallet};
use crate::event::Published;
use crate::fanout::filter::Filter;
use crate::reactor::conn_id::ConnId;
use crate::server::conn::Held;
use serde_json::{Value, json};
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
    /// Matching ring events after `up_to`, captured at subscribe time.
    pub tail: Vec<Arc<Published>>,
    /// `last_seq` when the client subscribed (the `seq` of the reply).
    pub last: u64,
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
                DbMessage::Requests(list) => self.db_requests(&list),
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

    /// The full set of watched wallets: load the new ones on connected daemons.
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
            let params = json!({"xpub": catchup::xpub_param(&w)});
            self.rpc_call(
                i,
                "getbalance",
                params,
                catchup::Purpose::LoadWallet(w),
                now,
            );
        }
    }

    /// The full set of open payment requests: remember them for reconciliation on reconnect.
    fn db_requests(&mut self, list: &[PaymentRequest]) {
        for d in &mut self.daemons {
            for r in list
                .iter()
                .filter(|r| r.coin.eq_ignore_ascii_case(&d.link.coin))
            {
                if d.requests.len() >= catchup::MAX_OPEN_REQUESTS {
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
                d.requests
                    .entry(r.request_id.clone())
                    .or_insert(OpenRequest {
                        wallet,
                        status: i64::from(r.status),
                        sent_amount: r.sent_amount.clone(),
                    });
            }
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

    /// Starts a resume from the event log for client `key`.
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
        let tail: Vec<Arc<Published>> = match self.pipeline.ring.since(up_to) {
            Ok(events) => events
                .filter(|p| filter.matches(&p.meta))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        };
        self.next_query += 1;
        let query_id = self.next_query;
        let client = self.gens.id(key);
        if let Some(c) = self.clients.get_mut(key) {
            c.held = Some(Box::new(Held {
                query_id,
                ..Held::default()
            }));
        }
        self.index.insert(key, filter.clone());
        self.resumes.insert(
            query_id,
            PendingResume {
                client,
                id,
                filter,
                after: since,
                up_to,
                tail,
                last,
            },
        );
        if let Some(db) = &self.db {
            db.query_events(query_id, &self.pipeline.epoch, since, up_to);
        }
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

    /// The event log answered a resume.
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
        let limit = self.config.limits.client_queue_bytes;
        let epoch = self.pipeline.epoch.clone();
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.held.as_ref().is_none_or(|h| h.query_id != query_id) {
            return; // the client subscribed again meanwhile
        }
        let held = c.held.take().map(|h| h.events).unwrap_or_default();
        c.send_text(&reply::subscribed(
            r.id.as_ref(),
            &r.filter,
            &epoch,
            r.last,
            Some(complete),
        ));
        let replay = if complete {
            rows.into_iter()
                .filter(|p| r.filter.matches(&p.meta))
                .map(Arc::new)
                .collect()
        } else {
            Vec::new()
        };
        let mut ok = true;
        for p in replay.into_iter().chain(r.tail).chain(held) {
            ok &= c.enqueue(p, limit);
        }
        if !ok {
            self.metrics.inc(&self.metrics.slow_consumer_closes);
            self.close_client(key, 4008, "slow consumer", Instant::now());
        }
        self.mark_dirty(key);
    }
}
