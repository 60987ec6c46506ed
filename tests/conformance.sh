#!/usr/bin/env bash
# RFC 6455 conformance: the Autobahn TestSuite (tests/conformance/run-autobahn.sh)
# against wsgate's --conformance-echo endpoint, which uses the real upgrade,
# framing and write path. Fails unless every case outside compression (12.*,
# 13.*) is OK, NON-STRICT or INFORMATIONAL. Never skips: a missing tool fails
# the run (the runner installs the suite itself, see tests/conformance/README.md).
# Writes the summary to target/autobahn/summary.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${WSGATE_BIN:-$root/target/debug/wsgate}
work=$root/target/autobahn
if [ ! -x "$bin" ]; then
  echo "conformance: no wsgate binary at $bin (run 'cargo build' first, or set WSGATE_BIN)" >&2
  exit 2
fi
command -v python3 >/dev/null || { echo "conformance: python3 is required" >&2; exit 2; }
mkdir -p "$work"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --jwt-secret conformance --conformance-echo \
  --max-connections 10000 --max-message-size 16777216 --max-queued-bytes 67108864 \
  >"$work/server.out" 2>"$work/server.err" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "wsgate listening on" "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
grep -q "wsgate listening on" "$work/server.out" || { echo "conformance: server did not start"; cat "$work/server.err"; exit 1; }

# The suite's Python 2.7 virtualenv lives under target/ (one-time install, reused).
AUTOBAHN_VENV="${AUTOBAHN_VENV:-$work/venv}" AUTOBAHN_OUT="$work/out" AUTOBAHN_TIMEOUT=600 \
  bash "$root/tests/conformance/run-autobahn.sh" "ws://127.0.0.1:$port/conformance/echo" | tee "$work/run.log"
summary=$(grep '^autobahn:' "$work/run.log" | grep 'cases vs' | tail -1)
echo "$summary" >"$work/summary.txt"
case "$summary" in
  *"FAILED=0"*) ;;
  *) echo "conformance: FAILED cases (report: $work/out/index.html)"; exit 1 ;;
esac
case "$summary" in
  *"UNIMPLEMENTED=0"*) ;;
  *) echo "conformance: UNIMPLEMENTED cases"; exit 1 ;;
esac
if grep -q "close behavior not OK" "$work/run.log"; then
  echo "conformance: close behaviour not OK in some cases"; exit 1
fi
echo "conformance: passed"
