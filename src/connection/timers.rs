//! A connection's deadlines as the shard's coarse sweep sees them: the
//! 4000 connection timeout, 4001 token expiry, the heartbeat ping, the
//! close grace, and the control-frame window. The sweep itself (its tick,
//! its order) is the shard's; this module only says what is due.

use std::sync::Arc;
use std::time::Instant;

use super::{Chunk, Connection, Limits, Phase};
use crate::ws::CloseReason;

/// What a sweep found due on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Close(CloseReason),
    /// Its close handshake outlived the grace: drop it.
    Drop,
}

impl Connection {
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
                } else if now.duration_since(self.last_ping) >= limits.heartbeat_interval {
                    self.last_ping = now;
                    if self
                        .outbound
                        .push(Chunk::Control(ping.clone()), limits.max_queued_bytes)
                        .is_err()
                    {
                        return Some(Due::Close(CloseReason::SlowConsumer));
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
