#!/usr/bin/env bash
# Side-by-side PUT figures of four systems on loopback, in one run:
#
#   ours   our 3-node raftexample cluster (target/release/raftexample)
#   go     etcd's Go raftexample, 3 nodes (bench/run-go-raftexample.sh)
#   etcd   etcd 3.4 (Debian's etcd-server), 3 members, loaded over gRPC by bench/etcdload
#   noop   the HTTP ceiling: one no-op hyper PUT server (target/release/noop-server)
#
# Peers listen on 12379/22379/32379 and clients on 12380/22380/32380 (noop: 12380 only); the
# load always goes to node 1's client URL only (127.0.0.1:12380), whatever its raft role.
# Every row is a closed-loop run of SECS seconds of PUTs of unique keys with 100-byte values
# (raftbench for ours/go/noop, etcdload for etcd) at 1, 64 and 256 connections, plus a
# linearizable GET row at 64 connections for ours. Per row: PUT/s, p50, p99 of the load
# generator, and the CPU time and context switches of the system's server processes per
# successful request. Once per run: /proc/loadavg at start and end, and the fdatasync latency
# of the disk the data dirs live on. It ends with a markdown table and the ratios of ours to
# each peer.
#
#   bench/compare.sh [SECS] [--million]
#
# Environment:
#   SYSTEMS="ours go etcd noop"  which systems run, in this order
#   SECS=10                      seconds per row (or the first argument)
#   CONNS="1 64 256"             connection counts of the PUT rows
#   MILLION=1 (or --million)     first preload PRELOAD keys of 100 bytes into each system
#                                (not noop) at 256 connections, then run the same rows; ours
#                                also reports the share of its CPU spent on snapshots, if its
#                                /metrics has raftexample_snapshot_cpu_seconds_total
#   PRELOAD=1000000              keys of the million mode (a smaller number for a quick try)
#   PRELOAD_TIMEOUT=1800         bound on one preload, seconds
#   NODE=path                    another build of ours (default target/release/raftexample)
#   EXTRA_FLAGS="..."            extra flags for our nodes (e.g. --snapshot-count 100000)
#   BENCH_DIR=/work              where the temp dir of the data dirs goes (a real disk; tmpfs
#                                is refused)
#   SKIP_BUILD=1                 do not run cargo build (use the binaries in target/release)
#   NETNS=1                      run in a private network namespace (own loopback), so the
#                                ports cannot collide with clusters already running here
#
# Install steps, only when missing: apt-get install golang-go golang-etcd-server-dev (go and
# etcd systems: the Go raftexample and etcdload are built in GOPATH mode from Debian's etcd
# 3.4 sources, offline) and etcd-server (etcd system). Binaries built: cargo build --release
# -p raftexample -p bench (-p bench only when NODE is given); the Go raftexample when
# missing, as run-go-raftexample.sh builds it (GO_RAFTEXAMPLE_BIN, default
# /work/bin/go-raftexample); etcdload when missing or older than bench/etcdload/main.go
# (ETCDLOAD_BIN, default /work/bin/etcdload).
# NETNS=1 needs root (unshare --net) and iproute2.
#
# Notes on the figures:
# - Go raftexample answers a PUT once proposed, before it is committed; ours and etcd answer
#   once committed and applied.
# - CPU is utime+stime of each server process (/proc/PID/stat fields 14 and 15, which include
#   threads that exited); context switches are voluntary+nonvoluntary summed over
#   /proc/PID/task/*/status, so a thread that exits during a run takes its switches with it
#   (the figure is a lower bound for runtimes that retire threads, e.g. Go's).
# - The load generator runs on the same 2 CPUs as the servers; its CPU is not counted.
set -euo pipefail

SCRIPT=$(realpath "$0")
cd "$(dirname "$SCRIPT")/.."
ROOT=$PWD

for arg in "$@"; do
    case "$arg" in
        --million) MILLION=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$SCRIPT" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        '' | *[!0-9]*) echo "compare.sh: unknown argument $arg (SECS or --million)" >&2; exit 2 ;;
        *) SECS=$arg ;;
    esac
