//! The Redis backplane: pub/sub for events and control messages, plain
//! keys, sets and hashes for the shared state.
//!
//! Owns two tracked tasks and the Redis connections:
//! - the **link** task holds the pub/sub connection: it joins (subscribe,
//!   take a fresh node lease, re-register this node's live connection
//!   slots, load the deactivated users), delivers other nodes' messages
//!   through the hub, refreshes the lease every `--connection-timeout`/3,
//!   and on any failure marks the backplane down and rejoins with backoff;
//! - the **writer** task owns the outbound queue: it publishes events in
//!   pipelined batches and runs releases and deactivations, keeping the
//!   deactivations made while Redis was away to replay them on rejoin.
//!
//! Keys (`{lease}` is `<node-id>/<random>`, new at every join):
//! - `wsgate:events`: the one pub/sub channel (see [`super::wire`]);
//! - `wsgate:node:{lease}`: the node's lease, `SET .. PX <connection-timeout>`;
//! - `wsgate:user:{user}:conns`: hash, one field `{lease}#{slot}` per live
//!   connection; the admission script counts only fields whose lease key
//!   exists, so a node killed with SIGKILL stops counting when its lease
//!   expires, and removes the dead fields it meets;
//! - `wsgate:inactive`: set of deactivated users.
//!
//! It must never block a publish or a connection's `Drop`: both only push
//! onto channels. It must never drop local connections when Redis goes:
//! losing Redis only flips the state to down (events are then delivered on
//! this node only, admission counts this node only).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{Client, RedisError, Script};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire::{self, Body, Message};
use super::{Backplane, BackplaneState, BoxFuture, OutboundEvent};
use crate::hub::conn_id::ConnId;
use crate::hub::Hub;
use crate::limits::admission::{SharedSlots, SlotFuture};
use crate::limits::{Admission, AdmissionError};
use crate::metrics::Metrics;
use crate::ws::CloseReason;

pub const CHANNEL: &str = "wsgate:events";
pub const INACTIVE_KEY: &str = "wsgate:inactive";
const LEASE_PREFIX: &str = "wsgate:node:";
/// Events waiting for Redis; past this, events are delivered locally only.
const EVENT_QUEUE: usize = 8192;
/// Events sent in one pipeline.
const BATCH: usize = 256;
/// Deactivations kept while Redis is away.
const PENDING_CONTROL_MAX: usize = 4096;
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

/// Atomic per-user admission: refuse an inactive user; count the user's
/// slots whose node lease is alive (dropping dead ones); add this slot only
/// when under the limit. Returns 1 admitted, 0 over the limit, -1 inactive.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return -1 end
local alive = {}
local count = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local lease = string.match(field, '^(.*)#[^#]*$')
  local ok = false
  if lease then
    ok = alive[lease]
    if ok == nil then
      ok = redis.call('EXISTS', ARGV[4] .. lease) == 1
      alive[lease] = ok
    end
  end
  if ok then count = count + 1 else redis.call('HDEL', KEYS[1], field) end
end
if count >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], 1)
return 1
",
    )
});

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
    /// HDEL a released slot.
    Release {
        key: String,
        field: String,
    },
    Deactivate(String),
    Activate(String),
    /// A disconnect request or answer: PUBLISH when up, else dropped.
    Send(String),
}

/// A slot id and its user.
type SlotOf = (u64, Arc<str>);

/// This node's live cluster slots and the lease they are counted under.
#[derive(Default)]
struct Slots {
    lease: Option<Arc<str>>,
    live: HashMap<u64, Arc<str>>,
}

