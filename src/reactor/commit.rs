//! Where sequenced events become visible, and when they are committed to clients.
//!
//! `emit` sends an event to clients directly, or (with a database) through the durability gate;
//! `deliver` puts it in the ring, hands it to the handlers and *stages* it per filter group;
//! `commit_fanout` queues everything staged as one shared batch per group.
//!
//! The commit rule: staged events are committed once per turn, not per readiness event, so that
//! everything the daemons release in one turn (a frame, many lookup answers) reaches each client
//! as one batch. They are committed (a) before anything that talks to clients — client and
//! listener readiness, the waker (event-log answers send `subscribed`), client and resume timers
//! ([`commits_first`], [`TimerOwner::commits_first`]) — and (b) at the end of the turn's daemon
//! work and in every `flush_dirty`, before replays refill. So a client never receives an event
//! with a seq at or below the `seq` of a `subscribed` reply sent to it (everything staged before
//! the reply was queued before it, to the members of that time), and never misses one (everything
//! staged after the reply has a higher seq and is queued to it, or, while it replays, read from
//! the ring).

use super::{DAEMON_BASE, Reactor, TimerOwner};
use crate::event::Published;
use crate::fanout::groups::Batch;
use mio::Token;
use std::sync::Arc;
use std::time::Instant;

/// Whether readiness on `token` must see nothing staged: everything but a daemon's sockets.
pub(super) fn commits_first(token: Token) -> bool {
    token.0 < DAEMON_BASE || token == super::LISTENER || token == super::WAKER
}

/// The reused buffers of [`Reactor::commit_fanout`] (empty between commits; kept for their
/// capacity).
#[derive(Default)]
pub(super) struct FanoutBuffers {
    /// One shared batch per filter group, with its range in `members`.
    batches: Vec<(Batch, std::ops::Range<usize>)>,
    /// The slab keys of every group's members, back to back.
    members: Vec<usize>,
}

impl TimerOwner {
    /// Whether this timer must see nothing staged: everything but a daemon's (link deadlines and
    /// RPC timeouts, which release events like daemon readiness does).
    pub(super) fn commits_first(&self) -> bool {
        !matches!(self, TimerOwner::Daemon(_))
    }
}

impl Reactor {
    /// Sends a sequenced event on its way: without a database straight to clients; with one,
    /// into the durability gate and the database intake (clients get it once it is durable).
    pub(super) fn emit(&mut self, p: Arc<Published>) {
        if self.db.is_none() {
            return self.deliver(p);
        }
        self.gate.hold(p);
        self.submit_held();
    }

    /// Offers held events to the database intake, in order, while it has room.
    pub(super) fn submit_held(&mut self) {
        if let Some(db) = &self.db
            && !self.gate.submit(|p| db.handle.try_submit(p))
        {
            self.metrics.inc(&self.metrics.db_intake_full);
        }
    }

    /// Releases the events the database reports durable (one staged batch per turn), and reads
    /// paused daemon links again once the gate has room.
    pub(super) fn release_durable(&mut self) {
        let Some(db) = &self.db else { return };
        if self.gate.is_empty() {
            return;
        }
        let durable = db.handle.durable_seq();
        if self.gate.unsubmitted() > 0 {
            self.submit_held();
        }
        let mut out = Vec::new();
        self.gate.release(durable, &mut out);
        if self.cluster.is_some() {
            self.cluster_append(out, std::time::Instant::now());
        } else {
            for p in out {
                self.deliver(p);
            }
        }
        if !self.daemons.paused.is_empty() && self.gate.has_room() {
            log::info!("[WORKER] Database caught up; reading daemons again");
            let daemons = &mut self.daemons;
            daemons.carry.append(&mut daemons.paused);
        }
    }

