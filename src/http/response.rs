//! Every HTTP answer the gateway gives that isn't a 101: JSON bodies, the
//! `{"code", "detail"}` error shape and `Retry-After`. The one place where
//! an [`ApiError`] becomes a status line, and where each lower layer's
//! error (`ShardGone`, `PublishError`, `UpgradeError`, `AuthError`,
//! `AdmissionError`) becomes an `ApiError`: its `From` impls, so handlers
//! just use `?` or `.into()`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::StatusCode;
use serde::Serialize;

use crate::auth::AuthError;
use crate::hub::shard::ShardGone;
use crate::hub::PublishError;
use crate::limits::AdmissionError;
use crate::ws::upgrade::UpgradeError;

pub type Response = hyper::Response<Full<Bytes>>;

/// Suggested wait before retrying a refused handshake, in seconds.
pub const RETRY_USER_LIMIT_SECS: u64 = 5;
pub const RETRY_CAPACITY_SECS: u64 = 5;

/// The SPEC's HTTP error codes (the `code` of every error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    TooManyConnections,
    ServerAtCapacity,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::TooManyConnections => "TOO_MANY_CONNECTIONS",
            ErrorCode::ServerAtCapacity => "SERVER_AT_CAPACITY",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServerAtCapacity | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered as `{"code", "detail"}` with the code's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    /// Whole seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, detail)
    }
    pub fn method_not_allowed() -> Self {
        Self::new(ErrorCode::MethodNotAllowed, "method not allowed here")
    }
    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, detail)
    }
    pub fn too_many_connections(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                ErrorCode::TooManyConnections,
                "the user already holds the maximum number of connections",
            )
        }
    }
    pub fn at_capacity(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(ErrorCode::ServerAtCapacity, "the server is at capacity")
        }
    }

    /// The answer, marked the last on its connection: `Connection: close`,
    /// and hyper closes the TCP connection once it is written. For every
    /// refusal before an upgrade, so a refused client cannot keep a
    /// pre-upgrade connection (and its slot) open.
    pub fn into_closing_response(self) -> Response {
        let mut response = self.into_response();
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }

    pub fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            code: &'a str,
            detail: &'a str,
        }
        let mut response = json(
            self.code.status(),
            &Body {
                code: self.code.as_str(),
                detail: &self.detail,
            },
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Every shard has stopped: only during shutdown.
impl From<ShardGone> for ApiError {
    fn from(_: ShardGone) -> Self {
        ApiError::new(ErrorCode::Unavailable, "the server is shutting down")
    }
}

impl From<PublishError> for ApiError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::TooLarge { size, max } => ApiError::payload_too_large(format!(
                "the message would be {size} bytes; the limit is {max}"
            )),
            PublishError::ShardGone(gone) => gone.into(),
        }
    }
}

/// Not a valid WebSocket upgrade request.
impl From<UpgradeError> for ApiError {
    fn from(error: UpgradeError) -> Self {
        ApiError::bad_request(error.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        ApiError::unauthorized(error.to_string())
    }
}

impl From<AdmissionError> for ApiError {
    fn from(error: AdmissionError) -> Self {
        match error {
            AdmissionError::UserInactive => AuthError::UserInactive.into(),
            AdmissionError::TooManyForUser => ApiError::too_many_connections(RETRY_USER_LIMIT_SECS),
            AdmissionError::AtCapacity => ApiError::at_capacity(RETRY_CAPACITY_SECS),
        }
    }
}

pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = hyper::Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn no_content() -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

pub fn static_body(content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = hyper::Response::new(Full::new(body.into()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
