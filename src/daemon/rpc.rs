//! JSON-RPC client for one daemon, driven by the reactor: a pool of HTTP/1.1 keep-alive
//! connections, one call in flight per connection, a bounded FIFO queue, per-call deadlines.
//!
//! Sizing: the pool has `DAEMON_LOOKUP_WINDOW` connections for enrichment lookups plus
//! [`RESERVED`] for the catch-up calls (paced at `recovery::CATCHUP_WINDOW`) and `getinfo`, so
//! catch-up never takes the lookups' connections; an idle connection serves whatever call is next.
//! Calls beyond the connections wait in the queue, in order; beyond [`MAX_QUEUED`] a call fails
//! at once with [`CallError::Overloaded`] (the caller decides what that means: for a lookup, the
//! event goes out with its unknown fields null).
//!
//! The pool never registers sockets itself: it reports which slot needs registering, and the
//! reactor maps slot `s` of daemon `i` to a token. Answers come back as [`RpcDone`], tagged with
//! the caller's `purpose`.
//!
//! A daemon may close an idle keep-alive connection at any moment, so a call that fails on a
//! *reused* connection before any byte of its answer arrived is sent again, once, on a fresh
//! connection (every method the worker calls is a read or an idempotent load).
//!
//! Invariants: a call is answered exactly once (result, error, or timeout); a connection whose
//! call timed out or whose answer could not be parsed is dropped, never reused; the queue holds
//! at most [`MAX_QUEUED`] calls (plus at most one per connection sent back for a retry); a call
//! is retried at most once; the pool never has more than its configured connections.

mod transport;

use crate::http::client::{parse_response, rpc_request};
use crate::http::jsonrpc::{RpcError, RpcOutcome, decode_rpc_body, rpc_body};
use mio::net::TcpStream;
use serde_json::Value;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use transport::TransportError;

/// Connections kept besides the lookup window: the catch-up window plus one for `getinfo`.
pub const RESERVED: usize = super::recovery::CATCHUP_WINDOW + 1;
/// Smallest lookup window (`DAEMON_LOOKUP_WINDOW`).
pub const MIN_WINDOW: usize = 1;
/// Largest lookup window: the reactor reserves a token range per daemon for its connections.
pub const MAX_WINDOW: usize = 256;
/// Calls waiting for a free connection; beyond this, calls fail at once.
pub const MAX_QUEUED: usize = 10_000;
/// Largest answer body accepted.
const MAX_BODY: usize = 8 * 1024 * 1024;

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
    body: Vec<u8>,
    purpose: P,
    deadline: Instant,
    /// Already sent again after failing on a stale keep-alive connection.
    retried: bool,
}

#[derive(Debug)]
struct Conn<P> {
    stream: TcpStream,
    /// Bytes of the request not yet written.
    out: Vec<u8>,
    /// Bytes of the answer read so far.
    inbuf: Vec<u8>,
    /// The call in flight, if any.
    call: Option<Call<P>>,
    /// The TCP connect has completed.
    connected: bool,
    /// A previous call completed on this connection (it is a kept-alive one).
    reused: bool,
}

/// The pool for one daemon.
#[derive(Debug)]
pub struct RpcPool<P> {
    host: String,
    port: u16,
    authorization: String,
    timeout: Duration,
    conns: Vec<Option<Conn<P>>>,
    queue: VecDeque<Call<P>>,
    next_id: u64,
    /// A call went back to the queue during this dispatch.
    requeued: bool,
}

