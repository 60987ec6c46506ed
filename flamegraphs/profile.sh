#!/usr/bin/env bash
# Profiles wsgate (or a peer) under a loadtest scenario and writes an SVG flamegraph.
#
#   flamegraphs/profile.sh SCENARIO OUT.svg [wsgate-loadtest flags...]
#   flamegraphs/profile.sh fanout flamegraphs/fanout.svg -n 1000 -m 300 --payload 100
#   flamegraphs/profile.sh ping   flamegraphs/ping.svg   -n 500 -d 15s
#   TARGET=uws flamegraphs/profile.sh fanout flamegraphs/fanout-4k-uws.svg -n 1000 -m 600 --payload 4096
#
# The server (wsgate: release build, debug symbols on; a peer: as
# loadtest/run-peers.sh sets it up) runs pinned to core 0 under `perf record`
# with DWARF call graphs; the generator runs pinned to core 1.
# Env: TARGET (wsgate | uws | node-ws | rust-tokio | seed-python), PERF_FREQ (499),
#      WSGATE_EXTRA_ARGS, LOADTEST_BIN, PEERS_DIR (see run-peers.sh).
# Needs: perf (Debian linux-perf) and inferno (cargo install inferno); both
# are installed here when missing. Loopback only; everything stops by itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scenario=${1:?usage: profile.sh SCENARIO OUT.svg [loadtest flags...]}
out=${2:?usage: profile.sh SCENARIO OUT.svg [loadtest flags...]}
shift 2
target=${TARGET:-wsgate}

command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null || cargo install --quiet inferno
loadtest=${LOADTEST_BIN:-$root/target-loadtest/release/wsgate-loadtest}
[ -x "$loadtest" ] || CARGO_TARGET_DIR=target-loadtest cargo build --quiet --release -p wsgate-loadtest

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ "$target" = wsgate ]; then
  cargo build --quiet --release --bin wsgate
  # shellcheck disable=SC2086
  taskset -c 0 "${CARGO_TARGET_DIR:-target}/release/wsgate" serve --listen "127.0.0.1:$port" \
    --jwt-secret bench-secret --api-key bench-key --rate-limit-messages 1000000 \
    --max-connections 100000 --max-message-size 1048576 ${WSGATE_EXTRA_ARGS:-} \
    >"$work/server.out" 2>"$work/server.err" &
else
  loadtest/run-peers.sh "$target" setup
  # Node peers write a perf map of their JIT code (/tmp/perf-PID.map) so JS
  # frames get names; the rest (uWS's C++, the kernel) has symbols already.
  PORT="$port" JWT_SECRET=bench-secret API_KEY=bench-key \
    RATE_LIMIT_MESSAGES=1000000 MAX_CONNECTIONS=100000 NODE_OPTIONS=--perf-basic-prof \
    taskset -c 0 "$root/target/peers/$target/run.sh" >"$work/server.out" 2>"$work/server.err" &
fi
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work" "/tmp/perf-$server.map"
}
trap cleanup EXIT
for _ in $(seq 1 150); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { echo "$target died on start:" >&2; tail -20 "$work/server.err" >&2; exit 1; }
  sleep 0.1
done

perf record -q -F "${PERF_FREQ:-499}" -g --call-graph dwarf,16384 -p "$server" -o "$work/perf.data" 2>"$work/perf.err" &
perf_pid=$!
sleep 0.5
taskset -c 1 "$loadtest" "$scenario" --url "http://127.0.0.1:$port" --target "$target" \
  --jwt-secret bench-secret --api-key bench-key --server-pid "$server" --no-plot "$@" \
  | tee "$work/result.jsonl"
kill -INT "$perf_pid"
wait "$perf_pid" 2>/dev/null || true

commit=$(git rev-parse --short HEAD)
perf script -i "$work/perf.data" 2>/dev/null \
  | inferno-collapse-perf \
  | inferno-flamegraph --title "$target $scenario ($*) @ $commit, server on core 0" >"$out"
echo "flamegraph: $out"
