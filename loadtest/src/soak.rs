//! The soak scenario: a long run that keeps a base population of subscribed
//! connections open, churns short-lived connections next to it, publishes a
//! steady mix of broadcasts, and samples the server's RSS and open file
//! descriptors once a second to decide at the end whether either keeps growing.
//!
//! Runs in the coordinating process only (`--procs 1`): a soak is about the
//! server's steady state, not about load, so one generator thread is plenty.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{Cli, Target};
use crate::coord::{cpu_s, rss_kib};
use crate::http::{self, HttpClient};
use crate::proto::{self, mono_ns, TokenMinter};
use crate::report::Row;
use crate::seq::{Mark, SeqTracker};
use crate::stats::{self, Hist};
use crate::worker::tally;
use crate::ws;

/// The subscribable events (SPEC section 3).
pub const EVENTS: [&str; 12] = [
    "upload.progress",
    "upload.completed",
    "upload.error",
    "upload.cancelled",
    "review.updated",
    "review.created",
    "review.deleted",
    "system.notification",
    "system.maintenance",
    "user.status_changed",
    "file.processing",
    "file.ready",
];

const EVENTS_PATH: &str = "/api/v1/events";
const TOKEN_TTL_S: u64 = 24 * 3600;
/// Fewer samples than this: no growth verdict.
pub const MIN_SAMPLES: usize = 10;
/// Broadcast payload (`data`) sizes, bytes.
const PAYLOAD_MIN: u64 = 100;
const PAYLOAD_MAX: u64 = 4096;
/// Users named in a user-targeted broadcast (plus one unknown id).
const MAX_USERS_PER_PUBLISH: u64 = 8;

// ------------------------------------------------------------ growth decision

/// The growth decision for one sampled series.
#[derive(Clone, Debug, PartialEq)]
pub struct Growth {
    /// Median of the samples from 20% to 40% of the run (after the warm-up).
    pub baseline: f64,
    /// Median of the last 20% of the samples.
    pub tail: f64,
    /// `tail - baseline`.
    pub growth: f64,
    /// Allowed growth: `max(baseline * rel_tol, abs_min)`.
    pub limit: f64,
    pub growing: bool,
}

/// Median (mean of the two middle values for an even count); 0 for an empty slice.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Sample index windows of a series of `n`: baseline `[n/5, 2n/5)` and tail
/// `[n - n/5, n)`. The first fifth is warm-up and ignored.
pub fn windows(n: usize) -> (Range<usize>, Range<usize>) {
    let fifth = n / 5;
    (fifth..2 * fifth, n - fifth..n)
}

/// Whether a series keeps growing: the median of its last 20% against the median
/// of 20%..40% (medians, so single spikes and GC-like dips do not decide). `rel_tol`
/// is a fraction (0.10 = 10%). `None` below [`MIN_SAMPLES`] samples.
pub fn growth(samples: &[f64], rel_tol: f64, abs_min: f64) -> Option<Growth> {
    let n = samples.len();
    if n < MIN_SAMPLES {
        return None;
    }
    let (b, t) = windows(n);
    let baseline = median(&samples[b]);
    let tail = median(&samples[t]);
    let growth = tail - baseline;
    let limit = (baseline.abs() * rel_tol).max(abs_min);
    Some(Growth {
        baseline,
        tail,
        growth,
        limit,
        growing: growth > limit,
    })
}

// ------------------------------------------------------------------- samples

/// One sample a second of the server and the run.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    pub t_s: Vec<f64>,
    pub rss_kib: Vec<u64>,
    pub fds: Vec<u64>,
    pub loadavg_1m: Vec<f64>,
    pub cycles: Vec<u64>,
    pub broadcasts: Vec<u64>,
}

impl Samples {
    fn rss_f(&self) -> Vec<f64> {
        self.rss_kib.iter().map(|v| *v as f64).collect()
    }

    fn fds_f(&self) -> Vec<f64> {
        self.fds.iter().map(|v| *v as f64).collect()
    }

    pub fn csv(&self) -> String {
        let mut s = String::from("t_s,rss_kib,fds,loadavg_1m,cycles,broadcasts\n");
        for i in 0..self.t_s.len() {
            let _ = writeln!(
                s,
                "{:.1},{},{},{:.2},{},{}",
                self.t_s[i],
                self.rss_kib[i],
                self.fds[i],
                self.loadavg_1m[i],
                self.cycles[i],
                self.broadcasts[i]
            );
        }
        s
    }

    fn json(&self) -> Value {
        let t: Vec<f64> = self.t_s.iter().map(|t| (t * 10.0).round() / 10.0).collect();
        json!({
            "t_s": t,
            "rss_kib": self.rss_kib,
            "fds": self.fds,
            "loadavg_1m": self.loadavg_1m,
        })
    }
}

/// What the soak plot needs from a row.
#[derive(Clone, Debug)]
pub struct SoakPlot {
    pub samples: Samples,
    pub rss: Option<Growth>,
    pub fds: Option<Growth>,
}

/// Open file descriptors of a process (entries of /proc/PID/fd).
pub fn fd_count(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

pub fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
}

// ----------------------------------------------------------------------- rng

