//! The soak's base population: `-n` long-lived connections, each its own
//! user subscribed to a fixed four events, recording every delivery and ping
//! round trip in the [`super::book::Book`]. Connected before the measured
//! run, closed after it (then the server should give its fds back).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::book::{base_events, EVENTS};
use super::rng::Rng;
use super::{close_code, request, sub_msg, Shared};
use crate::ctl::tally;
use crate::procfs::{fd_count, rss_kib};
use crate::proto::{self, mono_ns};
use crate::ws;

/// The base population's connection tasks, until [`Population::close`].
pub struct Population {
    tasks: Vec<JoinHandle<()>>,
    stop_tx: watch::Sender<bool>,
}

/// How connecting the base population went.
pub struct BaseUp {
    pub connected: u64,
    pub failed: u64,
    pub connect_errors: BTreeMap<String, u64>,
    pub connect_s: f64,
}

/// Opens the `-n` base connections (`--concurrency` handshakes at a time)
/// and waits, at most 120 s, until each is subscribed or has failed.
pub async fn connect(sh: &Arc<Shared>, deadline: Instant) -> Result<(Population, BaseUp)> {
    let n = sh.cli.connections as usize;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (up_tx, mut up_rx) = mpsc::unbounded_channel();
    let sem = Arc::new(Semaphore::new(sh.cli.concurrency.max(1) as usize));
    let connect_start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for conn in 0..n {
        tasks.push(tokio::spawn(base_conn(
            sh.clone(),
            conn,
            sem.clone(),
            up_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(up_tx);
    let (mut connected, mut failed) = (0u64, 0u64);
    let mut connect_errors = BTreeMap::new();
    let connect_deadline = (Instant::now() + Duration::from_secs(120)).min(deadline);
    while connected + failed < n as u64 {
        match tokio::time::timeout_at(connect_deadline.into(), up_rx.recv()).await {
            Ok(Some(Up::Ok)) => connected += 1,
            Ok(Some(Up::Failed(e))) => {
                failed += 1;
                tally(&mut connect_errors, e);
            }
            Ok(None) => break,
            Err(_) => bail!("base population: {connected} of {n} connected after 120 s"),
        }
    }
    let up = BaseUp {
        connected,
        failed,
        connect_errors,
        connect_s: connect_start.elapsed().as_secs_f64(),
    };
    Ok((Population { tasks, stop_tx }, up))
}

impl Population {
    /// Closes every base connection (waiting at most 15 s), then waits at
    /// most 10 s for the server's open fds to drop back to `fds_before`.
    /// Returns the server's open fds and RSS then.
    pub async fn close(self, pid: u32, fds_before: u64) -> (Option<u64>, Option<u64>) {
        let _ = self.stop_tx.send(true);
        let close_wait = Instant::now() + Duration::from_secs(15);
        for t in self.tasks {
            if tokio::time::timeout_at(close_wait.into(), t).await.is_err() {
                break;
            }
        }
        let settle = Instant::now() + Duration::from_secs(10);
        let mut fds_after = fd_count(pid);
        // Bounded by `settle`.
        while Instant::now() < settle && fds_after.is_some_and(|f| f > fds_before) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            fds_after = fd_count(pid);
        }
        (fds_after, rss_kib(pid))
    }
}

enum Up {
    Ok,
    Failed(String),
}

async fn base_conn(
    sh: Arc<Shared>,
    conn: usize,
    sem: Arc<Semaphore>,
    up_tx: mpsc::UnboundedSender<Up>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let Ok(permit) = sem.acquire_owned().await else {
        return;
    };
    let mut sock = match sh.open(&sh.base_user(conn), conn as u64).await {
        Ok(s) => s,
        Err(e) => {
            let _ = up_tx.send(Up::Failed(ws::describe(&e)));
            return;
        }
    };
    let msg = sub_msg("subscribe", &base_events(conn), &format!("b{conn}"));
    if let Err(e) = request(
        &mut sock,
        msg,
        "subscription.confirmed",
        sh.cli.op_timeout.max(Duration::from_secs(10)),
        &mut |_| {},
    )
    .await
    {
        let _ = up_tx.send(Up::Failed(format!("subscribe: {}", ws::describe(&e))));
        return;
    }
    drop(permit);
    sh.book().up(conn);
    let _ = up_tx.send(Up::Ok);
    drop(up_tx);

    let period = sh.cli.app_ping_interval.max(Duration::from_millis(100));
    let mut rng = Rng::new(mono_ns() ^ ((conn as u64) << 32));
    let offset = Duration::from_nanos(rng.below(period.as_nanos() as u64));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let prefix = format!("p{conn}.");
    let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
    let mut k = 0u64;
    // Bounded: ends on stop (after the drain) or when the socket dies.
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
                    let now = mono_ns();
                    let Some(msg) = proto::parse(t.as_str()) else {
                        sh.book().unparsable += 1;
                        continue;
                    };
                    if msg.ty == "pong" {
                        let id = msg.data.as_ref().and_then(|d| d.ping_id.as_deref());
                        let n = id
                            .and_then(|id| id.strip_prefix(prefix.as_str()))
                            .and_then(|n| n.parse::<u64>().ok());
                        let mut b = sh.book();
                        // Pongs come back in order: older unanswered pings are gone.
                        while pending.front().is_some_and(|(pk, _)| Some(*pk) < n) {
                            pending.pop_front();
                        }
                        match pending.front() {
                            Some((pk, t0)) if Some(*pk) == n => {
                                b.pongs += 1;
                                b.rtt.saturating_record(now.saturating_sub(*t0).max(1));
                                pending.pop_front();
                            }
                            _ => b.stray_pongs += 1,
                        }
                        continue;
                    }
                    if let Some((Some(seq), t)) = msg.data.as_ref().map(|d| (d.seq, d.t)) {
                        if EVENTS.contains(&msg.ty.as_ref()) {
                            sh.book().delivery(conn, seq, t.unwrap_or(0), now);
                        }
                    }
                }
                Some(Ok(Message::Close(c))) => break format!("closed by server ({})", close_code(c)),
                Some(Ok(_)) => {}
                Some(Err(e)) => break ws::describe(&e.into()),
                None => break "EOF".to_string(),
            },
            _ = tick.tick() => {
                if sh.stopped() {
                    continue;
                }
                k += 1;
                pending.push_back((k, mono_ns()));
                if pending.len() > 64 {
                    pending.pop_front();
                }
                sh.book().pings += 1;
                let id = format!("{prefix}{k}");
                if let Err(e) = sock.send(Message::text(proto::ping_msg(&id))).await {
                    break ws::describe(&e.into());
                }
            }
        }
    };
    sh.book().dead(conn, why);
    // Keep the task (and its stop receiver) until stop, so the count of tasks is stable.
    let _ = stop_rx.wait_for(|s| *s).await;
}
