//! One subscriber connection: connect, upgrade, subscribe, then receive events.
//!
//! States: `Idle -> Connecting -> Upgrading -> Subscribing -> Open`, and `Closed` from any of
//! them (error, end of stream, or a close frame, whose code is kept). Reads drain the socket to
//! `WouldBlock` through one read buffer shared by every connection; only the bytes of an
//! incomplete frame stay with the connection, so an idle subscriber costs a few hundred bytes.
//! Output (upgrade, subscribe, pong, close) is tiny; whatever the socket does not take at once is
//! kept and written when it becomes writable again.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::step::TxParser;
use crate::ws::{self, MAX_FRAME};

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started (or waiting to be retried).
    Idle,
    /// TCP connect in flight.
    Connecting,
    /// Upgrade request sent, waiting for `101`.
    Upgrading,
    /// Subscribe sent, waiting for `subscribed`.
    Subscribing,
    /// Subscribed: receiving events.
    Open,
    /// Gone (see `close_code` / `error`).
    Closed,
}

/// What a call changed, for the caller's counters.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing the caller tracks.
    None,
    /// The connection reached `Open`.
    Opened,
    /// The connection closed; `was_open` tells whether it had been subscribed.
    Closed {
        /// It was `Open` before.
        was_open: bool,
    },
}

/// Read-only context shared by every connection.
pub struct Shared {
    /// Finds the embedded schedule and index in event frames.
    pub parser: TxParser,
    /// The HTTP upgrade request.
    pub upgrade: Vec<u8>,
    /// The masked subscribe frame.
    pub subscribe: Vec<u8>,
}

/// A subscriber connection.
pub struct Conn {
    /// Current state.
    pub state: State,
    stream: Option<TcpStream>,
    /// Bytes of an incomplete frame (or handshake) carried to the next read.
    partial: Vec<u8>,
    /// A fragmented message being reassembled (rare; bounded by `MAX_FRAME`).
    frag: Option<Vec<u8>>,
    /// Output the socket did not take yet.
    out: Vec<u8>,
    /// Start of the current attempt (µs), for the connect timeout.
    pub since_us: u64,
    /// Attempts made in the current connect phase.
    pub attempts: u32,
    /// Close code sent by the server, if it closed with one.
    pub close_code: Option<u16>,
    /// Why the connection failed, if it did not close cleanly.
    pub error: Option<String>,
}

impl Default for Conn {
    fn default() -> Self {
        Conn {
            state: State::Idle,
            stream: None,
            partial: Vec::new(),
            frag: None,
            out: Vec::new(),
            since_us: 0,
            attempts: 0,
            close_code: None,
            error: None,
        }
    }
}

