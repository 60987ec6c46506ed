//! Result rows: ordered JSON lines, a human table, loss warnings, the exit
//! status and the latency CDF plot. Scenario-agnostic: scenarios fill rows.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::{json, Value};

use crate::stats::{self, Hist, Summary};

/// One result: ordered fields plus the histogram to plot.
#[derive(Default)]
pub struct Row {
    fields: Vec<(String, Value)>,
    pub hist: Option<(String, Hist)>,
    pub lost: u64,
    pub dup: u64,
    pub errors: u64,
    /// Soak: what kept growing (server RSS, open fds); non-empty makes the row invalid
    /// and the tool exit with status 5.
    pub growth: Vec<String>,
    /// Soak: the sampled time series and growth decisions, for the plot.
    pub soak: Option<Box<crate::scenario::soak::plot::SoakPlot>>,
}

impl Row {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, k: &str, v: Value) {
        if let Some(f) = self.fields.iter_mut().find(|(key, _)| key == k) {
            f.1 = v;
        } else {
            self.fields.push((k.to_string(), v));
        }
    }

    /// Appends the fields of `other` (not its counts or histogram).
    pub fn extend(&mut self, other: Row) {
        for (k, v) in other.fields {
            self.push(&k, v);
        }
    }

    pub fn get(&self, k: &str) -> Option<&Value> {
        self.fields.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }

    pub fn push_summary(&mut self, prefix: &str, s: &Summary) {
        self.push(&format!("{prefix}_count"), json!(s.count));
        self.push(&format!("{prefix}_p50_ms"), json!(s.p50_ms));
        self.push(&format!("{prefix}_p90_ms"), json!(s.p90_ms));
        self.push(&format!("{prefix}_p99_ms"), json!(s.p99_ms));
        self.push(&format!("{prefix}_p999_ms"), json!(s.p999_ms));
        self.push(&format!("{prefix}_max_ms"), json!(s.max_ms));
        self.push(&format!("{prefix}_mean_ms"), json!(s.mean_ms));
    }

    /// Loss, duplicates and errors; a row with any of them does not count.
    pub fn set_counts(&mut self, lost: u64, dup: u64, errors: u64) {
        self.lost = lost;
        self.dup = dup;
        self.errors = errors;
    }

    pub fn valid(&self) -> bool {
        self.lost == 0 && self.dup == 0 && self.errors == 0 && self.growth.is_empty()
    }

    /// One JSON object on one line, keys in insertion order, then lost/dup/valid.
    pub fn to_json_line(&self) -> String {
        let mut s = String::from("{");
        let tail = [
            ("lost".to_string(), json!(self.lost)),
            ("duplicated".to_string(), json!(self.dup)),
            ("error_count".to_string(), json!(self.errors)),
            ("valid".to_string(), json!(self.valid())),
        ];
        for (i, (k, v)) in self.fields.iter().chain(tail.iter()).enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&Value::String(k.clone()).to_string());
            s.push(':');
            s.push_str(&v.to_string());
        }
        s.push('}');
        s
    }
}

/// Rounds a figure to two decimals for the row.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Object(m) if m.is_empty() => "-".into(),
        other => other.to_string(),
    }
}

/// Key/value table, one column per row (rows of a run share their keys).
pub fn table(rows: &[Row]) -> String {
    let mut keys: Vec<String> = Vec::new();
    for r in rows {
        for (k, _) in &r.fields {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    keys.extend(["lost", "duplicated", "error_count", "valid"].map(String::from));
    let cols: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            keys.iter()
                .map(|k| match k.as_str() {
                    "lost" => r.lost.to_string(),
                    "duplicated" => r.dup.to_string(),
                    "error_count" => r.errors.to_string(),
                    "valid" => {
                        if r.valid() {
                            "yes".into()
                        } else {
                            "NO".into()
                        }
                    }
                    _ => r.get(k).map_or_else(|| "-".into(), cell),
                })
                .collect()
        })
        .collect();
    let kw = keys.iter().map(String::len).max().unwrap_or(0);
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| {
            c.iter()
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    let mut out = String::new();
    for (i, k) in keys.iter().enumerate() {
        out.push_str(&format!("{k:<kw$}"));
        for (c, w) in cols.iter().zip(&widths) {
            let v: String = c[i].chars().take(60).collect();
            out.push_str(&format!("  {v:>w$}"));
        }
        out.push('\n');
    }
    out
}

/// Loud warnings for rows whose figures do not count.
pub fn warnings(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rows {
        let label = r
            .get("payload_bytes")
            .map(|p| format!(" (payload {p} B)"))
            .unwrap_or_default();
        if r.lost + r.dup + r.errors > 0 {
            out.push(format!(
                "!!!!! WARNING{label}: {} lost, {} duplicated, {} errors: THESE FIGURES DO NOT COUNT !!!!!",
                r.lost, r.dup, r.errors
            ));
        }
        for g in &r.growth {
            out.push(format!(
                "!!!!! WARNING{label}: {g}: THE SERVER KEEPS GROWING, THIS SOAK FAILED !!!!!"
            ));
        }
    }
    out
}

/// Exit status for a finished run: 5 when a soak saw growth, 4 when rows lost,
/// duplicated or failed, else 0.
pub fn exit_status(rows: &[Row]) -> i32 {
    if rows.iter().any(|r| !r.growth.is_empty()) {
        5
    } else if rows.iter().any(|r| !r.valid()) {
        4
    } else {
        0
    }
}

pub fn write_json(rows: &[Row], path: Option<&Path>) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&r.to_json_line());
        text.push('\n');
    }
    match path {
        Some(p) => {
            if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(d)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("open {}", p.display()))?;
            f.write_all(text.as_bytes())?;
        }
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes())?;
            o.flush()?;
        }
    }
    Ok(())
}

