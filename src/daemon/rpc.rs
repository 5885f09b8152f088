//! JSON-RPC client for one daemon, driven by the reactor: a pool of HTTP/1.1 keep-alive
//! connections with pipelining, a bounded FIFO queue, per-call deadlines.
//!
//! Sizing: the pool has up to [`MAX_LOOKUP_CONNECTIONS`] connections for enrichment lookups plus
//! [`RESERVED`] for the catch-up calls (paced at `recovery::CATCHUP_WINDOW`) and `getinfo`, so
//! catch-up never takes the lookups' connections; an idle connection serves whatever call is next.
//! `DAEMON_LOOKUP_WINDOW` is the number of calls in flight: when every connection is busy, calls
//! are pipelined on connections the daemon has already kept alive, up to `depth` per connection
//! (the window divided over the connections), and one connection's pipelined requests leave in
//! one write. Calls queued together (the reactor dispatches once per turn, after every frame of
//! the turn was read) share writes: an idle kept-alive connection takes at least
//! [`CALLS_PER_WRITE`] of them (up to `depth`), so a burst of lookups costs a few writes, not one
//! per call, while a single call still goes out at once on its own connection. Answers come back
//! in request order on each connection (HTTP/1.1), so each answer completes the oldest call of
//! its connection. Calls beyond the window wait in the queue, in
//! order; beyond [`MAX_QUEUED`] a call fails at once with [`CallError::Overloaded`] (the caller
//! decides what that means: for a lookup, the event goes out with its unknown fields null).
//!
//! The pool never registers sockets itself: it reports which slot needs registering, and the
//! reactor maps slot `s` of daemon `i` to a token. Answers come back as [`RpcDone`], tagged with
//! the caller's `purpose`.
//!
//! A daemon may close an idle keep-alive connection at any moment, so a call that fails on a
//! *reused* connection before any byte of its answer arrived is sent again, once, on a fresh
//! connection (every method the worker calls is a read or an idempotent load); so are the calls
//! pipelined behind it, and calls still within their deadline on a connection dropped because
//! an older call on it timed out.
//!
//! Invariants: a call is answered exactly once (result, error, or timeout); a connection whose
//! call timed out or whose answer could not be parsed is dropped, never reused; the queue holds
//! at most [`MAX_QUEUED`] calls (plus the calls of connections sent back for a retry); a call is
//! retried at most once after a transport failure; the pool never has more than its configured
//! connections, nor more than `depth` calls on one connection.

use crate::http::client::{finish_rpc_request, parse_response, rpc_request_prefix};
use crate::http::jsonrpc::{RpcError, RpcOutcome, decode_rpc_body, rpc_body};
use mio::net::TcpStream;
use serde_json::Value;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use transport::TransportError;

mod transport;

/// Connections kept besides the lookup connections: the catch-up window plus one for `getinfo`.
pub const RESERVED: usize = super::recovery::CATCHUP_WINDOW + 1;
/// Smallest lookup window (`DAEMON_LOOKUP_WINDOW`).
pub const MIN_WINDOW: usize = 1;
/// Largest lookup window (calls in flight per daemon).
pub const MAX_WINDOW: usize = 1024;
/// Most connections opened for lookups; a larger window pipelines on them.
pub const MAX_LOOKUP_CONNECTIONS: usize = 32;
/// Calls waiting for a free connection; beyond this, calls fail at once.
pub const MAX_QUEUED: usize = 10_000;
/// Largest answer body accepted.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Fewest queued calls an idle kept-alive connection takes in one dispatch (when there are that
/// many, and `depth` allows): spreading a burst one call per connection costs one write per call
/// here and one wake-up per call in the daemon.
pub const CALLS_PER_WRITE: usize = 4;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Calls each of `idle` idle kept-alive connections takes from a queue of `queued`: the queue
/// spread evenly, but at least [`CALLS_PER_WRITE`] and at most `depth` per connection.
fn idle_share(queued: usize, idle: usize, depth: usize) -> usize {
    queued
        .div_ceil(idle.max(1))
        .max(CALLS_PER_WRITE)
        .min(depth)
        .max(1)
}

