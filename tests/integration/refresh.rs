//! SPEC-v2 §3 and §11.2: in-band token refresh. `expires_at`/`expires_in`
//! in `connection.established`, `token.expiring` at `exp − notice` for
//! `refresh=1` connections only, `auth.refresh` pushing back (or forward)
//! the 4001, refused refreshes keeping the old deadline, a refresh read
//! after the deadline answered only by the 4001, `--token-refresh-grace`
//! and `--jwt-leeway`, and v1 timing with the defaults. (`topic.revoked` is
//! the topics feature's, not built yet.)

use crate::support::metrics::metric_sum;
use crate::support::ws::ALL_VIAS;
use crate::support::{now_secs, Incoming, TestServer, TokenVia, WsClient};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A token for `sub` expiring at `exp` (seconds since the epoch).
fn token(server: &TestServer, sub: &str, exp: i64) -> String {
    server.token_with(&json!({"sub": sub, "exp": exp}))
}

/// `data.expires_at` of a message, parsed as RFC 3339, in seconds.
fn expires_at_secs(message: &Value) -> i64 {
    let text = message["data"]["expires_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no string data.expires_at in {message}"));
    assert!(
        text.ends_with('Z') && text.len() == "2025-01-08T10:30:00.000Z".len(),
        "expires_at must be RFC 3339 UTC with ms: {text}"
    );
    let at = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let ms = at
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    assert_eq!(ms % 1000, 0, "a whole-second exp keeps .000: {text}");
    (ms / 1000) as i64
}

fn expires_in(message: &Value) -> u64 {
    message["data"]["expires_in"]
        .as_u64()
        .unwrap_or_else(|| panic!("no non-negative integer data.expires_in in {message}"))
}

fn connect_refresh(server: &TestServer, via: TokenVia, token: &str) -> WsClient {
    WsClient::connect_with_query(server.addr(), via, token, "refresh=1")
}

/// Sends `auth.refresh` with `token` and returns the reply to it.
fn refresh(c: &mut WsClient, token: Value, id: &str) -> Value {
    c.send_json(&json!({"type": "auth.refresh", "data": {"token": token}, "id": id}));
    c.recv_until(|m| m["reply_to"] == id)
}

/// Reads (answering pings) until the wall clock reaches `ms`; any data
/// message or close on the way fails the test.
fn quiet_until(c: &mut WsClient, ms: u64) {
    let left = ms.saturating_sub(unix_ms());
    c.expect_silence(Duration::from_millis(left));
}

/// Waits for the close, failing on any data message first, and checks it
/// is a 4001 that came no earlier than `not_before_ms` (and within
/// `within` of it).
fn expect_4001(c: &mut WsClient, not_before_ms: u64, within: Duration) {
    let code = loop {
        match c.next_within(Duration::from_secs(15)) {
            Some(Incoming::Close(code, _)) => break code,
            Some(Incoming::Ping | Incoming::Pong) => {}
            Some(other) => panic!("expected only the close, got {other:?}"),
            None => panic!("no close within 15 s"),
        }
    };
    let at = unix_ms();
    assert_eq!(code, 4001, "token expiry close code");
    assert!(
        at >= not_before_ms,
        "4001 came {} ms before the deadline",
        not_before_ms - at
    );
    assert!(
        at <= not_before_ms + within.as_millis() as u64,
        "4001 came {} ms after the deadline",
        at - not_before_ms
    );
}

#[test]
fn established_carries_the_tokens_exp_and_the_seconds_left() {
    let server = TestServer::start(&["--jwt-leeway", "30s"]);
    let exp = now_secs() + 120;
    let c = server.ws_token(&token(&server, "exp-fields", exp));
    let established = &c.established;
    assert_eq!(
        expires_at_secs(established),
        exp,
        "expires_at is the raw exp, without the leeway: {established}"
    );
    let left = expires_in(established);
    assert!((118..=120).contains(&left), "expires_in {left} for 120 s");
    let features = established["data"]["features"]
        .as_array()
        .expect("features");
    assert_eq!(
        features[..3],
        [
            json!("heartbeat"),
            json!("subscriptions"),
            json!("rate_limiting")
        ],
        "v1's three first, in v1's order"
    );
    assert!(
        features.contains(&json!("token_refresh")),
        "token_refresh always listed: {features:?}"
    );
    // A token already past exp (accepted within the leeway) has 0 left.
    let past = server.ws_token(&token(&server, "exp-past", now_secs() - 5));
    assert_eq!(expires_in(&past.established), 0);
}

