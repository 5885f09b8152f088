//! Sans-io catch-up rules for a daemon (re)connect (docs/daemon.md, "Catch-up after every
//! connect"): which calls to make, and which events to synthesise from their answers (`"recovered":
//! true`).
//!
//! - every watched wallet is named in a wallet-scoped call (`getbalance`), because a daemon only
//!   emits events for wallets some RPC has named since it started;
//! - `getinfo`: if a previous height is known and the height moved, a `new_block` for the current
//!   height;
//! - every open payment request (status 0, 2 or 7) is asked with `get_request`; a moved status or
//!   amount gives a `new_payment`; a request the daemon no longer knows is forgotten and logged.
//!
//! Invariant: the open-request table is bounded ([`MAX_OPEN_REQUESTS`]).

use super::recovery::Outcome;
use super::rpc::CallError;
use crate::config::Family;
use crate::event::Event;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Open payment requests remembered per daemon (from events and the database).
pub const MAX_OPEN_REQUESTS: usize = 100_000;

/// Why an RPC call was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// Enrichment of the event with this ticket in the daemon's ordered queue (and of those
    /// that joined the call, see `lookup`).
    Enrich(u64, super::enrich::LookupKey),
    /// Making the daemon load a wallet (by key).
    LoadWallet(String),
    /// Reading the height after a (re)connect.
    GetInfo,
    /// Reconciling the payment request with this id.
    Reconcile(String),
    /// Draining a wallet's `get_updates` queue (by key).
    Drain(String),
}

/// What the worker last knew of an open payment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    pub wallet: String,
    pub status: i64,
    pub sent_amount: String,
}

/// Whether a status means the request may still move (0, 2 or 7; docs/daemon.md, "Catch-up
/// after every connect").
pub fn is_open(status: i64) -> bool {
    matches!(status, 0 | 2 | 7)
}

/// The `xpub` parameter for a wallet key: `xpub_contract` becomes `{"xpub", "contract"}`.
pub fn xpub_param(key: &str) -> Value {
    match key.rsplit_once('_') {
        Some((xpub, contract)) if !xpub.is_empty() && !contract.is_empty() => {
            json!({"xpub": xpub, "contract": contract})
        }
        _ => json!(key),
    }
}

/// A wallet key shortened for logs (keys are public, but long).
pub fn short(key: &str) -> String {
    if key.chars().count() <= 16 {
        return key.to_string();
    }
    let head: String = key.chars().take(12).collect();
    format!("{head}…")
}

/// The `get_request` call for a request id on a daemon of `family`.
pub fn get_request_call(family: Family, id: &str, wallet: &str) -> (&'static str, Value) {
    let method = match family {
        Family::Btc => "get_request",
        Family::Eth | Family::Xmr => "getrequest",
    };
    (method, json!([id, {"xpub": xpub_param(wallet)}]))
}

/// Tracks heights and open requests from every event that goes out.
pub fn observe(ev: &Event, height: &mut Option<u64>, requests: &mut HashMap<String, OpenRequest>) {
    match ev.name.as_str() {
        "new_block" => {
            if let Some(h) = ev.data.get("height").and_then(Value::as_u64) {
                *height = Some(height.map_or(h, |old| old.max(h)));
            }
        }
        "new_payment" => {
            let (Some(id), Some(wallet)) =
                (ev.data.get("address").and_then(Value::as_str), &ev.wallet)
            else {
                return;
            };
            let status = ev.data.get("status").and_then(Value::as_i64).unwrap_or(2);
            if !is_open(status) {
                requests.remove(id);
            } else if requests.len() < MAX_OPEN_REQUESTS || requests.contains_key(id) {
                let sent_amount = ev
                    .data
                    .get("sent_amount")
                    .and_then(Value::as_str)
                    .unwrap_or("0")
                    .to_string();
                requests.insert(
                    id.to_string(),
                    OpenRequest {
                        wallet: wallet.clone(),
                        status,
                        sent_amount,
                    },
                );
            }
        }
        _ => {}
    }
}

