#!/usr/bin/env bash
# The Python package's tests (clients/python) against a built wsgate.
#
#   WSGATE_BIN=/path/to/wsgate clients/python/test/run.sh [pytest args]   (default: target/debug/wsgate)
#
# Makes clients/python/.venv (gitignored) with the first python3 >= 3.10 found, installs the package
# and its test dependencies from PyPI into it (again whenever pyproject.toml changes), and runs
# pytest. Builds nothing on the Rust side: build the server first (cargo build). Any set-up step
# that fails stops the run with a non-zero status; a skipped test fails the run too.
set -euo pipefail

PY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO="$(cd "$PY_DIR/../.." && pwd)"
cd "$PY_DIR"

WSGATE_BIN="${WSGATE_BIN:-$REPO/target/debug/wsgate}"
case "$WSGATE_BIN" in
  /*) ;;
  *) WSGATE_BIN="$(realpath -m "$WSGATE_BIN")" ;;
esac
export WSGATE_BIN
if [ ! -x "$WSGATE_BIN" ]; then
  echo "run.sh: no wsgate binary at $WSGATE_BIN (build it with 'cargo build', or set WSGATE_BIN)" >&2
  exit 2
fi

PYTHON=""
for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10; do
  [ -n "$candidate" ] || continue
  if command -v "$candidate" >/dev/null 2>&1 &&
    "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    PYTHON="$candidate"
    break
  fi
done
if [ -z "$PYTHON" ]; then
  echo "run.sh: python 3.10+ is required (none found on PATH)" >&2
  exit 2
fi

VENV="$PY_DIR/.venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
  echo "==> creating $VENV with $("$PYTHON" --version)"
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    echo "run.sh: '$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)" >&2
    exit 2
  fi
fi

STAMP="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  echo "==> installing wsgate[test] into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[test]"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi

echo "==> clients/python tests against $WSGATE_BIN"
exec "$VENV/bin/python" -m pytest -q -ra -p no:cacheprovider "$@"
