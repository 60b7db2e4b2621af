#!/usr/bin/env bash
# Linearizable GETs on the two followers only (the leader serves none), the load that showed
# followers' ReadIndex batches stalling when two nodes used the same read contexts.
#
#   bench/follower-reads.sh [seconds] [connections]     (defaults: 10, 64)
#
# Needs `cargo build --release --workspace`. Prints the load average, the leader, and one
# raftbench line per follower run (both followers at once, then each alone).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-64}
BENCH=./target/release/raftbench
NODE=./target/release/raftexample
CLUSTER=http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379

DIR=$(mktemp -d -p "${BENCH_DIR:-/work}" rx-bench.XXXX)
PIDS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
for i in 1 2 3; do
  (cd "$DIR" && exec "$OLDPWD/$NODE" --id $i --cluster $CLUSTER --port ${i}2380 --log-level warning 2>"$DIR/node$i.log") &
  PIDS+=($!)
done
for _ in $(seq 100); do
  curl -sf -XPUT localhost:12380/ready -d 1 >/dev/null 2>&1 && break
  sleep 0.2
done
LEADER=$(curl -sf localhost:12380/status | sed -n 's/.*"leader": \([0-9]*\).*/\1/p' | head -1)
FOLLOWERS=()
for i in 1 2 3; do
  [ "$i" != "$LEADER" ] && FOLLOWERS+=("http://127.0.0.1:${i}2380")
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); leader: $LEADER"
# One raftbench per follower, both at once, so each follower's own p99 is visible.
OUT=()
BENCH_PIDS=()
for f in "${FOLLOWERS[@]}"; do
  out="$DIR/bench-${f##*:}.txt"
  OUT+=("$out")
  $BENCH --endpoints "$f" --mode get --connections "$CONNS" --duration "${SECS}s" \
    --key-prefix "f${f##*:}-" --threads 1 >"$out" &
  BENCH_PIDS+=($!)
done
wait "${BENCH_PIDS[@]}"
for i in "${!FOLLOWERS[@]}"; do
  echo "${FOLLOWERS[$i]}: $(cat "${OUT[$i]}")"
done
