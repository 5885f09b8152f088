//! Unit tests of `check`: the renderer, the hints and the answer classification, without sockets.
//! The loopback tests (simulated daemon, hostile servers) are in `loopback_tests.rs`.

use super::daemon::{Hints, classify_getinfo, classify_spec, ws_url};
use super::database::{DbHints, check_database, migrations_line};
use super::*;
use crate::config::{CoinConfig, DbConfig, Family};
use crate::db::migrate::Migration;
use crate::http::Response;

pub(super) fn coin(symbol: &str, host: &str, port: u16) -> CoinConfig {
    CoinConfig {
        coin: symbol.to_string(),
        family: crate::config::default_family(symbol).unwrap_or(Family::Btc),
        host: host.to_string(),
        port,
        login: "electrum".into(),
        password: "electrumz".into(),
        network: "mainnet".into(),
        wallets: Vec::new(),
    }
}

fn ok_btc() -> TargetReport {
    TargetReport {
        name: "BTC".into(),
        location: "ws://127.0.0.1:5000".into(),
        lines: vec![
            CheckLine::ok(Step::Tcp, "tcp ok"),
            CheckLine::ok(Step::Spec, "spec 4.5.0"),
            CheckLine::ok(Step::Auth, "auth ok"),
            CheckLine::ok(Step::WebSocket, "websocket ok"),
            CheckLine::ok(Step::Height, "height 800123 (synchronized)"),
        ],
    }
}

fn refused_eth() -> TargetReport {
    TargetReport {
        name: "ETH".into(),
        location: "ws://127.0.0.1:5002".into(),
        lines: vec![CheckLine::failed(
            Step::Tcp,
            "connection refused",
            "is the ETH daemon running? check ETH_HOST and ETH_PORT",
        )],
    }
}

fn db_off() -> TargetReport {
    check_database(None, Duration::from_secs(1))
}

fn response(status: u16, body: &str) -> Response {
    Response {
        status,
        body: body.as_bytes().to_vec(),
        consumed: 0,
        keep_alive: true,
    }
}

#[test]
fn render_matches_the_documented_layout() {
    let db = TargetReport {
        name: "database".into(),
        location: "host=127.0.0.1 port=5432 user=postgres dbname=cw".into(),
        lines: vec![
            CheckLine::ok(Step::Database, "ok"),
            CheckLine::ok(Step::Version, "PostgreSQL 15.19"),
            CheckLine::ok(Step::Migrations, "migrations applied"),
        ],
    };
    let text = render(&[ok_btc(), refused_eth(), db]);
    let expected = "cryptoworker check
  BTC  ws://127.0.0.1:5000  tcp ok · spec 4.5.0 · auth ok · websocket ok · height 800123 (synchronized)
  ETH  ws://127.0.0.1:5002  FAILED: connection refused
       hint: is the ETH daemon running? check ETH_HOST and ETH_PORT
  database  host=127.0.0.1 port=5432 user=postgres dbname=cw  ok · PostgreSQL 15.19 · migrations applied
1 of 3 checks failed
";
    assert_eq!(text, expected);
}

#[test]
fn render_summaries_count_failed_targets_and_ignore_skipped_ones() {
    assert!(render(&[ok_btc(), db_off()]).ends_with("\nthe check passed\n"));
    assert!(render(&[ok_btc(), ok_btc(), db_off()]).ends_with("\nall 2 checks passed\n"));
    assert!(render(&[refused_eth(), db_off()]).ends_with("\nthe check failed\n"));
    assert!(
        render(&[refused_eth(), refused_eth(), ok_btc()]).ends_with("\n2 of 3 checks failed\n")
    );
    assert!(render(&[db_off()]).ends_with("\nnothing to check\n"));
    let off = render(&[db_off()]);
    assert!(
        off.contains("  database  off: persistence is not configured"),
        "{off}"
    );
    assert!(off.contains("DATABASE_URL or POSTGRES_DB"), "{off}");
    assert!(!db_off().failed() && db_off().skipped());
}

