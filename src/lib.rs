//! cryptoworker: Bitcart coin daemon events in, one clean stream out.
//!
//! (Architecture overview: see README.md "Architecture"; filled in as modules land.)

pub mod config;
pub mod event;
pub mod ws;
