//! Per-connection rate limiting of client messages (`WORKER_RATE_LIMIT` / `WORKER_RATE_BURST`
//! in docs/configuration.md; `rate_limited` and close 4029 in docs/protocol.md).
//!
//! A [`TokenBucket`] refills at `rate` tokens per second up to `burst` and starts full; each
//! message takes one token. [`RateGuard`] adds the strike policy: a message without a token is
//! rejected (the connection answers `rate_limited`), and more than `burst` rejections within
//! [`STRIKE_WINDOW`] mean the client ignores the errors, so the connection is closed with 4029.
//!
//! A non-positive or non-finite rate disables limiting. Time comes in as `now`; an instant
//! earlier than the previous one counts as no time passing. Compact: this lives in every
//! connection.

use std::time::{Duration, Instant};

/// Window in which rejections are counted towards a close.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// A token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second; `<= 0` = unlimited.
    rate: f64,
    /// Most tokens held.
    burst: f64,
    /// Tokens held now (as of `last`).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. `burst` is at least one token.
    pub fn new(rate_per_s: f64, burst: f64) -> TokenBucket {
        let burst = if burst.is_finite() {
            burst.max(1.0)
        } else {
            1.0
        };
        let rate = if rate_per_s.is_finite() {
            rate_per_s
        } else {
            0.0
        };
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Handle it.
    Allow,
    /// Drop it and answer `rate_limited`.
    Reject,
    /// Close the connection with 4029.
    Close,
}

/// Token bucket plus strike counting.
#[derive(Debug, Clone)]
pub struct RateGuard {
    /// The message budget.
    pub bucket: TokenBucket,
    /// Rejections in the current window.
    pub strikes: u32,
    /// Start of the current strike window.
    window_start: Option<Instant>,
    /// Rejections tolerated per window (the burst).
    max_strikes: u32,
}

impl RateGuard {
    /// A guard for `rate_per_s` messages per second with bursts of `burst`.
    pub fn new(rate_per_s: f64, burst: f64) -> RateGuard {
        let bucket = TokenBucket::new(rate_per_s, burst);
        // burst is finite and >= 1 here; saturate huge values.
        let max_strikes = bucket.burst.min(f64::from(u32::MAX)) as u32;
        RateGuard {
            bucket,
            strikes: 0,
            window_start: None,
            max_strikes,
        }
    }

    /// Decides what to do with a message arriving at `now`.
    pub fn check(&mut self, now: Instant) -> RateDecision {
        if self.bucket.take(now) {
            return RateDecision::Allow;
        }
        let fresh = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) > STRIKE_WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.strikes = 0;
        }
        self.strikes = self.strikes.saturating_add(1);
        if self.strikes > self.max_strikes {
            RateDecision::Close
        } else {
            RateDecision::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_millis(400)));
        assert!(b.take(t0 + Duration::from_millis(500)));
        assert!(!b.take(t0 + Duration::from_millis(600)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut b = TokenBucket::new(1.0, 1.0);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(3)));
        assert!(!b.take(t0 + Duration::from_millis(500)));
        assert!(b.take(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn zero_rate_is_unlimited_and_bad_burst_is_one() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 0.0);
        assert!((0..1000).all(|_| b.take(t0)));
        let mut b = TokenBucket::new(1.0, f64::NAN);
        assert!(b.take(t0));
        assert!(!b.take(t0));
    }

    #[test]
    fn guard_rejects_then_closes_after_burst_strikes() {
        let t0 = Instant::now();
        let mut g = RateGuard::new(1.0, 2.0);
        assert_eq!(g.check(t0), RateDecision::Allow);
        assert_eq!(g.check(t0), RateDecision::Allow);
        assert_eq!(g.check(t0), RateDecision::Reject);
        assert_eq!(g.check(t0), RateDecision::Reject);
        assert_eq!(g.check(t0), RateDecision::Close);
    }

    #[test]
    fn strikes_expire_with_the_window() {
        let t0 = Instant::now();
        let mut g = RateGuard::new(0.01, 1.0);
        assert_eq!(g.check(t0), RateDecision::Allow);
        assert_eq!(g.check(t0), RateDecision::Reject);
        let later = t0 + STRIKE_WINDOW + Duration::from_secs(1);
        // Still no token (rate 0.01/s), but the old strike no longer counts.
        assert_eq!(g.check(later), RateDecision::Reject);
        assert_eq!(g.strikes, 1);
        assert_eq!(g.check(later), RateDecision::Close);
    }
}
