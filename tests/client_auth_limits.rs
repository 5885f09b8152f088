//! Authentication (docs/protocol.md, `WORKER_API_KEYS`) and the client limits of
//! docs/configuration.md: each way to authenticate and each way to fail, `/metrics` behind the key,
//! then max clients (1013), connections per IP (HTTP 429), message size (1009), rate limit
//! (`rate_limited`, then 4029), idle pings and the handshake timeout (slow-loris).

mod common;

use common::metrics::*;
use common::raw::*;
use common::*;
use serde_json::json;
use std::io::Write;
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

const KEYS: (&str, &str) = ("WORKER_API_KEYS", "key-one,key-two");
const FAST_AUTH: (&str, &str) = ("WORKER_AUTH_TIMEOUT_S", "1");
/// Pacing of the byte-at-a-time slow-loris client (load generation, not a wait).
const TRICKLE_PACE: Duration = Duration::from_millis(50);

/// The client is authenticated: requests are served, not refused.
fn assert_served(c: &mut WsClient) {
    let r = c.ask(json!({"type": "ping", "id": 1}));
    assert_eq!(r["type"], "pong", "{r}");
    let r = c.ask(json!({"type": "subscribe", "events": ["*"]}));
    assert_eq!(r["type"], "subscribed", "{r}");
}

/// Returns once the auth timeout of every client connected so far has passed: a new client that
/// never authenticates has been closed 1008 for it.
fn past_the_auth_timeout(w: &Worker) {
    let mut marker = w.ws();
    assert_eq!(marker.expect_close(Duration::from_secs(5)), Some(1008));
}

#[test]
fn bearer_header_and_token_query_authenticate_on_upgrade() {
    let w = Worker::without_daemon(&[KEYS, FAST_AUTH]);
    let mut c =
        WsClient::connect_with(&w.url("/"), &[("Authorization", "Bearer key-two")]).unwrap();
    assert_served(&mut c);
    let mut c2 = WsClient::connect_with(&w.url("/?token=key-one"), &[]).unwrap();
    assert_served(&mut c2);
    let mut c3 = WsClient::connect_with(&w.url("/ws?token=key-two"), &[]).unwrap();
    assert_served(&mut c3);
    // Past the auth timeout they are still open and served: a client that connected after them
    // and never authenticated is closed for it first (its timer started last).
    past_the_auth_timeout(&w);
    for c in [&mut c, &mut c2, &mut c3] {
        assert_eq!(c.ask(json!({"type": "ping"}))["type"], "pong");
    }
}

#[test]
fn auth_message_within_the_timeout_and_unauthorized_before_it() {
    let w = Worker::without_daemon(&[KEYS, FAST_AUTH]);
    let mut c = w.ws();
    for req in [
        json!({"type": "ping", "id": "p"}),
        json!({"type": "subscribe", "events": ["*"], "id": "p"}),
        json!({"type": "get_status", "id": "p"}),
    ] {
        let r = c.ask(req.clone());
        assert_eq!(r["type"], "error", "{req} -> {r}");
        assert_eq!(r["error"]["code"], "unauthorized", "{r}");
        assert_eq!(r["id"], "p", "{r}");
    }
    let r = c.ask(json!({"type": "auth", "token": "key-one", "id": 9}));
    assert_eq!(r["type"], "authenticated", "{r}");
    assert_eq!(r["id"], 9);
    assert!(r["timestamp"].is_f64(), "{r}");
    past_the_auth_timeout(&w);
    assert_served(&mut c);
}

#[test]
fn wrong_key_on_upgrade_is_http_401() {
    let w = Worker::without_daemon(&[KEYS]);
    assert_eq!(
        refusal_status(WsClient::connect_with(
            &w.url("/"),
            &[("Authorization", "Bearer nope")]
        )),
        401
    );
    assert_eq!(
        refusal_status(WsClient::connect_with(&w.url("/?token=nope"), &[])),
        401
    );
    assert_eq!(
        refusal_status(WsClient::connect_with(
            &w.url("/ws?token=key-one-extra"),
            &[]
        )),
        401
    );
    // A right key still works afterwards.
    assert_served(&mut WsClient::connect_with(&w.url("/?token=key-one"), &[]).unwrap());
}

