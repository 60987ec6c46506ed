//! SPEC section 1: the command line (`serve` validation and exit codes,
//! environment variables, `token`, `--dev`, the one stdout line).

use crate::support::raw::Upgrade;
use crate::support::{now_secs, run_cli, wait_until, CliOutput, TestServer, TokenVia, WsClient};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::time::Duration;

const CLI_TIMEOUT: Duration = Duration::from_secs(10);

fn non_empty_lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

fn assert_exit_2_naming(out: &CliOutput, needle: &str, what: &str) {
    assert_eq!(
        out.code,
        Some(2),
        "{what}: exit status; stderr {:?}",
        out.stderr
    );
    assert!(
        out.stderr.contains(needle),
        "{what}: stderr must name {needle}: {:?}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("wsgate listening on"),
        "{what}: must not start listening: {:?}",
        out.stdout
    );
}

#[test]
fn serve_without_secret_exits_2_with_one_line() {
    let out = run_cli(&["serve", "--listen", "127.0.0.1:0"], &[], CLI_TIMEOUT);
    assert_exit_2_naming(&out, "--jwt-secret", "no secret");
    assert_eq!(
        non_empty_lines(&out.stderr).len(),
        1,
        "a one-line error: {:?}",
        out.stderr
    );
}

#[test]
fn bad_flag_values_exit_2_naming_the_flag() {
    let cases: [(&str, &str); 6] = [
        ("--max-connections", "abc"),
        ("--heartbeat-interval", "xyz"),
        ("--rate-limit-window", "soon"),
        ("--max-message-size", "ten"),
        ("--log-format", "xml"),
        ("--listen", "not-an-address"),
    ];
    for (flag, value) in cases {
        let mut args = vec!["serve", "--jwt-secret", "s"];
        if flag != "--listen" {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend([flag, value]);
        let out = run_cli(&args, &[], CLI_TIMEOUT);
        assert_exit_2_naming(
            &out,
            flag.trim_start_matches('-'),
            &format!("{flag} {value}"),
        );
    }
}

#[test]
fn bad_env_value_exits_2() {
    let out = run_cli(
        &["serve", "--listen", "127.0.0.1:0", "--jwt-secret", "s"],
        &[("WSGATE_MAX_CONNECTIONS", "lots")],
        CLI_TIMEOUT,
    );
    assert_eq!(out.code, Some(2), "stderr {:?}", out.stderr);
    let lower = out.stderr.to_lowercase();
    assert!(
        lower.contains("max-connections") || lower.contains("max_connections"),
        "must say which setting: {:?}",
        out.stderr
    );
}

#[test]
fn durations_accept_every_unit() {
    let server = TestServer::start(&[
        "--heartbeat-interval",
        "1h",
        "--connection-timeout",
        "2m",
        "--rate-limit-window",
        "30s",
        "--cleanup-interval",
        "500ms",
    ]);
    server.ws("d").assert_alive();
}

#[test]
fn env_var_sets_max_connections() {
    let server = TestServer::builder()
        .env("WSGATE_MAX_CONNECTIONS", "1")
        .start();
    let _a = server.ws("a");
    let token = server.token("b");
    let resp = Upgrade::get(&format!("/api/v1/ws/{token}")).send(server.addr());
    resp.assert_error(503, "SERVER_AT_CAPACITY");
}

#[test]
fn flag_wins_over_env_var() {
    let server = TestServer::builder()
        .env("WSGATE_MAX_CONNECTIONS", "1")
        .args(&["--max-connections", "2"])
        .start();
    let _a = server.ws("a");
    let _b = server.ws("b");
    let token = server.token("c");
    let resp = Upgrade::get(&format!("/api/v1/ws/{token}")).send(server.addr());
    resp.assert_error(503, "SERVER_AT_CAPACITY");
}

#[test]
fn jwt_secret_from_env() {
    let server = TestServer::builder()
        .without_credentials()
        .secret("env-secret-123")
        .env("WSGATE_JWT_SECRET", "env-secret-123")
        .env("WSGATE_API_KEY", "env-api-key")
        .start();
    server.ws("env-user").assert_alive();
    let r = server.request("GET", "/api/v1/stats", Some("env-api-key"), None);
    r.expect_status(200);
}

fn decode_claims(token: &str, secret: &str) -> Value {
    let mut v = Validation::new(Algorithm::HS256);
    v.validate_aud = false;
    decode::<Value>(token, &DecodingKey::from_secret(secret.as_bytes()), &v)
        .unwrap_or_else(|e| {
            panic!("`wsgate token` output is not a valid HS256 JWT ({e}): {token:?}")
        })
        .claims
}

#[test]
fn token_command_mints_claims() {
    let out = run_cli(
        &[
            "token",
            "--sub",
            "42",
            "--jwt-secret",
            "s",
            "--claim",
            "role=admin",
            "--claim",
            "n=5",
        ],
        &[],
        CLI_TIMEOUT,
    );
    assert_eq!(out.code, Some(0), "stderr {:?}", out.stderr);
    let lines = non_empty_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "token prints one line: {:?}", out.stdout);
    let claims = decode_claims(lines[0].trim(), "s");
    assert!(
        claims["sub"] == "42" || claims["sub"] == 42,
        "sub: {claims}"
    );
    assert_eq!(claims["role"], "admin", "string claim: {claims}");
    assert_eq!(claims["n"], 5, "a JSON value is put in as JSON: {claims}");
    let exp = claims["exp"]
        .as_i64()
        .unwrap_or_else(|| panic!("exp: {claims}"));
    let ttl = exp - now_secs();
    assert!((3540..=3660).contains(&ttl), "default ttl ~1h, got {ttl}s");
}

