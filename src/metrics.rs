//! Counters for `/metrics` (Prometheus text format) and `get_status`.
//!
//! The reactor is the only writer of most counters; they are atomics so that other threads
//! (the worker handle, handler thread) can read them without a round trip to the reactor.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Events published for one (coin, event name).
type EventCount = (Box<str>, Box<str>, u64);

/// Every counter the worker exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_accepted: AtomicU64,
    pub accept_errors: AtomicU64,
    pub deliveries: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub rate_limited: AtomicU64,
    pub rate_limit_closes: AtomicU64,
    pub oversize_closes: AtomicU64,
    pub capacity_closes: AtomicU64,
    pub per_ip_refusals: AtomicU64,
    pub auth_failures: AtomicU64,
    pub handler_dropped: AtomicU64,
    pub handler_failures: AtomicU64,
    pub daemon_bad_frames: AtomicU64,
    pub duplicates_dropped: AtomicU64,
    /// Times the database intake was full when the reactor offered events (they wait in the
    /// durability gate and are offered again; nothing is dropped).
    pub db_intake_full: AtomicU64,
    /// Enrichment lookup calls made to daemons.
    pub lookups: AtomicU64,
    /// Lookups answered from the cache (no call).
    pub lookup_cache_hits: AtomicU64,
    /// Lookups that waited for a call already in flight for the same transaction.
    pub lookups_coalesced: AtomicU64,
    /// Lookups refused because the daemon's RPC queue was full (events went out unenriched).
    pub lookups_overloaded: AtomicU64,
    /// Lookups that failed or timed out (events went out with the unknown fields null).
    pub lookups_failed: AtomicU64,
    /// Events published, by (coin, event name).
    events: Mutex<Vec<EventCount>>,
}

