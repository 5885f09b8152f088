//! `cryptoworker check` as a user runs it: the real binary against `cryptoworker simulate`
//! processes and the real PostgreSQL on 127.0.0.1:5432, asserting the report and the exit codes
//! (0 all good, 1 a check failed, 2 invalid configuration).

mod common;

use common::Sim;
use common::process::{Output, Proc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `cryptoworker check` with exactly `env`; returns its exit code and its output, read to
/// the end (the summary line, or the configuration error, is the last thing it prints).
fn check(env: &[(&str, String)], last: &str) -> (i32, Arc<Output>) {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mut proc = Proc::spawn("check", &["check".to_string()], &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = proc.wait_exit(deadline).expect("check exits within 30 s");
    let output = proc.output.clone();
    assert!(
        output.wait_for(last, deadline).is_some(),
        "no {last:?} in:\n{}",
        output.tail(50)
    );
    (status.code().expect("an exit code"), output)
}

fn daemon_env(sim: &Sim) -> Vec<(&'static str, String)> {
    let (host, port) = match sim.coin.as_str() {
        "BTC" => ("BTC_HOST", "BTC_PORT"),
        "ETH" => ("ETH_HOST", "ETH_PORT"),
        other => panic!("no variables for {other}"),
    };
    vec![
        (host, sim.addr.ip().to_string()),
        (port, sim.addr.port().to_string()),
    ]
}

/// `DB_HOST`/`DB_USER`/`POSTGRES_DB` for a test database (its URL is a key/value string).
fn db_env(db: &common::pg::TestDb) -> Vec<(&'static str, String)> {
    let user = db
        .url
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("user="))
        .expect("a user in the test database URL");
    vec![
        ("DB_HOST", "127.0.0.1".to_string()),
        ("DB_PORT", "5432".to_string()),
        ("DB_USER", user.to_string()),
        ("POSTGRES_DB", db.name.clone()),
    ]
}

fn closed_port() -> u16 {
    common::free_port()
}

#[test]
fn all_good_exits_0_with_every_step_ok() {
    let btc = Sim::start("BTC", &["--rate", "0"]);
    let eth = Sim::start("ETH", &["--rate", "0"]);
    let db = common::pg::TestDb::create();
    cryptoworker::db::Db::migrate(&db.url).expect("migrations apply");
    let mut env = vec![("WORKER_COINS", "btc,eth".to_string())];
    env.extend(daemon_env(&btc));
    env.extend(daemon_env(&eth));
    env.extend(db_env(&db));
    let (code, out) = check(&env, "checks passed");
    assert_eq!(code, 0, "{}", out.tail(20));
    let btc_line = format!(
        "  BTC  ws://{}  tcp ok · spec 4.5.0 · auth ok · websocket ok · height ",
        btc.addr
    );
    assert!(out.contains(&btc_line), "{}", out.tail(20));
    assert!(
        out.contains(&format!("  ETH  ws://{}  tcp ok", eth.addr)),
        "{}",
        out.tail(20)
    );
    let latest = cryptoworker::db::migrate::MIGRATIONS.len();
    let db_line = format!("dbname={}  ok · PostgreSQL ", db.name);
    assert!(out.contains(&db_line), "{}", out.tail(20));
    assert!(
        out.contains(&format!("migrations applied (version {latest})")),
        "{}",
        out.tail(20)
    );
    assert!(out.contains("all 3 checks passed"), "{}", out.tail(20));
    assert!(!out.contains("FAILED"), "{}", out.tail(20));
}

#[test]
fn a_fresh_database_is_a_note_not_a_failure() {
    let btc = Sim::start("BTC", &["--rate", "0"]);
    let db = common::pg::TestDb::create();
    let mut env = daemon_env(&btc);
    env.extend(db_env(&db));
    let (code, out) = check(&env, "checks passed");
    assert_eq!(code, 0, "{}", out.tail(20));
    assert!(
        out.contains("migrations not applied yet"),
        "{}",
        out.tail(20)
    );
    assert!(
        out.contains("note: the worker applies them when it starts"),
        "{}",
        out.tail(20)
    );
}

#[test]
fn failures_exit_1_with_hints_naming_the_variables() {
    let btc = Sim::start("BTC", &["--rate", "0", "--password", "right"]);
    let mut env = vec![
        ("WORKER_COINS", "BTC,ETH".to_string()),
        ("BTC_PASSWORD", "pw-wrong-123".to_string()),
        ("ETH_HOST", "127.0.0.1".to_string()),
        ("ETH_PORT", closed_port().to_string()),
        ("DB_HOST", "127.0.0.1".to_string()),
        ("DB_PASS", "s3cret-pw".to_string()),
        ("POSTGRES_DB", "cw_check_no_such_database".to_string()),
    ];
    env.extend(daemon_env(&btc));
    let (code, out) = check(&env, "checks failed");
    assert_eq!(code, 1, "{}", out.tail(20));
    assert!(
        out.contains("FAILED: credentials not accepted"),
        "{}",
        out.tail(20)
    );
    assert!(
        out.contains("hint: check BTC_LOGIN and BTC_PASSWORD"),
        "{}",
        out.tail(20)
    );
    assert!(
        out.contains("FAILED: connection refused"),
        "{}",
        out.tail(20)
    );
    assert!(
        out.contains("hint: is the ETH daemon running? check ETH_HOST and ETH_PORT"),
        "{}",
        out.tail(20)
    );
    assert!(
        out.contains("hint: create the database, or check POSTGRES_DB"),
        "{}",
        out.tail(20)
    );
    assert!(out.contains("3 of 3 checks failed"), "{}", out.tail(20));
    assert!(
        !out.contains("s3cret-pw") && !out.contains("pw-wrong-123"),
        "{}",
        out.tail(20)
    );
}

#[test]
fn the_refuse_auth_fault_exits_1() {
    let btc = Sim::start("BTC", &["--rate", "0", "--fault", "refuse_auth"]);
    let (code, out) = check(&daemon_env(&btc), "the check failed");
    assert_eq!(code, 1, "{}", out.tail(20));
    assert!(
        out.contains("database  off: persistence is not configured"),
        "{}",
        out.tail(20)
    );
}

#[test]
fn invalid_configuration_exits_2_naming_the_variable() {
    let (code, out) = check(&[("BTC_PORT", "abc".to_string())], "BTC_PORT");
    assert_eq!(code, 2, "{}", out.tail(20));
}

#[test]
fn help_exits_0_and_describes_check() {
    let env = BTreeMap::new();
    let mut proc = Proc::spawn(
        "check --help",
        &["check".to_string(), "--help".to_string()],
        &env,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = proc.wait_exit(deadline).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        proc.output
            .wait_for("DAEMON_RPC_TIMEOUT_S", deadline)
            .is_some()
    );
    assert!(
        proc.output.contains("Usage: cryptoworker check"),
        "{}",
        proc.output.tail(20)
    );
}