/// Connections and pipelining depth for a lookup `window`: `(connections, depth)`, with
/// `connections` including [`RESERVED`] and `depth` such that the lookup connections carry at
/// least `window` calls.
pub fn pool_shape(window: usize) -> (usize, usize) {
    let window = window.clamp(MIN_WINDOW, MAX_WINDOW);
    let lookup = window.min(MAX_LOOKUP_CONNECTIONS);
    (lookup + RESERVED, window.div_ceil(lookup))
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The daemon answered with a JSON-RPC error.
    Rpc(RpcError),
    /// No answer before the deadline.
    Timeout,
    /// Connection or protocol failure (message for logs).
    Transport(String),
    /// The queue was full.
    Overloaded,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rpc(e) => write!(f, "{e}"),
            CallError::Timeout => f.write_str("timed out"),
            CallError::Transport(m) => f.write_str(m),
            CallError::Overloaded => f.write_str("RPC queue full"),
        }
    }
}

/// A finished call.
#[derive(Debug)]
pub struct RpcDone<P> {
    pub purpose: P,
    pub method: &'static str,
    pub result: Result<Value, CallError>,
}

#[derive(Debug)]
struct Call<P> {
    method: &'static str,
    /// The complete HTTP request.
    request: Vec<u8>,
    purpose: P,
    deadline: Instant,
    /// Already sent again after a transport failure.
    retried: bool,
}

#[derive(Debug)]
struct Conn<P> {
    stream: TcpStream,
    /// Bytes of requests not yet written.
    out: Vec<u8>,
    /// Bytes of answers read so far.
    inbuf: Vec<u8>,
    /// The calls written (or being written) to this connection, oldest first.
    calls: VecDeque<Call<P>>,
    /// The TCP connect has completed.
    connected: bool,
    /// A previous call completed on this connection (it is a kept-alive one).
    reused: bool,
}

impl<P> Conn<P> {
    fn assign(&mut self, call: Call<P>) {
        self.out.extend_from_slice(&call.request);
        self.calls.push_back(call);
    }
}

/// The pool for one daemon.
#[derive(Debug)]
pub struct RpcPool<P> {
    /// Every request starts with these bytes (request line, Host, Authorization, …).
    request_prefix: Vec<u8>,
    timeout: Duration,
    conns: Vec<Option<Conn<P>>>,
    /// Most calls pipelined on one connection.
    depth: usize,
    queue: VecDeque<Call<P>>,
    next_id: u64,
    /// A call went back to the queue during this dispatch.
    requeued: bool,
    /// Slots given pipelined calls in this dispatch pass (written once, after the pass).
    touched: Vec<usize>,
    /// Where answers are read (allocated once, never zeroed again).
    chunk: Box<[u8]>,
}

