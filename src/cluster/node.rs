//! Sans-io glue for the reactor: [`ClusterNode`] turns every [`ClusterMessage`] (and the event-log
//! answers) into [`NodeAction`]s, keeping the ingest state (following, waiting for the takeover
//! plan, leading), the [`Delivery`] order and the [`ClusterStatus`] in one place.
//!
//! Invariants: [`NodeAction::Lead`] comes only after a `Role::Leader` and its takeover plan, and at
//! most once per leadership; every way out of leading (elector verdict, fenced, deposed) yields
//! exactly one [`NodeAction::StopIngest`]; a fenced or deposed leader also yields
//! [`NodeAction::StepDown`], so the lock is released and some node takes over cleanly.

use super::core::{Action, Delivery, Takeover};
use super::leader::Role;
use super::status::ClusterStatus;
use super::stream::Entry;
use super::{ClusterConfig, ClusterMessage};
use std::sync::Arc;

/// What the reactor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeAction {
    /// A delivery action (deliver, query the event log, retry timer, re-read the stream).
    Run(Action),
    /// Call `ClusterHandle::takeover`; with `epoch: None` the database has no epoch yet: make one,
    /// record it, and pass it (with `last_stored` 0).
    Takeover {
        epoch: Option<String>,
        last_stored: u64,
        /// The fencing term to lead with (`DbHandle::set_lead_term` on `Lead`).
        term: u64,
    },
    /// Lead: store `plan.store`, sequence from `plan.next_seq`, connect to the daemons.
    Lead(Takeover),
    /// Stop leading: drop the daemon links, stop sequencing.
    StopIngest,
    /// Call `ClusterHandle::step_down`.
    StepDown,
}

/// Where the node stands on ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingest {
    Following,
    AwaitingPlan,
    Leading,
}

/// The reactor's view of the cluster.
#[derive(Debug)]
pub struct ClusterNode {
    pub status: ClusterStatus,
    pub delivery: Delivery,
    ingest: Ingest,
    /// The epoch of the leadership being taken over (`None`: the database has none yet).
    lead_epoch: Option<String>,
}

impl ClusterNode {
    /// Starts following; the node's clients get events from `next` of `epoch`.
    pub fn new(cfg: &ClusterConfig, epoch: Option<Arc<str>>, next: u64) -> ClusterNode {
        ClusterNode {
            status: ClusterStatus::new(cfg),
            delivery: Delivery::new(epoch, next),
            ingest: Ingest::Following,
            lead_epoch: None,
        }
    }

    /// Whether the node sequences events now.
    pub fn is_leading(&self) -> bool {
        self.ingest == Ingest::Leading
    }

    /// Handles one message of the cluster threads.
    pub fn on_message(&mut self, msg: ClusterMessage, out: &mut Vec<NodeAction>) {
        self.status.apply(&msg);
        match msg {
            ClusterMessage::Role(Role::Leader {
                epoch,
                last_stored,
                term,
            }) => {
                self.ingest = Ingest::AwaitingPlan;
                self.lead_epoch = epoch.clone();
                out.push(NodeAction::Takeover {
                    epoch,
                    last_stored,
                    term,
                });
            }
            ClusterMessage::Role(Role::Follower) => self.stop(out, false),
            ClusterMessage::Takeover { mut plan, .. } if self.ingest == Ingest::AwaitingPlan => {
                self.ingest = Ingest::Leading;
                self.continue_after_delivered(&mut plan);
                out.push(NodeAction::Lead(plan));
            }
            ClusterMessage::Fenced { .. } | ClusterMessage::Deposed { .. } => self.stop(out, true),
            ClusterMessage::Entries(e) | ClusterMessage::Appended(e) | ClusterMessage::Held(e) => {
                self.deliver(e, out)
            }
            ClusterMessage::Trimmed { first } => self.run(out, |d, a| d.on_trimmed(first, a)),
            _ => {}
        }
        self.status.stream_lag = self.delivery.lag();
    }

