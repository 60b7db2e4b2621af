#!/usr/bin/env bash
# Starts (or with --stop, stops) a local 3-node cluster of etcd's Go raftexample, for
# side-by-side measurements with raftbench.
#
#   bench/run-go-raftexample.sh          # build if missing, start, wait until it serves
#   bench/run-go-raftexample.sh --stop   # stop the recorded cluster, remove its data dir
#
# Peers listen on 12379/22379/32379 and clients on 12380/22380/32380 (the Procfile's ports,
# so run only one of the two clusters at a time). The data dirs live in a fresh temp dir.
# The binary is built from Debian's golang-etcd-server-dev (etcd 3.4 sources, GOPATH
# mode); the packages are installed with apt-get when missing.
#
# Environment: GO_RAFTEXAMPLE_BIN (default /work/bin/go-raftexample),
# GO_RAFTEXAMPLE_STATE (default $TMPDIR/go-raftexample-cluster.state: "dir pid pid pid").
set -euo pipefail

BIN=${GO_RAFTEXAMPLE_BIN:-/work/bin/go-raftexample}
STATE=${GO_RAFTEXAMPLE_STATE:-${TMPDIR:-/tmp}/go-raftexample-cluster.state}
PKG=go.etcd.io/etcd/contrib/raftexample
GOPATH_DEB=/usr/share/gocode
CLUSTER=http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379
READY_TIMEOUT_S=30

die() { echo "run-go-raftexample: $*" >&2; exit 1; }

build() {
    [ -x "$BIN" ] && return 0
    if ! command -v go >/dev/null || [ ! -d "$GOPATH_DEB/src/$PKG" ]; then
        echo "installing golang-go and golang-etcd-server-dev" >&2
        apt-get update >/dev/null && apt-get install -y golang-go golang-etcd-server-dev >/dev/null \
            || die "could not install golang-go golang-etcd-server-dev (need root and apt)"
    fi
    mkdir -p "$(dirname "$BIN")"
    echo "building $BIN from $PKG" >&2
    GO111MODULE=off GOPATH=$GOPATH_DEB GOCACHE=${GOCACHE:-${TMPDIR:-/tmp}/go-build-cache} \
        go build -o "$BIN" "$PKG" || die "go build of $PKG failed"
}

# True when $1 is a live process running our binary (never signal a recycled PID).
ours() {
    [ -e "/proc/$1" ] && [ "$(readlink -f "/proc/$1/exe" 2>/dev/null)" = "$(readlink -f "$BIN")" ]
}

stop() {
    [ -f "$STATE" ] || { echo "no Go raftexample cluster recorded in $STATE"; return 0; }
    read -r dir pids <"$STATE"
    for pid in $pids; do
        ours "$pid" && kill "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        alive=""
        for pid in $pids; do ours "$pid" && alive="$alive $pid"; done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    for pid in $alive; do kill -9 "$pid" 2>/dev/null || true; done
    case "$dir" in
        */go-raftexample.*) rm -rf -- "$dir" ;;
    esac
    rm -f -- "$STATE"
    echo "stopped Go raftexample cluster (pids $pids)"
}

# Waits until a PUT through node 1 is readable on all three nodes.
wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT_S)) value="ready-$$-$RANDOM"
    while [ "$SECONDS" -lt "$deadline" ]; do
        # Go raftexample drops proposals silently before a leader exists: PUT again each try.
        curl -s -o /dev/null -m 1 -XPUT "http://127.0.0.1:12380/bench-ready-probe" -d "$value" || true
        local seen=0
        for port in 12380 22380 32380; do
            [ "$(curl -s -m 1 "http://127.0.0.1:$port/bench-ready-probe" || true)" = "$value" ] \
                && seen=$((seen + 1))
        done
        [ "$seen" -eq 3 ] && return 0
        sleep 0.2
    done
    return 1
}

start() {
    [ -f "$STATE" ] && die "a cluster is already recorded in $STATE; run $0 --stop first"
    for port in 12379 22379 32379 12380 22380 32380; do
        curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/" \
            && die "port $port is already in use (another cluster running?)"
    done
    build
    local dir pids=()
    dir=$(mktemp -d "${TMPDIR:-/tmp}/go-raftexample.XXXXXX")
    for id in 1 2 3; do
        (cd "$dir" && exec "$BIN" --id "$id" --cluster "$CLUSTER" --port "${id}2380" \
            >"$dir/node$id.log" 2>&1) &
        pids+=("$!")
    done
    echo "$dir ${pids[*]}" >"$STATE"
    if ! wait_ready; then
        echo "cluster did not serve a write within ${READY_TIMEOUT_S}s; logs in $dir" >&2
        stop
        exit 1
    fi
    echo "Go raftexample cluster up in $dir"
    echo "pids: ${pids[*]}"
    echo "clients: http://127.0.0.1:12380,http://127.0.0.1:22380,http://127.0.0.1:32380"
}

case "${1:-}" in
    "") start ;;
    --stop) stop ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown option $1 (use --stop or nothing)" ;;
esac
