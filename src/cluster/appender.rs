//! The stream appender thread (leader side): appends sequenced entries with the fenced
//! [`stream::append`], in order, and plans takeovers.
//!
//! While Redis is away, entries wait in a backlog of at most [`BACKLOG_MAX`] (the oldest are
//! dropped beyond it: followers get those from the event log) and are reported as
//! [`ClusterMessage::Held`] so the leader still serves its own clients; the backlog is appended as
//! soon as Redis answers again, so followers see what they missed without waiting for the next
//! event. A fenced or deposed append empties the backlog: this node no longer leads.
//!
//! Invariants: entries reach the stream in the order they were queued, each at most once per
//! leadership; reconnects back off and log once per state change.

use super::core::{self, Takeover};
use super::leader::LEASE;
use super::redis::{Connection, RedisUrl};
use super::stream::{self, Entry, StreamError, Target};
use super::{ClusterConfig, ClusterMessage, Outbox};
use crate::util::backoff::Backoff;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Entries kept while Redis is away.
pub const BACKLOG_MAX: usize = 100_000;
/// Entries per append script call.
pub const BATCH: usize = 512;
/// How long a takeover waits for Redis before planning from the event log alone.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(3);

/// What the reactor queues for the appender.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendJob {
    /// Sequenced entries, ascending, following the previous job's.
    Entries(Vec<Entry>),
    /// Plan a takeover of `epoch` whose event log ends at `last_stored`.
    Takeover { epoch: String, last_stored: u64 },
    /// Drop the backlog: the node stopped leading.
    Forget,
}

/// The appender thread's state.
pub struct Appender {
    url: RedisUrl,
    stream: String,
    leader_key: String,
    node: String,
    maxlen: u64,
    jobs: Receiver<AppendJob>,
    out: Outbox,
    conn: Option<Connection>,
    backlog: VecDeque<Entry>,
    backoff: Backoff,
    retry_at: Instant,
    up: Option<bool>,
    /// Highest seq already reported as appended or held (never reported twice).
    reported: u64,
}

impl Appender {
    pub(crate) fn new(cfg: &ClusterConfig, jobs: Receiver<AppendJob>, out: Outbox) -> Appender {
        Appender {
            url: cfg.redis.clone(),
            stream: cfg.stream_key(),
            leader_key: cfg.leader_key(),
            node: cfg.node_id.clone(),
            maxlen: cfg.stream_maxlen,
            jobs,
            out,
            conn: None,
            backlog: VecDeque::new(),
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            retry_at: Instant::now(),
            up: None,
            reported: 0,
        }
    }

