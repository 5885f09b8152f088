//! Response heads and body framing (RFC 9112 §6): `Content-Length`, `chunked`, read-to-EOF.
//!
//! Invariants: every function here is stateless and re-entrant on a growing buffer; chunk data is
//! skipped by length, so a re-scan costs O(chunks), not O(bytes); the decoded body never exceeds
//! `max_body` and the chunk framing overhead never exceeds [`chunk_overhead_limit`], so the
//! caller's buffer stays bounded by the head limit + `max_body` + that overhead.

use super::{HttpError, MAX_HEADERS, tokens};
use httparse::Status;

/// Longest chunk-size line (hex digits plus extensions), CRLF excluded.
const MAX_CHUNK_LINE: usize = 1024;
/// Most bytes of trailer fields after the last chunk.
const MAX_TRAILERS: usize = 8 * 1024;

/// A parsed response status line and header block.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header fields, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Bytes of the head, blank line included.
    pub len: usize,
}

impl ResponseHead {
    /// Every value of header `name` (lower-case), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        header_values(&self.headers, name)
    }

    /// Whether any `name` header lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .flat_map(tokens)
            .any(|t| t.eq_ignore_ascii_case(token))
    }
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all (1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection.
    ToEof,
}

/// Every value of header `name` (already lower-case) in a lower-cased header list.
pub(crate) fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Copies `httparse` headers into owned pairs: names lower-cased, values trimmed, invalid UTF-8
/// replaced (header values may legally carry obs-text).
pub(crate) fn collect_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).trim().to_string();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect()
}