impl<P> RpcPool<P> {
    /// A pool of `connections` (at least one) for `host:port` with Basic `authorization` and a
    /// per-call `timeout`.
    pub fn new(
        host: &str,
        port: u16,
        authorization: &str,
        timeout: Duration,
        connections: usize,
    ) -> RpcPool<P> {
        RpcPool {
            host: host.to_string(),
            port,
            authorization: authorization.to_string(),
            timeout,
            conns: (0..connections.max(1)).map(|_| None).collect(),
            queue: VecDeque::new(),
            next_id: 1,
            requeued: false,
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
        self.queue.push_back(Call {
            method,
            body,
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
        self.conns
            .iter()
            .flatten()
            .filter(|c| c.call.is_some())
            .count()
    }

    /// Calls waiting for a free connection.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Connections the pool may open (its slots).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Assigns queued calls to idle connections, opening new ones (to `addr`) as needed.
    /// Returns the slots whose new socket must be registered.
    pub fn dispatch(
        &mut self,
        addr: Option<SocketAddr>,
        registered: &mut Vec<usize>,
        done: &mut Vec<RpcDone<P>>,
    ) {
        loop {
            self.requeued = false;
            self.dispatch_pass(addr, registered, done);
            if !self.requeued {
                return;
            }
        }
    }

    fn dispatch_pass(
        &mut self,
        addr: Option<SocketAddr>,
        registered: &mut Vec<usize>,
        done: &mut Vec<RpcDone<P>>,
    ) {
        for slot in 0..self.conns.len() {
            if self.queue.is_empty() {
                return;
            }
            let busy = self.conns[slot].as_ref().is_some_and(|c| c.call.is_some());
            if busy {
                continue;
            }
            if self.conns[slot].is_none() {
                let Some(addr) = addr else {
                    return;
                };
                match TcpStream::connect(addr) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        self.conns[slot] = Some(Conn {
                            stream,
                            out: Vec::new(),
                            inbuf: Vec::new(),
                            call: None,
                            connected: false,
                            reused: false,
                        });
                        registered.push(slot);
                    }
                    Err(e) => {
                        if let Some(call) = self.queue.pop_front() {
                            done.push(RpcDone {
                                purpose: call.purpose,
                                method: call.method,
                                result: Err(CallError::Transport(e.to_string())),
                            });
                        }
                        continue;
                    }
                }
            }
            if let (Some(conn), Some(call)) = (self.conns[slot].as_mut(), self.queue.pop_front()) {
                conn.out = rpc_request(&self.host, self.port, &self.authorization, &call.body);
                conn.inbuf.clear();
                conn.call = Some(call);
                if conn.connected {
                    // The answer may already be complete when drive returns: never drop it.
                    let progress = drive(conn);
                    self.settle(slot, progress, done);
                }
            }
        }
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
        let progress = drive(conn);
        self.settle(slot, progress, done);
    }

    /// Acts on what [`drive`] achieved on `slot`: an answer completes the call (and closes the
    /// connection unless it is keep-alive); an error fails the call and drops the connection.
    fn settle(
        &mut self,
        slot: usize,
        progress: Result<Option<Answer>, TransportError>,
        done: &mut Vec<RpcDone<P>>,
    ) {
        match progress {
            Ok(None) => {}
            Ok(Some((outcome, keep_alive))) => {
                let Some(Some(conn)) = self.conns.get_mut(slot) else {
                    return;
                };
                if let Some(call) = conn.call.take() {
                    done.push(RpcDone {
                        purpose: call.purpose,
                        method: call.method,
                        result: outcome,
                    });
                }
                conn.reused = true;
                if !keep_alive {
                    self.conns[slot] = None;
                }
            }
            Err(why) => self.transport_failed(slot, why, done),
        }
    }

    /// A transport error on `slot`: the call goes back to the front of the queue if the daemon
    /// probably closed a kept-alive connection under it (nothing of the answer arrived yet);
    /// otherwise it fails. The connection is dropped either way.
    fn transport_failed(&mut self, slot: usize, why: TransportError, done: &mut Vec<RpcDone<P>>) {
        let stale = self
            .conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| {
                c.reused && c.inbuf.is_empty() && c.call.as_ref().is_some_and(|call| !call.retried)
            });
        if !stale {
            return self.drop_conn(slot, CallError::Transport(why.to_string()), done);
        }
        if let Some(Some(conn)) = self.conns.get_mut(slot).map(Option::take)
            && let Some(mut call) = conn.call
        {
            log::debug!(
                "[RPC] {} failed on a kept-alive connection ({why}); retrying",
                call.method
            );
            call.retried = true;
            self.queue.push_front(call);
            self.requeued = true;
        }
    }

    fn drop_conn(&mut self, slot: usize, err: CallError, done: &mut Vec<RpcDone<P>>) {
        if let Some(Some(conn)) = self.conns.get_mut(slot).map(Option::take)
            && let Some(call) = conn.call
        {
            done.push(RpcDone {
                purpose: call.purpose,
                method: call.method,
                result: Err(err),
            });
        }
    }

    /// Fails every call whose deadline passed (dropping its connection if in flight).
    pub fn expire(&mut self, now: Instant, done: &mut Vec<RpcDone<P>>) {
        while self.queue.front().is_some_and(|c| c.deadline <= now) {
            if let Some(call) = self.queue.pop_front() {
                done.push(RpcDone {
                    purpose: call.purpose,
                    method: call.method,
                    result: Err(CallError::Timeout),
                });
            }
        }
        for slot in 0..self.conns.len() {
            let late = self.conns[slot]
                .as_ref()
                .and_then(|c| c.call.as_ref())
                .is_some_and(|c| c.deadline <= now);
            if late {
                self.drop_conn(slot, CallError::Timeout, done);
            }
        }
    }

    /// The earliest call deadline.
    pub fn deadline(&self) -> Option<Instant> {
        let in_flight = self
            .conns
            .iter()
            .flatten()
            .filter_map(|c| c.call.as_ref().map(|c| c.deadline));
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
            done.push(RpcDone {
                purpose: call.purpose,
                method: call.method,
                result: Err(CallError::Transport(why.to_string())),
            });
        }
    }
}

type Answer = (Result<Value, CallError>, bool);

/// Writes what is pending and reads what arrived; `Some` once the answer is complete.
fn drive<P>(conn: &mut Conn<P>) -> Result<Option<Answer>, TransportError> {
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(0) => return Err(TransportError::Closed),
            Ok(n) => {
                conn.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TransportError::Io(e)),
        }
    }
    let mut eof = false;
    let mut chunk = [0u8; 8192];
    loop {
        match conn.stream.read(&mut chunk) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                conn.inbuf.extend_from_slice(&chunk[..n]);
                if conn.inbuf.len() > MAX_BODY + 64 * 1024 {
                    return Err(TransportError::TooLarge);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TransportError::Io(e)),
        }
    }
    if conn.call.is_none() {
        return if eof {
            Err(TransportError::ClosedByDaemon)
        } else {
            Ok(None)
        };
    }
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
    Ok(Some((outcome, response.keep_alive && !eof)))
}

#[cfg(test)]
mod tests;
