//! The link task: holds the pub/sub connection, joins (claim the node id,
//! subscribe, take a fresh lease, re-register the live slots, load the
//! deactivated users), delivers other nodes' messages through the
//! [`InboundPort`] it is given,
//! refreshes the lease and the claim every `--connection-timeout`/3, and on
//! any failure marks the backplane down and rejoins with backoff.
//!
//! It also counts the events this node missed from each other node (a gap
//! in that node's sequence numbers, e.g. while this node's link was down).
//! It must never drop local connections: losing Redis only flips the state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::Client;
use tokio_util::sync::CancellationToken;

use super::slots::SlotOf;
use super::{
    bounded, lease_key, user_key, ClusterError, Control, Shared, CHANNEL, COMMAND_TIMEOUT,
    CONNECT_TIMEOUT, INACTIVE_KEY, MAX_BACKOFF, MIN_BACKOFF,
};
use crate::address::ConnId;
use crate::cluster::wire::{self, Body, Message};
use crate::cluster::InboundPort;
use crate::history::{Epoch, StreamPosition};
use crate::metrics::DropReason;

/// Other nodes whose sequence is followed; past this the table restarts.
const MAX_PEERS: usize = 1024;

/// The last event sequence number seen from each other node's process.
#[derive(Default)]
struct Peers {
    last: HashMap<String, (u64, u64)>,
}

impl Peers {
    /// How many of `node`'s events were missed before this one.
    fn missed(&mut self, node: &str, epoch: u64, seq: u64) -> u64 {
        if seq == 0 {
            return 0; // a sender that does not number its events
        }
        if self.last.len() >= MAX_PEERS && !self.last.contains_key(node) {
            self.last.clear();
        }
        let entry = self.last.entry(node.to_owned()).or_insert((epoch, seq - 1));
        let missed = if entry.0 == epoch && seq > entry.1 {
            seq - entry.1 - 1
        } else {
            0 // a new process of that node, or a reordering
        };
        if entry.0 != epoch || seq > entry.1 {
            *entry = (epoch, seq);
        }
        missed
    }
}

