//! Resume served from the event log (docs/protocol.md, "Resume", and docs/database.md; issue 4):
//! with a tiny in-memory ring (`WORKER_RING_SIZE=5`), a client that resumes from an old seq gets
//! every missed event from PostgreSQL, in order, with its original seq, data and timestamp, with
//! `resumed: true`, then the live stream with no gap and no duplicate — also while events keep
//! arriving during the resume, and with a filter applied to the replay.

mod common;

use common::events::{self, index_of};
use common::pg::{TempDir, TestDb};
use common::{QUIET, Sim, Worker, WsClient, deadline, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Pacing of the background emitter while clients resume (load generation, not a wait).
const EMIT_PACE: std::time::Duration = std::time::Duration::from_millis(5);
const WALLET: &str = "zpubRESUMEwallet";
const RING: &str = "5";

/// A worker on `sim` writing to `db`, keeping only [`RING`] events in memory.
fn db_worker(sim: &Sim, db: &TestDb, spool: &TempDir) -> Worker {
    let spool_dir = spool.path().display().to_string();
    let mut env: Vec<(&str, String)> = db.worker_env();
    env.push(("DB_SPOOL_DIR", spool_dir));
    env.push(("WORKER_RING_SIZE", RING.to_string()));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::worker_for(&[sim], &refs)
}

/// Emits the mixed update `i` (wallet-scoped ones for [`WALLET`]).
fn emit_mixed(sim: &Sim, i: u64) {
    let wallet = events::mixed_has_wallet(i).then_some(WALLET);
    sim.emit(events::mixed(i), wallet);
}

/// A `"*"` client that has read every event of the run up to `n` more injected ones, by seq.
fn witness(worker: &Worker, sim: &Sim, n: u64) -> (String, BTreeMap<u64, Value>) {
    // The connect's daemon_status reaches clients once it is durable: count from after it.
    wait_until(deadline(10.0), "the first event delivered", || {
        worker.status()["last_seq"].as_u64() >= Some(1)
    });
    let mut c = worker.ws();
    let reply = c.subscribe(json!({"events": ["*"], "since": 0}), deadline(5.0));
    let epoch = reply["epoch"].as_str().expect("epoch").to_string();
    let before = reply["seq"].as_u64().expect("seq");
    for i in 0..n {
        emit_mixed(sim, i);
    }
    let all = c.events_in_sequence((before + n) as usize, 0, deadline(20.0));
    let by_seq = all
        .into_iter()
        .map(|(_, v)| (v["seq"].as_u64().unwrap_or(0), v))
        .collect();
    (epoch, by_seq)
}

/// Waits until the event log holds `n` rows.
fn wait_rows(db: &TestDb, n: u64) {
    wait_until(deadline(20.0), &format!("{n} rows in events"), || {
        db.count("events") >= n as i64
    });
}

/// Asserts that a replayed event is the original one: same seq, data and (to the ms) timestamp.
fn assert_same_event(replayed: &Value, original: &Value) {
    assert_eq!(replayed["seq"], original["seq"], "{replayed}");
    assert_eq!(
        replayed["data"], original["data"],
        "seq {}",
        original["seq"]
    );
    let (a, b) = (
        replayed["timestamp"].as_f64(),
        original["timestamp"].as_f64(),
    );
    let (a, b) = (a.expect("timestamp"), b.expect("timestamp"));
    assert!((a - b).abs() <= 0.0015, "timestamp {a} vs {b}");
}

/// Resumes `c` from `since` in `epoch` with `fields` as the filter; returns the reply.
fn resume(c: &mut WsClient, fields: Value, since: u64, epoch: &str) -> Value {
    let mut msg = fields;
    msg["since"] = json!(since);
    msg["epoch"] = json!(epoch);
    c.subscribe(msg, deadline(15.0))
}

#[test]
fn a_resume_older_than_the_ring_is_served_in_order_from_the_event_log() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let worker = db_worker(&sim, &db, &spool);
    let (epoch, mut seen) = witness(&worker, &sim, 30);
    let last = *seen.keys().last().expect("events");
    wait_rows(&db, last);

    let mut c = worker.ws();
    let reply = resume(&mut c, json!({"events": ["*"]}), 3, &epoch);
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["seq"].as_u64(), Some(last), "{reply}");
    let replayed = c.events_in_sequence((last - 3) as usize, 3, deadline(10.0));
    for (_, v) in &replayed {
        assert_same_event(v, &seen[&v["seq"].as_u64().unwrap_or(0)]);
    }
    // Then live, right after.
    for i in 30..33 {
        emit_mixed(&sim, i);
    }
    let live = c.events_in_sequence(3, last, deadline(10.0));
    let idx: Vec<Option<u64>> = live.iter().map(|(_, v)| index_of(&v["data"])).collect();
    assert_eq!(idx, vec![Some(30), Some(31), Some(32)]);
    seen.extend(
        live.into_iter()
            .map(|(_, v)| (v["seq"].as_u64().unwrap_or(0), v)),
    );
    wait_rows(&db, last + 3);

    // A filtered resume replays only what the filter matches, still from the log.
    let mut blocks = worker.ws();
    let reply = resume(&mut blocks, json!({"events": ["new_block"]}), 0, &epoch);
    assert_eq!(reply["resumed"], true, "{reply}");
    let expected: Vec<&Value> = seen
        .values()
        .filter(|v| v["data"]["event"] == "new_block")
        .collect();
    assert!(
        expected.len() >= 6,
        "the run had blocks: {}",
        expected.len()
    );
    for original in expected {
        assert_same_event(&blocks.recv_event(deadline(10.0)), original);
    }
    emit_mixed(&sim, 35);
    let next = blocks.recv_event(deadline(10.0));
    assert_eq!(index_of(&next["data"]), Some(35), "{next}");
    assert_eq!(next["seq"].as_u64(), Some(last + 4), "{next}");
}

