//! The client-facing server's connection machinery: the outbound queue and the connection state
//! machine. Protocol cores (request parsing, filters) live in `client` and `fanout`.

pub mod conn;
pub mod outbox;
