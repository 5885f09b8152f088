//! The HTTP side: the accept loop, one thread per connection with HTTP/1.1 keep-alive, request
//! heads parsed with `httparse`, Basic auth, routing of `POST /`, `GET /spec` and `GET /ws`.
//!
//! Invariants: request heads are at most [`MAX_HEAD`] bytes and bodies [`MAX_BODY`]; at most
//! [`MAX_CONNECTIONS`] connections are served at once (extra ones are closed at accept); every
//! JSON answer is HTTP 200 `application/json`, bad credentials included (-32600, and no upgrade
//! on `/ws`); unknown paths get 404. Sockets are read with a short timeout so the thread notices
//! `stop`.

use super::rpc::{self, parse_call};
use super::shared::Shared;
use super::spec::{self, RpcError};
use super::ws;
use base64::Engine;
use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Largest request head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (aiohttp's default `client_max_size`).
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// Read timeout, so blocked reads notice `stop`.
const POLL: Duration = Duration::from_millis(25);
/// Keep-alive connections idle this long are closed.
const IDLE: Duration = Duration::from_secs(120);

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
}

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpError {
    Malformed,
    HeadTooLarge,
    BodyTooLarge,
    Unsupported(&'static str),
}

impl Head {
    /// The first header called `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// Whether the connection stays open after the answer.
    pub(crate) fn keep_alive(&self) -> bool {
        if self.version == 0 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }

    /// The body length announced by `Content-Length` (0 when absent).
    pub(crate) fn content_length(&self) -> Result<usize, HttpError> {
        if self.header("transfer-encoding").is_some() {
            return Err(HttpError::Unsupported("Transfer-Encoding is not supported"));
        }
        match self.header("content-length") {
            None => Ok(0),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > MAX_BODY => Err(HttpError::BodyTooLarge),
                Ok(n) => Ok(n),
                Err(_) => Err(HttpError::Malformed),
            },
        }
    }

    /// The `Sec-WebSocket-Key` of a valid upgrade request.
    pub(crate) fn ws_key(&self) -> Option<&str> {
        let upgrade =
            self.has_token("upgrade", "websocket") && self.has_token("connection", "upgrade");
        let version = self.header("sec-websocket-version").map(str::trim) == Some("13");
        self.header("sec-websocket-key")
            .filter(|_| upgrade && version && self.method == "GET")
    }
}

/// Parses a request head from the start of `buf`: `Ok(None)` when more bytes are needed,
/// else the head and its length.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let path = req.path.unwrap_or("/");
            let head = Head {
                method: req.method.unwrap_or("").to_string(),
                path: path.split('?').next().unwrap_or("/").to_string(),
                version: req.version.unwrap_or(1),
                headers: req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
            };
            Ok(Some((head, len)))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadTooLarge),
        Err(_) => Err(HttpError::Malformed),
    }
}

