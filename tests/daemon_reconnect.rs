//! Daemon reconnection (issue 3; docs/daemon.md, "Reconnecting"): a daemon killed and restarted on
//! its port is reconnected within the backoff bound and announced with `daemon_status`; a daemon
//! that stops answering pings (half-open link) is replaced; a daemon that is down at start is
//! picked up when it comes up; and one coin's outage never delays another coin's events.
//!
//! Every daemon is a `cryptoworker simulate` process (quiet: events only when injected), except
//! the "down" ones: a closed port, and a listener that accepts TCP but never answers.

mod common;

use common::daemon::{Stream, emit_latency, restart};
use common::events::{self, assert_envelope};
use common::{QUIET, Sim, WorkerBuilder, deadline, free_port, star_client, worker_for};
use serde_json::json;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// The brief's bound for "reconnects within the backoff bound": the first retries wait at most
/// 0.5 s, then 1 s, 2 s, so a daemon that is back within a second is reconnected well before this.
const RECONNECT_BOUND: Duration = Duration::from_secs(10);

#[test]
fn killed_daemon_restarted_on_its_port_is_reconnected_and_announced() {
    let sim = Sim::start("BTC", QUIET);
    let worker = worker_for(&[&sim], &[]);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    emit_latency(&sim, &mut s, events::block(1), None);

    let (sim, killed) = restart(sim, QUIET);
    let down = s.until_status("BTC", false, deadline(10.0));
    let reason = down["reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "a disconnect says why: {down}");
    let up = s.until_status("BTC", true, killed + RECONNECT_BOUND);
    assert!(
        killed.elapsed() < RECONNECT_BOUND,
        "reconnected {:?} after the kill",
        killed.elapsed()
    );
    assert!(up.get("reason").is_none_or(|r| r.is_null()), "{up}");
    for (text, v) in &s.seen {
        assert_envelope(text, v, "BTC");
    }
    // One outage is one disconnect and one connect, however many attempts failed in between.
    let statuses: Vec<bool> = s
        .named("daemon_status")
        .iter()
        .map(|d| d["connected"] == true)
        .collect();
    assert_eq!(
        statuses,
        [false, true],
        "daemon_status events of one outage"
    );

    // The new link is live, and the status counts the reconnect.
    let (_, d) = emit_latency(&sim, &mut s, events::block(2), None);
    assert_eq!(d["height"], events::HEIGHT_BASE + 2);
    let st = worker.status();
    let btc = &st["daemons"]["BTC"];
    assert_eq!(btc["connected"], true, "{st}");
    assert!(btc["reconnects"].as_u64() >= Some(1), "reconnects: {st}");
    assert_eq!(btc["height"], events::HEIGHT_BASE + 2, "height: {st}");
}

#[test]
fn daemon_that_stops_answering_pings_is_replaced() {
    let sim = Sim::start("BTC", QUIET);
    let worker = worker_for(&[&sim], &[("DAEMON_PING_INTERVAL_S", "1")]);
    let (mut c, seq) = star_client(&worker);
    // An idle daemon that answers pings is not silent: nothing happens over 3.5 intervals.
    let quiet = c.recv_text(deadline(3.5));
    assert!(
        quiet.is_err(),
        "an idle, healthy link must stay up: {quiet:?}"
    );
    let st = worker.status();
    assert_eq!(st["daemons"]["BTC"]["reconnects"], 0, "{st}");

    sim.set_fault(json!({"stall": true}));
    let stalled = Instant::now();
    let mut s = Stream::new(&mut c, seq);
    let down = s.until_status("BTC", false, deadline(10.0));
    let noticed = stalled.elapsed();
    // Silence for three 1 s intervals, counted from the last pong (at most 1 s before the stall).
    assert!(
        noticed >= Duration::from_millis(1500) && noticed <= Duration::from_secs(6),
        "the half-open link should be noticed after ~2-4 s, took {noticed:?}: {down}"
    );
    assert!(
        down["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{down}"
    );
    s.until_status("BTC", true, stalled + Duration::from_secs(7));

    // Once the daemon answers again, events flow on the new link.
    sim.set_fault(json!({"stall": false}));
    let (latency, _) = emit_latency(&sim, &mut s, events::block(1), None);
    assert!(latency < Duration::from_secs(3), "event took {latency:?}");
    let st = worker.status();
    assert!(
        st["daemons"]["BTC"]["reconnects"].as_u64() >= Some(1),
        "{st}"
    );
}

#[test]
fn daemon_down_at_start_is_connected_when_it_comes_up() {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let mut worker = WorkerBuilder::new().daemon_at("BTC", addr).start();
    let ready = worker.get("/ready");
    assert_eq!(ready.status, 503, "no daemon connected: {}", ready.text());
    let st = worker.status();
    assert_eq!(st["daemons"]["BTC"]["connected"], false, "{st}");

    let sim = Sim::start_at("BTC", port, QUIET, deadline(10.0));
    // The backoff grew while the daemon was down: allow for the time that took (a slow start on
    // a loaded machine) on top of the bound.
    let bound = RECONNECT_BOUND + started.elapsed() * 2;
    worker.wait_connected(&["BTC"], Instant::now() + bound);
    assert_eq!(worker.get("/ready").status, 200);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    emit_latency(&sim, &mut s, events::block(1), None);
}

/// Emits `n` blocks on `sim`, `gap` apart, and returns each one's delivery latency.
fn latencies(sim: &Sim, s: &mut Stream<'_>, n: u64, gap: Duration) -> Vec<Duration> {
    (1..=n)
        .map(|i| {
            let next = Instant::now() + gap;
            let (latency, d) = emit_latency(sim, s, events::block(i), None);
            assert_eq!(d["height"], events::HEIGHT_BASE + i, "order: {d}");
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            latency
        })
        .collect()
}

#[test]
fn coins_whose_daemons_are_down_never_delay_the_others() {
    let btc = Sim::start("BTC", QUIET);
    // LTC: a closed port (connection refused, retried with backoff).
    let ltc = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // ETH: accepts TCP (the kernel completes the handshake) but never answers the upgrade.
    let black_hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let eth = black_hole.local_addr().expect("addr");
    let mut worker = WorkerBuilder::new()
        .daemon(&btc)
        .daemon_at("LTC", ltc)
        .daemon_at("ETH", eth)
        .start();
    worker.wait_connected(&["BTC"], deadline(10.0));
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);

    // 4 s of BTC events while LTC retries (attempts ~0.25, 0.75, 1.75, 3.75 s) and ETH hangs.
    let lat = latencies(&btc, &mut s, 20, Duration::from_millis(200));
    let mut sorted = lat.clone();
    sorted.sort();
    let (median, max) = (sorted[sorted.len() / 2], sorted[sorted.len() - 1]);
    assert!(
        max < Duration::from_secs(2) && median < Duration::from_millis(300),
        "BTC events were delayed (median {median:?}, max {max:?}): {lat:?}"
    );
    let st = worker.status();
    assert_eq!(st["daemons"]["BTC"]["connected"], true, "{st}");
    assert_eq!(st["daemons"]["LTC"]["connected"], false, "{st}");
    assert_eq!(st["daemons"]["ETH"]["connected"], false, "{st}");
    assert_eq!(worker.get("/ready").status, 200, "one daemon is enough");

    // Every client was told that LTC is down, and why (replayed from the start of the epoch).
    let mut late = worker.ws();
    late.subscribe(
        json!({"events": ["daemon_status"], "coins": ["LTC"], "since": 0}),
        deadline(5.0),
    );
    let (text, v) = late.recv_event_text(deadline(5.0));
    assert_envelope(&text, &v, "LTC");
    assert_eq!(v["data"]["connected"], false, "{text}");
    assert!(
        v["data"]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{text}"
    );
    drop(black_hole);
}
