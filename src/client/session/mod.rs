//! One client's WebSocket session, sans-io: authentication, rate limiting, the subscription's
//! replay cursor (resume with `since`/`epoch`), idle pings and the auth deadline.
//!
//! The reactor feeds it what happened — a message ([`Session::on_message`]), a timer
//! ([`Session::on_tick`]), an event-log answer ([`Session::on_event_log`]), room in the outbound
//! queue ([`Session::refill`]) — with `now` and a read-only [`Context`] (configured keys and
//! coins, the released stream, the filter installed for this client), and carries out the
//! [`Action`]s it returns: replies, filter changes, event-log reads, pings, closes. The session
//! lives inside `ClientState::Open`, so none of this state exists for a connection that is not
//! an open session.
//!
//! Invariants:
//! - the `seq` of a `subscribed` reply is the last *released* seq ([`StreamView::last_seq`]):
//!   events still waiting for durability have higher seqs and reach the client live or from the
//!   ring, never twice;
//! - while the session replays ([`Session::takes_live`] is false) the live fan-out skips it; every
//!   event it should get is in its backlog or in the ring at its cursor or later, so the switch
//!   to live delivery has no gap and no duplicate (see `replay.rs`);
//! - a [`Action::Close`] or [`Action::Drop`] is always the last action returned.

mod replay;
#[cfg(test)]
mod tests;

use crate::client::filter::Filter;
use crate::client::ratelimit::{RateDecision, RateGuard};
use crate::client::reply;
use crate::client::request::{self, ErrorCode, Request, RequestError, SubscribeRequest};
use crate::fanout::ring::Ring;
use crate::server::ws::Incoming;
use replay::Replay;
use serde_json::Value;
use std::time::{Duration, Instant};

pub use replay::Sink;

/// What the session asks the reactor to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Queue this text message.
    Reply(String),
    /// Answer `get_status` (the reactor holds the data), echoing this id.
    ReplyStatus(Option<Value>),
    /// Install this filter for the client, replacing any previous one.
    SetFilter(Filter),
    /// Remove the client's filter (it gets no live events).
    ClearFilter,
    /// Read `(after, up_to]` from the event log and hand the answer to
    /// [`Session::on_event_log`] with this ticket.
    QueryEventLog { ticket: u32, after: u64, up_to: u64 },
    /// The session has events to queue: flush (and refill) the client.
    Flush,
    /// Queue a WebSocket ping.
    Ping,
    /// Close the session with this WebSocket code.
    Close { code: u16, reason: &'static str },
    /// Drop the connection without a close frame.
    Drop { reason: &'static str },
    /// Count this in the metrics.
    Count(Tally),
}

/// Session outcomes the metrics count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// A message refused by the rate limiter (`rate_limited`).
    RateLimited,
    /// A session closed with 4029.
    RateLimitClose,
    /// A bad token, or none in time (1008).
    AuthFailure,
    /// A replaying client that fell too far behind (4008).
    SlowConsumer,
}

/// The session settings (from the client limits).
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Messages per second (`WORKER_RATE_LIMIT`).
    pub rate_limit: f64,
    /// Burst of messages (`WORKER_RATE_BURST`).
    pub rate_burst: f64,
    /// Idle time before a ping, and time a ping may stay unanswered.
    pub ping_interval: Duration,
    /// Time to authenticate when the upgrade carried no key.
    pub auth_timeout: Duration,
}

impl From<&crate::config::Limits> for SessionLimits {
    fn from(l: &crate::config::Limits) -> SessionLimits {
        SessionLimits {
            rate_limit: l.rate_limit,
            rate_burst: l.rate_burst,
            ping_interval: l.ping_interval,
            auth_timeout: l.auth_timeout,
        }
    }
}

/// The released event stream, as a session may see it.
#[derive(Debug, Clone, Copy)]
pub struct StreamView<'a> {
    /// The current epoch.
    pub epoch: &'a str,
    /// The last seq released to clients (events in the durability gate are not counted).
    pub last_seq: u64,
    /// Released events kept for resume.
    pub ring: &'a Ring,
    /// Whether an event log (the database) can serve what the ring no longer holds.
    pub event_log: bool,
}

/// What the session reads from the reactor when it handles something.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `WORKER_API_KEYS` (empty: no authentication).
    pub api_keys: &'a [String],
    /// The coins this worker serves.
    pub known_coins: &'a [String],
    /// The released stream.
    pub stream: StreamView<'a>,
    /// The filter installed for this client, if any.
    pub filter: Option<&'a Filter>,
}

