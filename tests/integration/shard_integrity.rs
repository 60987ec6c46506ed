//! The shard's own bookkeeping under stress (issue 9): the user and
//! subscriber indexes never hold a closed connection, a deactivation
//! racing upgrades leaves the user with nothing, a shard panic ends the
//! process loudly, and every message not delivered is counted by reason.

use crate::support::bystander::{assert_healthy, Bystander, EVENT};
use crate::support::frames::{client_frame, End, RawWs, OP_TEXT};
use crate::support::metrics::metric_sum;
use crate::support::ws::handshake;
use crate::support::{run_cli, wait_until, TestServer, TokenVia, WsClient};
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// Upgrades without expecting `connection.established` (the connection
/// may be closed or dropped right after the 101).
fn upgrade(addr: std::net::SocketAddr, token: &str) -> Option<WsClient> {
    let (ws, response) = handshake(addr, TokenVia::Path, token).ok()?;
    Some(WsClient {
        ws,
        established: Value::Null,
        response,
    })
}

const ALL_EVENTS: [&str; 12] = [
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

fn dropped(server: &TestServer, reason: &str) -> f64 {
    metric_sum(
        &server.metrics(),
        "wsgate_messages_dropped_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

fn stats(server: &TestServer) -> Value {
    let r = server.api_get("/api/v1/stats");
    r.expect_status(200);
    r.json
}

/// The reply to a connection's own `subscribe` overflows its queue, so the
/// connection is closed while that message is being handled: it must not
/// be put (back) into the subscriber index. Before, it was, and the next
/// broadcast after it went away indexed a vacant slot (the shard thread
/// died and every subscriber on it stopped receiving) or, once the slot
/// was reused, reached a newcomer that never subscribed.
#[test]
fn a_connection_closed_by_its_own_subscribe_reply_is_never_indexed() {
    // 420 bytes: `connection.established` (about 330 with SPEC-v2's token
    // fields) and a one-event confirmation fit, the confirmation of all
    // twelve events (about 550 bytes) does not. One shard, so the slab slot
    // freed by the bad connection is reused.
    let server = TestServer::start(&[
        "--max-message-size",
        "420",
        "--max-queued-bytes",
        "420",
        "--shards",
        "1",
    ]);
    let mut good = Bystander::start(&server, "good-user");
    good.publish_and_check(&server, 5);
    let slow_before = dropped(&server, "slow_consumer");

    let mut bad = RawWs::connect(server.addr(), &server.token("bad"));
    let bad_id = bad.connection_id();
    let subscribe = json!({"type": "subscribe", "data": {"events": ALL_EVENTS}, "id": "s"});
    assert!(bad.send(&client_frame(OP_TEXT, subscribe.to_string().as_bytes())));
    assert_eq!(bad.wait_end(Duration::from_secs(5)), End::Close(4008));
    assert!(server.wait_connection_gone(&bad_id, Duration::from_secs(5)));
    drop(bad);
    // Gone from the slab too (stats count closing connections).
    assert!(
        wait_until(Duration::from_secs(10), || stats(&server)["connections"]
            == 1),
        "stats still count the closed connection: {}",
        stats(&server)
    );

    // Every subscriber still gets every message.
    good.publish_and_check(&server, 20);
    // A newcomer in the freed slot gets nothing it did not subscribe to.
    let mut newcomer = server.ws("newcomer");
    for event in ALL_EVENTS.iter().filter(|e| **e != EVENT) {
        let delivered = server.publish(&json!({"type": event, "data": {}}));
        assert_eq!(
            delivered, 0,
            "{event} reached a connection nobody subscribed"
        );
    }
    good.publish_and_check(&server, 20);
    server.assert_nothing_pending(&mut newcomer);

    let s = stats(&server);
    assert_eq!(
        (s["connections"].as_u64(), s["users"].as_u64()),
        (Some(2), Some(2)),
        "{s}"
    );
    let mut users: Vec<String> = server
        .connections(None)
        .iter()
        .map(|c| c["user_id"].as_str().unwrap_or_default().to_string())
        .collect();
    users.sort();
    assert_eq!(users, ["good-user", "newcomer"]);
    assert!(server.connections(Some("bad")).is_empty());
    assert_healthy(&server);
    assert!(
        dropped(&server, "slow_consumer") > slow_before,
        "the reply that overflowed the queue was not counted as dropped"
    );
}

/// Deactivating a user while upgrades of theirs are in flight: whichever
/// way each race goes, no connection of theirs survives. (The losing order
/// itself is nanoseconds wide here; a unit test in `src/hub/deactivation.rs`
/// drives it exactly.)
#[test]
fn deactivation_racing_upgrades_leaves_the_user_no_connection() {
    const UPGRADES: usize = 4;
    let server = TestServer::start(&["--max-connections-per-user", "10", "--shards", "1"]);
    let addr = server.addr();
    let token = server.token("flip");
    let mut survivors = Vec::new();
    for round in 0..40 {
        let start = Arc::new(Barrier::new(UPGRADES + 1));
        let upgrades: Vec<_> = (0..UPGRADES)
            .map(|_| {
                let (start, token) = (start.clone(), token.clone());
                std::thread::spawn(move || {
                    start.wait();
                    upgrade(addr, &token)
                })
            })
            .collect();
        start.wait();
        server
            .api_post("/api/v1/users/flip/deactivate", &json!({}))
            .expect_status(204);
        for upgrade in upgrades {
            let Some(mut client) = upgrade.join().expect("upgrade thread") else {
                continue;
            };
            // Admitted before the deactivation: it must be closed 4003 (or
            // dropped before it was ever registered), not left open.
            if let Some((code, _)) = client.wait_end(Duration::from_secs(10)) {
                assert_eq!(code, 4003, "round {round}");
            }
        }
        let listed = server.connections(Some("flip"));
        if !listed.is_empty() {
            survivors.push((round, listed));
        }
        server
            .api_post("/api/v1/users/flip/activate", &json!({}))
            .expect_status(204);
    }
    assert!(
        survivors.is_empty(),
        "deactivated user kept connections: {survivors:?}"
    );
}

/// The failure model: a shard that panics aborts the whole process with a
/// clear line on stderr (for a supervisor to restart it), rather than
/// leaving its users frozen while `/health` says ok.
#[test]
fn a_shard_panic_aborts_the_process_loudly() {
    let mut server = TestServer::start(&[
        "--shards",
        "1",
        "--enable-test-faults",
        "--test-shard-panic-user",
        "boom",
    ]);
    let mut fine = server.ws("fine");
    fine.assert_alive();
    assert_healthy(&server);
    let _ = upgrade(server.addr(), &server.token("boom"));
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the process must end when a shard panics");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    let stderr = server.stderr_contents();
    assert!(
        stderr.contains("shard thread panicked") && stderr.contains("aborting"),
        "no clear log line: {stderr}"
    );
    assert!(
        std::net::TcpStream::connect(server.addr()).is_err(),
        "something still answers after the abort"
    );
}

#[test]
fn the_fault_injection_flag_is_refused_on_its_own() {
    let out = run_cli(
        &[
            "serve",
            "--jwt-secret",
            "s",
            "--test-shard-panic-user",
            "boom",
        ],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("--test-shard-panic-user")
            && out.stderr.contains("--enable-test-faults"),
        "{}",
        out.stderr
    );
}

/// A client that never reads, with `n` 32 KB events queued for it well past
/// what the kernel buffers hold.
fn stalled_reader_with_queued_events(server: &TestServer, user: &str, n: usize) -> RawWs {
    let raw = RawWs::connect(server.addr(), &server.token(user));
    let blob = "q".repeat(32 * 1024);
    for _ in 0..n {
        let delivered = server.publish(&json!({
            "type": "system.notification",
            "data": {"blob": blob},
            "users": [user],
        }));
        assert_eq!(delivered, 1, "the stalled reader must still be open");
    }
    raw
}

#[test]
fn messages_still_queued_are_counted_when_a_connection_closes_or_its_socket_fails() {
    // 16 MiB of budget: 8 MiB of events queue up without a 4008.
    let server = TestServer::start(&["--max-queued-bytes", "16777216"]);
    let mut good = Bystander::start(&server, "good-user");

    // Closed by the server API: 4003 goes out behind what is queued, the
    // client never reads, the grace runs out: those messages are dropped.
    let closing = stalled_reader_with_queued_events(&server, "closing", 250);
    let before = dropped(&server, "connection_closing");
    server
        .api_delete(&format!("/api/v1/connections/{}", closing.connection_id()))
        .expect_status(204);
    assert!(
        wait_until(Duration::from_secs(10), || dropped(
            &server,
            "connection_closing"
        ) > before),
        "messages left in a closed connection's queue were not counted"
    );

    // The peer resets with messages still queued: the socket failed.
    let reset = stalled_reader_with_queued_events(&server, "reset", 250);
    let before = dropped(&server, "write_failed");
    drop(reset); // unread data in its receive buffer: the kernel sends RST
    assert!(
        wait_until(Duration::from_secs(10), || dropped(&server, "write_failed")
            > before),
        "messages queued for a socket that failed were not counted"
    );
    drop(closing);
    good.publish_and_check(&server, 10);
    assert_healthy(&server);
}
