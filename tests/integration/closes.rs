//! SPEC-v2 §6: every close the server starts carries a compact JSON reason
//! with retry advice; accept-then-close refusals (4401 / 4429 / 4503) with
//! `--refusal-mode close` or `?refusal=close`; `--max-connection-age`
//! (4009); 1001 `retry_after` spread by `--shutdown-reconnect-spread`.

use crate::support::metrics::metric_sum;
use crate::support::raw::{raw_request, read_response, Upgrade, SAMPLE_KEY};
use crate::support::ws::{handshake_request, refusal_status};
use crate::support::{now_secs, wait_until, Incoming, TestServer, TokenVia, WsClient};
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

/// Parses a close reason and checks the §6 shape: compact JSON of at most
/// 123 bytes with `code` and `retry` (the expected ones).
fn reason(text: &str, code: &str, retry: &str) -> Value {
    assert!(
        text.len() <= 123,
        "reason over 123 bytes: {} {text}",
        text.len()
    );
    let parsed: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("close reason is not JSON ({e}): {text:?}"));
    // Every value is a name or a number: compact means no whitespace.
    assert!(
        !text.contains(char::is_whitespace),
        "reason must be compact JSON: {text:?}"
    );
    assert_eq!(parsed["code"], code, "{text}");
    assert_eq!(parsed["retry"], retry, "{text}");
    parsed
}

fn expect_close(c: &mut WsClient, within: Duration, code: u16) -> String {
    let (got, text) = c.expect_close_within(within);
    assert_eq!(got, code, "close code (reason {text:?})");
    text
}

/// What a refused-by-close socket receives: the `error` message, then the
/// close frame, then the end; nothing else, and the server ends it
/// within about a second even though the client keeps it open.
struct Refused {
    error: Value,
    code: u16,
    reason: String,
    protocol: Option<String>,
    ended_after: Duration,
}

fn ws_request(url: &str, protocols: Option<&str>) -> tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().expect("request");
    if let Some(p) = protocols {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(p).expect("header value"),
        );
    }
    req
}

