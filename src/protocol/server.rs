//! Builders for the server's replies to client messages and the messages
//! the gateway originates itself (`connection.established`,
//! `upload.cancelled`). Each returns a ready frame; none touches a socket.

use serde_json::{json, Map, Value};

use super::clock;
use serde::Serialize;

use super::envelope::{encode, encode_at, EncodedMessage};
use super::error::ProtocolError;
use super::event::{Event, EventSet};
use super::ids::MessageIds;

/// The v1 `features` of `connection.established`, always first.
pub const FEATURES: [&str; 3] = ["heartbeat", "subscriptions", "rate_limiting"];

/// A token's expiry as clients see it (SPEC-v2 §3): `exp` in RFC 3339
/// with ms, and the whole seconds left (≥ 0) for clients with wrong clocks.
#[derive(Serialize)]
struct TokenExpiry {
    expires_at: String,
    expires_in: u64,
}

impl TokenExpiry {
    fn new(exp_secs: u64, now_ms: u64) -> TokenExpiry {
        let exp_ms = exp_secs.saturating_mul(1000);
        TokenExpiry {
            expires_at: clock::format_rfc3339_millis(exp_ms),
            expires_in: exp_ms.saturating_sub(now_ms) / 1000,
        }
    }
}

/// `features`: v1's three, then `recovery` (history on) and `last_value`
/// (last values on), in SPEC-v2 §1's order.
pub fn features(recovery: bool, last_value: bool) -> Vec<&'static str> {
    let mut features = FEATURES.to_vec();
    if recovery {
        features.push("recovery");
    }
    if last_value {
        features.push("last_value");
    }
    // SPEC-v2 §1 order: recovery, last_value, token_refresh, topics, presence
    // (topics and presence are not built yet).
    features.push("token_refresh");
    features
}

pub fn connection_established(
    ids: &MessageIds,
    connection_id: &str,
    user_id: &str,
    features: &[&str],
    token_exp: u64,
    now_ms: u64,
) -> EncodedMessage {
    let expiry = TokenExpiry::new(token_exp, now_ms);
    let data = json!({
        "connection_id": connection_id,
        "user_id": user_id,
        "server_time": clock::now_rfc3339(),
        "features": features,
        "expires_at": expiry.expires_at,
        "expires_in": expiry.expires_in,
    });
    encode(ids, "connection.established", &data, None)
}

/// `token.expiring` (no `reply_to`) or `auth.refreshed` (the reply to an
/// `auth.refresh`), both `{"expires_at", "expires_in"}`.
pub fn token_expiry(
    ids: &MessageIds,
    kind: &str,
    token_exp: u64,
    now_ms: u64,
    reply_to: Option<&Value>,
) -> EncodedMessage {
    encode(ids, kind, &TokenExpiry::new(token_exp, now_ms), reply_to)
}

/// `pong` data; typed rather than a `json!` map because pings are the
/// most frequent client message.
#[derive(Serialize)]
struct PongData<'a> {
    timestamp: &'a str,
    #[serde(rename = "pingId")]
    ping_id: Option<&'a str>,
}

#[derive(Serialize)]
struct TimestampData<'a> {
    timestamp: &'a str,
}

pub fn pong(ids: &MessageIds, ping_id: Option<&str>, reply_to: Option<&Value>) -> EncodedMessage {
    let now = clock::now_rfc3339();
    let data = PongData {
        timestamp: &now,
        ping_id,
    };
    encode_at(ids, "pong", &data, reply_to, &now)
}

pub fn heartbeat_ack(ids: &MessageIds, reply_to: Option<&Value>) -> EncodedMessage {
    let now = clock::now_rfc3339();
    encode_at(
        ids,
        "heartbeat.ack",
        &TimestampData { timestamp: &now },
        reply_to,
        &now,
    )
}

/// `subscription.confirmed` or `unsubscription.confirmed`: `events` as the
/// client listed them, `subscriptions` sorted.
pub fn subscription_changed(
    ids: &MessageIds,
    kind: &str,
    requested: &[Event],
    current: EventSet,
    reply_to: Option<&Value>,
) -> EncodedMessage {
    let requested: Vec<&str> = requested.iter().map(|e| e.as_str()).collect();
    let data = json!({"events": requested, "subscriptions": current.names()});
    encode(ids, kind, &data, reply_to)
}

/// `subscription.confirmed` with `streams` (SPEC-v2 §2.3).
pub fn subscription_confirmed_with_streams(
    ids: &MessageIds,
    requested: &[Event],
    current: EventSet,
    streams: &Map<String, Value>,
    reply_to: Option<&Value>,
) -> EncodedMessage {
    let requested: Vec<&str> = requested.iter().map(|e| e.as_str()).collect();
    let data = json!({
        "events": requested,
        "subscriptions": current.names(),
        "streams": streams,
    });
    encode(ids, "subscription.confirmed", &data, reply_to)
}

/// `resumed` (SPEC-v2 §2.2). Topics do not exist yet: `topics` is `[]`.
pub fn resumed(
    ids: &MessageIds,
    recovered: bool,
    streams: &Map<String, Value>,
    current: EventSet,
    reply_to: Option<&Value>,
) -> EncodedMessage {
    let data = json!({
        "recovered": recovered,
        "streams": streams,
        "subscriptions": current.names(),
        "topics": [],
    });
    encode(ids, "resumed", &data, reply_to)
}

pub fn upload_cancel_acknowledged(
    ids: &MessageIds,
    upload_id: &str,
    reply_to: Option<&Value>,
) -> EncodedMessage {
    encode(
        ids,
        "upload.cancel.acknowledged",
        &json!({"upload_id": upload_id}),
        reply_to,
    )
}

/// `upload.cancelled` data: kept apart from the frame, since the same data
/// goes to the user's other nodes of a cluster.
pub fn upload_cancelled_data(upload_id: &str, connection_id: &str) -> Value {
    json!({"upload_id": upload_id, "connection_id": connection_id})
}

pub fn upload_cancelled(ids: &MessageIds, data: &Value, timestamp: &str) -> EncodedMessage {
    encode_at(ids, "upload.cancelled", data, None, timestamp)
}

pub fn error(ids: &MessageIds, error: &ProtocolError, reply_to: Option<&Value>) -> EncodedMessage {
    encode(ids, "error", &error.to_data(), reply_to)
}
