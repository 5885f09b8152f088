//! Client side: the requests the worker sends to coin daemons, and parsing of their answers.
//!
//! Invariants: request builders strip CR/LF/NUL from every caller-supplied string, so a config
//! value can never inject a header; response parsers read at most [`MAX_RESPONSE_HEAD`] bytes of
//! head and `max_body` (or [`MAX_REFUSAL_BODY`]) bytes of body, and report how many bytes they
//! used so pipelined responses and WebSocket data after a `101` stay with the caller.

use super::body::{ResponseHead, parse_response_head, read_body, response_framing};
use super::jsonrpc::{RpcError, RpcOutcome, decode_rpc_body};
use super::{HttpError, header_safe};

/// Re-exported so that everything a daemon connection needs lives in this module.
pub use super::basic_auth::{basic_auth, websocket_key};

/// Longest response head accepted from a daemon.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Longest body read from a refused WebSocket upgrade (Bitcart's "200 + JSON-RPC error").
pub const MAX_REFUSAL_BODY: usize = 64 * 1024;
/// Most interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 8;

/// The `Host` header value; IPv6 literals get brackets.
fn host_header(host: &str, port: u16) -> String {
    let host = header_safe(host);
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A request target that starts with `/` and contains no space or control byte.
fn safe_path(path: &str) -> String {
    let cleaned: String = path
        .chars()
        .filter(|c| !c.is_control() && *c != ' ')
        .collect();
    if cleaned.starts_with('/') {
        cleaned
    } else {
        format!("/{cleaned}")
    }
}

/// Starts a request: request line, `Host` and (when non-empty) `Authorization`.
fn request_head(method: &str, path: &str, host: &str, port: u16, authorization: &str) -> String {
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\n",
        safe_path(path),
        host_header(host, port)
    );
    let authorization = header_safe(authorization);
    if !authorization.is_empty() {
        head.push_str(&format!("Authorization: {authorization}\r\n"));
    }
    head
}

/// The WebSocket upgrade request for a daemon's event stream (`path` is normally `/ws`).
pub fn websocket_request(
    host: &str,
    port: u16,
    path: &str,
    authorization: &str,
    key: &str,
) -> Vec<u8> {
    let mut head = request_head("GET", path, host, port, authorization);
    head.push_str(&format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        header_safe(key)
    ));
    head.into_bytes()
}

/// `POST / HTTP/1.1` carrying a JSON-RPC `body`, keep-alive.
pub fn rpc_request(host: &str, port: u16, authorization: &str, body: &[u8]) -> Vec<u8> {
    let mut out = rpc_request_prefix(host, port, authorization);
    finish_rpc_request(&mut out, body);
    out
}

/// The fixed start of every JSON-RPC request to one daemon (built once per pool), up to and
/// including `Content-Length: `; [`finish_rpc_request`] completes a copy of it.
pub fn rpc_request_prefix(host: &str, port: u16, authorization: &str) -> Vec<u8> {
    let mut head = request_head("POST", "/", host, port, authorization);
    head.push_str("Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: ");
    head.into_bytes()
}

/// Appends the length, the rest of the head and `body` to a [`rpc_request_prefix`].
pub fn finish_rpc_request(out: &mut Vec<u8>, body: &[u8]) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}\r\nConnection: keep-alive\r\n\r\n", body.len());
    out.extend_from_slice(body);
}

/// `GET <path> HTTP/1.1` (for `/spec`), keep-alive.
pub fn get_request(host: &str, port: u16, path: &str, authorization: &str) -> Vec<u8> {
    let mut head = request_head("GET", path, host, port, authorization);
    head.push_str("Accept: application/json\r\nConnection: keep-alive\r\n\r\n");
    head.into_bytes()
}

/// How a daemon answered our WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeOutcome {
    /// 101 with the right accept; `head_len` bytes belong to HTTP, the rest is WebSocket data.
    Switched {
        /// Bytes of the 101 head; hand `buf[head_len..]` to the WebSocket codec.
        head_len: usize,
    },
    /// Not upgraded: the status, and for Bitcart's "200 + JSON-RPC error body" the parsed error.
    Refused {
        /// The HTTP status (Bitcart answers 200 for bad credentials).
        status: u16,
        /// The JSON-RPC error in the body, if the body is one.
        error: Option<RpcError>,
    },
}

