//! The event pipeline between the daemon side and the fan-out: de-duplication, sequence numbers,
//! serialise-once, and the resume ring.
//!
//! Two steps: [`Pipeline::publish`] de-duplicates and gives the event its seq (`assigned_seq`);
//! [`Pipeline::release`] makes it visible to clients (ring and `last_seq`). Without a database
//! the reactor releases at once; with one it releases only once the event is durable (see
//! [`gate`] and docs/database.md, "Durability").
//!
//! Invariants: `assigned_seq` increases by exactly one per published event; events are released
//! in seq order, so `last_seq` (the last seq a client can have seen) also grows by one and the
//! ring holds released events only; a duplicate (see docs/behaviour.md) never consumes a
//! sequence number.

pub mod gate;

use crate::event::{Event, Published, now_unix};
use crate::fanout::ring::Ring;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

/// How many recent event keys the de-duplicator remembers.
pub const DEDUP_CAPACITY: usize = 200_000;

/// A bounded memory of recently seen event identities (FIFO eviction).
///
/// Identities are stored as 128-bit keyed fingerprints (two SipHash instances with random
/// keys), not strings: 16 bytes per event and no allocation per event. The chance that two
/// different events within the window share a fingerprint is below 2^-90, and the random keys
/// keep a daemon from crafting collisions.
#[derive(Debug)]
pub struct Dedup {
    seen: HashSet<u128>,
    order: VecDeque<u128>,
    capacity: usize,
    keys: (RandomState, RandomState),
}

