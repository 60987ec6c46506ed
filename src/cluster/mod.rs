//! Cluster mode: how nodes share events, per-user limits and user state.
//!
//! Owns the [`Backplane`] seam between the hub and whatever links the nodes
//! (Redis today; NATS or anything with pub/sub and an atomic counter would
//! fit the same trait), the node-to-node message format ([`wire`]), and the
//! Redis implementation ([`redis`]). The default, [`LocalBackplane`], does
//! nothing at all, so a single node pays one no-op virtual call per publish
//! and nothing else.
//!
//! It must not touch sockets or connection state, and it never names the
//! hub: other nodes' messages come in through the [`InboundPort`] it is
//! given (the hub implements it), so the backplane can be driven and tested
//! without shard threads. It must never block the caller: every method of
//! [`Backplane`] either returns at once (hand-off to a task over a channel)
//! or is awaited on the server API's own path, with a deadline.

pub mod redis;
pub mod wire;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::address::Target;
use crate::history::StreamPosition;
use crate::protocol::Event;

/// A boxed future, for the trait's few async calls (keeps it object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether cross-node delivery works right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackplaneState {
    /// Single node: nothing to be connected to.
    Local,
    /// Connected and subscribed.
    Up,
    /// Cluster mode, but the backplane is unreachable: events are delivered
    /// on this node only, per-user limits count this node only.
    Down,
}

/// An event this node has just delivered locally, to hand to the others.
#[derive(Debug, Clone, Copy)]
pub struct OutboundEvent<'a> {
    /// The message id every recipient on every node sees.
    pub id: &'a str,
    pub timestamp: &'a str,
    pub event: Event,
    pub data: &'a Value,
    pub target: &'a Target,
}

/// What links the nodes of a cluster. Implementations hand work to their
/// own tasks; no method blocks on the network on the publish path.
pub trait Backplane: Send + Sync + 'static {
    /// True for the single-node default: callers then skip all cluster work.
    fn is_local(&self) -> bool {
        false
    }

    /// Hands an event already delivered on this node to every other node.
    /// Must return at once; when the backplane cannot keep up or is down,
    /// the event is dropped for the other nodes and counted.
    fn publish(&self, event: &OutboundEvent<'_>);

    /// Hands an event this node delivered to `user`'s connections
    /// subscribed to it (`upload.cancelled`) to every other node, for that
    /// user's subscribed connections there. Returns at once, like `publish`.
    fn publish_to_subscribed_user(
        &self,
        _user: &str,
        _id: &str,
        _timestamp: &str,
        _event: Event,
        _data: &Value,
    ) {
    }

    fn state(&self) -> BackplaneState;

    /// Asks the node that owns `connection_id` (another node) to close it
    /// with 4003; resolves to whether it did, `false` when no node answered
    /// in time.
    fn disconnect_remote<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, bool>;

    /// Records the deactivation cluster-wide and tells every other node to
    /// close the user's connections and refuse new ones.
    fn user_deactivated(&self, user: &str);

    /// Records the activation cluster-wide and tells every other node.
    fn user_activated(&self, user: &str);

    /// The ids of the nodes whose lease is alive, this one included, sorted;
    /// `None` for a single node or while the backplane cannot tell.
    fn nodes(&self) -> BoxFuture<'_, Option<Vec<String>>> {
        Box::pin(std::future::ready(None))
    }
}

/// The single-node default: no other nodes, nothing to do.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalBackplane;

impl Backplane for LocalBackplane {
    fn is_local(&self) -> bool {
        true
    }

    #[inline]
    fn publish(&self, _event: &OutboundEvent<'_>) {}

    fn state(&self) -> BackplaneState {
        BackplaneState::Local
    }

    fn disconnect_remote<'a>(&'a self, _connection_id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(std::future::ready(false))
    }

    fn user_deactivated(&self, _user: &str) {}

    fn user_activated(&self, _user: &str) {}
}

/// How the backplane reaches this node: what it calls when another node's
/// message arrives. Implemented by the hub (and, in tests, by a recorder).
/// Every call acts on this node only and never goes back to the backplane.
pub trait InboundPort: Send + Sync + 'static {
    /// Another node's event (with that node's id and timestamp) for this
    /// node's connections matching `target`: framed once, never
    /// republished, not waited for.
    fn deliver(
        &self,
        id: String,
        timestamp: &str,
        event: Event,
        data: &Value,
        target: &Target,
    ) -> impl Future<Output = ()> + Send;

    /// A recorded event (SPEC-v2 §2.6) published by the append script of
    /// another node: `frame` is the message as delivered there, with its
    /// `position`; delivered in the order Redis published them.
    fn deliver_recorded(
        &self,
        frame: Arc<[u8]>,
        event: Event,
        position: StreamPosition,
        target: &Target,
    ) -> impl Future<Output = ()> + Send {
        let _ = (frame, event, position, target);
        async {}
    }

    /// Another node's event for `user`'s connections here that are
    /// subscribed to it (how `upload.cancelled` reaches a user's other nodes).
    fn deliver_to_subscribed_user(
        &self,
        id: String,
        timestamp: &str,
        event: Event,
        data: &Value,
        user: &str,
    ) -> impl Future<Output = ()> + Send;

    /// Another node asks to close this node's connection `connection_id`
    /// with 4003; resolves to whether it was open.
    fn disconnect(&self, connection_id: &str) -> impl Future<Output = bool> + Send;

    /// Another node deactivated `user`: refuse their handshakes here and
    /// close their connections; resolves to how many closed.
    fn user_deactivated(&self, user: &str) -> impl Future<Output = usize> + Send;

    /// Another node activated `user`: accept their handshakes here again.
    fn user_activated(&self, user: &str);

    /// The cluster's deactivated users, loaded on every (re)join: they
    /// replace this node's set, and the users new to it are disconnected.
    fn inactive_users_loaded(&self, users: HashSet<String>) -> impl Future<Output = ()> + Send;

    /// A (de)activation this node decided while the backplane was away, put
    /// back after the rejoin replaced the set (it is then written to the
    /// cluster). Only the set changes: the connections were closed when the
    /// decision was made.
    fn restore_local_decision(&self, user: &str, inactive: bool);
}
