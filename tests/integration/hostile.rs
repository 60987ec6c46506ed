//! Hostile and broken clients (issue 6): each test shows the bad client is
//! cut off, while a well-behaved subscribed client keeps receiving every
//! published message (counted by `data.seq`) and `/health` stays
//! responsive. Frames that break RFC 6455 are written by hand
//! (`support::frames`).

use crate::support::bystander::{assert_healthy, Bystander, EVENT};
use crate::support::frames::{
    client_frame, first_byte, frame, header, wait_peer_close, End, RawWs, MASK, OP_BINARY, OP_CONT,
    OP_PING, OP_TEXT,
};
use crate::support::raw::Upgrade;
use crate::support::{metrics::metric_sum, TestServer, WsClient};
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The header-read timeout used by these tests (`--header-read-timeout`).
const HEADER_TIMEOUT: Duration = Duration::from_millis(300);
const HEADER_TIMEOUT_ARG: [&str; 2] = ["--header-read-timeout", "300ms"];

fn connect_tcp(server: &TestServer) -> TcpStream {
    let s = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(5)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Publishes a batch, checks the bystander got all of it and the server
/// answers `/health`.
fn others_unaffected(server: &TestServer, good: &mut Bystander) {
    good.publish_and_check(server, 20);
    assert_healthy(server);
}

// ---------------------------------------------------------------------------
// Request head: silence, slow drip, oversize, unfinished upgrade.

#[test]
fn silent_tcp_client_is_cut_off_by_the_header_read_timeout() {
    let server = TestServer::start(&HEADER_TIMEOUT_ARG);
    let mut good = Bystander::start(&server, "good-user");
    let connected = Instant::now();
    let mut silent: Vec<TcpStream> = (0..5).map(|_| connect_tcp(&server)).collect();
    good.publish_and_check(&server, 10);
    for s in &mut silent {
        let mut seen = Vec::new();
        let closed = wait_peer_close(s, Duration::from_secs(5), &mut seen);
        assert!(
            closed.is_some(),
            "a client that sent nothing was still connected after 5 s"
        );
        let elapsed = connected.elapsed();
        assert!(
            elapsed < HEADER_TIMEOUT * 10,
            "cut off only {elapsed:?} after connecting (timeout {HEADER_TIMEOUT:?})"
        );
        // Whatever came first (nothing, or a 408), no upgrade happened.
        assert!(
            !String::from_utf8_lossy(&seen).contains(" 101 "),
            "got {:?}",
            String::from_utf8_lossy(&seen)
        );
    }
    others_unaffected(&server, &mut good);
}

/// Sends `request` one byte every `gap`; returns how many bytes went out
/// before the server closed, and when, or `None` if it never did.
fn drip(stream: &mut TcpStream, request: &[u8], gap: Duration) -> Option<(usize, Duration)> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(gap.max(Duration::from_millis(1))))
        .expect("read timeout");
    for (i, byte) in request.iter().enumerate() {
        if stream.write_all(&[*byte]).is_err() {
            return Some((i, started.elapsed()));
        }
        let mut seen = Vec::new();
        if wait_peer_close(stream, gap, &mut seen).is_some() {
            return Some((i + 1, started.elapsed()));
        }
    }
    None
}

#[test]
fn headers_dripped_slower_than_the_timeout_are_cut_off() {
    let server = TestServer::start(&HEADER_TIMEOUT_ARG);
    let mut good = Bystander::start(&server, "good-user");
    let token = server.token("slowloris");
    let request = Upgrade::get(&format!("/api/v1/ws/{token}")).to_bytes();
    // One byte every 50 ms: the whole head would take many seconds.
    let mut s = connect_tcp(&server);
    let (sent, elapsed) = drip(&mut s, &request, Duration::from_millis(50))
        .unwrap_or_else(|| panic!("a head dripped over seconds was accepted in full"));
    assert!(
        sent < request.len(),
        "the whole head went out ({sent} bytes)"
    );
    assert!(
        elapsed < HEADER_TIMEOUT * 10,
        "a dripping client was cut off only after {elapsed:?}"
    );
    // A plain HTTP request dripped the same way is cut off as well.
    let mut s = connect_tcp(&server);
    let health = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (sent, _) = drip(&mut s, health, Duration::from_millis(50))
        .unwrap_or_else(|| panic!("a dripped /health head was accepted in full"));
    assert!(sent < health.len());
    others_unaffected(&server, &mut good);
}

