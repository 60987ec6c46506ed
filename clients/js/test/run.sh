#!/usr/bin/env bash
# Run the client library's node tests and the console's browser tests against a built wsgate.
#
#   WSGATE_BIN=/path/to/wsgate clients/js/test/run.sh      (default: target/debug/wsgate)
#
# Set-up is idempotent: `npm ci` when node_modules is missing, Debian's chromium when
# /usr/bin/chromium is missing, redis-server (the console's cluster-mode test starts its own
# on a random loopback port) when it is missing. Builds nothing on the Rust side: build the server first
# (cargo build). Exits non-zero when any test fails.
set -euo pipefail

JS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$JS_DIR"

WSGATE_BIN="${WSGATE_BIN:-../../target/debug/wsgate}"
case "$WSGATE_BIN" in
  /*) ;;
  *) WSGATE_BIN="$(cd "$JS_DIR" && realpath -m "$WSGATE_BIN")" ;;
esac
export WSGATE_BIN
if [ ! -x "$WSGATE_BIN" ]; then
  echo "run.sh: no wsgate binary at $WSGATE_BIN (build it with 'cargo build', or set WSGATE_BIN)" >&2
  exit 2
fi

if ! command -v node >/dev/null 2>&1; then
  echo "run.sh: node (20+) is required" >&2
  exit 2
fi
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$NODE_MAJOR" -lt 20 ]; then
  echo "run.sh: node 20+ is required, found $(node --version)" >&2
  exit 2
fi

if [ ! -d node_modules/playwright-core ]; then
  echo "==> npm ci (clients/js)"
  npm ci --no-audit --no-fund
fi

CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
export CHROMIUM_PATH
if [ ! -x "$CHROMIUM_PATH" ]; then
  echo "==> installing Debian's chromium"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y redis-server
fi

# Node 20 has the WHATWG WebSocket behind a flag (on by default from Node 22; the flag is
# still accepted there, and ignored).
NODE_FLAGS=()
if node --experimental-websocket -e '' >/dev/null 2>&1; then
  NODE_FLAGS+=(--experimental-websocket)
fi

echo "==> clients/js tests against $WSGATE_BIN"
node "${NODE_FLAGS[@]}" --test --test-reporter=spec --test-concurrency=1 \
  test/client.test.mjs test/closes.test.mjs test/recovery.test.mjs test/console.browser.test.mjs
