//! `soakclients`: the WebSocket side of the memory soak (`bench/soak/soak.py`).
//!
//! One mio thread holds every client. Commands arrive on stdin, one per line; answers are JSON
//! lines on stdout:
//!
//! - `start <steady> <churners> <churn_ms>`: connects `steady` clients that subscribe to `*` and
//!   stay, and `churners` that subscribe, drop their socket after about `churn_ms` (0.5x..1.5x,
//!   spread) and resume with `since`/`epoch`, over and over. Answers `started` once all are
//!   subscribed.
//! - `stats`: counters so far (`stats`).
//! - `finish <quiet_ms>`: churners stop dropping (a dropped one resumes once more); once no event
//!   arrived for `quiet_ms` and every client is subscribed, answers `finished` with the check:
//!   every client's sequence numbers were contiguous and every client ended at the same last
//!   sequence number (it received every event). Then all clients close.
//! - `burst <n> <hold_ms>`: connects `n` fresh clients from fresh source addresses, subscribes
//!   them, holds them `hold_ms`, then drops them all; answers `burst_up` and `burst_down`.
//! - `exit`.
//!
//! Invariant checked for every event frame (`{"type":"event","seq":N,...}`): `N` is the client's
//! last sequence number plus one, where the last sequence number is set by the `subscribed`
//! reply (`seq`) and kept across resumes. A resume answered with `resumed: false` is a failure.

#[allow(dead_code)]
#[path = "../net.rs"]
mod net;
#[allow(dead_code)]
#[path = "../ws.rs"]
mod ws;

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

/// A minimal slab: stable keys, freed slots reused.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Client>>,
    free: Vec<usize>,
    len: usize,
}

impl Slab {
    fn insert(&mut self, c: Client) -> usize {
        self.len += 1;
        if let Some(k) = self.free.pop() {
            self.slots[k] = Some(c);
            return k;
        }
        self.slots.push(Some(c));
        self.slots.len() - 1
    }
    fn remove(&mut self, k: usize) {
        if self.slots.get_mut(k).and_then(Option::take).is_some() {
            self.len -= 1;
            self.free.push(k);
        }
    }
    fn contains(&self, k: usize) -> bool {
        self.slots.get(k).is_some_and(Option::is_some)
    }
    fn len(&self) -> usize {
        self.len
    }
    fn iter(&self) -> impl Iterator<Item = (usize, &Client)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(k, c)| c.as_ref().map(|c| (k, c)))
    }
    fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Client)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(k, c)| c.as_mut().map(|c| (k, c)))
    }
}

impl std::ops::Index<usize> for Slab {
    type Output = Client;
    fn index(&self, k: usize) -> &Client {
        self.slots[k].as_ref().expect("live client")
    }
}

impl std::ops::IndexMut<usize> for Slab {
    fn index_mut(&mut self, k: usize) -> &mut Client {
        self.slots[k].as_mut().expect("live client")
    }
}

const WAKER: Token = Token(usize::MAX);
const EVENT_PREFIX: &[u8] = b"{\"type\":\"event\",\"seq\":";
/// Clients per loopback source address (the worker allows 1,000 per IP by default).
const PER_SOURCE: u32 = 200;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Steady,
    Churner,
    Burst,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Connecting,
    Upgrading,
    Subscribing,
    Open,
    /// Dropped on purpose; reconnect at the deadline.
    Down,
}

struct Client {
    kind: Kind,
    src: Ipv4Addr,
    stream: Option<TcpStream>,
    state: State,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Last sequence number seen (from `subscribed` or an event); 0 before the first subscribe.
    last_seq: u64,
    epoch: Option<String>,
    /// When a churner drops (Open) or reconnects (Down).
    deadline: Option<Instant>,
    events: u64,
}

#[derive(Default)]
struct Counters {
    events: u64,
    gaps: u64,
    resumes: u64,
    failed_resumes: u64,
    unexpected_closes: u64,
    errors: u64,
    max_seq: u64,
    last_event_at: Option<Instant>,
    close_codes: Vec<u16>,
}

struct App {
    poll: Poll,
    dst: SocketAddr,
    upgrade: Vec<u8>,
    clients: Slab,
    c: Counters,
    churn_ms: u64,
    churning: bool,
    rng: u64,
    next_source: u32,
    buf: Vec<u8>,
    /// Pending `start`: answer once every client is subscribed.
    waiting_start: bool,
    /// Pending `finish`: quiet period.
    finishing: Option<Duration>,
    /// Pending burst: (hold, time all were up).
    burst: Option<(Duration, Option<Instant>, usize, Instant)>,
}