#[test]
fn warnings_are_notes_and_not_failures() {
    let mut report = ok_btc();
    report.lines[4] =
        CheckLine::warning(Step::Height, "height 5 (not synchronized)", "catching up");
    assert!(!report.failed());
    let text = render(&[report]);
    assert!(
        text.contains("websocket ok · height 5 (not synchronized)\n       note: catching up\n"),
        "{text}"
    );
    assert!(text.ends_with("the check passed\n"), "{text}");
}

#[test]
fn several_failures_each_get_their_hint_in_order() {
    let report = TargetReport {
        name: "LTC".into(),
        location: "ws://h:1".into(),
        lines: vec![
            CheckLine::ok(Step::Tcp, "tcp ok"),
            CheckLine::failed(Step::Spec, "bad spec", "hint one"),
            CheckLine::failed(Step::WebSocket, "bad ws", "hint two"),
        ],
    };
    let text = render(&[report]);
    assert!(
        text.contains("tcp ok · FAILED: bad spec · FAILED: bad ws\n       hint: hint one\n       hint: hint two\n"),
        "{text}"
    );
}

#[test]
fn hints_name_the_coin_variables() {
    let c = coin("LTC", "h", 6001);
    let h = Hints { c: &c };
    assert!(h.not_running().contains("LTC_HOST and LTC_PORT"));
    assert!(h.resolve().contains("LTC_HOST"));
    assert!(h.unreachable().contains("DAEMON_RPC_TIMEOUT_S"));
    let creds = h.credentials();
    assert!(
        creds.contains("LTC_LOGIN") && creds.contains("LTC_PASSWORD"),
        "{creds}"
    );
    assert_eq!(
        h.not_a_daemon(),
        "is LTC_PORT=6001 the port of a Bitcart LTC daemon? (the usual LTC port is 5001)"
    );
    let usual = coin("LTC", "h", 5001);
    assert!(!Hints { c: &usual }.not_a_daemon().contains("usual"));
    let custom = coin("FOO", "h", 7000);
    assert!(!Hints { c: &custom }.not_a_daemon().contains("usual"));
}

#[test]
fn ws_url_brackets_ipv6_hosts() {
    assert_eq!(ws_url(&coin("BTC", "::1", 5000)), "ws://[::1]:5000");
    assert_eq!(ws_url(&coin("BTC", "daemon", 5000)), "ws://daemon:5000");
}

const SPEC: &str = r#"{"version":"4.5.0","electrum_map":{},
    "exceptions":{"-32600":{"exc_name":"UnauthorizedError","docstring":"x"}}}"#;
const UNAUTHORIZED: &str =
    r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Unauthorized"},"id":null}"#;

#[test]
fn spec_answers_are_classified() {
    let c = coin("BTC", "h", 5000);
    let h = Hints { c: &c };
    let good = classify_spec(&response(200, SPEC), &h);
    assert_eq!(
        good,
        vec![
            CheckLine::ok(Step::Spec, "spec 4.5.0"),
            CheckLine::ok(Step::Auth, "auth ok")
        ]
    );

    let auth = classify_spec(&response(200, UNAUTHORIZED), &h);
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0].step, Step::Auth);
    assert!(
        matches!(&auth[0].outcome, Outcome::Failed { hint, .. } if hint.contains("BTC_PASSWORD"))
    );

    for (status, body) in [
        (404, "nope"),
        (200, "{}"),
        (200, "<html>"),
        (200, r#"{"error":{"code":-32601,"message":"x"}}"#),
    ] {
        let lines = classify_spec(&response(status, body), &h);
        assert_eq!(lines.len(), 1, "{status} {body}");
        assert_eq!(lines[0].step, Step::Spec);
        assert!(
            matches!(&lines[0].outcome, Outcome::Failed { hint, .. } if hint.contains("BTC_PORT")),
            "{lines:?}"
        );
    }
    let crash = classify_spec(&response(500, ""), &h);
    assert!(
        matches!(&crash[0].outcome, Outcome::Failed { hint, .. } if hint.contains("BTC_PASSWORD"))
    );
}

