//! The reactor's cluster side (docs/cluster.md), present only when `REDIS_URL` is set: it starts
//! the cluster threads, hands their messages and the event-log answers to the sans-io
//! [`ClusterNode`], and runs the actions it returns.
//!
//! Every node delivers to its clients what the node's [`crate::cluster::Delivery`] releases (the
//! stream, the leader's own appended or held entries, event-log fill-ins), through the same ring
//! and staged fan-out as a single worker's durable events. Only the leader has daemon sources:
//! they are created on `Lead` (after the takeover plan is submitted and the sequence continued)
//! and dropped on `StopIngest`; its durable events go to the stream appender instead of straight
//! to clients. The database writers write under the leadership's fencing term, set on `Lead` and
//! cleared on `StopIngest` (docs/cluster.md, "Fencing").
//!
//! Invariants: without cluster mode nothing here runs (`Reactor::cluster` is `None`); the
//! pipeline's `last_seq` and ring follow the delivered sequence only, its `assigned_seq` the
//! leader's numbering; followers remember what they deliver (de-duplication, chain tips) so a
//! takeover does not re-send what the old leader sent.

use super::daemons::Daemons;
use super::source::EventSource;
use super::{Reactor, TimerOwner};
use crate::cluster::status::escape;
use crate::cluster::{
    Action, ClusterConfig, ClusterHandle, ClusterMessage, ClusterNode, Entry, NodeAction,
    StartOptions, Takeover,
};
use crate::db::{PaymentRequest, WatchedWallet};
use crate::event::{Event, EventMeta, Published};
use crossbeam_channel::Receiver;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Cluster messages handled per wake before the reactor turns again (fairness).
const MAX_MESSAGES_PER_WAKE: usize = 256;
/// The leader's own events kept for delivery without re-parsing (as many as the appender's
/// backlog holds; older ones are rebuilt from their entries).
const OWN_MAX: usize = 100_000;

/// The cluster as the reactor sees it.
pub(super) struct ClusterPart {
    handle: Option<ClusterHandle>,
    messages: Receiver<ClusterMessage>,
    pub node: ClusterNode,
    /// The epoch the elector reported for the leadership being taken over.
    lead_epoch: Option<Arc<str>>,
    /// The fencing term of that leadership (the writers get it on `Lead`).
    lead_term: u64,
    /// The event-log query of the delivery in flight, by query id.
    log_query: Option<u64>,
    /// Last known block height per coin (start, then delivered `new_block`s): a new leader's
    /// catch-up starts there.
    tips: HashMap<String, u64>,
    /// The latest watched wallets and open requests (a new leader's daemons start with them).
    wallets: Option<Vec<WatchedWallet>>,
    requests: Option<Vec<PaymentRequest>>,
    /// Entries the appender queue refused (delivered locally; followers read them from the log).
    pub append_refused: u64,
    /// Leader: the events handed to the appender and not delivered yet, in seq order (their
    /// `Published` is reused when the entry comes back).
    own: VecDeque<Arc<Published>>,
}

impl ClusterPart {
    /// Starts the cluster threads; this node follows, delivering after `last_seq` of `epoch`.
    pub fn start(
        cfg: &ClusterConfig,
        database_url: &str,
        epoch: Arc<str>,
        last_seq: u64,
        tips: HashMap<String, u64>,
        waker: Arc<mio::Waker>,
    ) -> std::io::Result<ClusterPart> {
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = waker.wake();
        });
        let opts = StartOptions {
            database_url: database_url.to_string(),
            lock_key: crate::db::WRITER_LOCK_KEY,
            read_after: last_seq,
        };
        let (handle, messages) = ClusterHandle::start(cfg, opts, wake)?;
        log::info!(
            "[CLUSTER] Node {} started (stream {}, delivering after seq {last_seq})",
            cfg.node_id,
            cfg.stream_key()
        );
        Ok(ClusterPart {
            handle: Some(handle),
            messages,
            node: ClusterNode::new(cfg, Some(epoch), last_seq + 1),
            lead_epoch: None,
            lead_term: 0,
            log_query: None,
            tips,
            wallets: None,
            requests: None,
            append_refused: 0,
            own: VecDeque::new(),
        })
    }

    /// Whether this node's clients receive the stream now (Redis link up, no gap being filled).
    pub fn receiving(&self) -> bool {
        self.node.status.redis_up && !self.node.delivery.is_filling()
    }

    /// The reactor's own cluster counters, in Prometheus text.
    pub fn render_metrics(&self) -> String {
        let name = "cryptoworker_cluster_append_refused_total";
        format!(
            "# HELP {name} events the full append queue refused (delivered locally only)\n\
             # TYPE {name} counter\n{name}{{cluster=\"{}\",node=\"{}\"}} {}\n",
            escape(&self.node.status.cluster),
            escape(&self.node.status.node),
            self.append_refused
        )
    }

    fn handle(&self) -> Option<&ClusterHandle> {
        self.handle.as_ref()
    }
}

