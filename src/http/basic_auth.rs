//! Credentials on the wire: HTTP Basic auth for the daemons, WebSocket keys, and a
//! constant-time comparison for secrets.
//!
//! Invariants: nothing here logs or keeps a secret; [`constant_time_eq`] takes time that depends
//! only on the lengths of its inputs, never on where they differ.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `"Basic " + base64(login ":" password)`, the value of an `Authorization` header.
pub fn basic_auth(login: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{login}:{password}")))
}

/// Decodes an `Authorization: Basic` value into `(login, password)`, the way Bitcart daemons
/// do (split at the first `:`); `None` for another scheme, bad base64, invalid UTF-8 or no `:`.
pub fn parse_basic_auth(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (login, password) = text.split_once(':')?;
    Some((login.to_string(), password.to_string()))
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
pub fn websocket_key() -> String {
    tungstenite::handshake::client::generate_key()
}

/// Compares two secrets without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_matches_the_default_daemon_credentials() {
        // base64("electrum:electrumz")
        assert_eq!(
            basic_auth("electrum", "electrumz"),
            "Basic ZWxlY3RydW06ZWxlY3RydW16"
        );
    }

    #[test]
    fn basic_auth_round_trips_and_splits_at_the_first_colon() {
        let header = basic_auth("user", "pa:ss wörd");
        assert_eq!(
            parse_basic_auth(&header),
            Some(("user".to_string(), "pa:ss wörd".to_string()))
        );
        assert_eq!(parse_basic_auth("Bearer abc"), None);
        assert_eq!(parse_basic_auth("Basic !!!"), None);
        assert_eq!(parse_basic_auth("Basic bm9jb2xvbg=="), None); // "nocolon"
        assert_eq!(parse_basic_auth(""), None);
    }

    #[test]
    fn websocket_keys_are_16_random_bytes() {
        let a = websocket_key();
        let b = websocket_key();
        assert_eq!(STANDARD.decode(&a).unwrap().len(), 16);
        assert_ne!(a, b);
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
