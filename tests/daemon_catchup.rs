//! Catch-up on every daemon (re)connect (issue 3; docs/daemon.md, "Catch-up after every connect"):
//! after a daemon is killed and restarted on its port, the worker loads every watched wallet on it
//! again (visible in the new simulator's `sim_rpc_log`), emits a `new_block` with `"recovered":
//! true` when the height moved, and reconciles open payment requests with `get_request`, emitting
//! `new_payment` (`"recovered": true`) only where the status or amount moved; a request the daemon
//! no longer knows is logged and forgotten.
//!
//! The restarted simulator starts with the `refuse_auth` fault so the test can move its height
//! (`sim_mine`) and requests (`sim_set_request`) before the worker gets in; then the fault is
//! cleared. The simulator starts at a fixed height (BTC 800000, ETH 20000000).

mod common;

use common::daemon::{Stream, emit_latency, restart, rpc_logged};
use common::events::{self, assert_envelope, request_id, tx_hash};
use common::{QUIET, QUIET_REFUSING, Sim, deadline, star_client, wait_until, worker_for};
use serde_json::{Value, json};

const W1: &str = "zpubCATCHUPwalletOne";
/// Seconds allowed for a reconnect's catch-up events to arrive once the worker is let in; below
/// the RPC timeout the tests give the worker ([`RPC_TIMEOUT`]), so an answer the worker lost shows
/// as a failure here rather than as a late, failed reconciliation.
const RECONCILE_WAIT: f64 = 8.0;
/// `DAEMON_RPC_TIMEOUT_S` for the workers of these tests.
const RPC_TIMEOUT: &str = "10";
const W2: &str = "zpubCATCHUPwalletTwo";

/// A payment update for request `id` (the shape a daemon pushes).
fn payment(id: &str, status: u64, sent: &str, hashes: &[String]) -> Value {
    json!({"event": "new_payment", "address": id, "status": status,
           "status_str": "", "tx_hashes": hashes, "sent_amount": sent})
}

/// Waits until `sim`'s RPC log shows `method` naming each of `wallets`.
fn wait_logged(sim: &Sim, method: &str, wallets: &[&str], secs: f64) {
    let what = format!(
        "{method} for {wallets:?} in the RPC log of simulate {}",
        sim.coin
    );
    wait_until(deadline(secs), &what, || {
        wallets.iter().all(|w| rpc_logged(sim, method, w))
    });
}

/// Emits `update` and checks it reached the client unchanged in the fields that matter.
fn announce(sim: &Sim, s: &mut Stream<'_>, update: Value, wallet: &str) {
    let (_, d) = emit_latency(sim, s, update.clone(), Some(wallet));
    assert_eq!(d["address"], update["address"], "{d}");
    assert_eq!(d["status"], update["status"], "{d}");
}

/// Lets the worker in again and waits for its `daemon_status` connected:true.
fn let_in(sim: &Sim, s: &mut Stream<'_>) {
    sim.set_fault(json!({"refuse_auth": false}));
    s.until_status(&sim.coin, true, deadline(15.0));
}

/// Reads until a probe emitted now comes back, so every event published before it was read.
fn drain(sim: &Sim, s: &mut Stream<'_>, i: u64) {
    emit_latency(sim, s, events::probe(i, 0), None);
}

/// The recovered `new_payment` events read so far, by request id.
fn recovered_payments(s: &Stream<'_>) -> Vec<Value> {
    s.named("new_payment")
        .into_iter()
        .filter(|d| d["recovered"] == true)
        .cloned()
        .collect()
}

