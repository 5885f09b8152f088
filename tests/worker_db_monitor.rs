//! Database-driven monitoring end to end (issue 4; docs/database.md, "Monitoring"): rows that
//! an application writes to `watched_wallets` and `payment_requests` while the worker runs change
//! what the worker does on its simulated daemon, and reconciliation writes back to
//! `payment_requests`.
//!
//! - a wallet inserted into `watched_wallets` is loaded on the daemon (`getbalance` in
//!   `sim_rpc_log`), its events then flow, and it is loaded again after a daemon restart;
//! - a payment request whose status moved while the daemon was down and then refusing auth is
//!   reconciled on reconnect: `new_payment` with `recovered: true` reaches clients, the row's
//!   status columns are updated, and a request the daemon no longer knows is marked gone;
//! - a request that did not move gives no `new_payment`, even though the database writes its
//!   amount `0` and the daemon `0.00000000`.

mod common;

use common::daemon::{Stream, restart, rpc_logged};
use common::events::{self, tx_hash};
use common::pg::{TempDir, TestDb};
use common::{QUIET, QUIET_REFUSING, Sim, Worker, deadline, star_client, wait_until};
use serde_json::{Value, json};

const WALLET: &str = "zpubMONITORwallet";

/// A worker on `sim` writing to `db` (spool in `spool`), with `extra` variables.
fn db_worker(sim: &Sim, db: &TestDb, spool: &TempDir, extra: &[(&str, &str)]) -> Worker {
    let spool_dir = spool.path().display().to_string();
    let mut env: Vec<(&str, String)> = db.worker_env();
    env.push(("DB_SPOOL_DIR", spool_dir));
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::worker_for(&[sim], &refs)
}

