//! Server side: requests from the worker's clients, and the responses the worker writes.
//!
//! Invariants: [`parse_request`] never looks past `max_head` bytes and never returns a head that
//! a later call would parse differently; requests that carry a body the worker cannot frame
//! (`Transfer-Encoding`, or a `Content-Length` on GET/HEAD) are refused as
//! [`HttpError::Malformed`], so what follows `head_len` is always the next request or WebSocket
//! data, never a smuggled body. More than [`MAX_HEADERS`] header lines is [`HttpError::TooLarge`]
//! (431), as is a head longer than `max_head`.

use super::body::{collect_headers, content_length, header_values};
use super::{HttpError, MAX_HEADERS, header_safe, tokens};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use httparse::Status;

/// A parsed request line and header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The path of the target, without the query (still percent-encoded).
    pub path: String,
    /// The raw query string after `?`, if any.
    pub query: Option<String>,
    /// Header fields in order; names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Bytes consumed, blank line included: request data or WebSocket frames start here.
    pub head_len: usize,
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)` = need more bytes. `Err(TooLarge)` when no complete head fits in `max_head` bytes
/// or it has more than [`MAX_HEADERS`] headers. `Err(Malformed)` for invalid syntax, a bad or
/// conflicting `Content-Length`, any `Transfer-Encoding`, or a body on GET/HEAD.
pub fn parse_request(buf: &[u8], max_head: usize) -> Result<Option<RequestHead>, HttpError> {
    let window = &buf[..buf.len().min(max_head)];
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut storage);
    let head_len = match request.parse(window)? {
        Status::Partial if buf.len() >= max_head => return Err(HttpError::TooLarge),
        Status::Partial => return Ok(None),
        Status::Complete(len) => len,
    };
    let method = request.method.unwrap_or_default().to_string();
    let target = request.path.unwrap_or_default();
    let (path, query) = split_target(target);
    let head = RequestHead {
        method,
        path,
        query,
        headers: collect_headers(request.headers),
        head_len,
    };
    check_body_framing(&head)?;
    Ok(Some(head))
}

/// Splits a request target into path and query; absolute-form targets keep only the path.
fn split_target(target: &str) -> (String, Option<String>) {
    let without_scheme = ["http://", "https://"]
        .iter()
        .find_map(|scheme| strip_prefix_ignore_case(target, scheme));
    let origin = match without_scheme {
        Some(rest) => rest.find(['/', '?']).map_or("/", |i| &rest[i..]),
        None => target,
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (origin, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    (path.to_string(), query)
}

/// `s` without `prefix`, compared ASCII case-insensitively.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Refuses request bodies the worker cannot delimit safely.
fn check_body_framing(head: &RequestHead) -> Result<(), HttpError> {
    if head.header("transfer-encoding").is_some() {
        return Err(HttpError::malformed(
            "Transfer-Encoding is not accepted on requests",
        ));
    }
    let length = content_length(&head.headers)?.unwrap_or(0);
    if length > 0 && (head.method == "GET" || head.method == "HEAD") {
        return Err(HttpError::malformed(format!(
            "{} request with a body",
            head.method
        )));
    }
    Ok(())
}

impl RequestHead {
    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body length announced by `Content-Length` (0 when absent; validated by
    /// [`parse_request`]). The body is `buf[head_len..head_len + content_length()]`.
    pub fn content_length(&self) -> usize {
        content_length(&self.headers)
            .ok()
            .flatten()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
    }

    /// Whether any `name` header (lower-case) lists `token`, case-insensitively.
    fn has_token(&self, name: &str, token: &str) -> bool {
        header_values(&self.headers, name)
            .flat_map(tokens)
            .any(|t| t.eq_ignore_ascii_case(token))
    }

    /// A WebSocket upgrade request: GET, `Upgrade` lists `websocket` and `Connection` lists
    /// `upgrade` (token lists, case-insensitive, over every occurrence of each header).
    pub fn is_websocket_upgrade(&self) -> bool {
        let upgrade_ws = header_values(&self.headers, "upgrade")
            .flat_map(tokens)
            .any(|t| {
                let name = t.split('/').next().unwrap_or(t);
                name.trim().eq_ignore_ascii_case("websocket")
            });
        self.method == "GET" && upgrade_ws && self.has_token("connection", "upgrade")
    }

    /// The first query parameter called `name`, percent-decoded (`+` is a space, as in
    /// `application/x-www-form-urlencoded`; invalid escapes are kept literally).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| percent_decode(key) == name)
            .map(|(_, value)| percent_decode(value))
    }

    /// The token of `Authorization: Bearer <token>` (scheme case-insensitive); `None` when
    /// absent, another scheme, or empty.
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once([' ', '\t'])?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }
}

/// Decodes `%XX` escapes and `+`; invalid escapes stay as they are, invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i] {
            b'%' => bytes.get(i + 1..i + 3).and_then(hex_pair),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte written by two hex digits.
fn hex_pair(pair: &[u8]) -> Option<u8> {
    let hi = (pair[0] as char).to_digit(16)?;
    let lo = (pair[1] as char).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade, with `Sec-WebSocket-Accept`.
///
/// `Malformed` if `head` is not an upgrade or its `Sec-WebSocket-Key` is missing or not the
/// base64 of 16 bytes; `UnsupportedVersion` if `Sec-WebSocket-Version` is not 13 (answer 426
/// with `Sec-WebSocket-Version: 13`).
pub fn websocket_accept(head: &RequestHead) -> Result<Vec<u8>, HttpError> {
    if !head.is_websocket_upgrade() {
        return Err(HttpError::malformed("not a WebSocket upgrade request"));
    }
    if head.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(HttpError::UnsupportedVersion);
    }
    let key = head
        .header("sec-websocket-key")
        .ok_or_else(|| HttpError::malformed("missing Sec-WebSocket-Key"))?;
    let decoded_len = STANDARD.decode(key).map(|k| k.len());
    if decoded_len != Ok(16) {
        return Err(HttpError::malformed(
            "Sec-WebSocket-Key is not 16 bytes of base64",
        ));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes())
}

/// A complete response: status line, `Content-Type`, `Content-Length`, `Connection: close`,
/// the `extra` headers, then `body`. Statuses that forbid a body (1xx, 204, 304) get neither
/// body nor `Content-Length`. CR, LF and NUL are stripped from header text.
pub fn response(status: u16, content_type: &str, body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let bodyless = status < 200 || status == 204 || status == 304;
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    if !bodyless {
        head.push_str(&format!(
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            header_safe(content_type),
            body.len()
        ));
    }
    head.push_str("Connection: close\r\n");
    for (name, value) in extra {
        head.push_str(&format!(
            "{}: {}\r\n",
            header_safe(name),
            header_safe(value)
        ));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !bodyless {
        out.extend_from_slice(body);
    }
    out
}

/// The reason phrase for the statuses the worker uses (others get a generic one).
fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests;
