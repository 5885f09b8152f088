//! The dispatcher thread: the only consumer of the reactor's intake queue and the only owner of
//! the spool. It routes each event to the writer pool or to the spool, replays the spool when the
//! database is back, and flushes everything at shutdown.
//!
//! Routing: an event goes straight to the writers only while the spool is empty, no replay is
//! running, the database is ready and the live queue has room (`try_send`); otherwise it is
//! appended to the spool. Live events go to a queue that only the first writer reads, so they are
//! committed in seq order (no crash can leave a stored seq after a missing one); spooled events
//! being replayed go to a queue every writer reads. So once anything is spooled, later events queue behind it in the file
//! and the spool is replayed in order.
//!
//! Replay: the file is read from the start and fed to the writers as their queue has room, tagged
//! with a replay generation. When everything up to the end of the file is committed, the file is
//! truncated. A spooled job handed back (connection lost) aborts the replay; it restarts from the
//! start of the file later, which is safe because writes are idempotent. Acknowledgements of an
//! aborted generation are ignored.
//!
//! Durability: the dispatcher keeps the watermark of `durable.rs` — it learns which live events
//! the writers committed and `fsync`s the spool right after each batch of routing (group
//! commit), then publishes the watermark in `Shared::durable_seq` and wakes the reactor, which
//! releases those events to clients.
//!
//! Invariant: an event accepted by `submit` ends up committed or in the spool file; when the
//! disk refuses an append, the event is kept and the append retried (it is not durable, so the
//! reactor does not release it), and `dropped` counts it only if the process stops first.

use super::conn::Shared;
use super::durable::Durability;
use super::spool::{Spool, SpoolReader};
use super::stats::DbStats;
use super::writer::{Feedback, Origin, WJob};
use crate::event::Published;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, select};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Housekeeping period when no message arrives.
const TICK: Duration = Duration::from_millis(20);
/// Pause before a replay is retried after an aborted one.
const REPLAY_RETRY: Duration = Duration::from_secs(1);
/// Extra time after the shutdown deadline to collect jobs writers hand back.
const GRACE: Duration = Duration::from_secs(2);

/// A spool replay in progress.
struct Replay {
    generation: u64,
    reader: SpoolReader,
    /// A job read from the file that did not fit into the writers' queue yet.
    pending: Option<WJob>,
    /// Jobs sent to the writers and not yet committed.
    inflight: u64,
    started: Instant,
    total: u64,
}

/// The dispatcher's state.
pub(crate) struct Dispatcher {
    pub intake: Receiver<Arc<Published>>,
    /// Spooled events for every writer.
    pub writer_tx: Option<Sender<WJob>>,
    /// Live events for the first writer, which commits them in seq order.
    pub live_tx: Option<Sender<WJob>>,
    pub live_rx: Receiver<WJob>,
    /// A receiver of the writers' queue, to pull jobs back into the spool while not ready.
    pub writer_rx: Receiver<WJob>,
    pub feedback: Receiver<Feedback>,
    pub spool: Spool,
    pub shared: Arc<Shared>,
    replay: Option<Replay>,
    generation: u64,
    replay_after: Instant,
    /// An error-level log was written for the current streak of spool write failures.
    disk_error_logged: bool,
    /// Which live events are durable.
    durability: Durability,
    /// Live events the spool could not take (disk error), retried in order.
    disk_retry: VecDeque<Arc<Published>>,
    /// Live events handed to the writers (queue or batch) and not yet committed or returned.
    at_writers: BTreeSet<u64>,
    /// Live events that must wait before going to the spool because an older one is still with
    /// a writer: spooling them first would make a later seq durable before an earlier one, and
    /// a crash would then leave a hole in the log.
    order_wait: BTreeMap<u64, Arc<Published>>,
}