#[test]
fn wrong_key_in_auth_closes_1008() {
    let w = Worker::without_daemon(&[KEYS]);
    let mut c = w.ws();
    c.send_json(&json!({"type": "auth", "token": "key-three"}));
    assert_eq!(c.expect_close(WAIT), Some(1008));
}

#[test]
fn no_auth_in_time_closes_1008() {
    let w = Worker::without_daemon(&[KEYS, FAST_AUTH]);
    let mut c = w.ws();
    let started = Instant::now();
    assert_eq!(c.expect_close(Duration::from_secs(5)), Some(1008));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
}

#[test]
fn auth_without_configured_keys_is_accepted() {
    let w = Worker::without_daemon(&[]);
    let mut c = w.ws();
    let r = c.ask(json!({"type": "auth", "token": "anything", "id": "x"}));
    assert_eq!(r["type"], "authenticated", "{r}");
    assert_eq!(r["id"], "x");
}

#[test]
fn metrics_need_the_bearer_key_but_health_ready_and_dashboard_do_not() {
    let w = Worker::without_daemon(&[KEYS]);
    assert_eq!(w.get("/metrics").status, 401);
    assert_eq!(
        w.get_with("/metrics", &["Authorization: Bearer wrong"])
            .status,
        401
    );
    assert_eq!(
        w.get("/metrics?token=key-one").status,
        401,
        "only the Bearer header counts"
    );
    let samples = scrape(w.addr, &["Authorization: Bearer key-two"]);
    assert!(metric(&samples, "cryptoworker_clients", &[]).is_some());
    assert_eq!(w.get("/health").status, 200);
    assert_eq!(w.get("/ready").status, 503, "no daemon, but not 401");
    assert_eq!(w.get("/").status, 200);
}

#[test]
fn max_clients_closes_the_extra_client_with_1013() {
    let w = Worker::without_daemon(&[("WORKER_MAX_CLIENTS", "2")]);
    let mut c1 = w.ws();
    let mut c2 = w.ws();
    assert_served(&mut c1);
    assert_served(&mut c2);
    let mut c3 = w.ws();
    assert_eq!(c3.expect_close(WAIT), Some(1013));
    drop(c1);
    wait_until(deadline(5.0), "the closed clients released", || {
        metric(&scrape(w.addr, &[]), "cryptoworker_clients", &[]) == Some(1.0)
    });
    let mut c4 = w.ws();
    assert_served(&mut c4);
    assert_served(&mut c2);
}

#[test]
fn connections_per_ip_beyond_the_limit_get_http_429() {
    let w = Worker::without_daemon(&[("WORKER_MAX_CONNECTIONS_PER_IP", "2")]);
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let mut c1 = WsClient::connect_from(w.addr, local).unwrap();
    let mut c2 = WsClient::connect_from(w.addr, local).unwrap();
    assert_served(&mut c1);
    assert_served(&mut c2);
    assert_eq!(refusal_status(WsClient::connect_from(w.addr, local)), 429);
    // Another address is counted separately.
    let mut other = WsClient::connect_from(w.addr, "127.0.0.2".parse().unwrap())
        .expect("another IP is not limited");
    assert_served(&mut other);
    // Plain HTTP is not a WebSocket connection and is not refused.
    assert_eq!(w.get("/health").status, 200);
    drop(c1);
    let deadline = Instant::now() + WAIT;
    let mut c3 = loop {
        match WsClient::connect_from(w.addr, local) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the slot was never released: {e}"),
        }
    };
    assert_served(&mut c3);
}

