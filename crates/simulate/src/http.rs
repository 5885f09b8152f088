//! The HTTP side: the accept loop, one thread per connection with HTTP/1.1 keep-alive, and the
//! routing of `POST /`, `GET /spec` and `GET /ws` behind Basic auth (parsing is in `head`).
//!
//! Invariants: heads and bodies are bounded (see `head`); at most
//! [`MAX_CONNECTIONS`] connections are served at once (extra ones are closed at accept); every
//! JSON answer is HTTP 200 `application/json`, bad credentials included (-32600, and no upgrade
//! on `/ws`); unknown paths get 404. Sockets are read with a short timeout so the thread notices
//! `stop`.

use super::head::{Head, HttpError, JSON, basic_auth_ok, parse_head, response};
use super::rpc::{self, parse_call};
use super::shared::Shared;
use super::spec::{self, RpcError};
use super::ws;
use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// Read timeout, so blocked reads notice `stop`.
const POLL: Duration = Duration::from_millis(25);
/// Keep-alive connections idle this long are closed.
const IDLE: Duration = Duration::from_secs(120);

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
    let expects = head
        .header("expect")
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("100-continue"));
    if expects && buf.len() < want && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
        return Ok(None);
    }
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
