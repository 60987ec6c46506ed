//! SPEC section 3: the client message table, subscriptions, upload.cancel
//! and the error codes that keep the connection open.

use crate::support::TestServer;
use serde_json::{json, Value};
use tungstenite::Message;

fn error_code(m: &Value) -> &str {
    assert_eq!(m["type"], "error", "expected an error message: {m}");
    assert!(
        m["data"]["message"].as_str().is_some_and(|s| !s.is_empty()),
        "error without a human `message`: {m}"
    );
    m["data"]["code"].as_str().unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|x| x.as_str().expect("array of strings").to_string())
        .collect()
}

#[test]
fn ping_echoes_ping_id_and_null_when_absent() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    c.send_json(&json!({"type": "ping", "data": {"pingId": "abc-1"}, "id": "m1"}));
    let pong = c.recv_json();
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["data"]["pingId"], "abc-1");
    assert!(
        pong["data"]["timestamp"].is_string(),
        "pong data carries a timestamp: {pong}"
    );
    c.send_json(&json!({"type": "ping"}));
    let pong = c.recv_json();
    assert_eq!(pong["type"], "pong");
    assert!(
        pong["data"].get("pingId").is_some_and(Value::is_null),
        "pingId must be present and null when absent: {pong}"
    );
}

/// `data` of the wrong shape is `INVALID_MESSAGE` with `reply_to`, for
/// every field the SPEC types; the connection stays open.
#[test]
fn typed_fields_of_the_wrong_type_are_invalid_message_with_reply_to() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    let cases = [
        json!({"type": "ping", "data": {"pingId": 5}}),
        json!({"type": "ping", "data": {"pingId": {"a": 1}}}),
        json!({"type": "ping", "data": {"pingId": ["p"]}}),
        json!({"type": "ping", "data": {"pingId": true}}),
        json!({"type": "subscribe", "data": {"events": ["file.ready", 7]}}),
        json!({"type": "subscribe", "data": {"events": [null]}}),
        json!({"type": "unsubscribe", "data": {"events": [["file.ready"]]}}),
        json!({"type": "upload.cancel", "data": {"upload_id": 12}}),
        json!({"type": "upload.cancel", "data": {"upload_id": {"id": "x"}}}),
        json!({"type": "upload.cancel", "data": {}}),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let mut message = case.clone();
        message["id"] = json!(format!("bad-{i}"));
        c.send_json(&message);
        let reply = c.recv_json();
        assert_eq!(error_code(&reply), "INVALID_MESSAGE", "{case} -> {reply}");
        assert_eq!(reply["reply_to"], format!("bad-{i}"), "{reply}");
    }
    // `pingId: null` is read as absent (wsgate choice): a pong.
    c.send_json(&json!({"type": "ping", "data": {"pingId": null}, "id": "n"}));
    let pong = c.recv_json();
    assert_eq!(pong["type"], "pong", "{pong}");
    assert!(pong["data"]["pingId"].is_null(), "{pong}");
    assert_eq!(
        server.connections(Some("u"))[0]["subscriptions"],
        json!([]),
        "a rejected subscribe must change nothing"
    );
}

/// `events` is the list the client sent, in its order; only
/// `subscriptions` is sorted.
#[test]
fn confirmed_events_are_the_requested_list_in_the_client_order() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    let requested = ["upload.progress", "file.ready", "review.created"];
    let r = c.subscribe(&requested);
    assert_eq!(strings(&r["data"]["events"]), requested);
    assert_eq!(
        strings(&r["data"]["subscriptions"]),
        ["file.ready", "review.created", "upload.progress"]
    );
    c.send_json(&json!({"type": "unsubscribe", "id": "un",
        "data": {"events": ["upload.progress", "file.ready"]}}));
    let r = c.recv_json();
    assert_eq!(r["type"], "unsubscription.confirmed", "{r}");
    assert_eq!(
        strings(&r["data"]["events"]),
        ["upload.progress", "file.ready"]
    );
    assert_eq!(strings(&r["data"]["subscriptions"]), ["review.created"]);
}

#[test]
fn heartbeat_gets_ack() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    c.send_json(&json!({"type": "heartbeat", "data": {}, "id": "hb"}));
    let ack = c.recv_json();
    assert_eq!(ack["type"], "heartbeat.ack", "{ack}");
    assert!(ack["data"]["timestamp"].is_string(), "{ack}");
    assert_eq!(ack["reply_to"], "hb");
}