/// Parses the answer to [`websocket_request`] sent with `key`.
///
/// `Ok(None)` = need more bytes: for a refusal, until the whole body has arrived (up to
/// [`MAX_REFUSAL_BODY`]; a longer one is reported as `Refused` without `error`; a refusal with
/// neither length nor chunking is complete once the head is, and only the body bytes already in
/// `buf` are examined for an error). `Err(BadAccept)` for a 101 with a
/// wrong or missing `Sec-WebSocket-Accept`; `Err(Malformed)` for a 101 without the `Upgrade` /
/// `Connection` headers; `Err(BadStatus)` for other 1xx statuses.
pub fn parse_upgrade_response(buf: &[u8], key: &str) -> Result<Option<UpgradeOutcome>, HttpError> {
    let Some(head) = parse_response_head(buf, MAX_RESPONSE_HEAD)? else {
        return Ok(None);
    };
    match head.status {
        101 => {
            check_switch(&head, key).map(|()| Some(UpgradeOutcome::Switched { head_len: head.len }))
        }
        100..=199 => Err(HttpError::BadStatus(head.status)),
        _ => refusal(&head, &buf[head.len..]),
    }
}

/// Checks the headers of a 101 answer against RFC 6455 §4.1.
fn check_switch(head: &ResponseHead, key: &str) -> Result<(), HttpError> {
    if !head.has_token("upgrade", "websocket") {
        return Err(HttpError::malformed("101 without Upgrade: websocket"));
    }
    if !head.has_token("connection", "upgrade") {
        return Err(HttpError::malformed("101 without Connection: upgrade"));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    match head.values("sec-websocket-accept").next() {
        Some(accept) if accept == expected => Ok(()),
        _ => Err(HttpError::BadAccept),
    }
}

/// A non-101 answer: waits for its body (bounded) and extracts a JSON-RPC error from it.
fn refusal(head: &ResponseHead, rest: &[u8]) -> Result<Option<UpgradeOutcome>, HttpError> {
    let status = head.status;
    let refused = |error| Ok(Some(UpgradeOutcome::Refused { status, error }));
    let body = match response_framing(head, MAX_REFUSAL_BODY) {
        Err(HttpError::TooLarge) => return refused(None),
        Err(e) => return Err(e),
        Ok(framing) => match read_body(rest, framing, MAX_REFUSAL_BODY, true) {
            Ok(Some((body, _))) => body,
            Ok(None) => return Ok(None),
            Err(HttpError::TooLarge) => return refused(None),
            Err(e) => return Err(e),
        },
    };
    let error = match decode_rpc_body(&body) {
        Ok((_, RpcOutcome::Error(e))) => Some(e),
        _ => None,
    };
    refused(error)
}

/// One complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The final status (interim 1xx answers are skipped).
    pub status: u16,
    /// The decoded body (de-chunked).
    pub body: Vec<u8>,
    /// Bytes of `buf` this response used; the next response starts there.
    pub consumed: usize,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
}

/// Parses one HTTP/1.x response from the start of `buf`.
///
/// Bodies are framed by `Transfer-Encoding: chunked` (extensions and trailers accepted), by
/// `Content-Length`, or else by end of stream: the caller passes `eof = true` once the peer has
/// closed. Body limit `max_body`; larger -> `Err(TooLarge)`. `Ok(None)` = need more bytes (never
/// returned when `eof` is true: a truncated response is then `Malformed`). Interim 100/102/103
/// answers are skipped; a 101 is `Err(BadStatus(101))`. `keep_alive` follows HTTP/1.1 (unless
/// `Connection: close`) and HTTP/1.0 (only with `Connection: keep-alive`), and is false for a
/// body read to end of stream or framed by both `Transfer-Encoding` and `Content-Length`.
/// Answers to `HEAD` are not supported (the worker never sends one).
pub fn parse_response(
    buf: &[u8],
    max_body: usize,
    eof: bool,
) -> Result<Option<Response>, HttpError> {
    let incomplete = || match eof {
        true => Err(HttpError::malformed("connection closed mid-response")),
        false => Ok(None),
    };
    let mut offset = 0;
    for _ in 0..=MAX_INTERIM {
        let Some(head) = parse_response_head(&buf[offset..], MAX_RESPONSE_HEAD)? else {
            return incomplete();
        };
        match head.status {
            101 => return Err(HttpError::BadStatus(101)),
            100..=199 => {
                offset += head.len;
                continue;
            }
            _ => {}
        }
        let framing = response_framing(&head, max_body)?;
        let start = offset + head.len;
        let Some((body, used)) = read_body(&buf[start..], framing, max_body, eof)? else {
            return incomplete();
        };
        return Ok(Some(Response {
            status: head.status,
            body,
            consumed: start + used,
            keep_alive: keep_alive(&head, framing),
        }));
    }
    Err(HttpError::malformed("too many interim responses"))
}

/// Whether the connection survives this response (RFC 9112 §9.3).
fn keep_alive(head: &ResponseHead, framing: super::body::Framing) -> bool {
    use super::body::Framing;
    let ambiguous = head.values("transfer-encoding").next().is_some()
        && head.values("content-length").next().is_some();
    if framing == Framing::ToEof || ambiguous || head.has_token("connection", "close") {
        return false;
    }
    head.minor >= 1 || head.has_token("connection", "keep-alive")
}

#[cfg(test)]
mod tests;
