#!/usr/bin/env bash
# Run one load scenario against one server, the server pinned to one core and the
# generator to another, then stop the server by its PID.
#
#   loadtest/run-peers.sh NAME SCENARIO [wsgate-loadtest flags...]
#   loadtest/run-peers.sh rust-tokio fanout -n 1000 -m 200 --payload 100,4096,65536
#   loadtest/run-peers.sh wsgate connect -n 20000 --procs 2 --hold 30s
#   loadtest/run-peers.sh uws setup        # only copy and set the peer up
#
# NAME: wsgate | uws | node-ws | rust-tokio | seed-python
# A peer is copied from PEERS_DIR/NAME to target/peers/NAME (once) and its
# setup.sh is run (idempotent). wsgate runs WSGATE_BIN, else the release build
# (cargo build --release first: a no-op when up to date).
#
# Env: PORT (9200), JWT_SECRET (bench-secret), API_KEY (bench-key), SERVER_CPU (0),
#      GEN_CPU (1), WSGATE_BIN, WSGATE_EXTRA_ARGS, LOADTEST_BIN, SERVER_LOG,
#      PEERS_DIR (../shared/peers beside the checkout; read-only is fine).
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
name="$1"; scenario="$2"; shift 2

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
PORT="${PORT:-9200}"
JWT_SECRET="${JWT_SECRET:-bench-secret}"
API_KEY="${API_KEY:-bench-key}"
SERVER_CPU="${SERVER_CPU:-0}"
GEN_CPU="${GEN_CPU:-1}"
SERVER_LOG="${SERVER_LOG:-$root/loadtest/results/server-$name.log}"
mkdir -p "$root/loadtest/results"

# The generator.
LOADTEST_BIN="${LOADTEST_BIN:-$root/target-loadtest/release/wsgate-loadtest}"
if [ ! -x "$LOADTEST_BIN" ]; then
  echo "building wsgate-loadtest..." >&2
  CARGO_TARGET_DIR="$root/target-loadtest" CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" \
    cargo build --release -q -p wsgate-loadtest
fi

# Nothing may be listening on PORT already (we would measure the wrong server).
if [ "$scenario" != setup ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is already in use; set PORT" >&2
  exit 1
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

case "$name" in
  wsgate)
    bin="${WSGATE_BIN:-}"
    if [ -z "$bin" ]; then
      # Always through cargo (a no-op when up to date), so a stale release
      # binary is never the one measured.
      bin="${CARGO_TARGET_DIR:-$root/target}/release/wsgate"
      CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo build --release -q --bin wsgate
    fi
    # --max-message-size: the 64 KiB fan-out payload plus its envelope must fit.
    # shellcheck disable=SC2086
    taskset -c "$SERVER_CPU" "$bin" serve --listen "127.0.0.1:$PORT" \
      --jwt-secret "$JWT_SECRET" --api-key "$API_KEY" \
      --rate-limit-messages 1000000 --max-connections 100000 --max-connections-per-user 3 \
      --max-message-size 1048576 ${WSGATE_EXTRA_ARGS:-} >"$SERVER_LOG" 2>&1 &
    pid=$!
    ;;
  uws|node-ws|rust-tokio|seed-python)
    src="${PEERS_DIR:-$root/../shared/peers}/$name"
    dest="$root/target/peers/$name"
    [ -d "$src" ] || { echo "no peer at $src" >&2; exit 1; }
    if [ ! -d "$dest" ]; then
      mkdir -p "$root/target/peers"
      cp -r "$src" "$dest"
      chmod -R u+w "$dest"
    fi
    if [ "$name" = rust-tokio ]; then
      # The copy sits inside this workspace: give it its own, and a lock file for --locked.
      grep -q '^\[workspace\]' "$dest/Cargo.toml" || printf '\n[workspace]\n' >>"$dest/Cargo.toml"
      [ -f "$dest/Cargo.lock" ] || (cd "$dest" && cargo generate-lockfile -q)
    fi
    # The peer builds into its own folder, which its run.sh expects, whatever
    # CARGO_TARGET_DIR the caller has for wsgate.
    env -u CARGO_TARGET_DIR CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" "$dest/setup.sh"
    [ "$scenario" = setup ] && exit 0
    PORT="$PORT" JWT_SECRET="$JWT_SECRET" API_KEY="$API_KEY" \
      RATE_LIMIT_MESSAGES=1000000 MAX_CONNECTIONS=100000 \
      taskset -c "$SERVER_CPU" "$dest/run.sh" >"$SERVER_LOG" 2>&1 &
    pid=$!
    ;;
  *) echo "unknown server $name" >&2; usage ;;
esac

stop() {
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
trap stop EXIT

for _ in $(seq 1 150); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "$name died on start:" >&2; tail -20 "$SERVER_LOG" >&2; exit 1; }
  sleep 0.1
done
echo "$name pid $pid ($(ps -o comm= -p "$pid")) on 127.0.0.1:$PORT, cpu $SERVER_CPU; generator on cpu $GEN_CPU" >&2

set +e
taskset -c "$GEN_CPU" "$LOADTEST_BIN" "$scenario" --url "http://127.0.0.1:$PORT" --target "$name" \
  --jwt-secret "$JWT_SECRET" --api-key "$API_KEY" --server-pid "$pid" "$@"
rc=$?
set -e
exit $rc