/// A `new_block` with `recovered: true` when the height moved while disconnected.
pub fn on_getinfo(coin: &Arc<str>, known: Option<u64>, info: &Value) -> Option<Event> {
    let height = info.get("blockchain_height").and_then(Value::as_u64)?;
    match known {
        Some(prev) if height > prev => Some(
            Event::new(coin.clone(), "new_block", None)
                .with("height", json!(height))
                .with("recovered", json!(true)),
        ),
        _ => None,
    }
}

/// Reconciles one request: a `new_payment` (`recovered: true`) when its status or amount moved,
/// carrying `confirmations` when the daemon gave them. A request the daemon no longer knows
/// leaves `requests` ([`Outcome::Gone`]); a failed call leaves it as it was.
pub fn on_get_request(
    coin: &Arc<str>,
    requests: &mut HashMap<String, OpenRequest>,
    id: &str,
    answer: Result<Value, CallError>,
) -> (Option<Event>, Outcome) {
    let Some(known) = requests.get(id).cloned() else {
        return (None, Outcome::Reconciled { moved: false });
    };
    let v = match answer {
        Ok(v) => v,
        Err(CallError::Rpc(e)) if is_not_found(&e.message) => {
            log::info!("[WORKER] Payment request {id} on {coin} is no longer known; marked gone");
            requests.remove(id);
            return (None, Outcome::Gone);
        }
        Err(e) => return (None, Outcome::Failed(e.to_string())),
    };
    let Some(status) = v.get("status").and_then(Value::as_i64) else {
        return (
            None,
            Outcome::Failed("get_request answered without a status".into()),
        );
    };
    let sent_amount = match v.get("sent_amount") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => known.sent_amount.clone(),
    };
    if status == known.status && same_amount(&sent_amount, &known.sent_amount) {
        return (None, Outcome::Reconciled { moved: false });
    }
    let tx_hashes = match v.get("tx_hashes") {
        Some(Value::Array(a)) => Value::Array(a.clone()),
        _ => json!([]),
    };
    let mut ev = Event::new(coin.clone(), "new_payment", Some(known.wallet))
        .with("address", json!(id))
        .with("status", json!(status))
        .with(
            "status_str",
            v.get("status_str").cloned().unwrap_or(Value::Null),
        )
        .with("tx_hashes", tx_hashes)
        .with("sent_amount", json!(sent_amount))
        .with(
            "contract",
            v.get("contract").cloned().unwrap_or(Value::Null),
        );
    if let Some(c) = v.get("confirmations").filter(|c| c.is_u64()) {
        ev = ev.with("confirmations", c.clone());
    }
    (
        Some(ev.with("recovered", json!(true))),
        Outcome::Reconciled { moved: true },
    )
}

/// Whether two decimal amount strings denote the same number (`"0.0003"` = `"0.00030000"`),
/// without going through floats.
pub fn same_amount(a: &str, b: &str) -> bool {
    fn canonical(s: &str) -> (String, String) {
        let s = s.trim();
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        (int.to_string(), frac.to_string())
    }
    canonical(a) == canonical(b)
}

