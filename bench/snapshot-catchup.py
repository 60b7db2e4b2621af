#!/usr/bin/env python3
"""Memory during a follower's catch-up from a large snapshot, and after an aborted upload.

    bench/snapshot-catchup.py [--binary target/release/raftexample] [--mib 512] [--value-kib 1024]

Measures the acceptance figures of "bounded memory for snapshot transfer": during the catch-up
of a follower from a snapshot of at least 500 MiB, the RSS of both leader and follower stays
within 100 MiB of their baseline beyond the live state, and memory returns to baseline after a
refused or aborted upload.

1. Starts a single-node cluster (node 1: --snapshot-count 100, --snapshot-catchup-entries 10,
   --max-request-body-bytes 2 MiB, --quota-bytes 8 GiB) in a temp dir under /work.
2. Loads --mib MiB of live data: distinct keys, random values of --value-kib KiB, 4 writer
   threads; every PUT must be acknowledged 2xx (a 503 is retried, it is known not applied).
3. Makes a snapshot cover all of it (small writes to one key until GET /status snapshot_index
   passes the index of the last large write, and a .snap file of at least --mib MiB exists),
   then waits until the leader's RSS settles: its baseline.
4. Adds node 2 (POST /2, then starts it with --join), samples both VmRSS every 50 ms until node
   2's applied index reaches node 1's (deadline 300 s), then 5 s more, and prints the leader's
   baseline / peak / after, the follower's initial / peak / after, the catch-up time, and the
   excess: leader peak - baseline, follower peak - (initial + live data).
5. Aborted upload: opens a raw TCP connection to node 2's peer port, sends POST /raft/snapshot
   with valid X-Raft-Cluster-Id / X-Raft-From / X-Raft-To headers, a Content-Length of 768 MiB
   and a plausible MsgSnapshot head ([len u32 LE][message without its data]), streams ~300 MiB
   of junk and closes the socket. Prints node 2's RSS peak during and 5 s after, against its
   baseline, and the HTTP status if the receiver refused early (the desired behaviour).

Prints the load average at the start and the end (the figures depend on what else runs).
Bounded in time: every phase has a deadline, every HTTP request a timeout. The nodes and the
temp dir are removed on exit, also on Ctrl-C, SIGTERM or an exception.
"""
import argparse
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

