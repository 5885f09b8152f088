//! The replay cursor of a resuming session: missed events are queued as the client drains its
//! outbound queue, from the event-log backlog first, then from the ring, until the client has
//! caught up with the live stream. A resume therefore never overflows the queue by itself (a
//! client closed with 4008 can always come back with `since`), and memory per resuming client
//! stays bounded by its queue limit.
//!
//! Resume from the event log: when `since` is older than the ring holds, the filter is installed
//! at once but the session waits in replay mode (the fan-out skips it) while the event log is
//! read for `(since, up_to]`, `up_to` preceding the ring. The answer sends `subscribed` (with
//! `resumed` true only if the log had every seq), then the log's events, then the ring from
//! `up_to + 1`, then live — in order, without a gap or a duplicate.
//!
//! Invariant: while a [`Replay`] exists every event the client should get is in `backlog` or in
//! the ring at `next_seq` or later (else the ring moved past it: read the gap from the event log,
//! or close with 4008).

use super::{Action, Actions, Session, StreamView, Tally};
use crate::client::filter::Filter;
use crate::client::reply;
use crate::event::Published;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;

/// Where replayed events are queued (the connection's outbox).
pub trait Sink {
    /// Bytes queued and not yet written.
    fn queued_bytes(&self) -> usize;
    /// Queues one event.
    fn push_event(&mut self, p: Arc<Published>);
}

impl Sink for crate::server::outbox::Outbox {
    fn queued_bytes(&self) -> usize {
        crate::server::outbox::Outbox::queued_bytes(self)
    }
    fn push_event(&mut self, p: Arc<Published>) {
        crate::server::outbox::Outbox::push_event(self, p)
    }
}

/// A client catching up after `subscribe` with `since`.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// The event-log read this replay waits for, if any (nothing is queued meanwhile).
    waiting: Option<Waiting>,
    /// Events read from the event log, not yet queued.
    backlog: VecDeque<Arc<Published>>,
    /// The next seq to take from the ring once `backlog` is empty.
    next_seq: u64,
}

/// An event-log read in flight.
#[derive(Debug)]
struct Waiting {
    ticket: u32,
    after: u64,
    up_to: u64,
    /// The `subscribed` reply still owed (`None` for a replay that fell behind the ring, whose
    /// reply went out already).
    reply: Option<OwedReply>,
}

/// What the `subscribed` reply of a resume from the event log will say.
#[derive(Debug)]
struct OwedReply {
    id: Option<Value>,
    filter: Filter,
    /// The last released seq when the client subscribed (the reply's `seq`).
    last: u64,
}

impl Replay {
    /// A replay served from the ring from `next_seq` on.
    pub(super) fn from_ring(next_seq: u64) -> Replay {
        Replay {
            next_seq,
            ..Replay::default()
        }
    }
}

impl Session {
    /// Whether the client still has replayed events to queue now (not waiting for the log).
    pub fn replay_pending(&self) -> bool {
        self.replay.as_ref().is_some_and(|r| r.waiting.is_none())
    }

    fn ticket(&mut self) -> u32 {
        self.next_ticket = self.next_ticket.wrapping_add(1);
        self.next_ticket
    }

    /// Starts a resume from the event log (see the module doc).
    pub(super) fn resume_from_log(
        &mut self,
        id: Option<&Value>,
        filter: Filter,
        since: u64,
        s: &StreamView<'_>,
    ) -> Actions {
        let up_to = s
            .ring
            .first_seq()
            .map_or(s.last_seq, |f| f.saturating_sub(1));
        let ticket = self.ticket();
        let reply = OwedReply {
            id: id.cloned(),
            filter: filter.clone(),
            last: s.last_seq,
        };
        self.replay = Some(Box::new(Replay {
            waiting: Some(Waiting {
                ticket,
                after: since,
                up_to,
                reply: Some(reply),
            }),
            backlog: VecDeque::new(),
            next_seq: up_to + 1,
        }));
        let query = Action::QueryEventLog {
            ticket,
            after: since,
            up_to,
        };
        vec![Action::SetFilter(filter), query]
    }

