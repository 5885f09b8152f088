//! Fuzz `daemon::decode::decode_frame` (every text frame a coin daemon pushes, and every
//! `get_updates` answer, goes through it) and what the worker then does with each event:
//! serialise it once, pick its lookup, apply an answer, de-duplicate it.
//! The first byte picks the protocol family; the rest is the frame text.
#![no_main]

use cryptoworker::config::Family;
use cryptoworker::daemon::{decode::decode_frame, enrich};
use cryptoworker::event::Published;
use cryptoworker::pipeline::Dedup;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let family = match first % 3 {
        0 => Family::Btc,
        1 => Family::Eth,
        _ => Family::Xmr,
    };
    let coin: Arc<str> = "BTC".into();
    let Ok(decoded) = decode_frame(text, &coin, family) else {
        return;
    };
    let mut dedup = Dedup::new(64);
    // The frame itself, as a lookup answer: arbitrary JSON must never panic `apply`.
    let answer: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    for mut ev in decoded.events {
        let _ = enrich::lookup_for(&ev, family);
        enrich::apply(&mut ev, family, &answer);
        let p = Published::new("e".into(), 1, &ev, 0.0);
        assert!(serde_json::from_str::<serde_json::Value>(p.payload()).is_ok());
        let seen = dedup.contains(&ev);
        assert_eq!(dedup.is_duplicate(&ev), seen);
    }
});