/// Runs one SQL statement on `db`.
fn sql(db: &TestDb, statement: &str) {
    db.client()
        .batch_execute(statement)
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Emits a probe with index `i` and reads until it arrives (everything before it is in `seen`).
fn drain(sim: &Sim, s: &mut Stream<'_>, i: u64) {
    sim.emit(events::probe(i, 0), None);
    s.until_data(deadline(10.0), "the probe", |d| {
        d["event"] == "probe" && d["i"] == i
    });
}

/// The `new_payment` events read so far for request `id`.
fn payments_for<'a>(s: &'a Stream<'_>, id: &str) -> Vec<&'a Value> {
    s.named("new_payment")
        .into_iter()
        .filter(|d| d["address"] == id)
        .collect()
}

#[test]
fn a_wallet_inserted_while_running_is_loaded_and_its_events_flow() {
    let sim = Sim::start(
        "BTC",
        &["--rate", "0", "--block-interval", "0", "--wallets", WALLET],
    );
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let worker = db_worker(&sim, &db, &spool, &[]);
    let (mut client, seq) = star_client(&worker);
    let mut s = Stream::new(&mut client, seq);
    assert!(!rpc_logged(&sim, "getbalance", WALLET), "not loaded yet");
    // A payment into a wallet nobody named: the daemon sends nothing for it.
    sim.call("sim_pay", json!([]));
    drain(&sim, &mut s, 1);
    let early: Vec<&Value> = s.seen.iter().map(|(_, v)| &v["data"]).collect();
    assert!(
        early.iter().all(|d| d["wallet"] != WALLET),
        "events of an unloaded wallet: {early:?}"
    );

    sql(
        &db,
        &format!(
            "INSERT INTO watched_wallets (coin, xpub, label) VALUES ('btc', '{WALLET}', 'shop')"
        ),
    );
    wait_until(deadline(10.0), "getbalance for the new wallet", || {
        rpc_logged(&sim, "getbalance", WALLET)
    });
    sim.call("sim_pay", json!([]));
    let paid = s.until_data(deadline(10.0), "a new_payment of the wallet", |d| {
        d["event"] == "new_payment" && d["wallet"] == WALLET
    });
    assert_eq!(paid["status"], 7, "{paid}");
    let id = paid["address"].as_str().expect("request id").to_string();
    wait_until(deadline(20.0), "the payment's row", || {
        db.count(&format!(
            "events WHERE event = 'new_payment' AND wallet = '{WALLET}' \
             AND payload->>'address' = '{id}'"
        )) == 1
    });
    assert_eq!(db.count("watched_wallets"), 1, "the worker inserts nothing");

    // A daemon restart forgets loaded wallets: the worker loads it again on reconnect.
    let (sim, _) = restart(sim, &["--rate", "0", "--block-interval", "0"]);
    s.until_status("BTC", true, deadline(15.0));
    wait_until(deadline(10.0), "getbalance after the restart", || {
        rpc_logged(&sim, "getbalance", WALLET)
    });
}

/// Inserts open requests into `payment_requests` while `worker` runs and waits until the
/// worker's listener has read them (`[DB] N open payment requests`, a debug line).
fn insert_requests(db: &TestDb, worker: &Worker, values: &[String]) {
    sql(
        db,
        &format!(
            "INSERT INTO payment_requests (coin, xpub, request_id, status, sent_amount, tx_hashes)
             VALUES {}",
            values.join(", ")
        ),
    );
    let line = format!("[DB] {} open payment requests", values.len());
    assert!(
        worker.proc.output.wait_for(&line, deadline(10.0)).is_some(),
        "the worker never read the requests ({line})"
    );
}

#[test]
fn a_request_that_moved_during_an_outage_is_reconciled_and_its_row_updated() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let worker = db_worker(&sim, &db, &spool, &[("LOG_LEVEL", "debug")]);
    let (mut client, seq) = star_client(&worker);
    let mut s = Stream::new(&mut client, seq);
    let (moved, gone) = (events::request_id(1), events::request_id(2));
    let (h1, h2) = (tx_hash(1), tx_hash(2));
    // The daemon knows both (an application creates a request on the daemon, then stores it):
    // the worker reconciles a request as soon as it reads it, and an unknown one would be gone.
    let open = json!({"status": 0, "sent_amount": "0"});
    sim.call("sim_set_request", json!([WALLET, moved, open]));
    let seen = json!({"status": 7, "sent_amount": "0.0005", "tx_hashes": [h2]});
    sim.call("sim_set_request", json!([WALLET, gone, seen]));
    insert_requests(
        &db,
        &worker,
        &[
            format!("('btc', '{WALLET}', '{moved}', 0, 0, '{{}}')"),
            format!("('BTC', '{WALLET}', '{gone}', 7, 0.0005, '{{{h2}}}')"),
        ],
    );

    // The daemon goes down, comes back refusing auth, and meanwhile the payment is mined.
    let (sim, _) = restart(sim, QUIET_REFUSING);
    s.until_status("BTC", false, deadline(10.0));
    let state = json!({"status": 3, "sent_amount": "0.001", "tx_hashes": [h1]});
    sim.call("sim_set_request", json!([WALLET, moved, state]));
    assert!(
        worker
            .proc
            .output
            .wait_for("authentication refused", deadline(10.0))
            .is_some(),
        "the worker tried the daemon while it refused auth"
    );
    sim.set_fault(json!({"refuse_auth": false}));
    s.until_status("BTC", true, deadline(15.0));
    let got = s.until_data(deadline(10.0), "the recovered new_payment", |d| {
        d["event"] == "new_payment" && d["address"] == moved.as_str()
    });
    assert_eq!(got["recovered"], true, "{got}");
    assert_eq!(got["status"], 3, "{got}");
    assert_eq!(got["wallet"], WALLET, "{got}");
    assert_eq!(got["tx_hashes"], json!([h1]), "{got}");
    let sent = got["sent_amount"].as_str().expect("sent_amount");
    assert_eq!(common::decimal_units(sent, 8), Some(100_000), "{got}");

    let row_moved = format!(
        "payment_requests WHERE request_id = '{moved}' AND status = 3 \
         AND sent_amount = 0.001 AND tx_hashes = ARRAY['{h1}']"
    );
    wait_until(deadline(20.0), "the moved request's row updated", || {
        db.count(&row_moved) == 1
    });
    wait_until(deadline(20.0), "the unknown request marked gone", || {
        db.count(&format!(
            "payment_requests_gone WHERE coin = 'BTC' AND request_id = '{gone}'"
        )) == 1
    });
    let untouched = format!(
        "payment_requests WHERE request_id = '{gone}' AND status = 7 AND sent_amount = 0.0005"
    );
    assert_eq!(
        db.count(&untouched),
        1,
        "a gone request's row is left as it was"
    );
    assert_eq!(
        db.count(&format!(
            "events WHERE event = 'new_payment' AND payload->>'address' = '{moved}' \
             AND payload->'recovered' = 'true'"
        )),
        1,
        "the recovered event is in the log"
    );
    assert_eq!(
        db.count("payment_requests"),
        2,
        "the worker inserts nothing"
    );
}

