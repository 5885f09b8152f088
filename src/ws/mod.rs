//! WebSocket plumbing at the bottom of the stack: frame encoding for shared broadcast bytes. The
//! tungstenite-backed reader for client connections is `crate::server::ws`.

pub mod frame;
