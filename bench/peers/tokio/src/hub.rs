//! Subscribers grouped by filter, and the envelope built once per daemon update.
//!
//! Invariants: each client id is in exactly one group (or none before it subscribes); an event
//! is serialised once and every receiving client gets a clone of the same `Utf8Bytes` (a
//! reference-count bump) pushed into its bounded queue with `try_send`; a client whose queue is
//! full is dropped from the hub (slow-consumer policy: its task then closes it with 4008).

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// A client's subscription filter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Event names (sorted, deduplicated); `"*"` matches every event.
    pub events: Vec<String>,
    /// Upper-case coins, `None` for every coin.
    pub coins: Option<Vec<String>>,
}

impl Filter {
    /// Normalises a requested filter.
    pub fn new(mut events: Vec<String>, coins: Option<Vec<String>>) -> Filter {
        events.sort();
        events.dedup();
        let coins = coins.map(|c| {
            let mut c: Vec<String> = c.into_iter().map(|s| s.to_uppercase()).collect();
            c.sort();
            c.dedup();
            c
        });
        Filter { events, coins }
    }

    fn matches(&self, event: &str, coin: &str) -> bool {
        self.events.iter().any(|e| e == event || e == "*")
            && self
                .coins
                .as_ref()
                .is_none_or(|c| c.iter().any(|x| x == coin))
    }
}

/// All subscribers.
#[derive(Default)]
pub struct Hub {
    groups: HashMap<Filter, HashMap<u64, mpsc::Sender<Message>>>,
    filter_of: HashMap<u64, Filter>,
    /// Last sequence number assigned.
    pub seq: u64,
}

impl Hub {
    /// Puts client `id` in the group of `filter` (replacing its previous filter).
    pub fn subscribe(&mut self, id: u64, filter: Filter, tx: mpsc::Sender<Message>) {
        self.remove(id);
        self.groups
            .entry(filter.clone())
            .or_default()
            .insert(id, tx);
        self.filter_of.insert(id, filter);
    }

    /// Forgets client `id`.
    pub fn remove(&mut self, id: u64) {
        let Some(f) = self.filter_of.remove(&id) else {
            return;
        };
        if let Some(g) = self.groups.get_mut(&f) {
            g.remove(&id);
            if g.is_empty() {
                self.groups.remove(&f);
            }
        }
    }

    /// Queues `text` to every matching client; returns how many got it.
    pub fn publish(&mut self, event: &str, coin: &str, text: &Utf8Bytes) -> usize {
        let mut dropped = Vec::new();
        let mut sent = 0;
        for (filter, members) in &self.groups {
            if !filter.matches(event, coin) {
                continue;
            }
            for (id, tx) in members {
                match tx.try_send(Message::Text(text.clone())) {
                    Ok(()) => sent += 1,
                    Err(_) => dropped.push(*id),
                }
            }
        }
        for id in dropped {
            self.remove(id);
        }
        sent
    }

    /// Turns one daemon push into envelopes and publishes each; returns deliveries queued.
    pub fn relay_push(&mut self, raw: &str) -> usize {
        let Ok(push) = serde_json::from_str::<Value>(raw) else {
            return 0;
        };
        let coin = push["currency"].as_str().unwrap_or("").to_uppercase();
        let wallet = push["wallet"].clone();
        let Some(updates) = push["updates"].as_array() else {
            return 0;
        };
        let mut sent = 0;
        for u in updates.iter().filter(|u| u.is_object()) {
            self.seq += 1;
            let name = u["event"].as_str().unwrap_or("");
            let text = Utf8Bytes::from(envelope(u, &wallet, &coin, self.seq).to_string());
            sent += self.publish(name, &coin, &text);
        }
        sent
    }
}

/// Unix time in seconds with millisecond precision.
pub fn timestamp() -> f64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    ms as f64 / 1000.0
}

/// The client message for one daemon update.
pub fn envelope(u: &Value, wallet: &Value, coin: &str, seq: u64) -> Value {
    let name = u["event"].as_str().unwrap_or("");
    let data = match name {
        "new_transaction" => json!({
            "event": name, "coin": coin, "wallet": wallet, "tx_hash": u["tx"],
            "data": {"amount": u["amount"], "from_address": u["from_address"], "to_address": u["to"],
                     "confirmations": null, "contract": u["contract"]},
        }),
        "new_block" => json!({"event": name, "coin": coin, "height": u["height"]}),
        _ => {
            let mut d = json!({"coin": coin, "wallet": wallet});
            if let (Some(d), Some(src)) = (d.as_object_mut(), u.as_object()) {
                d.extend(src.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            d
        }
    };
    json!({"type": "event", "seq": seq, "data": data, "timestamp": timestamp()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_once_to_matching_groups_and_drops_full_queues() {
        let mut hub = Hub::default();
        let (tx1, mut rx1) = mpsc::channel(1);
        let (tx2, mut rx2) = mpsc::channel(4);
        let (tx3, _rx3) = mpsc::channel(4);
        hub.subscribe(1, Filter::new(vec!["new_transaction".into()], None), tx1);
        hub.subscribe(
            2,
            Filter::new(vec!["*".into()], Some(vec!["eth".into()])),
            tx2,
        );
        hub.subscribe(3, Filter::new(vec!["new_block".into()], None), tx3);
        let push = r#"{"updates":[{"event":"new_transaction","tx":"0xab","to":"0x1","amount":"1"}],"wallet":"w","currency":"eth"}"#;
        assert_eq!(hub.relay_push(push), 2);
        let Some(Message::Text(t1)) = rx1.try_recv().ok() else {
            panic!("client 1 got nothing")
        };
        let Some(Message::Text(t2)) = rx2.try_recv().ok() else {
            panic!("client 2 got nothing")
        };
        assert_eq!(t1, t2);
        let v: Value = serde_json::from_str(&t1).unwrap();
        assert_eq!(
            (v["seq"].as_u64(), v["data"]["tx_hash"].as_str()),
            (Some(1), Some("0xab"))
        );
        assert_eq!(v["data"]["data"]["to_address"], "0x1");
        // Client 1's queue (capacity 1) is full now: it is dropped on the next event.
        hub.relay_push(push);
        assert_eq!(hub.relay_push(push), 1);
        assert_eq!(hub.seq, 3);
    }

    #[test]
    fn bad_pushes_are_ignored() {
        let mut hub = Hub::default();
        assert_eq!(hub.relay_push("not json"), 0);
        assert_eq!(hub.relay_push(r#"{"updates":5}"#), 0);
        assert_eq!(hub.seq, 0);
    }
}
