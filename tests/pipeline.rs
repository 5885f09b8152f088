//! Integration tests for the core pipeline (issue 2; docs/daemon.md and docs/protocol.md):
//! simulated daemons run as separate `cryptoworker simulate` processes and feed a `cryptoworker
//! run` process, which real WebSocket clients on loopback subscribe to.
//!
//! Most tests run the simulator quiet (`--rate 0 --block-interval 0`) and inject a known series
//! with `sim_emit`, so every expected event is known in advance; one test uses the simulator's
//! own payment flows to check enrichment from `get_transaction`. Regression tests are named
//! after the bug they pin (e.g. `enrichment_answers_that_arrive_at_once_are_not_lost`).

mod common;

use common::events::{self, FilterModel, assert_envelope, index_of};
use common::{QUIET, Sim, Worker, WsClient, deadline, http_raw, star_client, worker_for};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

const W1: &str = "zpubTESTwalletOne";
const W2: &str = "zpubTESTwalletTwo";

#[test]
fn live_events_carry_every_envelope_field_and_reach_every_client_identically() {
    let sim = Sim::start(
        "BTC",
        &["--wallets", W1, "--rate", "10", "--block-interval", "0"],
    );
    let worker = worker_for(&[&sim], &[("BTC_WALLETS", W1)]);
    let mut clients: Vec<(WsClient, u64)> = (0..3).map(|_| star_client(&worker)).collect();
    let (first, rest) = clients.split_first_mut().expect("three clients");
    let (seen, mined) = collect_every_kind(&sim, first);
    for (text, v) in &seen {
        assert_envelope(text, v, "BTC");
        let d = &v["data"];
        match d["event"].as_str() {
            Some("new_transaction") => check_enrichment(&sim, d, text),
            Some("new_payment" | "verified_tx") => assert_eq!(d["wallet"], W1, "{text}"),
            _ => {}
        }
    }
    assert!(
        seen.iter()
            .any(|(_, v)| v["data"]["event"] == "new_block" && v["data"]["height"] == mined),
        "no new_block for the mined height {mined}"
    );
    // Every client gets byte-identical frames for the same seq (serialised once, shared).
    let by_seq: BTreeMap<u64, &String> = seen
        .iter()
        .map(|(t, v)| (v["seq"].as_u64().unwrap_or(0), t))
        .collect();
    let last = *by_seq.keys().last().expect("events");
    for (c, base) in rest.iter_mut() {
        let n = usize::try_from(last - *base).expect("count");
        for (text, v) in c.events_in_sequence(n, *base, deadline(10.0)) {
            if let Some(t) = by_seq.get(&v["seq"].as_u64().unwrap_or(0)) {
                assert_eq!(*t, &text, "clients got different frames for one seq");
            }
        }
    }
    // A daemon that goes away is announced to every client with `daemon_status`.
    drop(sim);
    for (c, _) in clients.iter_mut() {
        let is_status = |v: &Value| v["data"]["event"] == "daemon_status";
        let (text, v) = c.recv_event_where(deadline(10.0), is_status);
        assert_envelope(&text, &v, "BTC");
        assert_eq!(v["data"]["connected"], false, "{text}");
        let reason = v["data"]["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "a disconnect says why: {text}");
    }
}

/// Reads the simulator's live flow until every event kind has been seen (mining a block once a
/// transaction is out, so it gets confirmed). Returns the events and the mined height.
fn collect_every_kind(sim: &Sim, c: &mut (WsClient, u64)) -> (Vec<(String, Value)>, u64) {
    let until = deadline(20.0);
    let mut seen: Vec<(String, Value)> = Vec::new();
    let mut kinds = BTreeSet::new();
    let mut mined = 0;
    let want = ["new_block", "new_transaction", "new_payment", "verified_tx"];
    let mut last = c.1;
    while !want.iter().all(|k| kinds.contains(*k)) || mined == 0 {
        assert!(Instant::now() < until, "only saw {kinds:?} (mined {mined})");
        let (text, v) = c.0.recv_event_text(until);
        let seq = v["seq"].as_u64().unwrap_or(0);
        assert_eq!(seq, last + 1, "seq must grow by exactly one: {text}");
        last = seq;
        let kind = v["data"]["event"].as_str().unwrap_or_default().to_string();
        if kind == "new_transaction" && mined == 0 {
            mined = sim.mine();
        }
        kinds.insert(kind);
        seen.push((text, v));
    }
    (seen, mined)
}

/// `new_transaction.data` must match what the daemon's `get_transaction` says (docs/daemon.md,
/// "Transaction lookups").
fn check_enrichment(sim: &Sim, d: &Value, text: &str) {
    assert_eq!(d["wallet"], W1, "{text}");
    let tx = sim.call("get_transaction", json!([d["tx_hash"]]));
    events::assert_btc_enrichment(&d["data"], &tx, text);
}

#[test]
fn star_subscriber_sees_seq_step_by_one_and_each_daemons_order() {
    let (btc, ltc) = (Sim::start("BTC", QUIET), Sim::start("LTC", QUIET));
    let worker = worker_for(&[&btc, &ltc], &[]);
    let (mut a, base) = star_client(&worker);
    let (mut b, base_b) = star_client(&worker);
    assert_eq!(
        base, base_b,
        "no event happened between the two subscriptions"
    );
    // Each daemon's first connect was announced with a `daemon_status`, which took a seq.
    assert_eq!(base, 2, "one daemon_status per connected daemon so far");
    const N: u64 = 100;
    std::thread::scope(|s| {
        for sim in [&btc, &ltc] {
            s.spawn(move || {
                for i in 0..N {
                    sim.emit(events::mixed(i), events::mixed_has_wallet(i).then_some(W1));
                }
            });
        }
    });
    let got_a = a.events_in_sequence(2 * N as usize, base, deadline(20.0));
    let got_b = b.events_in_sequence(2 * N as usize, base, deadline(20.0));
    let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for ((text, v), (text_b, _)) in got_a.iter().zip(&got_b) {
        assert_eq!(
            text, text_b,
            "both clients see the same frames in the same order"
        );
        let coin = v["data"]["coin"].as_str().unwrap_or_default().to_string();
        assert_envelope(text, v, &coin);
        let i = index_of(&v["data"]).unwrap_or_else(|| panic!("not an injected event: {text}"));
        order.entry(coin).or_default().push(i);
    }
    let expected: Vec<u64> = (0..N).collect();
    assert_eq!(order.get("BTC"), Some(&expected), "BTC order");
    assert_eq!(order.get("LTC"), Some(&expected), "LTC order");
}

/// Regression: a lookup answer that arrives before the worker's first read after sending the
/// call (a fast daemon on loopback) must not be lost. Losing it holds the daemon's stream until
/// `DAEMON_RPC_TIMEOUT_S` and sends the event with null fields.
#[test]
fn enrichment_answers_that_arrive_at_once_are_not_lost() {
    let sim = Sim::start("BTC", QUIET);
    let worker = worker_for(&[&sim], &[("DAEMON_RPC_TIMEOUT_S", "15")]);
    let (mut c, base) = star_client(&worker);
    const N: u64 = 300;
    for i in 0..N {
        sim.emit(events::transaction(i), Some(W1));
    }
    // Every lookup fails at once (the simulator does not know these txs), so all events are out
    // long before a lost answer would time out.
    let until = deadline(5.0);
    for i in 0..N {
        let v = c.recv_json_until(until).unwrap_or_else(|e| {
            panic!(
                "only {i} of {N} events within 5 s of the last emit ({e:?}): a lookup answer \
                 was lost and holds the stream until DAEMON_RPC_TIMEOUT_S"
            )
        });
        assert_eq!(v["seq"].as_u64(), Some(base + 1 + i), "seq: {v}");
        assert_eq!(index_of(&v["data"]), Some(i), "order: {v}");
    }
}

/// Subscriptions whose deliveries the filter test checks, one client each.
fn filter_requests() -> Vec<Value> {
    let addresses = [events::request_id(2), events::request_id(1000)];
    vec![
        json!({"events": ["new_block"]}),
        json!({"events": ["new_transaction", "new_payment"], "coins": ["ltc"]}),
        json!({"events": ["*"], "coins": ["BTC"]}),
        json!({"events": ["*"], "wallets": [W1]}),
        json!({"events": ["new_payment"], "addresses": addresses}),
    ]
}

/// One injected update: its index, the update, and its wallet (None = global).
type Injected = (u64, Value, Option<&'static str>);

/// 30 mixed updates (wallet-scoped ones alternating between two wallets), then a block and a
/// payment as sentinels that every subscription of [`filter_requests`] matches on some coin.
fn filter_plan() -> Vec<Injected> {
    let owner = |i: u64| if i.is_multiple_of(2) { W1 } else { W2 };
    let wallet = |i: u64| events::mixed_has_wallet(i).then(|| owner(i));
    let mut plan: Vec<_> = (0..30).map(|i| (i, events::mixed(i), wallet(i))).collect();
    plan.push((1000, events::block(1000), None));
    plan.push((1000, events::payment(1000), Some(W1)));
    plan
}

/// Per coin, the (event name, index) list a client must receive, in order.
type Deliveries = BTreeMap<String, Vec<(String, u64)>>;

#[test]
fn filters_by_event_name_coin_wallet_and_address_are_honoured() {
    let (btc, ltc) = (Sim::start("BTC", QUIET), Sim::start("LTC", QUIET));
    let worker = worker_for(&[&btc, &ltc], &[]);
    let models: Vec<FilterModel> = filter_requests()
        .iter()
        .map(FilterModel::from_request)
        .collect();
    let mut clients: Vec<WsClient> = Vec::new();
    for m in &models {
        let mut c = worker.ws();
        m.assert_echoed(&c.subscribe(m.request.clone(), deadline(5.0)));
        clients.push(c);
    }
    let plan = filter_plan();
    for sim in [&btc, &ltc] {
        for (_, update, wallet) in &plan {
            sim.emit(update.clone(), *wallet);
        }
    }
    for (m, c) in models.iter().zip(clients.iter_mut()) {
        let mut expected = Deliveries::new();
        for coin in ["BTC", "LTC"] {
            for (i, update, _) in plan.iter().filter(|(_, u, w)| m.wants(coin, u, *w)) {
                let name = update["event"].as_str().unwrap_or_default().to_string();
                expected
                    .entry(coin.to_string())
                    .or_default()
                    .push((name, *i));
            }
        }
        let mut got = Deliveries::new();
        for _ in 0..expected.values().map(Vec::len).sum::<usize>() {
            let (text, v) = c.recv_event_text(deadline(10.0));
            let d = &v["data"];
            let i = index_of(d).unwrap_or_else(|| panic!("unexpected event {text}"));
            let name = d["event"].as_str().unwrap_or_default().to_string();
            let coin = d["coin"].as_str().unwrap_or_default().to_string();
            got.entry(coin).or_default().push((name, i));
        }
        assert_eq!(got, expected, "deliveries for {}", m.request);
    }
    unsubscribe_narrows_the_filter(&ltc, &mut clients[1]);
}

/// `unsubscribe` of one name answers with what is left, and stops that name only.
fn unsubscribe_narrows_the_filter(ltc: &Sim, c: &mut WsClient) {
    let reply = c.request(
        json!({"type": "unsubscribe", "events": ["new_payment"]}),
        deadline(5.0),
    );
    assert_eq!(reply["type"], "unsubscribed", "{reply}");
    assert_eq!(reply["events"], json!(["new_transaction"]), "{reply}");
    ltc.emit(events::payment(2000), Some(W1));
    ltc.emit(events::transaction(2001), Some(W1));
    let v = c.recv_event(deadline(10.0));
    assert_eq!(
        index_of(&v["data"]),
        Some(2001),
        "only the transaction is still subscribed: {v}"
    );
}

#[test]
fn never_reading_client_is_closed_with_4008_while_a_normal_client_gets_everything() {
    let sim = Sim::start("BTC", QUIET);
    let worker = worker_for(&[&sim], &[("WORKER_CLIENT_QUEUE_BYTES", "65536")]);
    let mut slow = WsClient::connect_small_rcvbuf(worker.addr, 4096);
    slow.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let (mut normal, base) = star_client(&worker);
    let status = normal.request(json!({"type": "get_status"}), deadline(5.0));
    assert_eq!(status["data"]["clients"], 2, "{status}");
    // Batches of large events until the worker reports that the slow client is gone; the normal
    // client must read every event of every batch, in order, with no gap.
    let (mut sent, mut seq) = (0u64, base);
    let mut closed = false;
    for _ in 0..40 {
        for _ in 0..20 {
            sim.emit(events::probe(sent, 16_000), None);
            sent += 1;
        }
        for (text, v) in normal.events_in_sequence(20, seq, deadline(10.0)) {
            assert_eq!(
                index_of(&v["data"]),
                Some(seq - base),
                "event order: {}",
                text.get(..80).unwrap_or(&text)
            );
            seq += 1;
        }
        let status = normal.request(json!({"type": "get_status"}), deadline(5.0));
        if status["data"]["clients"] == 1 {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the never-reading client was not closed after {sent} large events"
    );
    assert_eq!(slow.expect_close_code(deadline(10.0)), 4008);
    sim.emit(events::block(1), None);
    let v = normal.events_in_sequence(1, seq, deadline(5.0));
    assert_eq!(
        index_of(&v[0].1["data"]),
        Some(1),
        "the normal client is still served"
    );
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_0() {
    let sim = Sim::start("BTC", QUIET);
    let mut worker = worker_for(&[&sim], &[]);
    let (mut a, _) = star_client(&worker);
    let (mut b, _) = star_client(&worker);
    worker.sigterm();
    assert_eq!(a.expect_close_code(deadline(10.0)), 1001);
    assert_eq!(b.expect_close_code(deadline(10.0)), 1001);
    let status = worker
        .wait_exit(deadline(15.0))
        .expect("the worker exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// Bad client messages and the error each must get (docs/protocol.md, "Errors"): the text,
/// the code, and a word the message must contain (the field at fault), if any.
const BAD_MESSAGES: &[(&str, &str, &str)] = &[
    ("not json", "invalid_json", ""),
    (r#"{"type":"#, "invalid_json", ""),
    ("[1,2,3]", "invalid_message", ""),
    ("42", "invalid_message", ""),
    (r#""subscribe""#, "invalid_message", ""),
    ("null", "invalid_message", ""),
    ("{}", "invalid_message", ""),
    (r#"{"type":5,"id":1}"#, "invalid_message", ""),
    (r#"{"type":"frobnicate","id":7}"#, "unknown_type", ""),
    (
        r#"{"type":"subscribe","events":"new_block","id":"s1"}"#,
        "invalid_field",
        "events",
    ),
    (
        r#"{"type":"subscribe","events":[1],"id":2}"#,
        "invalid_field",
        "events",
    ),
    (r#"{"type":"subscribe"}"#, "invalid_field", "events"),
    (
        r#"{"type":"subscribe","events":["*"],"coins":"BTC"}"#,
        "invalid_field",
        "coins",
    ),
    (
        r#"{"type":"subscribe","events":["*"],"wallets":{}}"#,
        "invalid_field",
        "wallets",
    ),
    (
        r#"{"type":"subscribe","events":["*"],"addresses":[null]}"#,
        "invalid_field",
        "addresses",
    ),
    (
        r#"{"type":"subscribe","events":["*"],"since":"abc"}"#,
        "invalid_field",
        "since",
    ),
    (
        r#"{"type":"subscribe","events":["*"],"since":-1}"#,
        "invalid_field",
        "since",
    ),
    (
        r#"{"type":"subscribe","events":["no_such_event"],"id":3}"#,
        "unknown_event",
        "",
    ),
    (
        r#"{"type":"subscribe","events":["*"],"coins":["DOGE"],"id":4}"#,
        "unknown_coin",
        "",
    ),
    (
        r#"{"type":"unsubscribe","events":7}"#,
        "invalid_field",
        "events",
    ),
    (r#"{"type":"ping","id":{"a":1}}"#, "invalid_field", "id"),
    (r#"{"type":"auth"}"#, "invalid_field", "token"),
];

#[test]
fn bad_client_messages_get_the_right_error_and_keep_the_connection() {
    let sim = Sim::start("BTC", QUIET);
    let limits = [("WORKER_RATE_LIMIT", "1000"), ("WORKER_RATE_BURST", "1000")];
    let worker = worker_for(&[&sim], &limits);
    let mut c = worker.ws();
    c.subscribe(json!({"events": ["new_block"]}), deadline(5.0));
    for (n, (text, code, field)) in BAD_MESSAGES.iter().enumerate() {
        c.send_text(text);
        let raw = c
            .recv_text(deadline(5.0))
            .unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let v: Value = serde_json::from_str(&raw).expect("JSON reply");
        assert_eq!(v["type"], "error", "{text} -> {raw}");
        assert_eq!(v["error"]["code"], *code, "{text} -> {raw}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && message.contains(field),
            "{text} -> {raw}"
        );
        let sent: Option<Value> = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|s| s.get("id").cloned());
        if let Some(id) = sent.filter(|id| id.is_string() || id.is_number()) {
            assert_eq!(v["id"], id, "the id is echoed: {text} -> {raw}");
        }
        common::assert_timestamp_ms(&raw, 120.0);
        let pong = c.request(
            json!({"type": "ping", "id": format!("after-{n}")}),
            deadline(5.0),
        );
        assert_eq!(pong["type"], "pong", "connection kept after {text}: {pong}");
    }
    // A refused subscribe leaves the previous filter in place.
    sim.emit(events::transaction(1), Some(W1));
    sim.emit(events::block(2), None);
    let v = c.recv_event(deadline(10.0));
    assert_eq!(
        index_of(&v["data"]),
        Some(2),
        "still subscribed to new_block only: {v}"
    );
    worker_keeps_serving(&worker);
}

/// `/health` answers and a new client can subscribe and ping.
fn worker_keeps_serving(worker: &Worker) {
    assert_eq!(worker.get("/health").status, 200);
    let mut c = worker.ws();
    c.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let pong = c.request(json!({"type": "ping"}), deadline(5.0));
    assert_eq!(pong["type"], "pong", "{pong}");
}

#[test]
fn garbage_http_requests_get_a_4xx_and_the_worker_keeps_serving() {
    let sim = Sim::start("BTC", QUIET);
    let worker = worker_for(&[&sim], &[]);
    let mut huge = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    while huge.len() < 256 * 1024 {
        huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let requests: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello \r\n\r\n".to_vec(),
        b"GET /health HTTP/1.1\r\nThis is not a header\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        huge,
    ];
    for req in &requests {
        let shown = String::from_utf8_lossy(&req[..req.len().min(60)]).into_owned();
        let raw =
            http_raw(worker.addr, req, deadline(5.0)).unwrap_or_else(|e| panic!("{shown:?}: {e}"));
        let status = common::http::parse_response(&raw).map(|r| r.status);
        assert!(
            status.is_some_and(|s| (400..500).contains(&s)),
            "{shown:?} answered {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        );
    }
    assert_eq!(worker.get("/no/such/page").status, 404);
    worker_keeps_serving(&worker);
}
