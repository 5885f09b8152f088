//! Unit tests of the simulated chain's flows (sans-io).

use super::*;
use serde_json::json;

fn names(out: &[Emit]) -> Vec<&str> {
    out.iter()
        .map(|e| e.update["event"].as_str().unwrap_or("?"))
        .collect()
}

fn chain(coin: &str, family: Family, wallet: &str) -> Chain {
    Chain::new(coin, family, &[wallet.to_string()], true, 42)
}

#[test]
fn btc_flow_is_unconfirmed_then_paid_and_verified() {
    let mut c = chain("BTC", Family::Btc, "zpubA");
    let out = c.pay_step(1000);
    assert_eq!(names(&out), ["new_payment", "new_transaction"]);
    let pay = &out[0].update;
    assert_eq!(out[0].wallet.as_deref(), Some("zpubA"));
    assert_eq!(pay["status"], 7);
    assert_eq!(pay["status_str"], "Unconfirmed");
    assert!(pay.get("contract").is_none());
    let id = pay["address"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 10);
    let tx = out[1].update["tx"].as_str().unwrap().to_string();
    assert_eq!(tx.len(), 64);
    assert_eq!(pay["tx_hashes"], json!([tx]));
    assert_eq!(c.tx(&tx).map(|t| c.confirmations(t)), Some(0));

    let out = c.mine();
    assert_eq!(names(&out), ["new_block", "new_payment", "verified_tx"]);
    assert_eq!(out[0].wallet, None);
    assert_eq!(out[0].update["height"], 800_001);
    assert_eq!(out[1].update["status"], 3);
    assert_eq!(
        out[2].update,
        json!({"event": "verified_tx", "tx": tx, "height": 800_001})
    );
    assert_eq!(c.request("zpubA", &id).map(|r| r.status), Some(3));
    c.mine();
    assert_eq!(c.tx(&tx).map(|t| c.confirmations(t)), Some(2));
}

#[test]
fn unloaded_wallets_move_state_but_emit_nothing() {
    let mut c = Chain::new("BTC", Family::Btc, &["zpubA".to_string()], false, 1);
    assert!(c.pay_step(0).is_empty());
    assert_eq!(c.counts(), (1, 1));
    let out = c.mine();
    assert_eq!(names(&out), ["new_block"]);
    c.load("zpubA");
    assert_eq!(names(&c.pay_step(0)), ["new_payment", "new_transaction"]);
    c.reset();
    assert!(!c.is_loaded("zpubA"));
    assert_eq!(names(&c.mine()), ["new_block"]);
}

#[test]
fn heights_strictly_increase() {
    let mut c = chain("XMR", Family::Xmr, "view");
    let h: Vec<u64> = (0..5)
        .map(|_| c.mine()[0].update["height"].as_u64().unwrap())
        .collect();
    assert_eq!(h, [3_000_001, 3_000_002, 3_000_003, 3_000_004, 3_000_005]);
}

#[test]
fn eth_block_comes_before_its_transaction_and_payment() {
    let key = "0xabc_0xdef";
    let mut c = chain("ETH", Family::Eth, key);
    let id = c.add_request(key, 25_000_000, "memo", 900, 0);
    assert_eq!(id.len(), 43);
    assert!(c.set_payer(key, &id, "0xpayer"));
    c.queue_payment(key, &id);
    assert!(c.pay_step(0).is_empty());
    let out = c.mine();
    assert_eq!(names(&out), ["new_block", "new_transaction", "new_payment"]);
    let tx = &out[1].update;
    assert_eq!(tx["from_address"], "0xpayer");
    assert_eq!(tx["to"], "0xabc");
    assert_eq!(tx["amount"], "25.000000");
    assert_eq!(tx["contract"], "0xdef");
    assert_eq!(tx["tx"].as_str().map(str::len), Some(66));
    let pay = &out[2].update;
    assert_eq!(pay["status"], 3);
    assert_eq!(pay["contract"], "0xdef");
    assert_eq!(pay["sent_amount"], "25.000000");
    assert_eq!(pay["address"], json!(id));
}

#[test]
fn eth_request_without_payer_is_not_matched() {
    let mut c = chain("ETH", Family::Eth, "0xabc");
    let id = c.add_request("0xabc", 10, "", 900, 0);
    c.queue_payment("0xabc", &id);
    c.pay_step(0);
    assert_eq!(names(&c.mine()), ["new_block", "new_transaction"]);
    assert_eq!(c.request("0xabc", &id).map(|r| r.status), Some(0));
}