/// Regression: reconciliation compared amounts as text, so a request stored with
/// `sent_amount = 0` (read back as `"0"`) and reported by the daemon as `"0.00000000"` counted as
/// moved, and every reconnect announced a `new_payment` (`recovered: true`) that did not happen.
#[test]
fn an_unmoved_request_from_the_database_gives_no_new_payment_on_reconnect() {
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let worker = db_worker(&sim, &db, &spool, &[("LOG_LEVEL", "debug")]);
    let (mut client, seq) = star_client(&worker);
    let mut s = Stream::new(&mut client, seq);
    let still = events::request_id(3);
    let open = json!({"status": 0, "sent_amount": "0"});
    sim.call("sim_set_request", json!([WALLET, still, open]));
    insert_requests(
        &db,
        &worker,
        &[format!("('BTC', '{WALLET}', '{still}', 0, 0, '{{}}')")],
    );
    let caught_up = "Caught up BTC";
    wait_until(
        deadline(15.0),
        "the first connect's catch-up summary",
        || worker.proc.output.contains(caught_up),
    );
    let before = worker.proc.output.matching(caught_up).len();
    let (sim, _) = restart(sim, QUIET_REFUSING);
    s.until_status("BTC", false, deadline(10.0));
    let state = json!({"status": 0, "amount": "0.002"});
    sim.call("sim_set_request", json!([WALLET, still, state]));
    sim.set_fault(json!({"refuse_auth": false}));
    s.until_status("BTC", true, deadline(15.0));
    // The reconnect's catch-up has applied every answer once its summary line is out; the probe
    // then marks the end of what the event stream can carry from it.
    wait_until(deadline(15.0), "the reconnect's catch-up summary", || {
        worker.proc.output.matching(caught_up).len() > before
    });
    let summary = worker
        .proc
        .output
        .matching(caught_up)
        .pop()
        .unwrap_or_default();
    assert!(summary.contains("(0 moved"), "nothing moved: {summary}");
    assert!(
        rpc_logged(&sim, "get_request", WALLET),
        "the request was checked"
    );
    drain(&sim, &mut s, 7);
    let got = payments_for(&s, &still);
    assert!(got.is_empty(), "nothing moved, yet: {got:?}");
}

/// A wallet watched only because an open payment request names it stays watched when
/// `watched_wallets` changes: after a daemon restart it is loaded again along with the table's.
#[test]
fn a_request_wallet_stays_watched_when_watched_wallets_change() {
    const REQUEST_WALLET: &str = "zpubREQUESTONLYwallet";
    let sim = Sim::start("BTC", QUIET);
    let (db, spool) = (TestDb::create(), TempDir::new("spool"));
    let worker = db_worker(&sim, &db, &spool, &[("LOG_LEVEL", "debug")]);
    let id = events::request_id(1);
    let open = json!({"status": 0, "sent_amount": "0"});
    sim.call("sim_set_request", json!([REQUEST_WALLET, id, open]));
    insert_requests(
        &db,
        &worker,
        &[format!("('btc', '{REQUEST_WALLET}', '{id}', 0, 0, '{{}}')")],
    );
    wait_until(deadline(10.0), "the request's wallet loaded", || {
        rpc_logged(&sim, "getbalance", REQUEST_WALLET)
    });
    sql(
        &db,
        &format!(
            "INSERT INTO watched_wallets (coin, xpub, label) VALUES ('btc', '{WALLET}', 'shop')"
        ),
    );
    wait_until(deadline(10.0), "the table's wallet loaded", || {
        rpc_logged(&sim, "getbalance", WALLET)
    });

    let (sim, _) = restart(sim, QUIET);
    wait_until(
        deadline(15.0),
        "both wallets loaded after the restart",
        || rpc_logged(&sim, "getbalance", WALLET) && rpc_logged(&sim, "getbalance", REQUEST_WALLET),
    );
}
