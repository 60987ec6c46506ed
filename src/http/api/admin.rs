//! Operator calls: stats, the connection list, disconnecting a connection,
//! deactivating and activating users.

use std::sync::Arc;

use hyper::StatusCode;
use serde::Serialize;

use crate::cluster::BackplaneState;
use crate::http::response::{json, no_content, ApiError, Response};
use crate::http::uri;
use crate::http::AppState;
use crate::hub::Stats;

/// `GET /api/v1/stats`: the SPEC's fields, plus in cluster mode the
/// backplane state (the words `/health` uses) and the live nodes.
#[derive(Serialize)]
struct StatsAnswer {
    #[serde(flatten)]
    node: Stats,
    #[serde(skip_serializing_if = "Option::is_none")]
    backplane: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<String>>,
}

pub async fn stats(state: &AppState) -> Response {
    let (backplane_state, nodes) = match state.hub.backplane_state() {
        BackplaneState::Local => (None, None),
        BackplaneState::Up => (Some("connected"), state.hub.cluster_nodes().await),
        BackplaneState::Down => (Some("disconnected"), None),
    };
    let answer = StatsAnswer {
        node: state.hub.stats(),
        backplane: backplane_state,
        nodes,
    };
    json(StatusCode::OK, &answer)
}

pub async fn list_connections(
    state: &Arc<AppState>,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let user = uri::query_param(query, "user_id")
        .map_err(|e| ApiError::bad_request(format!("`user_id`: {e}")))?;
    let connections = state.hub.connections(user.as_deref()).await?;
    Ok(json(StatusCode::OK, &connections))
}

pub async fn disconnect(state: &Arc<AppState>, connection_id: &str) -> Result<Response, ApiError> {
    if state.gateway.disconnect(connection_id).await? {
        Ok(no_content())
    } else {
        Err(ApiError::not_found(format!(
            "no connection `{connection_id}`"
        )))
    }
}

pub async fn deactivate(state: &Arc<AppState>, user_id: &str) -> Result<Response, ApiError> {
    state.gateway.deactivate_user(user_id).await?;
    tracing::info!(user = user_id, "user deactivated");
    Ok(no_content())
}

pub fn activate(state: &AppState, user_id: &str) -> Response {
    state.gateway.activate_user(user_id);
    tracing::info!(user = user_id, "user activated");
    no_content()
}
