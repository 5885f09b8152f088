//! The load process: one mio loop over every client connection, driven by line commands.
//!
//! Invariants: at most `max_outstanding` connections are between `Connecting` and `Open` at any
//! time (so the server's accept backlog never overflows); `open + outstanding + failed + closed`
//! accounts for every client; every socket is read to `WouldBlock` whatever the measurement
//! state, so the server never sees a stalled reader. Output is JSON lines (see `config::USAGE`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::{Events, Poll, Token, Waker};
use serde_json::{Value, json};

use crate::config::Config;
use crate::conn::{Change, Conn, Shared, State};
use crate::step::{Step, StepSpec, TxParser};
use crate::ws;

/// Token of the waker that announces commands.
pub const WAKER: Token = Token(usize::MAX);
/// Read buffer shared by all connections.
const SCRATCH: usize = 256 * 1024;

/// Wall-clock time in µs since the Unix epoch (the source embeds the same clock).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A command read from stdin.
#[derive(Debug, PartialEq)]
pub enum Cmd {
    /// Measure a step.
    Step(StepSpec),
    /// Wait for `ms` without deliveries, at most `timeout_ms`.
    Quiet(u64, u64),
    /// Reconnect every closed client.
    Reconnect,
    /// Print counters.
    Status,
    /// Leave.
    Exit,
}

impl Cmd {
    /// Parses one command line.
    pub fn parse(line: &str) -> Result<Cmd, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> Result<u64, String> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("bad or missing number in: {line}"))
        };
        match words.first().copied() {
            Some("step") => StepSpec::parse(&words[1..]).map(Cmd::Step),
            Some("quiet") => Ok(Cmd::Quiet(num(1)?, num(2)?)),
            Some("reconnect") => Ok(Cmd::Reconnect),
            Some("status") => Ok(Cmd::Status),
            Some("exit") | None => Ok(Cmd::Exit),
            Some(other) => Err(format!("unknown command: {other}")),
        }
    }
}

/// The load process state.
pub struct App {
    cfg: Config,
    poll: Poll,
    events: Events,
    waker: Arc<Waker>,
    conns: Vec<Conn>,
    shared: Shared,
    scratch: Vec<u8>,
    /// Clients waiting to (re)connect.
    pending: VecDeque<usize>,
    outstanding: usize,
    open: usize,
    /// Clients that closed after being open, since start.
    closed: u64,
    /// Clients given up in the current connect phase.
    failed: usize,
    /// Start of the current connect phase, `None` once `ready` was printed.
    connecting_since: Option<u64>,
    step: Option<Step>,
    step_reported: bool,
    /// `closed` when the current step began (its report counts closes during the step).
    step_closed0: u64,
    /// Active `quiet` wait: (quiet µs, deadline µs).
    quiet: Option<(u64, u64)>,
    last_rx_us: u64,
    next_scan_us: u64,
}

