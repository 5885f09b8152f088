//! The coin core, events in, actions out: table-driven where the cases share a shape.

use super::*;
use crate::daemon::catchup::Purpose;
use crate::daemon::rpc::{CallError, RpcDone};
use crate::db::{PaymentRequest, WatchedWallet};
use crate::http::jsonrpc::RpcError;
use std::collections::HashSet;

/// A core plus what a driver would hold: the action buffer, the metrics, the events already
/// published (for `seen`), and a clock.
struct Harness {
    core: CoinCore,
    metrics: Arc<Metrics>,
    out: Vec<Action>,
    seen: HashSet<String>,
    now: Instant,
}

fn harness(wallets: &[&str], enrich: bool) -> Harness {
    let config = CoinConfig::test_btc(wallets);
    let metrics = Arc::new(Metrics::default());
    Harness {
        core: CoinCore::new(&config, enrich, Some(100), metrics.clone()),
        metrics,
        out: Vec::new(),
        seen: HashSet::new(),
        now: Instant::now(),
    }
}

/// A short label for an event, for comparing sequences.
fn label(ev: &Event) -> String {
    let s = |k: &str| match ev.data.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "-".into(),
    };
    match ev.name.as_str() {
        "new_block" => format!("block {}", s("height")),
        "new_transaction" => format!(
            "tx {} {}",
            s("tx_hash"),
            ev.wallet.as_deref().unwrap_or("-")
        ),
        "new_payment" => format!("pay {} {}", s("address"), s("status")),
        "verified_tx" => format!("verified {}", s("tx_hash")),
        "daemon_status" => format!("status {}", s("connected")),
        other => other.to_string(),
    }
}

fn published(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish(ev) => Some(label(ev)),
            _ => None,
        })
        .collect()
}

fn calls(actions: &[Action]) -> Vec<Purpose> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Call { purpose, .. } => Some(purpose.clone()),
            _ => None,
        })
        .collect()
}

fn methods(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Call { method, .. } => Some(*method),
            _ => None,
        })
        .collect()
}

fn tx_frame(wallet: &str, hashes: &[&str]) -> String {
    let updates: Vec<Value> = hashes
        .iter()
        .map(|h| json!({"event": "new_transaction", "tx": h}))
        .collect();
    json!({"updates": updates, "wallet": wallet, "currency": "BTC"}).to_string()
}

fn not_found() -> CallError {
    CallError::Rpc(RpcError {
        code: -32603,
        message: "Exception: Request not found".into(),
    })
}

fn request(id: &str, wallet: &str, status: i32) -> PaymentRequest {
    PaymentRequest {
        coin: "BTC".into(),
        xpub: wallet.into(),
        contract: None,
        request_id: id.into(),
        status,
        sent_amount: "0".into(),
        tx_hashes: Vec::new(),
        confirmations: None,
    }
}

impl Harness {
    fn take(&mut self) -> Vec<Action> {
        for a in &self.out {
            if let Action::Publish(ev) = a {
                self.seen.insert(label(ev));
            }
        }
        std::mem::take(&mut self.out)
    }

    fn frame(&mut self, text: &str) -> Vec<Action> {
        self.core.on_frame(text, self.now, &mut self.out);
        self.take()
    }

    fn answer(&mut self, purpose: Purpose, result: Result<Value, CallError>) -> Vec<Action> {
        let done = RpcDone {
            purpose,
            method: "test",
            result,
        };
        let seen = &self.seen;
        let seen = |ev: &Event| seen.contains(&label(ev));
        self.core
            .on_rpc_done(vec![done], self.now, &seen, &mut self.out);
        self.take()
    }

    fn connect(&mut self) -> Vec<Action> {
        self.core.on_connected(self.now, &mut self.out);
        self.take()
    }

    fn disconnect(&mut self) -> Vec<Action> {
        self.core.on_disconnected("gone".into(), &mut self.out);
        self.take()
    }

    fn requests(&mut self, list: &[PaymentRequest]) -> Vec<Action> {
        self.core.on_db_requests(list, self.now, &mut self.out);
        self.take()
    }

