//! The `/ws` event stream over loopback: gating by loaded wallets, family flows, narrowing,
//! raw pushes, bench mode, and the close on stop.

use super::*;
use crate::decode_bench_tx;

#[test]
fn wallet_events_flow_only_once_an_rpc_loads_the_wallet() {
    let h = start("BTC", |c| c.wallets = vec!["zpubW".into()]);
    let a = h.addr();
    let mut sock = ws(a);
    assert_silent(&mut sock, Duration::from_millis(100));
    ok(a, "sim_pay", json!([]));
    ok(a, "sim_mine", json!([]));
    let got = sync(&mut sock);
    assert_eq!(got.iter().map(event).collect::<Vec<_>>(), ["new_block"]);
    assert_eq!(
        got[0],
        json!({"updates": [{"event": "new_block", "height": 800_001}], "wallet": null, "currency": "BTC"})
    );

    ok(a, "getbalance", json!({"xpub": "zpubW"}));
    ok(a, "sim_pay", json!([]));
    let pay = next_json(&mut sock);
    let tx = next_json(&mut sock);
    assert_eq!(
        (event(&pay), event(&tx)),
        ("new_payment", "new_transaction")
    );
    assert_eq!(
        (pay["wallet"].clone(), pay["currency"].clone()),
        (json!("zpubW"), json!("BTC"))
    );
    assert_eq!(pay["updates"][0]["status"], 7);
    let hash = tx["updates"][0]["tx"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    assert_eq!(ok(a, "get_transaction", json!([hash]))["confirmations"], 0);

    assert_eq!(ok(a, "sim_mine", json!([])), 800_002);
    let names: Vec<Value> = (0..3).map(|_| next_json(&mut sock)).collect();
    assert_eq!(
        names.iter().map(event).collect::<Vec<_>>(),
        ["new_block", "new_payment", "verified_tx"]
    );
    assert_eq!(names[1]["updates"][0]["status"], 3);
    assert_eq!(
        names[2]["updates"][0],
        json!({"event": "verified_tx", "tx": hash, "height": 800_002})
    );
    assert!(ok(a, "get_transaction", json!([hash]))["outputs"][0]["value_sats"].is_u64());

    ok(a, "close_wallet", json!({"xpub": "zpubW"}));
    ok(a, "sim_pay", json!([]));
    assert!(sync(&mut sock).is_empty());
}

#[test]
fn eth_block_precedes_its_transaction_and_payment() {
    let (h, a, mut sock, wallet) = eth_token_wallet();
    let r = ok(
        a,
        "add_request",
        json!({"amount": "25", "expiration": 900, "xpub": wallet}),
    );
    let id = r["request_id"].as_str().unwrap().to_string();
    assert!(
        ok(
            a,
            "setrequestaddress",
            json!([id, "0x5A0b", {"xpub": wallet}])
        )
        .as_bool()
        .unwrap()
    );
    ok(a, "sim_pay", json!([]));
    assert!(sync(&mut sock).is_empty(), "eth events wait for the block");
    h.mine();
    let got: Vec<Value> = (0..3).map(|_| next_json(&mut sock)).collect();
    assert_eq!(
        got.iter().map(event).collect::<Vec<_>>(),
        ["new_block", "new_transaction", "new_payment"]
    );
    let tx = &got[1]["updates"][0];
    assert_eq!(
        (
            tx["from_address"].as_str(),
            tx["to"].as_str(),
            tx["amount"].as_str()
        ),
        (Some("0x5A0b"), Some("0xAbC"), Some("25.000000"))
    );
    assert_eq!(
        (got[1]["wallet"].as_str(), tx["contract"].as_str()),
        (Some(ETH_TOKEN_KEY), Some("0xdAC"))
    );
    let pay = &got[2]["updates"][0];
    assert_eq!(
        (
            pay["status"].clone(),
            pay["address"].clone(),
            pay["contract"].clone()
        ),
        (json!(3), json!(id), json!("0xdAC"))
    );
    let found = ok(a, "gettransaction", json!([tx["tx"]]));
    assert_eq!(
        (found["from"].as_str(), found["confirmations"].as_u64()),
        (Some("0x5A0b"), Some(1))
    );
}

#[test]
fn xpub_message_narrows_a_socket() {
    let h = start("BTC", |_| {});
    let mut all = ws(h.addr());
    let mut narrow = ws(h.addr());
    narrow.send(Message::text(r#"{"xpub":"a"}"#)).unwrap();
    narrow.send(Message::text("not json, ignored")).unwrap();
    sync(&mut narrow);
    h.emit(json!({"event": "new_transaction", "tx": "b1"}), Some("b"));
    h.emit(json!({"event": "new_transaction", "tx": "a1"}), Some("a"));
    h.emit(json!({"event": "new_block", "height": 9}), None);
    let txs = |v: Vec<Value>| {
        v.iter()
            .map(|e| {
                e["updates"][0]["tx"]
                    .as_str()
                    .unwrap_or("block")
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    let got_all: Vec<Value> = (0..3).map(|_| next_json(&mut all)).collect();
    assert_eq!(txs(got_all), ["b1", "a1", "block"]);
    let got_narrow: Vec<Value> = (0..2).map(|_| next_json(&mut narrow)).collect();
    assert_eq!(txs(got_narrow), ["a1", "block"]);
    assert!(sync(&mut narrow).is_empty());
}

#[test]
fn sim_emit_pushes_as_given_and_raw_text_verbatim() {
    let h = start("LTC", |_| {});
    let a = h.addr();
    let mut sock = ws(a);
    ok(
        a,
        "sim_emit",
        json!([{"event": "mystery", "weird": [1, {"x": null}]}, "unloaded_wallet"]),
    );
    let v = next_json(&mut sock);
    assert_eq!(
        v,
        json!({"updates": [{"event": "mystery", "weird": [1, {"x": null}]}], "wallet": "unloaded_wallet", "currency": "LTC"})
    );
    ok(a, "sim_emit", json!([{"event": "new_block", "height": 5}]));
    assert_eq!(next_json(&mut sock)["wallet"], Value::Null);
    ok(a, "sim_emit_raw", json!(["}{ garbage"]));
    match sock.read().unwrap() {
        Message::Text(t) => assert_eq!(t.as_str(), "}{ garbage"),
        other => panic!("expected the raw text, got {other:?}"),
    }
}

#[test]
fn non_object_message_ends_the_socket() {
    let h = start("BTC", |_| {});
    let mut sock = ws(h.addr());
    sock.send(Message::text("[1,2]")).unwrap();
    loop {
        match sock.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1011);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("expected a 1011 close, got {e}"),
        }
    }
}

#[test]
fn stop_closes_sockets_with_1001() {
    let h = start("BTC", |_| {});
    let mut sock = ws(h.addr());
    sync(&mut sock);
    let stopper = std::thread::spawn(move || h.stop());
    match sock.read() {
        Ok(Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 1001);
            assert_eq!(f.reason.as_str(), "Server shutdown");
        }
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    let _ = sock.flush();
    stopper.join().unwrap();
}

#[test]
fn bench_mode_encodes_scheduled_time_and_keeps_the_rate() {
    let (rate, count) = (2000.0, 400u64);
    let h = start("ETH", |c| {
        c.bench = true;
        c.rate = rate;
        c.count = count;
        c.wallets = vec!["0x5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c".into()];
        c.preload_wallets = true;
        c.start_delay = Duration::from_millis(300);
    });
    let mut sock = ws(h.addr());
    let mut got = Vec::new();
    let mut arrivals = Vec::new();
    for _ in 0..count {
        let v = next_json(&mut sock);
        arrivals.push(Instant::now());
        assert_eq!(event(&v), "new_transaction");
        let tx = v["updates"][0]["tx"].as_str().unwrap().to_string();
        assert_eq!(tx.len(), 66);
        got.push(decode_bench_tx(&tx).unwrap());
    }
    let indexes: Vec<u64> = got.iter().map(|g| g.1).collect();
    assert_eq!(indexes, (0..count).collect::<Vec<_>>());
    for (k, (micros, _)) in got.iter().enumerate() {
        let expected = got[0].0 + (k as f64 * 1e6 / rate) as u64;
        assert!(
            micros.abs_diff(expected) <= 1,
            "event {k}: {micros} vs {expected}"
        );
    }
    let span = arrivals[arrivals.len() - 1] - arrivals[0];
    assert!(
        span >= Duration::from_millis(150) && span < Duration::from_secs(2),
        "400 events at 2000/s took {span:?}"
    );
    let now = crate::util::unix_micros();
    assert!(
        now.abs_diff(got[got.len() - 1].0) < 1_000_000,
        "scheduled times track the clock"
    );
    assert_silent(&mut sock, Duration::from_millis(100));
    assert_eq!(h.state()["counters"]["bench_events"], count);
}

#[test]
fn bench_tx_hashes_are_answered_without_a_chain_entry() {
    let hash = format!("0x{:016x}{:048x}", 1_700_000_000_000_000u64, 7);
    let h = start("BTC", |c| c.wallets = vec!["benchwallet".into()]);
    let tx = ok(h.addr(), "get_transaction", json!([hash]));
    assert_eq!(tx["confirmations"], 0);
    assert_eq!(tx["outputs"][0]["value_sats"], 10_000_000, "0.1 BTC: {tx}");
    assert!(tx["outputs"][0]["address"].as_str().is_some(), "{tx}");
    assert_eq!(
        code(h.addr(), "get_transaction", json!(["ab".repeat(32)])),
        -32002
    );
    let h = start("ETH", |c| c.wallets = vec!["0xAbC".into()]);
    let tx = ok(h.addr(), "gettransaction", json!([hash]));
    assert_eq!(
        (tx["confirmations"].clone(), tx["to"].clone()),
        (json!(0), json!("0xAbC"))
    );
}
