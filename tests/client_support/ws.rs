//! A blocking tungstenite test client with deadlines on every read; replies and events are
//! queued apart so a test can wait for one kind without losing the other.

use super::WAIT;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// What one read from a [`Client`] produced.
#[derive(Debug)]
pub enum Got {
    /// A JSON text message.
    Msg(Value),
    /// A close frame (its code, if any).
    Close(Option<u16>),
    /// The connection ended without a close frame (the error text).
    Gone(String),
    /// Nothing within the wait.
    Timeout,
}

/// A blocking WebSocket test client. Replies and events are sorted into two queues so a test
/// can wait for one without losing the other.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    replies: VecDeque<Value>,
    events: VecDeque<Value>,
}

impl Client {
    /// Connects to `ws://addr/` or panics.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::connect_with(&format!("ws://{addr}/"), &[])
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Connects to `url` with extra headers; the handshake error (e.g. HTTP 401) otherwise.
    pub fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, tungstenite::Error> {
        let req = url.into_client_request()?;
        let host = req.uri().authority().unwrap().as_str().to_string();
        Client::handshake(TcpStream::connect(host)?, url, headers)
    }

    /// Connects to `ws://addr/` from the local address `from` (another loopback IP).
    pub fn connect_from(
        addr: SocketAddr,
        from: std::net::IpAddr,
    ) -> Result<Client, tungstenite::Error> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(from, 0).into())?;
        socket.connect(&addr.into())?;
        Client::handshake(socket.into(), &format!("ws://{addr}/"), &[])
    }

    /// Connects to `ws://addr/` with a small receive buffer (set before connecting, so the TCP
    /// window stays small): a client that stops reading backs up quickly.
    pub fn connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> Client {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.connect(&addr.into()).unwrap();
        Client::handshake(socket.into(), &format!("ws://{addr}/"), &[]).unwrap()
    }

    /// Runs the client handshake for `url` over `stream` with extra headers.
    pub fn handshake(
        stream: TcpStream,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            let name: tungstenite::http::HeaderName = k.parse().unwrap();
            req.headers_mut()
                .insert(name, HeaderValue::from_str(v).unwrap());
        }
        stream.set_read_timeout(Some(WAIT))?;
        let ws = match tungstenite::client::client(req, stream) {
            Ok((ws, _)) => ws,
            Err(HandshakeError::Failure(e)) => return Err(e),
            Err(HandshakeError::Interrupted(_)) => {
                return Err(tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()));
            }
        };
        Ok(Client {
            ws,
            replies: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Sends a JSON value as a text frame.
    pub fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string());
    }

    /// Sends a text frame.
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("send {text:.80}: {e}"));
    }

    /// The next message from the socket (pings answered, pongs skipped).
    pub fn read(&mut self, wait: Duration) -> Got {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Timeout;
            }
            self.ws
                .get_mut()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    check_timestamp_text(&t);
                    return Got::Msg(
                        serde_json::from_str(&t)
                            .unwrap_or_else(|e| panic!("server sent non-JSON {t:?}: {e}")),
                    );
                }
                Ok(Message::Close(frame)) => return Got::Close(frame.map(|f| u16::from(f.code))),
                Ok(Message::Binary(b)) => panic!("server sent a binary frame of {} bytes", b.len()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Got::Gone(e.to_string()),
            }
        }
    }

    /// The next non-event message within [`WAIT`]; events seen meanwhile are kept for
    /// [`Client::event`]. Panics on close or timeout.
    pub fn reply(&mut self) -> Value {
        if let Some(v) = self.replies.pop_front() {
            return v;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                Got::Msg(v) if v["type"] == "event" => self.events.push_back(v),
                Got::Msg(v) => return v,
                other => panic!("waiting for a reply: {other:?}"),
            }
        }
    }

    /// Sends `v` and returns the reply.
    pub fn request(&mut self, v: Value) -> Value {
        self.send(&v);
        self.reply()
    }

    /// Subscribes with `body` (its `type` is set) and returns the `subscribed` reply; panics
    /// on an error reply.
    pub fn subscribe(&mut self, mut body: Value) -> Value {
        body["type"] = json!("subscribe");
        let r = self.request(body.clone());
        assert_eq!(r["type"], "subscribed", "subscribe {body} -> {r}");
        r
    }

    /// The next event within `wait` (replies seen meanwhile are kept for [`Client::reply`]).
    pub fn event(&mut self, wait: Duration) -> Option<Value> {
        if let Some(v) = self.events.pop_front() {
            return Some(v);
        }
        let deadline = Instant::now() + wait;
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                Got::Msg(v) if v["type"] == "event" => return Some(v),
                Got::Msg(v) => self.replies.push_back(v),
                Got::Timeout => return None,
                other => panic!("waiting for an event: {other:?}"),
            }
        }
    }

    /// The next event whose `data.event` is `name` within `wait`, skipping others.
    pub fn event_named(&mut self, name: &str, wait: Duration) -> Value {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.event(left) {
                Some(e) if e["data"]["event"] == name => return e,
                Some(_) => {}
                None => panic!("no {name} event within {wait:?}"),
            }
        }
    }

    /// Every event that arrives within `wait`.
    pub fn events_for(&mut self, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(e) = self.event(deadline.saturating_duration_since(Instant::now())) {
            out.push(e);
        }
        out
    }

    /// Reads until the server closes; returns the close code (`None`: gone without a close
    /// frame). Panics if the connection is still open after `wait`.
    pub fn expect_close(&mut self, wait: Duration) -> Option<u16> {
        let deadline = Instant::now() + wait;
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                Got::Msg(v) if v["type"] == "event" => self.events.push_back(v),
                Got::Msg(v) => self.replies.push_back(v),
                Got::Close(code) => return code,
                Got::Gone(_) => return None,
                Got::Timeout => panic!("connection still open after {wait:?}"),
            }
        }
    }

    /// Replies seen so far but not yet taken.
    pub fn pending_replies(&mut self) -> Vec<Value> {
        self.replies.drain(..).collect()
    }
}

/// The HTTP status of a refused WebSocket handshake.
pub fn refusal_status(r: Result<Client, tungstenite::Error>) -> u16 {
    match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

/// Every server message carries a top-level `"timestamp"`: Unix seconds with millisecond
/// precision, i.e. a decimal number with 1 to 3 fractional digits as sent (the worker writes it
/// last, so the last occurrence is the top-level one).
fn check_timestamp_text(text: &str) {
    let key = "\"timestamp\":";
    let start = text
        .rfind(key)
        .map(|i| i + key.len())
        .unwrap_or_else(|| panic!("no timestamp: {text}"));
    let raw: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let decimals = raw.split_once('.').map_or(0, |(_, f)| f.len());
    assert!(
        (1..=3).contains(&decimals),
        "timestamp {raw:?} is not seconds with ms precision: {text:.300}"
    );
}