impl Dispatcher {
    /// A dispatcher over the given queues and spool.
    pub fn new(
        intake: Receiver<Arc<Published>>,
        writer_tx: Sender<WJob>,
        writer_rx: Receiver<WJob>,
        live: (Sender<WJob>, Receiver<WJob>),
        feedback: Receiver<Feedback>,
        spool: Spool,
        shared: Arc<Shared>,
    ) -> Dispatcher {
        shared.stats.spooled.store(spool.lines(), Ordering::Relaxed);
        let durable = shared.durable_seq.load(Ordering::Acquire);
        Dispatcher {
            durability: Durability::starting_at(durable),
            disk_retry: VecDeque::new(),
            at_writers: BTreeSet::new(),
            order_wait: BTreeMap::new(),
            intake,
            writer_tx: Some(writer_tx),
            writer_rx,
            live_tx: Some(live.0),
            live_rx: live.1,
            feedback,
            spool,
            shared,
            replay: None,
            generation: 0,
            replay_after: Instant::now(),
            disk_error_logged: false,
        }
    }

    /// The thread body: runs until the intake queue is closed, then flushes.
    pub fn run(mut self) {
        loop {
            select! {
                recv(self.intake) -> msg => match msg {
                    Ok(ev) => {
                        self.route(ev);
                        for ev in self.intake.try_iter().take(1023).collect::<Vec<_>>() {
                            self.route(ev);
                        }
                    }
                    Err(_) => break,
                },
                recv(self.feedback) -> f => match f {
                    Ok(f) => {
                        self.on_feedback(f);
                        for f in self.feedback.try_iter().take(1023).collect::<Vec<_>>() {
                            self.on_feedback(f);
                        }
                    }
                    Err(_) => self.feedback = crossbeam_channel::never(),
                },
                default(TICK) => {}
            }
            self.maintain();
            self.publish_durable();
        }
        self.shutdown();
    }

    /// Group commit of the spool, then the new watermark to the reactor (if it moved).
    fn publish_durable(&mut self) {
        self.sync_spool();
        if let Some(w) = self.durability.advance() {
            self.shared.durable_seq.store(w, Ordering::Release);
            (self.shared.wake)();
        }
    }

    /// `fsync`s the spool when live events wait in it to become durable.
    fn sync_spool(&mut self) {
        if !self.durability.needs_sync() {
            return;
        }
        match self.spool.maybe_sync(true) {
            Ok(()) => self.durability.synced(),
            Err(e) => log::error!("[DB] Cannot fsync the spool: {e}"),
        }
    }

    /// Sends a live event to the writers when that keeps the order, else spools it.
    fn route(&mut self, ev: Arc<Published>) {
        self.durability.received(ev.seq);
        let direct = self.spool.is_empty() && self.replay.is_none() && self.shared.ready();
        let seq = ev.seq;
        let ev = match (&self.live_tx, direct) {
            (Some(tx), true) => match tx.try_send(WJob {
                ev,
                origin: Origin::Live,
            }) {
                Ok(()) => {
                    self.at_writers.insert(seq);
                    return;
                }
                Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => j.ev,
            },
            _ => ev,
        };
        self.spool_live(ev);
    }

    /// Appends a live event to the spool and moves it from `queue_depth` to `spooled`. When
    /// the disk refuses it, the event waits in `disk_retry` (not durable, so not delivered).
    fn spool_live(&mut self, ev: Arc<Published>) {
        if self.at_writers.first().is_some_and(|&w| w < ev.seq) {
            self.order_wait.insert(ev.seq, ev);
            return;
        }
        if !self.disk_retry.is_empty() {
            self.disk_retry.push_back(ev);
            return;
        }
        if let Err(ev) = self.try_spool(ev) {
            self.disk_retry.push_back(ev);
        }
    }

    fn try_spool(&mut self, ev: Arc<Published>) -> Result<(), Arc<Published>> {
        let stats = &self.shared.stats;
        match self.spool.append(&ev) {
            Ok(()) => {
                DbStats::sub(&stats.queue_depth, 1);
                stats.spooled.fetch_add(1, Ordering::Relaxed);
                self.durability.spooled(ev.seq);
                if self.disk_error_logged {
                    log::warn!("[DB] The spool accepts writes again");
                    self.disk_error_logged = false;
                }
                Ok(())
            }
            Err(e) => {
                if !self.disk_error_logged {
                    log::error!(
                        "[DB] Cannot write the spool ({e}); events wait (undelivered) and the \
                         write is retried"
                    );
                    self.disk_error_logged = true;
                }
                Err(ev)
            }
        }
    }

