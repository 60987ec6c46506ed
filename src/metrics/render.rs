//! The Prometheus text exposition (format 0.0.4) of [`Metrics`].
//!
//! Owns the HELP and TYPE lines and the order of families and labels; the
//! output is the scrape contract, pinned byte for byte by a test in the
//! parent module. It reads the counters and must not change them.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::{
    AppendKind, ClosedCode, DropReason, EpochCause, InKind, Metrics, OutKind, RecoveryResult,
    RefreshResult, RefusalReason, FANOUT_BUCKETS,
};

impl Metrics {
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
        for kind in InKind::ALL {
            writeln!(
                out,
                "wsgate_messages_in_total{{type=\"{}\"}} {}",
                kind.label(),
                self.messages_in[kind.index()].load(Relaxed)
            )?;
        }

        writeln!(
            out,
            "# HELP wsgate_messages_out_total Server messages written to connections, by type."
        )?;
        writeln!(out, "# TYPE wsgate_messages_out_total counter")?;
        for kind in OutKind::all() {
            writeln!(
                out,
                "wsgate_messages_out_total{{type=\"{}\"}} {}",
                kind.label(),
                self.messages_out[kind.index()].load(Relaxed)
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
        for reason in RefusalReason::ALL {
            writeln!(
                out,
                "wsgate_upgrades_refused_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.refused[reason.index()].load(Relaxed)
            )?;
        }

        writeln!(
            out,
            "# HELP wsgate_messages_dropped_total Messages dropped, by reason."
        )?;
        writeln!(out, "# TYPE wsgate_messages_dropped_total counter")?;
        for reason in DropReason::ALL {
            writeln!(
                out,
                "wsgate_messages_dropped_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.dropped[reason.index()].load(Relaxed)
            )?;
        }

        writeln!(
            out,
            "# HELP wsgate_closes_total WebSocket closes the server started, by close code."
        )?;
        writeln!(out, "# TYPE wsgate_closes_total counter")?;
        for code in ClosedCode::ALL {
            writeln!(
                out,
                "wsgate_closes_total{{code=\"{}\"}} {}",
                code.label(),
                self.closes[code.index()].load(Relaxed)
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

        writeln!(
            out,
            "# HELP wsgate_token_expiring_sent_total token.expiring messages sent (refresh=1 connections)."
        )?;
        writeln!(out, "# TYPE wsgate_token_expiring_sent_total counter")?;
        writeln!(
            out,
            "wsgate_token_expiring_sent_total {}",
            self.token_expiring_sent.load(Relaxed)
        )?;

        writeln!(
            out,
            "# HELP wsgate_token_refresh_total auth.refresh requests, by result."
        )?;
        writeln!(out, "# TYPE wsgate_token_refresh_total counter")?;
        for result in RefreshResult::ALL {
            writeln!(
                out,
                "wsgate_token_refresh_total{{result=\"{}\"}} {}",
                result.label(),
                self.token_refresh[result.index()].load(Relaxed)
            )?;
        }

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

        self.render_history(out)?;

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

    fn render_history(&self, out: &mut String) -> std::fmt::Result {
        let h = &self.history;
        writeln!(out, "# HELP wsgate_history_appends_total Events appended to history streams, by stream kind.")?;
        writeln!(out, "# TYPE wsgate_history_appends_total counter")?;
        for kind in AppendKind::ALL {
            writeln!(
                out,
                "wsgate_history_appends_total{{kind=\"{}\"}} {}",
                kind.label(),
                h.appends[kind.index()].load(Relaxed)
            )?;
        }
        writeln!(
            out,
            "# HELP wsgate_recovery_total Positions given by clients, by outcome."
        )?;
        writeln!(out, "# TYPE wsgate_recovery_total counter")?;
        for result in RecoveryResult::ALL {
            writeln!(
                out,
                "wsgate_recovery_total{{result=\"{}\"}} {}",
                result.label(),
                h.recoveries[result.index()].load(Relaxed)
            )?;
        }
        writeln!(
            out,
            "# HELP wsgate_replayed_events_total Events replayed to connections from history."
        )?;
        writeln!(out, "# TYPE wsgate_replayed_events_total counter")?;
        writeln!(
            out,
            "wsgate_replayed_events_total {}",
            h.replayed.load(Relaxed)
        )?;
        writeln!(
            out,
            "# HELP wsgate_last_value_sent_total Cached last values sent to connections."
        )?;
        writeln!(out, "# TYPE wsgate_last_value_sent_total counter")?;
        writeln!(
            out,
            "wsgate_last_value_sent_total {}",
            h.last_values_sent.load(Relaxed)
        )?;
        writeln!(
            out,
            "# HELP wsgate_epoch_changes_total Stream epochs begun (created) or ended, by cause."
        )?;
        writeln!(out, "# TYPE wsgate_epoch_changes_total counter")?;
        for cause in EpochCause::ALL {
            writeln!(
                out,
                "wsgate_epoch_changes_total{{cause=\"{}\"}} {}",
                cause.label(),
                h.epoch_changes[cause.index()].load(Relaxed)
            )?;
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
