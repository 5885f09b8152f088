//! Misbehaving daemons (issue 3; docs/daemon.md): refused credentials are retried and logged
//! at error level once per failure streak, naming the coin and `{COIN}_LOGIN`/`{COIN}_PASSWORD`;
//! repeated updates are dropped while ETH blocks that arrive out of order still go out; a slow
//! enrichment lookup never holds the stream beyond `DAEMON_RPC_TIMEOUT_S`; garbage frames are
//! ignored without dropping the link.

mod common;

use common::daemon::{Stream, emit_latency};
use common::events::{self, assert_envelope, index_of};
use common::{
    QUIET, QUIET_REFUSING, Sim, Worker, WorkerBuilder, deadline, star_client, wait_until,
    worker_for,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const W1: &str = "zpubFAULTSwalletOne";
const W2: &str = "zpubFAULTSwalletTwo";

/// The TCP connections `sim` accepted (each `sim_*` call the test makes counts one).
fn connections(sim: &Sim) -> u64 {
    sim.state()["counters"]["connections"]
        .as_u64()
        .expect("connections counter")
}

/// Waits until the worker has made `n` more connection attempts to `sim` (counted on the
/// simulator's side, net of the test's own `sim_state` calls). The worker's RPC pool stays idle
/// while its link is down, so every other connection is a link attempt.
fn wait_attempts(sim: &Sim, n: u64, secs: f64) {
    let base = connections(sim);
    let mut polls = 0;
    wait_until(deadline(secs), &format!("{n} connection attempts"), || {
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
        connections(sim) - base >= n + polls
    });
}

/// The worker's error-level log lines about credentials.
fn auth_errors(worker: &Worker, coin: &str) -> Vec<String> {
    worker
        .proc
        .output
        .tail(4000)
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(&format!("{coin}_PASSWORD")))
        .map(String::from)
        .collect()
}

/// Checks one credential error line: it names the coin and both variables to check.
fn assert_names_the_variables(line: &str) {
    for word in ["BTC", "BTC_LOGIN", "BTC_PASSWORD"] {
        assert!(line.contains(word), "{word} not named in {line:?}");
    }
}

#[test]
fn wrong_password_is_retried_and_logged_once_naming_the_variables() {
    let sim = Sim::start("BTC", QUIET);
    let worker = WorkerBuilder::new()
        .daemon(&sim)
        .env("BTC_PASSWORD", "not-the-password")
        .start();
    wait_attempts(&sim, 3, 10.0);
    let errors = auth_errors(&worker, "BTC");
    assert_eq!(errors.len(), 1, "one error line per streak: {errors:?}");
    assert_names_the_variables(&errors[0]);
    let st = worker.status();
    assert_eq!(st["daemons"]["BTC"]["connected"], false, "{st}");
    // The outage is announced once, with its reason, to every client (replayed from seq 0).
    let mut c = worker.ws();
    let reply = c.subscribe(
        json!({"events": ["daemon_status"], "since": 0}),
        deadline(5.0),
    );
    let (text, v) = c.recv_event_text(deadline(5.0));
    assert_envelope(&text, &v, "BTC");
    assert_eq!(v["data"]["connected"], false, "{text}");
    assert!(
        v["data"]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{text}"
    );
    // Three attempts failed, yet that one event is everything published so far.
    assert_eq!(
        v["seq"], reply["seq"],
        "failed retries are not new disconnects: {reply}"
    );
}