    /// The answer to a [`Action::FetchLog`].
    pub fn on_log_page(&mut self, entries: Vec<Entry>, out: &mut Vec<NodeAction>) {
        self.run(out, |d, a| d.on_log_page(entries, a));
    }

    /// A [`Action::FetchLog`] query failed.
    pub fn on_log_failed(&mut self, out: &mut Vec<NodeAction>) {
        self.run(out, Delivery::on_log_failed);
    }

    /// The [`Action::RetryLater`] timer fired.
    pub fn on_retry(&mut self, out: &mut Vec<NodeAction>) {
        self.run(out, Delivery::on_retry);
    }

    /// A plan made without the stream (Redis away or emptied) may start at a seq this node's
    /// clients already got from the old leader; in the same epoch, sequencing continues after
    /// what was delivered, so no seq reaches clients twice (the skipped ones are logged).
    fn continue_after_delivered(&self, plan: &mut Takeover) {
        let delivered_next = self.delivery.next_seq();
        let same_epoch = !plan.reset_stream
            && self.lead_epoch.is_some()
            && self.delivery.epoch().map(|e| &**e) == self.lead_epoch.as_deref();
        if same_epoch && delivered_next > plan.next_seq {
            log::warn!(
                "[CLUSTER] This node delivered up to seq {} but the event log and stream end before; continuing after it (seqs {}..={} stay out of the event log)",
                delivered_next - 1,
                plan.next_seq,
                delivered_next - 1
            );
            plan.next_seq = delivered_next;
        }
    }

    fn deliver(&mut self, entries: Vec<Entry>, out: &mut Vec<NodeAction>) {
        self.run(out, |d, a| d.on_entries(entries, a));
    }

    fn stop(&mut self, out: &mut Vec<NodeAction>, fenced: bool) {
        if self.ingest != Ingest::Following {
            self.ingest = Ingest::Following;
            out.push(NodeAction::StopIngest);
            if fenced {
                out.push(NodeAction::StepDown);
            }
        }
    }

