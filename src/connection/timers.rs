//! A connection's deadlines as the shard's coarse sweep sees them: the
//! 4000 connection timeout, 4001 token expiry and `token.expiring` (SPEC-v2
//! §3), 4009 connection age, the heartbeat ping, the close grace, and the
//! control-frame window. The sweep itself (its tick, its order) is the
//! shard's; this module only says what is due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{Chunk, Connection, Limits, Phase};
use crate::ws::CloseReason;

/// What a sweep found due on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Close(CloseReason),
    /// Its close handshake outlived the grace: drop it.
    Drop,
    /// `token.expiring` is due (`Connection::notify_token_expiring`).
    TokenExpiring,
}

/// The connection's current token as its timers see it: the raw `exp`
/// (replaced by each successful `auth.refresh`) and the once-per-token
/// `token.expiring` notice.
#[derive(Debug, Clone, Copy)]
pub struct TokenTimer {
    /// `exp` in seconds since the epoch, as the token says.
    exp: u64,
    /// The upgrade URL had `refresh=1`.
    wants_notice: bool,
    /// `token.expiring` went out for this token.
    notice_sent: bool,
}

impl TokenTimer {
    pub fn new(exp: u64, wants_notice: bool) -> TokenTimer {
        TokenTimer {
            exp,
            wants_notice,
            notice_sent: false,
        }
    }

    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// Past `exp + --jwt-leeway + --token-refresh-grace` at `unix_ms`: the
    /// connection is closed with 4001. With both at zero this is v1's
    /// `exp <= now` in whole seconds.
    pub fn expired(&self, unix_ms: u64, limits: &Limits) -> bool {
        let grace_ms = limits.token_grace.as_millis() as u64;
        self.exp.saturating_mul(1000).saturating_add(grace_ms) <= unix_ms
    }

    /// `token.expiring` is due: asked for, not yet sent for this token,
    /// and `unix_ms` is within `--token-expiring-notice` of `exp`.
    pub(super) fn notice_due(&self, unix_ms: u64, limits: &Limits) -> bool {
        let notice_ms = limits.token_expiring_notice.as_millis() as u64;
        self.wants_notice
            && !self.notice_sent
            && notice_ms > 0
            && unix_ms.saturating_add(notice_ms) >= self.exp.saturating_mul(1000)
    }

    pub(super) fn notice_sent(&mut self) {
        self.notice_sent = true;
    }

    /// A refreshed token: its `exp` is the deadline now (even if earlier),
    /// and it gets its own notice unless its `exp` is the same (the same
    /// token sent again must not start a notice/refresh loop).
    pub(super) fn renew(&mut self, exp: u64) {
        if exp != self.exp {
            self.exp = exp;
            self.notice_sent = false;
        }
    }
}

/// A new connection's lifetime under `--max-connection-age` (zero: none):
/// uniform over 90-100 % of it, so the connections of one deploy or
/// scale-out do not all close at the same instant.
pub fn draw_age(max_age: Duration) -> Option<Duration> {
    if max_age.is_zero() {
        return None;
    }
    let fraction = rand::thread_rng().gen_range(0.9..=1.0);
    Some(max_age.mul_f64(fraction))
}

impl Connection {
    /// Closes this connection with 4009 once it has been open `age`.
    pub fn age_out_after(&mut self, age: Duration) {
        self.aged_at = Some(Instant::now() + age);
    }

    /// Checks this connection's deadlines at a sweep (`unix_ms`: the wall
    /// clock in ms), queueing the heartbeat `ping` when one is due.
    pub fn on_tick(
        &mut self,
        now: Instant,
        unix_ms: u64,
        new_control_window: bool,
        limits: &Limits,
        ping: &Arc<[u8]>,
        dirty: &mut Vec<usize>,
    ) -> Option<Due> {
        if new_control_window {
            self.control_frames = 0;
        }
        match self.phase {
            Phase::Closing { deadline, .. } => (now >= deadline).then_some(Due::Drop),
            Phase::Open => {
                if now.duration_since(self.last_seen) >= limits.connection_timeout {
                    return Some(Due::Close(CloseReason::ConnectionTimeout));
                }
                if self.token.expired(unix_ms, limits) {
                    return Some(Due::Close(CloseReason::TokenExpired));
                }
                if self.aged_at.is_some_and(|at| now >= at) {
                    return Some(Due::Close(CloseReason::ConnectionAged));
                }
                if now.duration_since(self.last_ping) >= limits.heartbeat_interval {
                    self.last_ping = now;
                    if self
                        .outbound
                        .push(Chunk::Control(ping.clone()), limits.max_queued_bytes)
                        .is_err()
                    {
                        return Some(Due::Close(CloseReason::SlowConsumer { dropped: 0 }));
                    }
                    self.mark_dirty(dirty);
                }
                self.token
                    .notice_due(unix_ms, limits)
                    .then_some(Due::TokenExpiring)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_drawn_from_the_last_tenth_of_the_flag() {
        assert_eq!(draw_age(Duration::ZERO), None);
        let max = Duration::from_secs(100);
        for _ in 0..1000 {
            let age = draw_age(max).expect("on");
            assert!(age >= Duration::from_secs(90) && age <= max, "{age:?}");
        }
    }
}
