//! Counters, gauges and the fan-out histogram, rendered as Prometheus text.
//!
//! Plain relaxed atomics: shards add per message or per broadcast (never
//! per recipient), so there is no lock and little contention. Owns metric
//! names and labels; it does not decide what to count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use crate::protocol::Event;

/// Client message types as counted in `wsgate_messages_in_total{type}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InKind {
    Ping,
    Heartbeat,
    Subscribe,
    Unsubscribe,
    UploadCancel,
    /// Frames that were not a valid client message (bad JSON, binary, unknown type).
    Invalid,
}

const IN_LABELS: [&str; 6] = [
    "ping",
    "heartbeat",
    "subscribe",
    "unsubscribe",
    "upload.cancel",
    "invalid",
];

impl InKind {
    pub fn from_type_name(name: &str) -> InKind {
        match name {
            "ping" => InKind::Ping,
            "heartbeat" => InKind::Heartbeat,
            "subscribe" => InKind::Subscribe,
            "unsubscribe" => InKind::Unsubscribe,
            "upload.cancel" => InKind::UploadCancel,
            _ => InKind::Invalid,
        }
    }
}

/// Server message types as counted in `wsgate_messages_out_total{type}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutKind {
    Event(Event),
    ConnectionEstablished,
    Pong,
    HeartbeatAck,
    SubscriptionConfirmed,
    UnsubscriptionConfirmed,
    UploadCancelAcknowledged,
    Error,
}

const OUT_EXTRA_LABELS: [&str; 7] = [
    "connection.established",
    "pong",
    "heartbeat.ack",
    "subscription.confirmed",
    "unsubscription.confirmed",
    "upload.cancel.acknowledged",
    "error",
];
const OUT_KINDS: usize = Event::COUNT + OUT_EXTRA_LABELS.len();

impl OutKind {
    fn index(self) -> usize {
        match self {
            OutKind::Event(e) => e.index(),
            OutKind::ConnectionEstablished => Event::COUNT,
            OutKind::Pong => Event::COUNT + 1,
            OutKind::HeartbeatAck => Event::COUNT + 2,
            OutKind::SubscriptionConfirmed => Event::COUNT + 3,
            OutKind::UnsubscriptionConfirmed => Event::COUNT + 4,
            OutKind::UploadCancelAcknowledged => Event::COUNT + 5,
            OutKind::Error => Event::COUNT + 6,
        }
    }