#[test]
fn token_expiring_comes_at_exp_minus_notice_only_with_refresh_1() {
    let server = TestServer::start(&["--token-expiring-notice", "1s"]);
    let exp = now_secs() + 3;
    let exp_ms = exp as u64 * 1000;
    let mut asked: Vec<WsClient> = ALL_VIAS
        .iter()
        .enumerate()
        .map(|(i, &via)| {
            connect_refresh(&server, via, &token(&server, &format!("notice-{i}"), exp))
        })
        .collect();
    let mut plain = server.ws_token(&token(&server, "no-notice", exp));
    for c in &mut asked {
        let notice = c.recv_json_within(Duration::from_secs(10));
        assert_eq!(notice["type"], "token.expiring", "{notice}");
        assert!(notice.get("reply_to").is_none(), "{notice}");
        // When the server sent it (its envelope timestamp): reading four
        // sockets on a busy machine must not blur the bounds.
        let sent_at = humantime::parse_rfc3339(notice["timestamp"].as_str().expect("timestamp"))
            .expect("RFC 3339")
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        assert!(
            sent_at >= exp_ms - 1000,
            "token.expiring {} ms before exp − notice",
            exp_ms - 1000 - sent_at
        );
        assert!(sent_at < exp_ms, "token.expiring sent after exp: {notice}");
        assert_eq!(expires_at_secs(&notice), exp);
        assert!(expires_in(&notice) <= 1, "{notice}");
    }
    // Once per token: the next thing is the 4001, on every connection.
    for c in &mut asked {
        expect_4001(c, exp_ms, Duration::from_secs(2));
    }
    expect_4001(&mut plain, exp_ms, Duration::from_secs(2));
    let metrics = server.get_public("/metrics").text;
    assert_eq!(
        metric_sum(&metrics, "wsgate_token_expiring_sent_total", &[]),
        Some(4.0)
    );
}

#[test]
fn inside_the_window_the_notice_follows_established_and_refreshed_at_once() {
    // The default notice is 60 s: a token of 30 s is inside it at once.
    let server = TestServer::start(&[]);
    let exp = now_secs() + 30;
    let mut c = connect_refresh(&server, TokenVia::Query, &token(&server, "inside", exp));
    let notice = c.recv_json();
    assert_eq!(notice["type"], "token.expiring", "{notice}");
    assert_eq!(expires_at_secs(&notice), exp);
    let next = now_secs() + 40;
    let reply = refresh(&mut c, json!(token(&server, "inside", next)), "r1");
    assert_eq!(reply["type"], "auth.refreshed", "{reply}");
    assert_eq!(expires_at_secs(&reply), next);
    let notice = c.recv_json();
    assert_eq!(
        notice["type"], "token.expiring",
        "a new token gets its own notice"
    );
    assert_eq!(expires_at_secs(&notice), next);
    // The same exp again (a client whose token source caches): refreshed,
    // but no second notice, so no notice/refresh loop.
    let reply = refresh(&mut c, json!(token(&server, "inside", next)), "r2");
    assert_eq!(reply["type"], "auth.refreshed", "{reply}");
    server.assert_nothing_pending(&mut c);
}

#[test]
fn a_refresh_pushes_back_the_4001_without_a_reconnect_or_a_missed_event() {
    let server = TestServer::start(&["--token-expiring-notice", "1s"]);
    let exp = now_secs() + 3;
    let mut c = connect_refresh(&server, TokenVia::Path, &token(&server, "pushed", exp));
    c.subscribe(&["file.ready"]);
    let id = c.connection_id();
    assert_eq!(
        c.recv_json_within(Duration::from_secs(10))["type"],
        "token.expiring"
    );
    let later = now_secs() + 60;
    let reply = refresh(&mut c, json!(token(&server, "pushed", later)), "r1");
    assert_eq!(reply["type"], "auth.refreshed", "{reply}");
    assert_eq!(expires_at_secs(&reply), later);
    assert!((58..=60).contains(&expires_in(&reply)), "{reply}");
    // Past the old deadline the same connection is open and subscribed.
    quiet_until(&mut c, exp as u64 * 1000 + 1500);
    let delivered = server.publish(&json!({"type": "file.ready", "data": {"n": 1}}));
    assert_eq!(delivered, 1);
    let event = c.recv_json();
    assert_eq!(
        (event["type"].as_str(), event["data"]["n"].as_i64()),
        (Some("file.ready"), Some(1))
    );
    assert_eq!(c.connection_id(), id);
    assert_eq!(server.connection_ids(), vec![id]);
    let metrics = server.get_public("/metrics").text;
    assert_eq!(
        metric_sum(&metrics, "wsgate_token_refresh_total", &[("result", "ok")]),
        Some(1.0)
    );
}

#[test]
fn a_refresh_with_an_earlier_exp_brings_the_4001_forward() {
    let server = TestServer::start(&[]);
    let mut c = server.ws_token(&token(&server, "sooner", now_secs() + 600));
    let exp = now_secs() + 2;
    let reply = refresh(&mut c, json!(token(&server, "sooner", exp)), "r1");
    assert_eq!(reply["type"], "auth.refreshed", "{reply}");
    expect_4001(&mut c, exp as u64 * 1000, Duration::from_secs(2));
}

