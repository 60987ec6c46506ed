//! A real `wsgate serve` process on port 0, and one-shot CLI runs.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::jwt::{mint, sign_hs256};
use super::random_string;
use super::ws::{TokenVia, WsClient};

pub const BIN: &str = env!("CARGO_BIN_EXE_wsgate");
const LISTENING: &str = "wsgate listening on http://";
const LISTENING_TLS: &str = "wsgate listening on https://";

/// A command for the binary with every inherited `WSGATE_*` variable
/// removed, so the test environment cannot leak configuration in.
fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("WSGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

pub struct ServerBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    secret: Option<String>,
    api_key: Option<String>,
    credentials: bool,
}

impl ServerBuilder {
    pub fn new() -> Self {
        ServerBuilder {
            args: Vec::new(),
            envs: Vec::new(),
            secret: None,
            api_key: None,
            credentials: true,
        }
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    pub fn secret(mut self, s: &str) -> Self {
        self.secret = Some(s.into());
        self
    }

    /// Passes neither `--jwt-secret` nor `--api-key` (for `--dev`).
    pub fn without_credentials(mut self) -> Self {
        self.credentials = false;
        self
    }

    pub fn start(self) -> TestServer {
        let secret = self.secret.unwrap_or_else(|| random_string(32));
        let api_key = self.api_key.unwrap_or_else(|| random_string(32));
        let mut cmd = command();
        cmd.arg("serve").args(["--listen", "127.0.0.1:0"]);
        if self.credentials {
            cmd.args(["--jwt-secret", &secret, "--api-key", &api_key]);
        }
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the wsgate binary");

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr lock")
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });

        let stdout_lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let out_pipe = child.stdout.take().expect("piped stdout");
        let lines_sink = stdout_lines.clone();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                lines_sink.lock().expect("stdout lock").push(line.clone());
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let line = line.trim();
                    let rest = line
                        .strip_prefix(LISTENING)
                        .or_else(|| line.strip_prefix(LISTENING_TLS));
                    if let Some(rest) = rest {
                        let addr = rest
                            .trim_end_matches('/')
                            .to_socket_addrs()
                            .ok()
                            .and_then(|mut a| a.next())
                            .unwrap_or_else(|| panic!("unparsable listening line {line:?}"));
                        assert_ne!(addr.port(), 0, "listening line must carry the real port");
                        break addr;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // Give the stderr reader a moment to drain the pipe.
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "wsgate did not print `{LISTENING}HOST:PORT` within 15 s; stdout {:?}, stderr:\n{}",
                        stdout_lines.lock().expect("stdout lock"),
                        stderr.lock().expect("stderr lock")
                    );
                }
            }
        };

        TestServer {
            child,
            addr,
            secret,
            api_key,
            stderr,
            stdout_lines,
            exit: None,
            // No pooled connections: a server may close a keep-alive
            // connection after answering early (e.g. a 401 before reading
            // the body), and a pooled POST would then fail on EOF.
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(20))
                .max_idle_connections(0)
                .build(),
        }
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// An HTTP answer from the server API.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
    /// The body parsed as JSON; `Value::Null` when empty or not JSON.
    pub json: Value,
}

impl ApiResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status, naming the body on failure.
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {} with body {:?}",
            self.status, self.text
        );
        self
    }

    /// Asserts status and the `{"code", "detail"}` error body.
    pub fn expect_error(&self, status: u16, code: &str) {
        self.expect_status(status);
        assert_eq!(
            self.json["code"], code,
            "error code in body {:?}",
            self.text
        );
        assert!(
            self.json["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "error body must have a non-empty `detail`: {:?}",
            self.text
        );
    }

    /// `delivered` of a 200 publish answer (also checks `id`).
    pub fn delivered(&self) -> u64 {
        self.expect_status(200);
        assert!(
            self.json["id"].as_str().is_some_and(|s| !s.is_empty()),
            "publish answer without a non-empty `id`: {}",
            self.text
        );
        self.json["delivered"]
            .as_u64()
            .unwrap_or_else(|| panic!("publish answer without integer `delivered`: {}", self.text))
    }
}

pub struct TestServer {
    child: Child,
    addr: SocketAddr,
    pub secret: String,
    pub api_key: String,
    stderr: Arc<Mutex<String>>,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    exit: Option<ExitStatus>,
    agent: ureq::Agent,
}

impl TestServer {
    /// `serve --listen 127.0.0.1:0 --jwt-secret R --api-key R` + `args`.
    pub fn start(args: &[&str]) -> TestServer {
        ServerBuilder::new().args(args).start()
    }

    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A valid HS256 token for `sub`, expiring in an hour.
    pub fn token(&self, sub: &str) -> String {
        mint(&self.secret, sub, Duration::from_secs(3600))
    }

    /// An HS256 token over exactly `claims`, signed with the server secret.
    pub fn token_with(&self, claims: &Value) -> String {
        sign_hs256(&self.secret, claims)
    }

