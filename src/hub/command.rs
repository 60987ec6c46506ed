//! The messages a shard's reactor accepts from the rest of the process.
//!
//! Everything that crosses into a shard thread is one of these, sent over
//! its bounded channel; replies go back on oneshot channels. Owns no logic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::address::ConnId;
use crate::auth::Claims;
use crate::connection::ConnectionInfo;
use crate::history::StreamPosition;
use crate::limits::ConnectionPermit;
use crate::metrics::OutKind;
use crate::protocol::Event;
use crate::ws::CloseReason;

/// An upgraded connection, handed over to its shard.
pub struct NewConnection {
    /// The raw socket, already in non-blocking mode.
    pub socket: std::net::TcpStream,
    /// Bytes hyper read past the HTTP request (the client's first frames).
    pub already_read: Bytes,
    pub claims: Claims,
    /// The upgrade URL had `refresh=1`: send `token.expiring` (SPEC-v2 §3).
    pub token_notice: bool,
    pub permit: ConnectionPermit,
    /// The TLS session, when the connection came in over TLS: the
    /// connection drives it sans-I/O over the raw socket.
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// A `--conformance-echo` connection: echoes data frames back, with no
    /// gateway protocol on top.
    pub echo: bool,
    /// The upgrade URL had `resume=1`: hold deliveries until the first
    /// message (SPEC-v2 §2.2).
    pub resume: bool,
}

/// Which of a shard's connections a delivery reaches.
#[derive(Debug, Clone)]
pub enum ShardTarget {
    All,
    Subscribers(Event),
    /// The connections of these users (all in this shard) plus these
    /// connections, each at most once.
    Selected {
        users: Vec<UserDelivery>,
        connections: Vec<ConnId>,
    },
}

/// A user's connections in a `Selected` delivery, with the user's own
/// recorded copy when the event was appended to `user:{id}`.
#[derive(Debug, Clone)]
pub struct UserDelivery {
    pub user: Arc<str>,
    pub recorded: Option<Recorded>,
}

/// A frame recorded in a stream, with its position (SPEC-v2 §2.1).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub frame: Arc<[u8]>,
    pub position: StreamPosition,
}

/// What a shard reports back after a delivery was written (or queued).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryReport {
    pub delivered: usize,
    pub finished_at: Instant,
}

pub struct Delivery {
    pub target: ShardTarget,
    /// One encoded frame for every recipient (in `Selected`, for those not
    /// reached through a user with its own recorded copy).
    pub frame: Arc<[u8]>,
    /// `frame`'s position when it is recorded.
    pub position: Option<StreamPosition>,
    pub kind: OutKind,
    pub report: Option<oneshot::Sender<DeliveryReport>>,
}

pub enum CloseTarget {
    Connection(ConnId),
    User(Arc<str>),
}

pub enum Command {
    Register(Box<NewConnection>),
    Deliver(Delivery),
    Close {
        target: CloseTarget,
        reason: CloseReason,
        /// How many connections were closed.
        done: oneshot::Sender<usize>,
    },
    List {
        user: Option<Arc<str>>,
        reply: oneshot::Sender<Vec<ConnectionInfo>>,
    },
    /// Close everything with 1001 in batches spread over `drain`, flush,
    /// and stop at most `grace` after the last batch.
    Shutdown {
        drain: Duration,
        grace: Duration,
    },
}