/// SplitMix64: small, seedable, good enough to pick events and sizes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// `k` distinct values of `0..n`, in random order.
    pub fn distinct(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below((n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

// ------------------------------------------------------------ the accounting

/// Who a broadcast was addressed to (indexed by its seq).
#[derive(Clone, Debug, PartialEq)]
pub enum To {
    /// Subscribers of `EVENTS[i]`.
    Subscribers(usize),
    /// These base connections' users (each base connection has its own user).
    Users(Vec<u32>),
    All,
    /// The server did not accept it: nobody should count on it.
    Failed,
}

/// Base connection `conn` is subscribed to event `ev`: a fixed third of the
/// population per event, four events per connection.
pub fn base_subscribed(conn: usize, ev: usize) -> bool {
    (conn + ev).is_multiple_of(3)
}

fn base_events(conn: usize) -> Vec<&'static str> {
    (0..EVENTS.len())
        .filter(|e| base_subscribed(conn, *e))
        .map(|e| EVENTS[e])
        .collect()
}

impl To {
    pub fn expects(&self, conn: usize) -> bool {
        match self {
            To::Subscribers(ev) => base_subscribed(conn, *ev),
            To::Users(list) => list.contains(&(conn as u32)),
            To::All => true,
            To::Failed => false,
        }
    }
}

/// Deliveries to the base population, checked against what was published.
pub struct Book {
    specs: Vec<To>,
    trackers: Vec<SeqTracker>,
    alive: Vec<bool>,
    live: u64,
    latency: Hist,
    /// Expected first receipts (accepted publishes x base connections alive then).
    expected: u64,
    /// First receipts that were expected.
    got: u64,
    dup: u64,
    /// A delivery to a base connection it was not addressed to, or an unknown seq.
    misdelivered: u64,
    /// Deliveries of broadcasts whose publish failed (timeout after the server took it).
    failed_but_delivered: u64,
    unparsable: u64,
    errors: BTreeMap<String, u64>,
    pings: u64,
    pongs: u64,
    stray_pongs: u64,
    rtt: Hist,
}

impl Book {
    pub fn new(n: usize) -> Self {
        Self {
            specs: Vec::new(),
            trackers: vec![SeqTracker::new(); n],
            alive: vec![false; n],
            live: 0,
            latency: stats::new_hist(),
            expected: 0,
            got: 0,
            dup: 0,
            misdelivered: 0,
            failed_but_delivered: 0,
            unparsable: 0,
            errors: BTreeMap::new(),
            pings: 0,
            pongs: 0,
            stray_pongs: 0,
            rtt: stats::new_hist(),
        }
    }

    /// Registers the next broadcast before it is sent (a delivery may beat the
    /// HTTP answer); returns its seq.
    pub fn register(&mut self, to: To) -> u64 {
        self.specs.push(to);
        self.specs.len() as u64 - 1
    }

    /// The publish of `seq` was accepted: count the deliveries now expected.
    pub fn accepted(&mut self, seq: u64) {
        let Some(to) = self.specs.get(seq as usize) else {
            return;
        };
        let n = (0..self.alive.len())
            .filter(|c| self.alive[*c] && to.expects(*c))
            .count() as u64;
        self.expected += n;
    }

    pub fn failed(&mut self, seq: u64) {
        if let Some(s) = self.specs.get_mut(seq as usize) {
            *s = To::Failed;
        }
    }

    pub fn up(&mut self, conn: usize) {
        if !self.alive[conn] {
            self.alive[conn] = true;
            self.live += 1;
        }
    }

    pub fn dead(&mut self, conn: usize, why: String) {
        if self.alive[conn] {
            self.alive[conn] = false;
            self.live = self.live.saturating_sub(1);
            tally(&mut self.errors, format!("base connection lost: {why}"));
        }
    }

    pub fn delivery(&mut self, conn: usize, seq: u64, t_ns: u64, now_ns: u64) {
        let Some(to) = self.specs.get(seq as usize) else {
            self.misdelivered += 1;
            return;
        };
        let expected = to.expects(conn);
        let failed = *to == To::Failed;
        match self.trackers[conn].mark(seq) {
            Mark::New if expected => {
                self.got += 1;
                self.latency
                    .saturating_record(now_ns.saturating_sub(t_ns).max(1));
            }
            Mark::New if failed => self.failed_but_delivered += 1,
            Mark::New | Mark::OutOfRange => self.misdelivered += 1,
            Mark::Duplicate => self.dup += 1,
        }
    }

    /// Expected deliveries missing on connections that are still open.
    pub fn lost(&self) -> u64 {
        let mut lost = 0;
        for (conn, (t, alive)) in self.trackers.iter().zip(&self.alive).enumerate() {
            if !*alive {
                continue;
            }
            for (seq, to) in self.specs.iter().enumerate() {
                if to.expects(conn) && !t.seen(seq as u64) {
                    lost += 1;
                }
            }
        }
        lost
    }
}

#[derive(Default)]
struct ChurnTotals {
    cycles: u64,
    resubscribed: u64,
    abrupt: u64,
    deliveries: u64,
    dup: u64,
    pongs: u64,
    errors: BTreeMap<String, u64>,
    cycle_hist: Option<Hist>,
}

#[derive(Default)]
struct PubTotals {
    ok: u64,
    subscribers: u64,
    users: u64,
    all: u64,
    failed: u64,
    /// `delivered` below the number of base connections it was addressed to.
    delivered_short: u64,
    errors: BTreeMap<String, u64>,
}

struct Shared {
    cli: Arc<Cli>,
    target: Target,
    run_id: String,
    minter: TokenMinter,
    book: Mutex<Book>,
    churn: Mutex<ChurnTotals>,
    /// Set at the end of `-d`: churn loops, the publisher and app pings stop.
    stop: AtomicBool,
    cycles: AtomicU64,
    broadcasts: AtomicU64,
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn churn(&self) -> MutexGuard<'_, ChurnTotals> {
        self.churn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn source(&self, k: u64) -> std::net::Ipv4Addr {
        let ips = &self.cli.source_ips.0;
        ips[(k % ips.len() as u64) as usize]
    }

    fn base_user(&self, conn: usize) -> String {
        format!("lt-{}-b{conn}", self.run_id)
    }

    async fn open(&self, user: &str, src: u64) -> Result<ws::Ws> {
        let token = self.minter.mint(user, TOKEN_TTL_S)?;
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

fn sub_msg(ty: &str, events: &[&str], id: &str) -> String {
    json!({"type": ty, "data": {"events": events}, "id": id}).to_string()
}

fn close_code(c: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    c.map_or(1005, |c| u16::from(c.code))
}

/// Sends `msg` and reads until a frame of type `want` (an `error` frame fails);
/// other text frames go to `other`. Bounded by `timeout` and 4096 frames.
async fn request(
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

/// Describes an error for the tallies (short, no payloads).
fn short(e: &anyhow::Error) -> String {
    ws::describe(e)
}

// ----------------------------------------------------------- base population

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
            let _ = up_tx.send(Up::Failed(short(&e)));
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
        let _ = up_tx.send(Up::Failed(format!("subscribe: {}", short(&e))));
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
                Some(Err(e)) => break short(&e.into()),
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
                    break short(&e.into());
                }
            }
        }
    };
    sh.book().dead(conn, why);
    // Keep the task (and its stop receiver) until stop, so the count of tasks is stable.
    let _ = stop_rx.wait_for(|s| *s).await;
}

