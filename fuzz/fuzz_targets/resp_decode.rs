//! Fuzz `cluster::resp::decode` (every Redis reply a cluster node reads) and what the stream
//! reader does with a reply: `cluster::stream::parse_entries`, then each entry as a frame.
//! Checks: the bytes used fit the input, the complete reply decodes the same from exactly those
//! bytes, and one byte fewer is never a complete reply.
#![no_main]

use cryptoworker::cluster::resp::decode;
use cryptoworker::cluster::stream::parse_entries;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((reply, used))) = decode(data) else {
        return;
    };
    assert!(used > 0 && used <= data.len());
    let again = decode(&data[..used]).expect("the same bytes decode again");
    assert_eq!(again, Some((reply.clone(), used)));
    assert!(
        !matches!(decode(&data[..used - 1]), Ok(Some(_))),
        "a strict prefix of a reply is not a complete reply"
    );
    if let Ok(entries) = parse_entries(&reply) {
        for entry in entries {
            let p = entry.to_published();
            assert!(!p.frame.is_empty());
        }
    }
});