done
SECS=${SECS:-10}
SYSTEMS=${SYSTEMS:-ours go etcd noop}
CONNS=${CONNS:-1 64 256}
MILLION=${MILLION:-}
[ "$MILLION" = 0 ] && MILLION=
PRELOAD=${PRELOAD:-1000000}
PRELOAD_TIMEOUT=${PRELOAD_TIMEOUT:-1800}
BENCH_DIR=${BENCH_DIR:-/work}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
BENCH=$ROOT/target/release/raftbench
NOOP=$ROOT/target/release/noop-server
PROBE=$ROOT/target/release/fsync-probe
NODE_GIVEN=${NODE:+1}
NODE=$(realpath -m "${NODE:-$ROOT/target/release/raftexample}")
ETCDLOAD=${ETCDLOAD_BIN:-/work/bin/etcdload}
GOPATH_DEB=/usr/share/gocode
export GOCACHE=${GOCACHE:-/tmp/go-build-cache}
EP1=http://127.0.0.1:12380
CLUSTER=http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379
PORTS="12379 22379 32379 12380 22380 32380"
TICK=$(getconf CLK_TCK)
READY_TIMEOUT_S=30
STOP_TIMEOUT_S=10

die() { echo "compare.sh: $*" >&2; exit 1; }
note() { echo "compare.sh: $*" >&2; }

for s in $SYSTEMS; do
    case "$s" in ours | go | etcd | noop) ;; *) die "unknown system $s in SYSTEMS (ours go etcd noop)" ;; esac
