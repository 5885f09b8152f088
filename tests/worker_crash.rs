//! The worker killed with SIGKILL while clients read a steady stream, with the database up and
//! during a database outage (a PRIVATE PostgreSQL cluster the test stops; the shared one is never
//! touched). Then the database comes back, the worker restarts on the same database and spool.
//!
//! What must hold: every event a client saw before the kill is in the event log afterwards under
//! the seq it had, with the same payload; the log has no hole (live events commit in seq order);
//! the restarted worker gives none of those seqs to another event (a client resuming from before its last seen seq gets exactly what it saw, then new
//! events, with `resumed: true` and no gap).

mod common;

use common::pg::{PrivateCluster, TempDir, TestDb};
use common::{RecvError, Sim, Worker, WsClient, deadline, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;

const WALLET: &str = "zpubCRASHwallet";
/// A steady stream: payment flows into one preloaded wallet plus blocks.
const STEADY: &[&str] = &[
    "--rate",
    "1000",
    "--block-interval",
    "0.3",
    "--wallets",
    WALLET,
    "--preload-wallets",
];

fn db_worker(sim: &Sim, db: &TestDb, spool: &TempDir) -> Worker {
    common::db_worker_for(&[sim], db.worker_env(), spool.path())
}

/// Reads events for `secs` (or until the connection ends); checks that seq grows by one.
/// Returns false when the connection ended.
fn read_for(c: &mut WsClient, secs: f64, seen: &mut BTreeMap<u64, Value>, last: &mut u64) -> bool {
    let until = deadline(secs);
    while Instant::now() < until {
        match c.recv_text(until) {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text).expect("JSON from the worker");
                if v["type"] != "event" {
                    continue;
                }
                let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("seq in {text}"));
                assert_eq!(seq, *last + 1, "seq must grow by exactly one: {text}");
                *last = seq;
                seen.insert(seq, v["data"].clone());
            }
            Err(RecvError::Timeout) => {}
            Err(_) => return false,
        }
    }
    true
}

fn sigkill(worker: &mut Worker) {
    let pid = worker.proc.pid().to_string();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid}");
    assert!(
        worker.wait_exit(deadline(10.0)).is_some(),
        "worker exits on SIGKILL"
    );
}

/// The crash scenario; `outage` stops PostgreSQL before the kill.
fn crash_and_restart(outage: bool) {
    let cluster = PrivateCluster::start();
    let db = TestDb::create_on(&cluster.host_port());
    let spool = TempDir::new("crash-spool");
    let sim = Sim::start("BTC", STEADY);
    let mut worker = db_worker(&sim, &db, &spool);
    let mut client = worker.ws();
    let reply = client.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let epoch = reply["epoch"].as_str().expect("epoch").to_string();
    let mut last = reply["seq"].as_u64().expect("seq");
    let mut seen = BTreeMap::new();
    assert!(read_for(&mut client, 1.5, &mut seen, &mut last));
    if outage {
        cluster.kill();
        let before = last;
        assert!(read_for(&mut client, 2.0, &mut seen, &mut last));
        assert!(
            last > before + 20,
            "events keep flowing during the outage ({before} -> {last})"
        );
    }
    sigkill(&mut worker);
    // Frames already on their way are seen too: read until the connection ends.
    read_for(&mut client, 2.0, &mut seen, &mut last);
    assert!(seen.len() > 100, "a steady stream was seen: {}", seen.len());
    eprintln!(
        "[test] killed the worker after seq {last} ({} events seen)",
        seen.len()
    );
    if outage {
        cluster.resume();
    }
    let restarted = db_worker(&sim, &db, &spool);
    wait_until(deadline(60.0), "every seen seq in the event log", || {
        db.count(&format!("events WHERE epoch = '{epoch}' AND seq <= {last}")) >= seen.len() as i64
    });
    // The spool of the killed run is replayed by several writers at once: wait until it is
    // empty before looking for holes.
    wait_until(deadline(60.0), "the spool replayed", || {
        restarted.status()["db"]["spooled"] == 0
    });
    let rows: BTreeMap<u64, Value> = db
        .event_rows()
        .into_iter()
        .filter(|r| r.epoch == epoch)
        .map(|r| (r.seq as u64, r.payload))
        .collect();
    for (seq, data) in &seen {
        assert_eq!(rows.get(seq), Some(data), "seq {seq} as the client saw it");
    }
    // No hole: a crash never leaves a later seq stored and an earlier one missing.
    let stored: Vec<u64> = rows.keys().copied().collect();
    let first = stored.first().copied().unwrap_or(1);
    assert_eq!(
        stored,
        (first..first + stored.len() as u64).collect::<Vec<_>>(),
        "the event log of the epoch has no hole"
    );
    // Resume from before the last seen seq: the same events again, then new ones, no gap.
    let from = last.saturating_sub(20);
    let mut c = restarted.ws();
    let reply = c.subscribe(
        json!({"events": ["*"], "since": from, "epoch": epoch}),
        deadline(10.0),
    );
    assert_eq!(reply["resumed"], true, "{reply}");
    let mut after = BTreeMap::new();
    let mut resumed_last = from;
    wait_until(deadline(20.0), "new events after the restart", || {
        read_for(&mut c, 0.2, &mut after, &mut resumed_last);
        resumed_last > last + 10
    });
    for seq in from + 1..=last {
        assert_eq!(
            after.get(&seq),
            seen.get(&seq),
            "seq {seq} after the restart"
        );
    }
}

#[test]
fn sigkill_with_the_database_up_reuses_no_seq_and_loses_no_seen_event() {
    crash_and_restart(false);
}

#[test]
fn sigkill_during_a_database_outage_reuses_no_seq_and_loses_no_seen_event() {
    crash_and_restart(true);
}
