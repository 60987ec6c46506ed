//! Why a connection is closed, the close code each reason sends, and the
//! reason text: compact JSON with retry advice (SPEC-v2 §6).
//!
//! One enum for every close the server initiates, so each reason maps to
//! exactly one code of SPEC §3 (or RFC 6455 for protocol failures) and one
//! `{"code", "retry", "retry_after"?, "dropped"?}` reason. The reason is
//! built once per close, when the close frame is made; nothing here is on
//! the per-message path. The values a reason carries (the drawn
//! `retry_after` of a shutdown, a slow consumer's drop count) are chosen by
//! the caller; this module only formats them.

use std::fmt::Write as _;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

/// The WebSocket limit on a close reason (RFC 6455 §5.5: 125-byte control
/// payload, 2 of them the code).
pub const MAX_REASON_BYTES: usize = 123;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000: a SPEC close code the server never starts today (a client's
    /// close is echoed by tungstenite), kept so every code has its reason.
    #[allow(dead_code)]
    Normal,
    /// 1001; the reconnect advice drawn for this connection, in ms.
    ShuttingDown { retry_after_ms: u64 },
    /// 1002: the client broke RFC 6455 framing.
    ProtocolViolation,
    /// 1007: a text message that is not UTF-8.
    InvalidPayload,
    /// 1008; `retry_after` of the rate limit (whole seconds, ≥ 1).
    RateLimitAbuse { retry_after_secs: u64 },
    /// 1009
    MessageTooBig,
    /// 1011: a SPEC close code never sent today (a shard panic ends the
    /// process rather than closing its connections), kept likewise.
    #[allow(dead_code)]
    InternalError,
    /// 4000
    ConnectionTimeout,
    /// 4001
    TokenExpired,
    /// 4003: `DELETE /connections/{id}` (or the library's disconnect).
    Disconnected,
    /// 4003: the user was deactivated.
    UserInactive,
    /// 4008; messages not delivered to it: the one that overflowed plus
    /// those discarded from its queue (the caller gives the first part,
    /// the close adds the second).
    SlowConsumer { dropped: u64 },
    /// 4009: `--max-connection-age`.
    ConnectionAged,
    /// 4401: a v1 401 refusal in accept-then-close mode.
    Unauthorized,
    /// 4429: a v1 429 refusal in accept-then-close mode.
    TooManyConnections { retry_after_secs: u64 },
    /// 4503: a v1 503 refusal in accept-then-close mode.
    ServerAtCapacity { retry_after_secs: u64 },
}

/// What a client should do after a close (SPEC-v2 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Do not reconnect by yourself.
    None,
    /// Get a new token, reconnect at once.
    Refresh,
    /// Wait at least `retry_after` (1 s if absent), then exponential
    /// backoff with full jitter.
    Backoff,
    /// Reconnect after a random 0–1 s.
    Now,
}

