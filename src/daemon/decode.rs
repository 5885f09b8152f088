//! Sans-io decoding of a daemon's WebSocket push into normalised [`Event`]s (docs/daemon.md, "The
//! event link" → docs/protocol.md, "Events").
//!
//! Input is one text frame `{"updates":[{...}],"wallet":<key|null>,"currency":"BTC"}`. Every update
//! becomes one event in the client shape of docs/protocol.md; fields the daemon does not provide
//! are `null` until enrichment fills them. An envelope that cannot be read is an error for the
//! whole frame; a single unreadable update is skipped and reported, the others still go out.

use crate::config::Family;
use crate::event::{Event, TRANSACTION_DATA_KEYS};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Limit on updates in one frame (real daemons send exactly one).
const MAX_UPDATES: usize = 1000;

/// Why a frame or an update was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The result of decoding one frame: the events, and the updates that were skipped (why).
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub skipped: Vec<DecodeError>,
}

/// Decodes one text frame from the daemon of `coin` (whose protocol family is `family`).
pub fn decode_frame(text: &str, coin: &Arc<str>, family: Family) -> Result<Decoded, DecodeError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| DecodeError(format!("not JSON: {e}")))?;
    let Value::Object(mut env) = value else {
        return Err(DecodeError("envelope is not a JSON object".into()));
    };
    let Some(Value::Array(updates)) = env.remove("updates") else {
        return Err(DecodeError("envelope has no `updates` list".into()));
    };
    if updates.len() > MAX_UPDATES {
        return Err(DecodeError(format!(
            "{} updates in one frame",
            updates.len()
        )));
    }
    let wallet = match env.remove("wallet") {
        None | Some(Value::Null) => None,
        Some(Value::String(w)) if !w.is_empty() => Some(w),
        Some(Value::String(_)) => None,
        Some(_) => return Err(DecodeError("`wallet` is not a string or null".into())),
    };
    Ok(decode_updates(updates, wallet.as_deref(), coin, family))
}

/// Decodes a list of update dicts of `wallet` (`None`: global), as found in a frame's `updates`
/// or in a `get_updates` answer; unreadable updates are reported in `skipped`.
pub fn decode_updates(
    updates: Vec<Value>,
    wallet: Option<&str>,
    coin: &Arc<str>,
    family: Family,
) -> Decoded {
    let mut out = Decoded::default();
    for update in updates.into_iter().take(MAX_UPDATES) {
        match decode_update(update, coin, family, wallet.map(str::to_string)) {
            Ok(ev) => out.events.push(ev),
            Err(e) => out.skipped.push(e),
        }
    }
    out
}

fn decode_update(
    update: Value,
    coin: &Arc<str>,
    family: Family,
    wallet: Option<String>,
) -> Result<Event, DecodeError> {
    let Value::Object(mut u) = update else {
        return Err(DecodeError("update is not a JSON object".into()));
    };
    let name = match u.remove("event") {
        Some(Value::String(n)) if !n.is_empty() && n.len() <= 64 => n,
        _ => return Err(DecodeError("update has no `event` name".into())),
    };
    let coin = coin.clone();
    match name.as_str() {
        "new_block" => {
            let height = u64_field(&u, "height", &name)?;
            Ok(Event::new(coin, &name, None).with("height", height.into()))
        }
        "new_transaction" => {
            let wallet = require_wallet(wallet, &name)?;
            let tx = str_field(&u, "tx", &name)?;
            Ok(Event::new(coin, &name, Some(wallet))
                .with("tx_hash", tx.into())
                .with("data", transaction_data(&u, family)))
        }
        "new_payment" => {
            let wallet = require_wallet(wallet, &name)?;
            payment(coin, wallet, &u)
        }
        "verified_tx" => {
            let wallet = require_wallet(wallet, &name)?;
            let tx = str_field(&u, "tx", &name)?;
            let height = u64_field(&u, "height", &name)?;
            Ok(Event::new(coin, &name, Some(wallet))
                .with("tx_hash", tx.into())
                .with("height", height.into()))
        }
        _ => {
            // Passed through as sent, with the envelope's wallet: `null` for a global event.
            let mut ev = Event::new(coin, &name, wallet);
            ev.data.entry("wallet").or_insert(Value::Null);
            for (k, v) in u {
                ev.data.entry(k).or_insert(v);
            }
            Ok(ev)
        }
    }
}

