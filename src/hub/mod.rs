//! The hub: where a publish becomes one encoded frame and reaches the
//! right shards, and where the server API and the library handle find
//! connections.
//!
//! It owns the shard handles and the user → shard mapping. It encodes each
//! message exactly once and sends the same `Arc<[u8]>` to every shard
//! involved; shards do the per-connection work. It never touches a socket
//! or a connection's state directly.
//!
//! In cluster mode it hands each local publish to the [`Backplane`] once the
//! shards have it (never awaiting the network); other nodes' messages come
//! back in through the hub's [`InboundPort`](crate::cluster::InboundPort)
//! implementation (`inbound`). `deactivation` owns what (de)activating a
//! user does. Callers above (the server API, the library handle) reach the
//! cluster only through the hub's methods, never the backplane itself.

pub mod command;
mod deactivation;
mod inbound;
pub mod shard;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::address::{node_tag, ConnId, Target};
use crate::cluster::{wire, Backplane, BackplaneState, OutboundEvent};
use crate::connection::ConnectionInfo;
use crate::history::{self, History, HistoryStore, LastValue, RedisStore, StreamPosition};
use crate::limits::Admission;
use crate::metrics::{AppendKind, Metrics, OutKind};
use crate::protocol::envelope::{encode_as, encode_recorded};
use crate::protocol::{clock, Event, MessageIds};
use crate::ws::{frame, CloseReason};
use command::{
    CloseTarget, Command, Delivery, DeliveryReport, NewConnection, Recorded, ShardTarget,
    UserDelivery,
};
use shard::{ShardGone, ShardHandle, ShardSettings, ShardShared};

/// The answer to a publish: the message id and how many connections it
/// was handed to (written or queued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    pub id: String,
    pub delivered: usize,
    /// One position per append (SPEC-v2 §7); absent with history off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<Vec<StreamPosition>>,
}

/// A publish's `data`, serialized once when it goes into several frames.
#[derive(Serialize)]
#[serde(untagged)]
enum DataOnce<'a> {
    Raw(&'a serde_json::value::RawValue),
    Value(&'a Value),
}

/// Stripes of the per-stream publish order (see `Hub::publish`).
const STRIPES: usize = 64;

/// How one publish is recorded: the store and the event's last-value
/// changes.
struct Recording<'a> {
    store: Store<'a>,
    /// Cluster mode: whether the backplane reaches Redis right now.
    reachable: bool,
    last_values: Vec<LastValue>,
}

enum Store<'a> {
    Memory(&'a Arc<dyn HistoryStore>),
    Redis(&'a RedisStore),
}

impl<'a> Recording<'a> {
    fn of(
        history: &'a History,
        event: Event,
        data: &Value,
        reachable: bool,
    ) -> Option<Recording<'a>> {
        let store = match history {
            History::Store { store, .. } => Store::Memory(store),
            History::Redis { store, .. } => Store::Redis(store),
            History::Disabled | History::Unavailable => return None,
        };
        Some(Recording {
            store,
            reachable,
            last_values: LastValue::of(history.last_value_rules(), event.as_str(), data),
        })
    }

    /// `None`: not recorded (Redis away), delivered without a position.
    /// `announce`: cluster mode, the backplane message the append script
    /// publishes the event in (see `cluster::wire::recorded_prefix`).
    async fn append(
        &self,
        name: &Arc<str>,
        kind: AppendKind,
        metrics: &Metrics,
        mut encode: impl FnMut(&StreamPosition) -> Arc<[u8]> + Send,
        announce: Option<&str>,
    ) -> Option<Recorded> {
        let (position, frame) = match self.store {
            Store::Memory(store) => store.append(name, &self.last_values, &mut encode),
            Store::Redis(store) => {
                let reachable = self.reachable;
                store
                    .append(name, &self.last_values, &mut encode, reachable, announce)
                    .await?
            }
        };
        metrics.history_appended(kind);
        Some(Recorded { frame, position })
    }
}

/// Why a publish was not handed to the shards.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("message of {size} bytes is over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error(transparent)]
    ShardGone(#[from] ShardGone),
}

/// This node's numbers for `GET /api/v1/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub node_id: String,
    pub connections: usize,
    pub users: usize,
    pub shards: Vec<ShardStatsView>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub rate_limited: u64,
    pub uptime_s: u64,
}

/// One shard's share of [`Stats`].
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatsView {
    pub connections: usize,
    pub users: usize,
}

pub struct Hub {
    shards: Vec<ShardHandle>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    ids: MessageIds,
    max_message_size: usize,
    node_id: String,
    /// `address::node_tag(node_id)`: the node part of this node's ids.
    node_tag: u32,
    backplane: Arc<dyn Backplane>,
    /// Refuses deactivated users' handshakes (see `deactivation`).
    admission: Arc<Admission>,
    started: Instant,
    history: History,
    stripes: Box<[tokio::sync::Mutex<()>]>,
}

