//! Fuzz what the worker does with a daemon's JSON-RPC answer body: `http::jsonrpc::decode_rpc_body`
//! (every answer goes through it), then each use of a `result`: a lookup's transaction details
//! (`enrich::Found::from_answer`, `enrich::fill`), a catch-up's `getinfo` (`on_getinfo`), a
//! payment request (`on_get_request`) and a wallet's `get_updates` list (`decode_updates`); and
//! the same bytes as the daemon's `/spec` answer (`ErrorSpec::parse`, its error-code names).
//! The first byte picks the protocol family; the rest is the body.
#![no_main]

use cryptoworker::config::Family;
use cryptoworker::daemon::catchup::{OpenRequest, on_get_request, on_getinfo};
use cryptoworker::daemon::decode::decode_updates;
use cryptoworker::daemon::enrich::{self, Found};
use cryptoworker::event::{Event, Published};
use cryptoworker::http::jsonrpc::{ErrorSpec, RpcError, RpcOutcome, decode_rpc_body};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let family = match first % 3 {
        0 => Family::Btc,
        1 => Family::Eth,
        _ => Family::Xmr,
    };
    if let Ok(spec) = ErrorSpec::parse(body) {
        let _ = spec.name(-32603);
        let _ = spec.version();
    }
    let answer = match decode_rpc_body(body) {
        Ok((_, RpcOutcome::Result(answer))) => answer,
        Ok((_, RpcOutcome::Error(e))) => return check_error(&e),
        Err(_) => return,
    };
    let coin: Arc<str> = "BTC".into();

    let found = Found::from_answer(&answer, family);
    let mut ev = Event::new(coin.clone(), "new_transaction", Some("wallet".into()));
    enrich::fill(&mut ev, &found);
    let p = Published::new("e".into(), 1, &ev, 0.0);
    assert!(serde_json::from_str::<serde_json::Value>(p.payload()).is_ok());

    let _ = on_getinfo(&coin, Some(800_000), &answer);

    let open = OpenRequest {
        wallet: "wallet".into(),
        status: 0,
        sent_amount: "0".into(),
    };
    let mut requests = HashMap::from([("r1".to_string(), open)]);
    let _ = on_get_request(&coin, &mut requests, "r1", Ok(answer.clone()));

    if let serde_json::Value::Array(updates) = answer {
        let _ = decode_updates(updates, Some("wallet"), &coin, family);
    }
});

/// An error answer: its text and the not-found test work on any code and message.
fn check_error(e: &RpcError) {
    let _ = e.to_string();
    let _ = ErrorSpec::fallback().is_request_not_found(e);
}
