//! The Redis backplane on its own: two [`RedisBackplane`]s in this process
//! share a private redis-server (random loopback port), each given a
//! recording [`InboundPort`] instead of a hub, so what one node sends is
//! checked as the exact calls the other node's port receives — no shard
//! threads, no sockets to clients. Every wait is a receive with a deadline.

#[allow(unused_imports)]
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::RedisServer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsgate::internals::{
    node_tag, Backplane, BackplaneState, ConnId, InboundPort, Metrics, OutboundEvent,
    RedisBackplane, RedisSettings,
};
use wsgate::{Event, Target};

const WAIT: Duration = Duration::from_secs(10);

/// One call the backplane made on its port.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Deliver {
        id: String,
        timestamp: String,
        event: Event,
        data: Value,
        target: Target,
    },
    SubscribedUser {
        id: String,
        event: Event,
        data: Value,
        user: String,
    },
    Disconnect(String),
    Deactivated(String),
    Activated(String),
    InactiveLoaded(HashSet<String>),
    Restored(String, bool),
}

/// Records every call; `disconnect` answers true only for `open`.
struct Recorder {
    calls: mpsc::Sender<Call>,
    open: String,
}

impl Recorder {
    fn record(&self, call: Call) {
        self.calls.try_send(call).expect("the test reads the calls");
    }
}

impl InboundPort for Recorder {
    async fn deliver(
        &self,
        id: String,
        timestamp: &str,
        event: Event,
        data: &Value,
        target: &Target,
    ) {
        self.record(Call::Deliver {
            id,
            timestamp: timestamp.to_owned(),
            event,
            data: data.clone(),
            target: target.clone(),
        });
    }

    async fn deliver_to_subscribed_user(
        &self,
        id: String,
        _timestamp: &str,
        event: Event,
        data: &Value,
        user: &str,
    ) {
        self.record(Call::SubscribedUser {
            id,
            event,
            data: data.clone(),
            user: user.to_owned(),
        });
    }

    async fn disconnect(&self, connection_id: &str) -> bool {
        self.record(Call::Disconnect(connection_id.to_owned()));
        connection_id == self.open
    }

    async fn user_deactivated(&self, user: &str) -> usize {
        self.record(Call::Deactivated(user.to_owned()));
        1
    }

    fn user_activated(&self, user: &str) {
        self.record(Call::Activated(user.to_owned()));
    }

    async fn inactive_users_loaded(&self, users: HashSet<String>) {
        self.record(Call::InactiveLoaded(users));
    }

    fn restore_local_decision(&self, user: &str, inactive: bool) {
        self.record(Call::Restored(user.to_owned(), inactive));
    }
}

struct Node {
    backplane: Arc<RedisBackplane>,
    calls: mpsc::Receiver<Call>,
    node_id: String,
    /// The call its join made (the deactivated users it loaded).
    joined: Option<Call>,
}

