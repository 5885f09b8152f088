//! Minimal client-side WebSocket codec (RFC 6455), sans-io: the HTTP upgrade request and its
//! answer, masked client frames, and parsing of the unmasked frames a server sends.
//!
//! Only what a subscriber needs: text, continuation, ping, pong and close frames. Every length is
//! checked before use ([`MAX_FRAME`]), so hostile input gets an error, never a panic or an
//! unbounded allocation. The load generator uses this instead of tungstenite so that one thread
//! can parse several hundred thousand frames per second straight from a shared read buffer.

/// Largest frame payload accepted from a server.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest HTTP upgrade answer accepted.
pub const MAX_HANDSHAKE: usize = 16 * 1024;

/// Frame opcodes used here.
pub const OP_CONT: u8 = 0;
/// Text frame.
pub const OP_TEXT: u8 = 1;
/// Binary frame.
pub const OP_BINARY: u8 = 2;
/// Close frame.
pub const OP_CLOSE: u8 = 8;
/// Ping frame.
pub const OP_PING: u8 = 9;
/// Pong frame.
pub const OP_PONG: u8 = 10;

/// Protocol errors from a server.
#[derive(Debug, PartialEq, Eq)]
pub enum WsError {
    /// The upgrade answer was not `101 Switching Protocols` (first line kept).
    Refused(String),
    /// The upgrade answer grew beyond [`MAX_HANDSHAKE`] without ending.
    HandshakeTooLarge,
    /// A frame longer than [`MAX_FRAME`].
    FrameTooLarge(u64),
    /// A masked server frame or reserved bits set.
    BadFrame,
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Refused(line) => write!(f, "upgrade refused: {line}"),
            WsError::HandshakeTooLarge => write!(f, "upgrade answer too large"),
            WsError::FrameTooLarge(n) => write!(f, "frame of {n} bytes is too large"),
            WsError::BadFrame => write!(f, "malformed frame"),
        }
    }
}

/// The HTTP/1.1 upgrade request for `path` on `host` (which includes the port).
pub fn upgrade_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Parses the upgrade answer at the start of `buf`: `Ok(None)` while incomplete, else the number
/// of bytes it took (frames may follow in the same buffer).
pub fn parse_upgrade(buf: &[u8]) -> Result<Option<usize>, WsError> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HANDSHAKE {
            return Err(WsError::HandshakeTooLarge);
        }
        return Ok(None);
    };
    let first = buf[..end].split(|&b| b == b'\r').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(first);
    let mut parts = line.split_whitespace();
    let _version = parts.next();
    if parts.next() != Some("101") {
        return Err(WsError::Refused(line.into_owned()));
    }
    Ok(Some(end + 4))
}

/// One masked client frame (FIN set) carrying `payload`.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | (opcode & 0x0f));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A parsed server frame borrowing its payload from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// FIN bit: last fragment of a message.
    pub fin: bool,
    /// Opcode (see the `OP_*` constants).
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: &'a [u8],
}

/// Parses one frame at the start of `buf`: `Ok(None)` while incomplete, else the frame and the
/// number of bytes it took.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 || b1 & 0x80 != 0 {
        return Err(WsError::BadFrame);
    }
    let (len, head) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            (u64::from_be_bytes(a), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > MAX_FRAME as u64 {
        return Err(WsError::FrameTooLarge(len));
    }
    let end = head + len as usize;
    let Some(payload) = buf.get(head..end) else {
        return Ok(None);
    };
    let frame = Frame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        payload,
    };
    Ok(Some((frame, end)))
}

/// Close code carried by a close frame's payload, if any.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 65535 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn upgrade_answer_is_recognised_and_sized() {
        let ans = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00";
        assert_eq!(parse_upgrade(&ans[..20]), Ok(None));
        assert_eq!(parse_upgrade(ans), Ok(Some(ans.len() - 2)));
        let refused = b"HTTP/1.1 429 Too Many Requests\r\n\r\n";
        assert!(matches!(parse_upgrade(refused), Err(WsError::Refused(l)) if l.contains("429")));
        assert_eq!(
            parse_upgrade(&vec![b'a'; MAX_HANDSHAKE + 1]),
            Err(WsError::HandshakeTooLarge)
        );
    }

    #[test]
    fn frames_of_every_length_form_round_trip() {
        for len in [0usize, 5, 125, 126, 300, 65535, 65536] {
            let payload = vec![b'x'; len];
            let bytes = server_frame(OP_TEXT, &payload);
            let (f, used) = parse_frame(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!((f.fin, f.opcode, f.payload.len()), (true, OP_TEXT, len));
            assert_eq!(parse_frame(&bytes[..bytes.len() - 1]).unwrap(), None);
        }
    }

    #[test]
    fn hostile_frames_are_errors() {
        assert_eq!(
            parse_frame(&[0x81, 0x85, 1, 2, 3, 4, 0]),
            Err(WsError::BadFrame)
        );
        assert_eq!(parse_frame(&[0xC1, 0x00]), Err(WsError::BadFrame));
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_frame(&huge), Err(WsError::FrameTooLarge(u64::MAX)));
    }

    #[test]
    fn client_frames_are_masked() {
        let f = client_frame(OP_TEXT, b"hello", [1, 2, 3, 4]);
        assert_eq!(&f[..2], &[0x81, 0x85]);
        let unmasked: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(unmasked, b"hello");
        assert_eq!(close_code(&[0x0f, 0xa8]), Some(4008));
        assert_eq!(close_code(&[]), None);
    }
}
