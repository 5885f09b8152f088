//! Sans-io delivery order of one node: which events its clients get, in which order, and when
//! the event log must fill in. [`Delivery`] takes stream entries (or, on the leader, its own
//! appended events), event-log pages and "trimmed" signals, and answers with [`Action`]s. It
//! never sees a socket or a clock: the reactor runs the actions (and a retry timer).
//!
//! Invariants: [`Action::Deliver`] comes out with seq `next, next+1, ...` within an epoch, each
//! seq once (no gap, no duplicate); the only exception is a hole the event log still lacks after
//! [`STALL_LIMIT`] retries, announced as [`Action::Skipped`]. Stream entries that arrive while the
//! log fills in wait in a buffer of at most [`PENDING_MAX`]; beyond it they are dropped and the
//! stream is re-read afterwards ([`Action::ReadStreamFrom`]). [`takeover`] plans how a new leader
//! continues the epoch and seq after the old one.

use super::stream::Entry;
use std::collections::VecDeque;
use std::sync::Arc;

/// Stream entries held while the event log fills a gap.
pub const PENDING_MAX: usize = 8192;
/// Event-log retries without progress before a hole is skipped (with the reactor retrying every
/// [`super::LOG_RETRY`], about 5 s).
pub const STALL_LIMIT: u32 = 20;

/// What the reactor must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Hand this event to the fan-out (the clients and the resume ring).
    Deliver(Entry),
    /// A new epoch starts (the stream was reset): the reactor's resume ring restarts.
    NewEpoch(Arc<str>),
    /// Query the event log now: events of `epoch` with `after < seq <= up_to`, ascending; answer
    /// with [`Delivery::on_log_page`] (or [`Delivery::on_log_failed`]).
    FetchLog {
        epoch: Arc<str>,
        after: u64,
        up_to: u64,
    },
    /// The log does not hold the gap yet: call [`Delivery::on_retry`] after
    /// [`super::LOG_RETRY`].
    RetryLater,
    /// Tell the stream reader to go back and read the entries after `after` again.
    ReadStreamFrom { after: u64 },
    /// Seqs `from..=to` were never found: the clients will not get them (log it).
    Skipped { from: u64, to: u64 },
}

/// A gap being filled from the event log: `next..target` is missing.
#[derive(Debug, Clone, PartialEq)]
struct Fill {
    target: u64,
    in_flight: bool,
    stalls: u32,
}

/// The delivery state machine of one node.
#[derive(Debug)]
pub struct Delivery {
    epoch: Option<Arc<str>>,
    next: u64,
    fill: Option<Fill>,
    pending: VecDeque<Entry>,
    overflowed: bool,
    seen_top: u64,
}

impl Delivery {
    /// Starts delivering at `next` in `epoch` (`None`: adopt the first entry's epoch, from seq 1).
    pub fn new(epoch: Option<Arc<str>>, next: u64) -> Delivery {
        Delivery {
            epoch,
            next: next.max(1),
            fill: None,
            pending: VecDeque::new(),
            overflowed: false,
            seen_top: next.saturating_sub(1),
        }
    }

    /// The next seq to deliver.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The epoch being delivered.
    pub fn epoch(&self) -> Option<&Arc<str>> {
        self.epoch.as_ref()
    }

    /// Whether a gap is being filled from the event log.
    pub fn is_filling(&self) -> bool {
        self.fill.is_some()
    }

    /// Events known to exist (seen in the stream) but not delivered yet: the stream lag.
    pub fn lag(&self) -> u64 {
        self.seen_top.saturating_sub(self.next - 1)
    }

    /// Entries from the stream reader (or the leader's own appended events), ascending.
    pub fn on_entries(&mut self, entries: Vec<Entry>, out: &mut Vec<Action>) {
        for e in entries {
            if self.epoch.as_deref() != Some(&*e.epoch) {
                self.switch_epoch(e.epoch.clone(), out);
            }
            self.seen_top = self.seen_top.max(e.seq);
            if self.fill.is_some() {
                self.hold(e);
                self.drain_pending(out);
            } else if e.seq == self.next {
                self.deliver(e, out);
            } else if e.seq > self.next {
                self.start_fill(e.seq, out);
                self.hold(e);
            }
        }
    }

    /// The stream reader found that the stream starts at `first`: everything before is gone.
    pub fn on_trimmed(&mut self, first: u64, out: &mut Vec<Action>) {
        self.seen_top = self.seen_top.max(first);
        if self.fill.is_none() && first > self.next {
            self.start_fill(first, out);
        }
    }

    /// The answer to [`Action::FetchLog`]: events ascending (fewer than asked when the log does
    /// not hold them all yet).
    pub fn on_log_page(&mut self, entries: Vec<Entry>, out: &mut Vec<Action>) {
        let Some(target) = self.fill.as_ref().map(|f| f.target) else {
            return;
        };
        let before = self.next;
        for e in entries {
            if self.epoch.as_deref() != Some(&*e.epoch) || e.seq < self.next {
                continue;
            }
            if e.seq != self.next || e.seq >= target {
                break;
            }
            self.deliver(e, out);
        }
        self.drain_pending(out);
        self.after_page(self.next > before, out);
    }

