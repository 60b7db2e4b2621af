#!/bin/bash
# NOSPACE as seen by curl: 3 release nodes, node 3's data on a 64 MiB tmpfs, reserve 8 MiB.
# Needs root (it mounts a tmpfs) and `cargo build --release` first.
set -u
B=$(cd "$(dirname "$0")/.." && pwd)/target/release/raftexample
D=$(mktemp -d); mkdir -p $D/disk3; cd $D
mount -t tmpfs -o size=64m tmpfs $D/disk3
C=http://127.0.0.1:22379,http://127.0.0.1:22479,http://127.0.0.1:22579
F="--free-disk-reserve-bytes 8388608 --wal-segment-size-bytes 1048576 --listen-client-addr 127.0.0.1"
$B --id 1 --cluster $C --port 22380 $F 2>n1.log & P1=$!
$B --id 2 --cluster $C --port 22480 $F 2>n2.log & P2=$!
$B --id 3 --cluster $C --port 22580 $F --data-dir disk3/raftexample-3 2>n3.log & P3=$!
sleep 3
show() { echo "\$ $*"; "$@" -s -w ' -> %{http_code}\n'; }
show curl -XPUT localhost:22380/k -d v
avail=$(df --output=avail -B1 $D/disk3 | tail -1)
fallocate -l $((avail - 5*1024*1024)) $D/disk3/filler
echo "# node 3's disk now has about 5 MiB free (reserve 8 MiB)"; sleep 3
show curl -XPUT localhost:22380/k2 -d v
show curl localhost:22480/health
show curl localhost:22380/k
show curl -XDELETE localhost:22380/kv/k
rm $D/disk3/filler; echo "# space freed on node 3"; sleep 3
show curl -XPUT localhost:22380/k2 -d v
kill $P1 $P2 $P3; wait
umount -l $D/disk3
