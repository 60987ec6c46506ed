//! TLS termination: `--tls-cert`/`--tls-key` serve `wss://` and
//! `https://` on the same port, and SIGHUP reloads the certificate. The
//! certificates are self-signed, generated here.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};
use tungstenite::Message;

use crate::support::TestServer;

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

struct SelfSigned {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn self_signed() -> SelfSigned {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("generate certificate");
    SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.key_pair.serialize_pem(),
        der: certified.cert.der().clone(),
    }
}

fn write_pair(dir: &Path, pair: &SelfSigned) {
    std::fs::write(dir.join("cert.pem"), &pair.cert_pem).expect("write cert");
    std::fs::write(dir.join("key.pem"), &pair.key_pem).expect("write key");
}

/// A TLS client trusting only `trusted`.
fn tls_connect(
    addr: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
) -> Result<TlsStream, String> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let connection = ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut stream = StreamOwned::new(connection, tcp);
    // Drive the handshake now so a certificate mismatch shows up here.
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(stream)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wsgate-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn start(dir: &Path) -> TestServer {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    TestServer::start(&[
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
    ])
}

#[test]
fn wss_and_https_on_one_port() {
    let dir = temp_dir("serve");
    let pair = self_signed();
    write_pair(&dir, &pair);
    let server = start(&dir);
    assert!(
        server
            .stdout_lines()
            .iter()
            .any(|l| l.starts_with("wsgate listening on https://")),
        "the ready line says https"
    );

    // wss: the whole gateway protocol over TLS.
    let stream = tls_connect(server.addr(), &pair.der).expect("TLS handshake");
    let token = server.token("tls-user");
    let (mut ws, _) = tungstenite::client(
        format!("wss://localhost:{}/api/v1/ws/{token}", server.addr().port()),
        stream,
    )
    .expect("WebSocket handshake over TLS");
    let next = |ws: &mut tungstenite::WebSocket<TlsStream>| -> Value {
        loop {
            match ws.read().expect("message") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json"),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    };
    assert_eq!(next(&mut ws)["type"], "connection.established");
    ws.send(Message::text(
        json!({"type":"subscribe","data":{"events":["file.ready"]},"id":"s"}).to_string(),
    ))
    .expect("send");
    assert_eq!(next(&mut ws)["type"], "subscription.confirmed");

    // https: the server API on the same port, publishing to the TLS client;
    // a large payload crosses several TLS records.
    let mut api = tls_connect(server.addr(), &pair.der).expect("TLS handshake");
    let body = json!({"type": "file.ready", "data": {"pad": "x".repeat(40_000)}}).to_string();
    let request = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.api_key,
        body.len()
    );
    api.write_all(request.as_bytes()).expect("write request");
    let mut response = String::new();
    let _ = api.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "API over https: {response}"
    );
    assert!(response.contains("\"delivered\":1"), "{response}");
    let event = next(&mut ws);
    assert_eq!(event["type"], "file.ready");
    assert_eq!(event["data"]["pad"].as_str().map(str::len), Some(40_000));

    // Plain HTTP on the TLS port gets nowhere.
    let mut plain = TcpStream::connect(server.addr()).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = plain.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stalled_tls_handshakes_count_against_the_pending_cap() {
    let dir = temp_dir("pending");
    let pair = self_signed();
    write_pair(&dir, &pair);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let server = TestServer::start(&[
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
        "--max-pending-connections",
        "2",
        "--header-read-timeout",
        "60s",
    ]);
    // Two connections that never send a ClientHello hold both places.
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server.addr()).expect("connect"))
        .collect();
    let refused = tls_connect(server.addr(), &pair.der);
    assert!(
        refused.is_err(),
        "a third handshake must be closed at accept"
    );
    drop(stalled);
    assert!(
        crate::support::wait_until(Duration::from_secs(10), || tls_connect(
            server.addr(),
            &pair.der
        )
        .is_ok()),
        "handshakes succeed again once the stalled connections are gone"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_the_certificate() {
    let dir = temp_dir("reload");
    let first = self_signed();
    let second = self_signed();
    write_pair(&dir, &first);
    let server = start(&dir);
    assert!(tls_connect(server.addr(), &first.der).is_ok());
    assert!(
        tls_connect(server.addr(), &second.der).is_err(),
        "second cert not served yet"
    );

    write_pair(&dir, &second);
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls_connect(server.addr(), &second.der).is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        tls_connect(server.addr(), &first.der).is_err(),
        "old certificate retired"
    );

    // A broken file on reload keeps the current certificate.
    std::fs::write(dir.join("cert.pem"), "not a certificate").expect("write");
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr_contents().contains("TLS reload failed") {
        assert!(Instant::now() < deadline, "no reload failure logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        tls_connect(server.addr(), &second.der).is_ok(),
        "still serving the last good certificate"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_tls_files_exit_2_naming_the_flag() {
    let dir = temp_dir("bad");
    std::fs::write(dir.join("cert.pem"), "garbage").expect("write");
    std::fs::write(dir.join("key.pem"), "garbage").expect("write");
    let out = crate::support::run_cli(
        &[
            "serve",
            "--jwt-secret",
            "s",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            dir.join("cert.pem").to_str().expect("path"),
            "--tls-key",
            dir.join("key.pem").to_str().expect("path"),
        ],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--tls-cert"), "stderr: {}", out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
