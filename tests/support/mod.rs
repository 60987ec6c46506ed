//! Shared helpers for the black-box integration suite: a real `wsgate`
//! process on port 0 ([`TestServer`]), a blocking WebSocket client with
//! timeouts ([`WsClient`]), hand-made HTTP requests ([`raw`]), JWT minting,
//! a mock webhook receiver and Prometheus text parsing.
//!
//! Nothing here waits on a fixed sleep for an event: every wait is a read
//! with a deadline or a poll with a deadline.

#![allow(dead_code)]

pub mod bystander;
pub mod envelope;
pub mod frames;
pub mod jwt;
pub mod metrics;
pub mod mock_http;
pub mod pki;
pub mod raw;
pub mod redis;
pub mod server;
pub mod ws;

pub use envelope::{assert_envelope, is_timestamp};
pub use jwt::{alg_none_token, now_secs, sign_hs256};
pub use server::{run_cli, CliOutput, TestServer};
pub use ws::{Incoming, TokenVia, WsClient};

use std::time::{Duration, Instant};

/// Default time a test waits for an expected event before failing.
pub const WAIT: Duration = Duration::from_secs(5);

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns
/// whether it held. For states only observable by polling (an API listing).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A random alphanumeric string (secrets, ids, markers).
pub fn random_string(len: usize) -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
