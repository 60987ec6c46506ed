//! The coordinating process's side of its workers: starts them (in this
//! process over a pair of pipes with `--procs 1`, else as child processes of
//! this binary with the same argv plus the hidden worker flags), sends them
//! [`ToWorker`] commands, collects their [`FromWorker`] lines, measures the
//! CPU they (and the server) use, and stops them. Knows no scenario: what
//! the lines mean for a run is the business of `scenario::*`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::cli::{Cli, Target};
use crate::ctl::{add_errors, FromWorker, ToWorker, WorkerResult};
use crate::procfs::cpu_s;
use crate::report::{round2, Row};
use crate::stats::{self, Hist};
use crate::worker;

pub struct Links {
    writers: Vec<Box<dyn AsyncWrite + Unpin + Send>>,
    rx: mpsc::UnboundedReceiver<(usize, Option<FromWorker>)>,
    children: Vec<Child>,
    pub count: usize,
}

impl Links {
    pub async fn send_all(&mut self, cmd: &ToWorker) -> Result<()> {
        let mut line = serde_json::to_string(cmd)?;
        line.push('\n');
        for w in &mut self.writers {
            // A worker that is gone shows up as a missing report; keep going.
            let _ = w.write_all(line.as_bytes()).await;
            let _ = w.flush().await;
        }
        Ok(())
    }

    pub async fn recv_until(&mut self, deadline: Instant) -> Option<(usize, Option<FromWorker>)> {
        tokio::time::timeout_at(deadline.into(), self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Collects one Ready per worker.
    pub async fn readies(&mut self, deadline: Instant) -> Result<Vec<Ready>> {
        let mut out: Vec<Option<Ready>> = (0..self.count).map(|_| None).collect();
        while out.iter().any(Option::is_none) {
            match self.recv_until(deadline).await {
                Some((
                    i,
                    Some(FromWorker::Ready {
                        connected,
                        failed,
                        connect_s,
                        hist,
                        errors,
                    }),
                )) => {
                    out[i] = Some(Ready {
                        connected,
                        failed,
                        connect_s,
                        hist,
                        errors,
                    });
                }
                Some((i, None)) => bail!("worker {i} exited before it was ready"),
                Some(_) => {}
                None => bail!("timed out waiting for the workers to connect"),
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Collects one Result per worker (missing ones are reported as errors).
    pub async fn results(&mut self, deadline: Instant) -> Vec<WorkerResult> {
        let mut out: Vec<Option<WorkerResult>> = (0..self.count).map(|_| None).collect();
        while out.iter().any(Option::is_none) {
            match self.recv_until(deadline).await {
                Some((i, Some(FromWorker::Result(r)))) => out[i] = Some(r),
                Some((i, None)) => {
                    if out[i].is_none() {
                        out[i] = Some(missing_result(&format!(
                            "worker {i} exited without a result"
                        )));
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| missing_result("worker result timed out")))
            .collect()
    }

    /// CPU seconds of this process and the worker children.
    pub fn gen_cpu(&self) -> f64 {
        let me = cpu_s(std::process::id()).unwrap_or(0.0);
        me + self
            .children
            .iter()
            .filter_map(|c| c.id())
            .filter_map(cpu_s)
            .sum::<f64>()
    }

    pub async fn shutdown(mut self) {
        let _ = self.send_all(&ToWorker::Stop).await;
        self.writers.clear(); // EOF on the workers' stdin
        for c in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(10), c.wait())
                .await
                .is_err()
            {
                let _ = c.start_kill();
            }
        }
        // In-process worker: give it a moment to close its sockets.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some((_, m)) = self.recv_until(deadline).await {
            if m.is_none() && self.children.is_empty() {
                break;
            }
        }
    }
}

/// The result of a worker that did not report one: an error named `why`.
pub fn missing_result(why: &str) -> WorkerResult {
    let mut r = WorkerResult::default();
    r.errors.insert(why.to_string(), 1);
    r
}

pub struct Ready {
    pub connected: u64,
    pub failed: u64,
    pub connect_s: f64,
    pub hist: String,
    pub errors: BTreeMap<String, u64>,
}

/// Starts P workers: in this process when P = 1, else child processes of this binary.
pub async fn spawn(cli: &Arc<Cli>, target: &Target, run_id: &str) -> Result<Links> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut writers: Vec<Box<dyn AsyncWrite + Unpin + Send>> = Vec::new();
    let mut children = Vec::new();
    let p = cli.procs as usize;
    if p == 1 {
        // One pipe per direction, so that closing one side is an EOF on the other
        // (split halves of one duplex keep each other alive).
        let (cw, wr) = tokio::io::duplex(1 << 20);
        let (ww, cr) = tokio::io::duplex(1 << 20);
        let (cli2, target2, id) = (cli.clone(), target.clone(), run_id.to_string());
        tokio::spawn(async move {
            if let Err(e) = worker::run(cli2, target2, 0, 1, id, BufReader::new(wr), ww).await {
                eprintln!("worker: {e:#}");
            }
        });
        forward_lines(0, BufReader::new(cr), tx.clone());
        writers.push(Box::new(cw));
    } else {
        let exe = std::env::current_exe().context("current_exe")?;
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        for i in 0..p {
            let mut child = Command::new(&exe)
                .args(&args)
                .arg("--worker-index")
                .arg(i.to_string())
                .arg("--worker-count")
                .arg(p.to_string())
                .arg("--run-id")
                .arg(run_id)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("spawn worker {i}"))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow!("worker stdout"))?;
            let stdin = child.stdin.take().ok_or_else(|| anyhow!("worker stdin"))?;
            forward_lines(i, BufReader::new(stdout), tx.clone());
            writers.push(Box::new(stdin));
            children.push(child);
        }
    }
    Ok(Links {
        writers,
        rx,
        children,
        count: p,
    })
}

fn forward_lines<R>(
    i: usize,
    r: BufReader<R>,
    tx: mpsc::UnboundedSender<(usize, Option<FromWorker>)>,
) where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = r.lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<FromWorker>(&line) {
                Ok(m) => {
                    if tx.send((i, Some(m))).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!(
                    "worker {i}: unreadable line ({e}): {}",
                    line.chars().take(120).collect::<String>()
                ),
            }
        }
        let _ = tx.send((i, None));
    });
}

