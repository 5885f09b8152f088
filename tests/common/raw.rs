//! Raw-socket helpers for hostile and timing tests: hand-made upgrade requests and client
//! frames, reading until the server closes, and splitting server frames.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A minimal valid WebSocket upgrade request head for raw-socket tests.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &[&str]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// A masked client frame (`opcode`, payload), as a browser would send it.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads a raw socket until EOF or error; returns the bytes and when it ended (`None`: still
/// open at `wait`).
pub fn read_until_closed(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, Option<Instant>) {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, None);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return (out, Some(Instant::now())),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, Some(Instant::now())),
        }
    }
}

/// Splits unmasked server frames: `(opcode, payload)` each (stops at a partial frame).
pub fn server_frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let opcode = b[0] & 0x0F;
        let (len, head) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if b.len() < head + len {
            break;
        }
        out.push((opcode, b[head..head + len].to_vec()));
        b = &b[head + len..];
    }
    out
}

/// The body after the HTTP head of a raw upgrade answer (and the status code).
pub fn split_upgrade(raw: &[u8]) -> (u16, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head: {:?}", String::from_utf8_lossy(raw)));
    let status = String::from_utf8_lossy(&raw[..end])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, &raw[end + 4..])
}
