//! The four publishing calls: `/events`, `/notifications`,
//! `/reviews/{id}/updated`, `/files/{id}/status`. Each validates its body
//! and calls the same [`Gateway`](crate::Gateway) helper an embedding
//! application would, answering `{"id", "delivered"}`.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{Map, Value};

use super::id_list;
use crate::address::Target;
use crate::http::response::{json, ApiError, Response};
use crate::http::AppState;
use crate::hub::{PublishError, Published};
use crate::protocol::Event;

pub async fn publish(
    state: &Arc<AppState>,
    mut body: Map<String, Value>,
) -> Result<Response, ApiError> {
    let event = match body.get("type") {
        Some(Value::String(name)) => Event::parse(name).ok_or_else(|| {
            ApiError::bad_request(format!("`{name}` is not a subscribable event type"))
        })?,
        _ => {
            return Err(ApiError::bad_request(
                "`type` must be a subscribable event type",
            ))
        }
    };
    let users = id_list(&body, "users")?;
    let connections = id_list(&body, "connections")?;
    let all = match body.get("all") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("`all` must be a boolean")),
    };
    let data = body
        .remove("data")
        .unwrap_or_else(|| Value::Object(Map::new()));
    let selected = [&"users", &"connections"]
        .iter()
        .any(|k| body.get(**k).is_some_and(|v| !v.is_null()));
    let target = if selected {
        Target::Selected { users, connections }
    } else if all {
        Target::All
    } else {
        Target::Subscribers
    };
    answer(state.gateway.publish(event, data, target).await)
}

pub async fn notification(
    state: &Arc<AppState>,
    mut body: Map<String, Value>,
) -> Result<Response, ApiError> {
    let message = match body.remove("message") {
        Some(Value::String(m)) => m,
        _ => return Err(ApiError::bad_request("`message` must be a string")),
    };
    let level = match body.remove("level") {
        None | Some(Value::Null) => "info".to_owned(),
        Some(Value::String(l)) if matches!(l.as_str(), "info" | "warning" | "error") => l,
        Some(_) => {
            return Err(ApiError::bad_request(
                "`level` must be info, warning or error",
            ))
        }
    };
    let users = optional_users(&mut body)?;
    answer(
        state
            .gateway
            .system_notification(&message, &level, users, body)
            .await,
    )
}

pub async fn review_updated(
    state: &Arc<AppState>,
    review_id: &str,
    mut body: Map<String, Value>,
) -> Result<Response, ApiError> {
    let changes = match body.remove("changes") {
        None => Value::Object(Map::new()),
        Some(changes @ Value::Object(_)) => changes,
        Some(_) => return Err(ApiError::bad_request("`changes` must be an object")),
    };
    let users = optional_users(&mut body)?;
    answer(
        state
            .gateway
            .review_updated(review_id, changes, users)
            .await,
    )
}

pub async fn file_status(
    state: &Arc<AppState>,
    file_id: &str,
    body: Map<String, Value>,
) -> Result<Response, ApiError> {
    let user_id = match body.get("user_id") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ApiError::bad_request(
                "`user_id` must be a non-empty string or a number",
            ))
        }
    };
    let status = match body.get("status") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(ApiError::bad_request("`status` must be a non-empty string")),
    };
    let progress = match body.get("progress") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => return Err(ApiError::bad_request("`progress` must be a number")),
    };
    answer(
        state
            .gateway
            .file_processing_status(&user_id, file_id, &status, progress)
            .await,
    )
}

/// `users` when present (and removed from the body), else `None`.
fn optional_users(body: &mut Map<String, Value>) -> Result<Option<Vec<String>>, ApiError> {
    let users = id_list(body, "users")?;
    Ok(body.remove("users").filter(|u| !u.is_null()).map(|_| users))
}

fn answer(result: Result<Published, PublishError>) -> Result<Response, ApiError> {
    match result {
        Ok(published) => Ok(json(StatusCode::OK, &published)),
        Err(PublishError::TooLarge { size, max }) => Err(ApiError::payload_too_large(format!(
            "the message would be {size} bytes; the limit is {max}"
        ))),
        Err(PublishError::ShardGone(_)) => {
            Err(ApiError::unavailable("the server is shutting down"))
        }
    }
}