/// The actions of one step.
pub type Actions = Vec<Action>;

/// One open client session.
#[derive(Debug)]
pub struct Session {
    /// Authenticated (true from the start when no keys are set or the upgrade had a key).
    authed: bool,
    /// Must be authenticated by then (only while not authenticated).
    auth_deadline: Option<Instant>,
    /// Message budget and strikes (close 4029).
    rate: RateGuard,
    /// Last time anything arrived (idle pings).
    last_rx: Instant,
    /// A ping is outstanding since then.
    ping_sent: Option<Instant>,
    /// This connection's offset for idle pings (connections accepted together do not ping
    /// together).
    ping_offset: Duration,
    limits: SessionLimits,
    /// Set while the client catches up after a resume (the fan-out skips it meanwhile).
    replay: Option<Box<Replay>>,
    /// Distinguishes this session's event-log reads (a new subscribe makes older answers moot).
    next_ticket: u32,
}

impl Session {
    /// A session opened at `now`; `authed` says whether the upgrade already authenticated it.
    pub fn new(limits: SessionLimits, authed: bool, ping_offset: Duration, now: Instant) -> Self {
        Session {
            authed,
            auth_deadline: (!authed).then(|| now + limits.auth_timeout),
            rate: RateGuard::new(limits.rate_limit, limits.rate_burst),
            last_rx: now,
            ping_sent: None,
            ping_offset,
            limits,
            replay: None,
            next_ticket: 0,
        }
    }

    /// Whether the client is authenticated.
    pub fn is_authed(&self) -> bool {
        self.authed
    }

    /// Whether live events go to this client now (false while it replays).
    pub fn takes_live(&self) -> bool {
        self.replay.is_none()
    }

    /// Anything arrived from the client (a message, a pong): it is alive.
    pub fn heard(&mut self, now: Instant) {
        self.last_rx = now;
        self.ping_sent = None;
    }

    /// When [`Session::on_tick`] has something to decide next.
    pub fn next_wake(&self) -> Instant {
        let idle = match self.ping_sent {
            Some(sent) => sent + self.limits.ping_interval,
            None => self.last_rx + self.limits.ping_interval + self.ping_offset,
        };
        self.auth_deadline.map_or(idle, |d| d.min(idle))
    }

    /// A timer fired: the auth deadline, an unanswered ping, or time for an idle ping.
    pub fn on_tick(&mut self, now: Instant) -> Actions {
        if self.auth_deadline.is_some_and(|d| now >= d) {
            let close = Action::Close {
                code: 1008,
                reason: "authentication required",
            };
            return vec![Action::Count(Tally::AuthFailure), close];
        }
        let interval = self.limits.ping_interval;
        match self.ping_sent {
            Some(sent) if now >= sent + interval => vec![Action::Drop {
                reason: "did not answer pings",
            }],
            None if now >= self.last_rx + interval + self.ping_offset => {
                self.ping_sent = Some(now);
                vec![Action::Ping]
            }
            _ => Vec::new(),
        }
    }

    /// A message from the client (after [`Session::heard`]).
    pub fn on_message(&mut self, msg: Incoming, now: Instant, ctx: &Context<'_>) -> Actions {
        let text = match msg {
            Incoming::Text(t) => t,
            Incoming::Binary => {
                let e = RequestError::new(
                    ErrorCode::InvalidMessage,
                    "binary frames are not part of the protocol; send JSON text",
                );
                return vec![Action::Reply(reply::error(&e))];
            }
            Incoming::Pong | Incoming::Closed => return Vec::new(),
        };
        match self.rate.check(now) {
            RateDecision::Allow => {}
            RateDecision::Reject => {
                let id = request::peek_id(&text);
                let text = reply::error_code(
                    id.as_ref(),
                    ErrorCode::RateLimited,
                    "too many messages; slow down",
                );
                return vec![Action::Count(Tally::RateLimited), Action::Reply(text)];
            }
            RateDecision::Close => {
                let close = Action::Close {
                    code: 4029,
                    reason: "rate limit exceeded",
                };
                return vec![Action::Count(Tally::RateLimitClose), close];
            }
        }
        match request::parse(&text) {
            Ok(env) => self.on_request(env.id, env.request, ctx),
            Err(e) => vec![Action::Reply(reply::error(&e))],
        }
    }

