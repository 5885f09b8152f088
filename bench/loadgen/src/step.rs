//! One measurement step: which deliveries count, when the step is over, and its report.
//!
//! Events are identified by the index `i` and the scheduled send time that the source embeds in
//! each transaction hash (`0x<16 hex scheduled unix µs><48 hex i>`). A step measures the window
//! of indices `[lead, lead + window)`, the same for every load process, so their reports merge.
//! A delivery counts as in time when it arrives before the deadline: the scheduled time of the
//! window's last event plus the grace period. Latency is receive time minus scheduled time, so
//! queueing anywhere (source, server, kernel) counts. Memory is bounded by the window size.

use crate::hist::Histogram;
use serde_json::{Value, json};

/// Parameters of a step, as sent by the orchestrator.
#[derive(Clone, Debug, PartialEq)]
pub struct StepSpec {
    /// Source event rate (events/s), used to place the deadline.
    pub rate: f64,
    /// Events before the window (time for the server to (re)connect to the source and warm up).
    pub lead: u64,
    /// Events measured.
    pub window: u64,
    /// How long after the last window event's schedule deliveries still count (µs).
    pub grace_us: u64,
    /// Whether to keep per-event first/last receipt times (fan-out span).
    pub spans: bool,
}

impl StepSpec {
    /// Parses `step <rate> <lead> <window> <grace_ms> <spans 0|1>`'s arguments.
    pub fn parse(args: &[&str]) -> Result<StepSpec, String> {
        let [rate, lead, window, grace, spans] = args else {
            return Err("usage: step <rate> <lead> <window> <grace_ms> <spans 0|1>".into());
        };
        let num = |s: &str, what: &str| s.parse::<f64>().map_err(|_| format!("bad {what}: {s}"));
        let rate = num(rate, "rate")?;
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(format!("bad rate: {rate}"));
        }
        let window = num(window, "window")? as u64;
        if window == 0 || window > 10_000_000 {
            return Err(format!("window out of range: {window}"));
        }
        Ok(StepSpec {
            rate,
            lead: num(lead, "lead")? as u64,
            window,
            grace_us: (num(grace, "grace")? * 1000.0) as u64,
            spans: *spans == "1",
        })
    }
}

/// Live state of a step.
pub struct Step {
    spec: StepSpec,
    /// Clients open when the step began: the expected deliveries are `window * clients`.
    clients: u64,
    started_us: u64,
    /// First event seen in this step: (index, scheduled µs).
    first: Option<(u64, u64)>,
    deadline_us: Option<u64>,
    total_rx: u64,
    stale: u64,
    window_rx: u64,
    in_time: u64,
    hist: Histogram,
    span_first: Vec<u64>,
    span_last: Vec<u64>,
    span_count: Vec<u32>,
    /// Time of the last delivery of any event (for quiet detection).
    pub last_rx_us: u64,
    /// This process's CPU seconds when the step began.
    cpu0: f64,
}

/// CPU seconds (user + system) used by this process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zero-initialised struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

impl Step {
    /// Starts a step at `now_us` with `clients` open subscribers.
    pub fn new(spec: StepSpec, clients: u64, now_us: u64) -> Step {
        let n = if spec.spans { spec.window as usize } else { 0 };
        Step {
            clients,
            started_us: now_us,
            first: None,
            deadline_us: None,
            total_rx: 0,
            stale: 0,
            window_rx: 0,
            in_time: 0,
            hist: Histogram::new(),
            span_first: vec![u64::MAX; n],
            span_last: vec![0; n],
            span_count: vec![0; n],
            last_rx_us: now_us,
            cpu0: cpu_seconds(),
            spec,
        }
    }

