//! The seed's own tests (websocket-module.md, "Testing Strategies"),
//! ported to the real binary.

use crate::support::{TestServer, TokenVia, WsClient};
use serde_json::json;

#[test]
fn seed_connection_established() {
    let server = TestServer::start(&[]);
    let client = server.ws("seed-user");
    assert_eq!(client.established["type"], "connection.established");
    assert!(
        client.established["data"]["connection_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "connection_id missing: {}",
        client.established
    );
    assert_eq!(client.established["data"]["user_id"], "seed-user");
}

#[test]
fn seed_invalid_token_refused() {
    let server = TestServer::start(&[]);
    let result = WsClient::try_connect(server.addr(), TokenVia::Path, "invalid-token");
    assert_eq!(crate::support::ws::refusal_status(result), 401);
}

#[test]
fn seed_ping_pong() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("seed-user");
    c.send_json(&json!({
        "type": "ping",
        "data": {"pingId": "test-ping-123"},
        "timestamp": "2025-01-08T10:30:00Z",
        "id": "msg_ping"
    }));
    let pong = c.recv_json();
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["data"]["pingId"], "test-ping-123");
}

#[test]
fn seed_subscription_confirmed() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("seed-user");
    c.send_json(&json!({
        "type": "subscribe",
        "data": {"events": ["upload.progress", "system.notification"]},
        "timestamp": "2025-01-08T10:30:00Z",
        "id": "msg_sub"
    }));
    let reply = c.recv_json();
    assert_eq!(reply["type"], "subscription.confirmed", "{reply}");
}

#[test]
fn seed_rate_limit_after_105_pings() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("seed-user");
    for i in 0..105 {
        c.send_json(&json!({"type": "ping", "data": {"pingId": format!("ping-{i}")}, "id": format!("msg-{i}")}));
    }
    let mut pongs = 0;
    let err = loop {
        let m = c.recv_json();
        match m["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => break m,
            _ => panic!("unexpected message {m}"),
        }
    };
    assert_eq!(
        pongs, 100,
        "exactly the first 100 pings (default limit) are answered"
    );
    assert_eq!(err["data"]["code"], "RATE_LIMIT_EXCEEDED", "{err}");
}

#[test]
fn seed_full_workflow_file_status_reaches_user() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("test-user-123");
    c.send_json(
        &json!({"type": "subscribe", "data": {"events": ["upload.progress"]}, "id": "sub_1"}),
    );
    let confirmed = c.recv_json();
    assert_eq!(confirmed["type"], "subscription.confirmed", "{confirmed}");
    assert_eq!(confirmed["reply_to"], "sub_1");

    let delivered = server
        .api_post(
            "/api/v1/files/file_456/status",
            &json!({"user_id": "test-user-123", "status": "processing", "progress": 50}),
        )
        .delivered();
    assert_eq!(delivered, 1);

    let msg = c.recv_json();
    assert_eq!(msg["type"], "file.processing", "{msg}");
    assert_eq!(msg["data"]["file_id"], "file_456");
    assert_eq!(msg["data"]["progress"], 50);
}
