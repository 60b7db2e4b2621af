#!/usr/bin/env python3
"""Failover figures: 16 writers on a follower while the leader is killed with SIGKILL.

    bench/failover.py [--binary target/release/raftexample] [--writers 16] [--seconds 8]

Starts a 3-node cluster (release binary, default flags: 100 ms ticks, 10-tick elections, so an
election timeout is 1 s) in a temp dir, finds the leader and one follower, runs closed-loop PUT
writers (one keep-alive connection each) against the follower, kills the leader with SIGKILL
after a third of the run, and prints:
- every failed write by status, and for each whether it was in flight at the kill (started
  before it) or arrived after it (a 503 for a write that arrived during the election is what
  the engine's wait-for-leader must prevent; a 504 is acceptable only when in flight at the kill);
- the longest gap between two successful write completions, and the gap across the kill;
- the load average.
Bounded: the run lasts --seconds; every request has a 6 s timeout.
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


def status(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    c.request("GET", "/status")
    return json.loads(c.getresponse().read())


def wait_leader(ports, deadline):
    while time.time() < deadline:
        try:
            leaders = {status(p)["leader"] for p in ports}
            if len(leaders) == 1 and 0 not in leaders:
                return leaders.pop()
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit("no leader")


def writer(port, stop, out, wid):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=6)
    n = 0
    while not stop.is_set():
        key = f"/fo-{wid}-{n}"
        n += 1
        start = time.monotonic()
        try:
            conn.request("PUT", key, body=b"x" * 100)
            r = conn.getresponse()
            r.read()
            code = r.status
        except Exception:
            code = 0
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=6)
        out.append((start, time.monotonic(), code))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/raftexample")
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    tmp = tempfile.mkdtemp(prefix="rx-failover.", dir=os.environ.get("BENCH_DIR", "/work"))
    base = 14000 + os.getpid() % 1000 * 10
    peers = [base + i for i in range(3)]
    clients = [base + 5 + i for i in range(3)]
    cluster = ",".join(f"http://127.0.0.1:{p}" for p in peers)
    procs = []
    try:
        for i in range(3):
            log = open(os.path.join(tmp, f"node{i + 1}.log"), "w")
            procs.append(subprocess.Popen(
                [binary, "--id", str(i + 1), "--cluster", cluster, "--port", str(clients[i]),
                 "--log-level", "warning"], cwd=tmp, stderr=log))
        leader = wait_leader(clients, time.time() + 20)
        follower = next(i + 1 for i in range(3) if i + 1 != leader)
        stop = threading.Event()
        results = []
        threads = [threading.Thread(target=writer, args=(clients[follower - 1], stop, results, w))
                   for w in range(args.writers)]
        for t in threads:
            t.start()
        time.sleep(args.seconds / 3)
        kill_at = time.monotonic()
        procs[leader - 1].send_signal(signal.SIGKILL)
        time.sleep(args.seconds * 2 / 3)
        stop.set()
        for t in threads:
            t.join()
        ok = sorted(end for start, end, code in results if code == 204)
        failed = [(start, end, code) for start, end, code in results if code != 204]
        gaps = [(b - a, a) for a, b in zip(ok, ok[1:])]
        longest = max(gaps) if gaps else (0, 0)
        across = [g for g, a in gaps if a <= kill_at <= a + g]
        print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
        print(f"leader {leader} killed; writers on follower {follower}; "
              f"{len(ok)} writes acknowledged, {len(failed)} failed")
        for start, end, code in failed:
            when = "in flight at the kill" if start < kill_at else \
                f"arrived {start - kill_at:.3f} s after the kill"
            print(f"  failed: {code} ({when}), answered after {end - start:.3f} s")
        print(f"longest gap between acknowledged writes: {longest[0] * 1000:.0f} ms "
              f"(starting {longest[1] - kill_at:+.3f} s from the kill)")
        if across:
            print(f"gap across the kill: {across[0] * 1000:.0f} ms")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