impl Conn {
    /// Starts connecting from `src` to `dst`; registers the socket under `token`.
    pub fn start(
        &mut self,
        reg: &Registry,
        token: Token,
        src: Ipv4Addr,
        dst: SocketAddr,
        now_us: u64,
    ) {
        *self = Conn {
            attempts: self.attempts + 1,
            since_us: now_us,
            ..Conn::default()
        };
        let result = crate::net::connect_from(src, dst).and_then(|mut s| {
            reg.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        match result {
            Ok(s) => {
                self.stream = Some(s);
                self.state = State::Connecting;
            }
            Err(e) => self.fail(reg, format!("connect: {e}")),
        }
    }

    /// Handles a readiness event; `sink(scheduled_us, index)` gets each event delivery.
    pub fn handle(
        &mut self,
        ev: &Event,
        reg: &Registry,
        scratch: &mut [u8],
        sh: &Shared,
        sink: &mut impl FnMut(u64, u64),
    ) -> Change {
        let before = self.state;
        if self.state == State::Connecting {
            self.finish_connect(reg, sh);
        }
        if matches!(
            self.state,
            State::Upgrading | State::Subscribing | State::Open
        ) {
            if ev.is_writable() {
                self.flush(reg);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.read_all(reg, scratch, sh, sink);
            }
        }
        match (before, self.state) {
            (a, b) if a == b => Change::None,
            (_, State::Open) => Change::Opened,
            (a, State::Closed) => Change::Closed {
                was_open: a == State::Open,
            },
            _ => Change::None,
        }
    }

    /// Closes the connection and records why (`error` stays `None` for a clean close).
    pub fn fail(&mut self, reg: &Registry, why: String) {
        if let Some(mut s) = self.stream.take() {
            let _ = reg.deregister(&mut s);
        }
        if self.error.is_none() && self.close_code.is_none() {
            self.error = Some(why);
        }
        self.state = State::Closed;
        self.partial = Vec::new();
        self.out = Vec::new();
        self.frag = None;
    }

    fn finish_connect(&mut self, reg: &Registry, sh: &Shared) {
        let Some(s) = self.stream.as_ref() else {
            return;
        };
        match s.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return self.fail(reg, format!("connect: {e}")),
        }
        match s.peer_addr() {
            Ok(_) => {
                self.state = State::Upgrading;
                self.send(reg, &sh.upgrade);
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => self.fail(reg, format!("connect: {e}")),
        }
    }

    fn read_all(
        &mut self,
        reg: &Registry,
        scratch: &mut [u8],
        sh: &Shared,
        sink: &mut impl FnMut(u64, u64),
    ) {
        let mut len = self.partial.len();
        scratch[..len].copy_from_slice(&self.partial);
        self.partial.clear();
        loop {
            if len == scratch.len() {
                return self.fail(reg, "message larger than the read buffer".into());
            }
            let Some(stream) = self.stream.as_mut() else {
                return;
            };
            match stream.read(&mut scratch[len..]) {
                Ok(0) => return self.fail(reg, "connection closed by server".into()),
                Ok(n) => {
                    let drained = len + n < scratch.len();
                    len += n;
                    let used = match self.consume(reg, &scratch[..len], sh, sink) {
                        Ok(u) => u,
                        Err(e) => return self.fail(reg, e),
                    };
                    if self.state == State::Closed {
                        return;
                    }
                    scratch.copy_within(used..len, 0);
                    len -= used;
                    // A short read emptied the socket; with edge-triggered epoll any later data
                    // raises a new event, so the read that would return WouldBlock is skipped.
                    if drained {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(reg, format!("read: {e}")),
            }
        }
        self.partial.extend_from_slice(&scratch[..len]);
    }

    /// Parses complete units in `buf`; returns how many bytes were used.
    fn consume(
        &mut self,
        reg: &Registry,
        buf: &[u8],
        sh: &Shared,
        sink: &mut impl FnMut(u64, u64),
    ) -> Result<usize, String> {
        let mut pos = 0;
        if self.state == State::Upgrading {
            match ws::parse_upgrade(buf).map_err(|e| e.to_string())? {
                None => return Ok(0),
                Some(n) => {
                    pos = n;
                    self.state = State::Subscribing;
                    self.send(reg, &sh.subscribe);
                }
            }
        }
        while self.state != State::Closed {
            let Some((frame, used)) = ws::parse_frame(&buf[pos..]).map_err(|e| e.to_string())?
            else {
                break;
            };
            pos += used;
            self.on_frame(reg, frame, sh, sink)?;
        }
        Ok(pos)
    }

    fn on_frame(
        &mut self,
        reg: &Registry,
        f: ws::Frame<'_>,
        sh: &Shared,
        sink: &mut impl FnMut(u64, u64),
    ) -> Result<(), String> {
        match f.opcode {
            ws::OP_TEXT | ws::OP_BINARY if f.fin && self.frag.is_none() => {
                self.on_message(f.payload, sh, sink)
            }
            ws::OP_TEXT | ws::OP_BINARY if self.frag.is_none() => {
                self.frag = Some(f.payload.to_vec())
            }
            ws::OP_CONT => {
                let Some(mut m) = self.frag.take() else {
                    return Err("continuation without a message".into());
                };
                if m.len() + f.payload.len() > MAX_FRAME {
                    return Err("fragmented message too large".into());
                }
                m.extend_from_slice(f.payload);
                if f.fin {
                    self.on_message(&m, sh, sink);
                } else {
                    self.frag = Some(m);
                }
            }
            ws::OP_PING => self.send(reg, &ws::client_frame(ws::OP_PONG, f.payload, [7, 7, 7, 7])),
            ws::OP_PONG => {}
            ws::OP_CLOSE => {
                self.close_code = ws::close_code(f.payload);
                self.send(
                    reg,
                    &ws::client_frame(
                        ws::OP_CLOSE,
                        &f.payload[..f.payload.len().min(2)],
                        [7, 7, 7, 7],
                    ),
                );
                self.fail(reg, "closed by server".into());
            }
            op => return Err(format!("unexpected frame opcode {op}")),
        }
        Ok(())
    }

    fn on_message(&mut self, msg: &[u8], sh: &Shared, sink: &mut impl FnMut(u64, u64)) {
        match self.state {
            State::Open => {
                if let Some((sched, idx)) = sh.parser.parse(msg) {
                    sink(sched, idx);
                }
            }
            State::Subscribing if memchr::memmem::find(msg, b"\"subscribed\"").is_some() => {
                self.state = State::Open;
            }
            State::Subscribing if memchr::memmem::find(msg, b"\"error\"").is_some() => {
                self.error = Some(format!(
                    "subscribe refused: {}",
                    String::from_utf8_lossy(&msg[..msg.len().min(200)])
                ));
            }
            _ => {}
        }
    }

    fn send(&mut self, reg: &Registry, bytes: &[u8]) {
        if !self.out.is_empty() {
            if self.out.len() + bytes.len() > MAX_FRAME {
                return self.fail(reg, "server does not read".into());
            }
            return self.out.extend_from_slice(bytes);
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut done = 0;
        while done < bytes.len() {
            match stream.write(&bytes[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(reg, format!("write: {e}")),
            }
        }
        self.out.extend_from_slice(&bytes[done..]);
    }

    fn flush(&mut self, reg: &Registry) {
        let out = std::mem::take(&mut self.out);
        self.send(reg, &out);
    }
}
