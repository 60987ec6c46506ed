//! SPEC section 4: the server API (auth, publishing and its targeting rules,
//! admin calls, health).

use crate::support::raw::Upgrade;
use crate::support::{wait_until, TestServer, WsClient};
use serde_json::{json, Value};
use std::time::Duration;

fn expect_event(c: &mut WsClient, ty: &str) -> Value {
    let m = c.recv_json();
    assert_eq!(m["type"], ty, "expected a {ty} event, got {m}");
    m
}

#[test]
fn api_requires_the_bearer_key() {
    let server = TestServer::start(&[]);
    let body = json!({"type": "review.created", "data": {}, "all": true}).to_string();
    let calls: [(&str, &str, Option<&str>); 6] = [
        ("GET", "/api/v1/stats", None),
        ("GET", "/api/v1/connections", None),
        ("POST", "/api/v1/events", Some(&body)),
        ("POST", "/api/v1/notifications", Some(r#"{"message":"x"}"#)),
        ("DELETE", "/api/v1/connections/whatever", None),
        ("POST", "/api/v1/users/u/deactivate", Some("{}")),
    ];
    for (method, path, body) in calls {
        server
            .request(method, path, None, body)
            .expect_error(401, "UNAUTHORIZED");
        server
            .request(method, path, Some("wrong-key"), body)
            .expect_error(401, "UNAUTHORIZED");
    }
    server.api_get("/api/v1/stats").expect_status(200);
}

/// RFC 7235: the auth-scheme is case-insensitive; the key itself is not.
#[test]
fn the_api_key_scheme_is_case_insensitive() {
    let server = TestServer::start(&[]);
    let status = |authorization: &str| match ureq::get(&server.url("/api/v1/stats"))
        .set("Authorization", authorization)
        .call()
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("transport error: {e}"),
    };
    let key = &server.api_key;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        assert_eq!(status(&format!("{scheme} {key}")), 200, "{scheme}");
    }
    assert_eq!(status(&format!("Basic {key}")), 401);
    assert_eq!(status(&format!("Bearer {}", key.to_uppercase())), 401);
}

#[test]
fn events_without_targets_reach_subscribers_only() {
    let server = TestServer::start(&[]);
    let mut sub = server.ws("u1");
    let mut unsub = server.ws("u2");
    sub.subscribe(&["review.created"]);
    let delivered = server.publish(&json!({"type": "review.created", "data": {"review": 7}}));
    assert_eq!(delivered, 1);
    let ev = expect_event(&mut sub, "review.created");
    assert_eq!(ev["data"]["review"], 7);
    server.assert_nothing_pending(&mut unsub);
    server.assert_nothing_pending(&mut sub);
}

#[test]
fn events_to_users_reach_all_their_connections_subscribed_or_not() {
    let server = TestServer::start(&[]);
    let mut a1 = server.ws("alice");
    let mut a2 = server.ws("alice");
    let mut bob = server.ws("bob");
    bob.subscribe(&["review.deleted"]);
    let delivered =
        server.publish(&json!({"type": "review.deleted", "data": {"id": 1}, "users": ["alice"]}));
    assert_eq!(delivered, 2);
    expect_event(&mut a1, "review.deleted");
    expect_event(&mut a2, "review.deleted");
    server.assert_nothing_pending(&mut bob);
}

#[test]
fn events_to_connections_by_id() {
    let server = TestServer::start(&[]);
    let mut a1 = server.ws("alice");
    let mut a2 = server.ws("alice");
    let delivered = server.publish(&json!({
        "type": "upload.progress", "data": {"p": 10}, "connections": [a2.connection_id()]
    }));
    assert_eq!(delivered, 1);
    expect_event(&mut a2, "upload.progress");
    server.assert_nothing_pending(&mut a1);
}

#[test]
fn events_to_all() {
    let server = TestServer::start(&[]);
    let mut clients: Vec<WsClient> = ["a", "b", "c"].iter().map(|u| server.ws(u)).collect();
    let delivered =
        server.publish(&json!({"type": "system.maintenance", "data": {"in": "5m"}, "all": true}));
    assert_eq!(delivered, 3);
    for c in &mut clients {
        let ev = expect_event(c, "system.maintenance");
        assert_eq!(ev["data"]["in"], "5m");
    }
}