    /// Spools the waiting events whose older ones are no longer with a writer, in seq order.
    fn flush_order_wait(&mut self) {
        while let Some(entry) = self.order_wait.first_entry() {
            if self.at_writers.first().is_some_and(|&w| w < *entry.key()) {
                return;
            }
            let ev = entry.remove();
            self.spool_live(ev);
        }
    }

    /// Retries the spool appends the disk refused, in order.
    fn retry_disk(&mut self) {
        while let Some(ev) = self.disk_retry.pop_front() {
            if let Err(ev) = self.try_spool(ev) {
                self.disk_retry.push_front(ev);
                return;
            }
        }
    }

    fn on_feedback(&mut self, f: Feedback) {
        match f {
            Feedback::Committed { generation, n } => {
                if let Some(r) = self.replay.as_mut().filter(|r| r.generation == generation) {
                    r.inflight = r.inflight.saturating_sub(n);
                    DbStats::sub(&self.shared.stats.spooled, n);
                }
            }
            Feedback::LiveDone(seqs) => {
                for seq in &seqs {
                    self.at_writers.remove(seq);
                }
                self.durability.committed(&seqs);
                self.flush_order_wait();
            }
            Feedback::Returned(jobs) => {
                for job in &jobs {
                    self.at_writers.remove(&job.ev.seq);
                }
                for job in jobs {
                    match job.origin {
                        Origin::Live => self.spool_live(job.ev),
                        Origin::Spool(g)
                            if self.replay.as_ref().is_some_and(|r| r.generation == g) =>
                        {
                            self.abort_replay("a writer lost its connection")
                        }
                        Origin::Spool(_) => {}
                    }
                }
                self.flush_order_wait();
            }
        }
    }

    /// Periodic work: pull jobs back while not ready, fsync, drive the replay.
    fn maintain(&mut self) {
        let ready = self.shared.ready();
        if !ready {
            self.pull_back();
            if self.replay.is_some() {
                self.abort_replay("the database is not ready");
            }
        }
        self.retry_disk();
        self.sync_spool();
        if ready && !self.spool.is_empty() && !self.shared.past_deadline() {
            if self.replay.is_none() && Instant::now() >= self.replay_after {
                self.start_replay();
            }
            self.pump();
        }
    }

    /// Moves live jobs still waiting in the writers' queue into the spool.
    fn pull_back(&mut self) {
        while let Ok(job) = self
            .live_rx
            .try_recv()
            .or_else(|_| self.writer_rx.try_recv())
        {
            match job.origin {
                Origin::Live => {
                    self.at_writers.remove(&job.ev.seq);
                    self.spool_live(job.ev);
                }
                Origin::Spool(_) => {}
            }
        }
        self.flush_order_wait();
    }

    fn start_replay(&mut self) {
        self.generation += 1;
        match self.spool.reader() {
            Ok(reader) => {
                log::info!("[DB] Replaying {} spooled events", self.spool.lines());
                self.replay = Some(Replay {
                    generation: self.generation,
                    reader,
                    pending: None,
                    inflight: 0,
                    started: Instant::now(),
                    total: self.spool.lines(),
                });
            }
            Err(e) => {
                log::error!("[DB] Cannot read the spool: {e}");
                self.replay_after = Instant::now() + REPLAY_RETRY;
            }
        }
    }

    fn abort_replay(&mut self, why: &str) {
        if let Some(r) = self.replay.take() {
            log::warn!("[DB] Spool replay interrupted ({why}); it will restart");
            drop(r);
            self.shared
                .stats
                .spooled
                .store(self.spool.lines(), Ordering::Relaxed);
            self.replay_after = Instant::now() + REPLAY_RETRY;
        }
    }

