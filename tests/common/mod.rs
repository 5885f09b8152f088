//! The one shared harness of the integration tests: real processes on real loopback sockets.
//! Every test file that needs it declares `mod common;` (see `tests/README.md` for the map).
//!
//! - [`process`]: a child process of `env!("CARGO_BIN_EXE_cryptoworker")` ([`Proc`]) behind a
//!   guard that kills it on drop and, when the test is failing, prints the tail of its output.
//! - [`worker`]: the worker ([`Worker`], configured with [`WorkerBuilder`]).
//! - [`sim`]: simulated daemons ([`Sim`]) and their `sim_*` admin JSON-RPC.
//! - [`ws`]: the blocking WebSocket test client ([`WsClient`]) with deadlines on every read.
//! - [`http`]: plain HTTP/1.1 requests (GET, JSON POST, raw bytes) with deadlines.
//! - [`metrics`]: a strict Prometheus text parser and `/metrics` scraping.
//! - [`raw`]: hand-made upgrade requests and frames for hostile-client tests.
//! - [`daemon`]: daemon restarts, `daemon_status` waits and a seq-checked event reader.
//! - [`events`]: daemon updates to inject with `sim_emit` and checks of the client envelope.
//! - [`pg`]: a fresh PostgreSQL database per test, a private cluster to stop, event builders.
//!
//! Invariants: nothing here sleeps for a fixed time beyond short polling steps; every wait has a
//! deadline and fails with a message saying what it waited for; every port is chosen at run time
//! (tests run in parallel); children never inherit the caller's environment (no stray
//! `DATABASE_URL` or `WORKER_*` variable can change a test).
//!
//! Helpers and re-exports that a given test binary does not use are expected, hence the
//! `dead_code` and `unused_imports` allowances.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod daemon;
pub mod events;
pub mod http;
pub mod metrics;
pub mod pg;
pub mod process;
pub mod raw;
pub mod sim;
pub mod worker;
pub mod ws;

pub use http::{HttpResponse, http_get, http_get_with, http_raw};
pub use process::Proc;
pub use sim::{Sim, sim_emit, sim_rpc};
pub use worker::{Worker, WorkerBuilder};
pub use ws::{RecvError, WsClient, refusal_status};

use serde_json::Value;

use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a polling loop waits between checks.
pub const POLL_STEP: Duration = Duration::from_millis(20);
/// Default wait for a reply or an event in the conversational helpers.
pub const WAIT: Duration = Duration::from_secs(5);

/// The instant `secs` seconds from now.
pub fn deadline(secs: f64) -> Instant {
    Instant::now() + Duration::from_secs_f64(secs)
}

/// Time left until `deadline` (zero when passed).
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Polls `check` every [`POLL_STEP`] until it returns true; panics naming `what` at `deadline`.
pub fn wait_until(deadline: Instant, what: &str, mut check: impl FnMut() -> bool) {
    loop {
        if check() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL_STEP);
    }
}

/// Simulator flags for a quiet daemon: no payment flows, no blocks; events only when a test
/// injects them (`sim_emit`), so every expected event is known in advance.
pub const QUIET: &[&str] = &["--rate", "0", "--block-interval", "0"];

/// [`QUIET`] plus the `refuse_auth` fault: a (re)started daemon the worker cannot use yet.
pub const QUIET_REFUSING: &[&str] = &[
    "--rate",
    "0",
    "--block-interval",
    "0",
    "--fault",
    "refuse_auth",
];

/// Starts a worker on `sims` with extra environment and waits until every daemon is connected
/// and caught up.
pub fn worker_for(sims: &[&Sim], env: &[(&str, &str)]) -> Worker {
    let mut b = WorkerBuilder::new();
    for s in sims {
        b = b.daemon(s);
    }
    for (k, v) in env {
        b = b.env(k, v);
    }
    let mut w = b.start();
    let coins: Vec<&str> = sims.iter().map(|s| s.coin.as_str()).collect();
    w.wait_caught_up(&coins, deadline(15.0));
    w
}

