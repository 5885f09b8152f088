//! Blocking network helpers for `check`: connect with a timeout, one HTTP exchange bounded by a
//! deadline and a byte limit, and a WebSocket ping on an upgraded stream.
//!
//! Invariants: every connect, write and read is bounded by the timeout (reads by a deadline for
//! the whole answer, so a slow drip cannot stretch it); at most [`MAX_READ`] bytes are buffered
//! per answer and at most [`MAX_WS_MESSAGES`] messages of [`MAX_WS_MESSAGE`] bytes are read
//! while waiting for a pong; the HTTP bytes are parsed by the caller's `crate::http` parser.

use super::daemon::MAX_BODY;
use super::seconds;
use crate::http::HttpError;
use crate::http::client::MAX_RESPONSE_HEAD;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::{Bytes, Message};

/// Most bytes buffered for one answer: head, body and chunk framing.
const MAX_READ: usize = MAX_RESPONSE_HEAD + 2 * MAX_BODY;
/// Largest WebSocket message read while waiting for the pong.
const MAX_WS_MESSAGE: usize = 1024 * 1024;
/// Most messages (events) skipped while waiting for the pong.
const MAX_WS_MESSAGES: usize = 10_000;
/// The ping payload; the pong must echo it.
const PING_PAYLOAD: &[u8] = b"cryptoworker check";

/// Why an HTTP exchange did not produce an answer.
#[derive(Debug)]
pub(super) enum ExchangeError {
    /// The deadline passed.
    TimedOut,
    /// The peer closed before a complete answer.
    Closed,
    /// A socket error.
    Io(io::Error),
    /// The answer is not acceptable HTTP.
    Http(HttpError),
}

/// Why the WebSocket ping of `check` failed.
#[derive(Debug)]
pub(super) enum PingError {
    /// The WebSocket layer failed (socket error or protocol violation).
    Stream(tungstenite::Error),
    /// No pong came within the timeout.
    NoPong(Duration),
    /// The daemon closed the stream, with this code and reason if it sent any.
    Closed(Option<(u16, String)>),
}

impl std::fmt::Display for PingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PingError::Stream(e) => write!(f, "the /ws stream failed: {e}"),
            PingError::NoPong(timeout) => write!(
                f,
                "the /ws stream did not answer a ping within {}",
                seconds(*timeout)
            ),
            PingError::Closed(None) => f.write_str("the daemon closed the /ws stream"),
            PingError::Closed(Some((code, reason))) => {
                write!(f, "the daemon closed the /ws stream ({code} {reason})")
            }
        }
    }
}

impl std::error::Error for PingError {}

/// Text from the peer made safe to print: control characters dropped, at most 64 characters.
pub(super) fn printable(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).take(64).collect();
    match clean.is_empty() {
        true => "(no version)".to_string(),
        false => clean,
    }
}

/// Connects to the first of `addrs` that accepts within `timeout` each; the last error if none.
pub(super) fn connect(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> io::Result<(TcpStream, SocketAddr)> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, *addr));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Whether an I/O error is a timeout of a blocking socket.
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Sends `request`, then reads until `parse` accepts the bytes (it gets the whole buffer and
/// whether the peer has closed). Bounded by `timeout` for the write and the whole answer, and by
/// [`MAX_READ`] bytes. Returns the parsed answer and every byte read.
pub(super) fn exchange<T>(
    stream: &mut TcpStream,
    request: &[u8],
    timeout: Duration,
    parse: impl Fn(&[u8], bool) -> Result<Option<T>, HttpError>,
) -> Result<(T, Vec<u8>), ExchangeError> {
    let deadline = Instant::now() + timeout;
    let io_err = |e: io::Error| match is_timeout(&e) {
        true => ExchangeError::TimedOut,
        false => ExchangeError::Io(e),
    };
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    stream.write_all(request).map_err(io_err)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ExchangeError::TimedOut);
        }
        stream.set_read_timeout(Some(remaining)).map_err(io_err)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_READ {
            return Err(ExchangeError::Http(HttpError::TooLarge));
        }
        match parse(&buf, n == 0).map_err(ExchangeError::Http)? {
            Some(answer) => return Ok((answer, buf)),
            None if n == 0 => return Err(ExchangeError::Closed),
            None => {}
        }
    }
}

/// Sends a ping on an upgraded stream and waits for its pong (events before it are skipped),
/// then closes politely. `Err` says what went wrong.
pub(super) fn ping(
    stream: TcpStream,
    leftover: Vec<u8>,
    timeout: Duration,
) -> Result<(), PingError> {
    let deadline = Instant::now() + timeout;
    let _ = stream.set_write_timeout(Some(timeout));
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE));
    let mut ws = WebSocket::from_partially_read(stream, leftover, Role::Client, Some(config));
    ws.send(Message::Ping(Bytes::from_static(PING_PAYLOAD)))
        .map_err(PingError::Stream)?;
    let no_pong = || PingError::NoPong(timeout);
    for _ in 0..MAX_WS_MESSAGES {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(no_pong());
        }
        let _ = ws.get_ref().set_read_timeout(Some(remaining));
        match ws.read() {
            Ok(Message::Pong(payload)) if payload.as_ref() == PING_PAYLOAD => {
                let _ = ws.close(None);
                let _ = ws.flush();
                return Ok(());
            }
            Ok(Message::Close(frame)) => {
                let why = frame.map(|f| (u16::from(f.code), printable(&f.reason)));
                return Err(PingError::Closed(why));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => return Err(no_pong()),
            Err(e) => return Err(PingError::Stream(e)),
        }
    }
    Err(no_pong())
}
