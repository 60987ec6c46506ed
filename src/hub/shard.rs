//! A shard: one reactor thread that owns a slab of connections and does
//! all of their I/O with readiness-based (epoll, via mio) non-blocking
//! reads and writes.
//!
//! Users are assigned to shards by hash, so a user's connections, the
//! user's rate-limit window and the per-event subscriber index of those
//! connections all live here and are touched without any lock. The rest of
//! the process talks to a shard only through its bounded command channel
//! (see `command`). Timers are one coarse sweep per tick, not a timer per
//! connection. This module must not block: no waiting on other shards, no
//! locks held across anything but a counter update.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tokio::sync::{mpsc, oneshot};
use tungstenite::protocol::frame::coding::Data;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use super::command::{CloseTarget, Command, Delivery, DeliveryReport, NewConnection, ShardTarget};
use super::conn_id::ConnId;
use crate::connection::dispatch::{dispatch, upload_cancel_webhook_body, CancelledUpload};
use crate::connection::outbound::{Chunk, Flushed};
use crate::connection::{Connection, ConnectionInfo, Outbound, Phase};
use crate::limits::rate::retry_after_secs;
use crate::limits::{RateDecision, RateLimiter};
use crate::metrics::{DropReason, InKind, Metrics, OutKind};
use crate::protocol::envelope::EncodedMessage;
use crate::protocol::{client, clock, server, Event, EventSet, MessageIds, ProtocolError};
use crate::webhook::WebhookQueue;
use crate::ws::io::BufferedIo;
use crate::ws::{frame, CloseReason};

const WAKER: Token = Token(usize::MAX);
/// Socket reads per connection per reactor turn before others get a go.
const READ_BUDGET: usize = 16;
/// Commands handled per reactor turn before sockets get a go.
const COMMAND_BUDGET: usize = 512;
const SCRATCH_SIZE: usize = 64 * 1024;
/// One TLS record's worth of plaintext.
const PLAINTEXT_SIZE: usize = 16 * 1024;
/// How long a closing connection may take to finish the close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
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
}

