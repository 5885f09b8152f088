//! Resume (docs/protocol.md, "Resume"): `subscribe` with `since` + `epoch` replays the missed
//! events that match the new filter, in order, then continues live with no gap and no duplicate;
//! `resumed` is false for another epoch, for `since` beyond the last seq and for events no longer
//! held; there is no `resumed` field without `since`.

mod common;

use common::events::tx_hash;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Pacing of the background block emitter (load generation, not a wait).
const EMIT_PACE: Duration = Duration::from_millis(3);

/// The `seq` of a `subscribed` reply.
fn seq_of(reply: &Value) -> u64 {
    reply["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("seq in {reply}"))
}

fn block(h: u64) -> Value {
    json!({"event": "new_block", "height": h})
}

fn payment(id: &str) -> Value {
    json!({"event": "new_payment", "address": id, "status": 7, "status_str": "Unconfirmed",
           "tx_hashes": [], "sent_amount": "0.1"})
}

/// Reads events until one is the block at `height`; returns them all.
fn until_block(c: &mut WsClient, height: u64) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let e = c.event(Duration::from_secs(10)).unwrap_or_else(|| {
            let last: Vec<u64> = out.iter().map(seq).collect();
            panic!("no block {height}; got seqs {last:?}")
        });
        let done = event_name(&e) == "new_block" && e["data"]["height"] == height;
        out.push(e);
        if done {
            return out;
        }
    }
}

#[test]
fn resume_across_a_disconnect_has_no_gap_and_no_duplicate() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[]);
    let mut a = w.ws();
    let sub = a.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let epoch = sub["epoch"].as_str().unwrap().to_string();
    let first_expected = sub["seq"].as_u64().unwrap() + 1;

    // Blocks keep coming while the client is away and while it comes back.
    const LAST: u64 = 820_200;
    let addr = sim.addr;
    let emitter = std::thread::spawn(move || {
        for h in 820_001..=LAST {
            sim_emit(addr, block(h), None);
            std::thread::sleep(EMIT_PACE);
        }
    });
    let mut seqs = Vec::new();
    let mut heights = Vec::new();
    while seqs.len() < 40 {
        let e = a
            .event(Duration::from_secs(10))
            .expect("live event before the disconnect");
        seqs.push(seq(&e));
        heights.push(e["data"]["height"].as_u64().unwrap());
    }
    drop(a); // abrupt: no close handshake
    let since = *seqs.last().unwrap();
    // Away until a few more blocks have been published (read off get_status).
    wait_until(deadline(10.0), "blocks published while away", || {
        w.status()["last_seq"]
            .as_u64()
            .is_some_and(|s| s >= since + 10)
    });

    let mut b = w.ws();
    let r = b.subscribe(
        json!({"events": ["*"], "since": since, "epoch": epoch}),
        deadline(5.0),
    );
    assert_eq!(r["resumed"], true, "{r}");
    assert_eq!(r["epoch"], epoch.as_str());
    let reply_seq = r["seq"].as_u64().unwrap();
    assert!(reply_seq > since, "blocks were emitted while away: {r}");
    let after = until_block(&mut b, LAST);
    emitter.join().unwrap();
    for e in &after {
        seqs.push(seq(e));
        heights.push(e["data"]["height"].as_u64().unwrap());
    }
    assert_eq!(
        seqs[0], first_expected,
        "the first live event follows the subscribed seq"
    );
    assert_consecutive(&seqs, "seqs across the disconnect");
    let want: Vec<u64> = (820_001..=LAST).collect();
    assert_eq!(heights, want, "every block once, in order");
    // Replayed ones (seq <= reply seq) come before live ones.
    let replayed = after.iter().take_while(|e| seq(e) <= reply_seq).count();
    assert_eq!(
        replayed as u64,
        reply_seq - since,
        "the replay covers exactly the missed range"
    );
}