    /// Queues replayed events into `sink` until it holds `low` bytes. `filter` is the one
    /// installed for the client (`None`: nothing to replay). The reactor must have committed
    /// everything staged first: a session that turns live here has seen every released event.
    pub fn refill(
        &mut self,
        sink: &mut impl Sink,
        low: usize,
        s: &StreamView<'_>,
        filter: Option<&Filter>,
    ) -> Actions {
        let (Some(r), Some(filter)) = (self.replay.as_mut(), filter) else {
            self.replay = None;
            return Vec::new();
        };
        if r.waiting.is_some() {
            return Vec::new();
        }
        while sink.queued_bytes() < low {
            if let Some(p) = r.backlog.pop_front() {
                sink.push_event(p);
                continue;
            }
            if r.next_seq > s.last_seq {
                self.replay = None; // caught up: live from here
                return Vec::new();
            }
            let Ok(events) = s.ring.since(r.next_seq - 1) else {
                let after = r.next_seq - 1;
                return self.fell_behind_ring(after, s);
            };
            for p in events {
                r.next_seq = p.seq + 1;
                if filter.matches(&p.meta) {
                    sink.push_event(p.clone());
                    if sink.queued_bytes() >= low {
                        break;
                    }
                }
            }
        }
        Vec::new()
    }

    /// The ring no longer holds what the replay needs next: continue from the event log when
    /// there is one, else close with 4008 (the client may resume again).
    fn fell_behind_ring(&mut self, after: u64, s: &StreamView<'_>) -> Actions {
        match s.ring.first_seq() {
            Some(first) if s.event_log && first > after + 1 => {
                let up_to = first - 1;
                let ticket = self.ticket();
                if let Some(r) = self.replay.as_mut() {
                    r.waiting = Some(Waiting {
                        ticket,
                        after,
                        up_to,
                        reply: None,
                    });
                    r.next_seq = up_to + 1;
                }
                vec![Action::QueryEventLog {
                    ticket,
                    after,
                    up_to,
                }]
            }
            _ => slow_consumer(),
        }
    }

    /// The event log answered read `ticket` (an error counts as an empty answer). `filter` is
    /// the one installed for the client.
    pub fn on_event_log(
        &mut self,
        ticket: u32,
        rows: Result<Vec<Published>, String>,
        epoch: &str,
        filter: Option<&Filter>,
    ) -> Actions {
        let Some(r) = self.replay.as_mut() else {
            return Vec::new(); // the client subscribed again meanwhile
        };
        let Some(w) = r.waiting.take_if(|w| w.ticket == ticket) else {
            return Vec::new();
        };
        let rows = rows.unwrap_or_else(|e| {
            log::warn!("[WORKER] Resume from the event log failed: {e}");
            Vec::new()
        });
        let complete = rows.len() as u64 == w.up_to - w.after
            && rows.iter().zip(w.after + 1..).all(|(p, seq)| p.seq == seq);
        let Some(owed) = w.reply else {
            if !complete {
                return slow_consumer();
            }
            if let Some(f) = filter {
                r.backlog = matching(rows, f);
            }
            return vec![Action::Flush];
        };
        if complete {
            r.backlog = matching(rows, &owed.filter);
        } else {
            r.next_seq = owed.last + 1; // not resumable: live from the moment it subscribed
        }
        let text = reply::subscribed(
            owed.id.as_ref(),
            &owed.filter,
            epoch,
            owed.last,
            Some(complete),
        );
        vec![Action::Reply(text), Action::Flush]
    }
}

fn matching(rows: Vec<Published>, filter: &Filter) -> VecDeque<Arc<Published>> {
    rows.into_iter()
        .filter(|p| filter.matches(&p.meta))
        .map(Arc::new)
        .collect()
}

fn slow_consumer() -> Actions {
    vec![
        Action::Count(Tally::SlowConsumer),
        Action::Close {
            code: 4008,
            reason: "slow consumer",
        },
    ]
}
