//! A writer thread of the pool: owns one `postgres::Client`, blocks for the first job, drains up
//! to `DB_BATCH_SIZE - 1` more with `try_recv`, and writes the batch in one transaction.
//!
//! Invariants: a writer takes jobs only while the database is ready (lock held, schema current)
//! and its own connection is up; no job is dropped silently: a batch is committed, or handed back to
//! the dispatcher ([`Feedback::Returned`]) to be spooled, or, when the database rejects an event
//! even on its own, logged at error level and counted in `failed`, or, in cluster mode, when the
//! database's fencing term is not the one this node leads with, dropped and counted in `fenced`
//! (a newer leader owns those seqs; docs/cluster.md, "Fencing"). After the shutdown deadline a
//! writer writes nothing more and hands back everything it gets.

use super::conn::{Shared, connect, reconnect_backoff};
use super::error::{Failure, classify, describe};
use super::rows::Batch;
use super::sql::{Statements, Written, write_batch};
use super::stats::DbStats;
use crate::event::Published;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use postgres::Client;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Where a job came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Straight from `submit` (counted in `queue_depth`).
    Live,
    /// Replayed from the spool file by replay generation `generation` (counted in `spooled`).
    Spool(u64),
}

/// One event for the writers.
#[derive(Debug, Clone)]
pub(crate) struct WJob {
    /// The event.
    pub ev: Arc<Published>,
    /// Where it came from (decides the accounting when it is committed or handed back).
    pub origin: Origin,
}

/// What writers tell the dispatcher.
#[derive(Debug)]
pub(crate) enum Feedback {
    /// `n` spooled events of replay generation `generation` are committed.
    Committed { generation: u64, n: u64 },
    /// Live events with these seqs are committed (or rejected for good): durable.
    LiveDone(Vec<u64>),
    /// Jobs that could not be written now (connection lost, not ready, shutdown deadline).
    Returned(Vec<WJob>),
}

/// Everything a writer thread needs.
pub(crate) struct Writer {
    /// Writer number, for logs.
    pub id: usize,
    pub pg: postgres::Config,
    /// Spooled events being replayed (any writer takes them).
    pub jobs: Receiver<WJob>,
    /// Live events, for the first writer only: one consumer commits them in seq order, so a
    /// crash can never leave a later seq stored and an earlier one missing (a hole that a
    /// resuming client would see as a gap).
    pub live: Option<Receiver<WJob>>,
    pub feedback: Sender<Feedback>,
    pub shared: Arc<Shared>,
    pub batch_size: usize,
}

/// How long a writer waits for a job before re-checking its health.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// Attempts at a batch that hit a deadlock or serialization failure.
const RETRIES: u32 = 3;
/// Cluster mode: a writer transaction left idle (its node partitioned or stalled mid-batch) is
/// ended by the server after 5 s, so the `FOR SHARE` lock it holds on the fencing term cannot
/// hold a new leader's term bump for longer (docs/cluster.md, "Fencing").
const CLUSTER_SESSION: &str = "SET idle_in_transaction_session_timeout = '5s'";

