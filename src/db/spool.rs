//! The local spool: an append-only file of events waiting for the database
//! (`DB_SPOOL_DIR/cryptoworker.spool`), one JSON line per event:
//! `{"epoch":"…","seq":N,"ts":T,"payload":{…}}`.
//!
//! Invariants: only the dispatcher thread appends, reads and truncates it (never the reactor);
//! the file is locked exclusively (`flock`) for the process lifetime, so two workers never share
//! a spool; appends are buffered and `fsync`ed in batches ([`Spool::maybe_sync`]); the file is
//! truncated only after every line in it was committed; a torn last line from a crash is closed
//! with a newline at open and skipped (logged) when read.

use super::error::DbError;
use crate::event::{EventMeta, Published};
use serde_json::Value;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File name inside `DB_SPOOL_DIR`.
pub const SPOOL_FILE: &str = "cryptoworker.spool";
/// Lines appended before an fsync is forced.
const SYNC_EVERY_LINES: u64 = 1024;
/// Longest time appended lines stay un-fsynced.
const SYNC_EVERY: Duration = Duration::from_millis(50);
/// Longest accepted line (a bigger one is corrupt).
const MAX_LINE: u64 = 16 * 1024 * 1024;

/// What the spool held when it was opened.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct SpoolScan {
    /// Events in the file.
    pub lines: u64,
    /// Highest seq per epoch.
    pub max_seq: HashMap<String, u64>,
    /// Highest `new_block` height per coin.
    pub tips: HashMap<String, u64>,
    /// Lines that could not be decoded.
    pub bad: u64,
}

/// The spool file, opened for appending.
pub(crate) struct Spool {
    path: PathBuf,
    out: BufWriter<File>,
    /// Bytes in the file, buffered ones included.
    bytes: u64,
    /// Events in the file.
    lines: u64,
    /// Lines appended since the last fsync.
    unsynced: u64,
    last_sync: Instant,
}