#[test]
fn subscribe_and_unsubscribe_report_sorted_current_set() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    let r = c.subscribe(&["upload.progress", "system.notification"]);
    // SPEC: `events` is "the requested"; their order is not pinned.
    let mut events = strings(&r["data"]["events"]);
    events.sort();
    assert_eq!(events, ["system.notification", "upload.progress"]);
    assert_eq!(
        strings(&r["data"]["subscriptions"]),
        ["system.notification", "upload.progress"]
    );
    let r = c.subscribe(&["file.ready"]);
    assert_eq!(strings(&r["data"]["events"]), ["file.ready"]);
    assert_eq!(
        strings(&r["data"]["subscriptions"]),
        ["file.ready", "system.notification", "upload.progress"]
    );
    c.send_json(
        &json!({"type": "unsubscribe", "data": {"events": ["upload.progress"]}, "id": "un"}),
    );
    let r = c.recv_json();
    assert_eq!(r["type"], "unsubscription.confirmed", "{r}");
    assert_eq!(r["reply_to"], "un");
    assert_eq!(strings(&r["data"]["events"]), ["upload.progress"]);
    assert_eq!(
        strings(&r["data"]["subscriptions"]),
        ["file.ready", "system.notification"]
    );
    // The server API agrees.
    let conns = server.connections(Some("u"));
    assert_eq!(conns.len(), 1, "{conns:?}");
    let mut subs = strings(&conns[0]["subscriptions"]);
    subs.sort();
    assert_eq!(subs, ["file.ready", "system.notification"]);
}

#[test]
fn all_twelve_events_are_subscribable() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    let all = [
        "upload.progress",
        "upload.completed",
        "upload.error",
        "upload.cancelled",
        "review.updated",
        "review.created",
        "review.deleted",
        "system.notification",
        "system.maintenance",
        "user.status_changed",
        "file.processing",
        "file.ready",
    ];
    let r = c.subscribe(&all);
    let mut sorted = all.to_vec();
    sorted.sort();
    assert_eq!(strings(&r["data"]["subscriptions"]), sorted);
}

#[test]
fn invalid_subscription_is_atomic() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    c.subscribe(&["review.created"]);
    c.send_json(&json!({
        "type": "subscribe",
        "data": {"events": ["upload.progress", "bogus.one", "Review.Created"]},
        "id": "bad-sub"
    }));
    let err = c.recv_json();
    assert_eq!(error_code(&err), "INVALID_SUBSCRIPTION", "{err}");
    assert_eq!(err["reply_to"], "bad-sub");
    let mut invalid = strings(&err["data"]["invalid_events"]);
    invalid.sort();
    assert_eq!(invalid, ["Review.Created", "bogus.one"]);

    // Unsubscribe with an unknown event changes nothing either.
    c.send_json(&json!({"type": "unsubscribe", "data": {"events": ["review.created", "nope"]}}));
    let err = c.recv_json();
    assert_eq!(error_code(&err), "INVALID_SUBSCRIPTION", "{err}");
    assert_eq!(strings(&err["data"]["invalid_events"]), ["nope"]);

    let conns = server.connections(Some("u"));
    assert_eq!(strings(&conns[0]["subscriptions"]), ["review.created"]);
    let r = c.subscribe(&["file.ready"]);
    assert_eq!(
        strings(&r["data"]["subscriptions"]),
        ["file.ready", "review.created"],
        "the refused subscribe must not have added upload.progress"
    );
}

#[test]
fn upload_cancel_acknowledged_and_fanned_to_users_subscribed_connections() {
    let server = TestServer::start(&[]);
    let mut origin = server.ws("owner");
    let mut listener = server.ws("owner");
    let mut unsubscribed = server.ws("owner");
    let mut stranger = server.ws("someone-else");
    listener.subscribe(&["upload.cancelled"]);
    stranger.subscribe(&["upload.cancelled"]);

    origin.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": "up-42"}, "id": "cx"}));
    let ack = origin.recv_json();
    assert_eq!(ack["type"], "upload.cancel.acknowledged", "{ack}");
    assert_eq!(ack["data"]["upload_id"], "up-42");
    assert_eq!(ack["reply_to"], "cx");

    let ev = listener.recv_json();
    assert_eq!(ev["type"], "upload.cancelled", "{ev}");
    assert_eq!(ev["data"]["upload_id"], "up-42");
    assert_eq!(ev["data"]["connection_id"], origin.connection_id().as_str());

    server.assert_nothing_pending(&mut unsubscribed);
    server.assert_nothing_pending(&mut stranger);
    server.assert_nothing_pending(&mut origin);
}

