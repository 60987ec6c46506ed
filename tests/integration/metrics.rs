//! SPEC section 4: `GET /metrics` in Prometheus text, values that move.

use crate::support::metrics::metric_sum;
use crate::support::raw::Upgrade;
use crate::support::{wait_until, TestServer};
use serde_json::json;
use std::time::Duration;

#[test]
fn metrics_names_present_and_values_move() {
    let server = TestServer::start(&["--rate-limit-messages", "3"]);
    let text = server.metrics();
    for name in [
        "wsgate_connections",
        "wsgate_messages_in_total",
        "wsgate_messages_out_total",
        "wsgate_rate_limited_total",
        "wsgate_upgrades_refused_total",
        "wsgate_messages_dropped_total",
        "wsgate_fanout_seconds",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert_eq!(metric_sum(&text, "wsgate_connections", &[]), Some(0.0));

    let mut c = server.ws("m");
    c.subscribe(&["review.created"]);
    c.assert_alive();
    c.assert_alive();
    // Fourth message of the user: rate limited (limit 3).
    c.send_json(&json!({"type": "ping"}));
    let err = c.recv_json();
    assert_eq!(err["data"]["code"], "RATE_LIMIT_EXCEEDED", "{err}");
    // A refused upgrade.
    let refused = Upgrade::get("/api/v1/ws/garbage").send(server.addr());
    assert_eq!(refused.status, 401);
    // A publish.
    assert_eq!(
        server.publish(&json!({"type": "review.created", "data": {}})),
        1
    );
    c.recv_json();

    let text = server.metrics();
    assert_eq!(
        metric_sum(&text, "wsgate_connections", &[]),
        Some(1.0),
        "gauge follows connections:\n{text}"
    );
    // Two admitted pings; SPEC does not say whether the rate-limited third
    // one counts as received.
    let pings_in = metric_sum(&text, "wsgate_messages_in_total", &[("type", "ping")]);
    assert!(
        pings_in == Some(2.0) || pings_in == Some(3.0),
        "pings received {pings_in:?}:\n{text}"
    );
    assert!(
        metric_sum(&text, "wsgate_messages_out_total", &[]).is_some_and(|v| v >= 3.0),
        "messages out moved:\n{text}"
    );
    assert!(
        metric_sum(&text, "wsgate_rate_limited_total", &[]).is_some_and(|v| v >= 1.0),
        "rate limited counter moved:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("wsgate_upgrades_refused_total{") && l.contains("reason=")),
        "refusals are labelled by reason:\n{text}"
    );
    assert!(
        metric_sum(&text, "wsgate_upgrades_refused_total", &[]).is_some_and(|v| v >= 1.0),
        "refusal counter moved:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("wsgate_fanout_seconds_bucket")),
        "fan-out histogram buckets:\n{text}"
    );
    assert!(
        metric_sum(&text, "wsgate_fanout_seconds_count", &[]).is_some_and(|v| v >= 1.0),
        "fan-out histogram counted the publish:\n{text}"
    );

    drop(c);
    assert!(
        wait_until(Duration::from_secs(5), || {
            metric_sum(&server.metrics(), "wsgate_connections", &[]) == Some(0.0)
        }),
        "connections gauge returns to 0 after disconnect"
    );
}

#[test]
fn metrics_content_type_is_prometheus_text() {
    let server = TestServer::start(&[]);
    let r = server.get_public("/metrics");
    r.expect_status(200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "Prometheus text content type: {:?}",
        r.headers
    );
}
