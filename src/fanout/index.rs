//! Who receives an event, without scanning every client.
//!
//! Each subscribed key has a *category* from the dimensions its filter restricts: address
//! (`A`), wallet (`W`), both, or neither. Every key is reachable through exactly one *path* for
//! each *shape* of event (does it carry an address? a wallet?), which is what makes results
//! unique without a "seen" set:
//!
//! | key category | event carries an address | event carries a wallet only | neither |
//! |---|---|---|---|
//! | neither | event bucket | event bucket | event bucket |
//! | `W` only | event bucket | `by_wallet[0]` | event bucket |
//! | `A` only | `by_address` | event bucket | event bucket |
//! | `A` and `W` | `by_address` | `by_wallet[1]` | event bucket |
//!
//! An event bucket is per category and per event slot (each known name, plus `"*"`), so for
//! `new_block` it yields exactly the keys subscribed to `new_block` or `"*"`. Candidates are
//! verified with [`Filter::matches`]; [`SubscriptionIndex::matching`] therefore costs
//! O(candidates), and with address or wallet filters the candidates are the keys watching one
//! of the event's addresses or its wallet. The only duplicates possible come from one key
//! watching several of one event's addresses; they are removed before verification.
//!
//! Invariant: a key is in the posting lists and buckets derived from its stored filter, and
//! nowhere else; `insert`/`remove` index and unindex with the same filter. A filter with no
//! events is stored (for `get`) but not indexed.

use crate::client::filter::{
    Filter, carries_address, carries_wallet, event_slot, normalize_address,
};
use crate::event::{EventMeta, KNOWN_EVENTS};
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Event slots per bucket row: one per known name, then `"*"`.
const SLOTS: usize = KNOWN_EVENTS.len() + 1;
/// The `"*"` slot.
const STAR: usize = KNOWN_EVENTS.len();
/// Category bits.
const CAT_WALLET: usize = 1;
const CAT_ADDRESS: usize = 2;

/// Keys watching one address or wallet. Most addresses have a single watcher, so that case
/// needs no heap allocation.
#[derive(Debug)]
enum Posting<K> {
    One(K),
    Many(Vec<K>),
}

impl<K: Copy + Eq> Posting<K> {
    fn add(&mut self, key: K) {
        match self {
            Posting::One(k) => *self = Posting::Many(vec![*k, key]),
            Posting::Many(v) => v.push(key),
        }
    }

    /// Removes `key`; returns true when the posting is now empty.
    fn remove(&mut self, key: K) -> bool {
        match self {
            Posting::One(k) => *k == key,
            Posting::Many(v) => {
                if let Some(pos) = v.iter().position(|k| *k == key) {
                    v.swap_remove(pos);
                }
                if let [only] = v[..] {
                    *self = Posting::One(only);
                }
                false
            }
        }
    }

    fn keys(&self) -> &[K] {
        match self {
            Posting::One(k) => std::slice::from_ref(k),
            Posting::Many(v) => v,
        }
    }
}

/// Subscription filters by key, indexed for fan-out.
#[derive(Debug)]
pub struct SubscriptionIndex<K: Copy + Eq + Hash + Ord> {
    /// Every key's filter (the source of truth).
    filters: HashMap<K, Filter>,
    /// Normalised address -> keys whose filter lists it.
    by_address: HashMap<Box<str>, Posting<K>>,
    /// Wallet -> keys whose filter lists it; `[0]` keys without and `[1]` with an address filter.
    by_wallet: [HashMap<Box<str>, Posting<K>>; 2],
    /// `[category][slot]`: keys of that category subscribed to that event slot.
    buckets: [[HashSet<K>; SLOTS]; 4],
}

impl<K: Copy + Eq + Hash + Ord> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        SubscriptionIndex {
            filters: HashMap::new(),
            by_address: HashMap::new(),
            by_wallet: Default::default(),
            buckets: Default::default(),
        }
    }
}

