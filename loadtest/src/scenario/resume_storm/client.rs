//! The worker half of resume-storm: N client tasks, each connected and
//! subscribed, tracking its three streams (user, broadcast, the bench
//! event); on the coordinator's steps it drops its socket, reconnects with
//! `resume=1` and its positions, times the `resumed`, and finally checks its
//! offsets against the streams' tops. A client keeps three [`Track`]s and its
//! socket: a few hundred bytes beside tungstenite's buffers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::track::{Mark, Track};
use super::{Step, Top, Totals, STREAMS};
use crate::cli::share;
use crate::ctl::{tally, FromWorker, ToWorker};
use crate::proto::{self, mono_ns};
use crate::stats::{self, Hist};
use crate::worker::{collect_ups, Ctx, Outcome};
use crate::ws::{self, Ws};

/// How long a reconnecting client may take to get its `resumed`: a storm of
/// 19,000 handshakes on one core, SYN retransmits included.
const RESUME_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Run,
    Drop,
    Reconnect,
    Verify(Arc<Vec<Top>>),
    Stop,
}

struct Shared {
    totals: Totals,
    hist: Hist,
}

type St = Arc<Mutex<Shared>>;

fn lock(st: &St) -> std::sync::MutexGuard<'_, Shared> {
    st.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    stream: Option<Pos<'a>>,
}

#[derive(Deserialize)]
struct Pos<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    epoch: std::borrow::Cow<'a, str>,
    offset: u64,
}

/// Which of the client's three streams a stream name is (index into [`STREAMS`]).
fn stream_index(name: &str) -> Option<usize> {
    if name.starts_with("user:") {
        Some(0)
    } else if name == "broadcast" {
        Some(1)
    } else if name.starts_with("event:") {
        Some(2)
    } else {
        None
    }
}

/// One client's state across its two connections.
struct Client {
    tracks: [Track; 3],
    /// The user stream's top from `resumed` (no user publishes follow the gap).
    user_top: u64,
    resumed_at: Option<u64>,
    errors: BTreeMap<String, u64>,
}

impl Client {
    /// Accounts a text frame; returns its type when it carried no position.
    fn on_text(&mut self, text: &str) -> Option<String> {
        let Ok(f) = serde_json::from_str::<Frame>(text) else {
            tally(&mut self.errors, "unparsable frame".into());
            return None;
        };
        let Some(p) = f.stream else {
            return Some(f.ty.into_owned());
        };
        let Some(i) = stream_index(&p.name) else {
            tally(&mut self.errors, format!("frame on stream {}", p.name));
            return None;
        };
        let _: Mark = self.tracks[i].mark(&p.epoch, p.offset);
        None
    }

    fn primed(&self, warmup: u64) -> bool {
        self.tracks.iter().all(|t| t.received >= warmup)
    }

    fn resume_msg(&self) -> String {
        let pos = |t: &Track| match t.position() {
            Some((e, o)) => json!({"epoch": e, "offset": o}),
            None => Value::Null,
        };
        json!({"type": "resume", "id": "r", "data": {
            "user": pos(&self.tracks[0]),
            "broadcast": pos(&self.tracks[1]),
            "events": {proto::EVENT: pos(&self.tracks[2])},
        }})
        .to_string()
    }

    /// Applies `resumed`'s data: rebase the streams that did not recover.
    fn on_resumed(&mut self, data: &Value, t: &mut Totals) {
        if data["recovered"] == Value::Bool(true) {
            t.recovered += 1;
        }
        let Some(streams) = data["streams"].as_object() else {
            tally(&mut self.errors, "resumed without streams".into());
            return;
        };
        for (name, e) in streams {
            let Some(i) = stream_index(name) else {
                continue;
            };
            let offset = e["offset"].as_u64().unwrap_or(0);
            t.replayed += e["replayed"].as_u64().unwrap_or(0);
            if i == 0 {
                self.user_top = offset;
            }
            match e["recovered"].as_bool() {
                Some(true) => {}
                Some(false) => {
                    let reason = e["reason"].as_str().unwrap_or("?");
                    *t.reasons
                        .entry(format!("{}:{reason}", STREAMS[i]))
                        .or_insert(0) += 1;
                    self.tracks[i].rebase(e["epoch"].as_str(), offset);
                }
                None => tally(&mut self.errors, format!("no position given for {name}")),
            }
        }
    }