impl Node {
    async fn start(
        redis: &RedisServer,
        node_id: &str,
        open: String,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Node {
        let settings = RedisSettings {
            url: redis.url(),
            node_id: node_id.to_owned(),
            lease_ttl: Duration::from_secs(3),
            queue_bytes: 1 << 20,
        };
        let (backplane, tasks) =
            RedisBackplane::new(&settings, Arc::new(Metrics::default())).expect("backplane");
        let (record, calls) = mpsc::channel(256);
        let port = Arc::new(Recorder {
            calls: record,
            open,
        });
        tasks.spawn(port, tracker, shutdown.clone());
        let mut node = Node {
            backplane,
            calls,
            node_id: node_id.to_owned(),
            joined: None,
        };
        let joined = node.next().await;
        assert!(
            matches!(joined, Call::InactiveLoaded(_)),
            "a join loads the cluster's deactivated users first, got {joined:?}"
        );
        let deadline = Instant::now() + WAIT;
        while node.backplane.state() != BackplaneState::Up {
            assert!(Instant::now() < deadline, "{node_id} did not join");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node.joined = Some(joined);
        node
    }

    /// The next call on this node's port, within `WAIT`.
    async fn next(&mut self) -> Call {
        tokio::time::timeout(WAIT, self.calls.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no call within {WAIT:?}", self.node_id))
            .expect("port alive")
    }
}

fn publish(node: &Node, id: &str, data: &Value, target: &Target) {
    node.backplane.publish(&OutboundEvent {
        id,
        timestamp: "2026-12-01T00:00:00.000Z",
        event: Event::SystemNotification,
        data,
        target,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_backplane_carries_every_message_kind_to_the_other_nodes_port() {
    let redis = RedisServer::start();
    redis.command("SADD wsgate:inactive early").expect("seed");
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let b_open = ConnId::new(node_tag("node-b"), 1, 7, 42).to_string();
    let mut a = Node::start(&redis, "node-a", String::new(), &tracker, &shutdown).await;
    let mut b = Node::start(&redis, "node-b", b_open.clone(), &tracker, &shutdown).await;
    let loaded: HashSet<String> = ["early".to_owned()].into();
    assert_eq!(a.joined.take(), Some(Call::InactiveLoaded(loaded.clone())));
    assert_eq!(b.joined.take(), Some(Call::InactiveLoaded(loaded)));

    // An event: delivered on B with A's id, timestamp, data and target.
    let target = Target::Selected {
        users: vec!["u1".into()],
        connections: vec![b_open.clone()],
    };
    publish(&a, "m-a-1", &json!({"message": "hi"}), &target);
    assert_eq!(
        b.next().await,
        Call::Deliver {
            id: "m-a-1".into(),
            timestamp: "2026-12-01T00:00:00.000Z".into(),
            event: Event::SystemNotification,
            data: json!({"message": "hi"}),
            target,
        }
    );
    // A never hears its own event: B's next one is A's first call.
    publish(&b, "m-b-1", &json!({}), &Target::All);
    assert!(
        matches!(a.next().await, Call::Deliver { id, target: Target::All, .. } if id == "m-b-1")
    );

    a.backplane.publish_to_subscribed_user(
        "u2",
        "m-a-2",
        "2026-12-01T00:00:00.000Z",
        Event::UploadCancelled,
        &json!({"upload_id": "up1"}),
    );
    assert_eq!(
        b.next().await,
        Call::SubscribedUser {
            id: "m-a-2".into(),
            event: Event::UploadCancelled,
            data: json!({"upload_id": "up1"}),
            user: "u2".into(),
        }
    );

    // (De)activations reach B's port and the shared set.
    a.backplane.user_deactivated("u9");
    assert_eq!(b.next().await, Call::Deactivated("u9".into()));
    let member = redis
        .command("SISMEMBER wsgate:inactive u9")
        .expect("redis");
    assert!(member.starts_with(":1"), "u9 in the shared set: {member}");
    a.backplane.user_activated("u9");
    assert_eq!(b.next().await, Call::Activated("u9".into()));
    let member = redis
        .command("SISMEMBER wsgate:inactive u9")
        .expect("redis");
    assert!(
        member.starts_with(":0"),
        "u9 out of the shared set: {member}"
    );

    // A disconnect request reaches only the owning node, and its answer
    // comes back to the asker.
    assert!(a.backplane.disconnect_remote(&b_open).await);
    assert_eq!(b.next().await, Call::Disconnect(b_open.clone()));
    let b_closed = ConnId::new(node_tag("node-b"), 0, 1, 1).to_string();
    assert!(!a.backplane.disconnect_remote(&b_closed).await);
    assert_eq!(b.next().await, Call::Disconnect(b_closed));

    shutdown.cancel();
    tracker.close();
    tokio::time::timeout(WAIT, tracker.wait())
        .await
        .expect("the backplane tasks stop on shutdown");
    assert!(a.calls.try_recv().is_err(), "A got no other call");
}
