//! The daemon side: decoding daemon pushes, the event-stream link state machine, the JSON-RPC
//! pool, enrichment in order, and catch-up after every (re)connect.

pub mod catchup;
pub mod decode;
pub mod enrich;
pub mod link;
pub mod rpc;
