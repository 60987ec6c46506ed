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

/// Found by the envelope property test: serde_json without `float_roundtrip`
/// parses some 17-digit floats 1 ULP off, so a number the backend publishes
/// can reach clients changed in its last digit.
#[test]
fn published_numbers_reach_clients_unchanged() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("float-user");
    // Each in the shortest form serde_json writes, so it must come back
    // byte for byte.
    let numbers = ["-6.758822851109695e+299", "1.7976931348623157e+308", "0.1"];
    let body = format!(
        r#"{{"type":"review.created","connections":["{}"],"data":{{"n":[{}]}}}}"#,
        c.connection_id(),
        numbers.join(",")
    );
    server
        .api_post_raw("/api/v1/events", &body)
        .expect_status(200);
    // The raw text, not re-parsed: the test must not round the same way.
    let text = match c.next_within(std::time::Duration::from_secs(5)) {
        Some(crate::support::Incoming::Text(t)) => t,
        other => panic!("expected the event, got {other:?}"),
    };
    let expected = format!(r#""n":[{}]"#, numbers.join(","));
    assert!(
        text.contains(&expected),
        "numbers changed on their way through the gateway: sent {expected}, got {text}"
    );
}
