//! Counters, gauges and the fan-out histogram, rendered as Prometheus text.
//!
//! Plain relaxed atomics: shards add per message or per broadcast (never
//! per recipient), so there is no lock and little contention. Owns metric
//! names and labels; it does not decide what to count. `labels` holds the
//! label enums, `render` the text exposition (hand-written rather than the
//! `prometheus-client` crate: docs/PERFORMANCE.md, "Metrics", says why).

mod labels;
mod render;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

pub use labels::{
    AppendKind, ClosedCode, DropReason, EpochCause, InKind, OutKind, RecoveryResult, RefreshResult,
    RefusalReason,
};

/// Upper bounds of the fan-out histogram buckets, in seconds.
const FANOUT_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

pub struct Metrics {
    connections: AtomicI64,
    messages_in: [AtomicU64; InKind::ALL.len()],
    messages_out: [AtomicU64; OutKind::COUNT],
    rate_limited: AtomicU64,
    refused: [AtomicU64; RefusalReason::ALL.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
    closes: [AtomicU64; ClosedCode::ALL.len()],
    webhook_attempts_failed: AtomicU64,
    token_expiring_sent: AtomicU64,
    token_refresh: [AtomicU64; RefreshResult::ALL.len()],
    fanout_buckets: [AtomicU64; FANOUT_BUCKETS.len()],
    fanout_count: AtomicU64,
    fanout_sum_nanos: AtomicU64,
    node_id: OnceLock<String>,
    backplane: Backplane,
    history: History,
}

/// History and recovery (SPEC-v2 §9).
#[derive(Default)]
struct History {
    appends: [AtomicU64; AppendKind::ALL.len()],
    recoveries: [AtomicU64; RecoveryResult::ALL.len()],
    replayed: AtomicU64,
    last_values_sent: AtomicU64,
    epoch_changes: [AtomicU64; EpochCause::ALL.len()],
}

/// The backplane's numbers, rendered only in cluster mode.
#[derive(Default)]
struct Backplane {
    enabled: AtomicBool,
    up: AtomicBool,
    published: AtomicU64,
    received: AtomicU64,
    publish_errors: AtomicU64,
    /// Events not handed to the other nodes (queue full or backplane down).
    dropped: AtomicU64,
    /// Messages from other nodes that could not be decoded.
    malformed: AtomicU64,
    reconnects: AtomicU64,
    /// Enqueue to Redis acknowledgement of the last publish.
    last_lag_nanos: AtomicU64,
    lag_sum_nanos: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: AtomicI64::new(0),
            messages_in: Default::default(),
            messages_out: Default::default(),
            rate_limited: AtomicU64::new(0),
            refused: Default::default(),
            dropped: Default::default(),
            closes: Default::default(),
            webhook_attempts_failed: AtomicU64::new(0),
            token_expiring_sent: AtomicU64::new(0),
            token_refresh: Default::default(),
            fanout_buckets: Default::default(),
            fanout_count: AtomicU64::new(0),
            fanout_sum_nanos: AtomicU64::new(0),
            node_id: OnceLock::new(),
            backplane: Backplane::default(),
            history: History::default(),
        }
    }
}

