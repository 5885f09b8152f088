//! The Redis stream layer against a real Redis: append/read/range round trips, fencing (Redis
//! itself refuses a seq at or below the top; a deposed node appends nothing), approximate
//! trimming and its detection, and a Redis that is killed and comes back empty.

mod common;

use common::cluster::{Keys, PrivateRedis, SHARED_REDIS, connect, unique_prefix};
use cryptoworker::cluster::redis::RedisError;
use cryptoworker::cluster::stream::{self, Entry, StreamError, Target};
use std::time::Duration;

fn entries(epoch: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<Entry> {
    seqs.into_iter()
        .map(|seq| Entry {
            seq,
            epoch: epoch.into(),
            timestamp: 1_700_000_000.0 + seq as f64 / 1000.0,
            payload: format!(r#"{{"event":"new_block","coin":"BTC","height":{seq}}}"#).into(),
        })
        .collect()
}

fn seqs(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

struct Setup {
    stream: String,
    leader: String,
    _keys: Keys,
}

fn setup(name: &str, url: &str) -> Setup {
    let prefix = unique_prefix(name);
    Setup {
        stream: format!("{prefix}events"),
        leader: format!("{prefix}leader"),
        _keys: Keys {
            url: url.into(),
            prefix,
        },
    }
}

fn target<'a>(s: &'a Setup, node: &'a str, maxlen: u64) -> Target<'a> {
    Target {
        stream: &s.stream,
        leader_key: &s.leader,
        node,
        maxlen,
        lease: Duration::from_secs(30),
    }
}

#[test]
fn append_read_and_range_round_trip() {
    let s = setup("roundtrip", SHARED_REDIS);
    let mut c = connect(SHARED_REDIS);
    let sent = entries("ep1", 1..=5);
    assert_eq!(stream::append(&mut c, &target(&s, "a", 1000), &sent), Ok(5));
    let got = stream::read(&mut c, &s.stream, 0, 100, Duration::from_millis(100)).unwrap();
    assert_eq!(got, sent, "every field survives the trip");
    assert_eq!(
        seqs(&stream::range(&mut c, &s.stream, 2, 2).unwrap()),
        [3, 4]
    );
    assert_eq!(stream::first_seq(&mut c, &s.stream), Ok(Some(1)));
    assert_eq!(stream::last_seq(&mut c, &s.stream), Ok(Some(5)));
    let idle = stream::read(&mut c, &s.stream, 5, 100, Duration::from_millis(50)).unwrap();
    assert!(
        idle.is_empty(),
        "nothing after the top: the block times out"
    );
    let leader = c.command(&["GET", &s.leader]).unwrap();
    assert_eq!(
        leader.text(),
        Some("a"),
        "the first append claims the absent leader key"
    );
}

#[test]
fn a_blocked_read_returns_as_soon_as_an_entry_is_appended() {
    let s = setup("blocking", SHARED_REDIS);
    let stream_key = s.stream.clone();
    let reader = std::thread::spawn(move || {
        let mut c = connect(SHARED_REDIS);
        stream::read(&mut c, &stream_key, 0, 10, Duration::from_secs(10))
    });
    let mut c = connect(SHARED_REDIS);
    stream::append(&mut c, &target(&s, "a", 1000), &entries("ep1", [1])).unwrap();
    let got = reader.join().expect("reader thread").unwrap();
    assert_eq!(seqs(&got), [1]);
}

#[test]
fn redis_refuses_a_seq_at_or_below_the_top_and_stops_the_batch_there() {
    let s = setup("fencing", SHARED_REDIS);
    let mut c = connect(SHARED_REDIS);
    let t = target(&s, "a", 1000);
    stream::append(&mut c, &t, &entries("ep1", 1..=3)).unwrap();
    assert_eq!(
        stream::append(&mut c, &t, &entries("ep1", [3, 4])),
        Err(StreamError::Fenced {
            appended: 0,
            seq: 3
        })
    );
    assert_eq!(
        stream::append(&mut c, &t, &entries("ep1", [4, 2, 5])),
        Err(StreamError::Fenced {
            appended: 1,
            seq: 2
        }),
        "the batch stops at the refused entry: 5 is not appended"
    );
    assert_eq!(stream::last_seq(&mut c, &s.stream), Ok(Some(4)));
    assert_eq!(
        seqs(&stream::range(&mut c, &s.stream, 0, 10).unwrap()),
        [1, 2, 3, 4]
    );
}

#[test]
fn a_deposed_node_appends_nothing() {
    let s = setup("deposed", SHARED_REDIS);
    let mut c = connect(SHARED_REDIS);
    stream::append(&mut c, &target(&s, "old", 1000), &entries("ep1", 1..=2)).unwrap();
    c.command(&["SET", &s.leader, "new"]).unwrap();
    assert_eq!(
        stream::append(&mut c, &target(&s, "old", 1000), &entries("ep1", [3])),
        Err(StreamError::Deposed {
            leader: "new".into()
        })
    );
    assert_eq!(
        stream::append(&mut c, &target(&s, "new", 1000), &entries("ep1", [3])),
        Ok(1)
    );
    assert_eq!(stream::last_seq(&mut c, &s.stream), Ok(Some(3)));
}

#[test]
fn trimming_is_approximate_and_a_reader_behind_it_is_told() {
    let s = setup("trim", SHARED_REDIS);
    let mut c = connect(SHARED_REDIS);
    let t = target(&s, "a", 100);
    for chunk in (1..=2000u64).collect::<Vec<_>>().chunks(100) {
        stream::append(&mut c, &t, &entries("ep1", chunk.iter().copied())).unwrap();
    }
    let first = stream::first_seq(&mut c, &s.stream)
        .unwrap()
        .expect("not empty");
    let len = match c.command(&["XLEN", &s.stream]).unwrap() {
        cryptoworker::cluster::resp::Reply::Int(n) => n as u64,
        other => panic!("XLEN: {other:?}"),
    };
    assert!(first > 1 && len < 2000, "trimmed: first {first}, len {len}");
    assert!(len >= 100, "MAXLEN ~ keeps at least MAXLEN entries: {len}");
    assert_eq!(
        first + len - 1,
        2000,
        "what is kept is the newest, without holes"
    );
    assert_eq!(stream::trimmed_past(&mut c, &s.stream, 0), Ok(Some(first)));
    assert_eq!(stream::trimmed_past(&mut c, &s.stream, first - 1), Ok(None));
    assert_eq!(stream::trimmed_past(&mut c, &s.stream, 1999), Ok(None));
}

#[test]
fn a_killed_redis_fails_the_connection_and_comes_back_empty() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let s = setup("killed", &url);
    let mut c = connect(&url);
    stream::append(&mut c, &target(&s, "a", 1000), &entries("ep1", 1..=3)).unwrap();
    redis.kill();
    let err = stream::append(&mut c, &target(&s, "a", 1000), &entries("ep1", [4]));
    assert!(
        matches!(err, Err(StreamError::Redis(RedisError::Io(_)))),
        "{err:?}"
    );
    redis.restart();
    let mut c = connect(&url);
    assert_eq!(
        stream::first_seq(&mut c, &s.stream),
        Ok(None),
        "restarted empty"
    );
    assert_eq!(
        stream::append(&mut c, &target(&s, "a", 1000), &entries("ep1", [4, 5])),
        Ok(2),
        "an empty stream takes the leader's next seq"
    );
    assert_eq!(stream::trimmed_past(&mut c, &s.stream, 3), Ok(None));
    assert_eq!(stream::trimmed_past(&mut c, &s.stream, 1), Ok(Some(4)));
}

#[test]
fn server_errors_leave_the_connection_usable() {
    let mut c = connect(SHARED_REDIS);
    let err = c.command(&["NOSUCHCOMMAND"]);
    assert!(matches!(err, Err(RedisError::Server(_))), "{err:?}");
    assert_eq!(c.command(&["PING"]).unwrap().text(), Some("PONG"));
    let replies = c
        .pipeline(&[
            vec![b"PING".to_vec()],
            vec![b"ECHO".to_vec(), b"x".to_vec()],
        ])
        .unwrap();
    assert_eq!(
        replies.iter().map(|r| r.text()).collect::<Vec<_>>(),
        [Some("PONG"), Some("x")]
    );
}
