//! The pool against a scripted daemon on loopback: keep-alive reuse, the one retry after the
//! daemon closed a kept-alive connection under a call, and the window accounting (never more
//! calls in flight than connections, the rest queued in order, the queue bound).

use super::*;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use std::net::TcpListener;
use std::sync::mpsc;

/// What the scripted daemon does with one accepted connection.
#[derive(Clone, Copy)]
enum Script {
    /// Answer one request, then close.
    AnswerThenClose(&'static str),
    /// Read one request and close without answering.
    CloseUnanswered,
}

/// Reads one request (head and Content-Length body); false on EOF.
fn read_request(s: &mut std::net::TcpStream) -> bool {
    read_request_body(s).is_some()
}

/// Reads one request and returns its body; `None` on EOF.
fn read_request_body(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok().map(|_| body)
}

/// A daemon that follows `scripts`, one per accepted connection, and reports each request it
/// read, then "closed" after each close.
fn daemon(scripts: Vec<Script>) -> (SocketAddr, mpsc::Receiver<&'static str>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for script in scripts {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            if !read_request(&mut s) {
                continue;
            }
            let _ = tx.send("request");
            if let Script::AnswerThenClose(result) = script {
                let body = json!({"jsonrpc": "2.0", "id": 1, "result": result}).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(answer.as_bytes()).unwrap();
                // Close later, as an idle timeout would: not together with the answer.
                std::thread::sleep(Duration::from_millis(200));
            }
            drop(s);
            let _ = tx.send("closed");
        }
    });
    (addr, rx)
}

/// Drives `pool` (dispatch, register, poll, on_ready) until `n` calls are done.
fn run(pool: &mut RpcPool<u32>, poll: &mut Poll, addr: SocketAddr, n: usize) -> Vec<RpcDone<u32>> {
    run_counting(pool, poll, addr, n).0
}

fn call(pool: &mut RpcPool<u32>, purpose: u32) {
    let now = Instant::now();
    pool.call("getinfo", json!([]), purpose, now).unwrap();
}

/// The first call leaves a kept-alive connection that the daemon then closes while it is idle;
/// the next call is written to it before the worker noticed. Returns what that call got and
/// how many requests the daemon read.
fn call_over_a_stale_connection(second: Script) -> (Result<Value, CallError>, usize) {
    let (addr, seen) = daemon(vec![Script::AnswerThenClose("first"), second]);
    let mut pool = RpcPool::new(
        "127.0.0.1",
        addr.port(),
        "Basic eDp5",
        Duration::from_secs(5),
        (2, 1),
    );
    let mut poll = Poll::new().unwrap();
    call(&mut pool, 1);
    let first = run(&mut pool, &mut poll, addr, 1);
    assert_eq!(first[0].result, Ok(json!("first")));
    let wait = Duration::from_secs(5);
    assert_eq!(seen.recv_timeout(wait), Ok("request"));
    assert_eq!(seen.recv_timeout(wait), Ok("closed"));
    std::thread::sleep(Duration::from_millis(50)); // the FIN has arrived; nobody polled for it
    call(&mut pool, 2);
    let second = run(&mut pool, &mut poll, addr, 1);
    assert_eq!(second.len(), 1, "the call is answered exactly once");
    assert_eq!(second[0].purpose, 2);
    let requests = 1 + seen.try_iter().filter(|s| *s == "request").count();
    (second[0].result.clone(), requests)
}

#[test]
fn a_call_on_a_connection_the_daemon_closed_is_sent_again_on_a_new_one() {
    let (result, requests) = call_over_a_stale_connection(Script::AnswerThenClose("second"));
    assert_eq!(result, Ok(json!("second")));
    assert_eq!(requests, 2, "the daemon answered both calls");
}

#[test]
fn a_retried_call_that_fails_again_is_not_retried_twice() {
    let (result, requests) = call_over_a_stale_connection(Script::CloseUnanswered);
    assert!(
        matches!(result, Err(CallError::Transport(_))),
        "expected a transport error, got {result:?}"
    );
    assert_eq!(
        requests, 2,
        "the first call, then the retry (the original second request went to the dead connection)"
    );
}

