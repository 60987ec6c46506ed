//! The worker half of connect, fanout and throughput: N connections, each
//! subscribed to the bench event, that account every delivery (latency, seq
//! bitmap per connection, duplicates) and, in fanout, report when every live
//! one has a broadcast. `Go` holds them (connect `--hold`); `EndPhase` drains
//! and reports a phase's result. Publishing is the coordinator's half.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{share, Scenario};
use crate::ctl::{tally, FromWorker, ToWorker, WorkerResult};
use crate::proto::{self, mono_ns, Kind};
use crate::seq::{Mark, SeqTracker};
use crate::stats::{self, Hist};
use crate::worker::{collect_ups, Ctx, Outcome};
use crate::ws;

/// What one worker's connection tasks record, behind one lock.
#[derive(Default)]
struct SubState {
    hist: Option<Hist>,
    trackers: Vec<SeqTracker>,
    alive: Vec<bool>,
    /// seq -> (receipts, last receipt ns), for Got reports (fanout only)
    pending: HashMap<u64, (u64, u64)>,
    live: u64,
    deliveries: u64,
    dup: u64,
    unexpected: u64,
    first_ns: u64,
    last_ns: u64,
    errors: BTreeMap<String, u64>,
    report_got: bool,
}

impl SubState {
    fn on_text(&mut self, conn: usize, text: &str, out: &mpsc::UnboundedSender<FromWorker>) {
        let Some(m) = proto::parse(text) else {
            self.unexpected += 1;
            return;
        };
        if proto::kind(&m.ty) != Kind::Notification {
            return;
        }
        let (Some(seq), Some(t)) = m.data.as_ref().map_or((None, None), |d| (d.seq, d.t)) else {
            self.unexpected += 1;
            return;
        };
        let now = mono_ns();
        match self.trackers[conn].mark(seq) {
            Mark::New => {
                if let Some(h) = self.hist.as_mut() {
                    h.saturating_record(now.saturating_sub(t).max(1));
                }
                if self.deliveries == 0 {
                    self.first_ns = now;
                }
                self.deliveries += 1;
                self.last_ns = now;
                if self.report_got {
                    let e = self.pending.entry(seq).or_insert((0, 0));
                    e.0 += 1;
                    e.1 = now;
                    if e.0 >= self.live {
                        let last_ns = e.1;
                        self.pending.remove(&seq);
                        let _ = out.send(FromWorker::Got { seq, last_ns });
                    }
                }
            }
            Mark::Duplicate => self.dup += 1,
            Mark::OutOfRange => self.unexpected += 1,
        }
    }

    fn on_dead(&mut self, conn: usize, why: String, out: &mpsc::UnboundedSender<FromWorker>) {
        if !self.alive[conn] {
            return;
        }
        self.alive[conn] = false;
        self.live = self.live.saturating_sub(1);
        tally(&mut self.errors, why);
        if self.report_got && self.live > 0 {
            let done: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, (n, _))| *n >= self.live)
                .map(|(s, _)| *s)
                .collect();
            for seq in done {
                if let Some((_, last_ns)) = self.pending.remove(&seq) {
                    let _ = out.send(FromWorker::Got { seq, last_ns });
                }
            }
        }
    }
}

