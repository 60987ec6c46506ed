//! churn: `-n` loops of connect (a fresh user), subscribe, wait for one
//! broadcast, close; the coordinator publishes every `--publish-interval`
//! and samples the server's RSS. Both halves: the coordinator publishes and
//! merges, the workers run the loops.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{share, Cli, Target};
use crate::ctl::{add_errors, merge_results, tally, FromWorker, ToWorker, WorkerResult};
use crate::http::HttpClient;
use crate::links::{missing_result, spawn, CpuMeter};
use crate::proto::{self, mono_ns, Kind};
use crate::report::{round2, Row};
use crate::seq::{Mark, SeqTracker};
use crate::stats;
use crate::worker::{Ctx, LoopTotals};
use crate::ws;

use super::{rss, Base, EVENTS_PATH};

/// Runs the loops for `-d` (or `--cycles`) while publishing; reports one row.
pub async fn run(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let rss_start = rss(cli);
    let mut links = spawn(cli, target, run_id).await?;
    links.readies(deadline).await?;
    let mut http = HttpClient::for_publishing(cli, target);
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
                    Ok(r) => tally(&mut pub_errors, format!("HTTP {}", r.status)),
                    Err(e) => tally(&mut pub_errors, format!("{e:#}").chars().take(80).collect()),
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
    row.push("errors", json!(&errs));
    row.set_counts(
        m.lost,
        m.dup,
        m.errors.values().sum::<u64>() + pub_errors.values().sum::<u64>(),
    );
    row.hist = Some(("connect+subscribe+1 broadcast".into(), hist));
    Ok(vec![row])
}

/// From `Go`: the worker's share of the loops, each cycling until the
/// deadline or the shared cycle limit; then one result.
pub async fn work(ctx: Arc<Ctx>, mut cmds: mpsc::UnboundedReceiver<ToWorker>) -> Result<()> {
    let cli = ctx.cli.clone();
    let loops = share(cli.connections, ctx.index, ctx.count);
    ctx.send(FromWorker::Ready {
        connected: 0,
        failed: 0,
        connect_s: 0.0,
        hist: stats::encode(&stats::new_hist())?,
        errors: BTreeMap::new(),
    });
    let Some(ToWorker::Go { ms, cycles }) = cmds.recv().await else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_millis(ms);
    let limit = cycles.map_or(u64::MAX, |c| share(c, ctx.index, ctx.count));
    let started = Arc::new(AtomicU64::new(0));
    let totals = Arc::new(Mutex::new(LoopTotals {
        hist: Some(stats::new_hist()),
        first_ns: u64::MAX,
        ..Default::default()
    }));
    let mut tasks = Vec::new();
    for lp in 0..loops {
        let (ctx, started, totals) = (ctx.clone(), started.clone(), totals.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = stats::new_hist();
            let (mut ops, mut lost, mut dup) = (0u64, 0u64, 0u64);
            let mut errors = BTreeMap::new();
            // Bounded by the deadline and the cycle limit; each step has a timeout.
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < limit {
                let cycle = ops + lost + errors.values().sum::<u64>();
                let t0 = mono_ns();
                let mut sock = match ctx.open(lp, cycle).await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tally(&mut errors, ws::describe(&e));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if let Err(e) = ws::subscribe(&mut sock, "c", ctx.cli.op_timeout).await {
                    tally(&mut errors, format!("subscribe: {}", ws::describe(&e)));
                    continue;
                }
                let mut tracker = SeqTracker::new();
                let got = tokio::time::timeout(ctx.cli.op_timeout, async {
                    // A bounded number of frames: the server sends little else.
                    for _ in 0..10_000 {
                        match sock.next().await {
                            Some(Ok(Message::Text(t))) => {
                                if let Some(m) = proto::parse(t.as_str()) {
                                    if proto::kind(&m.ty) == Kind::Notification {
                                        if let Some(seq) = m.data.as_ref().and_then(|d| d.seq) {
                                            if tracker.mark(seq) == Mark::Duplicate {
                                                return Err("duplicate".to_string());
                                            }
                                            return Ok(());
                                        }
                                    }
                                }
                            }
                            Some(Ok(Message::Close(c))) => {
                                return Err(format!(
                                    "closed by server ({})",
                                    c.map_or(1005, |c| u16::from(c.code))
                                ))
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(ws::describe(&e.into())),
                            None => return Err("EOF".into()),
                        }
                    }
                    Err("no broadcast in 10000 frames".into())
                })
                .await;
                match got {
                    Ok(Ok(())) => {
                        let now = mono_ns();
                        hist.saturating_record(now.saturating_sub(t0).max(1));
                        ops += 1;
                    }
                    Ok(Err(e)) if e == "duplicate" => dup += 1,
                    Ok(Err(e)) => tally(&mut errors, e),
                    Err(_) => lost += 1,
                }
                ws::close(sock).await;
            }
            let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = t.hist.as_mut() {
                let _ = stats::merge(h, &hist);
            }
            t.ops += ops;
            t.lost += lost;
            t.unexpected += dup;
            for (k, v) in errors {
                *t.errors.entry(k).or_insert(0) += v;
            }
        }));
    }
    let hard = deadline + cli.op_timeout * 3 + Duration::from_secs(15);
    for t in tasks {
        if tokio::time::timeout_at(hard.into(), t).await.is_err() {
            break;
        }
    }
    let result = {
        let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
        let hist = t.hist.take().unwrap_or_else(stats::new_hist);
        WorkerResult {
            ops: t.ops,
            lost: t.lost,
            dup: t.unexpected,
            unexpected: 0,
            errors: std::mem::take(&mut t.errors),
            hist: stats::encode(&hist)?,
            first_ns: 0,
            last_ns: 0,
            open: 0,
        }
    };
    ctx.send(FromWorker::Result(result));
    // wait for Stop or EOF (bounded by the coordinator's own timeout)
    let _ = tokio::time::timeout(Duration::from_secs(30), cmds.recv()).await;
    Ok(())
}