/// The `Content-Length` of a header list: `None` when absent; `Malformed` when not a decimal
/// number or when several values disagree (RFC 9112 §6.3 item 5).
pub(crate) fn content_length(headers: &[(String, String)]) -> Result<Option<u64>, HttpError> {
    let mut found: Option<u64> = None;
    for value in header_values(headers, "content-length") {
        for item in value.split(',').map(str::trim) {
            let n = parse_decimal(item)
                .ok_or_else(|| HttpError::malformed(format!("bad Content-Length {item:?}")))?;
            if found.is_some_and(|f| f != n) {
                return Err(HttpError::malformed("conflicting Content-Length values"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// A non-empty run of ASCII digits as a u64; `None` on anything else or on overflow.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a response head from the start of `buf`; `Ok(None)` until the blank line arrives,
/// `TooLarge` when none is found within `max_head` bytes.
pub(crate) fn parse_response_head(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<ResponseHead>, HttpError> {
    let window = &buf[..buf.len().min(max_head)];
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut storage);
    match response.parse(window)? {
        Status::Partial if buf.len() >= max_head => Err(HttpError::TooLarge),
        Status::Partial => Ok(None),
        Status::Complete(len) => {
            let status = response.code.unwrap_or(0);
            if !(100..=999).contains(&status) {
                return Err(HttpError::BadStatus(status));
            }
            Ok(Some(ResponseHead {
                status,
                minor: response.version.unwrap_or(1),
                headers: collect_headers(response.headers),
                len,
            }))
        }
    }
}

/// How the body of `head` is framed; `TooLarge` when a `Content-Length` exceeds `max_body`.
/// Only the `chunked` transfer-coding is supported (no compression is ever requested).
pub(crate) fn response_framing(head: &ResponseHead, max_body: usize) -> Result<Framing, HttpError> {
    if head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(Framing::Empty);
    }
    let mut codings = head.values("transfer-encoding").flat_map(tokens).peekable();
    if codings.peek().is_some() {
        let list: Vec<&str> = codings.collect();
        if list.len() == 1 && list[0].eq_ignore_ascii_case("chunked") {
            return Ok(Framing::Chunked);
        }
        return Err(HttpError::malformed(format!(
            "unsupported Transfer-Encoding {list:?}"
        )));
    }
    match content_length(&head.headers)? {
        Some(n) if n > max_body as u64 => Err(HttpError::TooLarge),
        Some(n) => Ok(Framing::Length(n as usize)),
        None => Ok(Framing::ToEof),
    }
}

/// Reads the body framed by `framing` from `rest` (the bytes after the head).
/// Returns the decoded body and how many bytes of `rest` it used; `Ok(None)` = need more.
/// For [`Framing::ToEof`] the body is complete only when `eof` is true.
pub(crate) fn read_body(
    rest: &[u8],
    framing: Framing,
    max_body: usize,
    eof: bool,
) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    match framing {
        Framing::Empty => Ok(Some((Vec::new(), 0))),
        Framing::Length(n) if rest.len() >= n => Ok(Some((rest[..n].to_vec(), n))),
        Framing::Length(_) => Ok(None),
        Framing::ToEof if rest.len() > max_body => Err(HttpError::TooLarge),
        Framing::ToEof if eof => Ok(Some((rest.to_vec(), rest.len()))),
        Framing::ToEof => Ok(None),
        Framing::Chunked => decode_chunked(rest, max_body),
    }
}

/// Most framing bytes (size lines, CRLFs, trailers) tolerated around `max_body` data bytes.
pub(crate) fn chunk_overhead_limit(max_body: usize) -> usize {
    (64 * 1024usize).saturating_add(max_body / 2)
}

/// Decodes a complete chunked body at the start of `buf`: `(body, bytes used)`, or `Ok(None)`.
pub(crate) fn decode_chunked(
    buf: &[u8],
    max_body: usize,
) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let Some((ranges, used)) = scan_chunks(buf, max_body)? else {
        return Ok(None);
    };
    let total = ranges.iter().map(|r| r.len()).sum();
    let mut body = Vec::with_capacity(total);
    for range in ranges {
        body.extend_from_slice(&buf[range]);
    }
    Ok(Some((body, used)))
}

/// The data ranges of a complete chunked body, and how many bytes its framing used.
type ChunkScan = (Vec<std::ops::Range<usize>>, usize);

/// Walks the chunk framing without copying: the data ranges and the total length, or `Ok(None)`.
fn scan_chunks(buf: &[u8], max_body: usize) -> Result<Option<ChunkScan>, HttpError> {
    let overhead_limit = chunk_overhead_limit(max_body);
    let mut ranges = Vec::new();
    let mut data_total = 0usize;
    let mut pos = 0usize;
    loop {
        if pos - data_total > overhead_limit {
            return Err(HttpError::TooLarge);
        }
        let Some((size, line_len)) = chunk_size_line(&buf[pos..])? else {
            return Ok(None);
        };
        pos += line_len;
        if size == 0 {
            return Ok(trailers_len(&buf[pos..])?.map(|n| (ranges, pos + n)));
        }
        data_total = data_total.checked_add(size).ok_or(HttpError::TooLarge)?;
        if data_total > max_body {
            return Err(HttpError::TooLarge);
        }
        let data_end = pos + size;
        let Some(crlf) = buf.get(data_end..data_end + 2) else {
            return Ok(None);
        };
        if crlf != b"\r\n" {
            return Err(HttpError::malformed("chunk data not followed by CRLF"));
        }
        ranges.push(pos..data_end);
        pos = data_end + 2;
    }
}

/// Parses `1*HEXDIG [ext] CRLF` at the start of `buf`: `(size, line length incl. CRLF)`.
fn chunk_size_line(buf: &[u8]) -> Result<Option<(usize, usize)>, HttpError> {
    let window = &buf[..buf.len().min(MAX_CHUNK_LINE + 2)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_CHUNK_LINE + 2 {
            return Err(HttpError::malformed("chunk size line too long"));
        }
        // A stray LF or control byte is an error now rather than after more bytes arrive.
        return match window.iter().position(|&b| is_ctl(b)) {
            Some(i) if window[i] != b'\r' || i + 1 < window.len() => {
                Err(HttpError::malformed("control byte in chunk size line"))
            }
            _ => Ok(None),
        };
    };
    let line = &window[..end];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::malformed("chunk size is not hexadecimal"));
    }
    let mut size = 0usize;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0) as usize;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or_else(|| HttpError::malformed("chunk size overflows"))?;
    }
    let ext = &line[digits..];
    let ext_start = ext.iter().position(|&b| b != b' ' && b != b'\t');
    if ext_start.is_some_and(|i| ext[i] != b';') {
        return Err(HttpError::malformed("bad chunk size or extension"));
    }
    if ext.iter().any(|&b| is_ctl(b)) {
        return Err(HttpError::malformed("control byte in chunk extension"));
    }
    Ok(Some((size, end + 2)))
}

