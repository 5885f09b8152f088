//! The connection state machine over an in-memory socket: `Handshake → Open → Closing`, what
//! each read reports, and the output it leaves in the socket.

use super::*;
use crate::client::session::SessionLimits;
use crate::event::{Event, Published};
use crate::http::server::websocket_accept;
use std::collections::VecDeque;
use std::sync::Arc;

/// An in-memory socket: reads what the test queued (then `WouldBlock`, or EOF once `eof`),
/// writes into `written` while it has `room`.
#[derive(Debug, Default)]
struct Fake {
    input: VecDeque<u8>,
    eof: bool,
    written: Vec<u8>,
    /// Bytes the socket still takes; `None` = unlimited.
    room: Option<usize>,
    shut: bool,
}

impl Read for Fake {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.input.len());
        for (slot, b) in buf.iter_mut().zip(self.input.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

impl Write for Fake {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room.map_or(buf.len(), |r| r.min(buf.len()));
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.written.extend_from_slice(&buf[..n]);
        if let Some(r) = &mut self.room {
            *r -= n;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for Fake {
    fn shutdown_write(&mut self) {
        self.shut = true;
    }
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const TIMEOUT: Duration = Duration::from_secs(10);

use crate::server::ws::client_frame;

fn conn(now: Instant) -> ClientConn<Fake> {
    ClientConn::new(Fake::default(), [127, 0, 0, 1].into(), now, TIMEOUT)
}

fn feed(c: &mut ClientConn<Fake>, bytes: &[u8]) {
    c.stream.input.extend(bytes);
}

fn session(now: Instant) -> Session {
    let limits = SessionLimits {
        rate_limit: 10.0,
        rate_burst: 10.0,
        ping_interval: Duration::from_secs(30),
        auth_timeout: Duration::from_secs(5),
    };
    Session::new(limits, true, Duration::ZERO, now)
}

/// A connection upgraded at `now` (the 101 answer still queued).
fn open(now: Instant, max_message: usize) -> ClientConn<Fake> {
    let mut c = conn(now);
    feed(&mut c, UPGRADE.as_bytes());
    let ReadResult::Request(head) = c.read_head(now) else {
        panic!("no request head");
    };
    let accept = websocket_accept(&head).unwrap();
    c.upgrade(&head, accept, max_message, session(now));
    c
}

fn read(c: &mut ClientConn<Fake>, now: Instant, max: usize) -> (ReadResult, Vec<Incoming>, bool) {
    let (mut out, mut more) = (Vec::new(), false);
    let r = c.read_messages(now, max, &mut out, &mut more);
    (r, out, more)
}

fn written(c: &ClientConn<Fake>) -> String {
    String::from_utf8_lossy(&c.stream.written).into_owned()
}

#[test]
fn handshake_open_closing() {
    let t0 = Instant::now();
    let mut c = conn(t0);
    assert!(!c.is_open() && c.session().is_none());
    assert_eq!(c.next_wake(), t0 + TIMEOUT, "the handshake deadline");
    // The head arrives in two pieces, the first message right behind it.
    let (a, b) = UPGRADE.as_bytes().split_at(20);
    feed(&mut c, a);
    assert!(matches!(c.read_head(t0), ReadResult::Nothing));
    feed(&mut c, b);
    feed(&mut c, &client_frame(0x1, br#"{"type":"ping"}"#));
    let ReadResult::Request(head) = c.read_head(t0) else {
        panic!("no request head");
    };
    assert!(head.is_websocket_upgrade());
    let accept = websocket_accept(&head).unwrap();
    c.upgrade(&head, accept, 1024, session(t0));
    assert!(c.is_open() && c.takes_live());
    assert_eq!(
        c.next_wake(),
        t0 + Duration::from_secs(30),
        "the session's idle ping"
    );
    let later = t0 + Duration::from_secs(3);
    let (r, got, more) = read(&mut c, later, 8);
    assert!(matches!(r, ReadResult::Nothing) && !more);
    assert_eq!(got, [Incoming::Text(r#"{"type":"ping"}"#.into())]);
    assert_eq!(
        c.next_wake(),
        later + Duration::from_secs(30),
        "heard: idle from now"
    );
    c.send_text("{\"type\":\"pong\"}");
    assert_eq!(c.flush().unwrap(), Flush::Drained);
    assert!(written(&c).starts_with("HTTP/1.1 101"));
    assert!(written(&c).ends_with("{\"type\":\"pong\"}"));
    assert!(!c.stream.shut);
    // Closing: the close frame, a FIN once written, nothing more queued, EOF ends it.
    assert!(c.close(1000, "bye", later), "was an open session");
    assert!(c.session().is_none());
    assert_eq!(c.next_wake(), later + LINGER);
    c.send_text("late");
    assert_eq!(c.flush().unwrap(), Flush::Drained);
    assert!(c.stream.shut);
    assert!(c.stream.written.ends_with(&frame::close_frame(1000, "bye")));
    assert!(!written(&c).contains("late"));
    assert!(!c.close(1000, "again", later), "closed once");
    feed(&mut c, b"ignored");
    assert!(matches!(read(&mut c, later, 8).0, ReadResult::Nothing));
    c.stream.eof = true;
    assert!(matches!(
        read(&mut c, later, 8).0,
        ReadResult::Done {
            close_code: None,
            ..
        }
    ));
}

#[test]
fn handshake_outcomes() {
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
    // (what, input, peer closed, result, HTTP status answered)
    #[rustfmt::skip]
    type Case<'a> = (&'a str, &'a str, bool, &'a str, Option<&'a str>);
    let table: [Case<'_>; 5] = [
        (
            "partial head",
            "GET / HTTP/1.1\r\nHost:",
            false,
            "nothing",
            None,
        ),
        ("peer gone", "GET / HT", true, "done", None),
        (
            "head too large",
            &huge,
            false,
            "nothing",
            Some("HTTP/1.1 431"),
        ),
        (
            "not HTTP",
            "\x01\x02 nonsense\r\n\r\n",
            false,
            "nothing",
            Some("HTTP/1.1 400"),
        ),
        (
            "plain GET",
            "GET /health HTTP/1.1\r\n\r\n",
            false,
            "request",
            None,
        ),
    ];
    for (what, input, eof, want, status) in table {
        let t0 = Instant::now();
        let mut c = conn(t0);
        feed(&mut c, input.as_bytes());
        c.stream.eof = eof;
        let got = match c.read_head(t0) {
            ReadResult::Nothing => "nothing",
            ReadResult::Request(_) => "request",
            ReadResult::Done { .. } => "done",
        };
        assert_eq!(got, want, "{what}");
        c.flush().unwrap();
        match status {
            Some(s) => {
                assert!(written(&c).starts_with(s), "{what}: {}", written(&c));
                assert!(matches!(c.state, ClientState::Closing { .. }), "{what}");
                assert!(c.stream.shut, "{what}: FIN after the answer");
            }
            None => assert!(c.stream.written.is_empty(), "{what}"),
        }
    }
}

#[test]
fn open_read_outcomes() {
    let text = |s: &str| client_frame(0x1, s.as_bytes());
    let unmasked = frame::text_frame(b"hi"); // a server frame: clients must mask theirs
    // (what, input, max messages per read, result, messages, more)
    #[rustfmt::skip]
    type Case = (&'static str, Vec<u8>, usize, &'static str, usize, bool);
    let table: Vec<Case> = vec![
        (
            "two messages",
            [text("a"), text("b")].concat(),
            8,
            "nothing",
            2,
            false,
        ),
        (
            "per-turn cap",
            [text("a"), text("b"), text("c")].concat(),
            2,
            "nothing",
            2,
            true,
        ),
        ("too big", text(&"x".repeat(100)), 8, "1009", 0, false),
        ("unmasked frame", unmasked, 8, "1002", 0, false),
        (
            "client close",
            client_frame(0x8, &1000u16.to_be_bytes()),
            8,
            "gone",
            0,
            false,
        ),
        ("pong", client_frame(0xA, b""), 8, "nothing", 1, false),
        ("binary", client_frame(0x2, b"\x00"), 8, "nothing", 1, false),
    ];
    for (what, input, max, want, count, more_wanted) in table {
        let t0 = Instant::now();
        let mut c = open(t0, 64);
        feed(&mut c, &input);
        let (r, got, more) = read(&mut c, t0, max);
        let r = match r {
            ReadResult::Nothing => "nothing".to_string(),
            ReadResult::Done {
                close_code: Some((code, _)),
                ..
            } => code.to_string(),
            ReadResult::Done {
                close_code: None, ..
            } => "gone".to_string(),
            ReadResult::Request(_) => "request".to_string(),
        };
        assert_eq!(
            (r.as_str(), got.len(), more),
            (want, count, more_wanted),
            "{what}"
        );
    }
}

#[test]
fn queue_limit_and_a_slow_consumers_close() {
    let t0 = Instant::now();
    let mut c = open(t0, 1024);
    c.flush().unwrap(); // the 101 answer
    let before = c.stream.written.len();
    let ev = Event::new("BTC".into(), "new_block", None).with("height", 7.into());
    let p = Arc::new(Published::new("E".into(), 1, &ev, 1.0));
    let limit = 2 * p.frame.len();
    assert!(c.enqueue(&Batch::One(p.clone()), limit));
    assert!(c.enqueue(&Batch::One(p.clone()), limit));
    assert!(!c.enqueue(&Batch::One(p.clone()), limit), "past the limit");
    // The socket takes nothing: blocked, writable interest wanted.
    c.stream.room = Some(0);
    assert_eq!(c.flush().unwrap(), Flush::Blocked);
    assert!(c.wants_writable());
    // 4008 drops the unsent events so the close frame goes out at once.
    assert!(c.close(4008, "slow consumer", t0));
    c.stream.room = None;
    assert_eq!(c.flush().unwrap(), Flush::Drained);
    let close = frame::close_frame(4008, "slow consumer");
    assert_eq!(
        c.stream.written[before..],
        close[..],
        "only the close frame"
    );
    assert!(!c.wants_writable() && c.stream.shut);
}
