//! The stream reader thread: follows the stream with blocking `XREAD` from its position and sends
//! what it reads to the reactor ([`ClusterMessage::Entries`]), in order.
//!
//! It reconnects with backoff, logging once per state change. After each (re)connect and each
//! [`ReaderCommand::ReadFrom`] it checks whether the stream still holds what follows its position
//! ([`ClusterMessage::Trimmed`] when not). When the stream's top falls below its position (the
//! stream was reset for a new epoch) it starts again from the beginning.
//!
//! Invariants: entries are sent in ascending seq order from one position; a position change comes
//! only from the reactor or from a reset; the thread blocks at most [`BLOCK`] (plus the send to a
//! full queue) between two looks at its commands and the stop flag.

use super::redis::{Connection, RedisUrl};
use super::stream::{self, StreamError};
use super::{ClusterConfig, ClusterMessage, Outbox};
use crate::util::backoff::Backoff;
use crossbeam_channel::Receiver;
use std::time::Duration;

/// Longest `XREAD BLOCK`.
pub const BLOCK: Duration = Duration::from_millis(500);
/// Entries per `XREAD`.
pub const BATCH: usize = 1024;

/// What the reactor can ask of the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderCommand {
    /// Continue with the entries after this seq.
    ReadFrom(u64),
}

/// The reader thread's state.
pub struct StreamReader {
    url: RedisUrl,
    stream: String,
    after: u64,
    check_trim: bool,
    commands: Receiver<ReaderCommand>,
    out: Outbox,
}

impl StreamReader {
    pub(crate) fn new(
        cfg: &ClusterConfig,
        after: u64,
        commands: Receiver<ReaderCommand>,
        out: Outbox,
    ) -> StreamReader {
        StreamReader {
            url: cfg.redis.clone(),
            stream: cfg.stream_key(),
            after,
            check_trim: true,
            commands,
            out,
        }
    }

    /// The thread body.
    pub fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut up: Option<bool> = None;
        while !self.out.stopping() {
            let mut conn = match Connection::open(&self.url) {
                Ok(c) => c,
                Err(e) => {
                    if up != Some(false) {
                        log::warn!(
                            "[CLUSTER] Redis {} unreachable ({e}); clients are served from the event log meanwhile",
                            self.url.describe()
                        );
                        up = Some(false);
                        self.out.send(ClusterMessage::RedisLink { up: false });
                    }
                    self.out.nap(backoff.next_delay());
                    continue;
                }
            };
            backoff.reset();
            if up != Some(true) {
                log::info!(
                    "[CLUSTER] Reading the event stream from Redis {}",
                    self.url.describe()
                );
                up = Some(true);
                self.out.send(ClusterMessage::RedisLink { up: true });
            }
            self.check_trim = true;
            if let Err(e) = self.follow(&mut conn) {
                log::warn!("[CLUSTER] Stream reader: {e}; reconnecting");
                up = Some(false);
                self.out.send(ClusterMessage::RedisLink { up: false });
            }
        }
    }

    /// Reads until stop (`Ok`) or a Redis failure.
    fn follow(&mut self, conn: &mut Connection) -> Result<(), StreamError> {
        while !self.out.stopping() {
            while let Ok(ReaderCommand::ReadFrom(after)) = self.commands.try_recv() {
                self.after = after;
                self.check_trim = true;
            }
            if std::mem::take(&mut self.check_trim)
                && let Some(first) = stream::trimmed_past(conn, &self.stream, self.after)?
            {
                log::info!(
                    "[CLUSTER] The stream starts at seq {first}, past {}: the event log fills in",
                    self.after
                );
                self.out.send(ClusterMessage::Trimmed { first });
            }
            let entries = stream::read(conn, &self.stream, self.after, BATCH, BLOCK)?;
            match entries.last() {
                Some(last) => {
                    self.after = last.seq;
                    self.out.send(ClusterMessage::Entries(entries));
                }
                None => self.check_reset(conn)?,
            }
        }
        Ok(())
    }

    /// After an idle read: a top below the position means the stream was reset; start over.
    fn check_reset(&mut self, conn: &mut Connection) -> Result<(), StreamError> {
        if let Some(top) = stream::last_seq(conn, &self.stream)?
            && top < self.after
        {
            log::info!(
                "[CLUSTER] The stream's top ({top}) is below seq {}: it was reset, reading it from the start",
                self.after
            );
            self.after = 0;
        }
        Ok(())
    }
}
