//! Exponential reconnect backoff with jitter, shared by every reconnecting link.
//!
//! Attempt `n` has the ceiling `min(max, base * 2^n)`. The [`Jitter`] decides the actual wait:
//! - [`Jitter::Full`] waits a uniform random time in `[0, ceiling]` (the "full jitter" of the AWS
//!   architecture blog), so many workers restarting together do not reconnect in lockstep — the
//!   daemon links use it;
//! - [`Jitter::Spread`] waits the ceiling ±25 %, never more than `max` — the database threads use
//!   it, so a database that comes back is noticed within about `max`.

use super::rng::Rng;
use std::time::Duration;

/// How the wait is drawn below or around the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]`.
    Full,
    /// Uniform in `[0.75, 1.25] × ceiling` (in steps of 0.001), capped at `max`.
    Spread,
}

/// Backoff state for one reconnecting link.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
    attempt: u32,
    rng: Rng,
}

impl Backoff {
    /// Starts at `base`, doubling up to `max`, with full jitter.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff::with_jitter(base, max, Jitter::Full)
    }

    /// Starts at `base`, doubling up to `max`, with the given jitter.
    pub fn with_jitter(base: Duration, max: Duration, jitter: Jitter) -> Backoff {
        Backoff {
            base,
            max,
            jitter,
            attempt: 0,
            rng: Rng::from_os(),
        }
    }

    /// The upper bound of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(16);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay; each call doubles the ceiling until `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        match self.jitter {
            Jitter::Full => ceiling.mul_f64(self.rng.next_f64()),
            Jitter::Spread => {
                let factor = self.rng.below(501) as f64 / 1000.0 + 0.75;
                ceiling.mul_f64(factor).min(self.max)
            }
        }
    }

    /// Forgets past failures (after a success or a healthy period).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// One caller's parameters and what its first delays must look like.
    struct Case {
        jitter: Jitter,
        base_ms: u64,
        max_ms: u64,
        /// Ceilings of the first calls, in ms.
        ceilings: &'static [u64],
        /// Delay bounds as fractions of the ceiling (then capped at `max`).
        band: (f64, f64),
    }

    const CASES: &[Case] = &[
        // Daemon links: 500 ms doubling to 30 s, anywhere below the ceiling.
        Case {
            jitter: Jitter::Full,
            base_ms: 500,
            max_ms: 30_000,
            ceilings: &[500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000],
            band: (0.0, 1.0),
        },
        // Database supervisor and listener: 500 ms doubling to 2 s, ±25 %.
        Case {
            jitter: Jitter::Spread,
            base_ms: 500,
            max_ms: 2000,
            ceilings: &[500, 1000, 2000, 2000],
            band: (0.75, 1.25),
        },
        // Database writers: 200 ms doubling to 2 s, ±25 %.
        Case {
            jitter: Jitter::Spread,
            base_ms: 200,
            max_ms: 2000,
            ceilings: &[200, 400, 800, 1600, 2000, 2000],
            band: (0.75, 1.25),
        },
    ];

    #[test]
    fn ceilings_double_to_the_cap_and_delays_stay_in_their_band() {
        for case in CASES {
            let (lo, hi) = case.band;
            for _ in 0..50 {
                let mut b = Backoff::with_jitter(ms(case.base_ms), ms(case.max_ms), case.jitter);
                for &c in case.ceilings {
                    assert_eq!(
                        b.ceiling(),
                        ms(c),
                        "{:?} from {}",
                        case.jitter,
                        case.base_ms
                    );
                    let d = b.next_delay();
                    let (low, high) = (ms(c).mul_f64(lo), ms(c).mul_f64(hi).min(ms(case.max_ms)));
                    assert!(d >= low && d <= high, "{d:?} not in {low:?}..={high:?}");
                }
                b.reset();
                assert_eq!(b.ceiling(), ms(case.base_ms));
            }
        }
    }

    #[test]
    fn a_long_outage_keeps_waiting_near_the_cap_and_never_past_it() {
        let max = Duration::from_secs(2);
        let mut b = Backoff::with_jitter(ms(500), max, Jitter::Spread);
        let delays: Vec<Duration> = (0..40).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= max), "{delays:?}");
        assert!(delays[10..].iter().all(|d| *d >= ms(1500)), "{delays:?}");
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let mut b = Backoff::new(ms(1000), ms(1000));
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!(delays.iter().any(|d| *d < ms(250)), "{delays:?}");
        assert!(delays.iter().any(|d| *d > ms(750)), "{delays:?}");
    }
}