    /// The event-log query failed: try again later.
    pub fn on_log_failed(&mut self, out: &mut Vec<Action>) {
        if let Some(fill) = self.fill.as_mut() {
            fill.in_flight = false;
            out.push(Action::RetryLater);
        }
    }

    /// The retry timer of [`Action::RetryLater`] fired.
    pub fn on_retry(&mut self, out: &mut Vec<Action>) {
        if self.fill.as_ref().is_some_and(|f| !f.in_flight) {
            self.fetch(out);
        }
    }

    fn switch_epoch(&mut self, epoch: Arc<str>, out: &mut Vec<Action>) {
        if self.epoch.is_some() {
            out.push(Action::NewEpoch(epoch.clone()));
            self.next = 1;
            self.seen_top = 0;
        }
        self.epoch = Some(epoch);
        self.fill = None;
        self.pending.clear();
    }

    fn deliver(&mut self, e: Entry, out: &mut Vec<Action>) {
        self.next = e.seq + 1;
        out.push(Action::Deliver(e));
    }

    /// Buffers a stream entry in seq order (entries may come out of order: the leader's own
    /// `Held` ones can pass its `Appended` ones); a seq delivered or held already is dropped.
    fn hold(&mut self, e: Entry) {
        if e.seq < self.next {
            return;
        }
        let Err(at) = self.pending.binary_search_by_key(&e.seq, |p| p.seq) else {
            return;
        };
        if self.pending.len() >= PENDING_MAX {
            self.overflowed = true;
        } else {
            self.pending.insert(at, e);
        }
    }

    fn start_fill(&mut self, target: u64, out: &mut Vec<Action>) {
        self.fill = Some(Fill {
            target,
            in_flight: false,
            stalls: 0,
        });
        self.fetch(out);
    }

    fn fetch(&mut self, out: &mut Vec<Action>) {
        let (Some(fill), Some(epoch)) = (self.fill.as_mut(), self.epoch.as_ref()) else {
            return;
        };
        fill.in_flight = true;
        out.push(Action::FetchLog {
            epoch: epoch.clone(),
            after: self.next - 1,
            up_to: fill.target - 1,
        });
    }

    /// Delivers buffered entries that follow on (the stream may close a gap before the log
    /// does); a hole inside the buffer becomes the new target.
    fn drain_pending(&mut self, out: &mut Vec<Action>) {
        while let Some(front) = self.pending.front() {
            if front.seq < self.next {
                self.pending.pop_front();
            } else if front.seq == self.next {
                let e = self.pending.pop_front().expect("front exists");
                self.deliver(e, out);
            } else {
                break;
            }
        }
        if let (Some(fill), Some(front)) = (self.fill.as_mut(), self.pending.front())
            && fill.target <= self.next
        {
            fill.target = front.seq;
            fill.stalls = 0;
        }
    }

    fn after_page(&mut self, progress: bool, out: &mut Vec<Action>) {
        let Some(fill) = self.fill.as_mut() else {
            return;
        };
        fill.in_flight = false;
        if fill.target <= self.next {
            self.finish_fill(out);
        } else if progress {
            fill.stalls = 0;
            self.fetch(out);
        } else if fill.stalls >= STALL_LIMIT {
            let target = fill.target;
            out.push(Action::Skipped {
                from: self.next,
                to: target - 1,
            });
            self.next = target;
            self.drain_pending(out);
            self.after_page(true, out);
        } else {
            fill.stalls += 1;
            out.push(Action::RetryLater);
        }
    }

    fn finish_fill(&mut self, out: &mut Vec<Action>) {
        self.fill = None;
        if std::mem::take(&mut self.overflowed) {
            out.push(Action::ReadStreamFrom {
                after: self.next - 1,
            });
        }
    }
}

/// How a new leader continues: events to store, the next seq to assign, and whether the stream
/// must be emptied first (it holds another epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct Takeover {
    /// Events the old leader appended to the stream but had not stored: store them.
    pub store: Vec<Entry>,
    /// The first seq the new leader assigns.
    pub next_seq: u64,
    /// The stream holds another epoch's entries: delete it before appending.
    pub reset_stream: bool,
}

/// Plans a takeover of `epoch` from the event log's last seq `db_last`, the stream entries after
/// `db_last` (`tail`, ascending, all of them) and the stream's last entry (`top`).
pub fn takeover(epoch: &str, db_last: u64, tail: &[Entry], top: Option<&Entry>) -> Takeover {
    if top.is_some_and(|t| &*t.epoch != epoch) {
        return Takeover {
            store: Vec::new(),
            next_seq: db_last + 1,
            reset_stream: true,
        };
    }
    let store: Vec<Entry> = tail
        .iter()
        .filter(|e| &*e.epoch == epoch && e.seq > db_last)
        .cloned()
        .collect();
    let top_seq = top.map_or(0, |t| t.seq);
    Takeover {
        store,
        next_seq: db_last.max(top_seq) + 1,
        reset_stream: false,
    }
}

#[cfg(test)]
mod tests;