impl Hub {
    /// Starts `count` shard threads, each with `shared`.
    pub fn start(
        count: usize,
        settings: ShardSettings,
        shared: ShardShared,
        node_id: String,
        admission: Arc<Admission>,
    ) -> std::io::Result<Hub> {
        let node_tag = node_tag(&node_id);
        let mut shards = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let (handle, thread) = shard::spawn(index, node_tag, settings.clone(), shared.clone())?;
            shards.push(handle);
            threads.push(thread);
        }
        Ok(Hub {
            shards,
            threads: Mutex::new(threads),
            metrics: shared.metrics,
            ids: MessageIds::new(),
            max_message_size: settings.max_message_size,
            node_id,
            node_tag,
            backplane: shared.backplane,
            admission,
            started: Instant::now(),
            history: settings.history.clone(),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        })
    }

    /// Whether cross-node delivery works right now (`GET /health`).
    pub fn backplane_state(&self) -> BackplaneState {
        self.backplane.state()
    }

    /// The live nodes of the cluster (`None` on a single node or while
    /// Redis is away), for stats and the console.
    pub async fn cluster_nodes(&self) -> Option<Vec<String>> {
        self.backplane.nodes().await
    }

    /// The shard that owns `user`'s connections. A fixed hash (SipHash with
    /// zero keys), so every node maps a user to the same shard index.
    pub fn shard_of(&self, user: &str) -> usize {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(user);
        (hash % self.shards.len() as u64) as usize
    }

    /// Hands an upgraded connection to its user's shard.
    pub async fn register(&self, connection: NewConnection) -> Result<(), ShardGone> {
        let shard = self.shard_of(connection.permit.user());
        self.shards[shard]
            .send(Command::Register(Box::new(connection)))
            .await
    }

    /// Publishes an event: encoded and framed once per stream it is
    /// appended to (once when not recorded), then delivered by every shard
    /// that holds a recipient, and (cluster mode) handed to the backplane
    /// for the other nodes. Resolves once every local recipient's frame has
    /// been written or queued; `delivered` counts this node's.
    pub async fn publish(
        &self,
        event: Event,
        data: &Value,
        target: Target,
    ) -> Result<Published, PublishError> {
        let started = Instant::now();
        let timestamp = clock::now_rfc3339();
        // Recorded, the data goes into a frame per stream (and the plain
        // one): serialize it once and copy those bytes into each.
        let raw = match self.history.records() {
            true => serde_json::value::to_raw_value(data).ok(),
            false => None,
        };
        let data_once = match &raw {
            Some(raw) => DataOnce::Raw(raw),
            None => DataOnce::Value(data),
        };
        let message = encode_as(self.ids.next_id(), &timestamp, event.as_str(), &data_once);
        let size = frame::payload_len(&message.frame);
        if size > self.max_message_size {
            return Err(PublishError::TooLarge {
                size,
                max: self.max_message_size,
            });
        }
        let frame: Arc<[u8]> = Arc::from(message.frame);
        let mut per_shard = self.split_target(event, &target);
        let reachable = self.backplane.state() != BackplaneState::Down;
        let recording = Recording::of(&self.history, event, data, reachable);
        // Appends to one stream and the hand-over of their frames to the
        // shards happen under that stream's stripe, so every shard gets a
        // stream's events in offset order (a connection then never sees an
        // offset out of order, and the skip rule of a resume drops only
        // true duplicates).
        let stripes = match &recording {
            Some(_) => self.lock_stripes(event, &target).await,
            None => Vec::new(),
        };
        let mut streams = Vec::new();
        let mut shared = None;
        // Cluster history: the append script publishes each recorded event
        // to the other nodes (so they get a stream in offset order); the
        // backplane writer carries only what was not announced that way.
        let announcing = matches!(self.history, History::Redis { .. });
        let mut announced = false;
        let mut unannounced_users: Vec<String> = Vec::new();
        if let Some(recording) = &recording {
            let encode = |position: &StreamPosition| -> Arc<[u8]> {
                Arc::from(encode_recorded(
                    &message.id,
                    &timestamp,
                    event.as_str(),
                    &data_once,
                    position,
                ))
            };
            match &target {
                Target::All | Target::Subscribers => {
                    let (name, kind) = match target {
                        Target::All => (Arc::from(history::BROADCAST), AppendKind::Broadcast),
                        _ => (history::event_stream(event.as_str()), AppendKind::Event),
                    };
                    let announce =
                        announcing.then(|| wire::recorded_prefix(&self.node_id, &target));
                    let recorded = recording
                        .append(&name, kind, &self.metrics, encode, announce.as_deref())
                        .await;
                    if let Some(recorded) = &recorded {
                        streams.push(recorded.position.clone());
                        announced = announcing;
                    }
                    shared = recorded;
                }
                Target::Selected { connections, .. } => {
                    // Listed connections go the writer's way with the users
                    // (each connection once), so nothing is announced then.
                    let announcing = announcing && connections.is_empty();
                    announced = announcing;
                    for (_, shard_target) in per_shard.iter_mut() {
                        let ShardTarget::Selected { users, .. } = shard_target else {
                            continue;
                        };
                        for user in users {
                            let name = history::user_stream(&user.user);
                            let announce = announcing.then(|| {
                                let only = Target::Selected {
                                    users: vec![user.user.to_string()],
                                    connections: Vec::new(),
                                };
                                wire::recorded_prefix(&self.node_id, &only)
                            });
                            let recorded = recording
                                .append(
                                    &name,
                                    AppendKind::User,
                                    &self.metrics,
                                    encode,
                                    announce.as_deref(),
                                )
                                .await;
                            match &recorded {
                                Some(recorded) => streams.push(recorded.position.clone()),
                                None => unannounced_users.push(user.user.to_string()),
                            }
                            user.recorded = recorded;
                        }
                    }
                }
            }
        }
        let mut pending = Vec::with_capacity(per_shard.len());
        for (index, shard_target) in per_shard {
            let (report, receive) = oneshot::channel();
            let (frame, position) = match &shared {
                Some(recorded) => (recorded.frame.clone(), Some(recorded.position.clone())),
                None => (frame.clone(), None),
            };
            self.shards[index]
                .send(Command::Deliver(Delivery {
                    target: shard_target,
                    frame,
                    position,
                    kind: OutKind::Event(event),
                    report: Some(report),
                }))
                .await?;
            pending.push(receive);
        }
        drop(stripes);
        let rest;
        let to_others = match (&target, announced) {
            (_, false) => Some(&target),
            (Target::Selected { .. }, true) if !unannounced_users.is_empty() => {
                rest = Target::Selected {
                    users: unannounced_users,
                    connections: Vec::new(),
                };
                Some(&rest)
            }
            (_, true) => None,
        };
        if let (Some(target), false) = (to_others, self.backplane.is_local()) {
            self.backplane.publish(&OutboundEvent {
                id: &message.id,
                timestamp: &timestamp,
                event,
                data,
                target,
            });
        }
        let mut delivered = 0;
        let mut last_write = started;
        for receive in pending {
            let DeliveryReport {
                delivered: n,
                finished_at,
            } = receive.await.map_err(|_| ShardGone(usize::MAX))?;
            delivered += n;
            last_write = last_write.max(finished_at);
        }
        self.metrics
            .observe_fanout(last_write.duration_since(started));
        let streams = match self.history {
            History::Disabled => None,
            _ => {
                streams.sort_by(|a, b| a.name.cmp(&b.name));
                Some(streams)
            }
        };
        Ok(Published {
            id: message.id,
            delivered,
            streams,
        })
    }

    /// The stripes of the streams `target` appends to, locked in index
    /// order (so two publishes never wait on each other in a cycle).
    async fn lock_stripes(
        &self,
        event: Event,
        target: &Target,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let stripe = |name: &str| {
            (BuildHasherDefault::<DefaultHasher>::default().hash_one(name) % STRIPES as u64)
                as usize
        };
        let mut indexes: Vec<usize> = match target {
            Target::All => vec![stripe(history::BROADCAST)],
            Target::Subscribers => vec![stripe(event.as_str())],
            Target::Selected { users, .. } => users.iter().map(|u| stripe(u)).collect(),
        };
        indexes.sort_unstable();
        indexes.dedup();
        let mut guards = Vec::with_capacity(indexes.len());
        for index in indexes {
            guards.push(self.stripes[index].lock().await);
        }
        guards
    }

    /// This node's history, for the server API (`/streams`).
    pub fn history(&self) -> &History {
        &self.history
    }

    async fn deliver_unreported(
        &self,
        shard: usize,
        target: ShardTarget,
        frame: Arc<[u8]>,
        event: Event,
    ) -> Result<(), ShardGone> {
        self.shards[shard]
            .send(Command::Deliver(Delivery {
                target,
                frame,
                position: None,
                kind: OutKind::Event(event),
                report: None,
            }))
            .await
    }

    /// Which shards a target touches, and what each must do.
    fn split_target(&self, event: Event, target: &Target) -> Vec<(usize, ShardTarget)> {
        match target {
            Target::All => (0..self.shards.len())
                .map(|i| (i, ShardTarget::All))
                .collect(),
            Target::Subscribers => (0..self.shards.len())
                .map(|i| (i, ShardTarget::Subscribers(event)))
                .collect(),
            Target::Selected { users, connections } => {
                let mut by_shard: Vec<(Vec<UserDelivery>, Vec<ConnId>)> =
                    (0..self.shards.len()).map(|_| Default::default()).collect();
                for user in users {
                    let shard = self.shard_of(user);
                    // A user listed twice is one append and one delivery.
                    if by_shard[shard].0.iter().any(|u| *u.user == **user) {
                        continue;
                    }
                    by_shard[shard].0.push(UserDelivery {
                        user: Arc::from(user.as_str()),
                        recorded: None,
                    });
                }
                let own = connections
                    .iter()
                    .filter_map(|c| ConnId::parse(c))
                    .filter(|id| id.node() == self.node_tag);
                for id in own {
                    if let Some(slot) = by_shard.get_mut(id.shard()) {
                        slot.1.push(id);
                    }
                }
                by_shard
                    .into_iter()
                    .enumerate()
                    .filter(|(_, (u, c))| !u.is_empty() || !c.is_empty())
                    .map(|(i, (users, connections))| {
                        (i, ShardTarget::Selected { users, connections })
                    })
                    .collect()
            }
        }
    }

    /// Closes one connection by public id; false when no such connection.
    pub async fn disconnect(
        &self,
        connection_id: &str,
        reason: CloseReason,
    ) -> Result<bool, ShardGone> {
        let Some(id) = ConnId::parse(connection_id).filter(|id| id.node() == self.node_tag) else {
            return Ok(false);
        };
        let Some(shard) = self.shards.get(id.shard()) else {
            return Ok(false);
        };
        let (done, closed) = oneshot::channel();
        shard
            .send(Command::Close {
                target: CloseTarget::Connection(id),
                reason,
                done,
            })
            .await?;
        Ok(closed.await.unwrap_or(0) > 0)
    }

    /// Closes a connection with 4003 wherever it is; false when there is no
    /// such connection. One of another node is closed by that node, asked
    /// through the backplane (false when it does not answer in time).
    pub async fn disconnect_anywhere(&self, connection_id: &str) -> Result<bool, ShardGone> {
        let foreign = ConnId::parse(connection_id).is_some_and(|id| id.node() != self.node_tag);
        if foreign {
            return Ok(self.backplane.disconnect_remote(connection_id).await);
        }
        self.disconnect(connection_id, CloseReason::Disconnected)
            .await
    }

    /// Closes every connection of `user`; returns how many.
    pub async fn disconnect_user(
        &self,
        user: &str,
        reason: CloseReason,
    ) -> Result<usize, ShardGone> {
        let shard = &self.shards[self.shard_of(user)];
        let (done, closed) = oneshot::channel();
        shard
            .send(Command::Close {
                target: CloseTarget::User(Arc::from(user)),
                reason,
                done,
            })
            .await?;
        Ok(closed.await.unwrap_or(0))
    }

    /// Open connections, of one user or of everyone.
    pub async fn connections(&self, user: Option<&str>) -> Result<Vec<ConnectionInfo>, ShardGone> {
        let shards: Vec<&ShardHandle> = match user {
            Some(user) => vec![&self.shards[self.shard_of(user)]],
            None => self.shards.iter().collect(),
        };
        let mut all = Vec::new();
        for shard in shards {
            let (reply, receive) = oneshot::channel();
            shard
                .send(Command::List {
                    user: user.map(Arc::from),
                    reply,
                })
                .await?;
            all.extend(receive.await.unwrap_or_default());
        }
        Ok(all)
    }

    pub fn stats(&self) -> Stats {
        let shards: Vec<ShardStatsView> = self
            .shards
            .iter()
            .map(|s| ShardStatsView {
                connections: s.stats.connections.load(Ordering::Relaxed),
                users: s.stats.users.load(Ordering::Relaxed),
            })
            .collect();
        Stats {
            node_id: self.node_id.clone(),
            connections: shards.iter().map(|s| s.connections).sum(),
            users: shards.iter().map(|s| s.users).sum(),
            shards,
            messages_in: self.metrics.total_in(),
            messages_out: self.metrics.total_out(),
            rate_limited: self.metrics.total_rate_limited(),
            uptime_s: self.started.elapsed().as_secs(),
        }
    }

    /// Closes every connection with 1001 in batches spread over `drain`,
    /// lets shards flush for at most `grace` more, and joins their threads.
    pub async fn shutdown(&self, drain: Duration, grace: Duration) {
        for shard in &self.shards {
            let _ = shard.send(Command::Shutdown { drain, grace }).await;
        }
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}
