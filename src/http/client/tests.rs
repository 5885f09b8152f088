//! Unit tests for the client side of `http`.

use super::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

fn bitcart_refusal() -> Vec<u8> {
    let body =
        br#"{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Unauthorized"}, "id": null}"#;
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nServer: Python/3.11 aiohttp/3.9.5\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[test]
fn upgrade_request_has_every_required_header() {
    let auth = crate::http::basic_auth("electrum", "electrumz");
    let req = websocket_request("localhost", 5000, "/ws", &auth, KEY);
    let head = crate::http::parse_request(&req, 4096).unwrap().unwrap();
    assert_eq!(head.head_len, req.len());
    assert_eq!(head.path, "/ws");
    assert!(head.is_websocket_upgrade());
    assert_eq!(head.header("host"), Some("localhost:5000"));
    assert_eq!(head.header("authorization"), Some(auth.as_str()));
    // The request is accepted by our own server side, with the RFC 6455 accept value.
    let answer = crate::http::websocket_accept(&head).unwrap();
    assert!(matches!(
        parse_upgrade_response(&answer, KEY),
        Ok(Some(UpgradeOutcome::Switched { .. }))
    ));
}

#[test]
fn request_builders_resist_header_injection_and_bracket_ipv6() {
    let req = get_request("::1", 5000, "spec\r\nX-Evil: 1", "Basic a\r\nX-Evil: 2");
    let head = crate::http::parse_request(&req, 4096).unwrap().unwrap();
    assert_eq!(head.header("x-evil"), None);
    assert_eq!(head.header("host"), Some("[::1]:5000"));
    assert!(head.path.starts_with("/spec"));
    assert_eq!(head.header("connection"), Some("keep-alive"));
    let no_auth = get_request("h", 1, "/spec", "");
    assert!(
        !String::from_utf8(no_auth)
            .unwrap()
            .contains("Authorization")
    );
}

#[test]
fn rpc_request_frames_its_body() {
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"getinfo","params":{}}"#;
    let req = rpc_request("btc", 5000, "Basic x", body);
    let head = crate::http::parse_request(&req, 4096).unwrap().unwrap();
    assert_eq!(head.method, "POST");
    assert_eq!(head.path, "/");
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert_eq!(head.header("connection"), Some("keep-alive"));
    assert_eq!(head.content_length(), body.len());
    assert_eq!(&req[head.head_len..], body);
}

#[test]
fn switched_at_every_split_point_and_leaves_websocket_bytes() {
    let mut buf = SWITCH.to_vec();
    buf.extend_from_slice(b"\x81\x02hi");
    for cut in 0..SWITCH.len() {
        assert_eq!(
            parse_upgrade_response(&buf[..cut], KEY),
            Ok(None),
            "prefix {cut}"
        );
    }
    let outcome = parse_upgrade_response(&buf, KEY).unwrap().unwrap();
    assert_eq!(
        outcome,
        UpgradeOutcome::Switched {
            head_len: SWITCH.len()
        }
    );
}

#[test]
fn wrong_or_missing_accept_is_bad_accept() {
    let wrong = String::from_utf8_lossy(SWITCH).replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "AAAA");
    assert_eq!(
        parse_upgrade_response(wrong.as_bytes(), KEY),
        Err(HttpError::BadAccept)
    );
    assert_eq!(
        parse_upgrade_response(SWITCH, "b3RoZXIga2V5IDEyMzQ1Ng=="),
        Err(HttpError::BadAccept)
    );
    let no_upgrade = String::from_utf8_lossy(SWITCH).replace("Upgrade: websocket\r\n", "");
    assert!(matches!(
        parse_upgrade_response(no_upgrade.as_bytes(), KEY),
        Err(HttpError::Malformed(_))
    ));
}

#[test]
fn bitcart_200_with_error_is_a_refusal_with_the_rpc_error() {
    let wire = bitcart_refusal();
    for cut in 0..wire.len() {
        assert_eq!(
            parse_upgrade_response(&wire[..cut], KEY),
            Ok(None),
            "prefix {cut}"
        );
    }
    let expected = UpgradeOutcome::Refused {
        status: 200,
        error: Some(RpcError {
            code: -32600,
            message: "Unauthorized".to_string(),
        }),
    };
    assert_eq!(parse_upgrade_response(&wire, KEY), Ok(Some(expected)));
}

