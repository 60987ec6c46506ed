//! The scenarios, one module each. Each module owns its whole scenario: the
//! coordinating process's half (`run`: publish, time, sample the server,
//! build the result rows) and, where workers hold the connections, the
//! worker's half (`work`). `subscribers` is the worker half that connect,
//! fanout and throughput share: N subscribed connections accounting every
//! delivery. Soak runs entirely in the coordinating process.
//!
//! The process plumbing is elsewhere and knows no scenario: [`crate::links`]
//! (starting and talking to workers), [`crate::worker`] (a worker's pipe end),
//! [`crate::ctl`] (the messages), [`crate::report`] (rows and output).

pub mod churn;
pub mod connect;
pub mod fanout;
pub mod ping;
pub mod resume_storm;
pub mod soak;
pub mod subscribers;
pub mod throughput;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use serde_json::json;
use tokio::sync::mpsc;

use crate::cli::{Cli, Scenario, Target};
use crate::ctl::ToWorker;
use crate::procfs::{loadavg_1m, rss_kib};
use crate::proto::mono_ns;
use crate::report::Row;
use crate::worker::Ctx;

/// Where broadcasts are published.
pub const EVENTS_PATH: &str = "/api/v1/events";

/// The fields every row starts with.
pub struct Base {
    loadavg: Option<f64>,
    scenario: Scenario,
    target: String,
    procs: u64,
    connections: u64,
}

impl Base {
    pub fn row(&self) -> Row {
        let mut r = Row::new();
        r.push("scenario", json!(self.scenario.name()));
        r.push("target", json!(self.target));
        r.push("procs", json!(self.procs));
        r.push("connections", json!(self.connections));
        // 1-minute load average when the run started: above ~0.5 on this 2-core box,
        // something else (a build) shares the cores and the figures are not clean.
        r.push("loadavg_1m_at_start", json!(self.loadavg));
        r
    }
}

/// Runs the scenario in the coordinating process; returns result rows.
pub async fn run(cli: Arc<Cli>, target: Target) -> Result<Vec<Row>> {
    let run_id = cli
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{:x}", mono_ns() ^ u64::from(std::process::id())));
    let base = Base {
        loadavg: loadavg_1m(),
        scenario: cli.scenario,
        target: cli.target.clone(),
        procs: cli.procs,
        connections: cli.connections,
    };
    let deadline = Instant::now() + cli.timeout;
    match cli.scenario {
        Scenario::Connect => connect::run(&cli, &target, &run_id, &base, deadline).await,
        Scenario::Fanout => fanout::run(&cli, &target, &run_id, &base, deadline).await,
        Scenario::Throughput => throughput::run(&cli, &target, &run_id, &base, deadline).await,
        Scenario::Ping => ping::run(&cli, &target, &run_id, &base, deadline).await,
        Scenario::Churn => churn::run(&cli, &target, &run_id, &base, deadline).await,
        Scenario::Soak => soak::run(&cli, &target, &run_id, base.row(), deadline).await,
        Scenario::ResumeStorm => resume_storm::run(&cli, &target, &run_id, &base, deadline).await,
    }
}

/// Runs the scenario's worker half until Stop, EOF or the global timeout.
pub async fn work(ctx: Arc<Ctx>, cmds: mpsc::UnboundedReceiver<ToWorker>) -> Result<()> {
    match ctx.cli.scenario {
        Scenario::Churn => churn::work(ctx, cmds).await,
        Scenario::Ping => ping::work(ctx, cmds).await,
        Scenario::ResumeStorm => resume_storm::work(ctx, cmds).await,
        Scenario::Connect | Scenario::Fanout | Scenario::Throughput => {
            subscribers::work(ctx, cmds).await
        }
        Scenario::Soak => Err(anyhow!(
            "soak runs in the coordinating process, not in workers"
        )),
    }
}

/// The server's VmRSS in KiB, with `--server-pid`.
fn rss(cli: &Cli) -> Option<u64> {
    cli.server_pid.and_then(rss_kib)
}