fn mask(rng: &mut u64) -> [u8; 4] {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng as u32).to_le_bytes()
}

fn parse_seq(p: &[u8]) -> Option<u64> {
    let rest = p.strip_prefix(EVENT_PREFIX)?;
    let mut n: u64 = 0;
    let mut any = false;
    for &b in rest {
        if !b.is_ascii_digit() {
            break;
        }
        n = n * 10 + u64::from(b - b'0');
        any = true;
    }
    any.then_some(n)
}

impl App {
    fn source(&mut self) -> Ipv4Addr {
        let i = self.next_source;
        self.next_source += 1;
        net::source_for(Ipv4Addr::new(127, 10, 0, 1), PER_SOURCE, i)
    }

    fn add(&mut self, kind: Kind) -> io::Result<()> {
        let src = self.source();
        let key = self.clients.insert(Client {
            kind,
            src,
            stream: None,
            state: State::Down,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            last_seq: 0,
            epoch: None,
            deadline: None,
            events: 0,
        });
        self.connect(key)
    }

    fn connect(&mut self, key: usize) -> io::Result<()> {
        let c = &mut self.clients[key];
        let mut s = net::connect_from(c.src, self.dst)?;
        self.poll.registry().register(
            &mut s,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        c.stream = Some(s);
        c.state = State::Connecting;
        c.rbuf.clear();
        c.wbuf.clear();
        c.deadline = None;
        Ok(())
    }

    fn drop_conn(&mut self, key: usize) {
        let c = &mut self.clients[key];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.state = State::Down;
        c.rbuf = Vec::new();
        c.wbuf = Vec::new();
    }

    fn send(&mut self, key: usize, opcode: u8, payload: &[u8]) {
        let m = mask(&mut self.rng);
        let f = ws::client_frame(opcode, payload, m);
        let c = &mut self.clients[key];
        c.wbuf.extend_from_slice(&f);
        Self::flush(c);
    }

    fn flush(c: &mut Client) -> bool {
        let Some(s) = c.stream.as_mut() else {
            return false;
        };
        while !c.wbuf.is_empty() {
            match s.write(&c.wbuf) {
                Ok(0) => return false,
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return true,
                Err(_) => return false,
            }
        }
        true
    }

    fn churn_deadline(&mut self, now: Instant) -> Instant {
        let spread = u64::from(mask(&mut self.rng)[0]); // 0..=255
        now + Duration::from_millis(self.churn_ms / 2 + self.churn_ms * spread / 255)
    }

    /// Handles readiness for `key`. Returns false when the connection failed.
    fn ready(&mut self, key: usize, now: Instant) -> bool {
        if !self.clients.contains(key) || self.clients[key].stream.is_none() {
            return true;
        }
        if self.clients[key].state == State::Connecting {
            let c = &mut self.clients[key];
            let s = c.stream.as_ref().unwrap();
            match s.peer_addr() {
                Ok(_) => {
                    c.wbuf.extend_from_slice(&self.upgrade);
                    c.state = State::Upgrading;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return true,
                Err(_) => return false,
            }
        }
        if !Self::flush(&mut self.clients[key]) {
            return false;
        }
        loop {
            let c = &mut self.clients[key];
            let Some(s) = c.stream.as_mut() else {
                return true;
            };
            match s.read(&mut self.buf) {
                Ok(0) => return false,
                Ok(n) => c.rbuf.extend_from_slice(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(_) => return false,
            }
        }
        self.parse(key, now)
    }

    fn parse(&mut self, key: usize, now: Instant) -> bool {
        let mut rbuf = std::mem::take(&mut self.clients[key].rbuf);
        let mut off = 0;
        let ok = loop {
            if self.clients[key].state == State::Upgrading {
                match ws::parse_upgrade(&rbuf[off..]) {
                    Ok(None) => break true,
                    Ok(Some(n)) => {
                        off += n;
                        self.subscribe(key);
                        continue;
                    }
                    Err(_) => break false,
                }
            }
            match ws::parse_frame(&rbuf[off..]) {
                Ok(None) => break true,
                Err(_) => break false,
                Ok(Some((f, n))) => {
                    let (op, payload) = (f.opcode, f.payload.to_vec());
                    off += n;
                    match op {
                        ws::OP_TEXT => self.message(key, &payload, now),
                        ws::OP_PING => self.send(key, ws::OP_PONG, &payload),
                        ws::OP_CLOSE => {
                            let code = ws::close_code(&payload).unwrap_or(1005);
                            self.c.close_codes.push(code);
                            break false;
                        }
                        _ => {}
                    }
                }
            }
        };
        if self.clients.contains(key) && self.clients[key].stream.is_some() {
            rbuf.drain(..off);
            self.clients[key].rbuf = rbuf;
        }
        ok
    }

    fn subscribe(&mut self, key: usize) {
        let c = &mut self.clients[key];
        c.state = State::Subscribing;
        let msg = match (&c.epoch, c.last_seq) {
            (Some(e), s) if s > 0 => {
                format!(r#"{{"type":"subscribe","events":["*"],"since":{s},"epoch":"{e}"}}"#)
            }
            _ => r#"{"type":"subscribe","events":["*"]}"#.to_string(),
        };
        self.send(key, ws::OP_TEXT, msg.as_bytes());
    }

    fn message(&mut self, key: usize, p: &[u8], now: Instant) {
        if let Some(seq) = parse_seq(p) {
            let c = &mut self.clients[key];
            if c.last_seq != 0 && seq != c.last_seq + 1 {
                self.c.gaps += 1;
                if self.c.gaps <= 5 {
                    eprintln!(
                        "soakclients: client {key} ({:?}) got seq {seq} after {}",
                        c.kind, c.last_seq
                    );
                }
            }
            c.last_seq = seq;
            c.events += 1;
            self.c.events += 1;
            self.c.max_seq = self.c.max_seq.max(seq);
            self.c.last_event_at = Some(now);
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(p) else {
            self.c.errors += 1;
            return;
        };
        if v["type"] == "subscribed" {
            let seq = v["seq"].as_u64().unwrap_or(0);
            let epoch = v["epoch"].as_str().map(str::to_string);
            let resumed = v["resumed"].as_bool().unwrap_or(false);
            let resuming = self.clients[key].last_seq > 0;
            if resuming {
                self.c.resumes += 1;
                if !resumed || epoch != self.clients[key].epoch {
                    self.c.failed_resumes += 1;
                    eprintln!("soakclients: resume refused: {v}");
                }
            } else {
                self.clients[key].last_seq = seq;
            }
            self.clients[key].epoch = epoch;
            self.clients[key].state = State::Open;
            if self.clients[key].kind == Kind::Churner && self.churning {
                let d = self.churn_deadline(now);
                self.clients[key].deadline = Some(d);
            }
        } else if v["type"] == "error" {
            self.c.errors += 1;
            eprintln!("soakclients: error reply: {v}");
        }
    }

    fn failed(&mut self, key: usize, now: Instant) {
        let kind = self.clients[key].kind;
        self.drop_conn(key);
        if kind == Kind::Burst {
            return;
        }
        self.c.unexpected_closes += 1;
        // Come back with a resume shortly, like any client would.
        self.clients[key].deadline = Some(now + Duration::from_millis(500));
    }

    fn timers(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k)
            .collect();
        for key in due {
            self.clients[key].deadline = None;
            let state = self.clients[key].state;
            match state {
                State::Open if self.churning => {
                    self.drop_conn(key);
                    self.clients[key].deadline = Some(now + Duration::from_millis(100));
                }
                State::Down if self.connect(key).is_err() => {
                    self.clients[key].deadline = Some(now + Duration::from_millis(500));
                }
                _ => {}
            }
        }
    }

    fn all_open(&self, kind: Option<Kind>) -> usize {
        self.clients
            .iter()
            .filter(|(_, c)| kind.is_none_or(|k| c.kind == k) && c.state != State::Open)
            .count()
    }

    fn stats(&self, kind: &str) -> serde_json::Value {
        serde_json::json!({
            "type": kind,
            "events": self.c.events,
            "max_seq": self.c.max_seq,
            "gaps": self.c.gaps,
            "resumes": self.c.resumes,
            "failed_resumes": self.c.failed_resumes,
            "unexpected_closes": self.c.unexpected_closes,
            "errors": self.c.errors,
            "close_codes": self.c.close_codes,
            "clients": self.clients.len(),
        })
    }

    fn command(&mut self, line: &str, out: &mut Vec<serde_json::Value>) -> io::Result<bool> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        match w.first().copied() {
            Some("start") => {
                self.churn_ms = num(3).max(100);
                self.churning = true;
                for _ in 0..num(1) {
                    self.add(Kind::Steady)?;
                }
                for _ in 0..num(2) {
                    self.add(Kind::Churner)?;
                }
                self.waiting_start = true;
            }
            Some("stats") => out.push(self.stats("stats")),
            Some("finish") => {
                self.churning = false;
                self.finishing = Some(Duration::from_millis(num(1).max(500)));
                for (_, c) in self.clients.iter_mut() {
                    if c.state == State::Open {
                        c.deadline = None;
                    }
                }
            }
            Some("burst") => {
                let n = num(1) as usize;
                for _ in 0..n {
                    self.add(Kind::Burst)?;
                }
                self.burst = Some((Duration::from_millis(num(2)), None, n, Instant::now()));
            }
            Some("exit") | None => return Ok(true),
            Some(other) => out.push(serde_json::json!({"type":"error","error":other})),
        }
        Ok(false)
    }

    fn progress(&mut self, now: Instant, out: &mut Vec<serde_json::Value>) {
        if self.waiting_start && self.all_open(None) == 0 {
            self.waiting_start = false;
            out.push(self.stats("started"));
        }
        if let Some((hold, up, n, t0)) = self.burst {
            let pending = self.all_open(Some(Kind::Burst));
            match up {
                None if pending == 0 => {
                    self.burst = Some((hold, Some(now), n, t0));
                    out.push(serde_json::json!({"type":"burst_up","n":n,
                        "secs": t0.elapsed().as_secs_f64()}));
                }
                Some(at) if now >= at + hold => {
                    let keys: Vec<usize> = self
                        .clients
                        .iter()
                        .filter(|(_, c)| c.kind == Kind::Burst)
                        .map(|(k, _)| k)
                        .collect();
                    for k in keys {
                        self.drop_conn(k);
                        self.clients.remove(k);
                    }
                    self.burst = None;
                    out.push(serde_json::json!({"type":"burst_down","n":n}));
                }
                _ => {}
            }
        }
        if let Some(quiet) = self.finishing {
            let quiet_for = self
                .c
                .last_event_at
                .map_or(Duration::MAX, |t| now.duration_since(t));
            if quiet_for >= quiet && self.all_open(None) == 0 {
                self.finishing = None;
                let behind = self
                    .clients
                    .iter()
                    .filter(|(_, c)| c.last_seq != self.c.max_seq)
                    .count();
                let mut v = self.stats("finished");
                v["clients_behind"] = behind.into();
                v["ok"] = (behind == 0 && self.c.gaps == 0 && self.c.failed_resumes == 0).into();
                out.push(v);
                let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
                for k in keys {
                    self.drop_conn(k);
                    self.clients.remove(k);
                }
            }
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .iter()
        .position(|a| a == "--addr")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let dst: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::other(format!("--addr: {e}")))?;
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let mut app = App {
        poll,
        dst,
        upgrade: ws::upgrade_request(&addr, "/"),
        clients: Slab::default(),
        c: Counters::default(),
        churn_ms: 3000,
        churning: false,
        rng: 0x9E37_79B9_7F4A_7C15,
        next_source: 0,
        buf: vec![0; 256 * 1024],
        waiting_start: false,
        finishing: None,
        burst: None,
    };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() || waker.wake().is_err() {
                return;
            }
        }
        let _ = tx.send("exit".into());
        let _ = waker.wake();
    });
    let mut events = Events::with_capacity(4096);
    let mut last_timers = Instant::now();
    loop {
        app.poll
            .poll(&mut events, Some(Duration::from_millis(20)))?;
        let now = Instant::now();
        let mut out = Vec::new();
        for line in rx.try_iter() {
            if app.command(&line, &mut out)? {
                return Ok(());
            }
        }
        let keys: Vec<usize> = events
            .iter()
            .filter(|e| e.token() != WAKER)
            .map(|e| e.token().0)
            .collect();
        for key in keys {
            if app.clients.contains(key) && !app.ready(key, now) {
                app.failed(key, now);
            }
        }
        if now.duration_since(last_timers) >= Duration::from_millis(20) {
            last_timers = now;
            app.timers(now);
            app.progress(now, &mut out);
        }
        let mut stdout = io::stdout().lock();
        for v in out {
            writeln!(stdout, "{v}")?;
        }
        stdout.flush()?;
    }
}
