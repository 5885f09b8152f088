use super::*;
use crate::client::request::SubscribeRequest;
use crate::event::Event;

fn filter(events: &[&str], coins: Option<&[&str]>) -> Filter {
    let req = SubscribeRequest {
        events: events.iter().map(|s| s.to_string()).collect(),
        coins: coins.map(|c| c.iter().map(|s| s.to_string()).collect()),
        wallets: None,
        addresses: None,
        since: None,
        epoch: None,
    };
    Filter::from_request(&req, &["BTC".into(), "ETH".into()]).unwrap()
}

fn published(seq: u64, coin: &str, name: &str) -> Arc<Published> {
    let ev = Event::new(coin.into(), name, None).with("n", seq.into());
    Arc::new(Published::new("e".into(), seq, &ev, 1.0))
}

/// Stages `events`, drains, and returns (batch, sorted keys) per group, sorted by first key.
fn fan(subs: &mut Subscribers, events: &[Arc<Published>]) -> Vec<(Batch, Vec<usize>)> {
    for p in events {
        subs.stage(&p.meta, p);
    }
    let (mut out, mut members) = (Vec::new(), Vec::new());
    subs.drain_staged(&mut out, &mut members);
    assert!(!subs.has_staged());
    let mut got: Vec<(Batch, Vec<usize>)> = out
        .into_iter()
        .map(|(b, r)| {
            let mut keys = members[r].to_vec();
            keys.sort_unstable();
            (b, keys)
        })
        .collect();
    got.sort_by_key(|(_, keys)| keys.first().copied());
    got
}

fn frames(b: &Batch) -> Vec<u8> {
    match b {
        Batch::One(p) => p.frame.to_vec(),
        Batch::Many { frames, .. } => frames.to_vec(),
    }
}

#[test]
fn identical_filters_share_one_group() {
    let mut subs = Subscribers::new();
    for key in 0..100 {
        subs.insert(key, filter(&["new_block"], None));
    }
    subs.insert(100, filter(&["new_block"], Some(&["BTC"])));
    assert_eq!((subs.len(), subs.groups()), (101, 2));
    let got = fan(&mut subs, &[published(1, "ETH", "new_block")]);
    assert_eq!(got.len(), 1, "only the every-coin group matches ETH");
    assert_eq!(got[0].1, (0..100).collect::<Vec<_>>());
    assert!(matches!(got[0].0, Batch::One(ref p) if p.seq == 1));
}

#[test]
fn several_events_become_one_contiguous_batch_in_order() {
    let mut subs = Subscribers::new();
    subs.insert(7, filter(&["*"], None));
    subs.insert(8, filter(&["new_block"], None));
    let evs = [
        published(1, "BTC", "new_block"),
        published(2, "BTC", "new_transaction"),
        published(3, "ETH", "new_block"),
    ];
    let got = fan(&mut subs, &evs);
    assert_eq!(got.len(), 2);
    let (all, blocks) = (&got[0], &got[1]);
    assert_eq!((all.1.as_slice(), all.0.events()), (&[7][..], 3));
    let want: Vec<u8> = evs.iter().flat_map(|p| p.frame.to_vec()).collect();
    assert_eq!(frames(&all.0), want);
    assert_eq!((blocks.1.as_slice(), blocks.0.events()), (&[8][..], 2));
    let want: Vec<u8> = [&evs[0], &evs[2]]
        .iter()
        .flat_map(|p| p.frame.to_vec())
        .collect();
    assert_eq!(frames(&blocks.0), want);
    assert!(
        fan(&mut subs, &[]).is_empty(),
        "a drain hands out each event once"
    );
}

#[test]
fn removal_keeps_positions_and_frees_empty_groups() {
    let mut subs = Subscribers::new();
    for key in 0..5 {
        subs.insert(key, filter(&["new_block"], None));
    }
    assert_eq!(subs.remove(1), Some(filter(&["new_block"], None)));
    assert_eq!(subs.remove(1), None, "removing twice is a no-op");
    subs.remove(4); // the key moved into position 1 by the first removal's swap
    let got = fan(&mut subs, &[published(1, "BTC", "new_block")]);
    assert_eq!(got[0].1, vec![0, 2, 3]);
    for key in [0, 2, 3] {
        subs.remove(key);
    }
    assert_eq!((subs.len(), subs.groups()), (0, 0));
    assert!(fan(&mut subs, &[published(2, "BTC", "new_block")]).is_empty());
    // The freed group id is reused for a different filter without leaking the old one.
    subs.insert(9, filter(&["new_transaction"], None));
    assert!(fan(&mut subs, &[published(3, "BTC", "new_block")]).is_empty());
    assert_eq!(
        fan(&mut subs, &[published(4, "BTC", "new_transaction")]).len(),
        1
    );
}