#[test]
fn message_over_the_size_limit_closes_1009() {
    let w = Worker::without_daemon(&[("WORKER_MAX_MESSAGE_BYTES", "1024")]);
    let mut c = w.ws();
    // Just under the limit is served.
    let pad = "x".repeat(900);
    let r = c.ask(json!({"type": "ping", "id": 1, "pad": pad}));
    assert_eq!(r["type"], "pong", "{r}");
    let big = json!({"type": "ping", "pad": "y".repeat(2000)}).to_string();
    c.send_text(&big);
    assert_eq!(c.expect_close(WAIT), Some(1009));
    let samples = scrape(w.addr, &[]);
    assert_eq!(
        metric(&samples, "cryptoworker_oversize_closes_total", &[]),
        Some(1.0)
    );
}

#[test]
fn flooding_gets_rate_limited_then_closed_4029() {
    let w = Worker::without_daemon(&[("WORKER_RATE_LIMIT", "2"), ("WORKER_RATE_BURST", "5")]);
    let mut c = w.ws();
    for i in 0..20 {
        c.send_json(&json!({"type": "ping", "id": i}));
    }
    let mut pongs = Vec::new();
    let mut limited = 0;
    let code = loop {
        match c.read(WAIT) {
            Ok(v) if v["type"] == "pong" => pongs.push(v["id"].as_u64().unwrap()),
            Ok(v) if v["type"] == "error" => {
                assert_eq!(v["error"]["code"], "rate_limited", "{v}");
                assert!(v["timestamp"].is_number(), "{v}");
                limited += 1;
            }
            Err(RecvError::Closed(cf)) => break cf.map(|(code, _)| code),
            other => {
                panic!("unexpected {other:?} after {pongs:?} pongs and {limited} rate_limited")
            }
        }
    };
    assert_eq!(code, Some(4029));
    assert_eq!(pongs, [0, 1, 2, 3, 4], "the burst is served in order");
    assert!(limited >= 1, "rate_limited errors come before the close");
    let samples = scrape(w.addr, &[]);
    assert_eq!(
        metric(&samples, "cryptoworker_rate_limit_closes_total", &[]),
        Some(1.0)
    );
    assert!(metric(&samples, "cryptoworker_rate_limited_total", &[]).is_some_and(|n| n >= 1.0));
}

#[test]
fn a_client_that_answers_pings_stays_and_one_that_does_not_is_dropped() {
    let w = Worker::without_daemon(&[("WORKER_PING_INTERVAL_S", "1")]);
    // tungstenite answers pings while we read.
    let mut good = w.ws();
    // A raw client that completes the upgrade and then never reads or answers.
    let mut mute = TcpStream::connect(w.addr).unwrap();
    mute.write_all(upgrade_request(w.addr, "/", &[]).as_bytes())
        .unwrap();
    let started = Instant::now();
    let watcher = std::thread::spawn(move || read_until_closed(&mut mute, Duration::from_secs(6)));
    // The good client reads (answering pings) until the mute one, connected after it, has been
    // dropped for missing them: it went through at least as many ping rounds.
    while !watcher.is_finished() {
        match good.read(Duration::from_millis(100)) {
            Err(RecvError::Timeout) => {}
            other => panic!("the answering client got {other:?}"),
        }
    }
    assert_eq!(
        good.ask(json!({"type": "ping"}))["type"],
        "pong",
        "still connected after the mute client was dropped"
    );

    let (raw, closed) = watcher.join().expect("the mute client's reader");
    let closed = closed.unwrap_or_else(|| panic!("silent client still connected after 6 s"));
    let took = closed - started;
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(4500),
        "dropped after {took:?}"
    );
    let (status, rest) = split_upgrade(&raw);
    assert_eq!(status, 101);
    let frames = server_frames(rest);
    assert!(
        frames.iter().any(|(op, _)| *op == 0x9),
        "a ping came first: {frames:?}"
    );
}

