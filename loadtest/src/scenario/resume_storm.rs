//! resume-storm: N clients with known positions on three streams (their
//! `user:` stream, `broadcast`, `event:system.notification`) lose their
//! connections at once, `--after blip` (each client closes its TCP socket)
//! or `--after restart` (`--restart-cmd` restarts the server), miss `-m`
//! events per stream, and reconnect at once with `resume=1` and their
//! positions while a publisher keeps publishing. Reports the time to the
//! last `resumed`, reconnect → `resumed` per client, events replayed, the
//! recovery outcome, lost/duplicate offsets per client, the publisher's
//! latency during the storm, and Redis commands with `--redis-url`. This
//! half is the coordinator's; [`client`] is the workers'.

mod client;
mod redis;
mod track;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cli::{parse_redis_url, share, After, Cli, Target};
use crate::ctl::{add_errors, tally, FromWorker, ToWorker};
use crate::http::HttpClient;
use crate::links::{start_workers, Links};
use crate::procfs::cpu_s;
use crate::proto::{self, mono_ns};
use crate::report::{round2, Row};
use crate::stats::{self, Hist};

pub use client::work;

use super::{Base, EVENTS_PATH};

/// The client's streams, by the index [`Top::stream`] uses.
pub const STREAMS: [&str; 3] = ["user", "broadcast", "event"];

/// Users named per user-targeted publish.
const USERS_PER_PUBLISH: usize = 250;

/// A coordinator step, sent to every worker as `ToWorker::Scenario`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Report once every client has `--warmup` events on each stream (or after `ms`).
    Prime { ms: u64 },
    /// Close every socket.
    Drop,
    /// Reconnect with `resume=1` and the positions.
    Reconnect,
    /// Publishing is over: these are the last offsets of broadcast and event.
    Verify { tops: Vec<Top> },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Top {
    pub stream: usize,
    pub epoch: String,
    pub offset: u64,
}

/// A worker's running totals, reported after each step.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Totals {
    pub up: u64,
    pub primed: u64,
    /// Sockets the server closed before the drop (the restart's own closes).
    pub closed_early: u64,
    pub dropped: u64,
    pub resumed: u64,
    pub resume_failed: u64,
    /// Clients whose `resumed` said `recovered: true`.
    pub recovered: u64,
    pub replayed: u64,
    /// `STREAM:REASON` of the positions not recovered.
    pub reasons: BTreeMap<String, u64>,
    pub verified: u64,
    pub lost: u64,
    pub dup: u64,
    pub clients_lost: u64,
    pub clients_dup: u64,
    pub out_of_order: u64,
    /// Offsets at or below a not-recovered resume's top (refetched state).
    pub covered: u64,
    /// Events of another epoch than tracked, or beyond any sane offset.
    pub wrong_epoch: u64,
    pub first_reconnect_ns: u64,
    pub last_resumed_ns: u64,
    pub errors: BTreeMap<String, u64>,
    /// Encoded reconnect → `resumed` histogram (ns).
    pub hist: String,
    /// The step's condition was met before its time limit.
    pub done: bool,
}

fn merge(parts: &[Totals]) -> Result<(Totals, Hist)> {
    let mut m = Totals::default();
    for p in parts {
        m.up += p.up;
        m.primed += p.primed;
        m.closed_early += p.closed_early;
        m.dropped += p.dropped;
        m.resumed += p.resumed;
        m.resume_failed += p.resume_failed;
        m.recovered += p.recovered;
        m.replayed += p.replayed;
        add_errors(&mut m.reasons, &p.reasons);
        m.verified += p.verified;
        m.lost += p.lost;
        m.dup += p.dup;
        m.clients_lost += p.clients_lost;
        m.clients_dup += p.clients_dup;
        m.out_of_order += p.out_of_order;
        m.covered += p.covered;
        m.wrong_epoch += p.wrong_epoch;
        if p.first_reconnect_ns > 0 {
            m.first_reconnect_ns = match m.first_reconnect_ns {
                0 => p.first_reconnect_ns,
                f => f.min(p.first_reconnect_ns),
            };
        }
        m.last_resumed_ns = m.last_resumed_ns.max(p.last_resumed_ns);
        add_errors(&mut m.errors, &p.errors);
    }
    m.done = parts.iter().all(|p| p.done);
    let hist = stats::merge_encoded(parts.iter().map(|p| p.hist.as_str()))?;
    Ok((m, hist))
}

