//! Plain HTTP on the client port (docs/protocol.md, "HTTP endpoints"): `/health`, `/ready` (503
//! without a daemon, 200 once one connects), `/metrics` parsed as Prometheus text with series that
//! move, 404, and the dashboard page on `/`.

mod common;

use common::metrics::*;
use common::*;
use serde_json::{Value, json};

#[test]
fn health_is_200_json_even_without_a_daemon() {
    let w = Worker::without_daemon(&[]);
    let r = w.get("/health");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    assert!(v.is_object(), "{v}");
}

#[test]
fn ready_is_503_without_a_daemon_then_200_once_one_connects() {
    let port = free_port();
    let w = WorkerBuilder::new()
        .daemon_at("BTC", std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .start();
    let r = w.get("/ready");
    assert_eq!(r.status, 503, "{}", r.text());
    let _sim = Sim::start_at("BTC", port, QUIET, deadline(10.0));
    wait_until(deadline(20.0), "/ready to answer 200", || {
        let r = w.get("/ready");
        assert!([200, 503].contains(&r.status), "{}", r.text());
        r.status == 200
    });
}

/// `# HELP name text` and `# TYPE name kind` comments are well-formed too.
fn check_comments(text: &str) {
    for line in text.lines().filter(|l| l.starts_with('#')) {
        let mut parts = line.splitn(4, ' ');
        let (hash, kw, name) = (parts.next(), parts.next(), parts.next());
        assert_eq!(hash, Some("#"), "{line:?}");
        match kw {
            Some("HELP") => assert!(name.is_some_and(|n| !n.is_empty()), "{line:?}"),
            Some("TYPE") => {
                let kind = parts.next().unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line:?}"
                );
            }
            _ => {} // free comments are allowed
        }
    }
}

#[test]
fn metrics_parse_as_prometheus_text_and_move() {
    let sim = Sim::start("BTC", QUIET);
    let w = worker_for(&[&sim], &[]);
    let r = w.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    check_comments(&r.text());
    let before = parse_metrics(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
    assert_eq!(
        metric(&before, "cryptoworker_daemon_connected", &[("coin", "BTC")]),
        Some(1.0)
    );
    let blocks_before = metric(
        &before,
        "cryptoworker_events_total",
        &[("coin", "BTC"), ("event", "new_block")],
    )
    .unwrap_or(0.0);
    let deliveries_before =
        metric(&before, "cryptoworker_deliveries_total", &[]).expect("deliveries series");

    let mut c = w.ws();
    c.subscribe(json!({"events": ["new_block"]}), deadline(5.0));
    for h in 1..=3 {
        sim.emit(json!({"event": "new_block", "height": 900_000 + h}), None);
    }
    for h in 1..=3u64 {
        let e = c.event_named("new_block", WAIT);
        assert_eq!(e["data"]["height"], 900_000 + h, "{e}");
    }
    let after = scrape(w.addr, &[]);
    let blocks_after = metric(
        &after,
        "cryptoworker_events_total",
        &[("coin", "BTC"), ("event", "new_block")],
    )
    .expect("events_total{coin=BTC,event=new_block}");
    assert_eq!(blocks_after - blocks_before, 3.0);
    let deliveries_after = metric(&after, "cryptoworker_deliveries_total", &[]).unwrap();
    assert!(
        deliveries_after >= deliveries_before + 3.0,
        "{deliveries_before} -> {deliveries_after}"
    );
    assert!(
        metric(
            &after,
            "cryptoworker_events_total",
            &[("coin", "BTC"), ("event", "daemon_status")]
        )
        .is_some_and(|v| v >= 1.0)
    );

    // The clients gauge follows connects and disconnects.
    let wait_clients = |want: f64| {
        wait_until(
            deadline(5.0),
            &format!("the clients gauge at {want}"),
            || w.metric("cryptoworker_clients", &[]) == want,
        );
    };
    wait_clients(1.0);
    let c2 = w.ws();
    wait_clients(2.0);
    drop(c2);
    drop(c);
    wait_clients(0.0);
}

#[test]
fn unknown_paths_are_404() {
    let w = Worker::without_daemon(&[]);
    for path in ["/nope", "/health/x", "/metrics2", "/ws/extra"] {
        let r = w.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
}

#[test]
fn root_without_upgrade_serves_the_dashboard_page() {
    let w = Worker::without_daemon(&[]);
    let r = w.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        r.headers
    );
    let body = r.text().to_ascii_lowercase();
    assert!(
        body.contains("<html") && body.contains("</html>"),
        "not an HTML page: {:.200}",
        r.text()
    );
}
