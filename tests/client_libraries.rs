//! The client libraries in `clients/` (JavaScript for browsers and Node, Python on `websockets`)
//! get resume right: each runs its test driver (`clients/js/test/resume_test.mjs`,
//! `clients/python/tests/resume_test.py`) with a `"*"` subscription through a TCP proxy that
//! this test cuts mid-stream several times, and what it delivered must be exactly what a direct
//! client saw over the same range: no gap, no duplicate, same data. Also: `resumed: false`
//! (another epoch, events no longer held) is surfaced with its reason, and tokens work (a wrong
//! one stops the client with an authentication error).
//!
//! `node` and the Python `websockets` package are required: these tests fail, never skip,
//! without them (`scripts/ensure-client-deps` installs the Python package).

mod common;

use common::{RecvError, Sim, Worker, WorkerBuilder, WsClient, deadline, star_client, worker_for};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A simulated BTC daemon with a steady stream: payment flows at 200/s and a block every 0.2 s.
/// When the cutter starts cutting connections (pacing of the fault load, not a wait).
const CUTS_START_AFTER: Duration = Duration::from_millis(1500);
const STEADY: &[&str] = &[
    "--rate",
    "200",
    "--block-interval",
    "0.2",
    "--wallets",
    "zpubX",
    "--preload-wallets",
];

/// Seconds each driver runs in the cut test.
const RUN_S: f64 = 10.0;
/// Reconnects each library must have resumed through.
const MIN_RESUMES: u64 = 4;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ----- the libraries' drivers --------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Lib {
    Js,
    Python,
}

/// The command that runs `lib`'s driver; panics (never skips) when its runtime is missing.
fn driver(lib: Lib) -> Command {
    match lib {
        Lib::Js => {
            let version = Command::new("node").arg("--version").output();
            assert!(
                version.as_ref().is_ok_and(|o| o.status.success()),
                "node is required for the JavaScript client tests: {version:?}"
            );
            let mut cmd = Command::new("node");
            // Node 20 has WebSocket behind a flag; Node 22 and later have it on by default.
            let global = Command::new("node")
                .args([
                    "-e",
                    "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if !global {
                cmd.arg("--experimental-websocket");
            }
            cmd.arg(repo().join("clients/js/test/resume_test.mjs"));
            cmd
        }
        Lib::Python => {
            let probe = Command::new("python3")
                .args(["-c", "import websockets.asyncio.client"])
                .output();
            assert!(
                probe.as_ref().is_ok_and(|o| o.status.success()),
                "python3 with the `websockets` package (>= 13) is required for the Python client \
                 tests (scripts/ensure-client-deps installs it): {probe:?}"
            );
            let mut cmd = Command::new("python3");
            cmd.arg(repo().join("clients/python/tests/resume_test.py"));
            cmd
        }
    }
}

/// A running driver.
struct Run {
    lib: Lib,
    child: Child,
    out: Option<PathBuf>,
}

/// What a driver printed and delivered.
struct Outcome {
    lib: Lib,
    status: i32,
    summary: Value,
    events: Vec<Value>,
}

impl Run {
    /// Starts `lib`'s driver on `url` for `seconds` with extra flags; `record` keeps every
    /// delivered event in a file.
    fn start(lib: Lib, url: &str, seconds: f64, flags: &[&str], record: bool) -> Run {
        let out = record.then(|| {
            std::env::temp_dir().join(format!(
                "cw-client-{lib:?}-{}-{}.jsonl",
                std::process::id(),
                common::free_port()
            ))
        });
        let mut cmd = driver(lib);
        cmd.arg(url).arg(seconds.to_string()).args(flags);
        if let Some(p) = &out {
            cmd.arg("--out").arg(p);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {lib:?} driver: {e}"));
        Run { lib, child, out }
    }

    /// Waits (at most `seconds` + 30 s) and reads the summary and the recorded events.
    fn finish(mut self, seconds: f64) -> Outcome {
        let until = deadline(seconds + 30.0);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the {:?} driver did not finish in time", self.lib);
            }
            std::thread::sleep(common::POLL_STEP);
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut p) = self.child.stdout.take() {
            p.read_to_string(&mut stdout).expect("driver stdout");
        }
        if let Some(mut p) = self.child.stderr.take() {
            p.read_to_string(&mut stderr).expect("driver stderr");
        }
        let line = stdout.lines().rev().find(|l| l.starts_with('{'));
        let summary: Value = line
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| {
                panic!(
                    "the {:?} driver ({status}) printed no summary.\nstdout:\n{stdout}\nstderr:\n{stderr}",
                    self.lib
                )
            });
        let events = match &self.out {
            Some(p) => {
                let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
                let _ = std::fs::remove_file(p);
                text.lines()
                    .map(|l| serde_json::from_str(l).expect("a recorded event"))
                    .collect()
            }
            None => Vec::new(),
        };
        if !stderr.trim().is_empty() {
            eprintln!("{:?} driver stderr:\n{stderr}", self.lib);
        }
        Outcome {
            lib: self.lib,
            status: status.code().unwrap_or(-1),
            summary,
            events,
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/")
}

// ----- a TCP proxy that can cut every connection ------------------------------------------

/// Forwards bytes between clients and `upstream`; [`Proxy::cut`] shuts every open connection
/// down at once, wherever the stream is (usually in the middle of a frame).
struct Proxy {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let open = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, a, s) = (open.clone(), accepted.clone(), stop.clone());
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = o.lock().unwrap_or_else(PoisonError::into_inner);
                    open.retain(|s: &TcpStream| s.peer_addr().is_ok());
                    open.push(client.try_clone().expect("clone"));
                    open.push(server.try_clone().expect("clone"));
                }
                pipe(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pipe(server, client);
            }
        });
        Proxy {
            addr,
            open,
            accepted,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Shuts down every open connection; returns how many client connections were open.
    fn cut(&self) -> usize {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.iter().filter(|s| s.peer_addr().is_ok()).count() / 2;
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        n
    }
}