done
case "$SECS" in '' | *[!0-9]* | 0) die "SECS must be a whole number of seconds > 0" ;; esac
has() { case " $SYSTEMS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------- installs and builds ----
# All of this happens before NETNS=1 moves us into a namespace without a network.
APT_UPDATED=
apt_install() {
    [ -n "$APT_UPDATED" ] || { apt-get update >/dev/null && APT_UPDATED=1; } \
        || die "apt-get update failed (need root and Debian's package archive)"
    note "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null \
        || die "could not install $* with apt-get"
}

prepare() {
    if [ -z "${_COMPARE_IN_NETNS:-}" ]; then
        if [ -z "${SKIP_BUILD:-}" ]; then
            local build=(cargo build --release -p bench)
            has ours && [ -z "${NODE_GIVEN:-}" ] && build+=(-p raftexample)
            if ! "${build[@]}" >&2; then
                # shellcheck disable=SC2015 # die is the else of all three
                [ -x "$BENCH" ] && [ -x "$NOOP" ] && [ -x "$PROBE" ] \
                    || die "cargo build failed and target/release lacks the bench binaries"
                note "WARNING: cargo build failed; using the binaries already in target/release"
            fi
        fi
        if has go || has etcd; then
            if ! command -v go >/dev/null || [ ! -d "$GOPATH_DEB/src/go.etcd.io/etcd/clientv3" ] \
                || [ ! -d "$GOPATH_DEB/src/go.etcd.io/etcd/contrib/raftexample" ]; then
                apt_install golang-go golang-etcd-server-dev
            fi
        fi
        has etcd && ! command -v etcd >/dev/null && apt_install etcd-server
        has etcd && build_etcdload
        has go && build_go_raftexample
    fi
    [ -x "$BENCH" ] || die "$BENCH is missing (cargo build --release -p bench)"
    [ -x "$PROBE" ] || die "$PROBE is missing (cargo build --release -p bench)"
    has noop && { [ -x "$NOOP" ] || die "$NOOP is missing (cargo build --release -p bench)"; }
    has ours && { [ -x "$NODE" ] || die "$NODE is missing (cargo build --release -p raftexample)"; }
    has etcd && { command -v etcd >/dev/null || die "etcd is not installed (apt-get install etcd-server)"; }
    return 0
}

# run-go-raftexample.sh builds the same binary on its first start, but only once its ports
# are free; building here keeps that out of the measured part (and off a netns's network).
build_go_raftexample() {
    local bin=${GO_RAFTEXAMPLE_BIN:-/work/bin/go-raftexample}
    [ -x "$bin" ] && return 0
    note "building $bin from go.etcd.io/etcd/contrib/raftexample (GOPATH mode)"
    mkdir -p "$(dirname "$bin")"
    GO111MODULE=off GOPATH=$GOPATH_DEB go build -o "$bin" go.etcd.io/etcd/contrib/raftexample \
        || die "go build of the Go raftexample failed"
}

build_etcdload() {
    local src=$ROOT/bench/etcdload/main.go
    [ -x "$ETCDLOAD" ] && [ ! "$src" -nt "$ETCDLOAD" ] && return 0
    [ -d "$GOPATH_DEB/src/go.etcd.io/etcd/clientv3" ] \
        || die "$GOPATH_DEB/src/go.etcd.io/etcd/clientv3 is missing (golang-etcd-server-dev)"
    note "building $ETCDLOAD from bench/etcdload (GOPATH mode, Debian's clientv3)"
    local gopath
    gopath=$(mktemp -d "${TMPDIR:-/tmp}/etcdload-gopath.XXXX")
    mkdir -p "$gopath/src/etcdload" "$(dirname "$ETCDLOAD")"
    cp "$src" "$gopath/src/etcdload/"
    (cd "$gopath/src/etcdload" && GO111MODULE=off GOPATH=$gopath:$GOPATH_DEB go build -o "$ETCDLOAD" .) \
        || { rm -rf "$gopath"; die "go build of bench/etcdload failed"; }
    rm -rf "$gopath"
}

prepare

if [ -n "${NETNS:-}" ] && [ -z "${_COMPARE_IN_NETNS:-}" ]; then
    note "re-running in a private network namespace (NETNS=1)"
    export SECS SYSTEMS CONNS MILLION PRELOAD PRELOAD_TIMEOUT BENCH_DIR EXTRA_FLAGS NODE
    # shellcheck disable=SC2016 # "$0" is for the inner shell
    exec unshare --net -- env _COMPARE_IN_NETNS=1 SKIP_BUILD=1 \
        bash -c 'ip link set lo up && exec "$0"' "$SCRIPT"
fi

# ---------------------------------------------------------------- run state and cleanup ----
[ "$(stat -f -c %T "$BENCH_DIR")" != tmpfs ] || die "BENCH_DIR=$BENCH_DIR is a tmpfs; use a real disk"
RUN_DIR=$(mktemp -d -p "$BENCH_DIR" compare.XXXX)
LOG_DIR=$RUN_DIR/logs
mkdir -p "$LOG_DIR"
ROWS=$RUN_DIR/rows.tsv
ROLES=$RUN_DIR/roles.txt
: >"$ROLES"
: >"$ROWS"
SYS=""          # the system now running
PIDS=()         # its server processes
GO_STATE=$RUN_DIR/go-raftexample.state
LOAD_PID=""     # the load generator now running

# Stops the current system: SIGTERM, then SIGKILL after STOP_TIMEOUT_S; keeps its logs and
# removes its data.
stop_system() {
    [ -n "$SYS" ] || return 0
    if [ "$SYS" = go ]; then
        if [ -f "$GO_STATE" ]; then
            local dir
            read -r dir _ <"$GO_STATE"
            for f in "$dir"/node*.log; do [ -f "$f" ] && cp "$f" "$LOG_DIR/go-$(basename "$f")"; done
            GO_RAFTEXAMPLE_STATE=$GO_STATE bench/run-go-raftexample.sh --stop >/dev/null 2>&1 || true
        fi
    else
        local pid alive deadline=$((SECONDS + STOP_TIMEOUT_S))
        for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
        while [ "$SECONDS" -lt "$deadline" ]; do
            alive=""
            for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ -z "$alive" ] && break
            sleep 0.1
        done
        for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
        for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
        for f in "$RUN_DIR/$SYS"/*.log; do [ -f "$f" ] && mv "$f" "$LOG_DIR/$SYS-$(basename "$f")"; done
        rm -rf -- "${RUN_DIR:?}/$SYS"
    fi
    SYS=""
    PIDS=()
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$LOAD_PID" ]; then
        kill -- -"$LOAD_PID" 2>/dev/null || kill "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
    fi
    stop_system
    if [ "$rc" -eq 0 ] || [ -z "$(find "$LOG_DIR" -type f -size +0 2>/dev/null)" ]; then
        rm -rf -- "$RUN_DIR"
    else
        find "$RUN_DIR" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf -- {} + 2>/dev/null || true
        note "failed (exit $rc); server logs kept in $LOG_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs "$@" bounded by $1 seconds (SIGKILL 5 s later) with stdout to $OUT, in the background
# so that a signal to this script is handled at once; returns the command's status.
OUT=$RUN_DIR/out
bounded() {
    local secs=$1 rc=0
    shift
    timeout -k 5 "$secs" "$@" >"$OUT" &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    return "$rc"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to 10 s for our ports to be free (the previous system's sockets), else fails.
ports_free() {
    local deadline=$((SECONDS + 10)) busy port
    while :; do
        busy=""
        for port in $PORTS; do port_busy "$port" && busy="$busy $port"; done
        [ -z "$busy" ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && die "port(s)$busy already in use (another cluster running here? NETNS=1 avoids it)"
        sleep 0.2
    done
}

# Polls "$@" until it succeeds, for READY_TIMEOUT_S.
wait_until() {
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# ---------------------------------------------------------------- the four systems ----
start_ours() {
    local i dir=$RUN_DIR/ours
    mkdir -p "$dir"
    for i in 1 2 3; do
        # shellcheck disable=SC2086 # EXTRA_FLAGS are words
        (cd "$dir" && exec "$NODE" --id "$i" --cluster "$CLUSTER" --port "${i}2380" \
            --log-level warning $EXTRA_FLAGS 2>"$dir/node$i.log") &
        PIDS+=("$!")
    done
    wait_until curl -sf -m 1 -XPUT "$EP1/compare-ready" -d 1 -o /dev/null \
        || die "our cluster did not serve a write within ${READY_TIMEOUT_S}s"
}

start_go() {
    GO_RAFTEXAMPLE_STATE=$GO_STATE TMPDIR=$RUN_DIR bench/run-go-raftexample.sh >/dev/null \
        || die "the Go raftexample cluster did not start"
    local pids
    read -r _ pids <"$GO_STATE"
    read -r -a PIDS <<<"$pids"
}

etcd_healthy() { curl -s -m 1 "$EP1/health" 2>/dev/null | grep -q '"health":"true"'; }

start_etcd() {
    local i dir=$RUN_DIR/etcd
    local initial=n1=http://127.0.0.1:12379,n2=http://127.0.0.1:22379,n3=http://127.0.0.1:32379
    mkdir -p "$dir"
    for i in 1 2 3; do
        etcd --name "n$i" --data-dir "$dir/n$i.etcd" \
            --listen-peer-urls "http://127.0.0.1:${i}2379" \
            --initial-advertise-peer-urls "http://127.0.0.1:${i}2379" \
            --listen-client-urls "http://127.0.0.1:${i}2380" \
            --advertise-client-urls "http://127.0.0.1:${i}2380" \
            --initial-cluster "$initial" --initial-cluster-state new \
            --initial-cluster-token "compare-$$" \
            --logger zap --log-level error --log-outputs stderr \
            >"$dir/etcd$i.log" 2>&1 &
        PIDS+=("$!")
    done
    wait_until etcd_healthy || die "etcd did not become healthy within ${READY_TIMEOUT_S}s"
}

start_noop() {
    mkdir -p "$RUN_DIR/noop"
    "$NOOP" --port 12380 2>"$RUN_DIR/noop/noop.log" &
    PIDS+=("$!")
    wait_until curl -sf -m 1 -XPUT "$EP1/compare-ready" -d 1 -o /dev/null \
        || die "noop-server did not answer within ${READY_TIMEOUT_S}s"
}

start_system() {
    ports_free
    SYS=$1
    "start_$1"
    note "$1 up (pids ${PIDS[*]})"
}

# Fails (and so stops the script) if a server process of the current system has exited.
check_alive() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "$SYS server process $pid exited during the run"
    done
}

# ---------------------------------------------------------------- measuring ----
# Prints "<CPU clock ticks> <context switches>" summed over the current system's processes.
sample() {
    local ticks=0 pid stat f
    for pid in "${PIDS[@]}"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }         # fields from 3 on (the command name may hold spaces)
        read -r -a f <<<"$stat"
        ticks=$((ticks + f[11] + f[12]))   # utime, stime: fields 14 and 15
    done
    local ctx
    ctx=$(for pid in "${PIDS[@]}"; do cat /proc/"$pid"/task/*/status 2>/dev/null; done \
        | awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }')
    echo "$ticks $ctx"
}