#[test]
fn restart_reloads_wallets_recovers_the_height_and_reconciles_open_requests() {
    let sim = Sim::start("BTC", QUIET);
    let wallets = format!("{W1},{W2}");
    let env = [
        ("BTC_WALLETS", wallets.as_str()),
        ("DAEMON_RPC_TIMEOUT_S", RPC_TIMEOUT),
    ];
    let worker = worker_for(&[&sim], &env);
    wait_logged(&sim, "getbalance", &[W1, W2], 10.0);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    let mined = sim.mine();
    s.until_data(deadline(5.0), "the mined block", |d| d["height"] == mined);
    // Four open requests: r1 and r2 will move, r3 will not, r4 will be unknown after the restart.
    let (r1, r2, r3, r4) = (request_id(1), request_id(2), request_id(3), request_id(4));
    // Amounts in the daemon's own format (8 decimals), as its pushes and `get_request` give them.
    announce(
        &sim,
        &mut s,
        payment(&r1, 7, "0.00010000", &[tx_hash(1)]),
        W1,
    );
    announce(&sim, &mut s, payment(&r2, 0, "0.00000000", &[]), W2);
    announce(
        &sim,
        &mut s,
        payment(&r3, 7, "0.00030000", &[tx_hash(3)]),
        W1,
    );
    announce(&sim, &mut s, payment(&r4, 0, "0.00000000", &[]), W1);

    let (sim, _) = restart(sim, QUIET_REFUSING);
    s.until_status("BTC", false, deadline(10.0));
    for _ in 0..3 {
        sim.mine();
    }
    let height = mined + 2; // the new simulator started one block lower
    let set = |w: &str, id: &str, state: Value| {
        sim.call("sim_set_request", json!([w, id, state]));
    };
    set(
        W1,
        &r1,
        json!({"status": 3, "sent_amount": "0.0001", "tx_hashes": [tx_hash(1)]}),
    );
    set(
        W2,
        &r2,
        json!({"status": 7, "sent_amount": "0.00005", "tx_hashes": [tx_hash(2)]}),
    );
    set(
        W1,
        &r3,
        json!({"status": 7, "sent_amount": "0.0003", "tx_hashes": [tx_hash(3)]}),
    );
    let_in(&sim, &mut s);

    wait_logged(&sim, "getbalance", &[W1, W2], 10.0);
    let until = deadline(RECONCILE_WAIT);
    let is_block = |d: &Value| d["event"] == "new_block" && d["height"] == height;
    let is_paid = |id: &str| {
        let id = id.to_string();
        move |d: &Value| {
            d["event"] == "new_payment" && d["address"] == id.as_str() && d["recovered"] == true
        }
    };
    let (paid1, paid2) = (is_paid(&r1), is_paid(&r2));
    while !(s.has(is_block) && s.has(&paid1) && s.has(&paid2)) {
        if s.try_next(until).is_none() {
            panic!(
                "no recovered block, r1 and r2 in {RECONCILE_WAIT} s; the daemon was asked {:?}; \
                 events: {}",
                sim.rpc_log(),
                s.texts()
            );
        }
    }
    let block = s
        .named("new_block")
        .into_iter()
        .find(|d| is_block(d))
        .cloned();
    assert_eq!(block.map(|b| b["recovered"].clone()), Some(json!(true)));
    wait_until(
        deadline(RECONCILE_WAIT),
        "the request r4 logged as gone",
        || {
            worker
                .proc
                .output
                .tail(4000)
                .lines()
                .any(|l| l.contains(&r4) && l.contains("gone"))
        },
    );
    drain(&sim, &mut s, 1);
    check_reconciled(&s, &r1, &r2);
    for (text, v) in &s.seen {
        assert_envelope(text, v, "BTC");
    }

    // A second restart asks again only for the requests still open (r2, r3): r1 is paid and r4
    // gone.
    let (sim, _) = restart(sim, QUIET);
    s.until_status("BTC", false, deadline(10.0));
    s.until_status("BTC", true, deadline(15.0));
    wait_logged(&sim, "getbalance", &[W1, W2], 10.0);
    wait_until(deadline(10.0), "get_request for r2 and r3", || {
        asked_requests(&sim) >= 2
    });
    assert_eq!(asked_requests(&sim), 2, "{:?}", sim.rpc_log());
}

/// The recovered payments are exactly r1 (now paid) and r2 (now unconfirmed), with the
/// daemon's new status and amount.
fn check_reconciled(s: &Stream<'_>, r1: &str, r2: &str) {
    let got = recovered_payments(s);
    assert_eq!(got.len(), 2, "recovered payments: {got:?}");
    let by_id = |id: &str| {
        got.iter()
            .find(|d| d["address"] == id)
            .unwrap_or_else(|| panic!("no recovered new_payment for {id}: {got:?}"))
    };
    let p1 = by_id(r1);
    assert_eq!(
        (&p1["wallet"], &p1["status"]),
        (&json!(W1), &json!(3)),
        "{p1}"
    );
    assert_eq!(p1["tx_hashes"], json!([tx_hash(1)]), "{p1}");
    let p2 = by_id(r2);
    assert_eq!(
        (&p2["wallet"], &p2["status"]),
        (&json!(W2), &json!(7)),
        "{p2}"
    );
    let sent = p2["sent_amount"].as_str().unwrap_or_default();
    assert_eq!(common::decimal_units(sent, 8), Some(5_000), "{p2}");
}

