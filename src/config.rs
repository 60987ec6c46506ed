//! Command-line and environment configuration, parsed once into a typed
//! [`Config`] that is passed down; nothing deeper reads the environment.
//!
//! Every flag has a `WSGATE_*` variable (clap's `env`), a flag wins over
//! its variable, and every bad value becomes a [`ConfigError`] naming the
//! flag, which `main` prints on one line before exiting with status 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rustls::pki_types::CertificateDer;

#[derive(Debug, Parser)]
#[command(name = "wsgate", version, about = "A real-time WebSocket gateway")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    /// Print an HS256 JWT signed with the configured secret.
    Token(TokenArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 500ms, 30s, 2m, 1h ({e})"))
}

/// `--refusal-mode`: how a refused (valid) upgrade is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RefusalMode {
    /// v1: a 401 / 429 / 503 HTTP answer.
    Http,
    /// Accept, send one `error`, close with 4401 / 4429 / 4503.
    Close,
}

/// `--log-format`: how tracing writes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The flags of `serve`. Each doc comment is its `--help` text; clap adds
/// the `[env: ...]` and `[default: ...]` notes, so computed defaults are
/// the only ones spelled out here.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for WebSocket, API, metrics and console. Port 0
    /// picks a free port; the real address is printed on startup.
    #[arg(
        long,
        env = "WSGATE_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// HS256 key that client JWTs are signed with. Required unless
    /// --jwt-public-key or --dev is given.
    #[arg(long, env = "WSGATE_JWT_SECRET", hide_env_values = true, value_name = "SECRET", help_heading = AUTH)]
    pub jwt_secret: Option<String>,
    /// PEM public key that client JWTs are verified with: RSA → RS256, EC
    /// → ES256.
    #[arg(long, env = "WSGATE_JWT_PUBLIC_KEY", value_name = "PATH", help_heading = AUTH)]
    pub jwt_public_key: Option<PathBuf>,
    /// When set, a token's `iss` must equal it.
    #[arg(long, env = "WSGATE_JWT_ISSUER", value_name = "ISS", help_heading = AUTH)]
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` must contain it.
    #[arg(long, env = "WSGATE_JWT_AUDIENCE", value_name = "AUD", help_heading = AUTH)]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed when checking a token's `exp` and `nbf`.
    #[arg(long, env = "WSGATE_JWT_LEEWAY", default_value = "0s", value_parser = duration, value_name = "DURATION", help_heading = AUTH)]
    pub jwt_leeway: Duration,
    /// Send `token.expiring` this long before a token's `exp`, to
    /// connections that asked with `refresh=1` (0s: never).
    #[arg(long, env = "WSGATE_TOKEN_EXPIRING_NOTICE", default_value = "60s", value_parser = duration, value_name = "DURATION", help_heading = AUTH)]
    pub token_expiring_notice: Duration,
    /// Extra time after `exp` + --jwt-leeway before a connection whose
    /// token was not refreshed is closed with 4001.
    #[arg(long, env = "WSGATE_TOKEN_REFRESH_GRACE", default_value = "0s", value_parser = duration, value_name = "DURATION", help_heading = AUTH)]
    pub token_refresh_grace: Duration,
    /// Bearer key of the server API (`/api/v1/...`). Without it the API is
    /// disabled and a warning is logged.
    #[arg(long, env = "WSGATE_API_KEY", hide_env_values = true, value_name = "KEY", help_heading = AUTH)]
    pub api_key: Option<String>,
    /// Development mode: generate a missing JWT secret and API key and
    /// print them with a sample token. Never in production.
    #[arg(long, env = "WSGATE_DEV", help_heading = AUTH)]
    pub dev: bool,
    /// WebSocket connections open on this node at most; past it, 503.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS", default_value_t = 1000, value_name = "N", help_heading = LIMITS)]
    pub max_connections: usize,
    /// WebSocket connections open per user at most (across the cluster in
    /// cluster mode); past it, 429.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS_PER_USER", default_value_t = 3, value_name = "N", help_heading = LIMITS)]
    pub max_connections_per_user: usize,
    /// Client messages a user may send per --rate-limit-window; past it
    /// they are dropped with a RATE_LIMIT_EXCEEDED error.
    #[arg(long, env = "WSGATE_RATE_LIMIT_MESSAGES", default_value_t = 100, value_name = "N", help_heading = LIMITS)]
    pub rate_limit_messages: u32,
    /// The sliding window of --rate-limit-messages.
    #[arg(long, env = "WSGATE_RATE_LIMIT_WINDOW", default_value = "60s", value_parser = duration, value_name = "DURATION", help_heading = LIMITS)]
    pub rate_limit_window: Duration,
    /// Period of the server's WebSocket Ping frames.
    #[arg(long, env = "WSGATE_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = duration, value_name = "DURATION", help_heading = TIMERS)]
    pub heartbeat_interval: Duration,
    /// No complete frame from a client for this long: close 4000. Bytes of
    /// an unfinished frame do not count.
    #[arg(long, env = "WSGATE_CONNECTION_TIMEOUT", default_value = "60s", value_parser = duration, value_name = "DURATION", help_heading = TIMERS)]
    pub connection_timeout: Duration,
    /// How often idle rate-limit state is pruned.
    #[arg(long, env = "WSGATE_CLEANUP_INTERVAL", default_value = "30s", value_parser = duration, value_name = "DURATION", help_heading = TIMERS)]
    pub cleanup_interval: Duration,
    /// Largest message in bytes: inbound (close 1009) and published (413).
    /// At least 128.
    #[arg(long, env = "WSGATE_MAX_MESSAGE_SIZE", default_value_t = 65536, value_name = "BYTES", help_heading = LIMITS)]
    pub max_message_size: usize,
    /// Bytes queued for one connection, control replies included; past it
    /// the slow client is closed with 4008. At least --max-message-size.
    #[arg(long, env = "WSGATE_MAX_QUEUED_BYTES", default_value_t = 1_048_576, value_name = "BYTES", help_heading = LIMITS)]
    pub max_queued_bytes: usize,
    /// Connection-manager shards (reactor threads), 1 to 256. Default: the
    /// number of CPUs.
    #[arg(long, env = "WSGATE_SHARDS", value_name = "N")]
    pub shards: Option<usize>,
    /// Cluster mode: share events, per-user limits and deactivations with
    /// the other nodes through this Redis (redis://HOST:PORT[/DB]).
    #[arg(long, env = "WSGATE_REDIS_URL", value_name = "URL", help_heading = CLUSTER)]
    pub redis_url: Option<String>,
    /// Cluster mode: bytes of events waiting to be sent to Redis; past it,
    /// events reach this node only (counted as dropped, `backplane_queue_full`).
    #[arg(long, env = "WSGATE_BACKPLANE_QUEUE_BYTES", default_value_t = 32 << 20, value_name = "BYTES", help_heading = CLUSTER)]
    pub backplane_queue_bytes: usize,
    /// This node's name in `stats`, logs and metrics, at most 128
    /// characters. Unique per cluster: a second live node with the same id
    /// exits 2. Default: `node-` and 8 random hex digits.
    #[arg(long, env = "WSGATE_NODE_ID", value_name = "ID", help_heading = CLUSTER)]
    pub node_id: Option<String>,
    /// Where client requests for the backend (`upload.cancel`) are POSTed:
    /// an `http://` or `https://` URL.
    #[arg(long, env = "WSGATE_WEBHOOK_URL", value_name = "URL", help_heading = WEBHOOKS)]
    pub webhook_url: Option<String>,
    /// PEM certificates trusted for an `https://` `--webhook-url`, in
    /// addition to the system's roots (a private CA).
    #[arg(long, env = "WSGATE_WEBHOOK_CA_FILE", value_name = "PATH", help_heading = WEBHOOKS)]
    pub webhook_ca_file: Option<PathBuf>,
    /// Webhooks carry `Authorization: Bearer S` instead of the API key and
    /// a `Wsgate-Signature` (HMAC-SHA256 with S).
    #[arg(long, env = "WSGATE_WEBHOOK_SECRET", hide_env_values = true, value_name = "S", help_heading = WEBHOOKS)]
    pub webhook_secret: Option<String>,
    /// Log lines on stderr as text or JSON; `RUST_LOG` filters them.
    #[arg(
        long,
        env = "WSGATE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
    /// PEM certificate chain: serve `wss://` and `https://` on the same
    /// port (with --tls-key). `kill -HUP` reloads the pair.
    #[arg(long, env = "WSGATE_TLS_CERT", value_name = "PATH", help_heading = TLS)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WSGATE_TLS_KEY", value_name = "PATH", help_heading = TLS)]
    pub tls_key: Option<PathBuf>,
    /// Serve an unauthenticated echo at `/conformance/echo` for the
    /// Autobahn test suite. Never in production.
    #[arg(long, env = "WSGATE_CONFORMANCE_ECHO")]
    pub conformance_echo: bool,
    /// A client must send its whole request head within this time; also how
    /// long a keep-alive connection may sit idle between requests.
    #[arg(long, env = "WSGATE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration, value_name = "DURATION", help_heading = TIMERS)]
    pub header_read_timeout: Duration,
    /// TCP connections not (yet) upgraded to WebSocket held at once: TLS
    /// handshakes, requests being read, idle keep-alive API connections.
    /// Past it a new connection is closed at accept. Default: a quarter of
    /// --max-connections, at least 64.
    #[arg(long, env = "WSGATE_MAX_PENDING_CONNECTIONS", value_name = "N", help_heading = LIMITS)]
    pub max_pending_connections: Option<usize>,
    /// New WebSocket upgrades accepted per second on this node (0: no limit);
    /// past it, 503 with Retry-After.
    #[arg(long, env = "WSGATE_CONNECTION_RATE_LIMIT", default_value_t = 0, value_name = "N", help_heading = LIMITS)]
    pub connection_rate_limit: u32,
    /// On shutdown, close connections in batches spread over this time (at
    /// most 5s).
    #[arg(long, env = "WSGATE_DRAIN_TIME", default_value = "1s", value_parser = duration, value_name = "DURATION", help_heading = TIMERS)]
    pub drain_time: Duration,
    /// WebSocket ping and pong frames a client may send per second on one
    /// connection (0: no cap); past it, close 1008.
    #[arg(
        long,
        env = "WSGATE_MAX_CONTROL_FRAMES_PER_SECOND",
        default_value_t = 100,
        value_name = "N",
        help_heading = LIMITS
    )]
    pub max_control_frames_per_second: u32,
    /// Events kept per stream (user, broadcast, event type); 0 turns
    /// history, positions and recovery off (v1 behaviour).
    #[arg(long, env = "WSGATE_HISTORY_SIZE", default_value_t = 100, value_name = "N", help_heading = HISTORY)]
    pub history_size: usize,
    /// Cluster mode: record history on Redis (experimental, off by default:
    /// appends, positions and the streams API work across nodes, but
    /// connection recovery still answers UNAVAILABLE and recorded events a
    /// node misses while cut off are not counted; docs/CLUSTER.md). Off:
    /// cluster mode has no history (UNAVAILABLE, no `stream` field).
    #[arg(long, env = "WSGATE_CLUSTER_HISTORY", help_heading = HISTORY)]
    pub cluster_history: bool,
    /// A stream's events are dropped this long after its last append.
    #[arg(long, env = "WSGATE_HISTORY_TTL", default_value = "5m", value_parser = duration, value_name = "DURATION", help_heading = HISTORY)]
    pub history_ttl: Duration,
    /// A stream's epoch and top offset live this long after its last append.
    #[arg(long, env = "WSGATE_HISTORY_META_TTL", default_value = "24h", value_parser = duration, value_name = "DURATION", help_heading = HISTORY)]
    pub history_meta_ttl: Duration,
    /// Bytes of retained events over all streams of this node; past it the
    /// streams appended to least recently are dropped whole.
    #[arg(long, env = "WSGATE_HISTORY_MAX_BYTES", default_value_t = 268_435_456, value_name = "BYTES", help_heading = HISTORY)]
    pub history_max_bytes: usize,
    /// More missed events than this on a stream: not recovered (TOO_MANY).
    #[arg(long, env = "WSGATE_RECOVERY_MAX_EVENTS", default_value_t = 300, value_name = "N", help_heading = HISTORY)]
    pub recovery_max_events: u64,
    /// How long a `resume=1` connection waits for its first message.
    #[arg(long, env = "WSGATE_RESUME_TIMEOUT", default_value = "5s", value_parser = duration, value_name = "DURATION", help_heading = HISTORY)]
    pub resume_timeout: Duration,
    /// Last-value cache rules, `TYPE:FIELD[:END_TYPE|...]` comma-separated;
    /// empty: off.
    #[arg(
        long,
        env = "WSGATE_LAST_VALUE_EVENTS",
        default_value = "upload.progress:upload_id:upload.completed|upload.error|upload.cancelled,file.processing:file_id:file.ready",
        value_name = "LIST",
        help_heading = HISTORY
    )]
    pub last_value_events: String,
    /// A cached last value is dropped this long after it was stored.
    #[arg(long, env = "WSGATE_LAST_VALUE_TTL", default_value = "10m", value_parser = duration, value_name = "DURATION", help_heading = HISTORY)]
    pub last_value_ttl: Duration,
    /// How refusals of a valid upgrade (401, 429, 503) are answered: `http`
    /// as a plain HTTP status, or `close` by completing the upgrade, sending
    /// one `error` and closing with 4401 / 4429 / 4503 (what a browser can
    /// see). A client picks `close` for itself with `?refusal=close`.
    #[arg(long, env = "WSGATE_REFUSAL_MODE", value_enum, default_value = "http", value_name = "MODE", help_heading = LIMITS)]
    pub refusal_mode: RefusalMode,
    /// 1001 shutdown closes advise each connection a `retry_after` drawn
    /// uniformly from 0 to this, so clients do not all come back at once.
    #[arg(long, env = "WSGATE_SHUTDOWN_RECONNECT_SPREAD", default_value = "5s", value_parser = duration, value_name = "DURATION", help_heading = TIMERS)]
    pub shutdown_reconnect_spread: Duration,
    /// Close a connection with 4009 after this long, each connection's age
    /// drawn uniformly from 90-100 % of it, so load evens out after a
    /// scale-out or a deploy (0s: never).
    #[arg(long, env = "WSGATE_MAX_CONNECTION_AGE", default_value = "0s", value_parser = duration, value_name = "DURATION", help_heading = TIMERS)]
    pub max_connection_age: Duration,
    /// Test only: allow the fault-injection flags below. Never in production.
    #[arg(long, env = "WSGATE_ENABLE_TEST_FAULTS", hide = true)]
    pub enable_test_faults: bool,
    /// Test only (needs --enable-test-faults): the shard panics when this
    /// user's connection registers, to test the shard failure model.
    #[arg(long, env = "WSGATE_TEST_SHARD_PANIC_USER", hide = true)]
    pub test_shard_panic_user: Option<String>,
}

