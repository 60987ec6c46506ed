#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: fuzz/run.sh [SECONDS]
# (default 60 per target). Needs cargo-fuzz (`cargo install cargo-fuzz`) and
# a nightly toolchain; without nightly it falls back to RUSTC_BOOTSTRAP=1 on
# stable. Findings land in fuzz/artifacts/TARGET/; the corpus grows in
# fuzz/corpus/TARGET/ (both git-ignored). Exits non-zero if a target crashed.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-60}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  FUZZ=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
fi

TARGETS=$("${FUZZ[@]}" list)
"${FUZZ[@]}" build
status=0
for target in $TARGETS; do
  mkdir -p "corpus/$target"
  if [ -d "seeds/$target" ]; then
    cp -n "seeds/$target"/* "corpus/$target"/ 2>/dev/null || true
  fi
  echo "== $target: ${SECONDS_PER_TARGET}s"
  # -rss_limit_mb: a parser that balloons memory is a finding too.
  log="/tmp/wsgate-fuzz-$target.log"
  rc=0
  "${FUZZ[@]}" run "$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len=70000 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|^SUMMARY|^Done' "$log" || true
  if [ "$rc" -ne 0 ]; then
    echo "!! $target failed (exit $rc): see $log and fuzz/artifacts/$target/"
    status=1
  fi
done
exit $status