    /// Records one delivery of event `idx` scheduled at `sched_us`, received at `now_us`.
    #[inline]
    pub fn on_event(&mut self, sched_us: u64, idx: u64, now_us: u64) {
        // Leftovers of an earlier source run are older than this step (the orchestrator starts
        // the source only after every load process acknowledged the step).
        if sched_us < self.started_us {
            self.stale += 1;
            return;
        }
        self.total_rx += 1;
        self.last_rx_us = now_us;
        if self.first.is_none() {
            self.first = Some((idx, sched_us));
            let end = (self.spec.lead + self.spec.window) as f64;
            let ahead_us = (end - 1.0 - idx as f64) / self.spec.rate * 1e6;
            let last_sched = sched_us as f64 + ahead_us;
            self.deadline_us = Some(last_sched.max(0.0) as u64 + self.spec.grace_us);
        }
        let Some(k) = idx.checked_sub(self.spec.lead) else {
            return;
        };
        if k >= self.spec.window {
            return;
        }
        self.window_rx += 1;
        if self.deadline_us.is_some_and(|d| now_us <= d) {
            self.in_time += 1;
        }
        self.hist.record(now_us.saturating_sub(sched_us));
        if let Some(c) = self.span_count.get_mut(k as usize) {
            *c += 1;
            let k = k as usize;
            self.span_first[k] = self.span_first[k].min(now_us);
            self.span_last[k] = self.span_last[k].max(now_us);
        }
    }

    /// Whether the step can be reported: everything expected arrived, the deadline passed, or no
    /// event came within `no_event_timeout_us`.
    pub fn is_done(&self, now_us: u64, no_event_timeout_us: u64) -> bool {
        match self.deadline_us {
            None => now_us > self.started_us + no_event_timeout_us,
            Some(d) => now_us > d || self.in_time >= self.spec.window * self.clients,
        }
    }

    /// Deliveries of any event in this step so far (for CPU per delivery).
    pub fn total_rx(&self) -> u64 {
        self.total_rx
    }

    /// The step report (one JSON object; raw histogram buckets for merging); `closed` counts the
    /// clients that closed during the step.
    pub fn report(&self, now_us: u64, closed: u64) -> Value {
        let h = &self.hist;
        let late_start = self.first.is_none_or(|(i, _)| i > self.spec.lead);
        let mut v = json!({
            "type": "step",
            "clients": self.clients,
            "rate": self.spec.rate,
            "lead": self.spec.lead,
            "window": self.spec.window,
            "first_idx": self.first.map(|f| f.0),
            "late_start": late_start,
            "expected": self.spec.window * self.clients,
            "in_time": self.in_time,
            "window_rx": self.window_rx,
            "total_rx": self.total_rx,
            "stale": self.stale,
            "closed": closed,
            "elapsed_s": now_us.saturating_sub(self.started_us) as f64 / 1e6,
            "cpu_s": cpu_seconds() - self.cpu0,
            "p50_us": h.quantile(0.5),
            "p99_us": h.quantile(0.99),
            "p999_us": h.quantile(0.999),
            "max_us": h.max(),
            "samples": h.total(),
            "hist": h.sparse(),
        });
        if self.spec.spans {
            let first: Vec<u64> = self
                .span_first
                .iter()
                .map(|&f| if f == u64::MAX { 0 } else { f })
                .collect();
            v["span_first"] = json!(first);
            v["span_last"] = json!(self.span_last);
            v["span_count"] = json!(self.span_count);
        }
        v
    }
}

/// Finds the scheduled time and index in an event frame's transaction hash.
pub struct TxParser {
    finder: memchr::memmem::Finder<'static>,
}

impl Default for TxParser {
    fn default() -> Self {
        TxParser {
            finder: memchr::memmem::Finder::new(b"\"tx_hash\""),
        }
    }
}

impl TxParser {
    /// `(scheduled µs, index)` from `..."tx_hash":"0x<16 hex><48 hex>"...`, `None` for any other
    /// message or a malformed hash.
    #[inline]
    pub fn parse(&self, msg: &[u8]) -> Option<(u64, u64)> {
        let at = self.finder.find(msg)? + 9;
        let rest = msg.get(at..)?;
        let skip = rest.iter().position(|&b| b == b'"')?;
        let hash = rest.get(skip + 1..skip + 67)?;
        if &hash[..2] != b"0x" {
            return None;
        }
        Some((hex_u64(&hash[2..18])?, hex_u64(&hash[50..66])?))
    }
}

