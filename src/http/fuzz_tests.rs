//! Seeded fuzz-style tests: thousands of truncated, oversized, mutated and random inputs for
//! every parser in `http`, asserting only `Ok`/`Err` (never a panic) plus the bounds each
//! parser promises. Deterministic: the generator is a fixed-seed splitmix64.

use super::*;

/// The crate's seeded generator (no external randomness in tests), with fuzzing helpers.
struct Rng(crate::util::rng::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[self.below(items.len())]
    }
}

const REQUESTS: &[&[u8]] = &[
    b"GET /ws?token=a%2Fb+c HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Authorization: Bearer k\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /health HTTP/1.0\r\n\r\n",
];

const RESPONSES: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"result\":1}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nto the end",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
];

/// Bytes that tend to hit parser edge cases.
const SPICE: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b":",
    b";",
    b" ",
    b"\t",
    b"0",
    b"f",
    b"ffffffffffffffffffff",
    b"%",
    b"%4",
    b"?",
    b"&",
    b"=",
    b"\x00",
    b"\xff",
    b"chunked",
    b",",
    b"HTTP/1.1 ",
    b"999999999999",
];

/// A mutated template: truncations, byte flips, spliced spice and oversized repeats.
fn mutate(rng: &mut Rng, template: &[u8]) -> Vec<u8> {
    let mut out = template.to_vec();
    for _ in 0..rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 => out.truncate(at),
            1 if at < out.len() => out[at] = rng.next() as u8,
            2 => {
                let spice = rng.pick(SPICE).to_vec();
                out.splice(at..at, spice);
            }
            3 => {
                let chunk = out[at..].iter().take(16).copied().collect::<Vec<_>>();
                let times = rng.below(600);
                out.splice(at..at, chunk.repeat(times));
            }
            _ => out.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        }
    }
    out
}

/// A fuzz input: mostly mutated templates, sometimes pure noise.
fn input(rng: &mut Rng, templates: &[&[u8]]) -> Vec<u8> {
    if rng.below(8) == 0 {
        (0..rng.below(512)).map(|_| rng.next() as u8).collect()
    } else {
        let template = rng.pick(templates);
        mutate(rng, template)
    }
}

#[test]
fn fuzz_parse_request_never_panics() {
    let mut rng = Rng(crate::util::rng::Rng::seeded(1));
    for _ in 0..4000 {
        let buf = input(&mut rng, REQUESTS);
        let max = 16 + rng.below(4096);
        if let Ok(Some(head)) = parse_request(&buf, max) {
            assert!(head.head_len <= buf.len().min(max));
            let shorter = &buf[..head.head_len - 1];
            assert!(!matches!(parse_request(shorter, max), Ok(Some(_))));
            let _ = (
                head.is_websocket_upgrade(),
                head.bearer_token(),
                head.content_length(),
            );
            let _ = (head.query_param("token"), head.header("host"));
            if let Ok(answer) = websocket_accept(&head) {
                assert!(answer.starts_with(b"HTTP/1.1 101 "));
            }
        }
    }
}

#[test]
fn fuzz_parse_response_never_panics_and_respects_limits() {
    let mut rng = Rng(crate::util::rng::Rng::seeded(2));
    for _ in 0..4000 {
        let buf = input(&mut rng, RESPONSES);
        let max_body = rng.below(2048);
        let eof = rng.below(2) == 0;
        match parse_response(&buf, max_body, eof) {
            Ok(Some(r)) => {
                assert!(r.consumed <= buf.len());
                assert!(r.body.len() <= max_body);
                let mut longer = buf[..r.consumed].to_vec();
                longer.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
                if let Ok(Some(again)) = parse_response(&longer, max_body, false) {
                    assert_eq!((again.body, again.consumed), (r.body, r.consumed));
                }
            }
            Ok(None) => assert!(!eof, "Ok(None) with eof"),
            Err(_) => {}
        }
    }
}

#[test]
fn fuzz_parse_upgrade_response_never_panics() {
    let mut rng = Rng(crate::util::rng::Rng::seeded(3));
    for _ in 0..4000 {
        let buf = input(&mut rng, RESPONSES);
        if let Ok(Some(UpgradeOutcome::Switched { head_len })) =
            parse_upgrade_response(&buf, "dGhlIHNhbXBsZSBub25jZQ==")
        {
            assert!(head_len <= buf.len());
        }
    }
}

#[test]
fn fuzz_json_decoders_never_panic() {
    let mut rng = Rng(crate::util::rng::Rng::seeded(4));
    let templates: &[&[u8]] = &[
        br#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Unauthorized"},"id":null}"#,
        br#"{"result":[1,{"a":"b"}],"id":18446744073709551615}"#,
        br#"{"version":"4.5.0","exceptions":{"-32003":{"exc_name":"RequestNotFoundError"}}}"#,
    ];
    for _ in 0..3000 {
        let body = input(&mut rng, templates);
        let _ = decode_rpc_body(&body);
        if let Ok(spec) = ErrorSpec::parse(&body) {
            let _ = spec.name(-32003);
        }
    }
}

/// Encodes `data` as random-sized chunks with random extensions and optional trailers.
fn random_chunked(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(300));
        let ext = if rng.below(3) == 0 { ";a=\"b c\"" } else { "" };
        let size = if rng.below(2) == 0 {
            format!("{n:x}")
        } else {
            format!("{n:X}")
        };
        out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(if rng.below(2) == 0 {
        b"0\r\n\r\n"
    } else {
        b"0;e\r\nT: 1\r\n\r\n"
    });
    out
}

#[test]
fn random_chunked_bodies_decode_identically_at_any_split() {
    let mut rng = Rng(crate::util::rng::Rng::seeded(5));
    for _ in 0..300 {
        let data: Vec<u8> = (0..rng.below(2000)).map(|_| rng.next() as u8).collect();
        let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        wire.extend(random_chunked(&mut rng, &data));
        let whole = parse_response(&wire, 4096, false).unwrap().unwrap();
        assert_eq!(whole.body, data);
        assert_eq!(whole.consumed, wire.len());
        for _ in 0..20 {
            let cut = rng.below(wire.len());
            assert_eq!(parse_response(&wire[..cut], 4096, false), Ok(None));
        }
    }
}