/// "Request not found" on any family (BTC maps it to -32003, ETH-like to -32603).
fn is_not_found(message: &str) -> bool {
    message.to_ascii_lowercase().contains("request not found")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::jsonrpc::RpcError;

    fn coin() -> Arc<str> {
        "BTC".into()
    }

    #[test]
    fn token_wallets_split_into_xpub_and_contract() {
        assert_eq!(xpub_param("zpub6r"), json!("zpub6r"));
        assert_eq!(
            xpub_param("0xAb_0xdA"),
            json!({"xpub": "0xAb", "contract": "0xdA"})
        );
        assert_eq!(get_request_call(Family::Eth, "r", "w").0, "getrequest");
        assert_eq!(
            get_request_call(Family::Btc, "r", "w").1,
            json!(["r", {"xpub": "w"}])
        );
    }

    #[test]
    fn a_moved_height_gives_a_recovered_block() {
        let info = json!({"blockchain_height": 105, "connected": true});
        assert!(
            on_getinfo(&coin(), None, &info).is_none(),
            "no previous height: nothing to recover"
        );
        assert!(on_getinfo(&coin(), Some(105), &info).is_none());
        let ev = on_getinfo(&coin(), Some(100), &info).unwrap();
        assert_eq!(ev.data["height"], 105);
        assert_eq!(ev.data["recovered"], true);
        assert!(on_getinfo(&coin(), Some(1), &json!({"connected": false})).is_none());
    }

    fn pay(id: &str, status: i64, amount: &str) -> Event {
        Event::new(coin(), "new_payment", Some("w".into()))
            .with("address", json!(id))
            .with("status", json!(status))
            .with("sent_amount", json!(amount))
    }

    #[test]
    fn open_requests_are_tracked_and_finished_ones_forgotten() {
        let mut reqs = HashMap::new();
        let mut h = None;
        observe(&pay("r1", 7, "0.1"), &mut h, &mut reqs);
        observe(&pay("r2", 0, "0"), &mut h, &mut reqs);
        assert_eq!(reqs.len(), 2);
        observe(&pay("r1", 3, "0.1"), &mut h, &mut reqs);
        assert!(!reqs.contains_key("r1"));
        observe(
            &Event::new(coin(), "new_block", None).with("height", json!(7)),
            &mut h,
            &mut reqs,
        );
        observe(
            &Event::new(coin(), "new_block", None).with("height", json!(5)),
            &mut h,
            &mut reqs,
        );
        assert_eq!(h, Some(7));
    }

    #[test]
    fn reconciliation_emits_only_when_something_moved() {
        let mut reqs = HashMap::new();
        observe(&pay("r1", 7, "0.1"), &mut None, &mut reqs);
        let same = on_get_request(
            &coin(),
            &mut reqs,
            "r1",
            Ok(json!({"status": 7, "sent_amount": "0.1"})),
        );
        assert_eq!(same, (None, Outcome::Reconciled { moved: false }));
        let (moved, outcome) = on_get_request(
            &coin(),
            &mut reqs,
            "r1",
            Ok(
                json!({"status": 3, "status_str": "Paid", "sent_amount": "0.1", "tx_hashes": ["ab"], "confirmations": 2}),
            ),
        );
        assert_eq!(outcome, Outcome::Reconciled { moved: true });
        let moved = moved.unwrap();
        assert_eq!(moved.data["status"], 3);
        assert_eq!(
            moved.data["confirmations"], 2,
            "request_confirmations_stayed_null: the daemon's count goes with the status"
        );
        assert_eq!(moved.data["recovered"], true);
        assert_eq!(moved.data["tx_hashes"], json!(["ab"]));
        assert_eq!(moved.wallet.as_deref(), Some("w"));
    }

    #[test]
    fn amounts_compare_as_numbers() {
        assert!(same_amount("0.0003", "0.00030000"));
        assert!(same_amount("1", "1.000"));
        assert!(same_amount("0", "0.00000000"));
        assert!(same_amount("", "0"));
        assert!(!same_amount("0.0003", "0.003"));
        assert!(!same_amount("10", "1"));
        let mut reqs = HashMap::new();
        observe(&pay("r1", 0, "0.0003"), &mut None, &mut reqs);
        let same = on_get_request(
            &coin(),
            &mut reqs,
            "r1",
            Ok(json!({"status": 0, "sent_amount": "0.00030000"})),
        );
        assert!(
            same.0.is_none(),
            "the same amount written differently is not a change"
        );
    }

    #[test]
    fn unknown_requests_are_marked_gone_other_errors_kept() {
        let mut reqs = HashMap::new();
        observe(&pay("r1", 0, "0"), &mut None, &mut reqs);
        let timeout = on_get_request(&coin(), &mut reqs, "r1", Err(CallError::Timeout));
        assert_eq!(timeout, (None, Outcome::Failed("timed out".into())));
        assert!(reqs.contains_key("r1"));
        let gone = Err(CallError::Rpc(RpcError {
            code: -32603,
            message: "Exception: Request not found".into(),
        }));
        assert_eq!(
            on_get_request(&coin(), &mut reqs, "r1", gone),
            (None, Outcome::Gone)
        );
        assert!(reqs.is_empty());
    }
}
