//! WebSocket plumbing: frame encoding for shared broadcast bytes, and the tungstenite-backed
//! reader for client connections.

pub mod frame;
pub mod server;
