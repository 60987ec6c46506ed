//! The shard's clock work: the coarse sweep over its connections (each
//! connection says what is due: a heartbeat ping, the 4000 timeout, 4001
//! token expiry, `token.expiring`, the end of its close grace; see
//! `connection::timers`),
//! the control-frame window, and the shutdown drain that closes
//! connections in batches. The sweep carries out what is due; it decides
//! no connection's deadlines itself.
//!
//! It runs after the turn's socket reads (see `Shard::run`): a message read
//! in a turn is handled before that turn's sweep, which is what lets an
//! `auth.refresh` read before the token deadline win over the 4001.

use std::time::{Duration, Instant};

use rand::Rng;

use super::{Drain, Shard, DRAIN_STEP};
use crate::connection::{Due, CLOSE_GRACE};
use crate::metrics::DropReason;
use crate::protocol::clock;
use crate::ws::CloseReason;

/// The window of `--max-control-frames-per-second`.
const CONTROL_WINDOW: Duration = Duration::from_secs(1);

impl Shard {
    /// The coarse timer sweep: heartbeats, timeouts, token expiry and its
    /// notice, and closing connections past their grace.
    pub(super) fn tick(&mut self, now: Instant) {
        let unix_ms = clock::unix_millis();
        // The control frame cap is per second, in windows of this clock.
        let new_control_window = now.duration_since(self.control_window_start) >= CONTROL_WINDOW;
        if new_control_window {
            self.control_window_start = now;
        }
        let mut expired = std::mem::take(&mut self.expired);
        let mut overflowed = Vec::new();
        for (key, conn) in self.connections.iter_mut() {
            let due = conn.on_tick(
                now,
                unix_ms,
                new_control_window,
                &self.limits,
                &self.ping,
                &mut self.dirty,
            );
            if let Some(due) = due {
                expired.push((key, due));
            } else if conn.hold_expired(now)
                && conn
                    .end_hold(self.limits.max_queued_bytes, &mut self.dirty, &self.metrics)
                    .is_err()
            {
                // `--resume-timeout` passed: the held events follow; one
                // that does not fit closes the connection (4008).
                overflowed.push(key);
            }
        }
        for key in overflowed {
            self.overflowed(key);
        }
        for (key, due) in expired.drain(..) {
            match due {
                Due::Close(reason) => self.close(key, reason),
                Due::Drop => self.remove(key, DropReason::ConnectionClosing),
                Due::TokenExpiring => {
                    let Some((conn, mut cx)) = self.connection_in_context(key) else {
                        continue;
                    };
                    if conn.notify_token_expiring(unix_ms, &mut cx) {
                        self.overflowed(key);
                    }
                }
            }
        }
        self.expired = expired;
    }

    /// Starts the drain: connections are closed with 1001 in batches
    /// spread over `drain`, each advised its own `retry_after` (up to
    /// `--shutdown-reconnect-spread`), so clients don't all reconnect
    /// (elsewhere) at the same instant; the shard stops `grace` after the last batch.
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
        let spread_ms = self.settings.shutdown_reconnect_spread.as_millis() as u64;
        let mut rng = rand::thread_rng();
        for key in batch {
            // Each connection its own advice, so the reconnects spread out
            // even where a batch closed many connections at once.
            let retry_after_ms = rng.gen_range(0..=spread_ms);
            self.close(key, CloseReason::ShuttingDown { retry_after_ms });
            if let Some(conn) = self.connections.get_mut(key) {
                conn.close_by(deadline);
            }
        }
    }
}
