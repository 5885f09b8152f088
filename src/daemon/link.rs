//! One coin daemon's event-stream connection: a state machine driven by the reactor.
//!
//! `Backoff → Connecting → Handshaking → Open → (closed) → Backoff …`, forever. The link never
//! touches the poll registry or the timers itself: the reactor registers [`DaemonLink::stream`]
//! when told to ([`LinkOutput::Register`]), and schedules [`DaemonLink::deadline`]. Every change of
//! state is logged once, at the right level, naming the coin.
//!
//! Invariants: a stream exists exactly in `Connecting`, `Handshaking` and `Open`; `attempt` counts
//! consecutive failed connections and resets after a healthy period.

mod error;

pub use error::LinkError;

use crate::config::CoinConfig;
use crate::http::client::{self as http, UpgradeOutcome};
use crate::util::backoff::Backoff;
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// Largest upgrade answer we accept before giving up on a daemon.
const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;
/// Largest single message from a daemon.
const MAX_DAEMON_MESSAGE: usize = 16 * 1024 * 1024;
/// Frames read per readiness call. A backlog from the daemon is taken in slices, with a flush
/// of every client between them, so a burst never piles up in client queues before anything
/// is written (which would look like slow consumers).
const MAX_FRAMES_PER_READY: usize = 256;
/// Time allowed for TCP connect plus the upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the link is in its life.
#[derive(Debug)]
pub enum LinkState {
    /// Waiting until `until` before the next attempt.
    Backoff { until: Instant },
    /// Waiting for the host name to resolve on the resolver thread.
    Resolving { since: Instant },
    /// Non-blocking connect in progress.
    Connecting { stream: TcpStream, since: Instant },
    /// Upgrade request sent (or partly sent); reading the answer.
    Handshaking {
        stream: TcpStream,
        since: Instant,
        to_send: Vec<u8>,
        received: Vec<u8>,
        key: String,
    },
    /// The event stream is live.
    Open {
        ws: Box<WebSocket<TcpStream>>,
        since: Instant,
    },
}

/// What the reactor must do after a link call.
#[derive(Debug, PartialEq)]
pub enum LinkOutput {
    /// A new stream exists: register it (readable + writable).
    Register,
    /// Resolve `host:port` off the reactor and call [`DaemonLink::resolved`].
    Resolve(String, u16),
    /// The upgrade succeeded.
    Connected,
    /// The link went down (`reason` is for logs and `daemon_status`). The old stream is gone.
    Disconnected(String),
    /// One text frame from the daemon (the bytes tungstenite read, not copied).
    Frame(tungstenite::Utf8Bytes),
    /// More frames may be waiting: call [`DaemonLink::on_ready`] again next turn (the socket
    /// was not read to `WouldBlock`, so no readiness event will come for them).
    More,
}

/// Counters and facts for `get_status`.
#[derive(Debug, Default, Clone)]
pub struct LinkStats {
    pub connected: bool,
    pub reconnects: u64,
}

/// A coin daemon's WebSocket link.
#[derive(Debug)]
pub struct DaemonLink {
    pub coin: Arc<str>,
    pub config: CoinConfig,
    pub state: LinkState,
    pub stats: LinkStats,
    /// Resolved address, cached for reconnects of IP-literal hosts.
    addr: Option<SocketAddr>,
    /// The address of the current or last connection (the RPC pool connects there too).
    pub peer: Option<SocketAddr>,
    backoff: Backoff,
    authorization: String,
    /// Last time any byte arrived on the open link.
    last_rx: Instant,
    ping_interval: Duration,
    /// When the next keep-alive ping is due on an open link.
    next_ping: Instant,
    /// Whether the current failure streak was already logged at error level.
    streak_logged: bool,
    /// Whether a `Disconnected` was reported since the last `Connected` (one per outage).
    down_reported: bool,
    /// The worker is shutting down: no more attempts, no more retry logs.
    closing: bool,
}

impl DaemonLink {
    /// A link that will connect on the first [`DaemonLink::on_timer`].
    pub fn new(config: CoinConfig, ping_interval: Duration, now: Instant) -> DaemonLink {
        let authorization = http::basic_auth(&config.login, &config.password);
        let addr = literal_addr(&config.host, config.port);
        DaemonLink {
            coin: config.coin.as_str().into(),
            config,
            state: LinkState::Backoff { until: now },
            stats: LinkStats::default(),
            addr,
            peer: addr,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            authorization,
            last_rx: now,
            ping_interval,
            next_ping: now,
            streak_logged: false,
            down_reported: false,
            closing: false,
        }
    }

    /// `ws://host:port/ws`, for status and logs.
    pub fn url(&self) -> String {
        format!("ws://{}:{}/ws", self.config.host, self.config.port)
    }