impl Metrics {
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }
    pub fn message_in(&self, kind: InKind) {
        self.messages_in[kind.index()].fetch_add(1, Relaxed);
    }
    pub fn messages_out(&self, kind: OutKind, count: u64) {
        if count > 0 {
            self.messages_out[kind.index()].fetch_add(count, Relaxed);
        }
    }
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
        self.dropped(DropReason::RateLimited, 1);
    }
    pub fn refused(&self, reason: RefusalReason) {
        self.refused[reason.index()].fetch_add(1, Relaxed);
    }
    pub fn dropped(&self, reason: DropReason, count: u64) {
        self.dropped[reason.index()].fetch_add(count, Relaxed);
    }
    /// A close the server started (a close frame queued, or a refusal
    /// closed after its upgrade), by close code.
    pub fn closed(&self, code: u16) {
        match ClosedCode::of(code) {
            Some(code) => {
                self.closes[code.index()].fetch_add(1, Relaxed);
            }
            None => debug_assert!(false, "close code {code} has no label"),
        }
    }
    /// One failed webhook attempt (a retry may still deliver the call).
    pub fn webhook_attempt_failed(&self) {
        self.webhook_attempts_failed.fetch_add(1, Relaxed);
    }
    pub fn token_expiring_sent(&self) {
        self.token_expiring_sent.fetch_add(1, Relaxed);
    }
    pub fn token_refresh(&self, result: RefreshResult) {
        self.token_refresh[result.index()].fetch_add(1, Relaxed);
    }
    pub fn observe_fanout(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = FANOUT_BUCKETS.iter().position(|b| secs <= *b) {
            self.fanout_buckets[i].fetch_add(1, Relaxed);
        }
        self.fanout_count.fetch_add(1, Relaxed);
        self.fanout_sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Relaxed);
    }

    /// Labels `wsgate_node_info`; set once at startup.
    pub fn set_node_id(&self, node_id: &str) {
        let _ = self.node_id.set(node_id.to_owned());
    }
    /// Cluster mode: render the `wsgate_backplane_*` metrics.
    pub fn backplane_enabled(&self) {
        self.backplane.enabled.store(true, Relaxed);
    }
    pub fn backplane_up(&self, up: bool) {
        self.backplane.up.store(up, Relaxed);
    }
    pub fn backplane_published(&self, lag: Duration) {
        let nanos = lag.as_nanos() as u64;
        self.backplane.published.fetch_add(1, Relaxed);
        self.backplane.last_lag_nanos.store(nanos, Relaxed);
        self.backplane.lag_sum_nanos.fetch_add(nanos, Relaxed);
    }
    pub fn backplane_received(&self) {
        self.backplane.received.fetch_add(1, Relaxed);
    }
    pub fn backplane_publish_error(&self) {
        self.backplane.publish_errors.fetch_add(1, Relaxed);
    }
    /// Events not handed to the other nodes, also counted by reason in
    /// `wsgate_messages_dropped_total`.
    pub fn backplane_dropped(&self, reason: DropReason, count: u64) {
        self.backplane.dropped.fetch_add(count, Relaxed);
        self.dropped(reason, count);
    }
    pub fn backplane_malformed(&self) {
        self.backplane.malformed.fetch_add(1, Relaxed);
    }
    pub fn backplane_reconnected(&self) {
        self.backplane.reconnects.fetch_add(1, Relaxed);
    }

    pub fn history_appended(&self, kind: AppendKind) {
        self.history.appends[kind.index()].fetch_add(1, Relaxed);
    }
    pub fn recovery(&self, result: RecoveryResult) {
        self.history.recoveries[result.index()].fetch_add(1, Relaxed);
    }
    pub fn replayed(&self, count: u64) {
        self.history.replayed.fetch_add(count, Relaxed);
    }
    pub fn last_values_sent(&self, count: u64) {
        self.history.last_values_sent.fetch_add(count, Relaxed);
    }
    pub fn epoch_changed(&self, cause: EpochCause) {
        self.history.epoch_changes[cause.index()].fetch_add(1, Relaxed);
    }

    pub fn total_in(&self) -> u64 {
        self.messages_in.iter().map(|c| c.load(Relaxed)).sum()
    }
    pub fn total_out(&self) -> u64 {
        self.messages_out.iter().map(|c| c.load(Relaxed)).sum()
    }
    pub fn total_rate_limited(&self) -> u64 {
        self.rate_limited.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Event;

    #[test]
    fn renders_counters_and_cumulative_histogram() {
        let m = Metrics::default();
        m.connection_opened();
        m.message_in(InKind::Ping);
        m.messages_out(OutKind::Pong, 2);
        m.messages_out(OutKind::Event(Event::FileReady), 3);
        m.refused(RefusalReason::Unauthorized);
        m.rate_limited();
        m.closed(4008);
        m.observe_fanout(Duration::from_micros(80));
        m.observe_fanout(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("wsgate_connections 1\n"));
        assert!(text.contains("wsgate_messages_in_total{type=\"ping\"} 1\n"));
        assert!(text.contains("wsgate_messages_out_total{type=\"pong\"} 2\n"));
        assert!(text.contains("wsgate_messages_out_total{type=\"file.ready\"} 3\n"));
        assert!(text.contains("wsgate_upgrades_refused_total{reason=\"unauthorized\"} 1\n"));
        assert!(text.contains("wsgate_messages_dropped_total{reason=\"rate_limited\"} 1\n"));
        assert!(text.contains("wsgate_closes_total{code=\"4008\"} 1\n"));
        assert!(text.contains("wsgate_fanout_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("wsgate_fanout_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("wsgate_fanout_seconds_count 2\n"));
        assert_eq!(m.total_out(), 5);
        assert!(!text.contains("wsgate_backplane_up"));
        assert!(!text.contains("wsgate_node_info"));
    }

    #[test]
    fn node_and_backplane_metrics_in_cluster_mode() {
        let m = Metrics::default();
        m.set_node_id("node-\"a\"");
        m.backplane_enabled();
        m.backplane_up(true);
        m.backplane_published(Duration::from_millis(2));
        m.backplane_dropped(DropReason::BackplaneQueueFull, 1);
        let text = m.render();
        assert!(
            text.contains("wsgate_node_info{node_id=\"node-\\\"a\\\"\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("wsgate_backplane_up 1\n"));
        assert!(text.contains("wsgate_backplane_published_total 1\n"));
        assert!(text.contains("wsgate_backplane_dropped_total 1\n"));
        assert!(text.contains("wsgate_messages_dropped_total{reason=\"backplane_queue_full\"} 1\n"));
        assert!(text.contains("wsgate_backplane_publish_lag_seconds 0.002\n"));
        m.backplane_up(false);
        assert!(m.render().contains("wsgate_backplane_up 0\n"));
    }

    /// The whole exposition, byte for byte: metric names, label values,
    /// HELP and TYPE lines and order are the scrape contract (dashboards
    /// and alerts are written against them). Zero values, cluster mode.
    #[test]
    fn exposition_is_unchanged() {
        let m = Metrics::default();
        m.set_node_id("node-1");
        m.backplane_enabled();
        assert_eq!(m.render(), include_str!("testdata/exposition.prom"));
    }
}
