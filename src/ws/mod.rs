//! WebSocket plumbing: frame encoding for shared broadcast bytes.

pub mod frame;