    /// Connects as `sub` by path token and returns the client (its
    /// `established` field holds `connection.established`).
    pub fn ws(&self, sub: &str) -> WsClient {
        WsClient::connect(self.addr, TokenVia::Path, &self.token(sub))
    }

    /// Connects with the given token by path.
    pub fn ws_token(&self, token: &str) -> WsClient {
        WsClient::connect(self.addr, TokenVia::Path, token)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Any request; `key` is the bearer key (or none); `body` is sent
    /// verbatim as JSON.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> ApiResponse {
        let url = self.url(path);
        let mut req = self.agent.request(method, &url);
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: transport error: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let text = resp
            .into_string()
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        ApiResponse {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn api_get(&self, path: &str) -> ApiResponse {
        self.request("GET", path, Some(&self.api_key), None)
    }

    pub fn api_post(&self, path: &str, body: &Value) -> ApiResponse {
        self.request("POST", path, Some(&self.api_key), Some(&body.to_string()))
    }

    pub fn api_post_raw(&self, path: &str, body: &str) -> ApiResponse {
        self.request("POST", path, Some(&self.api_key), Some(body))
    }

    pub fn api_delete(&self, path: &str) -> ApiResponse {
        self.request("DELETE", path, Some(&self.api_key), None)
    }

    /// `GET` without the API key (health, metrics, console).
    pub fn get_public(&self, path: &str) -> ApiResponse {
        self.request("GET", path, None, None)
    }

    /// `POST /api/v1/events`, returning `delivered`.
    pub fn publish(&self, body: &Value) -> u64 {
        self.api_post("/api/v1/events", body).delivered()
    }

    /// The connections listed by `GET /api/v1/connections[?user_id=U]`.
    pub fn connections(&self, user: Option<&str>) -> Vec<Value> {
        let path = match user {
            Some(u) => format!("/api/v1/connections?user_id={u}"),
            None => "/api/v1/connections".to_string(),
        };
        let r = self.api_get(&path);
        r.expect_status(200);
        r.json
            .as_array()
            .unwrap_or_else(|| panic!("connections must be a JSON array: {}", r.text))
            .clone()
    }

    pub fn connection_ids(&self) -> Vec<String> {
        self.connections(None)
            .iter()
            .filter_map(|c| c["connection_id"].as_str().map(String::from))
            .collect()
    }

    /// Polls the connection list until `id` is gone; false on timeout.
    pub fn wait_connection_gone(&self, id: &str, timeout: Duration) -> bool {
        super::wait_until(timeout, || !self.connection_ids().iter().any(|c| c == id))
    }

    /// Publishes a `system.maintenance` marker to this one connection and
    /// asserts it is the very next message the client gets: a barrier that
    /// proves nothing else was delivered before it, without a sleep.
    pub fn assert_nothing_pending(&self, client: &mut WsClient) {
        let marker = random_string(12);
        let delivered = self.publish(&json!({
            "type": "system.maintenance",
            "data": {"marker": marker},
            "connections": [client.connection_id()],
        }));
        assert_eq!(delivered, 1, "marker must reach exactly its one connection");
        let next = client.recv_json();
        assert!(
            next["type"] == "system.maintenance" && next["data"]["marker"] == marker.as_str(),
            "expected nothing before the marker, got {next}"
        );
    }

    /// The server's resident set size in KiB (`VmRSS` in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status of the server");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    pub fn metrics(&self) -> String {
        let r = self.get_public("/metrics");
        r.expect_status(200);
        r.text
    }

    pub fn stderr_contents(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Every stdout line so far (the listening line included).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().expect("stdout lock").clone()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits up to `timeout` for exit; `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exit {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait on wsgate") {
                self.exit = Some(s);
                // Let the pipe readers drain what the process wrote last.
                std::thread::sleep(Duration::from_millis(50));
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig`, waits at most 10 s (SPEC), and returns the exit status;
    /// kills the process and panics if it did not exit in time.
    pub fn signal_and_wait(&mut self, sig: i32) -> ExitStatus {
        self.signal(sig);
        match self.wait_exit(Duration::from_secs(10)) {
            Some(s) => s,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("wsgate did not exit within 10 s of signal {sig}");
            }
        }
    }

    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGTERM)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.exit.is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a one-shot CLI run produced.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `wsgate args...` with `envs` and no inherited `WSGATE_*`; kills it
/// and panics if it runs longer than `timeout`.
pub fn run_cli(args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> CliOutput {
    let mut cmd = command();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the wsgate binary");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).to_string()
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).to_string()
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_t.join().unwrap_or_default();
            panic!(
                "`wsgate {}` still running after {timeout:?}; stderr:\n{stderr}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliOutput {
        code: status.code(),
        stdout: out_t.join().expect("stdout reader"),
        stderr: err_t.join().expect("stderr reader"),
    }
}