    fn wallets(&mut self, keys: &[&str]) -> Vec<Action> {
        let list: Vec<WatchedWallet> = keys
            .iter()
            .map(|k| WatchedWallet {
                coin: "btc".into(),
                xpub: k.to_string(),
                contract: None,
                label: None,
            })
            .collect();
        self.core.on_db_wallets(&list, self.now, &mut self.out);
        self.take()
    }

    /// Answers every call in `actions` successfully with `answer(purpose)`, and the calls those
    /// answers lead to, until none is left; returns every action seen, in order.
    fn answer_all(
        &mut self,
        actions: Vec<Action>,
        answer: impl Fn(&Purpose) -> Value,
    ) -> Vec<Action> {
        let mut all = Vec::new();
        let mut pending: std::collections::VecDeque<Purpose> = calls(&actions).into();
        all.extend(actions);
        while let Some(p) = pending.pop_front() {
            let next = self.answer(p.clone(), Ok(answer(&p)));
            pending.extend(calls(&next));
            all.extend(next);
        }
        all
    }
}

fn lookup(ticket: u64, tx: &str) -> Purpose {
    Purpose::Enrich(
        ticket,
        crate::daemon::enrich::LookupKey {
            method: "get_transaction",
            tx: tx.into(),
        },
    )
}

fn tx_answer(confirmations: i64) -> Value {
    json!({"outputs": [{"address": "bc1a", "value_sats": 5}], "confirmations": confirmations})
}

/// What it is, enrichment on, the frame, the events published, the calls made, bad frames.
type FrameCase = (
    &'static str,
    bool,
    String,
    Vec<&'static str>,
    Vec<&'static str>,
    u64,
);

#[test]
fn frames_in_actions_out() {
    let tx = |h: &str| json!({"event": "new_transaction", "tx": h});
    let block = |h: u64| json!({"event": "new_block", "height": h});
    let frame = |updates: Vec<Value>| {
        json!({"updates": updates, "wallet": "w", "currency": "BTC"}).to_string()
    };
    let cases: Vec<FrameCase> = vec![
        (
            "a block goes out at once",
            true,
            frame(vec![block(5)]),
            vec!["block 5"],
            vec![],
            0,
        ),
        (
            "a BTC transaction waits for its lookup",
            true,
            frame(vec![tx("ab")]),
            vec![],
            vec!["get_transaction"],
            0,
        ),
        (
            "without enrichment it goes out at once",
            false,
            frame(vec![tx("ab")]),
            vec!["tx ab w"],
            vec![],
            0,
        ),
        (
            "a block behind a waiting transaction waits too",
            true,
            frame(vec![tx("ab"), block(6)]),
            vec![],
            vec!["get_transaction"],
            0,
        ),
        (
            "the same transaction twice makes one call",
            true,
            frame(vec![tx("ab"), tx("ab")]),
            vec![],
            vec!["get_transaction"],
            0,
        ),
        ("not JSON", true, "nope".into(), vec![], vec![], 1),
        (
            "an unreadable update is skipped, the rest go out",
            true,
            frame(vec![json!({"event": "new_block"}), block(7)]),
            vec!["block 7"],
            vec![],
            1,
        ),
    ];
    for (what, enrich, text, want_published, want_calls, bad) in cases {
        let mut h = harness(&[], enrich);
        let actions = h.frame(&text);
        assert_eq!(published(&actions), want_published, "{what}");
        assert_eq!(methods(&actions), want_calls, "{what}");
        assert_eq!(
            h.metrics.daemon_bad_frames.load(Ordering::Relaxed),
            bad,
            "{what}"
        );
    }
}

