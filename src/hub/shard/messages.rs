//! What the shard does with messages: a client's frames (rate limit,
//! parse, dispatch, reply), `--conformance-echo`, and deliveries from the
//! hub. Socket work is left to `io`.

use std::sync::Arc;
use std::time::Instant;

use tungstenite::protocol::frame::coding::Data;
use tungstenite::Message;

use super::{enqueue, Shard};
use crate::connection::dispatch::{dispatch, upload_cancel_webhook_body, CancelledUpload};
use crate::connection::outbound::Chunk;
use crate::connection::Connection;
use crate::hub::command::{Delivery, ShardTarget};
use crate::limits::rate::retry_after_secs;
use crate::limits::RateDecision;
use crate::metrics::{DropReason, InKind, OutKind};
use crate::protocol::envelope::EncodedMessage;
use crate::protocol::{client, clock, server, Event, EventSet, ProtocolError};
use crate::ws::{frame, CloseReason};

impl Shard {
    pub(super) fn handle_message(&mut self, key: usize, message: Message, now: Instant) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if !conn.is_open() {
            return;
        }
        if conn.echo {
            self.echo(key, message);
            return;
        }
        let parsed = match &message {
            Message::Text(text) => client::parse(text.as_str()),
            Message::Binary(_) => client::ParsedMessage {
                reply_to: None,
                request: Err(ProtocolError::invalid_message(
                    "Binary frames are not accepted; send JSON text frames",
                )),
            },
            _ => return,
        };
        conn.messages_in += 1;
        conn.last_activity_ms = clock::unix_millis();
        let user = conn.user().clone();
        let current = conn.subscriptions;
        let kind = parsed
            .request
            .as_ref()
            .map_or(InKind::Invalid, |r| InKind::from_type_name(r.type_name()));
        self.metrics.message_in(kind);
        let reply_to = parsed.reply_to.as_ref();
        if let RateDecision::Limited {
            retry_after,
            abusive,
        } = self.limiter.check(&user, now)
        {
            self.metrics.rate_limited();
            let error = ProtocolError::rate_limited(retry_after_secs(retry_after));
            self.reply(
                key,
                server::error(&self.ids, &error, reply_to),
                OutKind::Error,
            );
            if abusive {
                tracing::info!(shard = self.index, user = %user, "closing a connection that keeps flooding");
                self.close(key, CloseReason::RateLimitAbuse);
            }
            return;
        }
        let request = match parsed.request {
            Ok(request) => request,
            Err(error) => {
                self.reply(
                    key,
                    server::error(&self.ids, &error, reply_to),
                    OutKind::Error,
                );
                return;
            }
        };
        let outcome = dispatch(&self.ids, request, current, reply_to);
        self.reply(key, outcome.reply, outcome.reply_kind);
        if let Some(next) = outcome.subscriptions {
            self.set_subscriptions(key, next);
        }
        if let Some(upload) = outcome.cancelled_upload {
            self.upload_cancelled(key, &user, &upload);
        }
    }

    /// Sends a data message back unchanged, through the normal write path.
    pub(super) fn echo(&mut self, key: usize, message: Message) {
        let (kind, payload) = match &message {
            Message::Text(text) => (Data::Text, text.as_bytes()),
            Message::Binary(bytes) => (Data::Binary, &bytes[..]),
            _ => return,
        };
        let framed = frame::data_frame(kind, |buf| buf.extend_from_slice(payload));
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if !enqueue(
            conn,
            key,
            Chunk::from(framed),
            self.settings.max_queued_bytes,
            &mut self.dirty,
        ) {
            self.overflowed(key);
        }
    }

    pub(super) fn reply(&mut self, key: usize, message: EncodedMessage, kind: OutKind) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if !enqueue(
            conn,
            key,
            Chunk::from(message.frame),
            self.settings.max_queued_bytes,
            &mut self.dirty,
        ) {
            self.overflowed(key);
            return;
        }
        self.metrics.messages_out(kind, 1);
    }

    /// A no-op when the connection was closed while its message was being
    /// handled (e.g. the reply overflowed): see `index`.
    pub(super) fn set_subscriptions(&mut self, key: usize, next: EventSet) {
        if let Some(conn) = self.connections.get_mut(key) {
            self.indexes.set_subscriptions(key, conn, next);
        }
    }

    /// `upload.cancelled` to this user's subscribed connections (all in
    /// this shard), then the webhook call.
    pub(super) fn upload_cancelled(
        &mut self,
        key: usize,
        user: &Arc<str>,
        upload: &CancelledUpload,
    ) {
        let connection_id = self.connections[key].id.to_string();
        let timestamp = clock::now_rfc3339();
        let data = server::upload_cancelled_data(&upload.upload_id, &connection_id);
        let message = server::upload_cancelled(&self.ids, &data, &timestamp);
        self.backplane.publish_to_subscribed_user(
            user,
            &message.id,
            &timestamp,
            Event::UploadCancelled,
            &data,
        );
        let frame: Arc<[u8]> = Arc::from(message.frame);
        let mut overflowed = Vec::new();
        let mut delivered = 0;
        for &k in self.indexes.user(user) {
            let Some(conn) = self.connections.get_mut(k) else {
                debug_assert!(false, "indexed key {k} has no connection");
                continue;
            };
            debug_assert!(conn.is_open(), "indexed key {k} is closing");
            if !conn.subscriptions.contains(Event::UploadCancelled) {
                continue;
            }
            if enqueue(
                conn,
                k,
                Chunk::Shared(frame.clone()),
                self.settings.max_queued_bytes,
                &mut self.dirty,
            ) {
                delivered += 1;
            } else {
                overflowed.push(k);
            }
        }
        for k in overflowed {
            self.overflowed(k);
        }
        self.metrics
            .messages_out(OutKind::Event(Event::UploadCancelled), delivered);
        if let Some(webhook) = &self.webhook {
            webhook.submit(upload_cancel_webhook_body(
                &self.ids,
                user,
                &connection_id,
                upload,
            ));
        }
    }

    pub(super) fn deliver(&mut self, delivery: Delivery) {
        let limit = self.settings.max_queued_bytes;
        let frame = delivery.frame;
        let mut delivered = 0usize;
        let mut closing = 0u64;
        let mut overflowed: Vec<usize> = Vec::new();
        let mut offer = |conn: &mut Connection, key: usize, dirty: &mut Vec<usize>| {
            if !conn.is_open() {
                closing += 1;
                return;
            }
            if enqueue(conn, key, Chunk::Shared(frame.clone()), limit, dirty) {
                delivered += 1;
            } else {
                overflowed.push(key);
            }
        };
        match delivery.target {
            ShardTarget::All => {
                for (key, conn) in self.connections.iter_mut() {
                    offer(conn, key, &mut self.dirty);
                }
            }
            ShardTarget::Subscribers(event) => {
                for &key in self.indexes.subscribers(event) {
                    let Some(conn) = self.connections.get_mut(key) else {
                        debug_assert!(false, "indexed key {key} has no connection");
                        continue;
                    };
                    debug_assert!(conn.is_open(), "indexed key {key} is closing");
                    offer(conn, key, &mut self.dirty);
                }
            }
            ShardTarget::Selected { users, connections } => {
                let mut keys: Vec<usize> = users
                    .iter()
                    .flat_map(|u| self.indexes.user(u))
                    .copied()
                    .chain(connections.into_iter().filter_map(|id| self.lookup(id)))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                for key in keys {
                    if let Some(conn) = self.connections.get_mut(key) {
                        offer(conn, key, &mut self.dirty);
                    }
                }
            }
        }
        if closing > 0 {
            self.metrics.dropped(DropReason::ConnectionClosing, closing);
        }
        if !overflowed.is_empty() {
            self.metrics
                .dropped(DropReason::SlowConsumer, overflowed.len() as u64);
        }
        for key in overflowed {
            self.close(key, CloseReason::SlowConsumer);
        }
        self.metrics.messages_out(delivery.kind, delivered as u64);
        if let Some(report) = delivery.report {
            self.reports.push((report, delivered));
        }
    }
}
