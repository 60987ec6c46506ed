//! A blocking WebSocket client over `std::net::TcpStream` with tungstenite,
//! where every read has a deadline so no test can hang.

use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocket;
use tungstenite::{Error as WsError, Message};

use super::WAIT;

/// The four ways a client can hand its token to the server (SPEC section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenVia {
    /// `GET /api/v1/ws/{token}`
    Path,
    /// `GET /api/v1/ws?token=T`
    Query,
    /// `Authorization: Bearer T`
    Header,
    /// `Sec-WebSocket-Protocol: wsgate.v1, bearer.T`
    Protocol,
}

pub const ALL_VIAS: [TokenVia; 4] = [
    TokenVia::Path,
    TokenVia::Query,
    TokenVia::Header,
    TokenVia::Protocol,
];

/// One thing read off the socket.
#[derive(Debug)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping,
    Pong,
    /// A close frame: code (1005 when it had none) and reason.
    Close(u16, String),
    /// The transport ended without (further) frames: EOF, reset, error.
    Gone(String),
}

/// How long one blocking read may wait before the deadline is rechecked.
const POLL: Duration = Duration::from_millis(50);

pub struct WsClient {
    pub ws: WebSocket<TcpStream>,
    /// The `connection.established` message read right after the upgrade.
    pub established: Value,
    /// The 101 response (to check `Sec-WebSocket-Protocol`).
    pub response: Response,
}

/// Performs the handshake; the error is tungstenite's (`Error::Http` holds
/// a refusal's response).
pub fn handshake(
    addr: SocketAddr,
    via: TokenVia,
    token: &str,
) -> Result<(WebSocket<TcpStream>, Response), WsError> {
    handshake_with_query(addr, via, token, "")
}

/// [`handshake`] with `query` (`k=v&...`, may be empty) added to the
/// upgrade URL, whichever way the token goes.
pub fn handshake_with_query(
    addr: SocketAddr,
    via: TokenVia,
    token: &str,
    query: &str,
) -> Result<(WebSocket<TcpStream>, Response), WsError> {
    let mut url = match via {
        TokenVia::Path => format!("ws://{addr}/api/v1/ws/{token}"),
        TokenVia::Query => format!("ws://{addr}/api/v1/ws?token={token}"),
        TokenVia::Header | TokenVia::Protocol => format!("ws://{addr}/api/v1/ws"),
    };
    if !query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(query);
    }
    let mut req = url.into_client_request()?;
    match via {
        TokenVia::Header => {
            req.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
            );
        }
        TokenVia::Protocol => {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&format!("wsgate.v1, bearer.{token}")).expect("header value"),
            );
        }
        _ => {}
    }
    handshake_request(addr, req)
}

/// Performs the handshake of a request built by the caller (any URL,
/// query and headers).
pub fn handshake_request(
    addr: SocketAddr,
    req: tungstenite::handshake::client::Request,
) -> Result<(WebSocket<TcpStream>, Response), WsError> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let (ws, resp) = match tungstenite::client::client_with_config(req, stream, None) {
        Ok(ok) => ok,
        Err(HandshakeError::Failure(e)) => return Err(e),
        Err(HandshakeError::Interrupted(_)) => {
            return Err(WsError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "handshake timed out",
            )))
        }
    };
    ws.get_ref().set_read_timeout(Some(POLL))?;
    Ok((ws, resp))
}

impl WsClient {
    /// Connects and reads `connection.established`; panics on any failure.
    pub fn connect(addr: SocketAddr, via: TokenVia, token: &str) -> WsClient {
        match Self::try_connect(addr, via, token) {
            Ok(c) => c,
            Err(e) => panic!("WebSocket handshake via {via:?} failed: {}", describe(&e)),
        }
    }

    /// Connects and reads `connection.established`; a refused handshake is
    /// returned as the error.
    pub fn try_connect(addr: SocketAddr, via: TokenVia, token: &str) -> Result<WsClient, WsError> {
        Self::try_connect_with_query(addr, via, token, "")
    }

    /// Connects with `query` added to the upgrade URL (e.g. `refresh=1`)
    /// and reads `connection.established`; panics on any failure.
    pub fn connect_with_query(
        addr: SocketAddr,
        via: TokenVia,
        token: &str,
        query: &str,
    ) -> WsClient {
        match Self::try_connect_with_query(addr, via, token, query) {
            Ok(c) => c,
            Err(e) => panic!("WebSocket handshake via {via:?} failed: {}", describe(&e)),
        }
    }

    pub fn try_connect_with_query(
        addr: SocketAddr,
        via: TokenVia,
        token: &str,
        query: &str,
    ) -> Result<WsClient, WsError> {
        let (ws, response) = handshake_with_query(addr, via, token, query)?;
        let mut c = WsClient {
            ws,
            established: Value::Null,
            response,
        };
        let first = c.recv_json();
        assert_eq!(
            first["type"], "connection.established",
            "first message after the upgrade must be connection.established: {first}"
        );
        c.established = first;
        Ok(c)
    }

