//! API key checks for clients (SPEC §4 "Authentication"): constant-time comparison; keys are
//! never logged.

/// Whether `offered` equals one of `keys`, in time independent of where they differ.
pub fn key_matches(keys: &[String], offered: &str) -> bool {
    let mut found = false;
    for k in keys {
        found |= constant_time_eq(k.as_bytes(), offered.as_bytes());
    }
    found
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
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
