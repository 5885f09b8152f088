//! The cluster's event stream in Redis: [`append`] (fenced, see below), [`read`] (blocking
//! `XREAD` after an id), [`range`] (`XRANGE` after an id), [`first_seq`] / [`last_seq`] / [`top`] and
//! [`trimmed_past`] (the stream no longer holds what comes right after a position: fill from
//! the event log).
//!
//! Entry id = `<seq>-0`, fields `e` (epoch), `t` (timestamp, seconds with three decimals), `d`
//! (the event's `data` object as JSON text, exactly the event log's `payload`).
//!
//! Fencing (docs/cluster.md): [`append`] runs one Lua script per batch, atomically. It refuses the
//! whole batch when the leader key names another node ([`StreamError::Deposed`]), and stops at
//! the first entry whose id is not above the stream's top, which Redis itself refuses ("The ID
//! specified in XADD is equal or smaller than the target stream top item"):
//! [`StreamError::Fenced`]. A stale leader therefore never adds a seq that is already there, and
//! never adds anything once the new leader has claimed the leader key.

use super::redis::{Connection, RedisError};
use super::resp::Reply;
use crate::event::{EventMeta, Published, format_timestamp};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// One sequenced event as it travels through the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub epoch: Arc<str>,
    /// Unix seconds, millisecond precision.
    pub timestamp: f64,
    /// The `data` object as JSON text.
    pub payload: Box<str>,
}

impl Entry {
    /// The stream form of a sequenced event.
    pub fn from_published(p: &Published) -> Entry {
        Entry {
            seq: p.seq,
            epoch: p.epoch.clone(),
            timestamp: p.timestamp,
            payload: p.payload().into(),
        }
    }

    /// The event, framed for clients (the filter facts are read back from the payload, as for
    /// events replayed from the event log).
    pub fn to_published(&self) -> Published {
        let data = serde_json::from_str(&self.payload).unwrap_or_default();
        let meta = EventMeta::from_data(&data);
        Published::from_payload(
            self.epoch.clone(),
            self.seq,
            meta,
            &self.payload,
            self.timestamp,
        )
    }
}

/// The stream id of a seq.
pub fn entry_id(seq: u64) -> String {
    format!("{seq}-0")
}

/// Why an append or a read failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// Redis is unreachable or misbehaved (reconnect), or refused a command.
    Redis(RedisError),
    /// `appended` entries went in, then Redis refused seq `seq`: the stream already holds that
    /// seq or a later one, so another node is (or was) leading. Stop leading.
    Fenced { appended: usize, seq: u64 },
    /// The leader key names `leader`, not this node: nothing was appended. Stop leading.
    Deposed { leader: String },
    /// A reply did not have the shape the command promises.
    Malformed(String),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Redis(e) => write!(f, "{e}"),
            StreamError::Fenced { seq, .. } => write!(
                f,
                "Redis refused seq {seq}: the stream already holds it or a later one"
            ),
            StreamError::Deposed { leader } => write!(f, "node {leader} now leads the cluster"),
            StreamError::Malformed(what) => write!(f, "unexpected Redis reply: {what}"),
        }
    }
}

impl From<RedisError> for StreamError {
    fn from(e: RedisError) -> StreamError {
        StreamError::Redis(e)
    }
}

/// The fenced batch append; see the module doc.
const APPEND_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[2])
if cur and cur ~= ARGV[1] then return {-1, cur} end
if not cur then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3]) end
local n = 0
for i = 4, #ARGV, 4 do
  local r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[i],
                        'e', ARGV[i+1], 't', ARGV[i+2], 'd', ARGV[i+3])
  if type(r) == 'table' and r.err then return {n, r.err} end
  n = n + 1
end
return {n, ''}
"#;