impl<P> RpcPool<P> {
    /// A pool of `connections` (at least one) for `host:port` with Basic `authorization`, a
    /// per-call `timeout` and at most `depth` (at least one) calls pipelined per connection.
    pub fn new(
        host: &str,
        port: u16,
        authorization: &str,
        timeout: Duration,
        (connections, depth): (usize, usize),
    ) -> RpcPool<P> {
        RpcPool {
            request_prefix: rpc_request_prefix(host, port, authorization),
            timeout,
            conns: (0..connections.max(1)).map(|_| None).collect(),
            depth: depth.max(1),
            queue: VecDeque::new(),
            next_id: 1,
            requeued: false,
            touched: Vec::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// Queues a call; `Err` (with the purpose back) when the queue is full.
    pub fn call(
        &mut self,
        method: &'static str,
        params: Value,
        purpose: P,
        now: Instant,
    ) -> Result<(), P> {
        if self.queue.len() >= MAX_QUEUED {
            return Err(purpose);
        }
        let id = self.next_id;
        self.next_id += 1;
        let body = rpc_body(id, method, params);
        let mut request = Vec::with_capacity(self.request_prefix.len() + 64 + body.len());
        request.extend_from_slice(&self.request_prefix);
        finish_rpc_request(&mut request, &body);
        self.queue.push_back(Call {
            method,
            request,
            purpose,
            deadline: now + self.timeout,
            retried: false,
        });
        Ok(())
    }

    /// Calls queued or in flight.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.in_flight()
    }

    /// Calls written (or being written) to a connection.
    pub fn in_flight(&self) -> usize {
        self.conns.iter().flatten().map(|c| c.calls.len()).sum()
    }

    /// Calls waiting for a free connection.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Connections the pool may open (its slots).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Assigns queued calls to connections — idle ones first (opening new ones to `addr` as
    /// needed), then pipelined on kept-alive ones. Returns the slots whose new socket must be
    /// registered.
    pub fn dispatch(
        &mut self,
        addr: Option<SocketAddr>,
        registered: &mut Vec<usize>,
        done: &mut Vec<RpcDone<P>>,
    ) {
        loop {
            self.requeued = false;
            self.dispatch_idle(addr, registered, done);
            self.dispatch_pipelined(done);
            if !self.requeued {
                return;
            }
        }
    }

    /// Calls to each connection that has none: one to a connection not yet kept alive (its
    /// first answer tells whether the daemon keeps connections alive), a share of the queue —
    /// at least [`CALLS_PER_WRITE`], at most `depth` — to a kept-alive one.
    fn dispatch_idle(
        &mut self,
        addr: Option<SocketAddr>,
        registered: &mut Vec<usize>,
        done: &mut Vec<RpcDone<P>>,
    ) {
        let idle = self
            .conns
            .iter()
            .filter(|c| c.as_ref().is_none_or(|c| c.calls.is_empty()))
            .count();
        let share = idle_share(self.queue.len(), idle, self.depth);
        for slot in 0..self.conns.len() {
            if self.queue.is_empty() {
                return;
            }
            let busy = self.conns[slot]
                .as_ref()
                .is_some_and(|c| !c.calls.is_empty());
            if busy {
                continue;
            }
            if self.conns[slot].is_none() {
                let Some(addr) = addr else {
                    return;
                };
                match open(addr) {
                    Ok(conn) => {
                        self.conns[slot] = Some(conn);
                        registered.push(slot);
                    }
                    Err(e) => {
                        if let Some(call) = self.queue.pop_front() {
                            done.push(failed(call, CallError::Transport(e.to_string())));
                        }
                        continue;
                    }
                }
            }
            if let Some(conn) = self.conns[slot].as_mut() {
                conn.inbuf.clear();
                let take = if conn.connected && conn.reused {
                    share
                } else {
                    1
                };
                for _ in 0..take {
                    match self.queue.pop_front() {
                        Some(call) => conn.assign(call),
                        None => break,
                    }
                }
                if conn.connected {
                    // The answer may already be complete when this returns: never drop it.
                    self.progress(slot, done);
                }
            }
        }
    }

    /// The calls left once every connection is busy, spread level by level over the connections
    /// the daemon has kept alive, up to `depth` each; each touched connection writes once.
    fn dispatch_pipelined(&mut self, done: &mut Vec<RpcDone<P>>) {
        self.touched.clear();
        for level in 1..self.depth {
            for slot in 0..self.conns.len() {
                if self.queue.is_empty() {
                    break;
                }
                let Some(conn) = self.conns[slot].as_mut() else {
                    continue;
                };
                if !(conn.connected && conn.reused && conn.calls.len() == level) {
                    continue;
                }
                if let Some(call) = self.queue.pop_front() {
                    conn.assign(call);
                    if !self.touched.contains(&slot) {
                        self.touched.push(slot);
                    }
                }
            }
        }
        let touched = std::mem::take(&mut self.touched);
        for &slot in &touched {
            self.progress(slot, done);
        }
        self.touched = touched;
    }

    /// The socket of `slot`, for (de)registration.
    pub fn stream(&mut self, slot: usize) -> Option<&mut TcpStream> {
        self.conns.get_mut(slot)?.as_mut().map(|c| &mut c.stream)
    }

    /// Readiness on `slot`.
    pub fn on_ready(&mut self, slot: usize, done: &mut Vec<RpcDone<P>>) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        if !conn.connected {
            match conn.stream.peer_addr() {
                Ok(_) => conn.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => {
                    let why = conn
                        .stream
                        .take_error()
                        .ok()
                        .flatten()
                        .map_or("connect failed".to_string(), |e| e.to_string());
                    return self.drop_conn(slot, CallError::Transport(why), done);
                }
            }
        }
        self.progress(slot, done);
    }

