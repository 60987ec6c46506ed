//! Black-box integration suite: every test starts its own `wsgate serve`
//! on port 0 and drives it over real sockets (SPEC sections 1-4).

mod support;

#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/closes.rs"]
mod closes;
#[path = "integration/conformance.rs"]
mod conformance;
#[path = "integration/console.rs"]
mod console;
#[path = "integration/envelope.rs"]
mod envelope;
#[path = "integration/handshake.rs"]
mod handshake;
#[path = "integration/history.rs"]
mod history;
#[path = "integration/hostile.rs"]
mod hostile;
#[path = "integration/isolation.rs"]
mod isolation;
#[path = "integration/keys.rs"]
mod keys;
#[path = "integration/logging.rs"]
mod logging;
#[path = "integration/messages.rs"]
mod messages;
#[path = "integration/metrics.rs"]
mod metrics;
#[path = "integration/paths.rs"]
mod paths;
#[path = "integration/pre_upgrade.rs"]
mod pre_upgrade;
#[path = "integration/rate_limit.rs"]
mod rate_limit;
#[path = "integration/refresh.rs"]
mod refresh;
#[path = "integration/seed.rs"]
mod seed;
#[path = "integration/server_api.rs"]
mod server_api;
#[path = "integration/shard_integrity.rs"]
mod shard_integrity;
#[path = "integration/shutdown.rs"]
mod shutdown;
#[path = "integration/storms.rs"]
mod storms;
#[path = "integration/timeouts.rs"]
mod timeouts;
#[path = "integration/tls.rs"]
mod tls;
#[path = "integration/webhook.rs"]
mod webhook;
