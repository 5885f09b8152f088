mod client_support;
use client_support::*;
use serde_json::json;
use std::time::{Duration, Instant};
#[test]
fn lookup_latency() {
    let sim = Sim::start("BTC", &[]);
    let w = Worker::with_sims(&[&sim], &[("LOG_LEVEL", "debug")]);
    let mut c = Client::connect(w.addr);
    c.subscribe(json!({"events": ["new_transaction"]}));
    let mut slow = 0;
    for i in 0..40u64 {
        let t = Instant::now();
        sim.emit(
            json!({"event": "new_transaction", "tx": tx_hash(i + 1)}),
            Some("W"),
        );
        c.event(Duration::from_secs(8)).unwrap();
        let el = t.elapsed();
        if el > Duration::from_secs(1) {
            slow += 1;
            eprintln!("event {i}: {el:?}");
        }
        std::thread::sleep(Duration::from_millis((i % 7) * 60));
    }
    eprintln!("slow: {slow}");
    assert_eq!(slow, 0);
}