#[test]
fn refused_refreshes_keep_the_old_deadline_then_4001() {
    let server = TestServer::start(&[]);
    let exp = now_secs() + 3;
    let mut c = server.ws_token(&token(&server, "kept", exp));
    let later = now_secs() + 600;
    let refusals = [
        (
            json!(token(&server, "someone-else", later)),
            "TOKEN_SUB_MISMATCH",
        ),
        (
            json!(token(&server, "kept", now_secs() - 10)),
            "TOKEN_INVALID",
        ),
        (
            json!(crate::support::sign_hs256(
                "not-the-secret",
                &json!({"sub": "kept", "exp": later})
            )),
            "TOKEN_INVALID",
        ),
        (json!("not.a.jwt"), "TOKEN_INVALID"),
        (json!(5), "INVALID_MESSAGE"),
    ];
    for (i, (bad, code)) in refusals.into_iter().enumerate() {
        let id = format!("bad-{i}");
        let reply = refresh(&mut c, bad, &id);
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["data"]["code"], code, "{reply}");
    }
    c.send_json(&json!({"type": "auth.refresh", "data": {}, "id": "none"}));
    let reply = c.recv_until(|m| m["reply_to"] == "none");
    assert_eq!(reply["data"]["code"], "INVALID_MESSAGE", "{reply}");
    c.assert_alive();
    expect_4001(&mut c, exp as u64 * 1000, Duration::from_secs(2));
    let metrics = server.get_public("/metrics").text;
    let count = |result| {
        metric_sum(
            &metrics,
            "wsgate_token_refresh_total",
            &[("result", result)],
        )
    };
    assert_eq!(count("invalid"), Some(3.0));
    assert_eq!(count("sub_mismatch"), Some(1.0));
    assert_eq!(count("ok"), Some(0.0));
}

#[test]
fn a_refresh_read_after_the_deadline_gets_only_the_4001() {
    // The sweep runs every 500 ms here, so the refresh below is usually
    // read before the sweep has closed the connection: it must still lose.
    let server = TestServer::start(&[]);
    let exp = now_secs() + 2;
    let mut c = server.ws_token(&token(&server, "late", exp));
    let fresh = token(&server, "late", now_secs() + 600);
    while unix_ms() < exp as u64 * 1000 + 20 {
        match c.next_within(Duration::from_millis(5)) {
            None | Some(Incoming::Ping | Incoming::Pong) => {}
            // The sweep may close in the 20 ms after the deadline, before
            // the refresh goes out: the 4001 won, which is the point.
            Some(Incoming::Close(4001, _)) if unix_ms() >= exp as u64 * 1000 => return,
            Some(other) => panic!("expected nothing before the deadline, got {other:?}"),
        }
    }
    let _ = c.try_send(tungstenite::Message::text(
        json!({"type": "auth.refresh", "data": {"token": fresh}, "id": "late"}).to_string(),
    ));
    expect_4001(&mut c, exp as u64 * 1000, Duration::from_secs(2));
}

#[test]
fn the_refresh_grace_extends_the_deadline_and_a_refresh_within_it_counts() {
    let server = TestServer::start(&["--token-refresh-grace", "2s"]);
    let exp = now_secs() + 2;
    let exp_ms = exp as u64 * 1000;
    let mut waits = server.ws_token(&token(&server, "grace-a", exp));
    let mut refreshes = server.ws_token(&token(&server, "grace-b", exp));
    quiet_until(&mut refreshes, exp_ms + 500);
    let reply = refresh(
        &mut refreshes,
        json!(token(&server, "grace-b", now_secs() + 600)),
        "g",
    );
    assert_eq!(
        reply["type"], "auth.refreshed",
        "past exp, within the grace: {reply}"
    );
    waits.assert_alive();
    expect_4001(&mut waits, exp_ms + 2000, Duration::from_secs(2));
    quiet_until(&mut refreshes, exp_ms + 3000);
    refreshes.assert_alive();
}

#[test]
fn the_leeway_delays_the_4001_but_not_expires_at() {
    let server = TestServer::start(&["--jwt-leeway", "2s"]);
    let exp = now_secs() + 1;
    let mut c = server.ws_token(&token(&server, "leeway", exp));
    assert_eq!(expires_at_secs(&c.established), exp);
    quiet_until(&mut c, exp as u64 * 1000 + 500);
    c.assert_alive();
    expect_4001(&mut c, exp as u64 * 1000 + 2000, Duration::from_secs(2));
}

#[test]
fn with_the_defaults_a_token_expires_at_v1_timing_without_a_notice() {
    let server = TestServer::start(&[]);
    let exp = now_secs() + 2;
    let mut c = server.ws_token(&token(&server, "v1", exp));
    // No refresh=1: no token.expiring although the 60 s notice window
    // holds the whole token; the next thing is the 4001 at exp.
    expect_4001(&mut c, exp as u64 * 1000, Duration::from_secs(2));
}