fn read_refusal(mut ws: WebSocket<TcpStream>, response_protocol: Option<String>) -> Refused {
    let started = Instant::now();
    // A frame from the client must not be read nor answered.
    let _ = ws.send(Message::text(r#"{"type":"ping","data":{"pingId":"x"}}"#));
    let mut error = None;
    let mut close = None;
    let deadline = started + Duration::from_secs(5);
    loop {
        assert!(
            Instant::now() < deadline,
            "refused socket still open after 5 s"
        );
        match ws.read() {
            Ok(Message::Text(t)) => {
                assert!(error.is_none(), "a second text message: {t}");
                assert!(close.is_none(), "a text message after the close: {t}");
                error = Some(serde_json::from_str::<Value>(t.as_str()).expect("JSON"));
            }
            Ok(Message::Close(Some(f))) => {
                close = Some((u16::from(f.code), f.reason.as_str().to_string()));
            }
            Ok(other) => panic!("unexpected frame on a refused socket: {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let (code, reason) = close.expect("a close frame");
    Refused {
        error: error.expect("an error message before the close"),
        code,
        reason,
        protocol: response_protocol,
        ended_after: started.elapsed(),
    }
}

fn refused(server: &TestServer, url_tail: &str, protocols: Option<&str>) -> Refused {
    let url = format!("ws://{}{url_tail}", server.addr());
    let (ws, response) = handshake_request(server.addr(), ws_request(&url, protocols))
        .unwrap_or_else(|e| panic!("upgrade refused over HTTP instead of by close: {e}"));
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    read_refusal(ws, protocol)
}

fn assert_refused(r: &Refused, close: u16, code: &str, retry: &str, retry_after: Option<u64>) {
    assert_eq!(r.code, close, "close code, reason {}", r.reason);
    let parsed = reason(&r.reason, code, retry);
    assert_eq!(parsed["retry_after"].as_u64(), retry_after, "{}", r.reason);
    assert_eq!(r.error["type"], "error", "{}", r.error);
    assert_eq!(r.error["data"]["code"], code, "{}", r.error);
    assert!(
        r.error["data"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error needs a message: {}",
        r.error
    );
    assert_eq!(
        r.error["data"]["retry_after"].as_u64(),
        retry_after,
        "{}",
        r.error
    );
    assert!(
        r.ended_after < Duration::from_millis(2500),
        "refused socket lived {:?}",
        r.ended_after
    );
}

fn stats_connections(server: &TestServer) -> u64 {
    let s = server.api_get("/api/v1/stats");
    s.expect_status(200);
    s.json["connections"].as_u64().expect("connections")
}

#[test]
fn close_mode_refuses_a_bad_token_with_4401() {
    let server = TestServer::start(&["--refusal-mode", "close"]);
    let r = refused(&server, "/api/v1/ws/not-a-jwt", Some("wsgate.v1"));
    assert_refused(&r, 4401, "UNAUTHORIZED", "refresh", None);
    assert_eq!(
        r.protocol.as_deref(),
        Some("wsgate.v1"),
        "subprotocol negotiated as usual"
    );
    let expired = server.token_with(&json!({"sub": "late", "exp": now_secs() - 60}));
    let r = refused(&server, &format!("/api/v1/ws?token={expired}"), None);
    assert_refused(&r, 4401, "UNAUTHORIZED", "refresh", None);
    assert_eq!(r.protocol, None);
    let m = server.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "wsgate_upgrades_refused_total",
            &[("reason", "unauthorized")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_sum(&m, "wsgate_closes_total", &[("code", "4401")]),
        Some(2.0)
    );
    assert_eq!(metric_sum(&m, "wsgate_connections", &[]), Some(0.0));
    assert_eq!(stats_connections(&server), 0);
}

#[test]
fn refusal_close_query_gives_4429_to_a_fourth_tab_which_never_counts() {
    let server = TestServer::start(&[]);
    let token = server.token("tabs");
    let mut tabs: Vec<WsClient> = (0..3).map(|_| server.ws_token(&token)).collect();
    let r = refused(
        &server,
        &format!("/api/v1/ws/{token}?refusal=close"),
        Some("wsgate.v1"),
    );
    assert_refused(&r, 4429, "TOO_MANY_CONNECTIONS", "backoff", Some(5));
    assert_eq!(r.protocol.as_deref(), Some("wsgate.v1"));
    assert_eq!(stats_connections(&server), 3);
    assert_eq!(server.connections(Some("tabs")).len(), 3);
    let m = server.metrics();
    assert_eq!(metric_sum(&m, "wsgate_connections", &[]), Some(3.0));
    assert_eq!(
        metric_sum(
            &m,
            "wsgate_upgrades_refused_total",
            &[("reason", "too_many_connections")]
        ),
        Some(1.0)
    );
    // The refused socket held no slot: closing a tab frees one for real.
    for t in &mut tabs {
        t.assert_alive();
    }
    let id = tabs[0].connection_id();
    drop(tabs.remove(0));
    assert!(server.wait_connection_gone(&id, Duration::from_secs(5)));
    server.ws_token(&token).assert_alive();
}

#[test]
fn refusal_close_query_gives_4503_on_a_full_node() {
    let server = TestServer::start(&["--max-connections", "1"]);
    let mut first = server.ws("first");
    let token = server.token("second");
    let r = refused(&server, &format!("/api/v1/ws/{token}?refusal=close"), None);
    assert_refused(&r, 4503, "SERVER_AT_CAPACITY", "backoff", Some(5));
    assert_eq!(stats_connections(&server), 1);
    first.assert_alive();
    assert_eq!(
        metric_sum(
            &server.metrics(),
            "wsgate_closes_total",
            &[("code", "4503")]
        ),
        Some(1.0)
    );
}

#[test]
fn without_close_mode_refusals_stay_v1_http_statuses() {
    let server = TestServer::start(&["--max-connections", "4"]);
    let addr = server.addr();
    assert_eq!(
        refusal_status(WsClient::try_connect(addr, TokenVia::Path, "not-a-jwt")),
        401
    );
    // `refusal=http` is accepted and changes nothing.
    let url = format!("ws://{addr}/api/v1/ws/not-a-jwt?refusal=http");
    match handshake_request(addr, ws_request(&url, None)) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("expected HTTP 401, got {:?}", other.map(|_| ())),
    }
    let token = server.token("tabs");
    let _tabs: Vec<WsClient> = (0..3).map(|_| server.ws_token(&token)).collect();
    assert_eq!(
        refusal_status(WsClient::try_connect(addr, TokenVia::Path, &token)),
        429
    );
    let _fourth = server.ws("other");
    assert_eq!(
        refusal_status(WsClient::try_connect(
            addr,
            TokenVia::Path,
            &server.token("x")
        )),
        503
    );
    assert_eq!(
        metric_sum(&server.metrics(), "wsgate_closes_total", &[]),
        Some(0.0)
    );
}

#[test]
fn an_invalid_upgrade_still_gets_http_400_in_close_mode() {
    let server = TestServer::start(&["--refusal-mode", "close"]);
    // No Sec-WebSocket-Version.
    let request = format!(
        "GET /api/v1/ws/not-a-jwt?refusal=close HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n\r\n"
    );
    raw_request(server.addr(), request.as_bytes()).assert_error(400, "BAD_REQUEST");
    // An unknown refusal mode is a bad request too.
    let request = format!(
        "GET /api/v1/ws/not-a-jwt?refusal=later HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw_request(server.addr(), request.as_bytes()).assert_error(400, "BAD_REQUEST");
}

/// A refused socket holds a place among the pending connections until it
/// is gone; with the request's own place the only one, there is no room,
/// and the refusal falls back to v1's HTTP answer.
#[test]
fn refused_sockets_stay_under_the_pending_cap() {
    let tight = TestServer::start(&["--max-pending-connections", "1"]);
    let url = format!("ws://{}/api/v1/ws/not-a-jwt?refusal=close", tight.addr());
    match handshake_request(tight.addr(), ws_request(&url, None)) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("expected HTTP 401, got {:?}", other.map(|_| ())),
    }
    let roomy = TestServer::start(&["--max-pending-connections", "2"]);
    let r = refused(&roomy, "/api/v1/ws/not-a-jwt?refusal=close", None);
    assert_refused(&r, 4401, "UNAUTHORIZED", "refresh", None);
}

/// A refused client that never closes its side keeps its pending place
/// only until the server's 1 s deadline drops the socket.
#[test]
fn a_silent_refused_socket_is_dropped_within_a_second() {
    let server = TestServer::start(&["--max-pending-connections", "2"]);
    let mut silent = TcpStream::connect(server.addr()).expect("connect");
    silent
        .write_all(&Upgrade::get("/api/v1/ws/not-a-jwt?refusal=close").to_bytes())
        .expect("write the upgrade");
    let refused_at = Instant::now();
    assert_eq!(
        read_response(&mut silent, Duration::from_secs(5)).status,
        101
    );
    // Within the deadline its place is taken: another refusal by close has
    // no room and is answered over HTTP. (Only meaningful while well inside
    // the second; a stalled test machine skips this half.)
    let url = format!("ws://{}/api/v1/ws/not-a-jwt?refusal=close", server.addr());
    let early = handshake_request(server.addr(), ws_request(&url, None));
    // No room shows as the v1 HTTP 401, or, while the silent socket's own
    // HTTP connection has not yet given its place back (that happens just
    // after its upgrade, asynchronously), as a close at accept. Never a 101.
    if refused_at.elapsed() < Duration::from_millis(700) {
        match early {
            Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::UnexpectedEof
                ) => {}
            Err(tungstenite::Error::Protocol(_) | tungstenite::Error::ConnectionClosed) => {}
            other => panic!(
                "expected no room (HTTP 401 or closed at accept) while the place is held, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    // Then the deadline frees it, though the client still says nothing.
    let freed = wait_until(Duration::from_secs(4), || {
        handshake_request(server.addr(), ws_request(&url, None)).is_ok()
    });
    assert!(freed, "the silent refused socket kept its place");
    assert!(
        refused_at.elapsed() >= Duration::from_millis(900),
        "freed before the deadline: {:?}",
        refused_at.elapsed()
    );
    drop(silent);
}

#[test]
fn timeout_close_says_connection_timeout_now() {
    let server = TestServer::start(&["--connection-timeout", "500ms"]);
    let mut c = server.ws("quiet");
    let text = expect_close(&mut c, Duration::from_secs(5), 4000);
    reason(&text, "CONNECTION_TIMEOUT", "now");
    assert_eq!(
        metric_sum(
            &server.metrics(),
            "wsgate_closes_total",
            &[("code", "4000")]
        ),
        Some(1.0)
    );
}

#[test]
fn token_expiry_close_says_token_expired_refresh() {
    let server = TestServer::start(&[]);
    let token = server.token_with(&json!({"sub": "short", "exp": now_secs() + 2}));
    let mut c = server.ws_token(&token);
    let text = expect_close(&mut c, Duration::from_secs(6), 4001);
    reason(&text, "TOKEN_EXPIRED", "refresh");
}

#[test]
fn both_kinds_of_4003_say_why_and_advise_no_retry() {
    let server = TestServer::start(&[]);
    let mut kicked = server.ws("kicked");
    server
        .api_delete(&format!("/api/v1/connections/{}", kicked.connection_id()))
        .expect_status(204);
    let text = expect_close(&mut kicked, Duration::from_secs(5), 4003);
    reason(&text, "DISCONNECTED", "none");

    let mut banned = server.ws("banned");
    server
        .api_post("/api/v1/users/banned/deactivate", &json!({}))
        .expect_status(204);
    let text = expect_close(&mut banned, Duration::from_secs(5), 4003);
    reason(&text, "USER_INACTIVE", "none");
    assert_eq!(
        metric_sum(
            &server.metrics(),
            "wsgate_closes_total",
            &[("code", "4003")]
        ),
        Some(2.0)
    );
}

#[test]
fn flooding_close_says_rate_limited_with_the_errors_retry_after() {
    let server = TestServer::start(&["--rate-limit-messages", "5", "--rate-limit-window", "60s"]);
    let mut c = server.ws("flood");
    let mut last_retry_after = None;
    let close = loop {
        if c.try_send(Message::text(r#"{"type":"ping"}"#)).is_err() {
            break c.wait_end(Duration::from_secs(5));
        }
        match c.next_within(Duration::from_secs(5)) {
            Some(Incoming::Text(t)) => {
                let m: Value = serde_json::from_str(&t).expect("JSON");
                if m["type"] == "error" {
                    last_retry_after = m["data"]["retry_after"].as_u64();
                }
            }
            Some(Incoming::Close(code, text)) => break Some((code, text)),
            Some(Incoming::Ping | Incoming::Pong) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    let (code, text) = close.expect("a close frame");
    assert_eq!(code, 1008);
    let parsed = reason(&text, "RATE_LIMITED", "backoff");
    let retry_after = parsed["retry_after"].as_u64().expect("whole seconds");
    assert!(retry_after >= 1);
    assert_eq!(Some(retry_after), last_retry_after, "{text}");
}

#[test]
fn oversize_close_says_message_too_big_backoff() {
    let server = TestServer::start(&["--max-message-size", "1024"]);
    let mut c = server.ws("big");
    let _ = c.try_send(Message::text("x".repeat(2000)));
    let (code, text) = c.wait_end(Duration::from_secs(5)).expect("a close frame");
    assert_eq!(code, 1009);
    reason(&text, "MESSAGE_TOO_BIG", "backoff");
}

#[test]
fn slow_consumer_close_counts_what_it_dropped() {
    let server = TestServer::start(&["--max-queued-bytes", "65536"]);
    let mut stalled = server.ws("stalled");
    stalled.subscribe(&["review.created"]);
    let id = stalled.connection_id();
    let blob = "s".repeat(16 * 1024);
    let mut published = 0;
    // The client reads nothing until the server has closed it.
    while server.connection_ids().contains(&id) {
        assert!(published < 4000, "not cut off after {published} events");
        for _ in 0..20 {
            server.publish(&json!({"type": "review.created", "data": {"blob": blob}}));
            published += 1;
        }
    }
    // Its close frame waits behind what the kernel buffers hold.
    let (code, text) = stalled
        .wait_end(Duration::from_secs(20))
        .expect("the close frame, once the client reads");
    assert_eq!(code, 4008);
    let parsed = reason(&text, "SLOW_CONSUMER", "backoff");
    let dropped = parsed["dropped"].as_u64().expect("dropped: n");
    assert!(dropped >= 1, "{text}");
    let counted = metric_sum(
        &server.metrics(),
        "wsgate_messages_dropped_total",
        &[("reason", "slow_consumer")],
    )
    .expect("series");
    assert_eq!(
        counted, dropped as f64,
        "the reason's count is the metric's"
    );
}

#[test]
fn shutdown_closes_advise_retry_after_spread_across_connections() {
    let mut server = TestServer::start(&["--shutdown-reconnect-spread", "2s"]);
    let mut clients: Vec<WsClient> = (0..8).map(|i| server.ws(&format!("u{i}"))).collect();
    server.signal(libc::SIGTERM);
    let mut advised = Vec::new();
    for c in &mut clients {
        let text = expect_close(c, Duration::from_secs(10), 1001);
        let parsed = reason(&text, "SHUTDOWN", "backoff");
        let seconds = parsed["retry_after"].as_f64().expect("a number");
        assert!((0.0..=2.0).contains(&seconds), "{text}");
        let raw = text.split("\"retry_after\":").nth(1).expect("field");
        let decimals = raw
            .trim_end_matches('}')
            .split('.')
            .nth(1)
            .map_or(0, str::len);
        assert!(decimals <= 3, "at most 3 decimals: {text}");
        advised.push(seconds);
    }
    advised.sort_by(f64::total_cmp);
    advised.dedup();
    assert!(advised.len() >= 4, "advice not spread: {advised:?}");
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn max_connection_age_closes_with_4009_between_90_and_100_percent() {
    let server = TestServer::start(&["--max-connection-age", "2s"]);
    let mut clients: Vec<(Instant, WsClient)> = (0..4)
        .map(|i| (Instant::now(), server.ws(&format!("aged{i}"))))
        .collect();
    for (opened, c) in &mut clients {
        let text = expect_close(c, Duration::from_secs(6), 4009);
        reason(&text, "CONNECTION_AGED", "now");
        let age = opened.elapsed();
        assert!(
            age >= Duration::from_millis(1800) && age < Duration::from_millis(2900),
            "closed at {age:?}"
        );
    }
    assert!(wait_until(Duration::from_secs(5), || stats_connections(
        &server
    ) == 0));
    assert_eq!(
        metric_sum(
            &server.metrics(),
            "wsgate_closes_total",
            &[("code", "4009")]
        ),
        Some(4.0)
    );
}
