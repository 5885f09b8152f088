//! RESP2, the Redis wire protocol, sans-io: [`encode`] writes a command as an array of bulk
//! strings, [`decode`] parses one reply from the front of a byte buffer.
//!
//! Invariants: `decode` never panics and never allocates more than the input justifies (bulk and
//! array lengths are checked against [`MAX_BULK`] / [`MAX_ARRAY`] before anything is reserved,
//! nesting is capped at [`MAX_DEPTH`]); `Ok(None)` means "need more bytes" and consumes nothing,
//! so a caller appends what it reads and calls again.

use std::fmt;

/// Largest bulk string accepted (a stream entry is a few kilobytes; this is a sanity bound).
pub const MAX_BULK: usize = 64 * 1024 * 1024;
/// Largest array accepted (an `XREAD COUNT n` reply has `n` entries).
pub const MAX_ARRAY: usize = 1 << 20;
/// Deepest nesting accepted (`XREAD` replies nest four levels).
pub const MAX_DEPTH: usize = 8;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`: the server refused the command; the text is the whole message.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n` bulk string; `None` is the null bulk `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` is the null array `*-1` (e.g. `XREAD` that timed out).
    Array(Option<Vec<Reply>>),
}

/// The input is not RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis protocol error: {}", self.0)
    }
}

/// Appends `args` as one command (`*n` array of `$len` bulk strings) to `out`.
pub fn encode<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the start of `buf`: `Ok(Some((reply, bytes_used)))`, `Ok(None)` when
/// `buf` holds only part of a reply, or an error when it is not RESP2.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    decode_at(buf, 0, 0)
}

fn decode_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("replies nest too deeply".into()));
    }
    let Some((line, body)) = line_at(buf, at)? else {
        return Ok(None);
    };
    let Some((&kind, text)) = line.split_first() else {
        return Err(ProtocolError("empty line".into()));
    };
    let text = std::str::from_utf8(text).map_err(|_| ProtocolError("line is not UTF-8".into()))?;
    match kind {
        b'+' => Ok(Some((Reply::Simple(text.into()), body))),
        b'-' => Ok(Some((Reply::Error(text.into()), body))),
        b':' => Ok(Some((Reply::Int(integer(text)?), body))),
        b'$' => bulk(buf, body, length(text, MAX_BULK)?),
        b'*' => array(buf, body, length(text, MAX_ARRAY)?, depth),
        other => Err(ProtocolError(format!(
            "unknown reply type byte 0x{other:02x}"
        ))),
    }
}

/// The line starting at `at` (without CRLF) and the offset after its CRLF.
fn line_at(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = buf.get(at..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], at + end + 2))),
        None if rest.len() > 64 * 1024 => Err(ProtocolError("header line too long".into())),
        None => Ok(None),
    }
}

fn integer(text: &str) -> Result<i64, ProtocolError> {
    text.parse()
        .map_err(|_| ProtocolError(format!("bad integer {text:?}")))
}

/// A `$`/`*` length: `None` for `-1` (null), refused when negative otherwise or above `max`.
fn length(text: &str, max: usize) -> Result<Option<usize>, ProtocolError> {
    match integer(text)? {
        -1 => Ok(None),
        n if n < 0 => Err(ProtocolError(format!("negative length {n}"))),
        n if n as u64 > max as u64 => Err(ProtocolError(format!("length {n} above {max}"))),
        n => Ok(Some(n as usize)),
    }
}

fn bulk(
    buf: &[u8],
    body: usize,
    len: Option<usize>,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some(len) = len else {
        return Ok(Some((Reply::Bulk(None), body)));
    };
    let end = body + len;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ProtocolError("bulk string not followed by CRLF".into()));
    }
    Ok(Some((Reply::Bulk(Some(buf[body..end].to_vec())), end + 2)))
}

