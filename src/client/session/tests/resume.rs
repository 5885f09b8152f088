//! Resume and replay: `since`/`epoch` from the ring or the event log, `resumed: false`, a replay
//! that falls behind the ring, and the startup/durability-gate regression (a client subscribing
//! while events wait for durability gets none at or below its `subscribed` seq and misses none).

use super::super::*;
use super::{coins, describe, limits};
use crate::event::{Event, Published};
use crate::pipeline::Pipeline;
use crate::pipeline::gate::Gate;
use serde_json::json;
use std::sync::Arc;

/// What a client received: the seqs queued for it, and the bytes not yet "written".
#[derive(Default)]
struct Got {
    seqs: Vec<u64>,
    queued: usize,
}

impl Sink for Got {
    fn queued_bytes(&self) -> usize {
        self.queued
    }
    fn push_event(&mut self, p: Arc<Published>) {
        self.seqs.push(p.seq);
        self.queued += p.frame.len();
    }
}

fn block(height: u64) -> Event {
    Event::new("BTC".into(), "new_block", None).with("height", json!(height))
}

/// A reactor in miniature: a pipeline, the durability gate, one client with a `"*"` filter, and
/// the commit rule (staged events are queued to the client before it is handled, and only if
/// its session takes live events).
struct World {
    pipeline: Pipeline,
    gate: Gate,
    session: Session,
    filter: Option<Filter>,
    got: Got,
    /// Released but not yet committed to the client.
    staged: Vec<Arc<Published>>,
    event_log: bool,
    keys: Vec<String>,
    coins: Vec<String>,
}

impl World {
    /// A worker continuing epoch "E" after `last_seq`, with a ring of `ring` events.
    fn new(last_seq: u64, ring: usize) -> World {
        World {
            pipeline: Pipeline::new("E".into(), last_seq, ring),
            gate: Gate::new(1000),
            session: Session::new(limits(), true, Duration::ZERO, Instant::now()),
            filter: None,
            got: Got::default(),
            staged: Vec::new(),
            event_log: false,
            keys: Vec::new(),
            coins: coins(),
        }
    }

    /// Sequences `n` events; they wait in the gate until [`World::durable`].
    fn publish(&mut self, n: u64) {
        for _ in 0..n {
            let height = self.pipeline.assigned_seq + 1;
            if let Some(p) = self.pipeline.publish(&block(height)) {
                self.gate.hold(p);
            }
        }
    }

    /// Everything held becomes durable: released (ring, `last_seq`) and staged.
    /// The frame size of the oldest event in the ring (every test event has the same size).
    fn first_frame_len(&self) -> usize {
        let mut ring = self.pipeline.ring.since(0).expect("the ring holds events");
        ring.next().expect("one event at least").frame.len()
    }

    fn durable(&mut self) {
        self.gate.submit(|_| true);
        let mut out = Vec::new();
        self.gate.release(self.pipeline.assigned_seq, &mut out);
        for p in out {
            self.pipeline.release(&p);
            self.staged.push(p);
        }
    }

    /// The commit: staged events go to the client if its session takes live events.
    fn commit(&mut self) {
        for p in self.staged.drain(..) {
            let matches = self.filter.as_ref().is_some_and(|f| f.matches(&p.meta));
            if self.session.takes_live() && matches {
                self.got.push_event(p);
            }
        }
    }

    /// The client sends `subscribe` (committing first, as the reactor does); returns the
    /// actions after installing the filter, and the reply's `seq` and `resumed` when replied.
    fn subscribe(&mut self, since: Option<u64>, epoch: Option<&str>) -> (Vec<String>, Value) {
        self.commit();
        let msg = json!({"type": "subscribe", "events": ["*"], "since": since, "epoch": epoch});
        let ctx = Context {
            api_keys: &self.keys,
            known_coins: &self.coins,
            stream: StreamView {
                epoch: &self.pipeline.epoch,
                last_seq: self.pipeline.last_seq,
                ring: &self.pipeline.ring,
                event_log: self.event_log,
            },
            filter: self.filter.as_ref(),
        };
        let actions =
            self.session
                .on_message(Incoming::Text(msg.to_string()), Instant::now(), &ctx);
        self.install(&actions);
        (describe(&actions), reply_of(&actions))
    }

