//! Unit tests of the spool file.

use super::*;
use crate::event::Event;
use serde_json::json;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let mut r = crate::util::rng::Rng::from_os();
        let p = std::env::temp_dir().join(format!("cw-spool-{tag}-{:x}", r.next_u64()));
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn block(epoch: &str, seq: u64, height: u64) -> Published {
    let ev = Event::new("BTC".into(), "new_block", None).with("height", json!(height));
    Published::new(epoch.into(), seq, &ev, 1_700_000_000.125)
}

fn read_all(spool: &mut Spool) -> Vec<Result<Published, SpoolLineError>> {
    let mut r = spool.reader().unwrap();
    let mut out = Vec::new();
    while let Some(item) = r.next_event(spool.bytes()).unwrap() {
        out.push(item);
    }
    assert_eq!(r.offset(), spool.bytes());
    out
}

#[test]
fn lines_round_trip_in_order() {
    let dir = TempDir::new("rt");
    let (mut s, scan) = Spool::open(&dir.0).unwrap();
    assert_eq!(scan, SpoolScan::default());
    for seq in 1..=3 {
        s.append(&block("e1", seq, 100 + seq)).unwrap();
    }
    assert_eq!(s.lines(), 3);
    let got = read_all(&mut s);
    let seqs: Vec<u64> = got.iter().map(|p| p.as_ref().unwrap().seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let p = got[1].as_ref().unwrap();
    assert_eq!(&*p.epoch, "e1");
    assert_eq!(&*p.meta.name, "new_block");
    assert_eq!(p.timestamp, 1_700_000_000.125);
    let v: Value = serde_json::from_str(p.payload()).unwrap();
    assert_eq!(v["height"], 102);
}

#[test]
fn reopening_scans_what_is_left_and_truncate_empties() {
    let dir = TempDir::new("scan");
    {
        let (mut s, _) = Spool::open(&dir.0).unwrap();
        s.append(&block("e1", 7, 10)).unwrap();
        s.append(&block("e2", 3, 12)).unwrap();
        s.append(&block("e1", 5, 11)).unwrap();
        s.maybe_sync(true).unwrap();
    }
    let (mut s, scan) = Spool::open(&dir.0).unwrap();
    assert_eq!(scan.lines, 3);
    assert_eq!(scan.max_seq["e1"], 7);
    assert_eq!(scan.max_seq["e2"], 3);
    assert_eq!(scan.tips["BTC"], 12);
    assert!(!s.is_empty());
    s.truncate().unwrap();
    assert!(s.is_empty());
    s.append(&block("e3", 1, 1)).unwrap();
    assert_eq!(
        read_all(&mut s).len(),
        1,
        "appends after truncate start at offset 0"
    );
}

#[test]
fn a_torn_tail_is_repaired_and_skipped() {
    let dir = TempDir::new("torn");
    {
        let (mut s, _) = Spool::open(&dir.0).unwrap();
        s.append(&block("e1", 1, 10)).unwrap();
        s.maybe_sync(true).unwrap();
    }
    let path = dir.0.join(SPOOL_FILE);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"epoch\":\"e1\",\"se").unwrap();
    drop(f);
    let (mut s, scan) = Spool::open(&dir.0).unwrap();
    assert_eq!((scan.lines, scan.bad), (2, 1));
    s.append(&block("e1", 2, 11)).unwrap();
    let got = read_all(&mut s);
    assert_eq!(got.len(), 3);
    assert!(got[0].is_ok() && got[1].is_err() && got[2].is_ok());
    assert_eq!(got[2].as_ref().unwrap().seq, 2);
}

#[test]
fn a_second_open_of_the_same_dir_is_refused() {
    let dir = TempDir::new("lock");
    let (_s, _) = Spool::open(&dir.0).unwrap();
    match Spool::open(&dir.0) {
        Err(DbError::Spool(m)) => assert!(m.contains("locked"), "{m}"),
        other => panic!("expected a lock error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn garbage_lines_decode_to_errors_not_panics() {
    for (bad, why) in [
        ("", "not JSON: EOF while parsing a value at line 1 column 0"),
        ("nope", "not JSON: expected ident at line 1 column 2"),
        ("{}", "no epoch"),
        (r#"{"epoch":"e","ts":1,"payload":{}}"#, "no seq"),
        (r#"{"epoch":"e","seq":-1,"ts":1,"payload":{}}"#, "no seq"),
        (r#"{"epoch":"e","seq":1,"payload":{}}"#, "no ts"),
        (
            r#"{"epoch":"e","seq":1,"ts":1,"payload":[]}"#,
            "payload is not an object",
        ),
    ] {
        match decode(bad) {
            Err(e) => assert_eq!(e.to_string(), why, "{bad}"),
            Ok(_) => panic!("{bad} decoded"),
        }
    }
}

#[test]
fn reader_stops_at_the_limit() {
    let dir = TempDir::new("limit");
    let (mut s, _) = Spool::open(&dir.0).unwrap();
    s.append(&block("e1", 1, 1)).unwrap();
    let first = s.bytes();
    s.append(&block("e1", 2, 2)).unwrap();
    let mut r = s.reader().unwrap();
    assert!(r.next_event(first).unwrap().is_some());
    assert!(r.next_event(first).unwrap().is_none());
    assert!(r.next_event(s.bytes()).unwrap().is_some());
}
