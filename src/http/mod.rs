//! HTTP/1.1 routing: one match on (method, path) that is the table of
//! contents of everything the gateway answers.
//!
//! WebSocket handshakes go to `ws_route`, `/api/v1/*` to `api`, and the
//! operator endpoints (`/health`, `/metrics`, `/console`) are answered
//! here. It owns [`AppState`], the shared handles every handler needs.

pub mod api;
pub mod console;
mod refusal;
pub mod response;
pub mod uri;
pub mod ws_route;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::TokenVerifier;
use crate::cluster::BackplaneState;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::hub::Hub;
use crate::limits::Admission;
use crate::metrics::{Metrics, RefusalReason};
use response::{json, static_body, ApiError, Response};

/// What every request handler can reach.
pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub admission: Arc<Admission>,
    pub verifier: Arc<TokenVerifier>,
    pub metrics: Arc<Metrics>,
    /// The same handle the library API gives embedders.
    pub gateway: Gateway,
    /// Tracks the tasks that finish upgrades, so shutdown waits for them.
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// Numbers the `--conformance-echo` pseudo-users.
    pub echo_connections: std::sync::atomic::AtomicU64,
    /// `--connection-rate-limit`, when set.
    pub connect_rate: Option<crate::limits::ConnectRateLimiter>,
    /// The places of `--max-pending-connections`: held by each connection
    /// not upgraded yet, and by each accept-then-close refusal until it is
    /// gone.
    pub pending: Arc<tokio::sync::Semaphore>,
    /// Ids of the `error` messages sent to accept-then-close refusals.
    pub refusal_ids: crate::protocol::MessageIds,
}

/// Answers one request from `peer` (the TCP source address).
pub async fn route(
    state: Arc<AppState>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response, Infallible> {
    let path = request.uri().path().to_owned();
    let segments = match uri::path_segments(&path) {
        Ok(segments) => segments,
        Err(error) => {
            if path.starts_with("/api/v1/ws") {
                state.metrics.refused(RefusalReason::BadRequest);
            }
            return Ok(
                ApiError::bad_request(format!("the path is {error}")).into_closing_response()
            );
        }
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let response = match (request.method(), segments.as_slice()) {
        (_, ["api", "v1", "ws"]) => ws_route::handle(&state, peer, request, None).await,
        (_, ["api", "v1", "ws", token]) => {
            let token = (!token.is_empty()).then(|| token.to_string());
            ws_route::handle(&state, peer, request, token).await
        }
        (_, ["api", "v1", rest @ ..]) => api::handle(&state, request, rest).await,
        (_, ["conformance", "echo"]) if state.config.conformance_echo => {
            ws_route::handle_echo(&state, request)
        }
        (&Method::GET, ["health"]) => health(&state),
        (&Method::GET, ["metrics"]) => {
            static_body("text/plain; version=0.0.4", state.metrics.render())
        }
        (&Method::GET, ["console", ..]) => console::asset(&path)
            .unwrap_or_else(|| ApiError::not_found("no such console file").into_response()),
        _ => ApiError::not_found("no such endpoint").into_response(),
    };
    Ok(response)
}

/// `GET /health`: 200 always (every node loses Redis alike, and a load
/// balancer must not drop them all), but degraded while the cluster
/// backplane is down.
fn health(state: &AppState) -> Response {
    let body = match state.hub.backplane_state() {
        BackplaneState::Local => serde_json::json!({"status": "ok"}),
        BackplaneState::Up => serde_json::json!({"status": "ok", "backplane": "connected"}),
        BackplaneState::Down => {
            serde_json::json!({"status": "degraded", "backplane": "disconnected"})
        }
    };
    json(StatusCode::OK, &body)
}
