//! The per-user sliding-window rate limiter, one per shard.
//!
//! A user's connections all live in the same shard, so the shard's limiter
//! sees every message of that user without any lock. The window is an
//! exact sliding log: the send times of the last `limit` accepted messages.
//! Dropped messages are counted per window to spot abusers (SPEC: more than
//! max(3 x limit, 20) drops in one window closes with 1008).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Dropped; `abusive` when the user has passed the drop threshold.
    Limited {
        retry_after: Duration,
        abusive: bool,
    },
}

struct UserWindow {
    accepted: VecDeque<Instant>,
    drops: u32,
    drops_since: Instant,
}

pub struct RateLimiter {
    limit: u32,
    window: Duration,
    abuse_threshold: u32,
    users: HashMap<Arc<str>, UserWindow>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            limit,
            window,
            abuse_threshold: (limit.saturating_mul(3)).max(20),
            users: HashMap::new(),
        }
    }

    /// Counts one message of `user` at `now`.
    pub fn check(&mut self, user: &Arc<str>, now: Instant) -> RateDecision {
        let window = self.window;
        let entry = match self.users.get_mut(&**user) {
            Some(entry) => entry,
            None => self
                .users
                .entry(user.clone())
                .or_insert_with(|| UserWindow {
                    accepted: VecDeque::new(),
                    drops: 0,
                    drops_since: now,
                }),
        };
        while let Some(&oldest) = entry.accepted.front() {
            if now.duration_since(oldest) >= window {
                entry.accepted.pop_front();
            } else {
                break;
            }
        }
        if (entry.accepted.len() as u32) < self.limit {
            entry.accepted.push_back(now);
            return RateDecision::Allowed;
        }
        if now.duration_since(entry.drops_since) >= window {
            entry.drops = 0;
            entry.drops_since = now;
        }
        entry.drops += 1;
        let oldest = entry.accepted.front().copied().unwrap_or(now);
        let retry_after = window.saturating_sub(now.duration_since(oldest));
        RateDecision::Limited {
            retry_after,
            abusive: entry.drops > self.abuse_threshold,
        }
    }

    /// Forgets users whose whole window has passed (called by the sweep).
    pub fn prune(&mut self, now: Instant) {
        let window = self.window;
        self.users.retain(|_, w| {
            w.accepted
                .back()
                .is_some_and(|last| now.duration_since(*last) < window)
                || now.duration_since(w.drops_since) < window
        });
        if self.users.capacity() > 64 && self.users.len() < self.users.capacity() / 4 {
            self.users.shrink_to_fit();
        }
    }

    #[cfg(test)]
    pub fn tracked_users(&self) -> usize {
        self.users.len()
    }
}

