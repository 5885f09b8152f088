//! Fan-out of daemon pushes to the open `/ws` sockets.
//!
//! Each push is serialised once into a [`Frame`] (envelope text shared by reference count) and
//! queued to every socket's thread, which applies the socket's `{"xpub"}` filter and writes it.
//! Invariants: a socket's queue never holds more than [`MAX_QUEUED`] frames; beyond that, frames
//! for that socket are dropped and counted in [`Hub::dropped`] (a daemon does not buffer for
//! slow readers either). Frames reach each socket in broadcast order.

use super::chain::Emit;
use crossbeam_channel::{Receiver, Sender};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tungstenite::Utf8Bytes;

/// Frames queued for one socket before further frames to it are dropped: about 0.65 s of the
/// 200k events/s bench rate.
pub(crate) const MAX_QUEUED: usize = 1 << 17;

/// One push, ready to write.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The wallet the push belongs to; `None` for global pushes (and raw text), which every
    /// socket receives whatever its filter.
    pub wallet: Option<Arc<str>>,
    pub text: Utf8Bytes,
}

impl Frame {
    /// The frame carrying one update in the daemon envelope.
    pub(crate) fn update(update: &Value, wallet: Option<&str>, currency: &str) -> Frame {
        Frame {
            wallet: wallet.map(Arc::from),
            text: envelope(update, wallet, currency).into(),
        }
    }

    /// The frame for a chain update.
    pub(crate) fn emit(emit: &Emit, currency: &str) -> Frame {
        Frame::update(&emit.update, emit.wallet.as_deref(), currency)
    }
}

/// `{"updates":[update],"wallet":wallet,"currency":currency}`.
pub(crate) fn envelope(update: &Value, wallet: Option<&str>, currency: &str) -> String {
    json!({"updates": [update], "wallet": wallet, "currency": currency}).to_string()
}

/// A socket's end of the hub.
pub(crate) struct Subscription {
    pub id: u64,
    pub rx: Receiver<Frame>,
    /// Frames in `rx`; the socket thread decrements it for each frame it takes.
    pub queued: Arc<AtomicUsize>,
}

struct Sub {
    id: u64,
    tx: Sender<Frame>,
    queued: Arc<AtomicUsize>,
}

/// The registry of open sockets.
#[derive(Default)]
pub(crate) struct Hub {
    subs: Mutex<Vec<Sub>>,
    next_id: AtomicU64,
    /// Frames queued to sockets so far.
    pub queued_total: AtomicU64,
    /// Frames dropped because a socket's queue was full.
    pub dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    /// Registers a socket.
    pub(crate) fn subscribe(&self) -> Subscription {
        let (tx, rx) = crossbeam_channel::unbounded();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queued = Arc::new(AtomicUsize::new(0));
        lock(&self.subs).push(Sub {
            id,
            tx,
            queued: queued.clone(),
        });
        Subscription { id, rx, queued }
    }

    /// Removes a socket.
    pub(crate) fn unsubscribe(&self, id: u64) {
        lock(&self.subs).retain(|s| s.id != id);
    }

    /// Open sockets.
    pub(crate) fn clients(&self) -> usize {
        lock(&self.subs).len()
    }

    /// Queues `frames`, in order, to every socket.
    pub(crate) fn broadcast(&self, frames: &[Frame]) {
        if frames.is_empty() {
            return;
        }
        let mut subs = lock(&self.subs);
        let mut gone = Vec::new();
        for sub in subs.iter() {
            for frame in frames {
                if sub.queued.load(Ordering::Relaxed) >= MAX_QUEUED {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                sub.queued.fetch_add(1, Ordering::Relaxed);
                if sub.tx.send(frame.clone()).is_err() {
                    gone.push(sub.id);
                    break;
                }
                self.queued_total.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !gone.is_empty() {
            subs.retain(|s| !gone.contains(&s.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_one_update_wallet_and_currency() {
        let text = envelope(&json!({"event": "new_block", "height": 5}), None, "BTC");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"updates": [{"event": "new_block", "height": 5}], "wallet": null, "currency": "BTC"})
        );
        let f = Frame::update(&json!({"event": "x"}), Some("w_c"), "ETH");
        assert_eq!(f.wallet.as_deref(), Some("w_c"));
        assert!(f.text.as_str().contains(r#""wallet":"w_c""#));
    }

    #[test]
    fn broadcast_reaches_every_socket_in_order() {
        let hub = Hub::default();
        let (a, b) = (hub.subscribe(), hub.subscribe());
        let frames: Vec<Frame> = (0..3)
            .map(|i| Frame::update(&json!(i), None, "BTC"))
            .collect();
        hub.broadcast(&frames);
        for s in [&a, &b] {
            let got: Vec<String> =
                s.rx.try_iter()
                    .map(|f| f.text.as_str().to_string())
                    .collect();
            assert_eq!(got.len(), 3);
            assert!(got[0].contains("[0]") && got[2].contains("[2]"));
            assert_eq!(s.queued.load(Ordering::Relaxed), 3);
        }
        hub.unsubscribe(a.id);
        assert_eq!(hub.clients(), 1);
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let hub = Hub::default();
        let s = hub.subscribe();
        s.queued.store(MAX_QUEUED, Ordering::Relaxed);
        hub.broadcast(&[Frame::update(&json!(1), None, "BTC")]);
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 1);
        assert!(s.rx.try_recv().is_err());
    }
}
