//! The generator side: owns the WebSocket connections of one process and reports
//! to the coordinator in JSON lines.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{share, Cli, Scenario, Target};
use crate::ctl::{FromWorker, ToWorker, WorkerResult};
use crate::proto::{self, mono_ns, Kind, TokenMinter};
use crate::seq::{Mark, SeqTracker};
use crate::stats::{self, Hist};
use crate::ws;

const TOKEN_TTL_S: u64 = 24 * 3600;
/// Distinct error kinds kept per tally (the rest are summed under "other").
const MAX_ERROR_KINDS: usize = 32;

pub struct Ctx {
    pub cli: Arc<Cli>,
    pub target: Target,
    /// Where connections go (round-robin); empty means `target`.
    pub ws_targets: Vec<Target>,
    pub index: u64,
    pub count: u64,
    pub run_id: String,
    minter: TokenMinter,
    out: mpsc::UnboundedSender<FromWorker>,
}

impl Ctx {
    fn source(&self, conn: u64) -> Ipv4Addr {
        let ips = &self.cli.source_ips.0;
        ips[((conn + self.index) % ips.len() as u64) as usize]
    }

    fn user(&self, conn: u64, cycle: u64) -> String {
        format!("lt-{}-{}-{}-{}", self.run_id, self.index, conn, cycle)
    }

    async fn open(&self, conn: u64, cycle: u64) -> Result<(ws::Ws, Duration)> {
        let token = self.minter.mint(&self.user(conn, cycle), TOKEN_TTL_S)?;
        let target = match self.ws_targets.len() {
            0 => &self.target,
            n => &self.ws_targets[((conn + self.index) % n as u64) as usize],
        };
        ws::open(
            target.addr,
            &target.host,
            self.source(conn),
            &token,
            self.cli.op_timeout.max(Duration::from_secs(10)),
        )
        .await
    }

    fn send(&self, m: FromWorker) {
        let _ = self.out.send(m);
    }
}

pub fn tally(errors: &mut BTreeMap<String, u64>, what: String) {
    if errors.len() >= MAX_ERROR_KINDS && !errors.contains_key(&what) {
        *errors.entry("other".into()).or_insert(0) += 1;
    } else {
        *errors.entry(what).or_insert(0) += 1;
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
        minter: TokenMinter::new(&cli.jwt_secret),
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
    let res = match cli.scenario {
        Scenario::Churn => churn(ctx.clone(), cmd_rx).await,
        Scenario::Ping => ping(ctx.clone(), cmd_rx).await,
        Scenario::Connect | Scenario::Fanout | Scenario::Throughput => {
            subscribers(ctx.clone(), cmd_rx).await
        }
        Scenario::Soak => Err(anyhow::anyhow!(
            "soak runs in the coordinating process, not in workers"
        )),
    };
    drop(ctx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    res
}

// ---------------------------------------------------------------- subscribers

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

enum Outcome {
    Up(Duration),
    Failed(String),
}

async fn subscribers(ctx: Arc<Ctx>, mut cmds: mpsc::UnboundedReceiver<ToWorker>) -> Result<()> {
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
    // Collect one outcome per connection (each task sends exactly one, or ends).
    let mut hs_hist = stats::new_hist();
    let (mut up, mut failed) = (0u64, 0u64);
    let mut errors = BTreeMap::new();
    while let Some(o) = up_rx.recv().await {
        match o {
            Outcome::Up(d) => {
                up += 1;
                hs_hist.saturating_record((d.as_nanos() as u64).max(1));
            }
            Outcome::Failed(e) => {
                failed += 1;
                tally(&mut errors, e);
            }
        }
        if up + failed >= n {
            break;
        }
    }
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
            ToWorker::Stop => break,
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}

// ----------------------------------------------------------------------- ping

#[derive(Default)]
struct PingTotals {
    hist: Option<Hist>,
    ops: u64,
    lost: u64,
    unexpected: u64,
    first_ns: u64,
    last_ns: u64,
    errors: BTreeMap<String, u64>,
    open: u64,
}

async fn ping(ctx: Arc<Ctx>, mut cmds: mpsc::UnboundedReceiver<ToWorker>) -> Result<()> {
    let cli = ctx.cli.clone();
    let n = share(cli.connections, ctx.index, ctx.count);
    let totals = Arc::new(Mutex::new(PingTotals {
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
            ToWorker::EndPhase { .. } => {}
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

async fn collect_ups(
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

// ---------------------------------------------------------------------- churn

async fn churn(ctx: Arc<Ctx>, mut cmds: mpsc::UnboundedReceiver<ToWorker>) -> Result<()> {
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
    let totals = Arc::new(Mutex::new(PingTotals {
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
