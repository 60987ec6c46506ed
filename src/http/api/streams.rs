//! `GET /api/v1/streams/{name}` (what a backend reads of a stream, by the
//! recovery rule) and `DELETE /api/v1/streams/{name}` (SPEC-v2 §8). The
//! name arrives percent-decoded (`user%3A123` is `user:123`).

use std::sync::Arc;

use hyper::StatusCode;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::history::{recover, History, HistoryStore, Position, RedisStore};
use crate::http::response::{json, no_content, ApiError, ErrorCode, Response};
use crate::http::uri;
use crate::http::AppState;
use crate::ws::frame;

const DEFAULT_LIMIT: usize = 100;

#[derive(Serialize)]
struct StreamAnswer {
    name: String,
    epoch: String,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// The messages exactly as delivered.
    events: Vec<Box<RawValue>>,
}

/// Where this node's history is read: memory (inline) or Redis (awaited).
enum Store<'a> {
    Memory(&'a Arc<dyn HistoryStore>),
    Redis(&'a RedisStore),
}

fn redis_unavailable(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("history is unavailable while Redis is: {error}"),
    )
}

fn store(state: &AppState) -> Result<Store<'_>, ApiError> {
    match state.hub.history() {
        History::Store { store, .. } => Ok(Store::Memory(store)),
        History::Redis { store, .. } => Ok(Store::Redis(store)),
        History::Disabled => Err(ApiError::not_found(
            "history is off (--history-size 0): no stream has metadata",
        )),
        History::Unavailable => Err(ApiError::new(
            ErrorCode::Unavailable,
            "cluster history is unavailable (the Redis URL did not parse)",
        )),
    }
}

pub async fn read(state: &AppState, name: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let store = store(state)?;
    let since = uri::query_param(query, "since")
        .map_err(|e| ApiError::bad_request(format!("`since`: {e}")))?
        .map(|since| {
            Position::parse_pair(&since)
                .ok_or_else(|| ApiError::bad_request("`since` must be EPOCH:OFFSET"))
        })
        .transpose()?;
    let max = state.config.history.recovery_max_events;
    let limit = match uri::query_param(query, "limit")
        .map_err(|e| ApiError::bad_request(format!("`limit`: {e}")))?
    {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("`limit` must be a non-negative integer"))?,
    }
    .min(usize::try_from(max).unwrap_or(usize::MAX));
    let from = since.as_ref().map_or(0, |p| p.offset.saturating_add(1));
    let not_found = || ApiError::not_found(format!("stream `{name}` has no metadata"));
    let read = match store {
        Store::Memory(store) => store.read(name, from, limit),
        Store::Redis(store) => store
            .read(name, from, limit)
            .await
            .map_err(redis_unavailable)?,
    };
    let (meta, events) = read.ok_or_else(not_found)?;
    let (recovered, reason, events) = match &since {
        None => (None, None, events),
        Some(position) => match recover(position, Some(meta), max) {
            Ok(_) => (Some(true), None, events),
            Err(reason) => (Some(false), Some(reason.code()), Vec::new()),
        },
    };
    let events = events
        .iter()
        .filter_map(|event| {
            let payload = &event.frame[event.frame.len() - frame::payload_len(&event.frame)..];
            std::str::from_utf8(payload)
                .ok()
                .and_then(|text| RawValue::from_string(text.to_owned()).ok())
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &StreamAnswer {
            name: name.to_owned(),
            epoch: meta.epoch.as_str().to_owned(),
            offset: meta.top,
            recovered,
            reason,
            events,
        },
    ))
}

pub async fn delete(state: &AppState, name: &str) -> Result<Response, ApiError> {
    match store(state)? {
        Store::Memory(store) => {
            store.delete(name);
        }
        Store::Redis(store) => {
            store.delete(name).await.map_err(redis_unavailable)?;
        }
    }
    Ok(no_content())
}
