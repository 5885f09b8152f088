//! Client requests other than filtering (docs/protocol.md): every error code with its `id` echoed
//! and the connection kept open, `ping`/`pong`, and the `get_status` fields.

mod common;

use common::*;
use serde_json::{Value, json};

/// Sends `text` and returns the error reply, checking its envelope and code.
fn expect_error(c: &mut WsClient, text: &str, code: &str) -> Value {
    c.send_text(text);
    let r = c.reply();
    assert_message_envelope(&r);
    assert_eq!(r["type"], "error", "{text} -> {r}");
    assert_eq!(r["error"]["code"], code, "{text} -> {r}");
    assert!(
        r["error"]["message"].as_str().is_some_and(|m| m.len() > 5),
        "{r}"
    );
    r
}

#[test]
fn every_error_code_with_its_id_and_the_connection_survives() {
    let w = Worker::without_daemon(&[]);
    let mut c = w.ws();
    let r = expect_error(&mut c, "this is not json", "invalid_json");
    assert!(r["id"].is_null(), "{r}");
    expect_error(&mut c, "[1,2,3]", "invalid_message");
    expect_error(&mut c, "\"subscribe\"", "invalid_message");
    let r = expect_error(&mut c, r#"{"id":7}"#, "invalid_message");
    assert_eq!(r["id"], 7);
    let r = expect_error(&mut c, r#"{"id":"s7","type":42}"#, "invalid_message");
    assert_eq!(r["id"], "s7");
    let r = expect_error(&mut c, r#"{"id":"a","type":"dance"}"#, "unknown_type");
    assert_eq!(r["id"], "a");

    let field_cases = [
        (r#"{"id":1,"type":"subscribe"}"#, "events"),
        (
            r#"{"id":1,"type":"subscribe","events":"new_block"}"#,
            "events",
        ),
        (r#"{"id":1,"type":"subscribe","events":[1]}"#, "events"),
        (
            r#"{"id":1,"type":"subscribe","events":["*"],"coins":5}"#,
            "coins",
        ),
        (
            r#"{"id":1,"type":"subscribe","events":["*"],"wallets":[true]}"#,
            "wallets",
        ),
        (
            r#"{"id":1,"type":"subscribe","events":["*"],"addresses":{}}"#,
            "addresses",
        ),
        (
            r#"{"id":1,"type":"subscribe","events":["*"],"since":-1}"#,
            "since",
        ),
        (
            r#"{"id":1,"type":"subscribe","events":["*"],"since":"x"}"#,
            "since",
        ),
        (
            r#"{"id":1,"type":"subscribe","events":["*"],"since":1,"epoch":5}"#,
            "epoch",
        ),
        (
            r#"{"id":1,"type":"unsubscribe","events":"new_block"}"#,
            "events",
        ),
        (r#"{"id":1,"type":"auth","token":5}"#, "token"),
    ];
    for (text, field) in field_cases {
        let r = expect_error(&mut c, text, "invalid_field");
        assert_eq!(r["id"], 1, "{text} -> {r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(field),
            "{text}: message should name {field:?}: {msg}"
        );
    }

    let r = expect_error(
        &mut c,
        r#"{"id":3,"type":"subscribe","events":["new_block","new_blok"]}"#,
        "unknown_event",
    );
    assert_eq!(r["id"], 3);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("new_blok"),
        "{r}"
    );
    let r = expect_error(
        &mut c,
        r#"{"id":4,"type":"subscribe","events":["*"],"coins":["btc","DOGE"]}"#,
        "unknown_coin",
    );
    assert_eq!(r["id"], 4);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("DOGE"),
        "{r}"
    );

    // No error closed the connection.
    let r = c.ask(json!({"type": "ping", "id": "still-here"}));
    assert_eq!(r["type"], "pong", "{r}");
    assert_eq!(r["id"], "still-here");
}

#[test]
fn ping_answers_pong_with_the_id() {
    let w = Worker::without_daemon(&[]);
    let mut c = w.ws();
    for id in [json!(42), json!("abc"), json!(1.5)] {
        let r = c.ask(json!({"type": "ping", "id": id}));
        assert_message_envelope(&r);
        assert_eq!(r["type"], "pong", "{r}");
        assert_eq!(r["id"], id, "{r}");
    }
    let r = c.ask(json!({"type": "ping"}));
    assert_eq!(r["type"], "pong");
    assert!(r.get("id").is_none_or(Value::is_null), "{r}");
}

#[test]
fn get_status_has_every_spec_field() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[("BTC_NETWORK", "testnet")]);
    let mut c = w.ws();
    let sub = c.subscribe(json!({"events": ["new_block"]}), deadline(5.0));
    sim.emit(json!({"event": "new_block", "height": 812_345}), None);
    let e = c.event_named("new_block", WAIT);
    let r = c.ask(json!({"type": "get_status", "id": 99}));
    assert_message_envelope(&r);
    assert_eq!(r["type"], "status", "{r}");
    assert_eq!(r["id"], 99);
    let d = &r["data"];
    assert_eq!(d["running"], true, "{d}");
    assert!(d["version"].as_str().is_some_and(|v| !v.is_empty()), "{d}");
    assert!(d["uptime_s"].is_number(), "{d}");
    assert_eq!(d["coins"], json!(["BTC"]), "{d}");
    assert!(d["clients"].as_u64().is_some_and(|n| n >= 1), "{d}");
    assert!(
        d["events_processed"].as_u64().is_some_and(|n| n >= 2),
        "daemon_status + new_block: {d}"
    );
    assert_eq!(d["epoch"], sub["epoch"], "{d}");
    assert_eq!(d["last_seq"], seq(&e), "{d}");
    let btc = &d["daemons"]["BTC"];
    assert_eq!(btc["connected"], true, "{d}");
    assert!(
        btc["url"]
            .as_str()
            .is_some_and(|u| u.contains(&sim.addr.port().to_string())),
        "{btc}"
    );
    assert_eq!(btc["network"], "testnet", "{btc}");
    assert_eq!(btc["height"], 812_345, "{btc}");
    assert!(btc["last_event_at"].is_number(), "{btc}");
    assert!(btc["reconnects"].is_u64(), "{btc}");
    assert!(btc["events"].as_u64().is_some_and(|n| n >= 1), "{btc}");
    let db = &d["db"];
    assert_eq!(db["enabled"], false, "{db}");
    for k in ["connected", "queue_depth", "written", "spooled"] {
        assert!(db.get(k).is_some(), "db.{k} missing: {db}");
    }
}
