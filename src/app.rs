//! Wiring: builds every part from a [`Config`], binds the listener, and
//! runs until shutdown, then drains in order: stop accepting, close every
//! WebSocket with 1001 and flush, wait for tracked tasks, join shards.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::jwt::KeyError;
use crate::auth::TokenVerifier;
use crate::cluster::redis::{NodeIdTaken, RedisBackplane, RedisSettings};
use crate::cluster::{Backplane, LocalBackplane};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::history::{History, HistoryStore, MemoryStore, RedisStore};
use crate::http::AppState;
use crate::hub::shard::{ShardSettings, ShardShared};
use crate::hub::Hub;
use crate::limits::admission::SharedSlots;
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::net::listener;
use crate::net::tls::TlsState;

/// Why [`Server::bind`] failed: the flag at fault, or the resource that
/// could not be had.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--listen: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--jwt-public-key: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot start shard threads: {0}")]
    Shards(std::io::Error),
    #[error("--redis-url: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookError),
    #[error(transparent)]
    NodeIdTaken(#[from] NodeIdTaken),
}

/// A bound, ready gateway. `run` serves until the shutdown token fires.
pub struct Server {
    state: Arc<AppState>,
    tls: Option<Arc<TlsState>>,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Server {
    /// Binds the listener and starts everything behind it (shards, the
    /// backplane, the webhook worker); nothing is served until [`run`](Self::run).
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let listener = listener::bind(config.listen).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let verifier = Arc::new(TokenVerifier::new(&config.auth)?);
        let tls = match &config.tls {
            Some((cert, key)) => Some(TlsState::load(cert, key)?),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        metrics.set_node_id(&config.node_id);
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let webhook = match &config.webhook {
            Some(webhook) => Some(crate::webhook::spawn(
                webhook,
                config.api_key.clone(),
                metrics.clone(),
                &tracker,
                shutdown.clone(),
            )?),
            None => None,
        };
        let settings = ShardSettings {
            max_message_size: config.limits.max_message_size,
            max_queued_bytes: config.limits.max_queued_bytes,
            heartbeat_interval: config.timers.heartbeat_interval,
            connection_timeout: config.timers.connection_timeout,
            cleanup_interval: config.timers.cleanup_interval,
            rate_limit_messages: config.limits.rate_limit_messages,
            rate_limit_window: config.limits.rate_limit_window,
            max_control_frames_per_second: config.max_control_frames_per_second,
            token_expiring_notice: config.timers.token_expiring_notice,
            token_refresh_grace: config.timers.token_refresh_grace,
            max_connection_age: config.max_connection_age,
            shutdown_reconnect_spread: config.shutdown_reconnect_spread,
            test_panic_user: config.test_shard_panic_user.clone(),
            history: history(&config, &metrics),
            resume_timeout: config.history.resume_timeout,
        };
        if let Some(store) = settings.history.store() {
            sweep_history(store.clone(), &tracker, shutdown.clone());
        }
        if let History::Redis { store, .. } = &settings.history {
            renew_unrecorded(store.clone(), &tracker, shutdown.clone());
        }
        // Cluster mode: the Redis backplane links this node to the others;
        // otherwise a no-op, and nothing below runs any cluster code.
        let redis = match &config.redis_url {
            Some(url) => {
                let settings = RedisSettings {
                    url: url.clone(),
                    node_id: config.node_id.clone(),
                    lease_ttl: config.timers.connection_timeout,
                    queue_bytes: config.backplane_queue_bytes,
                };
                let (redis, tasks) = RedisBackplane::new(&settings, metrics.clone())?;
                redis.claim_node_id().await?;
                Some((redis, tasks))
            }
            None => None,
        };
        let backplane: Arc<dyn Backplane> = match &redis {
            Some((redis, _)) => redis.clone(),
            None => Arc::new(LocalBackplane),
        };
        let shared_slots: Option<Arc<dyn SharedSlots>> = match &redis {
            Some((redis, _)) => Some(redis.clone()),
            None => None,
        };
        let admission = Admission::with_shared(
            config.limits.max_connections,
            config.limits.max_connections_per_user,
            shared_slots,
        );
        let hub = Arc::new(
            Hub::start(
                config.shards,
                settings,
                ShardShared {
                    metrics: metrics.clone(),
                    webhook,
                    backplane,
                    verifier: verifier.clone(),
                },
                config.node_id.clone(),
                admission.clone(),
            )
            .map_err(StartError::Shards)?,
        );
        tracing::info!(
            node_id = %config.node_id,
            cluster = config.redis_url.is_some(),
            "node starting"
        );
        if config.api_key.is_none() {
            tracing::warn!(
                "no --api-key: the server API (/api/v1/*) is off, every call answers 401"
            );
        }
        if let Some((_, tasks)) = redis {
            tasks.spawn(hub.clone(), &tracker, shutdown.clone());
        }
        let gateway = Gateway::new(hub.clone());
        let connect_rate = crate::limits::ConnectRateLimiter::new(config.connection_rate_limit);
        let pending = Arc::new(tokio::sync::Semaphore::new(config.max_pending_connections));
        let state = Arc::new(AppState {
            config: Arc::new(config),
            hub,
            admission,
            verifier,
            metrics,
            gateway,
            tracker,
            shutdown,
            echo_connections: Default::default(),
            connect_rate,
            pending,
            refusal_ids: Default::default(),
        });
        if let Some(tls) = &tls {
            tls.reload_on_sighup(&state.tracker, state.shutdown.clone())
                .map_err(StartError::Signal)?;
        }
        Ok(Server {
            state,
            tls,
            listener,
            local_addr,
        })
    }

    /// The bound address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://HOST:PORT`, or `https://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The library handle to publish and manage connections.
    pub fn gateway(&self) -> Gateway {
        self.state.gateway.clone()
    }

    /// Cancel it to shut the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains.
    pub async fn run(self) -> Result<(), std::io::Error> {
        let state = self.state;
        let accept = tokio::spawn(listener::accept_loop(
            self.listener,
            state.clone(),
            self.tls,
            state.tracker.clone(),
            state.shutdown.clone(),
        ));
        state.shutdown.cancelled().await;
        let _ = accept.await;
        let grace = state.config.shutdown_grace;
        state.hub.shutdown(state.config.drain_time, grace).await;
        state.tracker.close();
        if tokio::time::timeout(grace, state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not finish within the shutdown grace period");
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// This node's history: in memory on a single node, on Redis in cluster
/// mode (docs/CLUSTER.md, "History"); `Unavailable` if the Redis URL does
/// not even parse (the backplane then refuses it too).
fn history(config: &Config, metrics: &Arc<Metrics>) -> History {
    let Some(settings) = &config.history.store else {
        return History::Disabled;
    };
    if let Some(url) = &config.redis_url {
        if !config.history.cluster {
            return History::Unavailable;
        }
        let commands = redis::Client::open(url.as_str())
            .and_then(|client| crate::cluster::redis::command_connection(&client));
        return match commands {
            Ok(commands) => History::Redis {
                store: Arc::new(RedisStore::new(
                    commands,
                    crate::cluster::redis::CHANNEL.to_owned(),
                    settings.clone(),
                )),
                max_recovery: config.history.recovery_max_events,
                last_value_rules: config.history.last_value_rules.clone().into(),
            },
            Err(error) => {
                tracing::warn!(%error, "cluster history unavailable");
                History::Unavailable
            }
        };
    }
    History::Store {
        store: Arc::new(MemoryStore::new(settings.clone(), metrics.clone())),
        max_recovery: config.history.recovery_max_events,
        last_value_rules: config.history.last_value_rules.clone().into(),
    }
}

/// Drops expired streams once a second, so idle streams free their memory
/// without waiting for an access.
fn sweep_history(store: Arc<dyn HistoryStore>, tracker: &TaskTracker, shutdown: CancellationToken) {
    tracker.spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => store.sweep(),
            }
        }
    });
}

/// Cluster mode: once a second, gives a new epoch to the streams that
/// delivered unrecorded events while Redis was away (a no-op while there
/// are none; retried while Redis is still away).
fn renew_unrecorded(store: Arc<RedisStore>, tracker: &TaskTracker, shutdown: CancellationToken) {
    tracker.spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => store.forget_unrecorded().await,
            }
        }
    });
}