/// Whether an `Authorization` header carries Basic credentials `login:password`.
pub(crate) fn basic_auth_ok(header: Option<&str>, login: &str, password: &str) -> bool {
    let Some(encoded) = header.and_then(|h| h.trim().strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{login}:{password}");
    decoded.len() == expected.len()
        && decoded
            .iter()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A complete HTTP response.
pub(crate) fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\nServer: cryptoworker-simulate\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

const JSON: &str = "application/json; charset=utf-8";

/// What to do with one request.
#[derive(Debug)]
enum Route {
    Answer {
        status: u16,
        reason: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
        close: bool,
    },
    Upgrade(String),
}

impl Route {
    fn json(body: String) -> Route {
        Route::Answer {
            status: 200,
            reason: "OK",
            content_type: JSON,
            body: body.into_bytes(),
            close: false,
        }
    }

    fn status(status: u16, reason: &'static str, error: &str) -> Route {
        let body = serde_json::json!({"error": error}).to_string().into_bytes();
        Route::Answer {
            status,
            reason,
            content_type: JSON,
            body,
            close: false,
        }
    }
}

/// Accepts connections until stop, one thread each.
pub(crate) fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    while !shared.is_stopping() {
        match listener.accept() {
            Ok((stream, peer)) => {
                if shared.active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    log::warn!("[SIMULATE] connection limit reached, closing {peer}");
                    continue;
                }
                shared.active.fetch_add(1, Ordering::Relaxed);
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                let s = shared.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("sim-conn".into())
                        .spawn(move || {
                            serve(&s, stream);
                            s.active.fetch_sub(1, Ordering::Relaxed);
                        });
                match spawned {
                    Ok(h) => shared.track(h),
                    Err(e) => {
                        shared.active.fetch_sub(1, Ordering::Relaxed);
                        log::error!("[SIMULATE] cannot spawn a connection thread: {e}");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("[SIMULATE] accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// One connection: HTTP requests until close, or a WebSocket session after an upgrade.
fn serve(shared: &Shared, mut stream: TcpStream) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let (head, body) = match read_request(shared, &mut stream, &mut buf) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                let _ = stream.write_all(&error_response(&e));
                return;
            }
        };
        match route(shared, &head, &body) {
            Route::Answer {
                status,
                reason,
                content_type,
                body,
                close,
            } => {
                let keep = !close && head.keep_alive();
                if stream
                    .write_all(&response(status, reason, content_type, &body, keep))
                    .is_err()
                    || !keep
                {
                    return;
                }
            }
            Route::Upgrade(key) => {
                let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
                let head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                // Subscribe before the 101, so every push after the handshake reaches it.
                let sub = shared.hub.subscribe();
                if stream.write_all(head.as_bytes()).is_ok() {
                    ws::run(shared, stream, std::mem::take(&mut buf), &sub);
                }
                shared.hub.unsubscribe(sub.id);
                return;
            }
        }
    }
}

fn error_response(e: &HttpError) -> Vec<u8> {
    let (status, reason, msg) = match e {
        HttpError::Malformed => (400, "Bad Request", "malformed request"),
        HttpError::HeadTooLarge => (
            431,
            "Request Header Fields Too Large",
            "request head too large",
        ),
        HttpError::BodyTooLarge => (413, "Payload Too Large", "request body too large"),
        HttpError::Unsupported(m) => (501, "Not Implemented", *m),
    };
    let body = serde_json::json!({"error": msg}).to_string();
    response(status, reason, JSON, body.as_bytes(), false)
}

/// Reads one request (head and body); `Ok(None)` on close, idle timeout or stop.
fn read_request(
    shared: &Shared,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<(Head, Vec<u8>)>, HttpError> {
    let since = Instant::now();
    let (head, len) = loop {
        if let Some(done) = parse_head(buf)? {
            break done;
        }
        if !fill(shared, stream, buf, since) {
            return Ok(None);
        }
    };
    buf.drain(..len);
    let want = head.content_length()?;
    while buf.len() < want {
        if !fill(shared, stream, buf, since) {
            return Ok(None);
        }
    }
    let body: Vec<u8> = buf.drain(..want).collect();
    Ok(Some((head, body)))
}

/// Appends what the socket has to `buf`; false on EOF, error, idle timeout or stop.
fn fill(shared: &Shared, stream: &mut TcpStream, buf: &mut Vec<u8>, since: Instant) -> bool {
    let mut tmp = [0u8; 8192];
    loop {
        if shared.is_stopping() || since.elapsed() > IDLE {
            return false;
        }
        match stream.read(&mut tmp) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                return true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
}

fn unauthorized() -> String {
    rpc::failure(&Value::Null, &RpcError::unauthorized())
}

fn route(shared: &Shared, head: &Head, body: &[u8]) -> Route {
    if !matches!(head.path.as_str(), "/" | "/ws" | "/spec") {
        return Route::status(404, "Not Found", "not found");
    }
    let cfg = &shared.cfg;
    if !basic_auth_ok(head.header("authorization"), &cfg.login, &cfg.password) {
        return Route::json(unauthorized());
    }
    let refused = shared.faults.refuse_auth();
    match (head.method.as_str(), head.path.as_str()) {
        ("POST", "/") => Route::json(rpc_answer(shared, body, refused)),
        ("GET", "/spec" | "/ws") if refused => Route::json(unauthorized()),
        ("GET", "/spec") => Route::json(spec::spec(cfg.family, &cfg.coin).to_string()),
        ("GET", "/ws") => match head.ws_key() {
            Some(key) => Route::Upgrade(key.to_string()),
            None => Route::Answer {
                status: 400,
                reason: "Bad Request",
                content_type: "text/plain",
                body: b"Expected a WebSocket upgrade".to_vec(),
                close: true,
            },
        },
        _ => Route::status(405, "Method Not Allowed", "method not allowed"),
    }
}

/// The JSON-RPC answer to a body (after the `rpc_delay_ms` fault, for non-admin calls).
fn rpc_answer(shared: &Shared, body: &[u8], refused: bool) -> String {
    let call = match parse_call(body) {
        Ok(c) => c,
        Err(_) if refused => return unauthorized(),
        Err((id, e)) => return rpc::failure(&id, &e),
    };
    let admin = call.method.starts_with("sim_");
    if refused && !admin {
        return unauthorized();
    }
    let delay = shared.faults.rpc_delay();
    if !admin && !delay.is_zero() && !shared.sleep(delay) {
        return rpc::failure(&call.id, &RpcError::fixed(-32603, "Server shutdown"));
    }
    match super::methods::handle(shared, &call) {
        Ok(result) => rpc::success(&call.id, result),
        Err(e) => rpc::failure(&call.id, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_head_path_headers_and_partial() {
        let raw = b"POST /?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nAuthorization: Basic abc\r\n\r\n{}";
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            (head.method.as_str(), head.path.as_str(), head.version),
            ("POST", "/", 1)
        );
        assert_eq!(head.header("authorization"), Some("Basic abc"));
        assert_eq!(head.content_length(), Ok(2));
        assert_eq!(&raw[len..], b"{}");
        assert!(head.keep_alive());
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost:").unwrap(), None);
    }

    #[test]
    fn bad_heads_are_errors() {
        assert_eq!(
            parse_head(b"\x00\x01 garbage\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        let big = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(
            parse_head(&[b"GET / HTTP/1.1\r\nX: ".as_slice(), &big].concat()),
            Err(HttpError::HeadTooLarge)
        );
        let head = |h: &str| {
            parse_head(format!("POST / HTTP/1.1\r\n{h}\r\n\r\n").as_bytes())
                .unwrap()
                .unwrap()
                .0
        };
        assert_eq!(
            head("Content-Length: x").content_length(),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            head("Content-Length: 99999999").content_length(),
            Err(HttpError::BodyTooLarge)
        );
        assert!(matches!(
            head("Transfer-Encoding: chunked").content_length(),
            Err(HttpError::Unsupported(_))
        ));
        assert!(!head("Connection: close").keep_alive());
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let h = parse_head(b"GET /spec HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap()
            .0;
        assert!(!h.keep_alive());
        let h = parse_head(b"GET /spec HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap()
            .0;
        assert!(h.keep_alive());
    }

    #[test]
    fn basic_auth_checks_login_and_password() {
        let enc = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(basic_auth_ok(
            Some(&enc("electrum:electrumz")),
            "electrum",
            "electrumz"
        ));
        assert!(!basic_auth_ok(
            Some(&enc("electrum:wrong")),
            "electrum",
            "electrumz"
        ));
        assert!(!basic_auth_ok(
            Some(&enc("electrum:electrumzz")),
            "electrum",
            "electrumz"
        ));
        assert!(!basic_auth_ok(Some("Basic !!!"), "electrum", "electrumz"));
        assert!(!basic_auth_ok(Some("Bearer x"), "electrum", "electrumz"));
        assert!(!basic_auth_ok(None, "electrum", "electrumz"));
        assert!(basic_auth_ok(Some(&enc("a:b:c")), "a", "b:c"));
    }

    #[test]
    fn ws_key_needs_upgrade_headers() {
        let ok = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: k==\r\n\r\n";
        assert_eq!(
            parse_head(ok.as_bytes()).unwrap().unwrap().0.ws_key(),
            Some("k==")
        );
        let no = ok.replace("Upgrade: websocket\r\n", "");
        assert_eq!(parse_head(no.as_bytes()).unwrap().unwrap().0.ws_key(), None);
    }

    #[test]
    fn responses_carry_length_and_connection() {
        let r = String::from_utf8(response(200, "OK", "application/json", b"{}", true)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 2\r\n") && r.contains("Connection: keep-alive\r\n"));
        assert!(r.ends_with("\r\n\r\n{}"));
        let c = String::from_utf8(response(404, "Not Found", JSON, b"", false)).unwrap();
        assert!(c.contains("Connection: close\r\n") && c.contains("Content-Length: 0\r\n"));
    }
}
