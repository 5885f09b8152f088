//! One `/ws` session after the upgrade: pushes from the hub out, pings answered, `{"xpub":key}`
//! narrowing in, and the faults that act on open sockets (docs/daemon.md, "The event link").
//!
//! The socket is non-blocking; the session waits on its hub queue for at most [`WAIT`], writes
//! every queued frame (filtered) into tungstenite's buffer and flushes once per turn, then reads
//! until `WouldBlock` (tungstenite answers pings itself). While the kernel send buffer is full
//! it stops taking frames, so they wait (bounded) in the hub queue. Invariants: nothing is sent
//! on connect and no heartbeats; `stall` neither writes nor reads (no pongs) yet keeps the socket
//! open; `drop_after` shuts the TCP stream without a close frame; stop closes with 1001
//! "Server shutdown"; a non-object JSON message ends the socket (1011), as the daemon's handler
//! raising does.

use super::hub::{Frame, Subscription};
use super::shared::Shared;
use serde_json::Value;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error, Message, WebSocket};

/// Longest wait for a frame before reading the socket again.
const WAIT: Duration = Duration::from_millis(5);
/// Frames written per turn before flushing and reading.
const BATCH: usize = 4096;
/// Largest client message accepted.
const MAX_MESSAGE: usize = 64 * 1024;
/// How long a closing socket waits for the peer's close frame.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The simulator is stopping: close with 1001.
    Stop,
    /// `drop_after` reached: no close frame.
    Drop,
    /// The client sent a non-object JSON value: close with 1011.
    Fail,
    /// The peer closed or the socket failed.
    Closed,
}

/// The wallet filter a `{"xpub": ...}` message sets.
fn filter_from(text: &str) -> Result<Option<String>, ()> {
    match serde_json::from_str::<Value>(text) {
        Err(_) => Ok(None),
        Ok(Value::Object(o)) => Ok(o.get("xpub").filter(|v| truthy(v)).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })),
        Ok(_) => Err(()),
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Whether a frame goes to a socket narrowed to `filter`.
fn passes(frame: &Frame, filter: Option<&str>) -> bool {
    match (&frame.wallet, filter) {
        (None, _) | (_, None) => true,
        (Some(w), Some(f)) => &**w == f,
    }
}

fn would_block(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock)
}

struct Session {
    ws: WebSocket<TcpStream>,
    filter: Option<String>,
    /// Frames written to this socket (for `drop_after`).
    sent: u64,
    /// tungstenite holds bytes the kernel would not take yet.
    backlog: bool,
}

/// Runs a session on an upgraded stream; `leftover` is what was read past the request head,
/// `sub` the socket's hub queue (the caller unsubscribes it afterwards).
pub(crate) fn run(shared: &Shared, stream: TcpStream, leftover: Vec<u8>, sub: &Subscription) {
    if stream.set_read_timeout(None).is_err() || stream.set_nonblocking(true).is_err() {
        return;
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let ws = WebSocket::from_partially_read(stream, leftover, Role::Server, Some(config));
    let mut session = Session {
        ws,
        filter: None,
        sent: 0,
        backlog: false,
    };
    let end = session.pump(shared, sub);
    log::debug!("[SIMULATE] websocket session ended: {end:?}");
    match end {
        End::Stop => session.close(CloseCode::Away, "Server shutdown"),
        End::Fail => session.close(CloseCode::Error, "Internal Server Error"),
        End::Drop => {
            let _ = session.ws.flush();
            let _ = session.ws.get_ref().shutdown(Shutdown::Both);
        }
        End::Closed => {}
    }
}

impl Session {
    fn pump(&mut self, shared: &Shared, sub: &Subscription) -> End {
        loop {
            if shared.is_stopping() {
                return End::Stop;
            }
            if shared.faults.drop_after().is_some_and(|n| self.sent >= n) {
                return End::Drop;
            }
            if shared.faults.stall() {
                for _ in sub.rx.try_iter() {
                    sub.queued.fetch_sub(1, Ordering::Relaxed);
                }
                std::thread::sleep(WAIT);
                continue;
            }
            if let Some(end) = self.write_turn(shared, sub) {
                return end;
            }
            if let Some(end) = self.read_turn() {
                return end;
            }
        }
    }

    /// Takes queued frames (unless backlogged), writes them and flushes once.
    fn write_turn(&mut self, shared: &Shared, sub: &Subscription) -> Option<End> {
        if self.backlog {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            let first = match sub.rx.recv_timeout(WAIT) {
                Ok(f) => Some(f),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Some(End::Closed),
            };
            let limit = shared.faults.drop_after().unwrap_or(u64::MAX);
            for frame in first.into_iter().chain(sub.rx.try_iter().take(BATCH)) {
                sub.queued.fetch_sub(1, Ordering::Relaxed);
                if self.sent >= limit || !passes(&frame, self.filter.as_deref()) {
                    continue;
                }
                match self.ws.write(Message::Text(frame.text)) {
                    Ok(()) => {}
                    Err(e) if would_block(&e) => self.backlog = true,
                    Err(_) => return Some(End::Closed),
                }
                self.sent += 1;
                shared.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        match self.ws.flush() {
            Ok(()) => self.backlog = false,
            Err(e) if would_block(&e) => self.backlog = true,
            Err(_) => return Some(End::Closed),
        }
        None
    }

    /// Reads every available message.
    fn read_turn(&mut self) -> Option<End> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => match filter_from(t.as_str()) {
                    Ok(Some(f)) => self.filter = Some(f),
                    Ok(None) => {}
                    Err(()) => return Some(End::Fail),
                },
                Ok(_) => {}
                Err(e) if would_block(&e) => return None,
                Err(_) => return Some(End::Closed),
            }
        }
    }

    /// Sends a close frame and waits briefly for the peer's, then lets the socket drop.
    fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        match self.ws.close(Some(frame)) {
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(_) => return,
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => {}
                Err(e) if would_block(&e) => {
                    let _ = self.ws.flush();
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn xpub_messages_set_the_filter() {
        assert_eq!(
            filter_from(r#"{"xpub":"zpub6r"}"#),
            Ok(Some("zpub6r".into()))
        );
        assert_eq!(filter_from(r#"{"xpub":""}"#), Ok(None));
        assert_eq!(filter_from(r#"{"xpub":null}"#), Ok(None));
        assert_eq!(filter_from(r#"{"other":1}"#), Ok(None));
        assert_eq!(filter_from("not json"), Ok(None));
        assert_eq!(
            filter_from(r#"{"xpub":{"a":1}}"#),
            Ok(Some(r#"{"a":1}"#.into()))
        );
        assert_eq!(filter_from("[1]"), Err(()));
        assert_eq!(filter_from("5"), Err(()));
    }

    #[test]
    fn narrowing_keeps_global_and_own_wallet() {
        let global = Frame {
            wallet: None,
            text: "g".into(),
        };
        let mine = Frame {
            wallet: Some(Arc::from("a")),
            text: "a".into(),
        };
        let other = Frame {
            wallet: Some(Arc::from("b")),
            text: "b".into(),
        };
        assert!(passes(&global, Some("a")) && passes(&mine, Some("a")));
        assert!(!passes(&other, Some("a")));
        assert!(passes(&other, None));
    }
}
