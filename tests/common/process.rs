//! Child processes of the `cryptoworker` binary: the worker (`run`) and simulated daemons
//! (`simulate`), each wrapped in a guard that kills it on drop.
//!
//! Invariants:
//! - children start with an empty environment plus `PATH` and what the test sets, so the
//!   caller's `DATABASE_URL`, `WORKER_*` or `{COIN}_*` variables never leak in;
//! - stdout and stderr are drained by threads into a bounded line buffer ([`Output`]), so a
//!   chatty child never blocks on a full pipe, and a failing test prints the last lines of each
//!   child it owned;
//! - every wait has a deadline.

use super::http::{HttpResponse, http_get, http_post_json};
use super::ws::WsClient;
use super::{POLL_STEP, deadline, free_port, wait_until};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines of a child's output kept for waits and failure reports.
const KEEP_LINES: usize = 4000;
/// Lines printed when a test fails.
const REPORT_LINES: usize = 80;
/// Time allowed for a child to start listening.
const START_TIMEOUT_S: f64 = 15.0;
/// Variable of the test run that sets the children's `LOG_LEVEL` (default `info`), e.g.
/// `CW_TEST_LOG_LEVEL=debug cargo test --test pipeline` to see why a test failed.
pub const LOG_LEVEL_VAR: &str = "CW_TEST_LOG_LEVEL";

/// The children's `LOG_LEVEL`.
fn log_level() -> String {
    std::env::var(LOG_LEVEL_VAR).unwrap_or_else(|_| "info".to_string())
}

/// The path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cryptoworker")
}

/// A bounded record of a child's output lines (stdout and stderr interleaved).
#[derive(Default)]
pub struct Output {
    lines: Mutex<VecDeque<String>>,
    grew: Condvar,
}

impl Output {
    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == KEEP_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
        self.grew.notify_all();
    }

    /// The first kept line containing `needle`, waiting for it until `deadline`.
    pub fn wait_for(&self, needle: &str, deadline: Instant) -> Option<String> {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let left = super::remaining(deadline);
            if left.is_zero() {
                return None;
            }
            lines = self
                .grew
                .wait_timeout(lines, left.min(Duration::from_millis(100)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Whether any kept line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().any(|l| l.contains(needle))
    }

    /// The last `n` lines, joined.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = lines.len().saturating_sub(n);
        lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn drain(pipe: impl Read + Send + 'static, out: Arc<Output>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(l) => out.push(l),
                Err(_) => break,
            }
        }
    });
}

/// A running child process, killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    exit: Option<ExitStatus>,
    /// Everything it printed (bounded).
    pub output: Arc<Output>,
}

impl Proc {
    /// Spawns `bin() args...` with exactly `env` (plus `PATH`), capturing its output.
    pub fn spawn(name: &str, args: &[String], env: &BTreeMap<String, String>) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({}): {e}", bin()));
        let output = Arc::new(Output::default());
        if let Some(p) = child.stdout.take() {
            drain(p, output.clone());
        }
        if let Some(p) = child.stderr.take() {
            drain(p, output.clone());
        }
        Proc {
            name: name.to_string(),
            child,
            exit: None,
            output,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (through `kill -TERM`, no libc needed).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// The exit status if the child has exited (does not wait).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits for the child to exit until `deadline`.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_STEP);
        }
    }

    /// Panics (with the output tail) when the child has exited.
    pub fn assert_running(&mut self, when: &str) {
        if let Some(s) = self.try_exit() {
            panic!(
                "{} exited ({s}) {when}; its output:\n{}",
                self.name,
                self.output.tail(REPORT_LINES)
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- last output of {} (pid {}) -----\n{}\n-----",
                self.name,
                self.pid(),
                self.output.tail(REPORT_LINES)
            );
        }
    }
}

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
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = http_post_json(self.addr, "/", Some(("electrum", "electrumz")), &body)
            .unwrap_or_else(|e| panic!("{method} on simulate {}: {e}", self.coin));
        assert_eq!(resp.status, 200, "{method}: {}", resp.text());
        let mut v = resp.json();
        match v.get_mut("error").map(Value::take) {
            Some(e) if !e.is_null() => Err(e),
            _ => Ok(v.get_mut("result").map(Value::take).unwrap_or(Value::Null)),
        }
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
    /// No coins yet, logs at `info` (see [`LOG_LEVEL_VAR`]), no database.
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

    /// Sets one environment variable.
    pub fn env(mut self, key: &str, value: &str) -> WorkerBuilder {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// Starts `cryptoworker run` on a free port and waits until `/health` answers 200. A port
    /// taken between choosing and binding (tests run in parallel) is retried with another one.
    pub fn start(self) -> Worker {
        let mut env = self.env;
        if !self.coins.is_empty() {
            env.insert("WORKER_COINS".into(), self.coins.join(","));
        }
        env.insert("WORKER_HOST".into(), "127.0.0.1".into());
        for attempt in 1..=3 {
            let port = free_port();
            env.insert("WORKER_PORT".into(), port.to_string());
            let proc = Proc::spawn("worker", &["run".to_string()], &env);
            let mut worker = Worker {
                proc,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            if worker.wait_healthy(deadline(START_TIMEOUT_S)) {
                return worker;
            }
            let in_use = worker.proc.output.contains("in use");
            if !in_use || attempt == 3 {
                worker.proc.assert_running("before /health answered");
                panic!("worker never answered /health on {}", worker.addr);
            }
        }
        unreachable!("the loop returns or panics")
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

    /// A new WebSocket client on `ws://addr/`.
    pub fn ws(&self) -> WsClient {
        WsClient::connect(self.addr, "/").unwrap_or_else(|e| panic!("ws connect: {e}"))
    }

    /// The `status.data` object, fetched over a fresh WebSocket connection.
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

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.proc.sigterm();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        self.proc.wait_exit(deadline)
    }
}