#[test]
fn users_and_connections_union_without_duplicates() {
    let server = TestServer::start(&[]);
    let mut a1 = server.ws("alice");
    let mut a2 = server.ws("alice");
    let mut b = server.ws("bob");
    let mut c = server.ws("carol");
    let delivered = server.publish(&json!({
        "type": "user.status_changed",
        "data": {"seq": 1},
        "users": ["alice", "nobody-here"],
        "connections": [a1.connection_id(), b.connection_id(), "no-such-connection"],
    }));
    assert_eq!(
        delivered, 3,
        "alice's two connections plus bob's, each once"
    );
    for client in [&mut a1, &mut a2, &mut b] {
        expect_event(client, "user.status_changed");
        server.assert_nothing_pending(client);
    }
    server.assert_nothing_pending(&mut c);
}

#[test]
fn unknown_ids_are_skipped() {
    let server = TestServer::start(&[]);
    let _a = server.ws("alice");
    let delivered = server.publish(&json!({
        "type": "review.created", "data": {}, "users": ["ghost"], "connections": ["ghost-conn"]
    }));
    assert_eq!(delivered, 0);
}

#[test]
fn events_bad_bodies_are_400() {
    let server = TestServer::start(&[]);
    let cases = [
        "not json",
        "[]",
        r#"{"data": {}}"#,
        r#"{"type": "ping", "data": {}, "all": true}"#,
        r#"{"type": "no.such.event", "data": {}}"#,
        r#"{"type": 5, "data": {}}"#,
        r#"{"type": "review.created", "data": {}, "users": "alice"}"#,
    ];
    for body in cases {
        let r = server.api_post_raw("/api/v1/events", body);
        assert_eq!(r.status, 400, "body {body}: {r:?}");
        r.expect_error(400, "BAD_REQUEST");
    }
}

#[test]
fn events_over_max_message_size_are_413() {
    let server = TestServer::start(&["--max-message-size", "1024"]);
    let r = server.api_post(
        "/api/v1/events",
        &json!({"type": "review.created", "data": {"blob": "z".repeat(2048)}, "all": true}),
    );
    r.expect_error(413, "PAYLOAD_TOO_LARGE");
    let r = server.api_post(
        "/api/v1/notifications",
        &json!({"message": "z".repeat(2048)}),
    );
    r.expect_error(413, "PAYLOAD_TOO_LARGE");
}

#[test]
fn notifications_to_users_or_everyone() {
    let server = TestServer::start(&[]);
    let mut a = server.ws("alice");
    let mut b = server.ws("bob");
    let delivered = server
        .api_post(
            "/api/v1/notifications",
            &json!({"message": "for alice", "users": ["alice"]}),
        )
        .delivered();
    assert_eq!(delivered, 1);
    let ev = expect_event(&mut a, "system.notification");
    assert_eq!(ev["data"]["message"], "for alice");
    assert_eq!(ev["data"]["level"], "info", "level defaults to info: {ev}");
    assert!(
        ev["data"]["timestamp"]
            .as_str()
            .is_some_and(crate::support::is_timestamp),
        "{ev}"
    );
    server.assert_nothing_pending(&mut b);

    let delivered = server
        .api_post(
            "/api/v1/notifications",
            &json!({"message": "everyone", "level": "warning", "action_url": "/x", "count": 3}),
        )
        .delivered();
    assert_eq!(
        delivered, 2,
        "no users: every connection, subscribed or not"
    );
    for c in [&mut a, &mut b] {
        let ev = expect_event(c, "system.notification");
        assert_eq!(ev["data"]["message"], "everyone");
        assert_eq!(ev["data"]["level"], "warning");
        assert_eq!(
            ev["data"]["action_url"], "/x",
            "extra fields are kept: {ev}"
        );
        assert_eq!(ev["data"]["count"], 3, "extra fields are kept: {ev}");
    }
}

#[test]
fn notifications_bad_body_is_400() {
    let server = TestServer::start(&[]);
    for body in [r#"{"level": "info"}"#, r#"{"message": 5}"#, "nope"] {
        server
            .api_post_raw("/api/v1/notifications", body)
            .expect_error(400, "BAD_REQUEST");
    }
}

#[test]
fn review_updated_to_users_or_subscribers() {
    let server = TestServer::start(&[]);
    let mut sub = server.ws("sub");
    let mut target = server.ws("target");
    let mut other = server.ws("other");
    sub.subscribe(&["review.updated"]);

    let delivered = server
        .api_post(
            "/api/v1/reviews/r-9/updated",
            &json!({"changes": {"title": "new"}, "users": ["target"]}),
        )
        .delivered();
    assert_eq!(delivered, 1);
    let ev = expect_event(&mut target, "review.updated");
    assert_eq!(ev["data"]["review_id"], "r-9");
    assert_eq!(ev["data"]["changes"], json!({"title": "new"}));
    assert!(ev["data"]["timestamp"].is_string(), "{ev}");
    server.assert_nothing_pending(&mut sub);

    let delivered = server
        .api_post(
            "/api/v1/reviews/r-10/updated",
            &json!({"changes": {"x": 1}}),
        )
        .delivered();
    assert_eq!(delivered, 1, "no users: subscribers only");
    let ev = expect_event(&mut sub, "review.updated");
    assert_eq!(ev["data"]["review_id"], "r-10");
    server.assert_nothing_pending(&mut target);
    server.assert_nothing_pending(&mut other);
}

