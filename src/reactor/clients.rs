//! The reactor's client side: accepting, routing the HTTP request (upgrade or plain endpoint),
//! answering protocol messages, timers, flushing and closing.
//!
//! Memory: the connection slab and the per-IP counts grow with a burst of connections; when a
//! connection leaves and they are less than a quarter full they are shrunk (the slab only down
//! to its highest live key, since keys are poll tokens), so RSS returns near its baseline after
//! the burst instead of keeping the peak's capacity.

use super::{MAX_MESSAGES_PER_TURN, Reactor, TimerOwner, timers};
use crate::client::admission::{self, Refusal};
use crate::client::reply;
use crate::client::session::{Action, Actions, Context, Session, SessionLimits, StreamView, Tally};
use crate::http::server::{RequestHead, response, websocket_accept};
use crate::pipeline::Pipeline;
use crate::server::conn::{ClientConn, ClientState, ReadResult};
use crate::server::ws::Incoming;
use mio::Interest;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Slots the connection slab and the per-IP map always keep (a shrink never goes below this).
const KEEP_CAPACITY: usize = 1024;

/// Whether a collection of `len` entries in a buffer for `capacity` should give memory back.
fn sparse(len: usize, capacity: usize) -> bool {
    capacity > KEEP_CAPACITY && len < capacity / 4
}

/// The released stream as sessions see it (`event_log`: a database is configured).
pub(super) fn stream_view(pipeline: &Pipeline, event_log: bool) -> StreamView<'_> {
    StreamView {
        epoch: &pipeline.epoch,
        last_seq: pipeline.last_seq,
        ring: &pipeline.ring,
        event_log,
    }
}

/// The door clients come in by: the listener (taken at shutdown), its address, and the
/// `accept` retry while accepting fails.
pub(super) struct Door {
    /// The client listener; `None` once shutdown has begun.
    pub listener: Option<mio::net::TcpListener>,
    /// The address the listener is bound to.
    pub local_addr: std::net::SocketAddr,
    /// Set while `accept` keeps failing: when the next retry is due.
    pub accept_retry_at: Option<Instant>,
}

impl Door {
    pub(super) fn new(listener: mio::net::TcpListener, local_addr: std::net::SocketAddr) -> Door {
        Door {
            listener: Some(listener),
            local_addr,
            accept_retry_at: None,
        }
    }
}