#[test]
fn answers_in_any_order_release_events_in_daemon_order() {
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let hashes = ["a", "b", "c"];
    for order in orders {
        let mut h = harness(&[], true);
        let purposes = calls(&h.frame(&tx_frame("w", &hashes)));
        assert_eq!(purposes.len(), 3);
        let mut released = Vec::new();
        let mut answered = [false; 3];
        for i in order {
            answered[i] = true;
            let actions = h.answer(purposes[i].clone(), Ok(tx_answer(i as i64 + 1)));
            for a in actions {
                let Action::Publish(ev) = a else {
                    panic!("{order:?}: only publishes expected, got {a:?}");
                };
                released.push(ev);
            }
            let prefix = answered.iter().take_while(|a| **a).count();
            assert_eq!(released.len(), prefix, "{order:?} after answering {i}");
        }
        for (i, ev) in released.iter().enumerate() {
            assert_eq!(ev.data["tx_hash"], hashes[i], "{order:?}");
            assert_eq!(ev.data["data"]["confirmations"], i as i64 + 1, "{order:?}");
            assert_eq!(ev.data["data"]["amount"], "0.00000005", "{order:?}");
        }
    }
}

#[test]
fn a_failed_lookup_releases_its_event_unenriched() {
    type Counter = fn(&Metrics) -> &std::sync::atomic::AtomicU64;
    let failed: Counter = |m| &m.lookups_failed;
    let overloaded: Counter = |m| &m.lookups_overloaded;
    let cases = [
        ("timeout", CallError::Timeout, failed),
        ("transport", CallError::Transport("reset".into()), failed),
        ("daemon error", not_found(), failed),
        ("queue full", CallError::Overloaded, overloaded),
    ];
    for (what, error, counter) in cases {
        let mut h = harness(&[], true);
        let purposes = calls(&h.frame(&tx_frame("w", &["a", "b"])));
        let actions = h.answer(purposes[1].clone(), Ok(tx_answer(3)));
        assert!(actions.is_empty(), "{what}: b waits behind a");
        let actions = h.answer(purposes[0].clone(), Err(error));
        assert_eq!(published(&actions), ["tx a w", "tx b w"], "{what}");
        let Action::Publish(a) = &actions[0] else {
            unreachable!()
        };
        assert_eq!(a.data["data"]["confirmations"], Value::Null, "{what}");
        assert_eq!(a.data["data"]["amount"], Value::Null, "{what}");
        assert_eq!(counter(&h.metrics).load(Ordering::Relaxed), 1, "{what}");
    }
}

#[test]
fn a_recent_answer_is_reused_and_a_call_in_flight_joined() {
    let mut h = harness(&[], true);
    let first = calls(&h.frame(&tx_frame("w1", &["ab"])));
    assert_eq!(first.len(), 1);
    assert!(
        h.frame(&tx_frame("w2", &["ab"])).is_empty(),
        "the second wallet's event joins the call in flight"
    );
    let actions = h.answer(first[0].clone(), Ok(tx_answer(2)));
    assert_eq!(published(&actions), ["tx ab w1", "tx ab w2"]);
    let actions = h.frame(&tx_frame("w3", &["ab"]));
    assert_eq!(published(&actions), ["tx ab w3"], "answered from the cache");
    let Action::Publish(ev) = &actions[0] else {
        unreachable!()
    };
    assert_eq!(ev.data["data"]["confirmations"], 2);
    let m = &h.metrics;
    assert_eq!(m.lookups.load(Ordering::Relaxed), 1);
    assert_eq!(m.lookups_coalesced.load(Ordering::Relaxed), 1);
    assert_eq!(m.lookup_cache_hits.load(Ordering::Relaxed), 1);
}

/// What the simulated daemon answers during a catch-up.
fn daemon_answers(p: &Purpose) -> Value {
    match p {
        Purpose::GetInfo => json!({"blockchain_height": 103}),
        Purpose::LoadWallet(_) => json!("0.5"),
        Purpose::Drain(w) => {
            json!([{"event": "verified_tx", "tx": format!("{w}-tx"), "height": 101}])
        }
        Purpose::Reconcile(_) => json!({"status": 3, "sent_amount": "0.1", "tx_hashes": ["ab"]}),
        Purpose::Enrich(..) => tx_answer(1),
    }
}