/// `new_transaction.data` before enrichment: every key of [`TRANSACTION_DATA_KEYS`] in every
/// family, `null` where the daemon does not say (BTC-like and XMR events carry only the hash).
fn transaction_data(u: &Map<String, Value>, family: Family) -> Value {
    let mut data: Map<String, Value> = TRANSACTION_DATA_KEYS
        .iter()
        .map(|k| (k.to_string(), Value::Null))
        .collect();
    if family == Family::Eth {
        data.insert("amount".into(), amount(u.get("amount")));
        data.insert("from_address".into(), string_or_null(u.get("from_address")));
        data.insert("to_address".into(), string_or_null(u.get("to")));
        data.insert("contract".into(), string_or_null(u.get("contract")));
    }
    Value::Object(data)
}

fn payment(coin: Arc<str>, wallet: String, u: &Map<String, Value>) -> Result<Event, DecodeError> {
    let name = "new_payment";
    let address = str_field(u, "address", name)?;
    let status = status_code(u.get("status"))
        .ok_or_else(|| DecodeError("new_payment has no valid `status`".into()))?;
    let tx_hashes: Vec<Value> = match u.get("tx_hashes") {
        Some(Value::Array(a)) => a.iter().filter(|v| v.is_string()).cloned().collect(),
        _ => Vec::new(),
    };
    Ok(Event::new(coin, name, Some(wallet))
        .with("address", address.into())
        .with("status", status.into())
        .with("status_str", string_or_null(u.get("status_str")))
        .with("tx_hashes", Value::Array(tx_hashes))
        .with("sent_amount", amount(u.get("sent_amount")))
        .with("contract", string_or_null(u.get("contract"))))
}

/// Electrum status codes; Electron Cash may send the names instead.
fn status_code(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "unpaid" | "pending" => Some(0),
            "expired" => Some(1),
            "unknown" => Some(2),
            "paid" => Some(3),
            "unconfirmed" => Some(7),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// Amounts are always decimal strings: numbers are converted without going through floats
/// where JSON kept the digits.
fn amount(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Value::String(s.clone()),
        Some(Value::Number(n)) => Value::String(n.to_string()),
        _ => Value::Null,
    }
}

fn string_or_null(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::Null,
    }
}

fn require_wallet(wallet: Option<String>, name: &str) -> Result<String, DecodeError> {
    wallet.ok_or_else(|| DecodeError(format!("{name} without a wallet")))
}

fn str_field<'a>(u: &'a Map<String, Value>, key: &str, name: &str) -> Result<&'a str, DecodeError> {
    match u.get(key) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Ok(s),
        _ => Err(DecodeError(format!("{name} has no valid `{key}`"))),
    }
}

