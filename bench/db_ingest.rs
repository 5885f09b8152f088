//! Database ingest benchmark: events/s persisted by the writer pool with batched transactions
//! versus one event per transaction, and the commit latency of each transaction (p50/p99),
//! against a fresh database on the PostgreSQL at 127.0.0.1:5432 (or `CW_TEST_PG_ADMIN`).
//!
//! Every run gets its own database (created, then dropped) and submits a deterministic mix of
//! every event kind (blocks, transactions, verifications, payments, daemon status) through the
//! public API (`Db::start`, `DbHandle::submit`); the clock stops when `written` reaches the
//! count. Runs are interleaved (A B B A …) and the table shows the median with the min–max.
//!
//! Usage: `cargo bench --bench db_ingest -- [--events N] [--runs R]`
//! (N events for batched scenarios, N/10 for one-per-transaction; R runs per scenario).

#[path = "../tests/common/pg.rs"]
mod pg;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One configuration to measure.
#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    pool: usize,
    batch: usize,
    /// Fraction of `--events` this scenario submits (per-row ones are slow).
    share: f64,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "batched pool (default)",
        pool: 2,
        batch: 500,
        share: 1.0,
    },
    Scenario {
        name: "batched, 1 writer",
        pool: 1,
        batch: 500,
        share: 1.0,
    },
    Scenario {
        name: "one row per transaction",
        pool: 2,
        batch: 1,
        share: 0.1,
    },
    Scenario {
        name: "one row per transaction, 1 writer",
        pool: 1,
        batch: 1,
        share: 0.1,
    },
];

/// What one run measured.
struct Run {
    events: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
    batches: u64,
}

fn run_once(s: Scenario, events: u64) -> Run {
    let db = pg::TestDb::create();
    let spool = pg::TempDir::new("bench");
    let (h, _rx, resume) = pg::start_db(&db.url, spool.path(), s.pool, s.batch).expect("start");
    let all = pg::mixed(&resume.epoch, 1..=events);
    let stats = h.stats();
    let started = Instant::now();
    for e in all {
        // Stay below the intake capacity: the benchmark measures the writers, not drops.
        while stats.queue_depth.load(Ordering::Relaxed) > 50_000 {
            std::thread::sleep(Duration::from_micros(200));
        }
        h.submit(e);
    }
    while stats.written.load(Ordering::Relaxed) < events {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "run took too long"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = started.elapsed().as_secs_f64();
    h.shutdown(Duration::from_secs(10));
    let snap = stats.snapshot();
    assert_eq!(
        (snap.dropped, snap.failed, snap.spooled),
        (0, 0, 0),
        "clean run"
    );
    assert_eq!(db.count("events"), events as i64, "every event stored once");
    Run {
        events,
        secs,
        p50: stats.commit_latency.quantile(0.50).unwrap_or_default(),
        p99: stats.commit_latency.quantile(0.99).unwrap_or_default(),
        batches: snap.batches,
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let mid = v[v.len() / 2];
    (mid, v[0], v[v.len() - 1])
}

fn server_settings() -> String {
    let db = pg::TestDb::create();
    let mut c = db.client();
    let show = |c: &mut postgres::Client, s: &str| -> String {
        c.query_one(&format!("SHOW {s}"), &[])
            .map(|r| r.get(0))
            .unwrap_or_default()
    };
    format!(
        "PostgreSQL {}, synchronous_commit={}, fsync={}",
        show(&mut c, "server_version"),
        show(&mut c, "synchronous_commit"),
        show(&mut c, "fsync")
    )
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this binary runs without
    // it, and then only a small smoke run checks that the benchmark still works.
    let measuring = std::env::args().any(|a| a == "--bench");
    let events = arg("--events", if measuring { 50_000 } else { 2_000 });
    let runs = arg("--runs", if measuring { 3 } else { 1 }).max(1) as usize;
    let mut results: Vec<Vec<Run>> = SCENARIOS.iter().map(|_| Vec::new()).collect();
    for r in 0..runs {
        // Interleave: forward on even rounds, backward on odd ones.
        let order: Vec<usize> = if r % 2 == 0 {
            (0..SCENARIOS.len()).collect()
        } else {
            (0..SCENARIOS.len()).rev().collect()
        };
        for i in order {
            let s = SCENARIOS[i];
            let n = ((events as f64 * s.share) as u64).max(100);
            let run = run_once(s, n);
            eprintln!(
                "round {r}: {} -> {:.0} events/s",
                s.name,
                run.events as f64 / run.secs
            );
            results[i].push(run);
        }
    }
    println!(
        "\n{}; {runs} runs per scenario, median (min–max)\n",
        server_settings()
    );
    println!(
        "| scenario | writers | batch | events | events/s persisted | commit p50 | commit p99 | events/commit |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (s, rs) in SCENARIOS.iter().zip(&results) {
        let (rate, lo, hi) = median(rs.iter().map(|r| r.events as f64 / r.secs).collect());
        let (p50, _, _) = median(rs.iter().map(|r| r.p50.as_secs_f64() * 1e3).collect());
        let (p99, _, _) = median(rs.iter().map(|r| r.p99.as_secs_f64() * 1e3).collect());
        let per_commit = rs
            .iter()
            .map(|r| r.events as f64 / r.batches.max(1) as f64)
            .sum::<f64>()
            / rs.len() as f64;
        println!(
            "| {} | {} | {} | {} | {:.0} ({:.0}–{:.0}) | {:.2} ms | {:.2} ms | {:.0} |",
            s.name, s.pool, s.batch, rs[0].events, rate, lo, hi, p50, p99, per_commit
        );
    }
    println!(
        "\nCommit latency: one writer transaction, BEGIN to COMMIT acknowledged (histogram buckets, ≤25 % resolution)."
    );
}