impl Dedup {
    /// Remembers at most `capacity` identities.
    ///
    /// Both collections are sized once, here, so memory is flat once the window is full. Grown
    /// on demand, the queue's buffer rounds up to a power of two whose pages are touched one
    /// slot per event long after the window is full (+1 MB over ~5 minutes at 200 events/s, seen
    /// in the soak benchmark), and the set, kept full by one insert and one remove per event,
    /// runs out of tombstone-free slots and doubles once (+4.4 MB), because the hash table only
    /// rehashes in place while at most half of its capacity is used: twice `capacity` keeps it
    /// there.
    pub fn new(capacity: usize) -> Dedup {
        let capacity = capacity.max(1);
        Dedup {
            seen: HashSet::with_capacity(2 * capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    fn fingerprint(&self, ev: &Event) -> Option<u128> {
        let (mut a, mut b) = (self.keys.0.build_hasher(), self.keys.1.build_hasher());
        if !identity(ev, &mut a) || !identity(ev, &mut b) {
            return None;
        }
        Some((u128::from(a.finish()) << 64) | u128::from(b.finish()))
    }

    /// True if `ev` was already seen, without remembering it (recovered events are checked
    /// before they cost a lookup).
    pub fn contains(&self, ev: &Event) -> bool {
        self.fingerprint(ev).is_some_and(|f| self.seen.contains(&f))
    }

    /// True if `ev` was already seen (and should be dropped); remembers it otherwise.
    pub fn is_duplicate(&mut self, ev: &Event) -> bool {
        let Some(fingerprint) = self.fingerprint(ev) else {
            return false;
        };
        if self.seen.contains(&fingerprint) {
            return true;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(fingerprint);
        self.order.push_back(fingerprint);
        false
    }
}

/// Feeds the identity of an event for de-duplication (docs/protocol.md, "Events") into `h`; false
/// when the event is never deduplicated. Strings hash with a terminator, so field boundaries are
/// unambiguous.
fn identity(ev: &Event, h: &mut impl Hasher) -> bool {
    let fields: &[&str] = match ev.name.as_str() {
        "new_transaction" => &["tx_hash"],
        "new_payment" => &["address", "status", "sent_amount"],
        "verified_tx" => &["tx_hash", "height"],
        "new_block" => &["height"],
        _ => return false,
    };
    ev.name.hash(h);
    ev.coin.hash(h);
    ev.wallet.hash(h);
    for f in fields {
        match ev.data.get(*f) {
            Some(Value::String(v)) => (0u8, v.as_str()).hash(h),
            Some(Value::Null) | None => 1u8.hash(h),
            Some(other) => (2u8, other.to_string()).hash(h),
        }
    }
    true
}

/// Sequencing and history.
#[derive(Debug)]
pub struct Pipeline {
    pub epoch: Arc<str>,
    /// The last seq released to clients (the `seq` of a `subscribed` reply).
    pub last_seq: u64,
    /// The last seq given to an event; ahead of `last_seq` while events wait for durability.
    pub assigned_seq: u64,
    pub ring: Ring,
    pub dedup: Dedup,
    /// Events published so far in this run.
    pub published: u64,
    /// Duplicates dropped so far in this run.
    pub duplicates: u64,
}

impl Pipeline {
    /// Continues `epoch` after `last_seq`.
    pub fn new(epoch: Arc<str>, last_seq: u64, ring_size: usize) -> Pipeline {
        Pipeline {
            epoch,
            last_seq,
            assigned_seq: last_seq,
            ring: Ring::starting_after(ring_size, last_seq),
            dedup: Dedup::new(DEDUP_CAPACITY),
            published: 0,
            duplicates: 0,
        }
    }

    /// Primes de-duplication with events delivered before this run (`recent`, newest first).
    pub fn remembering(mut self, recent: &[Event]) -> Pipeline {
        for ev in recent.iter().rev() {
            self.dedup.is_duplicate(ev);
        }
        self
    }

    /// Sequences and serialises `ev` once, or returns `None` for a duplicate. The event is not
    /// visible to clients until it is [released](Pipeline::release).
    pub fn publish(&mut self, ev: &Event) -> Option<Arc<Published>> {
        if self.dedup.is_duplicate(ev) {
            self.duplicates += 1;
            log::debug!("[WORKER] Dropped duplicate {} for {}", ev.name, ev.coin);
            return None;
        }
        self.assigned_seq += 1;
        self.published += 1;
        Some(Arc::new(Published::new(
            self.epoch.clone(),
            self.assigned_seq,
            ev,
            now_unix(),
        )))
    }

    /// Makes a published event visible: the ring and `last_seq`. Events must be released in
    /// seq order (the reactor's gate keeps that order).
    pub fn release(&mut self, p: &Arc<Published>) {
        debug_assert_eq!(p.seq, self.last_seq + 1, "released out of order");
        self.last_seq = p.seq;
        self.ring.push(p.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tx(wallet: &str, hash: &str) -> Event {
        Event::new("BTC".into(), "new_transaction", Some(wallet.into()))
            .with("tx_hash", json!(hash))
    }

    #[test]
    fn sequence_increases_by_one_and_duplicates_take_none() {
        let mut p = Pipeline::new("e".into(), 41, 10);
        let mut published = Vec::new();
        let mut publish = |p: &mut Pipeline, ev: &Event| {
            let out = p.publish(ev);
            published.extend(out.clone());
            out.map(|e| e.seq)
        };
        assert_eq!(publish(&mut p, &tx("w", "a")), Some(42));
        assert_eq!(publish(&mut p, &tx("w", "a")), None);
        assert_eq!(
            publish(&mut p, &tx("w2", "a")),
            Some(43),
            "another wallet is another event"
        );
        let block = |h: u64| Event::new("ETH".into(), "new_block", None).with("height", json!(h));
        assert_eq!(publish(&mut p, &block(10)), Some(44));
        assert_eq!(
            publish(&mut p, &block(9)),
            Some(45),
            "lower, unseen heights still go out"
        );
        assert_eq!(publish(&mut p, &block(10)), None);
        assert_eq!(p.assigned_seq, 45);
        assert_eq!(p.duplicates, 2);
        assert_eq!(
            (p.last_seq, p.ring.last_seq()),
            (41, None),
            "nothing visible before release"
        );
        for e in &published {
            p.release(e);
        }
        assert_eq!((p.last_seq, p.ring.last_seq()), (45, Some(45)));
    }

    #[test]
    fn payments_dedup_on_status_and_amount() {
        let pay = |status: i64, amount: &str| {
            Event::new("BTC".into(), "new_payment", Some("w".into()))
                .with("address", json!("r1"))
                .with("status", json!(status))
                .with("sent_amount", json!(amount))
        };
        let mut p = Pipeline::new("e".into(), 0, 10);
        assert!(p.publish(&pay(7, "1")).is_some());
        assert!(p.publish(&pay(7, "1")).is_none());
        assert!(p.publish(&pay(3, "1")).is_some());
        assert!(p.publish(&pay(0, "0.5")).is_some());
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let mut d = Dedup::new(3);
        for h in ["a", "b", "c", "d"] {
            assert!(!d.is_duplicate(&tx("w", h)));
        }
        assert_eq!(d.seen.len(), 3);
        assert_eq!(d.order.len(), 3);
        assert!(!d.is_duplicate(&tx("w", "a")), "evicted keys are forgotten");
        assert!(d.is_duplicate(&tx("w", "d")));
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut d = Dedup::new(10);
        assert!(!d.is_duplicate(&tx("a", "bc")));
        assert!(
            !d.is_duplicate(&tx("ab", "c")),
            "another wallet and hash, not a duplicate"
        );
        let block =
            |coin: &str| Event::new(coin.into(), "new_block", None).with("height", json!(1));
        assert!(!d.is_duplicate(&block("BTC")));
        assert!(
            !d.is_duplicate(&block("LTC")),
            "the same height on another coin"
        );
    }

    #[test]
    fn unknown_events_are_never_deduplicated() {
        let mut p = Pipeline::new("e".into(), 0, 10);
        let ev = Event::new("BTC".into(), "daemon_status", None).with("connected", json!(true));
        assert!(p.publish(&ev).is_some());
        assert!(p.publish(&ev).is_some());
    }
}
