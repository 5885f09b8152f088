//! When a turn waits for the answers of the lookups it just started, before it flushes.
//!
//! A daemon next to the worker answers a lookup within about a millisecond, but the events the
//! answer completes would wait for the next turn's flush — and with thousands of clients one
//! flush takes tens of milliseconds, so every enriched event would pay a whole extra flush of
//! latency (and, at saturation, the backlog that builds behind it). So a turn whose previous
//! flush took at least [`LONG_FLUSH`] polls again while calls it started are unanswered, for at
//! most a twentieth of that flush (between [`MIN_GRACE`] and [`MAX_GRACE`]); whatever arrives
//! meanwhile (answers, frames, clients) is handled as usual and goes out in this turn's flush.
//! With short flushes (few clients, light load) nothing waits. The cost is bounded: when the
//! daemon answers at once the wait ends with the last answer; when it is slow, a turn idles at
//! most 5 % of its flush time (20 % for the shortest long flushes).

use std::time::Duration;

/// A previous flush at least this long makes waiting worth it.
pub const LONG_FLUSH: Duration = Duration::from_millis(10);
/// Shortest wait for the turn's own lookups.
pub const MIN_GRACE: Duration = Duration::from_millis(2);
/// Longest wait for the turn's own lookups.
pub const MAX_GRACE: Duration = Duration::from_millis(10);

/// How long this turn may wait for its lookups, given how long the last flush took; `None`
/// when it should not wait.
pub fn grace(last_flush: Duration) -> Option<Duration> {
    (last_flush >= LONG_FLUSH).then(|| (last_flush / 20).clamp(MIN_GRACE, MAX_GRACE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_turns_after_a_long_flush_wait_and_never_long() {
        let ms = Duration::from_millis;
        let cases = [
            (ms(0), None),            // idle worker, few clients
            (ms(3), None),            // a thousand clients, light load: waiting would cost more
            (ms(10), Some(ms(2))),    // waiting 2 ms can save a 10 ms flush of latency
            (ms(100), Some(ms(5))),   // ten thousand clients: a twentieth of the flush
            (ms(1000), Some(ms(10))), // a backlog: never more than 10 ms
        ];
        for (flush, wait) in cases {
            assert_eq!(grace(flush), wait, "{flush:?}");
        }
    }
}
