//! End-to-end tests of the load process against a scripted WebSocket server on a real socket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::app::{App, Cmd, now_us};
use crate::config::Config;
use crate::step::StepSpec;

fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    if payload.len() < 126 {
        out.push(payload.len() as u8);
    } else {
        out.push(126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Accepts `n` clients, answers the upgrade and the subscribe, and returns their streams.
fn accept_and_subscribe(listener: &TcpListener, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).unwrap();
                buf.push(byte[0]);
            }
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .unwrap();
            let mut head = [0u8; 2];
            s.read_exact(&mut head).unwrap();
            let mut rest = vec![0u8; 4 + (head[1] & 0x7f) as usize];
            s.read_exact(&mut rest).unwrap();
            s.write_all(&server_frame(1, br#"{"type":"subscribed","events":["new_transaction"]}"#)).unwrap();
            s
        })
        .collect()
}

fn event(sched: u64, idx: u64) -> Vec<u8> {
    let body = format!(
        r#"{{"type":"event","seq":{idx},"data":{{"event":"new_transaction","coin":"ETH","wallet":"w","tx_hash":"0x{sched:016x}{idx:048x}","data":{{}}}},"timestamp":1.0}}"#
    );
    server_frame(1, body.as_bytes())
}

fn run_until(app: &mut App, mut cmds: Vec<Cmd>, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (lines, _) = app
            .turn(std::mem::take(&mut cmds), Duration::from_millis(5))
            .unwrap();
        if let Some(v) = lines.into_iter().find(|v| v["type"] == want) {
            return v;
        }
    }
    panic!("no {want} line in time");
}

#[test]
fn subscribes_measures_and_records_server_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let args: Vec<String> = [
        "--url",
        &url,
        "--clients",
        "3",
        "--per-src",
        "2",
        "--max-outstanding",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut app = App::new(Config::parse(&args).unwrap()).unwrap();
    let server = std::thread::spawn(move || accept_and_subscribe(&listener, 3));
    let mut ready = Value::Null;
    for _ in 0..2000 {
        let (lines, _) = app.turn(vec![], Duration::from_millis(5)).unwrap();
        if let Some(v) = lines.into_iter().find(|v| v["type"] == "ready") {
            ready = v;
            break;
        }
    }
    assert_eq!(ready["open"], 3, "{ready}");
    let mut clients = server.join().unwrap();

    let spec = StepSpec {
        rate: 1000.0,
        lead: 1,
        window: 2,
        grace_us: 2_000_000,
        spans: true,
    };
    let started = run_until(&mut app, vec![Cmd::Step(spec)], "step_started");
    assert_eq!(started["clients"], 3);
    let t0 = now_us();
    for (n, c) in clients.iter_mut().enumerate() {
        for i in 0..3u64 {
            // Split one frame across two writes to exercise partial reads.
            let f = event(t0 + i * 1000, i);
            c.write_all(&f[..10]).unwrap();
            c.flush().unwrap();
            c.write_all(&f[10..]).unwrap();
        }
        c.write_all(&server_frame(9, b"hi")).unwrap();
        if n == 2 {
            c.write_all(&server_frame(8, &4008u16.to_be_bytes()))
                .unwrap();
        }
    }
    let report = run_until(&mut app, vec![], "step");
    assert_eq!(report["expected"], 6, "{report}");
    assert_eq!(report["in_time"], 6);
    assert_eq!(report["total_rx"], 9);
    assert_eq!(report["late_start"], false);
    assert_eq!(report["span_count"][0], 3);

    // Pong for the ping, then the close reply from client 2.
    let mut buf = [0u8; 8];
    clients[0].read_exact(&mut buf).unwrap();
    assert_eq!(buf[0], 0x8A, "pong frame");
    let quiet = run_until(&mut app, vec![Cmd::Quiet(50, 2000)], "quiet");
    assert_eq!(
        (quiet["quiet"].as_bool(), quiet["open"].as_u64()),
        (Some(true), Some(2))
    );
    let status = run_until(&mut app, vec![Cmd::Status], "status");
    assert_eq!(status["close_codes"]["4008"], 1, "{status}");
}

#[test]
fn refused_upgrades_fail_after_retries() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let args: Vec<String> = ["--url", &url, "--clients", "1", "--retries", "2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut app = App::new(Config::parse(&args).unwrap()).unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        }
    });
    let ready = run_until(&mut app, vec![], "ready");
    server.join().unwrap();
    assert_eq!(
        (ready["open"].as_u64(), ready["failed"].as_u64()),
        (Some(0), Some(1)),
        "{ready}"
    );
    let errors = ready["errors"].as_object().unwrap();
    assert!(errors.keys().any(|k| k.contains("429")), "{ready}");
}