    /// The socket to register, if any.
    pub fn stream(&mut self) -> Option<&mut TcpStream> {
        match &mut self.state {
            LinkState::Connecting { stream, .. } | LinkState::Handshaking { stream, .. } => {
                Some(stream)
            }
            LinkState::Open { ws, .. } => Some(ws.get_mut()),
            _ => None,
        }
    }

    /// The next moment [`DaemonLink::on_timer`] has work to do.
    pub fn deadline(&self) -> Instant {
        match &self.state {
            LinkState::Backoff { until } => *until,
            LinkState::Resolving { since }
            | LinkState::Connecting { since, .. }
            | LinkState::Handshaking { since, .. } => *since + CONNECT_TIMEOUT,
            LinkState::Open { .. } => self.next_ping.min(self.silence_deadline()),
        }
    }

    fn silence_deadline(&self) -> Instant {
        self.last_rx + self.ping_interval * 3
    }

    /// Timers: start an attempt, time out a slow connect, ping, or detect silence.
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<LinkOutput>) {
        let silent = now >= self.silence_deadline();
        match &mut self.state {
            LinkState::Backoff { until } if now >= *until && !self.closing => {
                self.start_attempt(now, out)
            }
            LinkState::Resolving { since }
            | LinkState::Connecting { since, .. }
            | LinkState::Handshaking { since, .. }
                if now >= *since + CONNECT_TIMEOUT =>
            {
                self.fail(LinkError::ConnectTimeout, now, out)
            }
            LinkState::Open { .. } if silent => {
                let secs = self.ping_interval.as_secs() * 3;
                self.fail(LinkError::Silent { secs }, now, out)
            }
            LinkState::Open { ws, .. } if now >= self.next_ping => {
                self.next_ping = now + self.ping_interval;
                let sent = ws.write(Message::Ping(Vec::new().into()));
                if let Err(e) = sent.and_then(|_| ws.flush())
                    && !is_would_block(&e)
                {
                    self.fail(LinkError::Ping(e), now, out);
                }
            }
            _ => {}
        }
    }

    fn start_attempt(&mut self, now: Instant, out: &mut Vec<LinkOutput>) {
        match self.addr {
            Some(addr) => self.connect(addr, now, out),
            None => {
                self.state = LinkState::Resolving { since: now };
                out.push(LinkOutput::Resolve(
                    self.config.host.clone(),
                    self.config.port,
                ));
            }
        }
    }

    /// The resolver's answer for a `Resolve` request.
    pub fn resolved(
        &mut self,
        result: io::Result<SocketAddr>,
        now: Instant,
        out: &mut Vec<LinkOutput>,
    ) {
        if !matches!(self.state, LinkState::Resolving { .. }) {
            return;
        }
        match result {
            Ok(addr) => self.connect(addr, now, out),
            Err(error) => {
                let host = self.config.host.clone();
                self.fail(LinkError::Resolve { host, error }, now, out)
            }
        }
    }

    fn connect(&mut self, addr: SocketAddr, now: Instant, out: &mut Vec<LinkOutput>) {
        self.peer = Some(addr);
        match TcpStream::connect(addr) {
            Ok(stream) => {
                self.state = LinkState::Connecting { stream, since: now };
                out.push(LinkOutput::Register);
            }
            Err(error) => self.fail(LinkError::Connect { addr, error }, now, out),
        }
    }

    /// Readiness on the link's socket.
    pub fn on_ready(&mut self, now: Instant, out: &mut Vec<LinkOutput>) {
        if let Err(reason) = self.drive(now, out) {
            self.fail(reason, now, out);
        }
    }

    fn drive(&mut self, now: Instant, out: &mut Vec<LinkOutput>) -> Result<(), LinkError> {
        if let LinkState::Connecting { stream, .. } = &mut self.state {
            if let Some(e) = stream.take_error().map_err(LinkError::Io)? {
                return Err(LinkError::Io(e));
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(LinkError::Io(e)),
            }
            let _ = stream.set_nodelay(true);
            self.begin_handshake();
        }
        if let LinkState::Handshaking { .. } = self.state {
            self.handshake(now, out)?;
        }
        if let LinkState::Open { .. } = self.state {
            self.read_frames(now, out)?;
        }
        Ok(())
    }

    fn begin_handshake(&mut self) {
        let state = std::mem::replace(
            &mut self.state,
            LinkState::Backoff {
                until: Instant::now(),
            },
        );
        if let LinkState::Connecting { stream, since } = state {
            let key = http::websocket_key();
            let to_send = http::websocket_request(
                &self.config.host,
                self.config.port,
                "/ws",
                &self.authorization,
                &key,
            );
            self.state = LinkState::Handshaking {
                stream,
                since,
                to_send,
                received: Vec::new(),
                key,
            };
        }
    }

    fn handshake(&mut self, now: Instant, out: &mut Vec<LinkOutput>) -> Result<(), LinkError> {
        let LinkState::Handshaking {
            stream,
            to_send,
            received,
            key,
            ..
        } = &mut self.state
        else {
            return Ok(());
        };
        while !to_send.is_empty() {
            match stream.write(to_send) {
                Ok(0) => return Err(LinkError::ClosedDuringUpgrade { eof: false }),
                Ok(n) => {
                    to_send.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
        let eof = read_available(stream, received, MAX_HANDSHAKE_BYTES)?;
        let outcome = match http::parse_upgrade_response(received, key) {
            Ok(Some(o)) => o,
            Ok(None) if eof => return Err(LinkError::ClosedDuringUpgrade { eof: true }),
            Ok(None) => return Ok(()),
            Err(e) => return Err(LinkError::BadUpgrade(e)),
        };
        match outcome {
            UpgradeOutcome::Switched { head_len } => {
                let leftover = received[head_len..].to_vec();
                self.open(leftover, now, out);
                Ok(())
            }
            UpgradeOutcome::Refused { status, error } => Err(match error {
                Some(e) if e.code == -32600 => LinkError::AuthRefused {
                    coin: self.coin.to_string(),
                    message: e.message,
                },
                Some(e) => LinkError::Refused {
                    status,
                    code: e.code,
                    message: e.message,
                },
                None => LinkError::NotADaemon {
                    coin: self.coin.to_string(),
                    status,
                },
            }),
        }
    }

    fn open(&mut self, leftover: Vec<u8>, now: Instant, out: &mut Vec<LinkOutput>) {
        let state = std::mem::replace(&mut self.state, LinkState::Backoff { until: now });
        let LinkState::Handshaking { stream, .. } = state else {
            return;
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .max_message_size(Some(MAX_DAEMON_MESSAGE))
            .max_frame_size(Some(MAX_DAEMON_MESSAGE));
        let ws = WebSocket::from_partially_read(stream, leftover, Role::Client, Some(config));
        self.state = LinkState::Open {
            ws: Box::new(ws),
            since: now,
        };
        self.last_rx = now;
        self.next_ping = now + self.ping_interval;
        self.stats.connected = true;
        self.streak_logged = false;
        self.down_reported = false;
        log::info!("[WORKER] Connected to {} at {}", self.coin, self.url());
        out.push(LinkOutput::Connected);
    }

    fn read_frames(&mut self, now: Instant, out: &mut Vec<LinkOutput>) -> Result<(), LinkError> {
        let LinkState::Open { ws, .. } = &mut self.state else {
            return Ok(());
        };
        let mut frames = 0;
        loop {
            if frames == MAX_FRAMES_PER_READY {
                // Let the reactor flush clients before it reads more (bounded client queues).
                out.push(LinkOutput::More);
                break;
            }
            match ws.read() {
                Ok(Message::Text(t)) => {
                    self.last_rx = now;
                    frames += 1;
                    out.push(LinkOutput::Frame(t));
                }
                Ok(Message::Close(frame)) => {
                    return Err(LinkError::Closed {
                        worker_closed: self.closing,
                        frame,
                    });
                }
                Ok(_) => self.last_rx = now,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::WebSocket(e)),
            }
        }
        match ws.flush() {
            Ok(()) => Ok(()),
            Err(e) if is_would_block(&e) => Ok(()),
            Err(e) => Err(LinkError::WebSocket(e)),
        }
    }

    /// Takes the link down and schedules the next attempt.
    fn fail(&mut self, reason: LinkError, now: Instant, out: &mut Vec<LinkOutput>) {
        if self.closing {
            self.state = LinkState::Backoff {
                until: now + Duration::from_secs(3600),
            };
            self.stats.connected = false;
            log::debug!(
                "[WORKER] Link to {} closed on shutdown ({reason})",
                self.coin
            );
            return;
        }
        let healthy = match &self.state {
            LinkState::Open { since, .. } => now.duration_since(*since) >= Duration::from_secs(30),
            _ => false,
        };
        if healthy {
            self.backoff.reset();
        }
        let was_open = matches!(self.state, LinkState::Open { .. });
        let delay = self.backoff.next_delay();
        self.state = LinkState::Backoff { until: now + delay };
        self.stats.connected = false;
        if was_open {
            self.stats.reconnects += 1;
            log::warn!(
                "[WORKER] Disconnected from {}: {reason}; retrying in {:.1}s",
                self.coin,
                delay.as_secs_f64()
            );
        } else if !self.streak_logged {
            self.streak_logged = true;
            log::error!(
                "[WORKER] Cannot connect to {} at {}: {reason}; retrying with backoff",
                self.coin,
                self.url()
            );
        } else {
            log::debug!(
                "[WORKER] {} still unreachable: {reason}; next try in {:.1}s",
                self.coin,
                delay.as_secs_f64()
            );
        }
        if was_open || !self.down_reported {
            self.down_reported = true;
            out.push(LinkOutput::Disconnected(reason.to_string()));
        }
    }

    /// Sends a close frame (1001) on shutdown; best effort, never blocks.
    pub fn close(&mut self) {
        self.closing = true;
        if let LinkState::Open { ws, .. } = &mut self.state {
            let frame = CloseFrame {
                code: tungstenite::protocol::frame::coding::CloseCode::Away,
                reason: "worker shutting down".into(),
            };
            let _ = ws.close(Some(frame));
            let _ = ws.flush();
        }
    }
}

fn is_would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

/// Reads until `WouldBlock`; returns whether EOF was seen. Errors past `limit` bytes.
fn read_available(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, LinkError> {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > limit {
                    return Err(LinkError::UpgradeTooLarge);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LinkError::Io(e)),
        }
    }
}

/// `host:port` when `host` is an IP literal or `localhost` (no resolver needed).
pub(crate) fn literal_addr(host: &str, port: u16) -> Option<SocketAddr> {
    let host = if host.eq_ignore_ascii_case("localhost") {
        "127.0.0.1"
    } else {
        host
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

#[cfg(test)]
mod state_tests;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Family;
    use std::net::TcpListener;

    /// A link in the `Open` state over loopback, and the daemon's end of the socket.
    fn open_pair() -> (DaemonLink, WebSocket<std::net::TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.set_nonblocking(true).unwrap();
        let config = CoinConfig {
            coin: "BTC".into(),
            family: Family::Btc,
            host: "127.0.0.1".into(),
            port: 1,
            login: "electrum".into(),
            password: "electrumz".into(),
            network: "mainnet".into(),
            wallets: Vec::new(),
        };
        let now = Instant::now();
        let mut link = DaemonLink::new(config, Duration::from_secs(20), now);
        let ws = WebSocket::from_raw_socket(TcpStream::from_std(client), Role::Client, None);
        link.state = LinkState::Open {
            ws: Box::new(ws),
            since: now,
        };
        let daemon = WebSocket::from_raw_socket(server, Role::Server, None);
        (link, daemon)
    }

    /// Reads on the link until the stream ends; the reason it ended.
    fn read_until_closed(link: &mut DaemonLink) -> LinkError {
        let give_up = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        loop {
            if let Err(reason) = link.read_frames(Instant::now(), &mut out) {
                return reason;
            }
            assert!(Instant::now() < give_up, "the stream never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn worker_shutdown_close_was_logged_as_the_daemons() {
        let (mut link, mut daemon) = open_pair();
        link.close();
        // The daemon sees the worker's close and answers it (as Bitcart's daemons do, with 1000).
        match daemon.read() {
            Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("expected the worker's close, got {other:?}"),
        }
        let _ = daemon.flush();
        let reason = read_until_closed(&mut link);
        let text = reason.to_string();
        assert!(text.contains("closed by the worker"), "{text}");
        assert!(!text.contains("daemon closed"), "{text}");
        assert!(matches!(
            reason,
            LinkError::Closed {
                worker_closed: true,
                ..
            }
        ));
        let mut out = Vec::new();
        link.fail(reason, Instant::now(), &mut out);
        assert!(
            out.is_empty(),
            "no reconnect and no disconnect event on shutdown"
        );
        assert!(!link.stats.connected);

        // A close the daemon starts is still the daemon's, with no stray space.
        let (mut link, mut daemon) = open_pair();
        let frame = CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        };
        daemon.close(Some(frame)).unwrap();
        let _ = daemon.flush();
        assert_eq!(
            read_until_closed(&mut link).to_string(),
            "daemon closed the stream (1000)"
        );
    }

    #[test]
    fn literal_hosts_need_no_resolver() {
        assert_eq!(
            literal_addr("localhost", 5000),
            Some("127.0.0.1:5000".parse().unwrap())
        );
        assert_eq!(
            literal_addr("10.0.0.2", 1),
            Some("10.0.0.2:1".parse().unwrap())
        );
        assert_eq!(literal_addr("[::1]", 2), Some("[::1]:2".parse().unwrap()));
        assert_eq!(literal_addr("bitcoin", 5000), None);
    }
}
