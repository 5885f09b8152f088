//! API key checks for clients (docs/protocol.md, "Authentication"): constant-time comparison; keys
//! are never logged.

use crate::http::constant_time_eq;

/// Whether `offered` equals one of `keys`, in time independent of where they differ.
pub fn key_matches(keys: &[String], offered: &str) -> bool {
    let mut found = false;
    for k in keys {
        found |= constant_time_eq(k.as_bytes(), offered.as_bytes());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exactly_one_of_the_keys() {
        let keys = vec!["alpha".to_string(), "beta".to_string()];
        assert!(key_matches(&keys, "beta"));
        assert!(!key_matches(&keys, "bet"));
        assert!(!key_matches(&keys, "betaa"));
        assert!(!key_matches(&keys, ""));
        assert!(!key_matches(&[], "x"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a\0", b"a"));
    }
}