#[test]
fn spec_version_is_printed_safely() {
    let c = coin("BTC", "h", 5000);
    let long = "x".repeat(500);
    let body = format!(r#"{{"version":"4.5\u001b[31m{long}","exceptions":{{}}}}"#);
    let lines = classify_spec(&response(200, &body), &Hints { c: &c });
    let Outcome::Ok(text) = &lines[0].outcome else {
        panic!("{lines:?}")
    };
    assert!(!text.contains('\u{1b}') && text.len() <= 5 + 64, "{text:?}");
}

fn getinfo(result: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"result":{result}}}"#)
}

#[test]
fn getinfo_answers_are_classified() {
    let c = coin("ETH", "h", 5002);
    let h = Hints { c: &c };
    let line = |status, body: &str| classify_getinfo(&response(status, body), &h);
    let synced = getinfo(r#"{"blockchain_height":800123,"connected":true,"synchronized":true}"#);
    assert_eq!(
        line(200, &synced),
        CheckLine::ok(Step::Height, "height 800123 (synchronized)")
    );

    let syncing = getinfo(
        r#"{"blockchain_height":10,"server_height":20,"connected":true,"synchronized":false}"#,
    );
    let l = line(200, &syncing);
    assert!(!l.is_failed());
    assert!(
        matches!(&l.outcome, Outcome::Warning { detail, .. } if detail == "height 10 (not synchronized, network at 20)"),
        "{l:?}"
    );

    let bare = getinfo(r#"{"blockchain_height":7}"#);
    assert_eq!(line(200, &bare), CheckLine::ok(Step::Height, "height 7"));

    let offline = line(
        200,
        &getinfo(r#"{"connected":false,"path":"/x","version":"4.5.0"}"#),
    );
    assert!(offline.is_failed());
    assert!(
        matches!(&offline.outcome, Outcome::Failed { message, .. } if message.contains("not connected"))
    );

    let auth = line(200, UNAUTHORIZED);
    assert_eq!(auth.step, Step::Auth);
    assert!(matches!(&auth.outcome, Outcome::Failed { hint, .. } if hint.contains("ETH_LOGIN")));

    for (status, body) in [
        (
            200,
            r#"{"error":{"code":-32603,"message":"boom"},"id":1}"#.to_string(),
        ),
        (200, getinfo(r#"{"blockchain_height":"high"}"#)),
        (200, "not json".to_string()),
        (503, synced.clone()),
    ] {
        let l = line(status, &body);
        assert!(
            l.is_failed() && l.step == Step::Height,
            "{status} {body}: {l:?}"
        );
    }
}

#[test]
fn db_hints_name_the_variables_that_configured_it() {
    let db = |url: &str| DbConfig {
        url: url.into(),
        pool_size: 1,
        batch_size: 1,
        spool_dir: "s".into(),
    };
    let url = DbHints::for_config(&db("postgres://u:p@h/d"));
    let discrete = DbHints::for_config(&db("host='h' port=5432 user='u' dbname='d'"));
    assert!(url.unreachable().contains("DATABASE_URL"));
    assert!(url.credentials().contains("DATABASE_URL"));
    assert!(discrete.unreachable().contains("DB_HOST and DB_PORT"));
    assert!(discrete.credentials().contains("DB_USER and DB_PASS"));
    assert!(discrete.no_database().contains("POSTGRES_DB"));
}

#[test]
fn migration_lines_compare_recorded_and_known_versions() {
    let m = |version| Migration {
        version,
        name: "x.sql",
        sql: "SELECT 1",
    };
    let known = [m(1), m(2)];
    let all = migrations_line(&[1, 2], &known);
    assert_eq!(
        all,
        CheckLine::ok(Step::Migrations, "migrations applied (version 2)")
    );
    let none = migrations_line(&[], &known);
    assert!(
        matches!(&none.outcome, Outcome::Warning { detail, note } if detail == "migrations not applied yet" && note.contains("cryptoworker migrate"))
    );
    let behind = migrations_line(&[1], &known);
    assert!(
        matches!(&behind.outcome, Outcome::Warning { detail, .. } if detail.contains("1 migration(s) pending"))
    );
    let newer = migrations_line(&[1, 2, 3], &known);
    assert!(newer.is_failed(), "{newer:?}");
}
