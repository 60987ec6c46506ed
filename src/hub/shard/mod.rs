//! A shard: one reactor thread that owns a slab of connections and drives
//! them with readiness-based (epoll, via mio) non-blocking I/O.
//!
//! Users are assigned to shards by hash, so a user's connections, the
//! user's rate-limit window and the per-event subscriber index of those
//! connections all live here and are touched without any lock. The rest of
//! the process talks to a shard only through its bounded command channel
//! (see `command`). This file holds the handle, the reactor loop and its
//! turn (events, commands, the tick, the flush at the end), the commands
//! and registration; `index` the user and subscriber indexes, `drive` how
//! readiness reaches a connection and what the connection hands back is
//! carried out, `deliver` deliveries, `timers` the coarse sweep (one per
//! tick, not a timer per connection) and the shutdown drain. What happens
//! on one connection is `crate::connection`'s. This module must not block:
//! no waiting on other shards, no locks held across anything but a counter
//! update.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tokio::sync::{mpsc, oneshot};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

use super::command::{CloseTarget, Command, DeliveryReport, NewConnection};
use crate::address::ConnId;
use crate::auth::TokenVerifier;
use crate::cluster::Backplane;
use crate::connection::{self, Connection, ConnectionInfo, Due, TokenTimer};
use crate::history::History;
use crate::limits::RateLimiter;
use crate::metrics::{DropReason, Metrics};
use crate::protocol::MessageIds;
use crate::webhook::WebhookQueue;
use crate::ws::{frame, CloseReason};

mod deliver;
mod drive;
mod index;
mod timers;

use index::Index;

const WAKER: Token = Token(usize::MAX);
/// Socket reads per connection per reactor turn before others get a go.
const READ_BUDGET: usize = 16;
/// Commands handled per reactor turn before sockets get a go.
const COMMAND_BUDGET: usize = 512;
const SCRATCH_SIZE: usize = 64 * 1024;
/// One TLS record's worth of plaintext.
const PLAINTEXT_SIZE: usize = 16 * 1024;
const COMMAND_QUEUE: usize = 4096;
/// Interval between two batches of a shutdown drain.
const DRAIN_STEP: Duration = Duration::from_millis(25);

/// Connections still to be closed by a shutdown drain.
struct Drain {
    remaining: Vec<usize>,
    per_batch: usize,
    next_batch: Instant,
}

/// A shard's knobs, from `Config`.
#[derive(Clone, Debug)]
pub struct ShardSettings {
    pub max_message_size: usize,
    pub max_queued_bytes: usize,
    pub heartbeat_interval: Duration,
    pub connection_timeout: Duration,
    pub cleanup_interval: Duration,
    pub rate_limit_messages: u32,
    pub rate_limit_window: Duration,
    /// WebSocket control frames (ping, pong) a client may send per second
    /// on one connection; past it, close 1008.
    pub max_control_frames_per_second: u32,
    /// `--token-expiring-notice` (zero: no `token.expiring`).
    pub token_expiring_notice: Duration,
    /// `--token-refresh-grace`: past `exp` + leeway before the 4001.
    pub token_refresh_grace: Duration,
    /// `--max-connection-age` (zero: off).
    pub max_connection_age: Duration,
    /// `--shutdown-reconnect-spread`: the 1001 `retry_after` is drawn
    /// from 0 to this.
    pub shutdown_reconnect_spread: Duration,
    /// Test-only fault injection (`--test-shard-panic-user`): registering
    /// this user's connection panics the shard.
    pub test_panic_user: Option<String>,
    /// Where connections read history at a resume (SPEC-v2 §2).
    pub history: History,
    pub resume_timeout: Duration,
}

impl ShardSettings {
    /// The flags' defaults, for tests that start shards directly.
    #[cfg(test)]
    pub(crate) fn for_tests() -> ShardSettings {
        ShardSettings {
            max_message_size: 65536,
            max_queued_bytes: 1 << 20,
            heartbeat_interval: Duration::from_secs(30),
            connection_timeout: Duration::from_secs(60),
            cleanup_interval: Duration::from_secs(30),
            rate_limit_messages: 100,
            rate_limit_window: Duration::from_secs(60),
            max_control_frames_per_second: 100,
            token_expiring_notice: Duration::from_secs(60),
            token_refresh_grace: Duration::ZERO,
            max_connection_age: Duration::ZERO,
            shutdown_reconnect_spread: Duration::from_secs(5),
            test_panic_user: None,
            history: History::Disabled,
            resume_timeout: Duration::from_secs(5),
        }
    }

