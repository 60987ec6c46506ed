//! wsgate: a real-time WebSocket gateway.
//!
//! Browsers and apps hold JWT-authenticated WebSocket connections;
//! the application backend pushes events to them through the HTTP server
//! API or, embedded, through [`Gateway`].
//!
//! # Layout, in data-flow order
//!
//! Client path: [`net`] accepts → [`http`] routes → `http::ws_route` takes
//! the token to [`auth`] and [`limits`] (admission) → [`ws::upgrade`]
//! answers 101 → the raw socket is registered in its [`hub`] shard → on
//! readiness the shard's reactor hands it to its [`connection`], which reads,
//! runs tungstenite over [`ws::io`], parses with [`protocol`], applies
//! [`connection::dispatch`] and queues the reply on [`connection::outbound`]
//! (the shard carries out what reaches other connections) → every queue
//! touched in a reactor turn is written once, with vectored writes.
//!
//! Backend path: `http::api` (or [`Gateway`]) → [`hub::Hub::publish`]
//! encodes and frames once (once per stream it is appended to in
//! [`history`]) → every shard with a recipient queues the same
//! `Arc<[u8]>`.
//!
//! Around them: [`config`] (parsed once), [`app`] (wiring and shutdown
//! order), [`shutdown`], [`telemetry`], [`metrics`], [`webhook`], and
//! [`cluster`] (with `--redis-url`: the backplane that makes many nodes
//! one gateway; a no-op otherwise; it reaches the hub only through the
//! [`cluster::InboundPort`] the hub implements). [`address`] is the leaf
//! that names recipients ([`Target`], connection ids) for all of them.

pub mod address;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod gateway;
pub mod history;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod shutdown;
pub mod telemetry;
pub mod webhook;
pub mod ws;

pub use address::Target;
pub use app::Server;
/// HS256 minting for tools and tests (`wsgate token`, the integration
/// suite, `loadtest/`): see [`auth::mint`].
pub use auth::mint::{mint_token, sign_claims};
pub use config::Config;
pub use gateway::Gateway;
pub use hub::Published;
pub use protocol::Event;
