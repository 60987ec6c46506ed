//! One WebSocket connection's state as its shard holds it, what a client
//! message does to it (`dispatch`), and its bounded outbound queue.
//!
//! A `Connection` is owned by exactly one shard thread and never shared, so
//! nothing in it is locked. It does not know about other connections.

pub mod dispatch;
pub mod outbound;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tungstenite::protocol::WebSocketContext;

use crate::address::ConnId;
use crate::limits::ConnectionPermit;
use crate::protocol::EventSet;
pub use outbound::{Chunk, Outbound};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Open,
    /// We sent (or answered) a close frame. The connection is dropped at
    /// `deadline` at the latest, or as soon as the queue is flushed when
    /// `drop_when_flushed` (the peer already closed, or the connection is
    /// being failed for a protocol error and must not be read any more).
    Closing {
        deadline: Instant,
        drop_when_flushed: bool,
    },
}

pub struct Connection {
    pub socket: mio::net::TcpStream,
    pub ws: WebSocketContext,
    pub id: ConnId,
    /// The user's slot; also holds the user id shared with the shard's maps.
    pub permit: ConnectionPermit,
    pub subscriptions: EventSet,
    pub outbound: Outbound,
    pub phase: Phase,
    /// Queued for a flush at the end of this reactor turn.
    pub dirty: bool,
    pub connected_at_ms: u64,
    /// Last client message (wall clock), for the server API.
    pub last_activity_ms: u64,
    /// Last complete frame of any kind from the client (for the 4000
    /// timeout); bytes of an unfinished frame do not count.
    pub last_seen: Instant,
    pub last_ping: Instant,
    /// Token `exp` in seconds since the epoch (for 4001).
    pub token_expires_at: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Ping and pong frames from the client in the current one-second
    /// window (`--max-control-frames-per-second`).
    pub control_frames: u32,
    /// Echo mode (`--conformance-echo`): data frames are sent back as is.
    pub echo: bool,
    /// The TLS session over `socket`, if any (boxed: it is large and most
    /// deployments terminate TLS in front of the gateway).
    pub tls: Option<Box<rustls::ServerConnection>>,
}

impl Connection {
    pub fn user(&self) -> &Arc<str> {
        self.permit.user()
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }
}

/// A connection as the server API lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectionInfo {
    pub connection_id: String,
    pub user_id: String,
    pub connected_at: String,
    pub last_activity: String,
    pub subscriptions: Vec<&'static str>,
    pub messages_in: u64,
    pub messages_out: u64,
}

impl ConnectionInfo {
    pub fn of(conn: &Connection) -> Self {
        use crate::protocol::clock::format_rfc3339_millis;
        ConnectionInfo {
            connection_id: conn.id.to_string(),
            user_id: conn.user().to_string(),
            connected_at: format_rfc3339_millis(conn.connected_at_ms),
            last_activity: format_rfc3339_millis(conn.last_activity_ms),
            subscriptions: conn.subscriptions.names(),
            messages_in: conn.messages_in,
            messages_out: conn.messages_out,
        }
    }
}