    fn install(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::SetFilter(f) => self.filter = Some(f.clone()),
                Action::ClearFilter => self.filter = None,
                _ => {}
            }
        }
    }

    /// The socket took everything; the session refills up to `low` bytes.
    fn flush(&mut self, low: usize) -> Vec<String> {
        self.commit();
        self.got.queued = 0;
        let stream = StreamView {
            epoch: &self.pipeline.epoch,
            last_seq: self.pipeline.last_seq,
            ring: &self.pipeline.ring,
            event_log: self.event_log,
        };
        let actions = self
            .session
            .refill(&mut self.got, low, &stream, self.filter.as_ref());
        describe(&actions)
    }

    /// Flushes until the session takes live events again.
    fn replay_to_live(&mut self, low: usize) {
        for _ in 0..1000 {
            if self.session.takes_live() {
                return;
            }
            assert_eq!(self.flush(low), Vec::<String>::new());
        }
        panic!("the replay never caught up");
    }

    /// The event log's rows for `(after, up_to]`, skipping `missing`.
    fn rows(&self, after: u64, up_to: u64, missing: &[u64]) -> Vec<Published> {
        (after + 1..=up_to)
            .filter(|s| !missing.contains(s))
            .map(|s| Published::new(self.pipeline.epoch.clone(), s, &block(s), 1.0))
            .collect()
    }
}

