//! Child processes: the worker (`cryptoworker run`) and simulated daemons (`cryptoworker
//! simulate`), with their output captured (bounded) and printed when a test fails.
//!
//! Invariants: the environment is never inherited; every child is killed and reaped on drop.

use super::BIN;
use super::http::http_raw;
use super::ws::Client;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Log lines kept per process (oldest dropped first).
const LOG_KEEP: usize = 4000;

/// Lines a child process printed, bounded.
type Lines = Arc<Mutex<VecDeque<String>>>;

fn collect_lines(stream: impl Read + Send + 'static, lines: Lines) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut l = lines.lock().unwrap();
            if l.len() >= LOG_KEEP {
                l.pop_front();
            }
            l.push_back(line);
        }
    });
}

/// Waits until some line contains `marker`, returns the text after it.
fn wait_for_line(lines: &Lines, marker: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(rest) = lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.split_once(marker).map(|(_, r)| r.to_string()))
        {
            return rest;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen: Vec<String> = lines.lock().unwrap().iter().cloned().collect();
    panic!(
        "{what} never printed {marker:?}; output:\n{}",
        seen.join("\n")
    );
}

/// A port nothing listens on (bound then released).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A spawned child process with its output captured.
struct Proc {
    child: Child,
    lines: Lines,
    /// The command line, for failure reports.
    args: Vec<String>,
}

