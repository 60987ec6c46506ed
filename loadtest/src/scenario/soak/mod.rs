//! The soak scenario: a long run that keeps a base population of subscribed
//! connections open, churns short-lived connections next to it, publishes a
//! steady mix of broadcasts, and samples the server's RSS and open file
//! descriptors once a second to decide at the end whether either keeps growing.
//!
//! Runs in the coordinating process only (`--procs 1`): a soak is about the
//! server's steady state, not about load, so one generator thread is plenty.
//! This module runs the phases in order and owns what the tasks share; the
//! concerns are in the submodules: [`base`] (the base population), [`churn`],
//! [`publisher`], [`book`] (who should receive what), [`samples`] (the
//! series and the growth verdict), [`row`] (the result row), [`plot`].

pub mod base;
pub mod book;
pub mod churn;
pub mod plot;
pub mod publisher;
pub mod rng;
pub mod row;
pub mod samples;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{Cli, Target};
use crate::ctl::tally;
use crate::procfs::{cpu_s, fd_count, loadavg_1m, rss_kib};
use crate::proto;
use crate::report::{round2, Row};
use crate::ws;

use book::Book;
use churn::ChurnTotals;
use publisher::PubTotals;
use samples::Samples;

pub use plot::plot;

/// What the soak's tasks share.
pub struct Shared {
    cli: Arc<Cli>,
    target: Target,
    run_id: String,
    book: Mutex<Book>,
    churn: Mutex<ChurnTotals>,
    /// Set at the end of `-d`: churn loops, the publisher and app pings stop.
    stop: AtomicBool,
    cycles: AtomicU64,
    broadcasts: AtomicU64,
}

impl Shared {
    pub fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn churn(&self) -> MutexGuard<'_, ChurnTotals> {
        self.churn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn source(&self, k: u64) -> std::net::Ipv4Addr {
        let ips = &self.cli.source_ips.0;
        ips[(k % ips.len() as u64) as usize]
    }

    pub fn base_user(&self, conn: usize) -> String {
        format!("lt-{}-b{conn}", self.run_id)
    }

    pub async fn open(&self, user: &str, src: u64) -> Result<ws::Ws> {
        let token = proto::token(&self.cli.jwt_secret, user)?;
        let (sock, _) = ws::open(
            self.target.addr,
            &self.target.host,
            self.source(src),
            &token,
            self.cli.op_timeout.max(Duration::from_secs(10)),
        )
        .await?;
        Ok(sock)
    }
}

// ---------------------------------------------------------------- the frames

/// A `subscribe`/`unsubscribe` frame for `events`.
pub fn sub_msg(ty: &str, events: &[&str], id: &str) -> String {
    json!({"type": ty, "data": {"events": events}, "id": id}).to_string()
}

/// The code of a close frame (1005 when it has none).
pub fn close_code(c: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    c.map_or(1005, |c| u16::from(c.code))
}