    fn on_request(&mut self, id: Option<Value>, req: Request, ctx: &Context<'_>) -> Actions {
        let id = id.as_ref();
        match req {
            Request::Auth(token) => self.authenticate(id, &token, ctx.api_keys),
            _ if !self.authed => vec![Action::Reply(reply::error_code(
                id,
                ErrorCode::Unauthorized,
                "authenticate first: send {\"type\":\"auth\",\"token\":\"...\"}",
            ))],
            Request::Ping => vec![Action::Reply(reply::pong(id))],
            Request::GetStatus => vec![Action::ReplyStatus(id.cloned())],
            Request::Subscribe(req) => self.subscribe(id, req, ctx),
            Request::Unsubscribe(events) => unsubscribe(id, events.as_deref(), ctx.filter),
        }
    }

    fn authenticate(&mut self, id: Option<&Value>, token: &str, keys: &[String]) -> Actions {
        if keys.is_empty() || crate::auth::key_matches(keys, token) {
            self.authed = true;
            self.auth_deadline = None;
            return vec![Action::Reply(reply::authenticated(id))];
        }
        vec![
            Action::Count(Tally::AuthFailure),
            Action::Reply(reply::error_code(
                id,
                ErrorCode::Unauthorized,
                "invalid token",
            )),
            Action::Close {
                code: 1008,
                reason: "invalid token",
            },
        ]
    }

    /// `subscribe`: validate the filter, decide the resume, install the filter.
    fn subscribe(
        &mut self,
        id: Option<&Value>,
        req: SubscribeRequest,
        ctx: &Context<'_>,
    ) -> Actions {
        let filter = match Filter::from_request(&req, ctx.known_coins) {
            Ok(f) => f,
            Err(e) => return vec![Action::Reply(reply::error(&e.with_id(id.cloned())))],
        };
        self.replay = None; // a new subscribe replaces a resume in progress
        let s = &ctx.stream;
        let resumed = match req.since {
            None => None,
            Some(since) => match resume_source(since, req.epoch.as_deref(), s) {
                Source::Ring => Some(true),
                Source::EventLog => return self.resume_from_log(id, filter, since, s),
                Source::None => Some(false),
            },
        };
        let text = reply::subscribed(id, &filter, s.epoch, s.last_seq, resumed);
        let mut actions = vec![Action::Reply(text), Action::SetFilter(filter)];
        if let (Some(true), Some(since)) = (resumed, req.since) {
            self.replay = Some(Box::new(Replay::from_ring(since + 1)));
            actions.push(Action::Flush);
        }
        actions
    }
}

/// Where a resume after `since` can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The ring holds every event after `since`.
    Ring,
    /// The event log must supply what precedes the ring.
    EventLog,
    /// Not resumable: another epoch, a seq beyond the last, or no longer held.
    None,
}

fn resume_source(since: u64, epoch: Option<&str>, s: &StreamView<'_>) -> Source {
    if epoch.is_some_and(|e| e != s.epoch) || since > s.last_seq {
        Source::None
    } else if s.ring.since(since).is_ok() {
        Source::Ring
    } else if s.log_can_serve(since) {
        Source::EventLog
    } else {
        Source::None
    }
}

impl StreamView<'_> {
    /// Whether the event log should serve a resume after `since` (it has one and the gap
    /// before the ring fits in one read).
    pub fn log_can_serve(&self, since: u64) -> bool {
        let gap = match self.ring.first_seq() {
            Some(first) => first.saturating_sub(since + 1),
            None => self.last_seq.saturating_sub(since),
        };
        self.event_log && gap <= crate::db::MAX_QUERY_ROWS
    }
}

/// `unsubscribe`: narrow (or remove) the installed filter.
fn unsubscribe(id: Option<&Value>, events: Option<&[String]>, current: Option<&Filter>) -> Actions {
    let Some(current) = current else {
        return vec![Action::Reply(reply::unsubscribed(id, &[]))];
    };
    let mut filter = current.clone();
    let result = filter.unsubscribe(events);
    let still = filter.events();
    let install = if filter.is_empty() {
        Action::ClearFilter
    } else {
        Action::SetFilter(filter)
    };
    let text = match result {
        Ok(()) => reply::unsubscribed(id, &still),
        Err(e) => reply::error(&e.with_id(id.cloned())),
    };
    vec![install, Action::Reply(text)]
}
