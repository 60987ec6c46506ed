//! The coordinating side: starts the workers (in-process or as child processes),
//! publishes, samples the server's RSS, merges the workers' reports into rows.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::cli::{Cli, Scenario, Target};
use crate::ctl::{add_errors, merge_results, FromWorker, ToWorker, WorkerResult};
use crate::http::{self, HttpClient};
use crate::proto::{self, mono_ns};
use crate::report::Row;
use crate::stats::{self, Hist};
use crate::worker;

const EVENTS_PATH: &str = "/api/v1/events";

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

    async fn recv_until(&mut self, deadline: Instant) -> Option<(usize, Option<FromWorker>)> {
        tokio::time::timeout_at(deadline.into(), self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Collects one Ready per worker.
    async fn readies(&mut self, deadline: Instant) -> Result<Vec<Ready>> {
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
    async fn results(&mut self, deadline: Instant) -> Vec<WorkerResult> {
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

fn missing_result(why: &str) -> WorkerResult {
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

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
pub fn cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&s)
}

pub fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // fields after "(comm)": state is field 3; utime and stime are fields 14 and 15
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some((ut + st) / hz)
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

    /// Adds `server_cpu_pct` and `gen_cpu_pct` (100 = one core busy all along).
    pub fn finish(&self, cli: &Cli, links: &Links, row: &mut Row) {
        let wall = self.t.elapsed().as_secs_f64().max(1e-9);
        let server = match (self.server, cli.server_pid.and_then(cpu_s)) {
            (Some(a), Some(b)) => Some(round2((b - a) / wall * 100.0)),
            _ => None,
        };
        row.push("server_cpu_pct", json!(server));
        row.push(
            "gen_cpu_pct",
            json!(round2((links.gen_cpu() - self.gen) / wall * 100.0)),
        );
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss(&s)
}

pub fn parse_vmrss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

struct Base {
    loadavg: Option<f64>,
    scenario: Scenario,
    target: String,
    procs: u64,
    connections: u64,
}

impl Base {
    fn row(&self) -> Row {
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

struct Merged {
    connected: u64,
    failed: u64,
    connect_s: f64,
    hist: Hist,
    errors: BTreeMap<String, u64>,
}

/// Starts the workers and waits until each has connected its share.
async fn start_workers(
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

fn merge_readies(rs: &[Ready]) -> Result<Merged> {
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

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs the scenario; returns result rows.
pub async fn run(cli: Arc<Cli>, target: Target) -> Result<Vec<Row>> {
    let run_id = cli
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{:x}", mono_ns() ^ u64::from(std::process::id())));
    let base = Base {
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok())),
        scenario: cli.scenario,
        target: cli.target.clone(),
        procs: cli.procs,
        connections: cli.connections,
    };
    let deadline = Instant::now() + cli.timeout;
    match cli.scenario {
        Scenario::Connect => connect(&cli, &target, &run_id, &base, deadline).await,
        Scenario::Fanout => fanout(&cli, &target, &run_id, &base, deadline).await,
        Scenario::Throughput => throughput(&cli, &target, &run_id, &base, deadline).await,
        Scenario::Ping => ping(&cli, &target, &run_id, &base, deadline).await,
        Scenario::Churn => churn(&cli, &target, &run_id, &base, deadline).await,
        Scenario::Soak => crate::soak::run(&cli, &target, &run_id, base.row(), deadline).await,
    }
}

fn rss(cli: &Cli) -> Option<u64> {
    cli.server_pid.and_then(rss_kib)
}

fn errors_json(e: &BTreeMap<String, u64>) -> Value {
    json!(e)
}

async fn connect(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let rss0 = rss(cli);
    let mut links = spawn(cli, target, run_id).await?;
    let cpu = CpuMeter::start(cli, &links);
    let readies = links.readies(deadline).await?;
    let rss1 = rss(cli);
    let Merged {
        connected,
        failed,
        connect_s,
        hist,
        errors,
    } = merge_readies(&readies)?;
    let mut row = base.row();
    row.push("connected", json!(connected));
    row.push("failed", json!(failed));
    row.push("connect_s", json!(round2(connect_s)));
    row.push(
        "handshakes_per_s",
        json!(round2(connected as f64 / connect_s.max(1e-9))),
    );
    row.push_summary("handshake", &stats::summarize(&hist));
    row.push("rss_before_kib", json!(rss0));
    row.push("rss_after_kib", json!(rss1));
    let per_conn = match (rss0, rss1) {
        (Some(a), Some(b)) if connected > 0 => {
            Some(round2((b as f64 - a as f64) / connected as f64))
        }
        _ => None,
    };
    row.push("rss_per_conn_kib", json!(per_conn));
    cpu.finish(cli, &links, &mut row);
    row.push("connect_errors", errors_json(&errors));
    row.set_counts(0, 0, failed);
    if let Some(hold) = cli.hold {
        links
            .send_all(&ToWorker::Go {
                ms: hold.as_millis() as u64,
                cycles: None,
            })
            .await?;
        let rs = links
            .results((Instant::now() + hold + Duration::from_secs(30)).min(deadline))
            .await;
        let m = merge_results(&rs);
        let hold_errors: u64 = m.errors.values().sum();
        row.push("hold_s", json!(hold.as_secs_f64()));
        row.push("open_after_hold", json!(m.open));
        row.push("hold_errors", json!(hold_errors));
        row.push("hold_error_kinds", errors_json(&m.errors));
        row.push("rss_after_hold_kib", json!(rss(cli)));
        row.set_counts(0, 0, failed + hold_errors);
    }
    row.hist = Some(("handshake".into(), hist));
    links.shutdown().await;
    Ok(vec![row])
}

async fn fanout(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let (mut links, readies, merged) = start_workers(cli, target, run_id, deadline).await?;
    let Merged {
        connected,
        failed,
        connect_s,
        errors: cerrors,
        ..
    } = merged;
    let expecting: Vec<bool> = readies.iter().map(|r| r.connected > 0).collect();
    let mut http = HttpClient::new(
        target.addr,
        &target.host,
        &cli.api_key,
        cli.op_timeout.max(Duration::from_secs(10)),
    );
    let mut rows = Vec::new();
    let mut seq = 0u64;
    // An optional warm-up phase (not reported), then one phase per payload size.
    let mut phases: Vec<(usize, u64, bool)> = Vec::new();
    if cli.warmup > 0 {
        phases.push((cli.payload[0], cli.warmup, false));
    }
    phases.extend(cli.payload.iter().map(|&p| (p, cli.broadcasts, true)));
    for (size, count, keep) in phases {
        let from = seq;
        let mut ttl = stats::new_hist();
        let mut failed_seqs = Vec::new();
        let mut publish_errors = BTreeMap::new();
        let (mut timeouts, mut delivered_mismatch) = (0u64, 0u64);
        let phase_start = Instant::now();
        let cpu = CpuMeter::start(cli, &links);
        for _ in 0..count {
            if Instant::now() >= deadline {
                worker::tally(&mut publish_errors, "global timeout".into());
                break;
            }
            let s = seq;
            seq += 1;
            let t = mono_ns();
            let body = proto::broadcast_body(s, t, size);
            match http.post_json(EVENTS_PATH, &body).await {
                Ok(r) if r.status == 200 => {
                    if http::delivered(&r.body) != Some(connected) {
                        delivered_mismatch += 1;
                    }
                }
                Ok(r) => {
                    failed_seqs.push(s);
                    worker::tally(&mut publish_errors, format!("HTTP {}", r.status));
                    continue;
                }
                Err(e) => {
                    failed_seqs.push(s);
                    worker::tally(
                        &mut publish_errors,
                        format!("{e:#}").chars().take(80).collect(),
                    );
                    continue;
                }
            }
            if connected == 0 {
                continue;
            }
            let mut got = vec![false; links.count];
            let mut last = 0u64;
            let until = (Instant::now() + cli.op_timeout).min(deadline);
            while got.iter().zip(&expecting).any(|(g, e)| *e && !*g) {
                match links.recv_until(until).await {
                    Some((i, Some(FromWorker::Got { seq: gs, last_ns }))) if gs == s => {
                        got[i] = true;
                        last = last.max(last_ns);
                    }
                    Some(_) => {}
                    None => {
                        timeouts += 1;
                        break;
                    }
                }
            }
            if got.iter().zip(&expecting).all(|(g, e)| *g || !*e) {
                ttl.saturating_record(last.saturating_sub(t).max(1));
            }
        }
        let phase_s = phase_start.elapsed().as_secs_f64();
        let mut cpu_row = Row::new();
        cpu.finish(cli, &links, &mut cpu_row);
        links
            .send_all(&ToWorker::EndPhase {
                from,
                to: seq,
                failed: failed_seqs.clone(),
            })
            .await?;
        let rs = links
            .results((Instant::now() + cli.drain + Duration::from_secs(30)).min(deadline))
            .await;
        let m = merge_results(&rs);
        let hist = stats::merge_encoded(rs.iter().map(|r| r.hist.as_str()))?;
        if !keep {
            if m.lost + m.dup > 0 {
                eprintln!("warm-up: {} lost, {} duplicated deliveries", m.lost, m.dup);
            }
            continue;
        }
        let mut row = base.row();
        row.push("payload_bytes", json!(size));
        row.push("subscribers", json!(connected));
        row.push("connect_failed", json!(failed));
        row.push("connect_s", json!(round2(connect_s)));
        row.push("broadcasts", json!(seq - from));
        row.push("publish_failed", json!(failed_seqs.len()));
        row.push("deliveries", json!(m.ops));
        row.push(
            "expected_deliveries",
            json!((seq - from - failed_seqs.len() as u64) * connected),
        );
        row.push("phase_s", json!(round2(phase_s)));
        row.push(
            "deliveries_per_s",
            json!(round2(m.ops as f64 / phase_s.max(1e-9))),
        );
        row.push_summary("latency", &stats::summarize(&hist));
        let ts = stats::summarize(&ttl);
        row.push("ttl_p50_ms", json!(ts.p50_ms));
        row.push("ttl_p99_ms", json!(ts.p99_ms));
        row.push("ttl_max_ms", json!(ts.max_ms));
        row.push("broadcast_timeouts", json!(timeouts));
        row.extend(cpu_row);
        row.push("delivered_mismatch", json!(delivered_mismatch));
        let mut errs = cerrors.clone();
        add_errors(&mut errs, &m.errors);
        add_errors(&mut errs, &publish_errors);
        row.push("errors", errors_json(&errs));
        row.push("unexpected_frames", json!(m.unexpected));
        row.set_counts(
            m.lost,
            m.dup,
            failed + m.errors.values().sum::<u64>() + failed_seqs.len() as u64 + timeouts,
        );
        row.hist = Some((format!("{size} B"), hist));
        rows.push(row);
    }
    links.shutdown().await;
    Ok(rows)
}

#[derive(Default)]
struct PubTotals {
    ok: u64,
    failed: Vec<u64>,
    errors: BTreeMap<String, u64>,
    mismatch: u64,
}

async fn throughput(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let (mut links, _, merged) = start_workers(cli, target, run_id, deadline).await?;
    let Merged {
        connected,
        failed,
        connect_s,
        errors: cerrors,
        ..
    } = merged;
    let size = cli.payload[0];
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let totals = Arc::new(Mutex::new(PubTotals::default()));
    let start_ns = mono_ns();
    let started = Instant::now();
    let cpu = CpuMeter::start(cli, &links);
    let stop_at = (started + cli.duration).min(deadline);
    let mut tasks = Vec::new();
    for _ in 0..cli.in_flight {
        let (next, totals, target, key) = (
            next.clone(),
            totals.clone(),
            target.clone(),
            cli.api_key.clone(),
        );
        let op_timeout = cli.op_timeout.max(Duration::from_secs(10));
        tasks.push(tokio::spawn(async move {
            let mut http = HttpClient::new(target.addr, &target.host, &key, op_timeout);
            // Bounded by stop_at; each publish has its own timeout.
            while Instant::now() < stop_at {
                let s = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t = mono_ns();
                let body = proto::broadcast_body(s, t, size);
                let r = http.post_json(EVENTS_PATH, &body).await;
                let mut tot = totals.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(r) if r.status == 200 => {
                        tot.ok += 1;
                        if http::delivered(&r.body) != Some(connected) {
                            tot.mismatch += 1;
                        }
                    }
                    Ok(r) => {
                        tot.failed.push(s);
                        worker::tally(&mut tot.errors, format!("HTTP {}", r.status));
                    }
                    Err(e) => {
                        tot.failed.push(s);
                        worker::tally(&mut tot.errors, format!("{e:#}").chars().take(80).collect());
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let pub_s = started.elapsed().as_secs_f64();
    let mut cpu_row = Row::new();
    cpu.finish(cli, &links, &mut cpu_row);
    let total = next.load(std::sync::atomic::Ordering::Relaxed);
    let (ok, failed_seqs, perrs, mismatch) = {
        let t = totals.lock().unwrap_or_else(|p| p.into_inner());
        (t.ok, t.failed.clone(), t.errors.clone(), t.mismatch)
    };
    links
        .send_all(&ToWorker::EndPhase {
            from: 0,
            to: total,
            failed: failed_seqs.clone(),
        })
        .await?;
    let rs = links
        .results((Instant::now() + cli.drain + Duration::from_secs(30)).min(deadline))
        .await;
    let m = merge_results(&rs);
    let hist = stats::merge_encoded(rs.iter().map(|r| r.hist.as_str()))?;
    let deliver_s = if m.last_ns > start_ns {
        (m.last_ns - start_ns) as f64 / 1e9
    } else {
        pub_s
    };
    let mut row = base.row();
    row.push("payload_bytes", json!(size));
    row.push("in_flight", json!(cli.in_flight));
    row.push("subscribers", json!(connected));
    row.push("connect_failed", json!(failed));
    row.push("connect_s", json!(round2(connect_s)));
    row.push("duration_s", json!(round2(pub_s)));
    row.push("broadcasts", json!(ok));
    row.push("publish_failed", json!(failed_seqs.len()));
    row.push(
        "broadcasts_per_s",
        json!(round2(ok as f64 / pub_s.max(1e-9))),
    );
    row.push("deliveries", json!(m.ops));
    row.push("expected_deliveries", json!(ok * connected));
    row.push(
        "deliveries_per_s",
        json!(round2(m.ops as f64 / deliver_s.max(1e-9))),
    );
    row.push_summary("latency", &stats::summarize(&hist));
    row.push("delivered_mismatch", json!(mismatch));
    row.extend(cpu_row);
    let mut errs = cerrors;
    add_errors(&mut errs, &m.errors);
    add_errors(&mut errs, &perrs);
    row.push("errors", errors_json(&errs));
    row.push("unexpected_frames", json!(m.unexpected));
    row.set_counts(
        m.lost,
        m.dup,
        failed + m.errors.values().sum::<u64>() + failed_seqs.len() as u64,
    );
    row.hist = Some((format!("{size} B, K={}", cli.in_flight), hist));
    links.shutdown().await;
    Ok(vec![row])
}

async fn ping(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let (mut links, _, merged) = start_workers(cli, target, run_id, deadline).await?;
    let Merged {
        connected,
        failed,
        connect_s,
        errors: cerrors,
        ..
    } = merged;
    let ms = cli.duration.as_millis() as u64;
    let started = Instant::now();
    let cpu = CpuMeter::start(cli, &links);
    links.send_all(&ToWorker::Go { ms, cycles: None }).await?;
    let rs = links
        .results(
            (Instant::now() + cli.duration + cli.op_timeout + Duration::from_secs(30))
                .min(deadline),
        )
        .await;
    let elapsed = started
        .elapsed()
        .as_secs_f64()
        .min(cli.duration.as_secs_f64() + cli.op_timeout.as_secs_f64());
    let mut cpu_row = Row::new();
    cpu.finish(cli, &links, &mut cpu_row);
    let m = merge_results(&rs);
    let hist = stats::merge_encoded(rs.iter().map(|r| r.hist.as_str()))?;
    let span = if m.last_ns > m.first_ns {
        cli.duration.as_secs_f64()
    } else {
        elapsed
    };
    let mut row = base.row();
    row.push("connected", json!(connected));
    row.push("connect_failed", json!(failed));
    row.push("connect_s", json!(round2(connect_s)));
    row.push("duration_s", json!(round2(span)));
    row.push("round_trips", json!(m.ops));
    row.push(
        "round_trips_per_s",
        json!(round2(m.ops as f64 / span.max(1e-9))),
    );
    row.push_summary("rtt", &stats::summarize(&hist));
    row.extend(cpu_row);
    row.push("pong_timeouts", json!(m.lost));
    row.push("stray_pongs", json!(m.unexpected));
    let mut errs = cerrors;
    add_errors(&mut errs, &m.errors);
    row.push("errors", errors_json(&errs));
    row.set_counts(m.lost, 0, failed + m.errors.values().sum::<u64>());
    row.hist = Some(("rtt".into(), hist));
    links.shutdown().await;
    Ok(vec![row])
}

async fn churn(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let rss_start = rss(cli);
    let mut links = spawn(cli, target, run_id).await?;
    links.readies(deadline).await?;
    let mut http = HttpClient::new(
        target.addr,
        &target.host,
        &cli.api_key,
        cli.op_timeout.max(Duration::from_secs(10)),
    );
    let started = Instant::now();
    let cpu = CpuMeter::start(cli, &links);
    links
        .send_all(&ToWorker::Go {
            ms: cli.duration.as_millis() as u64,
            cycles: cli.cycles,
        })
        .await?;
    let size = cli.payload[0];
    let until =
        (started + cli.duration + cli.op_timeout * 3 + Duration::from_secs(30)).min(deadline);
    let mut tick = tokio::time::interval(cli.publish_interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample = tokio::time::interval(Duration::from_millis(100));
    let mut peak = rss_start;
    let mut results: Vec<Option<WorkerResult>> = (0..links.count).map(|_| None).collect();
    let (mut seq, mut pub_errors) = (0u64, BTreeMap::new());
    let mut published = 0u64;
    // Bounded by `until`.
    while results.iter().any(Option::is_none) && Instant::now() < until {
        tokio::select! {
            _ = tick.tick() => {
                let body = proto::broadcast_body(seq, mono_ns(), size);
                seq += 1;
                match http.post_json(EVENTS_PATH, &body).await {
                    Ok(r) if r.status == 200 => published += 1,
                    Ok(r) => worker::tally(&mut pub_errors, format!("HTTP {}", r.status)),
                    Err(e) => worker::tally(&mut pub_errors, format!("{e:#}").chars().take(80).collect()),
                }
            }
            _ = sample.tick() => {
                if let Some(r) = rss(cli) {
                    peak = Some(peak.map_or(r, |p| p.max(r)));
                }
            }
            m = links.recv_until(until) => match m {
                Some((i, Some(FromWorker::Result(r)))) => results[i] = Some(r),
                Some((i, None)) => {
                    if results[i].is_none() {
                        results[i] = Some(missing_result(&format!("worker {i} exited without a result")));
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rs: Vec<WorkerResult> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| missing_result("worker result timed out")))
        .collect();
    let mut cpu_row = Row::new();
    cpu.finish(cli, &links, &mut cpu_row);
    links.shutdown().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_end = rss(cli);
    let m = merge_results(&rs);
    let hist = stats::merge_encoded(rs.iter().map(|r| r.hist.as_str()))?;
    let span = elapsed.min(cli.duration.as_secs_f64() + cli.op_timeout.as_secs_f64());
    let mut row = base.row();
    row.push("cycles", json!(m.ops));
    row.push("duration_s", json!(round2(span)));
    row.push("cycles_per_s", json!(round2(m.ops as f64 / span.max(1e-9))));
    row.push_summary("cycle", &stats::summarize(&hist));
    row.extend(cpu_row);
    row.push("broadcasts_published", json!(published));
    row.push("no_broadcast_cycles", json!(m.lost));
    row.push("rss_start_kib", json!(rss_start));
    row.push("rss_peak_kib", json!(peak));
    row.push("rss_end_kib", json!(rss_end));
    let mut errs = m.errors.clone();
    add_errors(&mut errs, &pub_errors);
    row.push("errors", errors_json(&errs));
    row.set_counts(
        m.lost,
        m.dup,
        m.errors.values().sum::<u64>() + pub_errors.values().sum::<u64>(),
    );
    row.hist = Some(("connect+subscribe+1 broadcast".into(), hist));
    Ok(vec![row])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss() {
        let s = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t1\n";
        assert_eq!(parse_vmrss(s), Some(12345));
        assert_eq!(parse_vmrss("Name: x\n"), None);
        assert_eq!(parse_vmrss("VmRSS: lots kB\n"), None);
        assert!(rss_kib(std::process::id()).unwrap_or(0) > 0);
    }

    #[test]
    fn stat_cpu() {
        let s = "123 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(parse_stat_cpu(s), Some(300.0 / hz));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert!(cpu_s(std::process::id()).is_some());
    }
}
