//! PostgreSQL for integration tests: a fresh database per test on the machine's shared cluster
//! (127.0.0.1:5432, user `postgres` or `root`, trust auth), and a private throwaway cluster
//! (`initdb` + `pg_ctl` as the `postgres` user) for tests that stop the server.
//!
//! Invariants: tests FAIL, never skip, when PostgreSQL is unreachable; every database is created
//! as `cw_<random>` and dropped (with `FORCE`) when its guard drops; the shared cluster is never
//! stopped: only a [`PrivateCluster`] is, and its data directory is removed on drop.
//!
//! Used as `common::pg` (`mod common;` in the test file); `bench/db_ingest.rs` includes this
//! file by path, so it depends on nothing else in `tests/common`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Override for the admin connection string of the shared cluster.
pub const ADMIN_URL_VAR: &str = "CW_TEST_PG_ADMIN";

/// A random lower-case hex tag (names, directories).
pub fn random_tag() -> String {
    format!(
        "{:016x}",
        cryptoworker::util::rng::Rng::from_os().next_u64()
    )
}

/// Connects to the shared cluster's `postgres` database as an admin, or panics saying why.
fn admin_on(host_port: &str) -> (postgres::Client, String) {
    let candidates: Vec<String> = match std::env::var(ADMIN_URL_VAR) {
        Ok(u) => vec![u],
        Err(_) => ["postgres", "root"]
            .iter()
            .map(|u| format!("{host_port} user={u} dbname=postgres connect_timeout=5"))
            .collect(),
    };
    let mut errors = Vec::new();
    for url in &candidates {
        match postgres::Client::connect(url, postgres::NoTls) {
            Ok(c) => return (c, url.clone()),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    panic!(
        "PostgreSQL is required for this test and is unreachable ({}). Start it on \
         127.0.0.1:5432 with trust auth, or set {ADMIN_URL_VAR}.",
        errors.join("; ")
    );
}

/// A fresh database, dropped on drop.
pub struct TestDb {
    /// `cw_<random>`.
    pub name: String,
    /// Connection string for the worker and the test.
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// Creates `cw_<random>` on the shared cluster (127.0.0.1:5432).
    pub fn create() -> TestDb {
        TestDb::create_on("host=127.0.0.1 port=5432")
    }

    /// Creates `cw_<random>` on the cluster at `host_port` (`host=… port=…`).
    pub fn create_on(host_port: &str) -> TestDb {
        let (mut admin, admin_url) = admin_on(host_port);
        let name = format!("cw_{}", random_tag());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let url = admin_url.replace("dbname=postgres", &format!("dbname={name}"));
        TestDb {
            name,
            url,
            admin_url,
        }
    }

    /// A new connection to this database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }

    /// `SELECT count(*)` of a query's rows, e.g. `count("events WHERE event = 'new_block'")`.
    pub fn count(&self, from_where: &str) -> i64 {
        self.client()
            .query_one(&format!("SELECT count(*) FROM {from_where}"), &[])
            .unwrap_or_else(|e| panic!("count {from_where}: {e}"))
            .get(0)
    }

    /// A value of this database's libpq key/value URL (`host`, `port`, `user`, `dbname`).
    fn url_param(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.url
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(prefix.as_str()))
    }

    /// The environment that points a worker process at this database (`DB_HOST`, `DB_PORT`,
    /// `DB_USER`, `POSTGRES_DB`): the worker's `DATABASE_URL` must be a URL, and the test's
    /// connection string is a key/value one.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        let get = |k: &str| {
            self.url_param(k)
                .unwrap_or_else(|| panic!("no {k} in {}", self.url))
                .to_string()
        };
        vec![
            ("DB_HOST", get("host")),
            ("DB_PORT", get("port")),
            ("DB_USER", get("user")),
            ("POSTGRES_DB", self.name.clone()),
        ]
    }

    /// Every row of the event log, in `(epoch, seq)` order.
    pub fn event_rows(&self) -> Vec<EventRow> {
        let rows = self
            .client()
            .query(
                "SELECT epoch, seq, coin, event, wallet, payload::text,
                        extract(epoch FROM created_at)::float8
                 FROM events ORDER BY epoch, seq",
                &[],
            )
            .unwrap_or_else(|e| panic!("read events of {}: {e}", self.name));
        rows.iter()
            .map(|r| EventRow {
                epoch: r.get(0),
                seq: r.get(1),
                coin: r.get(2),
                event: r.get(3),
                wallet: r.get(4),
                payload: serde_json::from_str(r.get(5))
                    .unwrap_or_else(|e| panic!("payload of seq {}: {e}", r.get::<_, i64>(1))),
                created_at: r.get(6),
            })
            .collect()
    }
}

