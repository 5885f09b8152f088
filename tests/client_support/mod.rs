//! Shared helpers for the client-side integration tests (`tests/client_*.rs`, `tests/hostile.rs`):
//! spawn the real `cryptoworker` binary as a worker ([`Worker`]) and as simulated daemons
//! ([`Sim`], driven through its `sim_*` admin JSON-RPC), and talk to the worker over loopback
//! with a blocking tungstenite client ([`Client`]), raw sockets or plain HTTP ([`http_get`]).
//!
//! Invariants: every spawned process is killed and reaped when its handle drops (also when a
//! test panics); the worker listens on an ephemeral port (`WORKER_PORT=0`) read back from its
//! log, so tests never collide on ports; every wait has a deadline and panics with what was seen.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cryptoworker");
/// Default wait for a reply or an event.
pub const WAIT: Duration = Duration::from_secs(5);
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

    /// The `get_status` data, through a short-lived client.
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS");
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

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as is and reads the answer until the server closes (or 10 s).
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_http(&raw)
}

/// `GET path` with extra header lines (each `Name: value`).
pub fn http_get(addr: SocketAddr, path: &str, headers: &[&str]) -> HttpResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    http_raw(addr, req.as_bytes())
}

fn parse_http(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A minimal valid WebSocket upgrade request head for raw-socket tests.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &[&str]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// A masked client frame (`opcode`, payload), as a browser would send it.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// What one read from a [`Client`] produced.
#[derive(Debug)]
pub enum Got {
    /// A JSON text message.
    Msg(Value),
    /// A close frame (its code, if any).
    Close(Option<u16>),
    /// The connection ended without a close frame (the error text).
    Gone(String),
    /// Nothing within the wait.
    Timeout,
}

/// A blocking WebSocket test client. Replies and events are sorted into two queues so a test
/// can wait for one without losing the other.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    replies: VecDeque<Value>,
    events: VecDeque<Value>,
}

impl Client {
    /// Connects to `ws://addr/` or panics.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::connect_with(&format!("ws://{addr}/"), &[])
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Connects to `url` with extra headers; the handshake error (e.g. HTTP 401) otherwise.
    pub fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, tungstenite::Error> {
        let req = url.into_client_request()?;
        let host = req.uri().authority().unwrap().as_str().to_string();
        Client::handshake(TcpStream::connect(host)?, url, headers)
    }

