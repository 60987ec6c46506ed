//! The server API under `/api/v1` (SPEC §4): API-key check, body reading
//! with a size limit, and the route table of the backend's calls.
//!
//! Handlers turn JSON into hub calls and hub answers into JSON; they hold
//! no state of their own.

mod admin;
mod events;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request};
use serde_json::{Map, Value};

use super::response::{ApiError, Response};
use super::AppState;

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
            events::publish(state, read_json(state, request).await?).await
        }
        (&Method::POST, ["notifications"]) => {
            events::notification(state, read_json(state, request).await?).await
        }
        (&Method::POST, ["reviews", id, "updated"]) => {
            events::review_updated(state, id, read_json(state, request).await?).await
        }
        (&Method::POST, ["files", id, "status"]) => {
            events::file_status(state, id, read_json(state, request).await?).await
        }
        (&Method::GET, ["stats"]) => Ok(admin::stats(state).await),
        (&Method::GET, ["connections"]) => {
            admin::list_connections(state, request.uri().query()).await
        }
        (&Method::DELETE, ["connections", id]) => admin::disconnect(state, id).await,
        (&Method::POST, ["users", id, "deactivate"]) => admin::deactivate(state, id).await,
        (&Method::POST, ["users", id, "activate"]) => Ok(admin::activate(state, id)),
        (_, ["events" | "notifications" | "stats" | "connections"])
        | (_, ["reviews" | "files", _, _])
        | (_, ["connections" | "users", ..]) => Err(ApiError::method_not_allowed()),
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
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("missing or wrong API key"))
    }
}

/// Compares without an early exit, so timing reveals only the length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_json(
    state: &AppState,
    request: Request<Incoming>,
) -> Result<Map<String, Value>, ApiError> {
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
    match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "body is not valid JSON: {e}"
        ))),
    }
}

/// Reads an optional list of ids (strings or numbers) from `body[key]`.
fn id_list(body: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "`{key}` must hold strings or numbers"
                ))),
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!("`{key}` must be an array"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"key", b"key"));
        assert!(!constant_time_eq(b"key", b"kez"));
        assert!(!constant_time_eq(b"key", b"keys"));
    }

    #[test]
    fn id_lists_accept_strings_and_numbers() {
        let body = json!({"users": ["a", 7], "bad": [true], "no": "x"});
        let map = body.as_object().expect("object");
        assert_eq!(id_list(map, "users").expect("ok"), vec!["a", "7"]);
        assert!(id_list(map, "bad").is_err());
        assert!(id_list(map, "no").is_err());
        assert!(id_list(map, "missing").expect("ok").is_empty());
    }
}
