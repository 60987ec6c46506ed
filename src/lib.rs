//! wsgate: a real-time WebSocket gateway.
//!
//! Browsers and apps hold JWT-authenticated WebSocket connections;
//! the application backend pushes events to them through the HTTP server
//! API or, embedded, through [`Gateway`].
//!
//! # Layout, in data-flow order
//!
//! Client path: `net` accepts → `http` routes → `http::ws_route` takes
//! the token to `auth` and `limits` (admission) → `ws::upgrade`
//! answers 101 → the raw socket is registered in its `hub` shard → on
//! readiness the shard's reactor hands it to its `connection`, which reads,
//! runs tungstenite over `ws::io`, parses with `protocol`, applies
//! `connection::dispatch` and queues the reply on `connection::outbound`
//! (the shard carries out what reaches other connections) → every queue
//! touched in a reactor turn is written once, with vectored writes.
//!
//! Backend path: `http::api` (or [`Gateway`]) → `hub::Hub::publish`
//! encodes and frames once (once per stream it is appended to in
//! `history`) → every shard with a recipient queues the same
//! `Arc<[u8]>`.
//!
//! Around them: `config` (parsed once), `app` (wiring and shutdown
//! order), `shutdown`, `telemetry`, `metrics`, `webhook`, and
//! `cluster` (with `--redis-url`: the backplane that makes many nodes
//! one gateway; a no-op otherwise; it reaches the hub only through the
//! `cluster::InboundPort` the hub implements). `address` is the leaf
//! that names recipients ([`Target`], connection ids) for all of them.
//!
//! # What is public
//!
//! Only what an embedder needs: [`Server`] (bind, run, shut down),
//! [`Gateway`] and the types its methods take and return, [`Config`] with
//! its sub-configs and [`ConfigError`], token minting, and [`cli::run`]
//! (the whole binary, so `main.rs` needs nothing else). Every other module
//! is private, so the compiler's dead-code lint sees the whole crate.
//!
//! The benches, the fuzz targets and `tests/backplane.rs` drive internals
//! directly (the client-message parser, the upgrade checks, the outbound
//! queue, the Redis backplane with a recording port): they import them
//! from the hidden `internals` module, which names each item one by one,
//! rather than from public modules, so that list is the whole internal
//! surface. Tests needing more (a hub with its shard threads) live inside
//! the crate as unit tests.

mod address;
mod app;
mod auth;
pub mod cli;
mod cluster;
mod config;
mod connection;
mod gateway;
mod history;
mod http;
mod hub;
mod limits;
mod metrics;
mod net;
mod protocol;
mod shutdown;
mod telemetry;
mod webhook;
mod ws;

pub use address::Target;
pub use app::{Server, StartError};
/// HS256 minting for tools and tests (`wsgate token`, the integration
/// suite, `loadtest/`).
pub use auth::mint::{mint_token, sign_claims};
pub use config::{
    AuthConfig, Config, ConfigError, LimitsConfig, LogFormat, TimersConfig, WebhookConfig,
};
pub use connection::ConnectionInfo;
pub use gateway::Gateway;
pub use hub::shard::ShardGone;
pub use hub::{PublishError, Published, ShardStatsView, Stats};
pub use protocol::Event;

/// For this crate's benches, fuzz targets and tests only: no stability,
/// no semver, not part of the API. Each item is named one by one, so
/// everything not listed here stays visible to the dead-code lint.
#[doc(hidden)]
pub mod internals {
    pub use crate::address::{node_tag, ConnId};
    pub use crate::cluster::redis::{RedisBackplane, RedisSettings};
    pub use crate::cluster::{Backplane, BackplaneState, InboundPort, OutboundEvent};
    pub use crate::connection::outbound::{Chunk, Outbound};
    pub use crate::limits::RateLimiter;
    pub use crate::metrics::{DropReason, InKind, Metrics, OutKind, RefusalReason};
    pub use crate::protocol::client::{parse as parse_client_message, CLIENT_MESSAGE_TYPES};
    pub use crate::protocol::clock::format_rfc3339_millis;
    pub use crate::protocol::envelope::encode;
    pub use crate::protocol::{EventSet, MessageIds};
    pub use crate::ws::frame::text_frame;
    pub use crate::ws::io::BufferedIo;
    pub use crate::ws::upgrade::{accept_key, check_request, offered_protocols};
}
