//! The client side (docs/protocol.md): sans-io cores the client connection state machine calls.
//!
//! - [`request`]: one client text message -> a typed request or a typed error;
//! - [`filter`]: one connection's subscription, built from a `subscribe` request, and the
//!   matching rules the fan-out applies to every event;
//! - [`reply`]: the server's non-event messages, as JSON text;
//! - [`ratelimit`]: per-connection token bucket and the strike policy behind close 4029.
//!
//! None of these touch sockets or clocks beyond the `now` they are given (replies stamp the
//! current time); the connection decides what to send and when to close.

pub mod filter;
pub mod ratelimit;
pub mod reply;
pub mod request;
