//! cryptoworker: Bitcart coin daemon events in, one clean stream out.
//!
//! (Architecture overview: see README.md "Architecture"; filled in as modules land.)

pub mod config;
pub mod event;
pub mod db;
pub mod ws;
pub mod reactor;
pub mod server;
pub mod daemon;
pub mod util;
pub mod client;
pub mod fanout;
pub mod pipeline;
pub mod http;
pub mod cli;
pub mod auth;
pub mod metrics;
pub mod worker;
pub mod logging;
pub mod client_cli;
pub mod check;
pub mod simulate;
pub mod demo;
