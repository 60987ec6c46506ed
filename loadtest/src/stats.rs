//! Latency histograms: creation, V2 serialization (base64, to cross process
//! boundaries as JSON), merging and percentile summaries. Values are nanoseconds.

use std::io::Cursor;

use anyhow::{Context, Result};
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;

pub type Hist = Histogram<u64>;

/// 1 ns .. 10 min at 3 significant digits, auto-resizing so merges never fail on range.
pub fn new_hist() -> Hist {
    let mut h =
        Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("constant bounds are valid");
    h.auto(true);
    h
}

pub fn encode(h: &Hist) -> Result<String> {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| anyhow::anyhow!("histogram serialize: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

pub fn decode(s: &str) -> Result<Hist> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .context("histogram base64")?;
    let mut h: Hist = Deserializer::new()
        .deserialize(&mut Cursor::new(bytes))
        .map_err(|e| anyhow::anyhow!("histogram deserialize: {e:?}"))?;
    h.auto(true);
    Ok(h)
}

/// Adds `from` into `into`.
pub fn merge(into: &mut Hist, from: &Hist) -> Result<()> {
    into.add(from)
        .map_err(|e| anyhow::anyhow!("histogram merge: {e:?}"))
}

/// Decodes and merges a list of encoded histograms.
pub fn merge_encoded<'a>(parts: impl IntoIterator<Item = &'a str>) -> Result<Hist> {
    let mut out = new_hist();
    for p in parts {
        if p.is_empty() {
            continue;
        }
        merge(&mut out, &decode(p)?)?;
    }
    Ok(out)
}

/// Percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

pub fn summarize(h: &Hist) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    Summary {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: (h.mean() / 1e3).round() / 1e3,
    }
}

/// (latency ms, cumulative fraction) points for a CDF plot.
pub fn cdf_points(h: &Hist) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.is_empty() {
        return pts;
    }
    for v in h.iter_recorded() {
        let x = v.value_iterated_to() as f64 / 1e6;
        pts.push((x.max(1e-3), v.quantile_iterated_to().min(1.0)));
    }
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut h = new_hist();
        for v in [1_000u64, 2_000, 3_000, 1_000_000, 250_000_000] {
            h.record(v).unwrap();
        }
        let d = decode(&encode(&h).unwrap()).unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!(d.max(), h.max());
        assert_eq!(d.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert!(decode("!!!").is_err());
        assert!(decode("AAAA").is_err());
    }

    #[test]
    fn merge_sums_counts_and_keeps_extremes() {
        let mut a = new_hist();
        let mut b = new_hist();
        for i in 1..=1000u64 {
            a.record(i * 1_000).unwrap();
            b.record(i * 1_000_000).unwrap();
        }
        let m = merge_encoded([
            encode(&a).unwrap().as_str(),
            "",
            encode(&b).unwrap().as_str(),
        ])
        .unwrap();
        assert_eq!(m.len(), 2000);
        assert_eq!(m.min(), a.min());
        assert!(m.max() >= 999_000_000);
        // half the samples are <= 1 ms
        let s = summarize(&m);
        assert!(s.p50_ms <= 1.001, "{s:?}");
        assert!(s.p99_ms > 900.0, "{s:?}");
    }

    #[test]
    fn summary_of_empty_is_zero() {
        assert_eq!(summarize(&new_hist()), Summary::default());
        assert!(cdf_points(&new_hist()).is_empty());
    }

    #[test]
    fn summary_percentiles() {
        let mut h = new_hist();
        for i in 1..=10_000u64 {
            h.record(i * 1_000).unwrap(); // 1 us .. 10 ms
        }
        let s = summarize(&h);
        assert_eq!(s.count, 10_000);
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 9.9).abs() < 0.02, "{s:?}");
        assert!((s.max_ms - 10.0).abs() < 0.02, "{s:?}");
        let pts = cdf_points(&h);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!((pts.last().unwrap().1 - 1.0).abs() < 1e-9);
    }
}
