//! The client-facing server's connection machinery: the outbound queue, the tungstenite-backed
//! frame reader and the connection state machine. Frame encoding lives one layer down in
//! `crate::ws`; protocol cores (request parsing, filters) live in `client` and `fanout`.

pub mod conn;
pub mod outbox;
pub mod ws;
