//! Persistence against the real PostgreSQL on 127.0.0.1:5432, a fresh database per test:
//! exactly-once event rows, idempotent replays that never regress a row, database-driven
//! monitoring (LISTEN/NOTIFY), resume across restarts and reading back the event log.

mod common;

use common::pg::*;
use cryptoworker::db::{DbMessage, PaymentRequest, WatchedWallet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn every_event_has_exactly_one_row_and_resubmitting_adds_none() {
    let db = TestDb::create();
    let spool = TempDir::new("persist");
    let (h, _rx, resume) = start_db(&db.url, spool.path(), 2, 64).unwrap();
    assert_eq!(resume.last_seq, 0);
    let events = mixed(&resume.epoch, 1..=2000);
    for e in &events {
        h.submit(e.clone());
    }
    let stats = h.stats();
    wait_for(WAIT, "2000 events written", || {
        stats.written.load(Ordering::Relaxed) >= 2000
    });
    for e in &events {
        h.submit(e.clone());
    }
    wait_for(WAIT, "the replay written", || {
        stats.written.load(Ordering::Relaxed) >= 4000
    });
    h.shutdown(Duration::from_secs(10));
    let s = stats.snapshot();
    assert_eq!(
        (s.spooled, s.dropped, s.failed, s.queue_depth),
        (0, 0, 0, 0),
        "{s:?}"
    );

    let mut c = db.client();
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM events WHERE epoch = $1",
            &[&resume.epoch],
        )
        .unwrap();
    let counts: (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(counts, (2000, 2000, 1, 2000));
    // Derived tables: one transaction row per (coin, hash, wallet), one tip, the payment history.
    let hashes = (1..=2000u64)
        .filter(|s| s % 5 == 1 || s % 5 == 2)
        .map(|s| s / 10);
    let distinct: std::collections::BTreeSet<u64> = hashes.collect();
    assert_eq!(db.count("transactions"), distinct.len() as i64);
    let tip: i64 = c
        .query_one("SELECT height FROM chain_tips WHERE coin = 'BTC'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tip, 800_000 + 2000);
    assert_eq!(db.count("payments"), 400, "each payment state once");
    let text: String = c
        .query_one(
            "SELECT payload::text FROM events WHERE epoch = $1 AND seq = 1",
            &[&resume.epoch],
        )
        .unwrap()
        .get(0);
    let payload: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(payload["event"], "new_transaction");
    assert_eq!(payload["data"]["amount"], "0.00001");
}

#[test]
fn an_older_update_replayed_after_a_newer_one_does_not_regress_rows() {
    let db = TestDb::create();
    let spool = TempDir::new("regress");
    let mut c = db.client();
    let (h, _rx, resume) = start_db(&db.url, spool.path(), 2, 16).unwrap();
    c.batch_execute(
        "INSERT INTO payment_requests (coin, xpub, request_id, status, sent_amount)
         VALUES ('btc', 'zpubA', 'req1', 0, 0)",
    )
    .unwrap();
    let e = &resume.epoch;
    let newer = [
        publish(e, 10, &payment_event("BTC", "zpubA", "req1", 3, "1.5")),
        publish(e, 11, &tx_event("BTC", "zpubA", "hx", "0.7")),
        publish(e, 12, &verified_event("BTC", "zpubA", "hx", 900)),
    ];
    let older = [
        publish(e, 5, &payment_event("BTC", "zpubA", "req1", 7, "0.5")),
        publish(e, 6, &tx_event("BTC", "zpubA", "hx", "0.1")),
        publish(e, 7, &verified_event("BTC", "zpubA", "hx", 800)),
    ];
    let stats = h.stats();
    for p in &newer {
        h.submit(p.clone());
    }
    wait_for(WAIT, "newer events", || {
        stats.written.load(Ordering::Relaxed) >= 3
    });
    for p in &older {
        h.submit(p.clone());
    }
    wait_for(WAIT, "older events", || {
        stats.written.load(Ordering::Relaxed) >= 6
    });
    h.shutdown(Duration::from_secs(10));

    let r = c
        .query_one(
            "SELECT status, sent_amount::text, tx_hashes FROM payment_requests WHERE request_id = 'req1'",
            &[],
        )
        .unwrap();
    assert_eq!(r.get::<_, i32>(0), 3, "status must stay at the newer value");
    assert_eq!(r.get::<_, String>(1), "1.5");
    assert_eq!(r.get::<_, Vec<String>>(2), vec!["hash-req1".to_string()]);
    let t = c
        .query_one(
            "SELECT amount::text, height, confirmed, tx_seq, verified_seq, first_seen < last_seen
             FROM transactions WHERE tx_hash = 'hx'",
            &[],
        )
        .unwrap();
    assert_eq!(t.get::<_, String>(0), "0.7");
    assert_eq!(t.get::<_, i64>(1), 900);
    assert!(t.get::<_, bool>(2));
    assert_eq!((t.get::<_, i64>(3), t.get::<_, i64>(4)), (11, 12));
    assert!(
        t.get::<_, bool>(5),
        "first_seen takes the older event's time"
    );
    assert_eq!(
        db.count("payments WHERE request_id = 'req1'"),
        2,
        "history keeps both states"
    );
    assert_eq!(db.count("events"), 6);
}

/// A `new_payment` that carries `confirmations` (`null` for none).
fn payment_with_confirmations(
    seq_status: i64,
    sent: &str,
    confirmations: serde_json::Value,
) -> cryptoworker::event::Event {
    payment_event("BTC", "zpubA", "req1", seq_status, sent).with("confirmations", confirmations)
}

#[test]
fn payment_request_confirmations_stayed_null() {
    let db = TestDb::create();
    let spool = TempDir::new("confs");
    let mut c = db.client();
    let (h, _rx, resume) = start_db(&db.url, spool.path(), 1, 16).unwrap();
    c.batch_execute(
        "INSERT INTO payment_requests (coin, xpub, request_id, status, sent_amount)
         VALUES ('btc', 'zpubA', 'req1', 0, 0)",
    )
    .unwrap();
    let e = &resume.epoch;
    let stats = h.stats();
    let row = |c: &mut postgres::Client| {
        let r = c
            .query_one(
                "SELECT status, sent_amount::text, confirmations FROM payment_requests
                 WHERE request_id = 'req1'",
                &[],
            )
            .unwrap();
        (
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, Option<i32>>(2),
        )
    };
    // Written with the status columns.
    h.submit(publish(
        e,
        10,
        &payment_with_confirmations(7, "0.5", serde_json::json!(2)),
    ));
    wait_for(WAIT, "the first payment", || {
        stats.written.load(Ordering::Relaxed) >= 1
    });
    assert_eq!(row(&mut c), (7, "0.5".into(), Some(2)));
    // An event without confirmations (null or absent) updates the status, not confirmations.
    h.submit(publish(
        e,
        11,
        &payment_with_confirmations(3, "1", serde_json::Value::Null),
    ));
    h.submit(publish(
        e,
        12,
        &payment_event("BTC", "zpubA", "req1", 3, "1.5"),
    ));
    wait_for(WAIT, "the payments without confirmations", || {
        stats.written.load(Ordering::Relaxed) >= 3
    });
    assert_eq!(row(&mut c), (3, "1.5".into(), Some(2)));
    // A newer count replaces it; an older event replayed later changes nothing.
    h.submit(publish(
        e,
        13,
        &payment_with_confirmations(3, "1.5", serde_json::json!(6)),
    ));
    wait_for(WAIT, "the newer count", || {
        stats.written.load(Ordering::Relaxed) >= 4
    });
    h.submit(publish(
        e,
        9,
        &payment_with_confirmations(0, "0.1", serde_json::json!(1)),
    ));
    wait_for(WAIT, "the older replay", || {
        stats.written.load(Ordering::Relaxed) >= 5
    });
    assert_eq!(row(&mut c), (3, "1.5".into(), Some(6)));
    // Out of order: the count comes from the newest event that had one (18), the status from
    // the newest event (20), as if they had been applied in order.
    h.submit(publish(
        e,
        20,
        &payment_event("BTC", "zpubA", "req1", 3, "2"),
    ));
    wait_for(WAIT, "the newest payment", || {
        stats.written.load(Ordering::Relaxed) >= 6
    });
    h.submit(publish(
        e,
        18,
        &payment_with_confirmations(7, "0.1", serde_json::json!(8)),
    ));
    wait_for(WAIT, "an older payment with a newer count", || {
        stats.written.load(Ordering::Relaxed) >= 7
    });
    assert_eq!(row(&mut c), (3, "2".into(), Some(8)));
    // Replaying everything changes nothing.
    for seq in [9, 10, 13] {
        h.submit(publish(
            e,
            seq,
            &payment_with_confirmations(0, "0.1", serde_json::json!(1)),
        ));
    }
    wait_for(WAIT, "the replays", || {
        stats.written.load(Ordering::Relaxed) >= 10
    });
    h.shutdown(Duration::from_secs(10));
    assert_eq!(row(&mut c), (3, "2".into(), Some(8)));
}

/// Receives messages until `pick` returns `Some`, or panics at the deadline.
fn wait_message<T>(
    rx: &crossbeam_channel::Receiver<DbMessage>,
    what: &str,
    mut pick: impl FnMut(DbMessage) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) => {
                if let Some(t) = pick(m) {
                    return t;
                }
            }
            Err(e) => panic!("no {what} before the deadline: {e}"),
        }
    }
}

