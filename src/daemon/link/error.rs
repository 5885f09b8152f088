//! Why a daemon link went down. Every variant ends the attempt (the link backs off and
//! reconnects); the variants let a caller tell configuration problems (refused authentication,
//! not a daemon) from network trouble, and their `Display` is the reason the logs show.

use crate::http::HttpError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use tungstenite::protocol::CloseFrame;

/// Why a link attempt failed or an open link closed.
#[derive(Debug)]
pub enum LinkError {
    /// Resolve, connect and upgrade took longer than allowed.
    ConnectTimeout,
    /// Nothing (not even a pong) came for `secs` seconds.
    Silent { secs: u64 },
    /// Writing a ping failed.
    Ping(tungstenite::Error),
    /// The host name did not resolve.
    Resolve { host: String, error: io::Error },
    /// The non-blocking connect could not start.
    Connect { addr: SocketAddr, error: io::Error },
    /// A socket error during connect or upgrade.
    Io(io::Error),
    /// The daemon closed the TCP connection before the upgrade finished (`eof`: it closed the
    /// read side; otherwise a write returned 0).
    ClosedDuringUpgrade { eof: bool },
    /// The upgrade answer was larger than the link accepts.
    UpgradeTooLarge,
    /// The upgrade answer was not valid HTTP.
    BadUpgrade(HttpError),
    /// The daemon refused the credentials (JSON-RPC error -32600).
    AuthRefused { coin: String, message: String },
    /// The daemon refused the upgrade with a JSON-RPC error.
    Refused {
        status: u16,
        code: i64,
        message: String,
    },
    /// Something answered, but not as a Bitcart daemon would.
    NotADaemon { coin: String, status: u16 },
    /// The open stream ended with a close frame (`worker_closed`: answering the worker's own).
    Closed {
        worker_closed: bool,
        frame: Option<CloseFrame>,
    },
    /// The WebSocket layer failed on an open stream.
    WebSocket(tungstenite::Error),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::ConnectTimeout => f.write_str("connect timed out"),
            LinkError::Silent { secs } => write!(f, "silent for {secs}s (half-open link)"),
            LinkError::Ping(e) => write!(f, "ping failed: {e}"),
            LinkError::Resolve { host, error } => write!(f, "cannot resolve {host}: {error}"),
            LinkError::Connect { addr, error } => write!(f, "connect to {addr}: {error}"),
            LinkError::Io(e) => write!(f, "{e}"),
            LinkError::ClosedDuringUpgrade { eof: false } => {
                f.write_str("connection closed during upgrade")
            }
            LinkError::ClosedDuringUpgrade { eof: true } => {
                f.write_str("daemon closed the connection during upgrade")
            }
            LinkError::UpgradeTooLarge => f.write_str("upgrade answer too large"),
            LinkError::BadUpgrade(e) => write!(f, "bad upgrade answer: {e:?}"),
            LinkError::AuthRefused { coin, message } => write!(
                f,
                "authentication refused ({message}); check {coin}_LOGIN and {coin}_PASSWORD"
            ),
            LinkError::Refused {
                status,
                code,
                message,
            } => write!(f, "upgrade refused with HTTP {status}: {message} ({code})"),
            LinkError::NotADaemon { coin, status } => write!(
                f,
                "upgrade refused with HTTP {status}; check {coin}_HOST/{coin}_PORT point at a \
                 Bitcart daemon"
            ),
            LinkError::Closed {
                worker_closed,
                frame,
            } => write_close(f, *worker_closed, frame.as_ref()),
            LinkError::WebSocket(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LinkError {}

/// When the worker is closing, the daemon's close frame answers the worker's own close (sent by
/// `DaemonLink::close`): the worker closed the link, not the daemon.
fn write_close(
    f: &mut fmt::Formatter<'_>,
    worker_closed: bool,
    frame: Option<&CloseFrame>,
) -> fmt::Result {
    let code = match frame {
        Some(c) if c.reason.is_empty() => u16::from(c.code).to_string(),
        Some(c) => format!("{} {}", u16::from(c.code), c.reason),
        None => "no close code".into(),
    };
    if worker_closed {
        write!(f, "closed by the worker; the daemon answered {code}")
    } else {
        write!(f, "daemon closed the stream ({code})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::CloseCode;

    #[test]
    fn messages_name_the_cause() {
        let frame = |reason: &str| {
            Some(CloseFrame {
                code: CloseCode::Away,
                reason: reason.to_owned().into(),
            })
        };
        let cases: &[(LinkError, &str)] = &[
            (LinkError::ConnectTimeout, "connect timed out"),
            (
                LinkError::Silent { secs: 90 },
                "silent for 90s (half-open link)",
            ),
            (
                LinkError::AuthRefused {
                    coin: "BTC".into(),
                    message: "Unauthorized".into(),
                },
                "authentication refused (Unauthorized); check BTC_LOGIN and BTC_PASSWORD",
            ),
            (
                LinkError::NotADaemon {
                    coin: "LTC".into(),
                    status: 404,
                },
                "upgrade refused with HTTP 404; check LTC_HOST/LTC_PORT point at a Bitcart daemon",
            ),
            (
                LinkError::Closed {
                    worker_closed: false,
                    frame: None,
                },
                "daemon closed the stream (no close code)",
            ),
            (
                LinkError::Closed {
                    worker_closed: false,
                    frame: frame("bye"),
                },
                "daemon closed the stream (1001 bye)",
            ),
            (
                LinkError::Closed {
                    worker_closed: true,
                    frame: frame(""),
                },
                "closed by the worker; the daemon answered 1001",
            ),
            (
                LinkError::ClosedDuringUpgrade { eof: true },
                "daemon closed the connection during upgrade",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), *text);
        }
    }
}
