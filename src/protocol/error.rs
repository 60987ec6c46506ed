//! Client-facing protocol errors: the `error` message's `code` values.
//!
//! Each variant maps to exactly one SPEC code. Whether an error also closes
//! the connection is decided by the connection layer, not here.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    InvalidMessage,
    InvalidMessageType,
    InvalidSubscription,
    RateLimitExceeded,
    /// `auth.refresh` with a token a connection could not open with.
    TokenInvalid,
    /// `auth.refresh` with a valid token of another user.
    TokenSubMismatch,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::InvalidMessageType => "INVALID_MESSAGE_TYPE",
            ErrorCode::InvalidSubscription => "INVALID_SUBSCRIPTION",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::TokenInvalid => "TOKEN_INVALID",
            ErrorCode::TokenSubMismatch => "TOKEN_SUB_MISMATCH",
        }
    }
}

/// An error answered to the client with an `error` message.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    /// Extra fields of the error's `data` (`invalid_events`, `retry_after`).
    pub extra: Map<String, Value>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn invalid_message(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidMessage, message)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::new(
            ErrorCode::RateLimitExceeded,
            "Too many messages. Please slow down.",
        )
        .with("retry_after", Value::from(retry_after_secs.max(1)))
    }

    /// The `data` object of the `error` message.
    pub fn to_data(&self) -> Value {
        let mut data = Map::with_capacity(2 + self.extra.len());
        data.insert("code".into(), Value::from(self.code.as_str()));
        data.insert("message".into(), Value::from(self.message.as_str()));
        for (k, v) in &self.extra {
            data.insert(k.clone(), v.clone());
        }
        Value::Object(data)
    }
}
