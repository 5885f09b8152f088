//! The durability watermark: the highest seq `D` such that every live event with `seq <= D` is
//! durable — committed to PostgreSQL, or appended to the spool file and `fsync`ed. The reactor
//! delivers an event to clients only once its seq is at or below the watermark, so an event a
//! client has seen survives any crash of the process (see docs/database.md, "Durability").
//!
//! Sans-io: the dispatcher thread reports what happens to each live event and reads the
//! watermark; nothing here touches a file, a socket or a clock.
//!
//! Invariants: the watermark never decreases and never passes a seq that was received and is
//! not yet durable; an event rejected by the database for its data (it can never be stored) is
//! counted as done, so one bad event cannot stall the stream for good.

use std::collections::BTreeSet;

/// Tracks which live events are not durable yet.
#[derive(Debug)]
pub(crate) struct Durability {
    /// Highest live seq received from the reactor (or the starting point).
    received: u64,
    /// Live seqs received and not yet durable.
    outstanding: BTreeSet<u64>,
    /// Live seqs appended to the spool since its last `fsync`.
    unsynced: Vec<u64>,
    /// The last watermark handed out by [`Durability::advance`].
    published: u64,
}

impl Durability {
    /// Everything up to `last_seq` is durable already (it was read back from the database and
    /// the spool at start).
    pub fn starting_at(last_seq: u64) -> Durability {
        Durability {
            received: last_seq,
            outstanding: BTreeSet::new(),
            unsynced: Vec::new(),
            published: last_seq,
        }
    }

    /// A live event entered the dispatcher.
    pub fn received(&mut self, seq: u64) {
        self.received = self.received.max(seq);
        self.outstanding.insert(seq);
    }

    /// Live events are committed (or rejected for good) by a writer.
    pub fn committed(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.outstanding.remove(seq);
        }
    }

    /// A live event was appended to the spool (durable at the next `fsync`).
    pub fn spooled(&mut self, seq: u64) {
        self.unsynced.push(seq);
    }

    /// Whether spooled events wait for an `fsync` to become durable.
    pub fn needs_sync(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// The spool was `fsync`ed: everything appended before is durable.
    pub fn synced(&mut self) {
        for seq in self.unsynced.drain(..) {
            self.outstanding.remove(&seq);
        }
    }

    /// The current watermark.
    pub fn watermark(&self) -> u64 {
        match self.outstanding.first() {
            Some(&first) => first.saturating_sub(1),
            None => self.received,
        }
    }

    /// The watermark when it moved since the last call, else `None`.
    pub fn advance(&mut self) -> Option<u64> {
        let w = self.watermark();
        (w > self.published).then(|| {
            self.published = w;
            w
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_stops_below_the_first_event_not_durable() {
        let mut d = Durability::starting_at(10);
        assert_eq!(d.watermark(), 10);
        for seq in 11..=15 {
            d.received(seq);
        }
        assert_eq!(d.advance(), None, "nothing durable yet");
        d.committed(&[12, 13]);
        assert_eq!(d.watermark(), 10, "11 is still in flight");
        d.committed(&[11]);
        assert_eq!(d.advance(), Some(13));
        assert_eq!(d.advance(), None, "reported once");
        d.committed(&[15, 14]);
        assert_eq!(d.advance(), Some(15));
        assert!(d.outstanding.is_empty());
    }

    #[test]
    fn spooled_events_are_durable_only_after_fsync() {
        let mut d = Durability::starting_at(0);
        d.received(1);
        d.received(2);
        d.spooled(1);
        d.spooled(2);
        assert!(d.needs_sync());
        assert_eq!(d.advance(), None, "appended but not fsynced");
        d.synced();
        assert!(!d.needs_sync());
        assert_eq!(d.advance(), Some(2));
    }

    #[test]
    fn an_event_handed_back_by_a_writer_waits_for_the_spool() {
        // The writer lost its connection: seq 2 goes from the writers to the spool.
        let mut d = Durability::starting_at(0);
        for seq in 1..=3 {
            d.received(seq);
        }
        d.committed(&[1, 3]);
        assert_eq!(d.advance(), Some(1));
        d.spooled(2);
        assert_eq!(d.advance(), None);
        d.synced();
        assert_eq!(d.advance(), Some(3));
    }

    #[test]
    fn the_watermark_never_goes_back() {
        let mut d = Durability::starting_at(5);
        d.received(6);
        d.committed(&[6]);
        assert_eq!(d.advance(), Some(6));
        d.committed(&[6]);
        d.synced();
        assert_eq!(d.watermark(), 6);
        assert_eq!(d.advance(), None);
    }
}
