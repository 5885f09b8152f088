//! Per-wallet `get_updates` queues: the polling alternative to `/ws` that real daemons offer.
//!
//! Every loaded wallet has a FIFO of the last `cap` pushed updates. A global push (no wallet)
//! goes into every queue, a wallet push into that wallet's queue only, whether or not any socket
//! is connected, so a client that was away can still read what it missed. `get_updates` drains
//! a queue. Entries are the pushes' envelope text, shared by reference count (a global push is
//! stored once however many queues hold it) and decoded back to the update only when read.
//!
//! Invariants: queues exist only for loaded wallets (the chain opens one on load and closes it
//! on unload or reset, so their number is bounded by the loaded-wallet cap); no queue ever holds
//! more than `cap` entries (oldest dropped first); `cap` 0 stores nothing.

use super::hub::Frame;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};
use tungstenite::Utf8Bytes;

/// Updates kept per loaded wallet unless configured otherwise.
pub(crate) const DEFAULT_POLLING_CAP: usize = 100;
/// Largest accepted cap: bounds one queue's memory (entries are a few hundred bytes each).
pub const MAX_POLLING_CAP: usize = 100_000;

/// The queues of every loaded wallet.
#[derive(Debug)]
pub(crate) struct Polling {
    cap: usize,
    /// wallet key -> envelopes pushed since the last `get_updates`, oldest first.
    queues: HashMap<String, VecDeque<Utf8Bytes>>,
}