    pub fn connection_id(&self) -> String {
        self.established["data"]["connection_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no data.connection_id in {}", self.established))
            .to_string()
    }

    pub fn user_id(&self) -> String {
        self.established["data"]["user_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no string data.user_id in {}", self.established))
            .to_string()
    }

    /// Sends a frame; errors are returned (the server may have closed).
    pub fn try_send(&mut self, msg: Message) -> Result<(), WsError> {
        self.ws.send(msg)
    }

    pub fn send_raw(&mut self, msg: Message) {
        self.try_send(msg).expect("send a WebSocket frame");
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_raw(Message::text(text.to_string()));
    }

    pub fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    /// The next frame or transport event, or `None` if nothing came within
    /// `timeout`. Pings are answered by tungstenite on the next read.
    pub fn next_within(&mut self, timeout: Duration) -> Option<Incoming> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(Incoming::Text(t.as_str().to_string())),
                Ok(Message::Binary(b)) => return Some(Incoming::Binary(b.to_vec())),
                Ok(Message::Ping(_)) => return Some(Incoming::Ping),
                Ok(Message::Pong(_)) => return Some(Incoming::Pong),
                Ok(Message::Close(f)) => {
                    return Some(match f {
                        Some(f) => {
                            Incoming::Close(u16::from(f.code), f.reason.as_str().to_string())
                        }
                        None => Incoming::Close(1005, String::new()),
                    })
                }
                Ok(Message::Frame(_)) => {}
                Err(WsError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(e) => return Some(Incoming::Gone(e.to_string())),
            }
        }
    }

    /// The next JSON text message within [`WAIT`], skipping ping/pong frames.
    pub fn recv_json(&mut self) -> Value {
        self.recv_json_within(WAIT)
    }

    pub fn recv_json_within(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left) {
                Some(Incoming::Text(t)) => {
                    return serde_json::from_str(&t).unwrap_or_else(|e| {
                        panic!("server sent a text frame that is not JSON ({e}): {t:?}")
                    })
                }
                Some(Incoming::Ping | Incoming::Pong) => {}
                Some(Incoming::Binary(b)) => {
                    panic!(
                        "expected a JSON text message, got a binary frame of {} bytes",
                        b.len()
                    )
                }
                Some(Incoming::Close(code, reason)) => {
                    panic!("expected a JSON message, got close {code} {reason:?}")
                }
                Some(Incoming::Gone(e)) => {
                    panic!("expected a JSON message, the connection ended: {e}")
                }
                None => panic!("no JSON message within {timeout:?}"),
            }
        }
    }

    /// The first JSON message satisfying `pred` within [`WAIT`]; others are
    /// skipped.
    pub fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("no matching message within {WAIT:?}; skipped {skipped:?}");
            }
            let m = self.recv_json_within(left);
            if pred(&m) {
                return m;
            }
            skipped.push(m);
        }
    }

    /// The first message of type `ty` within [`WAIT`].
    pub fn recv_type(&mut self, ty: &str) -> Value {
        self.recv_until(|m| m["type"] == ty)
    }

    /// Waits for a close frame within [`WAIT`], skipping data messages.
    pub fn expect_close(&mut self) -> (u16, String) {
        self.expect_close_within(WAIT)
    }

    pub fn expect_close_within(&mut self, timeout: Duration) -> (u16, String) {
        match self.wait_end(timeout) {
            Some(c) => c,
            None => panic!("the connection ended without a close frame"),
        }
    }

    /// Waits for the connection to end: `Some((code, reason))` for a close
    /// frame, `None` if the transport ended without one. Panics on timeout.
    pub fn wait_end(&mut self, timeout: Duration) -> Option<(u16, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left) {
                Some(Incoming::Close(code, reason)) => return Some((code, reason)),
                Some(Incoming::Gone(_)) => return None,
                Some(_) => {}
                None => panic!("the connection was not closed within {timeout:?}"),
            }
        }
    }

    /// Reads for `dur` and panics on any data message or close.
    pub fn expect_silence(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.next_within(left) {
                None | Some(Incoming::Ping | Incoming::Pong) => {}
                Some(other) => panic!("expected silence for {dur:?}, got {other:?}"),
            }
        }
    }

    /// Sends a `ping` with a fresh `pingId` and waits for its `pong`:
    /// proof the connection is alive and served.
    pub fn assert_alive(&mut self) {
        let ping_id = format!("alive-{}", super::random_string(8));
        self.send_json(&json!({"type": "ping", "data": {"pingId": ping_id}}));
        let pong = self.recv_until(|m| m["type"] == "pong" || m["type"] == "error");
        assert_eq!(pong["type"], "pong", "ping not answered with pong: {pong}");
        assert_eq!(pong["data"]["pingId"], ping_id.as_str());
    }

    /// Subscribes and returns the confirmation.
    pub fn subscribe(&mut self, events: &[&str]) -> Value {
        self.send_json(&json!({"type": "subscribe", "data": {"events": events}}));
        let reply =
            self.recv_until(|m| m["type"] == "subscription.confirmed" || m["type"] == "error");
        assert_eq!(
            reply["type"], "subscription.confirmed",
            "subscribe {events:?} refused: {reply}"
        );
        reply
    }
}

/// A readable description of a handshake error (status and body of a
/// refusal).
pub fn describe(e: &WsError) -> String {
    match e {
        WsError::Http(resp) => format!(
            "HTTP {} {:?}",
            resp.status(),
            resp.body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
        ),
        other => other.to_string(),
    }
}

/// The HTTP status of a refused handshake, or panics.
pub fn refusal_status(r: Result<WsClient, WsError>) -> u16 {
    match r {
        Ok(c) => panic!("handshake unexpectedly accepted: {}", c.established),
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("handshake failed without an HTTP refusal: {e}"),
    }
}