/// `(seq, resumed)` of the first `subscribed` reply among `actions` (`Null` when none).
fn reply_of(actions: &[Action]) -> Value {
    for a in actions {
        if let Action::Reply(t) = a {
            let v: Value = serde_json::from_str(t).unwrap();
            if v["type"] == "subscribed" {
                return json!([v["seq"], v.get("resumed")]);
            }
        }
    }
    Value::Null
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

#[test]
fn resume_from_the_ring_or_not_at_all() {
    // Released 1..=10, the ring holds 5..=10 (it can replay after 4 to after 10).
    #[rustfmt::skip]
    type Case = (&'static str, Option<u64>, Option<&'static str>, Value, Vec<u64>);
    let table: [Case; 7] = [
        ("ring hit", Some(7), None, json!([10, true]), range(8, 10)),
        (
            "ring hit, epoch named",
            Some(4),
            Some("E"),
            json!([10, true]),
            range(5, 10),
        ),
        ("nothing missed", Some(10), None, json!([10, true]), vec![]),
        (
            "beyond the last seq",
            Some(11),
            None,
            json!([10, false]),
            vec![],
        ),
        (
            "another epoch",
            Some(7),
            Some("OLD"),
            json!([10, false]),
            vec![],
        ),
        (
            "older than the ring, no event log",
            Some(3),
            None,
            json!([10, false]),
            vec![],
        ),
        (
            "no since: no resumed field",
            None,
            None,
            json!([10, null]),
            vec![],
        ),
    ];
    for (what, since, epoch, reply, replayed) in table {
        let mut w = World::new(0, 6);
        w.publish(10);
        w.durable();
        let (actions, got) = w.subscribe(since, epoch);
        assert_eq!(got, reply, "{what}: {actions:?}");
        w.replay_to_live(1);
        assert_eq!(w.got.seqs, replayed, "{what}");
        w.publish(1);
        w.durable();
        w.commit();
        assert_eq!(
            w.got.seqs.last(),
            Some(&11),
            "{what}: live after the replay"
        );
    }
}

#[test]
fn resume_older_than_the_ring_reads_the_event_log() {
    // (what, rows missing from the log, answer fails, reply, seqs the client gets)
    #[rustfmt::skip]
    type Case = (&'static str, Vec<u64>, bool, Value, Vec<u64>);
    let table: [Case; 3] = [
        ("complete", vec![], false, json!([10, true]), range(3, 11)),
        (
            "a hole in the log",
            vec![3],
            false,
            json!([10, false]),
            vec![11],
        ),
        (
            "the read failed",
            vec![],
            true,
            json!([10, false]),
            vec![11],
        ),
    ];
    for (what, missing, fails, reply, seqs) in table {
        let mut w = World::new(0, 6);
        w.event_log = true;
        w.publish(10);
        w.durable();
        let (actions, got) = w.subscribe(Some(2), None);
        assert_eq!(
            actions,
            ["filter", "query:2..4"],
            "{what}: no reply before the log"
        );
        assert_eq!(got, Value::Null);
        assert!(
            !w.session.takes_live(),
            "{what}: waits, skipped by the fan-out"
        );
        assert_eq!(w.flush(1), Vec::<String>::new());
        assert!(w.got.seqs.is_empty(), "{what}: nothing before the reply");
        let rows = if fails {
            Err("down".to_string())
        } else {
            Ok(w.rows(2, 4, &missing))
        };
        let answer = w.session.on_event_log(1, rows, "E", w.filter.as_ref());
        assert_eq!(describe(&answer), ["reply:subscribed", "flush"], "{what}");
        assert_eq!(reply_of(&answer), reply, "{what}");
        w.replay_to_live(1);
        w.publish(1);
        w.durable();
        w.commit();
        assert_eq!(w.got.seqs, seqs, "{what}");
    }
}

#[test]
fn an_answer_for_an_older_subscribe_is_ignored() {
    let mut w = World::new(0, 6);
    w.event_log = true;
    w.publish(10);
    w.durable();
    w.subscribe(Some(2), None);
    let (actions, got) = w.subscribe(None, None);
    assert_eq!(
        (actions, got),
        (
            vec!["reply:subscribed".into(), "filter".into()],
            json!([10, null])
        )
    );
    let rows = Ok(w.rows(2, 4, &[]));
    assert!(
        w.session
            .on_event_log(1, rows, "E", w.filter.as_ref())
            .is_empty()
    );
    assert!(w.session.takes_live());
}

#[test]
fn a_resume_too_far_back_for_one_read_is_not_resumed() {
    let mut w = World::new(crate::db::MAX_QUERY_ROWS + 10, 4);
    w.event_log = true;
    w.publish(4);
    w.durable();
    let (_, got) = w.subscribe(Some(1), None);
    assert_eq!(got, json!([crate::db::MAX_QUERY_ROWS + 14, false]));
}

#[test]
fn a_replay_that_falls_behind_the_ring() {
    // (what, event log?, log rows missing, actions when it falls behind, after the answer)
    #[rustfmt::skip]
    type Case = (&'static str, bool, Vec<u64>, Vec<&'static str>, Vec<&'static str>);
    let table: [Case; 3] = [
        (
            "no event log: 4008",
            false,
            vec![],
            vec!["count:SlowConsumer", "close:4008"],
            vec![],
        ),
        (
            "the log fills the gap",
            true,
            vec![],
            vec!["query:2..6"],
            vec!["flush"],
        ),
        (
            "the log has a hole: 4008",
            true,
            vec![5],
            vec!["query:2..6"],
            vec!["count:SlowConsumer", "close:4008"],
        ),
    ];
    for (what, log, missing, behind, answered) in table {
        let mut w = World::new(0, 4);
        w.event_log = log;
        w.publish(4);
        w.durable();
        let (_, got) = w.subscribe(Some(0), None);
        assert_eq!(got, json!([4, true]), "{what}");
        // One event per flush: the client reads 1 and 2, then six more are released.
        let frame = w.first_frame_len();
        assert_eq!(w.flush(frame), Vec::<String>::new());
        assert_eq!(w.flush(frame), Vec::<String>::new());
        assert_eq!(w.got.seqs, [1, 2], "{what}");
        w.publish(6);
        w.durable();
        // The ring now holds 7..=10; the client needs 3 next.
        assert_eq!(w.flush(frame), behind, "{what}");
        if !log {
            continue;
        }
        let rows = Ok(w.rows(2, 6, &missing));
        let actions = w.session.on_event_log(1, rows, "E", w.filter.as_ref());
        assert_eq!(describe(&actions), answered, "{what}");
        if missing.is_empty() {
            w.replay_to_live(frame);
            assert_eq!(w.got.seqs, range(1, 10), "{what}");
        }
    }
}

/// Regression (the startup race): events sequenced but still in the durability gate — at
/// startup, the first events after a restart — are not counted in the `subscribed` seq, and a
/// client that subscribes meanwhile, resuming or not, gets each of them exactly once, live.
#[test]
fn subscribing_while_events_wait_for_durability_neither_repeats_nor_misses() {
    // (what, since, reply)
    #[rustfmt::skip]
    type Case = (&'static str, Option<u64>, Value);
    let table: [Case; 3] = [
        ("fresh subscribe", None, json!([100, null])),
        (
            "resume from the last durable seq",
            Some(100),
            json!([100, true]),
        ),
        (
            "resume from before the restart's ring",
            Some(99),
            json!([100, false]),
        ),
    ];
    for (what, since, reply) in table {
        let mut w = World::new(100, 16); // restarted after seq 100 (the ring starts empty)
        w.publish(3); // 101..=103 wait for durability
        let (_, got) = w.subscribe(since, None);
        assert_eq!(got, reply, "{what}");
        w.replay_to_live(1);
        w.durable();
        w.publish(2);
        w.durable();
        w.commit();
        assert_eq!(w.got.seqs, range(101, 105), "{what}");
    }
    // A seq that was only assigned cannot have been seen: resuming from it is refused.
    let mut w = World::new(100, 16);
    w.publish(3);
    let (_, got) = w.subscribe(Some(103), None);
    assert_eq!(got, json!([100, false]));
}

/// Regression: events released while a client replays are taken from the ring, once, in order,
/// and it turns live exactly where the replay ends.
#[test]
fn events_released_during_a_replay_are_neither_repeated_nor_missed() {
    let mut w = World::new(0, 64);
    w.publish(10);
    w.durable();
    let (_, got) = w.subscribe(Some(0), None);
    assert_eq!(got, json!([10, true]));
    let frame = w.first_frame_len();
    for _ in 0..6 {
        w.flush(2 * frame); // two events per flush
        w.publish(1);
        w.durable(); // staged now; committed (and skipped) at the next flush
    }
    w.replay_to_live(2 * frame);
    w.publish(2);
    w.durable();
    w.commit();
    assert_eq!(w.got.seqs, range(1, 18));
}
