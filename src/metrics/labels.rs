//! The label values of the labelled metrics, one enum per label.
//!
//! Each enum owns its wire labels (`label()`, a match, so a new variant
//! cannot be left without one) and its rendering order (`ALL`). The
//! position in `ALL` is the counter's slot in [`super::Metrics`]; a test
//! checks that `index()` and `ALL` agree.

use crate::protocol::Event;

/// Client message types as counted in `wsgate_messages_in_total{type}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InKind {
    Ping,
    Heartbeat,
    Subscribe,
    Unsubscribe,
    UploadCancel,
    AuthRefresh,
    Resume,
    /// Frames that were not a valid client message (bad JSON, binary, unknown type).
    Invalid,
}

impl InKind {
    pub const ALL: [InKind; 8] = [
        InKind::Ping,
        InKind::Heartbeat,
        InKind::Subscribe,
        InKind::Unsubscribe,
        InKind::UploadCancel,
        InKind::AuthRefresh,
        InKind::Resume,
        InKind::Invalid,
    ];

    /// The client message type names are the labels, so the wire name of a
    /// valid type maps back to its kind; anything else is `Invalid`.
    pub fn from_type_name(name: &str) -> InKind {
        match name {
            "ping" => InKind::Ping,
            "heartbeat" => InKind::Heartbeat,
            "subscribe" => InKind::Subscribe,
            "unsubscribe" => InKind::Unsubscribe,
            "upload.cancel" => InKind::UploadCancel,
            "auth.refresh" => InKind::AuthRefresh,
            "resume" => InKind::Resume,
            _ => InKind::Invalid,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            InKind::Ping => "ping",
            InKind::Heartbeat => "heartbeat",
            InKind::Subscribe => "subscribe",
            InKind::Unsubscribe => "unsubscribe",
            InKind::UploadCancel => "upload.cancel",
            InKind::AuthRefresh => "auth.refresh",
            InKind::Resume => "resume",
            InKind::Invalid => "invalid",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Server message types as counted in `wsgate_messages_out_total{type}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutKind {
    Event(Event),
    ConnectionEstablished,
    Pong,
    HeartbeatAck,
    SubscriptionConfirmed,
    UnsubscriptionConfirmed,
    UploadCancelAcknowledged,
    AuthRefreshed,
    TokenExpiring,
    Error,
    Resumed,
}

impl OutKind {
    /// The kinds that are not events, in rendering order (after the events).
    const NON_EVENTS: [OutKind; 10] = [
        OutKind::ConnectionEstablished,
        OutKind::Pong,
        OutKind::HeartbeatAck,
        OutKind::SubscriptionConfirmed,
        OutKind::UnsubscriptionConfirmed,
        OutKind::UploadCancelAcknowledged,
        OutKind::AuthRefreshed,
        OutKind::TokenExpiring,
        OutKind::Error,
        OutKind::Resumed,
    ];
    pub const COUNT: usize = Event::COUNT + Self::NON_EVENTS.len();

    /// Every kind in rendering order: the events in their order, then the rest.
    pub fn all() -> impl Iterator<Item = OutKind> {
        Event::ALL
            .into_iter()
            .map(OutKind::Event)
            .chain(Self::NON_EVENTS)
    }

    pub fn label(self) -> &'static str {
        match self {
            OutKind::Event(event) => event.as_str(),
            OutKind::ConnectionEstablished => "connection.established",
            OutKind::Pong => "pong",
            OutKind::HeartbeatAck => "heartbeat.ack",
            OutKind::SubscriptionConfirmed => "subscription.confirmed",
            OutKind::UnsubscriptionConfirmed => "unsubscription.confirmed",
            OutKind::UploadCancelAcknowledged => "upload.cancel.acknowledged",
            OutKind::AuthRefreshed => "auth.refreshed",
            OutKind::TokenExpiring => "token.expiring",
            OutKind::Error => "error",
            OutKind::Resumed => "resumed",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            OutKind::Event(event) => event.index(),
            OutKind::ConnectionEstablished => Event::COUNT,
            OutKind::Pong => Event::COUNT + 1,
            OutKind::HeartbeatAck => Event::COUNT + 2,
            OutKind::SubscriptionConfirmed => Event::COUNT + 3,
            OutKind::UnsubscriptionConfirmed => Event::COUNT + 4,
            OutKind::UploadCancelAcknowledged => Event::COUNT + 5,
            OutKind::AuthRefreshed => Event::COUNT + 6,
            OutKind::TokenExpiring => Event::COUNT + 7,
            OutKind::Error => Event::COUNT + 8,
            OutKind::Resumed => Event::COUNT + 9,
        }
    }
}

/// Why a WebSocket handshake was refused, as in
/// `wsgate_upgrades_refused_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    BadRequest,
    Unauthorized,
    TooManyConnections,
    ServerAtCapacity,
    /// Over `--connection-rate-limit`.
    ConnectionRate,
    /// Over `--max-pending-connections`: closed at accept, no HTTP answer.
    TooManyPending,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 6] = [
        RefusalReason::BadRequest,
        RefusalReason::Unauthorized,
        RefusalReason::TooManyConnections,
        RefusalReason::ServerAtCapacity,
        RefusalReason::ConnectionRate,
        RefusalReason::TooManyPending,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::BadRequest => "bad_request",
            RefusalReason::Unauthorized => "unauthorized",
            RefusalReason::TooManyConnections => "too_many_connections",
            RefusalReason::ServerAtCapacity => "server_at_capacity",
            RefusalReason::ConnectionRate => "connection_rate",
            RefusalReason::TooManyPending => "too_many_pending",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// How an `auth.refresh` ended, as in `wsgate_token_refresh_total{result}`
/// (SPEC-v2 §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshResult {
    Ok,
    /// `TOKEN_INVALID`.
    Invalid,
    /// `TOKEN_SUB_MISMATCH`.
    SubMismatch,
}

impl RefreshResult {
    pub const ALL: [RefreshResult; 3] = [
        RefreshResult::Ok,
        RefreshResult::Invalid,
        RefreshResult::SubMismatch,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RefreshResult::Ok => "ok",
            RefreshResult::Invalid => "invalid",
            RefreshResult::SubMismatch => "sub_mismatch",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Why a message was not delivered, as in
/// `wsgate_messages_dropped_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A client message over the rate limit.
    RateLimited,
    /// The message that overflowed a connection's queue, and those
    /// discarded with it when the slow consumer was closed.
    SlowConsumer,
    /// A delivery to a connection already closing, or messages still
    /// queued when a connection went away.
    ConnectionClosing,
    WebhookQueueFull,
    WebhookFailed,
    /// Messages still queued when the socket failed (a write error, or a
    /// reset seen first on read).
    WriteFailed,
    /// An event not sent to the other nodes: the backplane link was down
    /// (or Redis failed the publish).
    BackplaneDown,
    /// Events of another node this node never received (a gap in that
    /// node's numbering, e.g. while this node's link was down).
    BackplaneMissed,
    /// An event not sent to the other nodes: the backplane's outbound
    /// queue was full (entries or bytes).
    BackplaneQueueFull,
    /// An event from another node over this node's `--max-message-size`.
    BackplaneOversize,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::RateLimited,
        DropReason::SlowConsumer,
        DropReason::ConnectionClosing,
        DropReason::WebhookQueueFull,
        DropReason::WebhookFailed,
        DropReason::WriteFailed,
        DropReason::BackplaneDown,
        DropReason::BackplaneMissed,
        DropReason::BackplaneQueueFull,
        DropReason::BackplaneOversize,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::RateLimited => "rate_limited",
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::ConnectionClosing => "connection_closing",
            DropReason::WebhookQueueFull => "webhook_queue_full",
            DropReason::WebhookFailed => "webhook_failed",
            DropReason::WriteFailed => "write_failed",
            DropReason::BackplaneDown => "backplane_down",
            DropReason::BackplaneMissed => "backplane_missed",
            DropReason::BackplaneQueueFull => "backplane_queue_full",
            DropReason::BackplaneOversize => "backplane_oversize",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// The stream kind of an append, as in `wsgate_history_appends_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendKind {
    User,
    Broadcast,
    Event,
    /// Topic streams (SPEC-v2 §4): counted once topics exist.
    Topic,
}

impl AppendKind {
    pub const ALL: [AppendKind; 4] = [
        AppendKind::User,
        AppendKind::Broadcast,
        AppendKind::Event,
        AppendKind::Topic,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AppendKind::User => "user",
            AppendKind::Broadcast => "broadcast",
            AppendKind::Event => "event",
            AppendKind::Topic => "topic",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// One given position's outcome, as in `wsgate_recovery_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryResult {
    Recovered,
    HistoryDisabled,
    Unavailable,
    EpochChanged,
    OffsetAhead,
    TooMany,
    TooOld,
}

impl RecoveryResult {
    pub const ALL: [RecoveryResult; 7] = [
        RecoveryResult::Recovered,
        RecoveryResult::HistoryDisabled,
        RecoveryResult::Unavailable,
        RecoveryResult::EpochChanged,
        RecoveryResult::OffsetAhead,
        RecoveryResult::TooMany,
        RecoveryResult::TooOld,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RecoveryResult::Recovered => "recovered",
            RecoveryResult::HistoryDisabled => "history_disabled",
            RecoveryResult::Unavailable => "unavailable",
            RecoveryResult::EpochChanged => "epoch_changed",
            RecoveryResult::OffsetAhead => "offset_ahead",
            RecoveryResult::TooMany => "too_many",
            RecoveryResult::TooOld => "too_old",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Why a stream's epoch began or ended, as in
/// `wsgate_epoch_changes_total{cause}`: `created` when a stream gets new
/// metadata, the others when its metadata goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochCause {
    Created,
    Expired,
    Deleted,
    Evicted,
}

impl EpochCause {
    pub const ALL: [EpochCause; 4] = [
        EpochCause::Created,
        EpochCause::Expired,
        EpochCause::Deleted,
        EpochCause::Evicted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EpochCause::Created => "created",
            EpochCause::Expired => "expired",
            EpochCause::Deleted => "deleted",
            EpochCause::Evicted => "evicted",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// The close codes of the closes the server starts, as in
/// `wsgate_closes_total{code}` (the numeric code: what browsers and logs
/// show; the two kinds of 4003 share it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClosedCode {
    Normal,
    GoingAway,
    ProtocolError,
    InvalidPayload,
    PolicyViolation,
    MessageTooBig,
    InternalError,
    ConnectionTimeout,
    TokenExpired,
    Disconnected,
    SlowConsumer,
    ConnectionAged,
    Unauthorized,
    TooManyConnections,
    ServerAtCapacity,
}

impl ClosedCode {
    pub const ALL: [ClosedCode; 15] = [
        ClosedCode::Normal,
        ClosedCode::GoingAway,
        ClosedCode::ProtocolError,
        ClosedCode::InvalidPayload,
        ClosedCode::PolicyViolation,
        ClosedCode::MessageTooBig,
        ClosedCode::InternalError,
        ClosedCode::ConnectionTimeout,
        ClosedCode::TokenExpired,
        ClosedCode::Disconnected,
        ClosedCode::SlowConsumer,
        ClosedCode::ConnectionAged,
        ClosedCode::Unauthorized,
        ClosedCode::TooManyConnections,
        ClosedCode::ServerAtCapacity,
    ];

    /// The label of a close code the server sends; `None` for any other.
    pub fn of(code: u16) -> Option<ClosedCode> {
        ClosedCode::ALL.into_iter().find(|c| c.code() == code)
    }

    fn code(self) -> u16 {
        match self {
            ClosedCode::Normal => 1000,
            ClosedCode::GoingAway => 1001,
            ClosedCode::ProtocolError => 1002,
            ClosedCode::InvalidPayload => 1007,
            ClosedCode::PolicyViolation => 1008,
            ClosedCode::MessageTooBig => 1009,
            ClosedCode::InternalError => 1011,
            ClosedCode::ConnectionTimeout => 4000,
            ClosedCode::TokenExpired => 4001,
            ClosedCode::Disconnected => 4003,
            ClosedCode::SlowConsumer => 4008,
            ClosedCode::ConnectionAged => 4009,
            ClosedCode::Unauthorized => 4401,
            ClosedCode::TooManyConnections => 4429,
            ClosedCode::ServerAtCapacity => 4503,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ClosedCode::Normal => "1000",
            ClosedCode::GoingAway => "1001",
            ClosedCode::ProtocolError => "1002",
            ClosedCode::InvalidPayload => "1007",
            ClosedCode::PolicyViolation => "1008",
            ClosedCode::MessageTooBig => "1009",
            ClosedCode::InternalError => "1011",
            ClosedCode::ConnectionTimeout => "4000",
            ClosedCode::TokenExpired => "4001",
            ClosedCode::Disconnected => "4003",
            ClosedCode::SlowConsumer => "4008",
            ClosedCode::ConnectionAged => "4009",
            ClosedCode::Unauthorized => "4401",
            ClosedCode::TooManyConnections => "4429",
            ClosedCode::ServerAtCapacity => "4503",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// `ALL[i].index() == i` and the labels are distinct, for every enum:
    /// a reordered `ALL` or a mis-numbered `index()` would put one label's
    /// count under another.
    #[test]
    fn all_is_in_index_order_with_distinct_labels() {
        fn check<K: Copy>(kinds: &[K], index: fn(K) -> usize, label: fn(K) -> &'static str) {
            for (i, &kind) in kinds.iter().enumerate() {
                assert_eq!(index(kind), i, "{}", label(kind));
            }
            let labels: HashSet<_> = kinds.iter().map(|&k| label(k)).collect();
            assert_eq!(labels.len(), kinds.len());
        }
        check(&InKind::ALL, InKind::index, InKind::label);
        let out: Vec<OutKind> = OutKind::all().collect();
        assert_eq!(out.len(), OutKind::COUNT);
        check(&out, OutKind::index, OutKind::label);
        check(
            &RefusalReason::ALL,
            RefusalReason::index,
            RefusalReason::label,
        );
        check(&DropReason::ALL, DropReason::index, DropReason::label);
        check(
            &RefreshResult::ALL,
            RefreshResult::index,
            RefreshResult::label,
        );
        check(&AppendKind::ALL, AppendKind::index, AppendKind::label);
        check(
            &RecoveryResult::ALL,
            RecoveryResult::index,
            RecoveryResult::label,
        );
        check(&EpochCause::ALL, EpochCause::index, EpochCause::label);
        check(&ClosedCode::ALL, ClosedCode::index, ClosedCode::label);
        for code in ClosedCode::ALL {
            assert_eq!(code.label(), code.code().to_string());
            assert_eq!(ClosedCode::of(code.code()), Some(code));
        }
    }

    #[test]
    fn in_kind_labels_are_the_client_type_names() {
        for kind in InKind::ALL {
            if kind != InKind::Invalid {
                assert_eq!(InKind::from_type_name(kind.label()), kind);
            }
        }
        assert_eq!(InKind::from_type_name("pong"), InKind::Invalid);
    }
}
