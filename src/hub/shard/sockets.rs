//! The shard's socket side: reading (plain or through rustls), feeding
//! tungstenite, flushing outbound queues, and the close/remove lifecycle
//! of a connection. It decides nothing about message content: that is
//! `messages`.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Instant;

use tungstenite::Message;

use super::DeliveryReport;
use super::{Shard, CLOSE_GRACE, READ_BUDGET};
use crate::connection::outbound::{Chunk, Flushed};
use crate::connection::Phase;
use crate::metrics::DropReason;
use crate::ws::io::BufferedIo;
use crate::ws::CloseReason;

impl Shard {
    /// Reads what the socket has. A read shorter than the buffer drained
    /// the socket (TCP on Linux: anything arriving later raises a new edge),
    /// which saves the extra `read` that would only return `WouldBlock`;
    /// when the peer has hung up (`until_would_block`) we read on to see EOF.
    pub(super) fn read_ready(&mut self, key: usize, until_would_block: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut exhausted = true;
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.connections.get_mut(key) else {
                exhausted = false;
                break;
            };
            match conn.socket.read(&mut scratch) {
                Ok(0) => {
                    self.remove(key, DropReason::ConnectionClosing);
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
                // A reset: whatever is still queued can no longer be written.
                Err(_) => {
                    self.remove(key, DropReason::WriteFailed);
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
    pub(super) fn received(&mut self, key: usize, bytes: &[u8]) {
        if self.connections.get(key).is_some_and(|c| c.tls.is_some()) {
            self.feed_tls(key, bytes);
        } else {
            self.process_input(key, bytes);
        }
    }

    /// Runs socket bytes through the connection's rustls session and feeds
    /// the plaintext on, one record-sized piece at a time.
    pub(super) fn feed_tls(&mut self, key: usize, mut input: &[u8]) {
        let mut plain = std::mem::take(&mut self.plaintext);
        while let Some(tls) = self
            .connections
            .get_mut(key)
            .and_then(|c| c.tls.as_deref_mut())
        {
            if !input.is_empty() && tls.read_tls(&mut input).is_err() {
                self.remove(key, DropReason::ConnectionClosing);
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
                    self.remove(key, DropReason::ConnectionClosing);
                    break;
                }
                Ok(n) => self.process_input(key, &plain[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if input.is_empty() {
                        break;
                    }
                }
                Err(_) => {
                    self.remove(key, DropReason::ConnectionClosing);
                    break;
                }
            }
        }
        self.plaintext = plain;
    }

    /// Stops reading a connection whose transport failed and drops it once
    /// what is queued (a TLS alert, a close frame) has been written.
    pub(super) fn fail_transport(&mut self, key: usize) {
        self.leave_open(key, true);
        self.mark_dirty(key);
    }

    /// Takes a connection out of the indexes into `Phase::Closing` (the
    /// one way out of `Open`, see `index`).
    fn leave_open(&mut self, key: usize, drop_when_flushed: bool) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        let phase = Phase::Closing {
            deadline: Instant::now() + CLOSE_GRACE,
            drop_when_flushed,
        };
        self.indexes.close(key, conn, phase);
        self.publish_stats();
    }

    /// Feeds socket bytes to the connection's tungstenite state machine.
    /// Only complete frames count as activity: a client dribbling an
    /// unfinished frame still reaches the 4000 timeout.
    pub(super) fn process_input(&mut self, key: usize, bytes: &[u8]) {
        let now = Instant::now();
        let control_cap = self.settings.max_control_frames_per_second;
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        let mut io = BufferedIo::new(bytes);
        let mut inbox = std::mem::take(&mut self.inbox);
        let mut failure = None;
        let mut peer_closed = false;
        loop {
            let read = conn.ws.read(&mut io);
            if read.is_ok() {
                conn.last_seen = now;
            }
            match read {
                Ok(Message::Close(_)) => peer_closed = true,
                Ok(Message::Ping(_) | Message::Pong(_)) => {
                    conn.control_frames = conn.control_frames.saturating_add(1);
                    if control_cap != 0 && conn.control_frames > control_cap {
                        failure = Some(CloseReason::RateLimitAbuse);
                        break;
                    }
                }
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
        // tungstenite's pongs count against the queue budget like
        // everything else, so a ping flood from a client that never reads
        // is cut off here and not at the next heartbeat; the echo of the
        // peer's close frame must go out whatever the budget.
        let mut overflowed = false;
        if !io.output.is_empty() {
            let control = Chunk::Control(Arc::from(io.output));
            if peer_closed || !conn.is_open() {
                conn.outbound.push_unbounded(control);
            } else {
                overflowed = conn
                    .outbound
                    .push(control, self.settings.max_queued_bytes)
                    .is_err();
            }
            if !overflowed && !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
        if overflowed {
            self.close(key, CloseReason::SlowConsumer);
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

    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.connections.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    pub(super) fn flush_dirty(&mut self) {
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
                Err(_) => self.remove(key, DropReason::WriteFailed),
                Ok(Flushed::All) => {
                    if let Phase::Closing {
                        drop_when_flushed: true,
                        ..
                    } = conn.phase
                    {
                        // FIN after the close frame, before the fd goes.
                        let _ = conn.socket.shutdown(std::net::Shutdown::Write);
                        self.remove(key, DropReason::ConnectionClosing);
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

    pub(super) fn send_reports(&mut self) {
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
    pub(super) fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(conn) = self.connections.get(key) else {
            return;
        };
        if !conn.is_open() {
            return;
        }
        // RFC 6455 §7.1.7: failing the connection on bad input means
        // closing TCP once the close frame is out, not waiting for a
        // peer that already misbehaves.
        let drop_when_flushed = matches!(
            reason,
            CloseReason::ProtocolViolation
                | CloseReason::InvalidPayload
                | CloseReason::MessageTooBig
        );
        self.leave_open(key, drop_when_flushed);
        let conn = &mut self.connections[key];
        if reason == CloseReason::SlowConsumer {
            let dropped = conn.outbound.discard_unstarted();
            self.metrics
                .dropped(DropReason::SlowConsumer, dropped as u64);
        }
        let mut io = BufferedIo::new(&[]);
        let _ = conn.ws.close(&mut io, Some(reason.frame()));
        conn.outbound
            .push_unbounded(Chunk::Control(Arc::from(io.output)));
        tracing::debug!(shard = self.index, connection = %conn.id, code = reason.code(), reason = reason.label(), "closing");
        self.mark_dirty(key);
    }

    /// The client sent a close frame (tungstenite queued the echo).
    pub(super) fn peer_closed(&mut self, key: usize) {
        self.leave_open(key, true);
        self.mark_dirty(key);
    }

    /// A frame did not fit in `key`'s queue: it is counted as dropped with
    /// the ones discarded, and the connection is closed with 4008.
    pub(super) fn overflowed(&mut self, key: usize) {
        self.metrics.dropped(DropReason::SlowConsumer, 1);
        self.close(key, CloseReason::SlowConsumer);
    }

    /// Drops a connection; messages still queued for it are counted as
    /// dropped for `reason`.
    pub(super) fn remove(&mut self, key: usize, reason: DropReason) {
        self.leave_open(key, true);
        if let Some(mut conn) = self.connections.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.socket);
            let undelivered = conn.outbound.queued_messages();
            if undelivered > 0 {
                self.metrics.dropped(reason, undelivered as u64);
            }
            self.metrics.connection_closed();
            tracing::debug!(shard = self.index, connection = %conn.id, "connection removed");
        }
        self.publish_stats();
    }
}
