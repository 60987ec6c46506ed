//! Cluster mode (SPEC section 5) against real processes: a private
//! redis-server on a random loopback port and two or three `wsgate serve`
//! nodes sharing it. Every wait is a read or a poll with a deadline.

#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::RedisServer;
use support::ws::refusal_status;
use support::{random_string, wait_until, TestServer, TokenVia, WsClient};

/// Time allowed for cluster state to converge (joins, lease expiry).
const CONVERGE: Duration = Duration::from_secs(15);

struct Cluster {
    redis: RedisServer,
    nodes: Vec<TestServer>,
}

fn start_node(redis: &RedisServer, secret: &str, name: &str, extra: &[&str]) -> TestServer {
    let url = redis.url();
    let mut args = vec!["--redis-url", &url, "--node-id", name, "--shards", "2"];
    args.extend_from_slice(extra);
    TestServer::builder().secret(secret).args(&args).start()
}

impl Cluster {
    fn start(count: usize, extra: &[&str]) -> Cluster {
        let redis = RedisServer::start();
        let secret = random_string(32);
        let nodes: Vec<TestServer> = (0..count)
            .map(|i| {
                start_node(
                    &redis,
                    &secret,
                    &format!("node-{i}-{}", random_string(4)),
                    extra,
                )
            })
            .collect();
        for node in &nodes {
            wait_joined(node);
        }
        Cluster { redis, nodes }
    }
}

fn health(node: &TestServer) -> Value {
    let r = node.get_public("/health");
    r.expect_status(200);
    r.json.clone()
}

fn wait_joined(node: &TestServer) {
    assert!(
        wait_until(CONVERGE, || health(node)["backplane"] == "connected"),
        "node did not join the backplane: {}; stderr:\n{}",
        health(node),
        node.stderr_contents()
    );
}

fn wait_degraded(node: &TestServer) {
    assert!(
        wait_until(CONVERGE, || health(node)
            == json!({"status": "degraded", "backplane": "disconnected"})),
        "node did not report the backplane down: {}",
        health(node)
    );
}

/// The next message must be `ty` with this `id` (strict: no skipping, so
/// a duplicate or a stray message fails the test).
fn expect_next(client: &mut WsClient, ty: &str, id: &str) -> Value {
    let m = client.recv_json();
    assert_eq!(m["type"], ty, "expected {ty} {id}, got {m}");
    assert_eq!(m["id"], id, "same id on every node expected: {m}");
    m
}

fn publish(node: &TestServer, path: &str, body: Value) -> (String, u64) {
    let r = node.api_post(path, &body);
    let delivered = r.delivered();
    (r.json["id"].as_str().expect("id").to_string(), delivered)
}

/// A barrier through the backplane: a marker published on `via` to the
/// client's connection must be the very next thing it receives.
fn barrier(via: &TestServer, client: &mut WsClient) {
    let marker = random_string(10);
    via.publish(&json!({
        "type": "system.maintenance",
        "data": {"marker": marker},
        "connections": [client.connection_id()],
    }));
    let m = client.recv_json();
    assert!(
        m["type"] == "system.maintenance" && m["data"]["marker"] == marker.as_str(),
        "expected only the barrier, got {m}"
    );
}

