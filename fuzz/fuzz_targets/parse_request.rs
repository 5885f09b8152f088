//! Fuzz `http::parse_request` and everything a reactor then asks of the parsed head.
//! The first byte picks the head limit; the rest is the request bytes.
#![no_main]

use cryptoworker::http::{parse_request, websocket_accept};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, buf)) = data.split_first() else {
        return;
    };
    let max_head = 64 + usize::from(first) * 64;
    if let Ok(Some(head)) = parse_request(buf, max_head) {
        assert!(head.head_len <= buf.len().min(max_head));
        let _ = head.is_websocket_upgrade();
        let _ = head.query_param("token");
        let _ = head.bearer_token();
        let _ = head.content_length();
        let _ = websocket_accept(&head);
        // Stateless parsing: every shorter prefix must not yield a different head.
        let shorter = &buf[..head.head_len - 1];
        assert!(!matches!(parse_request(shorter, max_head), Ok(Some(_))));
    }
});
