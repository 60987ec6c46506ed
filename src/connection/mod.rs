//! One WebSocket connection's whole life after the 101: its state, its
//! transport (the socket, rustls, tungstenite over [`crate::ws::io`]), what
//! its frames and messages do to it, its outbound queue and its close.
//!
//! - `input`: socket bytes → (TLS →) tungstenite → data messages, the
//!   control-frame cap, tungstenite's own replies;
//! - `message`: one data message → echo, or rate limit → parse →
//!   [`dispatch`] → reply, plus what only the shard can do ([`Then`]);
//! - `closing`: the close frame, its reason and the `Closing` phase;
//! - `timers`: this connection's deadlines (4000, 4001, 4009, heartbeat) and
//!   its token's (`token.expiring`, SPEC-v2 §3);
//! - `recovery`: the `resume=1` hold, `resume` and positioned `subscribe`
//!   answered from history, and the per-stream skip rule (SPEC-v2 §2);
//! - [`outbound`]: the byte-budgeted queue and its flush (`send`/`sendmsg`).
//!
//! A `Connection` is owned by exactly one shard thread and never shared, so
//! nothing in it is locked. It knows nothing of other connections or of the
//! shard's indexes: whatever touches them (subscriptions, `upload.cancelled`
//! to the user's other connections, a webhook call, leaving `Open`) it
//! hands back to the shard as a value. It must not import `hub`.

mod closing;
pub mod dispatch;
mod input;
mod message;
pub mod outbound;
mod recovery;
mod timers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

// The one import of `ConnId` in this module tree.
use crate::address::ConnId;
use crate::limits::ConnectionPermit;
use crate::metrics::{DropReason, Metrics};
use crate::protocol::EventSet;
pub use closing::{fails_connection, CLOSE_GRACE};
pub use input::Decrypted;
pub use message::{Context, Then};
pub use outbound::{Chunk, Outbound, Overflow, SocketSender};
pub use timers::{draw_age, Due, TokenTimer};

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

/// The per-connection knobs, from the shard's settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Byte budget of the outbound queue; past it, 4008.
    pub max_queued_bytes: usize,
    /// Ping and pong frames a client may send per second; past it, 1008
    /// (0: no cap).
    pub max_control_frames_per_second: u32,
    pub heartbeat_interval: Duration,
    pub connection_timeout: Duration,
    /// `--token-expiring-notice` (zero: never).
    pub token_expiring_notice: Duration,
    /// How long past the token's `exp` the 4001 waits: `--jwt-leeway` plus
    /// `--token-refresh-grace`.
    pub token_grace: Duration,
    /// How long a `resume=1` connection holds deliveries (SPEC-v2 §2.2).
    pub resume_timeout: Duration,
}

pub struct Connection {
    socket: mio::net::TcpStream,
    ws: WebSocketContext,
    /// The TLS session over `socket`, if any (boxed: it is large and most
    /// deployments terminate TLS in front of the gateway).
    tls: Option<Box<rustls::ServerConnection>>,
    /// `id.key()` is this connection's slab key in its shard.
    pub id: ConnId,
    /// The user's slot; also holds the user id shared with the shard's maps.
    pub permit: ConnectionPermit,
    /// Written only by the shard's index, together with the subscriber
    /// index; read here by `dispatch`.
    pub subscriptions: EventSet,
    /// Left `Open` only through the shard's index (see `hub::shard::index`).
    pub phase: Phase,
    outbound: Outbound,
    /// Queued for a flush at the end of this reactor turn.
    dirty: bool,
    connected_at_ms: u64,
    /// Last client message (wall clock), for the server API.
    last_activity_ms: u64,
    /// Last complete frame of any kind from the client (for the 4000
    /// timeout); bytes of an unfinished frame do not count.
    last_seen: Instant,
    last_ping: Instant,
    /// The current token's `exp` and `token.expiring` state (4001).
    token: TokenTimer,
    /// When `--max-connection-age` closes it with 4009 (none: never).
    aged_at: Option<Instant>,
    messages_in: u64,
    messages_out: u64,
    /// Ping and pong frames from the client in the current one-second
    /// window (`--max-control-frames-per-second`).
    control_frames: u32,
    /// Echo mode (`--conformance-echo`): data frames are sent back as is.
    echo: bool,
    /// History state (hold, highest offsets sent); only once asked for.
    recovery: Option<Box<recovery::Recovery>>,
}