#[test]
fn replacing_a_filter_moves_the_key_between_groups() {
    let mut subs = Subscribers::new();
    subs.insert(1, filter(&["new_block"], None));
    subs.insert(2, filter(&["new_block"], None));
    subs.insert(1, filter(&["new_transaction"], None));
    assert_eq!(subs.get(1), Some(&filter(&["new_transaction"], None)));
    assert_eq!((subs.len(), subs.groups()), (2, 2));
    let got = fan(&mut subs, &[published(1, "BTC", "new_block")]);
    assert_eq!(got[0].1, vec![2]);
}

#[test]
fn a_group_emptied_while_staged_hands_out_nothing() {
    let mut subs = Subscribers::new();
    subs.insert(1, filter(&["new_block"], None));
    let p = published(1, "BTC", "new_block");
    assert_eq!(subs.stage(&p.meta, &p), 1);
    subs.remove(1);
    subs.insert(2, filter(&["new_transaction"], None)); // reuses the freed id
    let (mut out, mut members) = (Vec::new(), Vec::new());
    subs.drain_staged(&mut out, &mut members);
    assert!(out.is_empty() && members.is_empty());
}

/// Random inserts, replacements and removals, checked against a plain map: every event reaches
/// exactly the keys whose filter matches it, in one batch per key.
#[test]
fn matches_a_naive_model_under_churn() {
    let mut rng = crate::util::rng::Rng::seeded(7);
    let filters = [
        filter(&["new_block"], None),
        filter(&["new_block"], Some(&["BTC"])),
        filter(&["new_transaction"], None),
        filter(&["*"], Some(&["ETH"])),
        filter(&["new_block", "new_transaction"], None),
    ];
    let mut subs = Subscribers::new();
    let mut model: HashMap<usize, usize> = HashMap::new();
    for round in 0..300u64 {
        let key = (rng.next_u64() % 40) as usize;
        if rng.next_u64().is_multiple_of(4) {
            assert_eq!(subs.remove(key).is_some(), model.remove(&key).is_some());
        } else {
            let f = (rng.next_u64() % filters.len() as u64) as usize;
            subs.insert(key, filters[f].clone());
            model.insert(key, f);
        }
        let coin = if round % 2 == 0 { "BTC" } else { "ETH" };
        let name = if round % 3 == 0 {
            "new_block"
        } else {
            "new_transaction"
        };
        let p = published(round, coin, name);
        let mut got: Vec<usize> = fan(&mut subs, std::slice::from_ref(&p))
            .into_iter()
            .flat_map(|(_, keys)| keys)
            .collect();
        got.sort_unstable();
        let mut want: Vec<usize> = (model.iter())
            .filter(|(_, f)| filters[**f].matches(&p.meta))
            .map(|(k, _)| *k)
            .collect();
        want.sort_unstable();
        assert_eq!(got, want, "round {round}");
        assert_eq!(subs.len(), model.len());
    }
}

/// Two different filters whose hashes collide: the second gets a group of its own (unshared),
/// and each key still receives exactly what its own filter matches.
#[test]
fn a_hash_collision_costs_sharing_not_correctness() {
    let mut subs = Subscribers::new();
    let (blocks, txs) = (
        filter(&["new_block"], None),
        filter(&["new_transaction"], None),
    );
    subs.insert(1, blocks.clone());
    // Pretend `txs` hashes like `blocks`: its lookup lands on the block group.
    let g = subs.by_filter[&filter_hash(&blocks)];
    subs.by_filter.insert(filter_hash(&txs), g);
    subs.insert(2, txs.clone());
    subs.insert(3, txs.clone());
    assert_eq!(subs.get(2), Some(&txs));
    assert_eq!(subs.groups(), 2 + 1, "collided filters are not shared");
    let got = fan(&mut subs, &[published(1, "BTC", "new_transaction")]);
    let keys: Vec<usize> = got.into_iter().flat_map(|(_, k)| k).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&2) && keys.contains(&3) && !keys.contains(&1));
    subs.remove(1);
    assert_eq!(subs.get(1), None);
    assert_eq!(subs.len(), 2);
}

#[test]
fn a_burst_of_subscribers_gives_its_memory_back_when_it_leaves() {
    let mut subs = Subscribers::new();
    let all = filter(&["*"], None);
    for key in 0..10_000 {
        subs.insert(key, all.clone());
    }
    let (keys, members) = subs.capacity();
    assert!(keys >= 10_000 && members >= 10_000);
    for key in 10..10_000 {
        subs.forget(key);
    }
    assert_eq!(subs.len(), 10);
    let (keys, members) = subs.capacity();
    assert!(
        keys <= 2 * KEEP_CAPACITY && members <= 2 * KEEP_CAPACITY,
        "capacity kept after the burst: keys {keys}, members {members}"
    );
    // The ten that stayed still get every event, once.
    let got = fan(&mut subs, &[published(1, "BTC", "new_block")]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, (0..10).collect::<Vec<_>>());
}
