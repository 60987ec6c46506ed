//! The soak's per-second series of the server (RSS, open fds) and of the run
//! (load average, cycles, broadcasts), and the growth verdict on a series:
//! the median of the last 20% against the median of 20%..40%.

use std::fmt::Write as _;
use std::ops::Range;

use serde_json::{json, Value};

/// Fewer samples than this: no growth verdict.
pub const MIN_SAMPLES: usize = 10;

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
    pub fn rss_f(&self) -> Vec<f64> {
        self.rss_kib.iter().map(|v| *v as f64).collect()
    }

    pub fn fds_f(&self) -> Vec<f64> {
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

    pub fn json(&self) -> Value {
        let t: Vec<f64> = self.t_s.iter().map(|t| (t * 10.0).round() / 10.0).collect();
        json!({
            "t_s": t,
            "rss_kib": self.rss_kib,
            "fds": self.fds,
            "loadavg_1m": self.loadavg_1m,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::rng::Rng;
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
}
