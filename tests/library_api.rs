//! The library API (README.md, "Library"), in process: a worker started from a `Config` against an
//! embedded simulated daemon, event handlers off the reactor thread (a panicking one changes
//! nothing for the others or for clients), status, graceful stop, and the process-wide
//! `start_worker`/`stop_worker`/`get_worker`.

use cryptoworker::config::{CoinConfig, Config, Family};
use cryptoworker::worker::{self, WorkerHandle};
use cryptoworker_simulate::{SimConfig, SimHandle};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn simulator() -> SimHandle {
    let mut cfg = SimConfig::new("BTC");
    cfg.port = 0;
    cfg.rate = 0.0;
    cfg.block_interval = Duration::ZERO;
    SimHandle::start(cfg).expect("simulator starts")
}

fn config_for(sim: &SimHandle) -> Config {
    Config {
        coins: vec![CoinConfig {
            coin: "BTC".into(),
            family: Family::Btc,
            host: "127.0.0.1".into(),
            port: sim.addr().port(),
            login: "electrum".into(),
            password: "electrumz".into(),
            network: "regtest".into(),
            wallets: vec!["zpubLib".into()],
        }],
        worker_port: 0,
        ..Config::default()
    }
}

fn wait_until(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn daemon_connected(w: &WorkerHandle) -> bool {
    w.status()
        .is_some_and(|s| s["daemons"]["BTC"]["connected"] == true)
}

#[test]
fn handlers_run_off_the_reactor_and_a_failing_one_changes_nothing() {
    let sim = simulator();
    let w = WorkerHandle::start(config_for(&sim)).expect("worker starts");
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let sink = seen.clone();
    w.add_event_handler("new_block", move |data| {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        sink.lock().unwrap().push((thread, data.clone()));
    });
    w.add_event_handler("*", |_| panic!("a broken handler"));
    wait_until("the daemon link", Duration::from_secs(10), || {
        daemon_connected(&w)
    });

    let (mut client, _) = tungstenite::connect(format!("ws://{}/", w.local_addr())).unwrap();
    client
        .send(tungstenite::Message::text(
            json!({"type":"subscribe","events":["new_block"]}).to_string(),
        ))
        .unwrap();
    let height = sim.mine();

    wait_until("the handler call", Duration::from_secs(10), || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(_, d)| d["height"] == height)
    });
    for (thread, data) in seen.lock().unwrap().iter() {
        assert_eq!(
            thread, "handlers",
            "handlers never run on the reactor thread"
        );
        assert_eq!(data["event"], "new_block");
        assert_eq!(data["coin"], "BTC");
    }
    // The client still gets the event although a handler panicked on it.
    let mut got_block = false;
    for _ in 0..10 {
        let msg = client.read().unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        if v["type"] == "event" && v["data"]["height"] == height {
            got_block = true;
            break;
        }
    }
    assert!(got_block, "the client received the block");
    wait_until("the failure count", Duration::from_secs(5), || {
        w.metrics()
            .handler_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    });

    let status = w.status().expect("status answers");
    for field in [
        "running",
        "version",
        "uptime_s",
        "coins",
        "clients",
        "events_processed",
        "epoch",
        "last_seq",
        "daemons",
        "db",
    ] {
        assert!(status.get(field).is_some(), "status has {field}");
    }
    assert_eq!(status["clients"], 1);
    assert_eq!(status["db"]["enabled"], false);

    w.stop().expect("graceful stop");
    match client.read() {
        Ok(tungstenite::Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    sim.stop();
}

#[test]
fn process_wide_worker_starts_once_and_stops() {
    let sim = simulator();
    // start_worker reads the rest of its settings from the environment.
    // SAFETY: this test binary sets these variables before any thread reads the environment
    // through the worker, and no other test in this binary touches them.
    unsafe {
        std::env::set_var("BTC_HOST", "127.0.0.1");
        std::env::set_var("BTC_PORT", sim.addr().port().to_string());
        std::env::set_var("WORKER_PORT", "0");
    }
    assert!(worker::get_worker().is_none());
    let w = worker::start_worker(&["btc"]).expect("starts");
    assert!(
        worker::start_worker(&["btc"]).is_err(),
        "only one process-wide worker"
    );
    let same = worker::get_worker().expect("registered");
    assert_eq!(same.local_addr(), w.local_addr());
    wait_until("the daemon link", Duration::from_secs(10), || {
        daemon_connected(&same)
    });
    worker::stop_worker().expect("stops");
    assert!(worker::get_worker().is_none());
    assert!(w.status().is_none(), "a stopped worker no longer answers");
    sim.stop();
}
