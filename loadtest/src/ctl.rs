//! The JSON-lines protocol between the coordinating process and its workers
//! (in-process over a pipe, or child processes over stdin/stdout), and the
//! bounded error tallies both sides put in their reports. The pipes
//! themselves are [`crate::links`] (coordinator) and [`crate::worker`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ToWorker {
    /// Start the timed part: hold (connect), ping loop (ping), cycles (churn).
    Go { ms: u64, cycles: Option<u64> },
    /// Publishing of seqs `from..to` is over (`failed` were not accepted by the server):
    /// drain, account and report.
    EndPhase {
        from: u64,
        to: u64,
        failed: Vec<u64>,
    },
    /// A scenario's own command (resume-storm's steps), opaque to the plumbing.
    Scenario { msg: serde_json::Value },
    /// Close every connection and exit.
    Stop,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum FromWorker {
    /// Connections are up (or failed).
    Ready {
        connected: u64,
        failed: u64,
        connect_s: f64,
        hist: String,
        errors: BTreeMap<String, u64>,
    },
    /// Every live subscriber of this worker has broadcast `seq`; `last_ns` is the
    /// CLOCK_MONOTONIC time of the last receipt.
    Got {
        seq: u64,
        last_ns: u64,
    },
    Result(WorkerResult),
    /// A scenario's own report (resume-storm's totals), opaque to the plumbing.
    Scenario {
        msg: serde_json::Value,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct WorkerResult {
    /// Deliveries, round trips or cycles.
    pub ops: u64,
    pub lost: u64,
    pub dup: u64,
    /// Frames that could not be accounted: seq out of range, unparsable, stray pongs.
    pub unexpected: u64,
    pub errors: BTreeMap<String, u64>,
    /// Encoded latency histogram (ns).
    pub hist: String,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Connections still open when the result was taken.
    pub open: u64,
}

/// Distinct error kinds kept per tally (the rest are summed under "other").
const MAX_ERROR_KINDS: usize = 32;

/// Counts one error of kind `what`.
pub fn tally(errors: &mut BTreeMap<String, u64>, what: String) {
    if errors.len() >= MAX_ERROR_KINDS && !errors.contains_key(&what) {
        *errors.entry("other".into()).or_insert(0) += 1;
    } else {
        *errors.entry(what).or_insert(0) += 1;
    }
}

/// Adds error tallies.
pub fn add_errors(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

/// Merges worker results: sums counters, min/max times; histograms stay encoded
/// (merged by the caller with `stats::merge_encoded`).
pub fn merge_results(parts: &[WorkerResult]) -> WorkerResult {
    let mut out = WorkerResult {
        first_ns: u64::MAX,
        ..Default::default()
    };
    for p in parts {
        out.ops += p.ops;
        out.lost += p.lost;
        out.dup += p.dup;
        out.unexpected += p.unexpected;
        out.open += p.open;
        add_errors(&mut out.errors, &p.errors);
        if p.ops > 0 {
            out.first_ns = out.first_ns.min(p.first_ns);
            out.last_ns = out.last_ns.max(p.last_ns);
        }
    }
    if out.first_ns == u64::MAX {
        out.first_ns = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let msgs = vec![
            FromWorker::Got { seq: 3, last_ns: 9 },
            FromWorker::Ready {
                connected: 2,
                failed: 1,
                connect_s: 0.5,
                hist: "x".into(),
                errors: [("HTTP 429".to_string(), 1)].into_iter().collect(),
            },
            FromWorker::Result(WorkerResult {
                ops: 5,
                ..Default::default()
            }),
        ];
        for m in msgs {
            let line = serde_json::to_string(&m).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<FromWorker>(&line).unwrap(), m);
        }
        let c = ToWorker::EndPhase {
            from: 0,
            to: 10,
            failed: vec![4],
        };
        let line = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ToWorker>(&line).unwrap(), c);
        assert!(serde_json::from_str::<ToWorker>(r#"{"cmd":"bogus"}"#).is_err());
    }

    #[test]
    fn tallies_are_bounded_in_kinds() {
        let mut t = BTreeMap::new();
        for i in 0..MAX_ERROR_KINDS + 5 {
            tally(&mut t, format!("kind {i}"));
        }
        tally(&mut t, "kind 0".into());
        assert_eq!(
            t.len(),
            MAX_ERROR_KINDS + 1,
            "the kept kinds plus \"other\""
        );
        assert_eq!(t["other"], 5);
        assert_eq!(t["kind 0"], 2, "a kept kind still counts");
    }

    #[test]
    fn merging_sums_and_spans() {
        let a = WorkerResult {
            ops: 10,
            lost: 1,
            dup: 0,
            unexpected: 0,
            errors: [("e".to_string(), 2)].into_iter().collect(),
            hist: String::new(),
            first_ns: 100,
            last_ns: 200,
            open: 5,
        };
        let b = WorkerResult {
            ops: 20,
            lost: 0,
            dup: 3,
            unexpected: 1,
            errors: [("e".to_string(), 1), ("f".to_string(), 1)]
                .into_iter()
                .collect(),
            hist: String::new(),
            first_ns: 50,
            last_ns: 150,
            open: 5,
        };
        let idle = WorkerResult::default();
        let m = merge_results(&[a, b, idle]);
        assert_eq!(
            (m.ops, m.lost, m.dup, m.unexpected, m.open),
            (30, 1, 3, 1, 10)
        );
        assert_eq!((m.first_ns, m.last_ns), (50, 200));
        assert_eq!(m.errors["e"], 3);
        assert_eq!(m.errors["f"], 1);
        assert_eq!(merge_results(&[]).first_ns, 0);
    }
}