impl Writer {
    /// The thread body.
    pub fn run(self) {
        let mut conn: Option<(Client, Statements)> = None;
        let mut backoff = reconnect_backoff(Duration::from_millis(200));
        let mut retry_at = Instant::now();
        loop {
            let usable = self.shared.ready() && !self.shared.past_deadline();
            let broken = conn.as_ref().is_none_or(|(c, _)| c.is_closed());
            if usable && broken && self.shared.ingesting() && Instant::now() >= retry_at {
                conn = self.open();
                match conn {
                    Some(_) => backoff.reset(),
                    None => retry_at = Instant::now() + backoff.next_delay(),
                }
            }
            if !usable || conn.is_none() {
                if self.shared.past_deadline() {
                    if !self.hand_back_queued() {
                        break;
                    }
                } else if self.shared.closing.load(Ordering::Acquire) && self.queues_empty() {
                    break;
                } else {
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
            let first = match self.recv_job(IDLE_CHECK) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < self.batch_size {
                match self.try_job() {
                    Some(j) => batch.push(j),
                    None => break,
                }
            }
            if let Some((client, st)) = conn.as_mut()
                && !self.write(client, st, batch)
            {
                conn = None;
            }
        }
        log::debug!("[DB] Writer {} stopped", self.id);
    }

    /// The next job, live ones first; waits at most `timeout`.
    fn recv_job(&self, timeout: Duration) -> Result<WJob, RecvTimeoutError> {
        let Some(live) = &self.live else {
            return self.jobs.recv_timeout(timeout);
        };
        if let Ok(j) = live.try_recv() {
            return Ok(j);
        }
        crossbeam_channel::select! {
            recv(live) -> j => j.map_err(|_| RecvTimeoutError::Disconnected),
            recv(self.jobs) -> j => j.map_err(|_| RecvTimeoutError::Disconnected),
            default(timeout) => Err(RecvTimeoutError::Timeout),
        }
    }

    /// A job that is already waiting, live ones first.
    fn try_job(&self) -> Option<WJob> {
        self.live
            .as_ref()
            .and_then(|l| l.try_recv().ok())
            .or_else(|| self.jobs.try_recv().ok())
    }

    fn queues_empty(&self) -> bool {
        self.jobs.is_empty() && self.live.as_ref().is_none_or(|l| l.is_empty())
    }

    /// Opens and prepares a connection; logs and returns `None` on failure.
    fn open(&self) -> Option<(Client, Statements)> {
        let cluster = self.shared.lead_term.is_some();
        let setup = |c: &mut Client| {
            c.batch_execute("SET cryptoworker.writer = 'on'")?;
            if cluster {
                c.batch_execute(CLUSTER_SESSION)?;
            }
            Statements::prepare(c)
        };
        match connect(&self.pg).and_then(|mut c| setup(&mut c).map(|s| (c, s))) {
            Ok(pair) => {
                log::debug!("[DB] Writer {} connected", self.id);
                Some(pair)
            }
            Err(e) => {
                log::warn!("[DB] Writer {} cannot connect: {}", self.id, describe(&e));
                None
            }
        }
    }

    /// After the deadline: hands every queued job back. False when the queue is closed and empty.
    fn hand_back_queued(&self) -> bool {
        match self.recv_job(Duration::from_millis(50)) {
            Ok(first) => {
                let mut jobs = vec![first];
                while let Some(j) = self.try_job() {
                    jobs.push(j);
                }
                self.hand_back(jobs);
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    fn hand_back(&self, jobs: Vec<WJob>) {
        if !jobs.is_empty() && self.feedback.send(Feedback::Returned(jobs)).is_err() {
            log::error!(
                "[DB] Writer {}: dispatcher gone, events not persisted",
                self.id
            );
        }
    }

    /// Writes a batch; false when the connection must be dropped.
    fn write(&self, client: &mut Client, st: &Statements, jobs: Vec<WJob>) -> bool {
        if !self.shared.ready() || self.shared.past_deadline() {
            self.hand_back(jobs);
            return true;
        }
        let batch = Batch::build(jobs.iter().map(|j| &*j.ev));
        let fence = self.shared.fence_term();
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            match write_batch(client, st, &batch, fence) {
                Ok(Written::Fenced(stored)) => {
                    self.fenced(&jobs, stored, fence);
                    return true;
                }
                Ok(Written::Committed) => {
                    self.shared.stats.commit_latency.record(started.elapsed());
                    self.shared.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .stats
                        .failed
                        .fetch_add(batch.rejected as u64, Ordering::Relaxed);
                    self.committed(&jobs);
                    return true;
                }
                Err(e) => match classify(&e) {
                    Failure::Retry if attempt < RETRIES => attempt += 1,
                    Failure::Data if jobs.len() > 1 => {
                        log::warn!(
                            "[DB] Batch of {} rejected ({}); writing its events one by one",
                            jobs.len(),
                            describe(&e)
                        );
                        return self.write_singly(client, st, jobs);
                    }
                    Failure::Data => {
                        self.reject(&jobs[0], &e);
                        self.committed(&jobs);
                        return true;
                    }
                    _ => {
                        log::warn!(
                            "[DB] Writer {} lost its connection: {}",
                            self.id,
                            describe(&e)
                        );
                        self.hand_back(jobs);
                        return false;
                    }
                },
            }
        }
    }

    /// Writes each job in its own transaction (after a data error), isolating the bad ones.
    fn write_singly(&self, client: &mut Client, st: &Statements, jobs: Vec<WJob>) -> bool {
        let fence = self.shared.fence_term();
        let mut rest = jobs.into_iter();
        while let Some(job) = rest.next() {
            let batch = Batch::build([&*job.ev]);
            match write_batch(client, st, &batch, fence) {
                Ok(Written::Committed) => {}
                Ok(Written::Fenced(stored)) => {
                    let mut dropped = vec![job];
                    dropped.extend(rest);
                    self.fenced(&dropped, stored, fence);
                    return true;
                }
                Err(e) if classify(&e) == Failure::Data => self.reject(&job, &e),
                Err(e) => {
                    log::warn!(
                        "[DB] Writer {} lost its connection: {}",
                        self.id,
                        describe(&e)
                    );
                    let mut back = vec![job];
                    back.extend(rest);
                    self.hand_back(back);
                    return false;
                }
            }
            self.committed(std::slice::from_ref(&job));
        }
        true
    }

    fn reject(&self, job: &WJob, e: &postgres::Error) {
        log::error!(
            "[DB] Event {}/{} rejected by the database, not stored: {}",
            job.ev.epoch,
            job.ev.seq,
            describe(e)
        );
        self.shared.stats.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Cluster mode: the batch was not written because the database's term is not the one this
    /// node leads with. It is dropped for good (a newer leader owns these seqs), never spooled
    /// or retried; one warning per streak.
    fn fenced(&self, jobs: &[WJob], stored: Option<i64>, leading: Option<u64>) {
        let stats = &self.shared.stats;
        stats.fenced.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        if !self.shared.fenced_warned.swap(true, Ordering::AcqRel) {
            log::warn!(
                "[DB] Not leader any more (database term {}, this node's {}): {} events from \
                 seq {} dropped, not stored",
                stored.map_or("none".to_string(), |t| t.to_string()),
                leading.unwrap_or(0),
                jobs.len(),
                jobs.first().map_or(0, |j| j.ev.seq)
            );
        }
        self.done(jobs);
    }

    /// Accounting for jobs that are committed, or rejected for good.
    fn committed(&self, jobs: &[WJob]) {
        self.shared
            .stats
            .written
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        self.done(jobs);
    }

    /// Accounting for jobs that leave the writers for good (committed, rejected or fenced).
    fn done(&self, jobs: &[WJob]) {
        let stats = &self.shared.stats;
        let live: Vec<u64> = jobs
            .iter()
            .filter(|j| j.origin == Origin::Live)
            .map(|j| j.ev.seq)
            .collect();
        DbStats::sub(&stats.queue_depth, live.len() as u64);
        if !live.is_empty() {
            let _ = self.feedback.send(Feedback::LiveDone(live));
        }
        let mut gens: Vec<(u64, u64)> = Vec::new();
        for j in jobs {
            if let Origin::Spool(g) = j.origin {
                match gens.iter_mut().find(|(x, _)| *x == g) {
                    Some((_, n)) => *n += 1,
                    None => gens.push((g, 1)),
                }
            }
        }
        for (generation, n) in gens {
            let _ = self.feedback.send(Feedback::Committed { generation, n });
        }
    }
}
