//! Sans-io HTTP/1.1 for the reactor: bytes in, values out; nothing here touches a socket.
//!
//! * [`server`]: requests from the worker's own clients (`GET /health`, WebSocket upgrades, ...)
//!   and the responses the worker writes back.
//! * [`client`]: requests to Bitcart coin daemons (WebSocket upgrade, JSON-RPC `POST /`,
//!   `GET /spec`) and parsing of their responses, including chunked bodies.
//! * [`jsonrpc`]: the JSON-RPC envelope and the daemon's `/spec` error table.
//! * [`basic_auth`](mod@basic_auth): `Authorization: Basic`, WebSocket keys, constant-time comparison.
//!
//! Invariants shared by every parser here:
//! * Parsers are stateless: the caller keeps the bytes received so far in one buffer and calls
//!   again with the whole buffer after each read. `Ok(None)` means "need more bytes"; a returned
//!   length (`head_len`, `consumed`) says how many leading bytes belong to the parsed message, so
//!   pipelined data after it is left for the caller.
//! * Every parser is bounded: heads, bodies and chunk framing have explicit limits, and input
//!   beyond them is [`HttpError::TooLarge`] rather than a reason to keep buffering.
//! * Hostile or truncated input yields an [`HttpError`], never a panic (see the fuzz tests and
//!   the cargo-fuzz targets in `fuzz/`).
//! * At most [`MAX_HEADERS`] header lines per message; more is [`HttpError::TooLarge`]
//!   (answered with 431 on the server side).

pub mod basic_auth;
mod body;
pub mod client;
pub mod jsonrpc;
pub mod server;

#[cfg(test)]
mod fuzz_tests;

use std::fmt;

pub use basic_auth::{basic_auth, constant_time_eq, parse_basic_auth, websocket_key};
pub use client::{
    MAX_REFUSAL_BODY, MAX_RESPONSE_HEAD, Response, UpgradeOutcome, get_request, parse_response,
    parse_upgrade_response, rpc_request, websocket_request,
};
pub use jsonrpc::{ErrorSpec, RpcError, RpcOutcome, decode_rpc_body, rpc_body};
pub use server::{RequestHead, parse_request, response, websocket_accept};

/// Most header lines accepted in one message (the size of the `httparse` header array).
pub const MAX_HEADERS: usize = 64;

/// Why some bytes are not acceptable HTTP (or not an acceptable answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// A head, a body, the chunk framing or the header count passed its limit.
    TooLarge,
    /// The bytes are not valid HTTP (or not valid for this use); the text says what is wrong.
    Malformed(String),
    /// A status the caller cannot handle here (for example a `101` to a plain request).
    BadStatus(u16),
    /// A `101` whose `Sec-WebSocket-Accept` does not match the key we sent.
    BadAccept,
    /// A WebSocket upgrade asking for a protocol version other than 13 (answer 426).
    UnsupportedVersion,
}

impl HttpError {
    /// The status a server should answer a client whose request failed with this error.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::TooLarge => 431,
            HttpError::UnsupportedVersion => 426,
            HttpError::Malformed(_) | HttpError::BadStatus(_) | HttpError::BadAccept => 400,
        }
    }

    /// Shorthand for [`HttpError::Malformed`].
    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        HttpError::Malformed(what.into())
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::TooLarge => f.write_str("HTTP message too large"),
            HttpError::Malformed(what) => write!(f, "malformed HTTP: {what}"),
            HttpError::BadStatus(code) => write!(f, "unexpected HTTP status {code}"),
            HttpError::BadAccept => f.write_str("wrong Sec-WebSocket-Accept in the 101 answer"),
            HttpError::UnsupportedVersion => f.write_str("unsupported Sec-WebSocket-Version"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Maps an `httparse` failure to our error.
impl From<httparse::Error> for HttpError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => HttpError::TooLarge,
            other => HttpError::Malformed(other.to_string()),
        }
    }
}

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
pub(crate) fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// Removes CR, LF and NUL so a value can never split or end a header line.
pub(crate) fn header_safe(value: &str) -> String {
    value
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect()
}
