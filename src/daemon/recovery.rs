//! The catch-up planner of one daemon: which catch-up calls to make, paced, on every (re)connect
//! and whenever the worker learns of a wallet or an open payment request while connected.
//!
//! On a connect: `getinfo`; every watched wallet is loaded (`getbalance`) and then drained
//! (`get_updates`, which returns and clears the daemon's queue of that wallet's recent events);
//! every open payment request is reconciled (`get_request`). A request or wallet the worker
//! learns of later in the same connection (the database's first read at start included) is
//! handled then, once. Calls are paced: at most `window` catch-up calls are outstanding, so live
//! lookups never queue behind more than that many, and nothing is dropped for a full queue. A
//! call that fails (timeout, transport) is retried up to [`MAX_ATTEMPTS`] times per connection.
//! Progress is summarised in one log line per catch-up (see [`Summary`]), not one per request.
//!
//! Sans-io: the coin's core (`super::core`) feeds connects, disconnects, answers and new sets, and
//! takes calls.
//! Invariants: every request id known while connected is asked at least once per connection
//! (unless the connection ends first); outstanding calls never exceed `window`; memory is bounded
//! by the open-request and wallet sets it is given.

use super::catchup::{OpenRequest, Purpose, get_request_call, xpub_param};
use super::rpc::CallError;
use crate::config::Family;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

/// Catch-up calls outstanding at once per daemon (the RPC pool has more connections, so live
/// lookups always find one free).
pub const CATCHUP_WINDOW: usize = 2;
/// Attempts per request or wallet per connection before it is counted as failed.
pub const MAX_ATTEMPTS: u8 = 3;

/// One unit of catch-up work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Task {
    Load(String),
    Drain(String),
    Reconcile(String),
}

/// What one catch-up did, for its summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub wallets_loaded: u64,
    pub wallets_drained: u64,
    pub events_recovered: u64,
    pub requests_reconciled: u64,
    pub requests_moved: u64,
    pub requests_gone: u64,
    pub failed: u64,
    /// The first failure, for the log.
    pub first_error: Option<String>,
}

/// How a reconciliation ended (the coin's core tells the planner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; `moved` when a `new_payment` was emitted.
    Reconciled { moved: bool },
    /// The daemon no longer knows the request.
    Gone,
    /// Failed; retried if attempts remain.
    Failed(String),
}

/// The catch-up state of one daemon.
#[derive(Debug)]
pub struct Planner {
    family: Family,
    window: usize,
    connected: bool,
    todo: VecDeque<Task>,
    /// Tasks queued or outstanding in this connection (never queued twice).
    known: HashSet<Task>,
    /// Attempts per task in this connection.
    attempts: HashMap<Task, u8>,
    outstanding: usize,
    summary: Summary,
    started: Option<Instant>,
    /// The work in progress began with a (re)connect (not a wallet or request learned later).
    after_connect: bool,
}

impl Planner {
    /// A planner for a daemon of `family` with at most `window` calls outstanding.
    pub fn new(family: Family, window: usize) -> Planner {
        Planner {
            family,
            window: window.max(1),
            connected: false,
            todo: VecDeque::new(),
            known: HashSet::new(),
            attempts: HashMap::new(),
            outstanding: 0,
            summary: Summary::default(),
            started: None,
            after_connect: false,
        }
    }