    /// Writes and reads what `slot` can, then completes every call whose answer is complete
    /// (closing the connection after an answer that does not keep it alive); a transport or
    /// protocol error fails the connection's calls (or sends them again, see the module doc).
    fn progress(&mut self, slot: usize, done: &mut Vec<RpcDone<P>>) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let eof = match pump(conn, &mut self.chunk) {
            Ok(eof) => eof,
            Err(why) => return self.transport_failed(slot, why, done),
        };
        loop {
            let Some(Some(conn)) = self.conns.get_mut(slot) else {
                return;
            };
            if conn.calls.is_empty() {
                if eof {
                    self.conns[slot] = None;
                }
                return;
            }
            let (outcome, keep_alive) = match take_answer(conn, eof) {
                Ok(Some(answer)) => answer,
                Ok(None) => return,
                Err(why) => return self.transport_failed(slot, why, done),
            };
            if let Some(call) = conn.calls.pop_front() {
                done.push(RpcDone {
                    purpose: call.purpose,
                    method: call.method,
                    result: outcome,
                });
            }
            conn.reused = true;
            if !keep_alive {
                // Calls pipelined behind a closing answer were never answered: send them again.
                return self.requeue_conn(slot);
            }
        }
    }

    /// A transport error on `slot`: its calls go back to the front of the queue if the daemon
    /// probably closed a kept-alive connection under them (nothing of their answer arrived and
    /// they were not retried yet); otherwise they fail. The connection is dropped either way.
    fn transport_failed(&mut self, slot: usize, why: TransportError, done: &mut Vec<RpcDone<P>>) {
        let Some(Some(conn)) = self.conns.get_mut(slot).map(Option::take) else {
            return;
        };
        let partial_front = !conn.inbuf.is_empty();
        let mut again = Vec::new();
        for (i, mut call) in conn.calls.into_iter().enumerate() {
            if conn.reused && !call.retried && !(i == 0 && partial_front) {
                log::debug!(
                    "[RPC] {} failed on a kept-alive connection ({why}); retrying",
                    call.method
                );
                call.retried = true;
                again.push(call);
            } else {
                done.push(failed(call, CallError::Transport(why.to_string())));
            }
        }
        self.push_front(again);
    }

    /// Drops `slot` and sends its unanswered calls again (no retry is used up: they did not fail).
    fn requeue_conn(&mut self, slot: usize) {
        if let Some(Some(conn)) = self.conns.get_mut(slot).map(Option::take) {
            self.push_front(conn.calls.into_iter().collect());
        }
    }

    /// Puts `calls` (oldest first) back at the front of the queue, in order.
    fn push_front(&mut self, calls: Vec<Call<P>>) {
        if calls.is_empty() {
            return;
        }
        for call in calls.into_iter().rev() {
            self.queue.push_front(call);
        }
        self.requeued = true;
    }

    fn drop_conn(&mut self, slot: usize, err: CallError, done: &mut Vec<RpcDone<P>>) {
        if let Some(Some(conn)) = self.conns.get_mut(slot).map(Option::take) {
            for call in conn.calls {
                done.push(failed(call, err.clone()));
            }
        }
    }

    /// Fails every call whose deadline passed. A connection with a late call is dropped; the
    /// calls pipelined on it that are still in time go back to the queue.
    pub fn expire(&mut self, now: Instant, done: &mut Vec<RpcDone<P>>) {
        while self.queue.front().is_some_and(|c| c.deadline <= now) {
            if let Some(call) = self.queue.pop_front() {
                done.push(failed(call, CallError::Timeout));
            }
        }
        for slot in 0..self.conns.len() {
            let late = self.conns[slot]
                .as_ref()
                .is_some_and(|c| c.calls.iter().any(|call| call.deadline <= now));
            if !late {
                continue;
            }
            let Some(conn) = self.conns[slot].take() else {
                continue;
            };
            let (late, in_time): (Vec<_>, Vec<_>) = conn
                .calls
                .into_iter()
                .partition(|call| call.deadline <= now);
            done.extend(
                late.into_iter()
                    .map(|call| failed(call, CallError::Timeout)),
            );
            self.push_front(in_time);
        }
    }

    /// The earliest call deadline.
    pub fn deadline(&self) -> Option<Instant> {
        let in_flight = self
            .conns
            .iter()
            .flatten()
            .flat_map(|c| c.calls.iter().map(|call| call.deadline));
        self.queue
            .front()
            .map(|c| c.deadline)
            .into_iter()
            .chain(in_flight)
            .min()
    }

    /// Drops every connection and fails every call (the daemon went away).
    pub fn reset(&mut self, why: &str, done: &mut Vec<RpcDone<P>>) {
        for slot in 0..self.conns.len() {
            self.drop_conn(slot, CallError::Transport(why.to_string()), done);
        }
        while let Some(call) = self.queue.pop_front() {
            done.push(failed(call, CallError::Transport(why.to_string())));
        }
    }
}

