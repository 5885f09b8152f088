//! Client protocol (docs/protocol.md): each subscription filter against real events injected
//! through the simulator, replace semantics of `subscribe`, `unsubscribe`, the `subscribed` echo,
//! every request error code with its `id`, `ping`, and the `get_status` fields.
//!
//! Pattern: a `"*"` witness client sees everything; once it has the last injected event, every
//! other client has had its share written in the same reactor turn, so a short grace window
//! tells "not delivered" from "not yet delivered".

mod common;

use common::events::tx_hash;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Reads the witness until an event satisfying `last` arrives; returns all its events.
fn witness_until(w: &mut WsClient, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        // Generous: a slow transaction lookup may hold the stream up to DAEMON_RPC_TIMEOUT_S.
        let e = w
            .event(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("witness stalled after {seen:?}"));
        let done = last(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

/// The event names a client received before the end marker (see
/// [`WsClient::events_before_pong`]).
fn names_before_pong(c: &mut WsClient) -> Vec<String> {
    c.events_before_pong()
        .iter()
        .map(|e| event_name(e).to_string())
        .collect()
}

fn is_block(h: u64) -> impl Fn(&Value) -> bool {
    move |e| event_name(e) == "new_block" && e["data"]["height"] == h
}

fn payment(id: &str, status: u64, sent: &str) -> Value {
    json!({"event": "new_payment", "address": id, "status": status, "status_str": "Unconfirmed",
           "tx_hashes": [tx_hash(1)], "sent_amount": sent})
}

#[test]
fn events_filter_and_star_including_unknown_event_names() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[]);
    let mut star = w.ws();
    let mut blocks = w.ws();
    let mut pay_tx = w.ws();
    star.subscribe(json!({"events": ["*"]}), deadline(5.0));
    blocks.subscribe(json!({"events": ["new_block"]}), deadline(5.0));
    pay_tx.subscribe(
        json!({"events": ["new_payment", "new_transaction"]}),
        deadline(5.0),
    );

    sim.emit(payment("aa00000001", 7, "0.001"), Some("W1"));
    sim.emit(
        json!({"event": "new_transaction", "tx": tx_hash(1)}),
        Some("W1"),
    );
    sim.emit(
        json!({"event": "verified_tx", "tx": tx_hash(1), "height": 800_001}),
        Some("W1"),
    );
    sim.emit(
        json!({"event": "x_custom_event", "foo": 1, "bar": "baz"}),
        Some("W1"),
    );
    sim.emit(json!({"event": "new_block", "height": 800_002}), None);

    let all = witness_until(&mut star, is_block(800_002));
    let names: Vec<&str> = all.iter().map(event_name).collect();
    assert_eq!(
        names,
        [
            "new_payment",
            "new_transaction",
            "verified_tx",
            "x_custom_event",
            "new_block"
        ]
    );
    for e in &all {
        assert_message_envelope(e);
        assert_eq!(e["data"]["coin"], "BTC", "{e}");
    }
    let custom = &all[3]["data"];
    assert_eq!(custom["wallet"], "W1", "{custom}");
    assert_eq!(
        custom["foo"], 1,
        "unknown events pass their fields through: {custom}"
    );
    assert_eq!(custom["bar"], "baz", "{custom}");
    assert_eq!(names_before_pong(&mut blocks), ["new_block"]);
    assert_eq!(
        names_before_pong(&mut pay_tx),
        ["new_payment", "new_transaction"]
    );
}