/// `retry_after` in whole seconds, at least 1 (SPEC).
pub fn retry_after_secs(retry_after: Duration) -> u64 {
    retry_after.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_limit_then_drops_until_the_window_slides() {
        let mut limiter = RateLimiter::new(3, Duration::from_secs(10));
        let user: Arc<str> = Arc::from("u");
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(
                limiter.check(&user, t0 + Duration::from_secs(i)),
                RateDecision::Allowed
            );
        }
        match limiter.check(&user, t0 + Duration::from_secs(4)) {
            RateDecision::Limited {
                retry_after,
                abusive,
            } => {
                assert_eq!(retry_after, Duration::from_secs(6));
                assert!(!abusive);
            }
            other => panic!("expected a drop, got {other:?}"),
        }
        // The first message leaves the window at t0+10.
        assert_eq!(
            limiter.check(&user, t0 + Duration::from_secs(10)),
            RateDecision::Allowed
        );
        assert!(matches!(
            limiter.check(&user, t0 + Duration::from_secs(10)),
            RateDecision::Limited { .. }
        ));
    }

    #[test]
    fn users_are_independent() {
        let mut limiter = RateLimiter::new(1, Duration::from_secs(60));
        let now = Instant::now();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert_eq!(limiter.check(&a, now), RateDecision::Allowed);
        assert!(matches!(
            limiter.check(&a, now),
            RateDecision::Limited { .. }
        ));
        assert_eq!(limiter.check(&b, now), RateDecision::Allowed);
    }

    #[test]
    fn abuse_after_threshold_drops() {
        let mut limiter = RateLimiter::new(5, Duration::from_secs(60));
        let user: Arc<str> = Arc::from("u");
        let now = Instant::now();
        for _ in 0..5 {
            limiter.check(&user, now);
        }
        // threshold = max(15, 20) = 20 drops; the 21st is abusive.
        for _ in 0..20 {
            assert!(matches!(
                limiter.check(&user, now),
                RateDecision::Limited { abusive: false, .. }
            ));
        }
        assert!(matches!(
            limiter.check(&user, now),
            RateDecision::Limited { abusive: true, .. }
        ));
    }

    #[test]
    fn prune_forgets_idle_users_and_retry_after_is_whole_seconds() {
        let mut limiter = RateLimiter::new(5, Duration::from_secs(1));
        let user: Arc<str> = Arc::from("u");
        let now = Instant::now();
        limiter.check(&user, now);
        limiter.prune(now + Duration::from_secs(2));
        assert_eq!(limiter.tracked_users(), 0);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// For arbitrary (sorted) message times: no window-length
            /// interval ever holds more than `limit` allowed messages, a
            /// drop happens only when `limit` were allowed in the window
            /// before it, and `retry_after` is in (0, window].
            #[test]
            fn never_more_than_limit_in_any_window(
                limit in 1u32..8,
                window_ms in 1u64..2_000,
                gaps in prop::collection::vec(
                    prop_oneof![Just(0u64), 0u64..50, 0u64..3_000],
                    1..200,
                ),
            ) {
                let window = Duration::from_millis(window_ms);
                let mut limiter = RateLimiter::new(limit, window);
                let user: Arc<str> = Arc::from("u");
                let t0 = Instant::now();
                let mut now = t0;
                let mut allowed: Vec<Instant> = Vec::new();
                for gap in gaps {
                    now += Duration::from_millis(gap);
                    // Allowed messages in (now - window, now].
                    let in_window = allowed
                        .iter()
                        .filter(|t| now.duration_since(**t) < window)
                        .count();
                    match limiter.check(&user, now) {
                        RateDecision::Allowed => {
                            prop_assert!(in_window < limit as usize);
                            allowed.push(now);
                        }
                        RateDecision::Limited { retry_after, .. } => {
                            prop_assert_eq!(in_window, limit as usize);
                            prop_assert!(retry_after > Duration::ZERO);
                            prop_assert!(retry_after <= window);
                            // Waiting retry_after frees a slot.
                            let oldest = allowed
                                .iter()
                                .filter(|t| now.duration_since(**t) < window)
                                .min()
                                .expect("a message in the window");
                            prop_assert_eq!(now + retry_after, *oldest + window);
                            prop_assert!(retry_after_secs(retry_after) >= 1);
                        }
                    }
                }
                // The check over every window starting at an allowed message.
                for (i, start) in allowed.iter().enumerate() {
                    let count = allowed[i..]
                        .iter()
                        .take_while(|t| t.duration_since(*start) < window)
                        .count();
                    prop_assert!(count <= limit as usize);
                }
            }

            /// Pruning never loses a user that is still limited.
            #[test]
            fn prune_keeps_users_inside_their_window(
                limit in 1u32..4,
                window_ms in 1u64..1_000,
                prune_after in 0u64..2_000,
            ) {
                let window = Duration::from_millis(window_ms);
                let mut limiter = RateLimiter::new(limit, window);
                let user: Arc<str> = Arc::from("u");
                let t0 = Instant::now();
                for _ in 0..limit {
                    prop_assert_eq!(limiter.check(&user, t0), RateDecision::Allowed);
                }
                let later = t0 + Duration::from_millis(prune_after);
                limiter.prune(later);
                let decision = limiter.check(&user, later);
                if prune_after < window_ms {
                    let limited = matches!(decision, RateDecision::Limited { .. });
                    prop_assert!(limited, "user forgotten by prune while limited");
                } else {
                    prop_assert_eq!(decision, RateDecision::Allowed);
                }
            }
        }
    }
}