#[test]
fn oversized_request_head_is_refused_not_crashed() {
    let server = TestServer::start(&[]);
    let mut good = Bystander::start(&server, "good-user");
    let token = server.token("big-head");
    // Many headers adding up to ~24 KiB, then one 20 KiB header line.
    let mut many = Upgrade::get(&format!("/api/v1/ws/{token}"));
    for i in 0..300 {
        many = many.header(&format!("X-Pad-{i}"), &"a".repeat(70));
    }
    let one_long =
        Upgrade::get(&format!("/api/v1/ws/{token}")).header("X-Pad", &"b".repeat(20_000));
    for (what, request) in [("many headers", many), ("one long header", one_long)] {
        let bytes = request.to_bytes();
        assert!(bytes.len() > 16 * 1024);
        let mut s = connect_tcp(&server);
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        // The server may stop reading (and reset) before all of it is sent.
        let _ = s.write_all(&bytes);
        let mut seen = Vec::new();
        let closed = wait_peer_close(&mut s, Duration::from_secs(5), &mut seen);
        let text = String::from_utf8_lossy(&seen).to_string();
        assert!(
            closed.is_some(),
            "{what}: connection still open after an oversized head; got {text:?}"
        );
        // A 431 when the answer beats the reset of the unread rest.
        if let Some(status) = text.split_whitespace().nth(1) {
            assert_eq!(
                status, "431",
                "{what}: an oversized head must be refused, got {text:?}"
            );
        }
    }
    others_unaffected(&server, &mut good);
    // Just under the cap still works: ~12 KiB of headers.
    // (hyper also caps the number of headers at 100.)
    let mut fine = Upgrade::get("/health");
    for i in 0..40 {
        fine = fine.header(&format!("X-Pad-{i}"), &"c".repeat(300));
    }
    let r = crate::support::raw::raw_request(server.addr(), &fine.to_bytes());
    assert_eq!(r.status, 200, "a 12 KiB head must be served: {r:?}");
}

#[test]
fn unfinished_upgrade_requests_are_cut_off_and_hold_no_slot() {
    // Two slots only: unfinished upgrades must not take them.
    let server = TestServer::start(&[
        "--max-connections",
        "2",
        HEADER_TIMEOUT_ARG[0],
        HEADER_TIMEOUT_ARG[1],
    ]);
    let mut pending = Vec::new();
    for i in 0..6 {
        let token = server.token(&format!("unfinished-{i}"));
        let full = Upgrade::get(&format!("/api/v1/ws/{token}")).to_bytes();
        // Everything but the blank line that ends the head.
        let mut s = connect_tcp(&server);
        s.write_all(&full[..full.len() - 2]).expect("write");
        pending.push(s);
    }
    let mut good = Bystander::start(&server, "good-user");
    let mut second = server.ws("second-user");
    for s in &mut pending {
        let mut seen = Vec::new();
        let closed = wait_peer_close(s, Duration::from_secs(5), &mut seen);
        assert!(
            closed.is_some(),
            "an upgrade request that never finished was still open after 5 s"
        );
        assert!(!String::from_utf8_lossy(&seen).contains(" 101 "));
    }
    second.assert_alive();
    others_unaffected(&server, &mut good);
}

// ---------------------------------------------------------------------------
// Capacity flood.

