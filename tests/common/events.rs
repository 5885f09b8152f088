//! Daemon updates to inject with `sim_emit` (BTC family), each carrying an index `i` that the
//! test can read back from the client event ([`index_of`]), and checks of the client event
//! envelope of docs/protocol.md, "Events" ([`assert_envelope`]).
//!
//! Invariants: updates built from distinct indexes are never duplicates of each other in the
//! de-duplication sense of docs/protocol.md (distinct tx hashes, payment addresses and amounts,
//! block heights strictly growing with `i`), so every one of them must reach a matching subscriber.

use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Block heights used by [`block`] start here, far above the simulator's own (800000 + a few),
/// so injected blocks are always new.
pub const HEIGHT_BASE: u64 = 900_000;

/// A 64-hex tx hash encoding `i`.
pub fn tx_hash(i: u64) -> String {
    format!("{:064x}", 0xfeed_0000_0000u64 + i)
}

/// A 10-hex payment request id encoding `i`.
pub fn request_id(i: u64) -> String {
    format!("{:010x}", 0xa0_0000_0000u64 + i)
}

/// `new_block` at `HEIGHT_BASE + i` (global).
pub fn block(i: u64) -> Value {
    json!({"event": "new_block", "height": HEIGHT_BASE + i})
}

/// `new_transaction` of [`tx_hash`]`(i)` (wallet-scoped; the simulator does not know the tx, so
/// the worker's lookup fails and the event goes out with null details).
pub fn transaction(i: u64) -> Value {
    json!({"event": "new_transaction", "tx": tx_hash(i)})
}

/// `new_payment` for request [`request_id`]`(i)`, unconfirmed, paying `i` satoshis.
pub fn payment(i: u64) -> Value {
    json!({"event": "new_payment", "address": request_id(i), "status": 7,
           "status_str": "Unconfirmed", "tx_hashes": [tx_hash(i)],
           "sent_amount": format!("0.{:08}", i + 1)})
}

/// `verified_tx` of [`tx_hash`]`(i)`.
pub fn verified(i: u64) -> Value {
    json!({"event": "verified_tx", "tx": tx_hash(i), "height": HEIGHT_BASE + i})
}

/// An event the worker does not know (passed through to `"*"` subscribers), with `pad` filler
/// bytes to make it as large as a test needs.
pub fn probe(i: u64, pad: usize) -> Value {
    json!({"event": "probe", "i": i, "pad": "x".repeat(pad)})
}

/// The update of kind `i % 5` for index `i` (block, transaction, payment, verified, probe).
pub fn mixed(i: u64) -> Value {
    match i % 5 {
        0 => block(i),
        1 => transaction(i),
        2 => payment(i),
        3 => verified(i),
        _ => probe(i, 0),
    }
}

/// Whether [`mixed`]`(i)` is wallet-scoped.
pub fn mixed_has_wallet(i: u64) -> bool {
    !i.is_multiple_of(5)
}

/// The index an injected update carried, read back from the client event's `data`.
pub fn index_of(data: &Value) -> Option<u64> {
    let hex = |s: &Value, base: u64| {
        s.as_str()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .and_then(|n| n.checked_sub(base))
    };
    match data["event"].as_str()? {
        "new_block" => data["height"].as_u64()?.checked_sub(HEIGHT_BASE),
        "new_transaction" | "verified_tx" => hex(&data["tx_hash"], 0xfeed_0000_0000),
        "new_payment" => hex(&data["address"], 0xa0_0000_0000),
        "probe" => data["i"].as_u64(),
        _ => None,
    }
}

/// Checks the envelope (docs/protocol.md, "Events") of one client event (`text` as received, `v`
/// parsed): `type`, a positive `seq`, a millisecond `timestamp` close to now, `data.event`,
/// `data.coin` and, for the known kinds, every field with its type.
pub fn assert_envelope(text: &str, v: &Value, coin: &str) {
    assert_eq!(v["type"], "event", "{text}");
    assert!(v["seq"].as_u64().is_some_and(|s| s > 0), "seq: {text}");
    super::assert_timestamp_ms(text, 120.0);
    let d = &v["data"];
    assert!(d.is_object(), "data: {text}");
    assert_eq!(d["coin"], coin, "coin: {text}");
    let kind = d["event"]
        .as_str()
        .unwrap_or_else(|| panic!("data.event: {text}"));
    let is_str = |k: &str| d[k].as_str().is_some_and(|s| !s.is_empty());
    let wallet_ok = is_str("wallet");
    match kind {
        "new_block" => {
            assert!(d["height"].is_u64(), "height: {text}");
            assert!(d.get("wallet").is_none_or(Value::is_null), "wallet: {text}");
        }
        "new_transaction" => {
            assert!(wallet_ok && is_str("tx_hash"), "{text}");
            assert_transaction_data(&d["data"], text);
        }
        "new_payment" => {
            assert!(wallet_ok && is_str("address"), "{text}");
            let status = d["status"].as_i64().unwrap_or(-1);
            assert!([0, 1, 2, 3, 7].contains(&status), "status: {text}");
            assert!(d["status_str"].is_string(), "status_str: {text}");
            let hashes = d["tx_hashes"]
                .as_array()
                .unwrap_or_else(|| panic!("{text}"));
            assert!(hashes.iter().all(Value::is_string), "tx_hashes: {text}");
            assert_amount(&d["sent_amount"], text);
            assert!(
                d.get("contract").is_some_and(Value::is_null),
                "contract: {text}"
            );
        }
        "verified_tx" => {
            assert!(wallet_ok && is_str("tx_hash"), "{text}");
            assert!(d["height"].is_u64(), "height: {text}");
        }
        "daemon_status" => {
            assert!(d["connected"].is_boolean(), "connected: {text}");
        }
        _ => {}
    }
}

