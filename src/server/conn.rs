//! One client connection: socket I/O and its life cycle, `Handshake → Open → Closing`.
//!
//! The connection reads and writes its own socket and reports what happened; the reactor decides
//! what it means (routing an HTTP request, answering a message, registering interest, timers).
//!
//! Invariants: every byte written to the socket goes through the [`Outbox`] (one writer, whole
//! frames); in `Closing` nothing new is queued and the socket is dropped once the outbox is
//! flushed and the peer has closed, or at the lingering deadline.

use super::outbox::{Flush, Outbox};
use super::ws::{Incoming, READ_CHUNK, ReadError, ServerWs};
use crate::client::ratelimit::RateGuard;
use crate::event::Published;
use crate::fanout::groups::Batch;
use crate::http::server::{RequestHead, parse_request};
use crate::ws::frame;
use mio::net::TcpStream;
use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest HTTP request head accepted from a client (slow-loris and header-bomb guard).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a closing connection may linger to flush its close frame.
const LINGER: Duration = Duration::from_secs(3);

/// Life cycle of a client connection.
#[derive(Debug)]
pub enum ClientState {
    /// Reading the HTTP request head.
    Handshake { buf: Vec<u8> },
    /// A WebSocket session.
    Open { ws: Box<ServerWs> },
    /// A close frame or HTTP response is queued; waiting for it to flush and the peer to go.
    Closing { until: Instant },
}

/// What reading a connection produced, for the reactor to act on.
#[derive(Debug)]
pub enum ReadResult {
    /// Nothing complete yet.
    Nothing,
    /// A complete HTTP request head (the connection is still in `Handshake`; leftover bytes
    /// after the head stay buffered for [`ClientConn::upgrade`]).
    Request(RequestHead),
    /// The socket is finished: peer gone, error, or protocol violation (`close_code` to send if
    /// the peer may still read).
    Done {
        close_code: Option<(u16, &'static str)>,
        reason: String,
    },
}

/// A client connection.
#[derive(Debug)]
pub struct ClientConn {
    pub stream: TcpStream,
    pub ip: IpAddr,
    pub state: ClientState,
    pub outbox: Outbox,
    /// Authenticated (always true when no API keys are configured).
    pub authed: bool,
    /// Last time anything arrived (for idle pings).
    pub last_rx: Instant,
    /// A server ping is outstanding since this moment.
    pub ping_sent: Option<Instant>,
    /// When the connection must have finished its handshake / authenticated.
    pub deadline: Option<Instant>,
    /// Writable interest is currently registered.
    pub writable_armed: bool,
    /// Already on the reactor's list of connections to flush this turn.
    pub dirty: bool,
    /// Rate limiter of an open session; `Some` exactly while the connection is counted as an
    /// open client (so counts are released once).
    pub session: Option<RateGuard>,
    /// Set while the client is replaying missed events (resume): it is then fed from the
    /// ring (and the event log) at the pace it reads, not by the live fan-out.
    pub replay: Option<Box<Replay>>,
}

/// A client catching up after `subscribe` with `since`.
///
/// Invariant: while a client has a `Replay`, the fan-out skips it; every event it should get
/// is either in `backlog` or in the ring at `next_seq` or later, so switching back to live
/// delivery (when the ring is exhausted) has no gap and no duplicate.
#[derive(Debug, Default)]
pub struct Replay {
    /// The event-log query this replay still waits for, if any (nothing is sent meanwhile).
    pub waiting_query: Option<u64>,
    /// Events read from the event log, not yet queued.
    pub backlog: std::collections::VecDeque<Arc<Published>>,
    /// The next sequence number to take from the ring once `backlog` is empty.
    pub next_seq: u64,
}

impl ClientConn {
    /// A freshly accepted connection in `Handshake`.
    pub fn new(stream: TcpStream, ip: IpAddr, now: Instant, handshake_timeout: Duration) -> Self {
        ClientConn {
            stream,
            ip,
            state: ClientState::Handshake { buf: Vec::new() },
            outbox: Outbox::default(),
            authed: false,
            last_rx: now,
            ping_sent: None,
            deadline: Some(now + handshake_timeout),
            writable_armed: false,
            dirty: false,
            session: None,
            replay: None,
        }
    }

    /// True once the WebSocket session is open.
    pub fn is_open(&self) -> bool {
        matches!(self.state, ClientState::Open { .. })
    }