// --------------------------------------------------------------------- churn

#[derive(Default)]
struct Cycle {
    deliveries: u64,
    dup: u64,
    resubscribed: bool,
    abrupt: bool,
    pong: bool,
}

fn churn_frame(text: &str, tracker: &mut SeqTracker, c: &mut Cycle) {
    let Some(m) = proto::parse(text) else { return };
    if m.ty == "pong" {
        c.pong = true;
        return;
    }
    if let Some(seq) = m.data.as_ref().and_then(|d| d.seq) {
        if EVENTS.contains(&m.ty.as_ref()) {
            match tracker.mark(seq) {
                Mark::New => c.deliveries += 1,
                Mark::Duplicate => c.dup += 1,
                Mark::OutOfRange => {}
            }
        }
    }
}

/// One churn cycle: connect (a fresh user), subscribe to 1-4 random events, half the
/// time unsubscribe one and subscribe it again, sometimes ping, receive for 0.2-2 s,
/// disconnect (a quarter of the time by dropping the TCP connection without a close).
async fn churn_cycle(sh: &Shared, lp: u64, cycle: u64, rng: &mut Rng) -> Result<Cycle> {
    let op = sh.cli.op_timeout;
    let user = format!("lt-{}-c{lp}-{cycle}", sh.run_id);
    let mut sock = sh.open(&user, lp + cycle).await?;
    let mut tracker = SeqTracker::new();
    let mut c = Cycle::default();
    let k = 1 + rng.below(4) as usize;
    let evs: Vec<&str> = rng
        .distinct(k, EVENTS.len())
        .into_iter()
        .map(|i| EVENTS[i])
        .collect();
    request(
        &mut sock,
        sub_msg("subscribe", &evs, "cs"),
        "subscription.confirmed",
        op,
        &mut |t| churn_frame(t, &mut tracker, &mut c),
    )
    .await
    .context("subscribe")?;
    if rng.chance(1, 2) {
        let one = [evs[rng.below(evs.len() as u64) as usize]];
        request(
            &mut sock,
            sub_msg("unsubscribe", &one, "cu"),
            "unsubscription.confirmed",
            op,
            &mut |t| churn_frame(t, &mut tracker, &mut c),
        )
        .await
        .context("unsubscribe")?;
        request(
            &mut sock,
            sub_msg("subscribe", &one, "cr"),
            "subscription.confirmed",
            op,
            &mut |t| churn_frame(t, &mut tracker, &mut c),
        )
        .await
        .context("resubscribe")?;
        c.resubscribed = true;
    }
    let ping = rng.chance(1, 3);
    if ping {
        sock.send(Message::text(proto::ping_msg(&format!("c{lp}.{cycle}"))))
            .await?;
    }
    let dwell = Duration::from_millis(200 + rng.below(1800));
    let until = tokio::time::Instant::now() + dwell;
    let ping_until = tokio::time::Instant::now() + op;
    // Bounded by `until` (and `ping_until` while a pong is outstanding).
    loop {
        let wait = if ping && !c.pong {
            until.max(ping_until)
        } else {
            until
        };
        let m = match tokio::time::timeout_at(wait, sock.next()).await {
            Ok(m) => m,
            Err(_) => break,
        };
        match m {
            Some(Ok(Message::Text(t))) => churn_frame(t.as_str(), &mut tracker, &mut c),
            Some(Ok(Message::Close(cf))) => bail!("closed by server ({})", close_code(cf)),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("EOF"),
        }
        if (!ping || c.pong) && tokio::time::Instant::now() >= until {
            break;
        }
    }
    if ping && !c.pong {
        bail!("churn pong missing");
    }
    if rng.chance(1, 4) {
        drop(sock);
        c.abrupt = true;
    } else {
        ws::close(sock).await;
    }
    Ok(c)
}

