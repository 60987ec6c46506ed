//! SPEC section 3: `upload.cancel` is POSTed to `--webhook-url` with the API
//! key, retried on failure, and never closes the connection.

use crate::support::mock_http::MockHttp;
use crate::support::{is_timestamp, TestServer};
use serde_json::json;
use std::time::Duration;

#[test]
fn upload_cancel_is_posted_to_the_webhook() {
    let hook = MockHttp::start(|_| Some(200));
    let server = TestServer::start(&["--webhook-url", &hook.url()]);
    let mut c = server.ws("hook-user");
    c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": "up-1"}, "id": "m1"}));
    assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
    let req = hook.next_request(Duration::from_secs(10));
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks/wsgate");
    assert_eq!(
        req.header("Authorization"),
        Some(format!("Bearer {}", server.api_key).as_str())
    );
    assert!(
        req.header("Content-Type")
            .is_some_and(|t| t.contains("application/json")),
        "{req:?}"
    );
    let body = req.json();
    assert_eq!(body["type"], "upload.cancel", "{body}");
    assert_eq!(body["user_id"], "hook-user");
    assert_eq!(body["connection_id"], c.connection_id().as_str());
    assert_eq!(body["data"]["upload_id"], "up-1");
    assert!(body["id"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
    assert!(
        body["timestamp"].as_str().is_some_and(is_timestamp),
        "{body}"
    );
}

#[test]
fn failed_webhook_is_retried() {
    let hook = MockHttp::start(|n| Some(if n == 0 { 500 } else { 200 }));
    let server = TestServer::start(&["--webhook-url", &hook.url()]);
    let mut c = server.ws("retry-user");
    c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": "up-r"}}));
    assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
    let first = hook.next_request(Duration::from_secs(10)).json();
    let second = hook.next_request(Duration::from_secs(20)).json();
    assert_eq!(first["data"]["upload_id"], "up-r");
    assert_eq!(
        second["data"]["upload_id"], "up-r",
        "the retry carries the same request"
    );
    c.assert_alive();
}

#[test]
fn dead_webhook_never_closes_the_connection() {
    // Port 1 on loopback: connection refused.
    let server = TestServer::start(&["--webhook-url", "http://127.0.0.1:1/hook"]);
    let mut c = server.ws("dead-hook");
    for i in 0..3 {
        c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": format!("u{i}")}}));
        assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
        c.assert_alive();
    }
}

#[test]
fn hanging_webhook_never_blocks_the_connection() {
    let hook = MockHttp::start(|_| None);
    let server = TestServer::start(&["--webhook-url", &hook.url()]);
    let mut c = server.ws("hang-hook");
    c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": "h1"}}));
    assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
    hook.next_request(Duration::from_secs(10));
    c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": "h2"}}));
    assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
    c.assert_alive();
}