// `serve --help` sections.
const AUTH: &str = "Authentication";
const LIMITS: &str = "Limits";
const TIMERS: &str = "Timers";
const CLUSTER: &str = "Cluster";
const WEBHOOKS: &str = "Webhooks";
const TLS: &str = "TLS";
const HISTORY: &str = "History and recovery";

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Lifetime of the token.
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub ttl: Duration,
    /// Extra claim; a VALUE that parses as JSON is put in as JSON.
    #[arg(long = "claim", value_name = "KEY=VALUE", value_parser = crate::auth::mint::parse_claim)]
    pub claims: Vec<(String, serde_json::Value)>,
    /// HS256 key to sign with: the server's --jwt-secret.
    #[arg(
        long,
        env = "WSGATE_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub jwt_secret: Option<String>,
}

/// A configuration problem: which flag, and why.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(flag: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            flag,
            reason: reason.into(),
        }
    }
}

/// How handshake tokens are verified (`--jwt-*`).
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub secret: Option<String>,
    pub public_key_path: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
}

/// Capacity, per-user and per-message limits.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub rate_limit_messages: u32,
    pub rate_limit_window: Duration,
    pub max_message_size: usize,
    pub max_queued_bytes: usize,
}

/// Where and how webhooks are POSTed.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// `http://` or `https://`.
    pub url: hyper::Uri,
    /// `--webhook-secret`: the bearer and the signing key; without it the
    /// API key is the bearer and nothing is signed.
    pub secret: Option<String>,
    /// `--webhook-ca-file`'s certificates, trusted beside the system's roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// Heartbeat, idle timeout and the cleanup sweep.