    fn tick(&self) -> Duration {
        let mut shortest = self.heartbeat_interval.min(self.connection_timeout);
        // The ages are spread over the last 10 % of the flag: a coarser
        // sweep would close them in lumps.
        if !self.max_connection_age.is_zero() {
            shortest = shortest.min(self.max_connection_age / 10);
        }
        (shortest / 4).clamp(Duration::from_millis(5), Duration::from_millis(500))
    }

    /// `leeway`: the verifier's `--jwt-leeway`, which a connection's token
    /// gets past `exp` like a connecting token does.
    fn connection_limits(&self, leeway: Duration) -> connection::Limits {
        connection::Limits {
            max_queued_bytes: self.max_queued_bytes,
            max_control_frames_per_second: self.max_control_frames_per_second,
            heartbeat_interval: self.heartbeat_interval,
            connection_timeout: self.connection_timeout,
            token_expiring_notice: self.token_expiring_notice,
            token_grace: leeway + self.token_refresh_grace,
            resume_timeout: self.resume_timeout,
        }
    }

    fn ws_config(&self) -> WebSocketConfig {
        // A zero read buffer: tungstenite then allocates only for frames
        // actually being read, so an idle connection holds no read buffer.
        WebSocketConfig::default()
            .read_buffer_size(0)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// Counters the shard publishes for `stats` without a round trip.
#[derive(Debug, Default)]
pub struct ShardStats {
    pub connections: AtomicUsize,
    pub users: AtomicUsize,
}

/// A shard no longer takes commands: the server is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);

/// The sending side of a shard, held by the hub.
pub struct ShardHandle {
    pub index: usize,
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    pub stats: Arc<ShardStats>,
}

impl ShardHandle {
    pub async fn send(&self, command: Command) -> Result<(), ShardGone> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ShardGone(self.index))?;
        self.waker.wake().map_err(|_| ShardGone(self.index))
    }
}

/// The process-wide parts every shard shares.
#[derive(Clone)]
pub struct ShardShared {
    pub metrics: Arc<Metrics>,
    pub webhook: Option<WebhookQueue>,
    pub backplane: Arc<dyn Backplane>,
    /// Checks `auth.refresh` tokens on the shard thread.
    pub verifier: Arc<TokenVerifier>,
}

/// Starts shard `index` on its own thread.
pub fn spawn(
    index: usize,
    node: u32,
    settings: ShardSettings,
    shared: ShardShared,
) -> io::Result<(ShardHandle, std::thread::JoinHandle<()>)> {
    let ShardShared {
        metrics,
        webhook,
        backplane,
        verifier,
    } = shared;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let stats = Arc::new(ShardStats::default());
    let shard = Shard {
        index,
        node,
        ws_config: settings.ws_config(),
        limits: settings.connection_limits(verifier.leeway()),
        limiter: RateLimiter::new(settings.rate_limit_messages, settings.rate_limit_window),
        settings,
        poll,
        commands: rx,
        connections: Slab::new(),
        indexes: Index::new(),
        ids: MessageIds::new(),
        metrics,
        webhook,
        backplane,
        verifier,
        stats: stats.clone(),
        generation: 0,
        scratch: vec![0; SCRATCH_SIZE],
        plaintext: vec![0; PLAINTEXT_SIZE],
        inbox: Vec::new(),
        dirty: Vec::new(),
        pending_reads: Vec::new(),
        reports: Vec::new(),
        expired: Vec::new(),
        ping: frame::ping_frame(),
        shutdown_deadline: None,
        drain: None,
        control_window_start: Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("wsgate-shard-{index}"))
        .spawn(move || {
            // A shard that stopped would leave its users' connections
            // frozen while `/health` still says ok: a panic ends the process
            // instead, loudly, for the supervisor to restart (failure model
            // in docs/SECURITY.md).
            if let Err(panic) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shard.run()))
            {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                fatal(index, &format!("panicked: {what}"));
            }
        })?;
    Ok((
        ShardHandle {
            index,
            commands: tx,
            waker,
            stats,
        },
        thread,
    ))
}

