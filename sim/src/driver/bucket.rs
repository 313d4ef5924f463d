//! Per-host token buckets, as Kraken's bandwidth limiter (`utils/bandwidth/limiter.go`) applies them
//! to piece payloads: a rate in bytes per second and a burst of tokens that accumulate while idle.
//!
//! A reservation takes its bytes at once and may drive the balance negative; the caller then sleeps
//! until the debt is repaid. Reservations are therefore served in the order they are made, and the
//! long-run rate is exact whatever the sleep granularity (turmoil wakes tasks on its clock, real
//! sockets on the OS timer): a late wake-up leaves tokens that the next reservation uses.

use std::cell::Cell;
use std::time::Duration;

/// One direction of one host's link.
#[derive(Debug)]
pub struct TokenBucket {
    /// Bytes per second; 0 is unlimited.
    rate: f64,
    /// Most tokens (bytes) saved up while idle.
    burst: f64,
    tokens: Cell<f64>,
    /// Time of the last refill, since the start of the run.
    at: Cell<Duration>,
}

impl TokenBucket {
    /// A bucket that starts full.
    pub fn new(rate_bytes_per_s: u64, burst_bytes: u64) -> Self {
        let burst = burst_bytes as f64;
        TokenBucket {
            rate: rate_bytes_per_s as f64,
            burst,
            tokens: Cell::new(burst),
            at: Cell::new(Duration::ZERO),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.rate <= 0.0
    }

    /// Reserves `n` bytes at `now`; returns how long the caller must wait before using them.
    pub fn reserve(&self, now: Duration, n: u64) -> Duration {
        if self.is_unlimited() {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_sub(self.at.get()).as_secs_f64();
        self.at.set(now.max(self.at.get()));
        let tokens = (self.tokens.get() + elapsed * self.rate).min(self.burst) - n as f64;
        self.tokens.set(tokens);
        if tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-tokens / self.rate) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_run_rate_is_exact_and_burst_is_capped() {
        let b = TokenBucket::new(1000, 100);
        // The first 100 bytes are free (a full bucket), the next 900 wait 0.9 s.
        assert_eq!(b.reserve(Duration::ZERO, 100), Duration::ZERO);
        assert_eq!(b.reserve(Duration::ZERO, 900), Duration::from_millis(900));
        // Waking late (at 2 s instead of 0.9 s) saves at most the burst.
        let wait = b.reserve(Duration::from_secs(2), 1000);
        assert_eq!(wait, Duration::from_millis(900));
        // Unlimited never waits.
        assert_eq!(TokenBucket::new(0, 0).reserve(Duration::ZERO, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn reservations_are_served_in_order() {
        let b = TokenBucket::new(1_000_000, 0);
        let a = b.reserve(Duration::ZERO, 500_000);
        let c = b.reserve(Duration::ZERO, 500_000);
        assert_eq!((a, c), (Duration::from_millis(500), Duration::from_secs(1)));
    }
}