struct Shared {
    node_id: Arc<str>,
    node_tag: u32,
    /// `{"v":1,"node":"<this node>",`: how an echo of our own message starts.
    echo_prefix: Vec<u8>,
    commands: ConnectionManager,
    events: mpsc::Sender<QueuedEvent>,
    control: mpsc::UnboundedSender<Control>,
    up: AtomicBool,
    slots: Mutex<Slots>,
    next_slot: AtomicU64,
    disconnects: Mutex<HashMap<u64, oneshot::Sender<bool>>>,
    joined: Notify,
    metrics: Arc<Metrics>,
    lease_ttl: Duration,
    /// The last answer of [`Shared::live_nodes`] and when it was read.
    nodes_seen: Mutex<Option<(Instant, Vec<String>)>>,
}

/// The handle the hub and admission hold: every method returns at once.
pub struct RedisBackplane {
    shared: Arc<Shared>,
}

/// The backplane's tasks, started once the hub exists.
pub struct RedisTasks {
    shared: Arc<Shared>,
    client: Client,
    events: mpsc::Receiver<QueuedEvent>,
    control: mpsc::UnboundedReceiver<Control>,
}

impl RedisBackplane {
    /// Prepares the backplane for `url`; connects only once the tasks run
    /// (a node starts, serving locally, even while Redis is down).
    /// `lease_ttl` is `--connection-timeout`.
    pub fn new(
        url: &str,
        node_id: &str,
        lease_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<RedisBackplane>, RedisTasks), RedisError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let mut echo_prefix = format!("{{\"v\":{},\"node\":", wire::VERSION).into_bytes();
        let _ = serde_json::to_writer(&mut echo_prefix, node_id);
        echo_prefix.push(b',');
        metrics.backplane_enabled();
        let shared = Arc::new(Shared {
            node_id: Arc::from(node_id),
            node_tag: crate::hub::conn_id::node_tag(node_id),
            echo_prefix,
            commands,
            events: events_tx,
            control: control_tx,
            up: AtomicBool::new(false),
            slots: Mutex::new(Slots::default()),
            next_slot: AtomicU64::new(1),
            disconnects: Mutex::new(HashMap::new()),
            joined: Notify::new(),
            metrics,
            lease_ttl: lease_ttl.max(Duration::from_millis(300)),
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
    /// (the link then deletes this node's lease, so its slots stop counting).
    pub fn spawn(
        self,
        hub: Arc<Hub>,
        admission: Arc<Admission>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let RedisTasks {
            shared,
            client,
            events,
            control,
        } = self;
        tracker.spawn(shared.clone().run_writer(
            events,
            control,
            admission.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(shared.run_link(client, hub, admission, shutdown));
    }
}

impl Backplane for RedisBackplane {
    fn publish(&self, event: &OutboundEvent<'_>) {
        let shared = &self.shared;
        if !shared.up.load(Ordering::Acquire) {
            shared.metrics.backplane_dropped();
            return;
        }
        let queued = QueuedEvent {
            payload: wire::encode_publish(&shared.node_id, event),
            queued_at: Instant::now(),
        };
        if shared.events.try_send(queued).is_err() {
            shared.metrics.backplane_dropped();
        }
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
            let _ = shared.control.send(Control::Send(message));
            let closed = tokio::time::timeout(DISCONNECT_WAIT, answered).await;
            shared.disconnects.lock().remove(&request);
            matches!(closed, Ok(Ok(true)))
        })
    }

    fn user_deactivated(&self, user: &str) {
        let _ = self
            .shared
            .control
            .send(Control::Deactivate(user.to_owned()));
    }

    fn user_activated(&self, user: &str) {
        let _ = self.shared.control.send(Control::Activate(user.to_owned()));
    }

    fn nodes(&self) -> BoxFuture<'_, Option<Vec<String>>> {
        Box::pin(self.shared.live_nodes())
    }
}

impl SharedSlots for RedisBackplane {
    fn acquire<'a>(&'a self, user: &'a Arc<str>, limit: usize) -> SlotFuture<'a> {
        Box::pin(async move {
            let shared = &self.shared;
            let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
            let lease = {
                let mut slots = shared.slots.lock();
                slots.live.insert(slot, user.clone());
                slots.lease.clone()
            };
            let lease = match lease {
                Some(lease) if shared.up.load(Ordering::Acquire) => lease,
                // Degraded: counted on this node only until the next join
                // registers every live slot.
                _ => return Ok(slot),
            };
            let mut conn = shared.commands.clone();
            let mut invocation = ADMIT.prepare_invoke();
            invocation
                .key(user_key(user))
                .key(INACTIVE_KEY)
                .arg(&**user)
                .arg(limit)
                .arg(format!("{lease}#{slot}"))
                .arg(LEASE_PREFIX);
            let refused = match bounded(COMMAND_TIMEOUT, invocation.invoke_async::<i64>(&mut conn))
                .await
            {
                Ok(1) => return Ok(slot),
                Ok(0) => AdmissionError::TooManyForUser,
                Ok(-1) => AdmissionError::UserInactive,
                Ok(other) => {
                    tracing::warn!(node_id = %shared.node_id, answer = other, "unexpected answer from the admission script; admitting on local counts");
                    return Ok(slot);
                }
                Err(error) => {
                    shared.metrics.backplane_publish_error();
                    tracing::warn!(node_id = %shared.node_id, %error, "cluster admission unavailable; admitting on this node's counts");
                    return Ok(slot);
                }
            };
            shared.slots.lock().live.remove(&slot);
            Err(refused)
        })
    }