WRITERS = 4
CATCHUP_DEADLINE_S = 300
AFTER_S = 5
SAMPLE_S = 0.05
ABORT_DECLARED = 768 << 20
ABORT_SENT = 300 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def request(port, method, path, body=None, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def status(port):
    code, body = request(port, "GET", "/status", timeout=3)
    if code != 200:
        raise RuntimeError(f"GET /status: {code}")
    return json.loads(body)


def poll(what, deadline_s, check, interval=0.1):
    """Calls check() until it returns a truthy value (exceptions count as not yet)."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception as e:  # not up yet
            last = e
        time.sleep(interval)
    raise SystemExit(f"timed out after {deadline_s} s waiting for {what} (last error: {last})")


def snap_files(snap_dir):
    try:
        names = os.listdir(snap_dir)
    except OSError:
        return []
    out = []
    for n in names:
        if n.endswith(".snap"):
            try:
                out.append((n, os.stat(os.path.join(snap_dir, n)).st_size))
            except OSError:
                pass
    return sorted(out)


class Sampler:
    """Samples the VmRSS of some pids every SAMPLE_S seconds on a thread of its own."""

    def __init__(self, pids):
        self.pids = pids
        self.peak = {p: 0.0 for p in pids}
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_ev.is_set():
            for p in self.pids:
                self.peak[p] = max(self.peak[p], rss_mib(p))
            self.stop_ev.wait(SAMPLE_S)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.thread.join()


def settle(pid, max_s=30):
    """RSS once it changed by less than 2 MiB over 3 s (or after max_s)."""
    deadline = time.monotonic() + max_s
    window = []
    while True:
        window.append(rss_mib(pid))
        window = window[-7:]
        if len(window) == 7 and max(window) - min(window) < 2:
            return window[-1]
        if time.monotonic() > deadline:
            return window[-1]
        time.sleep(0.5)


def load(port, mib, value_kib):
    """PUTs mib MiB as distinct keys of value_kib KiB from WRITERS threads; all must be 2xx."""
    value_bytes = value_kib << 10
    n_keys = (mib << 20) // value_bytes
    next_key = [0]
    lock = threading.Lock()
    errors = []

    def writer():
        conn = None
        while not errors:
            with lock:
                k = next_key[0]
                if k >= n_keys:
                    return
                next_key[0] += 1
            value = os.urandom(value_bytes)
            for attempt in range(6):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("PUT", f"/snapkey-{k:07d}", body=value)
                    r = conn.getresponse()
                    r.read()
                except Exception as e:
                    if conn is not None:
                        conn.close()
                    conn = None
                    errors.append(f"key {k}: {e}")
                    return
                if 200 <= r.status < 300:
                    break
                if r.status == 503 and attempt < 5:  # known not applied: retry
                    time.sleep(0.2 * (attempt + 1))
                    continue
                errors.append(f"key {k}: HTTP {r.status}")
                return

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(WRITERS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"load failed: {errors[:3]}")
    return n_keys, n_keys * value_bytes / (1 << 20), time.monotonic() - start


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, value):
    """A protobuf field: varint for ints, length-delimited for bytes."""
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    return varint((num << 3) | 2) + varint(len(value)) + value


def snapshot_head(frm, to, term, index, voters):
    """[len u32 LE][eraftpb::Message MsgSnapshot without its data], as transport.rs sends."""
    conf = b"".join(field(1, v) for v in voters)
    meta = field(1, conf) + field(2, index) + field(3, term)
    snap = field(2, meta)
    msg = field(1, 7) + field(2, to) + field(3, frm) + field(4, term) + field(9, snap)
    return len(msg).to_bytes(4, "little") + msg


def read_answer(sock):
    """The status line and first bytes of an answer, if any arrived (non-blocking-ish)."""
    try:
        sock.settimeout(2)
        data = sock.recv(4096)
    except OSError:
        return None
    if not data:
        return None
    text = data.decode("latin-1", "replace")
    first = text.split("\r\n", 1)[0]
    body = text.split("\r\n\r\n", 1)[1].strip() if "\r\n\r\n" in text else ""
    return f"{first} {body[:200]!r}"


def aborted_upload(peer_port, cluster_id, term, index, receiver_pid):
    """Streams ABORT_SENT junk bytes of a declared ABORT_DECLARED body, then drops the socket."""
    head = snapshot_head(1, 2, term, index, [1, 2])
    req = (
        "POST /raft/snapshot HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{peer_port}\r\n"
        f"X-Raft-Cluster-Id: {cluster_id}\r\n"
        "X-Raft-From: 1\r\n"
        "X-Raft-To: 2\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {ABORT_DECLARED}\r\n"
        "\r\n"
    ).encode()
    junk = os.urandom(1 << 20)
    sent = 0
    answer = None
    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", peer_port), timeout=10)
    try:
        sock.sendall(req + head)
        while sent < ABORT_SENT:
            # An early refusal (a status before the body is complete) ends the upload.
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answer = read_answer(sock)
                break
            try:
                sock.sendall(junk)
            except OSError as e:
                answer = read_answer(sock) or f"connection closed by the receiver ({e})"
                break
            sent += len(junk)
            if time.monotonic() - start > 120:
                break
    finally:
        sock.close()
    return sent, time.monotonic() - start, answer, rss_mib(receiver_pid)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default="target/release/raftexample")
    ap.add_argument("--mib", type=int, default=512, help="live data, MiB")
    ap.add_argument("--value-kib", type=int, default=1024, help="value size, KiB")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"no executable at {binary}")

    tmp = tempfile.mkdtemp(prefix="bench-snapshot-catchup-", dir="/work")
    procs = []

    def on_term(signum, frame):
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        run(args, binary, tmp, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, binary, tmp, procs):
    print(f"load average at start: {loadavg()}  ({os.cpu_count()} CPUs)")
    print(f"binary: {binary}")
    peer = [free_port(), free_port()]
    client = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in peer]
    common = [
        "--max-request-body-bytes", str(2 << 20),
        "--quota-bytes", str(8 << 30),
        "--snapshot-count", "100",
        "--snapshot-catchup-entries", "10",
    ]

    def start(node_id, cluster, extra):
        log = open(os.path.join(tmp, f"n{node_id}.log"), "wb")
        cmd = [binary, "--id", str(node_id), "--cluster", ",".join(cluster),
               "--port", str(client[node_id - 1]),
               "--data-dir", os.path.join(tmp, f"n{node_id}")] + common + extra
        p = subprocess.Popen(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        procs.append(p)
        return p

    def alive(p, name):
        if p.poll() is not None:
            raise SystemExit(f"{name} exited with {p.returncode}; see its log")

    # 1. A single-node cluster.
    n1 = start(1, urls[:1], [])
    poll("node 1 to lead", 30,
         lambda: alive(n1, "node 1") or status(client[0])["leader"] == 1)

    # 2. The live data.
    n_keys, live_mib, secs = load(client[0], args.mib, args.value_kib)
    print(f"loaded: {n_keys} keys x {args.value_kib} KiB = {live_mib:.0f} MiB live data "
          f"in {secs:.1f} s ({WRITERS} writers)")

    # 3. A snapshot covering it (small writes to one key until the next snapshot is past the
    # last large write), then a settled leader.
    snap1 = os.path.join(tmp, "n1-snap")
    last_large = status(client[0])["applied_index"]
    fills = 0
    while status(client[0])["snapshot_index"] < last_large and fills <= 100:
        code, _ = request(client[0], "PUT", "/snapfill", body=b"f", timeout=10)
        if not 200 <= code < 300:
            raise SystemExit(f"PUT /snapfill: {code}")
        fills += 1

    def covered():
        s = status(client[0])
        files = snap_files(snap1)
        return (s["snapshot_index"] >= last_large and files
                and files[-1][1] >= args.mib << 20) and (s, files)

    s1, files = poll("a snapshot covering the data", 180, covered, interval=0.5)
    snap_size = files[-1][1] / (1 << 20)
    print(f"snapshot on node 1: {files[-1][0]} = {snap_size:.1f} MiB (snapshot_index "
          f"{s1['snapshot_index']} >= {last_large}, the last large write; {fills} small "
          f"writes to get there)")
    leader_base = settle(n1.pid)

    # 4. Catch-up of a new follower from that snapshot.
    code, body = request(client[0], "POST", "/2", body=urls[1].encode(), timeout=10)
    if not 200 <= code < 300:
        raise SystemExit(f"POST /2: {code} {body[:200]!r}")
    t0 = time.monotonic()
    n2 = start(2, urls, ["--join"])
    with Sampler([n1.pid, n2.pid]) as sampler:
        poll("node 2's client API", 60,
             lambda: alive(n2, "node 2") or status(client[1]))
        follower_initial = rss_mib(n2.pid)
        up_s = time.monotonic() - t0

        def caught_up():
            alive(n2, "node 2")
            target = status(client[0])["applied_index"]
            return status(client[1])["applied_index"] >= target

        poll("node 2 to catch up", CATCHUP_DEADLINE_S, caught_up, interval=0.2)
        catchup_s = time.monotonic() - t0
        leader_peak_catchup = sampler.peak[n1.pid]
        follower_peak_catchup = sampler.peak[n2.pid]
        time.sleep(AFTER_S)
        leader_after, follower_after = rss_mib(n1.pid), rss_mib(n2.pid)
    leader_peak = max(leader_peak_catchup, sampler.peak[n1.pid])
    follower_peak = max(follower_peak_catchup, sampler.peak[n2.pid])
    files2 = snap_files(os.path.join(tmp, "n2-snap"))

    print()
    print("== catch-up of node 2 from a snapshot ==")
    print(f"live data:              {live_mib:.0f} MiB")
    print(f"snapshot file (node 1): {snap_size:.1f} MiB"
          + (f"; node 2 has {files2[-1][1] / (1 << 20):.1f} MiB" if files2 else ""))
    print(f"catch-up:               {catchup_s:.1f} s (node 2's API up after {up_s:.1f} s)")
    print(f"leader   RSS: baseline {leader_base:7.1f}  peak {leader_peak:7.1f}  "
          f"after {AFTER_S} s {leader_after:7.1f} MiB")
    print(f"follower RSS: initial  {follower_initial:7.1f}  peak {follower_peak:7.1f}  "
          f"after {AFTER_S} s {follower_after:7.1f} MiB")
    print(f"(peaks until caught up: leader {leader_peak_catchup:.1f}, "
          f"follower {follower_peak_catchup:.1f} MiB)")
    print(f"leader   peak - baseline:                {leader_peak - leader_base:7.1f} MiB "
          f"(target <= 100)")
    print(f"follower peak - (initial + live data):   "
          f"{follower_peak - follower_initial - live_mib:7.1f} MiB (target <= 100)")
    print(f"follower after - (initial + live data):  "
          f"{follower_after - follower_initial - live_mib:7.1f} MiB")

    # 5. An aborted upload to node 2.
    code, body = request(peer[1], "GET", "/raft/cluster", timeout=5)
    cluster_id = json.loads(body)["cluster_id"]
    s1 = status(client[0])
    base2 = settle(n2.pid)
    with Sampler([n2.pid]) as sampler:
        sent, secs, answer, during = aborted_upload(
            peer[1], cluster_id, s1["term"], s1["applied_index"] + 1000, n2.pid)
        time.sleep(AFTER_S)
        after2 = rss_mib(n2.pid)
    alive(n2, "node 2")
    peak2 = max(sampler.peak[n2.pid], during)
    print()
    print("== aborted snapshot upload to node 2 ==")
    print(f"declared Content-Length {ABORT_DECLARED >> 20} MiB, sent "
          f"{sent / (1 << 20):.0f} MiB of junk in {secs:.1f} s, then closed the socket")
    print(f"answer before the close: {answer or 'none (the receiver read on)'}")
    print(f"node 2 RSS: baseline {base2:7.1f}  at close {during:7.1f}  "
          f"peak {peak2:7.1f}  after {AFTER_S} s {after2:7.1f} MiB")
    print(f"peak - baseline: {peak2 - base2:7.1f} MiB, "
          f"after - baseline: {after2 - base2:7.1f} MiB")
    print()
    print(f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
