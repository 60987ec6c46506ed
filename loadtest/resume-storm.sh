#!/usr/bin/env bash
# Start wsgate, run the resume-storm scenario against it, and restart wsgate
# when the scenario asks (--after restart), then stop it by its PID.
#
#   loadtest/resume-storm.sh blip    [wsgate-loadtest flags...]
#   loadtest/resume-storm.sh restart [wsgate-loadtest flags...]
#   loadtest/resume-storm.sh restart -n 19000 --procs 2 --source-ips 127.0.0.2-127.0.0.9
#
# The scenario gets `--restart-cmd "THIS-SCRIPT __restart"`: that call stops the
# server (SIGTERM, SIGKILL after 10 s), starts it again with the same flags on
# the same core, waits until it listens and prints the new PID. The current PID
# is in $RS_STATE/pid, so the EXIT trap stops whichever server is running.
#
# Env: PORT (9200), JWT_SECRET (bench-secret), API_KEY (bench-key), SERVER_CPU (0),
#      GEN_CPU (1), WSGATE_BIN (default: target/release/wsgate, built first),
#      WSGATE_EXTRA_ARGS, LOADTEST_BIN, SERVER_LOG.
set -euo pipefail

start_server() {
  # shellcheck disable=SC2086
  taskset -c "$SERVER_CPU" "$WSGATE_BIN" serve --listen "127.0.0.1:$PORT" \
    --jwt-secret "$JWT_SECRET" --api-key "$API_KEY" \
    --rate-limit-messages 1000000 --max-connections 100000 --max-connections-per-user 3 \
    --max-message-size 1048576 ${WSGATE_EXTRA_ARGS:-} >>"$SERVER_LOG" 2>&1 &
  echo $! >"$RS_STATE/pid"
  local pid=$!
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "wsgate died on start:" >&2; tail -20 "$SERVER_LOG" >&2; return 1; }
    sleep 0.1
  done
  echo "wsgate does not listen on $PORT" >&2
  return 1
}

stop_server() {
  local pid
  pid="$(cat "$RS_STATE/pid" 2>/dev/null || true)"
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # The port must be free before a restart binds it again.
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break
    sleep 0.1
  done
}

if [ "${1:-}" = __restart ]; then
  # Called by the scenario, with the environment exported below.
  stop_server
  start_server </dev/null >/dev/null
  cat "$RS_STATE/pid"
  exit 0
fi

case "${1:-}" in
  blip|restart) after="$1"; shift ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PORT="${PORT:-9200}" JWT_SECRET="${JWT_SECRET:-bench-secret}" API_KEY="${API_KEY:-bench-key}"
export SERVER_CPU="${SERVER_CPU:-0}" GEN_CPU="${GEN_CPU:-1}"
mkdir -p "$root/loadtest/results"
export SERVER_LOG="${SERVER_LOG:-$root/loadtest/results/server-resume-storm.log}"
: >"$SERVER_LOG"
LOADTEST_BIN="${LOADTEST_BIN:-$root/target-loadtest/release/wsgate-loadtest}"
if [ ! -x "$LOADTEST_BIN" ]; then
  echo "building wsgate-loadtest..." >&2
  CARGO_TARGET_DIR="$root/target-loadtest" CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" \
    cargo build --release -q -p wsgate-loadtest
fi
if [ -z "${WSGATE_BIN:-}" ]; then
  WSGATE_BIN="${CARGO_TARGET_DIR:-$root/target}/release/wsgate"
  CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo build --release -q --bin wsgate
fi
export WSGATE_BIN WSGATE_EXTRA_ARGS="${WSGATE_EXTRA_ARGS:-}"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is already in use; set PORT" >&2
  exit 1
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RS_STATE="$(mktemp -d)"
export RS_STATE
trap 'stop_server; rm -rf "$RS_STATE"' EXIT
start_server
echo "wsgate pid $(cat "$RS_STATE/pid") on 127.0.0.1:$PORT, cpu $SERVER_CPU; generator on cpu $GEN_CPU" >&2

set +e
taskset -c "$GEN_CPU" "$LOADTEST_BIN" resume-storm --after "$after" \
  --restart-cmd "$root/loadtest/resume-storm.sh __restart" \
  --url "http://127.0.0.1:$PORT" --jwt-secret "$JWT_SECRET" --api-key "$API_KEY" \
  --server-pid "$(cat "$RS_STATE/pid")" "$@"
rc=$?
set -e
exit $rc
