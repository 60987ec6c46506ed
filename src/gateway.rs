//! The library API for embedding wsgate in a Rust backend: a cheap,
//! cloneable [`Gateway`] handle that does what the server API does.
//!
//! It is a thin façade over the hub; the server API's
//! handlers use the same helpers, so both paths build identical messages.
//!
//! ```no_run
//! use wsgate::{Config, Event, Server};
//! use serde_json::json;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::bind(Config::embedded("jwt-secret", "api-key")).await?;
//! let gateway = server.gateway();
//! let shutdown = server.shutdown_token();
//! let running = tokio::spawn(server.run());
//!
//! // Seed helpers: a file processing update for user 123, a notice to all.
//! gateway.file_processing_status("123", "file_456", "processing", Some(75.0)).await?;
//! gateway.system_notification("Maintenance at 22:00", "warning", None, Default::default()).await?;
//! // Any event to the subscribers of its type.
//! let published = gateway.send_to_subscribers(Event::UploadProgress, json!({"upload_id": "u1", "progress": 45})).await?;
//! println!("{} reached {} connections", published.id, published.delivered);
//!
//! shutdown.cancel();
//! running.await??;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::address::Target;
use crate::connection::ConnectionInfo;
use crate::hub::shard::ShardGone;
use crate::hub::{Hub, PublishError, Published, Stats};
use crate::protocol::{clock, Event};

/// The embedder's handle on a running [`Server`](crate::Server); clones
/// share it.
#[derive(Clone)]
pub struct Gateway {
    hub: Arc<Hub>,
}

impl Gateway {
    pub(crate) fn new(hub: Arc<Hub>) -> Self {
        Gateway { hub }
    }

    /// Publishes `event` with `data` to `target`.
    pub async fn publish(
        &self,
        event: Event,
        data: Value,
        target: Target,
    ) -> Result<Published, PublishError> {
        self.hub.publish(event, &data, target).await
    }

    /// To every connection of `user_id`, subscribed or not.
    pub async fn send_to_user(
        &self,
        user_id: &str,
        event: Event,
        data: Value,
    ) -> Result<Published, PublishError> {
        self.publish(event, data, Target::users(vec![user_id.to_owned()]))
            .await
    }

    /// To one connection, by its public `connection_id`.
    pub async fn send_to_connection(
        &self,
        connection_id: &str,
        event: Event,
        data: Value,
    ) -> Result<Published, PublishError> {
        self.publish(
            event,
            data,
            Target::connections(vec![connection_id.to_owned()]),
        )
        .await
    }

    /// To the connections subscribed to `event`.
    pub async fn send_to_subscribers(
        &self,
        event: Event,
        data: Value,
    ) -> Result<Published, PublishError> {
        self.publish(event, data, Target::Subscribers).await
    }

    /// To every connection.
    pub async fn broadcast(&self, event: Event, data: Value) -> Result<Published, PublishError> {
        self.publish(event, data, Target::All).await
    }

    /// The seed's `broadcast_system_notification`: `system.notification`
    /// with `{message, level, timestamp, ...extra}` to `users`, else to
    /// every connection.
    pub async fn system_notification(
        &self,
        message: &str,
        level: &str,
        users: Option<Vec<String>>,
        extra: Map<String, Value>,
    ) -> Result<Published, PublishError> {
        let mut data = Map::new();
        data.insert("message".into(), Value::from(message));
        data.insert("level".into(), Value::from(level));
        data.insert("timestamp".into(), Value::from(clock::now_rfc3339()));
        data.extend(extra);
        let target = users.map_or(Target::All, Target::users);
        self.publish(Event::SystemNotification, Value::Object(data), target)
            .await
    }

    /// The seed's `broadcast_review_updated`: `review.updated` with
    /// `{review_id, changes, timestamp}` to `users`, else to subscribers.
    pub async fn review_updated(
        &self,
        review_id: &str,
        changes: Value,
        users: Option<Vec<String>>,
    ) -> Result<Published, PublishError> {
        let data = serde_json::json!({
            "review_id": review_id,
            "changes": changes,
            "timestamp": clock::now_rfc3339(),
        });
        let target = users.map_or(Target::Subscribers, Target::users);
        self.publish(Event::ReviewUpdated, data, target).await
    }

    /// The seed's `broadcast_file_processing_status`: `file.processing`
    /// when `status` is `processing`, else `file.ready`, to the user.
    pub async fn file_processing_status(
        &self,
        user_id: &str,
        file_id: &str,
        status: &str,
        progress: Option<f64>,
    ) -> Result<Published, PublishError> {
        let mut data = Map::new();
        data.insert("file_id".into(), Value::from(file_id));
        data.insert("status".into(), Value::from(status));
        if let Some(progress) = progress {
            data.insert("progress".into(), number(progress));
        }
        data.insert("timestamp".into(), Value::from(clock::now_rfc3339()));
        let event = if status == "processing" {
            Event::FileProcessing
        } else {
            Event::FileReady
        };
        self.send_to_user(user_id, event, Value::Object(data)).await
    }

    /// Closes a connection with 4003; false when there is no such
    /// connection. In cluster mode a connection of another node is closed
    /// by that node (asked through the backplane).
    pub async fn disconnect(&self, connection_id: &str) -> Result<bool, ShardGone> {
        self.hub.disconnect_anywhere(connection_id).await
    }

    /// Closes the user's connections with 4003 and refuses new ones (on
    /// every node in cluster mode); returns how many closed on this node.
    pub async fn deactivate_user(&self, user_id: &str) -> Result<usize, ShardGone> {
        self.hub.deactivate_user(user_id).await
    }

    /// Accepts the user's handshakes again (on every node in cluster mode).
    pub fn activate_user(&self, user_id: &str) {
        self.hub.activate_user(user_id);
    }

    /// This node's connections, or only `user_id`'s.
    pub async fn connections(
        &self,
        user_id: Option<&str>,
    ) -> Result<Vec<ConnectionInfo>, ShardGone> {
        self.hub.connections(user_id).await
    }

    /// This node's numbers, as `GET /api/v1/stats` reports them.
    pub fn stats(&self) -> Stats {
        self.hub.stats()
    }
}

/// An integral progress stays an integer on the wire (`50`, not `50.0`).
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Value::from(value as i64)
    } else {
        Value::from(value)
    }
}
