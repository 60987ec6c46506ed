//! A connection's outbound queue: bounded in bytes, written with vectored
//! non-blocking writes.
//!
//! Frames are queued whole and in order (server messages, tungstenite's
//! pongs and close frames alike), so frames never interleave. Shared
//! broadcast frames are queued as the same `Arc<[u8]>` for every recipient:
//! no copy per recipient. Only what the kernel did not take stays queued.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::ops::Deref;
use std::sync::Arc;

/// One encoded frame waiting to be written.
#[derive(Clone, Debug)]
pub enum Chunk {
    /// A frame shared by many connections (a broadcast).
    Shared(Arc<[u8]>),
    /// A frame for this connection only (a reply).
    Owned(Box<[u8]>),
    /// Control frames (pings, tungstenite's pongs, close frames): not
    /// messages, so not counted when dropped.
    Control(Arc<[u8]>),
}

impl Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Shared(bytes) | Chunk::Control(bytes) => bytes,
            Chunk::Owned(bytes) => bytes,
        }
    }
}

impl Chunk {
    pub fn is_control(&self) -> bool {
        matches!(self, Chunk::Control(_))
    }
}

impl From<Vec<u8>> for Chunk {
    fn from(bytes: Vec<u8>) -> Self {
        Chunk::Owned(bytes.into_boxed_slice())
    }
}

/// The queue would exceed its byte budget: the consumer is too slow.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// Whether everything queued reached the kernel.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    All,
    Partially,
}

/// How many frames one `writev` carries at most.
const MAX_IOVECS: usize = 64;

#[derive(Debug, Default)]
pub struct Outbound {
    queue: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    head_written: usize,
    queued_bytes: usize,
}

impl Outbound {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Queues a frame unless that would take the queue past `limit` bytes.
    pub fn push(&mut self, chunk: Chunk, limit: usize) -> Result<(), Overflow> {
        if self.queued_bytes + chunk.len() > limit {
            return Err(Overflow);
        }
        self.push_unbounded(chunk);
        Ok(())
    }

    /// Queues a frame whatever the budget: only for the final close frame
    /// and the echo of the peer's, after which nothing more is queued.
    pub fn push_unbounded(&mut self, chunk: Chunk) {
        self.queued_bytes += chunk.len();
        self.queue.push_back(chunk);
    }

    /// Messages (not control frames) queued and not completely written.
    pub fn queued_messages(&self) -> usize {
        self.queue.iter().filter(|c| !c.is_control()).count()
    }

    /// Drops every frame not yet started; a partly written frame stays so
    /// the stream remains well-formed. Returns how many messages (control
    /// frames aside) were dropped.
    pub fn discard_unstarted(&mut self) -> usize {
        let keep = usize::from(self.head_written > 0);
        let dropped = self
            .queue
            .iter()
            .skip(keep)
            .filter(|c| !c.is_control())
            .count();
        self.queue.truncate(keep);
        self.queued_bytes = self
            .queue
            .front()
            .map_or(0, |c| c.len() - self.head_written);
        dropped
    }

    /// Writes as much as the socket takes, many frames per `writev`.
    pub fn flush(&mut self, socket: &mut impl Write) -> io::Result<Flushed> {
        while !self.queue.is_empty() {
            let mut slices: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, chunk) in self.queue.iter().take(MAX_IOVECS).enumerate() {
                let bytes = if i == 0 {
                    &chunk[self.head_written..]
                } else {
                    &chunk[..]
                };
                slices[i] = IoSlice::new(bytes);
                count += 1;
            }
            let written = match socket.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Partially),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.advance(written);
        }
        if self.queue.capacity() > 64 {
            self.queue.shrink_to_fit();
        }
        Ok(Flushed::All)
    }

    /// The same over TLS: frames are handed to rustls one at a time, only
    /// when it has no ciphertext pending, so its buffer never holds more
    /// than about one frame and the byte budget stays ours to enforce.
    pub fn flush_tls(
        &mut self,
        tls: &mut rustls::ServerConnection,
        socket: &mut impl Write,
    ) -> io::Result<Flushed> {
        loop {
            while tls.wants_write() {
                match tls.write_tls(socket) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Flushed::Partially)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let Some(front) = self.queue.front() else {
                return Ok(Flushed::All);
            };
            let accepted = tls.writer().write(&front[self.head_written..])?;
            if accepted == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.advance(accepted);
        }
    }

    fn advance(&mut self, mut written: usize) {
        self.queued_bytes -= written;
        while written > 0 {
            let Some(front) = self.queue.front() else {
                break;
            };
            let remaining = front.len() - self.head_written;
            if written >= remaining {
                written -= remaining;
                self.head_written = 0;
                self.queue.pop_front();
            } else {
                self.head_written += written;
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `budget` bytes per call, then blocks.
    struct Trickle {
        taken: Vec<u8>,
        budget: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.budget - n);
                self.taken.extend_from_slice(&buf[..take]);
                n += take;
                if n == self.budget {
                    break;
                }
            }
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_in_order_and_budget_is_enforced() {
        let shared: Arc<[u8]> = Arc::from(&b"BROADCAST"[..]);
        let mut out = Outbound::default();
        out.push(Chunk::Shared(shared.clone()), 100).expect("fits");
        out.push(Chunk::from(b"reply".to_vec()), 100).expect("fits");
        assert_eq!(out.queued_bytes(), 14);
        assert_eq!(out.push(Chunk::from(vec![0; 90]), 100), Err(Overflow));

        let mut socket = Trickle {
            taken: vec![],
            budget: 4,
            calls: 0,
        };
        assert_eq!(out.flush(&mut socket).expect("flush"), Flushed::Partially);
        assert_eq!(out.queued_bytes(), 10);
        socket.budget = 100;
        assert_eq!(out.flush(&mut socket).expect("flush"), Flushed::All);
        assert_eq!(socket.taken, b"BROADCASTreply");
        assert!(out.is_empty());
    }

    #[test]
    fn coalesces_frames_into_one_writev() {
        let mut out = Outbound::default();
        for _ in 0..10 {
            out.push(Chunk::from(b"abc".to_vec()), 1000).expect("fits");
        }
        let mut socket = Trickle {
            taken: vec![],
            budget: 1000,
            calls: 0,
        };
        out.flush(&mut socket).expect("flush");
        assert_eq!(socket.calls, 1);
        assert_eq!(socket.taken.len(), 30);
    }

    #[test]
    fn control_frames_are_not_counted_as_messages() {
        let mut out = Outbound::default();
        out.push(Chunk::Control(Arc::from(&b"pong"[..])), 100)
            .expect("fits");
        out.push(Chunk::from(b"message".to_vec()), 100)
            .expect("fits");
        assert_eq!(out.queued_messages(), 1);
        assert_eq!(out.discard_unstarted(), 1);
        assert!(out.is_empty());
    }

    #[test]
    fn discard_keeps_a_partly_written_frame() {
        let mut out = Outbound::default();
        out.push(Chunk::from(b"first".to_vec()), 100).expect("fits");
        out.push(Chunk::from(b"second".to_vec()), 100)
            .expect("fits");
        let mut socket = Trickle {
            taken: vec![],
            budget: 2,
            calls: 0,
        };
        out.flush(&mut socket).expect("flush");
        assert_eq!(out.discard_unstarted(), 1);
        assert_eq!(out.queued_bytes(), 3);
        socket.budget = 100;
        out.flush(&mut socket).expect("flush");
        assert_eq!(socket.taken, b"first");
    }
}