    /// Adds this client's offset figures against the tops (event and broadcast from
    /// the publisher, user from `resumed`).
    fn verify(&self, tops: &[Top], t: &mut Totals) {
        let (mut lost, mut dup) = (0, 0);
        for (i, tr) in self.tracks.iter().enumerate() {
            let top = if i == 0 {
                Some(self.user_top)
            } else {
                tops.iter()
                    .find(|x| x.stream == i)
                    .filter(|x| tr.epoch() == Some(x.epoch.as_str()))
                    .map(|x| x.offset)
            };
            match top {
                Some(top) => lost += tr.lost(top),
                None if tops.iter().any(|x| x.stream == i) => {
                    *t.errors
                        .entry(format!(
                            "{}: epoch differs from the publisher's",
                            STREAMS[i]
                        ))
                        .or_insert(0) += 1;
                }
                None => {}
            }
            dup += tr.duplicates;
            t.out_of_order += tr.out_of_order;
            t.covered += tr.covered;
            t.wrong_epoch += tr.wrong_epoch + tr.out_of_range;
        }
        t.lost += lost;
        t.dup += dup;
        t.clients_lost += u64::from(lost > 0);
        t.clients_dup += u64::from(dup > 0);
        t.verified += 1;
    }

    /// Reached every top: nothing more to wait for.
    fn complete(&self, tops: &[Top]) -> bool {
        self.tracks[0].lost(self.user_top) == 0
            && tops.iter().all(|x| {
                self.tracks[x.stream].epoch() == Some(x.epoch.as_str())
                    && self.tracks[x.stream].lost(x.offset) == 0
            })
    }
}

/// Waits for the next phase other than `now`; `None` when the coordinator is gone.
async fn next_phase(rx: &mut watch::Receiver<Phase>, now: &Phase) -> Phase {
    loop {
        let p = rx.borrow_and_update().clone();
        if &p != now {
            return p;
        }
        if rx.changed().await.is_err() {
            return Phase::Stop;
        }
    }
}

/// Reads frames into `c` until the phase moves on (or, with `until`, `until` says
/// done); `Err` when the socket ends.
async fn read_until(
    sock: &mut Ws,
    c: &mut Client,
    rx: &mut watch::Receiver<Phase>,
    phase: &Phase,
    mut until: impl FnMut(&Client) -> bool,
) -> Result<Phase, String> {
    loop {
        if until(c) {
            return Ok(phase.clone());
        }
        tokio::select! {
            p = next_phase(rx, phase) => return Ok(p),
            m = sock.next() => match m {
                Some(Ok(Message::Text(t))) => { c.on_text(t.as_str()); }
                Some(Ok(Message::Close(f))) => {
                    return Err(format!("closed by server ({})", f.map_or(1005, |f| u16::from(f.code))))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws::describe(&e.into())),
                None => return Err("EOF".into()),
            }
        }
    }
}

