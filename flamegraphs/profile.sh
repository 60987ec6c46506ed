#!/usr/bin/env bash
# Profiles wsgate under a loadtest scenario and writes an SVG flamegraph.
#
#   flamegraphs/profile.sh SCENARIO OUT.svg [wsgate-loadtest flags...]
#   flamegraphs/profile.sh fanout flamegraphs/fanout.svg -n 1000 -m 300 --payload 100
#   flamegraphs/profile.sh ping   flamegraphs/ping.svg   -n 500 -d 15s
#
# The server (release build, debug symbols on) runs pinned to core 0 under
# `perf record` with DWARF call graphs; the generator runs pinned to core 1.
# Needs: perf (Debian linux-perf) and inferno (cargo install inferno); both
# are installed here when missing. Loopback only; everything stops by itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scenario=${1:?usage: profile.sh SCENARIO OUT.svg [loadtest flags...]}
out=${2:?usage: profile.sh SCENARIO OUT.svg [loadtest flags...]}
shift 2

command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null || cargo install --quiet inferno
cargo build --quiet --release --bin wsgate
CARGO_TARGET_DIR=target-loadtest cargo build --quiet --release -p wsgate-loadtest
loadtest=target-loadtest/release/wsgate-loadtest

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 0 target/release/wsgate serve --listen "127.0.0.1:$port" \
  --jwt-secret bench-secret --api-key bench-key --rate-limit-messages 1000000 \
  --max-connections 100000 --max-message-size 1048576 ${WSGATE_EXTRA_ARGS:-} \
  >"$work/server.out" 2>"$work/server.err" &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do grep -q "listening" "$work/server.out" && break; sleep 0.1; done

perf record -q -F "${PERF_FREQ:-499}" -g --call-graph dwarf,16384 -p "$server" -o "$work/perf.data" 2>"$work/perf.err" &
perf_pid=$!
sleep 0.5
taskset -c 1 "$loadtest" "$scenario" --url "http://127.0.0.1:$port" --target wsgate \
  --jwt-secret bench-secret --api-key bench-key --server-pid "$server" --no-plot "$@" \
  | tee "$work/result.jsonl"
kill -INT "$perf_pid"
wait "$perf_pid" 2>/dev/null || true

commit=$(git rev-parse --short HEAD)
perf script -i "$work/perf.data" 2>/dev/null \
  | inferno-collapse-perf \
  | inferno-flamegraph --title "wsgate $scenario ($*) @ $commit, server on core 0" >"$out"
echo "flamegraph: $out"
