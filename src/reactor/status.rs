//! What the reactor reports: the `get_status` data object and the plain HTTP endpoints
//! (`/health`, `/ready`, `/metrics`, the dashboard page).

use super::Reactor;
use crate::http::server::{RequestHead, response};
use crate::metrics::Gauges;
use serde_json::{Map, Value, json};

/// The dashboard page served on `GET /` without an upgrade.
const DASHBOARD: &str = include_str!("dashboard.html");

impl Reactor {
    /// The `status.data` object (docs/protocol.md, "`get_status`").
    pub(super) fn status_json(&self) -> Value {
        let mut daemons = Map::new();
        for s in self.daemons.sources() {
            daemons.insert(s.name().to_string(), s.status());
        }
        let db = self.db_gauges();
        let mut status = json!({
            "running": self.shutdown_deadline.is_none(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "coins": self.known_coins,
            "clients": self.admission.open_clients(),
            "events_processed": self.pipeline.published,
            "epoch": &*self.pipeline.epoch,
            "last_seq": self.pipeline.last_seq,
            "daemons": daemons,
            "db": {
                "enabled": db.db_enabled,
                "connected": db.db_connected,
                "queue_depth": db.db_queue_depth,
                "written": db.db_written,
                "spooled": db.db_spooled,
                "awaiting_durability": db.awaiting_durability,
            },
        });
        if let (Some(c), Value::Object(map)) = (&self.cluster, &mut status) {
            map.insert("cluster".into(), c.node.status.to_json());
        }
        status
    }

    fn db_gauges(&self) -> Gauges {
        Gauges {
            clients: self.admission.open_clients(),
            daemons: self
                .daemons
                .sources()
                .map(|s| (s.name().to_string(), s.connected(), s.reconnects()))
                .collect(),
            last_seq: self.pipeline.last_seq,
            awaiting_durability: self.gate.len() as u64,
            ..self.db.as_ref().map_or_else(Gauges::default, |db| {
                let s = db.stats.snapshot();
                Gauges {
                    db_enabled: true,
                    db_connected: s.connected,
                    db_queue_depth: s.queue_depth,
                    db_written: s.written,
                    db_spooled: s.spooled,
                    db_dropped: s.dropped,
                    db_fenced: s.fenced,
                    ..Gauges::default()
                }
            })
        }
    }

    /// Whether the worker is ready: a daemon connected and the database (if on) reachable; a
    /// cluster follower instead while it receives the stream (no gap being filled).
    fn is_ready(&self) -> bool {
        let g = self.db_gauges();
        let db_ok = !g.db_enabled || g.db_connected;
        if let Some(c) = self.cluster.as_ref().filter(|c| !c.node.is_leading()) {
            return db_ok && c.receiving();
        }
        let daemon_up = self.daemons.sources().any(|s| s.connected());
        daemon_up && db_ok
    }

    /// Answers a plain HTTP GET.
    pub(super) fn http_endpoint(&self, head: &RequestHead) -> Vec<u8> {
        let json_response = |status: u16, v: Value| {
            response(status, "application/json", v.to_string().as_bytes(), &[])
        };
        match head.path.as_str() {
            "/health" => json_response(
                200,
                json!({"status": "ok", "uptime_s": self.started.elapsed().as_secs(), "version": env!("CARGO_PKG_VERSION")}),
            ),
            "/ready" => {
                let ready = self.is_ready();
                json_response(if ready { 200 } else { 503 }, json!({"ready": ready}))
            }
            "/metrics" => {
                let keys = &self.config.api_keys;
                if !keys.is_empty()
                    && !head
                        .bearer_token()
                        .is_some_and(|k| crate::auth::key_matches(keys, k))
                {
                    return response(
                        401,
                        "text/plain",
                        b"metrics need an API key as a Bearer token\n",
                        &[("WWW-Authenticate", "Bearer")],
                    );
                }
                let mut body = self.metrics.render(&self.db_gauges());
                if let Some(c) = &self.cluster {
                    body.push_str(&c.node.status.render_metrics());
                    body.push_str(&c.render_metrics());
                }
                response(200, "text/plain; version=0.0.4", body.as_bytes(), &[])
            }
            "/" => response(200, "text/html; charset=utf-8", DASHBOARD.as_bytes(), &[]),
            _ => response(404, "text/plain", b"not found\n", &[]),
        }
    }
}
