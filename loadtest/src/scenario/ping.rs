//! ping: N connections each send an application `ping` and wait for the
//! pong that echoes its pingId, closed-loop, for `-d`. Both halves: the
//! coordinator starts the loops and merges, the workers hold the sockets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{share, Cli, Target};
use crate::ctl::{add_errors, merge_results, tally, FromWorker, ToWorker, WorkerResult};
use crate::links::{start_workers, CpuMeter};
use crate::proto::{self, mono_ns, Kind};
use crate::report::{round2, Row};
use crate::stats;
use crate::worker::{collect_ups, Ctx, LoopTotals, Outcome};
use crate::ws;

use super::Base;

/// Runs the ping loops for `-d` and reports one row.
pub async fn run(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let (mut links, _, merged) = start_workers(cli, target, run_id, deadline).await?;
    let failed = merged.failed;
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
    merged.push_connect(&mut row, "connected");
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
    let mut errs = merged.errors;
    add_errors(&mut errs, &m.errors);
    row.push("errors", json!(&errs));
    row.set_counts(m.lost, 0, failed + m.errors.values().sum::<u64>());
    row.hist = Some(("rtt".into(), hist));
    links.shutdown().await;
    Ok(vec![row])
}

/// Connects the worker's share, then pings closed-loop on every connection
/// from `Go` for its `ms`, and reports.
pub async fn work(ctx: Arc<Ctx>, mut cmds: mpsc::UnboundedReceiver<ToWorker>) -> Result<()> {
    let cli = ctx.cli.clone();
    let n = share(cli.connections, ctx.index, ctx.count);
    let totals = Arc::new(Mutex::new(LoopTotals {
        hist: Some(stats::new_hist()),
        first_ns: u64::MAX,
        ..Default::default()
    }));
    let (go_tx, go_rx) = watch::channel::<Option<(Instant, u64)>>(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<Outcome>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let sem = Arc::new(Semaphore::new(
        share(cli.concurrency, ctx.index, ctx.count).max(1) as usize,
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for conn in 0..n {
        let (ctx, totals, up_tx, done_tx, sem) = (
            ctx.clone(),
            totals.clone(),
            up_tx.clone(),
            done_tx.clone(),
            sem.clone(),
        );
        let (mut go_rx, mut stop_rx) = (go_rx.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(permit) = sem.acquire_owned().await else { return };
            let (mut sock, hs) = match ctx.open(conn, 0).await {
                Ok(x) => x,
                Err(e) => {
                    let _ = up_tx.send(Outcome::Failed(ws::describe(&e)));
                    return;
                }
            };
            drop(permit);
            let _ = up_tx.send(Outcome::Up(hs));
            drop(up_tx);
            let Ok(go) = go_rx.wait_for(|g| g.is_some()).await.map(|g| *g) else { return };
            let Some((deadline, _)) = go else { return };
            let mut hist = stats::new_hist();
            let (mut ops, mut lost, mut unexpected) = (0u64, 0u64, 0u64);
            let (mut first, mut last) = (u64::MAX, 0u64);
            let mut err: Option<String> = None;
            let mut k = 0u64;
            // Bounded by the deadline: each iteration waits at most --op-timeout.
            'outer: while Instant::now() < deadline {
                k += 1;
                let id = format!("{}.{conn}.{k}", ctx.index);
                let t0 = mono_ns();
                if let Err(e) = sock.send(Message::text(proto::ping_msg(&id))).await {
                    err = Some(ws::describe(&e.into()));
                    break;
                }
                let wait = tokio::time::sleep(ctx.cli.op_timeout);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => { lost += 1; continue 'outer; }
                        m = sock.next() => match m {
                            Some(Ok(Message::Text(t))) => {
                                let Some(msg) = proto::parse(t.as_str()) else { unexpected += 1; continue };
                                if proto::kind(&msg.ty) != Kind::Pong { continue; }
                                if msg.data.as_ref().and_then(|d| d.ping_id.as_deref()) == Some(id.as_str()) {
                                    let now = mono_ns();
                                    hist.saturating_record(now.saturating_sub(t0).max(1));
                                    ops += 1;
                                    first = first.min(now);
                                    last = now;
                                    break;
                                }
                                unexpected += 1;
                            }
                            Some(Ok(Message::Close(c))) => {
                                err = Some(format!("closed by server ({})", c.map_or(1005, |c| u16::from(c.code))));
                                break 'outer;
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => { err = Some(ws::describe(&e.into())); break 'outer; }
                            None => { err = Some("EOF".into()); break 'outer; }
                        }
                    }
                }
            }
            {
                let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(h) = t.hist.as_mut() {
                    let _ = stats::merge(h, &hist);
                }
                t.ops += ops;
                t.lost += lost;
                t.unexpected += unexpected;
                if ops > 0 {
                    t.first_ns = t.first_ns.min(first);
                    t.last_ns = t.last_ns.max(last);
                }
                match err {
                    Some(e) => tally(&mut t.errors, e),
                    None => t.open += 1,
                }
            }
            let _ = done_tx.send(());
            let _ = stop_rx.wait_for(|s| *s).await;
            ws::close(sock).await;
        }));
    }
    drop(up_tx);
    drop(done_tx);
    let (up, failed, errors, hs) = collect_ups(&mut up_rx, n).await;
    ctx.send(FromWorker::Ready {
        connected: up,
        failed,
        connect_s: started.elapsed().as_secs_f64(),
        hist: stats::encode(&hs)?,
        errors,
    });
    loop {
        let Some(cmd) = cmds.recv().await else { break };
        match cmd {
            ToWorker::Go { ms, .. } => {
                let deadline = Instant::now() + Duration::from_millis(ms);
                let _ = go_tx.send(Some((deadline, ms)));
                let limit = deadline + cli.op_timeout + Duration::from_secs(5);
                let mut done = 0;
                while done < up {
                    match tokio::time::timeout_at(limit.into(), done_rx.recv()).await {
                        Ok(Some(())) => done += 1,
                        _ => break,
                    }
                }
                let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                let hist = t.hist.take().unwrap_or_else(stats::new_hist);
                ctx.send(FromWorker::Result(WorkerResult {
                    ops: t.ops,
                    lost: t.lost,
                    dup: 0,
                    unexpected: t.unexpected,
                    errors: std::mem::take(&mut t.errors),
                    hist: stats::encode(&hist)?,
                    first_ns: if t.ops > 0 { t.first_ns } else { 0 },
                    last_ns: t.last_ns,
                    open: t.open,
                }));
            }
            ToWorker::EndPhase { .. } | ToWorker::Scenario { .. } => {}
            ToWorker::Stop => break,
        }
    }
    let _ = stop_tx.send(true);
    drop(go_tx);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}
