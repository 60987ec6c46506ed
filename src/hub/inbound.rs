//! What other nodes' messages do on this node: the hub's side of the
//! backplane's [`InboundPort`].
//!
//! Everything here acts on this node only: an event from another node is
//! framed here with that node's id and timestamp and delivered, never
//! republished (the sender already handed it to every node), and dropped
//! (counted) when it is over this node's `--max-message-size`. It must not
//! await delivery to a connection: the backplane's link task is waiting.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::command::{Command, Delivery, Recorded, ShardTarget};
use super::Hub;
use crate::address::{ConnId, Target};
use crate::cluster::InboundPort;
use crate::history::StreamPosition;
use crate::metrics::{DropReason, OutKind};
use crate::protocol::envelope::encode_as;
use crate::protocol::Event;
use crate::ws::{frame, CloseReason};

impl InboundPort for Hub {
    async fn deliver(
        &self,
        id: String,
        timestamp: &str,
        event: Event,
        data: &Value,
        target: &Target,
    ) {
        let Some(frame) = self.remote_frame(id, timestamp, event, data) else {
            return;
        };
        for (index, shard_target) in self.split_target(event, target) {
            if self
                .deliver_unreported(index, shard_target, frame.clone(), event)
                .await
                .is_err()
            {
                return; // shutting down
            }
        }
    }

    async fn deliver_recorded(
        &self,
        frame: Arc<[u8]>,
        event: Event,
        position: StreamPosition,
        target: &Target,
    ) {
        if frame::payload_len(&frame) > self.max_message_size {
            self.metrics.dropped(DropReason::BackplaneOversize, 1);
            return;
        }
        for (index, mut shard_target) in self.split_target(event, target) {
            let shared = match &mut shard_target {
                // A user's stream: the frame goes to that user's connections.
                ShardTarget::Selected { users, .. } => {
                    for user in users.iter_mut() {
                        user.recorded = Some(Recorded {
                            frame: frame.clone(),
                            position: position.clone(),
                        });
                    }
                    None
                }
                _ => Some(position.clone()),
            };
            let delivery = Delivery {
                target: shard_target,
                frame: frame.clone(),
                position: shared,
                kind: OutKind::Event(event),
                report: None,
            };
            if self.shards[index]
                .send(Command::Deliver(delivery))
                .await
                .is_err()
            {
                return; // shutting down
            }
        }
    }

    async fn deliver_to_subscribed_user(
        &self,
        id: String,
        timestamp: &str,
        event: Event,
        data: &Value,
        user: &str,
    ) {
        let Some(frame) = self.remote_frame(id, timestamp, event, data) else {
            return;
        };
        let Ok(open) = self.connections(Some(user)).await else {
            return;
        };
        let connections: Vec<ConnId> = open
            .iter()
            .filter(|c| c.subscriptions.contains(&event.as_str()))
            .filter_map(|c| ConnId::parse(&c.connection_id))
            .collect();
        if !connections.is_empty() {
            let target = ShardTarget::Selected {
                users: Vec::new(),
                connections,
            };
            let _ = self
                .deliver_unreported(self.shard_of(user), target, frame, event)
                .await;
        }
    }

    async fn disconnect(&self, connection_id: &str) -> bool {
        Hub::disconnect(self, connection_id, CloseReason::Disconnected)
            .await
            .unwrap_or(false)
    }

    async fn user_deactivated(&self, user: &str) -> usize {
        self.deactivated_elsewhere(user).await
    }

    fn user_activated(&self, user: &str) {
        self.activated_elsewhere(user);
    }

    async fn inactive_users_loaded(&self, users: HashSet<String>) {
        self.adopt_cluster_inactive(users).await;
    }

    fn restore_local_decision(&self, user: &str, inactive: bool) {
        self.restore_decision(user, inactive);
    }
}

impl Hub {
    /// Frames another node's event, or drops it (counted) when it is over
    /// this node's `--max-message-size`: nodes may be configured apart.
    fn remote_frame(
        &self,
        id: String,
        timestamp: &str,
        event: Event,
        data: &Value,
    ) -> Option<Arc<[u8]>> {
        let message = encode_as(id, timestamp, event.as_str(), data);
        if frame::payload_len(&message.frame) > self.max_message_size {
            self.metrics.dropped(DropReason::BackplaneOversize, 1);
            return None;
        }
        Some(Arc::from(message.frame))
    }
}