    fn release(&self, user: &Arc<str>, slot: u64) {
        let shared = &self.shared;
        let lease = {
            let mut slots = shared.slots.lock();
            slots.live.remove(&slot);
            slots.lease.clone()
        };
        if let Some(lease) = lease {
            let _ = shared.control.send(Control::Release {
                key: user_key(user),
                field: format!("{lease}#{slot}"),
            });
        }
    }
}

impl Shared {
    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
        self.metrics.backplane_up(up);
    }

    async fn run_link(
        self: Arc<Self>,
        client: Client,
        hub: Arc<Hub>,
        admission: Arc<Admission>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = MIN_BACKOFF;
        let mut quiet = false;
        loop {
            let joined = tokio::select! {
                _ = shutdown.cancelled() => break,
                joined = self.join(&client, &hub, &admission) => joined,
            };
            match joined {
                Ok((sink, stream)) => {
                    backoff = MIN_BACKOFF;
                    quiet = false;
                    self.set_up(true);
                    self.metrics.backplane_reconnected();
                    self.joined.notify_one();
                    tracing::info!(node_id = %self.node_id, "joined the cluster backplane");
                    let ended = self.serve(sink, stream, &hub, &admission, &shutdown).await;
                    self.set_up(false);
                    if shutdown.is_cancelled() {
                        break;
                    }
                    tracing::warn!(node_id = %self.node_id, reason = %ended, "lost the cluster backplane; delivering on this node only until it is back");
                }
                Err(error) => {
                    if quiet {
                        tracing::debug!(node_id = %self.node_id, %error, retry_in = ?backoff, "cluster backplane still unreachable");
                    } else {
                        tracing::warn!(node_id = %self.node_id, %error, retry_in = ?backoff, "cannot reach the cluster backplane; retrying with backoff");
                        quiet = true;
                    }
                }
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.set_up(false);
        // Leaving: this node's slots stop counting at once.
        let lease = self.slots.lock().lease.take();
        if let Some(lease) = lease {
            let mut conn = self.commands.clone();
            let _ = bounded(
                COMMAND_TIMEOUT,
                redis::cmd("DEL")
                    .arg(lease_key(&lease))
                    .query_async::<()>(&mut conn),
            )
            .await;
        }
        tracing::debug!(node_id = %self.node_id, "backplane link stopped");
    }

    /// Subscribes, takes a fresh lease, re-registers every live slot under
    /// it, and loads the deactivated users.
    async fn join(
        &self,
        client: &Client,
        hub: &Hub,
        admission: &Admission,
    ) -> Result<(PubSubSink, PubSubStream), ClusterError> {
        let pubsub = bounded(CONNECT_TIMEOUT, client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        bounded(COMMAND_TIMEOUT, sink.subscribe(CHANNEL)).await?;
        let mut conn = self.commands.clone();
        let lease: Arc<str> = Arc::from(format!("{}/{:08x}", self.node_id, rand::random::<u32>()));
        bounded(
            COMMAND_TIMEOUT,
            redis::cmd("SET")
                .arg(lease_key(&lease))
                .arg(&*self.node_id)
                .arg("PX")
                .arg(self.lease_ttl.as_millis() as u64)
                .query_async::<()>(&mut conn),
        )
        .await?;
        let (old, snapshot): (Option<Arc<str>>, Vec<SlotOf>) = {
            let mut slots = self.slots.lock();
            let old = slots.lease.replace(lease.clone());
            let live = slots.live.iter().map(|(s, u)| (*s, u.clone())).collect();
            (old, live)
        };
        let mut register = redis::pipe();
        for (slot, user) in &snapshot {
            register
                .cmd("HSET")
                .arg(user_key(user))
                .arg(format!("{lease}#{slot}"))
                .arg(1)
                .ignore();
        }
        if let Some(old) = &old {
            register.cmd("DEL").arg(lease_key(old)).ignore();
        }
        bounded(COMMAND_TIMEOUT, register.query_async::<()>(&mut conn)).await?;
        // Slots released while they were being registered: their HDEL may
        // have run before the HSET, so remove them again now.
        let gone: Vec<SlotOf> = {
            let slots = self.slots.lock();
            snapshot
                .into_iter()
                .filter(|(slot, _)| !slots.live.contains_key(slot))
                .collect()
        };
        if !gone.is_empty() {
            let mut cleanup = redis::pipe();
            for (slot, user) in &gone {
                cleanup
                    .cmd("HDEL")
                    .arg(user_key(user))
                    .arg(format!("{lease}#{slot}"))
                    .ignore();
            }
            bounded(COMMAND_TIMEOUT, cleanup.query_async::<()>(&mut conn)).await?;
        }
        let inactive: HashSet<String> = bounded(
            COMMAND_TIMEOUT,
            redis::cmd("SMEMBERS")
                .arg(INACTIVE_KEY)
                .query_async(&mut conn),
        )
        .await?;
        for user in admission.replace_inactive(inactive) {
            let _ = hub.disconnect_user(&user, CloseReason::Disconnected).await;
        }
        Ok((sink, stream))
    }

    /// Delivers other nodes' messages and keeps the lease alive, until the
    /// subscription or the lease fails (or shutdown).
    async fn serve(
        &self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        hub: &Hub,
        admission: &Admission,
        shutdown: &CancellationToken,
    ) -> ClusterError {
        let period = self.lease_ttl / 3;
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return ClusterError::SubscriptionClosed,
                message = stream.next() => match message {
                    Some(message) => self.handle(message.get_payload_bytes(), hub, admission).await,
                    None => return ClusterError::SubscriptionClosed,
                },
                _ = refresh.tick() => {
                    if let Err(error) = self.refresh_lease(&mut sink).await {
                        return error;
                    }
                }
            }
        }
    }

    async fn refresh_lease(&self, sink: &mut PubSubSink) -> Result<(), ClusterError> {
        let Some(lease) = self.slots.lock().lease.clone() else {
            return Err(ClusterError::LeaseLost);
        };
        let mut conn = self.commands.clone();
        let kept: Option<String> = bounded(
            COMMAND_TIMEOUT,
            redis::cmd("SET")
                .arg(lease_key(&lease))
                .arg(&*self.node_id)
                .arg("PX")
                .arg(self.lease_ttl.as_millis() as u64)
                .arg("XX")
                .query_async(&mut conn),
        )
        .await?;
        if kept.is_none() {
            // Expired (or Redis lost its data): rejoin under a new lease.
            return Err(ClusterError::LeaseLost);
        }
        // The pub/sub connection can die silently; a ping proves it lives.
        bounded(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await?;
        Ok(())
    }

    async fn handle(&self, payload: &[u8], hub: &Hub, admission: &Admission) {
        if payload.starts_with(&self.echo_prefix) {
            return; // our own message, already delivered here
        }
        let message = match Message::decode(payload) {
            Ok(message) => message,
            Err(error) => {
                self.metrics.backplane_malformed();
                tracing::debug!(node_id = %self.node_id, %error, "dropping a backplane message");
                return;
            }
        };
        if *message.node == *self.node_id {
            return;
        }
        self.metrics.backplane_received();
        match message.body {
            Body::Publish {
                id,
                timestamp,
                event,
                target,
                data,
            } => {
                let Ok(event) = wire::event(&event) else {
                    self.metrics.backplane_malformed();
                    return;
                };
                let _ = hub
                    .deliver_remote(id, &timestamp, event, &data, &target.into())
                    .await;
            }
            Body::Deactivate { user } => {
                admission.deactivate(&user);
                let closed = hub
                    .disconnect_user(&user, CloseReason::Disconnected)
                    .await
                    .unwrap_or(0);
                tracing::info!(node_id = %self.node_id, user = %user, from = %message.node, closed, "user deactivated by another node");
            }
            Body::Activate { user } => admission.activate(&user),
            Body::Disconnect {
                request,
                connection_id,
            } => {
                let mine =
                    ConnId::parse(&connection_id).is_some_and(|id| id.node() == self.node_tag);
                if !mine {
                    return;
                }
                let closed = hub
                    .disconnect(&connection_id, CloseReason::Disconnected)
                    .await
                    .unwrap_or(false);
                let answer =
                    wire::encode_disconnected(&self.node_id, &message.node, request, closed);
                let _ = self.control.send(Control::Send(answer));
            }
            Body::Disconnected {
                to,
                request,
                closed,
            } => {
                if *to == *self.node_id {
                    if let Some(answer) = self.disconnects.lock().remove(&request) {
                        let _ = answer.send(closed);
                    }
                }
            }
        }
    }

    async fn run_writer(
        self: Arc<Self>,
        mut events: mpsc::Receiver<QueuedEvent>,
        mut control: mpsc::UnboundedReceiver<Control>,
        admission: Arc<Admission>,
        shutdown: CancellationToken,
    ) {
        let mut conn = self.commands.clone();
        let mut pending: VecDeque<Control> = VecDeque::new();
        let mut batch: Vec<QueuedEvent> = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.joined.notified() => {
                    // Replay what was decided while Redis was away, and
                    // re-apply it here (joining reloaded the shared set).
                    while let Some(op) = pending.pop_front() {
                        match &op {
                            Control::Deactivate(user) => admission.deactivate(user),
                            Control::Activate(user) => admission.activate(user),
                            _ => {}
                        }
                        if let Err(op) = self.run_control(op, &mut conn).await {
                            pending.push_front(op);
                            break;
                        }
                    }
                }
                Some(op) = control.recv() => {
                    if let Err(op) = self.run_control(op, &mut conn).await {
                        if pending.len() >= PENDING_CONTROL_MAX {
                            pending.pop_front();
                            tracing::warn!(node_id = %self.node_id, "too many deactivations waiting for the backplane; dropping the oldest");
                        }
                        pending.push_back(op);
                    }
                }
                received = events.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        break;
                    }
                    self.publish_batch(&mut batch, &mut conn).await;
                }
            }
        }
    }

    async fn publish_batch(&self, batch: &mut Vec<QueuedEvent>, conn: &mut ConnectionManager) {
        if !self.up.load(Ordering::Acquire) {
            for _ in batch.drain(..) {
                self.metrics.backplane_dropped();
            }
            return;
        }
        let mut pipe = redis::pipe();
        for event in batch.iter() {
            pipe.cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(&event.payload)
                .ignore();
        }
        match bounded(COMMAND_TIMEOUT, pipe.query_async::<()>(conn)).await {
            Ok(()) => {
                for event in batch.drain(..) {
                    self.metrics.backplane_published(event.queued_at.elapsed());
                }
            }
            Err(error) => {
                tracing::debug!(node_id = %self.node_id, %error, events = batch.len(), "backplane publish failed; those events reached this node only");
                for _ in batch.drain(..) {
                    self.metrics.backplane_publish_error();
                    self.metrics.backplane_dropped();
                }
            }
        }
    }

    /// Runs a command whose failure is only counted (nothing to retry).
    async fn best_effort(&self, call: redis::Cmd, conn: &mut ConnectionManager) {
        if bounded(COMMAND_TIMEOUT, call.query_async::<()>(conn))
            .await
            .is_err()
        {
            self.metrics.backplane_publish_error();
        }
    }

    /// Runs one control operation; gives back deactivations and
    /// activations that could not reach Redis, to replay on rejoin.
    async fn run_control(&self, op: Control, conn: &mut ConnectionManager) -> Result<(), Control> {
        let up = self.up.load(Ordering::Acquire);
        let (set_cmd, user, message) = match &op {
            Control::Release { key, field } => {
                // While down the slot's lease is abandoned on rejoin anyway.
                if up {
                    let mut call = redis::cmd("HDEL");
                    call.arg(key).arg(field);
                    self.best_effort(call, conn).await;
                }
                return Ok(());
            }
            Control::Send(message) => {
                if up {
                    let mut call = redis::cmd("PUBLISH");
                    call.arg(CHANNEL).arg(message);
                    self.best_effort(call, conn).await;
                }
                return Ok(());
            }
            Control::Deactivate(user) => {
                ("SADD", user, wire::encode_deactivate(&self.node_id, user))
            }
            Control::Activate(user) => ("SREM", user, wire::encode_activate(&self.node_id, user)),
        };
        if !up {
            return Err(op);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd(set_cmd)
            .arg(INACTIVE_KEY)
            .arg(user)
            .ignore()
            .cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(message)
            .ignore();
        match bounded(COMMAND_TIMEOUT, pipe.query_async::<()>(conn)).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.metrics.backplane_publish_error();
                tracing::warn!(node_id = %self.node_id, %error, "cannot record a (de)activation in the backplane; will retry when it is back");
                Err(op)
            }
        }
    }
}