impl Reactor {
    /// Drains the cluster threads' messages and runs what they call for.
    pub(super) fn on_cluster_messages(&mut self, now: Instant) {
        let Some(rx) = self.cluster.as_ref().map(|c| c.messages.clone()) else {
            return;
        };
        let mut actions = Vec::new();
        for _ in 0..MAX_MESSAGES_PER_WAKE {
            let Ok(msg) = rx.try_recv() else { break };
            if let Some(c) = self.cluster.as_mut() {
                c.node.on_message(msg, &mut actions);
            }
            self.run_cluster_actions(&mut actions, now);
        }
        if !rx.is_empty() {
            let _ = self.waker.wake(); // the rest next turn
        }
    }

    /// Keeps the latest wallets for a future leadership (cluster mode only).
    pub(super) fn cluster_remember_wallets(&mut self, list: Vec<WatchedWallet>) {
        if let Some(c) = self.cluster.as_mut() {
            c.wallets = Some(list);
        }
    }

    /// Keeps the latest open requests for a future leadership (cluster mode only).
    pub(super) fn cluster_remember_requests(&mut self, list: Vec<PaymentRequest>) {
        if let Some(c) = self.cluster.as_mut() {
            c.requests = Some(list);
        }
    }

    /// The event log answered query `query_id`; `false` when it is not the cluster's.
    pub(super) fn cluster_log_answer(
        &mut self,
        query_id: u64,
        result: &Result<Vec<Published>, String>,
        now: Instant,
    ) -> bool {
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        if c.log_query != Some(query_id) {
            return false;
        }
        c.log_query = None;
        let mut actions = Vec::new();
        match result {
            Ok(rows) => {
                let entries = rows.iter().map(Entry::from_published).collect();
                c.node.on_log_page(entries, &mut actions);
            }
            Err(e) => {
                log::warn!("[CLUSTER] Event-log fill-in failed: {e}");
                c.node.on_log_failed(&mut actions);
            }
        }
        self.run_cluster_actions(&mut actions, now);
        true
    }

    /// The event-log retry timer fired.
    pub(super) fn cluster_retry(&mut self, now: Instant) {
        let mut actions = Vec::new();
        if let Some(c) = self.cluster.as_mut() {
            c.node.on_retry(&mut actions);
        }
        self.run_cluster_actions(&mut actions, now);
    }

    /// Leader: durable events go to the stream; the clients get them when the appender hands
    /// them back (`Appended`, or `Held` while Redis is away). A full append queue gives them
    /// back at once: they are delivered here, and reach followers through the event log.
    pub(super) fn cluster_append(&mut self, durable: Vec<Arc<Published>>, now: Instant) {
        if durable.is_empty() {
            return;
        }
        let entries: Vec<Entry> = durable.iter().map(|p| Entry::from_published(p)).collect();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if !c.node.is_leading() {
            // Sequenced while this node led and stored since: the stream is the new leader's
            // now, so every node (this one too) gets them from the event log instead.
            log::debug!(
                "[CLUSTER] {} stored events not appended: this node no longer leads",
                durable.len()
            );
            return;
        }
        c.own.extend(durable);
        while c.own.len() > OWN_MAX {
            c.own.pop_front();
        }
        let Some(Err(refused)) = c.handle().map(|h| h.append(entries)) else {
            return;
        };
        c.append_refused += refused.len() as u64;
        log::warn!(
            "[CLUSTER] Append queue full: {} events delivered locally only",
            refused.len()
        );
        let mut actions = Vec::new();
        c.node
            .on_message(ClusterMessage::Held(refused), &mut actions);
        self.run_cluster_actions(&mut actions, now);
    }

