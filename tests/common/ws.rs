//! The one blocking WebSocket test client, [`WsClient`]: `tungstenite` over a
//! `std::net::TcpStream`, with a deadline on every read (the socket's read timeout is set to the
//! time left; tungstenite keeps its state across a timed-out read, so the next read continues
//! where it stopped).
//!
//! Replies and events share one socket: a wait for a reply keeps the events that arrive
//! meanwhile in an event backlog, and a wait for an event keeps the replies in a reply backlog,
//! so no message is lost or reordered within its kind. Two styles of wait exist because the
//! tests need both: the `recv_*`, [`WsClient::request`] and [`WsClient::subscribe`] family takes
//! an [`Instant`] deadline; the conversational [`WsClient::ask`], [`WsClient::reply`],
//! [`WsClient::event`] family takes a [`Duration`] ([`super::WAIT`] for replies).
//!
//! Invariant: every text message read is checked to carry a top-level `timestamp` in Unix
//! seconds with millisecond precision (1 to 3 decimals as sent), which every server message has.

use super::{WAIT, remaining};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{HeaderName, HeaderValue};
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
    /// Events read while waiting for a reply (oldest first).
    events: VecDeque<String>,
    /// Replies read while waiting for an event (oldest first).
    replies: VecDeque<Value>,
    /// Next automatic request id.
    next_id: u64,
}