/// [`worker_for`] with a database's settings (`db_env`, see `pg::TestDb::worker_env`) and the
/// spool in `spool_dir`.
pub fn db_worker_for(
    sims: &[&Sim],
    mut db_env: Vec<(&'static str, String)>,
    spool_dir: &std::path::Path,
) -> Worker {
    db_env.push(("DB_SPOOL_DIR", spool_dir.display().to_string()));
    let refs: Vec<(&str, &str)> = db_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    worker_for(sims, &refs)
}

/// A client subscribed to every event, and the `seq` its `subscribed` reply reported (every
/// later event has a larger one).
pub fn star_client(w: &Worker) -> (WsClient, u64) {
    let mut c = w.ws();
    let reply = c.subscribe(serde_json::json!({"events": ["*"]}), deadline(5.0));
    let seq = reply["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("seq in {reply}"));
    (c, seq)
}

/// A loopback port that was free a moment ago (bind to port 0, read it, release it). The worker
/// does not report an ephemeral port, so the tests pick one for it.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Current Unix time in seconds.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `seq` of an event.
pub fn seq(e: &Value) -> u64 {
    e["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("event without seq: {e}"))
}

/// The `data.event` name of an event.
pub fn event_name(e: &Value) -> &str {
    e["data"]["event"].as_str().unwrap_or("")
}

/// Asserts that `seqs` are strictly consecutive (no gap, no duplicate).
pub fn assert_consecutive(seqs: &[u64], what: &str) {
    for w in seqs.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "{what}: gap or duplicate between {} and {} in {seqs:?}",
            w[0],
            w[1]
        );
    }
}

/// Every server message (reply or event) has a string `type` and a float `timestamp` near now.
pub fn assert_message_envelope(v: &Value) {
    assert!(v["type"].is_string(), "{v}");
    let t = v["timestamp"]
        .as_f64()
        .unwrap_or_else(|| panic!("no timestamp: {v}"));
    assert!(
        (t - now_unix()).abs() < 60.0,
        "timestamp {t} far from now: {v}"
    );
}

/// Parses a decimal string (`"0.001"`, `"12"`) into integer units of `10^-decimals`, without
/// floats. `None` for anything that is not a plain non-negative decimal with at most `decimals`
/// fractional digits.
pub fn decimal_units(text: &str, decimals: u32) -> Option<u128> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > decimals as usize {
        return None;
    }
    let scale = 10u128.checked_pow(decimals)?;
    let whole: u128 = int.parse().ok()?;
    let mut fraction: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    fraction = fraction.checked_mul(10u128.checked_pow(decimals - frac.len() as u32)?)?;
    whole.checked_mul(scale)?.checked_add(fraction)
}

/// The raw text of the top-level `"timestamp"` number in a server message (the last key the
/// worker writes), so tests can check its precision as sent, not as re-parsed.
pub fn raw_timestamp(text: &str) -> Option<&str> {
    let start = text.rfind("\"timestamp\":")? + "\"timestamp\":".len();
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Asserts that a server message carries a `timestamp` in Unix seconds with millisecond
/// precision (at most three decimals) within `slack_s` of now.
pub fn assert_timestamp_ms(text: &str, slack_s: f64) {
    let raw = raw_timestamp(text).unwrap_or_else(|| panic!("no timestamp in {text}"));
    let decimals = raw.split_once('.').map_or(0, |(_, f)| f.len());
    assert!(
        (1..=3).contains(&decimals),
        "timestamp {raw} should have millisecond precision: {text}"
    );
    let t: f64 = raw
        .parse()
        .unwrap_or_else(|_| panic!("bad timestamp {raw}"));
    assert!(
        (t - now_unix()).abs() < slack_s,
        "timestamp {t} is not close to now: {text}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_units_are_exact() {
        assert_eq!(decimal_units("0.001", 8), Some(100_000));
        assert_eq!(decimal_units("12", 8), Some(1_200_000_000));
        assert_eq!(decimal_units("1.5", 0), None);
        assert_eq!(decimal_units("-1", 8), None);
        assert_eq!(decimal_units("1e5", 8), None);
        assert_eq!(decimal_units(".5", 8), None);
    }

    #[test]
    fn raw_timestamp_reads_the_last_key() {
        let t = r#"{"type":"event","data":{"timestamp":1},"timestamp":1640995200.123}"#;
        assert_eq!(raw_timestamp(t), Some("1640995200.123"));
    }
}