# field NAME LINE: the value of NAME=... in a raftbench/etcdload line.
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p; s/^$1=\([^[:space:]]*\).*/\1/p" <<<"$2" | head -n1; }

ROW=0
# The load command of one row: measure SYSTEM OP CONNS.
load_cmd() {
    local op=$1 conns=$2
    ROW=$((ROW + 1))
    if [ "$SYS" = etcd ]; then
        CMD=("$ETCDLOAD" -endpoint 127.0.0.1:12380 -connections "$conns" -duration "${SECS}s"
            -value-size 100 -key-prefix "cmp-$ROW-")
    else
        CMD=("$BENCH" --endpoints "$EP1" --mode "$op" --connections "$conns"
            --duration "${SECS}s" --value-size 100 --key-prefix "cmp-$ROW-")
    fi
}

row() { printf '%-10s %6s %10s %9s %9s %11s %11s  %s\n' "$@"; }

# measure OP CONNS: one timed run against node 1, with CPU and context-switch samples taken
# immediately before and after it; prints a row and appends it to $ROWS.
measure() {
    local op=$1 conns=$2 label=$SYS before after line
    [ "$op" = get ] && label="$SYS GET"
    if [ "$SYS" = ours ]; then
        # Node 1's raft role matters (a follower forwards every PUT): say it with each row.
        local role
        role=$(curl -s --max-time 2 http://127.0.0.1:12380/status | grep -o '"role": *"[a-z-]*"' \
            | grep -o '[a-z-]*"$' | tr -d '"' || true)
        echo "ours: node 1 is ${role:-unknown} for the $op row at $conns connections" >>"$ROLES"
    fi
    load_cmd "$op" "$conns"
    before=$(sample)
    if ! bounded $((SECS + 60)) "${CMD[@]}"; then
        row "$label" "$conns" failed - - - - "(load generator failed; see above)"
        printf '%s\t%s\tfailed\t-\t-\t-\t-\t-\n' "$label" "$conns" >>"$ROWS"
        check_alive
        return 0
    fi
    after=$(sample)
    check_alive
    line=$(tail -n1 "$OUT")
    local ok rate p50 p99 errors
    ok=$(field ok "$line")
    rate=$(field 'req\/s' "$line")
    p50=$(field p50 "$line")
    p99=$(field p99 "$line")
    errors=$(field errors "$line")
    local cpu ctx
    read -r cpu ctx < <(awk -v b="$before" -v a="$after" -v ok="$ok" -v tick="$TICK" 'BEGIN {
        split(b, x, " "); split(a, y, " ");
        if (ok > 0) printf "%.1f %.2f\n", (y[1] - x[1]) * 1e6 / tick / ok, (y[2] - x[2]) / ok;
        else print "- -" }')
    row "$label" "$conns" "$rate" "$p50" "$p99" "$cpu" "$ctx" "$errors"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$conns" "$rate" "$p50" "$p99" "$cpu" "$ctx" "$errors" >>"$ROWS"
}