#[test]
fn other_refusals() {
    let no_length = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n";
    let expected = UpgradeOutcome::Refused {
        status: 503,
        error: None,
    };
    assert_eq!(parse_upgrade_response(no_length, KEY), Ok(Some(expected)));
    let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n{";
    let expected = UpgradeOutcome::Refused {
        status: 200,
        error: None,
    };
    assert_eq!(parse_upgrade_response(huge, KEY), Ok(Some(expected)));
    let html = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\n<h1/>";
    let expected = UpgradeOutcome::Refused {
        status: 404,
        error: None,
    };
    assert_eq!(parse_upgrade_response(html, KEY), Ok(Some(expected)));
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    assert_eq!(
        parse_upgrade_response(interim, KEY),
        Err(HttpError::BadStatus(100))
    );
}

fn response_ok(buf: &[u8]) -> Response {
    parse_response(buf, 1024, false).unwrap().unwrap()
}

#[test]
fn content_length_response_at_every_split_point() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"result\":1}";
    let full = &wire[..wire.len() - 1]; // the body is 11 bytes: `{"result":1`
    for cut in 0..full.len() {
        assert_eq!(
            parse_response(&full[..cut], 1024, false),
            Ok(None),
            "prefix {cut}"
        );
        assert!(
            parse_response(&full[..cut], 1024, true).is_err(),
            "eof at {cut}"
        );
    }
    let r = response_ok(wire);
    assert_eq!(
        (r.status, r.body.as_slice(), r.consumed),
        (200, &b"{\"result\":1"[..], full.len())
    );
    assert!(r.keep_alive);
}

#[test]
fn chunked_response_split_everywhere() {
    let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n\
5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\n";
    for cut in 0..wire.len() {
        assert_eq!(
            parse_response(&wire[..cut], 1024, false),
            Ok(None),
            "prefix {cut}"
        );
    }
    let mut pipelined = wire.to_vec();
    pipelined.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
    let r = response_ok(&pipelined);
    assert_eq!(r.body, b"hello, world!!!");
    assert_eq!(r.consumed, wire.len());
    let next = response_ok(&pipelined[r.consumed..]);
    assert_eq!((next.status, next.body.len()), (204, 0));
}

#[test]
fn bodies_over_the_limit_are_too_large() {
    let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n";
    assert_eq!(parse_response(cl, 1024, false), Err(HttpError::TooLarge));
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n";
    assert_eq!(
        parse_response(chunked, 1023, false),
        Err(HttpError::TooLarge)
    );
    let mut to_eof = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    to_eof.extend(std::iter::repeat_n(b'x', 1025));
    assert_eq!(
        parse_response(&to_eof, 1024, false),
        Err(HttpError::TooLarge)
    );
    let mut head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', MAX_RESPONSE_HEAD));
    assert_eq!(parse_response(&head, 1024, false), Err(HttpError::TooLarge));
}

#[test]
fn keep_alive_rules() {
    let ka = |wire: &[u8]| {
        parse_response(wire, 1024, true)
            .unwrap()
            .unwrap()
            .keep_alive
    };
    assert!(ka(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(!ka(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!ka(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(ka(
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!ka(b"HTTP/1.1 200 OK\r\n\r\nread to eof"));
    assert!(!ka(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"
    ));
}

#[test]
fn read_to_eof_needs_eof() {
    let wire = b"HTTP/1.0 200 OK\r\n\r\n{\"result\":2}";
    assert_eq!(parse_response(wire, 1024, false), Ok(None));
    let r = parse_response(wire, 1024, true).unwrap().unwrap();
    assert_eq!(
        (r.body.as_slice(), r.consumed),
        (&b"{\"result\":2}"[..], wire.len())
    );
}

#[test]
fn interim_responses_are_skipped_and_101_refused() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    let r = response_ok(wire);
    assert_eq!((r.status, r.consumed), (200, wire.len()));
    assert_eq!(
        parse_response(SWITCH, 1024, false),
        Err(HttpError::BadStatus(101))
    );
    let many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(20);
    assert!(matches!(
        parse_response(&many, 1024, false),
        Err(HttpError::Malformed(_))
    ));
}

#[test]
fn malformed_responses() {
    for wire in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
    ] {
        assert!(
            matches!(
                parse_response(wire, 1024, false),
                Err(HttpError::Malformed(_))
            ),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}