impl ShardSettings {
    fn tick(&self) -> Duration {
        let shortest = self.heartbeat_interval.min(self.connection_timeout);
        (shortest / 4).clamp(Duration::from_millis(5), Duration::from_millis(500))
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

/// Starts shard `index` on its own thread.
pub fn spawn(
    index: usize,
    node: u32,
    settings: ShardSettings,
    metrics: Arc<Metrics>,
    webhook: Option<WebhookQueue>,
) -> io::Result<(ShardHandle, std::thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let stats = Arc::new(ShardStats::default());
    let shard = Shard {
        index,
        node,
        ws_config: settings.ws_config(),
        limiter: RateLimiter::new(settings.rate_limit_messages, settings.rate_limit_window),
        settings,
        poll,
        commands: rx,
        connections: Slab::new(),
        by_user: HashMap::new(),
        subscribers: (0..Event::COUNT).map(|_| HashSet::new()).collect(),
        ids: MessageIds::new(),
        metrics,
        webhook,
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
    };
    let thread = std::thread::Builder::new()
        .name(format!("wsgate-shard-{index}"))
        .spawn(move || shard.run())?;
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
    /// This node's tag in connection ids (`conn_id::node_tag`).
    node: u32,
    settings: ShardSettings,
    ws_config: WebSocketConfig,
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    connections: Slab<Connection>,
    /// Open connections per user (slab keys).
    by_user: HashMap<Arc<str>, Vec<usize>>,
    /// Open connections subscribed to each event, indexed by `Event::index`.
    subscribers: Vec<HashSet<usize>>,
    limiter: RateLimiter,
    ids: MessageIds,
    metrics: Arc<Metrics>,
    webhook: Option<WebhookQueue>,
    stats: Arc<ShardStats>,
    generation: u32,
    /// Socket reads land here; reused across connections.
    scratch: Vec<u8>,
    /// Decrypted TLS bytes land here; reused across connections.
    plaintext: Vec<u8>,
    inbox: Vec<Message>,
    /// Connections with queued output, flushed once at the end of a turn so
    /// frames queued in the same turn go out in one `writev`.
    dirty: Vec<usize>,
    /// Connections whose read budget ran out with data possibly left.
    pending_reads: Vec<usize>,
    reports: Vec<(oneshot::Sender<DeliveryReport>, usize)>,
    expired: Vec<(usize, Option<CloseReason>)>,
    ping: Arc<[u8]>,
    shutdown_deadline: Option<Instant>,
    drain: Option<Drain>,
}

/// Queues `chunk` on `conn`, marking it dirty; `false` when the queue
/// overflowed and the connection must be closed as a slow consumer.
fn enqueue(
    conn: &mut Connection,
    key: usize,
    chunk: Chunk,
    limit: usize,
    dirty: &mut Vec<usize>,
) -> bool {
    if conn.outbound.push(chunk, limit).is_err() {
        return false;
    }
    conn.messages_out += 1;
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(key);
    }
    true
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
                    tracing::error!(shard = self.index, %error, "poll failed; shard stops");
                    break;
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
            self.remove(key);
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
                    CloseTarget::User(user) => self.by_user.get(&user).cloned().unwrap_or_default(),
                };
                for &key in &keys {
                    self.close(key, reason);
                }
                let _ = done.send(keys.len());
            }
            Command::List { user, reply } => {
                let infos = match user {
                    Some(user) => self
                        .by_user
                        .get(&user)
                        .map(|keys| {
                            keys.iter()
                                .map(|&k| ConnectionInfo::of(&self.connections[k]))
                                .collect()
                        })
                        .unwrap_or_default(),
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

    /// Starts the drain: connections are closed with 1001 in batches
    /// spread over `drain`, so clients don't all reconnect (elsewhere) at
    /// the same instant; the shard stops `grace` after the last batch.
    fn begin_shutdown(&mut self, drain: Duration, grace: Duration) {
        let now = Instant::now();
        let keys: Vec<usize> = self.connections.iter().map(|(k, _)| k).collect();
        let batches = (drain.as_millis() / DRAIN_STEP.as_millis()).max(1) as usize;
        let per_batch = keys.len().div_ceil(batches).max(1);
        self.shutdown_deadline = Some(now + drain + grace);
        self.drain = Some(Drain {
            remaining: keys,
            per_batch,
            next_batch: now,
        });
        self.drain_step(now);
    }

    /// Closes the next batch of a drain, if it is due.
    fn drain_step(&mut self, now: Instant) {
        let Some(drain) = &mut self.drain else { return };
        if now < drain.next_batch {
            return;
        }
        let take = drain.per_batch.min(drain.remaining.len());
        let batch: Vec<usize> = drain.remaining.drain(..take).collect();
        drain.next_batch = now + DRAIN_STEP;
        if drain.remaining.is_empty() {
            self.drain = None;
        }
        let deadline = self.shutdown_deadline.unwrap_or(now + CLOSE_GRACE);
        for key in batch {
            self.close(key, CloseReason::ShuttingDown);
            if let Some(conn) = self.connections.get_mut(key) {
                if let Phase::Closing { deadline: d, .. } = &mut conn.phase {
                    *d = (*d).min(deadline);
                }
            }
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
        let now = Instant::now();
        let now_ms = clock::unix_millis();
        let user = new.permit.user().clone();
        entry.insert(Connection {
            socket,
            ws: WebSocketContext::new(Role::Server, Some(self.ws_config)),
            id,
            permit: new.permit,
            subscriptions: EventSet::EMPTY,
            outbound: Outbound::default(),
            phase: Phase::Open,
            dirty: false,
            connected_at_ms: now_ms,
            last_activity_ms: now_ms,
            last_seen: now,
            last_ping: now,
            token_expires_at: new.claims.expires_at,
            messages_in: 0,
            messages_out: 0,
            echo: new.echo,
            tls: new.tls,
        });
        // Most users hold one connection: an exact-size list keeps the
        // per-connection footprint down (the target is 2 KiB per idle connection).
        self.by_user
            .entry(user.clone())
            .or_insert_with(|| Vec::with_capacity(1))
            .push(key);
        self.metrics.connection_opened();
        self.publish_stats();
        tracing::debug!(shard = self.index, connection = %id, user = %user, "connection registered");
        if !new.echo {
            let established = server::connection_established(&self.ids, &id.to_string(), &user);
            self.reply(key, established, OutKind::ConnectionEstablished);
        }
        if !new.already_read.is_empty() {
            self.process_input(key, &new.already_read);
        }
    }

    /// Reads what the socket has. A read shorter than the buffer drained
    /// the socket (TCP on Linux: anything arriving later raises a new edge),
    /// which saves the extra `read` that would only return `WouldBlock`;
    /// when the peer has hung up (`until_would_block`) we read on to see EOF.
    fn read_ready(&mut self, key: usize, until_would_block: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut exhausted = true;
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.connections.get_mut(key) else {
                exhausted = false;
                break;
            };
            match conn.socket.read(&mut scratch) {
                Ok(0) => {
                    self.remove(key);
                    exhausted = false;
                    break;
                }
                Ok(n) => {
                    self.received(key, &scratch[..n]);
                    if n < scratch.len() && !until_would_block {
                        exhausted = false;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    exhausted = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.remove(key);
                    exhausted = false;
                    break;
                }
            }
        }
        // Edge-triggered readiness will not fire again for bytes already
        // waiting, so a connection that used its whole budget is revisited
        // next turn instead of starving the others now.
        if exhausted && self.connections.contains(key) && !self.pending_reads.contains(&key) {
            self.pending_reads.push(key);
        }
        self.scratch = scratch;
    }

    /// Socket bytes, decrypted first when the connection is TLS.
    fn received(&mut self, key: usize, bytes: &[u8]) {
        if self.connections.get(key).is_some_and(|c| c.tls.is_some()) {
            self.feed_tls(key, bytes);
        } else {
            self.process_input(key, bytes);
        }
    }

    /// Runs socket bytes through the connection's rustls session and feeds
    /// the plaintext on, one record-sized piece at a time.
    fn feed_tls(&mut self, key: usize, mut input: &[u8]) {
        let mut plain = std::mem::take(&mut self.plaintext);
        while let Some(tls) = self
            .connections
            .get_mut(key)
            .and_then(|c| c.tls.as_deref_mut())
        {
            if !input.is_empty() && tls.read_tls(&mut input).is_err() {
                self.remove(key);
                break;
            }
            if let Err(error) = tls.process_new_packets() {
                tracing::debug!(shard = self.index, %error, "TLS error; dropping the connection");
                // rustls queued an alert: send it, then drop.
                self.fail_transport(key);
                break;
            }
            let wants_write = tls.wants_write();
            let read = tls.reader().read(&mut plain);
            if wants_write {
                self.mark_dirty(key);
            }
            match read {
                // close_notify: the peer is done.
                Ok(0) => {
                    self.remove(key);
                    break;
                }
                Ok(n) => self.process_input(key, &plain[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if input.is_empty() {
                        break;
                    }
                }
                Err(_) => {
                    self.remove(key);
                    break;
                }
            }
        }
        self.plaintext = plain;
    }

    /// Stops reading a connection whose transport failed and drops it once
    /// what is queued (a TLS alert, a close frame) has been written.
    fn fail_transport(&mut self, key: usize) {
        let Some(conn) = self.connections.get(key) else {
            return;
        };
        if conn.is_open() {
            self.unindex(key);
        }
        if let Some(conn) = self.connections.get_mut(key) {
            conn.phase = Phase::Closing {
                deadline: Instant::now() + CLOSE_GRACE,
                drop_when_flushed: true,
            };
        }
        self.mark_dirty(key);
    }

    /// Feeds socket bytes to the connection's tungstenite state machine.
    fn process_input(&mut self, key: usize, bytes: &[u8]) {
        let now = Instant::now();
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        conn.last_seen = now;
        let mut io = BufferedIo::new(bytes);
        let mut inbox = std::mem::take(&mut self.inbox);
        let mut failure = None;
        let mut peer_closed = false;
        loop {
            match conn.ws.read(&mut io) {
                Ok(Message::Close(_)) => peer_closed = true,
                Ok(message) => inbox.push(message),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    peer_closed = true;
                    break;
                }
                Err(tungstenite::Error::Capacity(_)) => {
                    failure = Some(CloseReason::MessageTooBig);
                    break;
                }
                Err(tungstenite::Error::Utf8(_)) => {
                    failure = Some(CloseReason::InvalidPayload);
                    break;
                }
                Err(_) => {
                    failure = Some(CloseReason::ProtocolViolation);
                    break;
                }
            }
        }
        if !io.output.is_empty() {
            conn.outbound.push_unbounded(Chunk::from(io.output));
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
        for message in inbox.drain(..) {
            self.handle_message(key, message, now);
        }
        self.inbox = inbox;
        if let Some(reason) = failure {
            self.close(key, reason);
        } else if peer_closed {
            self.peer_closed(key);
        }
    }

    fn handle_message(&mut self, key: usize, message: Message, now: Instant) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if !conn.is_open() {
            return;
        }
        if conn.echo {
            self.echo(key, message);
            return;
        }
        let parsed = match &message {
            Message::Text(text) => client::parse(text.as_str()),
            Message::Binary(_) => client::ParsedMessage {
                reply_to: None,
                request: Err(ProtocolError::invalid_message(
                    "Binary frames are not accepted; send JSON text frames",
                )),
            },
            _ => return,
        };
        conn.messages_in += 1;
        conn.last_activity_ms = clock::unix_millis();
        let user = conn.user().clone();
        let current = conn.subscriptions;
        let kind = parsed
            .request
            .as_ref()
            .map_or(InKind::Invalid, |r| InKind::from_type_name(r.type_name()));
        self.metrics.message_in(kind);
        let reply_to = parsed.reply_to.as_ref();
        if let RateDecision::Limited {
            retry_after,
            abusive,
        } = self.limiter.check(&user, now)
        {
            self.metrics.rate_limited();
            let error = ProtocolError::rate_limited(retry_after_secs(retry_after));
            self.reply(
                key,
                server::error(&self.ids, &error, reply_to),
                OutKind::Error,
            );
            if abusive {
                tracing::info!(shard = self.index, user = %user, "closing a connection that keeps flooding");
                self.close(key, CloseReason::RateLimitAbuse);
            }
            return;
        }
        let request = match parsed.request {
            Ok(request) => request,
            Err(error) => {
                self.reply(
                    key,
                    server::error(&self.ids, &error, reply_to),
                    OutKind::Error,
                );
                return;
            }
        };
        let outcome = dispatch(&self.ids, request, current, reply_to);
        self.reply(key, outcome.reply, outcome.reply_kind);
        if let Some(next) = outcome.subscriptions {
            self.set_subscriptions(key, next);
        }
        if let Some(upload) = outcome.cancelled_upload {
            self.upload_cancelled(key, &user, &upload);
        }
    }

    /// Sends a data message back unchanged, through the normal write path.
    fn echo(&mut self, key: usize, message: Message) {
        let (kind, payload) = match &message {
            Message::Text(text) => (Data::Text, text.as_bytes()),
            Message::Binary(bytes) => (Data::Binary, &bytes[..]),
            _ => return,
        };
        let framed = frame::data_frame(kind, |buf| buf.extend_from_slice(payload));
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if !enqueue(
            conn,
            key,
            Chunk::from(framed),
            self.settings.max_queued_bytes,
            &mut self.dirty,
        ) {
            self.close(key, CloseReason::SlowConsumer);
        }
    }

    fn reply(&mut self, key: usize, message: EncodedMessage, kind: OutKind) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if !enqueue(
            conn,
            key,
            Chunk::from(message.frame),
            self.settings.max_queued_bytes,
            &mut self.dirty,
        ) {
            self.close(key, CloseReason::SlowConsumer);
            return;
        }
        self.metrics.messages_out(kind, 1);
    }

    fn set_subscriptions(&mut self, key: usize, next: EventSet) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        let previous = conn.subscriptions;
        conn.subscriptions = next;
        for event in next.difference(previous).iter() {
            self.subscribers[event.index()].insert(key);
        }
        for event in previous.difference(next).iter() {
            self.subscribers[event.index()].remove(&key);
        }
    }

    /// `upload.cancelled` to this user's subscribed connections (all in
    /// this shard), then the webhook call.
    fn upload_cancelled(&mut self, key: usize, user: &Arc<str>, upload: &CancelledUpload) {
        let connection_id = self.connections[key].id.to_string();
        let message = server::upload_cancelled(&self.ids, &upload.upload_id, &connection_id);
        let frame: Arc<[u8]> = Arc::from(message.frame);
        let keys = self.by_user.get(user).cloned().unwrap_or_default();
        let mut delivered = 0;
        for k in keys {
            let conn = &mut self.connections[k];
            if !conn.subscriptions.contains(Event::UploadCancelled) {
                continue;
            }
            if enqueue(
                conn,
                k,
                Chunk::Shared(frame.clone()),
                self.settings.max_queued_bytes,
                &mut self.dirty,
            ) {
                delivered += 1;
            } else {
                self.close(k, CloseReason::SlowConsumer);
            }
        }
        self.metrics
            .messages_out(OutKind::Event(Event::UploadCancelled), delivered);
        if let Some(webhook) = &self.webhook {
            webhook.submit(upload_cancel_webhook_body(
                &self.ids,
                user,
                &connection_id,
                upload,
            ));
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let limit = self.settings.max_queued_bytes;
        let frame = delivery.frame;
        let mut delivered = 0usize;
        let mut overflowed: Vec<usize> = Vec::new();
        let mut offer = |conn: &mut Connection, key: usize, dirty: &mut Vec<usize>| {
            if !conn.is_open() {
                return;
            }
            if enqueue(conn, key, Chunk::Shared(frame.clone()), limit, dirty) {
                delivered += 1;
            } else {
                overflowed.push(key);
            }
        };
        match delivery.target {
            ShardTarget::All => {
                for (key, conn) in self.connections.iter_mut() {
                    offer(conn, key, &mut self.dirty);
                }
            }
            ShardTarget::Subscribers(event) => {
                for &key in &self.subscribers[event.index()] {
                    offer(&mut self.connections[key], key, &mut self.dirty);
                }
            }
            ShardTarget::Selected { users, connections } => {
                let mut keys: Vec<usize> = users
                    .iter()
                    .filter_map(|u| self.by_user.get(u))
                    .flatten()
                    .copied()
                    .chain(connections.into_iter().filter_map(|id| self.lookup(id)))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                for key in keys {
                    offer(&mut self.connections[key], key, &mut self.dirty);
                }
            }
        }
        for key in overflowed {
            self.close(key, CloseReason::SlowConsumer);
        }
        self.metrics.messages_out(delivery.kind, delivered as u64);
        if let Some(report) = delivery.report {
            self.reports.push((report, delivered));
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.connections.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(conn) = self.connections.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            let flushed = match conn.tls.as_deref_mut() {
                Some(tls) => conn.outbound.flush_tls(tls, &mut conn.socket),
                None => conn.outbound.flush(&mut conn.socket),
            };
            match flushed {
                Err(_) => self.remove(key),
                Ok(Flushed::All) => {
                    if let Phase::Closing {
                        drop_when_flushed: true,
                        ..
                    } = conn.phase
                    {
                        // FIN after the close frame, before the fd goes.
                        let _ = conn.socket.shutdown(std::net::Shutdown::Write);
                        self.remove(key);
                    }
                }
                Ok(Flushed::Partially) => {}
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn send_reports(&mut self) {
        if self.reports.is_empty() {
            return;
        }
        let finished_at = Instant::now();
        for (report, delivered) in self.reports.drain(..) {
            let _ = report.send(DeliveryReport {
                delivered,
                finished_at,
            });
        }
    }

    /// Starts a server-initiated close: the close frame goes after what is
    /// queued (or, for a slow consumer, instead of it).
    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(conn) = self.connections.get(key) else {
            return;
        };
        if !conn.is_open() {
            return;
        }
        self.unindex(key);
        let conn = &mut self.connections[key];
        if reason == CloseReason::SlowConsumer {
            let dropped = conn.outbound.discard_unstarted();
            self.metrics
                .dropped(DropReason::SlowConsumer, dropped as u64);
        }
        let mut io = BufferedIo::new(&[]);
        let _ = conn.ws.close(&mut io, Some(reason.frame()));
        conn.outbound.push_unbounded(Chunk::from(io.output));
        conn.phase = Phase::Closing {
            deadline: Instant::now() + CLOSE_GRACE,
            // RFC 6455 §7.1.7: failing the connection on bad input means
            // closing TCP once the close frame is out, not waiting for a
            // peer that already misbehaves.
            drop_when_flushed: matches!(
                reason,
                CloseReason::ProtocolViolation
                    | CloseReason::InvalidPayload
                    | CloseReason::MessageTooBig
            ),
        };
        tracing::debug!(shard = self.index, connection = %conn.id, code = reason.code(), reason = reason.label(), "closing");
        self.mark_dirty(key);
    }

    /// The client sent a close frame (tungstenite queued the echo).
    fn peer_closed(&mut self, key: usize) {
        let Some(conn) = self.connections.get(key) else {
            return;
        };
        if conn.is_open() {
            self.unindex(key);
        }
        let conn = &mut self.connections[key];
        conn.phase = Phase::Closing {
            deadline: Instant::now() + CLOSE_GRACE,
            drop_when_flushed: true,
        };
        self.mark_dirty(key);
    }

    /// Takes an open connection out of the user and subscriber indexes.
    fn unindex(&mut self, key: usize) {
        let conn = &self.connections[key];
        for event in conn.subscriptions.iter() {
            self.subscribers[event.index()].remove(&key);
        }
        let user = conn.user();
        if let Some(keys) = self.by_user.get_mut(user) {
            keys.retain(|&k| k != key);
            if keys.is_empty() {
                self.by_user.remove(user);
            }
        }
        self.publish_stats();
    }

    fn remove(&mut self, key: usize) {
        if self.connections.get(key).is_some_and(Connection::is_open) {
            self.unindex(key);
        }
        if let Some(mut conn) = self.connections.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.socket);
            self.metrics.connection_closed();
            tracing::debug!(shard = self.index, connection = %conn.id, "connection removed");
        }
        self.publish_stats();
    }

    fn publish_stats(&self) {
        self.stats
            .connections
            .store(self.connections.len(), Ordering::Relaxed);
        self.stats
            .users
            .store(self.by_user.len(), Ordering::Relaxed);
    }

    /// The coarse timer sweep: heartbeats, timeouts, token expiry, and
    /// closing connections past their grace.
    fn tick(&mut self, now: Instant) {
        let unix_now = clock::unix_seconds();
        let timeout = self.settings.connection_timeout;
        let heartbeat = self.settings.heartbeat_interval;
        let limit = self.settings.max_queued_bytes;
        let mut expired = std::mem::take(&mut self.expired);
        for (key, conn) in self.connections.iter_mut() {
            match conn.phase {
                Phase::Closing { deadline, .. } => {
                    if now >= deadline {
                        expired.push((key, None));
                    }
                }
                Phase::Open => {
                    if now.duration_since(conn.last_seen) >= timeout {
                        expired.push((key, Some(CloseReason::ConnectionTimeout)));
                    } else if conn.token_expires_at <= unix_now {
                        expired.push((key, Some(CloseReason::TokenExpired)));
                    } else if now.duration_since(conn.last_ping) >= heartbeat {
                        conn.last_ping = now;
                        if conn
                            .outbound
                            .push(Chunk::Shared(self.ping.clone()), limit)
                            .is_err()
                        {
                            expired.push((key, Some(CloseReason::SlowConsumer)));
                        } else if !conn.dirty {
                            conn.dirty = true;
                            self.dirty.push(key);
                        }
                    }
                }
            }
        }
        for (key, reason) in expired.drain(..) {
            match reason {
                Some(reason) => self.close(key, reason),
                None => self.remove(key),
            }
        }
        self.expired = expired;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the per-connection footprint behind the "2 KiB per idle
    /// connection" target: the slab entry must stay small.
    #[test]
    fn connection_state_stays_small() {
        let size = std::mem::size_of::<Connection>();
        eprintln!("size_of::<Connection>() = {size}");
        assert!(size <= 768, "Connection grew to {size} bytes");
    }

    #[test]
    fn tick_is_a_fraction_of_the_shortest_timer() {
        let settings = ShardSettings {
            max_message_size: 65536,
            max_queued_bytes: 1 << 20,
            heartbeat_interval: Duration::from_millis(200),
            connection_timeout: Duration::from_secs(60),
            cleanup_interval: Duration::from_secs(30),
            rate_limit_messages: 100,
            rate_limit_window: Duration::from_secs(60),
        };
        assert_eq!(settings.tick(), Duration::from_millis(50));
    }
}