#[test]
fn wallets_and_requests_inserted_while_running_arrive_and_gone_requests_leave() {
    let db = TestDb::create();
    let spool = TempDir::new("listen");
    let (h, rx, _resume) = start_db(&db.url, spool.path(), 1, 16).unwrap();
    assert!(matches!(
        rx.recv_timeout(WAIT),
        Ok(DbMessage::Connected(true))
    ));
    let initial = wait_message(&rx, "initial wallets", |m| match m {
        DbMessage::Wallets(w) => Some(w),
        _ => None,
    });
    assert!(initial.is_empty());
    let mut c = db.client();
    c.batch_execute(
        "INSERT INTO watched_wallets (coin, xpub, contract, label)
         VALUES ('eth', '0xabc', '0xtoken', 'shop')",
    )
    .unwrap();
    let want = WatchedWallet {
        coin: "ETH".into(),
        xpub: "0xabc".into(),
        contract: Some("0xtoken".into()),
        label: Some("shop".into()),
    };
    let got = wait_message(&rx, "the new wallet", |m| match m {
        DbMessage::Wallets(w) if w.contains(&want) => Some(w),
        _ => None,
    });
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key(), "0xabc_0xtoken");

    c.batch_execute(
        "INSERT INTO payment_requests (coin, xpub, request_id, status, sent_amount, tx_hashes)
         VALUES ('BTC', 'zpubA', 'open1', 7, 0.25, '{h1}'), ('BTC', 'zpubA', 'paid1', 3, 1, '{}'),
                ('BTC', 'zpubA', 'gone1', 0, 0, '{}')",
    )
    .unwrap();
    let reqs = wait_message(&rx, "open requests", |m| match m {
        DbMessage::Requests(r) if r.len() == 2 => Some(r),
        _ => None,
    });
    let open1 = PaymentRequest {
        coin: "BTC".into(),
        xpub: "zpubA".into(),
        contract: None,
        request_id: "open1".into(),
        status: 7,
        sent_amount: "0.25".into(),
        tx_hashes: vec!["h1".into()],
        confirmations: None,
    };
    assert!(reqs.contains(&open1), "{reqs:?}");
    assert!(
        reqs.iter().all(|r| r.request_id != "paid1"),
        "status 3 is not open"
    );

    h.mark_request_gone("BTC", "gone1");
    wait_for(WAIT, "the gone mark", || {
        db.count("payment_requests_gone") == 1
    });
    c.batch_execute("UPDATE payment_requests SET confirmations = 1 WHERE request_id = 'open1'")
        .unwrap();
    let reqs = wait_message(&rx, "requests without the gone one", |m| match m {
        DbMessage::Requests(r) if r.iter().any(|x| x.confirmations == Some(1)) => Some(r),
        _ => None,
    });
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].request_id, "open1");
    h.shutdown(Duration::from_secs(10));
}

