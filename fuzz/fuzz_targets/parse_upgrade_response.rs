//! Fuzz `http::parse_upgrade_response` with the RFC 6455 example key.
#![no_main]

use cryptoworker::http::{UpgradeOutcome, parse_upgrade_response};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(UpgradeOutcome::Switched { head_len })) = parse_upgrade_response(data, KEY) {
        assert!(head_len <= data.len());
    }
});