/// Sends `msg` and reads until a frame of type `want` (an `error` frame fails);
/// other text frames go to `other`. Bounded by `timeout` and 4096 frames.
pub async fn request(
    sock: &mut ws::Ws,
    msg: String,
    want: &str,
    timeout: Duration,
    other: &mut (dyn FnMut(&str) + Send),
) -> Result<()> {
    sock.send(Message::text(msg)).await?;
    let fut = async {
        for _ in 0..4096 {
            match sock.next().await {
                Some(Ok(Message::Text(t))) => {
                    let ty = proto::parse(t.as_str()).map(|m| m.ty.into_owned());
                    match ty.as_deref() {
                        Some(x) if x == want => return Ok(()),
                        Some("error") => bail!("error frame in reply to {want}"),
                        _ => other(t.as_str()),
                    }
                }
                Some(Ok(Message::Close(c))) => bail!("closed by server ({})", close_code(c)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("EOF"),
            }
        }
        bail!("no {want} in 4096 frames")
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("{want} timeout"))?
}

// ---------------------------------------------------------------------- run

/// Runs the soak; returns its one row.
pub async fn run(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    mut row: Row,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let pid = cli
        .server_pid
        .ok_or_else(|| anyhow!("soak needs --server-pid"))?;
    let n = cli.connections as usize;
    let rss_before = rss_kib(pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/status"))?;
    let fds_before = fd_count(pid)
        .ok_or_else(|| anyhow!("cannot list /proc/{pid}/fd (run the soak as the server's user)"))?;
    let sh = Arc::new(Shared {
        cli: cli.clone(),
        target: target.clone(),
        run_id: run_id.to_string(),
        book: Mutex::new(Book::new(n)),
        churn: Mutex::new(ChurnTotals::default()),
        stop: AtomicBool::new(false),
        cycles: AtomicU64::new(0),
        broadcasts: AtomicU64::new(0),
    });

    // 1. The base population.
    let (population, up) = base::connect(&sh, deadline).await?;
    eprintln!(
        "soak: base population {}/{n} up in {:.1}s; running {} with {} churn loops",
        up.connected,
        up.connect_s,
        humantime::format_duration(cli.duration),
        cli.churn
    );

    // 2. Churn, publisher, sampling for -d.
    let t0 = Instant::now();
    let server_cpu0 = cpu_s(pid);
    let gen_cpu0 = cpu_s(std::process::id()).unwrap_or(0.0);
    let churn_tasks: Vec<_> = (0..cli.churn)
        .map(|lp| tokio::spawn(churn::churn_loop(sh.clone(), lp)))
        .collect();
    let pub_task = tokio::spawn(publisher::publisher(sh.clone()));
    let end = (t0 + cli.duration).min(deadline - Duration::from_secs(60).min(cli.timeout / 4));
    let (samples, sample_errors) = sample(&sh, pid, t0, end).await;
    let soak_s = t0.elapsed().as_secs_f64();
    let server_cpu = match (server_cpu0, cpu_s(pid)) {
        (Some(a), Some(b)) => Some(round2((b - a) / soak_s.max(1e-9) * 100.0)),
        _ => None,
    };
    let gen_cpu =
        round2((cpu_s(std::process::id()).unwrap_or(0.0) - gen_cpu0) / soak_s.max(1e-9) * 100.0);

    // 3. Stop churn and publishing, drain, account.
    let pubs = stop(&sh, pub_task, churn_tasks).await;
    drain(&sh).await;
    let book = row::BookFigures::read(&sh.book());

    // 4. Close the base population; watch the server give its fds back.
    let (fds_after, rss_after) = population.close(pid, fds_before).await;

    // 5. The row.
    if let Some(p) = &cli.samples {
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(p, samples.csv()).with_context(|| format!("write {}", p.display()))?;
        eprintln!("samples: {}", p.display());
    }
    let churn = std::mem::take(&mut *sh.churn());
    row::fill(
        &mut row,
        cli,
        row::Figures {
            up,
            soak_s,
            server_cpu,
            gen_cpu,
            samples,
            sample_errors,
            book,
            churn,
            pubs,
            rss_before,
            rss_after,
            fds_before,
            fds_after,
        },
    );
    Ok(vec![row])
}

/// Samples the server once a second until `end` (or until it is gone), with
/// a progress line every minute.
async fn sample(
    sh: &Shared,
    pid: u32,
    t0: Instant,
    end: Instant,
) -> (Samples, BTreeMap<String, u64>) {
    let mut samples = Samples::default();
    let mut sample_errors = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_report = t0 + Duration::from_secs(60);
    // Bounded by `end`.
    loop {
        tick.tick().await;
        let now = Instant::now();
        match (rss_kib(pid), fd_count(pid)) {
            (Some(r), Some(f)) => {
                samples.t_s.push(now.duration_since(t0).as_secs_f64());
                samples.rss_kib.push(r);
                samples.fds.push(f);
                samples.loadavg_1m.push(loadavg_1m().unwrap_or(0.0));
                samples.cycles.push(sh.cycles.load(Ordering::Relaxed));
                samples
                    .broadcasts
                    .push(sh.broadcasts.load(Ordering::Relaxed));
            }
            _ => {
                tally(&mut sample_errors, "server process gone".into());
                break;
            }
        }
        if now >= next_report {
            next_report += Duration::from_secs(60);
            let i = samples.t_s.len() - 1;
            eprintln!(
                "soak: {:>5.0}s rss {} KiB, fds {}, cycles {}, broadcasts {}, loadavg {:.2}",
                samples.t_s[i],
                samples.rss_kib[i],
                samples.fds[i],
                samples.cycles[i],
                samples.broadcasts[i],
                samples.loadavg_1m[i]
            );
        }
        if now >= end {
            break;
        }
    }
    (samples, sample_errors)
}

/// Stops the churn loops and the publisher (waiting a bounded time for
/// them); returns what the publisher sent.
async fn stop(
    sh: &Shared,
    pub_task: JoinHandle<PubTotals>,
    churn_tasks: Vec<JoinHandle<()>>,
) -> PubTotals {
    sh.stop.store(true, Ordering::Relaxed);
    let stop_wait = Instant::now() + sh.cli.op_timeout * 4 + Duration::from_secs(15);
    let pubs = match tokio::time::timeout_at(stop_wait.into(), pub_task).await {
        Ok(Ok(p)) => p,
        _ => {
            let mut p = PubTotals::default();
            tally(&mut p.errors, "publisher did not stop".into());
            p
        }
    };
    for t in churn_tasks {
        if tokio::time::timeout_at(stop_wait.into(), t).await.is_err() {
            tally(&mut sh.churn().errors, "churn loop did not stop".into());
            break;
        }
    }
    pubs
}

/// Waits, at most `--drain`, for the expected deliveries and pongs.
async fn drain(sh: &Shared) {
    let drain_until = Instant::now() + sh.cli.drain;
    // Bounded by --drain.
    while Instant::now() < drain_until {
        let done = {
            let b = sh.book();
            b.got >= b.expected && b.pongs >= b.pings
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
