//! SPEC section 3: the server message envelope and `reply_to`.

use crate::support::{assert_envelope, TestServer};
use serde_json::{json, Value};
use std::collections::HashSet;
use tungstenite::Message;

#[test]
fn every_server_message_has_the_envelope_and_unique_ids() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("env-user");
    let mut seen: Vec<Value> = vec![c.established.clone()];
    let server_time = c.established["data"]["server_time"]
        .as_str()
        .unwrap_or_default();
    assert!(
        crate::support::is_timestamp(server_time),
        "server_time must be a millisecond UTC timestamp: {}",
        c.established
    );
    let features = &c.established["data"]["features"];
    for f in ["heartbeat", "subscriptions", "rate_limiting"] {
        assert!(
            features
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == f)),
            "features must list {f}: {}",
            c.established
        );
    }

    let requests = [
        json!({"type": "ping", "data": {"pingId": "p"}, "id": "c1"}),
        json!({"type": "heartbeat", "id": "c2"}),
        json!({"type": "subscribe", "data": {"events": ["file.ready"]}, "id": "c3"}),
        json!({"type": "unsubscribe", "data": {"events": ["file.ready"]}, "id": "c4"}),
        json!({"type": "upload.cancel", "data": {"upload_id": "up"}, "id": "c5"}),
        json!({"type": "nope", "id": "c6"}),
        json!({"type": "subscribe", "data": {"events": ["bogus"]}, "id": "c7"}),
        json!({"type": "subscribe", "data": {"events": "file.ready"}, "id": "c8"}),
    ];
    for req in &requests {
        c.send_json(req);
        let reply = c.recv_json();
        assert_eq!(
            reply["reply_to"], req["id"],
            "reply to {req} must carry reply_to: {reply}"
        );
        seen.push(reply);
    }
    // A reply to a message without an id: still a full envelope.
    c.send_json(&json!({"type": "ping"}));
    seen.push(c.recv_json());
    c.send_text("{broken");
    seen.push(c.recv_json());
    c.send_raw(Message::binary(vec![1u8, 2, 3]));
    seen.push(c.recv_json());
    // A pushed event.
    server.api_post(
        "/api/v1/notifications",
        &json!({"message": "hello", "users": ["env-user"]}),
    );
    seen.push(c.recv_json());

    let mut ids = HashSet::new();
    for m in &seen {
        assert_envelope(m);
        assert!(
            ids.insert(m["id"].as_str().unwrap_or_default().to_string()),
            "duplicate server message id in {m}"
        );
    }
}

#[test]
fn client_may_omit_data_timestamp_and_id() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("omit-user");
    c.send_json(&json!({"type": "heartbeat"}));
    let ack = c.recv_json();
    assert_eq!(ack["type"], "heartbeat.ack", "{ack}");
    assert!(
        ack.get("reply_to").is_none() || ack["reply_to"].is_null(),
        "no reply_to when the client gave no id: {ack}"
    );
}
