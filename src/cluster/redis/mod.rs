//! The Redis backplane: pub/sub for events and control messages, plain
//! keys, sets and hashes for the shared state.
//!
//! Owns the Redis connections and two tracked tasks: the **link** task
//! (`link`: join, deliver, keep the lease and the node id claim alive,
//! rejoin with backoff) and the **writer** task (`writer`: the outbound
//! queues). `slots` holds the per-user admission script and the slot
//! releases, `claim` the claim on `--node-id`.
//!
//! Keys (`{lease}` is `<node-id>/<random>`, new at every join):
//! - `wsgate:events`: the one pub/sub channel (see [`super::wire`]);
//! - `wsgate:node-id:{node id}`: which process uses that node id (see `claim`);
//! - `wsgate:node:{lease}`: the node's lease, `SET .. PX <connection-timeout>`;
//! - `wsgate:user:{user}:conns`: hash, one field `{lease}#{slot}` per live
//!   connection; the admission script counts only fields whose lease key
//!   exists, so a node killed with SIGKILL stops counting when its lease
//!   expires, and removes the dead fields it meets;
//! - `wsgate:inactive`: set of deactivated users.
//!
//! It must never block a publish or a connection's `Drop`: both only push
//! onto bounded queues (the event queue is bounded in entries and in
//! bytes) and count what does not fit. It must never drop local
//! connections when Redis goes: losing Redis only flips the state to down
//! (events are then delivered on this node only, admission counts this
//! node only).

mod claim;
mod link;
mod nodes;
mod slots;
mod writer;

pub use claim::NodeIdTaken;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire;
use super::{Backplane, BackplaneState, BoxFuture, InboundPort, OutboundEvent};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::Event;
use slots::Slots;

pub const CHANNEL: &str = "wsgate:events";
pub const INACTIVE_KEY: &str = "wsgate:inactive";
const LEASE_PREFIX: &str = "wsgate:node:";
/// Events waiting for Redis (they are also bounded in bytes, by
/// `--backplane-queue-bytes`); past either, events reach this node only.
const EVENT_QUEUE: usize = 8192;
/// Control messages ((de)activations, disconnect requests) waiting for the
/// writer; past this they are refused and logged.
const CONTROL_QUEUE: usize = 1024;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DISCONNECT_WAIT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn user_key(user: &str) -> String {
    format!("wsgate:user:{user}:conns")
}

fn lease_key(lease: &str) -> String {
    format!("{LEASE_PREFIX}{lease}")
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("this node's lease expired")]
    LeaseLost,
    #[error("the subscription ended")]
    SubscriptionClosed,
    #[error("another running process holds this --node-id")]
    NodeIdTaken,
    #[error("too many slot releases waiting; rejoining under a fresh lease")]
    ReleaseBacklog,
}

async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ClusterError::Timeout(limit)),
    }
}

struct QueuedEvent {
    payload: String,
    queued_at: Instant,
}

enum Control {
    Deactivate(String),
    Activate(String),
    /// A disconnect request or answer: PUBLISH when up, else dropped.
    Send(String),
}

/// What the backplane needs from the configuration.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub node_id: String,
    /// `--connection-timeout`: the node lease's and the claim's TTL.
    pub lease_ttl: Duration,
    /// `--backplane-queue-bytes`.
    pub queue_bytes: usize,
}

struct Shared {
    node_id: Arc<str>,
    node_tag: u32,
    /// This process, in the node id claim: random, new at every start.
    instance: Arc<str>,
    /// This process's event numbering epoch (receivers count gaps per epoch).
    epoch: u64,
    /// `{"v":1,"node":"<this node>",`: how an echo of our own message starts.
    echo_prefix: String,
    commands: ConnectionManager,
    events: mpsc::Sender<QueuedEvent>,
    /// Bytes of the events queued or being published.
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    control: mpsc::Sender<Control>,
    up: AtomicBool,
    slots: Mutex<Slots>,
    next_slot: AtomicU64,
    /// Wakes the writer: releases are waiting.
    releases_ready: Notify,
    /// Asks the link for a fresh lease (the release backlog is full).
    rejoin: Notify,
    disconnects: Mutex<HashMap<u64, oneshot::Sender<bool>>>,
    joined: Notify,
    metrics: Arc<Metrics>,
    lease_ttl: Duration,
    /// The last answer of `Shared::live_nodes` and when it was read.
    nodes_seen: Mutex<Option<(Instant, Vec<String>)>>,
}

/// The handle the hub and admission hold: every method returns at once.
pub struct RedisBackplane {
    shared: Arc<Shared>,
}

/// The backplane's tasks, started once there is a port to deliver to.
pub struct RedisTasks {
    shared: Arc<Shared>,
    client: Client,
    events: mpsc::Receiver<QueuedEvent>,
    control: mpsc::Receiver<Control>,
}

/// A command connection that reconnects by itself, connecting at first
/// use (the backplane's, and cluster history's own).
pub fn command_connection(client: &Client) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

