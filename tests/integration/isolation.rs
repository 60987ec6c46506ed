//! Failure isolation: a misbehaving connection (malformed message, oversize
//! frame, binary frame, stalled reader, vanished peer) affects only itself,
//! while a well-behaved subscriber receives every published message.

use crate::support::{Incoming, TestServer, WsClient};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tungstenite::Message;

const EVENT: &str = "review.created";

/// Reads a well-behaved client on its own thread and forwards every JSON
/// message, so publishing can go on meanwhile.
struct Watcher {
    rx: Receiver<Value>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    next_seq: u64,
}

impl Watcher {
    fn new(mut c: WsClient) -> Watcher {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match c.next_within(Duration::from_millis(100)) {
                    Some(Incoming::Text(t)) => {
                        let v: Value = serde_json::from_str(&t).unwrap_or(json!({"raw": t}));
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                    Some(Incoming::Close(code, reason)) => {
                        let _ = tx.send(json!({"closed": code, "reason": reason}));
                        return;
                    }
                    Some(Incoming::Gone(e)) => {
                        let _ = tx.send(json!({"gone": e}));
                        return;
                    }
                    _ => {}
                }
            }
        });
        Watcher {
            rx,
            stop,
            handle: Some(handle),
            next_seq: 0,
        }
    }

    /// Asserts the watcher got exactly seqs `next_seq..upto`, in order.
    fn expect_seqs_upto(&mut self, upto: u64) {
        while self.next_seq < upto {
            let m = self
                .rx
                .recv_timeout(Duration::from_secs(15))
                .unwrap_or_else(|_| {
                    panic!(
                        "the good subscriber stopped receiving at seq {} of {upto}",
                        self.next_seq
                    )
                });
            assert_eq!(m["type"], EVENT, "good subscriber got {m}");
            assert_eq!(
                m["data"]["seq"], self.next_seq,
                "good subscriber must get every message in order"
            );
            self.next_seq += 1;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn publish_range(server: &TestServer, range: std::ops::Range<u64>) {
    for seq in range {
        server
            .api_post(
                "/api/v1/events",
                &json!({"type": EVENT, "data": {"seq": seq}}),
            )
            .expect_status(200);
    }
}

/// A subscribed good client on a watcher thread, plus a subscribed bad one.
fn setup(server: &TestServer) -> (Watcher, WsClient) {
    let mut good = server.ws("good-user");
    good.subscribe(&[EVENT]);
    let mut bad = server.ws("bad-user");
    bad.subscribe(&[EVENT]);
    (Watcher::new(good), bad)
}

#[test]
fn malformed_message_affects_only_its_connection() {
    let server = TestServer::start(&[]);
    let (mut good, mut bad) = setup(&server);
    publish_range(&server, 0..20);
    bad.send_text("{definitely not json");
    let err = bad.recv_until(|m| m["type"] == "error");
    assert_eq!(err["data"]["code"], "INVALID_JSON");
    publish_range(&server, 20..40);
    good.expect_seqs_upto(40);
    bad.assert_alive();
}

#[test]
fn binary_frame_affects_only_its_connection() {
    let server = TestServer::start(&[]);
    let (mut good, mut bad) = setup(&server);
    publish_range(&server, 0..20);
    bad.send_raw(Message::binary(vec![0u8; 64]));
    let err = bad.recv_until(|m| m["type"] == "error");
    assert_eq!(err["data"]["code"], "INVALID_MESSAGE");
    publish_range(&server, 20..40);
    good.expect_seqs_upto(40);
    bad.assert_alive();
}

#[test]
fn oversize_frame_affects_only_its_connection() {
    let server = TestServer::start(&["--max-message-size", "1024"]);
    let (mut good, mut bad) = setup(&server);
    publish_range(&server, 0..20);
    let _ = bad.try_send(Message::text("x".repeat(2000)));
    assert_eq!(
        bad.wait_end(Duration::from_secs(5)).map(|c| c.0),
        Some(1009)
    );
    publish_range(&server, 20..40);
    good.expect_seqs_upto(40);
}

#[test]
fn vanished_client_affects_only_its_connection() {
    let server = TestServer::start(&[]);
    let (mut good, bad) = setup(&server);
    let bad_id = bad.connection_id();
    publish_range(&server, 0..10);
    // Drop the TCP socket without a close frame.
    drop(bad);
    publish_range(&server, 10..60);
    good.expect_seqs_upto(60);
    assert!(
        server.wait_connection_gone(&bad_id, Duration::from_secs(10)),
        "a vanished client was never removed"
    );
    publish_range(&server, 60..70);
    good.expect_seqs_upto(70);
}

#[test]
fn slow_consumer_is_cut_off_without_hurting_others() {
    let server = TestServer::start(&["--max-queued-bytes", "65536"]);
    let (mut good, mut stalled) = setup(&server);
    let stalled_id = stalled.connection_id();
    let blob = "s".repeat(8 * 1024);
    let mut published = 0u64;
    let mut cut_off = false;
    // The stalled client never reads; its kernel buffers fill first, then
    // the server-side queue overflows.
    while published < 6000 {
        for _ in 0..50 {
            server
                .api_post(
                    "/api/v1/events",
                    &json!({"type": EVENT, "data": {"seq": published, "blob": blob}}),
                )
                .expect_status(200);
            published += 1;
        }
        good.expect_seqs_upto(published);
        if !server.connection_ids().contains(&stalled_id) {
            cut_off = true;
            break;
        }
    }
    assert!(
        cut_off,
        "a client that never reads was still connected after {published} 8 KB events"
    );
    publish_range_from(&server, published, 20);
    good.expect_seqs_upto(published + 20);
    // If its close frame made it into the socket, it says 4008.
    if let Some((code, _)) = stalled.wait_end(Duration::from_secs(20)) {
        assert_eq!(code, 4008, "slow consumer close code");
    }
}

fn publish_range_from(server: &TestServer, start: u64, n: u64) {
    publish_range(server, start..start + n);
}
