#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing
# (Node packages, Chromium for the browser tests, redis-server for the
# cluster tests, the Autobahn suite), then runs the Rust unit, integration and
# doc tests of the workspace, Autobahn, the soak and the JS client/console tests
# against the real binary. Nothing is skipped: a part that cannot run fails.
# Exits non-zero on the first failing part.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

# The suite must leave the checkout as it found it (no rewritten tracked file,
# no litter outside ignored paths such as target/): compared at the end.
tree_state() { git status --porcelain 2>/dev/null || true; }
tree_before=$(tree_state)

if ! command -v redis-server >/dev/null 2>&1; then
  step "installing redis-server (tests/cluster.rs runs its own on a random port)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server
fi

step "cargo build (debug binary used by the integration and JS tests)"
cargo build --workspace --all-targets

step "cargo test --workspace"
cargo test --workspace

step "Python package tests (clients/python: server API clients, seed helpers, OpenAPI check, example, migration guide)"
WSGATE_BIN="$root/target/debug/wsgate" bash clients/python/test/run.sh

step "RFC 6455 conformance (Autobahn TestSuite against --conformance-echo)"
WSGATE_BIN="$root/target/debug/wsgate" bash tests/conformance.sh

step "soak: 2 minutes of connections, churn, subscriptions and broadcasts (fails if RSS or fds keep growing)"
bash tests/soak.sh 2m

step "JS client library and console tests (Node + headless Chromium)"
WSGATE_BIN="$root/target/debug/wsgate" bash clients/js/test/run.sh

step "the checkout is unchanged by the tests"
tree_after=$(tree_state)
if [ "$tree_after" != "$tree_before" ]; then
  echo "run-all: the tests changed the checkout (git status before vs after):" >&2
  diff <(echo "$tree_before") <(echo "$tree_after") >&2 || true
  exit 1
fi

step "all test suites passed"
