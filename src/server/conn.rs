//! One client connection: socket I/O and its life cycle, `Handshake → Open → Closing`.
//!
//! The connection reads and writes its own socket and reports what happened; the reactor routes
//! it (an HTTP request, a message for the session, registering interest, timers) and the
//! [`Session`] inside `Open` decides what a message or a timer means.
//!
//! Invariants: every byte written to the socket goes through the [`Outbox`] (one writer, whole
//! frames); session state (authentication, rate limit, replay, pings, auth deadline) exists only
//! inside `Open`, so a connection is an open session exactly while it is `Open`; in `Closing`
//! nothing new is queued and the socket is dropped once the outbox is flushed and the peer has
//! closed, or at the lingering deadline.

#[cfg(test)]
mod tests;

use super::outbox::{Flush, Outbox};
use super::ws::{Incoming, READ_CHUNK, ReadError, ServerWs};
use crate::client::session::Session;
use crate::fanout::groups::Batch;
use crate::http::server::{RequestHead, parse_request};
use crate::ws::frame;
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Largest HTTP request head accepted from a client (slow-loris and header-bomb guard).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a closing connection may linger to flush its close frame.
const LINGER: Duration = Duration::from_secs(3);

/// What a connection needs of its socket: non-blocking reads and writes, and a half-close.
pub trait Socket: Read + Write {
    /// Shuts the write side down (FIN) once everything is written; errors are ignored.
    fn shutdown_write(&mut self);
}

impl Socket for TcpStream {
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// Life cycle of a client connection.
#[derive(Debug)]
pub enum ClientState {
    /// Reading the HTTP request head, which must be complete by `deadline`.
    Handshake { buf: Vec<u8>, deadline: Instant },
    /// A WebSocket session.
    Open {
        ws: Box<ServerWs>,
        session: Box<Session>,
    },
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

/// A client connection over socket `S` (a TCP stream in the reactor, a fake one in tests).
#[derive(Debug)]
pub struct ClientConn<S = TcpStream> {
    pub stream: S,
    pub ip: IpAddr,
    pub state: ClientState,
    pub outbox: Outbox,
    /// Writable interest is currently registered.
    pub writable_armed: bool,
    /// Already on the reactor's list of connections to flush this turn.
    pub dirty: bool,
}

impl<S: Socket> ClientConn<S> {
    /// A freshly accepted connection in `Handshake`.
    pub fn new(stream: S, ip: IpAddr, now: Instant, handshake_timeout: Duration) -> Self {
        ClientConn {
            stream,
            ip,
            state: ClientState::Handshake {
                buf: Vec::new(),
                deadline: now + handshake_timeout,
            },
            outbox: Outbox::default(),
            writable_armed: false,
            dirty: false,
        }
    }

    /// True once the WebSocket session is open.
    pub fn is_open(&self) -> bool {
        matches!(self.state, ClientState::Open { .. })
    }

    /// The open session, if any.
    pub fn session(&self) -> Option<&Session> {
        match &self.state {
            ClientState::Open { session, .. } => Some(session),
            _ => None,
        }
    }

    /// The open session, if any, and the outbox (for replay refills).
    pub fn session_mut(&mut self) -> Option<(&mut Session, &mut Outbox)> {
        match &mut self.state {
            ClientState::Open { session, .. } => Some((session, &mut self.outbox)),
            _ => None,
        }
    }

    /// Whether live events go to this connection now (open and not replaying).
    pub fn takes_live(&self) -> bool {
        self.session().is_some_and(Session::takes_live)
    }

    /// When the connection's timer must fire next: the handshake deadline, the session's next
    /// check, or the end of lingering.
    pub fn next_wake(&self) -> Instant {
        match &self.state {
            ClientState::Handshake { deadline, .. } => *deadline,
            ClientState::Open { session, .. } => session.next_wake(),
            ClientState::Closing { until } => *until,
        }
    }

    /// Reads the request head. Call while in `Handshake`.
    pub fn read_head(&mut self, now: Instant) -> ReadResult {
        let ClientState::Handshake { buf, .. } = &mut self.state else {
            return ReadResult::Nothing;
        };
        let mut chunk = [0u8; 2048];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return done(None, "peer closed during handshake"),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    match parse_request(buf, MAX_HEAD_BYTES) {
                        Ok(Some(head)) => return ReadResult::Request(head),
                        Ok(None) => {}
                        Err(e) => {
                            let body = format!("{e:?}\n");
                            let resp = crate::http::server::response(
                                e.status(),
                                "text/plain",
                                body.as_bytes(),
                                &[],
                            );
                            self.finish_http(resp, now);
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

    /// Completes the upgrade: queues the 101 response and opens `session` with any bytes that
    /// followed the head.
    pub fn upgrade(
        &mut self,
        head: &RequestHead,
        response: Vec<u8>,
        max_message: usize,
        session: Session,
    ) {
        let leftover = match &mut self.state {
            ClientState::Handshake { buf, .. } => buf.split_off(head.head_len.min(buf.len())),
            _ => Vec::new(),
        };
        self.outbox.push_bytes(response);
        self.state = ClientState::Open {
            ws: Box::new(ServerWs::new(leftover, max_message)),
            session: Box::new(session),
        };
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
        let ClientState::Open { ws, session } = &mut self.state else {
            return self.drain_closing();
        };
        *more = false;
        for _ in 0..max {
            match ws.read(&mut self.stream, &mut self.outbox) {
                Ok(None) => return ReadResult::Nothing,
                Ok(Some(Incoming::Closed)) => return done(None, "client closed"),
                Ok(Some(m)) => {
                    session.heard(now);
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

    /// Queues a ping (the session has noted it as outstanding).
    pub fn send_ping(&mut self) {
        if self.is_open() {
            self.outbox.push_bytes(frame::encode(0x9, b""));
        }
    }

    /// Starts the close handshake with `code`. A slow consumer's unsent events are dropped first
    /// so the close frame is not stuck behind them. Returns whether a session was open (it ends
    /// here: the caller releases what it counted for it).
    pub fn close(&mut self, code: u16, reason: &str, now: Instant) -> bool {
        let was_open = self.is_open();
        if was_open {
            if code == 4008 {
                self.outbox.discard_unsent();
            }
            self.outbox.push_bytes(frame::close_frame(code, reason));
        }
        self.linger(now);
        was_open
    }

    fn linger(&mut self, now: Instant) {
        self.state = ClientState::Closing {
            until: now + LINGER,
        };
    }

    /// Writes what is queued. After a close frame or HTTP response is fully written, the write
    /// side is shut down (FIN) so the peer sees a clean end.
    pub fn flush(&mut self) -> io::Result<Flush> {
        let result = self.outbox.write_to(&mut self.stream)?;
        if result == Flush::Drained && matches!(self.state, ClientState::Closing { .. }) {
            self.stream.shutdown_write();
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