    fn label(index: usize) -> &'static str {
        if index < Event::COUNT {
            Event::ALL[index].as_str()
        } else {
            OUT_EXTRA_LABELS[index - Event::COUNT]
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    BadRequest,
    Unauthorized,
    TooManyConnections,
    ServerAtCapacity,
    /// Over `--connection-rate-limit`.
    ConnectionRate,
    /// Over `--max-pending-connections`: closed at accept, no HTTP answer.
    TooManyPending,
}
const REFUSAL_LABELS: [&str; 6] = [
    "bad_request",
    "unauthorized",
    "too_many_connections",
    "server_at_capacity",
    "connection_rate",
    "too_many_pending",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A client message over the rate limit.
    RateLimited,
    /// The message that overflowed a connection's queue, and those
    /// discarded with it when the slow consumer was closed.
    SlowConsumer,
    /// A delivery to a connection already closing, or messages still
    /// queued when a connection went away.
    ConnectionClosing,
    WebhookQueueFull,
    WebhookFailed,
    /// Messages still queued when the socket failed (a write error, or a
    /// reset seen first on read).
    WriteFailed,
    /// An event not sent to the other nodes: the backplane link was down
    /// (or Redis failed the publish).
    BackplaneDown,
    /// Events of another node this node never received (a gap in that
    /// node's numbering, e.g. while this node's link was down).
    BackplaneMissed,
    /// An event not sent to the other nodes: the backplane's outbound
    /// queue was full (entries or bytes).
    BackplaneQueueFull,
    /// An event from another node over this node's `--max-message-size`.
    BackplaneOversize,
}
const DROP_LABELS: [&str; 10] = [
    "rate_limited",
    "slow_consumer",
    "connection_closing",
    "webhook_queue_full",
    "webhook_failed",
    "write_failed",
    "backplane_down",
    "backplane_missed",
    "backplane_queue_full",
    "backplane_oversize",
];

/// Upper bounds of the fan-out histogram buckets, in seconds.
const FANOUT_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

pub struct Metrics {
    connections: AtomicI64,
    messages_in: [AtomicU64; IN_LABELS.len()],
    messages_out: [AtomicU64; OUT_KINDS],
    rate_limited: AtomicU64,
    refused: [AtomicU64; REFUSAL_LABELS.len()],
    dropped: [AtomicU64; DROP_LABELS.len()],
    webhook_attempts_failed: AtomicU64,
    fanout_buckets: [AtomicU64; FANOUT_BUCKETS.len()],
    fanout_count: AtomicU64,
    fanout_sum_nanos: AtomicU64,
    node_id: OnceLock<String>,
    backplane: Backplane,
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
            webhook_attempts_failed: AtomicU64::new(0),
            fanout_buckets: Default::default(),
            fanout_count: AtomicU64::new(0),
            fanout_sum_nanos: AtomicU64::new(0),
            node_id: OnceLock::new(),
            backplane: Backplane::default(),
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
        self.messages_in[kind as usize].fetch_add(1, Relaxed);
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
        self.refused[reason as usize].fetch_add(1, Relaxed);
    }
    pub fn dropped(&self, reason: DropReason, count: u64) {
        self.dropped[reason as usize].fetch_add(count, Relaxed);
    }
    /// One failed webhook attempt (a retry may still deliver the call).
    pub fn webhook_attempt_failed(&self) {
        self.webhook_attempts_failed.fetch_add(1, Relaxed);
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

    pub fn total_in(&self) -> u64 {
        self.messages_in.iter().map(|c| c.load(Relaxed)).sum()
    }
    pub fn total_out(&self) -> u64 {
        self.messages_out.iter().map(|c| c.load(Relaxed)).sum()
    }
    pub fn total_rate_limited(&self) -> u64 {
        self.rate_limited.load(Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP wsgate_connections Open WebSocket connections on this node."
        )?;
        writeln!(out, "# TYPE wsgate_connections gauge")?;
        writeln!(out, "wsgate_connections {}", self.connections.load(Relaxed))?;

        writeln!(
            out,
            "# HELP wsgate_messages_in_total Client messages received, by type."
        )?;
        writeln!(out, "# TYPE wsgate_messages_in_total counter")?;
        for (label, c) in IN_LABELS.iter().zip(&self.messages_in) {
            writeln!(
                out,
                "wsgate_messages_in_total{{type=\"{label}\"}} {}",
                c.load(Relaxed)
            )?;
        }

        writeln!(
            out,
            "# HELP wsgate_messages_out_total Server messages written to connections, by type."
        )?;
        writeln!(out, "# TYPE wsgate_messages_out_total counter")?;
        for (i, c) in self.messages_out.iter().enumerate() {
            writeln!(
                out,
                "wsgate_messages_out_total{{type=\"{}\"}} {}",
                OutKind::label(i),
                c.load(Relaxed)
            )?;
        }

        writeln!(
            out,
            "# HELP wsgate_rate_limited_total Client messages dropped by the rate limiter."
        )?;
        writeln!(out, "# TYPE wsgate_rate_limited_total counter")?;
        writeln!(
            out,
            "wsgate_rate_limited_total {}",
            self.rate_limited.load(Relaxed)
        )?;

        writeln!(
            out,
            "# HELP wsgate_upgrades_refused_total WebSocket handshakes refused, by reason."
        )?;
        writeln!(out, "# TYPE wsgate_upgrades_refused_total counter")?;
        for (label, c) in REFUSAL_LABELS.iter().zip(&self.refused) {
            writeln!(
                out,
                "wsgate_upgrades_refused_total{{reason=\"{label}\"}} {}",
                c.load(Relaxed)
            )?;
        }

        writeln!(
            out,
            "# HELP wsgate_messages_dropped_total Messages dropped, by reason."
        )?;
        writeln!(out, "# TYPE wsgate_messages_dropped_total counter")?;
        for (label, c) in DROP_LABELS.iter().zip(&self.dropped) {
            writeln!(
                out,
                "wsgate_messages_dropped_total{{reason=\"{label}\"}} {}",
                c.load(Relaxed)
            )?;
        }

        writeln!(
            out,
            "# HELP wsgate_webhook_attempts_failed_total Webhook POSTs that failed (refused, no answer, TLS or connection error), retries included."
        )?;
        writeln!(out, "# TYPE wsgate_webhook_attempts_failed_total counter")?;
        writeln!(
            out,
            "wsgate_webhook_attempts_failed_total {}",
            self.webhook_attempts_failed.load(Relaxed)
        )?;

        writeln!(out, "# HELP wsgate_fanout_seconds Time from a publish call to the last write of its fan-out.")?;
        writeln!(out, "# TYPE wsgate_fanout_seconds histogram")?;
        let mut cumulative = 0;
        for (bound, c) in FANOUT_BUCKETS.iter().zip(&self.fanout_buckets) {
            cumulative += c.load(Relaxed);
            writeln!(
                out,
                "wsgate_fanout_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            )?;
        }
        let count = self.fanout_count.load(Relaxed);
        writeln!(out, "wsgate_fanout_seconds_bucket{{le=\"+Inf\"}} {count}")?;
        let sum = self.fanout_sum_nanos.load(Relaxed) as f64 / 1e9;
        writeln!(out, "wsgate_fanout_seconds_sum {sum}")?;
        writeln!(out, "wsgate_fanout_seconds_count {count}")?;

        if let Some(node_id) = self.node_id.get() {
            writeln!(out, "# HELP wsgate_node_info This node's --node-id.")?;
            writeln!(out, "# TYPE wsgate_node_info gauge")?;
            let escaped = node_id.replace('\\', "\\\\").replace('"', "\\\"");
            writeln!(out, "wsgate_node_info{{node_id=\"{escaped}\"}} 1")?;
        }
        if self.backplane.enabled.load(Relaxed) {
            self.render_backplane(out)?;
        }
        Ok(())
    }

    fn render_backplane(&self, out: &mut String) -> std::fmt::Result {
        let b = &self.backplane;
        let simple: [(&str, &str, &str, u64); 7] = [
            (
                "wsgate_backplane_up",
                "gauge",
                "1 when the cluster backplane (Redis) is connected and subscribed, else 0.",
                u64::from(b.up.load(Relaxed)),
            ),
            (
                "wsgate_backplane_published_total",
                "counter",
                "Events handed to the other nodes.",
                b.published.load(Relaxed),
            ),
            (
                "wsgate_backplane_received_total",
                "counter",
                "Messages received from other nodes.",
                b.received.load(Relaxed),
            ),
            (
                "wsgate_backplane_publish_errors_total",
                "counter",
                "Backplane commands that failed.",
                b.publish_errors.load(Relaxed),
            ),
            (
                "wsgate_backplane_dropped_total",
                "counter",
                "Events delivered on this node only: backplane queue full or backplane down.",
                b.dropped.load(Relaxed),
            ),
            (
                "wsgate_backplane_malformed_total",
                "counter",
                "Messages from the backplane that could not be decoded.",
                b.malformed.load(Relaxed),
            ),
            (
                "wsgate_backplane_reconnects_total",
                "counter",
                "Times this node (re)joined the backplane.",
                b.reconnects.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in simple {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} {kind}")?;
            writeln!(out, "{name} {value}")?;
        }
        writeln!(out, "# HELP wsgate_backplane_publish_lag_seconds Time from a publish to the backplane's acknowledgement, for the last event.")?;
        writeln!(out, "# TYPE wsgate_backplane_publish_lag_seconds gauge")?;
        writeln!(
            out,
            "wsgate_backplane_publish_lag_seconds {}",
            b.last_lag_nanos.load(Relaxed) as f64 / 1e9
        )?;
        writeln!(out, "# HELP wsgate_backplane_publish_lag_seconds_total Sum of publish lags (divide by wsgate_backplane_published_total for the mean).")?;
        writeln!(
            out,
            "# TYPE wsgate_backplane_publish_lag_seconds_total counter"
        )?;
        writeln!(
            out,
            "wsgate_backplane_publish_lag_seconds_total {}",
            b.lag_sum_nanos.load(Relaxed) as f64 / 1e9
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histogram() {
        let m = Metrics::default();
        m.connection_opened();
        m.message_in(InKind::Ping);
        m.messages_out(OutKind::Pong, 2);
        m.messages_out(OutKind::Event(Event::FileReady), 3);
        m.refused(RefusalReason::Unauthorized);
        m.rate_limited();
        m.observe_fanout(Duration::from_micros(80));
        m.observe_fanout(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("wsgate_connections 1\n"));
        assert!(text.contains("wsgate_messages_in_total{type=\"ping\"} 1\n"));
        assert!(text.contains("wsgate_messages_out_total{type=\"pong\"} 2\n"));
        assert!(text.contains("wsgate_messages_out_total{type=\"file.ready\"} 3\n"));
        assert!(text.contains("wsgate_upgrades_refused_total{reason=\"unauthorized\"} 1\n"));
        assert!(text.contains("wsgate_messages_dropped_total{reason=\"rate_limited\"} 1\n"));
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
}
