//! A connection's deadlines as the shard's coarse sweep sees them: the
//! 4000 connection timeout, 4001 token expiry, 4009 connection age, the
//! heartbeat ping, the close grace, and the control-frame window. The sweep itself (its tick,
//! its order) is the shard's; this module only says what is due.

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

    /// Checks this connection's deadlines at a sweep (`unix_now` in
    /// seconds), queueing the heartbeat `ping` when one is due.
    pub fn on_tick(
        &mut self,
        now: Instant,
        unix_now: u64,
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
                    Some(Due::Close(CloseReason::ConnectionTimeout))
                } else if self.token_expires_at <= unix_now {
                    Some(Due::Close(CloseReason::TokenExpired))
                } else if self.aged_at.is_some_and(|at| now >= at) {
                    Some(Due::Close(CloseReason::ConnectionAged))
                } else if now.duration_since(self.last_ping) >= limits.heartbeat_interval {
                    self.last_ping = now;
                    if self
                        .outbound
                        .push(Chunk::Control(ping.clone()), limits.max_queued_bytes)
                        .is_err()
                    {
                        return Some(Due::Close(CloseReason::SlowConsumer { dropped: 0 }));
                    }
                    self.mark_dirty(dirty);
                    None
                } else {
                    None
                }
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
