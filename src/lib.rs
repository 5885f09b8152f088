//! cryptoworker: Bitcart coin daemon events in, one clean stream out.
//!
//! # Architecture
//!
//! One thread runs a single `mio::Poll` ([`reactor`]) over every socket: the event-stream link and
//! JSON-RPC pool of each coin daemon ([`daemon`]), the client listener and every client
//! connection ([`server`]). Each turn it handles all readiness events — daemon frames are decoded,
//! enriched in order, de-duplicated and sequenced ([`pipeline`]), serialised once
//! ([`event::Published`]) and queued to the clients the subscription index selects ([`fanout`]);
//! client messages are parsed and handed to the client's session, which decides the answer
//! ([`client::session`]) — then flushes each client with pending
//! output once, with one vectored write, then fires due timers.
//!
//! Nothing on the reactor blocks. Other threads: PostgreSQL writers fed by a bounded channel
//! ([`db`]), the handler thread ([`worker`]), short-lived DNS resolvers, and the signal thread of
//! the binary. They talk to the reactor through channels and a `mio::Waker`.
//!
//! Protocol logic is sans-io and unit-tested: [`http`] (upgrades, plain endpoints, daemon
//! answers), [`daemon::decode`], [`daemon::enrich`], [`daemon::catchup`], [`client::request`],
//! [`client::session`], [`client::admission`],
//! [`client::filter`], [`fanout::index`], [`server::outbox`]. [`simulate`] is the simulated
//! Bitcart daemon used by `demo`, the tests and the benchmarks.
//!
//! # Library API
//!
//! [`worker::WorkerHandle::start`] runs a worker from a [`config::Config`];
//! [`worker::WorkerHandle::add_event_handler`], `status`, `stop`; and the process-wide
//! [`worker::start_worker`], [`worker::stop_worker`], [`worker::get_worker`].

pub mod auth;
pub mod check;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod db;
pub mod event;
pub mod fanout;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod reactor;
pub mod server;
pub mod simulate;
pub mod util;
pub mod worker;
pub mod ws;
