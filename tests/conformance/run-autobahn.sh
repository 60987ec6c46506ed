#!/usr/bin/env bash
# run-autobahn.sh - run the Autobahn|TestSuite (fuzzingclient mode) against a
# WebSocket ECHO endpoint on loopback and print a compact summary.
#
# usage: run-autobahn.sh ws://127.0.0.1:PORT[/path] [CASES]
#   CASES  comma/space separated case patterns, e.g. "1.*,2.*,9.1.1" or "*".
#          Omitted: "*" minus the permessage-deflate cases 12.* and 13.*.
#          Given: run exactly those (so '*' includes compression).
# env:
#   AUTOBAHN_OUT      report directory (default ./autobahn-report)
#   AUTOBAHN_TIMEOUT  time budget for the run, seconds (default 600); when it runs
#                     out, finished cases are reported, the rest count as MISSING
#   AUTOBAHN_EXCLUDE  override the excluded patterns (e.g. "" or "9.*")
#   AUTOBAHN_VENV     where the suite is installed (default: .venv beside this script)
#   AUTOBAHN_PYTHON2  a Python 2.7 interpreter (default: pyenv's 2.7.x, else python2.7;
#                     with none, `pyenv install 2.7.18` when pyenv is there, else exit 3)
# exit: 0 every case OK/NON-STRICT/INFORMATIONAL/UNIMPLEMENTED; 1 some case FAILED
#       or MISSING; 2 usage; 3 suite setup failed; 4 time budget ran out (partial
#       summary printed), nothing listening, or the suite crashed.
#
# The suite (autobahntestsuite 25.10.1) is Python-2.7-only code; it is installed
# once, pinned, into a Python 2.7 virtualenv. Only 127.0.0.0/8 targets are accepted.
set -euo pipefail
{ # the whole script is parsed before it runs: editing it mid-run is harmless

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# beside this script when that folder is writable, else in the user's cache
if [[ -w "$SCRIPT_DIR" ]]; then DEFAULT_VENV="$SCRIPT_DIR/.venv"; else DEFAULT_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/autobahn-testsuite/.venv"; fi
VENV="${AUTOBAHN_VENV:-$DEFAULT_VENV}"
OUT="${AUTOBAHN_OUT:-./autobahn-report}"
RUN_TIMEOUT="${AUTOBAHN_TIMEOUT:-600}"
AGENT="testee"

die() { local rc="$1"; shift; echo "autobahn: $*" >&2; exit "$rc"; }

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# ---------------------------------------------------------------- arguments
[[ $# -ge 1 && $# -le 2 ]] || usage
URL="$1"
CASES_ARG="${2-}"

# ws:// or wss:// to a literal 127.x.y.z address with an explicit port.
re='^wss?://(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}):([0-9]{1,5})(/[^[:space:]"\\]*)?$'
[[ "$URL" =~ $re ]] || die 2 "refusing '$URL': need ws://127.x.y.z:PORT[/path] (loopback only, explicit port)"
HOST="${BASH_REMATCH[1]}"; PORT="${BASH_REMATCH[2]}"
IFS=. read -r _ o2 o3 o4 <<<"$HOST"
for o in "$o2" "$o3" "$o4"; do (( 10#$o <= 255 )) || die 2 "bad address $HOST"; done
(( 10#$PORT >= 1 && 10#$PORT <= 65535 )) || die 2 "bad port $PORT"
[[ "$RUN_TIMEOUT" =~ ^[0-9]+$ ]] || die 2 "AUTOBAHN_TIMEOUT must be whole seconds"

if [[ -z "$CASES_ARG" ]]; then
  CASES="*"; EXCLUDE="${AUTOBAHN_EXCLUDE-12.*,13.*}"
else
  CASES="$CASES_ARG"; EXCLUDE="${AUTOBAHN_EXCLUDE-}"
fi
set -f  # patterns contain '*': no globbing while splitting them
for p in ${CASES//,/ } ${EXCLUDE//,/ }; do
  [[ "$p" =~ ^[0-9*.]+$ ]] || die 2 "bad case pattern '$p' (use e.g. 1.*, 9.1.1, *)"
done
set +f

# ---------------------------------------------------------------- setup (idempotent)
# Pinned set: what autobahntestsuite 25.10.1 resolves to on CPython 2.7.18.
PINS="autobahntestsuite==25.10.1 autobahn==0.10.9 Twisted==19.10.0 txaio==2.1.0
zope.interface==4.6.0 incremental==16.10.1 constantly==15.1.0 Automat==22.10.0
attrs==21.4.0 hyperlink==21.0.0 idna==2.10 typing==3.10.0.0 PyHamcrest==1.10.1
six==1.16.0 wsaccel==0.6.6 ujson==2.0.3 pyOpenSSL==19.1.0 cryptography==3.3.2
cffi==1.15.1 pycparser==2.21 enum34==1.1.10 ipaddress==1.0.23
service-identity==18.1.0 pyasn1==0.5.1 pyasn1-modules==0.3.0 Jinja2==2.11.3
MarkupSafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0 unittest2==1.1.0
linecache2==1.0.0 traceback2==1.4.0 argparse==1.4.0 setuptools==44.0.0"
STAMP="$(printf '%s' "$PINS" | cksum | cut -d' ' -f1)"

PY2_VERSION="2.7.18"

find_python2() {
  local c
  if [[ -n "${AUTOBAHN_PYTHON2-}" ]]; then echo "$AUTOBAHN_PYTHON2"; return; fi
  for c in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7 2>/dev/null | sort -V -r) \
           /usr/bin/python2.7 /usr/local/bin/python2.7 pypy; do
    if "$c" -c 'import sys; assert sys.version_info[:2] == (2, 7)' >/dev/null 2>&1; then
      echo "$c"; return
    fi
  done
  return 1
}

# No Python 2.7 anywhere: build CPython 2.7.18 with pyenv (it downloads the source from
# python.org) and print its path. The headers pip and the suite need (ssl for PyPI, zlib, ffi) come from apt
# when it is there. Without pyenv there is nothing sane to install it with: fail.
install_python2() {
  local log="$1" pyenv_bin sudo="" missing=() pkg
  pyenv_bin="$(command -v pyenv || true)"
  [[ -z "$pyenv_bin" && -x "${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv" ]] && pyenv_bin="${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv"
  if [[ -z "$pyenv_bin" ]]; then
    echo "autobahn: no Python 2.7 and no pyenv to build one (Debian 12 and later ship no python2)." >&2
    echo "  Install pyenv (https://github.com/pyenv/pyenv#installation), then: pyenv install $PY2_VERSION" >&2
    echo "  or point AUTOBAHN_PYTHON2 at any python2.7 (PyPy 2.7 works too)." >&2
    return 1
  fi
  if command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; then
    for pkg in gcc make libc6-dev libssl-dev zlib1g-dev libffi-dev libbz2-dev libreadline-dev libsqlite3-dev; do
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if (( ${#missing[@]} )); then
      [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
      echo "autobahn: apt-get install ${missing[*]} (to build Python $PY2_VERSION)" >&2
      { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"; } >>"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; echo "autobahn: apt-get failed (root or sudo is needed)" >&2; return 1; }
    fi
  fi
  echo "autobahn: no Python 2.7 found: pyenv install $PY2_VERSION (one-time, a few minutes of compiling; log: $log)" >&2
  timeout 3600 "$pyenv_bin" install -s "$PY2_VERSION" >>"$log" 2>&1 \
    || { tail -n 20 "$log" >&2; echo "autobahn: pyenv install $PY2_VERSION failed (see $log)" >&2; return 1; }
  echo "$("$pyenv_bin" root)/versions/$PY2_VERSION/bin/python2.7"
}

setup_suite() {
  local py2 log="$VENV.setup.log" boot
  command -v python3 >/dev/null || die 3 "python3 is needed to bootstrap virtualenv"
  if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" && -n "$(ls -A "$VENV" 2>/dev/null)" ]]; then
    die 3 "$VENV exists and is not a virtualenv; refusing to replace it"
  fi
  : >"$log"
  if ! py2="$(find_python2)"; then
    py2="$(install_python2 "$log")" || die 3 "suite setup failed: no Python 2.7 (the suite is Python 2 only)"
  fi
  echo "autobahn: installing the suite into $VENV (one-time, ~1 min; log: $log)" >&2
  rm -rf "$VENV"
  boot="$(mktemp -d)"
  # virtualenv < 20.22 is the last that can create Python 2.7 environments.
  # (each step time-bounded; PyPI must be reachable, nothing else is contacted)
  timeout 300 python3 -m pip install -q --disable-pip-version-check --target "$boot" 'virtualenv==20.21.1' >>"$log" 2>&1 \
    && PYTHONPATH="$boot" timeout 120 python3 -m virtualenv -q -p "$py2" "$VENV" >>"$log" 2>&1 \
    && PYTHONWARNINGS=ignore timeout 900 "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
         --no-python-version-warning $PINS >>"$log" 2>&1 \
    && "$VENV/bin/wstest" --autobahnversion >>"$log" 2>&1
  local rc=$?
  rm -rf "$boot"
  if (( rc != 0 )); then
    tail -n 20 "$log" >&2
    die 3 "suite setup failed (see $log)"
  fi
  echo "$STAMP" >"$VENV/.autobahn-stamp"
}

if [[ ! -x "$VENV/bin/wstest" || "$(cat "$VENV/.autobahn-stamp" 2>/dev/null)" != "$STAMP" ]]; then
  mkdir -p "$(dirname "$VENV")"
  if command -v flock >/dev/null; then
    exec 9>"$VENV.lock"; flock 9
    # another run may have finished the setup while we waited
    if [[ ! -x "$VENV/bin/wstest" || "$(cat "$VENV/.autobahn-stamp" 2>/dev/null)" != "$STAMP" ]]; then
      set +e; setup_suite; set -e
    fi
    flock -u 9
  else
    set +e; setup_suite; set -e
  fi
fi

# ---------------------------------------------------------------- run
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT/index.json" "$OUT/index.html" "$OUT"/${AGENT}_case_*.json "$OUT"/${AGENT}_case_*.html \
      "$OUT/wstest.log" "$OUT/spec.json"

# nothing listening -> fail fast instead of an empty report
if ! timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null; then
  die 4 "nothing accepts TCP connections on $HOST:$PORT"
fi

"$VENV/bin/python" - "$OUT/spec.json" "$OUT" "$AGENT" "$URL" "$CASES" "$EXCLUDE" <<'PY'
import json, sys
path, outdir, agent, url, cases, exclude = sys.argv[1:7]
split = lambda s: [p for p in s.replace(",", " ").split() if p]
spec = {"outdir": outdir,
        "servers": [{"agent": agent, "url": url}],
        "cases": split(cases), "exclude-cases": split(exclude),
        "exclude-agent-cases": {}}
json.dump(spec, open(path, "w"), indent=2)
PY

# wstest's fuzzingclient only writes reports once every case has finished, so it is
# driven here directly (same code path as `wstest -m fuzzingclient -s spec.json`)
# with a time budget: when it runs out, the finished cases are reported and the
# rest count as MISSING. The outer `timeout` is only a backstop.
t0=$(date +%s)
set +e
( cd "$OUT" && exec timeout --kill-after=10 $(( RUN_TIMEOUT + 60 )) \
    "$VENV/bin/python" -u -c '
import json, sys
from autobahntestsuite import choosereactor  # installs the epoll reactor, as wstest does
from twisted.internet import reactor
from autobahntestsuite import fuzzing
spec_path, budget = sys.argv[1], float(sys.argv[2])
factory = fuzzing.FuzzingClientFactory(json.load(open(spec_path)))  # starts case 1
state = {"timed_out": False}
def out_of_time():
    state["timed_out"] = True
    print("TIMEOUT: %ss budget used up while running case %s" % (budget, factory.currentCaseId))
    ignore = lambda *a: None
    factory.clientConnectionLost = factory.clientConnectionFailed = ignore
    try:
        factory.createReports()
    finally:
        reactor.stop()
reactor.callLater(budget, out_of_time)
reactor.run()
sys.exit(5 if state["timed_out"] else 0)
' "$OUT/spec.json" "$RUN_TIMEOUT" ) >"$OUT/wstest.log" 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - t0 ))

TIMED_OUT=0
if (( rc == 5 )); then
  TIMED_OUT=1
elif (( rc != 0 )) || [[ ! -f "$OUT/index.json" ]]; then
  tail -n 15 "$OUT/wstest.log" >&2
  (( rc == 124 || rc == 137 )) && die 4 "hard TIMEOUT (suite unresponsive); no report. Log: $OUT/wstest.log"
  die 4 "suite run failed (rc=$rc); log: $OUT/wstest.log"
fi

# ---------------------------------------------------------------- summary
set +e
"$VENV/bin/python" - "$OUT" "$AGENT" "$URL" "$elapsed" "$TIMED_OUT" "$RUN_TIMEOUT" <<'PY'
from __future__ import print_function
import json, os, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseBasename, CaseSetname
from autobahntestsuite.caseset import CaseSet

out, agent, url, elapsed, timed_out, budget = sys.argv[1:7]
spec = json.load(open(os.path.join(out, "spec.json")))
expected = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories).parseSpecCases(spec)
results = json.load(open(os.path.join(out, "index.json"))).get(agent, {})

key = lambda c: tuple(int(x) for x in c.split("."))
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
counts = dict((k, 0) for k in order)
failed, other, badclose = [], [], []
for cid in sorted(results, key=key):
    r = results[cid]
    b = r["behavior"]
    if b in counts:
        counts[b] += 1
    else:
        other.append("%s(%s)" % (cid, b))
    if b == "FAILED":
        failed.append(cid)
    if r.get("behaviorClose") not in ("OK", "INFORMATIONAL", "UNIMPLEMENTED") and b != "FAILED":
        badclose.append("%s(%s)" % (cid, r.get("behaviorClose")))
missing = [c for c in expected if c not in results]

pos = dict((c, i) for i, c in enumerate(expected))

def short(ids, n=60):
    return " ".join(ids[:n]) + (" ... (+%d more)" % (len(ids) - n) if len(ids) > n else "")

def ranges(ids):
    """All ids, runs of >= 3 consecutive cases (in suite order) written first..last."""
    runs, parts = [], []
    for c in ids:
        if runs and c in pos and runs[-1][-1] in pos and pos[c] == pos[runs[-1][-1]] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    for r in runs:
        parts.append("%s..%s" % (r[0], r[-1]) if len(r) >= 3 else " ".join(r))
    return " ".join(parts)

line = "autobahn: %d/%d cases vs %s in %ss: %s" % (
    len(results), len(expected), url, elapsed,
    " ".join("%s=%d" % (k, counts[k]) for k in order))
if missing:
    line += " MISSING=%d" % len(missing)
if other:
    line += " OTHER=%d" % len(other)
print(line)
if failed:
    print("FAILED (%d): %s" % (len(failed), ranges(failed)))
if missing:
    why = "not run before the time budget ran out" if timed_out == "1" else "no result: connection failed?"
    print("MISSING (%d, %s): %s" % (len(missing), why, ranges(missing)))
if other:
    print("OTHER behavior: " + short(other))
if badclose:
    print("note, close behavior not OK (not counted as failure): " + short(badclose, 20))
if timed_out == "1":
    print("TIMEOUT: AUTOBAHN_TIMEOUT=%ss ran out; %d case(s) not run (partial report)" % (budget, len(missing)))
print("report: %s/index.html  (per case: %s/%s_case_<id>.html; raw: index.json, wstest.log)" % (out, out, agent))
sys.exit(4 if timed_out == "1" else 1 if (failed or missing) else 0)
PY
exit $?
}
