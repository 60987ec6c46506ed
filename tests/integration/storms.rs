//! Reconnect storms (hardening): `--connection-rate-limit` refuses upgrades
//! past the per-node rate cheaply with 503 + `Retry-After`, and shutdown
//! closes connections in batches spread over `--drain-time`.

use std::time::{Duration, Instant};

use crate::support::ws::{refusal_status, TokenVia, WsClient};
use crate::support::TestServer;

#[test]
fn upgrades_past_the_connection_rate_are_refused_with_503() {
    let server = TestServer::start(&[
        "--connection-rate-limit",
        "5",
        "--max-connections-per-user",
        "100",
    ]);
    let mut admitted = Vec::new();
    let mut refused = 0;
    for i in 0..30 {
        let token = server.token(&format!("storm-{i}"));
        match WsClient::try_connect(server.addr(), TokenVia::Path, &token) {
            Ok(client) => admitted.push(client),
            Err(e) => {
                assert_eq!(refusal_status(Err(e)), 503);
                refused += 1;
            }
        }
    }
    // A burst of one second's worth (5), plus what refilled meanwhile.
    assert!(
        admitted.len() >= 5 && admitted.len() < 15,
        "admitted {}",
        admitted.len()
    );
    assert_eq!(admitted.len() + refused, 30);
    let metrics = server.metrics();
    assert!(
        metrics.contains("wsgate_upgrades_refused_total{reason=\"connection_rate\"}"),
        "refusals by rate are counted"
    );
    for client in admitted.iter_mut() {
        client.assert_alive();
    }
    // The refusal carries the JSON body and Retry-After.
    let resp = loop {
        let resp = crate::support::raw::Upgrade::get(&format!("/api/v1/ws/{}", server.token("x")))
            .send(server.addr());
        if resp.status == 503 {
            break resp;
        }
    };
    resp.assert_error(503, "SERVER_AT_CAPACITY");
    assert_eq!(resp.header("Retry-After").map(str::trim), Some("1"));
}

#[test]
fn shutdown_closes_in_batches_over_the_drain_time() {
    let mut server = TestServer::start(&["--drain-time", "1s", "--shards", "1"]);
    let mut clients: Vec<WsClient> = (0..40).map(|i| server.ws(&format!("drain-{i}"))).collect();
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let handles: Vec<_> = clients
        .drain(..)
        .map(|mut client| {
            std::thread::spawn(move || {
                let (code, _) = client.expect_close_within(Duration::from_secs(10));
                (code, Instant::now())
            })
        })
        .collect();
    let closes: Vec<(u16, Instant)> = handles
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    assert!(
        closes.iter().all(|(code, _)| *code == 1001),
        "every client gets 1001"
    );
    let first = closes.iter().map(|(_, t)| *t).min().expect("closes");
    let last = closes.iter().map(|(_, t)| *t).max().expect("closes");
    assert!(
        last.duration_since(first) >= Duration::from_millis(500),
        "closes were not spread: {:?}",
        last.duration_since(first)
    );
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exits within 10 s");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}
