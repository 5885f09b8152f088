//! The lookup cache: hits within the TTL, coalescing onto a call in flight, failures not
//! cached, the size bound, and the uncoalesced fallback when full of calls in flight.

use super::*;
use serde_json::json;

fn key(tx: &str) -> LookupKey {
    LookupKey {
        method: "get_transaction",
        tx: tx.into(),
    }
}

fn found(confirmations: i64) -> Found {
    Found {
        confirmations: Some(confirmations),
        outputs: Some(vec![(json!("bc1a"), 5)]),
    }
}

#[test]
fn an_answer_is_reused_within_the_ttl_and_asked_again_after_it() {
    let t0 = Instant::now();
    let mut c = LookupCache::new(16, TTL);
    assert_eq!(c.begin(&key("a"), 1, t0), Begin::Call { tracked: true });
    let (f, tickets) = c.finish(&key("a"), 1, Some(found(0)), t0);
    assert_eq!((f.as_deref(), tickets), (Some(&found(0)), vec![1]));
    let soon = t0 + TTL - Duration::from_millis(1);
    assert_eq!(
        c.begin(&key("a"), 2, soon),
        Begin::Cached(Arc::new(found(0)))
    );
    // Another method is another key.
    let other = LookupKey {
        method: "gettransaction",
        tx: "a".into(),
    };
    assert_eq!(c.begin(&other, 3, soon), Begin::Call { tracked: true });
    // Confirmations change: after the TTL the daemon is asked again.
    assert_eq!(
        c.begin(&key("a"), 4, t0 + TTL),
        Begin::Call { tracked: true }
    );
}

#[test]
fn lookups_of_a_tx_in_flight_join_the_call_and_complete_in_order() {
    let now = Instant::now();
    let mut c = LookupCache::default();
    assert_eq!(c.begin(&key("a"), 1, now), Begin::Call { tracked: true });
    assert_eq!(c.begin(&key("b"), 2, now), Begin::Call { tracked: true });
    assert_eq!(c.begin(&key("a"), 3, now), Begin::Joined);
    assert_eq!(c.begin(&key("a"), 4, now), Begin::Joined);
    let (_, tickets) = c.finish(&key("a"), 1, Some(found(1)), now);
    assert_eq!(tickets, [1, 3, 4]);
    let (_, tickets) = c.finish(&key("b"), 2, Some(found(2)), now);
    assert_eq!(tickets, [2]);
}

#[test]
fn a_failed_call_completes_its_waiters_and_is_not_cached() {
    let now = Instant::now();
    let mut c = LookupCache::default();
    c.begin(&key("a"), 1, now);
    assert_eq!(c.begin(&key("a"), 2, now), Begin::Joined);
    let (f, tickets) = c.finish(&key("a"), 1, None, now);
    assert_eq!((f, tickets), (None, vec![1, 2]));
    assert!(c.is_empty());
    assert_eq!(c.begin(&key("a"), 3, now), Begin::Call { tracked: true });
}

#[test]
fn the_cache_is_bounded_and_evicts_the_oldest_answers() {
    let t0 = Instant::now();
    let mut c = LookupCache::new(3, TTL);
    for (i, tx) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let at = t0 + Duration::from_millis(i as u64);
        assert_eq!(
            c.begin(&key(tx), i as u64, at),
            Begin::Call { tracked: true }
        );
        c.finish(&key(tx), i as u64, Some(found(0)), at);
        assert!(c.len() <= 3);
    }
    let later = t0 + Duration::from_millis(10);
    assert_eq!(
        c.begin(&key("a"), 9, later),
        Begin::Call { tracked: true },
        "evicted"
    );
    assert!(matches!(c.begin(&key("d"), 10, later), Begin::Cached(_)));
}

#[test]
fn full_of_calls_in_flight_a_lookup_is_made_uncoalesced() {
    let now = Instant::now();
    let mut c = LookupCache::new(2, TTL);
    c.begin(&key("a"), 1, now);
    c.begin(&key("b"), 2, now);
    assert_eq!(c.begin(&key("c"), 3, now), Begin::Call { tracked: false });
    assert_eq!(c.begin(&key("c"), 4, now), Begin::Call { tracked: false });
    // Each untracked call completes only its own ticket and leaves nothing behind.
    assert_eq!(c.finish(&key("c"), 3, Some(found(0)), now).1, [3]);
    assert_eq!(c.finish(&key("c"), 4, None, now).1, [4]);
    assert_eq!(c.len(), 2);
}

#[test]
fn huge_answers_are_used_once_and_not_kept() {
    let now = Instant::now();
    let mut c = LookupCache::default();
    c.begin(&key("a"), 1, now);
    let big = Found {
        confirmations: Some(0),
        outputs: Some(vec![(json!("x"), 1); MAX_CACHED_OUTPUTS + 1]),
    };
    let (f, _) = c.finish(&key("a"), 1, Some(big.clone()), now);
    assert_eq!(f.as_deref(), Some(&big));
    assert!(c.is_empty());
}

#[test]
fn clearing_keeps_calls_in_flight() {
    let now = Instant::now();
    let mut c = LookupCache::default();
    c.begin(&key("a"), 1, now);
    c.finish(&key("a"), 1, Some(found(0)), now);
    c.begin(&key("b"), 2, now);
    c.clear_answers();
    assert_eq!(c.len(), 1);
    assert_eq!(c.begin(&key("b"), 3, now), Begin::Joined);
    assert_eq!(c.begin(&key("a"), 4, now), Begin::Call { tracked: true });
}
