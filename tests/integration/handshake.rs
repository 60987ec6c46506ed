//! SPEC section 2: the four token transports, refusals before the upgrade
//! (400/401/429/503 with `{"code","detail"}`), token validation rules.

use crate::support::raw::{RawResponse, Upgrade};
use crate::support::ws::{refusal_status, ALL_VIAS};
use crate::support::{
    alg_none_token, now_secs, sign_hs256, wait_until, TestServer, TokenVia, WsClient,
};
use serde_json::{json, Value};
use std::time::Duration;

fn connect_via(via: TokenVia) {
    let server = TestServer::start(&[]);
    let token = server.token("via-user");
    let mut c = WsClient::connect(server.addr(), via, &token);
    assert_eq!(c.established["data"]["user_id"], "via-user");
    for (name, value) in c.response.headers() {
        let v = value.to_str().unwrap_or_default();
        assert!(
            !v.contains(&token) && !v.contains("bearer."),
            "the 101 response must never echo the token; header {name}: {v}"
        );
    }
    c.assert_alive();
}

#[test]
fn token_in_path() {
    connect_via(TokenVia::Path);
}

#[test]
fn token_in_query() {
    connect_via(TokenVia::Query);
}

#[test]
fn token_in_authorization_header() {
    connect_via(TokenVia::Header);
}

#[test]
fn token_in_subprotocol_answers_wsgate_v1() {
    connect_via(TokenVia::Protocol);
    // Check the raw 101 as well: exactly `wsgate.v1`.
    let server = TestServer::start(&[]);
    let token = server.token("proto-user");
    let resp = Upgrade::get("/api/v1/ws")
        .header(
            "Sec-WebSocket-Protocol",
            &format!("wsgate.v1, bearer.{token}"),
        )
        .send(server.addr());
    assert_eq!(resp.status, 101, "subprotocol token refused: {resp:?}");
    assert_eq!(
        resp.header("Sec-WebSocket-Protocol"),
        Some("wsgate.v1"),
        "server must answer the wsgate.v1 subprotocol: {resp:?}"
    );
}

fn assert_400(resp: RawResponse, what: &str) {
    assert_eq!(resp.status, 400, "{what}: expected 400, got {resp:?}");
    resp.assert_error(400, "BAD_REQUEST");
}

#[test]
fn bad_upgrade_requests_get_400() {
    let server = TestServer::start(&[]);
    let path = format!("/api/v1/ws/{}", server.token("u1"));
    assert_400(
        Upgrade::get(&path)
            .without("Sec-WebSocket-Key")
            .send(server.addr()),
        "missing Sec-WebSocket-Key",
    );
    assert_400(
        Upgrade::get(&path)
            .header("Sec-WebSocket-Version", "8")
            .send(server.addr()),
        "Sec-WebSocket-Version 8",
    );
    assert_400(
        Upgrade::get(&path).method("POST").send(server.addr()),
        "POST instead of GET",
    );
    assert_400(
        Upgrade::get(&path)
            .without("Upgrade")
            .without("Connection")
            .send(server.addr()),
        "plain GET without Upgrade headers",
    );
    // The server still works afterwards.
    server.ws("u1").assert_alive();
}

/// Raw upgrade with the token in the path; asserts 401 UNAUTHORIZED.
fn assert_refused_401(server: &TestServer, token: &str, what: &str) {
    let resp = Upgrade::get(&format!("/api/v1/ws/{token}")).send(server.addr());
    assert_eq!(resp.status, 401, "{what}: expected 401, got {resp:?}");
    resp.assert_error(401, "UNAUTHORIZED");
}

#[test]
fn missing_token_is_401() {
    let server = TestServer::start(&[]);
    let resp = Upgrade::get("/api/v1/ws").send(server.addr());
    resp.assert_error(401, "UNAUTHORIZED");
    let resp = Upgrade::get("/api/v1/ws?token=").send(server.addr());
    resp.assert_error(401, "UNAUTHORIZED");
}

#[test]
fn garbage_token_is_401_on_every_transport() {
    let server = TestServer::start(&[]);
    assert_refused_401(&server, "not-a-jwt", "garbage");
    assert_refused_401(&server, "a.b.c", "three garbage segments");
    for via in ALL_VIAS {
        let status = refusal_status(WsClient::try_connect(server.addr(), via, "garbage"));
        assert_eq!(status, 401, "garbage token via {via:?}");
    }
}

#[test]
fn expired_token_is_401() {
    let server = TestServer::start(&[]);
    let now = now_secs();
    let token = server.token_with(&json!({"sub": "u1", "exp": now - 60, "iat": now - 3600}));
    assert_refused_401(&server, &token, "expired");
}

#[test]
fn token_without_exp_is_401() {
    let server = TestServer::start(&[]);
    let token = server.token_with(&json!({"sub": "u1"}));
    assert_refused_401(&server, &token, "no exp");
}

#[test]
fn wrong_signature_is_401() {
    let server = TestServer::start(&[]);
    let token = sign_hs256(
        "some-other-secret",
        &json!({"sub": "u1", "exp": now_secs() + 3600}),
    );
    assert_refused_401(&server, &token, "signed with another secret");
    // Tampered payload with the original signature.
    let good = server.token("u1");
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = sign_hs256("x", &json!({"sub": "admin", "exp": now_secs() + 3600}));
    let forged_payload = forged_payload.split('.').nth(1).expect("payload segment");
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_refused_401(
        &server,
        &tampered,
        "payload swapped under a valid signature",
    );
}