#[test]
fn file_status_processing_and_ready() {
    let server = TestServer::start(&[]);
    let mut u1 = server.ws("owner");
    let mut u2 = server.ws("owner");
    let mut other = server.ws("other");
    other.subscribe(&["file.processing", "file.ready"]);

    let delivered = server
        .api_post(
            "/api/v1/files/f-1/status",
            &json!({"user_id": "owner", "status": "processing", "progress": 40}),
        )
        .delivered();
    assert_eq!(delivered, 2);
    for c in [&mut u1, &mut u2] {
        let ev = expect_event(c, "file.processing");
        assert_eq!(ev["data"]["file_id"], "f-1");
        assert_eq!(ev["data"]["status"], "processing");
        assert_eq!(ev["data"]["progress"], 40);
        assert!(ev["data"]["timestamp"].is_string(), "{ev}");
    }

    let delivered = server
        .api_post(
            "/api/v1/files/f-1/status",
            &json!({"user_id": "owner", "status": "completed"}),
        )
        .delivered();
    assert_eq!(delivered, 2);
    for c in [&mut u1, &mut u2] {
        let ev = expect_event(c, "file.ready");
        assert_eq!(ev["data"]["status"], "completed");
        assert!(
            ev["data"].get("progress").is_none_or(Value::is_null),
            "no progress given, none sent: {ev}"
        );
    }
    server.assert_nothing_pending(&mut other);

    server
        .api_post("/api/v1/files/f-1/status", &json!({"status": "processing"}))
        .expect_error(400, "BAD_REQUEST");
}

#[test]
fn stats_shape_and_counts() {
    let server = TestServer::start(&[]);
    let mut a1 = server.ws("alice");
    let _a2 = server.ws("alice");
    let _b = server.ws("bob");
    a1.assert_alive();
    let stats = server.api_get("/api/v1/stats");
    stats.expect_status(200);
    let s = &stats.json;
    assert!(s["node_id"].as_str().is_some_and(|n| !n.is_empty()), "{s}");
    assert_eq!(s["connections"], 3, "{s}");
    assert_eq!(s["users"], 2, "{s}");
    let shards = s["shards"]
        .as_array()
        .unwrap_or_else(|| panic!("shards array: {s}"));
    assert!(!shards.is_empty(), "{s}");
    let sum: u64 = shards
        .iter()
        .map(|x| x["connections"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sum, 3, "shard connection counts add up: {s}");
    assert!(s["messages_in"].as_u64().is_some_and(|n| n >= 1), "{s}");
    assert!(s["messages_out"].as_u64().is_some_and(|n| n >= 1), "{s}");
    assert!(s["rate_limited"].is_u64(), "{s}");
    assert!(s["uptime_s"].is_number(), "{s}");

    let before = s["messages_in"].as_u64().unwrap_or(0);
    a1.assert_alive();
    let after = server.api_get("/api/v1/stats").json["messages_in"]
        .as_u64()
        .unwrap_or(0);
    assert!(after > before, "messages_in moves: {before} -> {after}");
}

#[test]
fn shards_flag_sets_shard_count() {
    let server = TestServer::start(&["--shards", "3"]);
    let stats = server.api_get("/api/v1/stats");
    assert_eq!(
        stats.json["shards"].as_array().map(Vec::len),
        Some(3),
        "{}",
        stats.text
    );
}

#[test]
fn connections_list_and_filter() {
    let server = TestServer::start(&[]);
    let mut a = server.ws("alice");
    let b = server.ws("bob");
    a.subscribe(&["file.ready"]);
    a.assert_alive();
    let all = server.connections(None);
    assert_eq!(all.len(), 2, "{all:?}");
    let alice = server.connections(Some("alice"));
    assert_eq!(alice.len(), 1, "{alice:?}");
    let c = &alice[0];
    assert_eq!(c["connection_id"], a.connection_id().as_str());
    assert_eq!(c["user_id"], "alice");
    assert_eq!(c["subscriptions"], json!(["file.ready"]));
    for f in ["connected_at", "last_activity"] {
        assert!(c[f].is_string() || c[f].is_number(), "field {f}: {c}");
    }
    assert!(c["messages_in"].as_u64().is_some_and(|n| n >= 2), "{c}");
    assert!(c["messages_out"].as_u64().is_some_and(|n| n >= 2), "{c}");
    let bob = server.connections(Some("bob"));
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0]["connection_id"], b.connection_id().as_str());
    assert!(server.connections(Some("nobody")).is_empty());
}

