//! What one data message from the client does to its connection: echoed
//! back (`--conformance-echo`), or rate limited, parsed and dispatched,
//! with the reply queued here.
//!
//! What reaches beyond this connection (the subscriber index, the user's
//! other connections, the webhook, leaving `Open`) comes back as
//! [`Handled`] for the shard to carry out, in order, before the next
//! message: the next message's dispatch must see this one's subscriptions.
//!
//! `auth.refresh` (SPEC-v2 §3) is checked here, inline on the shard thread,
//! with the shard's [`TokenVerifier`], and completed here (the new `exp`):
//! a token refresh touches only this connection. A message read after the
//! token's deadline is not answered: the 4001 wins.

use std::time::Instant;

use tungstenite::protocol::frame::coding::Data;
use tungstenite::Message;

use super::dispatch::{dispatch, Action, CancelledUpload, TokenCheck};
use super::{Chunk, Connection, Limits};
use crate::auth::TokenVerifier;
use crate::history::History;
use crate::limits::rate::retry_after_secs;
use crate::limits::{RateDecision, RateLimiter};
use crate::metrics::{InKind, Metrics, OutKind, RefreshResult};
use crate::protocol::client::{Positioned, SubscribeFrom};
use crate::protocol::envelope::EncodedMessage;
use crate::protocol::{client, clock, server, ClientRequest, EventSet, MessageIds, ProtocolError};
use crate::ws::{frame, CloseReason};

/// The shard's parts a message may use; borrowed for one message.
pub struct Context<'a> {
    pub ids: &'a MessageIds,
    /// The shard's per-user windows (a user's connections share a shard).
    pub limiter: &'a mut RateLimiter,
    pub metrics: &'a Metrics,
    pub limits: &'a Limits,
    /// Checks `auth.refresh` tokens exactly as the handshake does.
    pub verifier: &'a TokenVerifier,
    /// Slab keys to flush at the end of the turn.
    pub dirty: &'a mut Vec<usize>,
    /// This node's history (read at `resume` and positioned `subscribe`).
    pub history: &'a History,
}

/// What the shard does after a message, in this order.
#[derive(Debug, Default)]
#[must_use]
pub struct Handled {
    /// The reply did not fit in the queue: one message dropped, close 4008.
    pub overflowed: bool,
    pub then: Option<Then>,
}

#[derive(Debug)]
pub enum Then {
    Close(CloseReason),
    /// The connection's complete new subscription set (the index sets it).
    Subscriptions(EventSet),
    /// `upload.cancelled` to the user's subscribed connections, on every
    /// node, then the webhook call.
    CancelledUpload(CancelledUpload),
}

impl Connection {
    /// Handles one data message (control frames never get here), read
    /// completely at `now` / `read_at_ms` (wall clock). A closing connection
    /// ignores what it still receives.
    pub fn on_message(
        &mut self,
        message: Message,
        now: Instant,
        read_at_ms: u64,
        cx: &mut Context,
    ) -> Handled {
        if !self.is_open() {
            return Handled::default();
        }
        let mut handled = self.handle_data(message, now, read_at_ms, cx);
        // Any first message ends a `resume=1` hold (SPEC-v2 §2.2): after
        // its reply, the held events follow.
        if self.is_held() && !handled.overflowed {
            handled.overflowed = self
                .end_hold(cx.limits.max_queued_bytes, cx.dirty, cx.metrics)
                .is_err();
        }
        handled
    }

    fn handle_data(
        &mut self,
        message: Message,
        now: Instant,
        read_at_ms: u64,
        cx: &mut Context,
    ) -> Handled {
        if self.echo {
            return Handled {
                overflowed: self.echo(&message, cx),
                then: None,
            };
        }
        // SPEC-v2 §3: a frame read after the deadline is never answered,
        // even if the coarse sweep has not closed the connection yet; one
        // read before it is handled (and a refresh honoured) whenever its
        // check ends, since the sweep runs after the reads of a turn.
        if self.token.expired(read_at_ms, cx.limits) {
            return Handled {
                overflowed: false,
                then: Some(Then::Close(CloseReason::TokenExpired)),
            };
        }
        let parsed = match &message {
            Message::Text(text) => client::parse(text.as_str()),
            Message::Binary(_) => client::ParsedMessage {
                reply_to: None,
                request: Err(ProtocolError::invalid_message(
                    "Binary frames are not accepted; send JSON text frames",
                )),
            },
            _ => return Handled::default(),
        };
        self.messages_in += 1;
        self.last_activity_ms = clock::unix_millis();
        let kind = parsed
            .request
            .as_ref()
            .map_or(InKind::Invalid, |r| InKind::from_type_name(r.type_name()));
        cx.metrics.message_in(kind);
        let reply_to = parsed.reply_to.as_ref();
        if let RateDecision::Limited {
            retry_after,
            abusive,
        } = cx.limiter.check(self.permit.user(), now)
        {
            cx.metrics.rate_limited();
            let retry_after_secs = retry_after_secs(retry_after);
            let error = ProtocolError::rate_limited(retry_after_secs);
            let overflowed =
                self.reply(server::error(cx.ids, &error, reply_to), OutKind::Error, cx);
            let then = abusive.then(|| {
                tracing::info!(shard = self.id.shard(), user = %self.user(), "closing a connection that keeps flooding");
                Then::Close(CloseReason::RateLimitAbuse { retry_after_secs })
            });
            return Handled { overflowed, then };
        }
        let request = match parsed.request {
            Ok(request) => request,
            Err(error) => {
                return Handled {
                    overflowed: self.reply(
                        server::error(cx.ids, &error, reply_to),
                        OutKind::Error,
                        cx,
                    ),
                    then: None,
                }
            }
        };
        // Deactivated meanwhile: its 4003 is on the way (the deactivation
        // marks the user before it asks the shard to close); no refresh
        // may answer in between.
        if matches!(request, ClientRequest::AuthRefresh { .. }) && self.permit.user_inactive() {
            return Handled {
                overflowed: false,
                then: Some(Then::Close(CloseReason::Disconnected)),
            };
        }
        // With history, every `subscribe` answers with `streams`.
        let request = match request {
            ClientRequest::Subscribe(events) if !matches!(cx.history, History::Disabled) => {
                ClientRequest::Positioned(Positioned::Subscribe(SubscribeFrom {
                    events,
                    since: Vec::new(),
                    cache: false,
                }))
            }
            request => request,
        };
        let outcome = dispatch(cx.ids, request, self.subscriptions, reply_to, |token| {
            self.check_token(token, cx.verifier, cx.metrics)
        });
        let mut overflowed = match outcome.reply {
            Some(reply) => self.reply(reply, outcome.reply_kind, cx),
            None => false,
        };
        let then = match outcome.action {
            None => None,
            Some(Action::Subscriptions(next)) => Some(Then::Subscriptions(next)),
            Some(Action::CancelUpload(upload)) => Some(Then::CancelledUpload(upload)),
            Some(Action::Refreshed(claims)) => {
                self.token.renew(claims.exp);
                if !overflowed {
                    overflowed = self.notify_token_expiring(clock::unix_millis(), cx);
                }
                None
            }
            Some(Action::Positioned(request)) => return self.on_positioned(request, reply_to, cx),
        };
        Handled { overflowed, then }
    }