impl Polling {
    /// No queues yet, keeping `cap` updates each (clamped to [`MAX_POLLING_CAP`]).
    pub(crate) fn new(cap: usize) -> Polling {
        Polling {
            cap: cap.min(MAX_POLLING_CAP),
            queues: HashMap::new(),
        }
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Changes the cap (clamped to [`MAX_POLLING_CAP`]), dropping the oldest entries beyond it.
    pub(crate) fn set_cap(&mut self, cap: usize) {
        self.cap = cap.min(MAX_POLLING_CAP);
        for q in self.queues.values_mut() {
            trim(q, self.cap);
        }
    }

    /// Gives a wallet a queue; one it already has is kept as it is.
    pub(crate) fn open(&mut self, wallet: &str) {
        if !self.queues.contains_key(wallet) {
            self.queues.insert(wallet.to_string(), VecDeque::new());
        }
    }

    /// Drops a wallet's queue and what it held.
    pub(crate) fn close(&mut self, wallet: &str) {
        self.queues.remove(wallet);
    }

    /// Drops every queue.
    pub(crate) fn clear(&mut self) {
        self.queues.clear();
    }

    /// Queues one push: into every queue when `wallet` is `None`, else into that wallet's queue
    /// if it has one.
    pub(crate) fn record(&mut self, wallet: Option<&str>, envelope: &Utf8Bytes) {
        if self.cap == 0 {
            return;
        }
        let cap = self.cap;
        match wallet {
            None => {
                for q in self.queues.values_mut() {
                    q.push_back(envelope.clone());
                    trim(q, cap);
                }
            }
            Some(w) => {
                if let Some(q) = self.queues.get_mut(w) {
                    q.push_back(envelope.clone());
                    trim(q, cap);
                }
            }
        }
    }

    /// Queues pushes in order (see [`Polling::record`]).
    pub(crate) fn record_frames(&mut self, frames: &[Frame]) {
        for f in frames {
            self.record(f.wallet.as_deref(), &f.text);
        }
    }

    /// `get_updates`: the wallet's queued updates, oldest first, leaving its queue empty.
    /// A wallet without a queue gets an empty list.
    pub(crate) fn take(&mut self, wallet: &str) -> Vec<Value> {
        let Some(q) = self.queues.get_mut(wallet) else {
            return Vec::new();
        };
        q.drain(..).filter_map(|text| update_of(&text)).collect()
    }

    /// `{"cap": N, "queues": {wallet: queued updates}}` for `sim_state`, wallets sorted.
    pub(crate) fn to_json(&self) -> Value {
        let mut lens: Vec<(&String, usize)> =
            self.queues.iter().map(|(w, q)| (w, q.len())).collect();
        lens.sort_unstable();
        let queues: Map<String, Value> = lens
            .into_iter()
            .map(|(w, n)| (w.clone(), json!(n)))
            .collect();
        json!({"cap": self.cap, "queues": queues})
    }
}

fn trim(q: &mut VecDeque<Utf8Bytes>, cap: usize) {
    while q.len() > cap {
        q.pop_front();
    }
}

/// The single update inside a pushed envelope (`None` for text that is not one).
fn update_of(envelope: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(envelope).ok()?;
    let Value::Object(mut obj) = value else {
        return None;
    };
    match obj.remove("updates") {
        Some(Value::Array(updates)) => updates.into_iter().next(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(p: &mut Polling, wallet: Option<&str>, n: u64) {
        let f = Frame::update(&json!({"event": "e", "n": n}), wallet, "BTC");
        p.record_frames(&[f]);
    }

    /// Queued updates of one wallet (`None` when it has no queue).
    fn queued(p: &Polling, wallet: &str) -> Option<usize> {
        p.queues.get(wallet).map(VecDeque::len)
    }

    fn ns(updates: &[Value]) -> Vec<u64> {
        updates.iter().filter_map(|u| u["n"].as_u64()).collect()
    }

    #[test]
    fn cap_evicts_the_oldest() {
        let mut p = Polling::new(3);
        p.open("w");
        for n in 0..5 {
            push(&mut p, Some("w"), n);
        }
        assert_eq!(queued(&p, "w"), Some(3));
        assert_eq!(ns(&p.take("w")), [2, 3, 4]);
    }

    #[test]
    fn global_pushes_reach_every_queue_and_wallet_pushes_one() {
        let mut p = Polling::new(10);
        p.open("a");
        p.open("b");
        push(&mut p, None, 1);
        push(&mut p, Some("a"), 2);
        push(&mut p, Some("unloaded"), 3);
        assert_eq!(queued(&p, "unloaded"), None);
        assert_eq!(ns(&p.take("a")), [1, 2]);
        assert_eq!(ns(&p.take("b")), [1]);
        assert_eq!(p.to_json(), json!({"cap": 10, "queues": {"a": 0, "b": 0}}));
    }

    #[test]
    fn take_returns_the_pushed_update_and_clears() {
        let mut p = Polling::new(10);
        p.open("w");
        let update = json!({"event": "new_payment", "address": "x", "tx_hashes": ["t"]});
        p.record_frames(&[Frame::update(&update, Some("w"), "BTC")]);
        assert_eq!(p.take("w"), [update]);
        assert!(p.take("w").is_empty());
        assert!(p.take("never_opened").is_empty());
    }

    #[test]
    fn cap_zero_stores_nothing() {
        let mut p = Polling::new(0);
        p.open("w");
        push(&mut p, None, 1);
        push(&mut p, Some("w"), 2);
        assert_eq!(queued(&p, "w"), Some(0));
        assert!(p.take("w").is_empty());
    }

    #[test]
    fn open_keeps_a_queue_close_and_clear_drop_it() {
        let mut p = Polling::new(10);
        p.open("w");
        push(&mut p, Some("w"), 1);
        p.open("w");
        assert_eq!(queued(&p, "w"), Some(1));
        p.close("w");
        assert_eq!(queued(&p, "w"), None);
        p.open("w");
        p.open("v");
        push(&mut p, None, 2);
        p.clear();
        assert_eq!((queued(&p, "w"), queued(&p, "v")), (None, None));
    }

    #[test]
    fn lowering_the_cap_trims_and_the_cap_is_bounded() {
        let mut p = Polling::new(10);
        p.open("w");
        for n in 0..6 {
            push(&mut p, Some("w"), n);
        }
        p.set_cap(2);
        assert_eq!(ns(&p.take("w")), [4, 5]);
        assert_eq!(Polling::new(usize::MAX).cap(), MAX_POLLING_CAP);
    }

    #[test]
    fn text_that_is_not_an_envelope_is_skipped() {
        assert_eq!(update_of("}{"), None);
        assert_eq!(update_of("[1]"), None);
        assert_eq!(update_of(r#"{"updates":[]}"#), None);
        assert_eq!(update_of(r#"{"updates":[5]}"#), Some(json!(5)));
    }
}
