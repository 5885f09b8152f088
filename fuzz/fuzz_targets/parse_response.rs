//! Fuzz `http::parse_response`. The first byte picks the body limit and `eof`; the rest is the
//! response bytes.
#![no_main]

use cryptoworker::http::parse_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, buf)) = data.split_first() else {
        return;
    };
    let max_body = usize::from(first & 0x7f) * 32;
    let eof = first & 0x80 != 0;
    match parse_response(buf, max_body, eof) {
        Ok(Some(response)) => {
            assert!(response.consumed <= buf.len());
            assert!(response.body.len() <= max_body);
            // Bytes after the response never change it.
            let mut longer = buf[..response.consumed].to_vec();
            longer.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            if let Ok(Some(again)) = parse_response(&longer, max_body, false) {
                assert_eq!(again.body, response.body);
            }
        }
        Ok(None) => assert!(!eof, "need-more with eof"),
        Err(_) => {}
    }
});
