//! Server-side WebSocket frame encoding, done once per broadcast.
//!
//! Server frames are unmasked (RFC 6455 §5.1), so the bytes of a frame are identical for every
//! client: the fan-out encodes an event once and shares the bytes.

/// Encodes `payload` as one final, unmasked text frame.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    encode(0x1, payload)
}

/// Longest header of an unmasked server frame (2 bytes + an 8-byte length).
pub const MAX_HEADER: usize = 10;

/// The header of one final, unmasked frame with `opcode` and a payload of `len` bytes:
/// the buffer and how many of its bytes are used.
pub fn header(opcode: u8, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    h[0] = 0x80 | (opcode & 0x0f);
    let used = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, used)
}

/// Encodes one final, unmasked frame with the given opcode (`0x1` text, `0x8` close, `0x9` ping,
/// `0xA` pong).
pub fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let (h, used) = header(opcode, payload.len());
    let mut out = Vec::with_capacity(used + payload.len());
    out.extend_from_slice(&h[..used]);
    out.extend_from_slice(payload);
    out
}

/// Encodes a close frame with `code` and a short `reason` (truncated to fit 123 bytes).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(0x8, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_the_right_encoding() {
        assert_eq!(&text_frame(b"hi")[..2], &[0x81, 2]);
        let f = text_frame(&[b'a'; 300]);
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        assert_eq!(f.len(), 304);
        let f = text_frame(&vec![b'a'; 70_000]);
        assert_eq!(f[1], 127);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn close_frame_carries_code_and_reason() {
        let f = close_frame(4008, "slow consumer");
        assert_eq!(f[0], 0x88);
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), 4008);
        assert_eq!(&f[4..], b"slow consumer");
    }
}
