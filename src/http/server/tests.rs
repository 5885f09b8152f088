//! Unit tests for the server side of `http`.

use super::*;

const MAX: usize = 8192;

fn parse(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    parse_request(buf, MAX)
}

fn head(buf: &[u8]) -> RequestHead {
    parse(buf).unwrap().unwrap()
}

const UPGRADE: &[u8] = b"GET /ws?token=a%20b&x HTTP/1.1\r\nHost: w:8082\r\nUpgrade: WebSocket\r\n\
Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn every_prefix_needs_more_then_the_whole_head_parses() {
    for cut in 0..UPGRADE.len() {
        assert_eq!(parse(&UPGRADE[..cut]), Ok(None), "prefix {cut}");
    }
    let h = head(UPGRADE);
    assert_eq!(h.method, "GET");
    assert_eq!(h.path, "/ws");
    assert_eq!(h.query.as_deref(), Some("token=a%20b&x"));
    assert_eq!(h.head_len, UPGRADE.len());
}

#[test]
fn pipelined_requests_are_split_by_head_len() {
    let mut buf = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    buf.extend_from_slice(b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\nGET /met");
    let first = head(&buf);
    assert_eq!(first.path, "/health");
    let rest = &buf[first.head_len..];
    let second = head(rest);
    assert_eq!(second.path, "/ready");
    assert_eq!(parse(&rest[second.head_len..]), Ok(None));
}

#[test]
fn header_names_are_lower_cased_and_lookup_is_case_insensitive() {
    let h = head(b"GET / HTTP/1.1\r\nX-Thing:  value \r\nHOST: h\r\n\r\n");
    assert_eq!(h.headers[0], ("x-thing".to_string(), "value".to_string()));
    assert_eq!(h.header("X-THING"), Some("value"));
    assert_eq!(h.header("host"), Some("h"));
    assert_eq!(h.header("missing"), None);
}

#[test]
fn upgrade_detection() {
    assert!(head(UPGRADE).is_websocket_upgrade());
    let split_headers = b"GET / HTTP/1.1\r\nUpgrade: h2c, websocket\r\nConnection: keep-alive\r\n\
Connection: UPGRADE\r\n\r\n";
    assert!(head(split_headers).is_websocket_upgrade());
    let not_get = b"POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    assert!(!head(not_get).is_websocket_upgrade());
    let no_connection = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n";
    assert!(!head(no_connection).is_websocket_upgrade());
    let substring_only = b"GET / HTTP/1.1\r\nUpgrade: websockets\r\nConnection: upgraded\r\n\r\n";
    assert!(!head(substring_only).is_websocket_upgrade());
}

#[test]
/// RFC 6455 §1.3: key `dGhlIHNhbXBsZSBub25jZQ==` gives `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
fn accept_key_matches_rfc_6455_example() {
    let answer = String::from_utf8(websocket_accept(&head(UPGRADE)).unwrap()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(answer.ends_with("\r\n\r\n"));
}

#[test]
fn accept_refuses_bad_keys_and_versions() {
    let text = std::str::from_utf8(UPGRADE).unwrap();
    let no_key = text.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert!(matches!(
        websocket_accept(&head(no_key.as_bytes())),
        Err(HttpError::Malformed(_))
    ));
    let short_key = text.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
    assert!(websocket_accept(&head(short_key.as_bytes())).is_err());
    let v8 = text.replace("Version: 13", "Version: 8");
    assert_eq!(
        websocket_accept(&head(v8.as_bytes())),
        Err(HttpError::UnsupportedVersion)
    );
    assert_eq!(HttpError::UnsupportedVersion.status(), 426);
    let plain = head(b"GET / HTTP/1.1\r\n\r\n");
    assert!(websocket_accept(&plain).is_err());
}

#[test]
fn query_params_are_percent_decoded() {
    let h = head(b"GET /ws?a=1&token=k%2Bey+x%3D&empty=&flag&bad=%zz%4 HTTP/1.1\r\n\r\n");
    assert_eq!(h.query_param("token").as_deref(), Some("k+ey x="));
    assert_eq!(h.query_param("a").as_deref(), Some("1"));
    assert_eq!(h.query_param("empty").as_deref(), Some(""));
    assert_eq!(h.query_param("flag").as_deref(), Some(""));
    assert_eq!(h.query_param("bad").as_deref(), Some("%zz%4"));
    assert_eq!(h.query_param("missing"), None);
    assert_eq!(percent_decode("%C3%A9%FF"), "é\u{fffd}");
    assert_eq!(head(b"GET / HTTP/1.1\r\n\r\n").query_param("a"), None);
}

#[test]
fn absolute_form_targets_keep_only_path_and_query() {
    let h = head(b"GET http://example.com:8082/ws?x=1 HTTP/1.1\r\n\r\n");
    assert_eq!((h.path.as_str(), h.query.as_deref()), ("/ws", Some("x=1")));
    let bare = head(b"GET HTTP://example.com HTTP/1.1\r\n\r\n");
    assert_eq!(bare.path, "/");
}

#[test]
fn bearer_token_extraction() {
    let with = |v: &str| head(format!("GET / HTTP/1.1\r\nAuthorization: {v}\r\n\r\n").as_bytes());
    assert_eq!(with("Bearer abc").bearer_token(), Some("abc"));
    assert_eq!(with("bearer   abc").bearer_token(), Some("abc"));
    assert_eq!(with("Basic abc").bearer_token(), None);
    assert_eq!(with("Bearer").bearer_token(), None);
    assert_eq!(head(b"GET / HTTP/1.1\r\n\r\n").bearer_token(), None);
}

#[test]
fn oversize_heads_are_too_large() {
    let mut buf = b"GET / HTTP/1.1\r\nX: ".to_vec();
    buf.extend(std::iter::repeat_n(b'a', 100));
    assert_eq!(parse_request(&buf, 64), Err(HttpError::TooLarge));
    assert_eq!(parse_request(&buf, 4096), Ok(None));
    // A complete head that ends exactly at the limit is accepted.
    let exact = b"GET / HTTP/1.1\r\n\r\n";
    assert!(parse_request(exact, exact.len()).unwrap().is_some());
    assert_eq!(
        parse_request(exact, exact.len() - 1),
        Err(HttpError::TooLarge)
    );
}

#[test]
fn too_many_headers_is_too_large() {
    let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
    assert_eq!(parse(&buf), Err(HttpError::TooLarge));
    assert_eq!(HttpError::TooLarge.status(), 431);
}

#[test]
fn garbage_and_bodies_are_malformed() {
    assert!(matches!(
        parse(b"\x00\x01\x02 / HTTP/1.1\r\n\r\n"),
        Err(HttpError::Malformed(_))
    ));
    assert!(matches!(
        parse(b"GET / HTTP/2.0\r\n\r\n"),
        Err(HttpError::Malformed(_))
    ));
    let get_body = b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    assert!(matches!(parse(get_body), Err(HttpError::Malformed(_))));
    let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(matches!(parse(chunked), Err(HttpError::Malformed(_))));
    let conflicting = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    assert!(matches!(parse(conflicting), Err(HttpError::Malformed(_))));
    let zero = head(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(zero.content_length(), 0);
    let post = head(b"POST / HTTP/1.1\r\nContent-Length: 7\r\n\r\n{\"a\":1}");
    assert_eq!(post.content_length(), 7);
}

#[test]
fn responses_carry_length_close_and_extra_headers() {
    let out = response(429, "text/plain", b"slow down", &[("Retry-After", "1")]);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\
         Connection: close\r\nRetry-After: 1\r\n\r\nslow down"
    );
    let injected = response(200, "a\r\nX-Evil: 1", b"", &[("N\r\n", "v\nX: y")]);
    let text = String::from_utf8(injected).unwrap();
    assert!(!text.contains("\r\nX-Evil"));
    assert_eq!(text.matches("\r\n").count(), 6);
    let no_content = String::from_utf8(response(204, "text/plain", b"x", &[])).unwrap();
    assert_eq!(
        no_content,
        "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn a_response_is_itself_parseable() {
    let out = response(200, "application/json", b"{}", &[]);
    let parsed = crate::http::parse_response(&out, 1024, false)
        .unwrap()
        .unwrap();
    assert_eq!((parsed.status, parsed.body.as_slice()), (200, &b"{}"[..]));
    assert!(!parsed.keep_alive);
}
