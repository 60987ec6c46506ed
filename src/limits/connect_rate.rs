//! The per-node limit on new WebSocket upgrades per second
//! (`--connection-rate-limit`), so a reconnect storm after another node's
//! restart is refused cheaply (503 + `Retry-After`) instead of knocking this
//! node over too.
//!
//! Two kinds of token bucket, refilled continuously, both at the flag's
//! rate with a one-second burst:
//! - the node's bucket, charged before the signature check and refunded
//!   when the token turns out invalid, so a flood of bad tokens cannot use
//!   up the upgrades valid users need;
//! - one bucket per source address (IPv6: per /64) charged by every failed
//!   token check; an address that has used its bucket up is refused before
//!   the signature check, so the refund cannot be turned into free crypto.
//!
//! The per-address table is bounded; when it is full of addresses still
//! failing, a further failure is not refunded (the node's bucket pays, as
//! if there were no per-address limit). One small lock each, taken once per
//! handshake, never on the message path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

/// Source addresses tracked at once for failed token checks.
const MAX_TRACKED_SOURCES: usize = 4096;

pub struct ConnectRateLimiter {
    per_second: f64,
    node: Mutex<Bucket>,
    failures: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.last = now;
    }

    fn available(&mut self, rate: f64, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= 1.0
    }

    fn try_take(&mut self, rate: f64, now: Instant) -> bool {
        let available = self.available(rate, now);
        if available {
            self.tokens -= 1.0;
        }
        available
    }
}

impl ConnectRateLimiter {
    /// `None` when `per_second` is 0 (unlimited).
    pub fn new(per_second: u32) -> Option<Self> {
        let per_second = f64::from(per_second);
        (per_second > 0.0).then(|| ConnectRateLimiter {
            per_second,
            node: Mutex::new(Bucket::full(per_second, Instant::now())),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one upgrade from the node's budget for a handshake from
    /// `source`, or says no: the node is over its rate, or `source` is over
    /// its budget of failed token checks.
    pub fn try_acquire(&self, source: IpAddr, now: Instant) -> bool {
        let source = source_key(source);
        if let Some(bucket) = self.failures.lock().get_mut(&source) {
            if !bucket.available(self.per_second, now) {
                return false;
            }
        }
        self.node.lock().try_take(self.per_second, now)
    }

    /// The handshake that [`try_acquire`](Self::try_acquire) let through
    /// from `source` had an invalid token: charge `source`, refund the node.
    pub fn token_rejected(&self, source: IpAddr, now: Instant) {
        let source = source_key(source);
        let rate = self.per_second;
        let tracked = {
            let mut failures = self.failures.lock();
            if failures.len() >= MAX_TRACKED_SOURCES && !failures.contains_key(&source) {
                // Addresses whose bucket has refilled carry no information.
                failures.retain(|_, bucket| {
                    bucket.refill(rate, now);
                    bucket.tokens < rate
                });
            }
            if failures.len() < MAX_TRACKED_SOURCES || failures.contains_key(&source) {
                let bucket = failures
                    .entry(source)
                    .or_insert_with(|| Bucket::full(rate, now));
                bucket.refill(rate, now);
                bucket.tokens = (bucket.tokens - 1.0).max(0.0);
                true
            } else {
                false
            }
        };
        if tracked {
            let mut node = self.node.lock();
            node.refill(rate, now);
            node.tokens = (node.tokens + 1.0).min(rate);
        }
    }
}

/// The unit a source is limited by: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64).
fn source_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        assert!(ConnectRateLimiter::new(0).is_none());
        let limiter = ConnectRateLimiter::new(10).expect("limited");
        let t0 = Instant::now();
        let admitted = (0..25).filter(|_| limiter.try_acquire(A, t0)).count();
        assert_eq!(admitted, 10);
        assert!(!limiter.try_acquire(A, t0 + Duration::from_millis(50)));
        assert!(limiter.try_acquire(A, t0 + Duration::from_millis(150)));
    }

    #[test]
    fn failed_tokens_are_refunded_and_charge_their_source() {
        let limiter = ConnectRateLimiter::new(10).expect("limited");
        let t0 = Instant::now();
        let mut flood_admitted = 0;
        for _ in 0..1000 {
            if limiter.try_acquire(A, t0) {
                flood_admitted += 1;
                limiter.token_rejected(A, t0);
            }
        }
        assert_eq!(flood_admitted, 10, "A fails at most its burst");
        let valid = (0..10).filter(|_| limiter.try_acquire(B, t0)).count();
        assert_eq!(valid, 10, "B still has the node's whole budget");
        // A's failure budget refills like any bucket.
        assert!(limiter.try_acquire(A, t0 + Duration::from_millis(150)));
    }

    #[test]
    fn the_source_table_is_bounded() {
        let limiter = ConnectRateLimiter::new(1).expect("limited");
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 10) {
            let source = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            limiter.token_rejected(source, t0);
        }
        assert_eq!(limiter.failures.lock().len(), MAX_TRACKED_SOURCES);
        // Once they have refilled, new sources find room again.
        let later = t0 + Duration::from_secs(2);
        limiter.token_rejected(B, later);
        assert!(limiter.failures.lock().contains_key(&B));
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().expect("v6");
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        assert_eq!(source_key(a.into()), source_key(b.into()));
        let mapped: Ipv6Addr = "::ffff:10.0.0.1".parse().expect("v6");
        assert_eq!(source_key(mapped.into()), A);
    }
}
