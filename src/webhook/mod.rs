//! Calls to the application backend (`--webhook-url`) for client requests
//! it must act on (`upload.cancel`).
//!
//! Shards hand a ready JSON body to [`WebhookQueue::submit`], which never
//! blocks: the queue is bounded and a full queue drops (and counts) the
//! call. A small pool of tracked workers takes calls from the queue, so a
//! slow endpoint holds at most [`WORKERS`] calls and the others go on; each
//! call is POSTed by [`client::Caller`] with its retries. A failing webhook
//! never affects a connection. Drops are counted one by one but logged at
//! most once per [`LOG_INTERVAL`], so a dead backend cannot flood the logs.

mod client;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WebhookConfig;
use crate::metrics::{DropReason, Metrics};

pub use client::WebhookError;

const QUEUE_CAPACITY: usize = 1024;
/// Calls in flight at once. Calls are independent (the backend never
/// relies on their order), so they need not wait for one another.
pub const WORKERS: usize = 8;
/// At most one log line per kind of webhook trouble in this time.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct WebhookQueue {
    tx: mpsc::Sender<Bytes>,
    drops: Arc<DropReport>,
}

impl WebhookQueue {
    /// Queues a POST; never blocks. A full queue drops the call.
    pub fn submit(&self, body: Vec<u8>) {
        if self.tx.try_send(Bytes::from(body)).is_err() {
            self.drops
                .dropped(DropReason::WebhookQueueFull, &"webhook queue full");
        }
    }
}

/// Starts the workers and returns the queue that feeds them.
pub fn spawn(
    config: &WebhookConfig,
    api_key: Option<String>,
    metrics: Arc<Metrics>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<WebhookQueue, WebhookError> {
    let caller = Arc::new(client::Caller::new(config, api_key, metrics.clone())?);
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE_CAPACITY);
    // Workers take turns waiting on the one receiver; a call is taken by
    // exactly one of them.
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let drops = Arc::new(DropReport {
        metrics,
        log: LogLimiter::new(LOG_INTERVAL),
    });
    for _ in 0..WORKERS {
        let (rx, caller, drops, shutdown) =
            (rx.clone(), caller.clone(), drops.clone(), shutdown.clone());
        tracker.spawn(async move {
            loop {
                let next = async { rx.lock().await.recv().await };
                let body = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    body = next => match body { Some(b) => b, None => break },
                };
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    outcome = caller.deliver(body) => outcome,
                };
                if let Err(last_error) = outcome {
                    drops.dropped(DropReason::WebhookFailed, &last_error);
                }
            }
        });
    }
    Ok(WebhookQueue { tx, drops })
}

/// Counts every dropped call and logs them in batches.
struct DropReport {
    metrics: Arc<Metrics>,
    log: LogLimiter,
}

impl DropReport {
    fn dropped(&self, reason: DropReason, why: &dyn std::fmt::Display) {
        self.metrics.dropped(reason, 1);
        if let Some(dropped) = self.log.record() {
            tracing::warn!(
                dropped,
                last_reason = %why,
                "webhook calls dropped since the last report (see wsgate_messages_dropped_total)"
            );
        }
    }
}

/// Lets one log line through per interval and counts the events between.
pub(crate) struct LogLimiter {
    interval: Duration,
    last_line: parking_lot::Mutex<Option<Instant>>,
    unreported: AtomicU64,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last_line: parking_lot::Mutex::new(None),
            unreported: AtomicU64::new(0),
        }
    }

    /// Records one event. `Some(n)` when a line may be written now, `n`
    /// being the events since the last line, this one included. Never
    /// waits: shards call it.
    pub(crate) fn record(&self) -> Option<u64> {
        self.unreported.fetch_add(1, Relaxed);
        let mut last_line = self.last_line.try_lock()?;
        let now = Instant::now();
        if last_line.is_some_and(|t| now.duration_since(t) < self.interval) {
            return None;
        }
        *last_line = Some(now);
        Some(self.unreported.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_lets_one_line_through_per_interval_and_counts_the_rest() {
        let limiter = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.record(), Some(1));
        for _ in 0..99 {
            assert_eq!(limiter.record(), None);
        }
        let limiter = LogLimiter::new(Duration::ZERO);
        assert_eq!(limiter.record(), Some(1));
        assert_eq!(limiter.record(), Some(1));
    }
}