#[test]
fn native_eth_amount_has_18_decimals() {
    let mut c = chain("ETH", Family::Eth, "0xabc");
    for _ in 0..10 {
        c.pay_step(0);
    }
    let out = c.mine();
    let tx = out
        .iter()
        .find(|e| e.update["event"] == "new_transaction")
        .unwrap();
    let amount = tx.update["amount"].as_str().unwrap();
    assert_eq!(amount.split_once('.').map(|(_, f)| f.len()), Some(18));
    assert_eq!(tx.update["contract"], Value::Null);
}

#[test]
fn xmr_payment_has_null_contract_and_no_verified_tx() {
    let mut c = chain("XMR", Family::Xmr, "view");
    let out = c.pay_step(0);
    assert_eq!(names(&out), ["new_payment", "new_transaction"]);
    assert_eq!(out[0].update["contract"], Value::Null);
    assert_eq!(out[0].update["address"].as_str().map(str::len), Some(16));
    assert_eq!(out[1].update.as_object().map(|o| o.len()), Some(2));
    assert_eq!(names(&c.mine()), ["new_block", "new_payment"]);
}

#[test]
fn bch_request_id_is_the_address() {
    let mut c = chain("BCH", Family::Btc, "xpub");
    let id = c.add_request("xpub", 1, "", 900, 0);
    assert!(id.starts_with("bitcoincash:qq"));
    assert_eq!(c.request("xpub", &id).map(|r| r.address.clone()), Some(id));
}

#[test]
fn set_request_creates_patches_and_deletes_silently() {
    let mut c = chain("BTC", Family::Btc, "w");
    let patch = RequestPatch {
        status: Some(7),
        sent: Some(500),
        tx_hashes: Some(vec!["aa".into()]),
        ..Default::default()
    };
    assert!(!c.set_request("w", "0123456789", Some(patch), 0));
    let r = c.request("w", "0123456789").cloned().unwrap();
    assert_eq!(
        (r.status, r.sent, r.amount, r.tx_hashes),
        (7, 500, 500, vec!["aa".to_string()])
    );
    let patch = RequestPatch {
        status: Some(3),
        ..Default::default()
    };
    assert!(c.set_request("w", "0123456789", Some(patch), 0));
    assert_eq!(
        c.request("w", "0123456789").map(|r| (r.status, r.sent)),
        Some((3, 500))
    );
    assert!(c.set_request("w", "0123456789", None, 0));
    assert!(c.request("w", "0123456789").is_none());
}

#[test]
fn balance_counts_paid_and_unconfirmed() {
    let mut c = chain("BTC", Family::Btc, "w");
    c.set_request(
        "w",
        "a",
        Some(RequestPatch {
            status: Some(3),
            sent: Some(5),
            ..Default::default()
        }),
        0,
    );
    c.set_request(
        "w",
        "b",
        Some(RequestPatch {
            status: Some(7),
            sent: Some(2),
            ..Default::default()
        }),
        0,
    );
    c.set_request(
        "w",
        "c",
        Some(RequestPatch {
            status: Some(0),
            sent: Some(1),
            ..Default::default()
        }),
        0,
    );
    assert_eq!(c.balance("w"), (5, 2));
    assert_eq!(c.balance("other"), (0, 0));
}

#[test]
fn split_key_separates_token_contract() {
    assert_eq!(split_key("0xabc_0xdef"), ("0xabc", Some("0xdef")));
    assert_eq!(split_key("zpub6r"), ("zpub6r", None));
    assert_eq!(split_key("x_"), ("x_", None));
}

#[test]
fn full_mempool_pauses_flows_and_full_wallet_table_refuses_loading() {
    let mut c = chain("BTC", Family::Btc, "w");
    c.mempool = (0..MAX_MEMPOOL).map(|i| i.to_string()).collect();
    assert!(c.pay_step(0).is_empty());
    assert_eq!(c.counts(), (0, 0));
    assert_eq!(
        names(&c.mine()),
        ["new_block"],
        "the block empties the mempool"
    );
    assert_eq!(names(&c.pay_step(0)), ["new_payment", "new_transaction"]);
    c.loaded = (0..MAX_LOADED).map(|i| i.to_string()).collect();
    assert!(!c.load("one_more"));
    assert!(c.load("5"), "an already loaded wallet still loads");
}