#[test]
fn half_finished_handshakes_are_dropped_after_the_handshake_timeout() {
    let w = Worker::without_daemon(&[("WORKER_HANDSHAKE_TIMEOUT_S", "1")]);
    let mut half = TcpStream::connect(w.addr).unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .unwrap();
    let mut silent = TcpStream::connect(w.addr).unwrap();
    let started = Instant::now();
    // Trickling one byte at a time does not extend the deadline.
    let mut trickle = TcpStream::connect(w.addr).unwrap();
    let trickler = std::thread::spawn(move || {
        for b in
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if trickle.write_all(&[*b]).is_err() {
                return Instant::now();
            }
            std::thread::sleep(TRICKLE_PACE);
        }
        Instant::now()
    });
    for (what, s) in [("half head", &mut half), ("silent", &mut silent)] {
        let (_, closed) = read_until_closed(s, Duration::from_secs(5));
        let took =
            closed.unwrap_or_else(|| panic!("{what} connection still open after 5 s")) - started;
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(3500),
            "{what}: dropped after {took:?}"
        );
    }
    let stopped = trickler.join().unwrap() - started;
    assert!(
        stopped < Duration::from_millis(3500),
        "the trickler was not cut off ({stopped:?})"
    );
    // The worker still serves normal clients.
    assert_served(&mut w.ws());
}

#[test]
fn a_slow_consumer_is_closed_4008_without_slowing_others_and_can_resume() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[("WORKER_CLIENT_QUEUE_BYTES", "65536")]);
    let mut good = w.ws();
    good.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let mut slow = WsClient::connect_small_rcvbuf(w.addr, 4096);
    let sub = slow.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let epoch = sub["epoch"].as_str().unwrap().to_string();
    // ~8 KB events; the slow client reads nothing while they pile up.
    let pad = "p".repeat(8000);
    let total = 120u64;
    for i in 0..total {
        sim.emit(json!({"event": "x_pad", "i": i, "pad": pad}), None);
        let e = good.event(WAIT).expect("the good client is not held back");
        assert_eq!(e["data"]["i"], i, "{}", event_name(&e));
    }
    // Now read: whatever was written before the close, then 4008.
    let code = slow.expect_close(Duration::from_secs(10));
    assert_eq!(code, Some(4008));
    let mut got = Vec::new();
    while let Some(e) = slow.event(Duration::ZERO) {
        got.push(seq(&e));
    }
    assert!(
        (got.len() as u64) < total,
        "the slow client was closed before getting everything"
    );
    assert_consecutive(&got, "what the slow client got before 4008");
    let samples = scrape(w.addr, &[]);
    assert_eq!(
        metric(&samples, "cryptoworker_slow_consumer_closes_total", &[]),
        Some(1.0)
    );
    // A client closed with 4008 may resume with `since` (docs/protocol.md, "Close codes"). The
    // discarded backlog is at least the queue limit, so the replay must be paced by what the socket
    // takes, not refused with another 4008.
    let since = got.last().copied().unwrap_or(sub["seq"].as_u64().unwrap());
    let mut again = w.ws();
    again.send_json(&json!({"type": "subscribe", "events": ["*"], "since": since, "epoch": epoch}));
    let r = match again.read(WAIT) {
        Ok(r) => r,
        other => panic!(
            "resume after 4008 (since {since}, {} events missed) got {other:?} instead of `subscribed`",
            total as usize - got.len()
        ),
    };
    assert_eq!(r["resumed"], true, "{r}");
    let until = r["seq"].as_u64().expect("seq in the reply");
    let rest: Vec<u64> = again
        .events_through(until, Duration::from_secs(10))
        .iter()
        .map(seq)
        .collect();
    assert_eq!(rest.first(), Some(&(since + 1)), "{rest:?}");
    assert_consecutive(&rest, "the resumed replay up to the reply's seq");
    assert!(
        again.events_before_pong().is_empty(),
        "nothing past the reply's seq on a quiet stream"
    );
}
