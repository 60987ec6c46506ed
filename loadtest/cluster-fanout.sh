#!/usr/bin/env bash
# Fan-out across two cluster nodes: a private redis-server and two wsgate
# nodes (both pinned to core 0, like a single node in run-peers.sh), the
# generator on core 1 publishing through node A while its subscribers are
# spread over A and B. Extra flags go to wsgate-loadtest.
#
#   loadtest/cluster-fanout.sh -n 1000 -m 200 --payload 100,4096 --json out.jsonl
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin=${WSGATE_BIN:-$root/target/release/wsgate}
loadtest=${LOADTEST_BIN:-$root/target-loadtest/release/wsgate-loadtest}
[ -x "$bin" ] || cargo build --release -q --bin wsgate
[ -x "$loadtest" ] || CARGO_TARGET_DIR=target-loadtest cargo build --release -q -p wsgate-loadtest
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
redis_port=$(free_port); a=$(free_port); b=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis=$!
pids=()
cleanup() { kill "${pids[@]}" "$redis" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break; sleep 0.1; done
for node in a b; do
  port=${!node}
  taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --jwt-secret bench-secret --api-key bench-key \
    --rate-limit-messages 1000000 --max-connections 100000 --max-message-size 1048576 \
    --redis-url "redis://127.0.0.1:$redis_port/" --node-id "bench-$node" >"$work/$node.out" 2>"$work/$node.err" &
  pids+=($!)
done
for node in a b; do
  for _ in $(seq 1 100); do grep -q listening "$work/$node.out" && break; sleep 0.1; done
done
taskset -c 1 "$loadtest" fanout --url "http://127.0.0.1:$a" --ws-url "http://127.0.0.1:$a,http://127.0.0.1:$b" \
  --target wsgate-2-nodes --jwt-secret bench-secret --api-key bench-key --server-pid "${pids[0]}" "$@"
