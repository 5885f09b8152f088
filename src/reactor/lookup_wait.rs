//! When a turn waits for the answers of the lookups it just started, before it flushes.
//!
//! A daemon next to the worker answers a lookup within about a millisecond, but the events the
//! answer completes would wait for the next turn's flush — and with thousands of clients one
//! flush takes tens of milliseconds, so every enriched event would pay a whole extra flush of
//! latency (and, at saturation, the backlog that builds behind it). So a turn whose previous
//! flush took at least [`LONG_FLUSH`] polls again, for at most [`GRACE`], while calls it started
//! are unanswered; whatever arrives meanwhile (answers, frames, clients) is handled as usual and
//! goes out in this turn's flush. With short flushes (few clients, light load) nothing waits.
//! The cost is bounded: at most `GRACE` of idle time per turn of at least `LONG_FLUSH`.

use std::time::Duration;

/// Longest wait for the turn's own lookups.
pub const GRACE: Duration = Duration::from_millis(2);
/// A previous flush at least this long makes the wait worth it.
pub const LONG_FLUSH: Duration = Duration::from_millis(10);

/// Whether this turn waits for its lookups, given how long the last flush took.
pub fn worth_waiting(last_flush: Duration) -> bool {
    last_flush >= LONG_FLUSH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_turns_after_a_long_flush_wait() {
        let ms = Duration::from_millis;
        let cases = [
            (ms(0), false),  // idle worker, few clients
            (ms(3), false),  // a thousand clients, light load: the wait would cost more
            (ms(10), true),  // waiting 2 ms saves a 10 ms flush of latency
            (ms(150), true), // ten thousand clients at saturation
        ];
        for (flush, wait) in cases {
            assert_eq!(worth_waiting(flush), wait, "{flush:?}");
        }
    }
}