impl App {
    /// Sets up the loop; connections start on the first [`App::turn`].
    pub fn new(cfg: Config) -> std::io::Result<App> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let n = cfg.clients as usize;
        let shared = Shared {
            parser: TxParser::default(),
            upgrade: ws::upgrade_request(&cfg.host, &cfg.path),
            subscribe: ws::client_frame(
                ws::OP_TEXT,
                cfg.subscribe.as_bytes(),
                [0x5a, 0x17, 0x33, 0xc4],
            ),
        };
        Ok(App {
            poll,
            events: Events::with_capacity(1024),
            waker,
            conns: (0..n).map(|_| Conn::default()).collect(),
            shared,
            scratch: vec![0; SCRATCH],
            pending: (0..n).collect(),
            outstanding: 0,
            open: 0,
            closed: 0,
            failed: 0,
            connecting_since: Some(now_us()),
            step: None,
            step_reported: true,
            step_closed0: 0,
            quiet: None,
            last_rx_us: 0,
            next_scan_us: 0,
            cfg,
        })
    }

    /// The waker to call after queueing a command.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// One loop turn: apply `cmds`, start connections, poll, handle readiness, check timers.
    /// Returns the report lines to print and whether to exit.
    pub fn turn(
        &mut self,
        cmds: Vec<Cmd>,
        timeout: Duration,
    ) -> std::io::Result<(Vec<Value>, bool)> {
        let mut out = Vec::new();
        for cmd in cmds {
            if self.command(cmd, &mut out) {
                return Ok((out, true));
            }
        }
        self.start_connections();
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            self.on_event(ev);
        }
        self.events = events;
        self.check_timers(&mut out);
        Ok((out, false))
    }

    fn on_event(&mut self, ev: &mio::event::Event) {
        let idx = ev.token().0;
        let Some(conn) = self.conns.get_mut(idx) else {
            return;
        };
        let now = now_us();
        let (step, last) = (&mut self.step, &mut self.last_rx_us);
        let mut sink = |sched: u64, i: u64| {
            *last = now;
            if let Some(s) = step.as_mut() {
                s.on_event(sched, i, now);
            }
        };
        let change = conn.handle(
            ev,
            self.poll.registry(),
            &mut self.scratch,
            &self.shared,
            &mut sink,
        );
        self.apply(idx, change);
    }

    fn apply(&mut self, idx: usize, change: Change) {
        match change {
            Change::None => {}
            Change::Opened => {
                self.outstanding -= 1;
                self.open += 1;
            }
            Change::Closed { was_open: true } => {
                self.open -= 1;
                self.closed += 1;
            }
            Change::Closed { was_open: false } => {
                self.outstanding -= 1;
                if self.conns[idx].attempts < self.cfg.retries && self.connecting_since.is_some() {
                    self.pending.push_back(idx);
                } else {
                    self.failed += 1;
                }
            }
        }
    }

    fn start_connections(&mut self) {
        let now = now_us();
        while self.outstanding < self.cfg.max_outstanding {
            let Some(idx) = self.pending.pop_front() else {
                break;
            };
            let global = self.cfg.offset + idx as u32;
            let src = crate::net::source_for(self.cfg.src_base, self.cfg.per_src, global);
            self.outstanding += 1;
            let conn = &mut self.conns[idx];
            conn.start(self.poll.registry(), Token(idx), src, self.cfg.dst, now);
            if conn.state == State::Closed {
                self.apply(idx, Change::Closed { was_open: false });
            }
        }
    }

    fn command(&mut self, cmd: Cmd, out: &mut Vec<Value>) -> bool {
        let now = now_us();
        match cmd {
            Cmd::Step(spec) => {
                self.step = Some(Step::new(spec, self.open as u64, now));
                self.step_reported = false;
                self.step_closed0 = self.closed;
                out.push(json!({"type": "step_started", "clients": self.open}));
            }
            Cmd::Quiet(ms, timeout_ms) => self.quiet = Some((ms * 1000, now + timeout_ms * 1000)),
            Cmd::Reconnect => {
                for (i, c) in self.conns.iter_mut().enumerate() {
                    if matches!(c.state, State::Closed | State::Idle) && !self.pending.contains(&i)
                    {
                        c.attempts = 0;
                        self.pending.push_back(i);
                    }
                }
                self.failed = 0;
                self.connecting_since = Some(now);
            }
            Cmd::Status => out.push(self.status("status")),
            Cmd::Exit => return true,
        }
        false
    }

    fn status(&self, kind: &str) -> Value {
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut codes: BTreeMap<String, u64> = BTreeMap::new();
        for c in self.conns.iter().filter(|c| c.state == State::Closed) {
            if let Some(code) = c.close_code {
                *codes.entry(code.to_string()).or_default() += 1;
            } else if let Some(e) = &c.error {
                *errors.entry(e.chars().take(80).collect()).or_default() += 1;
            }
        }
        json!({
            "type": kind, "open": self.open, "outstanding": self.outstanding, "failed": self.failed,
            "closed": self.closed, "pending": self.pending.len(), "close_codes": codes, "errors": errors,
        })
    }

    fn check_timers(&mut self, out: &mut Vec<Value>) {
        let now = now_us();
        if now >= self.next_scan_us && self.outstanding > 0 {
            self.next_scan_us = now + 250_000;
            let limit = self.cfg.connect_timeout_us;
            for idx in 0..self.conns.len() {
                let c = &mut self.conns[idx];
                let waiting = matches!(
                    c.state,
                    State::Connecting | State::Upgrading | State::Subscribing
                );
                if waiting && now > c.since_us + limit {
                    c.fail(
                        self.poll.registry(),
                        format!("no answer in {} s ({:?})", limit / 1_000_000, c.state),
                    );
                    self.apply(idx, Change::Closed { was_open: false });
                }
            }
        }
        if let Some(since) = self.connecting_since
            && self.pending.is_empty()
            && self.outstanding == 0
        {
            let mut v = self.status("ready");
            v["connect_s"] = json!(now.saturating_sub(since) as f64 / 1e6);
            out.push(v);
            self.connecting_since = None;
        }
        if let Some(step) = &self.step
            && !self.step_reported
            && step.is_done(now, self.cfg.no_event_timeout_us)
        {
            out.push(step.report(now, self.closed - self.step_closed0));
            self.step_reported = true;
        }
        if let Some((quiet_us, deadline)) = self.quiet {
            let idle = now.saturating_sub(self.last_rx_us) >= quiet_us;
            if idle || now > deadline {
                let total = self.step.as_ref().map_or(0, Step::total_rx);
                out.push(json!({"type": "quiet", "quiet": idle, "total_rx": total, "open": self.open, "closed": self.closed}));
                self.quiet = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(Cmd::parse("quiet 300 5000"), Ok(Cmd::Quiet(300, 5000)));
        assert_eq!(Cmd::parse(""), Ok(Cmd::Exit));
        assert_eq!(Cmd::parse("reconnect"), Ok(Cmd::Reconnect));
        assert!(matches!(
            Cmd::parse("step 100 10 20 500 1"),
            Ok(Cmd::Step(_))
        ));
        assert!(Cmd::parse("quiet x").is_err());
        assert!(Cmd::parse("jump").is_err());
    }
}
