//! The daemon side: decoding daemon pushes, and the connection state machine per coin.

pub mod decode;
pub mod link;
