//! Loopback tests of `check`: the project's simulated daemon embedded in-process (good, wrong
//! password, `refuse_auth`, `stall`), a closed port, and hostile fake servers (silent, garbage,
//! oversized, slow drip) that must yield bounded, clear failures.

use super::tests::coin;
use super::*;
use crate::config::DbConfig;
use cryptoworker_simulate::{SimConfig, SimHandle};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

/// A short timeout so failure tests stay fast.
const SHORT: Duration = Duration::from_millis(400);

fn sim(coin: &str, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::new(coin);
    cfg.rate = 0.0;
    cfg.block_interval = Duration::ZERO;
    tweak(&mut cfg);
    SimHandle::start(cfg).expect("simulator starts")
}

fn coin_at(symbol: &str, addr: SocketAddr) -> crate::config::CoinConfig {
    coin(symbol, &addr.ip().to_string(), addr.port())
}

fn steps(report: &TargetReport) -> Vec<Step> {
    report.lines.iter().map(|l| l.step).collect()
}

fn failure(report: &TargetReport, step: Step) -> (String, String) {
    report
        .lines
        .iter()
        .find_map(|l| match &l.outcome {
            Outcome::Failed { message, hint } if l.step == step => {
                Some((message.clone(), hint.clone()))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {step:?} failure in {report:?}"))
}

/// A port nothing listens on (bound, read, released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_healthy_daemon_passes_every_step() {
    for symbol in ["BTC", "ETH", "XMR"] {
        let daemon = sim(symbol, |_| {});
        let report = check_daemon(&coin_at(symbol, daemon.addr()), Duration::from_secs(5));
        assert!(!report.failed(), "{report:?}");
        assert_eq!(
            steps(&report),
            [
                Step::Tcp,
                Step::Spec,
                Step::Auth,
                Step::WebSocket,
                Step::Height
            ]
        );
        let height = format!("height {} (synchronized)", daemon.height());
        assert_eq!(
            report.lines[4],
            CheckLine::ok(Step::Height, height),
            "{symbol}"
        );
        assert_eq!(report.location, format!("ws://{}", daemon.addr()));
    }
}

#[test]
fn a_wrong_password_is_an_auth_failure_naming_login_and_password() {
    let daemon = sim("BTC", |_| {});
    let mut c = coin_at("BTC", daemon.addr());
    c.password = "not-the-password".into();
    let report = check_daemon(&c, Duration::from_secs(5));
    assert_eq!(steps(&report), [Step::Tcp, Step::Auth], "{report:?}");
    let (message, hint) = failure(&report, Step::Auth);
    assert!(message.contains("Unauthorized"), "{message}");
    assert!(
        hint.contains("BTC_LOGIN") && hint.contains("BTC_PASSWORD"),
        "{hint}"
    );
    assert!(!render(&[report]).contains("not-the-password"));
}

#[test]
fn the_refuse_auth_fault_is_an_auth_failure() {
    let daemon = sim("LTC", |cfg| cfg.faults.refuse_auth = true);
    let report = check_daemon(&coin_at("LTC", daemon.addr()), Duration::from_secs(5));
    let (_, hint) = failure(&report, Step::Auth);
    assert!(
        hint.contains("LTC_LOGIN") && hint.contains("LTC_PASSWORD"),
        "{hint}"
    );
}

#[test]
fn a_closed_port_is_connection_refused_naming_host_and_port() {
    let c = coin("ETH", "127.0.0.1", closed_port());
    let report = check_daemon(&c, Duration::from_secs(5));
    assert_eq!(steps(&report), [Step::Tcp]);
    let (message, hint) = failure(&report, Step::Tcp);
    assert_eq!(message, "connection refused");
    assert_eq!(
        hint,
        "is the ETH daemon running? check ETH_HOST and ETH_PORT"
    );
}

#[test]
fn an_unresolvable_host_names_the_host_variable() {
    let report = check_daemon(&coin("BTC", "no-such-host.invalid", 5000), SHORT);
    let (message, hint) = failure(&report, Step::Tcp);
    assert!(message.contains("no-such-host.invalid"), "{message}");
    assert!(hint.contains("BTC_HOST"), "{hint}");
}

#[test]
fn a_stalled_stream_fails_the_websocket_ping_but_not_the_rest() {
    let daemon = sim("BTC", |cfg| cfg.faults.stall = true);
    let report = check_daemon(&coin_at("BTC", daemon.addr()), SHORT);
    let (message, _) = failure(&report, Step::WebSocket);
    assert!(message.contains("did not answer a ping"), "{message}");
    assert_eq!(report.lines.len(), 5, "{report:?}");
    assert!(!report.lines[4].is_failed(), "{report:?}");
}

#[test]
fn check_all_keeps_config_order_and_ends_with_the_database() {
    let good = sim("BTC", |_| {});
    let config = Config {
        coins: vec![
            coin("ETH", "127.0.0.1", closed_port()),
            coin_at("BTC", good.addr()),
        ],
        daemon_rpc_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let reports = check_all(&config);
    let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["ETH", "BTC", "database"]);
    assert!(reports[0].failed() && !reports[1].failed() && reports[2].skipped());
    assert!(render(&reports).ends_with("\n1 of 2 checks failed\n"));
}

/// A fake TCP server running `behave` on each accepted connection until dropped.
struct FakeServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start(behave: fn(TcpStream, &AtomicBool)) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            std::thread::scope(|scope| {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            let flag = &flag;
                            scope.spawn(move || behave(stream, flag));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        });
        FakeServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads whatever comes and never answers, until stopped.
fn silent(mut s: TcpStream, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        if let Ok(0) = s.read(&mut buf) {
            return;
        }
    }
}

fn read_some(s: &mut TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.read(&mut [0u8; 4096]);
}

/// Answers something that is not HTTP, then closes.
fn garbage(mut s: TcpStream, _: &AtomicBool) {
    read_some(&mut s);
    let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
}

/// Announces an enormous body and streams zeros until the peer goes away.
fn oversized(mut s: TcpStream, stop: &AtomicBool) {
    read_some(&mut s);
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n");
    let zeros = [b'0'; 64 * 1024];
    while !stop.load(Ordering::Relaxed) && s.write_all(&zeros).is_ok() {}
}

/// Sends a valid head one byte at a time, slower than the timeout allows, forever.
fn drip(mut s: TcpStream, stop: &AtomicBool) {
    read_some(&mut s);
    for b in b"HTTP/1.1 200 OK\r\nX-Slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'))
    {
        if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_silent_server_times_out_once_and_stops_there() {
    let server = FakeServer::start(silent);
    let started = Instant::now();
    let report = check_daemon(&coin_at("BTC", server.addr), SHORT);
    assert!(started.elapsed() < SHORT * 4, "{:?}", started.elapsed());
    assert_eq!(steps(&report), [Step::Tcp, Step::Spec], "{report:?}");
    let (message, hint) = failure(&report, Step::Spec);
    assert_eq!(message, "no answer to GET /spec within 400 ms");
    assert!(
        hint.contains("BTC_PORT") && hint.contains("DAEMON_RPC_TIMEOUT_S"),
        "{hint}"
    );
}

#[test]
fn a_server_that_is_not_a_daemon_fails_every_step_with_the_port_hint() {
    let server = FakeServer::start(garbage);
    let report = check_daemon(&coin_at("BTC", server.addr), SHORT);
    assert_eq!(
        steps(&report),
        [Step::Tcp, Step::Spec, Step::WebSocket, Step::Height],
        "{report:?}"
    );
    for step in [Step::Spec, Step::WebSocket, Step::Height] {
        let (message, hint) = failure(&report, step);
        assert!(message.contains("not usable: malformed HTTP"), "{message}");
        assert!(hint.contains("BTC_PORT"), "{hint}");
    }
}

#[test]
fn an_oversized_answer_is_refused_without_buffering_it() {
    let server = FakeServer::start(oversized);
    let started = Instant::now();
    let report = check_daemon(&coin_at("BTC", server.addr), Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (message, _) = failure(&report, Step::Spec);
    assert!(message.contains("too large"), "{message}");
}

#[test]
fn a_slow_drip_cannot_stretch_the_deadline() {
    let server = FakeServer::start(drip);
    let started = Instant::now();
    let report = check_daemon(&coin_at("BTC", server.addr), SHORT);
    assert!(started.elapsed() < SHORT * 4, "{:?}", started.elapsed());
    let (message, _) = failure(&report, Step::Spec);
    assert!(
        message.starts_with("no answer to GET /spec within"),
        "{message}"
    );
}

fn db_config(url: String) -> DbConfig {
    DbConfig {
        url,
        pool_size: 1,
        batch_size: 1,
        spool_dir: "spool".into(),
    }
}

#[test]
fn an_unreachable_database_names_its_variables() {
    let port = closed_port();
    let discrete = db_config(format!("host='127.0.0.1' port={port} user='u' dbname='d'"));
    let report = check_database(Some(&discrete), Duration::from_secs(5));
    assert_eq!(
        report.location,
        format!("host=127.0.0.1 port={port} user=u dbname=d")
    );
    let (message, hint) = failure(&report, Step::Database);
    assert_eq!(message, "connection refused");
    assert!(hint.contains("DB_HOST and DB_PORT"), "{hint}");

    let url = db_config(format!("postgres://u:hunter2@127.0.0.1:{port}/d"));
    let report = check_database(Some(&url), Duration::from_secs(5));
    let (_, hint) = failure(&report, Step::Database);
    assert!(hint.contains("DATABASE_URL"), "{hint}");
    assert!(!render(&[report]).contains("hunter2"));
}

#[test]
fn a_silent_database_server_is_abandoned_after_twice_the_timeout() {
    let server = FakeServer::start(silent);
    let url = format!("postgres://u@127.0.0.1:{}/d", server.addr.port());
    let started = Instant::now();
    let report = check_database(Some(&db_config(url)), SHORT);
    assert!(started.elapsed() < SHORT * 4, "{:?}", started.elapsed());
    let (message, hint) = failure(&report, Step::Database);
    assert_eq!(message, "no answer within 800 ms");
    assert!(hint.contains("DATABASE_URL"), "{hint}");
}
