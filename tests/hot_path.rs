//! What the hot path's shortcuts must not change: followers that learn commits late still
//! serve linearizable reads of every acknowledged write, a follower's own clients are still
//! answered at once, and snapshots spaced by the image's size survive a restart. Real
//! `raftexample` processes on loopback, real files.

mod support;

use std::time::{Duration, Instant};

use support::{poll, Cluster};

/// Heartbeats two seconds apart (50 of the harness's 40 ms ticks): a follower that had to wait
/// for one to learn a commit would show it.
const SLOW_HEARTBEATS: [&str; 4] = ["--heartbeat-ticks", "50", "--election-ticks", "250"];

fn followers(leader: u64) -> Vec<u64> {
    (1..=3).filter(|i| *i != leader).collect()
}

// Intent: the leader no longer sends every commit to the followers at once (they learn it
// from the next append or heartbeat), yet a linearizable GET on a follower right after the
// leader acknowledged a PUT returns that PUT's value: the read's own heartbeat round carries
// the commit index, and the follower waits until it applied it.
#[test]
fn a_write_acknowledged_by_the_leader_is_read_at_once_on_every_follower() {
    let mut c = Cluster::start(3, &SLOW_HEARTBEATS);
    let leader = c.wait_leader();
    c.put_eventually(leader, "warm", "up");
    for i in 0..20 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let r = c.node(leader).put(&key, &value).unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        for f in followers(leader) {
            let r = c.node(f).get(&key).unwrap();
            assert_eq!(r.status, 200, "node {f}, {key}: {}", r.text());
            assert_eq!(r.text(), value, "node {f} read a stale {key}");
        }
    }
}

// Intent: a PUT sent to a follower is answered once that follower applied it. The leader must
// then send the commit at once (a forwarded entry is uncommitted) instead of leaving it to
// the next heartbeat: ten PUTs through a follower take far less than the 20 s that ten
// two-second heartbeat waits would.
#[test]
fn puts_through_a_follower_do_not_wait_for_heartbeats() {
    let mut c = Cluster::start(3, &SLOW_HEARTBEATS);
    let leader = c.wait_leader();
    let f = followers(leader)[0];
    c.put_eventually(f, "warm", "up");
    let started = Instant::now();
    for i in 0..10 {
        let r = c.node(f).put(&format!("f{i}"), "x").unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "ten PUTs through a follower took {took:?}: they waited for heartbeats"
    );
    for i in 0..10 {
        assert_eq!(c.node(leader).get(&format!("f{i}")).unwrap().text(), "x");
    }
}

fn snapshot_index(c: &Cluster, id: u64) -> u64 {
    c.node(id).status().unwrap()["snapshot_index"]
        .as_u64()
        .unwrap()
}

/// The snapshot threads' CPU seconds in `/metrics` (a float, so not `Node::metric`).
fn snapshot_cpu_seconds(c: &Cluster, id: u64) -> f64 {
    let r = c.node(id).req("GET", "/metrics", b"").unwrap();
    r.text()
        .lines()
        .find(|l| l.starts_with("raftexample_snapshot_cpu_seconds_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("raftexample_snapshot_cpu_seconds_total in /metrics")
}

// Intent: a snapshot due by `--snapshot-count` waits until the bytes logged since the last one
// reach half its image, so snapshots of a large state are spaced in proportion to it (their
// cost per entry stays constant); the image's size is read back from the newest snapshot file
// at a restart, so a restarted node does not fall back to snapshotting by count alone. The
// snapshot threads' CPU shows in `/metrics`.
#[test]
fn snapshots_wait_for_half_the_image_in_logged_bytes_across_restarts() {
    let mut c = Cluster::start(1, &["--snapshot-count", "50"]);
    c.wait_leader();
    // About 1.2 MB of state in 20 kB values: snapshots by count as the image grows.
    let big = "b".repeat(20_000);
    for i in 0..60 {
        c.put_eventually(1, &format!("big{i}"), &big);
    }
    let after_big = poll(
        Duration::from_secs(20),
        "a snapshot of the big keys",
        || {
            let s = snapshot_index(&c, 1);
            (s >= 50).then_some(s)
        },
    );
    assert!(snapshot_cpu_seconds(&c, 1) > 0.0, "no snapshot CPU counted");
    // 150 small writes log about 15 kB: three times the count, far below half the image.
    for i in 0..150 {
        c.put_eventually(1, &format!("small{i}"), "s");
    }
    // A due snapshot would start within a loop turn and save within a second.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        snapshot_index(&c, 1),
        after_big,
        "a snapshot was taken by count alone"
    );
    c.node_mut(1).kill();
    c.node_mut(1).start();
    c.wait_leader();
    for i in 0..150 {
        c.put_eventually(1, &format!("again{i}"), "s");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        snapshot_index(&c, 1),
        after_big,
        "after a restart a snapshot was taken by count alone"
    );
    // Bytes enough (half of about 1.2 MB) make one due again.
    for i in 0..40 {
        c.put_eventually(1, &format!("big{i}"), &big);
    }
    poll(
        Duration::from_secs(20),
        "a snapshot once bytes are due",
        || (snapshot_index(&c, 1) > after_big).then_some(()),
    );
}