#[derive(Clone, Debug)]
pub struct TimersConfig {
    pub heartbeat_interval: Duration,
    pub connection_timeout: Duration,
    pub cleanup_interval: Duration,
    /// `--token-expiring-notice`; zero: no `token.expiring`.
    pub token_expiring_notice: Duration,
    /// `--token-refresh-grace`, added to `exp` + leeway for the 4001.
    pub token_refresh_grace: Duration,
}

/// The whole validated configuration of `serve`.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub auth: AuthConfig,
    pub api_key: Option<String>,
    pub dev: bool,
    pub limits: LimitsConfig,
    pub timers: TimersConfig,
    pub shards: usize,
    pub redis_url: Option<String>,
    /// Bound of the events waiting for Redis, in bytes.
    pub backplane_queue_bytes: usize,
    pub node_id: String,
    pub webhook: Option<WebhookConfig>,
    pub log_format: LogFormat,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub conformance_echo: bool,
    pub header_read_timeout: Duration,
    /// Connections accepted but not upgraded, at most.
    pub max_pending_connections: usize,
    /// Upgrades per second per node; 0 means unlimited.
    pub connection_rate_limit: u32,
    /// Closing connections is spread over this time on shutdown.
    pub drain_time: Duration,
    /// After the drain, how long closing connections get to finish.
    pub shutdown_grace: Duration,
    /// Ping/pong frames per second per connection; 0 means no cap.
    pub max_control_frames_per_second: u32,
    pub refusal_mode: RefusalMode,
    /// Upper bound of the `retry_after` advised by 1001 closes.
    pub shutdown_reconnect_spread: Duration,
    /// 4009 after 90-100 % of this; zero means never.
    pub max_connection_age: Duration,
    /// Test-only fault injection: a shard panics registering this user.
    pub test_shard_panic_user: Option<String>,
    pub history: HistoryConfig,
}

