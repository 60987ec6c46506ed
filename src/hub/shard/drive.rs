//! How the reactor drives its connections: readiness handed to a
//! connection's read side (within the per-turn read budget), each message
//! handed to the connection and what it hands back carried out, the
//! end-of-turn flush, and the lifecycle steps that touch the slab and the
//! indexes (leaving `Open`, removal).
//!
//! What happens on one connection (TLS, tungstenite, parsing, rate limit,
//! dispatch, the close frame) is `crate::connection`'s; this module
//! sequences it and does what needs the shard: another connection, the
//! index, the poll registry.

use std::io;
use std::time::Instant;

use tungstenite::Message;

use super::DeliveryReport;
use super::{Shard, READ_BUDGET};
use crate::connection::{fails_connection, Decrypted, Phase, Then};
use crate::metrics::DropReason;
use crate::protocol::clock;
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
            match conn.read_socket(&mut scratch) {
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
        if self.connections.get(key).is_some_and(|c| c.is_tls()) {
            self.feed_tls(key, bytes);
        } else {
            self.process_input(key, bytes);
        }
    }

    /// Runs socket bytes through the connection's TLS session, handling
    /// the plaintext one record-sized piece at a time.
    fn feed_tls(&mut self, key: usize, mut input: &[u8]) {
        let mut plain = std::mem::take(&mut self.plaintext);
        while let Some(conn) = self.connections.get_mut(key) {
            match conn.decrypt(&mut input, &mut plain, &mut self.dirty) {
                Decrypted::Plaintext(n) => self.process_input(key, &plain[..n]),
                Decrypted::NeedInput => {}
                Decrypted::Drained => break,
                Decrypted::Closed => {
                    self.remove(key, DropReason::ConnectionClosing);
                    break;
                }
                Decrypted::Failed(error) => {
                    tracing::debug!(shard = self.index, %error, "TLS error; dropping the connection");
                    // rustls queued an alert: send it, then drop.
                    self.fail_transport(key);
                    break;
                }
            }
        }
        self.plaintext = plain;
    }

    /// Decodes (plaintext) bytes on a connection, then handles its data
    /// messages one at a time, then what decoding found (a failure, the
    /// peer's close).
    pub(super) fn process_input(&mut self, key: usize, bytes: &[u8]) {
        let now = Instant::now();
        // When these frames were read completely: SPEC-v2 §3 judges a
        // message against the token deadline at this instant.
        let read_at_ms = clock::unix_millis();
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        let mut inbox = std::mem::take(&mut self.inbox);
        let decoded = conn.decode(bytes, now, &self.limits, &mut inbox, &mut self.dirty);
        if decoded.overflowed {
            // tungstenite's control replies overflowed: no message lost yet.
            self.close(key, CloseReason::SlowConsumer { dropped: 0 });
        }
        for message in inbox.drain(..) {
            self.handle_message(key, message, now, read_at_ms);
        }
        self.inbox = inbox;
        if let Some(reason) = decoded.failure {
            self.close(key, reason);
        } else if decoded.peer_closed {
            self.leave_open(key, true);
            self.mark_dirty(key);
        }
    }

    /// One message, and at once what it asks of the shard: the next
    /// message's dispatch must see this one's effects.
    fn handle_message(&mut self, key: usize, message: Message, now: Instant, read_at_ms: u64) {
        let Some((conn, mut cx)) = self.connection_in_context(key) else {
            return;
        };
        let handled = conn.on_message(message, now, read_at_ms, &mut cx);
        if handled.overflowed {
            self.overflowed(key);
        }
        match handled.then {
            None => {}
            Some(Then::Close(reason)) => self.close(key, reason),
            Some(Then::Subscriptions(next)) => self.set_subscriptions(key, next),
            Some(Then::CancelledUpload(upload)) => self.upload_cancelled(key, &upload),
        }
    }

    /// Stops reading a connection whose transport failed and drops it once
    /// what is queued (a TLS alert, a close frame) has been written.
    fn fail_transport(&mut self, key: usize) {
        self.leave_open(key, true);
        self.mark_dirty(key);
    }

    /// Takes a connection out of the indexes into `Phase::Closing` (the
    /// one way out of `Open`, see `index`).
    fn leave_open(&mut self, key: usize, drop_when_flushed: bool) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        self.indexes
            .close(key, conn, Phase::closing(drop_when_flushed));
        self.publish_stats();
    }

    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.connections.get_mut(key) {
            conn.mark_dirty(&mut self.dirty);
        }
    }

    /// Flushes every connection that queued output this turn: frames
    /// queued in the same turn go out in one `sendmsg`.
    pub(super) fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(conn) = self.connections.get_mut(key) else {
                continue;
            };
            if let Some(reason) = conn.flush() {
                self.remove(key, reason);
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

    /// Starts a server-initiated close of an open connection: out of the
    /// indexes, then the close frame.
    pub(super) fn close(&mut self, key: usize, reason: CloseReason) {
        if !self.connections.get(key).is_some_and(|c| c.is_open()) {
            return;
        }
        self.leave_open(key, fails_connection(reason));
        self.connections[key].send_close(reason, &self.metrics, &mut self.dirty);
    }

    /// A frame did not fit in `key`'s queue: it is counted as dropped with
    /// the ones discarded, and the connection is closed with 4008.
    pub(super) fn overflowed(&mut self, key: usize) {
        self.metrics.dropped(DropReason::SlowConsumer, 1);
        self.close(key, CloseReason::SlowConsumer { dropped: 1 });
    }

    /// Drops a connection; messages still queued for it are counted as
    /// dropped for `reason`.
    pub(super) fn remove(&mut self, key: usize, reason: DropReason) {
        self.leave_open(key, true);
        if let Some(conn) = self.connections.try_remove(key) {
            conn.release(self.poll.registry(), reason, &self.metrics);
        }
        self.publish_stats();
    }
}