    /// The link is up: plan a full catch-up of `wallets` and `requests`.
    pub fn connected<'a>(
        &mut self,
        wallets: impl IntoIterator<Item = &'a String>,
        requests: impl IntoIterator<Item = &'a String>,
        now: Instant,
    ) {
        self.reset();
        self.connected = true;
        self.started = Some(now);
        self.after_connect = true;
        self.add_wallets(wallets);
        self.add_requests(requests);
    }

    /// The link went down: drop the plan; returns the summary of an unfinished catch-up.
    pub fn disconnected(&mut self) -> Option<(Summary, usize)> {
        let unfinished = self.started.is_some() && self.in_progress();
        let left = self.todo.len() + self.outstanding;
        let summary = std::mem::take(&mut self.summary);
        self.reset();
        unfinished.then_some((summary, left))
    }

    fn reset(&mut self) {
        self.connected = false;
        self.todo.clear();
        self.known.clear();
        self.attempts.clear();
        self.outstanding = 0;
        self.summary = Summary::default();
        self.started = None;
    }

    /// Wallets to load and drain (only those not handled yet in this connection).
    pub fn add_wallets<'a>(&mut self, wallets: impl IntoIterator<Item = &'a String>) {
        for w in wallets {
            self.push(Task::Load(w.clone()));
        }
    }

    /// Open requests to reconcile (only those not asked yet in this connection).
    pub fn add_requests<'a>(&mut self, ids: impl IntoIterator<Item = &'a String>) {
        for id in ids {
            self.push(Task::Reconcile(id.clone()));
        }
    }

    fn push(&mut self, task: Task) {
        if self.connected && self.known.insert(task.clone()) {
            if self.started.is_none() {
                self.started = Some(Instant::now());
            }
            self.todo.push_back(task);
        }
    }

    /// Whether catch-up work is queued or outstanding.
    pub fn in_progress(&self) -> bool {
        !self.todo.is_empty() || self.outstanding > 0
    }

    /// The next calls to make, within the window. A request no longer in `requests` (closed
    /// meanwhile) is skipped.
    pub fn next_calls(
        &mut self,
        requests: &HashMap<String, OpenRequest>,
    ) -> Vec<(&'static str, Value, Purpose)> {
        let mut calls = Vec::new();
        while self.outstanding < self.window {
            let Some(task) = self.todo.pop_front() else {
                break;
            };
            let call = match &task {
                Task::Load(w) => (
                    "getbalance",
                    json!({"xpub": xpub_param(w)}),
                    Purpose::LoadWallet(w.clone()),
                ),
                Task::Drain(w) => (
                    "get_updates",
                    json!({"xpub": xpub_param(w)}),
                    Purpose::Drain(w.clone()),
                ),
                Task::Reconcile(id) => {
                    let Some(r) = requests.get(id) else {
                        self.known.remove(&task);
                        continue;
                    };
                    let (method, params) = get_request_call(self.family, id, &r.wallet);
                    (method, params, Purpose::Reconcile(id.clone()))
                }
            };
            self.outstanding += 1;
            calls.push(call);
        }
        calls
    }

    /// A wallet load answered: drain its queue next, or retry / count the failure.
    pub fn loaded(&mut self, wallet: &str, result: Result<(), CallError>) {
        self.finish_call();
        let task = Task::Load(wallet.to_string());
        match result {
            Ok(()) => {
                self.summary.wallets_loaded += 1;
                self.push(Task::Drain(wallet.to_string()));
            }
            Err(e) => self.failed(task, e.to_string()),
        }
    }

    /// A wallet's `get_updates` answered with `recovered` events not delivered before.
    pub fn drained(&mut self, wallet: &str, result: Result<u64, CallError>) {
        self.finish_call();
        match result {
            Ok(recovered) => {
                self.summary.wallets_drained += 1;
                self.summary.events_recovered += recovered;
            }
            Err(e) => self.failed(Task::Drain(wallet.to_string()), e.to_string()),
        }
    }

    /// A reconciliation ended.
    pub fn reconciled(&mut self, id: &str, outcome: Outcome) {
        self.finish_call();
        match outcome {
            Outcome::Reconciled { moved } => {
                self.summary.requests_reconciled += 1;
                self.summary.requests_moved += u64::from(moved);
            }
            Outcome::Gone => self.summary.requests_gone += 1,
            Outcome::Failed(e) => self.failed(Task::Reconcile(id.to_string()), e),
        }
    }

    /// A catch-up call ended (its slot in the window is free again).
    fn finish_call(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    fn failed(&mut self, task: Task, error: String) {
        if !self.connected {
            return;
        }
        let n = self.attempts.entry(task.clone()).or_insert(0);
        *n += 1;
        if *n < MAX_ATTEMPTS {
            self.todo.push_back(task);
            return;
        }
        self.summary.failed += 1;
        self.summary.first_error.get_or_insert(error);
    }

    /// When the catch-up just finished: its summary, how long it took, and whether it was the
    /// catch-up of a (re)connect (work for a wallet or request learned later is not).
    pub fn finished(&mut self, now: Instant) -> Option<(Summary, std::time::Duration, bool)> {
        if self.in_progress() {
            return None;
        }
        let started = self.started.take()?;
        Some((
            std::mem::take(&mut self.summary),
            now.saturating_duration_since(started),
            std::mem::take(&mut self.after_connect),
        ))
    }
}

#[cfg(test)]
mod tests;