#[test]
fn replay_applies_the_new_filter_and_keeps_original_seqs() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[]);
    let mut a = w.ws();
    let sub = a.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let since = sub["seq"].as_u64().unwrap();
    sim.emit(block(830_001), None);
    sim.emit(payment("ee00000001"), Some("W1"));
    sim.emit(block(830_002), None);
    sim.emit(payment("ee00000002"), Some("W2"));
    sim.emit(
        json!({"event": "new_transaction", "tx": tx_hash(77)}),
        Some("W1"),
    );
    sim.emit(block(830_003), None);
    let seen = until_block(&mut a, 830_003);
    assert_eq!(seen.len(), 6, "{seen:?}");
    let want: Vec<(u64, String)> = seen
        .iter()
        .filter(|e| {
            ["new_payment", "new_transaction"].contains(&event_name(e))
                && e["data"]["wallet"] == "W1"
        })
        .map(|e| (seq(e), event_name(e).to_string()))
        .collect();
    assert_eq!(want.len(), 2);

    let mut b = w.ws();
    let r = b.subscribe(
        json!({"events": ["new_payment", "new_transaction"], "wallets": ["W1"], "since": since}),
        deadline(5.0),
    );
    assert_eq!(
        r["resumed"], true,
        "epoch omitted means the current one: {r}"
    );
    // A live event that matches marks the end of the replay (live follows it with no gap).
    sim.emit(block(830_004), None);
    sim.emit(payment("ee00000003"), Some("W1"));
    let mut got: Vec<(u64, String)> = Vec::new();
    let live = loop {
        let e = b.event(WAIT).expect("the live payment after the replay");
        if e["data"]["address"] == "ee00000003" {
            break e;
        }
        got.push((seq(&e), event_name(&e).to_string()));
    };
    assert_eq!(got, want, "the replay");
    assert_eq!(
        seq(&live),
        seq(seen.last().unwrap()) + 2,
        "the block in between took one seq"
    );
}

#[test]
fn resumed_false_for_another_epoch_or_since_beyond_the_last_seq() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[]);
    let mut a = w.ws();
    let sub = a.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let epoch = sub["epoch"].as_str().unwrap().to_string();
    for h in 840_001..=840_005 {
        sim.emit(block(h), None);
    }
    let seen = until_block(&mut a, 840_005);
    let last = seq(seen.last().unwrap());

    let mut c = w.ws();
    let r = c.subscribe(
        json!({"events": ["*"], "since": 0, "epoch": format!("{epoch}-other")}),
        deadline(5.0),
    );
    assert_eq!(r["resumed"], false, "{r}");
    assert_eq!(
        r["epoch"],
        epoch.as_str(),
        "the reply names the current epoch: {r}"
    );
    assert_eq!(r["seq"], last, "{r}");
    // Nothing replayed from a foreign epoch: the first event is the next live one.
    sim.emit(block(840_006), None);
    let live = c.event(WAIT).expect("live events still flow");
    assert_eq!(
        seq(&live),
        last + 1,
        "nothing replayed from a foreign epoch: {live}"
    );

    let mut d = w.ws();
    let r = d.subscribe(
        json!({"events": ["*"], "since": last + 100, "epoch": epoch}),
        deadline(5.0),
    );
    assert_eq!(r["resumed"], false, "since beyond the last seq: {r}");

    // since == the last seq (last + 1 after block 840_006): complete, nothing to replay.
    let mut e = w.ws();
    let r = e.subscribe(
        json!({"events": ["*"], "since": last + 1, "epoch": epoch}),
        deadline(5.0),
    );
    assert_eq!(r["resumed"], true, "{r}");
    assert!(e.events_before_pong().is_empty(), "nothing to replay");

    // No since, no resumed field.
    let mut f = w.ws();
    let r = f.subscribe(json!({"events": ["*"], "epoch": epoch}), deadline(5.0));
    assert!(r.get("resumed").is_none(), "{r}");
}

#[test]
fn resumed_false_when_the_ring_no_longer_holds_the_events() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[("WORKER_RING_SIZE", "5")]);
    let mut a = w.ws();
    let sub = a.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let epoch = sub["epoch"].as_str().unwrap().to_string();
    let first = sub["seq"].as_u64().unwrap();
    for h in 850_001..=850_012 {
        sim.emit(block(h), None);
    }
    let seen = until_block(&mut a, 850_012);
    let last = seq(seen.last().unwrap());
    assert_eq!(last, first + 12);

    let resume = |since: u64| {
        let mut c = w.ws();
        let r = c.subscribe(
            json!({"events": ["*"], "since": since, "epoch": epoch}),
            deadline(5.0),
        );
        // A complete resume replays up to the reply's seq; an incomplete one may replay what is
        // held, which the pong marker bounds (the stream is quiet).
        let replayed = if r["resumed"] == true && seq_of(&r) > since {
            c.events_through(seq_of(&r), WAIT)
        } else {
            c.events_before_pong()
        };
        let got: Vec<u64> = replayed.iter().map(seq).collect();
        (r["resumed"].clone(), got)
    };
    let (resumed, got) = resume(first);
    assert_eq!(resumed, false, "12 events missed, 5 held");
    assert!(got.is_empty() || got.iter().all(|s| *s > first), "{got:?}");
    let (resumed, got) = resume(last - 3);
    assert_eq!(resumed, true);
    assert_eq!(got, [last - 2, last - 1, last]);
    let (resumed, got) = resume(last - 5);
    assert_eq!(resumed, true, "exactly the 5 held events");
    assert_eq!(got, (last - 4..=last).collect::<Vec<_>>());
    let (resumed, _) = resume(last - 6);
    assert_eq!(resumed, false, "one more than held");
}