/// Latency CDF (log x axis), one line per row that has a histogram.
pub fn plot(rows: &[Row], title: &str, path: &Path) -> Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    let series: Vec<(String, Vec<(f64, f64)>)> = rows
        .iter()
        .filter_map(|r| r.hist.as_ref())
        .map(|(name, h)| (name.clone(), stats::cdf_points(h)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let (mut lo, mut hi) = (f64::MAX, 0.0f64);
    for (_, pts) in &series {
        for (x, _) in pts {
            lo = lo.min(*x);
            hi = hi.max(*x);
        }
    }
    if series.is_empty() {
        lo = 0.001;
        hi = 1.0;
    }
    let lo = (lo * 0.8).max(1e-3);
    let hi = (hi * 1.25).max(lo * 10.0);
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow::anyhow!("plot: {e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0f64..1.0f64)
        .map_err(|e| anyhow::anyhow!("plot: {e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of samples <= x")
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e:?}"))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("plot: {e:?}"))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("plot: {e:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let mut r = Row::new();
        r.push("scenario", json!("fanout"));
        r.push("payload_bytes", json!(100));
        r.push("errors", json!({}));
        r.push("scenario", json!("ping")); // replaces, keeps position
        r
    }

    #[test]
    fn json_line_is_ordered_and_flags_validity() {
        let mut r = row();
        let v: Value = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(v["scenario"], "ping");
        assert_eq!(v["valid"], true);
        assert!(r
            .to_json_line()
            .starts_with(r#"{"scenario":"ping","payload_bytes":100"#));
        assert!(warnings(&[r]).is_empty());
        r = row();
        r.set_counts(3, 1, 0);
        let v: Value = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(v["valid"], false);
        assert_eq!(v["lost"], 3);
        let w = warnings(&[r]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("3 lost, 1 duplicated") && w[0].contains("100 B"));
    }

    #[test]
    fn growth_invalidates_and_exits_5() {
        let ok = row();
        assert_eq!(exit_status(&[row()]), 0);
        let mut lossy = row();
        lossy.set_counts(1, 0, 0);
        assert_eq!(exit_status(&[ok, lossy]), 4);
        let mut grown = row();
        grown.growth.push("server RSS grew".into());
        assert!(!grown.valid());
        let w = warnings(std::slice::from_ref(&grown));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("server RSS grew") && w[0].contains("SOAK FAILED"));
        let v: Value = serde_json::from_str(&grown.to_json_line()).unwrap();
        assert_eq!(v["valid"], false);
        let mut both = row();
        both.set_counts(0, 2, 0);
        both.growth.push("fds grew".into());
        assert_eq!(warnings(std::slice::from_ref(&both)).len(), 2);
        assert_eq!(exit_status(&[grown, both]), 5);
    }

    #[test]
    fn table_has_every_key() {
        let t = table(&[row(), row()]);
        assert!(t.contains("payload_bytes"));
        assert!(t.contains("valid"));
        assert_eq!(t.lines().count(), 7);
    }

    #[test]
    fn plot_writes_svg() {
        let mut h = stats::new_hist();
        for i in 1..1000u64 {
            h.record(i * 10_000).unwrap();
        }
        let mut r = row();
        r.hist = Some(("x".into(), h));
        let dir = std::env::temp_dir().join(format!("wsgate-loadtest-test-{}", std::process::id()));
        let p = dir.join("t.svg");
        plot(&[r, row()], "test", &p).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains("<svg"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