#[test]
fn upgrade_flood_past_max_connections_is_refused_cheaply() {
    const LIMIT: usize = 20;
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    let server = TestServer::start(&["--max-connections", "20"]);
    let mut good = Bystander::start(&server, "good-user");
    let mut held: Vec<WsClient> = (1..LIMIT)
        .map(|i| server.ws(&format!("held-{i}")))
        .collect();
    // Tokens are minted up front so the threads only hit the server.
    let batches: Vec<Vec<String>> = (0..THREADS)
        .map(|t| {
            (0..PER_THREAD)
                .map(|i| server.token(&format!("flood-{t}-{i}")))
                .collect()
        })
        .collect();
    let addr = server.addr();
    let flooders: Vec<_> = batches
        .into_iter()
        .map(|tokens| {
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                let mut bad = Vec::new();
                for token in tokens {
                    let started = Instant::now();
                    let resp = Upgrade::get(&format!("/api/v1/ws/{token}")).send(addr);
                    slowest = slowest.max(started.elapsed());
                    let ok = resp.status == 503
                        && resp.json()["code"] == "SERVER_AT_CAPACITY"
                        && resp
                            .header("Retry-After")
                            .is_some_and(|v| v.trim().parse::<u64>().is_ok_and(|n| n >= 1));
                    if !ok {
                        bad.push(format!("{} {:?} {}", resp.status, resp.headers, resp.body));
                    }
                }
                (slowest, bad)
            })
        })
        .collect();
    // Meanwhile: publishing, health and the admitted connections go on.
    let mut rounds = 0;
    while !flooders.iter().all(|h| h.is_finished()) || rounds == 0 {
        good.publish_and_check(&server, 5);
        assert_healthy(&server);
        let n = held.len();
        held[rounds % n].assert_alive();
        rounds += 1;
    }
    let mut slowest = Duration::ZERO;
    for h in flooders {
        let (s, bad) = h.join().expect("flood thread");
        slowest = slowest.max(s);
        assert!(
            bad.is_empty(),
            "refusals not 503 SERVER_AT_CAPACITY + Retry-After: {bad:?}"
        );
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a capacity refusal took {slowest:?}"
    );
    let refused = metric_sum(
        &server.metrics(),
        "wsgate_upgrades_refused_total",
        &[("reason", "server_at_capacity")],
    )
    .unwrap_or(0.0);
    assert!(
        refused >= (THREADS * PER_THREAD) as f64,
        "refusals counted: {refused}"
    );
    // Every admitted connection still works, and the count is exact.
    for c in &mut held {
        c.assert_alive();
    }
    assert_eq!(server.connection_ids().len(), LIMIT);
    others_unaffected(&server, &mut good);
    // A freed slot is usable again.
    let freed = held.pop().expect("a held connection");
    let freed_id = freed.connection_id();
    drop(freed);
    assert!(server.wait_connection_gone(&freed_id, Duration::from_secs(5)));
    let token = server.token("late-comer");
    let admitted = crate::support::wait_until(Duration::from_secs(5), || {
        WsClient::try_connect(server.addr(), crate::support::TokenVia::Path, &token).is_ok()
    });
    assert!(admitted, "a freed slot was not reusable after the flood");
}

// ---------------------------------------------------------------------------
// Frames that break RFC 6455.

/// Sends `bytes` on a fresh raw connection of a subscribed bad client and
/// returns how the server ended it; checks the bystander and health after.
fn violate(server: &TestServer, good: &mut Bystander, user: &str, bytes: &[u8]) -> End {
    let mut bad = RawWs::connect(server.addr(), &server.token(user));
    let id = bad.connection_id();
    good.publish_and_check(server, 5);
    bad.send(bytes);
    let end = bad.wait_end(Duration::from_secs(5));
    if matches!(end, End::Close(_)) {
        assert!(
            bad.tcp_closed_within(Duration::from_secs(5)),
            "the server sent a close frame but kept TCP open"
        );
    }
    assert!(
        server.wait_connection_gone(&id, Duration::from_secs(5)),
        "the bad connection is still listed"
    );
    others_unaffected(server, good);
    end
}

