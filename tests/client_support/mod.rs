//! Shared helpers for the client-side integration tests (`tests/client_*.rs`, `tests/hostile.rs`):
//! spawn the real `cryptoworker` binary as a worker ([`Worker`]) and as simulated daemons
//! ([`Sim`], driven through its `sim_*` admin JSON-RPC), and talk to the worker over loopback
//! with a blocking tungstenite client ([`Client`]), raw sockets or plain HTTP ([`http_get`]).
//!
//! Invariants: every spawned process is killed and reaped when its handle drops (also when a
//! test panics); the worker listens on an ephemeral port (`WORKER_PORT=0`) read back from its
//! log, so tests never collide on ports; every wait has a deadline and panics with what was seen.
//!
//! Each test binary uses a different part, hence the allowances below.
#![allow(dead_code, unused_imports)]

mod http;
mod process;
mod raw;
mod ws;

pub use http::*;
pub use process::*;
pub use raw::*;
pub use ws::*;

use serde_json::Value;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cryptoworker");
/// Default wait for a reply or an event.
pub const WAIT: Duration = Duration::from_secs(5);

/// The `seq` of an event.
pub fn seq(e: &Value) -> u64 {
    e["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("event without seq: {e}"))
}

/// The `data.event` name of an event.
pub fn name(e: &Value) -> &str {
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

/// A 64-hex transaction hash made from `n`.
pub fn tx_hash(n: u64) -> String {
    format!("{n:064x}")
}

/// Every server message has a string `type` and a float `timestamp` near now.
pub fn assert_envelope(v: &Value) {
    assert!(v["type"].is_string(), "{v}");
    let t = v["timestamp"]
        .as_f64()
        .unwrap_or_else(|| panic!("no timestamp: {v}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((t - now).abs() < 60.0, "timestamp {t} far from now: {v}");
}
