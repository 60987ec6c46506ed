//! SPEC section 3, RATE_LIMIT_EXCEEDED and close 1008: per user, over all
//! their connections, sliding window.

use crate::support::{Incoming, TestServer, WsClient};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ping(c: &mut WsClient, id: &str) -> Value {
    c.send_json(&json!({"type": "ping", "data": {"pingId": id}, "id": id}));
    c.recv_json()
}

fn assert_rate_limited(m: &Value) {
    assert_eq!(m["type"], "error", "expected RATE_LIMIT_EXCEEDED, got {m}");
    assert_eq!(m["data"]["code"], "RATE_LIMIT_EXCEEDED", "{m}");
    let retry = m["data"]["retry_after"].as_u64();
    assert!(
        retry.is_some_and(|r| r >= 1),
        "retry_after must be an integer >= 1: {m}"
    );
}

#[test]
fn sixth_message_is_rate_limited_with_retry_after() {
    let server = TestServer::start(&["--rate-limit-messages", "5", "--rate-limit-window", "60s"]);
    let mut c = server.ws("rl");
    for i in 0..5 {
        let m = ping(&mut c, &format!("p{i}"));
        assert_eq!(m["type"], "pong", "message {i} within the limit: {m}");
    }
    let m = ping(&mut c, "p5");
    assert_rate_limited(&m);
    assert_eq!(
        m["reply_to"], "p5",
        "the error replies to the dropped message"
    );
    let retry = m["data"]["retry_after"].as_u64().unwrap_or(0);
    assert!(retry <= 60, "retry_after within the 60 s window: {m}");
    // Every message type counts, not only pings.
    c.send_json(&json!({"type": "heartbeat"}));
    assert_rate_limited(&c.recv_json());
}

#[test]
fn limit_is_shared_by_all_connections_of_a_user() {
    let server = TestServer::start(&["--rate-limit-messages", "5", "--rate-limit-window", "60s"]);
    let mut a = server.ws("shared");
    let mut b = server.ws("shared");
    let mut other = server.ws("unrelated");
    for i in 0..3 {
        assert_eq!(ping(&mut a, &format!("a{i}"))["type"], "pong");
    }
    for i in 0..2 {
        assert_eq!(ping(&mut b, &format!("b{i}"))["type"], "pong");
    }
    assert_rate_limited(&ping(&mut b, "b2"));
    assert_rate_limited(&ping(&mut a, "a3"));
    // Another user is unaffected.
    for i in 0..5 {
        assert_eq!(ping(&mut other, &format!("o{i}"))["type"], "pong");
    }
}

#[test]
fn flooding_far_past_the_limit_closes_with_1008() {
    // limit 5 -> close after more than max(15, 20) = 20 dropped messages.
    let server = TestServer::start(&["--rate-limit-messages", "5", "--rate-limit-window", "60s"]);
    let mut flooder = server.ws("flood");
    let mut bystander = server.ws("calm");
    let mut answered = 0;
    let mut dropped = 0;
    let close = loop {
        assert!(
            answered + dropped <= 40,
            "still open after {dropped} dropped messages"
        );
        if flooder
            .try_send(tungstenite::Message::text(r#"{"type":"ping"}"#))
            .is_err()
        {
            break flooder.wait_end(Duration::from_secs(5));
        }
        match flooder.next_within(Duration::from_secs(5)) {
            Some(Incoming::Text(t)) => {
                let m: Value = serde_json::from_str(&t).expect("JSON");
                if m["type"] == "pong" {
                    answered += 1;
                } else {
                    assert_rate_limited(&m);
                    dropped += 1;
                }
            }
            Some(Incoming::Close(code, reason)) => break Some((code, reason)),
            Some(Incoming::Ping | Incoming::Pong) => {}
            other => panic!("unexpected {other:?} after {dropped} dropped"),
        }
    };
    assert_eq!(answered, 5);
    assert!(
        (20..=21).contains(&dropped),
        "close must come right after more than 20 drops, came after {dropped}"
    );
    assert_eq!(
        close.map(|c| c.0),
        Some(1008),
        "flooder closed with policy violation"
    );
    bystander.assert_alive();
}

#[test]
fn sliding_window_admits_again_after_it_passes() {
    let server = TestServer::start(&["--rate-limit-messages", "2", "--rate-limit-window", "1s"]);
    let mut c = server.ws("slide");
    let started = Instant::now();
    assert_eq!(ping(&mut c, "a")["type"], "pong");
    assert_eq!(ping(&mut c, "b")["type"], "pong");
    let limited = ping(&mut c, "c");
    assert_rate_limited(&limited);
    // Time is the event here: wait out the window, then retry with a
    // deadline (a dropped retry may itself count, so space retries a
    // window apart).
    let deadline = started + Duration::from_secs(8);
    let mut attempt = 0;
    loop {
        std::thread::sleep(Duration::from_millis(1100));
        attempt += 1;
        let m = ping(&mut c, &format!("retry{attempt}"));
        if m["type"] == "pong" {
            break;
        }
        assert_rate_limited(&m);
        assert!(
            Instant::now() < deadline,
            "still rate limited 8 s into a 1 s window"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "admitted before the window passed"
    );
}