#[test]
fn events_cross_nodes_for_every_target_once() {
    let cluster = Cluster::start(3, &[]);
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let mut u1_a = a.ws("u1");
    let mut u1_b = b.ws("u1");
    let mut u2_c = c.ws("u2");
    let mut idle_b = b.ws("idle");
    for client in [&mut u1_b, &mut u2_c] {
        client.subscribe(&["review.updated"]);
    }
    assert_ne!(u1_a.connection_id(), u1_b.connection_id());

    // Subscribers, published on A: B's and C's subscribers, nobody on A.
    let (id, delivered) = publish(
        a,
        "/api/v1/events",
        json!({"type": "review.updated", "data": {"k": 1}}),
    );
    assert_eq!(delivered, 0, "delivered counts this node only");
    let m = expect_next(&mut u1_b, "review.updated", &id);
    assert_eq!(m["data"]["k"], 1);
    expect_next(&mut u2_c, "review.updated", &id);

    // Users: every connection of u1, on A and on B.
    let (id, delivered) = publish(
        b,
        "/api/v1/events",
        json!({"type": "upload.progress", "data": {}, "users": ["u1"]}),
    );
    assert_eq!(delivered, 1);
    expect_next(&mut u1_a, "upload.progress", &id);
    expect_next(&mut u1_b, "upload.progress", &id);

    // Connections: ids owned by other nodes, addressed from C.
    let (id, delivered) = publish(
        c,
        "/api/v1/events",
        json!({"type": "file.ready", "data": {}, "connections": [u1_a.connection_id(), idle_b.connection_id()]}),
    );
    assert_eq!(delivered, 0);
    expect_next(&mut u1_a, "file.ready", &id);
    expect_next(&mut idle_b, "file.ready", &id);

    // All.
    let (id, _) = publish(
        a,
        "/api/v1/events",
        json!({"type": "system.maintenance", "data": {}, "all": true}),
    );
    for client in [&mut u1_a, &mut u1_b, &mut u2_c, &mut idle_b] {
        expect_next(client, "system.maintenance", &id);
    }

    // The seed's helpers.
    let (id, _) = publish(
        b,
        "/api/v1/notifications",
        json!({"message": "hi", "level": "warning"}),
    );
    for client in [&mut u1_a, &mut u1_b, &mut u2_c, &mut idle_b] {
        let m = expect_next(client, "system.notification", &id);
        assert_eq!(m["data"]["message"], "hi");
    }
    let (id, _) = publish(
        c,
        "/api/v1/notifications",
        json!({"message": "to u2", "users": ["u2"]}),
    );
    expect_next(&mut u2_c, "system.notification", &id);
    let (id, _) = publish(
        a,
        "/api/v1/reviews/r9/updated",
        json!({"changes": {"x": 1}}),
    );
    for client in [&mut u1_b, &mut u2_c] {
        let m = expect_next(client, "review.updated", &id);
        assert_eq!(m["data"]["review_id"], "r9");
    }
    let (id, _) = publish(
        c,
        "/api/v1/files/f1/status",
        json!({"user_id": "u1", "status": "processing", "progress": 50}),
    );
    for client in [&mut u1_a, &mut u1_b] {
        let m = expect_next(client, "file.processing", &id);
        assert_eq!(m["data"]["progress"], 50);
    }

    // Nothing else arrived anywhere: no duplicates, no strays.
    for (via, client) in [
        (c, &mut u1_a),
        (a, &mut u1_b),
        (b, &mut u2_c),
        (c, &mut idle_b),
    ] {
        barrier(via, client);
    }

    // stats and metrics are this node's, named by --node-id.
    let stats = b.api_get("/api/v1/stats").json.clone();
    assert_eq!(stats["connections"], 2, "{stats}");
    let node_id = stats["node_id"].as_str().expect("node_id").to_string();
    let metrics = b.metrics();
    assert!(
        metrics.contains(&format!("wsgate_node_info{{node_id=\"{node_id}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("wsgate_backplane_up 1"), "{metrics}");
    let listed = b.connections(None);
    assert_eq!(
        listed.len(),
        2,
        "GET /connections lists this node's: {listed:?}"
    );
}

#[test]
fn per_user_limit_holds_across_nodes() {
    let cluster = Cluster::start(2, &["--max-connections-per-user", "2"]);
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let first = a.ws("lim");
    let _second = b.ws("lim");
    for node in [a, b] {
        let r = WsClient::try_connect(node.addr(), TokenVia::Path, &node.token("lim"));
        assert_eq!(refusal_status(r), 429);
    }
    // A slot freed on A is usable on B.
    drop(first);
    assert!(
        wait_until(CONVERGE, || WsClient::try_connect(
            b.addr(),
            TokenVia::Path,
            &b.token("lim")
        )
        .is_ok()),
        "the freed slot never became usable on the other node"
    );

    // Simultaneous handshakes on both nodes: never more than the limit.
    for round in 0..3 {
        let user = format!("race-{round}");
        let attempts: Vec<(std::net::SocketAddr, String)> = (0..8)
            .map(|i| {
                let node = if i % 2 == 0 { a } else { b };
                (node.addr(), node.token(&user))
            })
            .collect();
        let start = std::sync::Arc::new(std::sync::Barrier::new(attempts.len()));
        let handles: Vec<_> = attempts
            .into_iter()
            .map(|(addr, token)| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    WsClient::try_connect(addr, TokenVia::Path, &token).ok()
                })
            })
            .collect();
        let admitted: Vec<WsClient> = handles
            .into_iter()
            .filter_map(|h| h.join().expect("connect thread"))
            .collect();
        assert_eq!(
            admitted.len(),
            2,
            "round {round}: the limit is 2 cluster-wide"
        );
    }
}

#[test]
fn deactivation_and_disconnect_reach_every_node() {
    let cluster = Cluster::start(2, &[]);
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let mut on_a = a.ws("bad");
    let mut on_b = b.ws("bad");
    a.api_post("/api/v1/users/bad/deactivate", &json!({}))
        .expect_status(204);
    assert_eq!(on_a.expect_close().0, 4003);
    assert_eq!(on_b.expect_close().0, 4003);
    for node in [a, b] {
        let r = WsClient::try_connect(node.addr(), TokenVia::Path, &node.token("bad"));
        assert_eq!(refusal_status(r), 401);
    }
    b.api_post("/api/v1/users/bad/activate", &json!({}))
        .expect_status(204);
    assert!(
        wait_until(CONVERGE, || WsClient::try_connect(
            a.addr(),
            TokenVia::Path,
            &a.token("bad")
        )
        .is_ok()),
        "activation on B never reached A"
    );

    // DELETE from any node closes a connection of another node.
    let mut target = b.ws("victim");
    a.api_delete(&format!("/api/v1/connections/{}", target.connection_id()))
        .expect_status(204);
    assert_eq!(target.expect_close().0, 4003);
    let gone = a.api_delete(&format!("/api/v1/connections/{}", target.connection_id()));
    gone.expect_error(404, "NOT_FOUND");
}

