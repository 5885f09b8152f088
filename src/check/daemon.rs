//! The daemon half of `check`: TCP, `GET /spec`, credentials, `/ws` upgrade and ping, `getinfo`,
//! over plain blocking sockets, each exchange on its own connection.
//!
//! Invariants: all socket work goes through `net`, which bounds it by the timeout and a byte
//! limit; a step that makes the rest pointless (unreachable, credentials refused, no answer in
//! time) ends the probe; the classification of answers ([`classify_spec`], [`classify_getinfo`])
//! is pure, so it is unit-tested without sockets.

use super::net::{ExchangeError, connect, exchange, ping, printable};
use super::{CheckLine, Step, TargetReport, seconds};
use crate::config::{CoinConfig, default_port};
use crate::http::client::{
    UpgradeOutcome, basic_auth, get_request, parse_response, parse_upgrade_response, rpc_request,
    websocket_key, websocket_request,
};
use crate::http::jsonrpc::{ErrorSpec, RpcError, RpcOutcome, decode_rpc_body, rpc_body};
use crate::http::{HttpError, Response};
use serde_json::{Value, json};
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::ControlFlow;
use std::time::Duration;

/// Largest `/spec` or `getinfo` body accepted (real ones are a few KiB).
pub(super) const MAX_BODY: usize = 1024 * 1024;
/// The JSON-RPC code Bitcart daemons answer for bad credentials.
const UNAUTHORIZED: i64 = -32600;

/// Checks one daemon: every step that can run, in order (see the module docs of `check`).
pub fn check_daemon(c: &CoinConfig, timeout: Duration) -> TargetReport {
    let mut lines = Vec::new();
    let probe = Probe {
        c,
        timeout,
        hints: Hints { c },
        authorization: basic_auth(&c.login, &c.password),
    };
    let _ = probe.run(&mut lines);
    TargetReport {
        name: c.coin.clone(),
        location: ws_url(c),
        lines,
    }
}

/// `ws://host:port` (IPv6 in brackets), the address shown for a daemon.
pub(super) fn ws_url(c: &CoinConfig) -> String {
    match c.host.contains(':') {
        true => format!("ws://[{}]:{}", c.host, c.port),
        false => format!("ws://{}:{}", c.host, c.port),
    }
}

/// The hints for one coin, naming its variables.
pub(super) struct Hints<'a> {
    /// The coin whose variables are named.
    pub(super) c: &'a CoinConfig,
}

impl Hints<'_> {
    /// The daemon refused the TCP connection.
    pub(super) fn not_running(&self) -> String {
        let coin = &self.c.coin;
        format!("is the {coin} daemon running? check {coin}_HOST and {coin}_PORT")
    }

    /// The address did not answer, or some other network error.
    pub(super) fn unreachable(&self) -> String {
        let coin = &self.c.coin;
        format!(
            "check {coin}_HOST and {coin}_PORT, and that no firewall drops the traffic \
             (DAEMON_RPC_TIMEOUT_S sets how long to wait)"
        )
    }

    /// The host name does not resolve.
    pub(super) fn resolve(&self) -> String {
        format!(
            "check {}_HOST: it must be the host name or IP address of the daemon",
            self.c.coin
        )
    }

    /// The peer does not speak the Bitcart daemon protocol.
    pub(super) fn not_a_daemon(&self) -> String {
        let coin = &self.c.coin;
        let default = match default_port(coin) {
            Some(p) if p != self.c.port => format!(" (the usual {coin} port is {p})"),
            _ => String::new(),
        };
        format!(
            "is {coin}_PORT={} the port of a Bitcart {coin} daemon?{default}",
            self.c.port
        )
    }

    /// The credentials were refused.
    pub(super) fn credentials(&self) -> String {
        let coin = &self.c.coin;
        format!(
            "check {coin}_LOGIN and {coin}_PASSWORD: they must match the daemon's own \
             {coin}_LOGIN and {coin}_PASSWORD (default electrum / electrumz)"
        )
    }

    /// Connected, but no answer in time.
    pub(super) fn silent(&self) -> String {
        let coin = &self.c.coin;
        format!(
            "the {coin} daemon accepts connections but does not answer: is {coin}_PORT the \
             daemon's port, is the daemon overloaded or stuck? (DAEMON_RPC_TIMEOUT_S sets how \
             long to wait)"
        )
    }
}