#[test]
fn a_connect_loads_drains_and_reconciles() {
    let mut h = harness(&["w1"], true);
    assert!(
        h.requests(&[request("r1", "w1", 0)]).is_empty(),
        "not connected"
    );
    assert!(!h.core.catching_up(), "not connected: nothing under way");
    let actions = h.connect();
    assert_eq!(published(&actions), ["status true"]);
    assert_eq!(methods(&actions), ["getinfo", "getbalance", "get_request"]);
    assert!(h.core.catching_up(), "calls out: catching up");
    let all = h.answer_all(actions, daemon_answers);
    assert!(!h.core.catching_up(), "every call answered: caught up");
    assert_eq!(
        methods(&all),
        ["getinfo", "getbalance", "get_request", "get_updates"],
        "load, then drain; the request is reconciled meanwhile (window of 2)"
    );
    assert_eq!(
        published(&all),
        ["status true", "block 103", "pay r1 3", "verified w1-tx"]
    );
    for a in &all {
        if let Action::Publish(ev) = a
            && ev.name != "daemon_status"
        {
            assert_eq!(ev.data["recovered"], true, "{}", label(ev));
        }
    }
    assert_eq!(h.core.height(), Some(103));
    let again = h.disconnect();
    assert_eq!(published(&again), ["status false"]);
    assert_eq!(
        methods(&h.connect()),
        ["getinfo", "getbalance"],
        "the paid request is closed: nothing to reconcile any more"
    );
}

#[test]
fn a_request_paid_while_disconnected_is_reconciled_on_reconnect() {
    let unpaid = json!({"status": 0, "sent_amount": "0"});
    let paid = json!({"status": 3, "sent_amount": "0.1"});
    let r1 = Purpose::Reconcile("r1".into());
    let mut h = harness(&[], true);
    h.requests(&[request("r1", "w", 0)]);
    assert!(calls(&h.connect()).contains(&r1));
    assert!(h.answer(r1.clone(), Ok(unpaid)).is_empty(), "nothing moved");
    h.disconnect();
    // Paid while the link was down: only the reconnect's catch-up can tell.
    assert!(
        calls(&h.connect()).contains(&r1),
        "asked again on reconnect"
    );
    let actions = h.answer(r1.clone(), Ok(paid));
    assert_eq!(published(&actions), ["pay r1 3"]);
}

#[test]
fn a_request_row_inserted_after_its_payment_is_reconciled_at_once() {
    let mut h = harness(&["w"], true);
    let catch_up = h.connect();
    h.answer_all(catch_up, daemon_answers);
    let actions = h.requests(&[request("r9", "w", 0)]);
    assert_eq!(calls(&actions), [Purpose::Reconcile("r9".into())]);
    let all = h.answer_all(actions, daemon_answers);
    assert_eq!(published(&all), ["pay r9 3"]);
    assert!(
        h.requests(&[request("r9", "w", 0)]).is_empty(),
        "asked once per connection"
    );
}

/// What it is, the answer, the events published, marked gone, calls made again.
type ReconcileCase = (
    &'static str,
    Result<Value, CallError>,
    Vec<&'static str>,
    bool,
    usize,
);

#[test]
fn reconciliation_outcomes() {
    let cases: Vec<ReconcileCase> = vec![
        (
            "unchanged",
            Ok(json!({"status": 0, "sent_amount": "0.0"})),
            vec![],
            false,
            0,
        ),
        (
            "paid",
            Ok(json!({"status": 3, "sent_amount": "1"})),
            vec!["pay r1 3"],
            false,
            0,
        ),
        (
            "partly paid",
            Ok(json!({"status": 0, "sent_amount": "0.5"})),
            vec!["pay r1 0"],
            false,
            0,
        ),
        ("unknown to the daemon", Err(not_found()), vec![], true, 0),
        (
            "timed out: asked again",
            Err(CallError::Timeout),
            vec![],
            false,
            1,
        ),
        ("no status: asked again", Ok(json!({})), vec![], false, 1),
    ];
    for (what, answer, want_published, gone, retries) in cases {
        let mut h = harness(&[], true);
        h.requests(&[request("r1", "w", 0)]);
        h.connect();
        let actions = h.answer(Purpose::Reconcile("r1".into()), answer);
        assert_eq!(published(&actions), want_published, "{what}");
        let marked = actions.contains(&Action::MarkGone("r1".into()));
        assert_eq!(marked, gone, "{what}");
        let again = calls(&actions)
            .iter()
            .filter(|p| **p == Purpose::Reconcile("r1".into()))
            .count();
        assert_eq!(again, retries, "{what}");
    }
}