#[test]
fn delete_connection_closes_it_with_4003() {
    let server = TestServer::start(&[]);
    let mut victim = server.ws("alice");
    let mut sibling = server.ws("alice");
    let r = server.api_delete(&format!("/api/v1/connections/{}", victim.connection_id()));
    r.expect_status(204);
    let (code, _) = victim.expect_close();
    assert_eq!(code, 4003);
    sibling.assert_alive();
    assert!(server.wait_connection_gone(&victim.connection_id(), Duration::from_secs(5)));
    server
        .api_delete("/api/v1/connections/no-such-id")
        .expect_error(404, "NOT_FOUND");
}

#[test]
fn deactivate_and_activate_user() {
    let server = TestServer::start(&[]);
    let mut a1 = server.ws("alice");
    let mut a2 = server.ws("alice");
    let mut bob = server.ws("bob");
    server
        .api_post("/api/v1/users/alice/deactivate", &json!({}))
        .expect_status(204);
    assert_eq!(a1.expect_close().0, 4003);
    assert_eq!(a2.expect_close().0, 4003);
    bob.assert_alive();
    let token = server.token("alice");
    let resp = Upgrade::get(&format!("/api/v1/ws/{token}")).send(server.addr());
    resp.assert_error(401, "UNAUTHORIZED");

    server
        .api_post("/api/v1/users/alice/activate", &json!({}))
        .expect_status(204);
    // Slots of the closed connections may be released asynchronously.
    let ok = wait_until(Duration::from_secs(5), || {
        WsClient::try_connect(server.addr(), crate::support::TokenVia::Path, &token).is_ok()
    });
    assert!(ok, "activated user cannot connect again");
}

#[test]
fn health_is_public_and_ok() {
    let server = TestServer::start(&[]);
    let r = server.get_public("/health");
    r.expect_status(200);
    assert_eq!(r.json, json!({"status": "ok"}));
}

#[test]
fn console_is_served_without_external_resources() {
    let server = TestServer::start(&[]);
    let r = server.get_public("/console");
    r.expect_status(200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.contains("text/html")),
        "console is an HTML page: {:?}",
        r.headers
    );
    // Every src/href must be local; local assets must be served.
    let mut refs = Vec::new();
    for attr in ["src=", "href="] {
        for (pos, _) in r.text.match_indices(attr) {
            let rest = &r.text[pos + attr.len()..];
            let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            let value: String = rest[1..].chars().take_while(|c| *c != quote).collect();
            refs.push(value);
        }
    }
    for v in &refs {
        let lower = v.to_lowercase();
        assert!(
            !(lower.starts_with("http:") || lower.starts_with("https:") || lower.starts_with("//")),
            "console loads an external resource: {v}"
        );
        if v.starts_with('/') {
            server.get_public(v).expect_status(200);
        } else if !v.contains(':') && !v.starts_with('#') && !v.is_empty() {
            // Relative to /console.
            server.get_public(&format!("/{v}")).expect_status(200);
        }
    }
    assert!(
        !r.text.to_lowercase().contains("url(http") && !r.text.contains("@import \"http"),
        "console CSS loads an external resource"
    );
}

#[test]
fn deactivating_a_user_without_connections_refuses_them_later() {
    let server = TestServer::start(&[]);
    server
        .api_post("/api/v1/users/ghost/deactivate", &json!({}))
        .expect_status(204);
    let token = server.token("ghost");
    for via in crate::support::ws::ALL_VIAS {
        let status =
            crate::support::ws::refusal_status(WsClient::try_connect(server.addr(), via, &token));
        assert_eq!(status, 401, "inactive user via {via:?}");
    }
    server
        .api_post("/api/v1/users/ghost/activate", &json!({}))
        .expect_status(204);
    server.ws("ghost").assert_alive();
}

#[test]
fn connection_filter_decodes_percent_encoded_user_ids() {
    let server = TestServer::start(&[]);
    let client = server.ws("team a/b+c");
    let _other = server.ws("other");
    let listed = server.api_get("/api/v1/connections?user_id=team%20a%2Fb%2Bc");
    let rows = listed.json.as_array().expect("a list").clone();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["connection_id"], client.connection_id().as_str());
    assert_eq!(rows[0]["user_id"], "team a/b+c");
    let bad = server.api_get("/api/v1/connections?user_id=%zz");
    assert_eq!(bad.status, 400);
}