    /// Reads the request head. Call while in `Handshake`.
    pub fn read_head(&mut self, now: Instant) -> ReadResult {
        let ClientState::Handshake { buf } = &mut self.state else {
            return ReadResult::Nothing;
        };
        let mut chunk = [0u8; 2048];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return done(None, "peer closed during handshake"),
                Ok(n) => {
                    self.last_rx = now;
                    buf.extend_from_slice(&chunk[..n]);
                    match parse_request(buf, MAX_HEAD_BYTES) {
                        Ok(Some(head)) => return ReadResult::Request(head),
                        Ok(None) => {}
                        Err(e) => {
                            let status = e.status();
                            let body = format!("{e:?}\n");
                            self.finish_http(
                                crate::http::server::response(
                                    status,
                                    "text/plain",
                                    body.as_bytes(),
                                    &[],
                                ),
                                now,
                            );
                            return ReadResult::Nothing;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadResult::Nothing,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return done(None, &e.to_string()),
            }
        }
    }

    /// Completes the upgrade: queues the 101 response and starts the WebSocket session with any
    /// bytes that followed the head.
    pub fn upgrade(&mut self, head: &RequestHead, response: Vec<u8>, max_message: usize) {
        let leftover = match &mut self.state {
            ClientState::Handshake { buf } => buf.split_off(head.head_len.min(buf.len())),
            _ => Vec::new(),
        };
        self.outbox.push_bytes(response);
        self.state = ClientState::Open {
            ws: Box::new(ServerWs::new(leftover, max_message)),
        };
        self.deadline = None;
    }

    /// Queues a plain HTTP response and closes after it is flushed.
    pub fn finish_http(&mut self, response: Vec<u8>, now: Instant) {
        self.outbox.push_bytes(response);
        self.linger(now);
    }

    /// Reads WebSocket messages into `out` (at most `max` of them). Returns `Done` when the
    /// connection cannot continue, otherwise `Nothing`. `more` is set when `max` was reached and
    /// unread input may remain (the reactor carries the connection over to the next turn).
    pub fn read_messages(
        &mut self,
        now: Instant,
        max: usize,
        out: &mut Vec<Incoming>,
        more: &mut bool,
    ) -> ReadResult {
        let ClientState::Open { ws } = &mut self.state else {
            return self.drain_closing();
        };
        *more = false;
        for _ in 0..max {
            match ws.read(&mut self.stream, &mut self.outbox) {
                Ok(None) => return ReadResult::Nothing,
                Ok(Some(Incoming::Closed)) => return done(None, "client closed"),
                Ok(Some(m)) => {
                    self.last_rx = now;
                    self.ping_sent = None;
                    out.push(m);
                }
                Err(ReadError::TooBig) => {
                    return done(Some((1009, "message too big")), "message too big");
                }
                Err(ReadError::Protocol(e)) => return done(Some((1002, "protocol error")), &e),
                Err(ReadError::Io(kind)) => return done(None, &format!("{kind:?}")),
            }
        }
        *more = true;
        ReadResult::Nothing
    }

    /// In `Closing`: discard input until EOF (so our close frame is not lost to a reset).
    fn drain_closing(&mut self) -> ReadResult {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return done(None, "closed"),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadResult::Nothing,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return done(None, &e.to_string()),
            }
        }
    }

    /// Queues a broadcast batch. Returns false when the queue passed `limit` bytes: the caller
    /// closes the connection with 4008.
    pub fn enqueue(&mut self, batch: &Batch, limit: usize) -> bool {
        match batch {
            Batch::One(p) => self.outbox.push_event(p.clone()),
            Batch::Many { frames, .. } => self.outbox.push_frames(frames.clone()),
        }
        self.outbox.queued_bytes() <= limit
    }

    /// Queues a text message (a reply) for this client.
    pub fn send_text(&mut self, text: &str) {
        if self.is_open() {
            self.outbox.push_bytes(frame::text_frame(text.as_bytes()));
        }
    }

    /// Queues a ping.
    pub fn send_ping(&mut self, now: Instant) {
        if self.is_open() {
            self.outbox.push_bytes(frame::encode(0x9, b""));
            self.ping_sent = Some(now);
        }
    }

    /// Starts the close handshake with `code`. A slow consumer's unsent events are dropped first
    /// so the close frame is not stuck behind them.
    pub fn close(&mut self, code: u16, reason: &str, now: Instant) {
        if let ClientState::Open { .. } = self.state {
            if code == 4008 {
                self.outbox.discard_unsent();
            }
            self.outbox.push_bytes(frame::close_frame(code, reason));
        }
        self.linger(now);
    }

    fn linger(&mut self, now: Instant) {
        let until = now + LINGER;
        self.state = ClientState::Closing { until };
        self.deadline = Some(until);
    }

    /// Writes what is queued. After a close frame or HTTP response is fully written, the write
    /// side is shut down (FIN) so the peer sees a clean end.
    pub fn flush(&mut self) -> io::Result<Flush> {
        let result = self.outbox.write_to(&mut self.stream)?;
        if result == Flush::Drained && matches!(self.state, ClientState::Closing { .. }) {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(result)
    }

    /// Whether writable interest is needed.
    pub fn wants_writable(&self) -> bool {
        !self.outbox.is_empty()
    }
}

fn done(close_code: Option<(u16, &'static str)>, reason: &str) -> ReadResult {
    ReadResult::Done {
        close_code,
        reason: reason.to_string(),
    }
}