struct Shard {
    index: usize,
    /// This node's tag in connection ids (`address::node_tag`).
    node: u32,
    settings: ShardSettings,
    ws_config: WebSocketConfig,
    /// What each connection is held to (from `settings`).
    limits: connection::Limits,
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    connections: Slab<Connection>,
    /// Open connections per user and per subscribed event.
    indexes: Index,
    limiter: RateLimiter,
    ids: MessageIds,
    metrics: Arc<Metrics>,
    webhook: Option<WebhookQueue>,
    /// Where `upload.cancelled` goes for the user's other nodes.
    backplane: Arc<dyn Backplane>,
    verifier: Arc<TokenVerifier>,
    stats: Arc<ShardStats>,
    generation: u32,
    /// Socket reads land here; reused across connections.
    scratch: Vec<u8>,
    /// Decrypted TLS bytes land here; reused across connections.
    plaintext: Vec<u8>,
    inbox: Vec<Message>,
    /// Connections with queued output, flushed once at the end of a turn so
    /// frames queued in the same turn go out in one `sendmsg`.
    dirty: Vec<usize>,
    /// Connections whose read budget ran out with data possibly left.
    pending_reads: Vec<usize>,
    reports: Vec<(oneshot::Sender<DeliveryReport>, usize)>,
    expired: Vec<(usize, Due)>,
    ping: Arc<[u8]>,
    shutdown_deadline: Option<Instant>,
    drain: Option<Drain>,
    /// When the per-connection control frame counts were last reset.
    control_window_start: Instant,
}

/// Ends the process: a shard thread cannot go on (see `spawn`).
fn fatal(shard: usize, what: &str) -> ! {
    tracing::error!(
        shard,
        "shard thread {what}; aborting the process (a supervisor should restart it)"
    );
    eprintln!("wsgate: shard {shard} {what}; aborting");
    std::process::abort();
}