#[test]
fn missing_or_empty_sub_is_401() {
    let server = TestServer::start(&[]);
    let exp = now_secs() + 3600;
    assert_refused_401(&server, &server.token_with(&json!({"exp": exp})), "no sub");
    assert_refused_401(
        &server,
        &server.token_with(&json!({"sub": "", "exp": exp})),
        "empty sub",
    );
}

#[test]
fn alg_none_token_is_401() {
    let server = TestServer::start(&[]);
    let token = alg_none_token(&json!({"sub": "u1", "exp": now_secs() + 3600}));
    assert_refused_401(&server, &token, "alg none");
}

#[test]
fn nbf_in_future_is_401() {
    let server = TestServer::start(&[]);
    let now = now_secs();
    let token = server.token_with(&json!({"sub": "u1", "exp": now + 3600, "nbf": now + 600}));
    assert_refused_401(&server, &token, "nbf in 10 minutes");
    let ok = server.token_with(&json!({"sub": "u1", "exp": now + 3600, "nbf": now - 10}));
    server.ws_token(&ok).assert_alive();
}

#[test]
fn jwt_leeway_accepts_slightly_expired_token() {
    let server = TestServer::start(&["--jwt-leeway", "60s"]);
    let now = now_secs();
    let token = server.token_with(&json!({"sub": "u1", "exp": now - 5}));
    server.ws_token(&token).assert_alive();
    let too_old = server.token_with(&json!({"sub": "u1", "exp": now - 600}));
    assert_refused_401(&server, &too_old, "expired beyond the leeway");
}

#[test]
fn numeric_sub_becomes_decimal_string_user_id() {
    let server = TestServer::start(&[]);
    let token = server.token_with(&json!({"sub": 12345, "exp": now_secs() + 3600}));
    let c = server.ws_token(&token);
    assert_eq!(
        c.established["data"]["user_id"], "12345",
        "{}",
        c.established
    );
}

#[test]
fn issuer_and_audience_are_checked() {
    let server = TestServer::start(&["--jwt-issuer", "wsgate-tests", "--jwt-audience", "web"]);
    let exp = now_secs() + 3600;
    let good =
        server.token_with(&json!({"sub": "u1", "exp": exp, "iss": "wsgate-tests", "aud": "web"}));
    server.ws_token(&good).assert_alive();
    let cases: [(&str, Value); 4] = [
        (
            "wrong iss",
            json!({"sub": "u1", "exp": exp, "iss": "evil", "aud": "web"}),
        ),
        (
            "missing iss",
            json!({"sub": "u1", "exp": exp, "aud": "web"}),
        ),
        (
            "wrong aud",
            json!({"sub": "u1", "exp": exp, "iss": "wsgate-tests", "aud": "mobile"}),
        ),
        (
            "missing aud",
            json!({"sub": "u1", "exp": exp, "iss": "wsgate-tests"}),
        ),
    ];
    let mut accepted = Vec::new();
    for (what, claims) in cases {
        let token = server.token_with(&claims);
        let resp = Upgrade::get(&format!("/api/v1/ws/{token}")).send(server.addr());
        if resp.status == 401 {
            resp.assert_error(401, "UNAUTHORIZED");
        } else {
            accepted.push(format!("{what}: HTTP {}", resp.status));
        }
    }
    assert!(
        accepted.is_empty(),
        "must be refused with 401: {accepted:?}"
    );
}

fn assert_retry_after(resp: &RawResponse) {
    let ra = resp
        .header("Retry-After")
        .unwrap_or_else(|| panic!("refusal without Retry-After: {resp:?}"));
    assert!(
        ra.trim().parse::<u64>().is_ok(),
        "Retry-After must be whole seconds, got {ra:?}"
    );
}

#[test]
fn fourth_connection_of_a_user_is_429() {
    let server = TestServer::start(&[]);
    let mut held: Vec<WsClient> = (0..3).map(|_| server.ws("busy")).collect();
    let token = server.token("busy");
    let resp = Upgrade::get(&format!("/api/v1/ws/{token}")).send(server.addr());
    resp.assert_error(429, "TOO_MANY_CONNECTIONS");
    assert_retry_after(&resp);
    // Another user is unaffected.
    server.ws("other").assert_alive();
    // Freeing a slot lets the user in again (the release may be async).
    let gone = held.pop().expect("a held connection");
    drop(gone);
    let admitted = wait_until(Duration::from_secs(5), || {
        WsClient::try_connect(server.addr(), TokenVia::Path, &token).is_ok()
    });
    assert!(admitted, "a freed per-user slot was never released");
}

#[test]
fn server_at_capacity_is_503() {
    let server = TestServer::start(&["--max-connections", "2"]);
    let _a = server.ws("a");
    let _b = server.ws("b");
    let token = server.token("c");
    let resp = Upgrade::get(&format!("/api/v1/ws/{token}")).send(server.addr());
    resp.assert_error(503, "SERVER_AT_CAPACITY");
    assert_retry_after(&resp);
}

#[test]
fn max_connections_per_user_flag() {
    let server = TestServer::start(&["--max-connections-per-user", "1"]);
    let _a = server.ws("solo");
    let token = server.token("solo");
    Upgrade::get(&format!("/api/v1/ws/{token}"))
        .send(server.addr())
        .assert_error(429, "TOO_MANY_CONNECTIONS");
    server.ws("someone-else").assert_alive();
}

#[test]
fn refusals_apply_to_every_transport() {
    let server = TestServer::start(&[]);
    let _held: Vec<WsClient> = (0..3).map(|_| server.ws("full")).collect();
    let token = server.token("full");
    for via in ALL_VIAS {
        let status = refusal_status(WsClient::try_connect(server.addr(), via, &token));
        assert_eq!(status, 429, "per-user limit via {via:?}");
    }
}
