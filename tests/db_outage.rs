//! Outages on a PRIVATE PostgreSQL cluster (initdb + pg_ctl as the `postgres` user, a free
//! port); the shared cluster on 5432 is never stopped.
//!
//! - The server is killed (`pg_ctl stop -m immediate`) mid-stream: submitting never blocks, the
//!   spool grows, and after the restart every event row is present exactly once and the spool
//!   is empty.
//! - The server is down when the worker starts: it starts anyway with a new epoch, spools, and
//!   migrates, locks and replays once the server is up.
//! - After a long outage the returned server is noticed within a few seconds (capped backoff).

mod common;

use common::pg::*;
use cryptoworker::db::SPOOL_FILE;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
/// The database outage of the backoff regression test (the scenario, not a settle-wait).
const LONG_OUTAGE: Duration = Duration::from_secs(40);

fn spool_len(dir: &TempDir) -> u64 {
    std::fs::metadata(dir.path().join(SPOOL_FILE)).map_or(0, |m| m.len())
}

/// Asserts `events` of `epoch` holds exactly seqs 1..=n, once each.
fn assert_exactly_once(db: &TestDb, epoch: &str, n: i64) {
    let row = db
        .client()
        .query_one(
            "SELECT count(*), count(DISTINCT seq), coalesce(min(seq), 0), coalesce(max(seq), 0)
             FROM events WHERE epoch = $1",
            &[&epoch],
        )
        .unwrap();
    let got: (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(got, (n, n, 1, n), "(rows, distinct seqs, min, max)");
}

#[test]
fn a_server_killed_mid_stream_loses_and_doubles_nothing() {
    let cluster = PrivateCluster::start();
    let db = TestDb::create_on(&cluster.host_port());
    let spool = TempDir::new("outage");
    let (h, _rx, resume) = start_db(&db.url, spool.path(), 2, 50).unwrap();
    let stats = h.stats();
    let events = mixed(&resume.epoch, 1..=3000);
    let mut next = events.iter();
    let mut submit = |n: usize| {
        for e in next.by_ref().take(n) {
            let t = Instant::now();
            h.submit(e.clone());
            assert!(
                t.elapsed() < Duration::from_millis(50),
                "submit must never block"
            );
        }
    };

    submit(1000);
    wait_for(WAIT, "first part written", || {
        stats.written.load(Ordering::Relaxed) >= 500
    });
    cluster.kill();
    submit(1000);
    wait_for(WAIT, "the outage noticed", || {
        !stats.connected.load(Ordering::Relaxed)
    });
    wait_for(WAIT, "events spooled", || {
        stats.spooled.load(Ordering::Relaxed) > 0
    });
    submit(500);
    wait_for(WAIT, "the spool file growing", || spool_len(&spool) > 0);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);

    cluster.resume();
    submit(500);
    wait_for(WAIT, "reconnected", || {
        stats.connected.load(Ordering::Relaxed)
    });
    wait_for(WAIT, "spool replayed and queue drained", || {
        let s = stats.snapshot();
        s.spooled == 0 && s.queue_depth == 0 && spool_len(&spool) == 0
    });
    h.shutdown(Duration::from_secs(10));
    let s = stats.snapshot();
    assert_eq!((s.dropped, s.failed, s.spooled), (0, 0, 0), "{s:?}");
    assert_eq!(spool_len(&spool), 0);
    assert_exactly_once(&db, &resume.epoch, 3000);
    // Derived rows were replayed idempotently too.
    let tip: i64 = db
        .client()
        .query_one("SELECT height FROM chain_tips WHERE coin = 'BTC'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tip, 803_000);
}

#[test]
fn a_worker_started_while_the_server_is_down_catches_up_when_it_is_back() {
    let cluster = PrivateCluster::start();
    let db = TestDb::create_on(&cluster.host_port());
    cluster.kill();
    let spool = TempDir::new("cold");
    let (h, _rx, resume) = start_db(&db.url, spool.path(), 2, 50).unwrap();
    assert_eq!(resume.last_seq, 0, "a new epoch starts from zero");
    let stats = h.stats();
    assert!(!stats.connected.load(Ordering::Relaxed));
    for e in mixed(&resume.epoch, 1..=400) {
        h.submit(e);
    }
    wait_for(WAIT, "all 400 spooled", || {
        stats.spooled.load(Ordering::Relaxed) == 400
    });

    cluster.resume();
    wait_for(WAIT, "connected, migrated and replayed", || {
        let s = stats.snapshot();
        s.connected && s.spooled == 0 && s.written >= 400
    });
    h.shutdown(Duration::from_secs(10));
    assert_exactly_once(&db, &resume.epoch, 400);
    let stored: String = db
        .client()
        .query_one("SELECT epoch FROM worker_state", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        stored, resume.epoch,
        "the new epoch is recorded once reachable"
    );
}

/// Regression: the reconnect backoff grew to 30 s, so a server that came back after a long
/// outage was noticed only up to 30 s later (a run stayed disconnected 68 s).
#[test]
fn a_returned_server_was_noticed_only_after_up_to_30s() {
    let cluster = PrivateCluster::start();
    let db = TestDb::create_on(&cluster.host_port());
    let spool = TempDir::new("backoff");
    let (h, _rx, resume) = start_db(&db.url, spool.path(), 1, 50).unwrap();
    let stats = h.stats();
    cluster.kill();
    wait_for(WAIT, "the outage noticed", || {
        !stats.connected.load(Ordering::Relaxed)
    });
    // The scenario itself, not a settle-wait: an outage long enough for a backoff doubling from
    // 0.5 s to reach any plausible ceiling (the regression's grew through 16 s to 30 s).
    std::thread::sleep(LONG_OUTAGE);
    let back = Instant::now();
    cluster.resume();
    wait_for(Duration::from_secs(60), "reconnected", || {
        stats.connected.load(Ordering::Relaxed)
    });
    let took = back.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the server was back for {took:?} before the worker noticed"
    );
    for e in mixed(&resume.epoch, 1..=10) {
        h.submit(e);
    }
    wait_for(WAIT, "written after the outage", || {
        stats.written.load(Ordering::Relaxed) >= 10
    });
    h.shutdown(Duration::from_secs(10));
    assert_exactly_once(&db, &resume.epoch, 10);
}

#[test]
fn events_left_in_the_spool_at_shutdown_are_written_by_the_next_start() {
    let cluster = PrivateCluster::start();
    let db = TestDb::create_on(&cluster.host_port());
    let spool = TempDir::new("carry");
    let (h, _rx, resume) = start_db(&db.url, spool.path(), 1, 50).unwrap();
    cluster.kill();
    let stats = h.stats();
    wait_for(WAIT, "the outage noticed", || {
        !stats.connected.load(Ordering::Relaxed)
    });
    for e in mixed(&resume.epoch, 1..=300) {
        h.submit(e);
    }
    h.shutdown(Duration::from_millis(500));
    assert_eq!(
        stats.spooled.load(Ordering::Relaxed),
        300,
        "everything waits in the spool"
    );
    assert!(spool_len(&spool) > 0);

    cluster.resume();
    let (h, _rx, again) = start_db(&db.url, spool.path(), 1, 50).unwrap();
    assert_eq!(again.epoch, resume.epoch);
    assert_eq!(
        again.last_seq, 300,
        "spooled events count for the resume point"
    );
    let stats = h.stats();
    wait_for(WAIT, "the spool replayed", || {
        spool_len(&spool) == 0 && stats.spooled.load(Ordering::Relaxed) == 0
    });
    h.shutdown(Duration::from_secs(10));
    assert_exactly_once(&db, &resume.epoch, 300);
}