/// Runs the worker's share of the subscribers until Stop or EOF.
pub async fn work(ctx: Arc<Ctx>, mut cmds: mpsc::UnboundedReceiver<ToWorker>) -> Result<()> {
    let cli = ctx.cli.clone();
    let n = share(cli.connections, ctx.index, ctx.count);
    let st = Arc::new(Mutex::new(SubState {
        hist: Some(stats::new_hist()),
        trackers: vec![SeqTracker::new(); n as usize],
        alive: vec![false; n as usize],
        report_got: cli.scenario == Scenario::Fanout,
        ..Default::default()
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<Outcome>();
    let sem = Arc::new(Semaphore::new(
        share(cli.concurrency, ctx.index, ctx.count).max(1) as usize,
    ));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for conn in 0..n {
        let (ctx, st, up_tx, sem, mut stop_rx) = (
            ctx.clone(),
            st.clone(),
            up_tx.clone(),
            sem.clone(),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(permit) = sem.acquire_owned().await else {
                return;
            };
            let (mut sock, hs) = match ctx.open(conn, 0).await {
                Ok(x) => x,
                Err(e) => {
                    let _ = up_tx.send(Outcome::Failed(ws::describe(&e)));
                    return;
                }
            };
            if let Err(e) = ws::subscribe(&mut sock, &format!("s{conn}"), ctx.cli.op_timeout.max(Duration::from_secs(10))).await {
                let _ = up_tx.send(Outcome::Failed(format!("subscribe: {}", ws::describe(&e))));
                return;
            }
            drop(permit);
            {
                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                s.alive[conn as usize] = true;
                s.live += 1;
            }
            let _ = up_tx.send(Outcome::Up(hs));
            drop(up_tx);
            let mut app_ping = tokio::time::interval_at(
                tokio::time::Instant::now() + ctx.cli.app_ping_interval,
                ctx.cli.app_ping_interval,
            );
            let mut k = 0u64;
            let why = loop {
                tokio::select! {
                    r = stop_rx.changed() => {
                        if r.is_err() || *stop_rx.borrow() {
                            ws::close(sock).await;
                            return;
                        }
                    }
                    m = sock.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                            s.on_text(conn as usize, t.as_str(), &ctx.out);
                        }
                        Some(Ok(Message::Close(c))) => {
                            break format!("closed by server ({})", c.map_or(1005, |c| u16::from(c.code)));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break ws::describe(&e.into()),
                        None => break "EOF".to_string(),
                    },
                    _ = app_ping.tick() => {
                        k += 1;
                        if let Err(e) = sock.send(Message::text(proto::ping_msg(&format!("keep{conn}.{k}")))).await {
                            break ws::describe(&e.into());
                        }
                    }
                }
            };
            st.lock().unwrap_or_else(|p| p.into_inner()).on_dead(conn as usize, why, &ctx.out);
        }));
    }
    drop(up_tx);
    // One outcome per connection (each task sends exactly one, or ends).
    let (up, failed, errors, hs_hist) = collect_ups(&mut up_rx, n).await;
    let connect_s = started.elapsed().as_secs_f64();
    ctx.send(FromWorker::Ready {
        connected: up,
        failed,
        connect_s,
        hist: stats::encode(&hs_hist)?,
        errors,
    });
    // Reset the tallies so Results report only what happened after Ready.
    {
        let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
        s.errors.clear();
    }
    loop {
        let Some(cmd) = cmds.recv().await else { break };
        match cmd {
            ToWorker::Go { ms, .. } => {
                // connect --hold: keep the sockets, then report what happened meanwhile
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let s = st.lock().unwrap_or_else(|p| p.into_inner());
                ctx.send(FromWorker::Result(WorkerResult {
                    ops: s.live,
                    errors: s.errors.clone(),
                    open: s.live,
                    unexpected: s.unexpected,
                    ..Default::default()
                }));
            }
            ToWorker::EndPhase { from, to, failed } => {
                let n_ok = (to - from).saturating_sub(failed.len() as u64);
                let deadline = Instant::now() + cli.drain;
                // Wait (bounded by --drain) until every live connection has every accepted seq.
                loop {
                    let done = {
                        let s = st.lock().unwrap_or_else(|p| p.into_inner());
                        s.deliveries >= s.live * n_ok
                    };
                    if done || Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                let mut lost = 0;
                for (t, alive) in s.trackers.iter().zip(&s.alive) {
                    if *alive {
                        lost += t.missing(from, to, &failed);
                    }
                }
                let hist = s
                    .hist
                    .replace(stats::new_hist())
                    .unwrap_or_else(stats::new_hist);
                let r = WorkerResult {
                    ops: s.deliveries,
                    lost,
                    dup: s.dup,
                    unexpected: s.unexpected,
                    errors: std::mem::take(&mut s.errors),
                    hist: stats::encode(&hist)?,
                    first_ns: s.first_ns,
                    last_ns: s.last_ns,
                    open: s.live,
                };
                s.deliveries = 0;
                s.dup = 0;
                s.unexpected = 0;
                s.pending.clear();
                drop(s);
                ctx.send(FromWorker::Result(r));
            }
            ToWorker::Scenario { .. } => {}
            ToWorker::Stop => break,
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}