    /// Connects to `ws://addr/` from the local address `from` (another loopback IP).
    pub fn connect_from(
        addr: SocketAddr,
        from: std::net::IpAddr,
    ) -> Result<Client, tungstenite::Error> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(from, 0).into())?;
        socket.connect(&addr.into())?;
        Client::handshake(socket.into(), &format!("ws://{addr}/"), &[])
    }

    /// Runs the client handshake for `url` over `stream` with extra headers.
    pub fn handshake(
        stream: TcpStream,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            let name: tungstenite::http::HeaderName = k.parse().unwrap();
            req.headers_mut()
                .insert(name, HeaderValue::from_str(v).unwrap());
        }
        stream.set_read_timeout(Some(WAIT))?;
        let ws = match tungstenite::client::client(req, stream) {
            Ok((ws, _)) => ws,
            Err(HandshakeError::Failure(e)) => return Err(e),
            Err(HandshakeError::Interrupted(_)) => {
                return Err(tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()));
            }
        };
        Ok(Client {
            ws,
            replies: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Sends a JSON value as a text frame.
    pub fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string());
    }

    /// Sends a text frame.
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("send {text:.80}: {e}"));
    }

    /// The next message from the socket (pings answered, pongs skipped).
    pub fn read(&mut self, wait: Duration) -> Got {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Timeout;
            }
            self.ws
                .get_mut()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Got::Msg(
                        serde_json::from_str(&t)
                            .unwrap_or_else(|e| panic!("server sent non-JSON {t:?}: {e}")),
                    );
                }
                Ok(Message::Close(frame)) => return Got::Close(frame.map(|f| u16::from(f.code))),
                Ok(Message::Binary(b)) => panic!("server sent a binary frame of {} bytes", b.len()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Got::Gone(e.to_string()),
            }
        }
    }

    /// The next non-event message within [`WAIT`]; events seen meanwhile are kept for
    /// [`Client::event`]. Panics on close or timeout.
    pub fn reply(&mut self) -> Value {
        if let Some(v) = self.replies.pop_front() {
            return v;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                Got::Msg(v) if v["type"] == "event" => self.events.push_back(v),
                Got::Msg(v) => return v,
                other => panic!("waiting for a reply: {other:?}"),
            }
        }
    }

    /// Sends `v` and returns the reply.
    pub fn request(&mut self, v: Value) -> Value {
        self.send(&v);
        self.reply()
    }

    /// Subscribes with `body` (its `type` is set) and returns the `subscribed` reply; panics
    /// on an error reply.
    pub fn subscribe(&mut self, mut body: Value) -> Value {
        body["type"] = json!("subscribe");
        let r = self.request(body.clone());
        assert_eq!(r["type"], "subscribed", "subscribe {body} -> {r}");
        r
    }

    /// The next event within `wait` (replies seen meanwhile are kept for [`Client::reply`]).
    pub fn event(&mut self, wait: Duration) -> Option<Value> {
        if let Some(v) = self.events.pop_front() {
            return Some(v);
        }
        let deadline = Instant::now() + wait;
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                Got::Msg(v) if v["type"] == "event" => return Some(v),
                Got::Msg(v) => self.replies.push_back(v),
                Got::Timeout => return None,
                other => panic!("waiting for an event: {other:?}"),
            }
        }
    }

    /// The next event whose `data.event` is `name` within `wait`, skipping others.
    pub fn event_named(&mut self, name: &str, wait: Duration) -> Value {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.event(left) {
                Some(e) if e["data"]["event"] == name => return e,
                Some(_) => {}
                None => panic!("no {name} event within {wait:?}"),
            }
        }
    }

    /// Every event that arrives within `wait`.
    pub fn events_for(&mut self, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(e) = self.event(deadline.saturating_duration_since(Instant::now())) {
            out.push(e);
        }
        out
    }

    /// Reads until the server closes; returns the close code (`None`: gone without a close
    /// frame). Panics if the connection is still open after `wait`.
    pub fn expect_close(&mut self, wait: Duration) -> Option<u16> {
        let deadline = Instant::now() + wait;
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                Got::Msg(v) if v["type"] == "event" => self.events.push_back(v),
                Got::Msg(v) => self.replies.push_back(v),
                Got::Close(code) => return code,
                Got::Gone(_) => return None,
                Got::Timeout => panic!("connection still open after {wait:?}"),
            }
        }
    }

    /// Replies seen so far but not yet taken.
    pub fn pending_replies(&mut self) -> Vec<Value> {
        self.replies.drain(..).collect()
    }
}

/// The HTTP status of a refused WebSocket handshake.
pub fn refusal_status(r: Result<Client, tungstenite::Error>) -> u16 {
    match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

/// Reads a raw socket until EOF or error; returns the bytes and when it ended (`None`: still
/// open at `wait`).
pub fn read_until_closed(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, Option<Instant>) {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, None);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return (out, Some(Instant::now())),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, Some(Instant::now())),
        }
    }
}

/// Splits unmasked server frames: `(opcode, payload)` each (stops at a partial frame).
pub fn server_frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let opcode = b[0] & 0x0F;
        let (len, head) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if b.len() < head + len {
            break;
        }
        out.push((opcode, b[head..head + len].to_vec()));
        b = &b[head + len..];
    }
    out
}

/// The body after the HTTP head of a raw upgrade answer (and the status code).
pub fn split_upgrade(raw: &[u8]) -> (u16, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head: {:?}", String::from_utf8_lossy(raw)));
    let status = String::from_utf8_lossy(&raw[..end])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, &raw[end + 4..])
}

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

/// One Prometheus sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the Prometheus text format strictly: every line is empty, a `#` comment, or a sample
/// with a valid metric name, well-formed `key="value"` labels and a number. Err names the line.
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_sample(line).map_err(|e| format!("line {}: {e}: {line:?}", i + 1))?);
    }
    Ok(out)
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let (series, value) = line.rsplit_once(' ').ok_or("no value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .map_err(|_| format!("value {v:?} is not a number"))?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (
            name,
            parse_labels(rest.strip_suffix('}').ok_or("unclosed labels")?)?,
        ),
    };
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(mut s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"").ok_or("label without =\"")?;
        if !valid_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        out.push((key.to_string(), value));
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
    Ok(out)
}

/// The value of the sample `name` whose labels include all of `labels`.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}

/// Scrapes and parses `/metrics` (with extra headers, e.g. a Bearer key).
pub fn scrape(addr: SocketAddr, headers: &[&str]) -> Vec<Sample> {
    let r = http_get(addr, "/metrics", headers);
    assert_eq!(r.status, 200, "{}", r.text());
    parse_metrics(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()))
}
