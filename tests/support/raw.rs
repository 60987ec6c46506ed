//! Hand-made HTTP/1.1 over a plain `TcpStream`: for upgrade requests a
//! WebSocket client library would refuse to send, and for reading a refusal's
//! status, headers and body exactly as they went over the wire.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A well-formed `Sec-WebSocket-Key` (the RFC 6455 sample nonce).
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    /// First header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics naming the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {} body {:?}",
                self.status, self.body
            )
        })
    }

    /// Asserts the SPEC error shape `{"code": C, "detail": string}`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "expected HTTP {status} {code}, got {} with body {:?}",
            self.status, self.body
        );
        let body = self.json();
        assert_eq!(body["code"], code, "error code in body {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "error body must have a non-empty string `detail`: {body}"
        );
    }
}

/// Sends `request` verbatim and reads one response. A 101 answer is
/// returned without reading further (no body follows it).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connect to the server for a raw HTTP request");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set read timeout");
    stream.write_all(request).expect("write a raw HTTP request");
    read_response(&mut stream, Duration::from_secs(5))
}

/// Reads one HTTP/1.1 response from `stream` (Content-Length, chunked, or
/// until EOF).
pub fn read_response(stream: &mut TcpStream, timeout: Duration) -> RawResponse {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if !read_more(stream, &mut buf, deadline) {
            panic!(
                "connection ended before a full HTTP response head; got {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = RawResponse {
        status,
        headers,
        body: String::new(),
    };
    if status == 101 || status == 204 || status == 304 {
        return resp;
    }
    let mut body = buf[head_end + 4..].to_vec();
    if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while body.len() < len {
            if !read_more(stream, &mut body, deadline) {
                break;
            }
        }
        body.truncate(len);
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        body = read_chunked(stream, body, deadline);
    } else {
        while read_more(stream, &mut body, deadline) {}
    }
    resp.body = String::from_utf8_lossy(&body).to_string();
    resp
}

fn read_chunked(stream: &mut TcpStream, mut raw: Vec<u8>, deadline: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = loop {
            if let Some(i) = find(&raw[pos..], b"\r\n") {
                break pos + i;
            }
            if !read_more(stream, &mut raw, deadline) {
                return out;
            }
        };
        let size_text = String::from_utf8_lossy(&raw[pos..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        while raw.len() < start + size + 2 {
            if !read_more(stream, &mut raw, deadline) {
                out.extend_from_slice(&raw[start.min(raw.len())..]);
                return out;
            }
        }
        out.extend_from_slice(&raw[start..start + size]);
        pos = start + size + 2;
    }
}

/// Reads what is available into `buf`; false on EOF, error or deadline.
fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> bool {
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
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
            Err(_) => return false,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Builder for a WebSocket upgrade request that can leave out or override
/// any of the standard headers.
pub struct Upgrade {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Upgrade {
    /// `GET path` with Host, Upgrade, Connection, Sec-WebSocket-Key and
    /// Sec-WebSocket-Version 13.
    pub fn get(path: &str) -> Self {
        Upgrade {
            method: "GET".into(),
            path: path.into(),
            headers: vec![
                ("Host".into(), "localhost".into()),
                ("Upgrade".into(), "websocket".into()),
                ("Connection".into(), "Upgrade".into()),
                ("Sec-WebSocket-Key".into(), SAMPLE_KEY.into()),
                ("Sec-WebSocket-Version".into(), "13".into()),
            ],
        }
    }

    pub fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }

    /// Removes the header (case-insensitive).
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    /// Sets (replaces) the header.
    pub fn header(self, name: &str, value: &str) -> Self {
        let mut s = self.without(name);
        s.headers.push((name.into(), value.into()));
        s
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.method != "GET" {
            out.push_str("Content-Length: 0\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    pub fn send(&self, addr: SocketAddr) -> RawResponse {
        raw_request(addr, &self.to_bytes())
    }
}