    /// Makes a sequenced event visible: ring, handlers, and staged for the matching client
    /// groups ([`Reactor::commit_fanout`] queues it at the next commit point).
    pub(super) fn deliver(&mut self, p: Arc<Published>) {
        self.pipeline.release(&p);
        self.metrics.event_published(&p.meta.coin, &p.meta.name);
        if let Some((h, count)) = &self.handlers
            && count.load(std::sync::atomic::Ordering::Acquire) > 0
            && h.try_send(p.clone()).is_err()
        {
            self.metrics.inc(&self.metrics.handler_dropped);
        }
        self.subs.stage(&p.meta, &p);
    }

    /// Queues everything staged since the last commit: one shared batch per filter group, to each
    /// of the group's open, live (not replaying) clients; closes those whose queue overflows
    /// (4008).
    pub(super) fn commit_fanout(&mut self, now: Instant) {
        if !self.subs.has_staged() {
            return;
        }
        let mut batches = std::mem::take(&mut self.fanout_buffers.batches);
        let mut members = std::mem::take(&mut self.fanout_buffers.members);
        self.subs.drain_staged(&mut batches, &mut members);
        let limit = self.config.limits.client_queue_bytes;
        let mut delivered = 0;
        let mut slow = Vec::new();
        for (batch, range) in batches.drain(..) {
            for &key in &members[range] {
                let Some(client) = self.clients.get_mut(key) else {
                    continue;
                };
                if !client.takes_live() {
                    continue; // a replaying client takes these events from the ring, in order
                }
                delivered += batch.events() as u64;
                if client.enqueue(&batch, limit) {
                    self.mark_dirty(key);
                } else {
                    slow.push(key);
                }
            }
        }
        members.clear();
        self.fanout_buffers = FanoutBuffers { batches, members };
        self.metrics
            .deliveries
            .fetch_add(delivered, std::sync::atomic::Ordering::Relaxed);
        if !slow.is_empty() {
            self.close_slow_consumers(&slow, limit, now);
        }
    }

    /// Closes clients whose queue overflowed with 4008; one log line for the whole lot (a burst
    /// can overflow thousands at once, and logging is synchronous on this thread).
    fn close_slow_consumers(&mut self, keys: &[usize], limit: usize, now: Instant) {
        self.metrics
            .slow_consumer_closes
            .fetch_add(keys.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let shown: Vec<String> = keys.iter().take(5).map(|k| k.to_string()).collect();
        let more = if keys.len() > 5 { ", ..." } else { "" };
        log::warn!(
            "[WORKER] {} client(s) too slow (queue over {limit} bytes), closing with 4008: {}{more}",
            keys.len(),
            shown.join(", ")
        );
        for &key in keys {
            self.close_client(key, 4008, "slow consumer", now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::conn_id::ConnId;

    #[test]
    fn only_daemon_work_leaves_events_staged() {
        let stride = super::super::daemons::DAEMON_STRIDE;
        let tokens = [
            (Token(0), true, "a client"),
            (Token(123_456), true, "a client"),
            (super::super::LISTENER, true, "the listener"),
            (
                super::super::WAKER,
                true,
                "the waker (event-log answers send replies)",
            ),
            (Token(DAEMON_BASE), false, "daemon 0's link"),
            (
                Token(DAEMON_BASE + 1),
                false,
                "daemon 0's first RPC connection",
            ),
            (
                Token(DAEMON_BASE + 3 * stride + 40),
                false,
                "daemon 3's RPC",
            ),
        ];
        for (token, first, what) in tokens {
            assert_eq!(commits_first(token), first, "{what}");
        }
        let id = ConnId {
            key: 1,
            generation: 0,
        };
        let timers = [
            (TimerOwner::Client(id), true),
            (TimerOwner::Resume(7), true),
            (TimerOwner::Accept, true),
            (TimerOwner::Shutdown, true),
            (TimerOwner::Daemon(2), false),
        ];
        for (owner, first) in timers {
            assert_eq!(owner.commits_first(), first, "{owner:?}");
        }
    }
}