#[test]
fn a_duplicate_get_updates_event_is_filtered() {
    let mut h = harness(&["w"], true);
    h.seen.insert("verified old".into());
    h.connect();
    let updates = json!([
        {"event": "verified_tx", "tx": "old", "height": 1},
        {"event": "verified_tx", "tx": "new", "height": 2},
    ]);
    let actions = h.answer(Purpose::Drain("w".into()), Ok(updates));
    assert_eq!(published(&actions), ["verified new"]);
}

#[test]
fn recovered_transactions_are_enriched_in_order() {
    let mut h = harness(&["w"], true);
    h.connect();
    let updates = json!([
        {"event": "new_transaction", "tx": "t1"},
        {"event": "verified_tx", "tx": "t1", "height": 2},
    ]);
    let actions = h.answer(Purpose::Drain("w".into()), Ok(updates));
    assert!(published(&actions).is_empty(), "t1 waits for its lookup");
    assert_eq!(calls(&actions), [lookup(1, "t1")]);
    let actions = h.answer(lookup(1, "t1"), Ok(tx_answer(4)));
    assert_eq!(published(&actions), ["tx t1 w", "verified t1"]);
}

#[test]
fn a_disconnect_releases_held_events_then_reports_it() {
    let mut h = harness(&[], true);
    h.connect();
    let frame = json!({"updates": [{"event": "new_transaction", "tx": "a"},
                                   {"event": "new_block", "height": 101}],
                       "wallet": "w", "currency": "BTC"});
    let purposes = calls(&h.frame(&frame.to_string()));
    let actions = h.disconnect();
    assert_eq!(published(&actions), ["tx a w", "block 101", "status false"]);
    let Action::Publish(ev) = &actions[0] else {
        unreachable!()
    };
    assert_eq!(ev.data["data"]["confirmations"], Value::Null);
    let late = h.answer(
        purposes[0].clone(),
        Err(CallError::Transport("gone".into())),
    );
    assert!(
        late.is_empty(),
        "an abandoned call changes nothing: {late:?}"
    );
    assert_eq!(h.core.queued(), 0);
}

#[test]
fn new_wallets_are_loaded_at_once_while_connected_else_at_the_connect() {
    let load = |w: &str| Purpose::LoadWallet(w.into());
    for connected in [true, false] {
        let mut h = harness(&["w1"], true);
        if connected {
            let catch_up = h.connect();
            h.answer_all(catch_up, daemon_answers);
        }
        let actions = h.wallets(&["w1", "w2"]);
        assert_eq!(
            calls(&actions),
            if connected { vec![load("w2")] } else { vec![] },
            "connected: {connected}"
        );
        assert!(h.wallets(&["w1", "w2"]).is_empty(), "nothing new");
        if !connected {
            let on_connect = calls(&h.connect());
            assert!(on_connect.contains(&load("w1")) && on_connect.contains(&load("w2")));
        }
    }
}

#[test]
fn getinfo_recovers_a_missed_block() {
    let cases = [
        ("the height moved", 105, vec!["block 105"], 105),
        ("the same height", 100, vec![], 100),
        ("an older node", 90, vec![], 100),
    ];
    for (what, height, want, known) in cases {
        let mut h = harness(&[], true);
        h.connect();
        let actions = h.answer(Purpose::GetInfo, Ok(json!({"blockchain_height": height})));
        assert_eq!(published(&actions), want, "{what}");
        assert_eq!(h.core.height(), Some(known), "{what}");
    }
}

#[test]
fn status_counts_what_was_published() {
    let mut h = harness(&[], true);
    assert_eq!((h.core.events(), h.core.last_event_at()), (0, None));
    h.core.published(12.5);
    h.core.published(13.0);
    assert_eq!((h.core.events(), h.core.last_event_at()), (2, Some(13.0)));
    assert_eq!(&**h.core.coin(), "BTC");
}