/// Reconnects with `resume=1`, sends the positions, waits for `resumed`.
async fn resume(ctx: &Ctx, conn: u64, c: &mut Client, st: &St) -> Result<Ws, String> {
    let t0 = mono_ns();
    let fut = async {
        let (mut sock, _) = ctx
            // A storm overflows the accept queue: SYN retransmits (1 s, 3 s, 7 s, ...)
            // are part of the figure, so only the storm's own bound applies.
            .open_query(conn, 0, "?resume=1", RESUME_TIMEOUT)
            .await
            .map_err(|e| ws::describe(&e))?;
        sock.send(Message::text(c.resume_msg()))
            .await
            .map_err(|e| ws::describe(&e.into()))?;
        // Nothing but `resumed` comes before it (the hold); a few frames of slack.
        for _ in 0..16 {
            match sock.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["type"] == "resumed" {
                        let now = mono_ns();
                        let mut s = lock(st);
                        s.hist.saturating_record(now.saturating_sub(t0).max(1));
                        let t = &mut s.totals;
                        t.resumed += 1;
                        t.first_reconnect_ns = match t.first_reconnect_ns {
                            0 => t0,
                            f => f.min(t0),
                        };
                        t.last_resumed_ns = t.last_resumed_ns.max(now);
                        c.on_resumed(&v["data"], t);
                        c.resumed_at = Some(now);
                        return Ok(sock);
                    }
                    if let Some(ty) = c.on_text(t.as_str()) {
                        if ty == "error" {
                            return Err(format!("error frame: {}", v["data"]["code"]));
                        }
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(format!(
                        "closed ({})",
                        f.map_or(1005, |f| u16::from(f.code))
                    ))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws::describe(&e.into())),
                None => return Err("EOF before resumed".into()),
            }
        }
        Err("no resumed in 16 frames".into())
    };
    tokio::time::timeout(RESUME_TIMEOUT, fut)
        .await
        .map_err(|_| "resumed timeout".to_string())?
}