    /// An `auth.refresh` token, checked like a connecting one (v1 §2:
    /// signature, `exp`, `nbf`, `iss`/`aud`, `sub`, the user not
    /// deactivated), then against this connection's user.
    fn check_token(&self, token: &str, verifier: &TokenVerifier, metrics: &Metrics) -> TokenCheck {
        let (check, result) = match verifier.verify(token) {
            Err(error) => (TokenCheck::Invalid(error), RefreshResult::Invalid),
            Ok(claims) if self.permit.is_inactive(&claims.user_id) => (
                TokenCheck::Invalid(crate::auth::AuthError::UserInactive),
                RefreshResult::Invalid,
            ),
            Ok(claims) if *claims.user_id != **self.user() => {
                (TokenCheck::SubMismatch, RefreshResult::SubMismatch)
            }
            Ok(claims) => (TokenCheck::Valid(claims), RefreshResult::Ok),
        };
        metrics.token_refresh(result);
        check
    }

    /// Sends `token.expiring` if it is due (SPEC-v2 §3: once per token, at
    /// `exp − --token-expiring-notice`, or at once when already inside that
    /// window); `true` when it overflowed the queue.
    pub fn notify_token_expiring(&mut self, unix_ms: u64, cx: &mut Context) -> bool {
        if !self.is_open() || !self.token.notice_due(unix_ms, cx.limits) {
            return false;
        }
        self.token.notice_sent();
        let message =
            server::token_expiry(cx.ids, "token.expiring", self.token.exp(), unix_ms, None);
        let overflowed = self.reply(message, OutKind::TokenExpiring, cx);
        if !overflowed {
            cx.metrics.token_expiring_sent();
        }
        overflowed
    }

    /// Greets a connection just registered with `connection.established`
    /// (an echo connection speaks no gateway protocol).
    pub fn greet(&mut self, cx: &mut Context) -> Handled {
        if self.echo {
            return Handled::default();
        }
        let id = self.id.to_string();
        let now_ms = clock::unix_millis();
        let features = server::features(
            !matches!(cx.history, History::Disabled),
            // Cluster mode does not send cached values yet.
            cx.history.store().is_some() && !cx.history.last_value_rules().is_empty(),
        );
        let established = server::connection_established(
            cx.ids,
            &id,
            self.user(),
            &features,
            self.token.exp(),
            now_ms,
        );
        let overflowed = self.reply(established, OutKind::ConnectionEstablished, cx)
            || self.notify_token_expiring(now_ms, cx);
        Handled {
            overflowed,
            then: None,
        }
    }

    /// Sends a data message back unchanged, through the normal write path;
    /// `true` when it overflowed the queue.
    fn echo(&mut self, message: &Message, cx: &mut Context) -> bool {
        let (kind, payload) = match message {
            Message::Text(text) => (Data::Text, text.as_bytes()),
            Message::Binary(bytes) => (Data::Binary, &bytes[..]),
            _ => return false,
        };
        let framed = frame::data_frame(kind, |buf| buf.extend_from_slice(payload));
        self.queue(Chunk::from(framed), cx.limits.max_queued_bytes, cx.dirty)
            .is_err()
    }

    /// Queues a reply; `true` when it overflowed the queue (not counted as
    /// sent).
    pub(super) fn reply(
        &mut self,
        message: EncodedMessage,
        kind: OutKind,
        cx: &mut Context,
    ) -> bool {
        if self
            .queue(
                Chunk::from(message.frame),
                cx.limits.max_queued_bytes,
                cx.dirty,
            )
            .is_err()
        {
            return true;
        }
        cx.metrics.messages_out(kind, 1);
        false
    }
}