/// Control bytes other than HTAB (CR and LF included).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Length of the trailer section (fields plus the final CRLF) at the start of `buf`.
fn trailers_len(buf: &[u8]) -> Result<Option<usize>, HttpError> {
    let window = &buf[..buf.len().min(MAX_TRAILERS)];
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(window, &mut storage)? {
        Status::Complete((n, _)) => Ok(Some(n)),
        Status::Partial if buf.len() >= MAX_TRAILERS => Err(HttpError::TooLarge),
        Status::Partial => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
        decode_chunked(buf, 1024)
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let wire =
            b"4;name=value\r\nWiki\r\nA ; x\r\npedia in c\r\n0\r\nExpires: never\r\n\r\nNEXT";
        let (body, used) = decode(wire).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia in c");
        assert_eq!(&wire[used..], b"NEXT");
    }

    #[test]
    fn chunk_sizes_are_hex_with_leading_zeros() {
        let wire = b"00010\r\n0123456789abcdef\r\n0\r\n\r\n";
        assert_eq!(decode(wire).unwrap().unwrap().0.len(), 16);
    }

    #[test]
    fn every_prefix_of_a_chunked_body_needs_more() {
        let wire = b"3\r\nabc\r\n1;e\r\nd\r\n0\r\nT: 1\r\n\r\n";
        for cut in 0..wire.len() {
            assert_eq!(decode(&wire[..cut]), Ok(None), "prefix {cut}");
        }
        assert_eq!(decode(wire).unwrap().unwrap().0, b"abcd");
    }

    #[test]
    fn bogus_chunk_sizes_are_malformed() {
        for wire in [
            &b"x\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"4 x\r\nabcd\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"4\nabcd",
            b"4\r\nabcdXY0\r\n\r\n",
        ] {
            assert!(
                matches!(
                    decode(wire),
                    Err(HttpError::Malformed(_)) | Err(HttpError::TooLarge)
                ),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn chunk_size_over_limit_fails_before_the_data_arrives() {
        assert_eq!(decode(b"401\r\n"), Err(HttpError::TooLarge));
        assert_eq!(decode(b"200\r\n"), Ok(None));
    }

    #[test]
    fn chunk_size_line_without_end_is_bounded() {
        let mut wire = b"1;".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE + 8));
        assert!(matches!(decode(&wire), Err(HttpError::Malformed(_))));
    }

    #[test]
    fn tiny_chunks_cannot_amplify_the_buffer() {
        let mut wire = Vec::new();
        for _ in 0..20_000 {
            wire.extend_from_slice(b"1;aaaaaaaaaaaaaaaaaaaaaaaaaa\r\nx\r\n");
        }
        assert_eq!(decode_chunked(&wire, 1 << 20), Err(HttpError::TooLarge));
    }

    #[test]
    fn content_length_rules() {
        let h = |v: &str| vec![("content-length".to_string(), v.to_string())];
        assert_eq!(content_length(&h("42")), Ok(Some(42)));
        assert_eq!(content_length(&h("42, 42")), Ok(Some(42)));
        assert!(content_length(&h("42, 43")).is_err());
        assert!(content_length(&h("+4")).is_err());
        assert!(content_length(&h("")).is_err());
        assert!(content_length(&h("99999999999999999999999")).is_err());
        assert_eq!(content_length(&[]), Ok(None));
    }
}
