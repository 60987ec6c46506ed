//! connect: N connections, each subscribed; the handshake rate and latency,
//! the server's RSS per connection, and with `--hold` what broke while they
//! were held open. The worker half is [`super::subscribers`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::cli::{Cli, Target};
use crate::ctl::{merge_results, ToWorker};
use crate::links::{merge_readies, spawn, CpuMeter, Merged};
use crate::report::{round2, Row};
use crate::stats;

use super::{rss, Base};

/// Connects, optionally holds, and reports one row.
pub async fn run(
    cli: &Arc<Cli>,
    target: &Target,
    run_id: &str,
    base: &Base,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let rss0 = rss(cli);
    let mut links = spawn(cli, target, run_id).await?;
    let cpu = CpuMeter::start(cli, &links);
    let readies = links.readies(deadline).await?;
    let rss1 = rss(cli);
    let Merged {
        connected,
        failed,
        connect_s,
        hist,
        errors,
    } = merge_readies(&readies)?;
    let mut row = base.row();
    row.push("connected", json!(connected));
    row.push("failed", json!(failed));
    row.push("connect_s", json!(round2(connect_s)));
    row.push(
        "handshakes_per_s",
        json!(round2(connected as f64 / connect_s.max(1e-9))),
    );
    row.push_summary("handshake", &stats::summarize(&hist));
    row.push("rss_before_kib", json!(rss0));
    row.push("rss_after_kib", json!(rss1));
    let per_conn = match (rss0, rss1) {
        (Some(a), Some(b)) if connected > 0 => {
            Some(round2((b as f64 - a as f64) / connected as f64))
        }
        _ => None,
    };
    row.push("rss_per_conn_kib", json!(per_conn));
    cpu.finish(cli, &links, &mut row);
    row.push("connect_errors", json!(&errors));
    row.set_counts(0, 0, failed);
    if let Some(hold) = cli.hold {
        links
            .send_all(&ToWorker::Go {
                ms: hold.as_millis() as u64,
                cycles: None,
            })
            .await?;
        let rs = links
            .results((Instant::now() + hold + Duration::from_secs(30)).min(deadline))
            .await;
        let m = merge_results(&rs);
        let hold_errors: u64 = m.errors.values().sum();
        row.push("hold_s", json!(hold.as_secs_f64()));
        row.push("open_after_hold", json!(m.open));
        row.push("hold_errors", json!(hold_errors));
        row.push("hold_error_kinds", json!(&m.errors));
        row.push("rss_after_hold_kib", json!(rss(cli)));
        row.set_counts(0, 0, failed + hold_errors);
    }
    row.hist = Some(("handshake".into(), hist));
    links.shutdown().await;
    Ok(vec![row])
}
