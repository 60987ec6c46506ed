//! Percent-encoded ids in server API paths and in the WebSocket path: each
//! segment is decoded (a `/` travels as `%2F`), bad escapes are 400.

use serde_json::json;

use crate::support::raw::Upgrade;
use crate::support::{TestServer, WsClient};

/// Every byte as `%XX`: the most encoded form of `text`.
fn encode_all(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn user_ids_in_paths_are_percent_decoded() {
    let server = TestServer::start(&[]);
    for user in ["a@b.com", "team/alpha", "é ü"] {
        let encoded = encode_all(user);
        let mut client = server.ws(user);
        let mut bystander = server.ws("bystander");
        server
            .api_post(&format!("/api/v1/users/{encoded}/deactivate"), &json!({}))
            .expect_status(204);
        assert_eq!(
            client.expect_close().0,
            4003,
            "{user:?} deactivated as {encoded}"
        );
        bystander.assert_alive();
        let token = server.token(user);
        Upgrade::get(&format!("/api/v1/ws/{token}"))
            .send(server.addr())
            .assert_error(401, "UNAUTHORIZED");
        server
            .api_post(&format!("/api/v1/users/{encoded}/activate"), &json!({}))
            .expect_status(204);
        let back = crate::support::wait_until(crate::support::WAIT, || {
            WsClient::try_connect(server.addr(), crate::support::TokenVia::Path, &token).is_ok()
        });
        assert!(back, "{user:?} activated as {encoded} can connect again");
    }
    // `a%40b.com` written plainly is the same user as `a@b.com`.
    let mut client = server.ws("a@b.com");
    server
        .api_post("/api/v1/users/a%40b.com/deactivate", &json!({}))
        .expect_status(204);
    assert_eq!(client.expect_close().0, 4003);
}

#[test]
fn review_file_and_connection_ids_are_percent_decoded() {
    let server = TestServer::start(&[]);
    let mut client = server.ws("u1");
    let r = server.api_post(
        "/api/v1/reviews/r%40x%2F1/updated",
        &json!({"changes": {"a": 1}, "users": ["u1"]}),
    );
    assert_eq!(r.delivered(), 1);
    let event = client.recv_type("review.updated");
    assert_eq!(event["data"]["review_id"], "r@x/1");

    let r = server.api_post(
        "/api/v1/files/f%20one%2F2/status",
        &json!({"user_id": "u1", "status": "ready"}),
    );
    assert_eq!(r.delivered(), 1);
    let event = client.recv_type("file.ready");
    assert_eq!(event["data"]["file_id"], "f one/2");

    let id = client.connection_id();
    server
        .api_delete(&format!("/api/v1/connections/{}", encode_all(&id)))
        .expect_status(204);
    assert_eq!(client.expect_close().0, 4003);
}

#[test]
fn a_percent_encoded_path_token_is_decoded() {
    let server = TestServer::start(&[]);
    let token = server.token("encoded-token-user");
    let mut client = WsClient::connect(
        server.addr(),
        crate::support::TokenVia::Path,
        &encode_all(&token),
    );
    assert_eq!(client.user_id(), "encoded-token-user");
    client.assert_alive();
}

#[test]
fn bad_escapes_in_paths_and_queries_are_400() {
    let server = TestServer::start(&[]);
    for path in [
        "/api/v1/users/%zz/deactivate",
        "/api/v1/users/%FF/activate",
        "/api/v1/users/cut%4/deactivate",
        "/api/v1/reviews/%C3%28/updated",
        "/api/v1/files/%/status",
    ] {
        server
            .api_post(path, &json!({"user_id": "u", "status": "ready"}))
            .expect_error(400, "BAD_REQUEST");
    }
    server
        .api_delete("/api/v1/connections/%zz")
        .expect_error(400, "BAD_REQUEST");
    server
        .api_get("/api/v1/connections?user_id=%zz")
        .expect_error(400, "BAD_REQUEST");
    Upgrade::get("/api/v1/ws/%FF")
        .send(server.addr())
        .assert_error(400, "BAD_REQUEST");
    Upgrade::get("/api/v1/ws?token=%zz")
        .send(server.addr())
        .assert_error(400, "BAD_REQUEST");
}