    fn run(&mut self, out: &mut Vec<NodeAction>, f: impl FnOnce(&mut Delivery, &mut Vec<Action>)) {
        let mut actions = Vec::new();
        f(&mut self.delivery, &mut actions);
        out.extend(actions.into_iter().map(NodeAction::Run));
        self.status.stream_lag = self.delivery.lag();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::RedisUrl;

    fn node() -> ClusterNode {
        let cfg = ClusterConfig {
            redis: RedisUrl::parse("redis://127.0.0.1").unwrap(),
            node_id: "n1".into(),
            key_prefix: "c:".into(),
            stream_maxlen: 100,
        };
        ClusterNode::new(&cfg, Some("ep".into()), 1)
    }

    fn entries(seqs: &[u64]) -> Vec<Entry> {
        seqs.iter()
            .map(|seq| Entry {
                seq: *seq,
                epoch: "ep".into(),
                timestamp: 1.0,
                payload: "{}".into(),
            })
            .collect()
    }

    fn plan(next_seq: u64) -> Takeover {
        Takeover {
            store: Vec::new(),
            next_seq,
            reset_stream: false,
        }
    }

    /// Compact trace: `T` takeover, `L<next>` lead, `X` stop ingest, `SD` step down, `D<seq>`.
    fn trace(actions: &[NodeAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                NodeAction::Takeover { .. } => "T".into(),
                NodeAction::Lead(p) => format!("L{}", p.next_seq),
                NodeAction::StopIngest => "X".into(),
                NodeAction::StepDown => "SD".into(),
                NodeAction::Run(Action::Deliver(e)) => format!("D{}", e.seq),
                NodeAction::Run(other) => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn ingest_state_table() {
        let leader = || {
            ClusterMessage::Role(Role::Leader {
                epoch: Some("ep".into()),
                last_stored: 2,
                term: 1,
            })
        };
        let takeover = |n| ClusterMessage::Takeover {
            plan: plan(n),
            stream_checked: true,
        };
        let cases: Vec<(&str, Vec<ClusterMessage>, Vec<&str>, bool)> = vec![
            (
                "elected then planned",
                vec![leader(), takeover(3)],
                vec!["T", "L3"],
                true,
            ),
            (
                "a plan without an election is ignored",
                vec![takeover(3)],
                vec![],
                false,
            ),
            (
                "losing the lock stops ingest once",
                vec![leader(), takeover(3), ClusterMessage::Role(Role::Follower)],
                vec!["T", "L3", "X"],
                false,
            ),
            (
                "fenced: stop and step down; the elector's verdict that follows adds nothing",
                vec![
                    leader(),
                    takeover(3),
                    ClusterMessage::Fenced { seq: 3 },
                    ClusterMessage::Role(Role::Follower),
                ],
                vec!["T", "L3", "X", "SD"],
                false,
            ),
            (
                "deposed while waiting for the plan; the late plan is ignored",
                vec![
                    leader(),
                    ClusterMessage::Deposed {
                        leader: "n2".into(),
                    },
                    takeover(3),
                ],
                vec!["T", "X", "SD"],
                false,
            ),
            (
                "a follower that is fenced (stale message) does nothing",
                vec![ClusterMessage::Fenced { seq: 1 }],
                vec![],
                false,
            ),
            (
                "a plan behind what this node delivered continues after it",
                vec![
                    ClusterMessage::Entries(entries(&[1, 2, 3, 4, 5])),
                    leader(),
                    takeover(3),
                ],
                vec!["D1", "D2", "D3", "D4", "D5", "T", "L6"],
                true,
            ),
            (
                "what this node delivered in another epoch does not move the plan",
                vec![
                    ClusterMessage::Entries(entries(&[1, 2, 3, 4, 5])),
                    ClusterMessage::Role(Role::Leader {
                        epoch: Some("newer".into()),
                        last_stored: 2,
                        term: 1,
                    }),
                    takeover(3),
                ],
                vec!["D1", "D2", "D3", "D4", "D5", "T", "L3"],
                true,
            ),
            (
                "a plan ahead of what this node delivered is kept",
                vec![
                    ClusterMessage::Entries(entries(&[1])),
                    leader(),
                    takeover(3),
                ],
                vec!["D1", "T", "L3"],
                true,
            ),
            (
                "appended, held and read entries share one order",
                vec![
                    ClusterMessage::Held(entries(&[1, 2])),
                    ClusterMessage::Appended(entries(&[2, 3])),
                    ClusterMessage::Entries(entries(&[1, 2, 3, 4])),
                ],
                vec!["D1", "D2", "D3", "D4"],
                false,
            ),
        ];
        for (name, msgs, want, leading) in cases {
            let mut n = node();
            let mut out = Vec::new();
            for m in msgs {
                n.on_message(m, &mut out);
            }
            assert_eq!(trace(&out), want, "{name}");
            assert_eq!(n.is_leading(), leading, "{name}");
            assert_eq!(n.status.leading, leading, "{name}: status agrees");
        }
    }

    #[test]
    fn log_answers_pass_through_and_lag_is_tracked() {
        let mut n = node();
        let mut out = Vec::new();
        n.on_message(ClusterMessage::Entries(entries(&[3])), &mut out);
        assert_eq!(n.status.stream_lag, 3);
        n.on_log_failed(&mut out);
        n.on_retry(&mut out);
        n.on_log_page(entries(&[1, 2]), &mut out);
        let fetch = format!(
            "{:?}",
            Action::FetchLog {
                epoch: "ep".into(),
                after: 0,
                up_to: 2
            }
        );
        assert_eq!(
            trace(&out),
            [&fetch, "RetryLater", &fetch, "D1", "D2", "D3"]
        );
        assert_eq!(n.status.stream_lag, 0);
    }
}