/// History and recovery (SPEC-v2 §1, §2).
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// `None` with `--history-size 0`.
    pub store: Option<crate::history::HistorySettings>,
    pub recovery_max_events: u64,
    pub resume_timeout: Duration,
    /// Empty when last values are off (no rules, or history off).
    pub last_value_rules: Vec<crate::history::LastValueRule>,
    /// `--cluster-history`: in cluster mode, record on Redis (experimental).
    pub cluster: bool,
}

impl Config {
    /// Validates parsed arguments. `--dev` fills a missing secret and API
    /// key with random values (reported by `app` on stderr).
    pub(crate) fn from_args(args: ServeArgs) -> Result<Config, ConfigError> {
        let mut secret = args.jwt_secret.filter(|s| !s.is_empty());
        let mut api_key = args.api_key.filter(|s| !s.is_empty());
        if args.dev {
            secret.get_or_insert_with(random_secret);
            api_key.get_or_insert_with(random_secret);
        }
        if secret.is_none() && args.jwt_public_key.is_none() {
            return Err(ConfigError::new(
                "--jwt-secret",
                "required (or --jwt-public-key, or --dev for a generated one)",
            ));
        }
        let positive = |flag: &'static str, value: usize| {
            if value == 0 {
                Err(ConfigError::new(flag, "must be at least 1"))
            } else {
                Ok(value)
            }
        };
        positive("--max-connections", args.max_connections)?;
        positive("--max-connections-per-user", args.max_connections_per_user)?;
        let max_pending_connections = match args.max_pending_connections {
            Some(n) => positive("--max-pending-connections", n)?,
            None => (args.max_connections / 4).max(MIN_DEFAULT_PENDING),
        };
        positive("--rate-limit-messages", args.rate_limit_messages as usize)?;
        if args.max_message_size < 128 {
            return Err(ConfigError::new(
                "--max-message-size",
                "must be at least 128 bytes",
            ));
        }
        if args.max_queued_bytes < args.max_message_size {
            return Err(ConfigError::new(
                "--max-queued-bytes",
                "must be at least --max-message-size",
            ));
        }
        if args.test_shard_panic_user.is_some() && !args.enable_test_faults {
            return Err(ConfigError::new(
                "--test-shard-panic-user",
                "a test-only fault injection, refused unless --enable-test-faults is also given",
            ));
        }
        if args.backplane_queue_bytes < args.max_message_size {
            return Err(ConfigError::new(
                "--backplane-queue-bytes",
                "must be at least --max-message-size",
            ));
        }
        let shards = match args.shards {
            Some(n) if !(1..=256).contains(&n) => {
                return Err(ConfigError::new("--shards", "must be between 1 and 256"))
            }
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let webhook = webhook_config(args.webhook_url, args.webhook_ca_file, args.webhook_secret)?;
        if let Some(path) = &args.jwt_public_key {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--jwt-public-key",
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        let tls = match (args.tls_cert, args.tls_key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new("--tls-key", "required with --tls-cert"))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new("--tls-cert", "required with --tls-key"))
            }
            (Some(cert), Some(key)) => Some((cert, key)),
        };
        let redis_url = match args.redis_url.filter(|u| !u.is_empty()) {
            Some(url) => {
                if let Err(e) = redis::Client::open(url.as_str()) {
                    return Err(ConfigError::new(
                        "--redis-url",
                        format!("not a Redis URL (redis://HOST:PORT[/DB]): {e}"),
                    ));
                }
                Some(url)
            }
            None => None,
        };
        let node_id = args
            .node_id
            .filter(|s| !s.is_empty())
            .unwrap_or_else(random_node_id);
        if node_id.len() > 128 || node_id.chars().any(|c| c.is_control()) {
            return Err(ConfigError::new(
                "--node-id",
                "must be at most 128 characters, without control characters",
            ));
        }
        Ok(Config {
            listen: args.listen,
            auth: AuthConfig {
                secret,
                public_key_path: args.jwt_public_key,
                issuer: args.jwt_issuer,
                audience: args.jwt_audience,
                leeway: args.jwt_leeway,
            },
            api_key,
            dev: args.dev,
            limits: LimitsConfig {
                max_connections: args.max_connections,
                max_connections_per_user: args.max_connections_per_user,
                rate_limit_messages: args.rate_limit_messages,
                rate_limit_window: nonzero("--rate-limit-window", args.rate_limit_window)?,
                max_message_size: args.max_message_size,
                max_queued_bytes: args.max_queued_bytes,
            },
            timers: TimersConfig {
                heartbeat_interval: nonzero("--heartbeat-interval", args.heartbeat_interval)?,
                connection_timeout: nonzero("--connection-timeout", args.connection_timeout)?,
                cleanup_interval: nonzero("--cleanup-interval", args.cleanup_interval)?,
                token_expiring_notice: args.token_expiring_notice,
                token_refresh_grace: args.token_refresh_grace,
            },
            shards,
            redis_url,
            backplane_queue_bytes: args.backplane_queue_bytes,
            node_id,
            webhook,
            log_format: args.log_format,
            tls,
            conformance_echo: args.conformance_echo,
            header_read_timeout: nonzero("--header-read-timeout", args.header_read_timeout)?,
            max_pending_connections,
            connection_rate_limit: args.connection_rate_limit,
            drain_time: if args.drain_time > Duration::from_secs(5) {
                return Err(ConfigError::new(
                    "--drain-time",
                    "at most 5s, so shutdown still ends within 10 seconds",
                ));
            } else {
                args.drain_time
            },
            shutdown_grace: Duration::from_secs(3),
            max_control_frames_per_second: args.max_control_frames_per_second,
            refusal_mode: args.refusal_mode,
            shutdown_reconnect_spread: args.shutdown_reconnect_spread,
            max_connection_age: args.max_connection_age,
            test_shard_panic_user: args.test_shard_panic_user,
            history: history_config(
                args.history_size,
                args.history_ttl,
                args.history_meta_ttl,
                args.history_max_bytes,
                args.recovery_max_events,
                args.resume_timeout,
                &args.last_value_events,
                args.last_value_ttl,
                args.cluster_history,
            )?,
        })
    }

    /// A configuration for embedding and tests: HS256 with `secret`, API
    /// key `api_key`, an OS-chosen port, and SPEC defaults elsewhere.
    pub fn embedded(secret: &str, api_key: &str) -> Config {
        let args = ServeArgs::parse_from_defaults();
        let mut config = Config::from_args(ServeArgs {
            jwt_secret: Some(secret.into()),
            api_key: Some(api_key.into()),
            ..args
        })
        .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"));
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }
}

