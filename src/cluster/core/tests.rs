//! Table tests of [`Delivery`] and [`takeover`]: each case is a list of inputs and the exact
//! trace of actions they produce.

use super::*;

const E1: &str = "e1";
const E2: &str = "e2";

fn entry(epoch: &str, seq: u64) -> Entry {
    Entry {
        seq,
        epoch: epoch.into(),
        timestamp: 1.0,
        payload: format!("{{\"n\":{seq}}}").into(),
    }
}

fn entries(epoch: &str, seqs: &[u64]) -> Vec<Entry> {
    seqs.iter().map(|s| entry(epoch, *s)).collect()
}

/// One input to the state machine.
enum Step {
    Stream(&'static [u64]),
    StreamIn(&'static str, &'static [u64]),
    Trimmed(u64),
    Log(&'static [u64]),
    LogRange(u64, u64),
    LogFailed,
    Retry,
}

/// Compact action trace: `D5` deliver, `F(a,b]` fetch log, `R` retry later, `S3-4` skipped,
/// `N:e2` new epoch, `RS7` re-read the stream after 7.
fn trace(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Deliver(e) => format!("D{}", e.seq),
            Action::NewEpoch(e) => format!("N:{e}"),
            Action::FetchLog { after, up_to, .. } => format!("F({after},{up_to}]"),
            Action::RetryLater => "R".into(),
            Action::ReadStreamFrom { after } => format!("RS{after}"),
            Action::Skipped { from, to } => format!("S{from}-{to}"),
        })
        .collect()
}

fn run(d: &mut Delivery, steps: &[Step]) -> Vec<String> {
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Stream(seqs) => d.on_entries(entries(E1, seqs), &mut out),
            Step::StreamIn(epoch, seqs) => d.on_entries(entries(epoch, seqs), &mut out),
            Step::Trimmed(first) => d.on_trimmed(*first, &mut out),
            Step::Log(seqs) => d.on_log_page(entries(E1, seqs), &mut out),
            Step::LogRange(a, b) => {
                let seqs: Vec<u64> = (*a..=*b).collect();
                d.on_log_page(entries(E1, &seqs), &mut out)
            }
            Step::LogFailed => d.on_log_failed(&mut out),
            Step::Retry => d.on_retry(&mut out),
        }
    }
    trace(&out)
}

fn seq_trace(prefix: &[&str], from: u64, to: u64) -> Vec<String> {
    let mut t: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    t.extend((from..=to).map(|s| format!("D{s}")));
    t
}

#[test]
fn delivery_table() {
    use Step::*;
    let cases: Vec<(&str, u64, Vec<Step>, Vec<&str>)> = vec![
        (
            "in order",
            1,
            vec![Stream(&[1, 2, 3])],
            vec!["D1", "D2", "D3"],
        ),
        (
            "duplicates are dropped",
            1,
            vec![Stream(&[1, 2]), Stream(&[2, 3]), Stream(&[1])],
            vec!["D1", "D2", "D3"],
        ),
        (
            "a gap is filled from the log, then the held entries follow",
            1,
            vec![Stream(&[1, 4, 5]), Log(&[2, 3])],
            vec!["D1", "F(1,3]", "D2", "D3", "D4", "D5"],
        ),
        (
            "Redis restarted empty: the leader's backlog lost 11-13, the log has them",
            11,
            vec![Stream(&[14, 15]), Log(&[11, 12, 13])],
            vec!["F(10,13]", "D11", "D12", "D13", "D14", "D15"],
        ),
        (
            "the log does not hold the gap yet: retry until it does",
            1,
            vec![Stream(&[1, 3]), Log(&[]), Retry, Log(&[2])],
            vec!["D1", "F(1,2]", "R", "F(1,2]", "D2", "D3"],
        ),
        (
            "a failed query is retried",
            5,
            vec![Stream(&[7]), LogFailed, Retry, Log(&[5, 6])],
            vec!["F(4,6]", "R", "F(4,6]", "D5", "D6", "D7"],
        ),
        (
            "a partial page asks again from where it stopped",
            1,
            vec![Trimmed(6), Log(&[1, 2]), Log(&[3, 4, 5]), Stream(&[6])],
            vec!["F(0,5]", "D1", "D2", "F(2,5]", "D3", "D4", "D5", "D6"],
        ),
        (
            "a hole inside the held entries is filled too",
            1,
            vec![Stream(&[2, 3, 5]), Log(&[1]), Log(&[4])],
            vec!["F(0,1]", "D1", "D2", "D3", "F(3,4]", "D4", "D5"],
        ),
        (
            "log rows beyond a hole are not delivered early",
            1,
            vec![Stream(&[5]), Log(&[1, 3, 4]), Log(&[2, 3, 4])],
            vec!["F(0,4]", "D1", "F(1,4]", "D2", "D3", "D4", "D5"],
        ),
        (
            "new leader continues after the old one appended 101-103 without storing them",
            101,
            vec![Stream(&[101, 102, 103]), Stream(&[104, 105])],
            vec!["D101", "D102", "D103", "D104", "D105"],
        ),
        (
            "a new epoch restarts at seq 1 and fills from that epoch's log",
            1,
            vec![Stream(&[1, 2]), StreamIn(E2, &[1, 2])],
            vec!["D1", "D2", "N:e2", "D1", "D2"],
        ),
        (
            "a stale log answer after the fill ended is ignored",
            1,
            vec![Stream(&[2]), Log(&[1]), Log(&[1])],
            vec!["F(0,1]", "D1", "D2"],
        ),
        (
            "entries that close the gap from the stream, out of order, are delivered at once",
            1,
            vec![Stream(&[1]), Stream(&[4, 5]), Stream(&[3, 2]), Log(&[])],
            vec!["D1", "F(1,3]", "D2", "D3", "D4", "D5"],
        ),
        (
            "the log's copy of what the stream closed is not delivered again",
            1,
            vec![Stream(&[1, 4]), Stream(&[2]), Log(&[2, 3]), Stream(&[5])],
            vec!["D1", "F(1,3]", "D2", "D3", "D4", "D5"],
        ),
        (
            "trimmed behind the position changes nothing",
            10,
            vec![Trimmed(5), Stream(&[10])],
            vec!["D10"],
        ),
    ];
    for (name, start, steps, want) in cases {
        let mut d = Delivery::new(Some(E1.into()), start);
        assert_eq!(run(&mut d, &steps), want, "{name}");
        assert!(!d.is_filling(), "{name}: the fill ended");
    }
}

