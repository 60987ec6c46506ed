//! What one data message from the client does to its connection: echoed
//! back (`--conformance-echo`), or rate limited, parsed and dispatched,
//! with the reply queued here.
//!
//! What reaches beyond this connection (the subscriber index, the user's
//! other connections, the webhook, leaving `Open`) comes back as
//! [`Handled`] for the shard to carry out, in order, before the next
//! message: the next message's dispatch must see this one's subscriptions.

use std::time::Instant;

use tungstenite::protocol::frame::coding::Data;
use tungstenite::Message;

use super::dispatch::{dispatch, Action, CancelledUpload};
use super::{Chunk, Connection, Limits};
use crate::limits::rate::retry_after_secs;
use crate::limits::{RateDecision, RateLimiter};
use crate::metrics::{InKind, Metrics, OutKind};
use crate::protocol::envelope::EncodedMessage;
use crate::protocol::{client, clock, server, EventSet, MessageIds, ProtocolError};
use crate::ws::{frame, CloseReason};

/// The shard's parts a message may use; borrowed for one message.
pub struct Context<'a> {
    pub ids: &'a MessageIds,
    /// The shard's per-user windows (a user's connections share a shard).
    pub limiter: &'a mut RateLimiter,
    pub metrics: &'a Metrics,
    pub limits: &'a Limits,
    /// Slab keys to flush at the end of the turn.
    pub dirty: &'a mut Vec<usize>,
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
    /// Handles one data message (control frames never get here). A closing
    /// connection ignores what it still receives.
    pub fn on_message(&mut self, message: Message, now: Instant, cx: &mut Context) -> Handled {
        if !self.is_open() {
            return Handled::default();
        }
        if self.echo {
            return Handled {
                overflowed: self.echo(&message, cx),
                then: None,
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
        let outcome = dispatch(cx.ids, request, self.subscriptions, reply_to);
        let overflowed = self.reply(outcome.reply, outcome.reply_kind, cx);
        let then = outcome.action.map(|action| match action {
            Action::Subscriptions(next) => Then::Subscriptions(next),
            Action::CancelUpload(upload) => Then::CancelledUpload(upload),
        });
        Handled { overflowed, then }
    }

    /// Greets a connection just registered with `connection.established`
    /// (an echo connection speaks no gateway protocol).
    pub fn greet(&mut self, cx: &mut Context) -> Handled {
        if self.echo {
            return Handled::default();
        }
        let id = self.id.to_string();
        let established = server::connection_established(cx.ids, &id, self.user());
        Handled {
            overflowed: self.reply(established, OutKind::ConnectionEstablished, cx),
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
    fn reply(&mut self, message: EncodedMessage, kind: OutKind, cx: &mut Context) -> bool {
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