#[test]
fn token_command_ttl_env_secret_and_use() {
    let out = run_cli(
        &[
            "token",
            "--sub",
            "cli-user",
            "--ttl",
            "10m",
            "--claim",
            "tags=[\"a\",\"b\"]",
        ],
        &[("WSGATE_JWT_SECRET", "shared-secret")],
        CLI_TIMEOUT,
    );
    assert_eq!(out.code, Some(0), "stderr {:?}", out.stderr);
    let token = out.stdout.trim().to_string();
    let claims = decode_claims(&token, "shared-secret");
    assert_eq!(claims["sub"], "cli-user");
    assert_eq!(claims["tags"], serde_json::json!(["a", "b"]));
    let ttl = claims["exp"].as_i64().unwrap_or(0) - now_secs();
    assert!((540..=660).contains(&ttl), "--ttl 10m, got {ttl}s");

    let server = TestServer::builder().secret("shared-secret").start();
    let c = WsClient::connect(server.addr(), TokenVia::Path, &token);
    assert_eq!(c.established["data"]["user_id"], "cli-user");
}

#[test]
fn token_command_without_secret_fails() {
    let out = run_cli(&["token", "--sub", "1"], &[], CLI_TIMEOUT);
    assert_ne!(
        out.code,
        Some(0),
        "no secret: must fail; stdout {:?}",
        out.stdout
    );
    assert!(
        out.stdout.trim().is_empty(),
        "no token printed: {:?}",
        out.stdout
    );
}

/// The first `xxx.yyy.zzz` JWT-looking word in `text`.
fn find_jwt(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .find(|w| w.starts_with("eyJ") && w.split('.').count() == 3)
        .map(|w| w.trim_end_matches('.').to_string())
}

#[test]
fn dev_mode_prints_a_working_sample_token() {
    let mut server = TestServer::builder()
        .without_credentials()
        .args(&["--dev"])
        .start();
    let mut token = None;
    let printed = wait_until(Duration::from_secs(5), || {
        token = find_jwt(&server.stderr_contents());
        token.is_some()
    });
    assert!(
        printed,
        "--dev must print a sample token on stderr:\n{}",
        server.stderr_contents()
    );
    let token = token.expect("sample token");
    let mut c = WsClient::connect(server.addr(), TokenVia::Path, &token);
    c.assert_alive();
    let status = server.sigterm_and_wait();
    assert!(status.success(), "{status:?}");
    let lines = server.stdout_lines();
    assert_eq!(lines.len(), 1, "exactly one stdout line, got {lines:?}");
    assert!(lines[0].starts_with("wsgate listening on http://127.0.0.1:"));
}