#[test]
fn follower_behind_the_trimmed_stream_catches_up_from_the_log() {
    use Step::*;
    let mut d = Delivery::new(Some(E1.into()), 1);
    let got = run(
        &mut d,
        &[
            Trimmed(1001),
            Stream(&[1001, 1002]),
            LogRange(1, 500),
            LogRange(501, 1000),
        ],
    );
    let mut want = seq_trace(&["F(0,1000]"], 1, 500);
    want.push("F(500,1000]".into());
    want.extend(seq_trace(&[], 501, 1002));
    assert_eq!(got, want);
    assert_eq!((d.next_seq(), d.lag()), (1003, 0));
}

#[test]
fn a_hole_the_log_never_fills_is_skipped_after_the_stall_limit() {
    let mut d = Delivery::new(Some(E1.into()), 1);
    let mut out = Vec::new();
    d.on_entries(entries(E1, &[1, 3]), &mut out);
    for _ in 0..STALL_LIMIT {
        d.on_log_page(Vec::new(), &mut out);
        d.on_retry(&mut out);
    }
    assert!(d.is_filling());
    d.on_log_page(Vec::new(), &mut out);
    let t = trace(&out);
    assert_eq!(t[t.len() - 2..], ["S2-2", "D3"]);
    assert_eq!(t.iter().filter(|a| *a == "R").count(), STALL_LIMIT as usize);
    assert!(!d.is_filling());
}

#[test]
fn an_overflowing_buffer_makes_the_stream_be_read_again() {
    let mut d = Delivery::new(Some(E1.into()), 1);
    let mut out = Vec::new();
    let held: Vec<u64> = (2..2 + PENDING_MAX as u64 + 10).collect();
    d.on_entries(entries(E1, &held), &mut out);
    assert_eq!(d.lag(), PENDING_MAX as u64 + 11);
    d.on_log_page(entries(E1, &[1]), &mut out);
    let t = trace(&out);
    let last_held = 1 + PENDING_MAX as u64;
    assert_eq!(t.first().map(String::as_str), Some("F(0,1]"));
    assert_eq!(t.last(), Some(&format!("RS{last_held}")));
    assert_eq!(
        t.len(),
        1 + 1 + PENDING_MAX + 1,
        "fetch, D1, held ones, re-read"
    );
    assert_eq!(d.next_seq(), last_held + 1);
}

#[test]
fn no_epoch_yet_adopts_the_first_entry() {
    let mut d = Delivery::new(None, 1);
    let mut out = Vec::new();
    d.on_entries(entries(E2, &[1]), &mut out);
    assert_eq!(trace(&out), ["D1"]);
    assert_eq!(d.epoch().map(|e| &**e), Some(E2));
}

#[test]
fn takeover_table() {
    let tail = entries(E1, &[101, 102, 103]);
    /// Name, last stored seq, stream tail, stream top, seqs to store, next seq, reset.
    type Case = (
        &'static str,
        u64,
        Vec<Entry>,
        Option<Entry>,
        Vec<u64>,
        u64,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "old leader appended 101-103 but stored only up to 100",
            100,
            tail.clone(),
            Some(entry(E1, 103)),
            vec![101, 102, 103],
            104,
            false,
        ),
        (
            "everything stored",
            103,
            vec![],
            Some(entry(E1, 103)),
            vec![],
            104,
            false,
        ),
        (
            "Redis restarted empty",
            100,
            vec![],
            None,
            vec![],
            101,
            false,
        ),
        (
            "stream behind the log",
            100,
            vec![],
            Some(entry(E1, 90)),
            vec![],
            101,
            false,
        ),
        (
            "tail entries at or below the log are not stored again",
            102,
            tail.clone(),
            Some(entry(E1, 103)),
            vec![103],
            104,
            false,
        ),
        (
            "the stream holds another epoch",
            7,
            vec![],
            Some(entry(E2, 50)),
            vec![],
            8,
            true,
        ),
    ];
    for (name, db_last, tail, top, store, next, reset) in cases {
        let plan = takeover(E1, db_last, &tail, top.as_ref());
        let stored: Vec<u64> = plan.store.iter().map(|e| e.seq).collect();
        assert_eq!(
            (stored, plan.next_seq, plan.reset_stream),
            (store, next, reset),
            "{name}"
        );
    }
}
