//! Why one JSON-RPC connection failed. The pool drops the connection either way; the variants
//! let it (and a reader of the logs) tell a daemon that hung up from one that answered badly.

use crate::http::HttpError;
use std::fmt;
use std::io;

/// A failure of the connection carrying a call, before a JSON-RPC answer was decoded.
#[derive(Debug)]
pub(super) enum TransportError {
    /// A write returned 0: the peer is gone.
    Closed,
    /// A socket error.
    Io(io::Error),
    /// More bytes than any answer may have.
    TooLarge,
    /// The bytes are not an HTTP answer.
    BadHttp(HttpError),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Closed => f.write_str("connection closed"),
            TransportError::Io(e) => write!(f, "{e}"),
            TransportError::TooLarge => f.write_str("answer too large"),
            TransportError::BadHttp(e) => write!(f, "bad HTTP answer: {e:?}"),
        }
    }
}

impl std::error::Error for TransportError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_ones_the_logs_show() {
        let cases = [
            (TransportError::Closed, "connection closed"),
            (TransportError::TooLarge, "answer too large"),
            (TransportError::Io(io::Error::other("boom")), "boom"),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
