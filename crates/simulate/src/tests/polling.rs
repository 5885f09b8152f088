//! `get_updates` over loopback: per-wallet queues filled with or without sockets, global
//! pushes copied to every loaded wallet, cleared on read, the cap, and the wallet rules.

use super::*;
use crate::decode_bench_tx;

/// `get_updates` for the wallet `xpub` names (a key or `{"xpub", "contract"}`).
fn updates(a: SocketAddr, xpub: Value) -> Vec<Value> {
    match ok(a, "get_updates", json!({"xpub": xpub})) {
        Value::Array(list) => list,
        other => panic!("get_updates returned {other}"),
    }
}

fn names(list: &[Value]) -> Vec<&str> {
    list.iter()
        .map(|u| u["event"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn get_updates_needs_a_wallet_and_loads_it_with_an_empty_queue() {
    for coin in ["BTC", "ETH", "XMR"] {
        let h = start(coin, |_| {});
        let a = h.addr();
        assert_eq!(code(a, "get_updates", json!([])), -32000);
        assert_eq!(code(a, "get_updates", json!({"xpub": null})), -32000);
        let v = rpc(a, "get_updates", json!({"xpub": ""}));
        assert_eq!(
            v["error"],
            json!({"code": -32000, "message": "Wallet not loaded"})
        );
        h.mine();
        assert!(updates(a, json!("w")).is_empty(), "{coin}: loaded after");
        let state = h.state();
        assert_eq!(state["loaded_wallets"], json!(["w"]));
        assert_eq!(state["polling"], json!({"cap": 100, "queues": {"w": 0}}));
        assert!(
            ok(a, "help", json!([]))
                .as_array()
                .unwrap()
                .contains(&json!("get_updates"))
        );
    }
}

#[test]
fn events_pushed_while_no_socket_is_connected_are_queued() {
    let h = start("BTC", |c| {
        c.wallets = vec!["zpubW".into()];
        c.preload_wallets = true;
    });
    let a = h.addr();
    ok(a, "sim_pay", json!([]));
    ok(a, "sim_mine", json!([]));
    let state = h.state();
    assert_eq!(state["counters"]["ws_clients"], 0);
    assert_eq!(state["polling"]["queues"]["zpubW"], 5);
    let got = updates(a, json!("zpubW"));
    assert_eq!(
        names(&got),
        [
            "new_payment",
            "new_transaction",
            "new_block",
            "new_payment",
            "verified_tx"
        ]
    );
    assert_eq!(
        (got[0]["status"].clone(), got[3]["status"].clone()),
        (json!(7), json!(3))
    );
    assert_eq!(got[2], json!({"event": "new_block", "height": 800_001}));
    assert!(updates(a, json!("zpubW")).is_empty(), "cleared on read");
    assert_eq!(h.state()["polling"]["queues"]["zpubW"], 0);
}

#[test]
fn queued_updates_are_the_pushed_ones_in_push_order() {
    let (h, a, mut sock, wallet) = eth_token_wallet();
    let r = ok(a, "add_request", json!({"amount": "25", "xpub": wallet}));
    let id = r["request_id"].as_str().unwrap().to_string();
    ok(
        a,
        "setrequestaddress",
        json!([id, "0x5A0b", {"xpub": wallet}]),
    );
    ok(a, "sim_pay", json!([]));
    ok(a, "sim_pay", json!([]));
    h.mine();
    let pushed: Vec<Value> = sync(&mut sock)
        .iter()
        .map(|f| f["updates"][0].clone())
        .collect();
    assert_eq!(
        names(&pushed)[..3],
        ["new_block", "new_transaction", "new_payment"]
    );
    assert_eq!(updates(a, wallet), pushed);
}

#[test]
fn global_pushes_are_copied_into_every_loaded_wallet() {
    let h = start("LTC", |_| {});
    let a = h.addr();
    ok(a, "getbalance", json!({"xpub": "a"}));
    ok(a, "getbalance", json!({"xpub": "b"}));
    h.mine();
    h.emit(json!({"event": "new_block", "height": 1}), None);
    h.emit(json!({"event": "new_transaction", "tx": "ta"}), Some("a"));
    ok(
        a,
        "sim_emit",
        json!([{"event": "new_transaction", "tx": "tu"}, "unloaded"]),
    );
    assert_eq!(h.state()["polling"]["queues"], json!({"a": 3, "b": 2}));
    let got_a = updates(a, json!("a"));
    assert_eq!(names(&got_a), ["new_block", "new_block", "new_transaction"]);
    assert_eq!(got_a[2]["tx"], "ta");
    assert_eq!(names(&updates(a, json!("b"))), ["new_block", "new_block"]);
    assert!(
        updates(a, json!("unloaded")).is_empty(),
        "nothing is kept for a wallet that was not loaded"
    );
}

#[test]
fn the_cap_keeps_the_newest_updates() {
    let h = start("BTC", |c| c.polling_cap = 3);
    let a = h.addr();
    assert!(updates(a, json!("w")).is_empty());
    for _ in 0..5 {
        h.mine();
    }
    let heights: Vec<u64> = updates(a, json!("w"))
        .iter()
        .filter_map(|u| u["height"].as_u64())
        .collect();
    assert_eq!(heights, [800_003, 800_004, 800_005]);
}

#[test]
fn cap_zero_disables_the_queues() {
    let h = start("BTC", |c| {
        c.polling_cap = 0;
        c.wallets = vec!["w".into()];
        c.preload_wallets = true;
    });
    let a = h.addr();
    h.pay();
    h.mine();
    assert!(updates(a, json!("w")).is_empty());
    assert_eq!(h.state()["polling"], json!({"cap": 0, "queues": {"w": 0}}));
}

#[test]
fn closing_or_forgetting_a_wallet_drops_its_queue() {
    let h = start("BTC", |_| {});
    let a = h.addr();
    ok(a, "getbalance", json!({"xpub": "w"}));
    h.mine();
    ok(a, "close_wallet", json!({"xpub": "w"}));
    assert_eq!(h.state()["polling"]["queues"], json!({}));
    h.mine();
    assert!(updates(a, json!("w")).is_empty(), "reloaded empty");
    h.mine();
    ok(a, "sim_set_fault", json!({"reset": true}));
    assert_eq!(h.state()["polling"]["queues"], json!({}));
    assert!(updates(a, json!("w")).is_empty());
}

#[test]
fn bench_pushes_are_queued_too() {
    let wallet = "0x5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c";
    let h = start("ETH", |c| {
        c.bench = true;
        c.rate = 5000.0;
        c.count = 50;
        c.polling_cap = 4;
        c.wallets = vec![wallet.into()];
        c.preload_wallets = true;
    });
    assert!(eventually(|| h.state()["counters"]["bench_events"] == 50));
    let got: Vec<u64> = updates(h.addr(), json!(wallet))
        .iter()
        .filter_map(|u| u["tx"].as_str().and_then(decode_bench_tx))
        .map(|(_, i)| i)
        .collect();
    assert_eq!(got, [46, 47, 48, 49]);
}
