#!/usr/bin/env python3
"""Memory and WAL under large overwrites: 200 keys of 1 MiB overwritten for 60 s.

    bench/large-values.py [--binary target/release/raftexample] [--seconds 60] [--writers 4]

Starts a 3-node cluster (release binary, --max-request-body-bytes 2 MiB) in a temp dir, has
--writers threads PUT 1 MiB values to keys k0..k199 round robin for --seconds, samples every
node's RSS and WAL directory size every second, and prints the maximum of each, the live data
(200 MiB) and the writes acknowledged. Bounded in time; every request has a 10 s timeout.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

KEYS = 200
VALUE = b"v" * (1 << 20)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def dir_mib(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total / (1 << 20)


def writer(port, stop, counts, wid, writers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n = wid
    while not stop.is_set():
        try:
            conn.request("PUT", f"/k{n % KEYS}", body=VALUE)
            r = conn.getresponse()
            r.read()
            counts[r.status] = counts.get(r.status, 0) + 1
        except Exception:
            counts["error"] = counts.get("error", 0) + 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        n += writers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/raftexample")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--writers", type=int, default=4)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    tmp = tempfile.mkdtemp(prefix="rx-large.", dir=os.environ.get("BENCH_DIR", "/work"))
    base = 15000 + os.getpid() % 1000 * 10
    peers = [base + i for i in range(3)]
    clients = [base + 5 + i for i in range(3)]
    cluster = ",".join(f"http://127.0.0.1:{p}" for p in peers)
    procs = []
    try:
        for i in range(3):
            log = open(os.path.join(tmp, f"node{i + 1}.log"), "w")
            procs.append(subprocess.Popen(
                [binary, "--id", str(i + 1), "--cluster", cluster, "--port", str(clients[i]),
                 "--max-request-body-bytes", str(2 << 20), "--log-level", "warning"],
                cwd=tmp, stderr=log))
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", clients[0], timeout=2)
                c.request("GET", "/status")
                if json.loads(c.getresponse().read())["leader"]:
                    break
            except Exception:
                pass
            time.sleep(0.2)
        stop = threading.Event()
        counts = {}
        threads = [threading.Thread(target=writer,
                                    args=(clients[w % 3], stop, counts, w, args.writers))
                   for w in range(args.writers)]
        for t in threads:
            t.start()
        max_rss = [0.0] * 3
        max_wal = [0.0] * 3
        end = time.time() + args.seconds
        while time.time() < end:
            for i, p in enumerate(procs):
                if p.poll() is None:
                    max_rss[i] = max(max_rss[i], rss_mib(p.pid))
                max_wal[i] = max(max_wal[i], dir_mib(os.path.join(tmp, f"raftexample-{i + 1}")))
            time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
        print(f"{args.seconds:.0f} s, {args.writers} writers, live data {KEYS} MiB; answers: {counts}")
        alive = [p.poll() is None for p in procs]
        print(f"max RSS per node (MiB): {[round(r) for r in max_rss]}; alive: {alive}")
        print(f"max WAL per node (MiB): {[round(w) for w in max_wal]}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
