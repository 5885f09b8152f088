//! Plain HTTP/1.1 over a blocking `TcpStream`, with a deadline on every exchange: GET with
//! optional headers (the worker's `/health`, `/ready`, `/metrics`, `/`), JSON POST with Basic auth (the simulator's
//! JSON-RPC), and raw bytes (garbage requests).
//!
//! Invariant: a response is read until its `Content-Length` is complete or the peer closes,
//! never longer than the deadline, and never beyond [`MAX_RESPONSE`] bytes.

use base64::Engine;
use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response the helpers read.
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// Default time allowed for one exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// `GET path` on `addr` with `Connection: close`.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    http_get_with(addr, path, &[])
}

/// `GET path` with extra header lines (each `Name: value`).
pub fn http_get_with(addr: SocketAddr, path: &str, headers: &[&str]) -> io::Result<HttpResponse> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    exchange(addr, req.as_bytes(), Instant::now() + HTTP_TIMEOUT)
}

/// `POST path` with a JSON body and, when given, HTTP Basic credentials.
pub fn http_post_json(
    addr: SocketAddr,
    path: &str,
    basic: Option<(&str, &str)>,
    body: &Value,
) -> io::Result<HttpResponse> {
    let body = body.to_string();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some((user, pass)) = basic {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    exchange(addr, req.as_bytes(), Instant::now() + HTTP_TIMEOUT)
}

/// Sends `bytes` as they are and returns whatever comes back until the peer closes, a complete
/// response has arrived, or `deadline` passes (then what arrived so far).
pub fn http_raw(addr: SocketAddr, bytes: &[u8], deadline: Instant) -> io::Result<Vec<u8>> {
    let mut stream = connect(addr, deadline)?;
    // A server may answer and close before taking all of a hostile request: keep its answer.
    let written = stream.write_all(bytes);
    let got = read_response_bytes(&mut stream, deadline)?;
    match written {
        Err(e) if got.is_empty() => Err(e),
        _ => Ok(got),
    }
}

/// One request/response exchange, parsed.
fn exchange(addr: SocketAddr, request: &[u8], deadline: Instant) -> io::Result<HttpResponse> {
    let raw = http_raw(addr, request, deadline)?;
    parse_response(&raw).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "no complete HTTP response from {addr}: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(300)])
            ),
        )
    })
}

fn connect(addr: SocketAddr, deadline: Instant) -> io::Result<TcpStream> {
    let left = super::remaining(deadline).max(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(&addr, left)?;
    stream.set_write_timeout(Some(left))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads until a complete response (by `Content-Length`), EOF, an error after some bytes
/// (e.g. a reset once the answer was sent), or the deadline.
fn read_response_bytes(stream: &mut TcpStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if complete_len(&buf).is_some_and(|n| buf.len() >= n) || buf.len() > MAX_RESPONSE {
            return Ok(buf);
        }
        let left = super::remaining(deadline);
        if left.is_zero() {
            return Ok(buf);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Ok(buf),
            Err(_) if !buf.is_empty() => return Ok(buf),
            Err(e) => return Err(e),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The total length of the response in `buf` when its head is complete and it has a
/// `Content-Length`.
fn complete_len(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = resp.parse(buf).ok()? else {
        return None;
    };
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))?;
    let len: usize = std::str::from_utf8(len.value).ok()?.trim().parse().ok()?;
    Some(head + len)
}

/// Parses a complete response (head plus `Content-Length` body, or everything after the head
/// when there is no length). `None` when the head is incomplete or not HTTP.
pub fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = resp.parse(raw).ok()? else {
        return None;
    };
    let status = resp.code?;
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).into_owned();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    let end = match complete_len(raw) {
        Some(n) if n <= raw.len() => n,
        Some(_) => return None,
        None => raw.len(),
    };
    Some(HttpResponse {
        status,
        headers,
        body: raw[head..end].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_with_a_length() {
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabcEXTRA";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"abc");
        assert_eq!(r.header("x-a"), Some("b"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_none());
        assert!(parse_response(b"garbage").is_none());
    }
}
