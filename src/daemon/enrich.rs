//! Sans-io enrichment and ordering of a daemon's events.
//!
//! BTC-like `new_transaction` carries only a hash: `get_transaction` fills `amount` (sum of the
//! outputs), `to_address` (first output), `outputs` and `confirmations`. ETH-like and XMR events
//! get `confirmations` from `gettransaction`. While a lookup is outstanding, later events of the
//! same daemon wait behind it ([`OrderedQueue`]), so per-daemon order is kept whatever order the
//! lookups (many in flight at once) are answered in; a lookup that fails or times out releases
//! its event with the unknown fields left `null`. Answers are reduced to [`Found`] (what the
//! event needs) so that `super::lookup` can cache them cheaply.

use crate::config::Family;
use crate::event::Event;
use serde_json::{Value, json};
use std::collections::VecDeque;

/// The lookup an event needs, if any.
pub fn lookup_for(ev: &Event, family: Family) -> Option<LookupKey> {
    if ev.name != "new_transaction" {
        return None;
    }
    let tx = ev.data.get("tx_hash")?.as_str()?;
    let method = match family {
        Family::Btc => "get_transaction",
        Family::Eth | Family::Xmr => "gettransaction",
    };
    Some(LookupKey {
        method,
        tx: tx.into(),
    })
}

/// What a lookup asks: the method and the transaction hash (also the cache key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupKey {
    pub method: &'static str,
    pub tx: Box<str>,
}

impl LookupKey {
    /// The JSON-RPC parameters of the call.
    pub fn params(&self) -> Value {
        json!([&*self.tx, {"xpub": null}])
    }
}

/// What the worker takes from a lookup answer (the rest of the answer is dropped at once, so a
/// cached answer costs little).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Found {
    pub confirmations: Option<i64>,
    /// BTC family: each output's address (as the daemon gave it) and value in satoshis.
    pub outputs: Option<Vec<(Value, u64)>>,
}

impl Found {
    /// Reads a lookup answer of a daemon of `family`.
    pub fn from_answer(answer: &Value, family: Family) -> Found {
        let confirmations = answer.get("confirmations").and_then(Value::as_i64);
        let outputs = match answer.get("outputs") {
            Some(Value::Array(list)) if family == Family::Btc => Some(
                list.iter()
                    .map(|o| {
                        let address = o.get("address").cloned().unwrap_or(Value::Null);
                        let sats = o.get("value_sats").and_then(Value::as_u64).unwrap_or(0);
                        (address, sats)
                    })
                    .collect(),
            ),
            _ => None,
        };
        Found {
            confirmations,
            outputs,
        }
    }

    /// Outputs held (for the cache's size limit).
    pub fn outputs_len(&self) -> usize {
        self.outputs.as_ref().map_or(0, Vec::len)
    }
}

/// Fills `ev` from a lookup answer.
pub fn apply(ev: &mut Event, family: Family, answer: &Value) {
    fill(ev, &Found::from_answer(answer, family));
}

/// Fills `ev` from what a lookup found.
pub fn fill(ev: &mut Event, found: &Found) {
    let Some(Value::Object(data)) = ev.data.get_mut("data") else {
        return;
    };
    if let Some(c) = found.confirmations {
        data.insert("confirmations".into(), json!(c));
    }
    let Some(outputs) = &found.outputs else {
        return;
    };
    let mut total: u128 = 0;
    let mut list = Vec::with_capacity(outputs.len());
    for (address, sats) in outputs {
        total += u128::from(*sats);
        list.push(json!({"address": address, "amount": sats_to_decimal(u128::from(*sats))}));
    }
    if let Some((first, _)) = outputs.first() {
        data.insert("to_address".into(), first.clone());
    }
    data.insert("amount".into(), json!(sats_to_decimal(total)));
    data.insert("outputs".into(), Value::Array(list));
}

/// Satoshis as a decimal coin amount string with 8 decimals, without floats.
pub fn sats_to_decimal(sats: u128) -> String {
    format!("{}.{:08}", sats / 100_000_000, sats % 100_000_000)
}

/// One event waiting in its daemon's queue.
#[derive(Debug)]
struct Pending {
    ticket: u64,
    event: Event,
    waiting: bool,
}

/// A daemon's events in arrival order, some waiting for a lookup.
#[derive(Debug, Default)]
pub struct OrderedQueue {
    entries: VecDeque<Pending>,
    next_ticket: u64,
}

impl OrderedQueue {
    /// Appends an event that needs nothing more.
    pub fn push_ready(&mut self, event: Event) {
        let ticket = self.ticket();
        self.entries.push_back(Pending {
            ticket,
            event,
            waiting: false,
        });
    }

