//! The only place that touches tungstenite for client connections: reading client frames.
//!
//! Outbound client traffic never goes through tungstenite: broadcast frames are pre-encoded and
//! queued in the connection's [`Outbox`]. To keep one writer per socket, tungstenite is driven
//! over an adapter whose `Write` side appends to that same outbox (its automatic pongs and close
//! replies are therefore queued in order with everything else), and whose `Read` side reads the
//! socket. tungstenite writes whole frames, and the adapter accepts every byte, so the outbox
//! only ever holds whole frames.

use super::outbox::Outbox;
use std::io::{self, Read, Write};
use tungstenite::Message;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

/// Bytes read from the socket per `read()` call; also the initial read buffer of a connection.
/// Small on purpose: idle memory per client matters more than read throughput here.
pub const READ_CHUNK: usize = 512;

/// What reading produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text message.
    Text(String),
    /// A binary message (not part of the protocol; answered with an error by the caller).
    Binary,
    /// The peer sent a pong (liveness).
    Pong,
    /// The peer started or completed the close handshake.
    Closed,
}

/// Why a connection cannot continue.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The peer sent a message over the configured size: close with 1009.
    TooBig,
    /// A WebSocket protocol violation or invalid UTF-8: close with 1002/1007.
    Protocol(String),
    /// The socket failed or reached EOF.
    Io(io::ErrorKind),
}

/// A client's WebSocket codec state (server role).
#[derive(Debug)]
pub struct ServerWs {
    ctx: WebSocketContext,
}

struct Adapter<'a, S> {
    sock: &'a mut S,
    out: &'a mut Outbox,
}

impl<S: Read> Read for Adapter<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read(buf)
    }
}

impl<S> Write for Adapter<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.push_bytes(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ServerWs {
    /// A codec for a freshly upgraded connection; `leftover` holds bytes read past the HTTP head.
    pub fn new(leftover: Vec<u8>, max_message: usize) -> ServerWs {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_CHUNK)
            .write_buffer_size(0)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        ServerWs {
            ctx: WebSocketContext::from_partially_read(leftover, Role::Server, Some(config)),
        }
    }

    /// Reads the next message. `Ok(None)` means the socket would block.
    pub fn read<S: Read>(
        &mut self,
        sock: &mut S,
        out: &mut Outbox,
    ) -> Result<Option<Incoming>, ReadError> {
        let mut adapter = Adapter { sock, out };
        loop {
            return match self.ctx.read(&mut adapter) {
                Ok(Message::Text(t)) => Ok(Some(Incoming::Text(t.as_str().to_owned()))),
                Ok(Message::Binary(_)) => Ok(Some(Incoming::Binary)),
                Ok(Message::Pong(_)) => Ok(Some(Incoming::Pong)),
                Ok(Message::Ping(_)) | Ok(Message::Frame(_)) => continue,
                Ok(Message::Close(_)) => Ok(Some(Incoming::Closed)),
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(WsError::Io(e)) => Err(ReadError::Io(e.kind())),
                Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => {
                    Ok(Some(Incoming::Closed))
                }
                Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                    Err(ReadError::TooBig)
                }
                Err(e) => Err(ReadError::Protocol(e.to_string())),
            };
        }
    }
}

/// Encodes a masked client frame, as a client sends it (tests of the server side).
#[cfg(test)]
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x80 | opcode];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A socket that yields its bytes in small pieces with `WouldBlock` in between.
    struct Trickle {
        data: Cursor<Vec<u8>>,
        piece: usize,
        block_next: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.block_next = !self.block_next;
            if self.block_next {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.piece);
            let got = self.data.read(&mut buf[..n])?;
            if got == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(got)
        }
    }

    fn read_all(ws: &mut ServerWs, sock: &mut Trickle, out: &mut Outbox) -> Vec<Incoming> {
        let mut got = Vec::new();
        for _ in 0..10_000 {
            match ws.read(sock, out) {
                Ok(Some(m)) => got.push(m),
                Ok(None) if sock.data.position() as usize == sock.data.get_ref().len() => break,
                Ok(None) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        got
    }

    #[test]
    fn messages_survive_trickled_input_and_pings_are_answered_via_the_outbox() {
        let mut bytes = client_frame(0x1, br#"{"type":"ping"}"#);
        bytes.extend(client_frame(0x9, b"hb"));
        bytes.extend(client_frame(0x1, &[b'x'; 300]));
        let mut sock = Trickle {
            data: Cursor::new(bytes),
            piece: 7,
            block_next: false,
        };
        let mut out = Outbox::default();
        let mut ws = ServerWs::new(Vec::new(), 65536);
        let got = read_all(&mut ws, &mut sock, &mut out);
        assert_eq!(
            got,
            vec![
                Incoming::Text(r#"{"type":"ping"}"#.into()),
                Incoming::Text("x".repeat(300))
            ]
        );
        // The automatic pong went to the outbox: 0x8A, len 2, "hb".
        let mut wire = Vec::new();
        out.write_to(&mut wire).unwrap();
        assert_eq!(wire, vec![0x8A, 2, b'h', b'b']);
    }

    #[test]
    fn leftover_bytes_from_the_handshake_are_read_first() {
        let mut ws = ServerWs::new(client_frame(0x1, b"hello"), 65536);
        let mut sock = Trickle {
            data: Cursor::new(Vec::new()),
            piece: 1,
            block_next: false,
        };
        let mut out = Outbox::default();
        assert_eq!(
            ws.read(&mut sock, &mut out),
            Ok(Some(Incoming::Text("hello".into())))
        );
    }

    #[test]
    fn oversized_messages_are_refused() {
        let mut ws = ServerWs::new(client_frame(0x1, &[b'a'; 200]), 100);
        let mut sock = Trickle {
            data: Cursor::new(Vec::new()),
            piece: 1,
            block_next: false,
        };
        let mut out = Outbox::default();
        assert_eq!(ws.read(&mut sock, &mut out), Err(ReadError::TooBig));
    }

    #[test]
    fn unmasked_client_frames_are_a_protocol_error() {
        let frame = crate::ws::frame::text_frame(b"hi");
        let mut ws = ServerWs::new(frame, 100);
        let mut sock = Trickle {
            data: Cursor::new(Vec::new()),
            piece: 1,
            block_next: false,
        };
        let mut out = Outbox::default();
        assert!(matches!(
            ws.read(&mut sock, &mut out),
            Err(ReadError::Protocol(_))
        ));
    }
}
