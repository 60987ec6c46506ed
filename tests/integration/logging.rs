//! SPEC sections 1 and 2: `--log-format json` and token redaction.

use crate::support::raw::Upgrade;
use crate::support::ws::ALL_VIAS;
use crate::support::{now_secs, TestServer, WsClient};
use serde_json::{json, Value};

#[test]
fn json_log_lines_parse_and_tokens_never_appear() {
    // Debug level everywhere, so refusals and connection events are logged.
    let mut server = TestServer::builder()
        .args(&["--log-format", "json"])
        .env("RUST_LOG", "debug")
        .start();
    let mut tokens = Vec::new();
    for (i, via) in ALL_VIAS.into_iter().enumerate() {
        let token = server.token(&format!("log-user-{i}"));
        let mut c = WsClient::connect(server.addr(), via, &token);
        c.assert_alive();
        tokens.push(token);
    }
    // Refused ones: expired, wrong signature, garbage.
    let expired = server.token_with(&json!({"sub": "x", "exp": now_secs() - 100}));
    let wrong = crate::support::sign_hs256("other", &json!({"sub": "x", "exp": now_secs() + 100}));
    for t in [&expired, &wrong] {
        assert_eq!(
            Upgrade::get(&format!("/api/v1/ws/{t}"))
                .send(server.addr())
                .status,
            401
        );
        assert_eq!(
            Upgrade::get(&format!("/api/v1/ws?token={t}"))
                .send(server.addr())
                .status,
            401
        );
        assert_eq!(
            Upgrade::get("/api/v1/ws")
                .header("Authorization", &format!("Bearer {t}"))
                .send(server.addr())
                .status,
            401
        );
    }
    tokens.push(expired);
    tokens.push(wrong);
    let status = server.sigterm_and_wait();
    assert!(status.success(), "exit status {status:?}");

    let stderr = server.stderr_contents();
    assert!(
        !stderr.trim().is_empty(),
        "expected some log output on stderr"
    );
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(
            parsed.as_ref().is_ok_and(Value::is_object),
            "--log-format json: stderr line is not a JSON object: {line:?}"
        );
    }
    for t in &tokens {
        let signature = t.rsplit('.').next().unwrap_or_default();
        assert!(
            !stderr.contains(t.as_str()),
            "a token appears in the logs:\n{stderr}"
        );
        assert!(
            signature.is_empty() || !stderr.contains(signature),
            "a token signature appears in the logs:\n{stderr}"
        );
    }
}

#[test]
fn text_logs_never_contain_tokens() {
    let mut server = TestServer::builder().env("RUST_LOG", "debug").start();
    let token = server.token("text-user");
    server.ws_token(&token).assert_alive();
    let status = Upgrade::get(&format!("/api/v1/ws/{token}x"))
        .send(server.addr())
        .status;
    assert_eq!(status, 401);
    server.sigterm_and_wait();
    let stderr = server.stderr_contents();
    let signature = token.rsplit('.').next().unwrap_or_default();
    assert!(!stderr.contains(&token), "token in text logs:\n{stderr}");
    assert!(
        !stderr.contains(signature),
        "token signature in text logs:\n{stderr}"
    );
}

/// The stderr lines of a server started with `args` (plus a secret), read
/// after it exited.
fn stderr_of_serve(args: &[&str]) -> String {
    let mut server = TestServer::builder()
        .without_credentials()
        .args(&["--jwt-secret", "s"])
        .args(args)
        .start();
    let status = server.sigterm_and_wait();
    assert!(status.success(), "exit status {status:?}");
    server.stderr_contents()
}

#[test]
fn serve_without_an_api_key_warns_once_that_the_server_api_is_off() {
    let stderr = stderr_of_serve(&[]);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("server API"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "exactly one warning that the server API is off; stderr:\n{stderr}"
    );
    assert!(warnings[0].contains("--api-key"), "{}", warnings[0]);
    let with_key = stderr_of_serve(&["--api-key", "k"]);
    assert!(
        !with_key.contains("server API"),
        "no warning with --api-key; stderr:\n{with_key}"
    );
}
