//! The soak's result row: every figure of the run in a stable order, the
//! errors summed, and the growth verdicts (which make the row invalid and
//! the tool exit with status 5).

use std::collections::BTreeMap;

use serde_json::json;

use super::base::BaseUp;
use super::book::Book;
use super::churn::ChurnTotals;
use super::plot::SoakPlot;
use super::publisher::PubTotals;
use super::samples::{growth, Growth, Samples};
use crate::cli::Cli;
use crate::ctl::add_errors;
use crate::report::{round2, Row};
use crate::stats::{self, Summary};

/// The base population's book, read once after the drain.
pub struct BookFigures {
    /// Expected deliveries missing on base connections still open.
    pub lost: u64,
    pub got: u64,
    pub expected: u64,
    pub dup: u64,
    pub misdelivered: u64,
    pub failed_but_delivered: u64,
    pub unparsable: u64,
    pub pings: u64,
    pub pongs: u64,
    pub stray_pongs: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency: Summary,
    pub rtt: Summary,
    /// Base connections still open.
    pub live: u64,
}

impl BookFigures {
    pub fn read(b: &Book) -> Self {
        Self {
            lost: b.lost(),
            got: b.got,
            expected: b.expected,
            dup: b.dup,
            misdelivered: b.misdelivered,
            failed_but_delivered: b.failed_but_delivered,
            unparsable: b.unparsable,
            pings: b.pings,
            pongs: b.pongs,
            stray_pongs: b.stray_pongs,
            errors: b.errors.clone(),
            latency: stats::summarize(&b.latency),
            rtt: stats::summarize(&b.rtt),
            live: b.live,
        }
    }

    fn push(&self, r: &mut Row) {
        r.push("base_deliveries", json!(self.got));
        r.push("base_expected_deliveries", json!(self.expected));
        r.push("base_duplicated", json!(self.dup));
        r.push("misdelivered", json!(self.misdelivered));
        r.push("failed_but_delivered", json!(self.failed_but_delivered));
        r.push("unparsable_frames", json!(self.unparsable));
        r.push("app_pings", json!(self.pings));
        r.push("pong_missing", json!(self.pings.saturating_sub(self.pongs)));
        r.push("stray_pongs", json!(self.stray_pongs));
    }
}

/// Everything the run measured, for the row.
pub struct Figures {
    pub up: BaseUp,
    pub soak_s: f64,
    pub server_cpu: Option<f64>,
    pub gen_cpu: f64,
    pub samples: Samples,
    pub sample_errors: BTreeMap<String, u64>,
    pub book: BookFigures,
    pub churn: ChurnTotals,
    pub pubs: PubTotals,
    pub rss_before: u64,
    pub rss_after: Option<u64>,
    pub fds_before: u64,
    pub fds_after: Option<u64>,
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

/// Appends the soak's fields to `row` (which holds the common ones), sets
/// its counts and growth verdicts, and attaches the series for the plot.
pub fn fill(row: &mut Row, cli: &Cli, f: Figures) {
    let Figures {
        up,
        soak_s,
        server_cpu,
        gen_cpu,
        samples,
        sample_errors,
        book,
        churn,
        pubs,
        rss_before,
        rss_after,
        fds_before,
        fds_after,
    } = f;
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
    let cycle_hist = churn.cycle_hist.unwrap_or_else(stats::new_hist);
    let max_u = |v: &[u64]| v.iter().copied().max();
    let la = &samples.loadavg_1m;
    row.push("churn_loops", json!(cli.churn));
    row.push("duration_s", json!(round2(soak_s)));
    row.push(
        "publish_interval_ms",
        json!(cli.publish_interval.as_millis() as u64),
    );
    row.push("base_connected", json!(up.connected));
    row.push("base_connect_failed", json!(up.failed));
    row.push("base_connect_s", json!(round2(up.connect_s)));
    row.push("base_open_at_end", json!(book.live));
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
    book.push(row);
    row.push_summary("latency", &book.latency);
    row.push_summary("rtt", &book.rtt);
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
    push_growth(row, "rss", "kib", rss_g.as_ref());
    row.push("fds_before", json!(fds_before));
    row.push("fds_start", json!(samples.fds.first()));
    row.push("fds_peak", json!(max_u(&samples.fds)));
    row.push("fds_end", json!(samples.fds.last()));
    row.push("fds_after_close", json!(fds_after));
    push_growth(row, "fds", "n", fd_g.as_ref());
    let mut errors = up.connect_errors;
    add_errors(&mut errors, &book.errors);
    add_errors(&mut errors, &churn.errors);
    add_errors(&mut errors, &pubs.errors);
    add_errors(&mut errors, &sample_errors);
    let pong_missing = book.pings.saturating_sub(book.pongs);
    if pong_missing > 0 {
        errors.insert("base pong missing".into(), pong_missing);
    }
    if book.stray_pongs > 0 {
        errors.insert("base stray pong".into(), book.stray_pongs);
    }
    if book.misdelivered > 0 {
        errors.insert("misdelivered".into(), book.misdelivered);
    }
    row.push("errors", json!(errors));
    row.push("samples_series", samples.json());
    row.set_counts(book.lost, book.dup + churn.dup, errors.values().sum());
    if let Some(g) = rss_g.as_ref().filter(|g| g.growing) {
        row.growth.push(format!(
            "server RSS grew from {:.0} KiB (median 20-40%) to {:.0} KiB (median of the last 20%): +{:.0} KiB > limit {:.0} KiB",
            g.baseline, g.tail, g.growth, g.limit
        ));
    }
    row.soak = Some(Box::new(SoakPlot {
        samples,
        rss: rss_g,
        fds: fd_g,
    }));
}
