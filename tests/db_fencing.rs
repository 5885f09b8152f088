//! Cluster fencing in the persistence layer (docs/cluster.md, "Fencing"), against the real
//! PostgreSQL on 127.0.0.1:5432, a fresh database per test: a cluster-mode writer stores a batch
//! only while the database's `cluster_term` is the term its node leads with. A bump (what a new
//! leader's elector does at takeover) makes the old leader's next batch, live or replayed from
//! the spool, be dropped, neither stored nor spooled, while the new leader stores the same seq
//! with its own payload. And the ordering the argument rests on: a bump waits for a batch
//! transaction that already took the term `FOR SHARE`, and for no longer than the server lets
//! such a transaction sit idle.

mod common;

use common::pg::*;
use cryptoworker::config::DbConfig;
use cryptoworker::db::{BUMP_TERM_SQL, Db, DbHandle, SPOOL_FILE};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A cluster-mode persistence layer on `url` that ingests, leading with `term`.
fn cluster_db(url: &str, spool: &TempDir, term: u64) -> (DbHandle, String) {
    init_log();
    let cfg = DbConfig {
        url: url.to_string(),
        pool_size: 2,
        batch_size: 16,
        spool_dir: spool.path().to_path_buf(),
    };
    let (h, _rx, resume) = Db::start_in_cluster(&cfg, Arc::new(|| {}), Duration::from_secs(3))
        .expect("cluster-mode persistence starts");
    h.set_lead_term(term);
    h.set_ingesting(true);
    (h, resume.epoch)
}

/// Bumps the fencing term as an elector does at takeover; returns the new term.
fn bump(db: &TestDb) -> u64 {
    let term: i64 = db.client().query_one(BUMP_TERM_SQL, &[]).unwrap().get(0);
    term as u64
}

/// The stored `new_block` height of `seq`, if the row exists.
fn stored_height(db: &TestDb, epoch: &str, seq: i64) -> Option<i64> {
    db.client()
        .query_opt(
            "SELECT (payload->>'height')::int8 FROM events WHERE epoch = $1 AND seq = $2",
            &[&epoch, &seq],
        )
        .unwrap()
        .map(|r| r.get(0))
}

#[test]
fn a_superseded_leaders_batch_is_refused_and_the_new_leader_stores_that_seq() {
    let db = TestDb::create();
    Db::migrate(&db.url).expect("migrations");
    assert_eq!(bump(&db), 1, "the first takeover of a fresh database");
    let (spool_a, spool_b) = (TempDir::new("fence-a"), TempDir::new("fence-b"));
    let (old, epoch) = cluster_db(&db.url, &spool_a, 1);
    let old_stats = old.stats();

    old.submit(publish(&epoch, 1, &block_event("BTC", 101)));
    wait_for(WAIT, "seq 1 stored under term 1", || {
        old_stats.written.load(Ordering::Relaxed) >= 1
    });
    assert_eq!(stored_height(&db, &epoch, 1), Some(101));

    assert_eq!(bump(&db), 2, "a new leader takes over");
    old.submit(publish(&epoch, 2, &block_event("BTC", 102)));
    wait_for(WAIT, "the old leader's seq 2 refused", || {
        old_stats.fenced.load(Ordering::Relaxed) >= 1
    });
    let s = old_stats.snapshot();
    assert_eq!(
        (s.written, s.fenced, s.spooled, s.queue_depth, s.failed),
        (1, 1, 0, 0, 0),
        "refused, neither stored nor spooled: {s:?}"
    );
    assert_eq!(stored_height(&db, &epoch, 2), None, "not stored");
    wait_for(WAIT, "the watermark past the refused event", || {
        old.durable_seq() >= 2
    });

    let (new, new_epoch) = cluster_db(&db.url, &spool_b, 2);
    assert_eq!(new_epoch, epoch, "cluster nodes share the database's epoch");
    let new_stats = new.stats();
    new.submit(publish(&epoch, 2, &block_event("BTC", 202)));
    wait_for(WAIT, "the new leader's seq 2 stored", || {
        new_stats.written.load(Ordering::Relaxed) >= 1
    });
    assert_eq!(
        stored_height(&db, &epoch, 2),
        Some(202),
        "the new leader's event"
    );
    assert_eq!(new_stats.fenced.load(Ordering::Relaxed), 0);

    old.submit(publish(&epoch, 3, &block_event("BTC", 103)));
    wait_for(WAIT, "the old leader's seq 3 refused as well", || {
        old_stats.fenced.load(Ordering::Relaxed) >= 2
    });
    assert_eq!(stored_height(&db, &epoch, 3), None);
    old.shutdown(Duration::from_secs(5));
    new.shutdown(Duration::from_secs(5));
    assert_eq!(
        std::fs::metadata(spool_a.path().join(SPOOL_FILE)).map_or(0, |m| m.len()),
        0
    );
}