fn hex_u64(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(sched: u64, idx: u64) -> String {
        format!(
            r#"{{"type":"event","seq":7,"data":{{"event":"new_transaction","coin":"ETH","tx_hash": "0x{sched:016x}{idx:048x}","data":{{}}}},"timestamp":1.0}}"#
        )
    }

    fn spec(spans: bool) -> StepSpec {
        StepSpec {
            rate: 1000.0,
            lead: 10,
            window: 5,
            grace_us: 500_000,
            spans,
        }
    }

    #[test]
    fn tx_hash_yields_schedule_and_index() {
        let p = TxParser::default();
        assert_eq!(
            p.parse(frame(1_700_000_000_123_456, 42).as_bytes()),
            Some((1_700_000_000_123_456, 42))
        );
        assert_eq!(p.parse(br#"{"type":"subscribed"}"#), None);
        assert_eq!(p.parse(br#"{"tx_hash":"0xzz"}"#), None);
        assert_eq!(p.parse(br#"{"tx_hash":"#), None);
    }

    #[test]
    fn step_parse_checks_arguments() {
        assert_eq!(
            StepSpec::parse(&["1000", "10", "5", "500", "1"]),
            Ok(spec(true))
        );
        assert!(StepSpec::parse(&["0", "10", "5", "500", "1"]).is_err());
        assert!(StepSpec::parse(&["x", "10", "5", "500", "1"]).is_err());
        assert!(StepSpec::parse(&["1", "10", "0", "500", "1"]).is_err());
        assert!(StepSpec::parse(&["1"]).is_err());
    }

    #[test]
    fn window_deadline_and_spans() {
        let t0 = 10_000_000u64;
        let mut s = Step::new(spec(true), 2, t0);
        assert!(!s.is_done(t0 + 1, 5_000_000));
        // Event i is scheduled at t0 + i ms.
        for i in 0..15u64 {
            let sched = t0 + i * 1000;
            s.on_event(sched, i, sched + 100);
            if i != 12 {
                s.on_event(sched, i, sched + 300);
            }
        }
        // Last window event (14) is due at t0 + 14 ms; the deadline is 0.5 s after it.
        assert!(!s.is_done(t0 + 20_000, 5_000_000));
        assert!(s.is_done(t0 + 14_000 + 500_001, 5_000_000));
        let r = s.report(t0 + 20_000, 0);
        assert_eq!(r["expected"], 10);
        assert_eq!(r["in_time"], 9);
        assert_eq!(r["window_rx"], 9);
        assert_eq!(r["total_rx"], 29);
        assert_eq!(r["late_start"], false);
        assert_eq!(r["span_count"][2], 1);
        assert_eq!(
            r["span_last"][0].as_u64().unwrap() - r["span_first"][0].as_u64().unwrap(),
            200
        );
        s.on_event(t0 + 12_000, 12, t0 + 12_500);
        assert!(
            s.is_done(t0 + 20_000, 5_000_000),
            "all expected deliveries arrived"
        );
    }

    #[test]
    fn stale_and_late_deliveries_do_not_count() {
        let t0 = 10_000_000u64;
        let mut s = Step::new(spec(false), 1, t0);
        s.on_event(t0 - 1, 11, t0);
        assert_eq!(s.total_rx(), 0);
        s.on_event(t0, 12, t0 + 10);
        s.on_event(t0 + 1000, 13, t0 + 10_000_000);
        let r = s.report(t0 + 10_000_000, 0);
        assert_eq!(
            (
                r["stale"].as_u64(),
                r["in_time"].as_u64(),
                r["window_rx"].as_u64()
            ),
            (Some(1), Some(1), Some(2))
        );
        assert_eq!(r["late_start"], true);
        assert!(r.get("span_first").is_none());
    }

    #[test]
    fn no_events_times_out() {
        let s = Step::new(spec(false), 1, 0);
        assert!(!s.is_done(4_000_000, 5_000_000));
        assert!(s.is_done(5_000_001, 5_000_000));
    }
}
