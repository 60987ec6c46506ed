//! Connections before the WebSocket upgrade: the `--max-pending-connections`
//! cap, the idle limit of keep-alive connections, `Connection: close` on
//! every refusal, and `--connection-rate-limit` under a flood of bad tokens.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::metrics::metric_sum;
use crate::support::raw::{read_response, Upgrade};
use crate::support::ws::{describe, TokenVia};
use crate::support::{wait_until, TestServer, WsClient, WAIT};

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    stream
}

/// True when the server ends the connection (EOF or reset) within
/// `timeout` without sending anything more.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => panic!(
                "expected the connection to end, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    return false;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// A fresh connection answers `GET /health` with 200; false if it was
/// closed (or reset) instead.
fn health_answers(addr: SocketAddr) -> bool {
    let mut stream = connect(addr);
    if stream.write_all(HEALTH).is_err() {
        return false;
    }
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while Instant::now() < deadline && !buf.ends_with(b"}") {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    buf.starts_with(b"HTTP/1.1 200")
}

#[test]
fn connections_past_the_pending_cap_are_closed_at_accept() {
    // A long header timeout: nothing below is closed by it.
    let server = TestServer::start(&[
        "--max-pending-connections",
        "3",
        "--header-read-timeout",
        "60s",
    ]);
    let addr = server.addr();
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    let mut extra = connect(addr);
    assert!(
        closed_within(&mut extra, Duration::from_secs(3)),
        "a 4th pending connection must be closed at once"
    );
    // The three under the cap are open and served.
    held[0]
        .write_all(HEALTH)
        .expect("write on a held connection");
    let answer = read_response(&mut held[0], WAIT);
    assert_eq!(answer.status, 200);
    assert!(!closed_within(&mut held[1], Duration::from_millis(300)));

    drop(held);
    assert!(
        wait_until(Duration::from_secs(10), || health_answers(addr)),
        "a new connection must be served once the pending ones are gone"
    );
    let refused = metric_sum(
        &server.metrics(),
        "wsgate_upgrades_refused_total",
        &[("reason", "too_many_pending")],
    );
    assert!(
        refused.is_some_and(|n| n >= 1.0),
        "closing at accept is counted: {refused:?}"
    );
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let server = TestServer::start(&["--header-read-timeout", "1s"]);
    let mut stream = connect(server.addr());
    stream.write_all(HEALTH).expect("write");
    assert_eq!(read_response(&mut stream, WAIT).status, 200);
    let answered = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)),
        "an idle keep-alive connection must be closed by the server"
    );
    assert!(
        answered.elapsed() >= Duration::from_millis(800),
        "closed by the idle timeout, not at once: {:?}",
        answered.elapsed()
    );
}

/// Sends `request` on a fresh connection, expects `status` with
/// `Connection: close`, then the server closing the socket.
fn assert_refused_and_closed(addr: SocketAddr, request: &Upgrade, status: u16, code: &str) {
    let mut stream = connect(addr);
    stream.write_all(&request.to_bytes()).expect("write");
    let response = read_response(&mut stream, WAIT);
    response.assert_error(status, code);
    assert_eq!(
        response.header("connection").map(str::to_ascii_lowercase),
        Some("close".to_owned()),
        "a {status} refusal must say Connection: close: {:?}",
        response.headers
    );
    assert!(
        closed_within(&mut stream, Duration::from_secs(3)),
        "the server must close the connection after a {status} refusal"
    );
}

#[test]
fn every_refusal_before_the_upgrade_closes_the_connection() {
    let server = TestServer::start(&[
        "--max-connections",
        "2",
        "--max-connections-per-user",
        "1",
        "--header-read-timeout",
        "60s",
    ]);
    let addr = server.addr();
    let token = |sub: &str| format!("/api/v1/ws/{}", server.token(sub));
    assert_refused_and_closed(
        addr,
        &Upgrade::get(&token("a")).without("Sec-WebSocket-Key"),
        400,
        "BAD_REQUEST",
    );
    assert_refused_and_closed(addr, &Upgrade::get("/api/v1/ws/%zz"), 400, "BAD_REQUEST");
    assert_refused_and_closed(
        addr,
        &Upgrade::get("/api/v1/ws/not-a-token"),
        401,
        "UNAUTHORIZED",
    );
    let _first = server.ws("a");
    assert_refused_and_closed(
        addr,
        &Upgrade::get(&token("a")),
        429,
        "TOO_MANY_CONNECTIONS",
    );
    let _second = server.ws("b");
    assert_refused_and_closed(addr, &Upgrade::get(&token("c")), 503, "SERVER_AT_CAPACITY");
}

/// One upgrade with a bad token from `source`; the refusal's status.
fn bad_token_upgrade(addr: SocketAddr, source: SocketAddr) -> Option<u16> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.bind(&source.into()).ok()?;
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .ok()?;
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .ok()?;
    stream
        .write_all(&Upgrade::get("/api/v1/ws/forged.bad.token").to_bytes())
        .ok()?;
    Some(read_response(&mut stream, WAIT).status)
}

#[test]
fn a_flood_of_bad_tokens_does_not_lock_valid_users_out() {
    let server = TestServer::start(&[
        "--connection-rate-limit",
        "5",
        "--max-connections-per-user",
        "100",
    ]);
    let addr = server.addr();
    // The flood comes from another loopback address than the valid users.
    let flood_source: SocketAddr = "127.0.0.2:0".parse().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let flood = {
        let (stop, attempts, statuses) = (stop.clone(), attempts.clone(), statuses.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed)
                && attempts.load(Ordering::Relaxed) < 3000
                && started.elapsed() < Duration::from_secs(30)
            {
                let status = bad_token_upgrade(addr, flood_source);
                statuses.lock().expect("lock").push(status);
                attempts.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || attempts.load(Ordering::Relaxed)
            >= 30),
        "the flood did not get going"
    );
    let mut valid = Vec::new();
    for i in 0..3 {
        let token = server.token(&format!("valid-{i}"));
        match WsClient::try_connect(addr, TokenVia::Path, &token) {
            Ok(client) => valid.push(client),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "valid user {i} refused during a bad-token flood (after {} flood attempts): {}",
                    attempts.load(Ordering::Relaxed),
                    describe(&e)
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    for client in valid.iter_mut() {
        client.assert_alive();
    }
    let statuses = statuses.lock().expect("lock");
    let count = |s: u16| statuses.iter().filter(|x| **x == Some(s)).count();
    assert!(
        statuses.iter().all(|s| matches!(s, Some(401) | Some(503))),
        "the flood only ever sees 401 or 503: {:?}",
        statuses
            .iter()
            .filter(|s| !matches!(s, Some(401) | Some(503)))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(count(401) >= 1, "the first bad tokens are checked");
    assert!(
        count(503) >= 1,
        "past its budget of failures the flooding address is refused before the signature check"
    );
}