impl RedisBackplane {
    /// Prepares the backplane; connects only once the tasks run (a node
    /// starts, serving locally, even while Redis is down), or in
    /// [`RedisBackplane::claim_node_id`].
    pub fn new(
        settings: &RedisSettings,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<RedisBackplane>, RedisTasks), RedisError> {
        let client = Client::open(settings.url.as_str())?;
        let commands = command_connection(&client)?;
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let node_id = settings.node_id.as_str();
        metrics.backplane_enabled();
        let epoch = rand::random::<u64>();
        let shared = Arc::new(Shared {
            node_id: Arc::from(node_id),
            node_tag: crate::address::node_tag(node_id),
            instance: Arc::from(format!("{epoch:016x}")),
            epoch,
            echo_prefix: wire::header_prefix(node_id),
            commands,
            events: events_tx,
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes: settings.queue_bytes,
            control: control_tx,
            up: AtomicBool::new(false),
            slots: Mutex::new(Slots::default()),
            next_slot: AtomicU64::new(1),
            releases_ready: Notify::new(),
            rejoin: Notify::new(),
            disconnects: Mutex::new(HashMap::new()),
            joined: Notify::new(),
            metrics,
            lease_ttl: settings.lease_ttl.max(Duration::from_millis(300)),
            nodes_seen: Mutex::new(None),
        });
        Ok((
            Arc::new(RedisBackplane {
                shared: shared.clone(),
            }),
            RedisTasks {
                shared,
                client,
                events: events_rx,
                control: control_rx,
            },
        ))
    }
}

impl RedisTasks {
    /// Starts the link and writer tasks; both stop when `shutdown` fires
    /// (the link then deletes this node's lease, so its slots stop counting,
    /// and its node id claim).
    pub fn spawn<P: InboundPort>(
        self,
        port: Arc<P>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let RedisTasks {
            shared,
            client,
            events,
            control,
        } = self;
        tracker.spawn(
            shared
                .clone()
                .run_writer(events, control, port.clone(), shutdown.clone()),
        );
        tracker.spawn(shared.run_link(client, port, shutdown));
    }
}

impl Shared {
    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
        self.metrics.backplane_up(up);
    }

    /// Queues an encoded event for the writer, within both bounds.
    fn enqueue(&self, payload: String) {
        if !self.up.load(Ordering::Acquire) {
            self.metrics.backplane_dropped(DropReason::BackplaneDown, 1);
            return;
        }
        let size = payload.len();
        let before = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if before + size > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.metrics
                .backplane_dropped(DropReason::BackplaneQueueFull, 1);
            return;
        }
        let queued = QueuedEvent {
            payload,
            queued_at: Instant::now(),
        };
        if self.events.try_send(queued).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.metrics
                .backplane_dropped(DropReason::BackplaneQueueFull, 1);
        }
    }

    /// Hands a control message to the writer; false when its queue is full.
    fn send_control(&self, op: Control) -> bool {
        match self.control.try_send(op) {
            Ok(()) => true,
            Err(_) => {
                self.metrics.backplane_publish_error();
                tracing::warn!(node_id = %self.node_id, "backplane control queue full; a cluster message was not sent");
                false
            }
        }
    }
}

impl Backplane for RedisBackplane {
    fn publish(&self, event: &OutboundEvent<'_>) {
        let shared = &self.shared;
        shared.enqueue(wire::encode_publish(&shared.node_id, event));
    }

    fn publish_to_subscribed_user(
        &self,
        user: &str,
        id: &str,
        timestamp: &str,
        event: Event,
        data: &Value,
    ) {
        let shared = &self.shared;
        shared.enqueue(wire::encode_subscribed_user(
            &shared.node_id,
            user,
            id,
            timestamp,
            event,
            data,
        ));
    }

    fn state(&self) -> BackplaneState {
        if self.shared.up.load(Ordering::Acquire) {
            BackplaneState::Up
        } else {
            BackplaneState::Down
        }
    }

    fn disconnect_remote<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let shared = &self.shared;
            if !shared.up.load(Ordering::Acquire) {
                return false;
            }
            let request = rand::random::<u64>();
            let (answer, answered) = oneshot::channel();
            shared.disconnects.lock().insert(request, answer);
            let message = wire::encode_disconnect(&shared.node_id, request, connection_id);
            let closed = if shared.send_control(Control::Send(message)) {
                tokio::time::timeout(DISCONNECT_WAIT, answered).await
            } else {
                Ok(Ok(false))
            };
            shared.disconnects.lock().remove(&request);
            matches!(closed, Ok(Ok(true)))
        })
    }

    fn user_deactivated(&self, user: &str) {
        self.shared
            .send_control(Control::Deactivate(user.to_owned()));
    }

    fn user_activated(&self, user: &str) {
        self.shared.send_control(Control::Activate(user.to_owned()));
    }

    fn nodes(&self) -> BoxFuture<'_, Option<Vec<String>>> {
        Box::pin(self.shared.live_nodes())
    }
}