fn array(
    buf: &[u8],
    body: usize,
    len: Option<usize>,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some(len) = len else {
        return Ok(Some((Reply::Array(None), body)));
    };
    // Every element takes at least 3 bytes: never reserve more than the input could hold.
    let mut items = Vec::with_capacity(len.min(buf.len().saturating_sub(body) / 3));
    let mut at = body;
    for _ in 0..len {
        match decode_at(buf, at, depth + 1)? {
            Some((item, next)) => {
                items.push(item);
                at = next;
            }
            None => return Ok(None),
        }
    }
    Ok(Some((Reply::Array(Some(items)), at)))
}

impl Reply {
    /// The text of a bulk or simple string reply.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            Reply::Simple(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a non-null array reply.
    pub fn items(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode(&["SET", "k", ""], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn decodes_complete_replies() {
        let cases: &[(&[u8], Reply, usize)] = &[
            (b"+OK\r\n", Reply::Simple("OK".into()), 5),
            (b"-ERR no\r\nrest", Reply::Error("ERR no".into()), 9),
            (b":-42\r\n", Reply::Int(-42), 6),
            (b"$3\r\nabc\r\n", bulk("abc"), 9),
            (b"$0\r\n\r\n", bulk(""), 6),
            (b"$-1\r\n", Reply::Bulk(None), 5),
            (b"*-1\r\n", Reply::Array(None), 5),
            (b"*0\r\n", Reply::Array(Some(vec![])), 4),
            (
                b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
                Reply::Array(Some(vec![
                    bulk("a"),
                    Reply::Array(Some(vec![Reply::Int(1)])),
                ])),
                19,
            ),
            (b"$4\r\na\r\nb\r\n", bulk("a\r\nb"), 10),
        ];
        for (input, want, used) in cases {
            let got = decode(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got, Some((want.clone(), *used)), "{input:?}");
        }
    }

    #[test]
    fn every_strict_prefix_needs_more_bytes() {
        let full: &[u8] = b"*3\r\n$5\r\nhello\r\n:7\r\n*1\r\n+x\r\n";
        assert!(decode(full).unwrap().is_some());
        for cut in 0..full.len() {
            assert_eq!(decode(&full[..cut]), Ok(None), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn refuses_malformed_input() {
        let cases: &[&[u8]] = &[
            b"?x\r\n",
            b"\r\n",
            b":12a\r\n",
            b"$-2\r\n",
            b"$99999999999\r\n",
            b"*99999999999\r\n",
            b"$1\r\nab\r\n",
            b"+\xff\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ];
        for input in cases {
            assert!(decode(input).is_err(), "{input:?} must be refused");
        }
    }

    #[test]
    fn a_huge_declared_array_reserves_nothing_up_front() {
        // One million elements declared, three present: needs more bytes, no big allocation.
        assert_eq!(decode(b"*1000000\r\n:1\r\n:2\r\n:3\r\n"), Ok(None));
    }

    #[test]
    fn a_long_line_without_crlf_is_refused() {
        let mut input = b"+".to_vec();
        input.resize(70_000, b'a');
        assert!(decode(&input).is_err());
    }

    #[test]
    fn mutated_and_random_input_never_panics_and_never_overreads() {
        let seeds: &[&[u8]] = &[
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\ne\r\n$2\r\nep\r\n",
            b"-ERR The ID specified in XADD is equal or smaller\r\n",
        ];
        let alphabet = b"*$:+-\r\n0123456789-ab";
        let mut rng = crate::util::rng::Rng::seeded(7);
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(input.len() as u64 + 1) as usize;
                let byte = alphabet[rng.below(alphabet.len() as u64) as usize];
                match rng.below(3) {
                    0 if at < input.len() => input[at] = byte,
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.insert(at, byte),
                }
            }
            if let Ok(Some((_, used))) = decode(&input) {
                assert!(used <= input.len(), "{input:?}");
            }
        }
    }

    #[test]
    fn reply_accessors() {
        assert_eq!(bulk("x").text(), Some("x"));
        assert_eq!(Reply::Simple("OK".into()).text(), Some("OK"));
        assert_eq!(Reply::Int(1).text(), None);
        assert_eq!(Reply::Array(None).items(), None);
        assert_eq!(
            Reply::Array(Some(vec![Reply::Int(1)]))
                .items()
                .map(<[_]>::len),
            Some(1)
        );
    }
}
