//! Pipelined enrichment (issue 13) against `cryptoworker simulate` over real sockets: a burst of
//! BTC `new_transaction` pushes whose lookups each take 20 ms arrives enriched, in daemon order,
//! in about `N / DAEMON_LOOKUP_WINDOW` lookup times rather than `N`; a daemon that stops
//! answering lookups holds only its own coin's events (until `DAEMON_RPC_TIMEOUT_S`).
//!
//! The time bounds are generous (half the serial time): this checks behaviour, not speed.

mod common;

use common::daemon::Stream;
use common::{Sim, deadline, star_client, worker_for};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const W: &str = "zpubLOOKUPSwallet";
const DELAY_MS: u64 = 20;

/// A simulator answering every daemon call after `delay_ms`, with the wallet loaded.
fn sim(coin: &str, delay_ms: u64) -> Sim {
    let fault = format!("rpc_delay_ms={delay_ms}");
    let args = [
        "--rate",
        "0",
        "--block-interval",
        "0",
        "--wallets",
        W,
        "--preload-wallets",
        "--fault",
        &fault,
    ];
    Sim::start(coin, &args)
}

/// A bench-shaped tx hash the simulator answers lookups for (`0x{µs:016x}{i:048x}`).
fn bench_hash(i: u64) -> String {
    format!("0x{:016x}{i:048x}", 1_700_000_000_000_000u64)
}

/// The index a bench hash encodes.
fn index_of(hash: &str) -> Option<u64> {
    u64::from_str_radix(hash.get(hash.len().checked_sub(16)?..)?, 16).ok()
}

/// One frame carrying `new_transaction` for each index in `range`, for wallet [`W`].
fn burst(sim: &Sim, coin: &str, range: std::ops::Range<u64>) {
    burst_for(sim, coin, W, range);
}

/// [`burst`] for another wallet.
fn burst_for(sim: &Sim, coin: &str, wallet: &str, range: std::ops::Range<u64>) {
    let updates: Vec<Value> = range
        .map(|i| json!({"event": "new_transaction", "tx": bench_hash(i)}))
        .collect();
    let frame = json!({"updates": updates, "wallet": wallet, "currency": coin});
    sim.emit_raw(&frame.to_string());
}

/// Reads `n` `new_transaction` events of `coin` (others are skipped); returns their data.
fn transactions(s: &mut Stream, coin: &str, n: usize, until: Instant) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        let v = s.next(until);
        if v["data"]["coin"] == coin && v["data"]["event"] == "new_transaction" {
            got.push(v["data"].clone());
        }
    }
    got
}

/// A counter's value from `/metrics`.
fn metric(worker: &common::Worker, name: &str) -> u64 {
    worker.metric(name, &[]) as u64
}

#[test]
fn a_burst_of_lookups_is_pipelined_enriched_and_in_order() {
    const N: u64 = 200;
    let btc = sim("BTC", DELAY_MS);
    let worker = worker_for(&[&btc], &[("BTC_WALLETS", W)]);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    let before = metric(&worker, "cryptoworker_lookups_total");
    let start = Instant::now();
    burst(&btc, "BTC", 0..N);
    let got = transactions(&mut s, "BTC", N as usize, deadline(20.0));
    let took = start.elapsed();
    let order: Vec<Option<u64>> = got
        .iter()
        .map(|d| d["tx_hash"].as_str().and_then(index_of))
        .collect();
    assert_eq!(order, (0..N).map(Some).collect::<Vec<_>>(), "daemon order");
    for d in &got {
        let inner = &d["data"];
        assert_eq!(inner["amount"], "0.10000000", "enriched: {d}");
        assert_eq!(inner["confirmations"], 0, "{d}");
        assert_eq!(inner["outputs"].as_array().map(Vec::len), Some(1), "{d}");
        assert!(inner["to_address"].is_string(), "{d}");
    }
    let serial = Duration::from_millis(N * DELAY_MS);
    eprintln!("{N} lookups of {DELAY_MS} ms: {took:?} (serial {serial:?})");
    assert!(
        took < serial / 2,
        "{N} lookups of {DELAY_MS} ms took {took:?}: not pipelined (serial: {serial:?})"
    );
    let calls = metric(&worker, "cryptoworker_lookups_total") - before;
    assert_eq!(calls, N, "one call per distinct transaction");

    // The same transactions for another wallet: answered from the cache, no new call.
    burst_for(&btc, "BTC", "zpubLOOKUPSother", 0..10);
    let again = transactions(&mut s, "BTC", 10, deadline(5.0));
    assert!(again.iter().all(|d| d["data"]["amount"] == "0.10000000"));
    let calls = metric(&worker, "cryptoworker_lookups_total") - before;
    assert_eq!(calls, N, "repeats within the TTL make no call");
    assert!(metric(&worker, "cryptoworker_lookup_cache_hits_total") >= 10);
}

#[test]
fn a_daemon_that_stops_answering_does_not_stall_another_coin() {
    let btc = sim("BTC", DELAY_MS);
    let ltc = sim("LTC", 0);
    let env = [
        ("BTC_WALLETS", W),
        ("LTC_WALLETS", W),
        ("DAEMON_RPC_TIMEOUT_S", "3"),
    ];
    let worker = worker_for(&[&btc, &ltc], &env);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    ltc.set_fault(json!({"rpc_delay_ms": 60_000}));
    let start = Instant::now();
    burst(&ltc, "LTC", 1000..1100);
    burst(&btc, "BTC", 0..50);
    let got = transactions(&mut s, "BTC", 50, deadline(10.0));
    let btc_at = start.elapsed();
    assert!(
        btc_at < Duration::from_millis(1500),
        "BTC waited {btc_at:?} behind the silent LTC daemon"
    );
    assert!(got.iter().all(|d| d["data"]["amount"] == "0.10000000"));
    assert!(
        !s.has(|d| d["coin"] == "LTC" && d["event"] == "new_transaction"),
        "LTC's events wait for their lookups"
    );
    // The silent daemon's backlog goes out at the RPC timeout, in order, unenriched.
    let held = transactions(&mut s, "LTC", 100, deadline(10.0));
    let ltc_at = start.elapsed();
    assert!(
        ltc_at >= Duration::from_millis(2500) && ltc_at < Duration::from_secs(8),
        "LTC released at {ltc_at:?} (timeout 3 s)"
    );
    let order: Vec<Option<u64>> = held
        .iter()
        .map(|d| d["tx_hash"].as_str().and_then(index_of))
        .collect();
    assert_eq!(order, (1000..1100).map(Some).collect::<Vec<_>>());
    assert!(
        held.iter().all(|d| d["data"]["amount"].is_null()),
        "unknown fields stay null"
    );
    assert!(metric(&worker, "cryptoworker_lookups_failed_total") >= 100);
}