#[test]
fn spooled_events_replayed_under_a_superseded_term_are_dropped_not_stored() {
    let db = TestDb::create();
    Db::migrate(&db.url).expect("migrations");
    let epoch = "ep-fence";
    db.client()
        .execute(
            "INSERT INTO worker_state (id, epoch) VALUES (1, $1)",
            &[&epoch],
        )
        .unwrap();
    let spool = TempDir::new("fence-spool");
    let lines: String = (1..=3)
        .map(|seq| {
            format!(
                "{{\"epoch\":\"{epoch}\",\"seq\":{seq},\"ts\":1700000000.0,\"payload\":\
                 {{\"event\":\"new_block\",\"coin\":\"BTC\",\"height\":{}}}}}\n",
                100 + seq
            )
        })
        .collect();
    std::fs::write(spool.path().join(SPOOL_FILE), lines).unwrap();
    assert_eq!((bump(&db), bump(&db)), (1, 2), "two takeovers");

    let (old, _) = cluster_db(&db.url, &spool, 1);
    let stats = old.stats();
    wait_for(WAIT, "the spool replayed and refused", || {
        stats.fenced.load(Ordering::Relaxed) >= 3 && stats.spooled.load(Ordering::Relaxed) == 0
    });
    old.shutdown(Duration::from_secs(5));
    let s = stats.snapshot();
    assert_eq!((s.written, s.fenced), (0, 3), "{s:?}");
    assert_eq!(db.count("events"), 0, "nothing of the old term stored");
    assert_eq!(
        std::fs::metadata(spool.path().join(SPOOL_FILE)).map_or(0, |m| m.len()),
        0,
        "dropped for good, not kept for a later replay"
    );
}

#[test]
fn a_bump_waits_for_a_batch_that_already_checked_the_term() {
    let db = TestDb::create();
    Db::migrate(&db.url).expect("migrations");
    assert_eq!(bump(&db), 1);
    let mut writer = db.client();
    let mut tx = writer.transaction().unwrap();
    let seen: i64 = tx
        .query_one("SELECT term FROM cluster_term WHERE id = 1 FOR SHARE", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 1);
    let mut elector = db.client();
    elector.batch_execute("SET lock_timeout = '300ms'").unwrap();
    let blocked = elector.query_one(BUMP_TERM_SQL, &[]).unwrap_err();
    assert_eq!(
        blocked.code(),
        Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE),
        "the bump waits while a checked batch is open: {blocked}"
    );
    tx.commit().unwrap();
    let term: i64 = elector.query_one(BUMP_TERM_SQL, &[]).unwrap().get(0);
    assert_eq!(term, 2, "and goes through once it committed");
}

#[test]
fn a_stale_batch_left_idle_mid_transaction_stops_holding_the_bump() {
    let db = TestDb::create();
    Db::migrate(&db.url).expect("migrations");
    assert_eq!(bump(&db), 1);
    // As a cluster-mode writer session does (5 s there; 1 s here to keep the test short).
    let mut writer = db.client();
    writer
        .batch_execute("SET idle_in_transaction_session_timeout = '1s'")
        .unwrap();
    let mut tx = writer.transaction().unwrap();
    tx.query_one("SELECT term FROM cluster_term WHERE id = 1 FOR SHARE", &[])
        .unwrap();
    // The writer's node is "partitioned": it never sends another statement.
    let mut elector = db.client();
    elector
        .batch_execute("SET statement_timeout = '20s'")
        .unwrap();
    let term: i64 = elector.query_one(BUMP_TERM_SQL, &[]).unwrap().get(0);
    assert_eq!(
        term, 2,
        "the server ended the idle batch and the bump went through"
    );
    assert!(
        tx.commit().is_err(),
        "the stale batch cannot commit any more"
    );
}
