//! A connection's read side: socket bytes, through rustls when the
//! connection is TLS, into tungstenite over [`BufferedIo`], out as whole
//! data messages for `message`.
//!
//! Control frames stop here: tungstenite answers pings and the peer's close
//! itself, and those replies join the connection's one outbound queue (so
//! frames never interleave); client pings and pongs are capped per second.
//! This module decodes only: what a message means is `message`'s, and
//! whether a connection closes or is dropped is reported, never carried out.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Instant;

use tungstenite::Message;

use super::{Chunk, Connection, Limits};
use crate::ws::io::BufferedIo;
use crate::ws::CloseReason;

/// One step of taking plaintext out of a TLS session.
#[derive(Debug)]
pub enum Decrypted {
    /// This many bytes of plaintext are at the start of the buffer.
    Plaintext(usize),
    /// No plaintext yet, and input is left to feed: call again.
    NeedInput,
    /// Everything given was taken and no plaintext is left (also what a
    /// connection without TLS answers).
    Drained,
    /// close_notify or an unreadable stream: the peer is gone.
    Closed,
    /// A TLS protocol error; rustls queued an alert to send before the
    /// connection is dropped.
    Failed(rustls::Error),
}

/// What decoding a piece of input found besides data messages, for the
/// shard to act on after those messages.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The client broke the protocol (or the control frame cap): close.
    pub failure: Option<CloseReason>,
    /// The client sent a close frame (tungstenite queued the echo).
    pub peer_closed: bool,
    /// tungstenite's replies did not fit in the queue: close with 4008.
    pub overflowed: bool,
}

impl Connection {
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// One non-blocking read from the socket.
    pub fn read_socket(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.read(buf)
    }

    /// Feeds the TLS session from `input` (advanced past what rustls took)
    /// and takes at most one record's worth of plaintext into `plain`.
    pub fn decrypt(
        &mut self,
        input: &mut &[u8],
        plain: &mut [u8],
        dirty: &mut Vec<usize>,
    ) -> Decrypted {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Decrypted::Drained;
        };
        if !input.is_empty() && tls.read_tls(input).is_err() {
            return Decrypted::Closed;
        }
        if let Err(error) = tls.process_new_packets() {
            return Decrypted::Failed(error);
        }
        let wants_write = tls.wants_write();
        let read = tls.reader().read(plain);
        if wants_write {
            self.mark_dirty(dirty);
        }
        match read {
            Ok(0) => Decrypted::Closed,
            Ok(n) => Decrypted::Plaintext(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if input.is_empty() {
                    Decrypted::Drained
                } else {
                    Decrypted::NeedInput
                }
            }
            Err(_) => Decrypted::Closed,
        }
    }

    /// Runs (plaintext) socket bytes through tungstenite: data messages go
    /// to `inbox`, tungstenite's replies to the queue. Only complete frames
    /// count as activity: a client dribbling an unfinished frame still
    /// reaches the 4000 timeout.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        now: Instant,
        limits: &Limits,
        inbox: &mut Vec<Message>,
        dirty: &mut Vec<usize>,
    ) -> Decoded {
        let mut io = BufferedIo::new(bytes);
        let mut decoded = Decoded::default();
        let control_cap = limits.max_control_frames_per_second;
        loop {
            let read = self.ws.read(&mut io);
            if read.is_ok() {
                self.last_seen = now;
            }
            match read {
                Ok(Message::Close(_)) => decoded.peer_closed = true,
                Ok(Message::Ping(_) | Message::Pong(_)) => {
                    self.control_frames = self.control_frames.saturating_add(1);
                    if control_cap != 0 && self.control_frames > control_cap {
                        // The cap's window is one second: that is when
                        // control frames are accepted again.
                        decoded.failure = Some(CloseReason::RateLimitAbuse {
                            retry_after_secs: 1,
                        });
                        break;
                    }
                }
                Ok(message) => inbox.push(message),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    decoded.peer_closed = true;
                    break;
                }
                Err(tungstenite::Error::Capacity(_)) => {
                    decoded.failure = Some(CloseReason::MessageTooBig);
                    break;
                }
                Err(tungstenite::Error::Utf8(_)) => {
                    decoded.failure = Some(CloseReason::InvalidPayload);
                    break;
                }
                Err(_) => {
                    decoded.failure = Some(CloseReason::ProtocolViolation);
                    break;
                }
            }
        }
        // tungstenite's pongs count against the queue budget like
        // everything else, so a ping flood from a client that never reads
        // is cut off here and not at the next heartbeat; the echo of the
        // peer's close frame must go out whatever the budget.
        if !io.output.is_empty() {
            let control = Chunk::Control(Arc::from(io.output));
            if decoded.peer_closed || !self.is_open() {
                self.outbound.push_unbounded(control);
            } else {
                decoded.overflowed = self
                    .outbound
                    .push(control, limits.max_queued_bytes)
                    .is_err();
            }
            if !decoded.overflowed {
                self.mark_dirty(dirty);
            }
        }
        decoded
    }
}