/// Sends `step` to every worker and collects their totals.
async fn step(links: &mut Links, step: &Step, deadline: Instant) -> Result<(Totals, Hist)> {
    links
        .send_all(&ToWorker::Scenario {
            msg: serde_json::to_value(step)?,
        })
        .await?;
    let mut out: Vec<Option<Totals>> = (0..links.count).map(|_| None).collect();
    while out.iter().any(Option::is_none) {
        match links.recv_until(deadline).await {
            Some((i, Some(FromWorker::Scenario { msg }))) => {
                out[i] = Some(serde_json::from_value(msg)?);
            }
            Some((i, None)) => bail!("worker {i} exited during {step:?}"),
            Some(_) => {}
            None => bail!("timed out waiting for the workers ({step:?})"),
        }
    }
    merge(&out.into_iter().flatten().collect::<Vec<_>>())
}

/// The last positions seen in publish answers, per stream index.
#[derive(Default)]
struct Tops(BTreeMap<usize, (String, u64)>);

impl Tops {
    fn note(&mut self, answer: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(answer) else {
            return;
        };
        for s in v["streams"].as_array().into_iter().flatten() {
            let i = match s["name"].as_str() {
                Some("broadcast") => 1,
                Some(n) if n.starts_with("event:") => 2,
                _ => continue,
            };
            if let (Some(e), Some(o)) = (s["epoch"].as_str(), s["offset"].as_u64()) {
                self.0.insert(i, (e.to_string(), o));
            }
        }
    }

    fn list(&self) -> Vec<Top> {
        self.0
            .iter()
            .map(|(i, (e, o))| Top {
                stream: *i,
                epoch: e.clone(),
                offset: *o,
            })
            .collect()
    }
}

/// Publishing bodies: to the event's subscribers, to everyone, to some users.
fn body(seq: u64, size: usize, extra: &str) -> String {
    let b = proto::broadcast_body(seq, mono_ns(), size);
    format!("{}{extra}}}", &b[..b.len() - 1])
}

