//! The shard's clock work: the coarse sweep (heartbeat pings, the 4000
//! connection timeout, 4001 token expiry, closing connections past their
//! grace) and the shutdown drain that closes connections in batches.

use std::time::{Duration, Instant};

use super::{Drain, Shard, CLOSE_GRACE, DRAIN_STEP};

/// The window of `--max-control-frames-per-second`.
const CONTROL_WINDOW: Duration = Duration::from_secs(1);
use crate::connection::outbound::Chunk;
use crate::connection::Phase;
use crate::metrics::DropReason;
use crate::protocol::clock;
use crate::ws::CloseReason;

impl Shard {
    /// The coarse timer sweep: heartbeats, timeouts, token expiry, and
    /// closing connections past their grace.
    pub(super) fn tick(&mut self, now: Instant) {
        let unix_now = clock::unix_seconds();
        let timeout = self.settings.connection_timeout;
        let heartbeat = self.settings.heartbeat_interval;
        let limit = self.settings.max_queued_bytes;
        // The control frame cap is per second, in windows of this clock.
        let new_control_window = now.duration_since(self.control_window_start) >= CONTROL_WINDOW;
        if new_control_window {
            self.control_window_start = now;
        }
        let mut expired = std::mem::take(&mut self.expired);
        for (key, conn) in self.connections.iter_mut() {
            if new_control_window {
                conn.control_frames = 0;
            }
            match conn.phase {
                Phase::Closing { deadline, .. } => {
                    if now >= deadline {
                        expired.push((key, None));
                    }
                }
                Phase::Open => {
                    if now.duration_since(conn.last_seen) >= timeout {
                        expired.push((key, Some(CloseReason::ConnectionTimeout)));
                    } else if conn.token_expires_at <= unix_now {
                        expired.push((key, Some(CloseReason::TokenExpired)));
                    } else if now.duration_since(conn.last_ping) >= heartbeat {
                        conn.last_ping = now;
                        if conn
                            .outbound
                            .push(Chunk::Control(self.ping.clone()), limit)
                            .is_err()
                        {
                            expired.push((key, Some(CloseReason::SlowConsumer)));
                        } else if !conn.dirty {
                            conn.dirty = true;
                            self.dirty.push(key);
                        }
                    }
                }
            }
        }
        for (key, reason) in expired.drain(..) {
            match reason {
                Some(reason) => self.close(key, reason),
                None => self.remove(key, DropReason::ConnectionClosing),
            }
        }
        self.expired = expired;
    }

    /// Starts the drain: connections are closed with 1001 in batches
    /// spread over `drain`, so clients don't all reconnect (elsewhere) at
    /// the same instant; the shard stops `grace` after the last batch.
    pub(super) fn begin_shutdown(&mut self, drain: Duration, grace: Duration) {
        let now = Instant::now();
        let keys: Vec<usize> = self.connections.iter().map(|(k, _)| k).collect();
        let batches = (drain.as_millis() / DRAIN_STEP.as_millis()).max(1) as usize;
        let per_batch = keys.len().div_ceil(batches).max(1);
        self.shutdown_deadline = Some(now + drain + grace);
        self.drain = Some(Drain {
            remaining: keys,
            per_batch,
            next_batch: now,
        });
        self.drain_step(now);
    }

    /// Closes the next batch of a drain, if it is due.
    pub(super) fn drain_step(&mut self, now: Instant) {
        let Some(drain) = &mut self.drain else { return };
        if now < drain.next_batch {
            return;
        }
        let take = drain.per_batch.min(drain.remaining.len());
        let batch: Vec<usize> = drain.remaining.drain(..take).collect();
        drain.next_batch = now + DRAIN_STEP;
        if drain.remaining.is_empty() {
            self.drain = None;
        }
        let deadline = self.shutdown_deadline.unwrap_or(now + CLOSE_GRACE);
        for key in batch {
            self.close(key, CloseReason::ShuttingDown);
            if let Some(conn) = self.connections.get_mut(key) {
                if let Phase::Closing { deadline: d, .. } = &mut conn.phase {
                    *d = (*d).min(deadline);
                }
            }
        }
    }
}
