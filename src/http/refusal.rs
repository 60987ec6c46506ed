//! Refusals a browser can see (SPEC-v2 §6): with `--refusal-mode close` or
//! `?refusal=close`, a valid upgrade that v1 refuses with 401 / 429 / 503
//! is completed instead, gets one `error` and a 4401 / 4429 / 4503 close
//! with its JSON reason, and is gone within [`REFUSAL_DEADLINE`].
//!
//! Such a socket never reaches a shard, so it never counts in connection
//! limits, `stats` or `wsgate_connections`. It holds a place among the
//! `--max-pending-connections` until it is gone, so refusals cannot pile
//! up beyond that cap; with no place free the refusal is the v1 HTTP one.
//! It reads no frames: what the client sends is discarded unread (a
//! lingering close, so the kernel does not answer unread bytes with a
//! reset that could destroy the close frame in flight). This module
//! decides nothing about *whether* to refuse; `ws_route` does.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::response::{ApiError, ErrorCode, Response};
use super::AppState;
use crate::protocol::envelope::encode;
use crate::ws::CloseReason;

/// From the 101 to the socket's end, at most.
pub const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);
/// What a refused client may send while its close goes out; past it the
/// socket is dropped at once.
const DISCARD_LIMIT: usize = 64 * 1024;

/// The close reason standing for a v1 HTTP refusal; `None` for errors
/// that stay HTTP whatever the mode (400 and the rest).
pub fn close_reason(error: &ApiError) -> Option<CloseReason> {
    let retry_after_secs = error.retry_after.unwrap_or(1);
    match error.code {
        ErrorCode::Unauthorized => Some(CloseReason::Unauthorized),
        ErrorCode::TooManyConnections => Some(CloseReason::TooManyConnections { retry_after_secs }),
        ErrorCode::ServerAtCapacity => Some(CloseReason::ServerAtCapacity { retry_after_secs }),
        _ => None,
    }
}

/// The `error` message and the close frame, built once, as one buffer.
fn frames(state: &AppState, error: &ApiError, reason: CloseReason) -> Vec<u8> {
    let mut data = Map::new();
    data.insert("code".into(), Value::from(error.code.as_str()));
    data.insert("message".into(), Value::from(error.detail.as_str()));
    if let Some(seconds) = error.retry_after {
        data.insert("retry_after".into(), json!(seconds));
    }
    let mut bytes = encode(&state.refusal_ids, "error", &data, None).frame;
    bytes.extend_from_slice(&crate::ws::frame::close_frame(
        reason.code(),
        &reason.reason_json(),
    ));
    bytes
}

/// Completes the upgrade of a refused request, or `None` when no pending
/// place is free (the caller answers with v1's HTTP refusal then).
pub fn accept_then_close(
    state: &Arc<AppState>,
    request: &mut Request<Incoming>,
    accept: HeaderValue,
    subprotocol: bool,
    error: &ApiError,
    reason: CloseReason,
) -> Option<Response> {
    let place = state.pending.clone().try_acquire_owned().ok()?;
    let bytes = frames(state, error, reason);
    let on_upgrade = hyper::upgrade::on(request);
    let metrics = state.metrics.clone();
    state.tracker.spawn(async move {
        let _place = place;
        let written = tokio::time::timeout(REFUSAL_DEADLINE, async {
            let mut io = TokioIo::new(on_upgrade.await.ok()?);
            io.write_all(&bytes).await.ok()?;
            metrics.closed(reason.code());
            io.shutdown().await.ok()?;
            let mut discard = [0u8; 4096];
            let mut left = DISCARD_LIMIT;
            while left > 0 {
                match io.read(&mut discard).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
            Some(())
        })
        .await;
        if written.is_err() {
            tracing::debug!("refused socket dropped at its deadline");
        }
    });
    Some(super::ws_route::switching_protocols(accept, subprotocol))
}