#[test]
fn refused_credentials_are_retried_logged_once_per_streak_then_succeed() {
    let sim = Sim::start("BTC", QUIET_REFUSING);
    let mut worker = WorkerBuilder::new().daemon(&sim).start();
    // Two retries are enough here (the wrong-password test counts more): every failure grows the
    // backoff, and the second streak below must still fit the test's time budget.
    wait_attempts(&sim, 2, 10.0);
    let errors = auth_errors(&worker, "BTC");
    assert_eq!(errors.len(), 1, "first streak: {errors:?}");
    assert_names_the_variables(&errors[0]);

    // Fixed: the next attempt connects.
    sim.set_fault(json!({"refuse_auth": false}));
    worker.wait_connected(&["BTC"], deadline(10.0));
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    emit_latency(&sim, &mut s, events::block(1), None);

    // A second streak (the link drops, credentials refused again) is logged once more.
    sim.set_fault(json!({"refuse_auth": true, "drop_after": 0}));
    s.until_status("BTC", false, deadline(10.0));
    wait_until(deadline(12.0), "the second streak's error line", || {
        auth_errors(&worker, "BTC").len() >= 2
    });
    sim.set_fault(json!({"refuse_auth": false, "drop_after": null}));
    s.until_status("BTC", true, deadline(20.0));
    emit_latency(&sim, &mut s, events::block(2), None);
    let errors = auth_errors(&worker, "BTC");
    assert_eq!(errors.len(), 2, "one line per streak: {errors:?}");
}

/// Emits each `(update, wallet)` on `sim`, then a probe, and returns the `data` of every event
/// the client got up to the probe (the probe excluded), checking `seq` continuity.
fn deliver(sim: &Sim, s: &mut Stream<'_>, plan: &[(Value, Option<&str>)]) -> Vec<Value> {
    let from = s.seen.len();
    for (update, wallet) in plan {
        sim.emit(update.clone(), *wallet);
    }
    let probe = 999;
    emit_latency(sim, s, events::probe(probe, 0), None);
    s.seen[from..s.seen.len() - 1]
        .iter()
        .map(|(_, v)| v["data"].clone())
        .collect()
}

#[test]
fn repeated_updates_are_dropped_and_new_ones_delivered_in_order() {
    let sim = Sim::start("BTC", QUIET);
    let worker = worker_for(&[&sim], &[("BTC_WALLETS", &format!("{W1},{W2}"))]);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    let paid = |sent: &str| {
        let mut p = events::payment(2);
        p["status"] = json!(3);
        p["status_str"] = json!("Paid");
        p["sent_amount"] = json!(sent);
        p
    };
    let mut reorged = events::verified(4);
    reorged["height"] = json!(events::HEIGHT_BASE + 5);
    let plan: Vec<(Value, Option<&str>, bool)> = vec![
        (events::transaction(1), Some(W1), true),
        (events::transaction(1), Some(W1), false), // same tx, same wallet
        (events::transaction(1), Some(W2), true),  // same tx, another wallet
        (events::payment(2), Some(W1), true),
        (events::payment(2), Some(W1), false), // same status and amount
        (paid("0.00000003"), Some(W1), true),  // the status moved
        (paid("0.00000004"), Some(W1), true),  // the amount moved
        (events::block(3), None, true),
        (events::block(3), None, false), // height already announced
        (events::verified(4), Some(W1), true),
        (events::verified(4), Some(W1), false), // same tx and height
        (reorged, Some(W1), true),              // same tx, another height
        (events::block(2), None, true),         // lower, but never announced
    ];
    let emitted: Vec<(Value, Option<&str>)> =
        plan.iter().map(|(u, w, _)| (u.clone(), *w)).collect();
    let got = deliver(&sim, &mut s, &emitted);
    let want: Vec<(Value, Option<&str>)> = plan
        .iter()
        .filter(|(_, _, new)| *new)
        .map(|(u, w, _)| (u.clone(), *w))
        .collect();
    assert_eq!(got.len(), want.len(), "delivered: {}", s.texts());
    for ((update, wallet), d) in want.iter().zip(&got) {
        assert_eq!(d["event"], update["event"], "{}", s.texts());
        assert_eq!(index_of(d), index_of_update(update), "{d} for {update}");
        assert_eq!(d["wallet"].as_str(), *wallet, "{d}");
    }
    assert_eq!(got[3]["status"], 3);
    assert_eq!(got[7]["height"], events::HEIGHT_BASE + 5);
    let metrics = worker.get("/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cryptoworker_duplicates_dropped_total") && l.ends_with(" 4")),
        "4 duplicates counted: {metrics}"
    );
}