/// Copies `from` to `to` on a thread until either side ends, then shuts `to` down.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        self.cut();
    }
}

// ----- a direct reference client -----------------------------------------------------------

/// A `"*"` client straight on the worker, recording every event (seq → data) until stopped.
struct Reference {
    epoch: String,
    /// The last seq it must read before it stops (`u64::MAX` while the run goes on).
    through: Arc<AtomicU64>,
    thread: Option<JoinHandle<BTreeMap<u64, Value>>>,
}

impl Reference {
    fn start(w: &Worker) -> Reference {
        let mut c: WsClient = w.ws();
        let reply = c.subscribe(json!({"events": ["*"]}), deadline(5.0));
        let epoch = reply["epoch"].as_str().expect("epoch").to_string();
        let through = Arc::new(AtomicU64::new(u64::MAX));
        let t = through.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeMap::new();
            let last_read = |seen: &BTreeMap<u64, Value>| seen.keys().next_back().copied();
            while last_read(&seen).is_none_or(|s| s < t.load(Ordering::SeqCst)) {
                match c.recv_json_until(deadline(0.2)) {
                    Ok(v) if v["type"] == "event" => {
                        let seq = v["seq"].as_u64().expect("seq");
                        assert!(
                            seen.insert(seq, v["data"].clone()).is_none(),
                            "the direct client got seq {seq} twice"
                        );
                    }
                    Ok(_) | Err(RecvError::Timeout) => {}
                    Err(e) => panic!("the direct client lost its connection: {e:?}"),
                }
            }
            seen
        });
        Reference {
            epoch,
            through,
            thread: Some(thread),
        }
    }

    /// Reads on until it has the event with seq `last` (the drivers' newest), then returns
    /// everything it read.
    fn finish(mut self, last: u64) -> BTreeMap<u64, Value> {
        self.through.store(last, Ordering::SeqCst);
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("the direct client")
    }
}

/// Numbers compared as f64 (a driver may print `1.0` as `1`), everything else as is.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn summary_u64(o: &Outcome, path: &[&str]) -> u64 {
    let mut v = &o.summary;
    for p in path {
        v = &v[p];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{:?}: no {path:?} in {}", o.lib, o.summary))
}

