//! The shard's clock work: the coarse sweep over its connections (each
//! connection says what is due: a heartbeat ping, the 4000 timeout, 4001
//! token expiry, the end of its close grace; see `connection::timers`),
//! the control-frame window, and the shutdown drain that closes
//! connections in batches. The sweep carries out what is due; it decides
//! no connection's deadlines itself.

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
    /// The coarse timer sweep: heartbeats, timeouts, token expiry, and
    /// closing connections past their grace.
    pub(super) fn tick(&mut self, now: Instant) {
        let unix_now = clock::unix_seconds();
        // The control frame cap is per second, in windows of this clock.
        let new_control_window = now.duration_since(self.control_window_start) >= CONTROL_WINDOW;
        if new_control_window {
            self.control_window_start = now;
        }
        let mut expired = std::mem::take(&mut self.expired);
        for (key, conn) in self.connections.iter_mut() {
            let due = conn.on_tick(
                now,
                unix_now,
                new_control_window,
                &self.limits,
                &self.ping,
                &mut self.dirty,
            );
            if let Some(due) = due {
                expired.push((key, due));
            }
        }
        for (key, due) in expired.drain(..) {
            match due {
                Due::Close(reason) => self.close(key, reason),
                Due::Drop => self.remove(key, DropReason::ConnectionClosing),
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
