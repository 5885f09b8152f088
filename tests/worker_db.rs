//! The worker and its event log end to end (issue 4; docs/protocol.md, "Sequence numbers and
//! epochs", and docs/database.md): the real binary (`cryptoworker run`) fed by `cryptoworker
//! simulate`, writing to a fresh database on the machine's PostgreSQL, checked from real WebSocket
//! clients and from SQL.
//!
//! - every event a `"*"` client receives has exactly one row with the same epoch, seq, coin,
//!   event, wallet and payload, and no other row exists;
//! - a duplicated daemon update, and one replayed after a daemon restart, adds no row;
//! - the sequence continues after a worker restart (same epoch, next seq), and a resume across the
//!   restart is served from the event log;
//! - a second worker against the same database exits non-zero with a "locked" error.

mod common;

use common::daemon::{Stream, restart};
use common::events::{self, index_of};
use common::pg::{EventRow, TempDir, TestDb};
use common::process::Proc;
use common::{QUIET, Sim, Worker, deadline, free_port, star_client, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const WALLET: &str = "zpubWORKERdbWallet";

/// The worker environment for `db` with its spool in `spool`, plus `extra`.
fn db_env(db: &TestDb, spool: &TempDir, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = db
        .worker_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.push(("DB_SPOOL_DIR".into(), spool.path().display().to_string()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// A worker on `sim` writing to `db`, with every daemon connected.
fn db_worker(sim: &Sim, db: &TestDb, spool: &TempDir) -> Worker {
    let env = db_env(db, spool, &[]);
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    common::worker_for(&[sim], &refs)
}

/// Waits until the event log holds `n` rows.
fn wait_rows(db: &TestDb, n: u64) {
    wait_until(deadline(20.0), &format!("{n} rows in events"), || {
        db.count("events") >= n as i64
    });
}

/// Emits the mixed update `i` (wallet-scoped ones for [`WALLET`]).
fn emit_mixed(sim: &Sim, i: u64) {
    let wallet = events::mixed_has_wallet(i).then_some(WALLET);
    sim.emit(events::mixed(i), wallet);
}

/// Asserts that `row` records the client event `v` (as received) exactly.
fn assert_row_matches(row: &EventRow, v: &Value, epoch: &str) {
    let d = &v["data"];
    assert_eq!(row.epoch, epoch, "epoch of {v}");
    assert_eq!(Some(row.seq as u64), v["seq"].as_u64(), "seq of {v}");
    assert_eq!(Some(row.coin.as_str()), d["coin"].as_str(), "coin of {v}");
    assert_eq!(
        Some(row.event.as_str()),
        d["event"].as_str(),
        "event of {v}"
    );
    assert_eq!(row.wallet.as_deref(), d["wallet"].as_str(), "wallet of {v}");
    assert_eq!(&row.payload, d, "payload of seq {}", row.seq);
    let ts = v["timestamp"].as_f64().expect("timestamp");
    assert!(
        (row.created_at - ts).abs() < 0.002,
        "created_at {} vs timestamp {ts} of {v}",
        row.created_at
    );
}

#[test]
fn every_event_delivered_to_a_star_client_has_exactly_one_identical_row() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let worker = db_worker(&sim, &db, &spool);
    // The connect's daemon_status reaches clients once it is durable.
    wait_until(deadline(10.0), "the first event delivered", || {
        worker.status()["last_seq"].as_u64() >= Some(1)
    });
    let mut client = worker.ws();
    // `since: 0` replays everything from seq 1, so the client sees every event of the run.
    let reply = client.subscribe(json!({"events": ["*"], "since": 0}), deadline(5.0));
    assert_eq!(reply["resumed"], true, "{reply}");
    let epoch = reply["epoch"].as_str().expect("epoch").to_string();
    let before = reply["seq"].as_u64().expect("seq");
    assert!(
        before >= 1,
        "the daemon_status of the connect has a seq: {reply}"
    );
    const N: u64 = 40;
    for i in 0..N {
        emit_mixed(&sim, i);
    }
    let total = before + N;
    let seen = client.events_in_sequence(total as usize, 0, deadline(20.0));
    let injected = seen
        .iter()
        .filter(|(_, v)| index_of(&v["data"]).is_some())
        .count();
    assert_eq!(injected as u64, N, "every injected update arrives once");
    wait_rows(&db, total);
    let rows = db.event_rows();
    assert_eq!(
        rows.len(),
        seen.len(),
        "one row per delivered event, no other"
    );
    for (row, (_, v)) in rows.iter().zip(&seen) {
        assert_row_matches(row, v, &epoch);
    }
    let st = worker.status();
    assert_eq!(st["db"]["enabled"], true, "{st}");
    assert_eq!(st["db"]["connected"], true, "{st}");
    assert_eq!(st["db"]["spooled"], 0, "{st}");
    assert!(st["db"]["written"].as_u64() >= Some(total), "{st}");
}

#[test]
fn duplicated_and_replayed_daemon_updates_add_no_row() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let worker = db_worker(&sim, &db, &spool);
    let (mut client, seq) = star_client(&worker);
    let mut stream = Stream::new(&mut client, seq);
    let originals = [
        events::transaction(1),
        events::payment(2),
        events::verified(3),
        events::block(4),
    ];
    let emit_all = |sim: &Sim, sentinel: u64| {
        for u in &originals {
            let wallet = (u["event"] != "new_block").then_some(WALLET);
            sim.emit(u.clone(), wallet);
            sim.emit(u.clone(), wallet);
        }
        sim.emit(events::probe(sentinel, 0), None);
    };
    emit_all(&sim, 100);
    stream.until_data(deadline(10.0), "probe 100", |d| d["i"] == 100);
    // The daemon restarts and sends the same updates again: still nothing new.
    let (sim, _) = restart(sim, QUIET);
    stream.until_status("BTC", true, deadline(15.0));
    emit_all(&sim, 101);
    stream.until_data(deadline(10.0), "probe 101", |d| d["i"] == 101);
    let injected: Vec<u64> = stream
        .seen
        .iter()
        .filter(|(_, v)| v["data"]["event"] != "probe")
        .filter_map(|(_, v)| index_of(&v["data"]))
        .collect();
    assert_eq!(injected, vec![1, 2, 3, 4], "each update delivered once");
    let last = stream.last;
    wait_rows(&db, last);
    assert_eq!(db.count("events"), last as i64, "one row per seq");
    let tx = events::tx_hash(1);
    let req = events::request_id(2);
    let one = |what: &str| assert_eq!(db.count(what), 1, "{what}");
    one(&format!(
        "events WHERE event = 'new_transaction' AND payload->>'tx_hash' = '{tx}'"
    ));
    one(&format!(
        "events WHERE event = 'new_payment' AND payload->>'address' = '{req}'"
    ));
    one(&format!(
        "events WHERE event = 'verified_tx' AND payload->>'tx_hash' = '{}'",
        events::tx_hash(3)
    ));
    one(&format!(
        "events WHERE event = 'new_block' AND (payload->>'height')::bigint = {}",
        events::HEIGHT_BASE + 4
    ));
    one(&format!("transactions WHERE tx_hash = '{tx}'"));
    one(&format!("payments WHERE request_id = '{req}'"));
}

#[test]
fn the_sequence_continues_after_a_worker_restart_and_resume_spans_it() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let mut first = db_worker(&sim, &db, &spool);
    let (mut client, seq) = star_client(&first);
    for i in 0..10 {
        emit_mixed(&sim, i);
    }
    let before: Vec<(String, Value)> = client.events_in_sequence(10, seq, deadline(10.0));
    let epoch = first.status()["epoch"].as_str().expect("epoch").to_string();
    let last = seq + 10;
    first.sigterm();
    let status = first.wait_exit(deadline(20.0)).expect("exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    // The shutdown flushed the queue: every event of the first run is a row already, 1..=m
    // without a hole (m > last: the shutdown's own daemon_status).
    let m = assert_contiguous(&db, &epoch);
    assert!(
        m >= last,
        "rows right after the exit end at {m}, before {last}"
    );

    let second = db_worker(&sim, &db, &spool);
    let st = second.status();
    assert_eq!(
        st["epoch"],
        epoch.as_str(),
        "same epoch after a restart: {st}"
    );
    // The new run's connect event reaches clients once it is durable.
    wait_until(
        deadline(10.0),
        "the new run's first event delivered",
        || second.status()["last_seq"].as_u64() > Some(m),
    );
    let mut c2 = second.ws();
    let reply = c2.subscribe(
        json!({"events": ["*"], "since": 0, "epoch": epoch}),
        deadline(10.0),
    );
    assert_eq!(reply["resumed"], true, "resume across the restart: {reply}");
    let now = reply["seq"].as_u64().expect("seq");
    assert!(now > m, "numbering continues after {m}: {reply}");
    let replayed = c2.events_in_sequence(now as usize, 0, deadline(10.0));
    // The first run's events come back from the event log with their seq and data.
    for (orig, (_, again)) in before.iter().zip(&replayed[seq as usize..]) {
        assert_eq!(orig.1["seq"], again["seq"]);
        assert_eq!(orig.1["data"], again["data"], "replayed data of {}", orig.0);
    }
    let next = &replayed[m as usize].1["data"];
    assert_eq!(
        next["event"], "daemon_status",
        "first event of the new run: {next}"
    );
    assert_eq!(next["connected"], true, "{next}");
    emit_mixed(&sim, 10);
    let live = c2.events_in_sequence(1, now, deadline(10.0));
    assert_eq!(index_of(&live[0].1["data"]), Some(10));
    wait_rows(&db, now + 1);
    assert_eq!(
        assert_contiguous(&db, &epoch),
        now + 1,
        "no gap, no duplicate"
    );
}

/// Asserts that the event log holds exactly seqs `1..=m` of `epoch` and nothing else; returns m.
fn assert_contiguous(db: &TestDb, epoch: &str) -> u64 {
    let rows = db.event_rows();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let m = seqs.len() as i64;
    assert_eq!(
        seqs,
        (1..=m).collect::<Vec<_>>(),
        "seqs without gap or duplicate"
    );
    assert!(rows.iter().all(|r| r.epoch == epoch), "one epoch");
    m as u64
}

/// Regression: `DaemonLink::close` at shutdown only sends a close frame; the daemon's answer
/// then counted as a disconnect and the link reconnected during the shutdown grace, ran a
/// catch-up (RPC calls, payment requests marked gone) and published events after clients were
/// told the worker was going away.
#[test]
fn shutdown_does_not_reconnect_daemons() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let mut worker = db_worker(&sim, &db, &spool);
    let getinfo = |sim: &Sim| {
        sim.rpc_log()
            .iter()
            .filter(|c| c["method"] == "getinfo")
            .count()
    };
    wait_until(deadline(10.0), "the catch-up getinfo", || {
        getinfo(&sim) == 1
    });
    // A client that does not answer its close frame keeps the shutdown grace (2 s) running.
    let (_idle, _) = star_client(&worker);
    worker.sigterm();
    let status = worker
        .wait_exit(deadline(20.0))
        .expect("exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    let connects =
        db.count("events WHERE event = 'daemon_status' AND payload->>'connected' = 'true'");
    assert_eq!(connects, 1, "daemon connects recorded in this run");
    assert_eq!(getinfo(&sim), 1, "catch-ups run on the daemon");
}

#[test]
fn a_second_worker_on_the_same_database_exits_with_a_locked_error() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let mut first = db_worker(&sim, &db, &spool);
    let other_spool = TempDir::new("spool");
    let mut env: BTreeMap<String, String> = db_env(&db, &other_spool, &[]).into_iter().collect();
    for (k, v) in [
        ("WORKER_COINS", "BTC".to_string()),
        ("BTC_HOST", sim.addr.ip().to_string()),
        ("BTC_PORT", sim.addr.port().to_string()),
        ("WORKER_HOST", "127.0.0.1".to_string()),
        ("WORKER_PORT", free_port().to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    let mut second = Proc::spawn("second worker", &["run".to_string()], &env);
    let status = second
        .wait_exit(deadline(30.0))
        .expect("the second worker exits");
    assert!(!status.success(), "the second worker must fail: {status}");
    let out = second.output.tail(40);
    assert!(
        out.to_lowercase().contains("locked"),
        "a clear 'locked' error: {out}"
    );
    // The first one is unaffected and still writes.
    first
        .proc
        .assert_running("after the second worker was refused");
    let (mut client, seq) = star_client(&first);
    emit_mixed(&sim, 1);
    client.events_in_sequence(1, seq, deadline(10.0));
    wait_rows(&db, seq + 1);
}