impl Shard {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let tick = self.settings.tick();
        let mut next_tick = Instant::now() + tick;
        let mut last_cleanup = Instant::now();
        let mut more_commands = false;
        let mut channel_open = true;
        loop {
            let now = Instant::now();
            let timeout = if more_commands || !self.pending_reads.is_empty() {
                Duration::ZERO
            } else {
                let wake_at = self
                    .drain
                    .as_ref()
                    .map_or(next_tick, |d| d.next_batch.min(next_tick));
                wake_at.saturating_duration_since(now)
            };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() != io::ErrorKind::Interrupted {
                    fatal(self.index, &format!("cannot poll ({error})"));
                }
            }
            let mut woken = more_commands;
            for event in events.iter() {
                match event.token() {
                    WAKER => woken = true,
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            let until_would_block = event.is_read_closed() || event.is_error();
                            self.read_ready(key, until_would_block);
                        }
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.pending_reads) {
                self.read_ready(key, true);
            }
            if woken && channel_open {
                // Let the thread that woke us finish queueing what it has
                // (on a shared core the wake-up would otherwise preempt it
                // after one command): more publishes per turn means more
                // frames per `sendmsg`. Returns at once when nothing else
                // wants this core.
                if !more_commands {
                    std::thread::yield_now();
                }
                (more_commands, channel_open) = self.drain_commands();
                if !channel_open && self.shutdown_deadline.is_none() {
                    self.begin_shutdown(Duration::ZERO, Duration::from_secs(1));
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + tick;
                if now.duration_since(last_cleanup) >= self.settings.cleanup_interval {
                    self.limiter.prune(now);
                    last_cleanup = now;
                }
            }
            self.drain_step(now);
            self.flush_dirty();
            self.send_reports();
            if let Some(deadline) = self.shutdown_deadline {
                if self.connections.is_empty() || Instant::now() >= deadline {
                    break;
                }
            }
        }
        let keys: Vec<usize> = self.connections.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.remove(key, DropReason::ConnectionClosing);
        }
        tracing::debug!(shard = self.index, "shard stopped");
    }

    /// Returns (more commands may be waiting, channel still open).
    fn drain_commands(&mut self) -> (bool, bool) {
        for _ in 0..COMMAND_BUDGET {
            match self.commands.try_recv() {
                Ok(command) => self.handle_command(command),
                Err(mpsc::error::TryRecvError::Empty) => return (false, true),
                Err(mpsc::error::TryRecvError::Disconnected) => return (false, false),
            }
        }
        (true, true)
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Register(new) => self.register(*new),
            Command::Deliver(delivery) => self.deliver(delivery),
            Command::Close {
                target,
                reason,
                done,
            } => {
                let keys: Vec<usize> = match target {
                    CloseTarget::Connection(id) => self.lookup(id).into_iter().collect(),
                    CloseTarget::User(user) => self.indexes.user(&user).to_vec(),
                };
                for &key in &keys {
                    self.close(key, reason);
                }
                let _ = done.send(keys.len());
            }
            Command::List { user, reply } => {
                let infos = match user {
                    Some(user) => self
                        .indexes
                        .user(&user)
                        .iter()
                        .filter_map(|&k| self.connections.get(k))
                        .map(ConnectionInfo::of)
                        .collect(),
                    None => self
                        .connections
                        .iter()
                        .filter(|(_, c)| c.is_open())
                        .map(|(_, c)| ConnectionInfo::of(c))
                        .collect(),
                };
                let _ = reply.send(infos);
            }
            Command::Shutdown { drain, grace } => self.begin_shutdown(drain, grace),
        }
    }

    /// The slab key of a live connection id (shard and generation checked).
    fn lookup(&self, id: ConnId) -> Option<usize> {
        if id.shard() != self.index {
            return None;
        }
        self.connections
            .get(id.key())
            .filter(|c| c.id == id && c.is_open())
            .map(|_| id.key())
    }

    fn register(&mut self, new: NewConnection) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        self.generation = ConnId::next_generation(self.generation);
        let id = ConnId::new(self.node, self.index, self.generation, key);
        let mut socket = mio::net::TcpStream::from_std(new.socket);
        if let Err(error) = self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%error, "cannot register an upgraded socket");
            return;
        }
        let user = new.permit.user().clone();
        if self.settings.test_panic_user.as_deref() == Some(&*user) {
            panic!("fault injected by --test-shard-panic-user");
        }
        // Deactivated after the HTTP side checked, with the deactivation's
        // close already handled here: refuse it now. A deactivation after
        // this check finds the connection in the index (commands are FIFO).
        let deactivated = new.permit.user_inactive();
        let conn = entry.insert(Connection::new(
            id,
            socket,
            new.tls,
            self.ws_config,
            new.permit,
            TokenTimer::new(new.claims.exp, new.token_notice),
            new.echo,
        ));
        if new.resume {
            conn.hold(Instant::now() + self.limits.resume_timeout);
        }
        if let Some(age) = connection::draw_age(self.settings.max_connection_age) {
            conn.age_out_after(age);
        }
        self.indexes.insert(key, conn);
        self.metrics.connection_opened();
        self.publish_stats();
        tracing::debug!(shard = self.index, connection = %id, user = %user, "connection registered");
        if deactivated {
            tracing::debug!(shard = self.index, connection = %id, "user deactivated during the upgrade");
            self.close(key, CloseReason::UserInactive);
            return;
        }
        let Some((conn, mut cx)) = self.connection_in_context(key) else {
            return;
        };
        if conn.greet(&mut cx).overflowed {
            self.overflowed(key);
        }
        if !new.already_read.is_empty() {
            self.process_input(key, &new.already_read);
        }
    }

    /// The connection under `key` and what a message handler may touch
    /// beside it: disjoint borrows of the shard's fields, so nothing is
    /// copied or looked up twice on the per-message path.
    fn connection_in_context(
        &mut self,
        key: usize,
    ) -> Option<(&mut Connection, connection::Context<'_>)> {
        let conn = self.connections.get_mut(key)?;
        let cx = connection::Context {
            ids: &self.ids,
            limiter: &mut self.limiter,
            metrics: &self.metrics,
            limits: &self.limits,
            verifier: &self.verifier,
            dirty: &mut self.dirty,
            history: &self.settings.history,
        };
        Some((conn, cx))
    }

    fn publish_stats(&self) {
        self.stats
            .connections
            .store(self.connections.len(), Ordering::Relaxed);
        self.stats
            .users
            .store(self.indexes.users(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_a_fraction_of_the_shortest_timer() {
        let settings = ShardSettings {
            heartbeat_interval: Duration::from_millis(200),
            ..ShardSettings::for_tests()
        };
        assert_eq!(settings.tick(), Duration::from_millis(50));
        let aged = ShardSettings {
            max_connection_age: Duration::from_secs(1),
            ..settings
        };
        assert_eq!(aged.tick(), Duration::from_millis(25));
    }
}