/// Starts a non-blocking connect to `addr`.
fn open<P>(addr: SocketAddr) -> io::Result<Conn<P>> {
    let stream = TcpStream::connect(addr)?;
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        out: Vec::new(),
        inbuf: Vec::new(),
        calls: VecDeque::new(),
        connected: false,
        reused: false,
    })
}

fn failed<P>(call: Call<P>, err: CallError) -> RpcDone<P> {
    RpcDone {
        purpose: call.purpose,
        method: call.method,
        result: Err(err),
    }
}

type Answer = (Result<Value, CallError>, bool);

/// Writes what is pending and reads what arrived; `Ok(true)` when the daemon closed its side.
/// Reading goes on while requests are still unwritten, so a daemon blocked on writing answers
/// to pipelined requests can never block us writing the rest. A read shorter than the buffer
/// emptied the socket, so reading stops there without a last read that would only say "would
/// block": the sockets are edge-triggered, and anything arriving later (more bytes, the end of
/// the stream) raises a new readiness event.
fn pump<P>(conn: &mut Conn<P>, chunk: &mut [u8]) -> Result<bool, TransportError> {
    let mut written = 0;
    while written < conn.out.len() {
        match conn.stream.write(&conn.out[written..]) {
            Ok(0) => return Err(TransportError::Closed),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TransportError::Io(e)),
        }
    }
    conn.out.drain(..written);
    loop {
        match conn.stream.read(chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                conn.inbuf.extend_from_slice(&chunk[..n]);
                if conn.inbuf.len() > MAX_BODY + 64 * 1024 {
                    return Err(TransportError::TooLarge);
                }
                if n < chunk.len() {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TransportError::Io(e)),
        }
    }
}

/// The oldest answer in `conn.inbuf`, once complete: the outcome and whether the connection
/// stays open.
fn take_answer<P>(conn: &mut Conn<P>, eof: bool) -> Result<Option<Answer>, TransportError> {
    let response = match parse_response(&conn.inbuf, MAX_BODY, eof) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) => return Err(TransportError::BadHttp(e)),
    };
    conn.inbuf.drain(..response.consumed);
    let outcome = match decode_rpc_body(&response.body) {
        Ok((_, RpcOutcome::Result(v))) => Ok(v),
        Ok((_, RpcOutcome::Error(e))) => Err(CallError::Rpc(e)),
        Err(e) => Err(CallError::Transport(format!(
            "bad JSON-RPC answer (HTTP {}): {e:?}",
            response.status
        ))),
    };
    let more_coming = !eof || !conn.inbuf.is_empty();
    Ok(Some((outcome, response.keep_alive && more_coming)))
}

#[cfg(test)]
mod tests;
