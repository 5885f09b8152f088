//! The daemon side: each coin's sans-io core (`core`: state and policy, fed events and returning
//! actions), decoding daemon pushes, the event-stream link state machine, the JSON-RPC
//! pool, enrichment in order (with a short-lived cache of lookups, `lookup`), and catch-up after
//! every (re)connect (rules in `catchup`, pacing and progress in `recovery`).

pub mod catchup;
pub mod core;
pub mod decode;
pub mod enrich;
pub mod link;
pub mod lookup;
pub mod recovery;
pub mod rpc;