/// Where one cluster keeps its state in Redis, and who is appending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The stream key.
    pub stream: &'a str,
    /// The leader key (see [`super::ClusterConfig::leader_key`]).
    pub leader_key: &'a str,
    /// This node's id.
    pub node: &'a str,
    /// `MAXLEN ~` of every append.
    pub maxlen: u64,
    /// TTL given to the leader key when the script claims it (it was absent).
    pub lease: Duration,
}

/// Appends `entries` (ascending seq) in one atomic, fenced batch; `Ok(n)` = all `n` went in.
pub fn append(conn: &mut Connection, t: &Target, entries: &[Entry]) -> Result<usize, StreamError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let mut args: Vec<Vec<u8>> = vec![
        b"EVAL".to_vec(),
        APPEND_SCRIPT.as_bytes().to_vec(),
        b"2".to_vec(),
        t.stream.as_bytes().to_vec(),
        t.leader_key.as_bytes().to_vec(),
        t.node.as_bytes().to_vec(),
        t.maxlen.to_string().into_bytes(),
        t.lease.as_millis().max(1).to_string().into_bytes(),
    ];
    for e in entries {
        args.push(entry_id(e.seq).into_bytes());
        args.push(e.epoch.as_bytes().to_vec());
        args.push(format_timestamp(e.timestamp).into_bytes());
        args.push(e.payload.as_bytes().to_vec());
    }
    let reply = conn.command(&args)?;
    let (n, message) = match reply.items() {
        Some([Reply::Int(n), m]) => (*n, m.text().unwrap_or_default().to_string()),
        _ => return Err(StreamError::Malformed(format!("append script: {reply:?}"))),
    };
    if n < 0 {
        return Err(StreamError::Deposed { leader: message });
    }
    let appended = n as usize;
    match entries.get(appended) {
        None => Ok(appended),
        Some(e) if message.contains("equal or smaller") => Err(StreamError::Fenced {
            appended,
            seq: e.seq,
        }),
        Some(_) => Err(StreamError::Redis(RedisError::Server(message))),
    }
}

/// Waits up to `block` for entries after `after`; at most `count`, ascending. Empty on timeout.
pub fn read(
    conn: &mut Connection,
    stream: &str,
    after: u64,
    count: usize,
    block: Duration,
) -> Result<Vec<Entry>, StreamError> {
    let block_ms = block.as_millis().max(1).to_string();
    let args = [
        "XREAD",
        "COUNT",
        &count.max(1).to_string(),
        "BLOCK",
        &block_ms,
        "STREAMS",
        stream,
        &entry_id(after),
    ];
    let reply = conn.command_timeout(&args, block + super::redis::IO_TIMEOUT)?;
    match &reply {
        Reply::Array(None) => Ok(Vec::new()),
        Reply::Array(Some(streams)) => match streams.first().and_then(Reply::items) {
            Some([_name, entries]) => parse_entries(entries),
            _ => Err(StreamError::Malformed(format!("XREAD: {reply:?}"))),
        },
        _ => Err(StreamError::Malformed(format!("XREAD: {reply:?}"))),
    }
}

/// Entries after `after` that the stream still holds, ascending, at most `count`.
pub fn range(
    conn: &mut Connection,
    stream: &str,
    after: u64,
    count: usize,
) -> Result<Vec<Entry>, StreamError> {
    let start = format!("({}", entry_id(after));
    let count = count.max(1).to_string();
    let reply = conn.command(&["XRANGE", stream, &start, "+", "COUNT", &count])?;
    parse_entries(&reply)
}

/// The lowest seq the stream holds (`None`: empty or missing).
pub fn first_seq(conn: &mut Connection, stream: &str) -> Result<Option<u64>, StreamError> {
    let reply = conn.command(&["XRANGE", stream, "-", "+", "COUNT", "1"])?;
    Ok(parse_entries(&reply)?.first().map(|e| e.seq))
}

