//! Payments and transactions that happened while no worker listened, recovered by the real
//! worker against the simulated daemon and a real PostgreSQL:
//!
//! - requests already open in the database, paid while no worker ran, are reconciled at the
//!   first connect (the database's first read arrives after the link is up);
//! - a request row inserted after its payment while the worker runs is reconciled at once;
//! - transactions pushed to a loaded wallet while the worker was stopped are recovered from the
//!   daemon's `get_updates` queue on start (`recovered: true`), and what the previous run
//!   delivered is not delivered again;
//! - thousands of open requests, some paid, are all reconciled while live events keep flowing.

mod common;

use common::daemon::Stream;
use common::{QUIET, Sim, Worker, deadline, star_client, wait_until};

use common::pg::{TempDir, TestDb};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Instant;

const WALLET: &str = "zpubRECOVERYwallet";

/// A fresh database with the worker's schema (as `cryptoworker migrate` leaves it).
fn migrated_db() -> TestDb {
    let db = TestDb::create();
    cryptoworker::db::Db::migrate(&db.url).expect("migrations");
    db
}

fn db_worker(sim: &Sim, db: &TestDb, spool: &TempDir) -> Worker {
    common::db_worker_for(&[sim], db.worker_env(), spool.path())
}

/// Inserts open (status 0) requests for `WALLET` in one statement.
fn insert_requests(db: &TestDb, ids: &[String]) {
    db.client()
        .execute(
            "INSERT INTO payment_requests (coin, xpub, request_id, status, sent_amount, tx_hashes)
             SELECT 'BTC', $1, id, 0, 0, '{}' FROM unnest($2::text[]) AS id",
            &[&WALLET, &ids],
        )
        .expect("insert payment_requests");
}

fn paid(sim: &Sim, id: &str, i: usize) {
    let state = json!({"status": 3, "sent_amount": "0.0001", "tx_hashes": [format!("{i:064x}")]});
    sim.call("sim_set_request", json!([WALLET, id, state]));
}

fn unpaid(sim: &Sim, id: &str) {
    let state = json!({"status": 0, "sent_amount": "0", "tx_hashes": []});
    sim.call("sim_set_request", json!([WALLET, id, state]));
}

/// Reads until every id in `ids` had a recovered status-3 `new_payment` (counting those the
/// stream already read).
fn wait_paid(s: &mut Stream<'_>, ids: &[String], secs: f64) {
    let mut left: HashSet<&str> = ids.iter().map(String::as_str).collect();
    for (_, v) in &s.seen {
        let d = &v["data"];
        if d["event"] == "new_payment" && d["status"] == 3 {
            left.remove(d["address"].as_str().unwrap_or_default());
        }
    }
    let until = deadline(secs);
    while !left.is_empty() {
        let Some(v) = s.try_next(until) else {
            panic!(
                "{} requests never reported paid: {:?}",
                left.len(),
                left.iter().take(5).collect::<Vec<_>>()
            );
        };
        let d = &v["data"];
        if d["event"] == "new_payment" && d["status"] == 3 {
            assert_eq!(d["recovered"], true, "{v}");
            left.remove(d["address"].as_str().unwrap_or_default());
        }
    }
}

#[test]
fn requests_paid_while_no_worker_ran_are_reconciled_at_the_first_connect() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (migrated_db(), TempDir::new("recovery"));
    let ids: Vec<String> = (0..4).map(|i| format!("deploy{i}")).collect();
    insert_requests(&db, &ids);
    for (i, id) in ids.iter().enumerate() {
        paid(&sim, id, i);
    }
    let worker = db_worker(&sim, &db, &spool);
    let mut c = worker.ws();
    // The connect's events may be delivered before this client subscribed: resume from 0.
    let reply = c.subscribe(json!({"events": ["*"], "since": 0}), deadline(5.0));
    let mut s = Stream::new(&mut c, 0);
    assert_eq!(reply["resumed"], true);
    wait_paid(&mut s, &ids, 20.0);
    wait_until(deadline(10.0), "status and confirmations stored", || {
        db.count("payment_requests WHERE status = 3 AND confirmations IS NOT NULL") == 4
    });
}

#[test]
fn a_request_row_inserted_after_its_payment_while_the_worker_runs_is_reconciled_at_once() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (migrated_db(), TempDir::new("recovery"));
    let worker = db_worker(&sim, &db, &spool);
    let (mut c, seq) = star_client(&worker);
    let mut s = Stream::new(&mut c, seq);
    wait_until(deadline(10.0), "BTC connected", || {
        worker.status()["daemons"]["BTC"]["connected"] == true
    });
    let ids = vec!["late1".to_string()];
    paid(&sim, &ids[0], 1);
    insert_requests(&db, &ids);
    wait_paid(&mut s, &ids, 20.0);
}

