//! A tiny HTTP probe for the container's HEALTHCHECK: the image is `FROM scratch` (no shell, no
//! curl), so this static binary asks the worker's `GET /health` (or the path given as the first
//! argument, e.g. `/ready`) on 127.0.0.1:$WORKER_PORT and exits 0 on HTTP 200, 1 otherwise.
//! Standard library only; built with `rustc` alone (see deploy/container/rootfs.sh).
//! Replace it with a `cryptoworker healthcheck` subcommand once the binary has one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

fn probe(path: &str) -> Result<(), String> {
    let port: u16 = match std::env::var("WORKER_PORT") {
        Ok(p) if !p.is_empty() => p.parse().map_err(|_| format!("bad WORKER_PORT {p:?}"))?,
        _ => 8082,
    };
    // The worker listens on WORKER_HOST; a wildcard address is probed on loopback.
    let host = match std::env::var("WORKER_HOST").as_deref() {
        Ok("") | Ok("0.0.0.0") | Ok("::") | Ok("[::]") | Err(_) => "127.0.0.1".to_string(),
        Ok(h) => h.trim_matches(|c| c == '[' || c == ']').to_string(),
    };
    let ip = if host == "localhost" { "127.0.0.1".parse() } else { host.parse() }
        .map_err(|_| format!("WORKER_HOST {host:?} is not an IP address"))?;
    let addr = SocketAddr::new(ip, port);
    let timeout = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    let status = String::from_utf8_lossy(&head[..n]);
    if status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!("{addr}{path}: {}", status.lines().next().unwrap_or("no answer")))
    }
}

fn main() -> ExitCode {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/health".to_string());
    match probe(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}
