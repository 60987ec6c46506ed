//! A connection on its own, without a shard: a real loopback socket on one
//! side, a tungstenite client on the other, and the values it hands back.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use super::input::Decoded;
use super::message::Handled;
use super::*;
use crate::limits::{Admission, RateLimiter};
use crate::protocol::{Event, MessageIds};
use crate::ws::io::BufferedIo;
use crate::ws::CloseReason;

/// Guards the per-connection footprint behind the "2 KiB per idle
/// connection" target: the slab entry must stay small.
#[test]
fn connection_state_stays_small() {
    let size = std::mem::size_of::<Connection>();
    eprintln!("size_of::<Connection>() = {size}");
    assert!(size <= 768, "Connection grew to {size} bytes");
}

struct Harness {
    conn: Connection,
    /// The client's end of the socket.
    client: TcpStream,
    client_ws: WebSocketContext,
    /// Bytes read from `client` not yet decoded.
    unread: Vec<u8>,
    ids: MessageIds,
    limiter: RateLimiter,
    metrics: Metrics,
    limits: Limits,
    verifier: crate::auth::TokenVerifier,
    admission: Arc<Admission>,
    dirty: Vec<usize>,
}

impl Harness {
    fn new(limits: Limits, rate_limit: u32) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        let admission = Admission::new(10, 10);
        let permit = admission.try_admit("7").expect("admitted");
        let conn = Connection::new(
            ConnId::new(1, 0, 1, 3),
            mio::net::TcpStream::from_std(server),
            None,
            WebSocketConfig::default().read_buffer_size(0),
            permit,
            TokenTimer::new(u64::MAX, false),
            false,
        );
        Harness {
            conn,
            client,
            client_ws: WebSocketContext::new(Role::Client, None),
            unread: Vec::new(),
            ids: MessageIds::new(),
            limiter: RateLimiter::new(rate_limit, Duration::from_secs(60)),
            metrics: Metrics::default(),
            limits,
            verifier: verifier(),
            admission,
            dirty: Vec::new(),
        }
    }

    /// Masked client frames, as the socket would deliver them.
    fn client_bytes(&mut self, messages: Vec<Message>) -> Vec<u8> {
        let mut io = BufferedIo::new(&[]);
        for message in messages {
            self.client_ws.write(&mut io, message).expect("encode");
        }
        self.client_ws.flush(&mut io).expect("encode");
        io.output
    }

    /// Feeds client frames to the connection and handles the messages as
    /// the shard does, collecting what it is handed back.
    fn feed(&mut self, messages: Vec<Message>) -> (Decoded, Vec<Handled>) {
        let bytes = self.client_bytes(messages);
        let mut inbox = Vec::new();
        let now = Instant::now();
        let read_at_ms = crate::protocol::clock::unix_millis();
        let decoded = self
            .conn
            .decode(&bytes, now, &self.limits, &mut inbox, &mut self.dirty);
        let handled = inbox
            .into_iter()
            .map(|message| {
                let (conn, mut cx) = self.connection_in_context();
                conn.on_message(message, now, read_at_ms, &mut cx)
            })
            .collect();
        (decoded, handled)
    }

    /// The connection and its context as the shard lends them, without history.
    fn connection_in_context(&mut self) -> (&mut Connection, Context<'_>) {
        let cx = Context {
            ids: &self.ids,
            limiter: &mut self.limiter,
            metrics: &self.metrics,
            limits: &self.limits,
            verifier: &self.verifier,
            dirty: &mut self.dirty,
            history: &crate::history::History::Disabled,
        };
        (&mut self.conn, cx)
    }

    /// Flushes the connection and reads `count` messages at the client.
    fn receive(&mut self, count: usize) -> Vec<Message> {
        assert_eq!(self.conn.flush(), None);
        let mut messages = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut io = BufferedIo::new(&self.unread);
            loop {
                match self.client_ws.read(&mut io) {
                    Ok(message) => messages.push(message),
                    Err(tungstenite::Error::Io(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock =>
                    {
                        break
                    }
                    Err(error) => panic!("client cannot decode: {error}"),
                }
            }
            self.unread.clear();
            if messages.len() >= count {
                return messages;
            }
            let n = self.client.read(&mut buf).expect("read");
            assert!(n > 0, "connection closed with {messages:?}");
            self.unread.extend_from_slice(&buf[..n]);
        }
    }
}

fn limits() -> Limits {
    Limits {
        max_queued_bytes: 1 << 20,
        max_control_frames_per_second: 3,
        heartbeat_interval: Duration::from_secs(30),
        connection_timeout: Duration::from_secs(60),
        token_expiring_notice: Duration::from_secs(60),
        token_grace: Duration::ZERO,
        resume_timeout: Duration::from_secs(5),
    }
}