    /// Feeds spooled events to the writers while their queue has room; truncates at the end.
    fn pump(&mut self) {
        let (Some(r), Some(tx)) = (self.replay.as_mut(), self.writer_tx.as_ref()) else {
            return;
        };
        if let Err(e) = self.spool.flush() {
            log::error!("[DB] Cannot flush the spool: {e}");
            return;
        }
        let limit = self.spool.bytes();
        loop {
            let job = match r.pending.take() {
                Some(j) => j,
                None => match r.reader.next_event(limit) {
                    Ok(Some(Ok(ev))) => WJob {
                        ev: Arc::new(ev),
                        origin: Origin::Spool(r.generation),
                    },
                    Ok(Some(Err(why))) => {
                        log::warn!("[DB] Skipping an unreadable spool line: {why}");
                        DbStats::sub(&self.shared.stats.spooled, 1);
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log::error!("[DB] Cannot read the spool: {e}");
                        self.abort_replay("read error");
                        return;
                    }
                },
            };
            match tx.try_send(job) {
                Ok(()) => r.inflight += 1,
                Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => {
                    r.pending = Some(j);
                    return;
                }
            }
        }
        if r.reader.offset() >= limit && r.inflight == 0 {
            self.finish_replay();
        }
    }

    fn finish_replay(&mut self) {
        let Some(r) = self.replay.take() else { return };
        match self.spool.truncate() {
            Ok(()) => {
                self.shared.stats.spooled.store(0, Ordering::Relaxed);
                log::info!(
                    "[DB] Spool replayed ({} events at start, {} bytes in all) in {:.1} s; \
                     spool emptied",
                    r.total,
                    r.reader.offset(),
                    r.started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                log::error!("[DB] Cannot truncate the spool ({e}); it will be replayed again");
                self.replay_after = Instant::now() + REPLAY_RETRY;
            }
        }
    }

    /// After the intake closed: write what can be written before the deadline, spool the rest.
    fn shutdown(&mut self) {
        while !self.shared.past_deadline() && self.shared.ready() {
            let live_pending = !self.writer_rx.is_empty()
                || !self.live_rx.is_empty()
                || self.shared.stats.queue_depth.load(Ordering::Relaxed) > 0;
            if self.spool.is_empty() && !live_pending {
                break;
            }
            match self.feedback.recv_timeout(TICK) {
                Ok(f) => self.on_feedback(f),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.maintain();
        }
        self.replay = None;
        self.writer_tx = None;
        self.live_tx = None;
        self.shared.closing.store(true, Ordering::Release);
        self.pull_back();
        let give_up = self.shared.deadline().unwrap_or_else(Instant::now) + GRACE;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            match self
                .feedback
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(f) => self.on_feedback(f),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) if left.is_zero() => {
                    log::error!("[DB] Writers did not finish in time; their batches may be lost");
                    break;
                }
                Err(RecvTimeoutError::Timeout) => self.pull_back(),
            }
        }
        self.pull_back();
        // Writers are done: whatever still waits for order goes to the spool now.
        self.at_writers.clear();
        self.flush_order_wait();
        self.retry_disk();
        if let Err(e) = self.spool.maybe_sync(true) {
            log::error!("[DB] Cannot fsync the spool at shutdown: {e}");
        }
        let lost = self.disk_retry.len() as u64;
        if lost > 0 {
            let stats = &self.shared.stats;
            DbStats::sub(&stats.queue_depth, lost);
            stats.dropped.fetch_add(lost, Ordering::Relaxed);
            log::error!("[DB] {lost} events could not be spooled before exit (never delivered)");
        }
        // Whatever is in the file now waits for the next start.
        self.shared
            .stats
            .spooled
            .store(self.spool.lines(), Ordering::Relaxed);
        let s = self.shared.stats.snapshot();
        log::info!(
            "[DB] Persistence stopped: {} events written, {} left in the spool, {} dropped",
            s.written,
            s.spooled,
            s.dropped
        );
    }
}
