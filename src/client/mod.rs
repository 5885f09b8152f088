//! The client side (docs/protocol.md): sans-io cores the client connection state machine and the
//! reactor call.
//!
//! - [`request`]: one client text message -> a typed request or a typed error;
//! - [`filter`]: one connection's subscription, built from a `subscribe` request, and the
//!   matching rules the fan-out applies to every event;
//! - [`reply`]: the server's non-event messages, as JSON text;
//! - [`ratelimit`]: per-connection token bucket and the strike policy behind close 4029;
//! - [`admission`]: who may connect (door, per-address limit, key on the upgrade, client limit);
//! - [`session`]: one open session — authentication, rate limit, resume and replay, pings —
//!   turning messages, timers and event-log answers into actions for the reactor.
//!
//! None of these touch sockets or clocks beyond the `now` they are given (replies stamp the
//! current time); the reactor carries out what they decide.

pub mod admission;
pub mod filter;
pub mod ratelimit;
pub mod reply;
pub mod request;
pub mod session;