const SECRET: &str = "unit-secret";

fn verifier() -> crate::auth::TokenVerifier {
    crate::auth::TokenVerifier::new(&crate::config::AuthConfig {
        secret: Some(SECRET.into()),
        public_key_path: None,
        issuer: None,
        audience: None,
        leeway: Duration::ZERO,
    })
    .expect("verifier")
}

fn json(message: &Message) -> Value {
    match message {
        Message::Text(text) => serde_json::from_str(text.as_str()).expect("json"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[test]
fn greets_then_replies_and_hands_back_subscriptions() {
    let mut h = Harness::new(limits(), 100);
    let (conn, mut cx) = h.connection_in_context();
    assert!(!conn.greet(&mut cx).overflowed);
    assert_eq!(h.dirty, vec![3], "marked dirty once, under its slab key");
    let (decoded, handled) = h.feed(vec![Message::text(
        r#"{"type":"subscribe","data":{"events":["file.ready"]},"id":"s1"}"#,
    )]);
    assert!(decoded.failure.is_none() && !decoded.peer_closed && !decoded.overflowed);
    let [Handled {
        overflowed: false,
        then: Some(Then::Subscriptions(next)),
    }] = handled.as_slice()
    else {
        panic!("expected a subscription change, got {handled:?}");
    };
    assert_eq!(next.names(), vec![Event::FileReady.as_str()]);
    // The connection does not index itself: the shard's index sets it.
    assert!(h.conn.subscriptions.is_empty());
    let received = h.receive(2);
    assert_eq!(json(&received[0])["type"], "connection.established");
    assert_eq!(json(&received[1])["type"], "subscription.confirmed");
    assert_eq!(json(&received[1])["reply_to"], "s1");
}

#[test]
fn answers_pings_itself_and_caps_control_frames() {
    let mut h = Harness::new(limits(), 100);
    let (decoded, handled) = h.feed(vec![Message::Ping(b"a".to_vec().into())]);
    assert!(decoded.failure.is_none() && handled.is_empty());
    assert_eq!(h.receive(1), vec![Message::Pong(b"a".to_vec().into())]);
    let pings = (0..3).map(|_| Message::Ping(Vec::new().into())).collect();
    let (decoded, _) = h.feed(pings);
    assert_eq!(
        decoded.failure,
        Some(CloseReason::RateLimitAbuse {
            retry_after_secs: 1
        })
    );
}

#[test]
fn rate_limited_messages_get_an_error_and_abuse_asks_for_a_close() {
    let mut h = Harness::new(limits(), 1);
    let ping = || Message::text(r#"{"type":"ping"}"#);
    let (_, handled) = h.feed(vec![ping(), ping()]);
    assert!(handled[0].then.is_none());
    let received = h.receive(2);
    assert_eq!(json(&received[1])["type"], "error");
    assert_eq!(json(&received[1])["data"]["code"], "RATE_LIMIT_EXCEEDED");
    let closes = (0..20)
        .flat_map(|_| h.feed(vec![ping()]).1)
        .filter(|handled| {
            matches!(
                handled.then,
                Some(Then::Close(CloseReason::RateLimitAbuse { .. }))
            )
        })
        .count();
    assert!(closes > 0, "a client that keeps flooding is closed");
}

#[test]
fn a_slow_consumer_close_replaces_what_is_queued() {
    let mut h = Harness::new(limits(), 100);
    let frame: Arc<[u8]> = Arc::from(crate::ws::frame::text_frame(|b| b.extend_from_slice(b"{}")));
    for _ in 0..3 {
        h.conn
            .queue(Chunk::Shared(frame.clone()), 1 << 20, &mut h.dirty)
            .expect("fits");
    }
    h.conn.phase = Phase::closing(fails_connection(CloseReason::SlowConsumer { dropped: 0 }));
    h.conn.send_close(
        CloseReason::SlowConsumer { dropped: 0 },
        &h.metrics,
        &mut h.dirty,
    );
    assert!(h
        .metrics
        .render()
        .contains(r#"wsgate_messages_dropped_total{reason="slow_consumer"} 3"#));
    let received = h.receive(1);
    let Message::Close(Some(close)) = &received[0] else {
        panic!("expected a close frame, got {received:?}");
    };
    assert_eq!(close.code, CloseCode::from(4008));
    assert_eq!(
        close.reason.as_str(),
        r#"{"code":"SLOW_CONSUMER","retry":"backoff","dropped":3}"#
    );
}

#[test]
fn a_failed_connection_is_dropped_once_its_close_frame_is_out() {
    let mut h = Harness::new(limits(), 100);
    let mut bad = h.client_bytes(vec![Message::text("x")]);
    bad[0] |= 0x40; // RSV1 without an extension: a protocol violation.
    let decoded = h.conn.decode(
        &bad,
        Instant::now(),
        &h.limits,
        &mut Vec::new(),
        &mut h.dirty,
    );
    let reason = decoded.failure.expect("a failure");
    assert_eq!(reason, CloseReason::ProtocolViolation);
    h.conn.phase = Phase::closing(fails_connection(reason));
    h.conn.send_close(reason, &h.metrics, &mut h.dirty);
    assert_eq!(h.conn.flush(), Some(DropReason::ConnectionClosing));
    let mut rest = Vec::new();
    h.client.read_to_end(&mut rest).expect("read to FIN");
    let mut io = BufferedIo::new(&rest);
    let Ok(Message::Close(Some(close))) = h.client_ws.read(&mut io) else {
        panic!("expected a close frame in {rest:?}");
    };
    assert_eq!(close.code, CloseCode::Protocol);
}

#[test]
fn a_refresh_renews_the_token_unless_the_user_was_deactivated_meanwhile() {
    let mut h = Harness::new(limits(), 100);
    let exp = crate::protocol::clock::unix_seconds() + 600;
    let token = crate::auth::mint::sign_claims(
        SECRET,
        serde_json::json!({"sub": "7", "exp": exp})
            .as_object()
            .expect("object"),
    )
    .expect("sign");
    let refresh = || {
        Message::text(
            serde_json::json!({"type": "auth.refresh", "data": {"token": token}}).to_string(),
        )
    };
    let (_, handled) = h.feed(vec![refresh()]);
    assert!(handled[0].then.is_none() && !handled[0].overflowed);
    assert_eq!(h.conn.token.exp(), exp, "the new exp is the deadline");
    assert_eq!(json(&h.receive(1)[0])["type"], "auth.refreshed");
    // The deactivation marks the user before its close reaches the shard:
    // a refresh in between closes with 4003 and is not answered.
    h.admission.deactivate("7");
    let (_, handled) = h.feed(vec![refresh()]);
    assert!(
        matches!(
            handled[0].then,
            Some(Then::Close(CloseReason::Disconnected))
        ),
        "{handled:?}"
    );
}

/// The hold keeps deliveries back until it ends; after that, a stream's
/// offsets only go forward (SPEC-v2 §2.2): an event at or below the highest
/// offset sent is skipped, one of a new epoch goes out.
#[test]
fn a_hold_keeps_deliveries_back_and_a_stream_never_goes_back() {
    use crate::history::{Epoch, StreamPosition};
    let mut h = Harness::new(limits(), 100);
    let limit = h.limits.max_queued_bytes;
    let at = |epoch: &str, offset| StreamPosition {
        name: "user:7".into(),
        epoch: Epoch::parse(epoch).expect("epoch"),
        offset,
    };
    let frame = |n: u64| -> Arc<[u8]> {
        Arc::from(crate::ws::frame::text_frame(|b| {
            b.extend_from_slice(format!("{{\"n\":{n}}}").as_bytes())
        }))
    };
    h.conn.hold(Instant::now() + Duration::from_secs(5));
    assert!(h.conn.is_held());
    h.conn
        .offer(&frame(2), Some(&at("AAAAAAAA", 2)), limit, &mut h.dirty)
        .expect("held");
    h.conn
        .offer(&frame(0), None, limit, &mut h.dirty)
        .expect("held");
    assert_eq!(
        h.conn.outbound.queued_bytes(),
        0,
        "nothing goes out while held"
    );
    assert_eq!(h.conn.held_messages(), 2);
    h.conn
        .end_hold(limit, &mut h.dirty, &h.metrics)
        .expect("fits");
    assert!(!h.conn.is_held());
    for (n, position) in [
        (1, Some(at("AAAAAAAA", 1))),
        (2, Some(at("AAAAAAAA", 2))),
        (3, Some(at("AAAAAAAA", 3))),
        (1, Some(at("BBBBBBBB", 1))),
    ] {
        h.conn
            .offer(&frame(n), position.as_ref(), limit, &mut h.dirty)
            .expect("fits");
    }
    let got: Vec<Value> = h.receive(4).iter().map(json).collect();
    assert_eq!(
        got,
        vec![
            serde_json::json!({"n": 2}),
            serde_json::json!({"n": 0}),
            serde_json::json!({"n": 3}),
            serde_json::json!({"n": 1}),
        ]
    );
}