#[test]
fn frame_claiming_a_2_pow_62_length_is_closed_1009() {
    let server = TestServer::start(&[]);
    let mut good = Bystander::start(&server, "good-user");
    let mut bytes = header(first_byte(true, OP_TEXT), Some(MASK), 1 << 62);
    bytes.extend_from_slice(&[b'x'; 64]);
    assert_eq!(
        violate(&server, &mut good, "liar", &bytes),
        End::Close(1009)
    );
    // Also on a continuation, after a valid first fragment.
    let mut bytes = frame(first_byte(false, OP_TEXT), Some(MASK), b"[");
    bytes.extend(header(first_byte(true, OP_CONT), Some(MASK), 1 << 62));
    assert_eq!(
        violate(&server, &mut good, "liar2", &bytes),
        End::Close(1009)
    );
}

#[test]
fn frame_longer_than_sent_then_silent_is_timed_out() {
    // The bystander answers the 100 ms pings, so it is never idle; the
    // stuck client cannot (it is mid-frame).
    let server = TestServer::start(&[
        "--connection-timeout",
        "500ms",
        "--heartbeat-interval",
        "100ms",
    ]);
    let mut good = Bystander::start(&server, "good-user");
    let mut bytes = header(first_byte(true, OP_TEXT), Some(MASK), 1000);
    bytes.extend_from_slice(&[b'x'; 10]);
    let started = Instant::now();
    let end = violate(&server, &mut good, "stuck", &bytes);
    assert!(
        matches!(end, End::Close(4000) | End::Dropped),
        "a half-sent frame then silence must end in 4000 or a drop, got {end:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn frame_longer_than_sent_then_close_is_cleaned_up() {
    let server = TestServer::start(&[]);
    let mut good = Bystander::start(&server, "good-user");
    for (user, how) in [("halfclose", 0), ("vanish", 1)] {
        let mut bad = RawWs::connect(server.addr(), &server.token(user));
        let id = bad.connection_id();
        let mut bytes = header(first_byte(true, OP_TEXT), Some(MASK), 50_000);
        bytes.extend_from_slice(&[b'x'; 100]);
        bad.send(&bytes);
        good.publish_and_check(&server, 5);
        if how == 0 {
            bad.stream
                .shutdown(std::net::Shutdown::Write)
                .expect("half-close");
        } else {
            drop(bad);
        }
        assert!(
            server.wait_connection_gone(&id, Duration::from_secs(5)),
            "{user}: a peer that closed mid-frame is still listed"
        );
        others_unaffected(&server, &mut good);
    }
}

#[test]
fn unmasked_client_frame_is_closed_1002() {
    let server = TestServer::start(&[]);
    let mut good = Bystander::start(&server, "good-user");
    let bytes = frame(first_byte(true, OP_TEXT), None, br#"{"type":"ping"}"#);
    assert_eq!(
        violate(&server, &mut good, "unmasked", &bytes),
        End::Close(1002)
    );
}

#[test]
fn fragmented_control_frame_is_closed_1002() {
    let server = TestServer::start(&[]);
    let mut good = Bystander::start(&server, "good-user");
    // A ping without FIN, then its "continuation".
    let mut bytes = frame(first_byte(false, OP_PING), Some(MASK), b"ab");
    bytes.extend(frame(first_byte(true, OP_CONT), Some(MASK), b"cd"));
    assert_eq!(
        violate(&server, &mut good, "fragping", &bytes),
        End::Close(1002)
    );
    // A control frame over 125 bytes is malformed as well.
    let bytes = frame(first_byte(true, OP_PING), Some(MASK), &[b'p'; 126]);
    assert_eq!(
        violate(&server, &mut good, "bigping", &bytes),
        End::Close(1002)
    );
}

#[test]
fn invalid_utf8_text_is_closed_1007() {
    let server = TestServer::start(&[]);
    let mut good = Bystander::start(&server, "good-user");
    let bytes = client_frame(OP_TEXT, b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}");
    assert_eq!(
        violate(&server, &mut good, "badutf8", &bytes),
        End::Close(1007)
    );
    // Split across fragments, the bad sequence straddling them.
    let mut bytes = frame(first_byte(false, OP_TEXT), Some(MASK), b"\"\xe2\x82");
    bytes.extend(frame(first_byte(true, OP_CONT), Some(MASK), b"\x28\""));
    assert_eq!(
        violate(&server, &mut good, "badutf8b", &bytes),
        End::Close(1007)
    );
}

#[test]
fn reserved_opcodes_and_rsv_bits_are_closed_1002() {
    let server = TestServer::start(&[]);
    let mut good = Bystander::start(&server, "good-user");
    for (i, first) in [
        first_byte(true, 0x3),            // reserved data opcode
        first_byte(true, 0xB),            // reserved control opcode
        first_byte(true, OP_TEXT) | 0x40, // RSV1 without an extension
        first_byte(true, OP_CONT),        // continuation with nothing to continue
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = frame(first, Some(MASK), b"{}");
        assert_eq!(
            violate(&server, &mut good, &format!("reserved-{i}"), &bytes),
            End::Close(1002),
            "first byte {first:#04x}"
        );
    }
}

// ---------------------------------------------------------------------------
// Hostile JSON.

#[test]
fn deeply_nested_json_is_invalid_json_and_the_connection_stays_usable() {
    let server = TestServer::start(&["--max-message-size", "300000"]);
    let mut good = Bystander::start(&server, "good-user");
    let mut bad = server.ws("nester");
    for (i, text) in [
        "[".repeat(100_000),
        "{\"a\":".repeat(50_000),
        format!(
            "{{\"type\":\"ping\",\"id\":\"deep\",\"data\":{{\"pingId\":{}1{}}}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    ]
    .into_iter()
    .enumerate()
    {
        bad.send_text(&text);
        let err = bad.recv_until(|m| m["type"] == "error");
        assert_eq!(err["data"]["code"], "INVALID_JSON", "case {i}: {err}");
        bad.assert_alive();
        others_unaffected(&server, &mut good);
    }
}

#[test]
fn json_just_under_the_size_limit_is_answered_without_a_close() {
    const MAX: usize = 65_536;
    let server = TestServer::start(&[]);
    let mut good = Bystander::start(&server, "good-user");
    let mut bad = server.ws("bigjson");
    // A wide object: a heartbeat whose data has thousands of keys, grown
    // until the message is within 50-100 bytes of the limit.
    let mut data = serde_json::Map::new();
    let mut len = json!({"type": "heartbeat", "id": "wide", "data": {}})
        .to_string()
        .len();
    let mut i = 0;
    loop {
        let key = format!("k{i}");
        // `"key":[1,2,3]` plus a comma.
        let add = key.len() + 2 + 1 + 7 + 1;
        if len + add > MAX - 50 {
            break;
        }
        data.insert(key, json!([1, 2, 3]));
        len += add;
        i += 1;
    }
    let text = json!({"type": "heartbeat", "id": "wide", "data": data}).to_string();
    assert!(
        text.len() <= MAX && text.len() > MAX - 100,
        "{}",
        text.len()
    );
    bad.send_text(&text);
    let ack = bad.recv_json();
    assert_eq!(ack["type"], "heartbeat.ack", "{ack}");
    assert_eq!(ack["reply_to"], "wide");
    // A ping whose pingId fills the frame: the echo would not fit in an
    // outbound frame; either a pong or an error, but no close.
    let filler = "p".repeat(MAX - 60);
    let text = json!({"type": "ping", "id": "fat", "data": {"pingId": filler}}).to_string();
    assert!(text.len() <= MAX, "{}", text.len());
    bad.send_text(&text);
    match bad.next_within(Duration::from_secs(5)) {
        Some(crate::support::Incoming::Text(t)) => {
            let v: Value = serde_json::from_str(&t).expect("json");
            assert!(
                v["type"] == "pong" || v["type"] == "error",
                "unexpected answer {}",
                &t[..t.len().min(200)]
            );
            assert_eq!(v["reply_to"], "fat");
        }
        None => {} // dropped as too big to send: acceptable, not a close
        Some(other) => panic!("a maximal ping must not end the connection: {other:?}"),
    }
    bad.assert_alive();
    others_unaffected(&server, &mut good);
}

#[test]
fn message_over_the_limit_in_small_fragments_is_closed_1009() {
    let server = TestServer::start(&["--max-message-size", "65536"]);
    let mut good = Bystander::start(&server, "good-user");
    // Three 30 KB fragments: each under the limit, the message over it.
    let part = vec![b' '; 30_000];
    let mut bytes = frame(first_byte(false, OP_TEXT), Some(MASK), &part);
    bytes.extend(frame(first_byte(false, OP_CONT), Some(MASK), &part));
    bytes.extend(frame(first_byte(true, OP_CONT), Some(MASK), &part));
    assert_eq!(
        violate(&server, &mut good, "fragments", &bytes),
        End::Close(1009)
    );
    // A binary message the same way.
    let mut bytes = frame(first_byte(false, OP_BINARY), Some(MASK), &part);
    bytes.extend(frame(first_byte(false, OP_CONT), Some(MASK), &part));
    bytes.extend(frame(first_byte(true, OP_CONT), Some(MASK), &part));
    assert_eq!(
        violate(&server, &mut good, "fragments-bin", &bytes),
        End::Close(1009)
    );
}

// ---------------------------------------------------------------------------
// Clients that never read.

#[test]
fn three_stalled_readers_at_once_are_cut_off_without_hurting_others() {
    let server = TestServer::start(&["--max-queued-bytes", "65536"]);
    let mut good = Bystander::start(&server, "good-user");
    // One stalled connection shares the good client's user (same shard,
    // same per-user state); two belong to other users.
    let mut stalled: Vec<WsClient> = ["good-user", "stall-a", "stall-b"]
        .iter()
        .map(|u| {
            let mut c = server.ws(u);
            c.subscribe(&[EVENT]);
            c
        })
        .collect();
    let ids: Vec<String> = stalled.iter().map(WsClient::connection_id).collect();
    let blob = "s".repeat(32 * 1024);
    let mut all_gone = false;
    while good.published() < 3000 {
        good.publish(&server, 25, &json!({"blob": blob}));
        good.expect_all();
        let listed = server.connection_ids();
        if ids.iter().all(|id| !listed.contains(id)) {
            all_gone = true;
            break;
        }
    }
    assert!(
        all_gone,
        "stalled readers still connected after {} events of 32 KB",
        good.published()
    );
    others_unaffected(&server, &mut good);
    // Each one's close frame, when it made it out, says 4008.
    for c in &mut stalled {
        if let Some((code, _)) = c.wait_end(Duration::from_secs(30)) {
            assert_eq!(code, 4008, "slow consumer close code");
        }
    }
    // The good client's user can still open connections (slots released).
    server.ws("good-user").assert_alive();
}

// ---------------------------------------------------------------------------
// Control frame floods and dribbled frames.

/// 64 masked Ping frames with 125-byte payloads, written as one buffer.
fn ping_batch() -> Vec<u8> {
    let one = frame(first_byte(true, OP_PING), Some(MASK), &[b'p'; 125]);
    one.repeat(64)
}

/// Writes Ping frames as fast as the socket takes them and never reads,
/// until the server drops the connection; returns how many were written.
fn ping_flood(mut stream: TcpStream) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let batch = ping_batch();
        let mut sent = 0;
        while stream.write_all(&batch).is_ok() {
            sent += 64;
        }
        sent
    })
}

/// Floods a raw connection with pings; returns how long until the server
/// stopped listing it, the largest RSS growth seen meanwhile (KiB), and
/// the connection to read its end from.
fn flood_until_closed(server: &TestServer, user: &str) -> (Duration, u64, RawWs) {
    let raw = RawWs::connect(server.addr(), &server.token(user));
    let id = raw.connection_id();
    let baseline = server.rss_kib();
    let mut grown = 0;
    let started = Instant::now();
    let flooder = ping_flood(raw.stream.try_clone().expect("clone the socket"));
    let gone = crate::support::wait_until(Duration::from_secs(5), || {
        grown = grown.max(server.rss_kib().saturating_sub(baseline));
        !server.connection_ids().contains(&id)
    });
    let elapsed = started.elapsed();
    assert!(gone, "a ping flood was still connected after 5 s");
    // A few more samples while the closing connection is still being read.
    for _ in 0..10 {
        grown = grown.max(server.rss_kib().saturating_sub(baseline));
        if flooder.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(flooder);
    (elapsed, grown, raw)
}

#[test]
fn ping_flood_past_the_control_frame_cap_is_closed_1008() {
    // Heartbeat and queue budget at their defaults: only the cap can act.
    let server = TestServer::start(&[]);
    let mut good = Bystander::start(&server, "good-user");
    let (elapsed, grown, mut raw) = flood_until_closed(&server, "pinger");
    assert!(
        elapsed < Duration::from_secs(3),
        "closed {elapsed:?} after the flood began (heartbeat 30 s)"
    );
    assert_eq!(raw.wait_end(Duration::from_secs(5)), End::Close(1008));
    assert!(grown < 16 * 1024, "server RSS grew by {grown} KiB");
    others_unaffected(&server, &mut good);
}

#[test]
fn ping_flood_from_a_client_that_never_reads_is_closed_4008_at_once() {
    // No control frame cap: the pongs alone must hit the queue budget.
    let server = TestServer::start(&[
        "--max-control-frames-per-second",
        "0",
        "--max-queued-bytes",
        "65536",
    ]);
    let mut good = Bystander::start(&server, "good-user");
    let (elapsed, grown, mut raw) = flood_until_closed(&server, "pinger");
    assert!(
        elapsed < Duration::from_secs(3),
        "closed {elapsed:?} after the flood began (heartbeat 30 s)"
    );
    // Reading now lets the close frame out behind the queued pongs.
    assert_eq!(raw.wait_end(Duration::from_secs(5)), End::Close(4008));
    assert!(grown < 16 * 1024, "server RSS grew by {grown} KiB");
    others_unaffected(&server, &mut good);
}

#[test]
fn dribbling_an_unfinished_frame_is_not_activity_and_ends_in_4000() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    // The bystander answers the 500 ms pings; the dribbler sends a byte
    // every 500 ms, each well within the timeout, but never a whole frame.
    let server = TestServer::start(&[
        "--connection-timeout",
        "2s",
        "--heartbeat-interval",
        "500ms",
    ]);
    let mut good = Bystander::start(&server, "good-user");
    let mut bad = RawWs::connect(server.addr(), &server.token("dribbler"));
    let started = Instant::now();
    assert!(bad.send(&header(first_byte(true, OP_TEXT), Some(MASK), 1000)));
    let end = loop {
        assert!(
            started.elapsed() < TIMEOUT * 5,
            "a client dribbling one byte every 500 ms was still open after {:?}",
            started.elapsed()
        );
        if !bad.send(b"x") {
            break End::Dropped;
        }
        if let Some(code) = bad
            .read_frame(Duration::from_millis(500))
            .and_then(|f| f.close_code())
        {
            break End::Close(code);
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(end, End::Close(4000), "after {elapsed:?}");
    assert!(
        elapsed >= TIMEOUT,
        "closed after {elapsed:?}, before the timeout"
    );
    others_unaffected(&server, &mut good);
}
