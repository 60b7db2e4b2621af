#!/usr/bin/env bash
# Backup and restore figures of a 3-node cluster holding PRELOAD keys (issue "Operating a
# cluster"):
#
#   1. `raftexample ctl snapshot save` alone: its time and the file's size;
#   2. PUT p99 at CONNS connections for LOAD_SECS seconds, without a backup;
#   3. the same load while SAVES_DURING `snapshot save`s stream from node 1, GAP_SECS apart:
#      raftbench logs every PUT's start and latency, and the p99 of the PUTs that overlap a
#      save, against the p99 of the run without backups, is the figure (target: at most
#      1.5x);
#   4. `snapshot restore` of the file on 3 fresh members, their start, and the time until the
#      new cluster answers a linearizable GET.
#
#   bench/backup.sh
#
# Environment: PRELOAD=1000000 keys of 100 bytes, CONNS=16, LOAD_SECS=20, SAVES_DURING=4,
# GAP_SECS=2, BENCH_DIR=/work (a real disk), SKIP_BUILD=1.
# Ports: peers 13379/23379/33379, clients 13380/23380/33380 (restored: +1000).
set -euo pipefail

cd "$(dirname "$(realpath "$0")")/.."
ROOT=$PWD
PRELOAD=${PRELOAD:-1000000}
CONNS=${CONNS:-16}
BENCH_DIR=${BENCH_DIR:-/work}
BIN=${NODE:-$ROOT/target/release/raftexample}
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
LOAD_SECS=${LOAD_SECS:-20}
SAVES_DURING=${SAVES_DURING:-4}
GAP_SECS=${GAP_SECS:-2}

echo "PUT load without a backup, ${LOAD_SECS} s at $CONNS connections:"
"$BENCH" --endpoints "$EP" --mode put --connections "$CONNS" --duration "${LOAD_SECS}s" \
    --key-prefix plain- --latency-log "$TMP/plain.lat" | sed 's/^/  /'
echo "PUT load with $SAVES_DURING backups from node 1, ${GAP_SECS} s apart:"
"$BENCH" --endpoints "$EP" --mode put --connections "$CONNS" --duration "${LOAD_SECS}s" \
    --key-prefix during- --latency-log "$TMP/during.lat" | sed 's/^/  /' &
LOAD=$!
sleep 1
: >"$TMP/windows"
for _ in $(seq "$SAVES_DURING"); do
    kill -0 "$LOAD" 2>/dev/null || break
    from=$(date +%s%6N)
    "$BIN" ctl --endpoints http://127.0.0.1:13380 --command-timeout 600s snapshot save "$TMP/second.rxb.new" >/dev/null
    echo "$from $(date +%s%6N)" >>"$TMP/windows"
    mv "$TMP/second.rxb.new" "$TMP/second.rxb"
    sleep "$GAP_SECS"
done
wait "$LOAD"
python3 - "$TMP/plain.lat" "$TMP/during.lat" "$TMP/windows" <<'PY'
import sys
def load(path):
    return [tuple(map(int, line.split())) for line in open(path)]
def p99(lat):
    lat = sorted(lat)
    return lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000 if lat else float("nan")
plain, during = load(sys.argv[1]), load(sys.argv[2])
windows = [tuple(map(int, line.split())) for line in open(sys.argv[3])]
inside = [l for s, l in during if any(s < b and s + l > a for a, b in windows)]
outside = [l for s, l in during if not any(s < b and s + l > a for a, b in windows)]
took = [(b - a) / 1e6 for a, b in windows]
base = p99([l for _, l in plain])
print(f"  {len(windows)} saves under load: {', '.join(f'{t:.2f}' for t in took)} s")
print(f"  p99 without backups {base:.2f} ms; PUTs overlapping a save: {len(inside)}, p99 "
      f"{p99(inside):.2f} ms ({p99(inside) / base:.2f}x); the same run between saves: p99 "
      f"{p99(outside):.2f} ms")
PY
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