/// Resumes that land while the daemon keeps sending: the event log answers for the part before
/// the ring while the ring (5 events here) moves on. Every resumed client must still get every
/// seq once — never a 4008 close for a client that has read nothing yet.
#[test]
fn a_resume_from_the_event_log_while_events_keep_coming_has_no_gap_or_duplicate() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let worker = db_worker(&sim, &db, &spool);
    let (epoch, seen) = witness(&worker, &sim, 20);
    let base = *seen.keys().last().expect("events");
    wait_rows(&db, base);
    const MORE: u64 = 60;
    let emitted = AtomicU64::new(0);
    let resumed: Vec<(WsClient, u64, Value)> = std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 100..100 + MORE {
                emit_mixed(&sim, i);
                emitted.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(EMIT_PACE);
            }
        });
        // Several resumes land while the stream runs (and the log lags behind the ring).
        let mut out = Vec::new();
        for since in [2, 5, 9] {
            wait_until(deadline(10.0), "more events emitted", || {
                emitted.load(Ordering::SeqCst) >= since * 5
            });
            let mut c = worker.ws();
            let reply = resume(&mut c, json!({"events": ["*"]}), since, &epoch);
            out.push((c, since, reply));
        }
        out
    });
    let final_seq = base + MORE;
    for (mut c, since, reply) in resumed {
        assert_eq!(reply["resumed"], true, "{reply}");
        let now = reply["seq"].as_u64().expect("seq");
        assert!(now > base, "the resume landed while events flowed: {reply}");
        let got = c.events_in_sequence((final_seq - since) as usize, since, deadline(20.0));
        for (_, v) in got.iter().take((base - since) as usize) {
            assert_same_event(v, &seen[&v["seq"].as_u64().unwrap_or(0)]);
        }
        let tail: Vec<Option<u64>> = got[(base - since) as usize..]
            .iter()
            .map(|(_, v)| index_of(&v["data"]))
            .collect();
        let want: Vec<Option<u64>> = (100..100 + MORE).map(Some).collect();
        assert_eq!(tail, want, "the live part, in order, resumed from {since}");
    }
}
