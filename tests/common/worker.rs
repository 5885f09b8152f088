//! The worker under test ([`Worker`]): `cryptoworker run` in its own process, configured with
//! [`WorkerBuilder`], with accessors for what the tests observe from outside (HTTP, status over
//! WebSocket, its log, `/proc`).
//!
//! Invariants: the worker listens on an ephemeral port (`WORKER_PORT=0` unless a test sets one)
//! read back from its `Listening for clients on ws://…/` line, so parallel tests never collide;
//! a started worker has answered `/health` with 200; its environment is exactly what the builder
//! set (plus `PATH`).

use super::http::{HttpResponse, http_get, http_get_with};
use super::metrics::{Sample, metric, scrape};
use super::process::{Proc, START_TIMEOUT_S, log_level};
use super::sim::Sim;
use super::ws::WsClient;
use super::{POLL_STEP, deadline, free_port, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Instant;

/// The line the worker prints once its client listener is bound, followed by `ADDR/`.
const LISTENING: &str = "Listening for clients on ws://";

/// Builds the environment of a worker process.
pub struct WorkerBuilder {
    coins: Vec<String>,
    env: BTreeMap<String, String>,
}

impl Default for WorkerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerBuilder {
    /// No coins yet, logs at `info` (see [`super::process::LOG_LEVEL_VAR`]), no database.
    pub fn new() -> WorkerBuilder {
        let env = BTreeMap::from([("LOG_LEVEL".to_string(), log_level())]);
        WorkerBuilder {
            coins: Vec::new(),
            env,
        }
    }

    /// Connects the worker to `sim` (adds its coin and sets `{COIN}_HOST`/`{COIN}_PORT`).
    pub fn daemon(self, sim: &Sim) -> WorkerBuilder {
        self.daemon_at(&sim.coin, sim.addr)
    }

    /// Adds `coin` with its daemon at `addr`, which need not be a running simulator (a closed
    /// port, a socket that never answers).
    pub fn daemon_at(mut self, coin: &str, addr: SocketAddr) -> WorkerBuilder {
        let c = coin.to_ascii_uppercase();
        self.env.insert(format!("{c}_HOST"), addr.ip().to_string());
        self.env
            .insert(format!("{c}_PORT"), addr.port().to_string());
        self.coins.push(c);
        self
    }

    /// Sets one environment variable (a `WORKER_COINS` set here wins over the daemons added).
    pub fn env(mut self, key: &str, value: &str) -> WorkerBuilder {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// Sets every `(key, value)` of `env`.
    pub fn envs(self, env: &[(&str, &str)]) -> WorkerBuilder {
        env.iter().fold(self, |b, (k, v)| b.env(k, v))
    }

    /// Starts `cryptoworker run`, reads its address from its log and waits until `/health`
    /// answers 200.
    pub fn start(self) -> Worker {
        let mut env = self.env;
        if !self.coins.is_empty() && !env.contains_key("WORKER_COINS") {
            env.insert("WORKER_COINS".into(), self.coins.join(","));
        }
        env.entry("WORKER_HOST".into())
            .or_insert_with(|| "127.0.0.1".into());
        env.entry("WORKER_PORT".into())
            .or_insert_with(|| "0".into());
        let mut proc = Proc::spawn("worker", &["run".to_string()], &env);
        let until = deadline(START_TIMEOUT_S);
        let Some(line) = proc.output.wait_for(LISTENING, until) else {
            proc.assert_running("before listening");
            panic!("the worker never printed `{LISTENING}`");
        };
        let addr_text = line
            .split(LISTENING)
            .nth(1)
            .map(|rest| rest.trim().trim_end_matches('/'))
            .unwrap_or_default();
        let addr: SocketAddr = addr_text
            .parse()
            .unwrap_or_else(|e| panic!("cannot read the address in {line:?}: {e}"));
        let mut worker = Worker { proc, addr };
        if !worker.wait_healthy(until) {
            worker.proc.assert_running("before /health answered");
            panic!("worker never answered /health on {}", worker.addr);
        }
        worker
    }
}

/// A worker running as `cryptoworker run` in its own process.
pub struct Worker {
    /// The process.
    pub proc: Proc,
    /// Its client-facing address.
    pub addr: SocketAddr,
}

impl Worker {
    /// A worker for coin BTC whose daemon port is closed (no events but `daemon_status`), with
    /// `env` on top.
    pub fn without_daemon(env: &[(&str, &str)]) -> Worker {
        let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
        WorkerBuilder::new()
            .daemon_at("BTC", closed)
            .envs(env)
            .start()
    }

    /// Polls `/health` until 200; false when the process exits or the deadline passes.
    fn wait_healthy(&mut self, deadline: Instant) -> bool {
        loop {
            if self.proc.try_exit().is_some() {
                return false;
            }
            if http_get(self.addr, "/health").is_ok_and(|r| r.status == 200) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL_STEP);
        }
    }

    /// `GET path` on the worker (panics on a transport error).
    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` on the worker with extra header lines (each `Name: value`).
    pub fn get_with(&self, path: &str, headers: &[&str]) -> HttpResponse {
        http_get_with(self.addr, path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `/metrics`, parsed strictly (workers without API keys only).
    pub fn metrics(&self) -> Vec<Sample> {
        scrape(self.addr, &[])
    }

    /// The value of the series `name` whose labels include `labels`; panics when absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics(), name, labels)
            .unwrap_or_else(|| panic!("{name} {labels:?} not in /metrics"))
    }

    /// `ws://addr` plus `path_and_query` (starting with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// A new WebSocket client on `ws://addr/`.
    pub fn ws(&self) -> WsClient {
        WsClient::connect(self.addr, "/").unwrap_or_else(|e| panic!("ws connect: {e}"))
    }

    /// The `status.data` object, fetched over a fresh WebSocket connection (workers without
    /// API keys only).
    pub fn status(&self) -> Value {
        let mut c = self.ws();
        let reply = c.request(json!({"type": "get_status"}), deadline(5.0));
        assert_eq!(reply["type"], "status", "get_status answered {reply}");
        reply["data"].clone()
    }

    /// Waits until every coin in `coins` shows `connected: true` in the status.
    pub fn wait_connected(&mut self, coins: &[&str], deadline: Instant) {
        let what = format!("daemons {coins:?} connected");
        wait_until(deadline, &what, || {
            self.proc.assert_running("while waiting for daemons");
            let st = self.status();
            coins
                .iter()
                .all(|c| st["daemons"][c.to_ascii_uppercase()]["connected"] == true)
        });
    }

    /// Waits until every coin in `coins` is connected and its catch-up is done (`catching_up`
    /// false in `get_status`), so what a test emits next arrives live only, not also through a
    /// wallet's `get_updates` drain.
    pub fn wait_caught_up(&mut self, coins: &[&str], deadline: Instant) {
        let what = format!("daemons {coins:?} caught up");
        wait_until(deadline, &what, || {
            self.proc.assert_running("while waiting for the catch-up");
            let st = self.status();
            coins.iter().all(|c| {
                let d = &st["daemons"][c.to_ascii_uppercase()];
                d["connected"] == true && d["catching_up"] == false
            })
        });
    }

    /// Everything the worker printed (the kept lines).
    pub fn logs(&self) -> String {
        self.proc.output.all()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.proc.try_exit().is_none()
    }

    /// Resident set size in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS")
    }

    /// A KiB field of /proc/PID/status (`VmRSS`, `VmHWM` = peak RSS, ...).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.proc.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find(|l| l.split(':').next() == Some(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}"))
    }

    /// Open file descriptors of the worker process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.proc.pid())).map_or(0, |d| d.count())
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.proc.sigterm();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        self.proc.wait_exit(deadline)
    }
}