/// `new_transaction.data`: every field present; amounts decimal strings; nulls where unknown.
fn assert_transaction_data(inner: &Value, text: &str) {
    let obj = inner
        .as_object()
        .unwrap_or_else(|| panic!("data.data: {text}"));
    for key in cryptoworker::event::TRANSACTION_DATA_KEYS {
        assert!(obj.contains_key(key), "data.data.{key} missing: {text}");
    }
    if !inner["amount"].is_null() {
        assert_amount(&inner["amount"], text);
    }
    for key in ["from_address", "to_address", "contract"] {
        assert!(
            inner[key].is_null() || inner[key].is_string(),
            "{key}: {text}"
        );
    }
    assert!(
        inner["confirmations"].is_null() || inner["confirmations"].is_u64(),
        "confirmations: {text}"
    );
    if let Some(outs) = inner.get("outputs").filter(|o| !o.is_null()) {
        for o in outs.as_array().unwrap_or_else(|| panic!("outputs: {text}")) {
            assert!(o["address"].is_string(), "output address: {text}");
            assert_amount(&o["amount"], text);
        }
    }
}

/// Checks a BTC-family `new_transaction.data` against the daemon's `get_transaction` answer `tx`
/// (docs/daemon.md, "Transaction lookups"): `amount` is the sum of the outputs, `to_address` the
/// first output's address, `outputs` each address with its amount (8 decimals), `confirmations` a
/// number.
pub fn assert_btc_enrichment(inner: &Value, tx: &Value, text: &str) {
    let outs = tx["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("outputs in {tx}"));
    let sats: Vec<u128> = outs
        .iter()
        .map(|o| u128::from(o["value_sats"].as_u64().unwrap_or(0)))
        .collect();
    let amount = inner["amount"]
        .as_str()
        .unwrap_or_else(|| panic!("amount not filled: {text}"));
    let units = |a: &str| super::decimal_units(a, 8);
    assert_eq!(units(amount), Some(sats.iter().sum()), "amount: {text}");
    assert_eq!(
        inner["to_address"], outs[0]["address"],
        "to_address: {text}"
    );
    let got = inner["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("outputs: {text}"));
    assert_eq!(got.len(), outs.len(), "outputs: {text}");
    for ((g, o), s) in got.iter().zip(outs).zip(&sats) {
        assert_eq!(g["address"], o["address"], "{text}");
        assert_eq!(g["amount"].as_str().and_then(units), Some(*s), "{text}");
    }
    assert!(inner["confirmations"].is_u64(), "confirmations: {text}");
}

/// An amount: a decimal string, never a float.
pub fn assert_amount(v: &Value, text: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("amount {v} is not a string: {text}"));
    assert!(
        super::decimal_units(s, 18).is_some(),
        "amount {s:?} is not a decimal: {text}"
    );
}

/// The subscription semantics of docs/protocol.md ("`subscribe`"), modelled from a `subscribe`
/// request, to compute which injected updates a client must receive.
#[derive(Debug, Clone)]
pub struct FilterModel {
    /// The request it was built from.
    pub request: Value,
    events: Option<Vec<String>>,
    coins: Option<Vec<String>>,
    wallets: Option<Vec<String>>,
    addresses: Option<Vec<String>>,
}

impl FilterModel {
    /// Reads the `events`, `coins`, `wallets` and `addresses` lists of a subscribe request
    /// (`"*"` or absent = unrestricted).
    pub fn from_request(request: &Value) -> FilterModel {
        let list = |k: &str| -> Option<Vec<String>> {
            let items: Vec<String> = request
                .get(k)?
                .as_array()?
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect();
            (!items.iter().any(|s| s == "*")).then_some(items)
        };
        FilterModel {
            request: request.clone(),
            events: list("events"),
            coins: list("coins").map(|c| c.iter().map(|s| s.to_ascii_uppercase()).collect()),
            wallets: list("wallets"),
            addresses: list("addresses"),
        }
    }

    /// Whether `update` (as given to `sim_emit` on the daemon of `coin`, for `wallet`) must be
    /// delivered. Only `new_payment` carries an address among the updates of this module (the
    /// simulator does not know their transactions, so those go out without addresses).
    pub fn wants(&self, coin: &str, update: &Value, wallet: Option<&str>) -> bool {
        let name = update["event"].as_str().unwrap_or_default();
        let address =
            (name == "new_payment").then(|| update["address"].as_str().unwrap_or_default());
        let listed = |list: &Option<Vec<String>>, x: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|y| y == x))
        };
        listed(&self.events, name)
            && listed(&self.coins, &coin.to_ascii_uppercase())
            && wallet.is_none_or(|w| listed(&self.wallets, w))
            && address.is_none_or(|a| listed(&self.addresses, a))
    }

    /// Checks that a `subscribed` reply echoes this filter: each list as given (coins in upper
    /// case, in any order), `["*"]` for an unrestricted dimension.
    pub fn assert_echoed(&self, reply: &Value) {
        let dims = [
            ("events", &self.events),
            ("coins", &self.coins),
            ("wallets", &self.wallets),
            ("addresses", &self.addresses),
        ];
        for (key, given) in dims {
            let star = vec!["*".to_string()];
            let want: BTreeSet<&String> = given.as_ref().unwrap_or(&star).iter().collect();
            let got: Option<BTreeSet<&str>> = reply[key]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect());
            let want: BTreeSet<&str> = want.into_iter().map(String::as_str).collect();
            assert_eq!(
                got,
                Some(want),
                "{key} echoed by {reply} for {}",
                self.request
            );
        }
    }
}