fn nonzero(flag: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        Err(ConfigError::new(flag, "must be longer than 0s"))
    } else {
        Ok(value)
    }
}

#[allow(clippy::too_many_arguments)]
fn history_config(
    size: usize,
    ttl: Duration,
    meta_ttl: Duration,
    max_bytes: usize,
    recovery_max_events: u64,
    resume_timeout: Duration,
    last_value_events: &str,
    last_value_ttl: Duration,
    cluster: bool,
) -> Result<HistoryConfig, ConfigError> {
    let rules = crate::history::LastValueRule::parse_list(last_value_events)
        .map_err(|e| ConfigError::new("--last-value-events", e))?;
    let store = (size > 0)
        .then(|| -> Result<_, ConfigError> {
            Ok(crate::history::HistorySettings {
                size,
                ttl: nonzero("--history-ttl", ttl)?,
                meta_ttl: nonzero("--history-meta-ttl", meta_ttl)?,
                max_bytes,
                last_value_ttl: nonzero("--last-value-ttl", last_value_ttl)?,
            })
        })
        .transpose()?;
    Ok(HistoryConfig {
        last_value_rules: if store.is_some() { rules } else { Vec::new() },
        store,
        recovery_max_events,
        resume_timeout: nonzero("--resume-timeout", resume_timeout)?,
        cluster,
    })
}