/// How long a node list is reused: the console polls stats every few
/// seconds, and a SCAN walks every key of the cluster.
const NODES_FRESH: Duration = Duration::from_secs(3);
/// Keys a SCAN call looks at per round trip.
const SCAN_COUNT: usize = 1000;

impl Shared {
    /// The node ids of the live leases (`wsgate:node:<node-id>/<random>`),
    /// read with SCAN within one command timeout; `None` when Redis is away.
    async fn live_nodes(&self) -> Option<Vec<String>> {
        if !self.up.load(Ordering::Acquire) {
            return None;
        }
        if let Some((at, nodes)) = &*self.nodes_seen.lock() {
            if at.elapsed() < NODES_FRESH {
                return Some(nodes.clone());
            }
        }
        let mut conn = self.commands.clone();
        let scan = async {
            let mut nodes = std::collections::BTreeSet::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{LEASE_PREFIX}*"))
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut conn)
                    .await?;
                nodes.extend(keys.iter().filter_map(|key| {
                    let lease = key.strip_prefix(LEASE_PREFIX)?;
                    Some(
                        lease
                            .rsplit_once('/')
                            .map_or(lease, |(node, _)| node)
                            .to_owned(),
                    )
                }));
                if next == 0 {
                    return Ok(nodes.into_iter().collect::<Vec<String>>());
                }
                cursor = next;
            }
        };
        let nodes = bounded(COMMAND_TIMEOUT, scan).await.ok()?;
        *self.nodes_seen.lock() = Some((Instant::now(), nodes.clone()));
        Some(nodes)
    }
}
