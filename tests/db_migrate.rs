//! Migrations and the one-writer lock against the real PostgreSQL on 127.0.0.1:5432: applied once
//! even by two migrators at the same moment, recorded, and a second worker on the same database
//! is refused with `DbError::Locked`.

mod common;

use common::pg::*;
use cryptoworker::db::{Db, DbError, migrate::MIGRATIONS};
use std::sync::{Arc, Barrier};
use std::time::Duration;

#[test]
fn migrations_apply_once_even_from_two_threads_at_once() {
    let db = TestDb::create();
    let barrier = Arc::new(Barrier::new(2));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (url, barrier) = (db.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Db::migrate(&url)
            })
        })
        .collect();
    let mut applied: Vec<String> = Vec::new();
    for r in runs {
        applied.extend(r.join().unwrap().unwrap());
    }
    let all: Vec<String> = MIGRATIONS.iter().map(|m| m.name.to_string()).collect();
    assert_eq!(
        applied, all,
        "each migration applied by exactly one of the two"
    );
    assert_eq!(
        Db::migrate(&db.url).unwrap(),
        Vec::<String>::new(),
        "third run: nothing to do"
    );
    assert_eq!(db.count("cryptoworker_migrations"), MIGRATIONS.len() as i64);
    for table in [
        "events",
        "watched_wallets",
        "payment_requests",
        "transactions",
        "worker_state",
    ] {
        assert_eq!(db.count(table), 0, "{table} exists and is empty");
    }
}

#[test]
fn a_migration_edited_after_it_was_applied_is_refused_clearly() {
    let db = TestDb::create();
    Db::migrate(&db.url).unwrap();
    db.client()
        .batch_execute("UPDATE cryptoworker_migrations SET checksum = 'deadbeef' WHERE version = 1")
        .unwrap();
    match Db::migrate(&db.url) {
        Err(DbError::Migration(m)) => assert!(m.contains("changed after it was applied"), "{m}"),
        other => panic!("expected a migration error, got {other:?}"),
    }
}

#[test]
fn a_second_worker_on_the_same_database_is_locked_out() {
    let db = TestDb::create();
    let (s1, s2) = (TempDir::new("lock1"), TempDir::new("lock2"));
    let (h, _rx, _) = start_db(&db.url, s1.path(), 1, 10).unwrap();
    match start_db(&db.url, s2.path(), 1, 10) {
        Err(DbError::Locked(m)) => {
            assert!(
                m.contains("another cryptoworker holds the writer lock"),
                "{m}"
            );
            assert!(m.contains(&db.name), "names the database: {m}");
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("expected Locked, got a second writer"),
    }
    h.shutdown(Duration::from_secs(5));
    let (h2, _rx, _) = start_db(&db.url, s2.path(), 1, 10).expect("free again after shutdown");
    h2.shutdown(Duration::from_secs(5));
}

#[test]
fn bad_settings_are_refused_with_the_variable_named() {
    let spool = TempDir::new("badcfg");
    let e = start_db(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        spool.path(),
        0,
        10,
    )
    .err()
    .map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|m| m.contains("DB_POOL_SIZE")),
        "{e:?}"
    );
    let e = start_db(
        "host=127.0.0.1 port=5432 user=nosuchuser_cw dbname=postgres",
        spool.path(),
        1,
        10,
    )
    .err();
    assert!(
        matches!(e, Some(DbError::Connect(_))),
        "a refused login is an error at once: {e:?}"
    );
}
