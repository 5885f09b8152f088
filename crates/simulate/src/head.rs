//! Sans-io HTTP pieces of the simulated daemon: request heads parsed with `httparse` (size
//! limits, `Status::Partial`), the Basic auth check, and response encoding.
//!
//! Invariants: a head is refused past [`MAX_HEAD`] bytes or 64 headers, a body past
//! [`MAX_BODY`]; chunked bodies are refused (501), never buffered.

use base64::Engine;

/// Largest request head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (aiohttp's default `client_max_size`).
pub(crate) const MAX_BODY: usize = 1024 * 1024;

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

/// The content type of every JSON answer.
pub(crate) const JSON: &str = "application/json; charset=utf-8";

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
