//! Helpers for the daemon-side tests (`tests/daemon_*.rs`): restarting a simulated daemon on its
//! port, waiting for `daemon_status` events, reading the simulator's RPC log, and timing how long
//! an injected update takes to reach a client.
//!
//! Invariants: every wait has a deadline; a `"*"` subscriber's `seq` is checked to grow by exactly
//! one across everything these helpers read, so no event is skipped unseen.

use super::{RecvError, Sim, WsClient, deadline};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Kills `sim` (SIGKILL, as a crash would) and starts a new simulator of the same coin on the same
/// port with `extra` flags; returns the new one and the instant the old one was killed.
pub fn restart(sim: Sim, extra: &[&str]) -> (Sim, Instant) {
    let (coin, port) = (sim.coin.clone(), sim.addr.port());
    drop(sim);
    let killed = Instant::now();
    (Sim::start_at(&coin, port, extra, deadline(10.0)), killed)
}

/// Whether the simulator's RPC log holds a call of `method` naming `wallet`.
pub fn rpc_logged(sim: &Sim, method: &str, wallet: &str) -> bool {
    sim.rpc_log()
        .iter()
        .any(|c| c["method"] == method && c["wallet"] == wallet)
}

/// A `"*"` subscriber's reader that checks `seq` continuity and keeps every event it read.
pub struct Stream<'a> {
    /// The client.
    pub client: &'a mut WsClient,
    /// The last `seq` read.
    pub last: u64,
    /// Every event read so far (raw text and JSON), oldest first.
    pub seen: Vec<(String, Value)>,
}

impl<'a> Stream<'a> {
    /// Reads events of `client` after `seq` (the `subscribed` reply's).
    pub fn new(client: &'a mut WsClient, seq: u64) -> Stream<'a> {
        Stream {
            client,
            last: seq,
            seen: Vec::new(),
        }
    }

    /// The next event (`seq` must be the last one plus one); `None` at `until`.
    pub fn try_next(&mut self, until: Instant) -> Option<Value> {
        let text = match self.client.recv_text(until) {
            Ok(text) => text,
            Err(RecvError::Timeout) => return None,
            Err(e) => panic!("expected an event, got {e:?}"),
        };
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("server sent a message that is not JSON ({e}): {text}"));
        assert_eq!(v["type"], "event", "expected an event, got {text}");
        let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("seq in {text}"));
        assert_eq!(seq, self.last + 1, "seq must grow by exactly one: {text}");
        self.last = seq;
        self.seen.push((text, v.clone()));
        Some(v)
    }

    /// The next event; panics at `until`.
    pub fn next(&mut self, until: Instant) -> Value {
        self.try_next(until)
            .unwrap_or_else(|| panic!("no event in time; read so far: {}", self.texts()))
    }

    /// Reads until an event whose `data` satisfies `pred`; returns its `data`. Panics naming
    /// `what` (and listing what was read) at `until`.
    pub fn until_data(
        &mut self,
        until: Instant,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        loop {
            match self.try_next(until) {
                Some(v) if pred(&v["data"]) => return v["data"].clone(),
                Some(_) => {}
                None => panic!(
                    "timed out waiting for {what}; read so far: {}",
                    self.texts()
                ),
            }
        }
    }

    /// Every event read so far, as received, one a line.
    pub fn texts(&self) -> String {
        let lines: Vec<&str> = self.seen.iter().map(|(t, _)| t.as_str()).collect();
        format!("\n{}", lines.join("\n"))
    }

    /// Reads until the `daemon_status` of `coin` with `connected`; returns its `data`.
    pub fn until_status(&mut self, coin: &str, connected: bool, until: Instant) -> Value {
        let what = format!("daemon_status {coin} connected:{connected}");
        self.until_data(until, &what, |d| {
            d["event"] == "daemon_status" && d["coin"] == coin && d["connected"] == connected
        })
    }

    /// Whether some event read so far has a `data` satisfying `pred`.
    pub fn has(&self, pred: impl Fn(&Value) -> bool) -> bool {
        self.seen.iter().any(|(_, v)| pred(&v["data"]))
    }

    /// The `data` of every event read so far named `event`.
    pub fn named(&self, event: &str) -> Vec<&Value> {
        self.seen
            .iter()
            .map(|(_, v)| &v["data"])
            .filter(|d| d["event"] == event)
            .collect()
    }
}

/// Emits `update` on `sim` for `wallet` and returns how long it took to reach `stream` (events
/// read before it, such as another coin's `daemon_status`, stay in `seen`), and its `data`
/// (the first event that [`carries`] it).
pub fn emit_latency(
    sim: &Sim,
    stream: &mut Stream<'_>,
    update: Value,
    wallet: Option<&str>,
) -> (Duration, Value) {
    let sent = Instant::now();
    sim.emit(update.clone(), wallet);
    let data = stream.until_data(deadline(10.0), &format!("the emitted {update}"), |d| {
        d["coin"] == sim.coin.as_str() && carries(d, &update)
    });
    (sent.elapsed(), data)
}

/// Whether a client event's `data` has the update's name and, for every other field of the
/// update that it also has under the same key (`height`, `address`, `status`...), the same value.
pub fn carries(data: &Value, update: &Value) -> bool {
    let Some(fields) = update.as_object() else {
        return false;
    };
    data["event"] == update["event"]
        && fields
            .iter()
            .all(|(k, v)| data.get(k).is_none_or(|got| got == v))
}