async fn client(
    ctx: Arc<Ctx>,
    conn: u64,
    st: St,
    mut rx: watch::Receiver<Phase>,
    up: mpsc::UnboundedSender<Outcome>,
    sem: Arc<Semaphore>,
) {
    let cli = ctx.cli.clone();
    let Ok(permit) = sem.acquire_owned().await else {
        return;
    };
    let (mut sock, hs) = match ctx.open(conn, 0).await {
        Ok(x) => x,
        Err(e) => {
            let _ = up.send(Outcome::Failed(ws::describe(&e)));
            return;
        }
    };
    if let Err(e) = ws::subscribe(
        &mut sock,
        &format!("s{conn}"),
        cli.op_timeout.max(Duration::from_secs(10)),
    )
    .await
    {
        let _ = up.send(Outcome::Failed(format!("subscribe: {}", ws::describe(&e))));
        return;
    }
    drop(permit);
    let _ = up.send(Outcome::Up(hs));
    drop(up);
    let mut c = Client {
        tracks: Default::default(),
        user_top: 0,
        resumed_at: None,
        errors: BTreeMap::new(),
    };
    // Run: the recorded warm-up arrives; Drop (or the server going away) ends it.
    let mut primed = false;
    let warmup = cli.warmup;
    let mut sock = Some(sock);
    let mut phase = Phase::Run;
    while phase == Phase::Run {
        let Some(s) = sock.as_mut() else {
            phase = next_phase(&mut rx, &phase).await;
            break;
        };
        match read_until(s, &mut c, &mut rx, &phase, |c| !primed && c.primed(warmup)).await {
            Ok(Phase::Run) => {
                primed = true;
                lock(&st).totals.primed += 1;
            }
            Ok(p) => phase = p,
            Err(_) => {
                // The server went away first (--after restart): expected there.
                lock(&st).totals.closed_early += 1;
                sock = None;
            }
        }
    }
    drop(sock); // the blip: the TCP socket closes without a close frame
    lock(&st).totals.dropped += 1;
    if phase == Phase::Drop {
        phase = next_phase(&mut rx, &phase).await;
    }
    if phase != Phase::Reconnect {
        return;
    }
    if !cli.reconnect_spread.is_zero() {
        let spread = cli.reconnect_spread.as_nanos() as u64;
        let jitter = (mono_ns() ^ conn.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % spread;
        tokio::time::sleep(Duration::from_nanos(jitter)).await;
    }
    let mut sock = match resume(&ctx, conn, &mut c, &st).await {
        Ok(s) => s,
        Err(e) => {
            let mut s = lock(&st);
            s.totals.resume_failed += 1;
            tally(&mut s.totals.errors, e);
            return;
        }
    };
    // Replays and live events until Verify; then until complete or --drain.
    let mut why = None;
    match read_until(&mut sock, &mut c, &mut rx, &phase, |_| false).await {
        Ok(p) => phase = p,
        Err(e) => {
            why = Some(e);
            phase = next_phase(&mut rx, &phase).await;
        }
    }
    if let Phase::Verify(tops) = phase.clone() {
        if why.is_none() {
            let until = Instant::now() + cli.drain;
            let r = tokio::time::timeout_at(
                until,
                read_until(&mut sock, &mut c, &mut rx, &phase, |c| c.complete(&tops)),
            )
            .await;
            if let Ok(Err(e)) = r {
                why = Some(e);
            }
        }
        {
            let mut s = lock(&st);
            c.verify(&tops, &mut s.totals);
            if let Some(e) = why {
                tally(&mut s.totals.errors, format!("after resume: {e}"));
            }
            for (k, v) in std::mem::take(&mut c.errors) {
                *s.totals.errors.entry(k).or_insert(0) += v;
            }
        }
        let _ = next_phase(&mut rx, &phase).await;
    }
    ws::close(sock).await;
}

/// Runs the worker's share of the clients through the coordinator's steps.
pub async fn work(ctx: Arc<Ctx>, mut cmds: mpsc::UnboundedReceiver<ToWorker>) -> Result<()> {
    let cli = ctx.cli.clone();
    let n = share(cli.connections, ctx.index, ctx.count);
    let st: St = Arc::new(Mutex::new(Shared {
        totals: Totals::default(),
        hist: stats::new_hist(),
    }));
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<Outcome>();
    let sem = Arc::new(Semaphore::new(
        share(cli.concurrency, ctx.index, ctx.count).max(1) as usize,
    ));
    let started = std::time::Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for conn in 0..n {
        tasks.push(tokio::spawn(client(
            ctx.clone(),
            conn,
            st.clone(),
            phase_rx.clone(),
            up_tx.clone(),
            sem.clone(),
        )));
    }
    drop(up_tx);
    let (up, failed, errors, hs_hist) = collect_ups(&mut up_rx, n).await;
    lock(&st).totals.up = up;
    ctx.send(FromWorker::Ready {
        connected: up,
        failed,
        connect_s: started.elapsed().as_secs_f64(),
        hist: stats::encode(&hs_hist)?,
        errors,
    });
    // Each step: move the clients on, wait (bounded) until they all did it, report.
    while let Some(cmd) = cmds.recv().await {
        let step = match cmd {
            ToWorker::Scenario { msg } => serde_json::from_value::<Step>(msg)?,
            ToWorker::Stop => break,
            _ => continue,
        };
        let (phase, limit, done): (Phase, Duration, fn(&Totals) -> bool) = match step {
            Step::Prime { ms } => (Phase::Run, Duration::from_millis(ms), |t| t.primed >= t.up),
            Step::Drop => (Phase::Drop, Duration::from_secs(30), |t| t.dropped >= t.up),
            Step::Reconnect => (
                Phase::Reconnect,
                RESUME_TIMEOUT + Duration::from_secs(10),
                |t| t.resumed + t.resume_failed >= t.dropped,
            ),
            Step::Verify { tops } => (
                Phase::Verify(Arc::new(tops)),
                cli.drain + Duration::from_secs(10),
                |t| t.verified >= t.resumed,
            ),
        };
        let _ = phase_tx.send(phase);
        let until = Instant::now() + limit;
        while !done(&lock(&st).totals) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut report = {
            let s = lock(&st);
            let mut t = s.totals.clone();
            t.hist = stats::encode(&s.hist)?;
            t
        };
        report.done = done(&report);
        ctx.send(FromWorker::Scenario {
            msg: serde_json::to_value(&report)?,
        });
    }
    let _ = phase_tx.send(Phase::Stop);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}
