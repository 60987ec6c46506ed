//! A worker's side of the control pipe: reads [`ToWorker`] commands from its
//! input, writes [`FromWorker`] lines to its output, and holds the [`Ctx`]
//! the scenario's worker half uses to open connections (source address, user
//! id, token, target). Also the helpers those halves share: the handshake
//! [`Outcome`]s and the totals of the closed-loop scenarios. Which loop runs
//! on the connections is `scenario::work`'s choice.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::cli::{Cli, Target};
use crate::ctl::{tally, FromWorker, ToWorker};
use crate::proto;
use crate::stats::{self, Hist};
use crate::ws;

/// What a worker's connection tasks share: the flags, where to connect, who
/// this worker is, and the way to its report line.
pub struct Ctx {
    pub cli: Arc<Cli>,
    pub target: Target,
    /// Where connections go (round-robin); empty means `target`.
    pub ws_targets: Vec<Target>,
    pub index: u64,
    pub count: u64,
    pub run_id: String,
    /// To the report line; [`Ctx::send`] for one-off reports.
    pub out: mpsc::UnboundedSender<FromWorker>,
}

impl Ctx {
    pub fn source(&self, conn: u64) -> Ipv4Addr {
        let ips = &self.cli.source_ips.0;
        ips[((conn + self.index) % ips.len() as u64) as usize]
    }

    pub fn user(&self, conn: u64, cycle: u64) -> String {
        format!("lt-{}-{}-{}-{}", self.run_id, self.index, conn, cycle)
    }

    /// Connects connection `conn` (in its `cycle`) as its own user.
    pub async fn open(&self, conn: u64, cycle: u64) -> Result<(ws::Ws, Duration)> {
        let timeout = self.cli.op_timeout.max(Duration::from_secs(10));
        self.open_query(conn, cycle, "", timeout).await
    }

    /// [`Ctx::open`] with a query string after the token (`?resume=1`) and
    /// its own handshake timeout.
    pub async fn open_query(
        &self,
        conn: u64,
        cycle: u64,
        query: &str,
        timeout: Duration,
    ) -> Result<(ws::Ws, Duration)> {
        let token = proto::token(&self.cli.jwt_secret, &self.user(conn, cycle))?;
        let target = match self.ws_targets.len() {
            0 => &self.target,
            n => &self.ws_targets[((conn + self.index) % n as u64) as usize],
        };
        ws::open_query(
            target.addr,
            &target.host,
            self.source(conn),
            &token,
            query,
            timeout,
        )
        .await
    }

    pub fn send(&self, m: FromWorker) {
        let _ = self.out.send(m);
    }
}

/// Runs one worker until Stop, EOF on `input`, or the global timeout.
pub async fn run<R, W>(
    cli: Arc<Cli>,
    target: Target,
    index: u64,
    count: u64,
    run_id: String,
    input: R,
    mut output: W,
) -> Result<()>
where
    R: AsyncBufRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<FromWorker>();
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let Ok(mut line) = serde_json::to_string(&m) else {
                continue;
            };
            line.push('\n');
            if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    let ws_targets = cli
        .ws_urls
        .iter()
        .map(|u| crate::cli::parse_target(u))
        .collect::<Result<Vec<_>>>()?;
    let ctx = Arc::new(Ctx {
        cli: cli.clone(),
        target,
        ws_targets,
        index,
        count,
        run_id,
        out: out_tx,
    });
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel::<ToWorker>();
    tokio::spawn(async move {
        let mut lines = input.lines();
        // Bounded: EOF or an error ends it; each line is one command.
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<ToWorker>(&line) {
                Ok(c) => {
                    if cmd_tx.send(c).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("worker: bad command line: {e}"),
            }
        }
        // EOF: the coordinator is gone; dropping cmd_tx tells the worker to stop.
    });
    let res = crate::scenario::work(ctx.clone(), cmd_rx).await;
    drop(ctx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    res
}

/// How the handshake (and subscribe) of one connection went.
pub enum Outcome {
    Up(Duration),
    Failed(String),
}

/// Collects one [`Outcome`] per connection (or until every sender is gone):
/// connected, failed, their error tally and the handshake histogram.
pub async fn collect_ups(
    rx: &mut mpsc::UnboundedReceiver<Outcome>,
    n: u64,
) -> (u64, u64, BTreeMap<String, u64>, Hist) {
    let mut hist = stats::new_hist();
    let (mut up, mut failed) = (0, 0);
    let mut errors = BTreeMap::new();
    while up + failed < n {
        match rx.recv().await {
            Some(Outcome::Up(d)) => {
                up += 1;
                hist.saturating_record((d.as_nanos() as u64).max(1));
            }
            Some(Outcome::Failed(e)) => {
                failed += 1;
                tally(&mut errors, e);
            }
            None => break,
        }
    }
    (up, failed, errors, hist)
}

/// A worker's totals in the closed-loop scenarios (ping, churn), added to by
/// every connection task when it ends.
#[derive(Default)]
pub struct LoopTotals {
    pub hist: Option<Hist>,
    pub ops: u64,
    pub lost: u64,
    pub unexpected: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub errors: BTreeMap<String, u64>,
    pub open: u64,
}
