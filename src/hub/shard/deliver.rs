//! What the shard delivers: deliveries from the hub (to all, to an
//! event's subscribers, to selected users and connections) and what a
//! client message asks beyond its own connection (its subscriptions in the
//! index, `upload.cancelled` to the user's other connections, the
//! backplane and the webhook). Every frame here is one `Arc<[u8]>` shared
//! by all its recipients. Reading, parsing and replying are
//! `crate::connection`'s.

use std::sync::Arc;

use super::Shard;
use crate::connection::dispatch::{upload_cancel_webhook_body, CancelledUpload};
use crate::connection::{Chunk, Connection};
use crate::history::StreamPosition;
use crate::hub::command::{Delivery, ShardTarget};
use crate::metrics::{DropReason, OutKind};
use crate::protocol::{clock, server, Event, EventSet};
use crate::ws::CloseReason;

impl Shard {
    /// A no-op when the connection was closed while its message was being
    /// handled (e.g. the reply overflowed): see `index`.
    pub(super) fn set_subscriptions(&mut self, key: usize, next: EventSet) {
        if let Some(conn) = self.connections.get_mut(key) {
            self.indexes.set_subscriptions(key, conn, next);
        }
    }

    /// `upload.cancelled` to this user's subscribed connections (all in
    /// this shard), then the webhook call.
    pub(super) fn upload_cancelled(&mut self, key: usize, upload: &CancelledUpload) {
        let conn = &self.connections[key];
        let user = conn.user().clone();
        let connection_id = conn.id.to_string();
        let timestamp = clock::now_rfc3339();
        let data = server::upload_cancelled_data(&upload.upload_id, &connection_id);
        let message = server::upload_cancelled(&self.ids, &data, &timestamp);
        self.backplane.publish_to_subscribed_user(
            &user,
            &message.id,
            &timestamp,
            Event::UploadCancelled,
            &data,
        );
        let frame: Arc<[u8]> = Arc::from(message.frame);
        let mut overflowed = Vec::new();
        let mut delivered = 0;
        for &k in self.indexes.user(&user) {
            let Some(conn) = self.connections.get_mut(k) else {
                debug_assert!(false, "indexed key {k} has no connection");
                continue;
            };
            debug_assert!(conn.is_open(), "indexed key {k} is closing");
            if !conn.subscriptions.contains(Event::UploadCancelled) {
                continue;
            }
            if conn
                .queue(
                    Chunk::Shared(frame.clone()),
                    self.limits.max_queued_bytes,
                    &mut self.dirty,
                )
                .is_ok()
            {
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
                &user,
                &connection_id,
                upload,
            ));
        }
    }

    pub(super) fn deliver(&mut self, delivery: Delivery) {
        let limit = self.limits.max_queued_bytes;
        let frame = delivery.frame;
        let position = delivery.position;
        let mut delivered = 0usize;
        let mut closing = 0u64;
        let mut overflowed: Vec<usize> = Vec::new();
        let mut offer = |conn: &mut Connection,
                         key: usize,
                         frame: &Arc<[u8]>,
                         position: Option<&StreamPosition>,
                         dirty: &mut Vec<usize>| {
            if !conn.is_open() {
                closing += 1;
                return;
            }
            if conn.offer(frame, position, limit, dirty).is_ok() {
                delivered += 1;
            } else {
                overflowed.push(key);
            }
        };
        match delivery.target {
            ShardTarget::All => {
                for (key, conn) in self.connections.iter_mut() {
                    offer(conn, key, &frame, position.as_ref(), &mut self.dirty);
                }
            }
            ShardTarget::Subscribers(event) => {
                for &key in self.indexes.subscribers(event) {
                    let Some(conn) = self.connections.get_mut(key) else {
                        debug_assert!(false, "indexed key {key} has no connection");
                        continue;
                    };
                    debug_assert!(conn.is_open(), "indexed key {key} is closing");
                    offer(conn, key, &frame, position.as_ref(), &mut self.dirty);
                }
            }
            ShardTarget::Selected { users, connections } => {
                // Each user's connections get that user's copy (its own
                // stream position when recorded); a listed connection not
                // reached that way gets the shared frame.
                let mut reached: Vec<usize> = Vec::new();
                for user in &users {
                    let (frame, position) = match &user.recorded {
                        Some(recorded) => (&recorded.frame, Some(&recorded.position)),
                        None => (&frame, None),
                    };
                    // The hub lists a user once, and a key has one user.
                    for &key in self.indexes.user(&user.user) {
                        reached.push(key);
                        if let Some(conn) = self.connections.get_mut(key) {
                            offer(conn, key, frame, position, &mut self.dirty);
                        }
                    }
                }
                reached.sort_unstable();
                let mut rest: Vec<usize> = connections
                    .into_iter()
                    .filter_map(|id| self.lookup(id))
                    .filter(|key| reached.binary_search(key).is_err())
                    .collect();
                rest.sort_unstable();
                rest.dedup();
                for key in rest {
                    if let Some(conn) = self.connections.get_mut(key) {
                        offer(conn, key, &frame, None, &mut self.dirty);
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
            self.close(key, CloseReason::SlowConsumer { dropped: 1 });
        }
        self.metrics.messages_out(delivery.kind, delivered as u64);
        if let Some(report) = delivery.report {
            self.reports.push((report, delivered));
        }
    }
}
