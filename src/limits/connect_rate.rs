//! The per-node limit on new WebSocket upgrades per second
//! (`--connection-rate-limit`), so a reconnect storm after another node's
//! restart is refused cheaply (503 + `Retry-After`) instead of knocking this
//! node over too. A token bucket refilled continuously; one tiny lock taken
//! once per handshake, never on the message path.

use std::time::Instant;

use parking_lot::Mutex;

pub struct ConnectRateLimiter {
    per_second: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl ConnectRateLimiter {
    /// `None` when `per_second` is 0 (unlimited).
    pub fn new(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| ConnectRateLimiter {
            per_second: f64::from(per_second),
            // Start full: a burst of one second's worth is allowed.
            bucket: Mutex::new((f64::from(per_second), Instant::now())),
        })
    }

    /// Takes one token at `now`, or says no.
    pub fn try_acquire(&self, now: Instant) -> bool {
        let mut bucket = self.bucket.lock();
        let (tokens, last) = &mut *bucket;
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.per_second);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        assert!(ConnectRateLimiter::new(0).is_none());
        let limiter = ConnectRateLimiter::new(10).expect("limited");
        let t0 = Instant::now();
        let admitted = (0..25).filter(|_| limiter.try_acquire(t0)).count();
        assert_eq!(admitted, 10);
        assert!(!limiter.try_acquire(t0 + Duration::from_millis(50)));
        assert!(limiter.try_acquire(t0 + Duration::from_millis(150)));
    }
}
