#!/usr/bin/env bash
# Backup and restore figures of a 3-node cluster holding PRELOAD keys (issue "Operating a
# cluster"):
#
#   1. `raftexample ctl snapshot save` alone: its time and the file's size;
#   2. PUT p99 at CONNS connections for LOAD_SECS seconds, without a backup;
#   3. the same load while `snapshot save`s stream from node 1, one after the other for the
#      whole run (so every PUT of the run is concurrent with a backup): the p99 ratio is the
#      figure (target: at most 1.5x);
#   4. `snapshot restore` of the file on 3 fresh members, their start, and the time until the
#      new cluster answers a linearizable GET.
#
#   bench/backup.sh
#
# Environment: PRELOAD=1000000 keys of 100 bytes, CONNS=16, LOAD_SECS=10, BENCH_DIR=/work (a
# real disk), SKIP_BUILD=1.
# Ports: peers 13379/23379/33379, clients 13380/23380/33380 (restored: +1000).
set -euo pipefail

cd "$(dirname "$(realpath "$0")")/.."
ROOT=$PWD
PRELOAD=${PRELOAD:-1000000}
CONNS=${CONNS:-16}
BENCH_DIR=${BENCH_DIR:-/work}
BIN=$ROOT/target/release/raftexample
BENCH=$ROOT/target/release/raftbench
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p raftexample -p bench
TMP=$(mktemp -d "$BENCH_DIR/backup-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

start_cluster() { # base-port dir
    local base=$1 dir=$2 cluster="" i
    cluster="http://127.0.0.1:$((base + 10000 - 1)),http://127.0.0.1:$((base + 20000 - 1)),http://127.0.0.1:$((base + 30000 - 1))"
    mkdir -p "$dir"
    for i in 1 2 3; do
        (cd "$dir" && exec "$BIN" --id $i --cluster "$cluster" --port $((base + i * 10000)) \
            --listen-client-addr 127.0.0.1 >"node-$i.log" 2>&1) &
        PIDS+=($!)
    done
}
cluster_of() { # base-port
    local base=$1
    echo "http://127.0.0.1:$((base + 10000 - 1)),http://127.0.0.1:$((base + 20000 - 1)),http://127.0.0.1:$((base + 30000 - 1))"
}
wait_get() { # client-port; polls a linearizable GET of key "probe" until 200 or 404
    local port=$1 end=$(( $(date +%s) + 120 )) code
    while [ "$(date +%s)" -lt "$end" ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/probe" || true)
        case $code in 200 | 404) return 0 ;; esac
        sleep 0.05
    done
    echo "no linearizable GET on $port within 120 s" >&2
    return 1
}

echo "# backup.sh: PRELOAD=$PRELOAD CONNS=$CONNS, $(nproc) CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
start_cluster 3380 "$TMP/source"
wait_get 13380
EP="http://127.0.0.1:13380,http://127.0.0.1:23380,http://127.0.0.1:33380"
echo "preloading $PRELOAD keys at 256 connections"
"$BENCH" --endpoints "$EP" --mode put --connections 256 --requests "$PRELOAD" --duration 1800s \
    --value-size 100 --key-prefix pre- | sed 's/^/  /'
curl -s http://127.0.0.1:13380/status | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  source: keys", d["keys"], "applied", d["applied_index"], "role of node 1", d["role"])'

T=$(now)
"$BIN" ctl --endpoints http://127.0.0.1:13380 --command-timeout 600s snapshot save "$TMP/first.rxb" | sed 's/^/  /'
SAVE1=$(since "$T")
echo "save alone: $(printf %.2f "$SAVE1") s, $(stat -c %s "$TMP/first.rxb") bytes"
LOAD_SECS=${LOAD_SECS:-10}

echo "PUT load without a backup, ${LOAD_SECS} s at $CONNS connections:"
"$BENCH" --endpoints "$EP" --mode put --connections "$CONNS" --duration "${LOAD_SECS}s" \
    --key-prefix plain- | sed 's/^/  /'
echo "PUT load while backups stream from node 1, one after the other for the whole run:"
"$BENCH" --endpoints "$EP" --mode put --connections "$CONNS" --duration "${LOAD_SECS}s" \
    --key-prefix during- | sed 's/^/  /' &
LOAD=$!
T=$(now)
SAVES=0
while kill -0 "$LOAD" 2>/dev/null; do
    "$BIN" ctl --endpoints http://127.0.0.1:13380 --command-timeout 600s snapshot save "$TMP/second.rxb.new" >/dev/null
    mv "$TMP/second.rxb.new" "$TMP/second.rxb"
    SAVES=$((SAVES + 1))
done
SAVE2=$(since "$T")
wait "$LOAD"
echo "  $SAVES saves under load in $(printf %.2f "$SAVE2") s: $(python3 -c "print(f'{$SAVE2 / $SAVES:.2f}')") s each"
"$BIN" snapshot status -w table "$TMP/second.rxb"

for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()
T=$(now)
mkdir -p "$TMP/restored"
for i in 1 2 3; do
    (cd "$TMP/restored" && "$BIN" snapshot restore "$TMP/second.rxb" --id $i --cluster "$(cluster_of 4380)" >/dev/null)
done
RESTORED=$(since "$T")
start_cluster 4380 "$TMP/restored"
wait_get 14380
SERVING=$(since "$T")
echo "restore of 3 members: $(printf %.2f "$RESTORED") s; a linearizable GET answered $(printf %.2f "$SERVING") s after the restore began"
curl -s http://127.0.0.1:14380/status | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  restored: keys", d["keys"], "digest", d["state_digest"])'
echo "# loadavg at the end $(cut -d' ' -f1-3 /proc/loadavg)"