#[test]
fn epoch_and_seq_continue_after_a_restart_and_the_log_reads_back() {
    let db = TestDb::create();
    let spool = TempDir::new("resume");
    let (h, _rx, first) = start_db(&db.url, spool.path(), 2, 32).unwrap();
    let events = mixed(&first.epoch, 1..=150);
    for e in &events {
        h.submit(e.clone());
    }
    h.shutdown(Duration::from_secs(10));

    let (h, rx, second) = start_db(&db.url, spool.path(), 2, 32).unwrap();
    assert_eq!(second.epoch, first.epoch, "the epoch survives restarts");
    assert_eq!(second.last_seq, 150);
    assert_eq!(second.tips.get("BTC"), Some(&800_150));

    h.query_events(7, &second.epoch, 100, 150);
    let got = wait_message(&rx, "query answer", |m| match m {
        DbMessage::Events {
            query_id: 7,
            result,
        } => Some(result),
        _ => None,
    })
    .unwrap();
    let seqs: Vec<u64> = got.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, (101..=150).collect::<Vec<_>>());
    let original: serde_json::Value = serde_json::from_str(events[120].payload()).unwrap();
    let read_back: serde_json::Value = serde_json::from_str(got[20].payload()).unwrap();
    assert_eq!(read_back, original, "payload survives the round trip");
    assert_eq!(got[20].meta, events[120].meta);
    assert!((got[20].timestamp - events[120].timestamp).abs() < 0.0015);

    h.query_events(8, "no-such-epoch", 0, 10);
    let none = wait_message(&rx, "empty answer", |m| match m {
        DbMessage::Events {
            query_id: 8,
            result,
        } => Some(result),
        _ => None,
    });
    assert_eq!(none.map(|v| v.len()), Ok(0));
    h.shutdown(Duration::from_secs(10));
}
