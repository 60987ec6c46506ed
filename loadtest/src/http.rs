//! A minimal HTTP/1.1 client over one keep-alive TcpStream: enough to POST
//! broadcasts as fast as the server answers, with no pooling layer in between.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::{Cli, Target};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct HttpClient {
    addr: SocketAddr,
    host: String,
    auth: String,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
    timeout: Duration,
}

impl HttpClient {
    /// The controller's client for the gateway's HTTP API: `--op-timeout`,
    /// but never under 10 s (a slow publish is measured, not failed).
    pub fn for_publishing(cli: &Cli, target: &Target) -> Self {
        Self::new(
            target.addr,
            &target.host,
            &cli.api_key,
            cli.op_timeout.max(Duration::from_secs(10)),
        )
    }

    pub fn new(addr: SocketAddr, host: &str, api_key: &str, timeout: Duration) -> Self {
        Self {
            addr,
            host: host.to_string(),
            auth: format!("Bearer {api_key}"),
            conn: None,
            buf: Vec::with_capacity(4096),
            timeout,
        }
    }

    /// POST a JSON body; reconnects once if a kept-alive connection turns out closed.
    pub async fn post_json(&mut self, path: &str, body: &str) -> Result<Response> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.auth,
            body.len()
        );
        let reused = self.conn.is_some();
        match tokio::time::timeout(self.timeout, self.round_trip(req.as_bytes())).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if reused => {
                self.conn = None;
                tokio::time::timeout(self.timeout, self.round_trip(req.as_bytes()))
                    .await
                    .map_err(|_| anyhow!("HTTP timeout after {:?}", self.timeout))?
                    .with_context(|| format!("after retry of: {e:#}"))
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                bail!("HTTP timeout after {:?}", self.timeout)
            }
        }
    }

    async fn round_trip(&mut self, req: &[u8]) -> Result<Response> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connect {}", self.addr))?;
            s.set_nodelay(true)?;
            self.conn = Some(s);
            self.buf.clear();
        }
        let conn = self.conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
        conn.write_all(req).await?;
        let (resp, keep) = read_response(conn, &mut self.buf).await?;
        if !keep {
            self.conn = None;
        }
        Ok(resp)
    }
}

/// Parsed response head: status, body framing, keep-alive.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
    pub len: usize,
}

/// Parses a response head if `buf` holds a complete one.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            bail!("response head over {MAX_HEAD} bytes");
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("response head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        bail!("bad status line `{status_line}`");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line `{status_line}`"))?;
    let mut h = Head {
        status,
        content_length: None,
        chunked: false,
        close: version == "HTTP/1.0",
        len: end + 4,
    };
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            h.content_length = Some(v.parse().context("bad content-length")?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            if v.contains("close") {
                h.close = true;
            } else if v.contains("keep-alive") {
                h.close = false;
            }
        }
    }
    Ok(Some(h))
}

/// Decodes a complete chunked body from `buf`; `None` if more bytes are needed.
/// Returns (body, bytes consumed).
pub fn parse_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(nl) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..pos + nl]).context("chunk size")?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).context("chunk size")?;
        if size > MAX_BODY || body.len() + size > MAX_BODY {
            bail!("chunked body too large");
        }
        pos += nl + 2;
        if size == 0 {
            // trailers end with an empty line
            loop {
                let Some(nl) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += nl + 2;
                if nl == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

async fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(Response, bool)> {
    let head = loop {
        if let Some(h) = parse_head(buf)? {
            break h;
        }
        read_more(conn, buf).await?;
    };
    buf.drain(..head.len);
    let body = if head.chunked {
        loop {
            if let Some((body, used)) = parse_chunked(buf)? {
                buf.drain(..used);
                break body;
            }
            if buf.len() > MAX_BODY + 64 * 1024 {
                bail!("chunked body too large");
            }
            read_more(conn, buf).await?;
        }
    } else if let Some(n) = head.content_length {
        if n > MAX_BODY {
            bail!("body of {n} bytes too large");
        }
        while buf.len() < n {
            read_more(conn, buf).await?;
        }
        buf.drain(..n).collect()
    } else if head.status == 204 || head.status == 304 {
        Vec::new()
    } else {
        // read to EOF
        loop {
            let mut chunk = [0u8; 8192];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_BODY {
                bail!("body too large");
            }
        }
        let b = std::mem::take(buf);
        return Ok((
            Response {
                status: head.status,
                body: b,
            },
            false,
        ));
    };
    Ok((
        Response {
            status: head.status,
            body,
        },
        !head.close,
    ))
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    let mut chunk = [0u8; 16384];
    let n = conn.read(&mut chunk).await?;
    if n == 0 {
        bail!("connection closed by server");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// `delivered` from a publish answer, if present.
pub fn delivered(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("delivered")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{\"a\":1}")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length, Some(12));
        assert!(!h.close && !h.chunked);
        assert_eq!(h.len, 39);
        let h = parse_head(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.chunked && h.close);
        assert!(parse_head(b"FTP 200\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[test]
    fn chunked() {
        let b = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\nNEXT";
        let (body, used) = parse_chunked(b).unwrap().unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(&b[used..], b"NEXT");
        assert!(parse_chunked(b"5\r\nhel").unwrap().is_none());
        assert!(parse_chunked(b"zz\r\n").is_err());
    }

    #[test]
    fn delivered_field() {
        assert_eq!(delivered(br#"{"id":"x","delivered":500}"#), Some(500));
        assert_eq!(delivered(b"garbage"), None);
    }
}
