//! Fault injection over loopback: drop_after, refuse_auth, stall, rpc_delay (concurrent calls
//! are delayed side by side, not one after another), reset.

use super::*;
use crate::Faults;

#[test]
fn drop_after_closes_without_a_close_frame() {
    let h = start("BTC", |c| c.faults.drop_after = Some(2));
    let mut sock = ws(h.addr());
    for i in 0..3 {
        h.emit(json!({"event": "new_block", "height": i}), None);
    }
    assert_eq!(next_json(&mut sock)["updates"][0]["height"], 0);
    assert_eq!(next_json(&mut sock)["updates"][0]["height"], 1);
    match sock.read() {
        Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => {}
        Err(tungstenite::Error::Io(_)) => {}
        other => panic!("expected an abrupt end, got {other:?}"),
    }
}

#[test]
fn drop_after_set_at_run_time_applies_to_open_sockets() {
    let h = start("BTC", |_| {});
    let mut sock = ws(h.addr());
    ok(h.addr(), "sim_set_fault", json!([{"drop_after": 0}]));
    match sock.read() {
        Err(_) => {}
        Ok(m) => panic!("expected an abrupt end, got {m:?}"),
    }
    ok(h.addr(), "sim_set_fault", json!({"drop_after": null}));
    let mut again = ws(h.addr());
    assert!(sync(&mut again).is_empty());
}

#[test]
fn refuse_auth_refuses_everything_but_admin_calls() {
    let h = start("BTC", |c| c.faults.refuse_auth = true);
    let a = h.addr();
    assert_eq!(code(a, "getinfo", json!([])), -32600);
    let spec: Value =
        serde_json::from_str(&http(a, "GET", "/spec", Some(&good_auth()), "").1).unwrap();
    assert_eq!(spec["error"]["code"], -32600);
    assert_eq!(ws_with(a, &good_auth()).err(), Some(200));
    assert_eq!(ok(a, "sim_state", json!([]))["faults"]["refuse_auth"], true);
    let (_, bad) = http(
        a,
        "POST",
        "/",
        Some(&basic("x", "y")),
        r#"{"method":"sim_state"}"#,
    );
    assert!(bad.contains("-32600"), "admin calls still need credentials");
    ok(a, "sim_set_fault", json!([{"refuse_auth": false}]));
    assert_eq!(ok(a, "getinfo", json!([]))["connected"], true);
    assert!(ws_with(a, &good_auth()).is_ok());
}

#[test]
fn stall_stops_events_and_pongs_but_keeps_the_socket() {
    let h = start("BTC", |_| {});
    let mut sock = ws(h.addr());
    sync(&mut sock);
    h.set_faults(Faults {
        stall: true,
        ..Faults::default()
    });
    std::thread::sleep(Duration::from_millis(30));
    sock.send(Message::Ping(b"p".to_vec().into())).unwrap();
    h.emit(json!({"event": "new_block", "height": 1}), None);
    assert_silent(&mut sock, Duration::from_millis(300));
    assert_eq!(h.state()["counters"]["ws_clients"], 1);
    h.set_faults(Faults::default());
    h.emit(json!({"event": "new_block", "height": 2}), None);
    let mut heights = Vec::new();
    let mut ponged = false;
    while heights.is_empty() || !ponged {
        match sock.read().expect("traffic resumes") {
            Message::Pong(_) => ponged = true,
            Message::Text(t) => heights.push(
                serde_json::from_str::<Value>(t.as_str()).unwrap()["updates"][0]["height"].clone(),
            ),
            _ => {}
        }
    }
    assert_eq!(
        heights,
        [json!(2)],
        "events during the stall are lost, as on a half-open link"
    );
}

#[test]
fn rpc_delay_slows_daemon_calls_only() {
    let h = start("BTC", |_| {});
    let a = h.addr();
    ok(a, "sim_set_fault", json!({"rpc_delay_ms": 200}));
    let t = Instant::now();
    ok(a, "getinfo", json!([]));
    assert!(t.elapsed() >= Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(ok(a, "sim_state", json!([]))["faults"]["rpc_delay_ms"], 200);
    assert!(t.elapsed() < Duration::from_millis(200));
}

#[test]
fn rpc_delay_does_not_serialise_concurrent_calls() {
    let h = start("BTC", |_| {});
    let a = h.addr();
    ok(a, "sim_set_fault", json!({"rpc_delay_ms": 100}));
    let t = Instant::now();
    let calls: Vec<_> = (0..32u64)
        .map(|i| {
            let hash = format!("0x{:016x}{i:048x}", 1_700_000_000_000_000u64);
            std::thread::spawn(move || ok(a, "get_transaction", json!([hash])))
        })
        .collect();
    for c in calls {
        assert_eq!(c.join().unwrap()["confirmations"], 0);
    }
    // Thread per connection: 32 calls take about one delay (100 ms), not 32 (3.2 s).
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn reset_forgets_loaded_wallets() {
    let h = start("BTC", |c| {
        c.wallets = vec!["w".into()];
        c.preload_wallets = true;
    });
    let a = h.addr();
    ok(a, "getbalance", json!({"xpub": "v"}));
    assert_eq!(
        ok(a, "sim_state", json!([]))["loaded_wallets"],
        json!(["v", "w"])
    );
    ok(a, "sim_set_fault", json!([{"reset": true}]));
    assert_eq!(ok(a, "sim_state", json!([]))["loaded_wallets"], json!([]));
    let mut sock = ws(a);
    ok(a, "sim_pay", json!([]));
    assert!(
        sync(&mut sock).is_empty(),
        "no events for forgotten wallets"
    );
    assert_eq!(code(a, "sim_set_fault", json!([{"explode": true}])), -32602);
}

#[test]
fn background_generator_produces_blocks_and_flows() {
    let h = start("BTC", |c| {
        c.rate = 200.0;
        c.block_interval = Duration::from_millis(100);
        c.wallets = vec!["w".into()];
        c.preload_wallets = true;
    });
    let mut sock = ws(h.addr());
    let mut seen = std::collections::BTreeSet::new();
    assert!(eventually(|| {
        seen.insert(event(&next_json(&mut sock)).to_string());
        seen.len() == 4
    }));
    assert!(h.height() > 800_000);
}