/// How many `get_request` calls `sim` received (the worker makes them; the test does not).
fn asked_requests(sim: &Sim) -> usize {
    sim.rpc_log()
        .iter()
        .filter(|c| c["method"] == "get_request")
        .count()
}

#[test]
fn height_read_at_the_first_connect_counts_as_known() {
    // No block is announced during the first connection: the worker knows the height only from
    // the `getinfo` it made when it connected (docs/daemon.md, "Catch-up after every connect": a
    // height known before, from this run or the database, that moved gives a new_block).
    let sim = Sim::start("BTC", QUIET);
    let start = sim.state()["height"].as_u64().expect("height");
    let worker = worker_for(&[&sim], &[]);
    wait_until(deadline(10.0), "getinfo on connect", || {
        sim.rpc_log().iter().any(|c| c["method"] == "getinfo")
    });
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    let (sim, _) = restart(sim, QUIET_REFUSING);
    s.until_status("BTC", false, deadline(10.0));
    let moved = sim.mine();
    assert_eq!(moved, start + 1);
    let_in(&sim, &mut s);
    let what =
        format!("a recovered new_block for {moved} (getinfo said {start} at the first connect)");
    let block = s.until_data(deadline(5.0), &what, |d| d["event"] == "new_block");
    assert_eq!(
        (&block["height"], &block["recovered"]),
        (&json!(moved), &json!(true))
    );
    let st = worker.status();
    assert_eq!(st["daemons"]["BTC"]["height"], moved, "{st}");
}

#[test]
fn eth_token_wallets_are_reloaded_and_their_requests_reconciled() {
    let wallet =
        "0x5aBe0000000000000000000000000000000000a1_0xdAC17F958D2ee523a2206206994597C13D831ec7";
    let sim = Sim::start("ETH", QUIET);
    let worker = worker_for(&[&sim], &[("ETH_WALLETS", wallet)]);
    wait_logged(&sim, "getbalance", &[wallet], 10.0);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    let id = request_id(7);
    let mut update = payment(&id, 0, "0", &[]);
    update["contract"] = json!(wallet.rsplit_once('_').map(|(_, c)| c));
    announce(&sim, &mut s, update, wallet);

    let (sim, _) = restart(sim, QUIET_REFUSING);
    s.until_status("ETH", false, deadline(10.0));
    let hash = format!("0x{}", tx_hash(7));
    let state = json!({"status": 3, "sent_amount": "0.5", "tx_hashes": [hash]});
    sim.call("sim_set_request", json!([wallet, id, state]));
    let_in(&sim, &mut s);
    wait_logged(&sim, "getbalance", &[wallet], 10.0);
    let p = s.until_data(deadline(10.0), "the reconciled payment", |d| {
        d["event"] == "new_payment" && d["address"] == id.as_str()
    });
    assert_eq!(p["recovered"], true, "{p}");
    assert_eq!(
        (&p["wallet"], &p["status"]),
        (&json!(wallet), &json!(3)),
        "{p}"
    );
    assert_eq!(p["tx_hashes"], json!([hash]), "{p}");
    let sent = p["sent_amount"].as_str().unwrap_or_default();
    assert_eq!(
        common::decimal_units(sent, 18),
        Some(5 * 10u128.pow(17)),
        "{p}"
    );
    assert!(
        rpc_logged(&sim, "getrequest", wallet),
        "{:?}",
        sim.rpc_log()
    );
}

#[test]
fn unchanged_amount_written_differently_is_not_a_move() {
    // The worker learnt "0.0003" from a push; after the restart the daemon says "0.00030000" with
    // the same status. The amount did not move (reconciliation reports a request whose status or
    // amount moved, docs/daemon.md; amounts are decimal strings, so equal values must compare
    // equal).
    let sim = Sim::start("BTC", QUIET);
    let worker = worker_for(&[&sim], &[("BTC_WALLETS", W1)]);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    let id = request_id(9);
    announce(&sim, &mut s, payment(&id, 7, "0.0003", &[tx_hash(9)]), W1);
    let (sim, _) = restart(sim, QUIET_REFUSING);
    s.until_status("BTC", false, deadline(10.0));
    let state = json!({"status": 7, "sent_amount": "0.0003", "tx_hashes": [tx_hash(9)]});
    sim.call("sim_set_request", json!([W1, id, state]));
    let_in(&sim, &mut s);
    wait_logged(&sim, "get_request", &[W1], 10.0);
    drain(&sim, &mut s, 1);
    let got = recovered_payments(&s);
    assert!(got.is_empty(), "nothing moved, yet: {got:?}");
}
