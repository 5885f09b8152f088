//! Unit tests of the sans-io row builder.

use super::*;
use crate::event::{Event, Published};
use serde_json::json;

fn publish(seq: u64, ev: Event) -> Published {
    Published::new("e1".into(), seq, &ev, 1_000.0 + seq as f64)
}

fn tx(seq: u64, hash: &str, amount: Value) -> Published {
    let ev = Event::new("BTC".into(), "new_transaction", Some("w1".into()))
        .with("tx_hash", json!(hash))
        .with(
            "data",
            json!({"amount": amount, "from_address": null, "to_address": "a1",
                   "confirmations": 0, "contract": null,
                   "outputs": [{"address": "a1", "amount": "0.1"}, {"address": "a2"}]}),
        );
    publish(seq, ev)
}

fn payment(seq: u64, address: &str, status: i64, sent: &str) -> Published {
    let ev = Event::new("BTC".into(), "new_payment", Some("w1".into()))
        .with("address", json!(address))
        .with("status", json!(status))
        .with("status_str", json!("Unconfirmed"))
        .with("tx_hashes", json!(["t1", "t2"]))
        .with("sent_amount", json!(sent))
        .with("contract", Value::Null);
    publish(seq, ev)
}

#[test]
fn every_event_gets_one_log_row_and_its_kind_row() {
    let block = publish(
        3,
        Event::new("BTC".into(), "new_block", None).with("height", json!(800_000)),
    );
    let status = publish(
        4,
        Event::new("ETH".into(), "daemon_status", None).with("connected", json!(false)),
    );
    let items = [
        tx(1, "h1", json!("0.001")),
        payment(2, "r1", 7, "0.5"),
        block,
        status,
    ];
    let b = Batch::build(items.iter());
    assert_eq!(b.events.len(), 4);
    assert_eq!(b.events[0].seq, 1);
    assert_eq!(b.events[3].event, "daemon_status");
    assert_eq!(b.events[3].wallet, None);
    assert_eq!(b.txs.len(), 1);
    let t = &b.txs[0];
    assert_eq!((t.tx_hash.as_str(), t.wallet.as_str()), ("h1", "w1"));
    assert_eq!(t.amount.as_deref(), Some("0.001"));
    assert_eq!(t.to_address.as_deref(), Some("a1"));
    assert_eq!(t.from_address, None);
    assert_eq!(t.addresses, ["a1", "a2"]);
    assert_eq!(t.confirmations, Some(0));
    assert_eq!(
        b.tips,
        vec![TipRow {
            coin: "BTC".into(),
            height: 800_000,
            ts: 1003.0
        }]
    );
    assert_eq!(b.payments.len(), 1);
    let p = &b.payments[0];
    assert_eq!((p.request_id.as_str(), p.status), ("r1", 7));
    assert_eq!(p.tx_hashes, ["t1", "t2"]);
    assert_eq!(b.requests, b.payments);
}

#[test]
fn duplicate_keys_are_merged_newest_first_nulls_never_erase() {
    let items = [
        tx(5, "h", json!(null)),
        tx(2, "h", json!("0.3")),
        tx(9, "other", json!("1")),
    ];
    let b = Batch::build(items.iter());
    assert_eq!(b.txs.len(), 2);
    let h = b.txs.iter().find(|t| t.tx_hash == "h").unwrap();
    assert_eq!(h.seq, 5, "position of the newest event");
    assert_eq!(
        h.amount.as_deref(),
        Some("0.3"),
        "null of the newer kept the older value"
    );
    assert_eq!((h.first_seen, h.last_seen), (1002.0, 1005.0));
}

#[test]
fn requests_keep_the_newest_payment_and_tips_the_highest_block() {
    let block = |seq, h| {
        publish(
            seq,
            Event::new("BTC".into(), "new_block", None).with("height", json!(h)),
        )
    };
    let items = [
        payment(8, "r1", 3, "1"),
        payment(6, "r1", 7, "1"),
        block(1, 10),
        block(2, 12),
        block(3, 11),
    ];
    let b = Batch::build(items.iter());
    assert_eq!(b.payments.len(), 2, "each payment state is a history row");
    assert_eq!(b.requests.len(), 1);
    assert_eq!(b.requests[0].status, 3);
    assert_eq!(b.tips.len(), 1);
    assert_eq!(b.tips[0].height, 12);
}

