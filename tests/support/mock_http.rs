//! A tiny HTTP/1.1 server standing in for the backend's webhook receiver,
//! over plain TCP or TLS (rustls). It records every request and answers
//! with a status chosen per attempt.

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("webhook body is not JSON ({e}): {:?}", self.body))
    }
}

/// What to answer to the n-th request (0-based): `Some(status)` or `None`
/// to never answer (a hanging backend).
pub type Responder = Arc<dyn Fn(usize) -> Option<u16> + Send + Sync>;

pub struct MockHttp {
    pub addr: SocketAddr,
    rx: Receiver<Recorded>,
    scheme: &'static str,
    connections: Arc<AtomicUsize>,
}

impl MockHttp {
    pub fn start(responder: impl Fn(usize) -> Option<u16> + Send + Sync + 'static) -> MockHttp {
        MockHttp::listen(None, Arc::new(responder))
    }

    /// An `https://` receiver presenting `tls`'s certificate.
    pub fn start_tls(
        tls: Arc<ServerConfig>,
        responder: impl Fn(usize) -> Option<u16> + Send + Sync + 'static,
    ) -> MockHttp {
        MockHttp::listen(Some(tls), Arc::new(responder))
    }

    fn listen(tls: Option<Arc<ServerConfig>>, responder: Responder) -> MockHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the mock webhook");
        let addr = listener.local_addr().expect("mock webhook address");
        let (tx, rx) = mpsc::channel();
        let counter = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let accepted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                accepted.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                let responder = responder.clone();
                let counter = counter.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => serve(stream, tx, responder, counter),
                    Some(config) => {
                        let Ok(session) = ServerConnection::new(config) else {
                            return;
                        };
                        // A client refusing the certificate ends the
                        // handshake: the first read fails, nothing is recorded.
                        serve(StreamOwned::new(session, stream), tx, responder, counter)
                    }
                });
            }
        });
        MockHttp {
            addr,
            rx,
            scheme,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}/hooks/wsgate", self.scheme, self.addr)
    }

    /// TCP connections accepted so far (a refused TLS handshake included).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Whether a request arrives within `timeout`.
    pub fn try_next_request(&self, timeout: Duration) -> Option<Recorded> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next recorded request within `timeout`, or panics.
    pub fn next_request(&self, timeout: Duration) -> Recorded {
        self.rx
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("no webhook request within {timeout:?}"))
    }
}

fn serve(
    mut stream: impl Read + Write,
    tx: Sender<Recorded>,
    responder: Responder,
    counter: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        // One request per iteration (keep-alive clients send several).
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buf.len() < body_start + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[body_start..body_start + len]).to_string();
        buf.drain(..body_start + len);
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(Recorded {
            method,
            path,
            headers,
            body,
        });
        match responder(n) {
            Some(status) => {
                let resp = format!(
                    "HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"
                );
                if stream.write_all(resp.as_bytes()).is_err() || stream.flush().is_err() {
                    return;
                }
            }
            None => {
                // Hang: hold the connection open, never answer.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        }
    }
}
