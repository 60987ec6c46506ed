//! A connection's outbound queue: bounded in bytes, written to the socket
//! with non-blocking `send`/`sendmsg` ([`SocketSender`]).
//!
//! Frames are queued whole and in order (server messages, tungstenite's
//! pongs and close frames alike), so frames never interleave. Shared
//! broadcast frames are queued as the same `Arc<[u8]>` for every recipient:
//! no copy per recipient. Only what the kernel did not take stays queued.
//! This module writes; it never reads a socket nor decides a close.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::ops::Deref;
use std::os::fd::AsFd;
use std::sync::Arc;

use socket2::SockRef;

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

/// How many frames one `sendmsg` carries at most.
const MAX_IOVECS: usize = 64;

/// A socket written with `send` (one buffer) or `sendmsg` (an iovec array,
/// several queued frames), flags `MSG_DONTWAIT | MSG_NOSIGNAL`.
///
/// Not `write`/`writev` on the fd: those go through the VFS (`vfs_writev`)
/// and take the file-position lock (`fdget_pos`), about 7.5 % of the
/// samples of a 4 KiB fan-out profile (issue 15); the socket calls go
/// straight to `sock_sendmsg`. `MSG_DONTWAIT` makes each call non-blocking
/// whatever the fd's flags, and `MSG_NOSIGNAL` turns a write to a closed
/// peer into `EPIPE` without relying on SIGPIPE being ignored. rustls's
/// `write_tls` writes through it too.
pub struct SocketSender<'a>(SockRef<'a>);

impl<'a> SocketSender<'a> {
    const FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

    pub fn new(socket: &'a impl AsFd) -> Self {
        SocketSender(SockRef::from(socket))
    }
}

