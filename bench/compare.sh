#!/usr/bin/env bash
# Side-by-side load figures: our 3-node cluster, then etcd's Go raftexample, on the Procfile
# ports, with the same raftbench runs (PUT at 1/16/64 connections, GET at 64).
#
#   bench/compare.sh [seconds-per-run]     (default 10)
#
# NODE=path/to/raftexample runs another build of ours (e.g. an older commit's); ONLY_OURS=1
# skips the Go raftexample.
#
# Needs `cargo build --release --workspace`. Data dirs go to a temp dir on the work disk.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
BENCH=./target/release/raftbench
NODE=$(realpath "${NODE:-./target/release/raftexample}")
EP=http://127.0.0.1:12380,http://127.0.0.1:22380,http://127.0.0.1:32380
CLUSTER=http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379

runs() {
  local name=$1 extra=${2:-}
  for c in 1 16 64; do
    echo "$name put c=$c: $($BENCH --endpoints $EP --mode put --connections $c --duration ${SECS}s --verify $extra)"
  done
  echo "$name get c=64: $($BENCH --endpoints $EP --mode get --connections 64 --duration ${SECS}s $extra)"
}

start_ours() {
  DIR=$(mktemp -d -p "${BENCH_DIR:-/work}" rx-bench.XXXX)
  PIDS=()
  for i in 1 2 3; do
    (cd "$DIR" && exec "$NODE" --id $i --cluster $CLUSTER --port ${i}2380 --log-level warning 2>"$DIR/node$i.log") &
    PIDS+=($!)
  done
  for _ in $(seq 100); do
    curl -sf -XPUT localhost:12380/ready -d 1 >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "our cluster did not start" >&2; exit 1
}

stop_ours() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
  rm -rf "$DIR"
}

start_ours
runs ours
echo "ours get-serializable c=64: $($BENCH --endpoints $EP --mode get-serializable --connections 64 --duration ${SECS}s)"
stop_ours

[ -n "${ONLY_OURS:-}" ] && exit 0
bench/run-go-raftexample.sh >/dev/null
runs go
bench/run-go-raftexample.sh --stop >/dev/null