#[test]
fn a_killed_node_stops_counting_within_the_connection_timeout() {
    let timeout = "2s";
    let mut cluster = Cluster::start(
        2,
        &[
            "--max-connections-per-user",
            "1",
            "--connection-timeout",
            timeout,
        ],
    );
    let mut doomed = cluster.nodes.remove(0);
    let b = &cluster.nodes[0];
    let _held = doomed.ws("solo");
    let r = WsClient::try_connect(b.addr(), TokenVia::Path, &b.token("solo"));
    assert_eq!(refusal_status(r), 429);
    doomed.signal(libc::SIGKILL);
    assert!(doomed.wait_exit(Duration::from_secs(5)).is_some());
    let killed_at = Instant::now();
    assert!(
        wait_until(CONVERGE, || WsClient::try_connect(
            b.addr(),
            TokenVia::Path,
            &b.token("solo")
        )
        .is_ok()),
        "the killed node's connection still counts"
    );
    let waited = killed_at.elapsed();
    assert!(
        waited < Duration::from_secs(2) + Duration::from_millis(1500),
        "took {waited:?}, more than --connection-timeout {timeout} (+ slack)"
    );
}

#[test]
fn losing_redis_degrades_but_keeps_serving_then_recovers() {
    let mut cluster = Cluster::start(2, &["--max-connections-per-user", "1"]);
    let mut a_client = cluster.nodes[0].ws("keep-a");
    let mut b_client = cluster.nodes[1].ws("keep-b");

    cluster.redis.stop();
    for node in &cluster.nodes {
        wait_degraded(node);
        assert!(node.metrics().contains("wsgate_backplane_up 0"));
    }
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    // Local publishing goes on, without blocking, and clients stay.
    let started = Instant::now();
    let (id, delivered) = publish(
        a,
        "/api/v1/events",
        json!({"type": "system.notification", "data": {}, "all": true}),
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a publish blocked on Redis"
    );
    assert_eq!(delivered, 1);
    expect_next(&mut a_client, "system.notification", &id);
    // Not sent to the other nodes: counted by reason.
    assert_eq!(dropped(a, "backplane_down"), 1.0, "{}", a.metrics());
    // A connection admitted while degraded (counted locally only).
    let _late = b.ws("late");

    cluster.redis.restart();
    for node in &cluster.nodes {
        wait_joined(node);
    }
    // Cross-node delivery is back, and the old clients are still served.
    let (id, _) = publish(
        a,
        "/api/v1/events",
        json!({"type": "upload.completed", "data": {}, "users": ["keep-b"]}),
    );
    expect_next(&mut b_client, "upload.completed", &id);
    let (id, _) = publish(
        b,
        "/api/v1/events",
        json!({"type": "upload.completed", "data": {}, "users": ["keep-a"]}),
    );
    expect_next(&mut a_client, "upload.completed", &id);
    // Rejoining re-registered the live connections: the limits hold again.
    for (node, user) in [(a, "keep-b"), (a, "late"), (b, "keep-a")] {
        let r = WsClient::try_connect(node.addr(), TokenVia::Path, &node.token(user));
        assert_eq!(
            refusal_status(r),
            429,
            "{user} must still count after the rejoin"
        );
    }
    a_client.assert_alive();
    b_client.assert_alive();
}