async fn churn_loop(sh: Arc<Shared>, lp: u64) {
    let mut rng = Rng::new(mono_ns() ^ lp.wrapping_mul(0x9E37_79B9));
    let mut hist = stats::new_hist();
    let mut cycle = 0u64;
    let limit = sh.cli.op_timeout * 4 + Duration::from_secs(3);
    let max_cycles = sh.cli.cycles.unwrap_or(u64::MAX);
    // Bounded: stops when `stop` is set at the end of -d (each cycle has a timeout).
    while !sh.stopped() && sh.cycles.load(Ordering::Relaxed) < max_cycles {
        cycle += 1;
        let t0 = mono_ns();
        let r = tokio::time::timeout(limit, churn_cycle(&sh, lp, cycle, &mut rng)).await;
        let failed = match r {
            Ok(Ok(c)) => {
                hist.saturating_record(mono_ns().saturating_sub(t0).max(1));
                let mut tot = sh.churn();
                tot.cycles += 1;
                tot.deliveries += c.deliveries;
                tot.dup += c.dup;
                tot.resubscribed += u64::from(c.resubscribed);
                tot.abrupt += u64::from(c.abrupt);
                tot.pongs += u64::from(c.pong);
                sh.cycles.fetch_add(1, Ordering::Relaxed);
                false
            }
            Ok(Err(e)) => {
                tally(&mut sh.churn().errors, format!("churn: {}", short(&e)));
                true
            }
            Err(_) => {
                tally(&mut sh.churn().errors, "churn: cycle timeout".into());
                false
            }
        };
        if failed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut tot = sh.churn();
    match tot.cycle_hist.as_mut() {
        Some(h) => {
            let _ = stats::merge(h, &hist);
        }
        None => tot.cycle_hist = Some(hist),
    }
}

// ----------------------------------------------------------------- publisher

async fn publisher(sh: Arc<Shared>) -> PubTotals {
    let cli = sh.cli.clone();
    let mut http = HttpClient::new(
        sh.target.addr,
        &sh.target.host,
        &cli.api_key,
        cli.op_timeout.max(Duration::from_secs(10)),
    );
    let mut rng = Rng::new(mono_ns() ^ 0x5eed);
    let mut tot = PubTotals::default();
    let n = cli.connections as usize;
    let mut tick = tokio::time::interval(cli.publish_interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Bounded: stops when `stop` is set; each publish has a timeout.
    while !sh.stopped() {
        tick.tick().await;
        if sh.stopped() {
            break;
        }
        let r = rng.below(100);
        let ev = rng.below(EVENTS.len() as u64) as usize;
        let (to, extra) = if r < 60 {
            (To::Subscribers(ev), String::new())
        } else if r < 85 {
            let k = 1 + rng.below(MAX_USERS_PER_PUBLISH) as usize;
            let conns: Vec<u32> = rng.distinct(k, n).into_iter().map(|c| c as u32).collect();
            let mut users: Vec<String> = conns.iter().map(|c| sh.base_user(*c as usize)).collect();
            // An id nobody holds: skipped by the server.
            users.push(format!("lt-{}-nobody-{}", sh.run_id, rng.below(1_000_000)));
            let extra = format!(r#","users":{}"#, json!(users));
            (To::Users(conns), extra)
        } else {
            (To::All, r#","all":true"#.to_string())
        };
        let kind = match to {
            To::Subscribers(_) => 0,
            To::Users(_) => 1,
            _ => 2,
        };
        let addressed = {
            let b = sh.book();
            (0..n).filter(|c| b.alive[*c] && to.expects(*c)).count() as u64
        };
        let seq = sh.book().register(to);
        let size = (PAYLOAD_MIN + rng.below(PAYLOAD_MAX - PAYLOAD_MIN + 1)) as usize;
        let body = format!(
            r#"{{"type":"{}","data":{}{extra}}}"#,
            EVENTS[ev],
            proto::broadcast_data(seq, mono_ns(), size)
        );
        match http.post_json(EVENTS_PATH, &body).await {
            Ok(r) if r.status == 200 => {
                sh.book().accepted(seq);
                tot.ok += 1;
                match kind {
                    0 => tot.subscribers += 1,
                    1 => tot.users += 1,
                    _ => tot.all += 1,
                }
                if http::delivered(&r.body).is_some_and(|d| d < addressed) {
                    tot.delivered_short += 1;
                }
                sh.broadcasts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                sh.book().failed(seq);
                tot.failed += 1;
                tally(&mut tot.errors, format!("publish: HTTP {}", r.status));
            }
            Err(e) => {
                sh.book().failed(seq);
                tot.failed += 1;
                tally(
                    &mut tot.errors,
                    format!("publish: {e:#}").chars().take(80).collect(),
                );
            }
        }
    }
    tot
}

// ---------------------------------------------------------------------- run

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn push_growth(row: &mut Row, prefix: &str, unit: &str, g: Option<&Growth>) {
    let r0 = |x: f64| x.round();
    row.push(
        &format!("{prefix}_baseline_{unit}"),
        json!(g.map(|g| r0(g.baseline))),
    );
    row.push(
        &format!("{prefix}_tail_{unit}"),
        json!(g.map(|g| r0(g.tail))),
    );
    row.push(
        &format!("{prefix}_growth_{unit}"),
        json!(g.map(|g| r0(g.growth))),
    );
    row.push(
        &format!("{prefix}_growth_limit_{unit}"),
        json!(g.map(|g| r0(g.limit))),
    );
    let verdict = match g {
        None => "inconclusive",
        Some(g) if g.growing => "GROWING",
        Some(_) => "flat",
    };
    row.push(&format!("{prefix}_verdict"), json!(verdict));
}

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
        minter: TokenMinter::new(&cli.jwt_secret),
        book: Mutex::new(Book::new(n)),
        churn: Mutex::new(ChurnTotals::default()),
        stop: AtomicBool::new(false),
        cycles: AtomicU64::new(0),
        broadcasts: AtomicU64::new(0),
    });

    // 1. The base population.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (up_tx, mut up_rx) = mpsc::unbounded_channel();
    let sem = Arc::new(Semaphore::new(cli.concurrency.max(1) as usize));
    let connect_start = Instant::now();
    let mut base_tasks = Vec::with_capacity(n);
    for conn in 0..n {
        base_tasks.push(tokio::spawn(base_conn(
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
    let connect_s = connect_start.elapsed().as_secs_f64();
    eprintln!(
        "soak: base population {connected}/{n} up in {connect_s:.1}s; running {} with {} churn loops",
        humantime::format_duration(cli.duration),
        cli.churn
    );

    // 2. Churn, publisher, sampling for -d.
    let t0 = Instant::now();
    let server_cpu0 = cpu_s(pid);
    let gen_cpu0 = cpu_s(std::process::id()).unwrap_or(0.0);
    let mut churn_tasks = Vec::new();
    for lp in 0..cli.churn {
        churn_tasks.push(tokio::spawn(churn_loop(sh.clone(), lp)));
    }
    let pub_task = tokio::spawn(publisher(sh.clone()));
    let end = (t0 + cli.duration).min(deadline - Duration::from_secs(60).min(cli.timeout / 4));
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
    let soak_s = t0.elapsed().as_secs_f64();
    let server_cpu = match (server_cpu0, cpu_s(pid)) {
        (Some(a), Some(b)) => Some(round2((b - a) / soak_s.max(1e-9) * 100.0)),
        _ => None,
    };
    let gen_cpu =
        round2((cpu_s(std::process::id()).unwrap_or(0.0) - gen_cpu0) / soak_s.max(1e-9) * 100.0);

    // 3. Stop churn and publishing, drain, account.
    sh.stop.store(true, Ordering::Relaxed);
    let stop_wait = Instant::now() + cli.op_timeout * 4 + Duration::from_secs(15);
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
    let drain_until = Instant::now() + cli.drain;
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
    let (lost, book_row, base_errors, latency, rtt, live) = {
        let b = sh.book();
        let lost = b.lost();
        let mut r = Row::new();
        r.push("base_deliveries", json!(b.got));
        r.push("base_expected_deliveries", json!(b.expected));
        r.push("base_duplicated", json!(b.dup));
        r.push("misdelivered", json!(b.misdelivered));
        r.push("failed_but_delivered", json!(b.failed_but_delivered));
        r.push("unparsable_frames", json!(b.unparsable));
        r.push("app_pings", json!(b.pings));
        r.push("pong_missing", json!(b.pings.saturating_sub(b.pongs)));
        r.push("stray_pongs", json!(b.stray_pongs));
        (
            lost,
            r,
            b.errors.clone(),
            stats::summarize(&b.latency),
            stats::summarize(&b.rtt),
            b.live,
        )
    };
    let (pings, pongs, stray, misdelivered, base_dup) = {
        let b = sh.book();
        (b.pings, b.pongs, b.stray_pongs, b.misdelivered, b.dup)
    };

    // 4. Close the base population; watch the server give its fds back.
    let _ = stop_tx.send(true);
    let close_wait = Instant::now() + Duration::from_secs(15);
    for t in base_tasks {
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
    let rss_after = rss_kib(pid);

    // 5. The row.
    let rss_g = growth(
        &samples.rss_f(),
        cli.rss_growth_tolerance / 100.0,
        cli.rss_growth_min_kib as f64,
    );
    let fd_g = growth(
        &samples.fds_f(),
        cli.fd_growth_tolerance / 100.0,
        cli.fd_growth_min as f64,
    );
    let churn = {
        let mut c = sh.churn();
        ChurnTotals {
            cycles: c.cycles,
            resubscribed: c.resubscribed,
            abrupt: c.abrupt,
            deliveries: c.deliveries,
            dup: c.dup,
            pongs: c.pongs,
            errors: std::mem::take(&mut c.errors),
            cycle_hist: c.cycle_hist.take(),
        }
    };
    let cycle_hist = churn.cycle_hist.unwrap_or_else(stats::new_hist);
    let max_u = |v: &[u64]| v.iter().copied().max();
    let la = &samples.loadavg_1m;
    row.push("churn_loops", json!(cli.churn));
    row.push("duration_s", json!(round2(soak_s)));
    row.push(
        "publish_interval_ms",
        json!(cli.publish_interval.as_millis() as u64),
    );
    row.push("base_connected", json!(connected));
    row.push("base_connect_failed", json!(failed));
    row.push("base_connect_s", json!(round2(connect_s)));
    row.push("base_open_at_end", json!(live));
    row.push("cycles", json!(churn.cycles));
    row.push(
        "cycles_per_s",
        json!(round2(churn.cycles as f64 / soak_s.max(1e-9))),
    );
    row.push("cycles_resubscribed", json!(churn.resubscribed));
    row.push("cycles_abrupt_close", json!(churn.abrupt));
    row.push_summary("cycle", &stats::summarize(&cycle_hist));
    row.push("churn_deliveries", json!(churn.deliveries));
    row.push("churn_duplicated", json!(churn.dup));
    row.push("broadcasts", json!(pubs.ok));
    row.push(
        "broadcasts_by_target",
        json!({"subscribers": pubs.subscribers, "users": pubs.users, "all": pubs.all}),
    );
    row.push("publish_failed", json!(pubs.failed));
    row.push("delivered_short", json!(pubs.delivered_short));
    row.extend(book_row);
    row.push_summary("latency", &latency);
    row.push_summary("rtt", &rtt);
    row.push("server_cpu_pct", json!(server_cpu));
    row.push("gen_cpu_pct", json!(gen_cpu));
    row.push(
        "loadavg_1m_mean",
        json!(round2(la.iter().sum::<f64>() / la.len().max(1) as f64)),
    );
    row.push(
        "loadavg_1m_max",
        json!(la.iter().copied().fold(0.0, f64::max)),
    );
    row.push("samples", json!(samples.t_s.len()));
    row.push("rss_before_kib", json!(rss_before));
    row.push("rss_start_kib", json!(samples.rss_kib.first()));
    row.push("rss_peak_kib", json!(max_u(&samples.rss_kib)));
    row.push("rss_end_kib", json!(samples.rss_kib.last()));
    row.push("rss_after_close_kib", json!(rss_after));
    push_growth(&mut row, "rss", "kib", rss_g.as_ref());
    row.push("fds_before", json!(fds_before));
    row.push("fds_start", json!(samples.fds.first()));
    row.push("fds_peak", json!(max_u(&samples.fds)));
    row.push("fds_end", json!(samples.fds.last()));
    row.push("fds_after_close", json!(fds_after));
    push_growth(&mut row, "fds", "n", fd_g.as_ref());
    let mut errors = connect_errors;
    crate::ctl::add_errors(&mut errors, &base_errors);
    crate::ctl::add_errors(&mut errors, &churn.errors);
    crate::ctl::add_errors(&mut errors, &pubs.errors);
    crate::ctl::add_errors(&mut errors, &sample_errors);
    let pong_missing = pings.saturating_sub(pongs);
    if pong_missing > 0 {
        errors.insert("base pong missing".into(), pong_missing);
    }
    if stray > 0 {
        errors.insert("base stray pong".into(), stray);
    }
    if misdelivered > 0 {
        errors.insert("misdelivered".into(), misdelivered);
    }
    row.push("errors", json!(errors));
    row.push("samples_series", samples.json());
    row.set_counts(lost, base_dup + churn.dup, errors.values().sum());
    if let Some(g) = rss_g.as_ref().filter(|g| g.growing) {
        row.growth.push(format!(
            "server RSS grew from {:.0} KiB (median 20-40%) to {:.0} KiB (median of the last 20%): +{:.0} KiB > limit {:.0} KiB",
            g.baseline, g.tail, g.growth, g.limit
        ));
    }
    if let Some(g) = fd_g.as_ref().filter(|g| g.growing) {
        row.growth.push(format!(
            "server open fds grew from {:.0} (median 20-40%) to {:.0} (median of the last 20%): +{:.0} > limit {:.0}",
            g.baseline, g.tail, g.growth, g.limit
        ));
    }
    if let Some(p) = &cli.samples {
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(p, samples.csv()).with_context(|| format!("write {}", p.display()))?;
        eprintln!("samples: {}", p.display());
    }
    row.soak = Some(Box::new(SoakPlot {
        samples,
        rss: rss_g,
        fds: fd_g,
    }));
    Ok(vec![row])
}

// ---------------------------------------------------------------------- plot

fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

#[allow(clippy::too_many_arguments)]
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    t: &[f64],
    ys: &[f64],
    g: Option<&Growth>,
    scale: f64,
    color: RGBColor,
) -> Result<()> {
    let ys: Vec<f64> = ys.iter().map(|y| y / scale).collect();
    let mut lo = ys.iter().copied().fold(f64::MAX, f64::min);
    let mut hi = ys.iter().copied().fold(f64::MIN, f64::max);
    if let Some(g) = g {
        lo = lo.min(g.baseline / scale);
        hi = hi.max((g.baseline + g.limit) / scale);
    }
    if ys.is_empty() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.01).max(1e-3);
    let (lo, hi) = (lo - pad, hi + pad);
    let t_max = t.last().copied().unwrap_or(1.0).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0f64..t_max, lo..hi)
        .map_err(perr)?;
    chart
        .configure_mesh()
        .x_desc("time since the base population was up (s)")
        .y_desc(y_desc)
        .draw()
        .map_err(perr)?;
    let n = t.len();
    if n >= MIN_SAMPLES {
        let (b, tail) = windows(n);
        let warm_end = t[b.start];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, lo), (warm_end, hi)],
                RGBColor(230, 230, 230).filled(),
            )))
            .map_err(perr)?
            .label("warm-up (ignored)")
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 20, y + 5)],
                    RGBColor(230, 230, 230).filled(),
                )
            });
        if let Some(g) = g {
            let blue = RGBColor(30, 90, 200);
            let orange = RGBColor(230, 130, 0);
            let base = [
                (t[b.start], g.baseline / scale),
                (t[b.end - 1], g.baseline / scale),
            ];
            chart
                .draw_series(LineSeries::new(base, blue.stroke_width(3)))
                .map_err(perr)?
                .label(format!("median 20-40%: {:.1}", g.baseline / scale))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(3))
                });
            let tl = [(t[tail.start], g.tail / scale), (t[n - 1], g.tail / scale)];
            chart
                .draw_series(LineSeries::new(tl, orange.stroke_width(3)))
                .map_err(perr)?
                .label(format!("median last 20%: {:.1}", g.tail / scale))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(3))
                });
            let lim = (g.baseline + g.limit) / scale;
            chart
                .draw_series(LineSeries::new(
                    [(t[b.start], lim), (t_max, lim)],
                    RED.stroke_width(1),
                ))
                .map_err(perr)?
                .label(format!(
                    "growth limit: {lim:.1} ({})",
                    if g.growing { "GROWING" } else { "flat" }
                ))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(1)));
        }
    }
    chart
        .draw_series(LineSeries::new(
            t.iter().copied().zip(ys.iter().copied()),
            color.stroke_width(1),
        ))
        .map_err(perr)?
        .label(y_desc.to_string())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(perr)?;
    Ok(())
}

