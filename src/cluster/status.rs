//! What a node shows of the cluster: `data.cluster` of `get_status` (`{node, role, leader}`)
//! and the `/metrics` lines (`cryptoworker_cluster_leader`, which deploy/prometheus/alerts.yaml
//! sums per `cluster` label, and the stream lag).
//!
//! Invariants: the role shown is the elector's last verdict as applied by the reactor; `leader`
//! is this node while it leads, else the leader key's value (`null` when nobody holds it).

use super::leader::Role;
use super::{ClusterConfig, ClusterMessage};
use serde_json::{Value, json};
use std::fmt::Write;

/// The cluster state a node keeps for display.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    pub cluster: String,
    pub node: String,
    pub leading: bool,
    /// The leader key's value (followers), `None` when unknown or absent.
    pub leader: Option<String>,
    pub redis_up: bool,
    /// Events seen in the stream but not delivered yet ([`super::Delivery::lag`]).
    pub stream_lag: u64,
}

impl ClusterStatus {
    pub fn new(cfg: &ClusterConfig) -> ClusterStatus {
        ClusterStatus {
            cluster: cfg.cluster_name().to_string(),
            node: cfg.node_id.clone(),
            leading: false,
            leader: None,
            redis_up: false,
            stream_lag: 0,
        }
    }

    /// Applies the messages that change what is shown (others are ignored).
    pub fn apply(&mut self, msg: &ClusterMessage) {
        match msg {
            ClusterMessage::Role(role) => {
                self.leading = matches!(role, Role::Leader { .. });
                if !self.leading {
                    self.forget_self_as_leader();
                }
            }
            ClusterMessage::LeaderName(name) => self.leader = name.clone(),
            ClusterMessage::RedisLink { up } => self.redis_up = *up,
            ClusterMessage::Fenced { .. } => {
                self.leading = false;
                self.forget_self_as_leader();
            }
            ClusterMessage::Deposed { leader } => {
                self.leading = false;
                self.leader = Some(leader.clone());
            }
            _ => {}
        }
    }

    /// A node that stopped leading does not show itself as the leader any more (unknown until
    /// the elector reads the leader key again).
    fn forget_self_as_leader(&mut self) {
        if self.leader.as_deref() == Some(self.node.as_str()) {
            self.leader = None;
        }
    }

    /// `data.cluster` of `get_status`.
    pub fn to_json(&self) -> Value {
        let leader = if self.leading {
            Some(self.node.as_str())
        } else {
            self.leader.as_deref()
        };
        json!({
            "node": self.node,
            "role": if self.leading { "leader" } else { "follower" },
            "leader": leader,
        })
    }

    /// The `/metrics` lines of the cluster.
    pub fn render_metrics(&self) -> String {
        let labels = format!(
            "cluster=\"{}\",node=\"{}\"",
            escape(&self.cluster),
            escape(&self.node)
        );
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {v}"
            );
        };
        gauge(
            "cryptoworker_cluster_leader",
            "1 on the node holding the cluster leadership, else 0",
            u64::from(self.leading),
        );
        gauge(
            "cryptoworker_cluster_stream_lag",
            "events seen in the Redis stream and not delivered yet",
            self.stream_lag,
        );
        gauge(
            "cryptoworker_cluster_redis_connected",
            "1 when the stream reader's Redis link is up",
            u64::from(self.redis_up),
        );
        out
    }
}

/// Escapes a Prometheus label value.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::RedisUrl;

    fn status() -> ClusterStatus {
        ClusterStatus::new(&ClusterConfig {
            redis: RedisUrl::parse("redis://127.0.0.1").unwrap(),
            node_id: "a1:8082".into(),
            key_prefix: "shop-a:".into(),
            stream_maxlen: 10,
        })
    }

    #[test]
    fn status_follows_the_messages() {
        let mut s = status();
        let steps: Vec<(ClusterMessage, Value)> = vec![
            (
                ClusterMessage::LeaderName(Some("b:1".into())),
                json!({"node": "a1:8082", "role": "follower", "leader": "b:1"}),
            ),
            (
                ClusterMessage::Role(Role::Leader {
                    epoch: None,
                    last_stored: 0,
                    term: 1,
                }),
                json!({"node": "a1:8082", "role": "leader", "leader": "a1:8082"}),
            ),
            (
                ClusterMessage::Fenced { seq: 3 },
                json!({"node": "a1:8082", "role": "follower", "leader": "b:1"}),
            ),
            (
                ClusterMessage::LeaderName(None),
                json!({"node": "a1:8082", "role": "follower", "leader": null}),
            ),
            (
                ClusterMessage::LeaderName(Some("a1:8082".into())),
                json!({"node": "a1:8082", "role": "follower", "leader": "a1:8082"}),
            ),
            (
                ClusterMessage::Role(Role::Follower),
                json!({"node": "a1:8082", "role": "follower", "leader": null}),
            ),
            (
                ClusterMessage::Deposed {
                    leader: "c:3".into(),
                },
                json!({"node": "a1:8082", "role": "follower", "leader": "c:3"}),
            ),
        ];
        for (msg, want) in steps {
            s.apply(&msg);
            assert_eq!(s.to_json(), want, "after {msg:?}");
        }
    }

    #[test]
    fn metrics_carry_the_cluster_label() {
        let mut s = status();
        s.apply(&ClusterMessage::Role(Role::Leader {
            epoch: None,
            last_stored: 0,
            term: 1,
        }));
        s.stream_lag = 7;
        let text = s.render_metrics();
        assert!(
            text.contains("cryptoworker_cluster_leader{cluster=\"shop-a\",node=\"a1:8082\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "cryptoworker_cluster_stream_lag{cluster=\"shop-a\",node=\"a1:8082\"} 7\n"
            ),
            "{text}"
        );
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
