#!/usr/bin/env bash
# Side-by-side benchmark matrix: every scenario against wsgate and the peers,
# RUNS times each, server on core 0 and generator on core 1 (run-peers.sh).
# Appends JSON lines to OUT (default loadtest/results/matrix-UNIXTIME.jsonl);
# summarize with: python3 loadtest/summarize.py OUT
#
#   loadtest/matrix.sh                         # all targets, 3 runs
#   RUNS=5 TARGETS="wsgate rust-tokio" loadtest/matrix.sh
#   SCENARIOS="fanout ping" loadtest/matrix.sh
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
RUNS=${RUNS:-3}
TARGETS=${TARGETS:-"wsgate uws node-ws rust-tokio seed-python"}
SCENARIOS=${SCENARIOS:-"connect fanout throughput ping churn"}
OUT=${OUT:-$root/loadtest/results/matrix-$(date +%s).jsonl}
mkdir -p "$(dirname "$OUT")"

args_for() {
  case "$1" in
    connect) echo "-n 5000" ;;
    fanout) echo "-n 1000 -m 100 --payload 100,1024,4096,16384,65536" ;;
    throughput) echo "-n 1000 -k 8 -d 10s" ;;
    ping) echo "-n 500 -d 10s" ;;
    churn) echo "-n 50 -d 10s" ;;
  esac
}

for run in $(seq 1 "$RUNS"); do
  for scenario in $SCENARIOS; do
    for target in $TARGETS; do
      echo "== run $run: $target $scenario" >&2
      # shellcheck disable=SC2046
      PORT=$((9300 + run)) "$root/loadtest/run-peers.sh" "$target" "$scenario" \
        $(args_for "$scenario") --json "$OUT" --no-plot --timeout 5m >/dev/null 2>"$OUT.$target.$scenario.$run.log" \
        || echo "   (exit $?; see $OUT.$target.$scenario.$run.log)" >&2
    done
  done
done
echo "$OUT"