#[test]
fn coins_filter_is_case_insensitive_and_echoed_upper_case() {
    let btc = Sim::start("BTC", QUIET);
    let eth = Sim::start("ETH", QUIET);
    let w = worker_for(&[&btc, &eth], &[]);
    let mut star = w.ws();
    let mut only_btc = w.ws();
    let mut both = w.ws();
    star.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let r = only_btc.subscribe(
        json!({"events": ["new_block"], "coins": ["btc"]}),
        deadline(5.0),
    );
    assert_eq!(r["coins"], json!(["BTC"]), "{r}");
    let r = both.subscribe(
        json!({"events": ["new_block"], "coins": ["Eth", "BTC"]}),
        deadline(5.0),
    );
    let mut coins: Vec<String> = serde_json::from_value(r["coins"].clone()).unwrap();
    coins.sort();
    assert_eq!(coins, ["BTC", "ETH"], "{r}");

    eth.emit(json!({"event": "new_block", "height": 20_000_001}), None);
    witness_until(&mut star, is_block(20_000_001));
    btc.emit(json!({"event": "new_block", "height": 800_001}), None);
    witness_until(&mut star, is_block(800_001));

    let got: Vec<String> = only_btc
        .events_before_pong()
        .iter()
        .map(|e| e["data"]["coin"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["BTC"]);
    let got: Vec<String> = both
        .events_before_pong()
        .iter()
        .map(|e| e["data"]["coin"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["ETH", "BTC"]);
}

#[test]
fn wallets_filter_constrains_only_events_that_carry_a_wallet() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[]);
    let mut star = w.ws();
    let mut w1 = w.ws();
    star.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let r = w1.subscribe(json!({"events": ["*"], "wallets": ["W1"]}), deadline(5.0));
    assert_eq!(r["wallets"], json!(["W1"]), "{r}");
    assert_eq!(r["addresses"], json!(["*"]), "{r}");

    sim.emit(payment("bb00000001", 7, "0.5"), Some("W2"));
    sim.emit(
        json!({"event": "new_transaction", "tx": tx_hash(7)}),
        Some("W1"),
    );
    sim.emit(
        json!({"event": "new_transaction", "tx": tx_hash(8)}),
        Some("W2"),
    );
    sim.emit(json!({"event": "new_block", "height": 800_010}), None);
    witness_until(&mut star, is_block(800_010));

    let got = w1.events_before_pong();
    let summary: Vec<(String, Value)> = got
        .iter()
        .map(|e| (event_name(e).to_string(), e["data"]["wallet"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("new_transaction".to_string(), json!("W1")),
            ("new_block".to_string(), Value::Null)
        ]
    );
    assert_eq!(got[0]["data"]["tx_hash"], tx_hash(7));

    // daemon_status carries no wallet either: the daemon going away reaches this client.
    drop(sim);
    let e = w1.event(WAIT).expect("daemon_status after the daemon died");
    assert_eq!(event_name(&e), "daemon_status", "{e}");
    assert_eq!(e["data"]["coin"], "BTC", "{e}");
    assert_eq!(e["data"]["connected"], false, "{e}");
    assert!(
        e["data"]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{e}"
    );
}

#[test]
fn addresses_filter_matches_from_to_and_payment_address_and_passes_blocks() {
    let sim = Sim::start("ETH", QUIET);
    let w = worker_for(&[&sim], &[]);
    let mut star = w.ws();
    star.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let from = "0x1111111111111111111111111111111111111111";
    let to = "0x2222222222222222222222222222222222222222";
    let mut by_from = w.ws();
    let mut by_to = w.ws();
    let mut by_request = w.ws();
    let mut other = w.ws();
    let r = by_from.subscribe(
        json!({"events": ["new_transaction", "new_payment", "new_block"], "addresses": [from]}),
        deadline(5.0),
    );
    assert_eq!(r["addresses"], json!([from]), "{r}");
    by_to.subscribe(json!({"events": ["*"], "addresses": [to]}), deadline(5.0));
    by_request.subscribe(
        json!({"events": ["*"], "addresses": ["req-42"]}),
        deadline(5.0),
    );
    other.subscribe(json!({"events": ["new_transaction", "new_payment"], "addresses": ["0x3333333333333333333333333333333333333333"]}), deadline(5.0));

    let tx = format!("0x{}", tx_hash(3));
    sim.emit(
        json!({"event": "new_transaction", "tx": tx, "from_address": from, "to": to,
                    "amount": "0.100000000000000000", "contract": null}),
        Some(to),
    );
    sim.emit(
        json!({"event": "new_payment", "address": "req-42", "status": 3, "status_str": "Paid",
                    "tx_hashes": [tx], "sent_amount": "0.1", "contract": null}),
        Some(to),
    );
    sim.emit(json!({"event": "new_block", "height": 20_000_100}), None);
    witness_until(&mut star, is_block(20_000_100));

    let got = by_from.events_before_pong();
    assert_eq!(
        got.iter().map(event_name).collect::<Vec<_>>(),
        ["new_transaction", "new_block"]
    );
    assert_eq!(got[0]["data"]["data"]["from_address"], from, "{}", got[0]);
    let got = by_to.events_before_pong();
    assert_eq!(
        got.iter().map(event_name).collect::<Vec<_>>(),
        ["new_transaction", "new_block"]
    );
    assert_eq!(got[0]["data"]["data"]["to_address"], to, "{}", got[0]);
    let got = by_request.events_before_pong();
    assert_eq!(
        got.iter().map(event_name).collect::<Vec<_>>(),
        ["new_payment", "new_block"]
    );
    assert_eq!(got[0]["data"]["address"], "req-42", "{}", got[0]);
    assert!(names_before_pong(&mut other).is_empty());
}

#[test]
fn addresses_filter_matches_btc_output_addresses_from_get_transaction() {
    // A generated payment flow gives a transaction the simulator knows, so the worker's
    // get_transaction lookup fills `outputs`.
    let sim = Sim::start(
        "BTC",
        &["--rate", "20", "--wallets", "zpubW", "--preload-wallets"],
    );
    let w = worker_for(&[&sim], &[("LOG_LEVEL", "debug")]);
    let mut star = w.ws();
    star.subscribe(json!({"events": ["new_transaction"]}), deadline(5.0));
    let tx_ev = star.event_named("new_transaction", Duration::from_secs(10));
    let outputs = tx_ev["data"]["data"]["outputs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let address = outputs
        .first()
        .and_then(|o| o["address"].as_str())
        .unwrap_or_else(|| panic!("no outputs: {tx_ev}"))
        .to_string();
    let hash = tx_ev["data"]["tx_hash"].as_str().unwrap().to_string();

    let mut by_output = w.ws();
    by_output.subscribe(
        json!({"events": ["new_transaction"], "addresses": [address]}),
        deadline(5.0),
    );
    // The same transaction seen for another wallet is a new (coin, wallet, tx): delivered again.
    sim.emit(
        json!({"event": "new_transaction", "tx": hash}),
        Some("zpubOther"),
    );
    let e = by_output
        .event(Duration::from_secs(5))
        .expect("output-address match");
    assert_eq!(e["data"]["tx_hash"], hash, "{e}");
    assert_eq!(e["data"]["wallet"], "zpubOther", "{e}");
    let outs = e["data"]["data"]["outputs"].as_array().unwrap();
    assert!(outs.iter().any(|o| o["address"] == address.as_str()), "{e}");
    // Every other event it got (generated flows keep running) must carry the address too.
    for e in by_output.events_before_pong() {
        assert!(
            e.to_string().contains(&address),
            "delivered without the address: {e}"
        );
    }
}

#[test]
fn subscribe_replaces_the_filter_and_echoes_it() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[]);
    let mut star = w.ws();
    star.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let mut c = w.ws();
    let r = c.ask(json!({"type": "subscribe", "id": 11, "events": ["*"]}));
    assert_message_envelope(&r);
    assert_eq!(r["type"], "subscribed");
    assert_eq!(r["id"], 11);
    for dim in ["events", "coins", "wallets", "addresses"] {
        assert_eq!(r[dim], json!(["*"]), "{dim} should be unrestricted: {r}");
    }
    assert!(r["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    assert!(r["seq"].is_u64(), "{r}");
    assert!(r.get("resumed").is_none(), "no resumed without since: {r}");

    let r = c.subscribe(
        json!({"id": "x", "events": ["new_payment"], "wallets": ["W1"]}),
        deadline(5.0),
    );
    assert_eq!(r["id"], "x");
    assert_eq!(r["events"], json!(["new_payment"]));
    assert_eq!(r["wallets"], json!(["W1"]));
    assert_eq!(r["coins"], json!(["*"]));
    sim.emit(json!({"event": "new_block", "height": 800_100}), None);
    sim.emit(payment("cc00000001", 7, "1"), Some("W1"));
    sim.emit(payment("cc00000002", 7, "1"), Some("W2"));
    sim.emit(json!({"event": "new_block", "height": 800_101}), None);
    witness_until(&mut star, is_block(800_101));
    let got = c.events_before_pong();
    assert_eq!(
        got.len(),
        1,
        "only the W1 payment after the replace: {got:?}"
    );
    assert_eq!(got[0]["data"]["address"], "cc00000001");

    // A refused subscribe leaves the previous filter in place.
    let r = c.ask(json!({"type": "subscribe", "events": ["no_such_event"]}));
    assert_eq!(r["error"]["code"], "unknown_event", "{r}");
    sim.emit(payment("cc00000003", 7, "1"), Some("W1"));
    sim.emit(json!({"event": "new_block", "height": 800_102}), None);
    witness_until(&mut star, is_block(800_102));
    let got = c.events_before_pong();
    assert_eq!(
        got.iter()
            .map(|e| e["data"]["address"].clone())
            .collect::<Vec<_>>(),
        [json!("cc00000003")]
    );
}

#[test]
fn unsubscribe_by_event_and_everything() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[]);
    let mut star = w.ws();
    star.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let mut c = w.ws();
    c.subscribe(
        json!({"events": ["new_block", "new_payment", "verified_tx"]}),
        deadline(5.0),
    );
    let r = c.ask(json!({"type": "unsubscribe", "id": 5, "events": ["new_block"]}));
    assert_message_envelope(&r);
    assert_eq!(r["type"], "unsubscribed", "{r}");
    assert_eq!(r["id"], 5);
    let mut still: Vec<String> = serde_json::from_value(r["events"].clone()).unwrap();
    still.sort();
    assert_eq!(still, ["new_payment", "verified_tx"]);

    sim.emit(json!({"event": "new_block", "height": 800_200}), None);
    sim.emit(payment("dd00000001", 7, "1"), Some("W1"));
    sim.emit(json!({"event": "new_block", "height": 800_201}), None);
    witness_until(&mut star, is_block(800_201));
    assert_eq!(names_before_pong(&mut c), ["new_payment"]);

    let r = c.ask(json!({"type": "unsubscribe", "events": ["bogus_event"], "id": 6}));
    assert_eq!(r["error"]["code"], "unknown_event", "{r}");
    assert_eq!(r["id"], 6);

    let r = c.ask(json!({"type": "unsubscribe"}));
    assert_eq!(r["type"], "unsubscribed", "{r}");
    assert_eq!(r["events"], json!([]), "{r}");
    sim.emit(payment("dd00000002", 7, "1"), Some("W1"));
    sim.emit(
        json!({"event": "verified_tx", "tx": tx_hash(9), "height": 800_201}),
        Some("W1"),
    );
    sim.emit(json!({"event": "new_block", "height": 800_202}), None);
    witness_until(&mut star, is_block(800_202));
    assert!(names_before_pong(&mut c).is_empty());

    // "*" can be unsubscribed as a name too.
    c.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let r = c.ask(json!({"type": "unsubscribe", "events": ["*"]}));
    assert_eq!(r["events"], json!([]), "{r}");
}

/// Regression: lookups (`get_transaction`) against an idle, healthy simulator sometimes hung for
/// the whole DAEMON_RPC_TIMEOUT_S (5 s), so the event reached clients 5 s late with its fields
/// null, and address filters on outputs missed it.
#[test]
fn enrichment_lookups_against_a_healthy_daemon_never_stall_delivery() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[("LOG_LEVEL", "debug")]);
    let mut c = w.ws();
    c.subscribe(json!({"events": ["new_transaction"]}), deadline(5.0));
    for i in 0..30u64 {
        let started = std::time::Instant::now();
        sim.emit(
            json!({"event": "new_transaction", "tx": tx_hash(1000 + i)}),
            Some("W"),
        );
        let e = c.event(Duration::from_secs(8)).expect("event");
        assert_eq!(e["data"]["tx_hash"], tx_hash(1000 + i));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "lookup {i} held delivery for {took:?} (an RPC timeout?): {e}"
        );
        // Pacing: irregular idle gaps between lookups (the hang needed an idle connection).
        let idle_gap = Duration::from_millis((i % 5) * 40);
        std::thread::sleep(idle_gap);
    }
}