    /// The thread body.
    pub fn run(mut self) {
        while !self.out.stopping() {
            match self.jobs.recv_timeout(Duration::from_millis(100)) {
                Ok(AppendJob::Entries(entries)) => self.queue(entries),
                Ok(AppendJob::Takeover { epoch, last_stored }) => {
                    self.backlog.clear();
                    self.reported = 0;
                    self.takeover(&epoch, last_stored);
                }
                Ok(AppendJob::Forget) => {
                    if !self.backlog.is_empty() {
                        log::warn!(
                            "[CLUSTER] Not leading: {} entries not appended are dropped (the event log has them)",
                            self.backlog.len()
                        );
                    }
                    self.backlog.clear();
                    self.reported = 0;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if !self.backlog.is_empty() && Instant::now() >= self.retry_at {
                self.flush();
            }
        }
    }

    fn queue(&mut self, entries: Vec<Entry>) {
        self.backlog.extend(entries);
        let over = self.backlog.len().saturating_sub(BACKLOG_MAX);
        if over > 0 {
            self.backlog.drain(..over);
            self.out
                .send(ClusterMessage::Dropped { count: over as u64 });
        }
        if self.conn.is_none() && Instant::now() < self.retry_at {
            self.report_held();
        }
    }

    /// Reports the backlog entries not reported yet as held.
    fn report_held(&mut self) {
        let fresh = unreported(&mut self.reported, self.backlog.iter());
        if !fresh.is_empty() {
            self.out.send(ClusterMessage::Held(fresh));
        }
    }

    /// Reports the entries of an appended batch not reported yet.
    fn report_appended(&mut self, batch: &[Entry]) {
        let fresh = unreported(&mut self.reported, batch.iter());
        if !fresh.is_empty() {
            self.out.send(ClusterMessage::Appended(fresh));
        }
    }

    /// Appends the backlog in batches until it is empty or Redis fails.
    fn flush(&mut self) {
        while !self.backlog.is_empty() {
            if !self.connect() {
                return self.report_held();
            }
            let n = self.backlog.len().min(BATCH);
            let batch: Vec<Entry> = self.backlog.range(..n).cloned().collect();
            let target = Target {
                stream: &self.stream,
                leader_key: &self.leader_key,
                node: &self.node,
                maxlen: self.maxlen,
                lease: LEASE,
            };
            let conn = self.conn.as_mut().expect("connected above");
            match stream::append(conn, &target, &batch) {
                Ok(_) => {
                    self.backlog.drain(..n);
                    self.report_appended(&batch);
                }
                Err(StreamError::Fenced { appended, seq }) => {
                    // A refused seq may be this node's own entry from an append whose answer was
                    // lost (a timeout, a reset): the same entry is in, so it is appended.
                    let done = appended + already_in(conn, &self.stream, &batch[appended..]);
                    if done == appended {
                        return self.failed(StreamError::Fenced { appended, seq }, batch);
                    }
                    log::info!(
                        "[CLUSTER] {} entries were already in the stream (an earlier answer was lost)",
                        done - appended
                    );
                    self.backlog.drain(..done);
                    self.report_appended(&batch[..done]);
                }
                Err(e) => return self.failed(e, batch),
            }
        }
    }

    fn failed(&mut self, e: StreamError, mut batch: Vec<Entry>) {
        match e {
            StreamError::Fenced { appended, seq } => {
                log::error!("[CLUSTER] Redis refused seq {seq}: another node leads; stopping");
                batch.truncate(appended);
                self.backlog.clear();
                self.report_appended(&batch);
                self.out.send(ClusterMessage::Fenced { seq });
            }
            StreamError::Deposed { leader } => {
                log::error!("[CLUSTER] Node {leader} now leads; this node stops appending");
                self.backlog.clear();
                self.out.send(ClusterMessage::Deposed { leader });
            }
            StreamError::Redis(_) | StreamError::Malformed(_) => {
                self.lost(&e.to_string());
                self.report_held();
            }
        }
    }

    /// Whether a connection is open, opening one when the backoff allows.
    fn connect(&mut self) -> bool {
        if self.conn.is_none() {
            if Instant::now() < self.retry_at {
                return false;
            }
            match Connection::open(&self.url) {
                Ok(c) => {
                    self.conn = Some(c);
                    self.backoff.reset();
                    if self.up != Some(true) {
                        log::info!(
                            "[CLUSTER] Appending to the event stream in Redis {}",
                            self.url.describe()
                        );
                        self.up = Some(true);
                    }
                }
                Err(e) => {
                    self.lost(&e.to_string());
                    return false;
                }
            }
        }
        true
    }

    fn lost(&mut self, why: &str) {
        self.conn = None;
        self.retry_at = Instant::now() + self.backoff.next_delay();
        if self.up != Some(false) {
            log::warn!(
                "[CLUSTER] Cannot append to the event stream ({why}); events wait (at most {BACKLOG_MAX})"
            );
            self.up = Some(false);
        }
    }

    /// Reads the stream's tail after `last_stored` and its top, plans, resets the stream when it
    /// holds another epoch, and reports the plan.
    fn takeover(&mut self, epoch: &str, last_stored: u64) {
        let deadline = Instant::now() + TAKEOVER_WAIT;
        loop {
            self.retry_at = Instant::now();
            let result = match (self.connect(), self.conn.as_mut()) {
                (true, Some(conn)) => plan(conn, &self.stream, epoch, last_stored),
                _ => Err(StreamError::Malformed("Redis unreachable".into())),
            };
            match result {
                Ok(plan) => {
                    self.out.send(ClusterMessage::Takeover {
                        plan,
                        stream_checked: true,
                    });
                    return;
                }
                Err(e) if Instant::now() >= deadline || self.out.stopping() => {
                    log::warn!(
                        "[CLUSTER] Takeover without the stream ({e}): continuing from the event log"
                    );
                    let plan = Takeover {
                        store: Vec::new(),
                        next_seq: last_stored + 1,
                        reset_stream: false,
                    };
                    self.out.send(ClusterMessage::Takeover {
                        plan,
                        stream_checked: false,
                    });
                    return;
                }
                Err(_) => {
                    self.conn = None;
                    self.out.nap(Duration::from_millis(200));
                }
            }
        }
    }
}

fn plan(
    conn: &mut Connection,
    key: &str,
    epoch: &str,
    last_stored: u64,
) -> Result<Takeover, StreamError> {
    let top = stream::top(conn, key)?;
    let mut tail = Vec::new();
    if top.as_ref().is_some_and(|t| &*t.epoch == epoch) {
        let mut after = last_stored;
        loop {
            let page = stream::range(conn, key, after, 1000)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            tail.extend(page);
        }
    }
    let plan = core::takeover(epoch, last_stored, &tail, top.as_ref());
    if plan.reset_stream {
        log::info!("[CLUSTER] The stream holds another epoch: resetting it for epoch {epoch}");
        conn.command(&["DEL", key])?;
    }
    Ok(plan)
}

/// The entries above `reported`, moving `reported` to the last of them.
fn unreported<'a>(reported: &mut u64, entries: impl Iterator<Item = &'a Entry>) -> Vec<Entry> {
    let fresh: Vec<Entry> = entries.filter(|e| e.seq > *reported).cloned().collect();
    if let Some(last) = fresh.last() {
        *reported = last.seq;
    }
    fresh
}

/// How many of `refused` (ascending) the stream already holds as they are — the same seq, epoch
/// and payload, from the first one on; 0 when it holds something else there (another node's
/// entries: a real fence) or cannot be read.
fn already_in(conn: &mut Connection, stream: &str, refused: &[Entry]) -> usize {
    let Some(first) = refused.first() else {
        return 0;
    };
    let Ok(held) = stream::range(conn, stream, first.seq.saturating_sub(1), refused.len()) else {
        return 0;
    };
    held.iter()
        .zip(refused)
        .take_while(|(h, r)| h.seq == r.seq && h.epoch == r.epoch && h.payload == r.payload)
        .count()
}