/// The stream's last entry (`None`: empty or missing).
pub fn top(conn: &mut Connection, stream: &str) -> Result<Option<Entry>, StreamError> {
    let reply = conn.command(&["XREVRANGE", stream, "+", "-", "COUNT", "1"])?;
    Ok(parse_entries(&reply)?.into_iter().next())
}

/// The highest seq the stream holds (`None`: empty or missing).
pub fn last_seq(conn: &mut Connection, stream: &str) -> Result<Option<u64>, StreamError> {
    Ok(top(conn, stream)?.map(|e| e.seq))
}

/// `Some(first)` when the stream's first entry is past `after + 1`: the entries in between are
/// gone (trimmed, or never appended while Redis was away) and must come from the event log.
pub fn trimmed_past(
    conn: &mut Connection,
    stream: &str,
    after: u64,
) -> Result<Option<u64>, StreamError> {
    Ok(first_seq(conn, stream)?.filter(|first| *first > after.saturating_add(1)))
}

/// Parses an `XRANGE`-shaped list `[[id, [field, value, ...]], ...]`.
pub fn parse_entries(reply: &Reply) -> Result<Vec<Entry>, StreamError> {
    let items = reply
        .items()
        .ok_or_else(|| StreamError::Malformed(format!("entry list: {reply:?}")))?;
    items.iter().map(parse_entry).collect()
}

fn parse_entry(item: &Reply) -> Result<Entry, StreamError> {
    let bad = || StreamError::Malformed(format!("stream entry: {item:?}"));
    let [id, fields] = item.items().ok_or_else(bad)? else {
        return Err(bad());
    };
    let seq = id
        .text()
        .and_then(|id| id.split_once('-'))
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
        .ok_or_else(bad)?;
    let fields = fields.items().ok_or_else(bad)?;
    let field = |name: &str| {
        fields
            .chunks_exact(2)
            .find(|kv| kv[0].text() == Some(name))
            .and_then(|kv| kv[1].text())
    };
    let (Some(epoch), Some(ts), Some(payload)) = (field("e"), field("t"), field("d")) else {
        return Err(bad());
    };
    Ok(Entry {
        seq,
        epoch: epoch.into(),
        timestamp: ts.parse().map_err(|_| bad())?,
        payload: payload.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    fn arr(items: Vec<Reply>) -> Reply {
        Reply::Array(Some(items))
    }

    fn raw(id: &str, fields: &[&str]) -> Reply {
        arr(vec![
            bulk(id),
            arr(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn parses_entries_and_refuses_odd_shapes() {
        let good = raw("7-0", &["e", "ep", "t", "1.500", "d", "{\"event\":\"x\"}"]);
        let entries = parse_entries(&arr(vec![good])).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].seq, &*entries[0].epoch), (7, "ep"));
        assert_eq!(entries[0].timestamp, 1.5);
        assert_eq!(&*entries[0].payload, "{\"event\":\"x\"}");
        let bad = [
            raw("x-0", &["e", "a", "t", "1", "d", "{}"]),
            raw("7", &["e", "a", "t", "1", "d", "{}"]),
            raw("7-0", &["e", "a", "d", "{}"]),
            raw("7-0", &["e", "a", "t", "soon", "d", "{}"]),
            arr(vec![bulk("7-0")]),
            Reply::Int(3),
        ];
        for b in bad {
            assert!(parse_entries(&arr(vec![b.clone()])).is_err(), "{b:?}");
        }
        assert!(parse_entries(&Reply::Int(1)).is_err());
    }

    #[test]
    fn entry_round_trips_through_published() {
        let e = Entry {
            seq: 9,
            epoch: "ep".into(),
            timestamp: 1700000000.123,
            payload: r#"{"event":"new_block","coin":"BTC","height":5}"#.into(),
        };
        let p = e.to_published();
        assert_eq!(
            (p.seq, &*p.meta.name, &*p.meta.coin),
            (9, "new_block", "BTC")
        );
        assert_eq!(Entry::from_published(&p), e);
    }
}
