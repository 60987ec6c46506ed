//! SPEC section 3: `upload.cancel` is POSTed to `--webhook-url` with the API
//! key, retried on failure, and never closes the connection. SPEC-v2 §1:
//! `https://` with `--webhook-ca-file`, `--webhook-secret` signatures; and
//! the delivery's own bounds (workers, rate-limited drop logs).

use crate::support::metrics::metric_sum;
use crate::support::mock_http::MockHttp;
use crate::support::pki::PrivateCa;
use crate::support::{is_timestamp, now_secs, run_cli, wait_until, TestServer, WsClient};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::time::{Duration, Instant};

fn cancel(c: &mut WsClient, upload_id: &str) {
    c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": upload_id}}));
    assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
}

fn dropped(server: &TestServer, reason: &str) -> f64 {
    metric_sum(
        &server.metrics(),
        "wsgate_messages_dropped_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

#[test]
fn upload_cancel_is_posted_to_the_webhook() {
    let hook = MockHttp::start(|_| Some(200));
    let server = TestServer::start(&["--webhook-url", &hook.url()]);
    let mut c = server.ws("hook-user");
    c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": "up-1"}, "id": "m1"}));
    assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
    let req = hook.next_request(Duration::from_secs(10));
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks/wsgate");
    assert_eq!(
        req.header("Authorization"),
        Some(format!("Bearer {}", server.api_key).as_str())
    );
    assert!(
        req.header("Content-Type")
            .is_some_and(|t| t.contains("application/json")),
        "{req:?}"
    );
    let body = req.json();
    assert_eq!(body["type"], "upload.cancel", "{body}");
    assert_eq!(body["user_id"], "hook-user");
    assert_eq!(body["connection_id"], c.connection_id().as_str());
    assert_eq!(body["data"]["upload_id"], "up-1");
    assert!(body["id"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
    assert!(
        body["timestamp"].as_str().is_some_and(is_timestamp),
        "{body}"
    );
}

#[test]
fn failed_webhook_is_retried() {
    let hook = MockHttp::start(|n| Some(if n == 0 { 500 } else { 200 }));
    let server = TestServer::start(&["--webhook-url", &hook.url()]);
    let mut c = server.ws("retry-user");
    c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": "up-r"}}));
    assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
    let first = hook.next_request(Duration::from_secs(10)).json();
    let second = hook.next_request(Duration::from_secs(20)).json();
    assert_eq!(first["data"]["upload_id"], "up-r");
    assert_eq!(
        second["data"]["upload_id"], "up-r",
        "the retry carries the same request"
    );
    c.assert_alive();
}

#[test]
fn dead_webhook_never_closes_the_connection() {
    // Port 1 on loopback: connection refused.
    let server = TestServer::start(&["--webhook-url", "http://127.0.0.1:1/hook"]);
    let mut c = server.ws("dead-hook");
    for i in 0..3 {
        c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": format!("u{i}")}}));
        assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
        c.assert_alive();
    }
}

#[test]
fn hanging_webhook_never_blocks_the_connection() {
    let hook = MockHttp::start(|_| None);
    let server = TestServer::start(&["--webhook-url", &hook.url()]);
    let mut c = server.ws("hang-hook");
    c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": "h1"}}));
    assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
    hook.next_request(Duration::from_secs(10));
    c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": "h2"}}));
    assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
    c.assert_alive();
}

#[test]
fn https_webhook_signed_by_the_ca_file_is_posted() {
    let ca = PrivateCa::new();
    let hook = MockHttp::start_tls(ca.server_config.clone(), |_| Some(200));
    let ca_file = ca.write_ca_file("trusted");
    let ca_path = ca_file.to_string_lossy();
    let server = TestServer::start(&["--webhook-url", &hook.url(), "--webhook-ca-file", &ca_path]);
    assert!(hook.url().starts_with("https://"));
    let mut c = server.ws("tls-hook-user");
    cancel(&mut c, "up-tls");
    let req = hook.next_request(Duration::from_secs(10));
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.header("Authorization"),
        Some(format!("Bearer {}", server.api_key).as_str())
    );
    assert_eq!(req.json()["data"]["upload_id"], "up-tls");
    assert_eq!(req.json()["user_id"], "tls-hook-user");
    let _ = std::fs::remove_file(&ca_file);
}

#[test]
fn https_webhook_trusts_the_system_roots() {
    // The system store, pointed at by the standard OpenSSL variable, holds
    // the private CA; no --webhook-ca-file.
    let ca = PrivateCa::new();
    let hook = MockHttp::start_tls(ca.server_config.clone(), |_| Some(200));
    let ca_file = ca.write_ca_file("system");
    let server = TestServer::builder()
        .args(&["--webhook-url", &hook.url()])
        .env("SSL_CERT_FILE", &ca_file.to_string_lossy())
        .start();
    let mut c = server.ws("system-roots-user");
    cancel(&mut c, "up-system");
    let req = hook.next_request(Duration::from_secs(10));
    assert_eq!(req.json()["data"]["upload_id"], "up-system");
    let _ = std::fs::remove_file(&ca_file);
}

#[test]
fn https_webhook_with_an_untrusted_certificate_gets_no_post() {
    let ca = PrivateCa::new();
    let hook = MockHttp::start_tls(ca.server_config.clone(), |_| Some(200));
    let server = TestServer::start(&["--webhook-url", &hook.url()]);
    let mut c = server.ws("untrusted-hook");
    cancel(&mut c, "up-untrusted");
    // Every retry fails its handshake; then the call is dropped and counted.
    assert!(
        wait_until(Duration::from_secs(30), || dropped(
            &server,
            "webhook_failed"
        ) >= 1.0),
        "the refused call must be counted; metrics:\n{}",
        server.metrics()
    );
    let attempts = metric_sum(
        &server.metrics(),
        "wsgate_webhook_attempts_failed_total",
        &[],
    );
    assert_eq!(attempts, Some(5.0), "five attempts, each counted");
    assert!(
        hook.connections() >= 5,
        "each attempt reached the receiver's TLS handshake (saw {})",
        hook.connections()
    );
    assert!(
        hook.try_next_request(Duration::ZERO).is_none(),
        "a receiver whose certificate does not verify must get no POST"
    );
    let stderr = server.stderr_contents();
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "the failure is logged with its cause: {stderr}"
    );
    c.assert_alive();
}

#[test]
fn bad_webhook_ca_file_exits_2_naming_the_flag() {
    let dir = std::env::temp_dir();
    let garbage = dir.join(format!("wsgate-bad-ca-{}.pem", std::process::id()));
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let broken = dir.join(format!("wsgate-broken-ca-{}.pem", std::process::id()));
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let missing = dir.join("wsgate-no-such-ca-file.pem");
    for path in [&garbage, &broken, &missing] {
        let path = path.to_string_lossy();
        let out = run_cli(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--jwt-secret",
                "s",
                "--webhook-url",
                "https://127.0.0.1:1/hook",
                "--webhook-ca-file",
                &path,
            ],
            &[],
            Duration::from_secs(10),
        );
        assert_eq!(out.code, Some(2), "{path}: stderr {:?}", out.stderr);
        assert!(
            out.stderr.contains("--webhook-ca-file") && out.stderr.contains(path.as_ref()),
            "{path}: must name the flag and the file: {:?}",
            out.stderr
        );
        assert!(
            !out.stdout.contains("wsgate listening on"),
            "{:?}",
            out.stdout
        );
    }
    let out = run_cli(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            "s",
            "--webhook-url",
            "https://127.0.0.1:1/hook",
        ],
        &[("WSGATE_WEBHOOK_CA_FILE", garbage.to_string_lossy().as_ref())],
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(2), "from the environment: {:?}", out.stderr);
    assert!(out.stderr.contains("--webhook-ca-file"), "{:?}", out.stderr);
    let _ = std::fs::remove_file(&garbage);
    let _ = std::fs::remove_file(&broken);
}

fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(message.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn webhook_secret_is_the_bearer_and_signs_every_post() {
    let secret = "whsec-test-1234";
    // The first attempt is refused, so the retry is checked too.
    let hook = MockHttp::start(|n| Some(if n == 0 { 500 } else { 200 }));
    let server = TestServer::start(&["--webhook-url", &hook.url(), "--webhook-secret", secret]);
    let mut c = server.ws("signed-user");
    cancel(&mut c, "up-signed");
    for attempt in 0..2 {
        let req = hook.next_request(Duration::from_secs(10));
        assert_eq!(
            req.header("Authorization"),
            Some(format!("Bearer {secret}").as_str()),
            "attempt {attempt}: the secret replaces the API key"
        );
        let signature = req
            .header("Wsgate-Signature")
            .unwrap_or_else(|| panic!("attempt {attempt}: no signature: {req:?}"));
        let (t, v1) = signature
            .strip_prefix("t=")
            .and_then(|rest| rest.split_once(",v1="))
            .unwrap_or_else(|| panic!("not t=...,v1=...: {signature}"));
        let t_secs: i64 = t.parse().expect("t is Unix seconds");
        assert!(t_secs.abs_diff(now_secs()) <= 60, "t={t} is now");
        assert_eq!(
            v1,
            hmac_hex(secret, &format!("{t}.{}", req.body)),
            "attempt {attempt}: HMAC-SHA256 over t.body"
        );
        assert_ne!(
            v1,
            hmac_hex(&server.api_key, &format!("{t}.{}", req.body)),
            "keyed with the secret, not the API key"
        );
        assert_eq!(req.json()["data"]["upload_id"], "up-signed");
    }
}

#[test]
fn a_stalled_webhook_does_not_hold_up_other_users_calls() {
    // The first request never gets an answer (until the 5 s attempt timeout).
    let hook = MockHttp::start(|n| if n == 0 { None } else { Some(200) });
    let server = TestServer::start(&["--webhook-url", &hook.url()]);
    let mut stalled = server.ws("stalled-user");
    cancel(&mut stalled, "up-stalled");
    assert_eq!(
        hook.next_request(Duration::from_secs(10)).json()["user_id"],
        "stalled-user"
    );
    let mut other = server.ws("other-user");
    let sent = Instant::now();
    cancel(&mut other, "up-other");
    let next = hook.next_request(Duration::from_secs(10)).json();
    assert_eq!(
        next["user_id"], "other-user",
        "another user's call goes out while the first is stalled, not after its retry"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "{:?}",
        sent.elapsed()
    );
}

#[test]
fn dropped_webhooks_are_counted_and_logged_at_a_limited_rate() {
    // Every call hangs, so the workers stay busy and the bounded queue fills.
    let hook = MockHttp::start(|_| None);
    let server = TestServer::start(&[
        "--webhook-url",
        &hook.url(),
        "--rate-limit-messages",
        "5000",
    ]);
    let mut c = server.ws("flood-user");
    let calls = 1200;
    for i in 0..calls {
        c.send_json(&json!({"type": "upload.cancel", "data": {"upload_id": format!("f{i}")}}));
    }
    for _ in 0..calls {
        assert_eq!(c.recv_json()["type"], "upload.cancel.acknowledged");
    }
    let drops = dropped(&server, "webhook_queue_full");
    assert!(
        drops >= 100.0,
        "queue of 1024 plus 8 in flight: {drops} dropped"
    );
    let stderr = server.stderr_contents();
    let lines = stderr
        .lines()
        .filter(|l| l.contains("webhook calls dropped"))
        .count();
    assert!(
        (1..=3).contains(&lines),
        "{drops} drops must be logged in a few lines, not one per drop: {lines} lines"
    );
    c.assert_alive();
}
