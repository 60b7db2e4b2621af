#!/usr/bin/env bash
# Issue-4 figures at scale on a 3-node release cluster (Procfile ports):
#  1. load N keys of 100 bytes (default 1,000,000) with raftbench;
#  2. PUT p99 with snapshots of the full state happening (every --snapshot-count entries)
#     next to the same run on a cluster that never snapshots;
#  3. snapshot creation time (from the logs);
#  4. resident memory per node;
#  5. catch-up time of a wiped follower (by snapshot): raft trusts what a member once
#     acknowledged, so a wiped member comes back as a new one: DELETE /3, POST /4, --join;
#  6. restart time of all nodes after kill -9 until the first linearizable GET.
#
#   bench/snapshot-scale.sh [keys]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-1000000}
BENCH=./target/release/raftbench
NODE=$PWD/target/release/raftexample
EP=http://127.0.0.1:12380,http://127.0.0.1:22380,http://127.0.0.1:32380
CLUSTER=http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379
ms() { date +%s%3N; }

start_node() { # id dir flags...
  local i=$1 dir=$2; shift 2
  (cd "$dir" && exec "$NODE" --id "$i" --cluster $CLUSTER --port "${i}2380" --log-level info "$@" 2>>"$dir/node$i.log") &
  PIDS[$i]=$!
}
start_cluster() { # dir flags...
  local dir=$1; shift
  for i in 1 2 3; do start_node $i "$dir" "$@"; done
  for _ in $(seq 200); do curl -sf -XPUT localhost:12380/ready -d 1 >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "cluster did not start" >&2; exit 1
}
stop_cluster() { kill "${PIDS[@]}" 2>/dev/null || true; wait "${PIDS[@]}" 2>/dev/null || true; }
rss() { for i in 1 2 3; do echo -n "proc$i=$(( $(awk '/VmRSS/{print $2}' /proc/${PIDS[$i]}/status) / 1024 ))MiB "; done; echo; }
leader_commit() { curl -s localhost:12380/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["commit_index"])'; }
applied() { curl -s "localhost:${1}2380/status" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["applied_index"])' 2>/dev/null || echo 0; }

declare -a PIDS
for mode in nosnap snap; do
  DIR=$(mktemp -d -p /work rx-scale.XXXX)
  if [ $mode = nosnap ]; then FLAGS=(--snapshot-count 1000000000); else FLAGS=(); fi
  start_cluster "$DIR" "${FLAGS[@]}"
  t0=$(ms)
  echo "[$mode] load: $($BENCH --endpoints $EP --mode put --connections 64 --requests $KEYS --duration 600s --key-prefix k --value-size 100)"
  echo "[$mode] load took $(( $(ms) - t0 )) ms"
  echo "[$mode] rss after load: $(rss)"
  echo "[$mode] put at $KEYS keys: $($BENCH --endpoints $EP --mode put --connections 64 --duration 10s --key-prefix p$mode --value-size 100)"
  if [ $mode = snap ]; then
    echo "[snap] snapshots during the run (node1): $(grep -c 'snapshot saved' "$DIR/node1.log")"
    grep 'snapshot saved' "$DIR/node1.log" | tail -3
    echo "[snap] rss after put run: $(rss)"
    # Wiped follower catch-up: node 3 loses its disk and comes back as node 4.
    kill -9 "${PIDS[3]}"; wait "${PIDS[3]}" 2>/dev/null || true
    rm -rf "$DIR/raftexample-3" "$DIR/raftexample-3-snap"
    curl -sf -XDELETE localhost:12380/3
    curl -sf -XPOST localhost:12380/4 -d http://127.0.0.1:42379
    target=$(leader_commit)
    t0=$(ms)
    (cd "$DIR" && exec "$NODE" --id 4 --cluster $CLUSTER,http://127.0.0.1:42379 --port 42380 --join --log-level info 2>>"$DIR/node4.log") &
    PIDS[3]=$!
    until [ "$(applied 4)" -ge "$target" ]; do sleep 0.05; done
    echo "[snap] wiped follower (re-added as node 4) caught up to index $target in $(( $(ms) - t0 )) ms"
    echo "[snap] rss after catch-up: $(rss)"
    # Restart everything after kill -9.
    kill -9 "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null || true
    t0=$(ms)
    for i in 1 2; do start_node $i "$DIR"; done
    (cd "$DIR" && exec "$NODE" --id 4 --cluster $CLUSTER,http://127.0.0.1:42379 --port 42380 --join --log-level info 2>>"$DIR/node4.log") &
    PIDS[3]=$!
    until curl -sf localhost:12380/k1 >/dev/null 2>&1; do sleep 0.02; done
    echo "[snap] restart after kill -9 until the first linearizable GET: $(( $(ms) - t0 )) ms"
    echo "[snap] rss after restart: $(rss)"
  fi
  stop_cluster
  rm -rf "$DIR"
done
