//! A blocking WebSocket test client on `tungstenite` over a `std::net::TcpStream`, with a
//! deadline on every read (the socket's read timeout is set to the time left; tungstenite keeps
//! its state across a timed-out read, so the next read continues where it stopped).
//!
//! Replies and events share one socket: [`WsClient::request`] waits for the reply carrying its
//! `id` and keeps any event that arrives meanwhile in a backlog, which [`WsClient::recv_text`]
//! (and everything built on it) hands out first, so no message is lost or reordered.

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::protocol::WebSocket;
use tungstenite::{Error as WsError, Message};

/// Why a read returned no message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// The server closed: its close code and reason, if it sent a close frame.
    Closed(Option<(u16, String)>),
    /// A transport or protocol error.
    Failed(String),
}

/// A blocking WebSocket client.
pub struct WsClient {
    ws: WebSocket<TcpStream>,
    /// Messages read while waiting for something else (oldest first).
    backlog: VecDeque<String>,
    /// Next automatic request id.
    next_id: u64,
}

/// Connects a TCP stream with a small receive buffer (set before connecting so the TCP window
/// stays small): lets a test make a consumer whose kernel buffers fill quickly.
pub fn connect_with_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_recv_buffer_size(rcvbuf)?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

impl WsClient {
    /// Connects to `ws://addr{path}` and completes the upgrade.
    pub fn connect(addr: SocketAddr, path: &str) -> Result<WsClient, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        WsClient::over(stream, &format!("ws://{addr}{path}"))
    }

    /// Completes the upgrade to `url` over an already connected stream.
    pub fn over(stream: TcpStream, url: &str) -> Result<WsClient, String> {
        let io_err = |e: io::Error| e.to_string();
        stream.set_nodelay(true).map_err(io_err)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io_err)?;
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(io_err)?;
        let (ws, resp) =
            tungstenite::client(url, stream).map_err(|e| format!("upgrade {url}: {e}"))?;
        if resp.status().as_u16() != 101 {
            return Err(format!("upgrade {url}: status {}", resp.status()));
        }
        Ok(WsClient {
            ws,
            backlog: VecDeque::new(),
            next_id: 1,
        })
    }

    /// Sends one text frame as given.
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    }

    /// Sends one frame carrying `value` as JSON text.
    pub fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    /// Sends a binary frame.
    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .unwrap_or_else(|e| panic!("send binary: {e}"));
    }

    /// The next text message: from the backlog, else from the socket until `deadline`.
    pub fn recv_text(&mut self, deadline: Instant) -> Result<String, RecvError> {
        match self.backlog.pop_front() {
            Some(t) => Ok(t),
            None => self.read_socket(deadline),
        }
    }

    /// The next text message parsed as JSON (panics on a message that is not JSON: the server
    /// only sends JSON).
    pub fn recv_json_until(&mut self, deadline: Instant) -> Result<Value, RecvError> {
        let text = self.recv_text(deadline)?;
        Ok(serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("server sent a message that is not JSON ({e}): {text}")))
    }

    /// The next message, which must be an event (raw text and JSON); panics otherwise.
    pub fn recv_event_text(&mut self, deadline: Instant) -> (String, Value) {
        let text = self
            .recv_text(deadline)
            .unwrap_or_else(|e| panic!("expected an event, got {e:?}"));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("server sent a message that is not JSON ({e}): {text}"));
        assert_eq!(v["type"], "event", "expected an event, got {text}");
        (text, v)
    }

    /// The next message, which must be an event; panics otherwise.
    pub fn recv_event(&mut self, deadline: Instant) -> Value {
        self.recv_event_text(deadline).1
    }

    /// Skips events until one satisfies `pred` and returns it (raw text and JSON); panics on a
    /// message that is not an event or at `until`.
    pub fn recv_event_where(
        &mut self,
        until: Instant,
        pred: impl Fn(&Value) -> bool,
    ) -> (String, Value) {
        loop {
            let (text, v) = self.recv_event_text(until);
            if pred(&v) {
                return (text, v);
            }
        }
    }

    /// Reads `n` events, checking that `seq` goes up by exactly one from `after` (what a `"*"`
    /// subscriber must see); returns each event's raw text and JSON.
    pub fn events_in_sequence(
        &mut self,
        n: usize,
        after: u64,
        until: Instant,
    ) -> Vec<(String, Value)> {
        let mut out = Vec::with_capacity(n);
        let mut last = after;
        for _ in 0..n {
            let (text, v) = self.recv_event_text(until);
            let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("seq in {text}"));
            assert_eq!(seq, last + 1, "seq must grow by exactly one: {text}");
            last = seq;
            out.push((text, v));
        }
        out
    }

    /// Sends `msg` (adding a numeric `id` when it has none) and returns the reply echoing that
    /// id; events arriving meanwhile go to the backlog. Panics at `deadline`.
    pub fn request(&mut self, mut msg: Value, deadline: Instant) -> Value {
        if msg.get("id").is_none() {
            msg["id"] = json!(self.next_id);
            self.next_id += 1;
        }
        let id = msg["id"].clone();
        self.send_json(&msg);
        self.reply_to(&id, deadline)
    }

    /// Waits for the next non-event message with this `id`, keeping events in the backlog.
    pub fn reply_to(&mut self, id: &Value, deadline: Instant) -> Value {
        loop {
            let text = self
                .read_socket(deadline)
                .unwrap_or_else(|e| panic!("no reply to id {id}: {e:?}"));
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("server sent a message that is not JSON ({e}): {text}"));
            if v["type"] != "event" && v.get("id") == Some(id) {
                return v;
            }
            assert_eq!(
                v["type"], "event",
                "unexpected reply while waiting for id {id}: {text}"
            );
            self.backlog.push_back(text);
        }
    }

    /// Subscribes with the given request fields (`type` is added) and returns the `subscribed`
    /// reply; panics on any other answer.
    pub fn subscribe(&mut self, fields: Value, deadline: Instant) -> Value {
        let mut msg = fields;
        msg["type"] = json!("subscribe");
        let reply = self.request(msg, deadline);
        assert_eq!(reply["type"], "subscribed", "subscribe answered {reply}");
        reply
    }

    /// Reads (discarding messages) until the server's close frame and returns its code; panics
    /// when the connection ends without one or at `deadline`.
    pub fn expect_close_code(&mut self, deadline: Instant) -> u16 {
        self.backlog.clear();
        loop {
            match self.read_socket(deadline) {
                Ok(_) => {}
                Err(RecvError::Closed(Some((code, _)))) => return code,
                Err(e) => panic!("expected a close frame, got {e:?}"),
            }
        }
    }

    /// Reads one text message from the socket, answering pings and skipping pongs.
    fn read_socket(&mut self, deadline: Instant) -> Result<String, RecvError> {
        loop {
            let left = super::remaining(deadline);
            if left.is_zero() {
                return Err(RecvError::Timeout);
            }
            let timeout = left.max(Duration::from_millis(1));
            if let Err(e) = self.ws.get_mut().set_read_timeout(Some(timeout)) {
                return Err(RecvError::Failed(e.to_string()));
            }
            match self.ws.read() {
                Ok(Message::Text(t)) => return Ok(t.as_str().to_string()),
                Ok(Message::Binary(b)) => {
                    return Err(RecvError::Failed(format!(
                        "binary frame of {} bytes",
                        b.len()
                    )));
                }
                Ok(Message::Close(frame)) => {
                    let _ = self.ws.flush();
                    let cf = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_string()));
                    return Err(RecvError::Closed(cf));
                }
                Ok(_) => {}
                Err(WsError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Err(RecvError::Closed(None));
                }
                Err(e) => return Err(RecvError::Failed(e.to_string())),
            }
        }
    }
}
