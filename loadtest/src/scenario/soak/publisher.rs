//! The soak's publisher: one broadcast every `--publish-interval` of a
//! random event and size, 60% to its subscribers, 25% to a few base users
//! (plus an unknown one), 15% to everyone; each registered in the
//! [`super::book::Book`] before it is sent, so deliveries can be checked.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::book::{To, EVENTS};
use super::rng::Rng;
use super::Shared;
use crate::ctl::tally;
use crate::http::{self, HttpClient};
use crate::proto::{self, mono_ns};
use crate::scenario::EVENTS_PATH;

/// Broadcast payload (`data`) sizes, bytes.
const PAYLOAD_MIN: u64 = 100;
const PAYLOAD_MAX: u64 = 4096;
/// Users named in a user-targeted broadcast (plus one unknown id).
const MAX_USERS_PER_PUBLISH: u64 = 8;

/// What the publisher sent, by target, and what failed.
#[derive(Default)]
pub struct PubTotals {
    pub ok: u64,
    pub subscribers: u64,
    pub users: u64,
    pub all: u64,
    pub failed: u64,
    /// `delivered` below the number of base connections it was addressed to.
    pub delivered_short: u64,
    pub errors: BTreeMap<String, u64>,
}

/// Publishes until `stop` is set.
pub async fn publisher(sh: Arc<Shared>) -> PubTotals {
    let cli = sh.cli.clone();
    let mut http = HttpClient::for_publishing(&cli, &sh.target);
    let mut rng = Rng::new(mono_ns() ^ 0x5eed);
    let mut tot = PubTotals::default();
    let n = cli.connections as usize;
    let mut tick = tokio::time::interval(cli.publish_interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Bounded: stops when `stop` is set; each publish has a timeout.
    while !sh.stopped() {
        tick.tick().await;
        if sh.stopped() {
            break;
        }
        let r = rng.below(100);
        let ev = rng.below(EVENTS.len() as u64) as usize;
        let (to, extra) = if r < 60 {
            (To::Subscribers(ev), String::new())
        } else if r < 85 {
            let k = 1 + rng.below(MAX_USERS_PER_PUBLISH) as usize;
            let conns: Vec<u32> = rng.distinct(k, n).into_iter().map(|c| c as u32).collect();
            let mut users: Vec<String> = conns.iter().map(|c| sh.base_user(*c as usize)).collect();
            // An id nobody holds: skipped by the server.
            users.push(format!("lt-{}-nobody-{}", sh.run_id, rng.below(1_000_000)));
            let extra = format!(r#","users":{}"#, json!(users));
            (To::Users(conns), extra)
        } else {
            (To::All, r#","all":true"#.to_string())
        };
        let kind = match to {
            To::Subscribers(_) => 0,
            To::Users(_) => 1,
            _ => 2,
        };
        let addressed = {
            let b = sh.book();
            (0..n).filter(|c| b.alive[*c] && to.expects(*c)).count() as u64
        };
        let seq = sh.book().register(to);
        let size = (PAYLOAD_MIN + rng.below(PAYLOAD_MAX - PAYLOAD_MIN + 1)) as usize;
        let body = format!(
            r#"{{"type":"{}","data":{}{extra}}}"#,
            EVENTS[ev],
            proto::broadcast_data(seq, mono_ns(), size)
        );
        match http.post_json(EVENTS_PATH, &body).await {
            Ok(r) if r.status == 200 => {
                sh.book().accepted(seq);
                tot.ok += 1;
                match kind {
                    0 => tot.subscribers += 1,
                    1 => tot.users += 1,
                    _ => tot.all += 1,
                }
                if http::delivered(&r.body).is_some_and(|d| d < addressed) {
                    tot.delivered_short += 1;
                }
                sh.broadcasts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                sh.book().failed(seq);
                tot.failed += 1;
                tally(&mut tot.errors, format!("publish: HTTP {}", r.status));
            }
            Err(e) => {
                sh.book().failed(seq);
                tot.failed += 1;
                tally(
                    &mut tot.errors,
                    format!("publish: {e:#}").chars().take(80).collect(),
                );
            }
        }
    }
    tot
}
