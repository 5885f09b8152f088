//! Loopback tests: a [`SimHandle`] on port 0 driven with plain `TcpStream`s and the
//! tungstenite client, as the worker and the integration tests drive it.

mod events;
mod faults;
mod http_rpc;
mod polling;

use super::{SimConfig, SimHandle};
use base64::Engine;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::handshake::HandshakeError;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

/// How long a test waits for something that should happen.
const DEADLINE: Duration = Duration::from_secs(5);

fn basic(login: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"))
    )
}

fn good_auth() -> String {
    basic("electrum", "electrumz")
}

/// A simulator with no background activity (rate 0, no blocks) unless `tweak` says otherwise.
fn start(coin: &str, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::new(coin);
    cfg.rate = 0.0;
    cfg.block_interval = Duration::ZERO;
    cfg.seed = 7;
    tweak(&mut cfg);
    SimHandle::start(cfg).expect("simulator starts")
}

/// The ETH token wallet the flow tests pay into, as `wallets` holds it.
const ETH_TOKEN_KEY: &str = "0xAbC_0xdAC";

/// An ETH daemon paying into the preloaded [`ETH_TOKEN_KEY`] wallet, a socket on its event link,
/// and that wallet as RPC params name it.
fn eth_token_wallet() -> (SimHandle, SocketAddr, Ws, Value) {
    let h = start("ETH", |c| {
        c.wallets = vec![ETH_TOKEN_KEY.into()];
        c.preload_wallets = true;
    });
    let a = h.addr();
    let sock = ws(a);
    (h, a, sock, json!({"xpub": "0xAbC", "contract": "0xdAC"}))
}

/// One raw HTTP request on its own connection; returns (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: sim\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

/// A JSON-RPC call with good credentials; returns the whole answer.
fn rpc(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let (status, body) = http(addr, "POST", "/", Some(&good_auth()), &body);
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("JSON answer")
}

/// The `result` of a call that must succeed.
fn ok(addr: SocketAddr, method: &str, params: Value) -> Value {
    let v = rpc(addr, method, params);
    assert!(v.get("error").is_none(), "{method} failed: {v}");
    v["result"].clone()
}

/// The error code of a call that must fail.
fn code(addr: SocketAddr, method: &str, params: Value) -> i64 {
    let v = rpc(addr, method, params);
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("{method} did not fail: {v}"))
}

type Ws = WebSocket<TcpStream>;

/// Opens `/ws` with the given Authorization header.
fn ws_with(addr: SocketAddr, auth: &str) -> Result<Ws, u16> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let uri = format!("ws://{addr}/ws").parse().expect("uri");
    let req = ClientRequestBuilder::new(uri).with_header("Authorization", auth);
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

fn ws(addr: SocketAddr) -> Ws {
    ws_with(addr, &good_auth()).expect("upgrade")
}

/// The next text frame, parsed.
fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a frame before the deadline") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON frame"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// The event name of a pushed envelope.
fn event(v: &Value) -> &str {
    v["updates"][0]["event"].as_str().unwrap_or("?")
}

/// Sends a ping and waits for its pong: proves the server processed everything sent before.
fn sync(ws: &mut Ws) -> Vec<Value> {
    ws.send(Message::Ping(b"sync".to_vec().into()))
        .expect("ping");
    let mut before = Vec::new();
    loop {
        match ws.read().expect("pong before the deadline") {
            Message::Pong(p) if p.as_ref() == b"sync" => return before,
            Message::Text(t) => before.push(serde_json::from_str(t.as_str()).expect("JSON")),
            _ => {}
        }
    }
}

/// Asserts nothing arrives for `quiet`.
fn assert_silent(ws: &mut Ws, quiet: Duration) {
    ws.get_ref().set_read_timeout(Some(quiet)).expect("timeout");
    match ws.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    ws.get_ref()
        .set_read_timeout(Some(DEADLINE))
        .expect("timeout");
}

/// Polls `f` until it is true or the deadline passes.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