impl Retry {
    pub fn as_str(self) -> &'static str {
        match self {
            Retry::None => "none",
            Retry::Refresh => "refresh",
            Retry::Backoff => "backoff",
            Retry::Now => "now",
        }
    }
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::ShuttingDown { .. } => 1001,
            CloseReason::ProtocolViolation => 1002,
            CloseReason::InvalidPayload => 1007,
            CloseReason::RateLimitAbuse { .. } => 1008,
            CloseReason::MessageTooBig => 1009,
            CloseReason::InternalError => 1011,
            CloseReason::ConnectionTimeout => 4000,
            CloseReason::TokenExpired => 4001,
            CloseReason::Disconnected | CloseReason::UserInactive => 4003,
            CloseReason::SlowConsumer { .. } => 4008,
            CloseReason::ConnectionAged => 4009,
            CloseReason::Unauthorized => 4401,
            CloseReason::TooManyConnections { .. } => 4429,
            CloseReason::ServerAtCapacity { .. } => 4503,
        }
    }

    /// The reason's `code` (SPEC-v2 §6; 1002 and 1007 are not tabled
    /// there, docs/PROTOCOL.md names them).
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Normal => "NORMAL",
            CloseReason::ShuttingDown { .. } => "SHUTDOWN",
            CloseReason::ProtocolViolation => "PROTOCOL_ERROR",
            CloseReason::InvalidPayload => "INVALID_PAYLOAD",
            CloseReason::RateLimitAbuse { .. } => "RATE_LIMITED",
            CloseReason::MessageTooBig => "MESSAGE_TOO_BIG",
            CloseReason::InternalError => "INTERNAL_ERROR",
            CloseReason::ConnectionTimeout => "CONNECTION_TIMEOUT",
            CloseReason::TokenExpired => "TOKEN_EXPIRED",
            CloseReason::Disconnected => "DISCONNECTED",
            CloseReason::UserInactive => "USER_INACTIVE",
            CloseReason::SlowConsumer { .. } => "SLOW_CONSUMER",
            CloseReason::ConnectionAged => "CONNECTION_AGED",
            CloseReason::Unauthorized => "UNAUTHORIZED",
            CloseReason::TooManyConnections { .. } => "TOO_MANY_CONNECTIONS",
            CloseReason::ServerAtCapacity { .. } => "SERVER_AT_CAPACITY",
        }
    }

    pub fn retry(self) -> Retry {
        match self {
            CloseReason::Normal | CloseReason::Disconnected | CloseReason::UserInactive => {
                Retry::None
            }
            CloseReason::TokenExpired | CloseReason::Unauthorized => Retry::Refresh,
            CloseReason::ConnectionTimeout | CloseReason::ConnectionAged => Retry::Now,
            CloseReason::ShuttingDown { .. }
            | CloseReason::ProtocolViolation
            | CloseReason::InvalidPayload
            | CloseReason::RateLimitAbuse { .. }
            | CloseReason::MessageTooBig
            | CloseReason::InternalError
            | CloseReason::SlowConsumer { .. }
            | CloseReason::TooManyConnections { .. }
            | CloseReason::ServerAtCapacity { .. } => Retry::Backoff,
        }
    }

    /// Label for logs.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::ShuttingDown { .. } => "shutdown",
            CloseReason::ProtocolViolation => "protocol_error",
            CloseReason::InvalidPayload => "invalid_utf8",
            CloseReason::RateLimitAbuse { .. } => "rate_limit_abuse",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::InternalError => "internal_error",
            CloseReason::ConnectionTimeout => "timeout",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::Disconnected => "disconnected",
            CloseReason::UserInactive => "user_inactive",
            CloseReason::SlowConsumer { .. } => "slow_consumer",
            CloseReason::ConnectionAged => "connection_aged",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::TooManyConnections { .. } => "too_many_connections",
            CloseReason::ServerAtCapacity { .. } => "server_at_capacity",
        }
    }

    /// The compact JSON reason, at most [`MAX_REASON_BYTES`]: every part
    /// is a fixed ASCII name or an integer, so no escaping is needed and
    /// the longest (a u64 at its maximum) stays under 90 bytes.
    pub fn reason_json(self) -> String {
        let mut out = String::with_capacity(80);
        let _ = write!(
            out,
            r#"{{"code":"{}","retry":"{}""#,
            self.name(),
            self.retry().as_str()
        );
        match self {
            CloseReason::ShuttingDown { retry_after_ms } => {
                out.push_str(r#","retry_after":"#);
                push_seconds(&mut out, retry_after_ms);
            }
            CloseReason::RateLimitAbuse { retry_after_secs }
            | CloseReason::TooManyConnections { retry_after_secs }
            | CloseReason::ServerAtCapacity { retry_after_secs } => {
                let _ = write!(out, r#","retry_after":{retry_after_secs}"#);
            }
            CloseReason::SlowConsumer { dropped } => {
                let _ = write!(out, r#","dropped":{dropped}"#);
            }
            _ => {}
        }
        out.push('}');
        debug_assert!(out.len() <= MAX_REASON_BYTES, "{out}");
        out
    }

    pub fn frame(self) -> CloseFrame {
        CloseFrame {
            code: CloseCode::from(self.code()),
            reason: self.reason_json().into(),
        }
    }
}

/// `ms` as seconds with up to 3 decimals and no trailing zeros: 2345 →
/// `2.345`, 2300 → `2.3`, 2000 → `2`.
fn push_seconds(out: &mut String, ms: u64) {
    let _ = write!(out, "{}", ms / 1000);
    let frac = ms % 1000;
    if frac != 0 {
        let digits = format!("{frac:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_spec() {
        let table = [
            (CloseReason::Normal, 1000),
            (CloseReason::ShuttingDown { retry_after_ms: 0 }, 1001),
            (
                CloseReason::RateLimitAbuse {
                    retry_after_secs: 1,
                },
                1008,
            ),
            (CloseReason::MessageTooBig, 1009),
            (CloseReason::InternalError, 1011),
            (CloseReason::ConnectionTimeout, 4000),
            (CloseReason::TokenExpired, 4001),
            (CloseReason::Disconnected, 4003),
            (CloseReason::UserInactive, 4003),
            (CloseReason::SlowConsumer { dropped: 0 }, 4008),
            (CloseReason::ConnectionAged, 4009),
            (CloseReason::Unauthorized, 4401),
            (
                CloseReason::TooManyConnections {
                    retry_after_secs: 5,
                },
                4429,
            ),
            (
                CloseReason::ServerAtCapacity {
                    retry_after_secs: 5,
                },
                4503,
            ),
        ];
        for (reason, code) in table {
            assert_eq!(reason.code(), code);
            assert_eq!(u16::from(reason.frame().code), code);
        }
    }

    #[test]
    fn reasons_are_compact_json_with_the_tabled_advice() {
        let cases = [
            (CloseReason::Normal, r#"{"code":"NORMAL","retry":"none"}"#),
            (
                CloseReason::ShuttingDown {
                    retry_after_ms: 2345,
                },
                r#"{"code":"SHUTDOWN","retry":"backoff","retry_after":2.345}"#,
            ),
            (
                CloseReason::ShuttingDown {
                    retry_after_ms: 2300,
                },
                r#"{"code":"SHUTDOWN","retry":"backoff","retry_after":2.3}"#,
            ),
            (
                CloseReason::ShuttingDown {
                    retry_after_ms: 5000,
                },
                r#"{"code":"SHUTDOWN","retry":"backoff","retry_after":5}"#,
            ),
            (
                CloseReason::ShuttingDown { retry_after_ms: 7 },
                r#"{"code":"SHUTDOWN","retry":"backoff","retry_after":0.007}"#,
            ),
            (
                CloseReason::RateLimitAbuse {
                    retry_after_secs: 42,
                },
                r#"{"code":"RATE_LIMITED","retry":"backoff","retry_after":42}"#,
            ),
            (
                CloseReason::ConnectionTimeout,
                r#"{"code":"CONNECTION_TIMEOUT","retry":"now"}"#,
            ),
            (
                CloseReason::TokenExpired,
                r#"{"code":"TOKEN_EXPIRED","retry":"refresh"}"#,
            ),
            (
                CloseReason::UserInactive,
                r#"{"code":"USER_INACTIVE","retry":"none"}"#,
            ),
            (
                CloseReason::SlowConsumer { dropped: 12 },
                r#"{"code":"SLOW_CONSUMER","retry":"backoff","dropped":12}"#,
            ),
            (
                CloseReason::ConnectionAged,
                r#"{"code":"CONNECTION_AGED","retry":"now"}"#,
            ),
            (
                CloseReason::Unauthorized,
                r#"{"code":"UNAUTHORIZED","retry":"refresh"}"#,
            ),
        ];
        for (reason, json) in cases {
            assert_eq!(reason.reason_json(), json);
            let parsed: serde_json::Value = serde_json::from_str(json).expect("JSON");
            assert_eq!(parsed["code"], reason.name());
        }
    }

    #[test]
    fn the_longest_reasons_fit_the_websocket_limit() {
        for reason in [
            CloseReason::SlowConsumer { dropped: u64::MAX },
            CloseReason::TooManyConnections {
                retry_after_secs: u64::MAX,
            },
            CloseReason::ShuttingDown {
                retry_after_ms: u64::MAX,
            },
        ] {
            assert!(reason.reason_json().len() <= MAX_REASON_BYTES);
        }
    }
}
