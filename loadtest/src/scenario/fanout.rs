//! fanout: N subscribers; per payload size, sequential broadcasts (the next
//! one only when every subscriber has the last, or after `--op-timeout`),
//! after unreported warm-up ones. Delivery latency and time to the last
//! subscriber, one row per size. The worker half is [`super::subscribers`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::cli::{Cli, Target};
use crate::ctl::{add_errors, merge_results, tally, FromWorker, ToWorker};
use crate::http::{self, HttpClient};
use crate::links::{start_workers, CpuMeter, Merged};
use crate::proto::{self, mono_ns};
use crate::report::{round2, Row};
use crate::stats;

use super::{Base, EVENTS_PATH};

/// Publishes the phases and reports one row per payload size.
pub async fn run(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let (mut links, readies, merged) = start_workers(cli, target, run_id, deadline).await?;
    let Merged {
        connected, failed, ..
    } = merged;
    let expecting: Vec<bool> = readies.iter().map(|r| r.connected > 0).collect();
    let mut http = HttpClient::for_publishing(cli, target);
    let mut rows = Vec::new();
    let mut seq = 0u64;
    // An optional warm-up phase (not reported), then one phase per payload size.
    let mut phases: Vec<(usize, u64, bool)> = Vec::new();
    if cli.warmup > 0 {
        phases.push((cli.payload[0], cli.warmup, false));
    }
    phases.extend(cli.payload.iter().map(|&p| (p, cli.broadcasts, true)));
    for (size, count, keep) in phases {
        let from = seq;
        let mut ttl = stats::new_hist();
        let mut failed_seqs = Vec::new();
        let mut publish_errors = BTreeMap::new();
        let (mut timeouts, mut delivered_mismatch) = (0u64, 0u64);
        let phase_start = Instant::now();
        let cpu = CpuMeter::start(cli, &links);
        for _ in 0..count {
            if Instant::now() >= deadline {
                tally(&mut publish_errors, "global timeout".into());
                break;
            }
            let s = seq;
            seq += 1;
            let t = mono_ns();
            let body = proto::broadcast_body(s, t, size);
            match http.post_json(EVENTS_PATH, &body).await {
                Ok(r) if r.status == 200 => {
                    if http::delivered(&r.body) != Some(connected) {
                        delivered_mismatch += 1;
                    }
                }
                Ok(r) => {
                    failed_seqs.push(s);
                    tally(&mut publish_errors, format!("HTTP {}", r.status));
                    continue;
                }
                Err(e) => {
                    failed_seqs.push(s);
                    tally(
                        &mut publish_errors,
                        format!("{e:#}").chars().take(80).collect(),
                    );
                    continue;
                }
            }
            if connected == 0 {
                continue;
            }
            let mut got = vec![false; links.count];
            let mut last = 0u64;
            let until = (Instant::now() + cli.op_timeout).min(deadline);
            while got.iter().zip(&expecting).any(|(g, e)| *e && !*g) {
                match links.recv_until(until).await {
                    Some((i, Some(FromWorker::Got { seq: gs, last_ns }))) if gs == s => {
                        got[i] = true;
                        last = last.max(last_ns);
                    }
                    Some(_) => {}
                    None => {
                        timeouts += 1;
                        break;
                    }
                }
            }
            if got.iter().zip(&expecting).all(|(g, e)| *g || !*e) {
                ttl.saturating_record(last.saturating_sub(t).max(1));
            }
        }
        let phase_s = phase_start.elapsed().as_secs_f64();
        let mut cpu_row = Row::new();
        cpu.finish(cli, &links, &mut cpu_row);
        links
            .send_all(&ToWorker::EndPhase {
                from,
                to: seq,
                failed: failed_seqs.clone(),
            })
            .await?;
        let rs = links
            .results((Instant::now() + cli.drain + Duration::from_secs(30)).min(deadline))
            .await;
        let m = merge_results(&rs);
        let hist = stats::merge_encoded(rs.iter().map(|r| r.hist.as_str()))?;
        if !keep {
            if m.lost + m.dup > 0 {
                eprintln!("warm-up: {} lost, {} duplicated deliveries", m.lost, m.dup);
            }
            continue;
        }
        let mut row = base.row();
        row.push("payload_bytes", json!(size));
        merged.push_connect(&mut row, "subscribers");
        row.push("broadcasts", json!(seq - from));
        row.push("publish_failed", json!(failed_seqs.len()));
        row.push("deliveries", json!(m.ops));
        row.push(
            "expected_deliveries",
            json!((seq - from - failed_seqs.len() as u64) * connected),
        );
        row.push("phase_s", json!(round2(phase_s)));
        row.push(
            "deliveries_per_s",
            json!(round2(m.ops as f64 / phase_s.max(1e-9))),
        );
        row.push_summary("latency", &stats::summarize(&hist));
        let ts = stats::summarize(&ttl);
        row.push("ttl_p50_ms", json!(ts.p50_ms));
        row.push("ttl_p99_ms", json!(ts.p99_ms));
        row.push("ttl_max_ms", json!(ts.max_ms));
        row.push("broadcast_timeouts", json!(timeouts));
        row.extend(cpu_row);
        row.push("delivered_mismatch", json!(delivered_mismatch));
        let mut errs = merged.errors.clone();
        add_errors(&mut errs, &m.errors);
        add_errors(&mut errs, &publish_errors);
        row.push("errors", json!(&errs));
        row.push("unexpected_frames", json!(m.unexpected));
        row.set_counts(
            m.lost,
            m.dup,
            failed + m.errors.values().sum::<u64>() + failed_seqs.len() as u64 + timeouts,
        );
        row.hist = Some((format!("{size} B"), hist));
        rows.push(row);
    }
    links.shutdown().await;
    Ok(rows)
}