impl Connection {
    /// A connection just registered in its shard's poll as `id`.
    pub fn new(
        id: ConnId,
        socket: mio::net::TcpStream,
        tls: Option<Box<rustls::ServerConnection>>,
        ws_config: WebSocketConfig,
        permit: ConnectionPermit,
        token: TokenTimer,
        echo: bool,
    ) -> Connection {
        let now = Instant::now();
        let now_ms = crate::protocol::clock::unix_millis();
        Connection {
            socket,
            ws: WebSocketContext::new(Role::Server, Some(ws_config)),
            tls,
            id,
            permit,
            subscriptions: EventSet::EMPTY,
            phase: Phase::Open,
            outbound: Outbound::default(),
            dirty: false,
            connected_at_ms: now_ms,
            last_activity_ms: now_ms,
            last_seen: now,
            last_ping: now,
            token,
            aged_at: None,
            messages_in: 0,
            messages_out: 0,
            control_frames: 0,
            echo,
            recovery: None,
        }
    }

    pub fn user(&self) -> &Arc<str> {
        self.permit.user()
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Queues a message frame; `dirty` collects the slab keys to flush at
    /// the end of the turn. `Err` when the queue is over its budget: the
    /// frame is not queued, and the connection must be closed with 4008.
    pub fn queue(
        &mut self,
        chunk: Chunk,
        limit: usize,
        dirty: &mut Vec<usize>,
    ) -> Result<(), Overflow> {
        self.outbound.push(chunk, limit)?;
        self.messages_out += 1;
        self.mark_dirty(dirty);
        Ok(())
    }

    /// Asks for a flush at the end of this turn (once per turn).
    pub fn mark_dirty(&mut self, dirty: &mut Vec<usize>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(self.id.key());
        }
    }

    /// Writes what the socket takes. `Some(reason)` when the connection is
    /// done and must be dropped now: the write failed, or a closing
    /// connection that drops when flushed got everything out (its FIN is
    /// sent here, before the fd goes).
    pub fn flush(&mut self) -> Option<DropReason> {
        self.dirty = false;
        let flushed = match self.tls.as_deref_mut() {
            Some(tls) => self
                .outbound
                .flush_tls(tls, &mut SocketSender::new(&self.socket)),
            None => self.outbound.flush(&mut SocketSender::new(&self.socket)),
        };
        match flushed {
            Err(_) => Some(DropReason::WriteFailed),
            Ok(outbound::Flushed::All) => match self.phase {
                Phase::Closing {
                    drop_when_flushed: true,
                    ..
                } => {
                    let _ = self.socket.shutdown(std::net::Shutdown::Write);
                    Some(DropReason::ConnectionClosing)
                }
                _ => None,
            },
            Ok(outbound::Flushed::Partially) => None,
        }
    }

    /// Takes the socket out of the shard's poll and ends the connection;
    /// the messages still queued are counted as dropped for `reason`.
    pub fn release(mut self, registry: &mio::Registry, reason: DropReason, metrics: &Metrics) {
        let _ = registry.deregister(&mut self.socket);
        let undelivered = self.outbound.queued_messages() + self.held_messages();
        if undelivered > 0 {
            metrics.dropped(reason, undelivered as u64);
        }
        metrics.connection_closed();
        tracing::debug!(shard = self.id.shard(), connection = %self.id, "connection removed");
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
    /// The current token's `exp` (SPEC-v2 §3: replaced by `auth.refresh`).
    pub token_expires_at: String,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Bytes waiting in its outbound queue (against `--max-queued-bytes`).
    pub queued_bytes: usize,
}

impl ConnectionInfo {
    pub(crate) fn of(conn: &Connection) -> Self {
        use crate::protocol::clock::format_rfc3339_millis;
        ConnectionInfo {
            connection_id: conn.id.to_string(),
            user_id: conn.user().to_string(),
            connected_at: format_rfc3339_millis(conn.connected_at_ms),
            last_activity: format_rfc3339_millis(conn.last_activity_ms),
            subscriptions: conn.subscriptions.names(),
            token_expires_at: format_rfc3339_millis(conn.token.exp().saturating_mul(1000)),
            messages_in: conn.messages_in,
            messages_out: conn.messages_out,
            queued_bytes: conn.outbound.queued_bytes(),
        }
    }
}

#[cfg(test)]
mod tests;