#[test]
fn transactions_sent_to_a_loaded_wallet_while_the_worker_was_stopped_are_recovered_on_start() {
    let sim = Sim::start(
        "BTC",
        &["--rate", "0", "--block-interval", "0", "--wallets", WALLET],
    );
    let (db, spool) = (migrated_db(), TempDir::new("recovery"));
    db.client()
        .execute(
            "INSERT INTO watched_wallets (coin, xpub) VALUES ('BTC', $1)",
            &[&WALLET],
        )
        .expect("insert watched_wallets");
    let mut first = db_worker(&sim, &db, &spool);
    let (mut c, seq) = star_client(&first);
    let mut s = Stream::new(&mut c, seq);
    wait_until(deadline(10.0), "the wallet drained", || {
        common::daemon::rpc_logged(&sim, "get_updates", WALLET)
    });
    let tx = |n: u64| json!({"event": "new_transaction", "tx": format!("{n:064x}")});
    sim.emit(tx(1), Some(WALLET));
    s.until_data(deadline(10.0), "the live transaction", |d| {
        d["event"] == "new_transaction"
    });
    first.sigterm();
    first
        .wait_exit(deadline(15.0))
        .expect("the first worker stops");
    // Pushed while no worker is connected: only the wallet's get_updates queue keeps them.
    for n in 2..=4 {
        sim.emit(tx(n), Some(WALLET));
    }
    let delivered = s.last;
    let second = db_worker(&sim, &db, &spool);
    let mut c2 = second.ws();
    // Resumed from the last seq seen: the catch-up may recover the three before or after this
    // subscribe (the database names the wallet within milliseconds of the connect).
    let request = json!({"events": ["new_transaction"], "since": delivered});
    let reply = c2.subscribe(request, deadline(5.0));
    assert!(reply["seq"].is_u64());
    let mut got = Vec::new();
    let until = deadline(20.0);
    while got.len() < 3 {
        let text = c2.recv_text(until).expect("the recovered transactions");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        if v["type"] == "event" {
            assert_eq!(v["data"]["recovered"], true, "{v}");
            got.push(
                v["data"]["tx_hash"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    let want: Vec<String> = (2..=4).map(|n: u64| format!("{n:064x}")).collect();
    assert_eq!(
        got, want,
        "the three missed ones, in order, and not the one delivered before"
    );
    assert_eq!(
        db.count("events WHERE event = 'new_transaction'"),
        4,
        "each transaction stored once"
    );
}

#[test]
fn twelve_thousand_open_requests_are_all_reconciled_while_live_events_flow() {
    const OPEN: usize = 12_000;
    const PAID: usize = 200;
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (migrated_db(), TempDir::new("recovery"));
    let ids: Vec<String> = (0..OPEN).map(|i| format!("scale{i:05}")).collect();
    insert_requests(&db, &ids);
    std::thread::scope(|scope| {
        for part in 0..8 {
            let (sim, ids) = (&sim, &ids);
            scope.spawn(move || {
                for (i, id) in ids.iter().enumerate().skip(part).step_by(8) {
                    if i % (OPEN / PAID) == 0 {
                        paid(sim, id, i);
                    } else {
                        unpaid(sim, id);
                    }
                }
            });
        }
    });
    eprintln!("[test] set up {OPEN} requests");
    let paid_ids: Vec<String> = ids.iter().step_by(OPEN / PAID).cloned().collect();
    assert_eq!(paid_ids.len(), PAID);
    let started = Instant::now();
    let worker = db_worker(&sim, &db, &spool);
    let mut c = worker.ws();
    c.subscribe(json!({"events": ["*"], "since": 0}), deadline(5.0));
    let mut s = Stream::new(&mut c, 0);
    wait_until(deadline(10.0), "the catch-up under way", || {
        common::daemon::rpc_logged(&sim, "get_request", WALLET)
    });
    // Live transactions (each needs a lookup) during the catch-up do not queue behind it.
    let mut worst = 0.0f64;
    for n in 0..5u64 {
        let hash = format!("{:064x}", 0xabc000 + n);
        let sent = Instant::now();
        sim.emit(
            json!({"event": "new_transaction", "tx": hash}),
            Some(WALLET),
        );
        s.until_data(deadline(10.0), "a live transaction", |d| {
            d["tx_hash"] == hash.as_str()
        });
        worst = worst.max(sent.elapsed().as_secs_f64());
    }
    wait_paid(&mut s, &paid_ids, 120.0);
    eprintln!(
        "[test] {PAID} of {OPEN} reconciled in {:.1} s; live blocks took at most {:.0} ms",
        started.elapsed().as_secs_f64(),
        worst * 1e3
    );
    assert!(
        worst < 1.0,
        "live events are not held by the catch-up ({worst:.3} s)"
    );
    let log = worker.proc.output.tail(200_000);
    assert!(
        !log.contains("Could not reconcile"),
        "no per-request failure lines"
    );
    wait_until(deadline(60.0), "the catch-up summary", || {
        worker
            .proc
            .output
            .contains("12000 payment requests reconciled (200 moved, 0 gone)")
    });
}