impl<K: Copy + Eq + Hash + Ord> SubscriptionIndex<K> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key`'s filter, replacing any previous one.
    pub fn insert(&mut self, key: K, filter: Filter) {
        self.remove(key);
        self.index(key, &filter);
        self.filters.insert(key, filter);
    }

    /// Removes `key`, returning its filter.
    pub fn remove(&mut self, key: K) -> Option<Filter> {
        let filter = self.filters.remove(&key)?;
        self.unindex(key, &filter);
        Some(filter)
    }

    /// `key`'s filter.
    pub fn get(&self, key: K) -> Option<&Filter> {
        self.filters.get(&key)
    }

    /// Number of keys (subscribed or with an empty filter).
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Appends every key whose filter matches `meta` to `out`, each exactly once, in no
    /// particular order. Returns how many candidates were examined (for metrics and tests).
    pub fn matching(&self, meta: &EventMeta, out: &mut Vec<K>) -> usize {
        let has_addr = carries_address(meta);
        let has_wallet = carries_wallet(meta);
        let mut examined = 0;
        if has_addr {
            examined += self.address_candidates(meta, out);
        }
        if let Some(w) = meta.wallet.as_deref() {
            let rows: &[usize] = if has_addr { &[0] } else { &[0, 1] };
            for &row in rows {
                if let Some(p) = self.by_wallet[row].get(w) {
                    examined += self.verify(p.keys().iter().copied(), meta, out);
                }
            }
        }
        let slot = event_slot(&meta.name);
        for (cat, row) in self.buckets.iter().enumerate() {
            let skip =
                (cat & CAT_ADDRESS != 0 && has_addr) || (cat & CAT_WALLET != 0 && has_wallet);
            if skip {
                continue;
            }
            if let Some(s) = slot {
                examined += self.verify(row[s].iter().copied(), meta, out);
            }
            examined += self.verify(row[STAR].iter().copied(), meta, out);
        }
        examined
    }

    /// Keys watching any of the event's addresses, deduplicated, then verified.
    fn address_candidates(&self, meta: &EventMeta, out: &mut Vec<K>) -> usize {
        let posting = |a: &str| self.by_address.get(&*normalize_address(a));
        if let [a] = &meta.addresses[..] {
            return posting(a).map_or(0, |p| self.verify(p.keys().iter().copied(), meta, out));
        }
        // One key may watch several of the event's addresses.
        let mut keys: Vec<K> = (meta.addresses.iter())
            .filter_map(|a| posting(a))
            .flat_map(|p| p.keys().iter().copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        self.verify(keys.into_iter(), meta, out)
    }

    fn verify(&self, keys: impl Iterator<Item = K>, meta: &EventMeta, out: &mut Vec<K>) -> usize {
        let mut examined = 0;
        for k in keys {
            examined += 1;
            if self.filters.get(&k).is_some_and(|f| f.matches(meta)) {
                out.push(k);
            }
        }
        examined
    }

    fn index(&mut self, key: K, f: &Filter) {
        if f.is_empty() {
            return;
        }
        let cat = category(f);
        for slot in slots(f) {
            self.buckets[cat][slot].insert(key);
        }
        if let Some(addrs) = f.address_set() {
            for a in addrs {
                match self.by_address.get_mut(a) {
                    Some(p) => p.add(key),
                    None => {
                        self.by_address.insert(a.clone(), Posting::One(key));
                    }
                }
            }
        }
        if let Some(wallets) = f.wallet_set() {
            let map = &mut self.by_wallet[usize::from(f.address_set().is_some())];
            for w in wallets {
                match map.get_mut(w) {
                    Some(p) => p.add(key),
                    None => {
                        map.insert(w.clone(), Posting::One(key));
                    }
                }
            }
        }
    }

    fn unindex(&mut self, key: K, f: &Filter) {
        if f.is_empty() {
            return;
        }
        let cat = category(f);
        for slot in slots(f) {
            self.buckets[cat][slot].remove(&key);
        }
        if let Some(addrs) = f.address_set() {
            for a in addrs {
                remove_posting(&mut self.by_address, a, key);
            }
        }
        if let Some(wallets) = f.wallet_set() {
            let map = &mut self.by_wallet[usize::from(f.address_set().is_some())];
            for w in wallets {
                remove_posting(map, w, key);
            }
        }
    }
}

fn remove_posting<K: Copy + Eq>(map: &mut HashMap<Box<str>, Posting<K>>, name: &str, key: K) {
    if map.get_mut(name).is_some_and(|p| p.remove(key)) {
        map.remove(name);
    }
}

fn category(f: &Filter) -> usize {
    let mut cat = 0;
    if f.address_set().is_some() {
        cat |= CAT_ADDRESS;
    }
    if f.wallet_set().is_some() {
        cat |= CAT_WALLET;
    }
    cat
}

/// The bucket slots a (non-empty) filter sits in.
fn slots(f: &Filter) -> Vec<usize> {
    if f.wants_all_events() {
        vec![STAR]
    } else {
        f.known_slots().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::request::SubscribeRequest;

    /// The crate's seeded generator, with the helpers these property tests need.
    struct Rng(crate::util::rng::Rng);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0.next_u64()
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
        fn pick<'a>(&mut self, items: &[&'a str], max: usize) -> Vec<&'a str> {
            let n = 1 + self.below(max);
            (0..n).map(|_| items[self.below(items.len())]).collect()
        }
    }

    const NAMES: [&str; 6] = [
        "new_block",
        "new_transaction",
        "new_payment",
        "verified_tx",
        "daemon_status",
        "brand_new_event",
    ];
    const COINS: [&str; 3] = ["BTC", "ETH", "LTC"];
    const WALLETS: [&str; 5] = ["w0", "w1", "w2", "w3", "w4"];
    const ADDRS: [&str; 8] = [
        "a0",
        "a1",
        "a2",
        "a3",
        "a4",
        "a5",
        "0xabcdef0123456789abcdef0123456789abcdef01",
        "0xABCDEF0123456789ABCDEF0123456789ABCDEF01",
    ];

    fn strings(v: Vec<&str>) -> Option<Vec<String>> {
        Some(v.into_iter().map(String::from).collect())
    }

    fn random_filter(rng: &mut Rng) -> Filter {
        let mut events: Vec<String> = if rng.chance(15) {
            vec!["*".into()]
        } else {
            rng.pick(&NAMES[..5], 3)
                .into_iter()
                .map(String::from)
                .collect()
        };
        if rng.chance(5) {
            events.push("*".into());
        }
        let req = SubscribeRequest {
            events,
            coins: if rng.chance(40) {
                strings(rng.pick(&COINS, 2))
            } else {
                None
            },
            wallets: if rng.chance(40) {
                strings(rng.pick(&WALLETS, 2))
            } else {
                None
            },
            addresses: if rng.chance(40) {
                strings(rng.pick(&ADDRS, 3))
            } else {
                None
            },
            since: None,
            epoch: None,
        };
        let known: Vec<String> = COINS.iter().map(|c| c.to_string()).collect();
        let mut f = Filter::from_request(&req, &known).unwrap();
        if rng.chance(10) {
            let drop = vec![NAMES[rng.below(5)].to_string()];
            f.unsubscribe(Some(&drop)).unwrap();
        }
        f
    }

    fn random_event(rng: &mut Rng) -> EventMeta {
        let n_addrs = if rng.chance(40) { 0 } else { 1 + rng.below(4) };
        EventMeta {
            name: NAMES[rng.below(NAMES.len())].into(),
            coin: COINS[rng.below(COINS.len())].into(),
            wallet: rng
                .chance(60)
                .then(|| WALLETS[rng.below(WALLETS.len())].into()),
            addresses: (0..n_addrs)
                .map(|_| ADDRS[rng.below(ADDRS.len())].into())
                .collect(),
        }
    }

    fn brute_force(filters: &HashMap<u32, Filter>, meta: &EventMeta) -> Vec<u32> {
        let mut v: Vec<u32> = filters
            .iter()
            .filter(|(_, f)| f.matches(meta))
            .map(|(k, _)| *k)
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn matching_agrees_with_a_brute_force_scan() {
        let mut rng = Rng(crate::util::rng::Rng::seeded(0x5EED_CAFE));
        let mut index = SubscriptionIndex::new();
        let mut shadow: HashMap<u32, Filter> = HashMap::new();
        let mut out = Vec::new();
        for round in 0..3000 {
            // Churn: insert, replace and remove keys as a live server would.
            let key = rng.below(300) as u32;
            if rng.chance(20) {
                assert_eq!(index.remove(key), shadow.remove(&key));
            } else {
                let f = random_filter(&mut rng);
                shadow.insert(key, f.clone());
                index.insert(key, f);
            }
            assert_eq!(index.len(), shadow.len());
            for _ in 0..5 {
                let meta = random_event(&mut rng);
                out.clear();
                out.push(u32::MAX); // pre-existing content must be kept
                index.matching(&meta, &mut out);
                assert_eq!(out[0], u32::MAX);
                let mut got = out[1..].to_vec();
                let n = got.len();
                got.sort_unstable();
                got.dedup();
                assert_eq!(got.len(), n, "round {round}: duplicate keys for {meta:?}");
                assert_eq!(got, brute_force(&shadow, &meta), "round {round}: {meta:?}");
            }
        }
        // Removing everything leaves no posting list or bucket behind.
        for key in 0..300 {
            index.remove(key);
        }
        assert!(index.is_empty());
        assert!(index.by_address.is_empty());
        assert!(index.by_wallet.iter().all(HashMap::is_empty));
        assert!(index.buckets.iter().flatten().all(HashSet::is_empty));
    }

    #[test]
    fn candidates_stay_small_with_many_address_watchers() {
        let known = vec!["BTC".to_string()];
        let mut index = SubscriptionIndex::new();
        for key in 0..10_000u32 {
            let req = SubscribeRequest {
                events: vec!["new_transaction".into(), "new_payment".into()],
                addresses: Some((0..200).map(|j| format!("k{key}a{j}")).collect()),
                ..Default::default()
            };
            index.insert(key, Filter::from_request(&req, &known).unwrap());
        }
        let meta = EventMeta {
            name: "new_transaction".into(),
            coin: "BTC".into(),
            wallet: Some("w".into()),
            addresses: vec!["k1234a56".into(), "k77a0".into(), "nobody".into()],
        };
        let mut out = Vec::new();
        let examined = index.matching(&meta, &mut out);
        out.sort_unstable();
        assert_eq!(out, [77, 1234]);
        assert_eq!(examined, 2);

        // An event carrying no address reaches every subscriber of its name (that is what
        // matches), and nobody else is examined.
        let verified = EventMeta {
            name: "verified_tx".into(),
            coin: "BTC".into(),
            wallet: Some("w".into()),
            addresses: vec![],
        };
        out.clear();
        assert_eq!(index.matching(&verified, &mut out), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn replace_moves_a_key_between_categories() {
        let known = vec!["BTC".to_string()];
        let mk = |addresses: Option<Vec<String>>| {
            let req = SubscribeRequest {
                events: vec!["*".into()],
                addresses,
                ..Default::default()
            };
            Filter::from_request(&req, &known).unwrap()
        };
        let mut index = SubscriptionIndex::new();
        index.insert(1u32, mk(Some(vec!["a".into()])));
        index.insert(1u32, mk(None));
        assert!(index.by_address.is_empty());
        let meta = EventMeta {
            name: "x".into(),
            coin: "BTC".into(),
            wallet: None,
            addresses: vec!["b".into()],
        };
        let mut out = Vec::new();
        index.matching(&meta, &mut out);
        assert_eq!(out, [1]);
        assert!(index.get(1).is_some_and(|f| f.addresses() == ["*"]));
    }
}