/// The index [`index_of`] would read back from the client event of `update`.
fn index_of_update(update: &Value) -> Option<u64> {
    let mut d = update.clone();
    d["tx_hash"] = update["tx"].clone();
    index_of(&d)
}

#[test]
fn eth_blocks_out_of_order_are_delivered_and_repeats_dropped() {
    let sim = Sim::start("ETH", QUIET);
    let worker = worker_for(&[&sim], &[]);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    let base = sim.state()["height"].as_u64().expect("height") + 100;
    let heights = [5, 3, 4, 5, 3, 6, 1];
    let plan: Vec<(Value, Option<&str>)> = heights
        .iter()
        .map(|h| (json!({"event": "new_block", "height": base + h}), None))
        .collect();
    let got: Vec<u64> = deliver(&sim, &mut s, &plan)
        .iter()
        .map(|d| {
            assert_eq!(d["event"], "new_block", "{d}");
            d["height"].as_u64().unwrap_or(0) - base
        })
        .collect();
    assert_eq!(
        got,
        [5, 3, 4, 6, 1],
        "ETH blocks as the daemon sent them, repeats dropped"
    );
}

#[test]
fn enrichment_timeout_does_not_stall_the_stream() {
    let sim = Sim::start(
        "BTC",
        &["--rate", "0", "--block-interval", "0", "--wallets", W1],
    );
    let worker = worker_for(
        &[&sim],
        &[("BTC_WALLETS", W1), ("DAEMON_RPC_TIMEOUT_S", "1")],
    );
    wait_until(deadline(10.0), "the wallet loaded", || {
        common::daemon::rpc_logged(&sim, "getbalance", W1)
    });
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    sim.set_fault(json!({"rpc_delay_ms": 6000}));
    let plan = [1, 2, 3, 6, 9]; // transaction, payment, verified, transaction, probe
    let start = Instant::now();
    for i in plan {
        let wallet = events::mixed_has_wallet(i).then_some(W1);
        sim.emit(events::mixed(i), wallet);
    }
    let first = s.next(deadline(5.0));
    let first_at = start.elapsed();
    let mut got = vec![first];
    for _ in 1..plan.len() {
        got.push(s.next(deadline(5.0)));
    }
    let all_at = start.elapsed();
    let order: Vec<Option<u64>> = got.iter().map(|v| index_of(&v["data"])).collect();
    assert_eq!(order, plan.map(Some), "the daemon's order: {}", s.texts());
    assert!(
        first_at >= Duration::from_millis(800) && first_at < Duration::from_millis(3500),
        "the first transaction should wait ~1 s for its lookup, took {first_at:?}"
    );
    assert!(
        all_at < Duration::from_millis(4500),
        "held for {all_at:?} (the daemon answers after 6 s)"
    );
    for v in [&got[0], &got[3]] {
        let inner = &v["data"]["data"];
        assert!(
            inner["amount"].is_null() && inner["to_address"].is_null(),
            "{v}"
        );
    }

    // Lookups work again once the daemon answers in time (no stale answer is taken for a newer
    // call on a reused connection).
    sim.set_fault(json!({"rpc_delay_ms": 0}));
    sim.call("sim_pay", json!([]));
    let d = s.until_data(deadline(5.0), "the paid transaction", |d| {
        d["event"] == "new_transaction"
    });
    let tx = sim.call("get_transaction", json!([d["tx_hash"]]));
    let sats = tx["outputs"][0]["value_sats"].as_u64().map(u128::from);
    let amount = d["data"]["amount"]
        .as_str()
        .unwrap_or_else(|| panic!("not enriched: {d}"));
    assert_eq!(common::decimal_units(amount, 8), sats, "{d} vs {tx}");
}