    /// Appends an event that waits for a lookup; returns its ticket.
    pub fn push_waiting(&mut self, event: Event) -> u64 {
        let ticket = self.ticket();
        self.entries.push_back(Pending {
            ticket,
            event,
            waiting: true,
        });
        ticket
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Completes the lookup of `ticket`, letting `fill` update the event (or not, on failure).
    /// Tickets grow with the queue, so the entry is found by binary search (a large backlog
    /// completing costs O(n log n), not O(n²)).
    pub fn complete(&mut self, ticket: u64, fill: impl FnOnce(&mut Event)) {
        if let Ok(at) = self.entries.binary_search_by_key(&ticket, |p| p.ticket)
            && let Some(p) = self.entries.get_mut(at)
        {
            fill(&mut p.event);
            p.waiting = false;
        }
    }

    /// Removes and returns the events at the front that no longer wait, in order.
    pub fn pop_ready(&mut self, out: &mut Vec<Event>) {
        while self.entries.front().is_some_and(|p| !p.waiting) {
            if let Some(p) = self.entries.pop_front() {
                out.push(p.event);
            }
        }
    }

    /// Releases everything, waiting or not (the daemon link went down).
    pub fn drain_all(&mut self, out: &mut Vec<Event>) {
        out.extend(self.entries.drain(..).map(|p| p.event));
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btc_tx(hash: &str) -> Event {
        Event::new("BTC".into(), "new_transaction", Some("w".into()))
            .with("tx_hash", json!(hash))
            .with("data", json!({"amount": null, "from_address": null, "to_address": null, "confirmations": null, "contract": null, "outputs": null}))
    }

    #[test]
    fn btc_lookup_fills_amount_outputs_and_confirmations() {
        let mut ev = btc_tx("ab");
        assert_eq!(
            lookup_for(&ev, Family::Btc).unwrap().method,
            "get_transaction"
        );
        let answer = json!({"outputs": [{"address": "bc1a", "value_sats": 18000, "scriptpubkey": "00"},
                                        {"address": "bc1b", "value_sats": 150_000_000}], "confirmations": 2});
        apply(&mut ev, Family::Btc, &answer);
        let d = &ev.data["data"];
        assert_eq!(d["amount"], "1.50018000");
        assert_eq!(d["to_address"], "bc1a");
        assert_eq!(d["confirmations"], 2);
        assert_eq!(
            d["outputs"][1],
            json!({"address": "bc1b", "amount": "1.50000000"})
        );
    }

    #[test]
    fn eth_lookup_only_adds_confirmations() {
        let mut ev = Event::new("ETH".into(), "new_transaction", Some("w".into()))
            .with("tx_hash", json!("0x1"))
            .with(
                "data",
                json!({"amount": "1.0", "from_address": null, "to_address": "0xa",
                       "confirmations": null, "contract": null, "outputs": null}),
            );
        apply(
            &mut ev,
            Family::Eth,
            &json!({"confirmations": 5, "outputs": [{"value_sats": 1}]}),
        );
        assert_eq!(
            ev.data["data"],
            json!({"amount": "1.0", "from_address": null, "to_address": "0xa",
                   "confirmations": 5, "contract": null, "outputs": null})
        );
        assert!(lookup_for(&Event::new("ETH".into(), "new_block", None), Family::Eth).is_none());
    }

    #[test]
    fn enrichment_removed_no_transaction_key() {
        use crate::daemon::decode::decode_frame;
        use crate::event::TRANSACTION_DATA_KEYS;
        let btc_answer =
            json!({"outputs": [{"address": "bc1a", "value_sats": 5}], "confirmations": 1});
        let answers = [
            btc_answer,
            json!({"confirmations": 3, "outputs": "no"}),
            json!({"outputs": []}),
            json!(null),
        ];
        for family in [Family::Btc, Family::Eth, Family::Xmr] {
            for answer in &answers {
                let frame = r#"{"updates":[{"event":"new_transaction","tx":"ab","to":"0xa","amount":"1"}],"wallet":"w","currency":"X"}"#;
                let mut decoded = decode_frame(frame, &"X".into(), family).unwrap();
                let mut ev = decoded.events.remove(0);
                apply(&mut ev, family, answer);
                let Value::Object(inner) = &ev.data["data"] else {
                    panic!("{family:?}: no data object");
                };
                for key in TRANSACTION_DATA_KEYS {
                    assert!(
                        inner.contains_key(key),
                        "{family:?} {answer}: {key} missing"
                    );
                }
                assert_eq!(
                    inner.len(),
                    TRANSACTION_DATA_KEYS.len(),
                    "{family:?} {answer}"
                );
            }
        }
    }

    #[test]
    fn garbage_answers_change_nothing() {
        let mut ev = btc_tx("ab");
        let before = ev.clone();
        for a in [
            json!(null),
            json!("x"),
            json!({"outputs": "no"}),
            json!({"confirmations": "2"}),
        ] {
            apply(&mut ev, Family::Btc, &a);
        }
        assert_eq!(ev, before);
    }

    #[test]
    fn order_is_kept_behind_a_pending_lookup() {
        let mut q = OrderedQueue::default();
        let t1 = q.push_waiting(btc_tx("1"));
        q.push_ready(btc_tx("2"));
        let t3 = q.push_waiting(btc_tx("3"));
        let mut out = Vec::new();
        q.pop_ready(&mut out);
        assert!(out.is_empty(), "event 2 waits behind event 1");
        q.complete(t3, |_| {});
        q.pop_ready(&mut out);
        assert!(out.is_empty());
        q.complete(t1, |e| {
            e.data.insert("x".into(), json!(1));
        });
        q.pop_ready(&mut out);
        let hashes: Vec<&str> = out
            .iter()
            .map(|e| e.data["tx_hash"].as_str().unwrap())
            .collect();
        assert_eq!(hashes, ["1", "2", "3"]);
        assert_eq!(out[0].data["x"], 1);
        assert!(q.is_empty());
    }

    #[test]
    fn amounts_never_go_through_floats() {
        assert_eq!(sats_to_decimal(0), "0.00000000");
        assert_eq!(sats_to_decimal(2_100_000_000_000_000), "21000000.00000000");
        assert_eq!(sats_to_decimal(1), "0.00000001");
    }
}