/// CPU use of the server and of the generator processes over a measured span.
pub struct CpuMeter {
    server: Option<f64>,
    gen: f64,
    t: Instant,
}

impl CpuMeter {
    pub fn start(cli: &Cli, links: &Links) -> Self {
        Self {
            server: cli.server_pid.and_then(cpu_s),
            gen: links.gen_cpu(),
            t: Instant::now(),
        }
    }

    /// Adds `server_cpu_pct` and `gen_cpu_pct` (100 = one core busy all
    /// along), and `server_cpu_s` (the server's CPU seconds over the span,
    /// for CPU per delivery).
    pub fn finish(&self, cli: &Cli, links: &Links, row: &mut Row) {
        let wall = self.t.elapsed().as_secs_f64().max(1e-9);
        let server_s = match (self.server, cli.server_pid.and_then(cpu_s)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        row.push(
            "server_cpu_pct",
            json!(server_s.map(|s| round2(s / wall * 100.0))),
        );
        row.push(
            "server_cpu_s",
            json!(server_s.map(|s| (s * 1000.0).round() / 1000.0)),
        );
        row.push(
            "gen_cpu_pct",
            json!(round2((links.gen_cpu() - self.gen) / wall * 100.0)),
        );
    }
}

/// The workers' `Ready` reports, summed.
pub struct Merged {
    pub connected: u64,
    pub failed: u64,
    pub connect_s: f64,
    pub hist: Hist,
    pub errors: BTreeMap<String, u64>,
}

impl Merged {
    /// The connect columns every worker scenario reports, `count` naming
    /// the connected count (`subscribers`, `connected`).
    pub fn push_connect(&self, row: &mut Row, count: &str) {
        row.push(count, json!(self.connected));
        row.push("connect_failed", json!(self.failed));
        row.push("connect_s", json!(round2(self.connect_s)));
    }
}

/// Starts the workers and waits until each has connected its share.
pub async fn start_workers(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    deadline: Instant,
) -> Result<(Links, Vec<Ready>, Merged)> {
    let mut links = spawn(cli, target, run_id).await?;
    let readies = links.readies(deadline).await?;
    let merged = merge_readies(&readies)?;
    Ok((links, readies, merged))
}

pub fn merge_readies(rs: &[Ready]) -> Result<Merged> {
    let mut errors = BTreeMap::new();
    for r in rs {
        add_errors(&mut errors, &r.errors);
    }
    Ok(Merged {
        connected: rs.iter().map(|r| r.connected).sum(),
        failed: rs.iter().map(|r| r.failed).sum(),
        connect_s: rs.iter().map(|r| r.connect_s).fold(0.0, f64::max),
        hist: stats::merge_encoded(rs.iter().map(|r| r.hist.as_str()))?,
        errors,
    })
}
