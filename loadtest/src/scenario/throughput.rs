//! throughput: N subscribers, `-k` publishers back to back for `-d`;
//! broadcasts and deliveries per second and latency under load. The worker
//! half is [`super::subscribers`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::cli::{Cli, Target};
use crate::ctl::{add_errors, merge_results, tally, ToWorker};
use crate::http::{self, HttpClient};
use crate::links::{start_workers, CpuMeter, Merged};
use crate::proto::{self, mono_ns};
use crate::report::{round2, Row};
use crate::stats;

use super::{Base, EVENTS_PATH};

#[derive(Default)]
struct PubTotals {
    ok: u64,
    failed: Vec<u64>,
    errors: BTreeMap<String, u64>,
    mismatch: u64,
}

/// Publishes for `-d` and reports one row.
pub async fn run(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let (mut links, _, merged) = start_workers(cli, target, run_id, deadline).await?;
    let Merged {
        connected, failed, ..
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
                        tally(&mut tot.errors, format!("HTTP {}", r.status));
                    }
                    Err(e) => {
                        tot.failed.push(s);
                        tally(&mut tot.errors, format!("{e:#}").chars().take(80).collect());
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
    merged.push_connect(&mut row, "subscribers");
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
    let mut errs = merged.errors;
    add_errors(&mut errs, &m.errors);
    add_errors(&mut errs, &perrs);
    row.push("errors", json!(&errs));
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