#[test]
fn upload_cancel_without_upload_id_is_invalid_message() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    for data in [json!({}), json!({"upload_id": ""}), json!({"upload_id": 7})] {
        c.send_json(&json!({"type": "upload.cancel", "data": data, "id": "x"}));
        let err = c.recv_json();
        assert_eq!(error_code(&err), "INVALID_MESSAGE", "data {data}: {err}");
        assert_eq!(err["reply_to"], "x");
    }
    c.assert_alive();
}

#[test]
fn invalid_json_keeps_connection_open() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    c.send_text("{not json");
    let err = c.recv_json();
    assert_eq!(error_code(&err), "INVALID_JSON", "{err}");
    c.assert_alive();
}

#[test]
fn invalid_message_shapes() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    let cases = [
        "[1, 2, 3]",
        "\"ping\"",
        "42",
        "null",
        r#"{"data": {}}"#,
        r#"{"type": 5}"#,
        r#"{"type": null}"#,
        r#"{"type": "subscribe", "data": {"events": "file.ready"}}"#,
        r#"{"type": "subscribe", "data": {"events": [1, 2]}}"#,
        r#"{"type": "subscribe", "data": {}}"#,
        r#"{"type": "ping", "data": "not an object"}"#,
        r#"{"type": "unsubscribe", "data": {"events": 3}}"#,
    ];
    for case in cases {
        c.send_text(case);
        let err = c.recv_json();
        assert_eq!(error_code(&err), "INVALID_MESSAGE", "for {case}: {err}");
    }
    c.send_raw(Message::binary(b"{\"type\":\"ping\"}".to_vec()));
    let err = c.recv_json();
    assert_eq!(
        error_code(&err),
        "INVALID_MESSAGE",
        "for a binary frame: {err}"
    );
    // The id is echoed where it could be read.
    c.send_text(r#"{"type": "subscribe", "data": {"events": "x"}, "id": "shape"}"#);
    let err = c.recv_json();
    assert_eq!(err["reply_to"], "shape", "{err}");
    c.assert_alive();
}

#[test]
fn empty_subscribe_list_is_refused() {
    // SPEC: events must be non-empty; the code is not pinned beyond
    // "wrong shape", so accept INVALID_MESSAGE or INVALID_SUBSCRIPTION.
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    c.send_json(&json!({"type": "subscribe", "data": {"events": []}}));
    let err = c.recv_json();
    let code = error_code(&err);
    assert!(
        code == "INVALID_MESSAGE" || code == "INVALID_SUBSCRIPTION",
        "empty events list: {err}"
    );
    c.assert_alive();
}

#[test]
fn unknown_type_and_case_sensitivity() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    for ty in ["foo.bar", "PING", "Subscribe", "pong"] {
        c.send_json(&json!({"type": ty, "id": ty}));
        let err = c.recv_json();
        assert_eq!(error_code(&err), "INVALID_MESSAGE_TYPE", "type {ty}: {err}");
        assert_eq!(
            err["data"]["message"],
            format!("Unknown message type: {ty}"),
            "{err}"
        );
        assert_eq!(err["reply_to"], ty);
    }
    c.assert_alive();
}

#[test]
fn two_clients_of_one_user_are_independent_connections() {
    let server = TestServer::start(&[]);
    let mut a = server.ws("same");
    let mut b = server.ws("same");
    assert_ne!(a.connection_id(), b.connection_id());
    a.subscribe(&["review.created"]);
    let delivered = server.publish(&json!({"type": "review.created", "data": {"n": 1}}));
    assert_eq!(delivered, 1);
    let ev = a.recv_json();
    assert_eq!(ev["type"], "review.created");
    server.assert_nothing_pending(&mut b);
}

#[test]
fn websocket_ping_frame_is_answered_with_pong() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    c.send_raw(Message::Ping(b"are-you-there".to_vec().into()));
    match c.next_within(std::time::Duration::from_secs(5)) {
        Some(crate::support::Incoming::Pong) => {}
        other => panic!("expected a Pong frame, got {other:?}"),
    }
    c.assert_alive();
}

#[test]
fn client_close_is_answered_and_connection_removed() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    let id = c.connection_id();
    c.ws.close(None).expect("send close");
    let end = c.wait_end(std::time::Duration::from_secs(5));
    assert!(
        end.as_ref()
            .is_some_and(|(code, _)| *code == 1000 || *code == 1005),
        "close handshake answered, got {end:?}"
    );
    assert!(
        server.wait_connection_gone(&id, std::time::Duration::from_secs(5)),
        "closed connection still listed"
    );
}