    fn run_cluster_actions(&mut self, actions: &mut Vec<NodeAction>, now: Instant) {
        for action in actions.drain(..) {
            match action {
                NodeAction::Run(a) => self.run_delivery(a, now),
                NodeAction::Takeover {
                    epoch,
                    last_stored,
                    term,
                } => self.cluster_takeover(epoch, last_stored, term),
                NodeAction::Lead(plan) => self.cluster_lead(plan, now),
                NodeAction::StopIngest => self.cluster_stop_ingest(),
                NodeAction::StepDown => {
                    if let Some(h) = self.cluster.as_ref().and_then(ClusterPart::handle) {
                        h.step_down();
                    }
                }
            }
        }
    }

    fn run_delivery(&mut self, action: Action, now: Instant) {
        match action {
            Action::Deliver(entry) => self.cluster_deliver(&entry),
            Action::NewEpoch(epoch) => {
                log::info!("[CLUSTER] Epoch {epoch} starts");
                let size = self.config.limits.ring_size;
                self.pipeline.epoch = epoch;
                self.pipeline.last_seq = 0;
                self.pipeline.assigned_seq = 0;
                self.pipeline.ring = crate::fanout::ring::Ring::starting_after(size, 0);
            }
            Action::FetchLog {
                epoch,
                after,
                up_to,
            } => {
                let query_id = self.reads.next_query_id();
                if let (Some(c), Some(db)) = (self.cluster.as_mut(), &self.db) {
                    c.log_query = Some(query_id);
                    db.handle.query_events(query_id, &epoch, after, up_to);
                }
            }
            Action::RetryLater => {
                let at = now + crate::cluster::LOG_RETRY;
                self.timers.schedule(at, TimerOwner::ClusterRetry);
            }
            Action::ReadStreamFrom { after } => {
                if let Some(h) = self.cluster.as_ref().and_then(ClusterPart::handle) {
                    h.read_from(after);
                }
            }
            Action::Skipped { from, to } => {
                log::error!("[CLUSTER] Seqs {from}..={to} are in neither the stream nor the log")
            }
        }
    }

    /// Hands one delivered event to the ring, the handlers and the staged fan-out; a follower
    /// also remembers it for de-duplication and catch-up.
    fn cluster_deliver(&mut self, entry: &Entry) {
        let p = match self.own_published(entry) {
            Some(p) => p,
            None => {
                let data = match serde_json::from_str(&entry.payload) {
                    Ok(serde_json::Value::Object(data)) => data,
                    _ => serde_json::Map::new(),
                };
                let meta = EventMeta::from_data(&data);
                let p = Published::from_payload(
                    entry.epoch.clone(),
                    entry.seq,
                    meta,
                    &entry.payload,
                    entry.timestamp,
                );
                self.remember_delivered(&p, data);
                Arc::new(p)
            }
        };
        self.pipeline.assigned_seq = self.pipeline.assigned_seq.max(p.seq);
        self.deliver(p);
    }

    /// The leader's own `Published` for `entry`, when it still has it.
    fn own_published(&mut self, entry: &Entry) -> Option<Arc<Published>> {
        let own = &mut self.cluster.as_mut()?.own;
        while own.front().is_some_and(|p| p.seq < entry.seq) {
            own.pop_front();
        }
        own.front()
            .is_some_and(|p| p.seq == entry.seq && p.epoch == entry.epoch)
            .then(|| own.pop_front())
            .flatten()
    }

