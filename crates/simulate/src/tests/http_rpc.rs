//! HTTP, auth and JSON-RPC answers over loopback.

use super::*;

#[test]
fn bad_or_missing_credentials_get_200_unauthorized_and_no_upgrade() {
    let h = start("BTC", |_| {});
    let unauthorized =
        json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Unauthorized"}, "id": null});
    let body = r#"{"id":1,"method":"getinfo","params":[]}"#;
    for auth in [
        None,
        Some(basic("electrum", "nope")),
        Some("Basic !!".to_string()),
    ] {
        let (status, answer) = http(h.addr(), "POST", "/", auth.as_deref(), body);
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap(),
            unauthorized
        );
        let (status, answer) = http(h.addr(), "GET", "/spec", auth.as_deref(), "");
        assert_eq!(
            (status, serde_json::from_str::<Value>(&answer).unwrap()),
            (200, unauthorized.clone())
        );
    }
    assert_eq!(
        ws_with(h.addr(), &basic("electrum", "bad")).err(),
        Some(200)
    );
    assert_eq!(
        http(h.addr(), "GET", "/nowhere", Some(&good_auth()), "").0,
        404
    );
    assert!(h.rpc_log().is_empty());
}

#[test]
fn custom_credentials_are_honoured() {
    let h = start("BTC", |c| {
        c.login = "me".into();
        c.password = "secret".into();
    });
    let body = r#"{"id":1,"method":"help"}"#;
    let (_, answer) = http(h.addr(), "POST", "/", Some(&basic("me", "secret")), body);
    assert!(answer.contains("get_transaction"), "{answer}");
    let (_, answer) = http(h.addr(), "POST", "/", Some(&good_auth()), body);
    assert!(answer.contains("-32600"));
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let h = start("BTC", |_| {});
    let mut s = TcpStream::connect(h.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let body = r#"{"id":7,"method":"getinfo"}"#;
    let req = format!(
        "POST / HTTP/1.1\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{body}",
        good_auth(),
        body.len()
    );
    for _ in 0..2 {
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with("HTTP/1.1 200 OK") && text.contains("Connection: keep-alive"),
            "{text}"
        );
        assert!(text.contains("application/json") && text.contains(r#""id":7"#));
    }
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let h = start("BTC", |_| {});
    let mut s = TcpStream::connect(h.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let body = r#"{"id":3,"method":"help"}"#;
    let head = format!(
        "POST / HTTP/1.1\r\nAuthorization: {}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        good_auth(),
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.contains("get_request"),
        "{text}"
    );
}

#[test]
fn btc_family_answers_and_error_codes() {
    let h = start("BTC", |_| {});
    let a = h.addr();
    let info = ok(a, "getinfo", json!([]));
    assert_eq!(
        (info["blockchain_height"].clone(), info["connected"].clone()),
        (json!(800_000), json!(true))
    );
    assert_eq!(info["synchronized"], true);
    assert!(
        ok(a, "help", json!({"xpub": null}))
            .as_array()
            .unwrap()
            .contains(&json!("get_transaction"))
    );
    assert_eq!(
        code(a, "get_request", json!(["0123456789", {"xpub": "zpubX"}])),
        -32003
    );
    assert_eq!(code(a, "get_request", json!(["0123456789"])), -32000);
    assert_eq!(code(a, "get_transaction", json!(["ab".repeat(32)])), -32002);
    assert_eq!(code(a, "gettransaction", json!(["ab"])), -32601);
    assert_eq!(code(a, "no_such_method", json!([])), -32601);
    assert_eq!(
        code(a, "add_request", json!({"amount": "x", "xpub": "zpubX"})),
        -32603
    );
    let (_, parse) = http(a, "POST", "/", Some(&good_auth()), "{not json");
    assert_eq!(
        serde_json::from_str::<Value>(&parse).unwrap()["error"]["code"],
        -32700
    );
    let (_, spec) = http(a, "GET", "/spec", Some(&good_auth()), "");
    let spec: Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(spec["version"], "4.5.0");
    assert_eq!(
        spec["exceptions"]["-32003"]["exc_name"],
        "RequestNotFoundError"
    );
    assert_eq!(spec["capabilities"]["lightning"], false);
}

#[test]
fn eth_family_answers_and_error_codes() {
    let h = start("ETH", |_| {});
    let a = h.addr();
    assert_eq!(ok(a, "getinfo", json!({}))["blockchain_height"], 20_000_000);
    assert_eq!(
        code(
            a,
            "getrequest",
            json!(["nope", {"xpub": {"xpub": "0xa", "contract": "0xc"}}])
        ),
        -32603
    );
    assert_eq!(
        code(a, "get_request", json!(["nope", {"xpub": "0xa"}])),
        -32603
    );
    assert_eq!(code(a, "gettransaction", json!(["0x00"])), -32002);
    assert_eq!(code(a, "get_transaction", json!(["0x00"])), -32601);
    let (_, spec) = http(a, "GET", "/spec", Some(&good_auth()), "");
    let spec: Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(
        spec["exceptions"]["-32003"]["exc_name"],
        "PrivateKeyRequiredError"
    );
    assert!(spec.get("capabilities").is_none());
    let xmr = start("XMR", |_| {});
    assert_eq!(
        ok(xmr.addr(), "getinfo", json!([]))["blockchain_height"],
        3_000_000
    );
    assert_eq!(
        code(xmr.addr(), "get_request", json!(["x", {"xpub": "v"}])),
        -32603
    );
}

#[test]
fn add_request_then_get_request_and_lookups() {
    let h = start("BTC", |_| {});
    let a = h.addr();
    let r = ok(
        a,
        "add_request",
        json!({"amount": "0.00018", "memo": "m", "expiry": 900, "force": true, "xpub": "zpubX"}),
    );
    let id = r["request_id"].as_str().unwrap().to_string();
    assert_eq!(
        (id.len(), r["status"].clone(), r["amount_BTC"].clone()),
        (10, json!(0), json!("0.00018000"))
    );
    assert_eq!(
        ok(a, "get_request", json!([id, {"xpub": "zpubX"}]))["status"],
        0
    );
    assert_eq!(
        code(a, "get_request", json!([id, {"xpub": "otherwallet"}])),
        -32003
    );
    h.pay();
    h.mine();
    let r = ok(a, "get_request", json!([id, {"xpub": "zpubX"}]));
    assert_eq!(
        (r["status"].clone(), r["confirmations"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(r["sent_amount"], "0.00018000");
    let tx = ok(a, "get_transaction", json!([r["tx_hashes"][0]]));
    assert_eq!(tx["outputs"][0]["value_sats"], 18_000);
    assert_eq!(tx["outputs"][0]["address"], r["address"]);
    assert_eq!(tx["confirmations"], 1);
    let bal = ok(a, "getbalance", json!({"xpub": "zpubX"}));
    assert_eq!(bal["confirmed"], "0.00018000");
}

#[test]
fn rpc_log_records_calls_but_not_admin_ones() {
    let h = start("ETH", |_| {});
    let a = h.addr();
    ok(a, "getinfo", json!([]));
    ok(
        a,
        "getbalance",
        json!({"xpub": {"xpub": "0xa", "contract": "0xc"}}),
    );
    code(a, "bogus", json!([]));
    ok(a, "sim_state", json!([]));
    let expected = json!([
        {"method": "getinfo", "wallet": null},
        {"method": "getbalance", "wallet": "0xa_0xc"},
        {"method": "bogus", "wallet": null},
    ]);
    assert_eq!(ok(a, "sim_rpc_log", json!([])), expected);
    assert_eq!(h.rpc_log().len(), 3);
    assert_eq!(
        ok(a, "sim_state", json!([]))["loaded_wallets"],
        json!(["0xa_0xc"])
    );
}

#[test]
fn sim_set_request_changes_state_silently() {
    let h = start("BTC", |c| {
        c.wallets = vec!["w".into()];
        c.preload_wallets = true;
    });
    let a = h.addr();
    let mut sock = ws(a);
    let set = json!(["w", "abcdef0123", {"status": 3, "sent_amount": "0.5", "tx_hashes": ["aa"]}]);
    assert_eq!(ok(a, "sim_set_request", set)["existed"], false);
    let r = ok(a, "get_request", json!(["abcdef0123", {"xpub": "w"}]));
    assert_eq!(
        (
            r["status"].clone(),
            r["sent_amount"].clone(),
            r["tx_hashes"].clone()
        ),
        (json!(3), json!("0.50000000"), json!(["aa"]))
    );
    assert_eq!(
        ok(a, "sim_set_request", json!(["w", "abcdef0123", null]))["existed"],
        true
    );
    assert_eq!(
        code(a, "get_request", json!(["abcdef0123", {"xpub": "w"}])),
        -32003
    );
    assert_eq!(
        code(a, "sim_set_request", json!(["w", "x", {"status": "paid"}])),
        -32602
    );
    assert!(sync(&mut sock).is_empty());
}

#[test]
fn start_refuses_bad_config() {
    let mut cfg = SimConfig::new("BTC");
    cfg.rate = f64::NAN;
    assert!(SimHandle::start(cfg).is_err());
    let mut cfg = SimConfig::new("ETH");
    cfg.bench = true;
    cfg.rate = 0.0;
    assert!(SimHandle::start(cfg).is_err());
    let mut cfg = SimConfig::new("BTC");
    cfg.polling_cap = 100_001;
    assert!(SimHandle::start(cfg).is_err());
}

#[test]
fn paid_requests_report_confirmations() {
    let h = start("ETH", |_| {});
    let a = h.addr();
    let w = json!({"xpub": "0xa"});
    let r = ok(a, "add_request", json!({"amount": "1", "xpub": w}));
    let id = r["request_id"].as_str().unwrap().to_string();
    ok(a, "setrequestaddress", json!([id, "0xpayer", {"xpub": w}]));
    assert!(r.get("confirmations").is_none());
    h.pay();
    h.mine();
    let r = ok(a, "getrequest", json!([id, {"xpub": w}]));
    assert_eq!(
        (r["status"].clone(), r["confirmations"].clone()),
        (json!(3), json!(1))
    );
    h.mine();
    assert_eq!(
        ok(a, "get_request", json!([id, {"xpub": w}]))["confirmations"],
        2
    );
    let set = json!(["0xa", "set", {"status": 3, "sent_amount": "1", "tx_hashes": ["0xgone"]}]);
    ok(a, "sim_set_request", set);
    let r = ok(a, "getrequest", json!(["set", {"xpub": w}]));
    assert_eq!(
        (r["status"].clone(), r["confirmations"].clone()),
        (json!(3), json!(0))
    );
}
