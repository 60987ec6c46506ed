//! SPEC section 1: `--conformance-echo` adds an unauthenticated echo
//! endpoint (for Autobahn); it is off by default.

use crate::support::raw::Upgrade;
use crate::support::TestServer;
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::Message;

#[test]
fn conformance_echo_echoes_text_and_binary() {
    let server = TestServer::start(&["--conformance-echo"]);
    let stream = TcpStream::connect(server.addr()).expect("connect");
    let url = format!("ws://{}/conformance/echo", server.addr());
    let (mut ws, _) = tungstenite::client::client(url, stream)
        .unwrap_or_else(|e| panic!("echo handshake failed: {e}"));
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    ws.send(Message::text("hello, echo")).expect("send text");
    assert_eq!(ws.read().expect("read echo"), Message::text("hello, echo"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .expect("send binary");
    assert_eq!(
        ws.read().expect("read echo"),
        Message::binary(vec![0u8, 1, 2, 255])
    );
}

#[test]
fn conformance_echo_is_off_by_default() {
    let server = TestServer::start(&[]);
    let resp = Upgrade::get("/conformance/echo").send(server.addr());
    assert_ne!(
        resp.status, 101,
        "echo endpoint must not exist without the flag"
    );
}