impl ServeArgs {
    fn parse_from_defaults() -> ServeArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Only::parse_from(["wsgate"]).serve
    }
}

fn webhook_config(
    url: Option<String>,
    ca_file: Option<PathBuf>,
    secret: Option<String>,
) -> Result<Option<WebhookConfig>, ConfigError> {
    let secret = secret.filter(|s| !s.is_empty());
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        if ca_file.is_some() {
            return Err(ConfigError::new(
                "--webhook-ca-file",
                "requires --webhook-url",
            ));
        }
        if secret.is_some() {
            return Err(ConfigError::new(
                "--webhook-secret",
                "requires --webhook-url",
            ));
        }
        return Ok(None);
    };
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ConfigError::new("--webhook-url", format!("not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(ConfigError::new(
            "--webhook-url",
            "must be an http:// or https:// URL",
        ));
    }
    let extra_roots = match ca_file {
        Some(path) => read_ca_file(&path)?,
        None => Vec::new(),
    };
    Ok(Some(WebhookConfig {
        url: uri,
        secret,
        extra_roots,
    }))
}

/// Every certificate of a PEM file, each checked to be a usable trust anchor.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| {
        ConfigError::new("--webhook-ca-file", format!("{}: {reason}", path.display()))
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| bad(e.to_string()))?;
    if certificates.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    let mut store = rustls::RootCertStore::empty();
    for certificate in &certificates {
        store
            .add(certificate.clone())
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(certificates)
}
/// The floor of the derived `--max-pending-connections`: room for a
/// backend's connection pool next to handshakes even on a small node.
const MIN_DEFAULT_PENDING: usize = 64;

fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_node_id() -> String {
    format!("node-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut full = vec!["wsgate", "serve"];
        full.extend_from_slice(args);
        let Cli {
            command: Command::Serve(serve),
        } = Cli::try_parse_from(full).expect("clap")
        else {
            panic!("not serve")
        };
        Config::from_args(*serve)
    }

    #[test]
    fn spec_defaults() {
        let config = parse(&["--jwt-secret", "s"]).expect("valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.limits.max_connections, 1000);
        assert_eq!(config.limits.max_connections_per_user, 3);
        assert_eq!(config.limits.rate_limit_messages, 100);
        assert_eq!(config.limits.rate_limit_window, Duration::from_secs(60));
        assert_eq!(config.timers.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(config.timers.connection_timeout, Duration::from_secs(60));
        assert_eq!(config.timers.token_expiring_notice, Duration::from_secs(60));
        assert_eq!(config.timers.token_refresh_grace, Duration::ZERO);
        assert_eq!(config.limits.max_message_size, 65536);
        assert_eq!(config.limits.max_queued_bytes, 1_048_576);
        assert_eq!(config.max_pending_connections, 250);
        let small = parse(&["--jwt-secret", "s", "--max-connections", "10"]).expect("valid");
        assert_eq!(small.max_pending_connections, 64);
        let set = parse(&["--jwt-secret", "s", "--max-pending-connections", "7"]).expect("valid");
        assert_eq!(set.max_pending_connections, 7);
        let zero = parse(&["--jwt-secret", "s", "--max-pending-connections", "0"]);
        assert_eq!(zero.expect_err("zero").flag, "--max-pending-connections");
    }

    #[test]
    fn webhook_flags() {
        let config = parse(&[
            "--jwt-secret",
            "s",
            "--webhook-url",
            "https://hooks.example/x",
        ])
        .expect("https is accepted");
        let webhook = config.webhook.expect("configured");
        assert_eq!(webhook.url.scheme_str(), Some("https"));
        assert!(webhook.secret.is_none() && webhook.extra_roots.is_empty());
        let flag = |args: &[&str]| {
            let mut full = vec!["--jwt-secret", "s"];
            full.extend_from_slice(args);
            parse(&full).expect_err("invalid").flag
        };
        assert_eq!(flag(&["--webhook-url", "ftp://h/x"]), "--webhook-url");
        assert_eq!(flag(&["--webhook-secret", "k"]), "--webhook-secret");
        assert_eq!(
            flag(&["--webhook-ca-file", "/nonexistent"]),
            "--webhook-ca-file"
        );
        assert_eq!(
            flag(&[
                "--webhook-url",
                "https://h/x",
                "--webhook-ca-file",
                "/nonexistent"
            ]),
            "--webhook-ca-file"
        );
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(parse(&[]).expect_err("no secret").flag, "--jwt-secret");
        assert_eq!(
            parse(&["--jwt-secret", "s", "--max-connections", "0"])
                .expect_err("zero")
                .flag,
            "--max-connections"
        );
        assert!(parse(&["--dev"]).is_ok());
        let e = parse(&["--jwt-secret", "s", "--heartbeat-interval", "0s"]).expect_err("zero");
        assert_eq!(e.flag, "--heartbeat-interval");
    }

    #[test]
    fn cluster_flags() {
        let config = parse(&["--jwt-secret", "s"]).expect("valid");
        assert!(config.redis_url.is_none());
        assert!(config.node_id.starts_with("node-"));
        let config = parse(&[
            "--jwt-secret",
            "s",
            "--redis-url",
            "redis://127.0.0.1:6390/0",
            "--node-id",
            "a",
        ])
        .expect("valid");
        assert_eq!(
            config.redis_url.as_deref(),
            Some("redis://127.0.0.1:6390/0")
        );
        assert_eq!(config.node_id, "a");
        let e = parse(&["--jwt-secret", "s", "--redis-url", "http://x"]).expect_err("scheme");
        assert_eq!(e.flag, "--redis-url");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn every_serve_flag_is_documented_in_help() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        let undocumented: Vec<_> = serve
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != "help")
            .filter(|a| a.get_help().is_none_or(|h| h.to_string().trim().is_empty()))
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(undocumented.is_empty(), "no help text: {undocumented:?}");
        // And every one can be set from the environment.
        let no_env: Vec<_> = serve
            .get_arguments()
            .filter(|a| a.get_id() != "help" && a.get_env().is_none())
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(no_env.is_empty(), "no WSGATE_ variable: {no_env:?}");
    }
}