struct Publisher {
    http: HttpClient,
    seq: u64,
    size: usize,
    tops: Tops,
    hist: Hist,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Publisher {
    async fn post(&mut self, extra: &str) {
        let b = body(self.seq, self.size, extra);
        self.seq += 1;
        let t0 = mono_ns();
        match self.http.post_json(EVENTS_PATH, &b).await {
            Ok(r) if r.status == 200 => {
                self.hist
                    .saturating_record(mono_ns().saturating_sub(t0).max(1));
                self.ok += 1;
                self.tops.note(&r.body);
            }
            Ok(r) => tally(&mut self.errors, format!("publish: HTTP {}", r.status)),
            Err(e) => tally(
                &mut self.errors,
                format!("publish: {e:#}").chars().take(80).collect(),
            ),
        }
    }

    /// One recorded event on each stream of every client.
    async fn round(&mut self, users: &[String]) {
        self.post("").await;
        self.post(r#","all":true"#).await;
        for chunk in users.chunks(USERS_PER_PUBLISH) {
            self.post(&format!(r#","users":{}"#, json!(chunk))).await;
        }
    }
}

/// Runs `--restart-cmd`; a number on its last stdout line is the new server PID.
async fn restart(cmd: &str) -> Result<Option<u32>> {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output(),
    )
    .await
    .map_err(|_| anyhow!("--restart-cmd did not finish within 120 s"))?
    .context("--restart-cmd")?;
    if !out.status.success() {
        bail!("--restart-cmd failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().last().and_then(|l| l.trim().parse().ok()))
}

/// Waits until the server accepts TCP connections again.
async fn listening(target: &Target, limit: Duration) -> Result<()> {
    let until = Instant::now() + limit;
    while tokio::net::TcpStream::connect(target.addr).await.is_err() {
        if Instant::now() >= until {
            bail!("the server does not listen {limit:?} after the restart");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub async fn run(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let redis = cli.redis_url.as_deref().map(parse_redis_url).transpose()?;
    let (mut links, _readies, merged) = start_workers(cli, target, run_id, deadline).await?;
    let users: Vec<String> = (0..cli.procs)
        .flat_map(|w| {
            (0..share(cli.connections, w, cli.procs)).map(move |c| format!("lt-{run_id}-{w}-{c}-0"))
        })
        .collect();
    let mut publisher = Publisher {
        http: HttpClient::new(
            target.addr,
            &target.host,
            &cli.api_key,
            cli.op_timeout.max(Duration::from_secs(10)),
        ),
        seq: 0,
        size: cli.payload[0],
        tops: Tops::default(),
        hist: stats::new_hist(),
        ok: 0,
        errors: BTreeMap::new(),
    };
    let mut errors = merged.errors.clone();
    // Positions: --warmup recorded events per stream, each client waits for all.
    for _ in 0..cli.warmup {
        publisher.round(&users).await;
    }
    let prime_ms = (cli.op_timeout * 4).as_millis() as u64;
    let (primed, _) = step(&mut links, &Step::Prime { ms: prime_ms }, deadline).await?;
    // The drop.
    let mut server_pid = cli.server_pid;
    if cli.after == After::Restart {
        let cmd = cli.restart_cmd.as_deref().unwrap_or_default();
        eprintln!("resume-storm: restarting the server: {cmd}");
        if let Some(pid) = restart(cmd).await? {
            server_pid = Some(pid);
        }
        listening(target, Duration::from_secs(60)).await?;
    }
    let (dropped, _) = step(&mut links, &Step::Drop, deadline).await?;
    // The gap: events every client misses.
    for _ in 0..cli.broadcasts {
        publisher.round(&users).await;
    }
    let gap_ok = publisher.ok;
    add_errors(&mut errors, &std::mem::take(&mut publisher.errors));
    // The storm, with a publisher alongside (broadcast and event in turn).
    let redis_before = match redis {
        Some(a) => Some(redis::commandstats(a).await?),
        None => None,
    };
    let server_cpu0 = server_pid.and_then(cpu_s);
    let gen_cpu0 = links.gen_cpu();
    publisher.hist = stats::new_hist();
    publisher.ok = 0;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let interval = cli.publish_interval.max(Duration::from_millis(1));
    let storm_pub = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut k = 0u64;
        // Bounded: the coordinator sets `stop` after the storm (or its timeout).
        while !stop2.load(Ordering::Relaxed) {
            tick.tick().await;
            k += 1;
            publisher
                .post(if k.is_multiple_of(2) {
                    r#","all":true"#
                } else {
                    ""
                })
                .await;
        }
        publisher
    });
    let t_storm = mono_ns();
    let started = Instant::now();
    let stormed = step(&mut links, &Step::Reconnect, deadline).await;
    stop.store(true, Ordering::Relaxed);
    let publisher = storm_pub.await.map_err(|e| anyhow!("publisher: {e}"))?;
    let (stormed, resume_hist) = stormed?;
    let storm_wall = started.elapsed().as_secs_f64();
    let redis_delta = match (redis, redis_before) {
        (Some(a), Some(b)) => Some(redis::delta(&b, &redis::commandstats(a).await?)),
        _ => None,
    };
    let server_cpu = match (server_cpu0, server_pid.and_then(cpu_s)) {
        (Some(a), Some(b)) => Some(round2((b - a) / storm_wall.max(1e-9) * 100.0)),
        _ => None,
    };
    let gen_cpu = round2((links.gen_cpu() - gen_cpu0) / storm_wall.max(1e-9) * 100.0);
    // Verification against the last offsets the publisher was given.
    let (m, _) = step(
        &mut links,
        &Step::Verify {
            tops: publisher.tops.list(),
        },
        deadline,
    )
    .await?;
    links.shutdown().await;

    let expect_recovered = cli.after == After::Blip || redis.is_some();
    let outcome_mismatch = if expect_recovered {
        m.resumed - m.recovered
    } else {
        // Every given position of every client: EPOCH_CHANGED.
        let changed: u64 = m
            .reasons
            .iter()
            .filter(|(k, _)| k.ends_with(":EPOCH_CHANGED"))
            .map(|(_, v)| v)
            .sum();
        m.recovered + (m.resumed * STREAMS.len() as u64).saturating_sub(changed)
    };
    let mut row = base.row();
    row.push(
        "after",
        json!(if cli.after == After::Blip {
            "blip"
        } else {
            "restart"
        }),
    );
    row.push("clients", json!(merged.connected));
    row.push("connect_failed", json!(merged.failed));
    row.push("primed", json!(primed.primed));
    row.push("events_before_per_stream", json!(cli.warmup));
    row.push("events_missed_per_stream", json!(cli.broadcasts));
    row.push("gap_publishes", json!(gap_ok));
    row.push("closed_by_server_before_drop", json!(dropped.closed_early));
    row.push("resumed", json!(stormed.resumed));
    row.push("resume_failed", json!(stormed.resume_failed));
    let to_last = stormed.last_resumed_ns.saturating_sub(t_storm);
    row.push(
        "storm_to_last_resumed_ms",
        json!(round2(to_last as f64 / 1e6)),
    );
    row.push_summary("resume", &stats::summarize(&resume_hist));
    row.push("recovered_clients", json!(m.recovered));
    row.push("not_recovered", json!(&m.reasons));
    row.push(
        "expected",
        json!(if expect_recovered {
            "recovered"
        } else {
            "EPOCH_CHANGED"
        }),
    );
    row.push("outcome_mismatch", json!(outcome_mismatch));
    row.push("replayed_events", json!(m.replayed));
    row.push(
        "replayed_per_client",
        json!(round2(m.replayed as f64 / m.resumed.max(1) as f64)),
    );
    row.push("clients_with_loss", json!(m.clients_lost));
    row.push("clients_with_duplicates", json!(m.clients_dup));
    row.push("out_of_order", json!(m.out_of_order));
    row.push("covered_after_reset", json!(m.covered));
    row.push("wrong_epoch", json!(m.wrong_epoch));
    let ps = stats::summarize(&publisher.hist);
    row.push("storm_publishes", json!(publisher.ok));
    row.push("storm_publish_p50_ms", json!(ps.p50_ms));
    row.push("storm_publish_p99_ms", json!(ps.p99_ms));
    row.push("storm_publish_max_ms", json!(ps.max_ms));
    row.push("server_cpu_pct", json!(server_cpu));
    row.push("gen_cpu_pct", json!(gen_cpu));
    if let Some(d) = &redis_delta {
        let total: u64 = d.values().sum();
        row.push("redis_commands", json!(total));
        row.push(
            "redis_commands_per_resume",
            json!(round2(total as f64 / stormed.resumed.max(1) as f64)),
        );
        row.push("redis_commands_by_name", json!(d));
    }
    add_errors(&mut errors, &m.errors);
    add_errors(&mut errors, &publisher.errors);
    if primed.primed < primed.up {
        tally(
            &mut errors,
            format!(
                "{} clients without their warm-up",
                primed.up - primed.primed
            ),
        );
    }
    if cli.after == After::Blip && dropped.closed_early > 0 {
        tally(
            &mut errors,
            format!(
                "{} closed by the server before the blip",
                dropped.closed_early
            ),
        );
    }
    row.push("errors", json!(&errors));
    row.set_counts(
        m.lost,
        m.dup,
        merged.failed
            + m.out_of_order
            + m.wrong_epoch
            + outcome_mismatch
            + u64::from(!primed.done || !stormed.done || !m.done)
            + errors.values().sum::<u64>(),
    );
    row.hist = Some(("reconnect → resumed".into(), resume_hist));
    Ok(vec![row])
}