/// Point-in-time values the reactor adds when rendering.
#[derive(Debug, Default)]
pub struct Gauges {
    pub clients: usize,
    /// (coin, connected, reconnects)
    pub daemons: Vec<(String, bool, u64)>,
    pub db_enabled: bool,
    pub db_connected: bool,
    pub db_queue_depth: u64,
    pub db_written: u64,
    pub db_spooled: u64,
    pub db_dropped: u64,
    /// Cluster mode: events dropped because the node no longer leads (see `DbStats::fenced`).
    pub db_fenced: u64,
    /// Sequenced events waiting to be durable before clients get them.
    pub awaiting_durability: u64,
    pub last_seq: u64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one published event.
    pub fn event_published(&self, coin: &str, name: &str) {
        if let Ok(mut m) = self.events.lock() {
            // Linear scan: a handful of (coin, event) pairs, no allocation per event.
            match m.iter_mut().find(|(c, e, _)| **c == *coin && **e == *name) {
                Some((_, _, n)) => *n += 1,
                None => m.push((coin.into(), name.into(), 1)),
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &AtomicU64); 20] = [
            (
                "cryptoworker_connections_accepted_total",
                "TCP connections accepted on the client port",
                &self.connections_accepted,
            ),
            (
                "cryptoworker_accept_errors_total",
                "failed accept() calls (e.g. out of file descriptors), retried every 100 ms",
                &self.accept_errors,
            ),
            (
                "cryptoworker_deliveries_total",
                "event frames queued to clients",
                &self.deliveries,
            ),
            (
                "cryptoworker_slow_consumer_closes_total",
                "clients closed with 4008",
                &self.slow_consumer_closes,
            ),
            (
                "cryptoworker_rate_limited_total",
                "client messages refused with rate_limited",
                &self.rate_limited,
            ),
            (
                "cryptoworker_rate_limit_closes_total",
                "clients closed with 4029",
                &self.rate_limit_closes,
            ),
            (
                "cryptoworker_oversize_closes_total",
                "clients closed with 1009",
                &self.oversize_closes,
            ),
            (
                "cryptoworker_capacity_closes_total",
                "clients closed with 1013",
                &self.capacity_closes,
            ),
            (
                "cryptoworker_per_ip_refusals_total",
                "upgrades refused with 429",
                &self.per_ip_refusals,
            ),
            (
                "cryptoworker_auth_failures_total",
                "failed client authentications",
                &self.auth_failures,
            ),
            (
                "cryptoworker_handler_dropped_total",
                "events not given to handlers (queue full)",
                &self.handler_dropped,
            ),
            (
                "cryptoworker_handler_failures_total",
                "handler calls that panicked",
                &self.handler_failures,
            ),
            (
                "cryptoworker_daemon_bad_frames_total",
                "daemon frames or updates that could not be decoded",
                &self.daemon_bad_frames,
            ),
            (
                "cryptoworker_duplicates_dropped_total",
                "duplicate daemon updates dropped",
                &self.duplicates_dropped,
            ),
            (
                "cryptoworker_db_intake_full_total",
                "times events waited because the database intake queue was full",
                &self.db_intake_full,
            ),
            (
                "cryptoworker_lookups_total",
                "enrichment lookup calls made to daemons",
                &self.lookups,
            ),
            (
                "cryptoworker_lookup_cache_hits_total",
                "enrichment lookups answered from the recent-answer cache",
                &self.lookup_cache_hits,
            ),
            (
                "cryptoworker_lookups_coalesced_total",
                "enrichment lookups that waited for the call in flight for the same transaction",
                &self.lookups_coalesced,
            ),
            (
                "cryptoworker_lookups_overloaded_total",
                "enrichment lookups refused by a full RPC queue (event sent unenriched)",
                &self.lookups_overloaded,
            ),
            (
                "cryptoworker_lookups_failed_total",
                "enrichment lookups that failed or timed out (event sent with unknown fields null)",
                &self.lookups_failed,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP cryptoworker_events_total events published by coin and type\n# TYPE cryptoworker_events_total counter\n");
        if let Ok(mut m) = self.events.lock() {
            m.sort();
            for (coin, name, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "cryptoworker_events_total{{coin=\"{}\",event=\"{}\"}} {n}",
                    escape(coin),
                    escape(name)
                );
            }
        }
        gauge(
            &mut out,
            "cryptoworker_clients",
            "open WebSocket clients",
            g.clients as u64,
        );
        gauge(
            &mut out,
            "cryptoworker_last_seq",
            "last sequence number delivered to clients",
            g.last_seq,
        );
        gauge(
            &mut out,
            "cryptoworker_awaiting_durability",
            "sequenced events waiting to be committed or spooled before delivery",
            g.awaiting_durability,
        );
        out.push_str("# HELP cryptoworker_daemon_connected 1 when the daemon link is up\n# TYPE cryptoworker_daemon_connected gauge\n");
        for (coin, up, _) in &g.daemons {
            let _ = writeln!(
                out,
                "cryptoworker_daemon_connected{{coin=\"{}\"}} {}",
                escape(coin),
                u8::from(*up)
            );
        }
        out.push_str("# HELP cryptoworker_daemon_reconnects_total daemon link reconnections\n# TYPE cryptoworker_daemon_reconnects_total counter\n");
        for (coin, _, n) in &g.daemons {
            let _ = writeln!(
                out,
                "cryptoworker_daemon_reconnects_total{{coin=\"{}\"}} {n}",
                escape(coin)
            );
        }
        gauge(
            &mut out,
            "cryptoworker_db_enabled",
            "1 when persistence is configured",
            u64::from(g.db_enabled),
        );
        gauge(
            &mut out,
            "cryptoworker_db_connected",
            "1 when the database writer is connected",
            u64::from(g.db_connected),
        );
        gauge(
            &mut out,
            "cryptoworker_db_queue_depth",
            "events waiting for the database writers",
            g.db_queue_depth,
        );
        gauge(
            &mut out,
            "cryptoworker_db_spooled",
            "events waiting in the local spool",
            g.db_spooled,
        );
        let _ = writeln!(
            out,
            "# HELP cryptoworker_db_written_total rows written to PostgreSQL\n# TYPE cryptoworker_db_written_total counter\ncryptoworker_db_written_total {}",
            g.db_written
        );
        let _ = writeln!(
            out,
            "# HELP cryptoworker_db_dropped_total events the database queue could not take\n# TYPE cryptoworker_db_dropped_total counter\ncryptoworker_db_dropped_total {}",
            g.db_dropped
        );
        let _ = writeln!(
            out,
            "# HELP cryptoworker_db_fenced_total events not stored because this node no longer leads the cluster\n# TYPE cryptoworker_db_fenced_total counter\ncryptoworker_db_fenced_total {}",
            g.db_fenced
        );
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_labelled_series() {
        let m = Metrics::default();
        m.inc(&m.deliveries);
        m.inc(&m.deliveries);
        m.event_published("BTC", "new_block");
        m.event_published("BTC", "new_block");
        m.event_published("ETH", "x\"y");
        let g = Gauges {
            clients: 3,
            daemons: vec![("BTC".into(), true, 2)],
            ..Default::default()
        };
        let text = m.render(&g);
        assert!(text.contains("cryptoworker_deliveries_total 2\n"));
        assert!(text.contains("cryptoworker_events_total{coin=\"BTC\",event=\"new_block\"} 2\n"));
        assert!(text.contains("event=\"x\\\"y\"} 1"));
        assert!(text.contains("cryptoworker_clients 3\n"));
        assert!(text.contains("cryptoworker_daemon_connected{coin=\"BTC\"} 1\n"));
        assert!(text.contains("cryptoworker_daemon_reconnects_total{coin=\"BTC\"} 2\n"));
    }
}