fn u64_field(u: &Map<String, Value>, key: &str, name: &str) -> Result<u64, DecodeError> {
    u.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| DecodeError(format!("{name} has no valid `{key}`")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn btc() -> Arc<str> {
        "BTC".into()
    }

    fn one(text: &str, family: Family) -> Event {
        let d = decode_frame(text, &btc(), family).unwrap();
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        assert_eq!(d.events.len(), 1);
        d.events.into_iter().next().unwrap()
    }

    #[test]
    fn block() {
        let ev = one(
            r#"{"updates":[{"event":"new_block","height":861234}],"wallet":null,"currency":"BTC"}"#,
            Family::Btc,
        );
        assert_eq!(
            Value::Object(ev.data),
            json!({"event":"new_block","coin":"BTC","height":861234})
        );
    }

    #[test]
    fn btc_transaction_waits_for_enrichment() {
        let ev = one(
            r#"{"updates":[{"event":"new_transaction","tx":"5e3f"}],"wallet":"zpub6r","currency":"BTC"}"#,
            Family::Btc,
        );
        assert_eq!(ev.data["tx_hash"], "5e3f");
        assert_eq!(ev.data["wallet"], "zpub6r");
        assert_eq!(ev.data["data"]["amount"], Value::Null);
        assert_eq!(
            ev.data["data"]["outputs"],
            Value::Null,
            "unknown until the lookup"
        );
    }

    #[test]
    fn eth_transaction_uses_its_own_fields() {
        let ev = one(
            r#"{"updates":[{"event":"new_transaction","tx":"0x8c","from_address":"0x5A","to":"0xAb","amount":"25.000000","contract":"0xdA"}],"wallet":"0xAb_0xdA","currency":"ETH"}"#,
            Family::Eth,
        );
        assert_eq!(
            ev.data["data"],
            json!({"amount":"25.000000","from_address":"0x5A","to_address":"0xAb","confirmations":null,"contract":"0xdA","outputs":null})
        );
        let meta = ev.meta();
        let addrs: Vec<&str> = meta.addresses.iter().map(|a| &**a).collect();
        assert_eq!(addrs, ["0x5A", "0xAb"]);
    }

    #[test]
    fn xmr_and_eth_transactions_lacked_outputs() {
        let frames = [
            (Family::Btc, r#"{"event":"new_transaction","tx":"5e3f"}"#),
            (
                Family::Eth,
                r#"{"event":"new_transaction","tx":"0x8c","from_address":"0x5A","to":"0xAb","amount":"1","contract":null}"#,
            ),
            (Family::Xmr, r#"{"event":"new_transaction","tx":"9a1b"}"#),
        ];
        for (family, update) in frames {
            let text = format!(r#"{{"updates":[{update}],"wallet":"w","currency":"X"}}"#);
            let ev = one(&text, family);
            let Value::Object(inner) = &ev.data["data"] else {
                panic!("{family:?}: no data object in {:?}", ev.data);
            };
            let keys: Vec<&str> = inner.keys().map(String::as_str).collect();
            let mut want = TRANSACTION_DATA_KEYS.to_vec();
            want.sort_unstable();
            assert_eq!(keys, want, "{family:?}");
            if family != Family::Eth {
                assert!(inner.values().all(Value::is_null), "{family:?}: {inner:?}");
            }
        }
    }

    #[test]
    fn unknown_global_event_dropped_its_null_wallet() {
        let ev = one(
            r#"{"updates":[{"event":"channel_open","peer":"x","wallet":"spoof"}],"wallet":null,"currency":"BTC"}"#,
            Family::Btc,
        );
        assert_eq!(
            Value::Object(ev.data.clone()),
            json!({"event":"channel_open","coin":"BTC","wallet":null,"peer":"x"})
        );
        assert_eq!(ev.wallet, None);
        assert_eq!(
            ev.meta().wallet,
            None,
            "a null wallet is no wallet: wallet filters let it pass"
        );
        let p = crate::event::Published::new("e".into(), 1, &ev, 1.0);
        assert!(p.payload().contains(r#""wallet":null"#), "{}", p.payload());
        // A wallet-scoped unknown event keeps its wallet; a known global one has no key.
        let ev = one(
            r#"{"updates":[{"event":"channel_open"}],"wallet":"zpub1","currency":"BTC"}"#,
            Family::Btc,
        );
        assert_eq!(ev.data["wallet"], "zpub1");
        let ev = one(
            r#"{"updates":[{"event":"new_block","height":3}],"wallet":null,"currency":"BTC"}"#,
            Family::Btc,
        );
        assert!(!ev.data.contains_key("wallet"), "{:?}", ev.data);
    }

    #[test]
    fn payment_with_string_status_and_numeric_amount() {
        let ev = one(
            r#"{"updates":[{"event":"new_payment","address":"bitcoincash:qq","status":"Paid","status_str":"Paid","tx_hashes":["ab"],"sent_amount":0.5}],"wallet":"w","currency":"BCH"}"#,
            Family::Btc,
        );
        assert_eq!(ev.data["status"], 3);
        assert_eq!(ev.data["sent_amount"], "0.5");
        assert_eq!(ev.data["contract"], Value::Null);
        assert_eq!(ev.data["tx_hashes"], json!(["ab"]));
    }

    #[test]
    fn verified_and_unknown_events() {
        let ev = one(
            r#"{"updates":[{"event":"verified_tx","tx":"ab","height":5}],"wallet":"w","currency":"BTC"}"#,
            Family::Btc,
        );
        assert_eq!(ev.data["height"], 5);
        let ev = one(
            r#"{"updates":[{"event":"channel_open","peer":"x","coin":"spoof"}],"wallet":null,"currency":"BTC"}"#,
            Family::Btc,
        );
        assert_eq!(ev.name, "channel_open");
        assert_eq!(ev.data["peer"], "x");
        assert_eq!(
            ev.data["coin"], "BTC",
            "a daemon field never overrides ours"
        );
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for bad in [
            "",
            "nonsense",
            "[]",
            "3",
            r#"{"updates":{}}"#,
            r#"{"wallet":null}"#,
            r#"{"updates":[],"wallet":5}"#,
        ] {
            assert!(decode_frame(bad, &btc(), Family::Btc).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_updates_are_skipped_others_kept() {
        let text = r#"{"updates":[{"event":"new_block"},{"event":"new_block","height":-1},
            {"event":"new_transaction","tx":"a"},{"noevent":1},7,
            {"event":"new_block","height":9}],"wallet":null,"currency":"BTC"}"#;
        let d = decode_frame(text, &btc(), Family::Btc).unwrap();
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].data["height"], 9);
        assert_eq!(d.skipped.len(), 5);
    }
}
