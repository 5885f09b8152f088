//! cryptoworker: Bitcart coin daemon events in, one clean stream out.
//!
//! # Architecture
//!
//! One thread runs a single `mio::Poll` ([`reactor`]) over every socket; it routes, and sans-io
//! cores decide. Each turn it handles every readiness event — daemon frames go to their coin's
//! core, client messages to their session — then commits what the turn released (one shared
//! batch per filter group), flushes each client once with one vectored write, and fires timers.
//! The code, by layer:
//!
//! | layer | modules |
//! |---|---|
//! | commands | [`cli`] (one grammar; exit codes only in `main`), [`config`], [`worker`] (library API), [`check`] |
//! | reactor | [`reactor`]: poll, slab, ids, timers, waker; owns the sockets, runs the cores' actions |
//! | cores (sans-io, table-tested) | [`daemon::core`], [`daemon::recovery`], [`client::session`], [`client::admission`], [`pipeline`], [`cluster::core`], [`cluster::node`] |
//! | codecs (sans-io, fuzzed) | [`http`], [`daemon::decode`], [`client::request`], [`ws`], [`cluster::resp`] |
//! | I/O machines | [`daemon::link`], [`daemon::rpc`], [`server`] (client connection, outbox) |
//! | fan-out | [`event`] (serialised once), [`fanout`] (index, groups, resume ring) |
//! | threads | [`db`] (writers, spool, durability, reader), [`cluster`] (elector, stream reader/appender) |
//! | foundation | [`util`] (backoff; the rng from `cryptoworker-base`), [`logging`], [`metrics`], [`auth`] |
//!
//! Two crates of the workspace sit beside this one: `cryptoworker-simulate` (`crates/simulate`),
//! the simulated Bitcart daemon that the `simulate` and `demo` commands run, and
//! `cryptoworker-base` (`crates/base`), the coin table and random generator both crates share.
//!
//! Nothing on the reactor blocks: other threads (PostgreSQL, Redis, handlers, DNS resolvers, the
//! signal thread) talk to it through bounded channels and a `mio::Waker`.
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
pub mod util;
pub mod worker;
pub mod ws;