    /// Feeds de-duplication and chain tips with an event another leader sent (this node's own
    /// events are in them already).
    fn remember_delivered(
        &mut self,
        p: &Published,
        data: serde_json::Map<String, serde_json::Value>,
    ) {
        let ev = Event {
            coin: Arc::from(&*p.meta.coin),
            name: p.meta.name.to_string(),
            wallet: p.meta.wallet.as_deref().map(str::to_string),
            data,
        };
        self.pipeline.dedup.is_duplicate(&ev);
        if ev.name == "new_block"
            && let (Some(h), Some(c)) = (
                ev.data.get("height").and_then(serde_json::Value::as_u64),
                self.cluster.as_mut(),
            )
        {
            let tip = c.tips.entry(ev.coin.to_string()).or_default();
            *tip = (*tip).max(h);
        }
    }

    /// Elected: ask the appender for the takeover plan.
    fn cluster_takeover(&mut self, epoch: Option<String>, last_stored: u64, term: u64) {
        let epoch: Arc<str> = match epoch {
            Some(e) => e.into(),
            None => self.pipeline.epoch.clone(),
        };
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.lead_epoch = Some(epoch.clone());
        c.lead_term = term;
        let asked = c.handle().is_some_and(|h| h.takeover(&epoch, last_stored));
        if !asked && let Some(h) = c.handle() {
            log::error!("[CLUSTER] Cannot ask for the takeover plan; stepping down");
            h.step_down();
        }
    }

    /// The takeover plan: store what the old leader appended but did not store, continue the
    /// sequence after it, then connect to the daemons (catch-up runs on connect).
    fn cluster_lead(&mut self, plan: Takeover, now: Instant) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let epoch = c.lead_epoch.clone().unwrap_or(self.pipeline.epoch.clone());
        let tips = c.tips.clone();
        if let Some(db) = &self.db {
            db.handle.set_lead_term(c.lead_term);
            db.handle.set_ingesting(true);
        }
        // Through the gate, like the events this leader sequences, so they are stored in order
        // before any of those and none is dropped on a full intake (the gate holds and retries);
        // store-only: the old leader appended them, every node delivered them from the stream.
        for e in &plan.store {
            self.gate.hold_store_only(Arc::new(e.to_published()));
        }
        self.submit_held();
        if self.pipeline.epoch != epoch {
            self.pipeline.epoch = epoch.clone();
        }
        self.pipeline.assigned_seq = plan.next_seq.saturating_sub(1);
        log::info!(
            "[CLUSTER] Leading epoch {epoch} from seq {} ({} events of the old leader stored)",
            plan.next_seq,
            plan.store.len()
        );
        self.daemons = Daemons::new(&self.config, &tips, &self.metrics, now, &mut self.timers);
        let (wallets, requests) = match self.cluster.as_mut() {
            Some(c) => (c.wallets.take(), c.requests.take()),
            None => (None, None),
        };
        if let Some(list) = &wallets {
            self.db_wallets(list, now);
        }
        if let Some(list) = &requests {
            self.db_requests(list, now);
        }
        if let Some(c) = self.cluster.as_mut() {
            // Kept for a later leadership, unless the listener sent newer sets meanwhile.
            c.wallets = c.wallets.take().or(wallets);
            c.requests = c.requests.take().or(requests);
        }
    }

    /// No longer leading: close and drop the daemon links.
    fn cluster_stop_ingest(&mut self) {
        if let Some(c) = self.cluster.as_mut() {
            c.own.clear();
            if let Some(h) = c.handle() {
                // What the appender still holds (Redis away) must not reach the stream later.
                h.forget_appends();
            }
        }
        if let Some(db) = &self.db {
            db.handle.set_lead_term(0);
            db.handle.set_ingesting(false);
        }
        let dropped = self.gate.drop_unsubmitted();
        if dropped > 0 {
            log::warn!(
                "[CLUSTER] {dropped} sequenced events dropped before they were stored (the next leader's catch-up recovers them)"
            );
        }
        log::warn!("[CLUSTER] No longer leading: closing the daemon links");
        for d in self.daemons.iter_mut() {
            d.close();
        }
        self.daemons = Daemons::none();
    }

    /// Stops the cluster threads (after the database flushed, so a successor's takeover sees
    /// everything this node stored).
    pub(super) fn stop_cluster(&mut self) {
        if let Some(h) = self.cluster.as_mut().and_then(|c| c.handle.take()) {
            h.stop();
        }
    }
}