impl WsClient {
    /// Connects to `ws://addr{path}` and completes the upgrade.
    pub fn connect(addr: SocketAddr, path: &str) -> Result<WsClient, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        WsClient::handshake(stream, &format!("ws://{addr}{path}"), &[])
            .map_err(|e| format!("upgrade ws://{addr}{path}: {e}"))
    }

    /// Connects to `url` with extra request headers; the handshake error (e.g. an HTTP 401
    /// refusal, see [`refusal_status`]) otherwise.
    pub fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, WsError> {
        let req = url.into_client_request()?;
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        WsClient::handshake(TcpStream::connect(host)?, url, headers)
    }

    /// Connects to `ws://addr/` from the local address `from` (another loopback IP).
    pub fn connect_from(addr: SocketAddr, from: IpAddr) -> Result<WsClient, WsError> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(from, 0).into())?;
        socket.connect(&addr.into())?;
        WsClient::handshake(socket.into(), &format!("ws://{addr}/"), &[])
    }

    /// Connects to `ws://addr/` with a small receive buffer (set before connecting, so the TCP
    /// window stays small): a client that stops reading backs up quickly.
    pub fn connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> WsClient {
        let small = || -> io::Result<TcpStream> {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            socket.set_recv_buffer_size(bytes)?;
            socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
            Ok(socket.into())
        };
        let stream = small().unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        WsClient::handshake(stream, &format!("ws://{addr}/"), &[])
            .unwrap_or_else(|e| panic!("upgrade ws://{addr}/: {e}"))
    }

    /// Runs the client handshake for `url` over a connected `stream`, with extra headers.
    pub fn handshake(
        stream: TcpStream,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, WsError> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            let name: HeaderName = k.parse().map_err(|_| WsError::Url(bad_url(k)))?;
            let value = HeaderValue::from_str(v).map_err(|_| WsError::Url(bad_url(v)))?;
            req.headers_mut().insert(name, value);
        }
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        let ws = match tungstenite::client::client(req, stream) {
            Ok((ws, _)) => ws,
            Err(HandshakeError::Failure(e)) => return Err(e),
            Err(HandshakeError::Interrupted(_)) => {
                return Err(WsError::Io(io::ErrorKind::TimedOut.into()));
            }
        };
        Ok(WsClient {
            ws,
            events: VecDeque::new(),
            replies: VecDeque::new(),
            next_id: 1,
        })
    }

    /// Sends one text frame as given.
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("send {text:.80}: {e}"));
    }

    /// Sends one frame carrying `value` as JSON text.
    pub fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    /// The next text message: an event from the backlog, else from the socket until `deadline`.
    pub fn recv_text(&mut self, deadline: Instant) -> Result<String, RecvError> {
        match self.events.pop_front() {
            Some(t) => Ok(t),
            None => self.read_socket(deadline),
        }
    }

    /// The next text message parsed as JSON (panics on a message that is not JSON: the server
    /// only sends JSON).
    pub fn recv_json_until(&mut self, deadline: Instant) -> Result<Value, RecvError> {
        let text = self.recv_text(deadline)?;
        Ok(parse(&text))
    }

    /// The next message, which must be an event (raw text and JSON); panics otherwise.
    pub fn recv_event_text(&mut self, deadline: Instant) -> (String, Value) {
        let text = self
            .recv_text(deadline)
            .unwrap_or_else(|e| panic!("expected an event, got {e:?}"));
        let v = parse(&text);
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
        if let Some(i) = self.replies.iter().position(|r| r.get("id") == Some(id)) {
            return self.replies.remove(i).unwrap_or_default();
        }
        loop {
            let text = self
                .read_socket(deadline)
                .unwrap_or_else(|e| panic!("no reply to id {id}: {e:?}"));
            let v = parse(&text);
            if v["type"] != "event" && v.get("id") == Some(id) {
                return v;
            }
            assert_eq!(
                v["type"], "event",
                "unexpected reply while waiting for id {id}: {text}"
            );
            self.events.push_back(text);
        }
    }

    /// Subscribes with the given request fields (`type` is added) and returns the `subscribed`
    /// reply; panics on any other answer.
    pub fn subscribe(&mut self, fields: Value, deadline: Instant) -> Value {
        let mut msg = fields;
        msg["type"] = json!("subscribe");
        let reply = self.request(msg.clone(), deadline);
        assert_eq!(
            reply["type"], "subscribed",
            "subscribe {msg} answered {reply}"
        );
        reply
    }

    /// Sends `msg` exactly as given (no id added) and returns the next reply ([`Self::reply`]).
    pub fn ask(&mut self, msg: Value) -> Value {
        self.send_json(&msg);
        self.reply()
    }

    /// The next non-event message within [`WAIT`]; events read meanwhile stay in the backlog.
    /// Panics on close or timeout.
    pub fn reply(&mut self) -> Value {
        if let Some(v) = self.replies.pop_front() {
            return v;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self
                .read_socket(deadline)
                .unwrap_or_else(|e| panic!("waiting for a reply: {e:?}"));
            let v = parse(&text);
            if v["type"] != "event" {
                return v;
            }
            self.events.push_back(text);
        }
    }

    /// The next event within `wait` (`None` when none came); replies read meanwhile are kept
    /// for [`Self::reply`]. Panics when the connection ends.
    pub fn event(&mut self, wait: Duration) -> Option<Value> {
        if let Some(t) = self.events.pop_front() {
            return Some(parse(&t));
        }
        let deadline = Instant::now() + wait;
        loop {
            match self.read_socket(deadline) {
                Ok(text) => {
                    let v = parse(&text);
                    if v["type"] == "event" {
                        return Some(v);
                    }
                    self.replies.push_back(v);
                }
                Err(RecvError::Timeout) => return None,
                Err(e) => panic!("waiting for an event: {e:?}"),
            }
        }
    }

    /// The next event whose `data.event` is `name` within `wait`, skipping others.
    pub fn event_named(&mut self, name: &str, wait: Duration) -> Value {
        let deadline = Instant::now() + wait;
        loop {
            match self.event(remaining(deadline)) {
                Some(e) if e["data"]["event"] == name => return e,
                Some(_) => {}
                None => panic!("no {name} event within {wait:?}"),
            }
        }
    }

    /// Every event delivered to this client before the answer to a `ping` sent now. The worker
    /// fans an event out to every live subscriber at once, so once another client (a `"*"`
    /// witness) has read an event, this returns everything up to it that matched this client's
    /// filter, and nothing later: the positive end marker for "this client got only these".
    /// Not for a paced replay after `subscribe` with `since`, which may go on after the pong.
    pub fn events_before_pong(&mut self) -> Vec<Value> {
        let id = json!(format!("pong-marker-{}", self.next_id));
        self.next_id += 1;
        self.send_json(&json!({"type": "ping", "id": id}));
        let mut out: Vec<Value> = self.events.drain(..).map(|t| parse(&t)).collect();
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self
                .read_socket(deadline)
                .unwrap_or_else(|e| panic!("no pong to {id} after {out:?}: {e:?}"));
            let v = parse(&text);
            if v["type"] == "event" {
                out.push(v);
            } else if v.get("id") == Some(&id) {
                assert_eq!(v["type"], "pong", "{v}");
                return out;
            } else {
                self.replies.push_back(v);
            }
        }
    }

    /// Events until (and with) the one whose `seq` is `last`, e.g. a replay that the
    /// `subscribed` reply said ends there; panics after `wait` or past `last`.
    pub fn events_through(&mut self, last: u64, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let e = self
                .event(remaining(deadline))
                .unwrap_or_else(|| panic!("no event with seq {last} in time; got {out:?}"));
            let seq = super::seq(&e);
            assert!(seq <= last, "seq {seq} past {last}: {e}");
            out.push(e);
            if seq == last {
                return out;
            }
        }
    }

    /// The next message of either kind from the socket (backlogs untouched), or why none came
    /// within `wait`.
    pub fn read(&mut self, wait: Duration) -> Result<Value, RecvError> {
        self.read_socket(Instant::now() + wait).map(|t| parse(&t))
    }

    /// Reads (keeping messages in the backlogs) until the server closes; returns its close code
    /// (`None`: gone without a close frame). Panics if the connection is still open after `wait`.
    pub fn expect_close(&mut self, wait: Duration) -> Option<u16> {
        let deadline = Instant::now() + wait;
        loop {
            match self.read_socket(deadline) {
                Ok(text) => {
                    let v = parse(&text);
                    if v["type"] == "event" {
                        self.events.push_back(text);
                    } else {
                        self.replies.push_back(v);
                    }
                }
                Err(RecvError::Closed(cf)) => return cf.map(|(code, _)| code),
                Err(RecvError::Failed(_)) => return None,
                Err(RecvError::Timeout) => panic!("connection still open after {wait:?}"),
            }
        }
    }

    /// Reads (discarding messages) until the server's close frame and returns its code; panics
    /// when the connection ends without one or at `deadline`.
    pub fn expect_close_code(&mut self, deadline: Instant) -> u16 {
        self.events.clear();
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
            let left = remaining(deadline);
            if left.is_zero() {
                return Err(RecvError::Timeout);
            }
            let timeout = left.max(Duration::from_millis(1));
            if let Err(e) = self.ws.get_mut().set_read_timeout(Some(timeout)) {
                return Err(RecvError::Failed(e.to_string()));
            }
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let text = t.as_str().to_string();
                    check_timestamp_text(&text);
                    return Ok(text);
                }
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

/// The HTTP status of a refused WebSocket handshake; panics when it was not an HTTP refusal.
pub fn refusal_status(r: Result<WsClient, WsError>) -> u16 {
    match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

fn bad_url(what: &str) -> tungstenite::error::UrlError {
    tungstenite::error::UrlError::UnableToConnect(format!("bad header part {what:?}"))
}

/// Parses a server message (panics on one that is not JSON: the server only sends JSON).
fn parse(text: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("server sent a message that is not JSON ({e}): {text}"))
}

/// Every server message carries a top-level `"timestamp"`: Unix seconds with millisecond
/// precision, a decimal number with 1 to 3 fractional digits as sent.
fn check_timestamp_text(text: &str) {
    let raw = super::raw_timestamp(text).unwrap_or_else(|| panic!("no timestamp: {text:.300}"));
    let decimals = raw.split_once('.').map_or(0, |(_, f)| f.len());
    assert!(
        (1..=3).contains(&decimals),
        "timestamp {raw:?} is not seconds with ms precision: {text:.300}"
    );
}
