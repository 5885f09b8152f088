//! `benchsrc`: the benchmark's event source, a front for `cryptoworker simulate`.
//!
//! Why it exists: a step of the benchmark needs a fresh open-loop stream at a new rate, but the
//! simulator's rate is fixed per process and restarting it makes the server reconnect, which the
//! worker (rightly) does with a growing backoff. So the server connects once, to this process:
//! every HTTP request (JSON-RPC, `/spec`, the `/ws` upgrade) is passed to a long-lived, silent
//! simulator (`--upstream`), byte for byte, and on command (`stream <rate> <count>` on stdin) this
//! process injects the simulator's own bench pushes (`{"updates":[{"event":"new_transaction",
//! "tx":"0x<16 hex scheduled µs><48 hex i>",...}],...}`, identical bytes) into every open `/ws`
//! stream, open loop: push i is due at start + i/rate whatever the server does, so a late send
//! counts as latency. Frames from the simulator (pongs, closes) are forwarded whole between them.
//!
//! Invariants: a frame is always written whole under the stream's lock, so injected and
//! forwarded frames never interleave; the upgrade answer reaches the server before any injected
//! frame; reads of request and answer heads are bounded (16 KiB).

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_HEAD: usize = 16 * 1024;

type Streams = Arc<Mutex<Vec<(u64, Arc<Mutex<TcpStream>>)>>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(listen), Some(upstream)) = (get("--listen"), get("--upstream")) else {
        eprintln!(
            "usage: benchsrc --listen PORT --upstream PORT [--wallet benchwallet] [--coin ETH]"
        );
        std::process::exit(2);
    };
    let wallet = get("--wallet").unwrap_or_else(|| "benchwallet".into());
    let coin = get("--coin").unwrap_or_else(|| "ETH".into());
    let listener = match TcpListener::bind(format!("127.0.0.1:{listen}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("benchsrc: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let streams: Streams = Arc::default();
    let s = streams.clone();
    std::thread::spawn(move || accept_loop(listener, format!("127.0.0.1:{upstream}"), s));
    commands(streams, &wallet, &coin);
}

fn say(v: String) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn commands(streams: Streams, wallet: &str, coin: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut worker: Option<std::thread::JoinHandle<()>> = None;
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stream", rate, count] => {
                let (Ok(rate), Ok(count)) = (rate.parse::<f64>(), count.parse::<u64>()) else {
                    say(r#"{"type":"error","error":"usage: stream <rate> <count>"}"#.into());
                    continue;
                };
                if !(rate > 0.0 && rate.is_finite()) {
                    say(r#"{"type":"error","error":"rate must be > 0"}"#.into());
                    continue;
                }
                stop.store(true, Ordering::SeqCst);
                if let Some(w) = worker.take() {
                    let _ = w.join();
                }
                stop.store(false, Ordering::SeqCst);
                let (s, st) = (streams.clone(), stop.clone());
                let frames = Frames::new(coin, wallet);
                worker = Some(std::thread::spawn(move || {
                    stream(&s, &st, &frames, rate, count)
                }));
            }
            ["stop"] => stop.store(true, Ordering::SeqCst),
            ["status"] => {
                let n = streams.lock().map_or(0, |v| v.len());
                say(format!(r#"{{"type":"status","streams":{n}}}"#));
            }
            ["exit"] | [] => break,
            _ => say(format!(
                r#"{{"type":"error","error":"unknown command: {}"}}"#,
                line.escape_default()
            )),
        }
    }
    stop.store(true, Ordering::SeqCst);
}

/// The simulator's bench push for event i, as a complete unmasked WebSocket text frame.
struct Frames {
    prefix: String,
    suffix: String,
}

impl Frames {
    fn new(coin: &str, wallet: &str) -> Frames {
        let to = wallet.split('_').next().unwrap_or(wallet);
        if !matches!(coin, "ETH" | "BNB" | "MATIC" | "TRX") {
            // Electrum-family daemons push the hash only; the worker looks the rest up.
            return Frames {
                prefix: r#"{"updates":[{"event":"new_transaction","tx":""#.into(),
                suffix: format!(r#""}}],"wallet":"{wallet}","currency":"{coin}"}}"#),
            };
        }
        Frames {
            prefix: r#"{"updates":[{"event":"new_transaction","tx":""#.into(),
            suffix: format!(
                r#"","from_address":"0x5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c","to":"{to}","amount":"0.100000000000000000","contract":null}}],"wallet":"{wallet}","currency":"{coin}"}}"#
            ),
        }
    }

    fn frame(&self, sched_us: u64, i: u64, out: &mut Vec<u8>) {
        let text = format!("{}0x{sched_us:016x}{i:048x}{}", self.prefix, self.suffix);
        out.clear();
        out.push(0x81);
        if text.len() < 126 {
            out.push(text.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(text.as_bytes());
    }
}

fn stream(streams: &Streams, stop: &AtomicBool, frames: &Frames, rate: f64, count: u64) {
    let start = Instant::now();
    let start_us = unix_us();
    let behind_max = AtomicU64::new(0);
    let mut buf = Vec::with_capacity(512);
    let mut i = 0u64;
    while i < count && !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        behind_max.fetch_max((now - due).as_micros() as u64, Ordering::Relaxed);
        frames.frame(start_us + (i as f64 * 1e6 / rate) as u64, i, &mut buf);
        let targets: Vec<_> = streams
            .lock()
            .map(|v| v.iter().map(|(_, s)| s.clone()).collect())
            .unwrap_or_default();
        for s in targets {
            if let Ok(mut s) = s.lock() {
                let _ = s.write_all(&buf);
            }
        }
        i += 1;
    }
    let behind = behind_max.load(Ordering::Relaxed);
    say(format!(
        r#"{{"type":"stream_done","sent":{i},"behind_max_us":{behind}}}"#
    ));
}

fn accept_loop(listener: TcpListener, upstream: String, streams: Streams) {
    let mut next_id = 0u64;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        next_id += 1;
        let (up, s, id) = (upstream.clone(), streams.clone(), next_id);
        std::thread::spawn(move || {
            match serve(conn, &up, &s, id) {
                // Port probes connect and close without a request.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) => eprintln!("benchsrc: connection {id}: {e}"),
                Ok(()) => {}
            }
        });
    }
}

/// Reads up to the end of an HTTP head; returns all bytes read (head and anything after it).
fn read_head(s: &mut TcpStream) -> io::Result<(Vec<u8>, usize)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((buf, end + 4));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::other("HTTP head too large"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve(mut client: TcpStream, upstream: &str, streams: &Streams, id: u64) -> io::Result<()> {
    client.set_nodelay(true)?;
    let (head, _) = read_head(&mut client)?;
    let mut up = TcpStream::connect(upstream)?;
    up.set_nodelay(true)?;
    up.write_all(&head)?;
    let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !lower.contains("upgrade: websocket") {
        return pipe(client, up);
    }
    let (answer, end) = read_head(&mut up)?;
    client.write_all(&answer[..end])?;
    if !answer.starts_with(b"HTTP/1.1 101") {
        client.write_all(&answer[end..])?;
        return pipe(client, up);
    }
    let shared = Arc::new(Mutex::new(client.try_clone()?));
    if let Ok(mut v) = streams.lock() {
        v.push((id, shared.clone()));
    }
    // Server -> simulator: raw (pings, close). Simulator -> server: whole frames, under the lock.
    let (mut c2, mut u2) = (client.try_clone()?, up.try_clone()?);
    std::thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let result = forward_frames(answer[end..].to_vec(), &mut up, &shared);
    if let Ok(mut v) = streams.lock() {
        v.retain(|(i, _)| *i != id);
    }
    let _ = client.shutdown(Shutdown::Both);
    result
}

fn forward_frames(mut buf: Vec<u8>, up: &mut TcpStream, out: &Mutex<TcpStream>) -> io::Result<()> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(len) = frame_len(&buf)? {
            if buf.len() < len {
                break;
            }
            if let Ok(mut s) = out.lock() {
                s.write_all(&buf[..len])?;
            }
            buf.drain(..len);
        }
        let n = up.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Total length of the unmasked frame at the start of `buf`, once its header is complete.
fn frame_len(buf: &[u8]) -> io::Result<Option<usize>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let masked = buf[1] & 0x80 != 0;
    let (len, head) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(a), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > 1 << 26 {
        return Err(io::Error::other("frame from the simulator too large"));
    }
    Ok(Some(head + if masked { 4 } else { 0 } + len as usize))
}

fn pipe(client: TcpStream, up: TcpStream) -> io::Result<()> {
    let (mut c1, mut u1) = (client.try_clone()?, up.try_clone()?);
    let t = std::thread::spawn(move || {
        let _ = io::copy(&mut c1, &mut u1);
        let _ = u1.shutdown(Shutdown::Write);
    });
    let (mut c2, mut u2) = (client, up);
    let _ = io::copy(&mut u2, &mut c2);
    let _ = c2.shutdown(Shutdown::Write);
    let _ = t.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_the_simulator_format() {
        let f = Frames::new("ETH", "benchwallet");
        let mut buf = Vec::new();
        f.frame(1_700_000_000_123_456, 42, &mut buf);
        assert_eq!(buf[0], 0x81);
        assert_eq!(frame_len(&buf).unwrap(), Some(buf.len()));
        let text = std::str::from_utf8(&buf[4..]).unwrap();
        assert!(
            text.starts_with(r#"{"updates":[{"event":"new_transaction","tx":"0x00060a2418202240"#)
        );
        assert!(text.ends_with(r#""to":"benchwallet","amount":"0.100000000000000000","contract":null}],"wallet":"benchwallet","currency":"ETH"}"#));
        assert!(text.contains(&format!("{:048x}", 42)));
    }

    #[test]
    fn electrum_family_pushes_carry_the_hash_only() {
        let f = Frames::new("BTC", "benchwallet");
        let mut buf = Vec::new();
        f.frame(1_700_000_000_123_456, 7, &mut buf);
        assert_eq!(frame_len(&buf).unwrap(), Some(buf.len()));
        let text = std::str::from_utf8(&buf[4..]).unwrap();
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["currency"], "BTC");
        assert_eq!(v["wallet"], "benchwallet");
        let u = &v["updates"][0];
        assert_eq!(u["event"], "new_transaction");
        assert_eq!(u.as_object().unwrap().len(), 2, "event and tx only: {u}");
    }

    #[test]
    fn frame_lengths_need_whole_headers() {
        assert_eq!(frame_len(&[0x81]).unwrap(), None);
        assert_eq!(frame_len(&[0x81, 126, 1]).unwrap(), None);
        assert_eq!(frame_len(&[0x81, 5]).unwrap(), Some(7));
        assert_eq!(frame_len(&[0x8A, 0x85]).unwrap(), Some(11));
        assert_eq!(frame_len(&[0x81, 126, 1, 0]).unwrap(), Some(260));
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(frame_len(&huge).is_err());
    }
}
