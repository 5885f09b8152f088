//! Fuzz `client::request::parse` (every text message a WebSocket client sends) and the
//! subscription filter built from a `subscribe`, matched against an event.
#![no_main]

use cryptoworker::client::request::{Request, parse, peek_id};
use cryptoworker::event::Event;
use cryptoworker::client::filter::Filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = peek_id(text);
    let Ok(envelope) = parse(text) else {
        return;
    };
    if let Request::Subscribe(req) = envelope.request {
        let coins = vec!["BTC".to_string(), "ETH".to_string()];
        if let Ok(filter) = Filter::from_request(&req, &coins) {
            let ev = Event::new("BTC".into(), "new_transaction", Some("zpub".into()))
                .with("tx_hash", serde_json::json!("ab"));
            let _ = filter.matches(&ev.meta());
            let _ = filter.events();
        }
    }
});