impl Write for SocketSender<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_with_flags(buf, Self::FLAGS)
    }

    /// One buffer goes out with `send`, which spares the kernel copying
    /// and checking an iovec array: the common case of a fan-out, one
    /// broadcast frame per recipient per turn.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match bufs {
            [one] => self.0.send_with_flags(one, Self::FLAGS),
            _ => self.0.send_vectored_with_flags(bufs, Self::FLAGS),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

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

    /// Writes as much as the socket takes, many frames per call.
    ///
    /// A write shorter than what was offered means the send buffer is
    /// full, so this returns `Partially` at once rather than make one more
    /// call that would only fail with `WouldBlock`: on Linux TCP the short
    /// write marks the socket `SOCK_NOSPACE`, so freed space raises a new
    /// writable edge (the shard then flushes again).
    pub fn flush(&mut self, socket: &mut impl Write) -> io::Result<Flushed> {
        while let Some(front) = self.queue.front() {
            // One frame (a fan-out's usual case) skips building the iovec
            // array: this runs once per recipient per turn.
            let (result, offered) = if self.queue.len() == 1 {
                let bytes = &front[self.head_written..];
                (socket.write(bytes), bytes.len())
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                let mut offered = 0;
                for (slice, chunk) in slices.iter_mut().zip(self.queue.iter()) {
                    let skip = if count == 0 { self.head_written } else { 0 };
                    *slice = IoSlice::new(&chunk[skip..]);
                    offered += slice.len();
                    count += 1;
                }
                (socket.write_vectored(&slices[..count]), offered)
            };
            let written = match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Partially),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.advance(written);
            if written < offered {
                return Ok(Flushed::Partially);
            }
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
    fn a_lone_frame_resumes_where_the_last_write_stopped() {
        let mut out = Outbound::default();
        out.push(Chunk::Shared(Arc::from(&b"0123456789"[..])), 100)
            .expect("fits");
        let mut socket = Trickle {
            taken: vec![],
            budget: 0,
            calls: 0,
        };
        for _ in 0..3 {
            socket.budget = 3;
            assert_eq!(out.flush(&mut socket).expect("flush"), Flushed::Partially);
        }
        assert_eq!(socket.calls, 3, "a short write ends the flush");
        assert_eq!(out.queued_bytes(), 1);
        socket.budget = 3;
        assert_eq!(out.flush(&mut socket).expect("flush"), Flushed::All);
        assert_eq!(socket.taken, b"0123456789");
        assert!(out.is_empty());
    }

    #[test]
    fn coalesces_frames_into_one_call() {
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

    /// A connected loopback pair; the writing side is left *blocking*, so
    /// only `MSG_DONTWAIT` keeps a full send buffer from hanging a flush.
    fn loopback_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let writer =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (reader, _) = listener.accept().expect("accept");
        let small = SockRef::from(&writer);
        small.set_send_buffer_size(4096).expect("SO_SNDBUF");
        (writer, reader)
    }

    /// Reads until `len` bytes have arrived (the reader blocks, with a
    /// timeout so a lost byte fails the test instead of hanging it).
    fn read_exactly(reader: &mut std::net::TcpStream, len: usize) -> Vec<u8> {
        use std::io::Read;
        reader
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        let mut got = vec![0; len];
        reader.read_exact(&mut got).expect("read");
        got
    }

    #[test]
    fn sendmsg_over_a_real_socket_stops_when_full_and_resumes_in_order() {
        let (writer, mut reader) = loopback_pair();
        let shared: Arc<[u8]> = (0..=255u8).cycle().take(40_000).collect();
        let mut out = Outbound::default();
        let mut expected = Vec::new();
        for i in 0..40u8 {
            let chunk = if i % 2 == 0 {
                Chunk::Shared(shared.clone())
            } else {
                Chunk::from(vec![i; 1000 + usize::from(i)])
            };
            expected.extend_from_slice(&chunk);
            out.push(chunk, usize::MAX).expect("fits");
        }
        let total = expected.len();

        // Nobody reads yet: the kernel takes part and the flush returns
        // instead of blocking.
        assert_eq!(
            out.flush(&mut SocketSender::new(&writer)).expect("flush"),
            Flushed::Partially
        );
        let first = total - out.queued_bytes();
        assert!(first > 0 && first < total, "took {first} of {total}");

        // Drain what arrived, flush again, until everything is through.
        let mut received = read_exactly(&mut reader, first);
        while !out.is_empty() {
            let before = out.queued_bytes();
            out.flush(&mut SocketSender::new(&writer)).expect("flush");
            let sent = before - out.queued_bytes();
            received.extend(read_exactly(&mut reader, sent));
        }
        assert_eq!(received.len(), total);
        assert!(received == expected, "bytes out of order or corrupted");
    }

    /// SIGPIPE blocked on this thread for the closure; returns whether
    /// one was raised. A blocked signal stays pending on Linux even though
    /// Rust's runtime ignores SIGPIPE, so this sees a write that raised it.
    fn raised_sigpipe(f: impl FnOnce()) -> bool {
        // SAFETY: plain libc signal-set calls on stack values; the mask is
        // this thread's only and is restored before returning.
        unsafe {
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old), 0);
            f();
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            let raised = libc::sigismember(&pending, libc::SIGPIPE) == 1;
            if raised {
                let nowait = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                libc::sigtimedwait(&pipe, std::ptr::null_mut(), &nowait);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            raised
        }
    }

    #[test]
    fn sendmsg_to_a_closed_peer_is_an_error_not_a_signal() {
        let (writer, reader) = loopback_pair();
        drop(reader);
        let mut out = Outbound::default();
        let mut result = None;
        let raised = raised_sigpipe(|| {
            result = (0..100).find_map(|_| {
                out.push(Chunk::from(vec![7; 1000]), usize::MAX)
                    .expect("fits");
                out.flush(&mut SocketSender::new(&writer)).err()
            });
        });
        assert!(!raised, "a write to a closed peer raised SIGPIPE");
        let error = result.expect("writes to a closed peer fail");
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{error:?}"
        );
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