/// How soon `accept` is retried after it failed (EMFILE: descriptors may be freed any time).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl Reactor {
    pub(super) fn accept(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.door.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_recovered();
                    self.admit(stream, peer.ip(), now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.accept_recovered();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.accept_failed(&e, now),
            }
        }
    }

    fn accept_recovered(&mut self) {
        if self.door.accept_retry_at.take().is_some() {
            log::info!("[WORKER] Accepting connections again");
        }
    }

    /// EMFILE and friends: the connection stays in the backlog. The listener is edge-triggered,
    /// so no readiness event would bring it back; retry on a timer until `accept` succeeds.
    fn accept_failed(&mut self, e: &io::Error, now: Instant) {
        self.metrics.inc(&self.metrics.accept_errors);
        if self.door.accept_retry_at.is_none() {
            log::warn!(
                "[WORKER] Cannot accept connections: {e}; retrying every {} ms",
                ACCEPT_RETRY.as_millis()
            );
        } else if self.door.accept_retry_at.is_some_and(|at| at > now) {
            return; // a retry is already scheduled
        }
        let at = now + ACCEPT_RETRY;
        self.door.accept_retry_at = Some(at);
        self.timers.schedule(at, TimerOwner::Accept);
    }

    fn admit(&mut self, mut stream: mio::net::TcpStream, ip: IpAddr, now: Instant) {
        if !admission::door_open(self.clients.len(), self.config.limits.max_clients) {
            // Far beyond the client limit (mostly unfinished handshakes): refuse at the door.
            self.metrics.inc(&self.metrics.capacity_closes);
            log::debug!("[WORKER] Connection limit reached; dropping a new connection from {ip}");
            return;
        }
        let _ = stream.set_nodelay(true);
        let sndbuf = self.config.limits.client_sndbuf;
        if sndbuf > 0 {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(sndbuf);
        }
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, mio::Token(key), Interest::READABLE)
        {
            log::warn!("[WORKER] cannot register client: {e}");
            return;
        }
        let conn = ClientConn::new(stream, ip, now, self.config.limits.handshake_timeout);
        let at = conn.next_wake();
        entry.insert(conn);
        let id = self.gens.id(key);
        self.timers.schedule(at, TimerOwner::Client(id));
        self.metrics.inc(&self.metrics.connections_accepted);
    }

    pub(super) fn client_ready(&mut self, key: usize, now: Instant) {
        if !self.clients.contains(key) {
            return;
        }
        self.client_readable(key, now);
        self.mark_dirty(key);
    }

    /// Reads whatever the client sent and acts on it.
    pub(super) fn client_readable(&mut self, key: usize, now: Instant) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let result = if let ClientState::Handshake { .. } = client.state {
            client.read_head(now)
        } else {
            let mut incoming = Vec::new();
            let mut more = false;
            let r = client.read_messages(now, MAX_MESSAGES_PER_TURN, &mut incoming, &mut more);
            if more {
                self.turn.carry.push(key);
            }
            for msg in incoming {
                self.on_message(key, msg, now);
            }
            r
        };
        match result {
            ReadResult::Nothing => {}
            ReadResult::Request(head) => self.route(key, head, now),
            ReadResult::Done {
                close_code: Some((code, why)),
                reason,
            } => {
                log::debug!("[WORKER] Client {key}: {reason}");
                if code == 1009 {
                    self.metrics.inc(&self.metrics.oversize_closes);
                }
                self.close_client(key, code, why, now);
            }
            ReadResult::Done {
                close_code: None,
                reason,
            } => {
                log::debug!("[WORKER] Client {key} gone: {reason}");
                self.remove_client(key);
            }
        }
        self.mark_dirty(key);
    }

    /// A complete HTTP request: upgrade it, answer it, or refuse it.
    fn route(&mut self, key: usize, head: RequestHead, now: Instant) {
        let is_ws_path = head.path == "/" || head.path == "/ws";
        if is_ws_path && head.is_websocket_upgrade() {
            return self.upgrade(key, head, now);
        }
        let resp = if head.method != "GET" && head.method != "HEAD" {
            response(
                405,
                "text/plain",
                b"method not allowed\n",
                &[("Allow", "GET")],
            )
        } else {
            self.http_endpoint(&head)
        };
        self.finish_http(key, resp, now);
    }

    fn finish_http(&mut self, key: usize, resp: Vec<u8>, now: Instant) {
        if let Some(c) = self.clients.get_mut(key) {
            c.finish_http(resp, now);
        }
        self.reschedule(key);
    }

    /// The upgrade: admission checks, then the session opens (and is counted).
    fn upgrade(&mut self, key: usize, head: RequestHead, now: Instant) {
        let Some(ip) = self.clients.get(key).map(|c| c.ip) else {
            return;
        };
        let (authed, accept) = match self.admit_upgrade(&head, ip) {
            Ok(admitted) => admitted,
            Err(refusal) => return self.finish_http(key, refusal, now),
        };
        let limits = &self.config.limits;
        let offset = timers::spread(key, limits.ping_interval);
        let session = Session::new(SessionLimits::from(limits), authed, offset, now);
        let max_message = limits.max_message_bytes;
        if let Some(c) = self.clients.get_mut(key) {
            c.upgrade(&head, accept, max_message, session);
        }
        self.admission.count(ip);
        let max = self.config.limits.max_clients;
        if admission::over_capacity(self.admission.open_clients(), max) {
            self.metrics.inc(&self.metrics.capacity_closes);
            log::warn!("[WORKER] Client limit {max} reached; closing new client with 1013");
            return self.close_client(key, 1013, "worker at client limit", now);
        }
        log::info!(
            "[WORKER] New WebSocket client connected. Total: {}",
            self.admission.open_clients()
        );
        self.reschedule(key);
    }

    /// The upgrade's admission checks: whether the session starts authenticated and the 101
    /// answer, or the HTTP refusal to send instead (counted).
    fn admit_upgrade(&self, head: &RequestHead, ip: IpAddr) -> Result<(bool, Vec<u8>), Vec<u8>> {
        let offered = head
            .bearer_token()
            .map(str::to_owned)
            .or_else(|| head.query_param("token"));
        let checked = admission::check_upgrade(
            self.admission.from_ip(ip),
            self.config.limits.max_connections_per_ip,
            &self.config.api_keys,
            offered.as_deref(),
        );
        let authed = checked.map_err(|refusal| {
            self.metrics.inc(match refusal {
                Refusal::PerIp => &self.metrics.per_ip_refusals,
                Refusal::BadKey => &self.metrics.auth_failures,
            });
            response(refusal.status(), "text/plain", refusal.body(), &[])
        })?;
        let accept = websocket_accept(head)
            .map_err(|e| response(e.status(), "text/plain", format!("{e:?}\n").as_bytes(), &[]))?;
        Ok((authed, accept))
    }

    /// A message for the client's session: the session decides, the reactor carries it out.
    fn on_message(&mut self, key: usize, msg: Incoming, now: Instant) {
        let ctx = Context {
            api_keys: &self.config.api_keys,
            known_coins: &self.known_coins,
            stream: stream_view(&self.pipeline, self.db.is_some()),
            filter: self.subs.get(key),
        };
        let Some((session, _)) = self.clients.get_mut(key).and_then(|c| c.session_mut()) else {
            return; // closed earlier in this batch of messages
        };
        let actions = session.on_message(msg, now, &ctx);
        self.apply(key, actions, now);
    }

    /// Carries out a session's actions, in order; nothing after a close.
    pub(super) fn apply(&mut self, key: usize, actions: Actions, now: Instant) {
        for action in actions {
            match action {
                Action::Reply(text) => self.send(key, &text),
                Action::ReplyStatus(id) => {
                    let data = self.status_json();
                    self.send(key, &reply::status(id.as_ref(), data));
                }
                Action::SetFilter(filter) => self.subs.insert(key, filter),
                Action::ClearFilter => self.subs.forget(key),
                Action::QueryEventLog {
                    ticket,
                    after,
                    up_to,
                } => self.ask_event_log(key, ticket, after, up_to, now),
                Action::Flush => self.mark_dirty(key),
                Action::Ping => {
                    if let Some(c) = self.clients.get_mut(key) {
                        c.send_ping();
                    }
                    self.mark_dirty(key);
                }
                Action::Count(tally) => self.count(tally),
                Action::Close { code, reason } => {
                    if code == 4008 {
                        log::warn!(
                            "[WORKER] Client {key} fell behind its replay; closing with 4008"
                        );
                    }
                    return self.close_client(key, code, reason, now);
                }
                Action::Drop { reason } => {
                    log::debug!("[WORKER] Client {key} {reason}; closing");
                    return self.remove_client(key);
                }
            }
        }
    }

    fn count(&self, tally: Tally) {
        let m = &self.metrics;
        m.inc(match tally {
            Tally::RateLimited => &m.rate_limited,
            Tally::RateLimitClose => &m.rate_limit_closes,
            Tally::AuthFailure => &m.auth_failures,
            Tally::SlowConsumer => &m.slow_consumer_closes,
        });
    }

    fn send(&mut self, key: usize, text: &str) {
        if let Some(c) = self.clients.get_mut(key) {
            c.send_text(text);
        }
        self.mark_dirty(key);
    }

    /// Starts closing a client with a WebSocket close code (or drops it if not upgraded).
    pub(super) fn close_client(&mut self, key: usize, code: u16, reason: &str, now: Instant) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        match c.state {
            ClientState::Open { .. } => {
                let ip = c.ip;
                c.close(code, reason, now);
                self.leave_session(key, ip);
                self.mark_dirty(key);
                self.reschedule(key);
            }
            ClientState::Handshake { .. } => self.remove_client(key),
            ClientState::Closing { .. } => {}
        }
    }

    /// Forgets the session side of a client that stopped being open (filter, counts). Called
    /// exactly once per session, when it leaves `Open`.
    fn leave_session(&mut self, key: usize, ip: IpAddr) {
        self.subs.forget(key);
        self.admission.release(ip);
        log::info!(
            "[WORKER] WebSocket client disconnected. Total: {}",
            self.admission.open_clients()
        );
    }

    /// Drops a connection now.
    pub(super) fn remove_client(&mut self, key: usize) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        if c.is_open() {
            let ip = c.ip;
            self.leave_session(key, ip);
        }
        let mut c = self.clients.remove(key);
        if !c.outbox.is_empty() {
            // Best effort: a close reply or final frame already queued (never blocks).
            let _ = c.flush();
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.gens.retire(key);
        if sparse(self.clients.len(), self.clients.capacity()) {
            // Drops the vacant slots above the highest live key; a no-op (no scan) when the
            // slab is already as small as its keys allow, since then `capacity` stays put.
            self.clients.shrink_to_fit();
        }
    }

    /// Handshake, auth, idle-ping and linger deadlines.
    pub(super) fn client_timer(&mut self, key: usize, now: Instant) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        let due = now >= c.next_wake();
        let actions = match &mut c.state {
            ClientState::Open { session, .. } => session.on_tick(now),
            _ if due => return self.remove_client(key),
            _ => Vec::new(),
        };
        let ends = actions
            .iter()
            .any(|a| matches!(a, Action::Close { .. } | Action::Drop { .. }));
        self.apply(key, actions, now);
        if !ends {
            self.reschedule(key);
        }
    }

    /// Schedules the client's next timer: its deadline or its next idle check.
    pub(super) fn reschedule(&mut self, key: usize) {
        let Some(at) = self.clients.get(key).map(ClientConn::next_wake) else {
            return;
        };
        let id = self.gens.id(key);
        self.timers.schedule(at, TimerOwner::Client(id));
    }

    /// Writes every dirty client's queued frames (one vectored write each) and fixes interest.
    pub(super) fn flush_dirty(&mut self, now: Instant) {
        // Commits what the turn staged (see `commit`): nothing may be staged while replays
        // refill below.
        self.commit_fanout(now);
        let mut dirty = std::mem::take(&mut self.turn.dirty);
        for key in dirty.drain(..) {
            let Some(c) = self.clients.get_mut(key) else {
                continue;
            };
            c.dirty = false;
            match self.flush_client(key, now) {
                None => continue,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    log::debug!("[WORKER] Client {key} write failed: {e}");
                    self.remove_client(key);
                    continue;
                }
            }
            let Some(c) = self.clients.get_mut(key) else {
                continue;
            };
            let want = c.wants_writable();
            if want != c.writable_armed {
                let interest = if want {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                if self
                    .poll
                    .registry()
                    .reregister(&mut c.stream, mio::Token(key), interest)
                    .is_ok()
                {
                    c.writable_armed = want;
                }
            }
        }
        if self.turn.dirty.is_empty() {
            self.turn.dirty = dirty; // keep the allocation for the next turn
        }
    }
}