#[test]
fn request_confirmations_were_lost_behind_a_newer_payment_without_them() {
    let with = |seq, status, confirmations: Value| {
        let ev = Event::new("BTC".into(), "new_payment", Some("w1".into()))
            .with("address", json!("r1"))
            .with("status", json!(status))
            .with("sent_amount", json!("1"))
            .with("confirmations", confirmations);
        publish(seq, ev)
    };
    let items = [
        with(4, 7, json!(1)),
        with(6, 3, json!(2)),
        with(9, 3, Value::Null),
        with(7, 3, json!("x")),
    ];
    let b = Batch::build(items.iter());
    assert_eq!(b.requests.len(), 1);
    let r = &b.requests[0];
    assert_eq!((r.seq, r.status), (9, 3), "status of the newest event");
    assert_eq!(
        r.confirmations,
        Some(2),
        "confirmations of the newest that had them"
    );
    assert_eq!(r.confirmations_at, Some(("e1".to_string(), 6)));
    let p9 = b.payments.iter().find(|p| p.seq == 9).unwrap();
    assert_eq!(
        (p9.confirmations, p9.confirmations_at.clone()),
        (None, None)
    );
    // Alone, an event without confirmations carries none.
    let b = Batch::build([with(3, 0, Value::Null)].iter());
    assert_eq!(b.requests[0].confirmations_at, None);
}

#[test]
fn malformed_fields_give_no_kind_row_but_the_log_row_stays() {
    let no_hash = publish(
        1,
        Event::new("BTC".into(), "new_transaction", Some("w".into())),
    );
    let bad_height = publish(
        2,
        Event::new("BTC".into(), "new_block", None).with("height", json!(-5)),
    );
    let no_status = publish(
        3,
        Event::new("BTC".into(), "new_payment", None).with("address", json!("r")),
    );
    let bad_amount = tx(4, "h", json!("12abc"));
    let items = [no_hash, bad_height, no_status, bad_amount];
    let b = Batch::build(items.iter());
    assert_eq!(b.events.len(), 4);
    assert!(b.tips.is_empty() && b.payments.is_empty());
    assert_eq!(b.txs.len(), 1);
    assert_eq!(
        b.txs[0].amount, None,
        "an invalid amount is stored as NULL, not garbage"
    );
}

#[test]
fn decimals_are_validated() {
    for ok in [
        "0",
        "0.001",
        "-1.5",
        "12345678901234567890.123",
        "1e-8",
        "2E+3",
    ] {
        assert_eq!(decimal(&json!(ok)).as_deref(), Some(ok), "{ok}");
    }
    for bad in [
        "", "abc", "1.", ".5", "1e", "0x10", "NaN", "Infinity", "1.2.3", "--1",
    ] {
        assert_eq!(decimal(&json!(bad)), None, "{bad}");
    }
    assert_eq!(decimal(&json!(1.25)).as_deref(), Some("1.25"));
    assert_eq!(decimal(&json!("9".repeat(101))), None);
    assert_eq!(decimal(&json!(true)), None);
}

#[test]
fn nul_characters_are_made_jsonb_safe() {
    let p = r#"{"a":"x\u0000y","b":["\u0000"]}"#;
    let s = sanitize_payload(p);
    assert!(!s.contains("\\u0000"));
    let v: Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["a"], "x\u{fffd}y");
    assert_eq!(sanitize_payload(r#"{"a":1}"#), r#"{"a":1}"#);
}

#[test]
fn a_seq_beyond_bigint_is_rejected_not_wrapped() {
    let items = [publish(
        u64::MAX,
        Event::new("BTC".into(), "new_block", None),
    )];
    let b = Batch::build(items.iter());
    assert!(b.events.is_empty());
    assert_eq!(b.rejected, 1);
}
