//! The library API, embedded: a `Server` bound in-process, driven through
//! its `Gateway` handle, observed by a real WebSocket client over TCP.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};
use wsgate::mint_token;
use wsgate::{Config, Event, Server};

fn connect(addr: std::net::SocketAddr, user: &str) -> WebSocket<TcpStream> {
    let token = mint_token("secret", user, Duration::from_secs(600), &[]).expect("token");
    let stream = TcpStream::connect(addr).expect("tcp connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (mut ws, _) =
        tungstenite::client(format!("ws://{addr}/api/v1/ws/{token}"), stream).expect("handshake");
    let hello = next_json(&mut ws);
    assert_eq!(hello["type"], "connection.established");
    ws
}

fn next_json(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read().expect("a message within 5 s") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("json"),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

fn send(ws: &mut WebSocket<TcpStream>, value: Value) {
    ws.send(Message::text(value.to_string())).expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_handle_reaches_real_clients_and_shuts_down_with_1001() {
    let server = Server::bind(Config::embedded("secret", "key"))
        .await
        .expect("bind");
    let addr = server.local_addr();
    let gateway = server.gateway();
    let shutdown = server.shutdown_token();
    let running = tokio::spawn(server.run());

    let client = tokio::task::spawn_blocking(move || {
        let mut alice = connect(addr, "alice");
        send(
            &mut alice,
            json!({"type": "subscribe", "data": {"events": ["review.updated"]}, "id": "s"}),
        );
        assert_eq!(next_json(&mut alice)["type"], "subscription.confirmed");
        alice
    })
    .await
    .expect("client");

    let published = gateway
        .file_processing_status("alice", "f1", "processing", Some(50.0))
        .await
        .expect("publish");
    assert_eq!(published.delivered, 1);
    let reviewed = gateway
        .review_updated("r9", json!({"status": "approved"}), None)
        .await
        .expect("publish");
    assert_eq!(reviewed.delivered, 1);
    let nobody = gateway
        .send_to_subscribers(Event::UploadProgress, json!({"progress": 1}))
        .await
        .expect("publish");
    assert_eq!(
        nobody.delivered, 0,
        "alice is not subscribed to upload.progress"
    );
    let notice = gateway
        .system_notification("hello", "warning", None, Default::default())
        .await
        .expect("publish");
    assert_eq!(notice.delivered, 1);
    assert_eq!(gateway.stats().connections, 1);

    let mut alice = tokio::task::spawn_blocking(move || {
        let mut alice = client;
        let file = next_json(&mut alice);
        assert_eq!(file["type"], "file.processing");
        assert_eq!(file["data"]["progress"], 50);
        let review = next_json(&mut alice);
        assert_eq!(review["type"], "review.updated");
        assert_eq!(review["data"]["review_id"], "r9");
        let notice = next_json(&mut alice);
        assert_eq!(notice["type"], "system.notification");
        assert_eq!(notice["data"]["level"], "warning");
        alice
    })
    .await
    .expect("client");

    shutdown.cancel();
    let code = tokio::task::spawn_blocking(move || loop {
        match alice.read() {
            Ok(Message::Close(Some(frame))) => return u16::from(frame.code),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    })
    .await
    .expect("close");
    assert_eq!(code, 1001);
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run returns within 10 s")
        .expect("join")
        .expect("clean exit");
}

/// The losing order of a deactivation racing an upgrade, made exact: the
/// upgrade passed its inactive check, the deactivation then ran (and found
/// nothing to close), and only then does the shard register the
/// connection. The shard re-checks the user and closes it with 4003
/// instead of serving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_registered_after_its_user_was_deactivated_is_closed_4003() {
    use std::io::Read;
    use std::sync::Arc;
    use wsgate::auth::Claims;
    use wsgate::cluster::LocalBackplane;
    use wsgate::hub::command::NewConnection;
    use wsgate::hub::shard::ShardSettings;
    use wsgate::hub::Hub;
    use wsgate::limits::Admission;
    use wsgate::ws::CloseReason;

    let settings = ShardSettings {
        max_message_size: 65536,
        max_queued_bytes: 1 << 20,
        heartbeat_interval: Duration::from_secs(30),
        connection_timeout: Duration::from_secs(60),
        cleanup_interval: Duration::from_secs(30),
        rate_limit_messages: 100,
        rate_limit_window: Duration::from_secs(60),
        max_control_frames_per_second: 100,
        max_connection_age: Duration::ZERO,
        shutdown_reconnect_spread: Duration::from_secs(5),
        test_panic_user: None,
    };
    let admission = Admission::new(10, 3);
    let hub = Hub::start(
        1,
        settings,
        Arc::default(),
        None,
        "node".into(),
        Arc::new(LocalBackplane),
        admission.clone(),
    )
    .expect("hub");
    let permit = admission.admit("late").await.expect("admitted");
    admission.deactivate("late");
    let closed = hub
        .disconnect_user("late", CloseReason::Disconnected)
        .await
        .expect("shard running");
    assert_eq!(closed, 0);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (socket, _) = listener.accept().expect("accept");
    socket.set_nonblocking(true).expect("non-blocking");
    hub.register(NewConnection {
        socket,
        already_read: Default::default(),
        claims: Claims {
            user_id: "late".into(),
            expires_at: u64::MAX / 2,
        },
        permit,
        tls: None,
        echo: false,
    })
    .await
    .expect("registered");

    let first = tokio::task::spawn_blocking(move || {
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut head = [0u8; 4];
        client.read_exact(&mut head).expect("a first frame");
        head
    })
    .await
    .expect("reader");
    assert_eq!(
        first[0], 0x88,
        "the first frame must be a close, got {first:?}"
    );
    assert_eq!(u16::from_be_bytes([first[2], first[3]]), 4003);
    assert!(hub
        .connections(Some("late"))
        .await
        .expect("list")
        .is_empty());
    hub.shutdown(Duration::ZERO, Duration::from_millis(100))
        .await;
}
