//! The soak's SVG: two panels (server RSS in MiB, open fds) over time, with
//! the warm-up shaded, the baseline and tail medians and the growth limit.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::samples::{windows, Growth, Samples, MIN_SAMPLES};
use crate::report::Row;

/// What the soak plot needs from a row.
#[derive(Clone, Debug)]
pub struct SoakPlot {
    pub samples: Samples,
    pub rss: Option<Growth>,
    pub fds: Option<Growth>,
}

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
    use super::super::samples::growth;
    use super::*;

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
