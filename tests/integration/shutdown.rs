//! SPEC section 1: SIGTERM / SIGINT close every WebSocket with 1001 and
//! exit 0 within 10 s.

use crate::support::{TestServer, WsClient};
use std::time::{Duration, Instant};

fn shutdown_with(sig: i32) {
    let mut server = TestServer::start(&[]);
    let mut clients: Vec<WsClient> = ["a", "b", "c"].iter().map(|u| server.ws(u)).collect();
    for c in &mut clients {
        c.assert_alive();
    }
    let started = Instant::now();
    server.signal(sig);
    for c in &mut clients {
        let (code, _) = c.expect_close_within(Duration::from_secs(10));
        assert_eq!(code, 1001, "shutdown close code");
    }
    let status = server
        .wait_exit(Duration::from_secs(10).saturating_sub(started.elapsed()))
        .unwrap_or_else(|| panic!("wsgate still running 10 s after signal {sig}"));
    assert_eq!(status.code(), Some(0), "exit status after signal {sig}");
    assert_eq!(
        server.stdout_lines().len(),
        1,
        "exactly one stdout line: {:?}",
        server.stdout_lines()
    );
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_0() {
    shutdown_with(libc::SIGTERM);
}

#[test]
fn sigint_closes_clients_with_1001_and_exits_0() {
    shutdown_with(libc::SIGINT);
}

#[test]
fn shutdown_stops_accepting() {
    let mut server = TestServer::start(&[]);
    let addr = server.addr();
    server.ws("a").assert_alive();
    let status = server.sigterm_and_wait();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still accepting after exit"
    );
}

/// The ready line promises the server is up; a supervisor may signal it
/// at once. The signal handler must already be in place by then.
#[test]
fn sigterm_right_after_ready_line_exits_0() {
    for _ in 0..5 {
        let mut server = TestServer::start(&[]);
        let status = server.sigterm_and_wait();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM right after the ready line: {status:?} (killed by the default \
             disposition means the handler was installed after the line was printed)"
        );
    }
}

#[test]
fn shutdown_flushes_queued_messages_before_1001() {
    let mut server = TestServer::start(&[]);
    let mut c = server.ws("flush");
    c.subscribe(&["review.created"]);
    for seq in 0..200 {
        server
            .api_post(
                "/api/v1/events",
                &serde_json::json!({"type": "review.created", "data": {"seq": seq}}),
            )
            .expect_status(200);
    }
    server.signal(libc::SIGTERM);
    for seq in 0..200 {
        let m = c.recv_json();
        assert_eq!(
            m["data"]["seq"], seq,
            "queued message {seq} lost at shutdown"
        );
    }
    assert_eq!(c.expect_close_within(Duration::from_secs(10)).0, 1001);
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}