# Million mode: PRELOAD keys of 100 bytes at 256 connections (not timed in the rows).
preload() {
    local line
    note "$SYS: preloading $PRELOAD keys at 256 connections"
    if [ "$SYS" = etcd ]; then
        bounded $((PRELOAD_TIMEOUT + 60)) "$ETCDLOAD" -endpoint 127.0.0.1:12380 -connections 256 \
            -preload "$PRELOAD" -preload-timeout "${PRELOAD_TIMEOUT}s" -duration 0 \
            -value-size 100 -key-prefix "cmp-preload-" || die "$SYS: preload failed"
    else
        bounded $((PRELOAD_TIMEOUT + 60)) "$BENCH" --endpoints "$EP1" --mode put --connections 256 \
            --requests "$PRELOAD" --duration "${PRELOAD_TIMEOUT}s" --value-size 100 \
            --key-prefix cmp-preload- || die "$SYS: preload failed"
    fi
    check_alive
    line=$(tail -n1 "$OUT")
    [ "$(field ok "$line")" = "$PRELOAD" ] || note "WARNING: $SYS preload incomplete: $line"
    echo "$SYS preload of $PRELOAD keys: $line"
}

# Sum over our 3 nodes of raftexample_snapshot_cpu_seconds_total, or "" when absent.
snapshot_cpu() {
    local i found="" total=0 v
    for i in 1 2 3; do
        v=$(curl -s -m 2 "http://127.0.0.1:${i}2380/metrics" 2>/dev/null | awk '
            $1 ~ /^raftexample_snapshot_cpu_seconds_total([{]|$)/ { s += $NF; f = 1 }
            END { if (f) print s }') || true
        [ -n "$v" ] || return 0
        found=1
        total=$(awk -v a="$total" -v b="$v" 'BEGIN { print a + b }')
    done
    [ -n "$found" ] && echo "$total"
    return 0
}

mem_report() {
    local i pid rss hwm out=""
    for i in 1 2 3; do
        pid=${PIDS[$((i - 1))]}
        rss=$(awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")
        hwm=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")
        out="$out node$i VmRSS=${rss}MB VmHWM=${hwm}MB;"
    done
    echo "ours memory after the runs:${out%;}"
}

run_system() {
    start_system "$1"
    [ -n "$MILLION" ] && [ "$SYS" != noop ] && preload
    local c snap0="" snap1 window0 window1
    if [ "$SYS" = ours ] && [ -n "$MILLION" ]; then
        snap0=$(snapshot_cpu)
        window0=$(sample)
    fi
    for c in $CONNS; do measure put "$c"; done
    if [ -n "$snap0" ]; then
        snap1=$(snapshot_cpu)
        window1=$(sample)
        [ -n "$snap1" ] && awk -v s0="$snap0" -v s1="$snap1" -v a="$window0" -v b="$window1" \
            -v tick="$TICK" 'BEGIN { split(a, x, " "); split(b, y, " ");
                cpu = (y[1] - x[1]) / tick;
                printf "ours snapshot CPU over the PUT runs: %.2f s of %.2f s cluster CPU (%.1f%%)\n",
                    s1 - s0, cpu, (cpu > 0 ? 100 * (s1 - s0) / cpu : 0) }'
    elif [ "$SYS" = ours ] && [ -n "$MILLION" ]; then
        echo "ours snapshot CPU: no raftexample_snapshot_cpu_seconds_total in /metrics (skipped)"
    fi
    [ "$SYS" = ours ] && measure get 64
    [ "$SYS" = ours ] && mem_report
    stop_system
}

# ---------------------------------------------------------------- the run ----
ports_free
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
FSYNC=$("$PROBE" --dir "$RUN_DIR" --count 100000 --duration-ms 2000) || die "fsync-probe failed"
echo "# compare.sh: SYSTEMS=\"$SYSTEMS\" SECS=$SECS CONNS=\"$CONNS\"${MILLION:+ MILLION=1 PRELOAD=$PRELOAD}${EXTRA_FLAGS:+ EXTRA_FLAGS=\"$EXTRA_FLAGS\"}"
echo "# $(nproc) CPUs, $(uname -r); loadavg at start: $LOAD_START"
echo "# $FSYNC"
# (%12s: "µ" is two bytes)
printf '%-10s %6s %10s %9s %9s %12s %11s  %s\n' system conns req/s p50 p99 "CPU µs/req" "ctx sw/req" errors
for s in $SYSTEMS; do run_system "$s"; done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# loadavg at end: $LOAD_END"

# ---------------------------------------------------------------- markdown ----
echo
[ -s "$ROLES" ] && sort -u "$ROLES"
echo "3-node clusters on loopback (noop: one process), load to node 1 only, PUTs of unique keys" \
    "with 100-byte values, ${SECS} s per row${MILLION:+, after preloading $PRELOAD keys}; $(nproc) CPUs;" \
    "fdatasync p50 $(field p50 "$FSYNC") p99 $(field p99 "$FSYNC"); loadavg $LOAD_START → $LOAD_END."
echo
echo "| system | conns | PUT/s | p50 | p99 | CPU µs/PUT | ctx sw/PUT |"
echo "|---|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '{
    rate = ($3 == "failed") ? "failed" : sprintf("%.0f", $3);
    if ($8 != "" && $8 != "0" && $8 != "-") rate = rate " (errors " $8 ")";
    sys = $1; sub(/ GET$/, " (GET, linearizable)", sys);
    printf "| %s | %s | %s | %s | %s | %s | %s |\n", sys, $2, rate, $4, $5, $6, $7
}' "$ROWS"

PEERS=""
for s in go etcd noop; do has "$s" && PEERS="$PEERS $s"; done
if has ours && [ -n "$PEERS" ]; then
    echo
    printf '| conns |'
    for p in $PEERS; do printf ' ours / %s |' "$p"; done
    printf '\n|---:|'
    for p in $PEERS; do printf -- '---:|'; done
    echo
    awk -F'\t' -v peers="$PEERS" -v conns="$CONNS" '
        $3 != "failed" { rate[$1, $2] = $3; cpu[$1, $2] = $6 }
        END {
            np = split(peers, p, " "); nc = split(conns, c, " ");
            for (i = 1; i <= nc; i++) {
                line = "| " c[i] " |";
                for (j = 1; j <= np; j++) {
                    k = p[j];
                    if ((("ours", c[i]) in rate) && ((k, c[i]) in rate) && rate[k, c[i]] > 0) {
                        cell = sprintf(" %.2f× PUT/s", rate["ours", c[i]] / rate[k, c[i]]);
                        if (cpu[k, c[i]] + 0 > 0 && cpu["ours", c[i]] != "-")
                            cell = cell sprintf(", %.2f× CPU/PUT", cpu["ours", c[i]] / cpu[k, c[i]]);
                        line = line cell " |";
                    } else line = line " - |";
                }
                print line;
            }
        }' "$ROWS"
fi
