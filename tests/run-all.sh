#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing
# (Node packages, Chromium for the browser tests, redis-server for the
# cluster tests), then runs the Rust unit,
# integration and doc tests of the workspace and the JS client/console tests
# against the real binary. Exits non-zero on the first failing part.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

if ! command -v redis-server >/dev/null 2>&1; then
  step "installing redis-server (tests/cluster.rs runs its own on a random port)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server
fi

step "cargo build (debug binary used by the integration and JS tests)"
cargo build --workspace --all-targets

step "cargo test --workspace"
cargo test --workspace

step "RFC 6455 conformance (Autobahn TestSuite against --conformance-echo)"
WSGATE_BIN="$root/target/debug/wsgate" bash tests/conformance.sh

step "soak: 2 minutes of connections, churn, subscriptions and broadcasts (fails if RSS or fds keep growing)"
bash tests/soak.sh 2m

if [ -x clients/js/test/run.sh ]; then
  step "JS client library and console tests (Node + headless Chromium)"
  WSGATE_BIN="$root/target/debug/wsgate" clients/js/test/run.sh
fi

step "all test suites passed"