impl Proc {
    fn spawn(args: &[&str], env: &[(String, String)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cryptoworker");
        let lines: Lines = Arc::default();
        collect_lines(child.stdout.take().unwrap(), lines.clone());
        collect_lines(child.stderr.take().unwrap(), lines.clone());
        Proc {
            child,
            lines,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn output(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let lines = self
                .lines
                .lock()
                .map(|l| l.iter().rev().take(150).rev().cloned().collect::<Vec<_>>())
                .unwrap_or_default();
            eprintln!(
                "--- last output of {:?} (pid {}) ---\n{}",
                self.args,
                self.child.id(),
                lines.join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `cryptoworker run` process on an ephemeral port.
pub struct Worker {
    proc: Proc,
    /// Where clients connect.
    pub addr: SocketAddr,
}

impl Worker {
    /// Starts a worker with exactly `env` (plus `WORKER_HOST`/`WORKER_PORT=0` and `LOG_LEVEL=info`
    /// unless given); the process environment is not inherited.
    pub fn start(env: &[(&str, &str)]) -> Worker {
        let mut all: Vec<(String, String)> = vec![
            ("WORKER_HOST".into(), "127.0.0.1".into()),
            ("WORKER_PORT".into(), "0".into()),
            ("LOG_LEVEL".into(), "info".into()),
            (
                "DB_SPOOL_DIR".into(),
                std::env::temp_dir()
                    .join("cw-test-spool")
                    .display()
                    .to_string(),
            ),
        ];
        for (k, v) in env {
            all.retain(|(name, _)| name != k);
            all.push((k.to_string(), v.to_string()));
        }
        let proc = Proc::spawn(&["run"], &all);
        let rest = wait_for_line(&proc.lines, "Listening for clients on ws://", "worker");
        let addr = rest
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("bad listen line {rest:?}: {e}"));
        Worker { proc, addr }
    }

    /// A worker for coin BTC whose daemon port is closed (no events but `daemon_status`).
    pub fn without_daemon(env: &[(&str, &str)]) -> Worker {
        let port = closed_port().to_string();
        let mut all = vec![
            ("WORKER_COINS", "BTC"),
            ("BTC_HOST", "127.0.0.1"),
            ("BTC_PORT", port.as_str()),
        ];
        all.extend_from_slice(env);
        Worker::start(&all)
    }

    /// A worker connected to every simulator in `sims` (their coins, in order), with `env`
    /// on top, waiting until each daemon link is up.
    pub fn with_sims(sims: &[&Sim], env: &[(&str, &str)]) -> Worker {
        let coins: Vec<&str> = sims.iter().map(|s| s.coin.as_str()).collect();
        let mut owned = vec![("WORKER_COINS".to_string(), coins.join(","))];
        for s in sims {
            owned.push((format!("{}_HOST", s.coin), "127.0.0.1".into()));
            owned.push((format!("{}_PORT", s.coin), s.addr.port().to_string()));
        }
        let mut all: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(env);
        let w = Worker::start(&all);
        w.wait_daemons_connected(sims.len());
        w
    }

    /// Waits until `n` daemons report `connected` in `get_status`.
    pub fn wait_daemons_connected(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            last = self.status();
            let up = last["daemons"]
                .as_object()
                .map_or(0, |d| d.values().filter(|v| v["connected"] == true).count());
            if up >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "daemons never connected: {last}\nworker log:\n{}",
            self.logs()
        );
    }

    /// The `get_status` data, through a short-lived client (workers without API keys only).
    pub fn status(&self) -> Value {
        let mut c = Client::connect(self.addr);
        let r = c.request(json!({"type": "get_status"}));
        assert_eq!(r["type"], "status", "{r}");
        r["data"].clone()
    }

    /// `ws://addr/` plus `path_and_query` (starting with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// Process id (for /proc).
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Resident set size in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS")
    }

    /// A KiB field of /proc/PID/status (`VmRSS`, `VmHWM` = peak RSS, ...).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.split(':').next() == Some(field))
            .unwrap_or_else(|| panic!("{field} not in /proc/PID/status"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Open file descriptors of the worker process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// Everything the worker logged so far (the last lines).
    pub fn logs(&self) -> String {
        self.proc.output()
    }
}

/// A `cryptoworker simulate` process on an ephemeral port, quiet unless told otherwise.
pub struct Sim {
    proc: Proc,
    /// Upper-case coin.
    pub coin: String,
    /// Its HTTP/WS address.
    pub addr: SocketAddr,
}

impl Sim {
    /// Starts a simulator for `coin`. Defaults `--rate 0 --block-interval 0` (only what tests
    /// inject) unless `args` set them.
    pub fn start(coin: &str, args: &[&str]) -> Sim {
        let mut all = vec!["simulate", "--coin", coin, "--port", "0"];
        if !args.contains(&"--rate") {
            all.extend(["--rate", "0"]);
        }
        if !args.contains(&"--block-interval") {
            all.extend(["--block-interval", "0"]);
        }
        all.extend_from_slice(args);
        let proc = Proc::spawn(&all, &[("LOG_LEVEL".into(), "warn".into())]);
        let rest = wait_for_line(&proc.lines, "daemon listening on ", "simulator");
        let addr = rest
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad sim line {rest:?}: {e}"));
        Sim {
            proc,
            coin: coin.to_ascii_uppercase(),
            addr,
        }
    }

    /// Calls a JSON-RPC method with Basic auth `electrum:electrumz`; returns `result`.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        sim_rpc(self.addr, method, params)
    }

    /// Pushes one raw update (`sim_emit`).
    pub fn emit(&self, update: Value, wallet: Option<&str>) {
        self.rpc("sim_emit", json!([update, wallet]));
    }

    /// Sends a raw text frame to every daemon socket (`sim_emit_raw`).
    pub fn emit_raw(&self, text: &str) {
        self.rpc("sim_emit_raw", json!([text]));
    }

    /// What the simulator printed.
    pub fn logs(&self) -> String {
        self.proc.output()
    }
}

/// Calls a simulator's JSON-RPC `method` at `addr` (usable from any thread); returns `result`
/// and panics on an error answer.
pub fn sim_rpc(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let auth = base64_basic("electrum", "electrumz");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let resp = http_raw(addr, format!("{head}{body}").as_bytes());
    let v: Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("sim answer not JSON ({e}): {resp:?}"));
    assert!(
        v.get("error").is_none_or(Value::is_null),
        "{method} failed: {v}"
    );
    v["result"].clone()
}

/// `sim_emit(update, wallet)` at `addr`, from any thread.
pub fn sim_emit(addr: SocketAddr, update: Value, wallet: Option<&str>) {
    sim_rpc(addr, "sim_emit", json!([update, wallet]));
}

/// `base64(user:password)`.
pub fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