/// A keep-alive daemon answering every request after `delay`, one thread per connection;
/// reports the most connections it served at once.
fn slow_daemon(delay: Duration) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (open, most) = (
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(AtomicUsize::new(0)),
    );
    let seen = most.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let (open, most) = (open.clone(), most.clone());
            std::thread::spawn(move || {
                most.fetch_max(open.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                while read_request(&mut s) {
                    std::thread::sleep(delay);
                    let body = json!({"jsonrpc": "2.0", "id": 1, "result": "ok"}).to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(answer.as_bytes()).is_err() {
                        break;
                    }
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

#[test]
fn the_window_bounds_calls_in_flight_and_the_rest_wait_in_order() {
    let (addr, most) = slow_daemon(Duration::from_millis(20));
    let mut pool = RpcPool::new("127.0.0.1", addr.port(), "", Duration::from_secs(5), (4, 1));
    assert_eq!(pool.connections(), 4);
    for purpose in 0..12 {
        call(&mut pool, purpose);
    }
    let (mut registered, mut done) = (Vec::new(), Vec::new());
    pool.dispatch(Some(addr), &mut registered, &mut done);
    assert_eq!((pool.in_flight(), pool.queued()), (4, 8));
    assert_eq!(registered, [0, 1, 2, 3]);
    let mut poll = Poll::new().unwrap();
    for slot in registered {
        let interest = Interest::READABLE | Interest::WRITABLE;
        let stream = pool.stream(slot).unwrap();
        poll.registry()
            .register(stream, Token(slot), interest)
            .unwrap();
    }
    let mut answered: Vec<u32> = run(&mut pool, &mut poll, addr, 12)
        .into_iter()
        .map(|d| {
            assert_eq!(d.result, Ok(json!("ok")));
            d.purpose
        })
        .collect();
    // The 4 connections served calls at the same time, and never more than 4.
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 4);
    answered.sort_unstable();
    assert_eq!(answered, (0..12).collect::<Vec<_>>(), "each answered once");
    assert_eq!(pool.pending(), 0);
}

#[test]
fn beyond_the_queue_bound_calls_fail_at_once() {
    let mut pool: RpcPool<usize> = RpcPool::new("127.0.0.1", 9, "", Duration::from_secs(5), (2, 1));
    let now = Instant::now();
    for purpose in 0..MAX_QUEUED {
        assert!(pool.call("getinfo", json!([]), purpose, now).is_ok());
    }
    assert_eq!(pool.call("getinfo", json!([]), 7, now), Err(7));
    assert_eq!(pool.queued(), MAX_QUEUED);
    // A timed-out backlog is failed as a whole, freeing the queue.
    let mut done = Vec::new();
    pool.expire(now + Duration::from_secs(6), &mut done);
    assert_eq!(done.len(), MAX_QUEUED);
    assert!(done.iter().all(|d| d.result == Err(CallError::Timeout)));
    assert_eq!(pool.pending(), 0);
}

/// A keep-alive daemon answering each request with its own JSON-RPC id, one thread per
/// connection. It answers a connection's first request at once and holds every later answer
/// until `release` is set, so a test can look at the pool while nothing can come back. The first
/// connection answers its `close_at`-th request (1-based) with `Connection: close` and closes,
/// leaving what was pipelined behind it unanswered. Reports how many connections it accepted.
fn echo_daemon(
    close_at: Option<usize>,
    release: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let first = accepted.fetch_add(1, Ordering::SeqCst) == 0;
            let release = release.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                while let Some(body) = read_request_body(&mut s) {
                    served += 1;
                    while served > 1 && !release.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let id = serde_json::from_slice::<Value>(&body).unwrap()["id"].clone();
                    let closing = first && close_at == Some(served);
                    let body = json!({"jsonrpc": "2.0", "id": id, "result": id}).to_string();
                    let connection = if closing { "close" } else { "keep-alive" };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(answer.as_bytes()).is_err() || closing {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Dispatches once (no new socket is expected) and returns the calls then in flight.
fn dispatch_once(pool: &mut RpcPool<u32>, addr: SocketAddr) -> usize {
    let (mut registered, mut done) = (Vec::new(), Vec::new());
    pool.dispatch(Some(addr), &mut registered, &mut done);
    assert!(registered.is_empty() && done.is_empty());
    pool.in_flight()
}

/// Drives `pool` until `n` calls are done, registering new sockets; returns the answers and the
/// most calls it ever had in flight.
fn run_counting(
    pool: &mut RpcPool<u32>,
    poll: &mut Poll,
    addr: SocketAddr,
    n: usize,
) -> (Vec<RpcDone<u32>>, usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut done, mut registered) = (Vec::new(), Vec::new());
    let mut events = Events::with_capacity(64);
    let mut most = 0;
    while done.len() < n {
        assert!(
            Instant::now() < deadline,
            "calls never completed: {} of {n} done, {} in flight, {} queued",
            done.len(),
            pool.in_flight(),
            pool.queued()
        );
        pool.dispatch(Some(addr), &mut registered, &mut done);
        most = most.max(pool.in_flight());
        for slot in registered.drain(..) {
            let interest = Interest::READABLE | Interest::WRITABLE;
            let stream = pool.stream(slot).unwrap();
            poll.registry()
                .register(stream, Token(slot), interest)
                .unwrap();
        }
        if done.len() >= n {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        for ev in events.iter() {
            pool.on_ready(ev.token().0, &mut done);
        }
    }
    (done, most)
}

#[test]
fn the_pool_shape_keeps_the_window_on_at_most_32_lookup_connections() {
    let cases = [
        (1, (1 + RESERVED, 1)),
        (32, (32 + RESERVED, 1)),
        (33, (32 + RESERVED, 2)),
        (128, (32 + RESERVED, 4)),
        (MAX_WINDOW, (32 + RESERVED, MAX_WINDOW / 32)),
        (MAX_WINDOW * 2, (32 + RESERVED, MAX_WINDOW / 32)),
        (0, (1 + RESERVED, 1)),
    ];
    for (window, shape) in cases {
        assert_eq!(pool_shape(window), shape, "window {window}");
    }
}

#[test]
fn a_burst_shares_writes_over_idle_kept_alive_connections() {
    // (queued, idle connections, depth) -> calls each idle kept-alive connection takes
    let cases = [
        ((1, 32, 8), 4),    // a lone call: the first connection takes it (and would take 4)
        ((8, 32, 8), 4),    // 8 calls: 2 writes of 4, not 8 writes of 1
        ((100, 32, 8), 4),  // spread evenly: 25 connections of 4
        ((200, 32, 8), 7),  // 7 each on 29 connections
        ((1000, 32, 8), 8), // never beyond depth; the rest waits or pipelines
        ((5, 32, 1), 1),    // depth 1 (window <= 32): one call per connection, as before
        ((10, 0, 8), 8),    // no idle connection: nothing takes the share
    ];
    for ((queued, idle, depth), share) in cases {
        assert_eq!(
            idle_share(queued, idle, depth),
            share,
            "{queued} {idle} {depth}"
        );
    }
}

/// A pool of `connections` (pipelining `depth`) to an [`echo_daemon`] that holds every answer
/// after a connection's first until `release` is set; each connection has already answered one
/// call (purposes `0..connections`), so all are known to be kept alive.
struct KeptAlive {
    pool: RpcPool<u32>,
    poll: Poll,
    addr: SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    release: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The warm-up calls' answers.
    first: Vec<RpcDone<u32>>,
}

fn kept_alive(connections: usize, depth: usize) -> KeptAlive {
    let release = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (addr, accepted) = echo_daemon(None, release.clone());
    let shape = (connections, depth);
    let mut pool = RpcPool::new("127.0.0.1", addr.port(), "", Duration::from_secs(5), shape);
    for purpose in 0..connections as u32 {
        call(&mut pool, purpose);
    }
    let mut poll = Poll::new().unwrap();
    let (first, _) = run_counting(&mut pool, &mut poll, addr, connections);
    assert_eq!(first.len(), connections);
    KeptAlive {
        pool,
        poll,
        addr,
        accepted,
        release,
        first,
    }
}

#[test]
fn calls_queued_together_leave_in_few_writes_on_kept_alive_connections() {
    let KeptAlive {
        mut pool,
        mut poll,
        addr,
        accepted,
        release,
        ..
    } = kept_alive(4, 8);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    for purpose in 4..12 {
        call(&mut pool, purpose);
    }
    assert_eq!((pool.queued(), pool.in_flight()), (8, 0));
    let mut registered = Vec::new();
    let mut done = Vec::new();
    pool.dispatch(Some(addr), &mut registered, &mut done);
    let loads: Vec<usize> = pool.conns.iter().flatten().map(|c| c.calls.len()).collect();
    assert_eq!(loads, [4, 4, 0, 0], "8 calls in two writes of 4");
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    let rest = run(&mut pool, &mut poll, addr, 8);
    assert_eq!(pool.pending(), 0);
    let mut answered: Vec<u32> = rest.iter().map(|d| d.purpose).collect();
    answered.sort_unstable();
    assert_eq!(answered, (4..12).collect::<Vec<_>>(), "each answered once");
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "no new connection"
    );
}

#[test]
fn calls_beyond_the_connections_are_pipelined_and_each_gets_its_own_answer() {
    let KeptAlive {
        mut pool,
        mut poll,
        addr,
        accepted,
        release,
        first,
    } = kept_alive(2, 3);
    for purpose in 2..20 {
        call(&mut pool, purpose);
    }
    // Nothing can be answered yet: the pool put 3 calls on each kept-alive connection.
    assert_eq!(dispatch_once(&mut pool, addr), 6, "2 connections x depth 3");
    assert_eq!(pool.queued(), 12);
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    let (rest, most) = run_counting(&mut pool, &mut poll, addr, 18);
    assert!(
        most <= 6,
        "never more than 2 connections x depth 3 in flight: {most}"
    );
    for d in first.into_iter().chain(rest) {
        // Ids are given in call order from 1, so call `p` has id `p + 1`.
        assert_eq!(
            d.result,
            Ok(json!(d.purpose + 1)),
            "call {} got its own answer",
            d.purpose
        );
    }
    assert_eq!(pool.pending(), 0);
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "no extra connection"
    );
}

#[test]
fn calls_pipelined_behind_a_closing_answer_are_sent_again_and_answered() {
    let release = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (addr, accepted) = echo_daemon(Some(2), release.clone());
    let mut pool = RpcPool::new("127.0.0.1", addr.port(), "", Duration::from_secs(5), (1, 3));
    call(&mut pool, 0);
    let mut poll = Poll::new().unwrap();
    let (first, _) = run_counting(&mut pool, &mut poll, addr, 1);
    assert_eq!(first[0].result, Ok(json!(1)));
    for purpose in 1..4 {
        call(&mut pool, purpose);
    }
    assert_eq!(
        dispatch_once(&mut pool, addr),
        3,
        "three calls pipelined on the one connection"
    );
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    let (rest, most) = run_counting(&mut pool, &mut poll, addr, 3);
    assert!(most <= 3, "never more than depth 3 in flight: {most}");
    let mut answered: Vec<u32> = rest
        .into_iter()
        .map(|d| {
            assert_eq!(d.result, Ok(json!(d.purpose + 1)), "call {}", d.purpose);
            d.purpose
        })
        .collect();
    answered.sort_unstable();
    assert_eq!(answered, [1, 2, 3], "each answered once, none failed");
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "resent on a new connection"
    );
}
