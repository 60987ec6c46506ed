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
//! answers 101 → the raw socket is registered in its [`hub`] shard → the
//! shard's reactor reads, runs tungstenite over [`ws::io`], parses with
//! [`protocol`] and applies [`connection::dispatch`] → replies and fan-out
//! are queued on [`connection::outbound`] and written with vectored writes.
//!
//! Backend path: `http::api` (or [`Gateway`]) → [`hub::Hub::publish`]
//! encodes and frames once → every shard with a recipient queues the same
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
pub use config::Config;
pub use gateway::Gateway;
pub use hub::Published;
pub use protocol::Event;
