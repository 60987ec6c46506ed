//! Why a connection is closed, and the close code each reason sends.
//!
//! One enum for every close the server initiates, so each reason maps to
//! exactly one code of SPEC §3 (or RFC 6455 for protocol failures).

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000: a SPEC close code the server never starts today (a client's
    /// close is echoed by tungstenite), kept so every code has its reason.
    #[allow(dead_code)]
    Normal,
    /// 1001
    ShuttingDown,
    /// 1002: the client broke RFC 6455 framing.
    ProtocolViolation,
    /// 1007: a text message that is not UTF-8.
    InvalidPayload,
    /// 1008
    RateLimitAbuse,
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
    /// 4003
    Disconnected,
    /// 4008
    SlowConsumer,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::ShuttingDown => 1001,
            CloseReason::ProtocolViolation => 1002,
            CloseReason::InvalidPayload => 1007,
            CloseReason::RateLimitAbuse => 1008,
            CloseReason::MessageTooBig => 1009,
            CloseReason::InternalError => 1011,
            CloseReason::ConnectionTimeout => 4000,
            CloseReason::TokenExpired => 4001,
            CloseReason::Disconnected => 4003,
            CloseReason::SlowConsumer => 4008,
        }
    }

    /// Short human text sent as the close reason (well under 123 bytes).
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal close",
            CloseReason::ShuttingDown => "server shutting down",
            CloseReason::ProtocolViolation => "protocol error",
            CloseReason::InvalidPayload => "invalid UTF-8 in text message",
            CloseReason::RateLimitAbuse => "rate limit exceeded repeatedly",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::InternalError => "internal error",
            CloseReason::ConnectionTimeout => "connection timeout",
            CloseReason::TokenExpired => "token expired",
            CloseReason::Disconnected => "disconnected by server",
            CloseReason::SlowConsumer => "slow consumer",
        }
    }

    /// Label for `wsgate_messages_dropped_total` and logs.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::ShuttingDown => "shutdown",
            CloseReason::ProtocolViolation => "protocol_error",
            CloseReason::InvalidPayload => "invalid_utf8",
            CloseReason::RateLimitAbuse => "rate_limit_abuse",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::InternalError => "internal_error",
            CloseReason::ConnectionTimeout => "timeout",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::Disconnected => "disconnected",
            CloseReason::SlowConsumer => "slow_consumer",
        }
    }

    pub fn frame(self) -> CloseFrame {
        CloseFrame {
            code: CloseCode::from(self.code()),
            reason: self.text().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_spec() {
        let table = [
            (CloseReason::Normal, 1000),
            (CloseReason::ShuttingDown, 1001),
            (CloseReason::RateLimitAbuse, 1008),
            (CloseReason::MessageTooBig, 1009),
            (CloseReason::InternalError, 1011),
            (CloseReason::ConnectionTimeout, 4000),
            (CloseReason::TokenExpired, 4001),
            (CloseReason::Disconnected, 4003),
            (CloseReason::SlowConsumer, 4008),
        ];
        for (reason, code) in table {
            assert_eq!(reason.code(), code);
            assert_eq!(u16::from(reason.frame().code), code);
            assert!(reason.text().len() < 123);
        }
    }
}