/// One row of `events`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub epoch: String,
    pub seq: i64,
    pub coin: String,
    pub event: String,
    pub wallet: Option<String>,
    /// The client-facing `data` object.
    pub payload: serde_json::Value,
    /// `created_at` in Unix seconds.
    pub created_at: f64,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = admin.batch_execute(&sql) {
                eprintln!("could not drop {}: {e}", self.name);
            }
        }
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `/tmp/cw-<tag>-<random>`, created.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("cw-{tag}-{}", random_tag()));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private PostgreSQL cluster on a free port, owned by the `postgres` OS user, that a test may
/// stop and start at will. Stopped and deleted on drop.
pub struct PrivateCluster {
    /// The listening port (127.0.0.1).
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
}

impl PrivateCluster {
    /// Runs `initdb` (trust auth, superuser `postgres`) and starts the server.
    pub fn start() -> PrivateCluster {
        let bin = pg_bin_dir();
        let data = std::env::temp_dir().join(format!("cw-pgdata-{}", random_tag()));
        std::fs::create_dir_all(&data).expect("mkdir data dir");
        run_checked(
            Command::new("chown").arg("postgres:postgres").arg(&data),
            "chown",
        );
        let initdb = bin.join("initdb");
        as_postgres(&[
            initdb.to_str().unwrap_or("initdb"),
            "-D",
            data.to_str().unwrap_or_default(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let c = PrivateCluster { port, data, bin };
        c.resume();
        c
    }

    /// `host=127.0.0.1 port=…`, for [`TestDb::create_on`].
    pub fn host_port(&self) -> String {
        format!("host=127.0.0.1 port={}", self.port)
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn resume(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log");
        as_postgres(&[
            self.bin.join("pg_ctl").to_str().unwrap_or("pg_ctl"),
            "-D",
            self.data.to_str().unwrap_or_default(),
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap_or_default(),
            "-w",
            "-t",
            "30",
            "start",
        ]);
    }

    /// Stops the server at once (`-m immediate`: connections are cut, no checkpoint).
    pub fn kill(&self) {
        as_postgres(&[
            self.bin.join("pg_ctl").to_str().unwrap_or("pg_ctl"),
            "-D",
            self.data.to_str().unwrap_or_default(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The newest `/usr/lib/postgresql/*/bin`.
fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries are required under /usr/lib/postgresql")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .expect("no /usr/lib/postgresql/*/bin/initdb")
}

/// Runs a command as the `postgres` OS user (`runuser`, or directly when already `postgres`).
fn as_postgres(args: &[&str]) {
    let whoami = Command::new("id").arg("-un").output();
    let me = whoami.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let mut cmd = if me.is_ok_and(|m| m == "postgres") {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    } else {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).args(args);
        c
    };
    run_checked(&mut cmd, args[0]);
}

fn run_checked(cmd: &mut Command, what: &str) {
    let started = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed after {:?}: {}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `check` every 20 ms until it is true; panics naming `what` after `within`. (This file
/// stays self-contained, without `super::wait_until`: `bench/db_ingest.rs` includes it by path.)
pub fn wait_for(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- Events and a persistence layer for the database tests ----

use cryptoworker::config::DbConfig;
use cryptoworker::db::{Db, DbHandle, DbMessage, Resume};
use cryptoworker::event::{Event, Published};
use serde_json::json;
use std::sync::Arc;

/// Logs to the test output when `CW_TEST_LOG` is set (e.g. `CW_TEST_LOG=debug`).
pub fn init_log() {
    if let Ok(level) = std::env::var("CW_TEST_LOG") {
        let level = level.parse().unwrap_or(log::LevelFilter::Debug);
        let _ =
            simplelog::WriteLogger::init(level, simplelog::Config::default(), std::io::stderr());
    }
}

/// Starts the persistence layer on `url` with a spool in `spool`.
pub fn start_db(
    url: &str,
    spool: &Path,
    pool: usize,
    batch: usize,
) -> Result<(DbHandle, crossbeam_channel::Receiver<DbMessage>, Resume), cryptoworker::db::DbError> {
    init_log();
    let cfg = DbConfig {
        url: url.to_string(),
        pool_size: pool,
        batch_size: batch,
        spool_dir: spool.to_path_buf(),
    };
    Db::start(&cfg, Arc::new(|| {}), Duration::from_secs(3))
}

/// A `new_transaction` in the shape of docs/protocol.md, "Events".
pub fn tx_event(coin: &str, wallet: &str, hash: &str, amount: &str) -> Event {
    Event::new(coin.into(), "new_transaction", Some(wallet.into()))
        .with("tx_hash", json!(hash))
        .with(
            "data",
            json!({"amount": amount, "from_address": null, "to_address": "addr1",
                   "confirmations": 0, "contract": null,
                   "outputs": [{"address": "addr1", "amount": amount}]}),
        )
}

/// A `new_block`.
pub fn block_event(coin: &str, height: u64) -> Event {
    Event::new(coin.into(), "new_block", None).with("height", json!(height))
}

/// A `new_payment` for request `request_id`.
pub fn payment_event(coin: &str, wallet: &str, request_id: &str, status: i64, sent: &str) -> Event {
    Event::new(coin.into(), "new_payment", Some(wallet.into()))
        .with("address", json!(request_id))
        .with("status", json!(status))
        .with("status_str", json!(format!("status {status}")))
        .with("tx_hashes", json!([format!("hash-{request_id}")]))
        .with("sent_amount", json!(sent))
        .with("contract", serde_json::Value::Null)
}

/// A `verified_tx`.
pub fn verified_event(coin: &str, wallet: &str, hash: &str, height: u64) -> Event {
    Event::new(coin.into(), "verified_tx", Some(wallet.into()))
        .with("tx_hash", json!(hash))
        .with("height", json!(height))
}

/// Sequences an event.
pub fn publish(epoch: &str, seq: u64, ev: &Event) -> Arc<Published> {
    Arc::new(Published::new(
        epoch.into(),
        seq,
        ev,
        1_700_000_000.0 + seq as f64 / 1000.0,
    ))
}

/// A deterministic mix of every kind for seq numbers `seqs`: blocks, transactions (some for the
/// same hash), verifications, payments and daemon_status events.
pub fn mixed(epoch: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<Arc<Published>> {
    seqs.map(|s| {
        let ev = match s % 5 {
            0 => block_event("BTC", 800_000 + s),
            1 => tx_event(
                "BTC",
                "zpubA",
                &format!("h{}", s / 10),
                &format!("0.{s:05}"),
            ),
            2 => verified_event("BTC", "zpubA", &format!("h{}", s / 10), 800_000 + s),
            3 => payment_event(
                "ETH",
                "0xw",
                &format!("r{}", s % 7),
                (s % 3) as i64,
                &s.to_string(),
            ),
            _ => {
                Event::new("ETH".into(), "daemon_status", None).with("connected", json!(s % 2 == 0))
            }
        };
        publish(epoch, s, &ev)
    })
    .collect()
}