impl Spool {
    /// Creates the directory if needed, opens and locks the file, repairs a torn tail and scans it.
    pub fn open(dir: &Path) -> Result<(Spool, SpoolScan), DbError> {
        let err = |what: &str, e: io::Error| {
            DbError::Spool(format!("{what} {} (DB_SPOOL_DIR): {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| err("cannot create", e))?;
        let path = dir.join(SPOOL_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| err("cannot open the spool in", e))?;
        file.try_lock().map_err(|e| {
            DbError::Spool(format!(
                "{} is locked by another process ({e}); give each worker its own DB_SPOOL_DIR",
                path.display()
            ))
        })?;
        repair_tail(&mut file).map_err(|e| err("cannot repair the spool in", e))?;
        let bytes = file
            .metadata()
            .map_err(|e| err("cannot stat the spool in", e))?
            .len();
        let scan = scan(&path).map_err(|e| err("cannot read the spool in", e))?;
        let spool = Spool {
            path,
            out: BufWriter::with_capacity(256 * 1024, file),
            bytes,
            lines: scan.lines,
            unsynced: 0,
            last_sync: Instant::now(),
        };
        Ok((spool, scan))
    }

    /// Appends one event (buffered; see [`Spool::maybe_sync`]).
    pub fn append(&mut self, p: &Published) -> io::Result<()> {
        let line = encode(p);
        self.out.write_all(line.as_bytes())?;
        self.bytes += line.len() as u64;
        self.lines += 1;
        self.unsynced += 1;
        Ok(())
    }

    /// Flushes and fsyncs when forced, or when enough lines or time accumulated.
    pub fn maybe_sync(&mut self, force: bool) -> io::Result<()> {
        if self.unsynced == 0 {
            return Ok(());
        }
        if force || self.unsynced >= SYNC_EVERY_LINES || self.last_sync.elapsed() >= SYNC_EVERY {
            self.out.flush()?;
            self.out.get_ref().sync_data()?;
            self.unsynced = 0;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// True when no event waits in the file.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Events in the file.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Bytes in the file; after [`Spool::flush`] they are all readable by a [`SpoolReader`].
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes buffered lines visible to readers.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// A reader from the start of the file.
    pub fn reader(&mut self) -> io::Result<SpoolReader> {
        self.flush()?;
        Ok(SpoolReader {
            inner: BufReader::with_capacity(256 * 1024, File::open(&self.path)?),
            offset: 0,
        })
    }

    /// Empties the file (every line in it is committed).
    pub fn truncate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().set_len(0)?;
        self.out.get_ref().sync_all()?;
        self.bytes = 0;
        self.lines = 0;
        self.unsynced = 0;
        Ok(())
    }
}

/// Why a spool line could not be read back (the line is skipped; the spool goes on).
#[derive(Debug)]
pub(crate) enum SpoolLineError {
    /// Longer than the 16 MiB a line may have.
    TooLong,
    /// Not a JSON document.
    NotJson(serde_json::Error),
    /// A required field (`epoch`, `seq`, `ts`) is missing or of the wrong type.
    Missing(&'static str),
    /// `payload` is not a JSON object.
    PayloadNotObject,
}

impl std::fmt::Display for SpoolLineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolLineError::TooLong => f.write_str("line longer than 16 MiB"),
            SpoolLineError::NotJson(e) => write!(f, "not JSON: {e}"),
            SpoolLineError::Missing(field) => write!(f, "no {field}"),
            SpoolLineError::PayloadNotObject => f.write_str("payload is not an object"),
        }
    }
}

impl std::error::Error for SpoolLineError {}

/// Reads spooled events in file order.
pub(crate) struct SpoolReader {
    inner: BufReader<File>,
    offset: u64,
}

impl SpoolReader {
    /// The next line if one ends before `limit` bytes: `Some(Ok(event))`, or `Some(Err(why))` for
    /// a corrupt line (skipped). `None` at `limit`.
    pub fn next_event(
        &mut self,
        limit: u64,
    ) -> io::Result<Option<Result<Published, SpoolLineError>>> {
        if self.offset >= limit {
            return Ok(None);
        }
        let mut buf = Vec::new();
        let n = (&mut self.inner)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.offset += n as u64;
        if buf.last() != Some(&b'\n') && n as u64 >= MAX_LINE {
            // Skip the rest of an oversized line.
            let mut rest = Vec::new();
            self.offset += self.inner.read_until(b'\n', &mut rest)? as u64;
            return Ok(Some(Err(SpoolLineError::TooLong)));
        }
        let text = String::from_utf8_lossy(&buf);
        Ok(Some(decode(text.trim_end())))
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// One spool line (with its newline).
pub(crate) fn encode(p: &Published) -> String {
    // Never true for serde_json output; kept so a line is always one line.
    let payload: std::borrow::Cow<'_, str> = if p.payload().contains('\n') {
        p.payload().replace('\n', " ").into()
    } else {
        p.payload().into()
    };
    format!(
        "{{\"epoch\":{},\"seq\":{},\"ts\":{},\"payload\":{}}}\n",
        Value::from(&*p.epoch),
        p.seq,
        Value::from(p.timestamp),
        payload
    )
}

/// Parses one spool line back into an event.
pub(crate) fn decode(line: &str) -> Result<Published, SpoolLineError> {
    let v: Value = serde_json::from_str(line).map_err(SpoolLineError::NotJson)?;
    let epoch = v["epoch"]
        .as_str()
        .ok_or(SpoolLineError::Missing("epoch"))?;
    let seq = v["seq"].as_u64().ok_or(SpoolLineError::Missing("seq"))?;
    let ts = v["ts"].as_f64().ok_or(SpoolLineError::Missing("ts"))?;
    let Value::Object(data) = &v["payload"] else {
        return Err(SpoolLineError::PayloadNotObject);
    };
    Ok(Published::from_payload(
        epoch.into(),
        seq,
        EventMeta::from_data(data),
        &v["payload"].to_string(),
        ts,
    ))
}

/// Closes a torn last line (a crash mid-append) with a newline.
fn repair_tail(file: &mut File) -> io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        log::warn!("[DB] Spool ends with a torn line (crash while appending?); it will be skipped");
        file.write_all(b"\n")?;
        file.sync_data()?;
    }
    Ok(())
}

/// Counts the events of a spool file and their highest seq per epoch and tip per coin.
fn scan(path: &Path) -> io::Result<SpoolScan> {
    let mut out = SpoolScan::default();
    let mut reader = SpoolReader {
        inner: BufReader::with_capacity(256 * 1024, File::open(path)?),
        offset: 0,
    };
    while let Some(item) = reader.next_event(u64::MAX)? {
        out.lines += 1;
        let Ok(p) = item else {
            out.bad += 1;
            continue;
        };
        let seq = out.max_seq.entry(p.epoch.to_string()).or_default();
        *seq = (*seq).max(p.seq);
        if &*p.meta.name == "new_block"
            && let Ok(v) = serde_json::from_str::<Value>(p.payload())
            && let Some(h) = v["height"].as_u64()
        {
            let tip = out.tips.entry(p.meta.coin.to_string()).or_default();
            *tip = (*tip).max(h);
        }
    }
    if out.bad > 0 {
        log::warn!(
            "[DB] Spool has {} unreadable lines; they will be skipped",
            out.bad
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
