//! WebSocket client connections: bind a loopback source address, connect,
//! upgrade, wait for `connection.established`, subscribe.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::proto::{self, Kind};

pub type Ws = WebSocketStream<TcpStream>;

fn config() -> WebSocketConfig {
    // Small buffers: tens of thousands of sockets per process.
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(32 << 20))
}

/// Short description of a connect/handshake error, for error tallies.
pub fn describe(e: &anyhow::Error) -> String {
    if let Some(ws) = e.downcast_ref::<WsError>() {
        return match ws {
            WsError::Http(resp) => format!("HTTP {}", resp.status().as_u16()),
            other => format!("ws: {other}"),
        };
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return format!("io: {}", io.kind());
    }
    let s = format!("{e}");
    s.chars().take(80).collect()
}

/// Connects from `src` and completes the upgrade and the `connection.established`
/// message. Returns the socket and the time from TCP connect start to that message.
pub async fn open(
    server: SocketAddr,
    host: &str,
    src: Ipv4Addr,
    token: &str,
    timeout: Duration,
) -> Result<(Ws, Duration)> {
    open_query(server, host, src, token, "", timeout).await
}

/// [`open`] with a query string (`?resume=1`) after the token path.
pub async fn open_query(
    server: SocketAddr,
    host: &str,
    src: Ipv4Addr,
    token: &str,
    query: &str,
    timeout: Duration,
) -> Result<(Ws, Duration)> {
    let t0 = Instant::now();
    let fut = async {
        let sock = TcpSocket::new_v4()?;
        sock.set_reuseaddr(true)?;
        sock.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))
            .with_context(|| format!("bind {src}"))?;
        let stream = sock.connect(server).await?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{host}/api/v1/ws/{token}{query}");
        let (mut ws, _resp) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config())).await?;
        // The first frames until connection.established (bounded).
        for _ in 0..16 {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match proto::parse(t.as_str()) {
                    Some(m) if proto::kind(&m.ty) == Kind::Established => return Ok(ws),
                    Some(m) if proto::kind(&m.ty) == Kind::Error => {
                        bail!("error frame before connection.established")
                    }
                    _ => continue,
                },
                Some(Ok(Message::Close(c))) => {
                    bail!(
                        "closed before established: {:?}",
                        c.map(|c| u16::from(c.code))
                    )
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("EOF before connection.established"),
            }
        }
        bail!("no connection.established in the first 16 frames")
    };
    let ws = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("handshake timeout"))??;
    Ok((ws, t0.elapsed()))
}

/// Sends `subscribe` for the bench event and waits for `subscription.confirmed`.
pub async fn subscribe(ws: &mut Ws, id: &str, timeout: Duration) -> Result<()> {
    ws.send(Message::text(proto::subscribe_msg(id))).await?;
    let fut = async {
        for _ in 0..64 {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    match proto::parse(t.as_str()).map(|m| proto::kind(&m.ty)) {
                        Some(Kind::SubscriptionConfirmed) => return Ok(()),
                        Some(Kind::Error) => bail!("error frame in reply to subscribe"),
                        _ => continue,
                    }
                }
                Some(Ok(Message::Close(_))) | None => bail!("closed while subscribing"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            }
        }
        bail!("no subscription.confirmed in 64 frames")
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("subscribe timeout"))?
}

/// Best-effort close: sends a Close frame and waits briefly for the server's.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
