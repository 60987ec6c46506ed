#!/usr/bin/env bash
# RFC 6455 conformance: the Autobahn TestSuite (../shared/conformance) against
# wsgate's --conformance-echo endpoint, which uses the real upgrade, framing
# and write path. Fails unless every case outside compression (12.*, 13.*) is
# OK, NON-STRICT or INFORMATIONAL. Writes the summary to target/autobahn/summary.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${WSGATE_SHARED:-$root/../shared}
bin=${WSGATE_BIN:-$root/target/debug/wsgate}
work=$root/target/autobahn
if [ ! -f "$shared/conformance/run-autobahn.sh" ]; then
  echo "conformance: SKIPPED, no Autobahn runner at $shared/conformance"
  exit 0
fi
mkdir -p "$work"
[ -f "$work/conformance/run-autobahn.sh" ] || cp -r "$shared/conformance" "$work/"
chmod -R u+w "$work/conformance"

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

AUTOBAHN_OUT="$work/out" AUTOBAHN_TIMEOUT=600 \
  bash "$work/conformance/run-autobahn.sh" "ws://127.0.0.1:$port/conformance/echo" | tee "$work/run.log"
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