/// Two panels: server RSS (MiB) and open fds over time, with the warm-up, the
/// baseline and tail medians and the growth limit.
pub fn plot(rows: &[Row], title: &str, path: &Path) -> Result<()> {
    let Some(sp) = rows.iter().find_map(|r| r.soak.as_deref()) else {
        bail!("no soak samples to plot");
    };
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    let s = &sp.samples;
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(perr)?;
    let panels = root.split_evenly((2, 1));
    panel(
        &panels[0],
        "server RSS",
        "VmRSS (MiB)",
        &s.t_s,
        &s.rss_f(),
        sp.rss.as_ref(),
        1024.0,
        RGBColor(20, 120, 60),
    )?;
    panel(
        &panels[1],
        "server open file descriptors",
        "open fds",
        &s.t_s,
        &s.fds_f(),
        sp.fds.as_ref(),
        1.0,
        RGBColor(120, 40, 160),
    )?;
    root.present().map_err(perr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0;

    fn rss_verdict(xs: &[f64]) -> Growth {
        growth(xs, 0.10, 2.0 * MIB).unwrap()
    }

    fn fd_verdict(xs: &[f64]) -> Growth {
        growth(xs, 0.02, 20.0).unwrap()
    }

    #[test]
    fn medians_and_windows() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(windows(100), (20..40, 80..100));
        assert_eq!(windows(121), (24..48, 97..121));
        assert_eq!(windows(10), (2..4, 8..10));
        assert_eq!(growth(&[1.0; 9], 0.1, 1.0), None);
    }

    #[test]
    fn flat_series_is_flat() {
        let g = rss_verdict(&[50.0 * MIB; 120]);
        assert!(!g.growing);
        assert_eq!(g.growth, 0.0);
        assert_eq!(g.limit, 5.0 * MIB);
        assert!(!fd_verdict(&[530.0; 1800]).growing);
    }

    #[test]
    fn noisy_flat_series_is_flat() {
        // +-8% noise on RSS, +-15 on ~520 fds (churn connections come and go).
        let mut rng = Rng::new(7);
        let rss: Vec<f64> = (0..600)
            .map(|_| 80.0 * MIB * (0.92 + 0.16 * (rng.below(1000) as f64 / 1000.0)))
            .collect();
        assert!(!rss_verdict(&rss).growing, "{:?}", rss_verdict(&rss));
        let fds: Vec<f64> = (0..600).map(|_| 505.0 + rng.below(31) as f64).collect();
        assert!(!fd_verdict(&fds).growing, "{:?}", fd_verdict(&fds));
        // a single huge spike at the very end does not decide
        let mut spiky = vec![80.0 * MIB; 200];
        spiky[199] = 400.0 * MIB;
        spiky[150] = 300.0 * MIB;
        assert!(!rss_verdict(&spiky).growing);
    }

    #[test]
    fn linear_growth_is_growing() {
        // RSS +50% over the run: 60 -> 90 MiB.
        let rss: Vec<f64> = (0..120)
            .map(|i| 60.0 * MIB + 30.0 * MIB * i as f64 / 119.0)
            .collect();
        let g = rss_verdict(&rss);
        assert!(g.growing, "{g:?}");
        assert!(g.tail > g.baseline);
        // one fd leaked every 10 s for 30 min: +180
        let fds: Vec<f64> = (0..1800).map(|i| 520.0 + (i / 10) as f64).collect();
        assert!(fd_verdict(&fds).growing);
        // slow growth inside the tolerance: +5% over the run
        let slow: Vec<f64> = (0..120)
            .map(|i| 60.0 * MIB * (1.0 + 0.05 * i as f64 / 119.0))
            .collect();
        assert!(!rss_verdict(&slow).growing);
    }

    #[test]
    fn step_after_warmup_is_growing_step_during_warmup_is_not() {
        let mut s = vec![60.0 * MIB; 120];
        for x in s.iter_mut().skip(60) {
            *x = 72.0 * MIB; // +20% from the middle on
        }
        assert!(rss_verdict(&s).growing);
        // the same step inside the warm-up (first 20%) is start-up, not growth
        let mut w = vec![72.0 * MIB; 120];
        for x in w.iter_mut().take(15) {
            *x = 20.0 * MIB;
        }
        assert!(!rss_verdict(&w).growing);
        // the absolute minimum: small fd counts get at least 20
        let mut fds = vec![40.0; 100];
        fds[60..].fill(55.0);
        assert!(
            !fd_verdict(&fds).growing,
            "+15 on 40 fds is under the 20 minimum"
        );
        fds[60..].fill(65.0);
        assert!(fd_verdict(&fds).growing);
        // shrinking is never growth
        let down: Vec<f64> = (0..100).map(|i| 100.0 * MIB - i as f64 * MIB).collect();
        assert!(!rss_verdict(&down).growing);
    }

    #[test]
    fn expectations_per_target() {
        assert!(To::All.expects(3));
        assert!(!To::Failed.expects(3));
        assert!(To::Users(vec![1, 3]).expects(3) && !To::Users(vec![1]).expects(3));
        let evs = base_events(0);
        assert_eq!(evs.len(), 4);
        for (ev, name) in EVENTS.iter().enumerate() {
            assert_eq!(To::Subscribers(ev).expects(0), evs.contains(name));
        }
        // every event reaches a third of the base population
        for ev in 0..EVENTS.len() {
            assert_eq!((0..300).filter(|c| base_subscribed(*c, ev)).count(), 100);
        }
    }

    #[test]
    fn book_counts_lost_dup_and_misdelivered() {
        let mut b = Book::new(3);
        for c in 0..3 {
            b.up(c);
        }
        let s0 = b.register(To::All);
        b.accepted(s0);
        let s1 = b.register(To::Users(vec![1]));
        b.accepted(s1);
        let s2 = b.register(To::All);
        b.failed(s2);
        assert_eq!(b.expected, 4);
        b.delivery(0, s0, 1, 2);
        b.delivery(1, s0, 1, 2);
        b.delivery(1, s0, 1, 2); // duplicate
        b.delivery(1, s1, 1, 2);
        b.delivery(0, s1, 1, 2); // not addressed to 0
        b.delivery(2, s2, 1, 2); // failed publish that arrived anyway
        b.delivery(2, 99, 1, 2); // unknown seq
        assert_eq!(
            (b.got, b.dup, b.misdelivered, b.failed_but_delivered),
            (3, 1, 2, 1)
        );
        assert_eq!(b.lost(), 1, "conn 2 never got seq 0");
        b.dead(2, "EOF".into());
        assert_eq!(b.lost(), 0, "closed connections are errors, not losses");
        assert_eq!(b.errors.values().sum::<u64>(), 1);
    }

    #[test]
    fn rng_is_bounded_and_distinct() {
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
        }
        assert_eq!(r.below(0), 0);
        let d = r.distinct(8, 500);
        let mut u = d.clone();
        u.sort_unstable();
        u.dedup();
        assert_eq!(u.len(), 8);
        assert!(d.iter().all(|x| *x < 500));
        assert_eq!(r.distinct(5, 3).len(), 3);
    }

    #[test]
    fn samples_csv_and_plot() {
        let mut s = Samples::default();
        for i in 0..30u64 {
            s.t_s.push(i as f64);
            s.rss_kib.push(50_000 + i * 10);
            s.fds.push(520 + i % 3);
            s.loadavg_1m.push(0.5);
            s.cycles.push(i * 10);
            s.broadcasts.push(i * 20);
        }
        let csv = s.csv();
        assert_eq!(csv.lines().count(), 31);
        assert!(csv.starts_with("t_s,rss_kib,fds,"));
        assert!(csv
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("1.0,50010,521,0.50,10,20"));
        let mut row = Row::new();
        row.soak = Some(Box::new(SoakPlot {
            rss: growth(&s.rss_f(), 0.1, 2048.0),
            fds: growth(&s.fds_f(), 0.02, 20.0),
            samples: s,
        }));
        let dir = std::env::temp_dir().join(format!("wsgate-soak-test-{}", std::process::id()));
        let p = dir.join("soak.svg");
        plot(&[row], "soak test", &p).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.contains("<svg") && svg.contains("open fds"));
        assert!(plot(&[Row::new()], "x", &dir.join("none.svg")).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