impl Shared {
    pub(super) async fn run_link<P: InboundPort>(
        self: Arc<Self>,
        client: Client,
        port: Arc<P>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = MIN_BACKOFF;
        let mut quiet = false;
        let mut peers = Peers::default();
        loop {
            let joined = tokio::select! {
                _ = shutdown.cancelled() => break,
                joined = self.join(&client, &*port) => joined,
            };
            match joined {
                Ok((sink, stream)) => {
                    backoff = MIN_BACKOFF;
                    quiet = false;
                    self.set_up(true);
                    self.metrics.backplane_reconnected();
                    self.joined.notify_one();
                    tracing::info!(node_id = %self.node_id, "joined the cluster backplane");
                    let ended = self
                        .serve(sink, stream, &*port, &mut peers, &shutdown)
                        .await;
                    self.set_up(false);
                    if shutdown.is_cancelled() {
                        break;
                    }
                    if matches!(ended, ClusterError::NodeIdTaken) {
                        tracing::error!(node_id = %self.node_id, "another process took this --node-id while this node was away; staying off the backplane until its claim expires");
                        quiet = true;
                    } else {
                        tracing::warn!(node_id = %self.node_id, reason = %ended, "lost the cluster backplane; delivering on this node only until it is back");
                    }
                }
                Err(error) => {
                    if quiet {
                        tracing::debug!(node_id = %self.node_id, %error, retry_in = ?backoff, "cluster backplane still unreachable");
                    } else if matches!(error, ClusterError::NodeIdTaken) {
                        tracing::error!(node_id = %self.node_id, "another running node uses this --node-id on this Redis; staying off the backplane until its claim expires (give every node its own --node-id)");
                        quiet = true;
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
        // Leaving: this node's slots stop counting at once, and its id is
        // free for its successor.
        let lease = self.slots.lock().lease.take();
        let mut conn = self.commands.clone();
        if let Some(lease) = lease {
            let _ = bounded(
                COMMAND_TIMEOUT,
                redis::cmd("DEL")
                    .arg(lease_key(&lease))
                    .query_async::<()>(&mut conn),
            )
            .await;
        }
        self.unclaim(&mut conn).await;
        tracing::debug!(node_id = %self.node_id, "backplane link stopped");
    }

    /// Claims the node id, subscribes, takes a fresh lease, re-registers
    /// every live slot under it, and loads the deactivated users.
    async fn join(
        &self,
        client: &Client,
        port: &impl InboundPort,
    ) -> Result<(PubSubSink, PubSubStream), ClusterError> {
        let mut conn = self.commands.clone();
        self.claim(&mut conn).await?;
        let pubsub = bounded(CONNECT_TIMEOUT, client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        bounded(COMMAND_TIMEOUT, sink.subscribe(CHANNEL)).await?;
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
            let old = slots.replace_lease(lease.clone());
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
        port.inactive_users_loaded(inactive).await;
        Ok((sink, stream))
    }

    /// Delivers other nodes' messages and keeps the lease and the claim
    /// alive, until the subscription, the lease or the claim fails, a
    /// release backlog asks for a fresh lease, or shutdown.
    async fn serve(
        &self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        port: &impl InboundPort,
        peers: &mut Peers,
        shutdown: &CancellationToken,
    ) -> ClusterError {
        let period = self.lease_ttl / 3;
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return ClusterError::SubscriptionClosed,
                _ = self.rejoin.notified() => return ClusterError::ReleaseBacklog,
                message = stream.next() => match message {
                    Some(message) => {
                        self.handle(message.get_payload_bytes(), port, peers).await;
                    }
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
        self.claim(&mut conn).await?;
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

    /// The event a peer's message names; one it cannot name is counted as
    /// malformed (the message is dropped).
    fn known_event(&self, name: &str) -> Option<crate::protocol::Event> {
        let event = wire::event(name).ok();
        if event.is_none() {
            self.metrics.backplane_malformed();
        }
        event
    }

    async fn handle(&self, payload: &[u8], port: &impl InboundPort, peers: &mut Peers) {
        if payload.starts_with(self.echo_prefix.as_bytes()) {
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
        let missed = peers.missed(&message.node, message.epoch, message.seq);
        if missed > 0 {
            self.metrics.dropped(DropReason::BackplaneMissed, missed);
        }
        match message.body {
            Body::Publish {
                id,
                timestamp,
                event,
                target,
                data,
            } => {
                let Some(event) = self.known_event(&event) else {
                    return;
                };
                port.deliver(id, &timestamp, event, &data, &target.into())
                    .await;
            }
            Body::Recorded { target, message } => {
                let head = serde_json::from_str::<wire::RecordedHead>(&message).ok();
                let Some((head, epoch)) = head.and_then(|head| {
                    let epoch = Epoch::parse(&head.stream.epoch)?;
                    Some((head, epoch))
                }) else {
                    self.metrics.backplane_malformed();
                    return;
                };
                let Ok(event) = wire::event(&head.event) else {
                    self.metrics.backplane_malformed();
                    return;
                };
                let position = StreamPosition {
                    name: Arc::from(head.stream.name),
                    epoch,
                    offset: head.stream.offset,
                };
                let frame: Arc<[u8]> = Arc::from(crate::ws::frame::text_frame(|buf| {
                    buf.extend_from_slice(message.as_bytes())
                }));
                port.deliver_recorded(frame, event, position, &target.into())
                    .await;
            }
            Body::SubscribedUser {
                id,
                timestamp,
                event,
                user,
                data,
            } => {
                let Some(event) = self.known_event(&event) else {
                    return;
                };
                port.deliver_to_subscribed_user(id, &timestamp, event, &data, &user)
                    .await;
            }
            Body::Deactivate { user } => {
                let closed = port.user_deactivated(&user).await;
                tracing::info!(node_id = %self.node_id, user = %user, from = %message.node, closed, "user deactivated by another node");
            }
            Body::Activate { user } => port.user_activated(&user),
            Body::Disconnect {
                request,
                connection_id,
            } => {
                let mine =
                    ConnId::parse(&connection_id).is_some_and(|id| id.node() == self.node_tag);
                if !mine {
                    return;
                }
                let closed = port.disconnect(&connection_id).await;
                let answer =
                    wire::encode_disconnected(&self.node_id, &message.node, request, closed);
                self.send_control(Control::Send(answer));
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
}

#[cfg(test)]
mod tests {
    use super::Peers;

    #[test]
    fn gaps_in_a_senders_sequence_are_counted_once() {
        let mut peers = Peers::default();
        assert_eq!(peers.missed("a", 7, 1), 0);
        assert_eq!(peers.missed("a", 7, 2), 0);
        assert_eq!(peers.missed("a", 7, 6), 3);
        assert_eq!(peers.missed("a", 7, 5), 0, "late, not a new gap");
        assert_eq!(peers.missed("a", 7, 7), 0);
        // First sight of a node: nothing known before it.
        assert_eq!(peers.missed("b", 1, 40), 0);
        // The node restarted (new epoch): numbering starts over.
        assert_eq!(peers.missed("a", 8, 1), 0);
        assert_eq!(peers.missed("a", 8, 3), 1);
        assert_eq!(peers.missed("c", 1, 0), 0);
    }
}
