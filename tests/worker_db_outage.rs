//! Database outages under the real worker (issue 4; docs/database.md): the worker writes to a
//! PRIVATE PostgreSQL cluster (`initdb` + `pg_ctl` on a free port; the shared cluster is never
//! stopped) that the test stops and starts again while a simulated daemon keeps sending.
//!
//! What must hold: clients receive every event meanwhile (seq without a gap), `/ready` turns 503
//! and then 200 again, `db.spooled` in the status grows during the outage and drains after it,
//! and afterwards every event row is present exactly once. A worker started while the database
//! is down starts anyway and catches up once it is back.

mod common;

use common::daemon::Stream;
use common::events;
use common::pg::{PrivateCluster, TempDir, TestDb};
use common::{QUIET, RecvError, Sim, Worker, deadline, star_client, wait_until};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Pacing of the background emitter (load generation, not a wait).
const EMIT_PACE: Duration = Duration::from_millis(10);
const WALLET: &str = "zpubOUTAGEwallet";
/// Generous: a private cluster restarting after `-m immediate` runs crash recovery.
const SLOW: f64 = 60.0;

/// A worker on `sim` writing to `db` (spool in `spool`), once `/health` answers.
fn db_worker(sim: &Sim, db: &TestDb, spool: &TempDir) -> Worker {
    common::db_worker_for(&[sim], db.worker_env(), spool.path())
}

/// `GET /ready`'s status code.
fn ready(worker: &Worker) -> u16 {
    worker.get("/ready").status
}

/// The status's `db` object.
fn db_status(worker: &Worker) -> Value {
    worker.status()["db"].clone()
}

/// Reads the events that arrive within the next 50 ms (seq checked by the stream): bounded
/// even while the daemon keeps sending.
fn drain_available(s: &mut Stream<'_>) {
    let until = deadline(0.05);
    loop {
        match s.client.recv_text(until) {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text).expect("JSON from the worker");
                let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("seq in {text}"));
                assert_eq!(seq, s.last + 1, "seq must grow by exactly one: {text}");
                s.last = seq;
                s.seen.push((text, v));
            }
            Err(RecvError::Timeout) => return,
            Err(e) => panic!("client stream ended: {e:?}"),
        }
    }
}

/// Waits for `what` while the client keeps reading (so "clients receive everything meanwhile"
/// is checked all along, not just at the end).
fn wait_reading(s: &mut Stream<'_>, secs: f64, what: &str, mut check: impl FnMut() -> bool) {
    let until = deadline(secs);
    let started = std::time::Instant::now();
    loop {
        drain_available(s);
        if check() {
            eprintln!(
                "[test] {what} after {:?} (seq {})",
                started.elapsed(),
                s.last
            );
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
    }
}

/// Reads events until the one with seq `target`.
fn read_to(s: &mut Stream<'_>, target: u64, secs: f64) {
    let until = deadline(secs);
    while s.last < target {
        s.next(until);
    }
}

/// Asserts that `events` holds exactly seqs `1..=n` of one epoch, once each.
fn assert_exactly_once(db: &TestDb, n: u64) {
    let rows = db.event_rows();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=n as i64).collect::<Vec<_>>(), "every seq once");
    assert!(
        rows.windows(2).all(|w| w[0].epoch == w[1].epoch),
        "one epoch"
    );
}

/// Waits until the event log holds exactly the events delivered so far (nothing left waiting
/// for durability), reads the client up to there, and checks the rows.
fn settle(worker: &Worker, s: &mut Stream<'_>, db: &TestDb) {
    let mut last = 0;
    wait_until(deadline(SLOW), "every delivered event written", || {
        last = worker.status()["last_seq"].as_u64().expect("last_seq");
        db.count("events") == last as i64
    });
    read_to(s, last, 20.0);
    assert_exactly_once(db, last);
}

#[test]
fn a_database_stopped_mid_stream_and_started_again_loses_and_doubles_nothing() {
    let cluster = PrivateCluster::start();
    let db = TestDb::create_on(&cluster.host_port());
    let spool = TempDir::new("spool");
    let sim = Sim::start("BTC", QUIET);
    let worker = db_worker(&sim, &db, &spool);
    wait_until(deadline(10.0), "/ready 200", || ready(&worker) == 200);
    let (mut client, seq) = star_client(&worker);
    let mut s = Stream::new(&mut client, seq);
    let (stop, emitted) = (&AtomicBool::new(false), &AtomicU64::new(0));
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let wallet = events::mixed_has_wallet(i).then_some(WALLET);
                sim.emit(events::mixed(i), wallet);
                i += 1;
                emitted.store(i, Ordering::SeqCst);
                std::thread::sleep(EMIT_PACE);
            }
        });
        let emitted_at_least = |n| move || emitted.load(Ordering::SeqCst) >= n;
        wait_reading(&mut s, 10.0, "a first stretch", emitted_at_least(20));

        cluster.kill();
        wait_reading(&mut s, 15.0, "/ready 503", || ready(&worker) == 503);
        let mut first = 0;
        wait_reading(&mut s, 15.0, "events in the spool", || {
            first = db_status(&worker)["spooled"].as_u64().unwrap_or(0);
            first > 0
        });
        wait_reading(&mut s, 15.0, "the spool growing", || {
            db_status(&worker)["spooled"].as_u64().unwrap_or(0) >= first + 20
        });
        let during = db_status(&worker);
        assert_eq!(during["connected"], false, "{during}");

        cluster.resume();
        wait_reading(&mut s, SLOW, "/ready 200 again", || ready(&worker) == 200);
        wait_reading(&mut s, SLOW, "the spool drained", || {
            db_status(&worker)["spooled"] == 0
        });
        let n = emitted.load(Ordering::SeqCst);
        wait_reading(
            &mut s,
            10.0,
            "events after the outage",
            emitted_at_least(n + 10),
        );
        stop.store(true, Ordering::SeqCst);
    });
    settle(&worker, &mut s, &db);
    let after = db_status(&worker);
    assert_eq!(after["connected"], true, "{after}");
    assert_eq!(after["spooled"], 0, "{after}");
    // Reconnecting left no connection behind: lock holder, 2 writers, listener, reader.
    let sessions = format!(
        "pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name
    );
    assert!(db.count(&sessions) <= 5, "{} sessions", db.count(&sessions));
}

#[test]
fn a_worker_started_while_the_database_is_down_serves_at_once_and_catches_up() {
    let cluster = PrivateCluster::start();
    let db = TestDb::create_on(&cluster.host_port());
    cluster.kill();
    let spool = TempDir::new("spool");
    let sim = Sim::start("BTC", QUIET);
    let worker = db_worker(&sim, &db, &spool);
    assert_eq!(ready(&worker), 503, "a daemon but no database");
    let (mut client, seq) = star_client(&worker);
    let mut s = Stream::new(&mut client, seq);
    for i in 0..20 {
        sim.emit(
            events::mixed(i),
            events::mixed_has_wallet(i).then_some(WALLET),
        );
    }
    read_to(&mut s, seq + 20, 10.0);
    wait_until(deadline(10.0), "the events in the spool", || {
        db_status(&worker)["spooled"].as_u64() >= Some(seq + 20)
    });
    cluster.resume();
    wait_reading(&mut s, SLOW, "/ready 200", || ready(&worker) == 200);
    wait_reading(&mut s, SLOW, "the spool drained", || {
        db_status(&worker)["spooled"] == 0
    });
    settle(&worker, &mut s, &db);
    assert_eq!(
        db.count("cryptoworker_migrations"),
        cryptoworker::db::migrate::MIGRATIONS.len() as i64,
        "migrated once reachable"
    );
}