#[test]
fn stats_lists_the_live_nodes_and_the_backplane_state() {
    let mut cluster = Cluster::start(2, &["--connection-timeout", "2s"]);
    let names: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.api_get("/api/v1/stats").json["node_id"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let mut both = names.clone();
    both.sort();
    for node in &cluster.nodes {
        let stats = node.api_get("/api/v1/stats").json;
        assert_eq!(stats["backplane"], "connected", "{stats}");
        assert_eq!(stats["nodes"], json!(both), "{stats}");
    }
    // A node that leaves drops out of the list (its lease is deleted on shutdown).
    let mut leaving = cluster.nodes.remove(1);
    leaving.sigterm_and_wait();
    let a = &cluster.nodes[0];
    assert!(
        wait_until(CONVERGE, || a.api_get("/api/v1/stats").json["nodes"]
            == json!([names[0]])),
        "the stopped node is still listed: {}",
        a.api_get("/api/v1/stats").json
    );
    // Without Redis: disconnected, and no node list rather than a stale one.
    cluster.redis.stop();
    wait_degraded(a);
    let stats = a.api_get("/api/v1/stats").json;
    assert_eq!(stats["backplane"], "disconnected", "{stats}");
    assert!(stats.get("nodes").is_none(), "{stats}");
}

#[test]
fn single_node_has_no_backplane() {
    let node = TestServer::start(&["--node-id", "solo-node"]);
    assert_eq!(health(&node), json!({"status": "ok"}));
    let metrics = node.metrics();
    assert!(!metrics.contains("wsgate_backplane_up"));
    assert!(metrics.contains("wsgate_node_info{node_id=\"solo-node\"} 1"));
    let stats = node.api_get("/api/v1/stats").json;
    assert_eq!(stats["node_id"], "solo-node");
    assert!(
        stats.get("backplane").is_none() && stats.get("nodes").is_none(),
        "{stats}"
    );
}

#[test]
fn a_bad_redis_url_exits_2_naming_the_flag() {
    let out = support::run_cli(
        &["serve", "--jwt-secret", "s", "--redis-url", "http://nope"],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--redis-url"), "{}", out.stderr);
}

/// `wsgate_messages_dropped_total{reason}` of a node (0 when absent).
fn dropped(node: &TestServer, reason: &str) -> f64 {
    support::metrics::metric_sum(
        &node.metrics(),
        "wsgate_messages_dropped_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

#[test]
fn upload_cancelled_reaches_the_users_subscribed_connections_on_every_node() {
    let cluster = Cluster::start(2, &[]);
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let mut sender = a.ws("uploader");
    let mut on_b = b.ws("uploader");
    let mut unsubscribed_b = b.ws("uploader");
    let mut other_user_b = b.ws("someone-else");
    for client in [&mut sender, &mut on_b, &mut other_user_b] {
        client.subscribe(&["upload.cancelled"]);
    }
    sender.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": "up-1"}}));
    sender.recv_type("upload.cancel.acknowledged");
    let local = sender.recv_type("upload.cancelled");
    let expected = json!({"upload_id": "up-1", "connection_id": sender.connection_id()});
    assert_eq!(local["data"], expected);
    let id = local["id"].as_str().expect("id").to_string();
    let remote = expect_next(&mut on_b, "upload.cancelled", &id);
    assert_eq!(remote["data"], expected);
    assert_eq!(remote["timestamp"], local["timestamp"]);
    // Not subscribed, or another user: nothing (the barrier comes first).
    barrier(a, &mut unsubscribed_b);
    barrier(a, &mut other_user_b);
    barrier(b, &mut on_b);
}

#[test]
fn connection_ids_never_repeat_across_restarts_of_a_node() {
    let args = ["--node-id", "restarted-node", "--shards", "1"];
    let first = TestServer::start(&args);
    let old_id = first.ws("same-user").connection_id();
    let secret = random_string(32);
    drop(first);
    let second = TestServer::builder().secret(&secret).args(&args).start();
    let new = second.ws("same-user");
    assert_ne!(
        new.connection_id(),
        old_id,
        "the restarted node handed out the same id"
    );
    second
        .api_delete(&format!("/api/v1/connections/{old_id}"))
        .expect_error(404, "NOT_FOUND");
    assert!(second.connection_ids().contains(&new.connection_id()));
}

#[test]
fn a_second_node_with_the_same_node_id_refuses_to_start() {
    let cluster = Cluster::start(1, &["--connection-timeout", "3s"]);
    let node_id = cluster.nodes[0].api_get("/api/v1/stats").json["node_id"]
        .as_str()
        .expect("node_id")
        .to_string();
    let url = cluster.redis.url();
    let out = support::run_cli(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            "s",
            "--redis-url",
            &url,
            "--node-id",
            &node_id,
            "--connection-timeout",
            "3s",
        ],
        &[],
        Duration::from_secs(15),
    );
    assert_eq!(out.code, Some(2), "stderr:\n{}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("--node-id") && last.contains(&node_id),
        "{}",
        out.stderr
    );
    // The first node is untouched.
    wait_joined(&cluster.nodes[0]);
}

/// What a node logs when its node id is claimed and it waits to see
/// whether the holder is alive.
const CLAIM_WAIT: &str = "claimed in Redis by another process";

#[test]
fn a_node_id_is_free_again_once_its_holder_died_or_left() {
    let mut cluster = Cluster::start(1, &["--connection-timeout", "2s"]);
    let secret = random_string(32);
    let name = format!("reused-{}", random_string(4));
    let extra = ["--connection-timeout", "2s"];
    // Killed: its successor waits for the claim to expire, then joins.
    let mut doomed = start_node(&cluster.redis, &secret, &name, &extra);
    wait_joined(&doomed);
    doomed.signal(libc::SIGKILL);
    assert!(doomed.wait_exit(Duration::from_secs(5)).is_some());
    let mut successor = start_node(&cluster.redis, &secret, &name, &extra);
    wait_joined(&successor);
    assert!(successor.stderr_contents().contains(CLAIM_WAIT));
    // Left cleanly: the next one takes the id at once and both nodes of
    // the cluster still exchange events.
    assert!(successor.sigterm_and_wait().success());
    let again = start_node(&cluster.redis, &secret, &name, &extra);
    wait_joined(&again);
    assert!(
        !again.stderr_contents().contains(CLAIM_WAIT),
        "a clean restart waited for the claim to expire"
    );
    let mut client = again.ws("x");
    let other = cluster.nodes.remove(0);
    let (id, _) = publish(
        &other,
        "/api/v1/events",
        json!({"type": "file.ready", "data": {}, "users": ["x"]}),
    );
    expect_next(&mut client, "file.ready", &id);
}

#[test]
fn a_failed_slot_release_is_retried() {
    let cluster = Cluster::start(2, &["--max-connections-per-user", "1"]);
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let holder = a.ws("retry");
    let key = "wsgate:user:retry:conns";
    let saved = "wsgate:test:saved";
    // Make the release's HDEL fail (WRONGTYPE), then put the field back.
    assert!(cluster
        .redis
        .command(&format!("RENAME {key} {saved}"))
        .is_some_and(|r| r.starts_with("+OK")));
    cluster.redis.command(&format!("SET {key} not-a-hash"));
    let errors = |node: &TestServer| {
        support::metrics::metric_sum(
            &node.metrics(),
            "wsgate_backplane_publish_errors_total",
            &[],
        )
        .unwrap_or(0.0)
    };
    let before = errors(a);
    drop(holder);
    assert!(
        wait_until(CONVERGE, || errors(a) > before),
        "the release never failed"
    );
    cluster.redis.command(&format!("DEL {key}"));
    cluster.redis.command(&format!("RENAME {saved} {key}"));
    assert!(
        wait_until(CONVERGE, || WsClient::try_connect(
            b.addr(),
            TokenVia::Path,
            &b.token("retry")
        )
        .is_ok()),
        "the failed release was never retried: the user stays locked out"
    );
}

#[test]
fn an_event_over_the_receivers_max_message_size_is_dropped_and_counted() {
    let redis = RedisServer::start();
    let secret = random_string(32);
    let a = start_node(&redis, &secret, &format!("big-{}", random_string(4)), &[]);
    let b = start_node(
        &redis,
        &secret,
        &format!("small-{}", random_string(4)),
        &["--max-message-size", "1024"],
    );
    wait_joined(&a);
    wait_joined(&b);
    let mut client = b.ws("tiny");
    let big = "x".repeat(4096);
    publish(
        &a,
        "/api/v1/events",
        json!({"type": "file.ready", "data": {"blob": big}, "users": ["tiny"]}),
    );
    assert!(
        wait_until(CONVERGE, || dropped(&b, "backplane_oversize") == 1.0),
        "{}",
        b.metrics()
    );
    barrier(&a, &mut client);
}

#[test]
fn a_full_backplane_queue_drops_by_bytes_and_counts() {
    let cluster = Cluster::start(
        2,
        &[
            "--max-message-size",
            "2048",
            "--backplane-queue-bytes",
            "8192",
            "--connection-timeout",
            "60s",
            // The backplane queue alone: a recorded publish would wait for
            // its append (up to 500 ms) while Redis holds writes.
            "--history-size",
            "0",
        ],
    );
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let mut client = b.ws("far");
    // Redis holds every write for a while: the writer's batch waits, the
    // queue behind it fills up by bytes long before 8192 entries.
    assert!(cluster
        .redis
        .command("CLIENT PAUSE 3000 WRITE")
        .is_some_and(|r| r.starts_with("+OK")));
    let blob = "y".repeat(1000);
    for _ in 0..40 {
        publish(
            a,
            "/api/v1/events",
            json!({"type": "file.ready", "data": {"blob": blob}, "users": ["far"]}),
        );
    }
    let full = dropped(a, "backplane_queue_full");
    assert!(full >= 10.0, "{}", a.metrics());
    cluster.redis.command("CLIENT UNPAUSE");
    wait_joined(a);
    // Whatever was queued got through or was counted; then it flows again.
    let (id, _) = publish(
        a,
        "/api/v1/events",
        json!({"type": "system.maintenance", "data": {}, "users": ["far"]}),
    );
    let delivered = client.recv_until(|m| m["id"] == id.as_str());
    assert_eq!(delivered["type"], "system.maintenance");
}

#[test]
fn a_node_cut_off_from_redis_counts_what_it_missed() {
    let redis = RedisServer::start();
    redis.command("ACL SETUSER cut on >pw ~* &* +@all");
    let secret = random_string(32);
    // The writer's numbering: recorded events (history on) travel in the
    // append script's PUBLISH, unnumbered (docs/CLUSTER.md, "History").
    let a = start_node(
        &redis,
        &secret,
        &format!("pub-{}", random_string(4)),
        &["--history-size", "0"],
    );
    let b = TestServer::builder()
        .secret(&secret)
        .args(&[
            "--redis-url",
            &format!("redis://cut:pw@127.0.0.1:{}/0", redis.port()),
            "--node-id",
            &format!("cut-{}", random_string(4)),
            "--history-size",
            "0",
        ])
        .start();
    wait_joined(&a);
    wait_joined(&b);
    let mut client = b.ws("far");
    barrier(&a, &mut client);
    // Only B loses Redis: its user is disabled and its connections killed.
    redis.command("ACL SETUSER cut off");
    redis.command("CLIENT KILL USER cut");
    wait_degraded(&b);
    for _ in 0..3 {
        publish(
            &a,
            "/api/v1/events",
            json!({"type": "file.ready", "data": {}, "users": ["far"]}),
        );
    }
    assert_eq!(dropped(&a, "backplane_down"), 0.0, "A was up: it sent them");
    redis.command("ACL SETUSER cut on");
    wait_joined(&b);
    // The next event from A shows B the gap of three.
    let (id, _) = publish(
        &a,
        "/api/v1/events",
        json!({"type": "system.maintenance", "data": {}, "users": ["far"]}),
    );
    expect_next(&mut client, "system.maintenance", &id);
    assert_eq!(dropped(&b, "backplane_missed"), 3.0, "{}", b.metrics());
}

/// Publishes an event to `user` on `node`; its id and the one position of
/// the answer (`None` when it went out unrecorded).
fn publish_to(node: &TestServer, user: &str, ty: &str) -> (String, Option<Value>) {
    let answer = node.api_post(
        "/api/v1/events",
        &json!({"type": ty, "data": {"n": random_string(6)}, "users": [user]}),
    );
    answer.expect_status(200);
    let id = answer.json["id"].as_str().expect("id").to_owned();
    let streams = answer.json["streams"].as_array().expect("streams").clone();
    assert!(streams.len() <= 1, "{}", answer.text);
    (id, streams.into_iter().next())
}

/// The epoch of a publish answer's position, with its offset.
fn at(position: &Option<Value>) -> (String, u64) {
    let p = position.as_ref().expect("a recorded position");
    (
        p["epoch"].as_str().expect("epoch").to_owned(),
        p["offset"].as_u64().expect("offset"),
    )
}

/// The append script publishes each recorded event with its position: a
/// client on any node gets every event of a stream once, with `stream`, in
/// offset order, whichever node published it (a node's own echo is not
/// delivered twice).
#[test]
fn recorded_events_reach_every_node_with_their_position_in_offset_order() {
    let cluster = Cluster::start(2, &["--cluster-history"]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_a = a.ws("watcher-a");
    let mut on_b = b.ws("watcher-b");
    let mut user_on_b = b.ws("u");
    let mut sent = Vec::new();
    for (i, node) in [a, b, a, a, b, b].into_iter().enumerate() {
        let answer = node.api_post(
            "/api/v1/events",
            &json!({"type": "system.notification", "data": {"i": i}, "all": true}),
        );
        let id = answer.json["id"].as_str().expect("id").to_owned();
        let position = answer.json["streams"][0].clone();
        assert_eq!(position["name"], "broadcast", "{}", answer.text);
        assert_eq!(position["offset"], i as u64 + 1, "{}", answer.text);
        sent.push((id, position));
    }
    for client in [&mut on_a, &mut on_b, &mut user_on_b] {
        for (id, position) in &sent {
            let m = expect_next(client, "system.notification", id);
            assert_eq!(&m["stream"], position, "{m}");
        }
    }
    // A user's stream: published on A, delivered on B with its position.
    let (id, position) = publish_to(a, "u", "file.ready");
    let m = expect_next(&mut user_on_b, "file.ready", &id);
    assert_eq!(Some(m["stream"].clone()), position, "{m}");
    // Nothing more: no echo, no second copy through the writer.
    barrier(a, &mut user_on_b);
    barrier(b, &mut on_a);
    barrier(a, &mut on_b);
}

/// Cluster history on Redis (SPEC-v2 §2.6): appends from any node share one
/// epoch and contiguous offsets, the local subscriber gets the position,
/// any node reads the stream (trimmed to exactly `--history-size`), and
/// DELETE on another node starts a new epoch.
#[test]
fn cluster_history_appends_on_redis_and_every_node_reads_it() {
    let cluster = Cluster::start(2, &["--cluster-history", "--history-size", "3"]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_a = a.ws("u");
    let mut ids = Vec::new();
    let mut epochs = Vec::new();
    for (i, node) in [a, b, a, b].into_iter().enumerate() {
        let (id, position) = publish_to(node, "u", "file.ready");
        let (epoch, offset) = at(&position);
        assert_eq!(offset, i as u64 + 1, "offsets contiguous across nodes");
        assert_eq!(position.expect("position")["name"], "user:u");
        epochs.push(epoch);
        let m = expect_next(&mut on_a, "file.ready", &id);
        if i % 2 == 0 {
            // Published on A: delivered locally with its position.
            assert_eq!(m["stream"]["offset"], i as u64 + 1, "{m}");
            assert_eq!(m["stream"]["epoch"], epochs[0].as_str(), "{m}");
        }
        ids.push(id);
    }
    assert!(
        epochs.iter().all(|e| *e == epochs[0]),
        "one epoch: {epochs:?}"
    );
    let epoch = &epochs[0];

    let read = b.api_get("/api/v1/streams/user%3Au");
    read.expect_status(200);
    assert_eq!(read.json["epoch"], epoch.as_str(), "{}", read.text);
    assert_eq!(read.json["offset"], 4);
    let events = read.json["events"].as_array().expect("events");
    // Trimmed to exactly MAXLEN 3: offsets 2..=4, each the message as sent.
    let got: Vec<(&str, u64)> = events
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or(""),
                e["stream"]["offset"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (ids[1].as_str(), 2),
            (ids[2].as_str(), 3),
            (ids[3].as_str(), 4)
        ]
    );
    assert_eq!(events[0]["stream"]["epoch"], epoch.as_str());
    assert_eq!(events[0]["type"], "file.ready");

    let since = a.api_get(&format!("/api/v1/streams/user%3Au?since={epoch}:2"));
    assert_eq!(since.json["recovered"], true, "{}", since.text);
    assert_eq!(since.json["events"].as_array().map(Vec::len), Some(2));
    let too_old = a.api_get(&format!("/api/v1/streams/user%3Au?since={epoch}:0"));
    assert_eq!(too_old.json["reason"], "TOO_OLD", "{}", too_old.text);
    let ahead = a.api_get(&format!("/api/v1/streams/user%3Au?since={epoch}:9"));
    assert_eq!(ahead.json["reason"], "OFFSET_AHEAD", "{}", ahead.text);

    b.api_delete("/api/v1/streams/user%3Au").expect_status(204);
    a.api_get("/api/v1/streams/user%3Au")
        .expect_error(404, "NOT_FOUND");
    let (id, position) = publish_to(a, "u", "file.ready");
    let (renewed, offset) = at(&position);
    assert_ne!(&renewed, epoch, "DELETE starts a new epoch");
    assert_eq!(offset, 1);
    expect_next(&mut on_a, "file.ready", &id);
}

/// `FLUSHALL` loses every stream: the old position is `EPOCH_CHANGED`.
#[test]
fn flushall_gives_epoch_changed_in_cluster_mode() {
    let cluster = Cluster::start(2, &["--cluster-history"]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (epoch, _) = at(&publish_to(a, "u", "file.ready").1);
    assert!(cluster
        .redis
        .command("FLUSHALL")
        .is_some_and(|r| r.starts_with("+OK")));
    let (renewed, offset) = at(&publish_to(b, "u", "file.ready").1);
    assert_ne!(renewed, epoch);
    assert_eq!(offset, 1);
    let read = a.api_get(&format!("/api/v1/streams/user%3Au?since={epoch}:1"));
    assert_eq!(read.json["recovered"], false, "{}", read.text);
    assert_eq!(read.json["reason"], "EPOCH_CHANGED");
    assert_eq!(read.json["epoch"], renewed.as_str());
}

/// While Redis is away events go out without `stream` and the streams API
/// is `UNAVAILABLE`; once it is back (with its data), a stream that
/// delivered unrecorded events gets a new epoch and one that did not keeps
/// its own.
#[test]
fn streams_delivered_unrecorded_while_redis_was_away_get_a_new_epoch() {
    let mut cluster = Cluster::start(2, &["--cluster-history"]);
    let mut on_a = cluster.nodes[0].ws("u");
    let (epoch_u, _) = at(&publish_to(&cluster.nodes[0], "u", "file.ready").1);
    on_a.recv_json();
    let (epoch_v, _) = at(&publish_to(&cluster.nodes[0], "v", "file.ready").1);
    // Keep the data over the outage: redis-server loads dump.rdb at start.
    assert!(cluster
        .redis
        .command("SAVE")
        .is_some_and(|r| r.starts_with("+OK")));
    cluster.redis.stop();
    for node in &cluster.nodes {
        wait_degraded(node);
    }
    let a = &cluster.nodes[0];
    let started = Instant::now();
    let (id, position) = publish_to(a, "u", "file.ready");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a publish waited on Redis"
    );
    assert_eq!(position, None, "unrecorded: no position in the answer");
    let m = expect_next(&mut on_a, "file.ready", &id);
    assert!(m.get("stream").is_none(), "{m}");
    a.api_get("/api/v1/streams/user%3Au")
        .expect_error(503, "UNAVAILABLE");

    cluster.redis.restart();
    for node in &cluster.nodes {
        wait_joined(node);
    }
    let b = &cluster.nodes[1];
    // The data came back with Redis ...
    assert_eq!(
        b.api_get("/api/v1/streams/user%3Av").json["epoch"],
        epoch_v.as_str()
    );
    // ... but node A drops `user:u`'s metadata without waiting for a publish.
    assert!(
        wait_until(CONVERGE, || b.api_get("/api/v1/streams/user%3Au").status
            == 404),
        "user:u kept its epoch after unrecorded deliveries"
    );
    let (renewed, offset) = at(&publish_to(b, "u", "file.ready").1);
    assert_ne!(renewed, epoch_u);
    assert_eq!(offset, 1);
    assert_eq!(at(&publish_to(b, "v", "file.ready").1), (epoch_v, 2));
}

/// Connection recovery does not read Redis yet: in cluster mode every
/// position a connection gives is `UNAVAILABLE` (docs/CLUSTER.md,
/// "History").
#[test]
fn connection_recovery_is_unavailable_in_cluster_mode_for_now() {
    let cluster = Cluster::start(2, &["--cluster-history"]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (epoch, _) = at(&publish_to(a, "u", "file.ready").1);
    let mut resuming =
        WsClient::connect_with_query(b.addr(), TokenVia::Path, &b.token("u"), "resume=1");
    resuming.send_json(&json!({"type": "resume",
        "data": {"user": {"epoch": epoch, "offset": 1}}}));
    let resumed = resuming.recv_json();
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["data"]["recovered"], false);
    assert_eq!(
        resumed["data"]["streams"]["user:u"],
        json!({"recovered": false, "reason": "UNAVAILABLE", "epoch": null, "offset": 0, "replayed": 0})
    );
}

/// How many `XRANGE` commands Redis has run.
fn xrange_calls(redis: &RedisServer) -> u64 {
    let info = redis.command("INFO commandstats").unwrap_or_default();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_xrange:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Identical concurrent reads of one stream range cost one Redis round
/// trip: with Redis paused, eight reads of the same range wait for the
/// first one's answer (one transaction: two `XRANGE`s).
#[test]
fn identical_concurrent_stream_reads_are_coalesced() {
    let cluster = Cluster::start(1, &["--cluster-history"]);
    let node = &cluster.nodes[0];
    let (epoch, _) = at(&publish_to(node, "u", "file.ready").1);
    let before = xrange_calls(&cluster.redis);
    assert!(cluster
        .redis
        .command("CLIENT PAUSE 700 ALL")
        .is_some_and(|r| r.starts_with("+OK")));
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| node.api_get("/api/v1/streams/user%3Au").json))
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect()
    });
    for answer in &answers {
        assert_eq!(answer["epoch"], epoch.as_str(), "{answer}");
        assert_eq!(answer["events"].as_array().map(Vec::len), Some(1));
    }
    let calls = xrange_calls(&cluster.redis) - before;
    // One read (2 XRANGEs), allowing one straggler that came after it.
    assert!(calls <= 4, "{calls} XRANGEs for 8 identical reads");
}

/// Without `--cluster-history` (the default), cluster mode records nothing:
/// no positions, recovery UNAVAILABLE, the streams API 503.
#[test]
fn without_cluster_history_cluster_mode_records_nothing() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut client = b.ws("u");
    let answer = a.api_post(
        "/api/v1/events",
        &json!({"type": "file.ready", "data": {}, "users": ["u"]}),
    );
    assert_eq!(answer.json["streams"], json!([]), "{}", answer.text);
    let id = answer.json["id"].as_str().expect("id").to_owned();
    let m = expect_next(&mut client, "file.ready", &id);
    assert!(m.get("stream").is_none(), "{m}");

    let mut resuming =
        WsClient::connect_with_query(b.addr(), TokenVia::Path, &b.token("u"), "resume=1");
    resuming.send_json(&json!({"type": "resume",
        "data": {"user": {"epoch": "AAAAAAAA", "offset": 1}}}));
    let resumed = resuming.recv_json();
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["data"]["recovered"], false);
    assert_eq!(
        resumed["data"]["streams"]["user:u"],
        json!({"recovered": false, "reason": "UNAVAILABLE", "epoch": null, "offset": 0, "replayed": 0})
    );
    a.api_get("/api/v1/streams/user%3Au")
        .expect_error(503, "UNAVAILABLE");
}
