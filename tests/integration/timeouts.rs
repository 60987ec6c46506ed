//! SPEC sections 1 and 3: heartbeat pings, connection timeout (4000),
//! token expiry while connected (4001), oversize frames (1009).

use crate::support::{now_secs, Incoming, TestServer};
use serde_json::json;
use std::time::{Duration, Instant};
use tungstenite::Message;

#[test]
fn server_sends_websocket_pings_at_heartbeat_interval() {
    let server = TestServer::start(&["--heartbeat-interval", "200ms"]);
    let mut c = server.ws("hb");
    let started = Instant::now();
    let mut pings = 0;
    while pings < 2 {
        match c.next_within(Duration::from_secs(3)) {
            Some(Incoming::Ping) => pings += 1,
            Some(Incoming::Pong) => {}
            other => panic!("expected WebSocket Ping frames, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "two pings at a 200ms interval took {:?}",
        started.elapsed()
    );
}

#[test]
fn silent_client_is_closed_with_4000() {
    let server = TestServer::start(&["--connection-timeout", "500ms"]);
    let mut c = server.ws("quiet");
    let started = Instant::now();
    let (code, _) = c.expect_close_within(Duration::from_secs(5));
    assert_eq!(code, 4000, "connection timeout close code");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[test]
fn client_that_never_reads_is_still_timed_out() {
    let server = TestServer::start(&["--connection-timeout", "500ms"]);
    let mut c = server.ws("deaf");
    let id = c.connection_id();
    // Not reading at all: the server must drop it on its own.
    assert!(
        server.wait_connection_gone(&id, Duration::from_secs(5)),
        "a client that never reads nor sends was not timed out"
    );
    let (code, _) = c.expect_close();
    assert_eq!(code, 4000);
}

#[test]
fn active_client_is_not_timed_out() {
    let server = TestServer::start(&["--connection-timeout", "500ms"]);
    let mut c = server.ws("chatty");
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        c.assert_alive();
        // Pacing the client's own activity, not waiting for an event.
        std::thread::sleep(Duration::from_millis(150));
    }
    c.assert_alive();
}

#[test]
fn answering_pings_counts_as_activity() {
    let server = TestServer::start(&[
        "--heartbeat-interval",
        "100ms",
        "--connection-timeout",
        "500ms",
    ]);
    let mut c = server.ws("pongs-only");
    // Only reading: tungstenite answers each Ping with a Pong.
    c.expect_silence(Duration::from_millis(1500));
    c.assert_alive();
}

#[test]
fn token_expiring_while_connected_closes_with_4001() {
    let server = TestServer::start(&[]);
    let exp = now_secs() + 2;
    let mut c = server.ws_token(&server.token_with(&json!({"sub": "short", "exp": exp})));
    c.assert_alive();
    let (code, _) = c.expect_close_within(Duration::from_secs(6));
    assert_eq!(code, 4001, "token expiry close code");
    assert!(
        now_secs() >= exp,
        "closed for expiry before the token's exp"
    );
}

#[test]
fn oversize_frame_closes_with_1009() {
    let server = TestServer::start(&["--max-message-size", "1024"]);
    let mut big = server.ws("big");
    let mut other = server.ws("small");
    let payload = format!(
        r#"{{"type":"ping","data":{{"pingId":"{}"}}}}"#,
        "x".repeat(2000)
    );
    // The write may fail if the server closes first.
    let _ = big.try_send(Message::text(payload));
    let end = big.wait_end(Duration::from_secs(5));
    assert_eq!(end.map(|c| c.0), Some(1009), "oversize message close code");
    other.assert_alive();
    // A message just under the limit is fine.
    let mut ok = server.ws("fits");
    let payload = format!(
        r#"{{"type":"ping","data":{{"pingId":"{}"}}}}"#,
        "y".repeat(900)
    );
    ok.send_text(&payload);
    assert_eq!(ok.recv_json()["type"], "pong");
}