/// A tiny deterministic generator for the cut intervals.
fn next_rand(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

// ----- tests -------------------------------------------------------------------------------

#[test]
fn resume_through_cut_connections_has_no_gap_and_no_duplicate() {
    let sim = Sim::start("BTC", STEADY);
    let w = worker_for(&[&sim], &[]);
    let reference = Reference::start(&w);
    let epoch = reference.epoch.clone();
    let proxy = Proxy::start(w.addr);
    let url = ws_url(proxy.addr);

    let runs = [
        Run::start(Lib::Js, &url, RUN_S, &[], true),
        Run::start(Lib::Python, &url, RUN_S, &[], true),
    ];

    // Cut every connection at irregular intervals (0.4–1.2 s), also during a replay.
    let cuts = Arc::new(AtomicUsize::new(0));
    let stop_cutting = Arc::new(AtomicBool::new(false));
    let cutter = {
        let (cuts, stop) = (cuts.clone(), stop_cutting.clone());
        let open = proxy.open.clone();
        std::thread::spawn(move || {
            let mut rng = 0x5eed_u64;
            let started = Instant::now();
            // Pacing: the cuts start once the drivers have had time to start up and connect
            // (the drivers tolerate a cut at any time; this only spreads the cuts over the run).
            std::thread::sleep(CUTS_START_AFTER);
            while !stop.load(Ordering::SeqCst) && started.elapsed().as_secs_f64() < RUN_S - 1.5 {
                std::thread::sleep(Duration::from_millis(400 + next_rand(&mut rng) % 800));
                let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
                if !open.is_empty() {
                    cuts.fetch_add(1, Ordering::SeqCst);
                }
                for s in open.drain(..) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        })
    };

    let outcomes: Vec<Outcome> = runs.into_iter().map(|r| r.finish(RUN_S)).collect();
    stop_cutting.store(true, Ordering::SeqCst);
    cutter.join().expect("cutter");
    // The reference reads on until it covers the drivers' range.
    let newest = outcomes
        .iter()
        .filter_map(|o| o.events.last().and_then(|e| e["seq"].as_u64()))
        .max()
        .unwrap_or(0);
    let direct = reference.finish(newest);
    let cuts = cuts.load(Ordering::SeqCst);
    let accepted = proxy.accepted.load(Ordering::SeqCst);
    eprintln!(
        "proxy: {cuts} cuts, {accepted} connections; direct client: {} events (seq {:?}..={:?})",
        direct.len(),
        direct.keys().next(),
        direct.keys().next_back()
    );
    assert!(cuts >= 5, "the proxy cut only {cuts} times");
    let seqs: Vec<u64> = direct.keys().copied().collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the direct client's own stream has a gap"
    );

    for o in &outcomes {
        let lib = o.lib;
        eprintln!("{lib:?}: {}", o.summary);
        assert_eq!(o.status, 0, "{lib:?} driver failed: {}", o.summary);
        assert!(o.summary["error"].is_null(), "{lib:?}: {}", o.summary);
        assert_eq!(
            summary_u64(o, &["duplicates"]),
            0,
            "{lib:?} delivered a duplicate"
        );
        assert_eq!(summary_u64(o, &["gaps"]), 0, "{lib:?} delivered a gap");
        assert_eq!(
            summary_u64(o, &["gap_reports"]),
            0,
            "{lib:?} reported a gap"
        );
        assert_eq!(o.summary["resyncs"], json!([]), "{lib:?} needed a resync");
        let resumes = summary_u64(o, &["stats", "resumes"]);
        assert!(
            resumes >= MIN_RESUMES,
            "{lib:?} resumed only {resumes} times (at least {MIN_RESUMES} expected): {}",
            o.summary
        );
        assert!(
            o.events.len() >= 500,
            "{lib:?} delivered only {} events",
            o.events.len()
        );

        // Exactly the direct client's events over the same range, in order, same data.
        let first = o.events[0]["seq"].as_u64().expect("seq");
        let last = o.events[o.events.len() - 1]["seq"].as_u64().expect("seq");
        assert!(
            direct.contains_key(&first) && direct.contains_key(&last),
            "{lib:?} range {first}..={last} is not inside the direct client's {:?}..={:?}",
            direct.keys().next(),
            direct.keys().next_back()
        );
        let want: Vec<u64> = (first..=last).collect();
        let got: Vec<u64> = o
            .events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        if got != want {
            let bad = got
                .windows(2)
                .find(|w| w[1] != w[0] + 1)
                .map(|w| (w[0], w[1]));
            panic!("{lib:?}: delivered seqs are not {first}..={last}: first break {bad:?}");
        }
        for e in &o.events {
            assert_eq!(e["epoch"], epoch.as_str(), "{lib:?}: {e}");
            let seq = e["seq"].as_u64().unwrap();
            assert!(
                same(&e["data"], &direct[&seq]),
                "{lib:?}: seq {seq} differs:\n library: {}\n direct:  {}",
                e["data"],
                direct[&seq]
            );
        }
    }
}

#[test]
fn resumed_false_is_surfaced_with_its_reason() {
    let sim = Sim::start("BTC", STEADY);
    let w = worker_for(&[&sim], &[("WORKER_RING_SIZE", "100")]);
    let (_client, start) = star_client(&w);
    // Let the ring roll over: seq 1 is then no longer held.
    let mut epoch = String::new();
    common::wait_until(deadline(20.0), "300 events", || {
        let st = w.status();
        epoch = st["epoch"].as_str().unwrap_or_default().to_string();
        st["last_seq"].as_u64().unwrap_or(0) > start + 300
    });
    let url = ws_url(w.addr);
    let secs = 2.0;
    let cases = [
        ("epoch_changed", "not-this-epoch".to_string(), "3"),
        ("not_held", epoch.clone(), "1"),
    ];
    let mut runs = Vec::new();
    for (reason, e, seq) in &cases {
        for lib in [Lib::Js, Lib::Python] {
            let flags = ["--epoch", e.as_str(), "--seq", seq];
            runs.push((
                *reason,
                e.clone(),
                Run::start(lib, &url, secs, &flags, true),
            ));
        }
    }
    for (reason, given_epoch, run) in runs {
        let o = run.finish(secs);
        let lib = o.lib;
        eprintln!("{lib:?} ({reason}): {}", o.summary);
        assert_eq!(o.status, 0, "{lib:?}: {}", o.summary);
        let resyncs = o.summary["resyncs"].as_array().expect("resyncs");
        assert_eq!(
            resyncs.len(),
            1,
            "{lib:?}: one resync expected: {}",
            o.summary
        );
        let r = &resyncs[0];
        assert_eq!(r["reason"], reason, "{lib:?}: {r}");
        assert_eq!(r["previous"]["epoch"], given_epoch.as_str(), "{lib:?}: {r}");
        assert_eq!(r["current"]["epoch"], epoch.as_str(), "{lib:?}: {r}");
        // The stream goes on from the worker's position, consecutively.
        let current = r["current"]["seq"].as_u64().expect("current seq");
        assert!(!o.events.is_empty(), "{lib:?}: nothing after the resync");
        assert_eq!(o.events[0]["seq"].as_u64(), Some(current + 1), "{lib:?}");
        assert_eq!(summary_u64(&o, &["gaps"]), 0, "{lib:?}");
        assert_eq!(summary_u64(&o, &["duplicates"]), 0, "{lib:?}");
    }
}

#[test]
fn tokens_authenticate_and_a_wrong_token_stops_the_client() {
    let sim = Sim::start("BTC", STEADY);
    let w = WorkerBuilder::new()
        .daemon(&sim)
        .env("WORKER_API_KEYS", "k-right-1")
        .start();
    // `status` needs a key now; `/ready` does not.
    common::wait_until(deadline(15.0), "/ready", || w.get("/ready").status == 200);
    let url = ws_url(w.addr);
    let secs = 1.5;
    let cases: [(Lib, &str, &str, bool); 7] = [
        (Lib::Js, "k-right-1", "message", true),
        (Lib::Js, "k-right-1", "query", true),
        (Lib::Js, "k-wrong", "message", false),
        (Lib::Python, "k-right-1", "message", true),
        (Lib::Python, "k-right-1", "query", true),
        (Lib::Python, "k-wrong", "message", false),
        (Lib::Python, "k-wrong", "query", false),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(lib, token, via, ok)| {
            let flags = ["--token", token, "--via", via];
            (*via, *ok, Run::start(*lib, &url, secs, &flags, false))
        })
        .collect();
    for (via, ok, run) in runs {
        let o = run.finish(secs);
        let lib = o.lib;
        eprintln!("{lib:?} ({via}, ok={ok}): {}", o.summary);
        if ok {
            assert_eq!(o.status, 0, "{lib:?} via {via}: {}", o.summary);
            assert!(
                summary_u64(&o, &["delivered"]) > 0,
                "{lib:?} via {via}: {}",
                o.summary
            );
        } else {
            assert_eq!(o.status, 2, "{lib:?} via {via}: {}", o.summary);
            assert_eq!(
                o.summary["error"]["name"], "AuthError",
                "{lib:?}: {}",
                o.summary
            );
            assert_eq!(summary_u64(&o, &["delivered"]), 0, "{lib:?}");
        }
    }
}

/// One scripted connection of [`ScriptedServer`]: what to send after the client's `subscribe`
/// (`{since}`/`{epoch}` checked by the test afterwards), then the close code.
struct Script {
    messages: Vec<Value>,
    close: u16,
}

/// A fake worker that plays one [`Script`] per connection, in order, and records each
/// `subscribe` it received: duplicates, gaps and close codes on demand.
fn scripted_server(scripts: Vec<Script>) -> (SocketAddr, JoinHandle<Vec<Value>>) {
    use tungstenite::Message;
    use tungstenite::protocol::CloseFrame;
    use tungstenite::protocol::frame::coding::CloseCode;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let thread = std::thread::spawn(move || {
        let mut subscribes = Vec::new();
        for script in scripts {
            let (stream, _) = listener.accept().expect("accept");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut ws = tungstenite::accept(stream).expect("upgrade");
            let sub = loop {
                let m = ws.read().expect("a subscribe");
                let Ok(text) = m.to_text() else { continue };
                let v: Value = serde_json::from_str(text).expect("JSON");
                if v["type"] == "subscribe" {
                    break v;
                }
            };
            for mut m in script.messages {
                if m["type"] == "subscribed" {
                    m["id"] = sub["id"].clone();
                }
                ws.send(Message::text(m.to_string())).expect("send");
            }
            subscribes.push(sub);
            let frame = CloseFrame {
                code: CloseCode::from(script.close),
                reason: "scripted".into(),
            };
            let _ = ws.close(Some(frame));
            let until = deadline(3.0);
            while Instant::now() < until && ws.read().is_ok() {}
        }
        subscribes
    });
    (addr, thread)
}

fn ev(seq: u64) -> Value {
    json!({"type": "event", "seq": seq, "data": {"event": "new_block", "coin": "BTC", "height": seq}})
}

#[test]
fn duplicates_are_dropped_gaps_reported_and_close_codes_honoured() {
    for lib in [Lib::Js, Lib::Python] {
        let sub = |seq: u64, resumed: Option<bool>| {
            let mut m = json!({"type": "subscribed", "events": ["*"], "epoch": "E1", "seq": seq});
            if let Some(r) = resumed {
                m["resumed"] = json!(r);
            }
            m
        };
        let scripts = vec![
            // Fresh: position 10, three events, then a slow-consumer close.
            Script {
                messages: vec![sub(10, None), ev(11), ev(12), ev(13)],
                close: 4008,
            },
            // Resumed from 13: 12 and 13 again (dropped), 14, 15, a jump to 17; client limit.
            Script {
                messages: vec![sub(17, Some(true)), ev(12), ev(13), ev(14), ev(15), ev(17)],
                close: 1013,
            },
            // Resumed from 17: one event, then authentication fails: the client stops.
            Script {
                messages: vec![sub(18, Some(true)), ev(18)],
                close: 1008,
            },
        ];
        let (addr, server) = scripted_server(scripts);
        let o = Run::start(lib, &ws_url(addr), 20.0, &[], true).finish(20.0);
        let subscribes = server.join().expect("scripted server");
        eprintln!("{lib:?} (scripted): {}", o.summary);
        let seqs: Vec<u64> = o
            .events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [11, 12, 13, 14, 15, 17, 18], "{lib:?}: {}", o.summary);
        assert_eq!(summary_u64(&o, &["stats", "duplicates"]), 2, "{lib:?}");
        assert_eq!(summary_u64(&o, &["gap_reports"]), 1, "{lib:?}");
        assert_eq!(summary_u64(&o, &["stats", "resumes"]), 2, "{lib:?}");
        assert_eq!(o.status, 2, "{lib:?}: stops on 1008: {}", o.summary);
        assert_eq!(o.summary["error"]["name"], "AuthError", "{lib:?}");
        let since: Vec<(Value, Value)> = subscribes
            .iter()
            .map(|s| (s["since"].clone(), s["epoch"].clone()))
            .collect();
        assert_eq!(
            since,
            [
                (Value::Null, Value::Null),
                (json!(13), json!("E1")),
                (json!(17), json!("E1")),
            ],
            "{lib:?}: what each resubscribe asked for"
        );
    }
}
