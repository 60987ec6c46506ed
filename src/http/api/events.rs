//! The four publishing calls: `/events`, `/notifications`,
//! `/reviews/{id}/updated`, `/files/{id}/status`. Each validates its body
//! and calls the same [`Gateway`](crate::Gateway) helper an embedding
//! application would, answering `{"id", "delivered"}`.

use std::sync::Arc;

use hyper::StatusCode;

use super::body::{ids, FileStatusBody, Level, NotificationBody, PublishBody, ReviewUpdatedBody};
use crate::address::Target;
use crate::http::response::{json, ApiError, Response};
use crate::http::AppState;
use crate::hub::{PublishError, Published};

pub async fn publish(state: &Arc<AppState>, body: PublishBody) -> Result<Response, ApiError> {
    let target = if body.users.is_some() || body.connections.is_some() {
        Target::Selected {
            users: body.users.map(ids).unwrap_or_default(),
            connections: body.connections.map(ids).unwrap_or_default(),
        }
    } else if body.all == Some(true) {
        Target::All
    } else {
        Target::Subscribers
    };
    answer(state.gateway.publish(body.event, body.data, target).await)
}

pub async fn notification(
    state: &Arc<AppState>,
    body: NotificationBody,
) -> Result<Response, ApiError> {
    let level = body.level.unwrap_or(Level::Info).as_str();
    answer(
        state
            .gateway
            .system_notification(&body.message, level, body.users.map(ids), body.extra)
            .await,
    )
}

pub async fn review_updated(
    state: &Arc<AppState>,
    review_id: &str,
    body: ReviewUpdatedBody,
) -> Result<Response, ApiError> {
    answer(
        state
            .gateway
            .review_updated(review_id, body.changes.into(), body.users.map(ids))
            .await,
    )
}

pub async fn file_status(
    state: &Arc<AppState>,
    file_id: &str,
    body: FileStatusBody,
) -> Result<Response, ApiError> {
    let user_id = body.user_id.0;
    if user_id.is_empty() {
        return Err(ApiError::bad_request(
            "`user_id` must be a non-empty string or a number",
        ));
    }
    if body.status.is_empty() {
        return Err(ApiError::bad_request("`status` must be a non-empty string"));
    }
    answer(
        state
            .gateway
            .file_processing_status(&user_id, file_id, &body.status, body.progress)
            .await,
    )
}

fn answer(result: Result<Published, PublishError>) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &result?))
}
