#!/usr/bin/env bash
# PUT throughput, p99 and CPU per PUT of a 3-node release cluster with mutual TLS on both
# ports (peer and client), next to the same cluster in plain HTTP, in one run.
#
#   bench/tls-compare.sh [connections] [seconds]
#
# Builds nothing: run `cargo build --release --bin raftexample --bin raftbench` first. Each
# cluster gets a fresh temp dir under /work, is loaded for a warm-up, then measured with
# raftbench; CPU is the nodes' utime+stime from /proc over the measured run, divided by the
# successful PUTs.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-64}
SECS=${2:-20}
NODE=$PWD/target/release/raftexample
BENCH=$PWD/target/release/raftbench
TICKS=$(getconf CLK_TCK)
PIDS=()

cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

cpu_ticks() { # pids... -> sum of utime+stime
  local t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo $t
}

run() { # mode(plain|tls)
  local mode=$1 dir scheme peer_flags=() client_flags=()
  dir=$(mktemp -d -p /work rx-tls.XXXX)
  scheme=http
  if [ "$mode" = tls ]; then scheme=https; fi
  local cluster="$scheme://127.0.0.1:12379,$scheme://127.0.0.1:22379,$scheme://127.0.0.1:32379"
  if [ "$mode" = tls ]; then
    "$NODE" certs --dir "$dir/certs" --cluster "$cluster" >/dev/null
  fi
  PIDS=()
  for i in 1 2 3; do
    local flags=()
    if [ "$mode" = tls ]; then
      local c=$dir/certs
      flags=(--peer-cert-file "$c/member-$i.pem" --peer-key-file "$c/member-$i-key.pem"
        --peer-trusted-ca-file "$c/ca.pem" --peer-client-cert-auth
        --cert-file "$c/member-$i.pem" --key-file "$c/member-$i-key.pem"
        --trusted-ca-file "$c/ca.pem" --client-cert-auth)
    fi
    (cd "$dir" && exec "$NODE" --id $i --cluster "$cluster" --port "${i}2380" \
      --listen-client-addr 127.0.0.1 --log-level warning "${flags[@]}" 2>>"$dir/node$i.log") &
    PIDS+=($!)
  done
  local eps="$scheme://127.0.0.1:12380,$scheme://127.0.0.1:22380,$scheme://127.0.0.1:32380"
  local tls_flags=()
  if [ "$mode" = tls ]; then
    tls_flags=(--cacert "$dir/certs/ca.pem" --cert "$dir/certs/client.pem" --key "$dir/certs/client-key.pem")
  fi
  # Warm-up: until the cluster takes writes (bounded), then 3 s of load.
  for _ in $(seq 100); do
    if "$BENCH" --endpoints "$eps" "${tls_flags[@]}" --connections 1 --requests 1 --duration 2s >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  "$BENCH" --endpoints "$eps" "${tls_flags[@]}" --connections "$CONNS" --duration 3s >/dev/null
  local before after line
  before=$(cpu_ticks "${PIDS[@]}")
  line=$("$BENCH" --endpoints "$eps" "${tls_flags[@]}" --connections "$CONNS" --duration "${SECS}s")
  after=$(cpu_ticks "${PIDS[@]}")
  local ok
  ok=$(echo "$line" | sed -E 's/.* ok=([0-9]+).*/\1/')
  echo "$mode: $line"
  echo "$mode: node CPU $(( (after - before) * 1000000 / TICKS / (ok > 0 ? ok : 1) )) us per successful PUT"
  kill "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
  rm -rf "$dir"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
run plain
run tls
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
