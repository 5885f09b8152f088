//! A simulated Bitcart daemon ([`Sim`]): `cryptoworker simulate` in its own process, driven
//! through its `sim_*` admin JSON-RPC ([`sim_rpc`] works from any thread with just the address).
//!
//! Invariants: a simulator listens on an ephemeral port (or a given one, to play a restart),
//! read back from its `listening on` line; it is killed on drop like every [`Proc`].

use super::deadline;
use super::http::http_post_json;
use super::process::{Proc, REPORT_LINES, START_TIMEOUT_S, log_level};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A simulated Bitcart daemon running as `cryptoworker simulate` in its own process.
pub struct Sim {
    /// The process.
    pub proc: Proc,
    /// Where it listens (read from its `listening on` line).
    pub addr: SocketAddr,
    /// Upper-case coin symbol.
    pub coin: String,
}

impl Sim {
    /// Starts `simulate --coin <coin> --host 127.0.0.1 --port 0 <extra...>` and waits for its
    /// `[SIMULATE] <COIN> daemon listening on HOST:PORT` line.
    pub fn start(coin: &str, extra: &[&str]) -> Sim {
        Sim::try_start(coin, 0, extra).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Starts a simulator on a given `port` (for example the port of one that was killed, to
    /// play a daemon restart). A port still held by another socket is retried until `deadline`.
    pub fn start_at(coin: &str, port: u16, extra: &[&str], deadline: Instant) -> Sim {
        loop {
            match Sim::try_start(coin, port, extra) {
                Ok(sim) => return sim,
                Err(why) if Instant::now() >= deadline => panic!("{why}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// One attempt at [`Sim::start_at`]: `Err` says why it did not come up.
    fn try_start(coin: &str, port: u16, extra: &[&str]) -> Result<Sim, String> {
        let coin = coin.to_ascii_uppercase();
        let mut args: Vec<String> = ["simulate", "--coin", &coin, "--host", "127.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--port".to_string(), port.to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let env = BTreeMap::from([("LOG_LEVEL".to_string(), log_level())]);
        let mut proc = Proc::spawn(&format!("simulate {coin}"), &args, &env);
        let marker = format!("{coin} daemon listening on ");
        let until = deadline(START_TIMEOUT_S);
        let line = loop {
            let step = (Instant::now() + Duration::from_millis(100)).min(until);
            if let Some(line) = proc.output.wait_for(&marker, step) {
                break line;
            }
            if let Some(status) = proc.try_exit() {
                return Err(format!(
                    "simulate {coin} on port {port} exited ({status}): {}",
                    proc.output.tail(REPORT_LINES)
                ));
            }
            if Instant::now() >= until {
                return Err(format!("simulate {coin} never printed `{marker}`"));
            }
        };
        let addr_text = line
            .split(&marker)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        let addr: SocketAddr = addr_text
            .parse()
            .map_err(|_| format!("cannot read the address in {line:?}"))?;
        Ok(Sim { proc, addr, coin })
    }

    /// One JSON-RPC call with the default credentials: `Ok(result)` or `Err(error object)`.
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value, Value> {
        sim_rpc(self.addr, method, params)
    }

    /// A JSON-RPC call that must succeed.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.rpc(method, params)
            .unwrap_or_else(|e| panic!("{method} failed on simulate {}: {e}", self.coin))
    }

    /// `sim_emit`: pushes one update as given, for `wallet` (None = global).
    pub fn emit(&self, update: Value, wallet: Option<&str>) {
        self.call("sim_emit", json!([update, wallet]));
    }

    /// `sim_emit_raw`: pushes one raw text frame.
    pub fn emit_raw(&self, text: &str) {
        self.call("sim_emit_raw", json!([text]));
    }

    /// `sim_mine`: mines one block now; returns the new height.
    pub fn mine(&self) -> u64 {
        let h = self.call("sim_mine", json!([]));
        h.as_u64()
            .unwrap_or_else(|| panic!("sim_mine answered {h}"))
    }

    /// `sim_state`.
    pub fn state(&self) -> Value {
        self.call("sim_state", json!([]))
    }

    /// `sim_set_fault` with the given switches.
    pub fn set_fault(&self, faults: Value) -> Value {
        self.call("sim_set_fault", json!([faults]))
    }

    /// `sim_rpc_log`: the `{method, wallet}` calls received so far.
    pub fn rpc_log(&self) -> Vec<Value> {
        match self.call("sim_rpc_log", json!([])) {
            Value::Array(a) => a,
            other => panic!("sim_rpc_log answered {other}"),
        }
    }
}

/// One JSON-RPC call to the simulator at `addr` with the default credentials (usable from any
/// thread): `Ok(result)` or `Err(error object)`; panics on a transport error.
pub fn sim_rpc(addr: SocketAddr, method: &str, params: Value) -> Result<Value, Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let resp = http_post_json(addr, "/", Some(("electrum", "electrumz")), &body)
        .unwrap_or_else(|e| panic!("{method} on the simulator at {addr}: {e}"));
    assert_eq!(resp.status, 200, "{method}: {}", resp.text());
    let mut v = resp.json();
    match v.get_mut("error").map(Value::take) {
        Some(e) if !e.is_null() => Err(e),
        _ => Ok(v.get_mut("result").map(Value::take).unwrap_or(Value::Null)),
    }
}

/// `sim_emit(update, wallet)` on the simulator at `addr`, from any thread; panics on an error.
pub fn sim_emit(addr: SocketAddr, update: Value, wallet: Option<&str>) {
    if let Err(e) = sim_rpc(addr, "sim_emit", json!([update, wallet])) {
        panic!("sim_emit on {addr} failed: {e}");
    }
}
