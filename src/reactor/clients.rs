//! The reactor's client side: accepting, routing the HTTP request (upgrade or plain endpoint),
//! answering protocol messages, timers, flushing and closing.
//!
//! Memory: the connection slab and the per-IP counts grow with a burst of connections; when a
//! connection leaves and they are less than a quarter full they are shrunk (the slab only down
//! to its highest live key, since keys are poll tokens), so RSS returns near its baseline after
//! the burst instead of keeping the peak's capacity.

use super::{MAX_MESSAGES_PER_TURN, Reactor, TimerOwner, timers};
use crate::client::filter::Filter;
use crate::client::ratelimit::{RateDecision, RateGuard};
use crate::client::reply;
use crate::client::request::{self, ErrorCode, Request, RequestError, SubscribeRequest};
use crate::http::server::{RequestHead, response, websocket_accept};
use crate::server::conn::{ClientConn, ClientState, ReadResult, Replay};
use crate::server::ws::Incoming;
use mio::Interest;
use serde_json::Value;
use std::io;
use std::time::{Duration, Instant};

/// Slots the connection slab and the per-IP map always keep (a shrink never goes below this).
const KEEP_CAPACITY: usize = 1024;

/// Whether a collection of `len` entries in a buffer for `capacity` should give memory back.
fn sparse(len: usize, capacity: usize) -> bool {
    capacity > KEEP_CAPACITY && len < capacity / 4
}

