//! The server API under `/api/v1` (SPEC §4): API-key check, body reading
//! with a size limit into the call's serde type (`body`), and the route
//! table of the backend's calls.
//!
//! Handlers turn JSON into hub calls and hub answers into JSON; they hold
//! no state of their own.

mod admin;
mod body;
mod events;
mod streams;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::response::{ApiError, Response};
use super::AppState;
use crate::auth::{api_key_matches, bearer_token};

/// Room for the envelope around a message at the size limit.
const BODY_SLACK: usize = 16 * 1024;

pub async fn handle(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    segments: &[&str],
) -> Response {
    if let Err(error) = check_api_key(state, &request) {
        // The body is left unread (an unauthenticated caller gets no say in
        // what we read), so hyper will not reuse this connection: say so,
        // rather than let a keep-alive client find the socket closed.
        return error.into_closing_response();
    }
    match dispatch(state, request, segments).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn dispatch(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    segments: &[&str],
) -> Result<Response, ApiError> {
    let method = request.method().clone();
    match (&method, segments) {
        (&Method::POST, ["events"]) => {
            events::publish(state, read_body(state, request).await?).await
        }
        (&Method::POST, ["notifications"]) => {
            events::notification(state, read_body(state, request).await?).await
        }
        (&Method::POST, ["reviews", id, "updated"]) => {
            events::review_updated(state, id, read_body(state, request).await?).await
        }
        (&Method::POST, ["files", id, "status"]) => {
            events::file_status(state, id, read_body(state, request).await?).await
        }
        (&Method::GET, ["stats"]) => Ok(admin::stats(state).await),
        (&Method::GET, ["connections"]) => {
            admin::list_connections(state, request.uri().query()).await
        }
        (&Method::DELETE, ["connections", id]) => admin::disconnect(state, id).await,
        (&Method::POST, ["users", id, "deactivate"]) => admin::deactivate(state, id).await,
        (&Method::POST, ["users", id, "activate"]) => Ok(admin::activate(state, id)),
        (&Method::GET, ["streams", name]) => {
            streams::read(state, name, request.uri().query()).await
        }
        (&Method::DELETE, ["streams", name]) => streams::delete(state, name).await,
        (_, ["events" | "notifications" | "stats" | "connections"])
        | (_, ["reviews" | "files", _, _])
        | (_, ["connections" | "users", ..])
        | (_, ["streams", _]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("no such API call")),
    }
}

fn check_api_key(state: &AppState, request: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(expected) = state.config.api_key.as_deref() else {
        return Err(ApiError::unauthorized(
            "the server API is disabled: no --api-key configured",
        ));
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if api_key_matches(presented, expected) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("missing or wrong API key"))
    }
}

/// Reads the body (within the size limit) as `T`: 413 when too large, 400
/// when it is not a JSON object or does not fit `T`.
async fn read_body<T: DeserializeOwned>(
    state: &AppState,
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    let limit = state.config.limits.max_message_size + BODY_SLACK;
    let body: Bytes = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::payload_too_large(format!(
                "body is over the {}-byte message limit",
                state.config.limits.max_message_size
            )))
        }
        Err(_) => return Err(ApiError::bad_request("could not read the request body")),
    };
    let object = match serde_json::from_slice(&body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(ApiError::bad_request("body must be a JSON object")),
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "body is not valid JSON: {e}"
            )))
        }
    };
    T::deserialize(Value::Object(object))
        .map_err(|e| ApiError::bad_request(format!("body does not fit this call: {e}")))
}
