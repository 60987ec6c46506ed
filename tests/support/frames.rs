//! Hand-made WebSocket frames over a plain `TcpStream`, for clients that
//! break RFC 6455 on purpose: lying lengths, unmasked frames, fragmented
//! control frames, reserved opcodes, invalid UTF-8. A WebSocket library
//! refuses to send any of these, so the bytes are written by hand.
//!
//! [`RawWs::connect`] performs a normal handshake (keeping any bytes read
//! past the 101 head), then every frame is built with [`frame`] /
//! [`header`] and read back with [`RawWs::read_frame`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::raw::{Upgrade, SAMPLE_KEY};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A fixed masking key (any 4 bytes are valid).
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame header with any claimed payload length (the 7-bit, 16-bit or
/// 64-bit form, by size), `mask` appended when given. `first` is the whole
/// first byte (FIN, RSV1-3, opcode), so any bit pattern can be sent.
pub fn header(first: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// XORs `payload` with `key` (RFC 6455 §5.3).
pub fn mask(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect()
}

/// First header byte from FIN and opcode (RSV bits clear).
pub fn first_byte(fin: bool, opcode: u8) -> u8 {
    (if fin { 0x80 } else { 0 }) | (opcode & 0x0f)
}

/// A complete frame: header (true length) plus payload, masked when
/// `mask_key` is given.
pub fn frame(first: u8, mask_key: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = header(first, mask_key, payload.len() as u64);
    match mask_key {
        Some(key) => out.extend_from_slice(&mask(payload, key)),
        None => out.extend_from_slice(payload),
    }
    out
}

/// A final, masked client frame: what a well-behaved client sends.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(first_byte(true, opcode), Some(MASK), payload)
}

/// One frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a close frame (1005 when it has none).
    pub fn close_code(&self) -> Option<u16> {
        if self.opcode != OP_CLOSE {
            return None;
        }
        Some(match self.payload.get(..2) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]),
            None => 1005,
        })
    }

    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, OP_TEXT, "expected a text frame: {self:?}");
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "server text frame is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// How the connection ended, as the hostile client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A close frame with this code came first (the TCP close may follow).
    Close(u16),
    /// The transport ended (EOF or reset) without a close frame.
    Dropped,
}

/// A raw WebSocket connection after a normal handshake.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    /// `connection.established`, read right after the 101.
    pub established: Value,
}

impl RawWs {
    /// Upgrades `GET /api/v1/ws/{token}` and reads `connection.established`.
    pub fn connect(addr: SocketAddr, token: &str) -> RawWs {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("connect for a raw WebSocket");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let request = Upgrade::get(&format!("/api/v1/ws/{token}"))
            .header("Sec-WebSocket-Key", SAMPLE_KEY)
            .to_bytes();
        stream.write_all(&request).expect("write the upgrade");
        let mut raw = RawWs {
            stream,
            buf: Vec::new(),
            eof: false,
            established: Value::Null,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let head_end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                raw.fill(deadline),
                "no 101 head; got {:?}",
                String::from_utf8_lossy(&raw.buf)
            );
        };
        let head = String::from_utf8_lossy(&raw.buf[..head_end]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "upgrade refused: {head:?}"
        );
        raw.buf.drain(..head_end);
        let first = raw
            .read_frame(Duration::from_secs(5))
            .expect("connection.established frame");
        let established = first.json();
        assert_eq!(established["type"], "connection.established");
        raw.established = established;
        raw
    }

    pub fn connection_id(&self) -> String {
        self.established["data"]["connection_id"]
            .as_str()
            .expect("connection_id")
            .to_string()
    }

    /// Writes bytes verbatim; false when the server has already gone.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads more bytes into the buffer; false on EOF, error or deadline.
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return false;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return false;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.eof = true;
                    return false;
                }
            }
        }
    }

    /// Parses one complete frame off the front of the buffer.
    fn take_frame(&mut self) -> Option<ServerFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")),
                10,
            ),
            126 | 127 => return None,
            n => (u64::from(n), 2),
        };
        let key = if masked {
            let k = b.get(at..at + 4)?;
            at += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        let end = at + usize::try_from(len).ok()?;
        if b.len() < end {
            return None;
        }
        let raw = &b[at..end];
        let payload = match key {
            Some(k) => mask(raw, k),
            None => raw.to_vec(),
        };
        let frame = ServerFrame {
            fin: b[0] & 0x80 != 0,
            opcode: b[0] & 0x0f,
            masked,
            payload,
        };
        self.buf.drain(..end);
        Some(frame)
    }

    /// The next frame within `timeout`; `None` on timeout or when the
    /// connection ended.
    pub fn read_frame(&mut self, timeout: Duration) -> Option<ServerFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.take_frame() {
                return Some(f);
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// The next JSON text message within `timeout`, skipping pings.
    pub fn recv_json(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Some(f) if f.opcode == OP_TEXT => return f.json(),
                Some(f) if f.opcode == OP_PING || f.opcode == OP_PONG => {}
                Some(f) => panic!("expected a JSON text frame, got {f:?}"),
                None => panic!("no JSON message within {timeout:?}"),
            }
        }
    }

    /// Reads until the server closes: the close frame's code, or
    /// [`End::Dropped`] for EOF/reset without one. Data frames and pings
    /// before it are skipped. Panics if neither happens within `timeout`.
    pub fn wait_end(&mut self, timeout: Duration) -> End {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.take_frame() {
                if let Some(code) = f.close_code() {
                    return End::Close(code);
                }
                continue;
            }
            if self.eof {
                return End::Dropped;
            }
            if !self.fill(deadline) && !self.eof {
                panic!("the server neither closed nor dropped the connection within {timeout:?}");
            }
        }
    }

    /// After a close frame: true when the server also closes TCP within
    /// `timeout` (EOF or reset).
    pub fn tcp_closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.buf.clear();
            if self.eof {
                return true;
            }
            if !self.fill(deadline) && !self.eof {
                return false;
            }
        }
    }
}

/// Waits until the peer closes `stream` (EOF or reset): `Some(elapsed)`,
/// or `None` if it is still open after `timeout`. Any bytes the server
/// sends first (e.g. a 408 response) are returned in `seen`.
pub fn wait_peer_close(
    stream: &mut TcpStream,
    timeout: Duration,
    seen: &mut Vec<u8>,
) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Some(started.elapsed()),
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Some(started.elapsed()),
        }
        if started.elapsed() >= timeout {
            return None;
        }
    }
}

#[test]
fn header_length_forms() {
    assert_eq!(header(0x81, None, 5), vec![0x81, 5]);
    assert_eq!(header(0x81, None, 126), vec![0x81, 126, 0, 126]);
    assert_eq!(
        header(0x81, Some([1, 2, 3, 4]), 1 << 62),
        vec![0x81, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
    );
    assert_eq!(mask(&mask(b"hello", MASK), MASK), b"hello");
}