/// How soon `accept` is retried after it failed (EMFILE: descriptors may be freed any time).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl Reactor {
    pub(super) fn accept(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
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
        if self.accept_retry_at.take().is_some() {
            log::info!("[WORKER] Accepting connections again");
        }
    }

    /// EMFILE and friends: the connection stays in the backlog. The listener is edge-triggered,
    /// so no readiness event would bring it back; retry on a timer until `accept` succeeds.
    fn accept_failed(&mut self, e: &io::Error, now: Instant) {
        self.metrics.inc(&self.metrics.accept_errors);
        if self.accept_retry_at.is_none() {
            log::warn!(
                "[WORKER] Cannot accept connections: {e}; retrying every {} ms",
                ACCEPT_RETRY.as_millis()
            );
        } else if self.accept_retry_at.is_some_and(|at| at > now) {
            return; // a retry is already scheduled
        }
        let at = now + ACCEPT_RETRY;
        self.accept_retry_at = Some(at);
        self.timers.schedule(at, TimerOwner::Accept);
    }

    fn admit(&mut self, mut stream: mio::net::TcpStream, ip: std::net::IpAddr, now: Instant) {
        let max = self.config.limits.max_clients;
        if self.clients.len() >= max + max / 10 + 100 {
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
        let deadline = conn.deadline;
        entry.insert(conn);
        let id = self.gens.id(key);
        if let Some(at) = deadline {
            self.timers.schedule(at, TimerOwner::Client(id));
        }
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
                self.carry.push(key);
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
        if let Some(c) = self.clients.get_mut(key) {
            c.finish_http(resp, now);
        }
        self.reschedule(key);
    }

    fn upgrade(&mut self, key: usize, head: RequestHead, now: Instant) {
        let limits = &self.config.limits;
        let keys = &self.config.api_keys;
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let ip = client.ip;
        let per_ip = self.per_ip.get(&ip).copied().unwrap_or(0) as usize;
        let offered = head
            .bearer_token()
            .map(str::to_owned)
            .or_else(|| head.query_param("token"));
        let refusal =
            if limits.max_connections_per_ip > 0 && per_ip >= limits.max_connections_per_ip {
                self.metrics.inc(&self.metrics.per_ip_refusals);
                Some(response(
                    429,
                    "text/plain",
                    b"too many connections from this address\n",
                    &[],
                ))
            } else if !keys.is_empty()
                && offered
                    .as_deref()
                    .is_some_and(|k| !crate::auth::key_matches(keys, k))
            {
                self.metrics.inc(&self.metrics.auth_failures);
                Some(response(401, "text/plain", b"invalid API key\n", &[]))
            } else {
                None
            };
        let accept = match refusal {
            Some(r) => Err(r),
            None => websocket_accept(&head).map_err(|e| {
                response(e.status(), "text/plain", format!("{e:?}\n").as_bytes(), &[])
            }),
        };
        let accept = match accept {
            Ok(a) => a,
            Err(resp) => {
                client.finish_http(resp, now);
                return self.reschedule(key);
            }
        };
        client.upgrade(&head, accept, limits.max_message_bytes);
        client.authed = keys.is_empty() || offered.is_some();
        if !client.authed {
            client.deadline = Some(now + limits.auth_timeout);
        }
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.open_clients += 1;
        let l = &self.config.limits;
        if let Some(c) = self.clients.get_mut(key) {
            c.session = Some(RateGuard::new(l.rate_limit, l.rate_burst));
        }
        if self.open_clients > limits.max_clients {
            self.metrics.inc(&self.metrics.capacity_closes);
            log::warn!(
                "[WORKER] Client limit {} reached; closing new client with 1013",
                limits.max_clients
            );
            return self.close_client(key, 1013, "worker at client limit", now);
        }
        log::info!(
            "[WORKER] New WebSocket client connected. Total: {}",
            self.open_clients
        );
        self.reschedule(key);
    }

    fn on_message(&mut self, key: usize, msg: Incoming, now: Instant) {
        let text = match msg {
            Incoming::Text(t) => t,
            Incoming::Binary => {
                let e = RequestError::new(
                    ErrorCode::InvalidMessage,
                    "binary frames are not part of the protocol; send JSON text",
                );
                return self.send(key, &reply::error(&e));
            }
            Incoming::Pong | Incoming::Closed => return,
        };
        if let Some(rate) = self.clients.get_mut(key).and_then(|c| c.session.as_mut()) {
            match rate.check(now) {
                RateDecision::Allow => {}
                RateDecision::Reject => {
                    self.metrics.inc(&self.metrics.rate_limited);
                    let id = request::peek_id(&text);
                    return self.send(
                        key,
                        &reply::error_code(
                            id.as_ref(),
                            ErrorCode::RateLimited,
                            "too many messages; slow down",
                        ),
                    );
                }
                RateDecision::Close => {
                    self.metrics.inc(&self.metrics.rate_limit_closes);
                    return self.close_client(key, 4029, "rate limit exceeded", now);
                }
            }
        }
        let env = match request::parse(&text) {
            Ok(env) => env,
            Err(e) => return self.send(key, &reply::error(&e)),
        };
        let authed = self.clients.get(key).is_some_and(|c| c.authed);
        let id = env.id.as_ref();
        match env.request {
            Request::Auth(token) => self.authenticate(key, id, &token, now),
            _ if !authed => self.send(
                key,
                &reply::error_code(
                    id,
                    ErrorCode::Unauthorized,
                    "authenticate first: send {\"type\":\"auth\",\"token\":\"...\"}",
                ),
            ),
            Request::Ping => self.send(key, &reply::pong(id)),
            Request::GetStatus => {
                let data = self.status_json();
                self.send(key, &reply::status(id, data));
            }
            Request::Subscribe(req) => self.subscribe(key, id, req),
            Request::Unsubscribe(events) => self.unsubscribe(key, id, events),
        }
    }

    fn authenticate(&mut self, key: usize, id: Option<&Value>, token: &str, now: Instant) {
        let keys = &self.config.api_keys;
        if keys.is_empty() || crate::auth::key_matches(keys, token) {
            if let Some(c) = self.clients.get_mut(key) {
                c.authed = true;
                c.deadline = None;
            }
            self.send(key, &reply::authenticated(id));
        } else {
            self.metrics.inc(&self.metrics.auth_failures);
            self.send(
                key,
                &reply::error_code(id, ErrorCode::Unauthorized, "invalid token"),
            );
            self.close_client(key, 1008, "invalid token", now);
        }
    }

    fn subscribe(&mut self, key: usize, id: Option<&Value>, req: SubscribeRequest) {
        let filter = match Filter::from_request(&req, &self.known_coins) {
            Ok(f) => f,
            Err(e) => return self.send(key, &reply::error(&e.with_id(id.cloned()))),
        };
        if let Some(c) = self.clients.get_mut(key) {
            c.replay = None; // a new subscribe replaces a resume in progress
        }
        let epoch = self.pipeline.epoch.clone();
        let last = self.pipeline.last_seq;
        let resumed = match req.since {
            None => None,
            Some(since) => {
                let same_epoch = req.epoch.as_deref().is_none_or(|e| e == &*epoch);
                if !same_epoch || since > last {
                    Some(false)
                } else if self.pipeline.ring.since(since).is_ok() {
                    Some(true)
                } else if self.can_resume_from_db(since) {
                    return self.start_db_resume(key, id.cloned(), filter, since);
                } else {
                    Some(false)
                }
            }
        };
        self.send(key, &reply::subscribed(id, &filter, &epoch, last, resumed));
        self.subs.insert(key, filter);
        if let (Some(true), Some(since)) = (resumed, req.since) {
            self.start_replay(
                key,
                Replay {
                    next_seq: since + 1,
                    ..Replay::default()
                },
            );
        }
    }

    fn unsubscribe(&mut self, key: usize, id: Option<&Value>, events: Option<Vec<String>>) {
        let Some(mut filter) = self.subs.remove(key) else {
            return self.send(key, &reply::unsubscribed(id, &[]));
        };
        let result = filter.unsubscribe(events.as_deref());
        let still = filter.events();
        if !filter.is_empty() {
            self.subs.insert(key, filter);
        }
        match result {
            Ok(()) => self.send(key, &reply::unsubscribed(id, &still)),
            Err(e) => self.send(key, &reply::error(&e.with_id(id.cloned()))),
        }
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
                c.close(code, reason, now);
                self.leave_session(key);
                self.mark_dirty(key);
                self.reschedule(key);
            }
            ClientState::Handshake { .. } => self.remove_client(key),
            ClientState::Closing { .. } => {}
        }
    }

    /// Forgets the session side of an open client (index, counts) once it stops being open.
    fn leave_session(&mut self, key: usize) {
        self.subs.forget(key);
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.session.take().is_some() {
            self.open_clients -= 1;
            let ip = c.ip;
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                    if sparse(self.per_ip.len(), self.per_ip.capacity()) {
                        self.per_ip
                            .shrink_to((self.per_ip.len() * 2).max(KEEP_CAPACITY));
                    }
                }
            }
            log::info!(
                "[WORKER] WebSocket client disconnected. Total: {}",
                self.open_clients
            );
        }
    }

    /// Drops a connection now.
    pub(super) fn remove_client(&mut self, key: usize) {
        if !self.clients.contains(key) {
            return;
        }
        self.leave_session(key);
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
        let interval = self.config.limits.ping_interval;
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if let Some(deadline) = c.deadline
            && now >= deadline
        {
            match c.state {
                ClientState::Open { .. } => {
                    self.metrics.inc(&self.metrics.auth_failures);
                    return self.close_client(key, 1008, "authentication required", now);
                }
                _ => return self.remove_client(key),
            }
        }
        if c.is_open() {
            match c.ping_sent {
                Some(sent) if now >= sent + interval => {
                    log::debug!("[WORKER] Client {key} did not answer pings; closing");
                    return self.remove_client(key);
                }
                None if now >= c.last_rx + interval + timers::spread(key, interval) => {
                    c.send_ping(now);
                    self.mark_dirty(key);
                }
                _ => {}
            }
        }
        self.reschedule(key);
    }

    /// Schedules the client's next timer: its deadline or its next idle check.
    pub(super) fn reschedule(&mut self, key: usize) {
        let interval = self.config.limits.ping_interval;
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let idle = match (c.is_open(), c.ping_sent) {
            (true, Some(sent)) => Some(sent + interval),
            (true, None) => Some(c.last_rx + interval + timers::spread(key, interval)),
            _ => None,
        };
        let at = match (c.deadline, idle) {
            (Some(d), Some(i)) => d.min(i),
            (d, i) => match d.or(i) {
                Some(at) => at,
                None => return,
            },
        };
        let id = self.gens.id(key);
        self.timers.schedule(at, TimerOwner::Client(id));
    }

    /// Writes every dirty client's queued frames (one vectored write each) and fixes interest.
    pub(super) fn flush_dirty(&mut self, now: Instant) {
        // Commits what the turn staged (see `commit`): nothing may be staged while replays
        // refill below.
        self.commit_fanout(now);
        let mut dirty = std::mem::take(&mut self.dirty);
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
        if self.dirty.is_empty() {
            self.dirty = dirty; // keep the allocation for the next turn
        }
    }
}