/// Frames that are not JSON, not the update envelope, too deep or too long, or updates with
/// missing or mistyped fields are ignored; the good update of a mixed frame and later events flow.
#[test]
fn garbage_frames_are_ignored_and_the_link_stays_up() {
    let sim = Sim::start("BTC", QUIET);
    let worker = worker_for(&[&sim], &[("BTC_WALLETS", W1)]);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    let good = events::block(1);
    let frames = [
        "not json at all {".to_string(),
        "[1,2,3]".to_string(),
        "null".to_string(),
        r#"{"updates":"nope","wallet":null,"currency":"BTC"}"#.to_string(),
        r#"{"updates":[],"wallet":5,"currency":"BTC"}"#.to_string(),
        format!(r#"{{"updates":[42,{{"event":"new_transaction"}},{good}],"wallet":"{W1}"}}"#),
        r#"{"updates":[{"event":"new_block","height":-1}],"wallet":null}"#.to_string(),
        format!("{{\"updates\":[{}]}}", "[".repeat(10_000)),
        "\u{0}\u{7f}\u{fffd}".to_string(),
        "{}".to_string(),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("\"{}\"", "z".repeat(300_000)),
        r#"{"updates":5,"wallet":null,"currency":"BTC"}"#.to_string(),
        r#"{"updates":[{"event":"new_transaction","tx":"ab"}],"wallet":null}"#.to_string(),
        r#"{"updates":[{"event":"new_block","height":"tall"}],"wallet":null}"#.to_string(),
        r#"{"updates":[{"event":"new_payment","address":"r1","status":{}}],"wallet":"w"}"#
            .to_string(),
        r#"{"updates":[{"height":5}],"wallet":null,"currency":"BTC"}"#.to_string(),
    ];
    for f in &frames {
        sim.emit_raw(f);
    }
    let (_, d) = emit_latency(&sim, &mut s, events::block(2), None);
    assert_eq!(d["height"], events::HEIGHT_BASE + 2);
    let heights: Vec<&Value> = s.named("new_block").iter().map(|d| &d["height"]).collect();
    assert_eq!(
        heights,
        [
            &json!(events::HEIGHT_BASE + 1),
            &json!(events::HEIGHT_BASE + 2)
        ],
        "only the good update of the mixed frame, then the next event: {}",
        s.texts()
    );
    assert!(
        s.named("daemon_status").is_empty(),
        "the link stayed up: {}",
        s.texts()
    );
    let st = worker.status();
    assert_eq!(st["daemons"]["BTC"]["reconnects"], 0, "{st}");
}

#[test]
fn rpc_answers_that_arrive_at_once_are_not_lost() {
    // Regression: an RPC connection reused for the next queued call writes the request and reads
    // at once; an answer already there must be applied, not dropped (the call would then wait
    // for its timeout, holding every later event of the daemon behind it).
    let sim = Sim::start("BTC", QUIET);
    let env = [("BTC_WALLETS", W1), ("DAEMON_RPC_TIMEOUT_S", "10")];
    let worker = worker_for(&[&sim], &env);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    // One frame of 1000 transactions the daemon does not know: 1000 lookups queued at once, each
    // answered at once ("not found"), one after the other on the pool's reused connections.
    let n: u64 = 1000;
    let updates: Vec<Value> = (0..n).map(events::transaction).collect();
    let frame = json!({"updates": updates, "wallet": W1, "currency": "BTC"});
    let start = Instant::now();
    sim.emit_raw(&frame.to_string());
    for i in 0..n {
        let v = s.try_next(start + Duration::from_secs(8));
        let v = v.unwrap_or_else(|| {
            panic!("{i} of {n} transactions within 8 s (RPC timeout 10 s): an answer was lost")
        });
        assert_eq!(index_of(&v["data"]), Some(i), "the daemon's order");
    }
}
