#!/usr/bin/env bash
# Before/after fan-out, throughput and ping runs used for docs/PERFORMANCE.md "2026-12-02":
# OLD and NEW wsgate binaries (history on, the default), NEW with --history-size 0, and uws.
# OLD=path/to/old/wsgate NEW=path/to/new/wsgate loadtest/before-after.sh; results in OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/loadtest/results/before-after}; mkdir -p $out
export LOADTEST_BIN=${LOADTEST_BIN:-$PWD/target/release/wsgate-loadtest}
new=${NEW:-$PWD/target/release/wsgate}
old=${OLD:?set OLD to the wsgate binary to compare against}
for run in 1 2 3; do
  for scen in fanout throughput ping; do
    case $scen in
      connect) a="-n 5000";; fanout) a="-n 1000 -m 100 --payload 100,1024,4096,16384,65536";;
      throughput) a="-n 1000 -k 8 -d 10s";; ping) a="-n 500 -d 10s";; churn) a="-n 50 -d 10s";;
    esac
    for which in old new; do
      bin=$old; [ $which = new ] && bin=$new
      WSGATE_BIN=$bin PORT=$((9400+run)) loadtest/run-peers.sh wsgate $scen $a --json $out/$which.jsonl --no-plot --timeout 3m >/dev/null 2>>$out/log.txt || echo "fail $which $scen $run" >> $out/log.txt
    done
    if [ $scen = fanout ] || [ $scen = throughput ]; then
      WSGATE_BIN=$new WSGATE_EXTRA_ARGS="--history-size 0" PORT=$((9410+run)) loadtest/run-peers.sh wsgate $scen $a --json $out/nohistory.jsonl --no-plot --timeout 3m >/dev/null 2>>$out/log.txt || echo "fail nohist $scen $run" >> $out/log.txt
    fi
    if [ $scen = fanout ]; then
      PORT=$((9420+run)) loadtest/run-peers.sh uws fanout $a --json $out/uws.jsonl --no-plot --timeout 3m >/dev/null 2>>$out/log.txt || echo "fail uws $run" >> $out/log.txt
    fi
  done
done
echo done >> $out/log.txt