/// One daemon's settings, precomputed for the steps.
struct Probe<'a> {
    c: &'a CoinConfig,
    timeout: Duration,
    hints: Hints<'a>,
    authorization: String,
}

impl Probe<'_> {
    /// Runs the steps in order; `Break` when a step makes the rest pointless.
    fn run(&self, lines: &mut Vec<CheckLine>) -> ControlFlow<()> {
        let (stream, addr) = self.tcp(lines)?;
        self.spec(stream, lines)?;
        self.websocket(addr, lines)?;
        self.getinfo(addr, lines)
    }

    /// Resolves the host and connects to the first address that answers.
    fn tcp(&self, lines: &mut Vec<CheckLine>) -> ControlFlow<(), (TcpStream, SocketAddr)> {
        let c = self.c;
        let addrs: Vec<SocketAddr> = match (c.host.as_str(), c.port).to_socket_addrs() {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                let message = format!("cannot resolve {}: {e}", c.host);
                lines.push(CheckLine::failed(Step::Tcp, message, self.hints.resolve()));
                return ControlFlow::Break(());
            }
        };
        match connect(&addrs, self.timeout) {
            Ok((stream, addr)) => {
                lines.push(CheckLine::ok(Step::Tcp, "tcp ok"));
                ControlFlow::Continue((stream, addr))
            }
            Err(e) => {
                lines.push(self.connect_failure(Step::Tcp, &e));
                ControlFlow::Break(())
            }
        }
    }

    /// The failure line for a connection that could not be opened.
    fn connect_failure(&self, step: Step, e: &io::Error) -> CheckLine {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => {
                CheckLine::failed(step, "connection refused", self.hints.not_running())
            }
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => CheckLine::failed(
                step,
                format!("no TCP answer within {}", seconds(self.timeout)),
                self.hints.unreachable(),
            ),
            _ => CheckLine::failed(
                step,
                format!("cannot connect: {e}"),
                self.hints.unreachable(),
            ),
        }
    }

    /// The failure line for an exchange that produced no answer, .
    fn exchange_failure(&self, step: Step, what: &str, e: ExchangeError) -> CheckLine {
        match e {
            ExchangeError::TimedOut => CheckLine::failed(
                step,
                format!("no answer to {what} within {}", seconds(self.timeout)),
                self.hints.silent(),
            ),
            ExchangeError::Closed => CheckLine::failed(
                step,
                format!("the connection was closed before the answer to {what}"),
                self.hints.not_a_daemon(),
            ),
            ExchangeError::Io(e) => {
                CheckLine::failed(step, format!("{what}: {e}"), self.hints.unreachable())
            }
            ExchangeError::Http(e) => CheckLine::failed(
                step,
                format!("the answer to {what} is not usable: {e}"),
                self.hints.not_a_daemon(),
            ),
        }
    }

    /// `GET /spec` on the connection opened by the TCP step; also decides the credentials.
    fn spec(&self, mut stream: TcpStream, lines: &mut Vec<CheckLine>) -> ControlFlow<()> {
        let c = self.c;
        let request = get_request(&c.host, c.port, "/spec", &self.authorization);
        let parse = |buf: &[u8], eof| parse_response(buf, MAX_BODY, eof);
        match exchange(&mut stream, &request, self.timeout, parse) {
            Ok((response, _)) => {
                let verdict = classify_spec(&response, &self.hints);
                let stop = verdict
                    .iter()
                    .any(|l| l.step == Step::Auth && l.is_failed());
                lines.extend(verdict);
                if stop {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
            Err(e) => {
                let stop = matches!(e, ExchangeError::TimedOut);
                lines.push(self.exchange_failure(Step::Spec, "GET /spec", e));
                if stop {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
        }
    }

    /// The upgrade to `/ws` and a ping on the stream.
    fn websocket(&self, addr: SocketAddr, lines: &mut Vec<CheckLine>) -> ControlFlow<()> {
        let c = self.c;
        let mut stream = match connect(&[addr], self.timeout) {
            Ok((stream, _)) => stream,
            Err(e) => {
                lines.push(self.connect_failure(Step::WebSocket, &e));
                return ControlFlow::Break(());
            }
        };
        let key = websocket_key();
        let request = websocket_request(&c.host, c.port, "/ws", &self.authorization, &key);
        let parse = |buf: &[u8], eof: bool| match parse_upgrade_response(buf, &key)? {
            None if eof => Err(HttpError::malformed("closed before the upgrade answer")),
            other => Ok(other),
        };
        let (outcome, buf) = match exchange(&mut stream, &request, self.timeout, parse) {
            Ok(answer) => answer,
            Err(e) => {
                let stop = matches!(e, ExchangeError::TimedOut);
                lines.push(self.exchange_failure(Step::WebSocket, "the /ws upgrade", e));
                return if stop {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                };
            }
        };
        let line = match outcome {
            UpgradeOutcome::Switched { head_len } => {
                let leftover = buf.get(head_len..).unwrap_or_default().to_vec();
                match ping(stream, leftover, self.timeout) {
                    Ok(()) => CheckLine::ok(Step::WebSocket, "websocket ok"),
                    Err(e) => {
                        CheckLine::failed(Step::WebSocket, e.to_string(), self.hints.silent())
                    }
                }
            }
            UpgradeOutcome::Refused { status, error } => self.refused(status, error),
        };
        let stop = line.step == Step::Auth;
        lines.push(line);
        if stop {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// The line for a refused upgrade.
    fn refused(&self, status: u16, error: Option<RpcError>) -> CheckLine {
        match error {
            Some(e) if e.code == UNAUTHORIZED => CheckLine::failed(
                Step::Auth,
                format!("the /ws upgrade was refused: credentials not accepted ({e})"),
                self.hints.credentials(),
            ),
            Some(e) => CheckLine::failed(
                Step::WebSocket,
                format!("the /ws upgrade was refused (HTTP {status}, {e})"),
                self.hints.not_a_daemon(),
            ),
            None => CheckLine::failed(
                Step::WebSocket,
                format!("the /ws upgrade was refused (HTTP {status})"),
                self.hints.not_a_daemon(),
            ),
        }
    }

    /// `getinfo`: height, network connection and sync state.
    fn getinfo(&self, addr: SocketAddr, lines: &mut Vec<CheckLine>) -> ControlFlow<()> {
        let c = self.c;
        let mut stream = match connect(&[addr], self.timeout) {
            Ok((stream, _)) => stream,
            Err(e) => {
                lines.push(self.connect_failure(Step::Height, &e));
                return ControlFlow::Break(());
            }
        };
        let body = rpc_body(1, "getinfo", json!({"xpub": null}));
        let request = rpc_request(&c.host, c.port, &self.authorization, &body);
        let parse = |buf: &[u8], eof| parse_response(buf, MAX_BODY, eof);
        let line = match exchange(&mut stream, &request, self.timeout, parse) {
            Ok((response, _)) => classify_getinfo(&response, &self.hints),
            Err(e) => self.exchange_failure(Step::Height, "getinfo", e),
        };
        lines.push(line);
        ControlFlow::Continue(())
    }
}

/// The lines for a `GET /spec` answer: `spec <version>` and `auth ok`, or the failure.
pub(super) fn classify_spec(response: &Response, hints: &Hints) -> Vec<CheckLine> {
    let status = response.status;
    if status == 500 {
        let hint = format!(
            "Bitcart daemons answer 500 when they cannot decode the credentials (a password \
             containing ':', for example); {}",
            hints.credentials()
        );
        return vec![CheckLine::failed(
            Step::Spec,
            "GET /spec answered HTTP 500",
            hint,
        )];
    }
    if status != 200 {
        let message = format!("GET /spec answered HTTP {status}");
        return vec![CheckLine::failed(Step::Spec, message, hints.not_a_daemon())];
    }
    if let Ok((_, RpcOutcome::Error(e))) = decode_rpc_body(&response.body) {
        return vec![match e.code {
            UNAUTHORIZED => CheckLine::failed(
                Step::Auth,
                format!("credentials not accepted ({e})"),
                hints.credentials(),
            ),
            _ => CheckLine::failed(
                Step::Spec,
                format!("GET /spec answered {e}"),
                hints.not_a_daemon(),
            ),
        }];
    }
    match ErrorSpec::parse(&response.body) {
        Ok(spec) => vec![
            CheckLine::ok(Step::Spec, format!("spec {}", printable(spec.version()))),
            CheckLine::ok(Step::Auth, "auth ok"),
        ],
        Err(e) => vec![CheckLine::failed(
            Step::Spec,
            format!("GET /spec did not answer a Bitcart spec ({e})"),
            hints.not_a_daemon(),
        )],
    }
}

/// The line for a `getinfo` answer: `height N (synchronized)`, a warning, or the failure.
pub(super) fn classify_getinfo(response: &Response, hints: &Hints) -> CheckLine {
    let failed = |message: String, hint: String| CheckLine::failed(Step::Height, message, hint);
    if response.status != 200 {
        let message = format!("getinfo answered HTTP {}", response.status);
        return failed(message, hints.not_a_daemon());
    }
    let info = match decode_rpc_body(&response.body) {
        Ok((_, RpcOutcome::Result(info))) => info,
        Ok((_, RpcOutcome::Error(e))) if e.code == UNAUTHORIZED => {
            let message = format!("getinfo: credentials not accepted ({e})");
            return CheckLine::failed(Step::Auth, message, hints.credentials());
        }
        Ok((_, RpcOutcome::Error(e))) => {
            let hint = format!("see the {} daemon's log", hints.c.coin);
            return failed(format!("getinfo failed: {e}"), hint);
        }
        Err(e) => return failed(format!("getinfo: {e}"), hints.not_a_daemon()),
    };
    height_line(&info, hints)
}

/// Reads `connected`, `blockchain_height`, `server_height` and `synchronized`.
fn height_line(info: &Value, hints: &Hints) -> CheckLine {
    let coin = &hints.c.coin;
    if info.get("connected").and_then(Value::as_bool) == Some(false) {
        return CheckLine::failed(
            Step::Height,
            "the daemon is not connected to its network",
            format!(
                "see the {coin} daemon's log: it cannot reach its upstream servers or node; \
                 no events flow until it does"
            ),
        );
    }
    let Some(height) = info.get("blockchain_height").and_then(Value::as_u64) else {
        let hint = hints.not_a_daemon();
        return CheckLine::failed(Step::Height, "getinfo has no blockchain_height", hint);
    };
    let server = info.get("server_height").and_then(Value::as_u64);
    match info.get("synchronized").and_then(Value::as_bool) {
        Some(true) => CheckLine::ok(Step::Height, format!("height {height} (synchronized)")),
        Some(false) => {
            let behind = match server {
                Some(s) if s > height => format!(", network at {s}"),
                _ => String::new(),
            };
            CheckLine::warning(
                Step::Height,
                format!("height {height} (not synchronized{behind})"),
                format!(
                    "the {coin} daemon is still catching up with its network: its events lag \
                     until it is synchronized"
                ),
            )
        }
        None => CheckLine::ok(Step::Height, format!("height {height}")),
    }
}
