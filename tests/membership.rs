//! Snapshots, compaction and membership changes, on real processes over loopback.

mod support;

use std::time::Duration;

use support::{poll, Cluster};

/// Flags that make snapshots and compaction happen after a few dozen writes.
const SMALL_SNAPSHOTS: &[&str] = &[
    "--snapshot-count",
    "40",
    "--snapshot-catchup-entries",
    "10",
    "--wal-segment-size-bytes",
    "16384",
];

fn write_keys(c: &Cluster, via: u64, prefix: &str, n: usize) {
    for i in 0..n {
        c.put_eventually(
            via,
            &format!("{prefix}-{i}"),
            &format!("value-{prefix}-{i}-{}", "x".repeat(64)),
        );
    }
}

fn assert_keys(c: &Cluster, id: u64, prefix: &str, n: usize) {
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        let r = poll(Duration::from_secs(10), "a read", || {
            c.node(id).get(&key).ok().filter(|r| r.status != 503)
        });
        assert_eq!(
            (r.status, r.text()),
            (200, format!("value-{prefix}-{i}-{}", "x".repeat(64))),
            "node {id}, key {key}"
        );
    }
}

/// raftexample's way to grow a cluster: `POST /<id>` with the new peer URL on `via` (must
/// answer 204), then start the new node with `--join`. Returns the new node's ID.
fn add_voter_and_start(c: &mut Cluster, via: u64) -> u64 {
    let (id, url) = c.prepare_joiner(&[]);
    let r = c
        .node(via)
        .req("POST", &format!("/{id}"), url.as_bytes())
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    c.node_mut(id).start();
    id
}

fn snapshot_index(c: &Cluster, id: u64) -> u64 {
    c.node(id).status().unwrap()["snapshot_index"]
        .as_u64()
        .unwrap()
}

// Intent: with a small snapshot count, snapshot files appear, the raft log is compacted, old
// WAL segments are released, and a kill -9 of every node restarts to the same state.
#[test]
fn snapshots_compact_the_log_and_restart_restores_state() {
    let mut c = Cluster::start(3, SMALL_SNAPSHOTS);
    write_keys(&c, 1, "s", 300);
    let before = c.wait_converged();
    for id in 1..=3 {
        // Snapshots are built in the background, spaced by time as well as by entries: the
        // last one due can come a moment after the writes.
        poll(Duration::from_secs(10), "snapshots past index 200", || {
            (c.snap_files(id) >= 2 && snapshot_index(&c, id) > 200).then_some(())
        });
        // Released segments are deleted by a background thread, just after the snapshot.
        poll(
            Duration::from_secs(10),
            "the first WAL segment released",
            || {
                let segments = c.wal_files(id);
                (!segments[0].starts_with("0000000000000000-")).then_some(())
            },
        );
        // Old files are purged when the next snapshot starts: the 5 kept, and the newest.
        assert!(c.snap_files(id) <= 6, "old snapshot files were not purged");
    }
    for n in &mut c.nodes {
        n.kill();
    }
    for n in &mut c.nodes {
        n.start();
    }
    c.wait_leader();
    let after = c.wait_converged();
    assert_eq!(after.1, before.1, "state digest changed across the restart");
    assert_keys(&c, 2, "s", 300);
}

// Intent: a follower stopped while many writes went in (and the log was compacted past it)
// catches up by snapshot after it restarts; killed again afterwards, it restarts from the
// received snapshot's mark (and the log reset in its batch) with every key and keeps up.
#[test]
fn stopped_follower_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, SMALL_SNAPSHOTS);
    let leader = c.wait_leader();
    let lagging = (1..=3).find(|i| *i != leader).unwrap();
    write_keys(&c, leader, "a", 10);
    c.node_mut(lagging).kill();
    write_keys(&c, leader, "b", 200);
    // The snapshot is built in the background, after the writes that make it due.
    poll(Duration::from_secs(10), "a snapshot past index 100", || {
        (snapshot_index(&c, leader) > 100).then_some(())
    });
    c.node_mut(lagging).start();
    c.wait_converged();
    assert!(
        c.node(lagging)
            .log()
            .contains("installing snapshot from the leader"),
        "the follower caught up without a snapshot"
    );
    assert_keys(&c, lagging, "b", 200);
    c.node_mut(lagging).kill();
    c.node_mut(lagging).start();
    write_keys(&c, leader, "c", 20);
    c.wait_converged();
    assert_keys(&c, lagging, "b", 200);
    assert_keys(&c, lagging, "c", 20);
}

// Intent: raftexample's `POST /<id>` then `--join`: a node added after compaction catches up by
// snapshot (one that contains it, trap 2) and then serves reads and writes.
#[test]
fn node_added_after_compaction_joins_by_snapshot() {
    let mut c = Cluster::start(3, SMALL_SNAPSHOTS);
    let leader = c.wait_leader();
    write_keys(&c, leader, "j", 120);
    let (id, url) = c.prepare_joiner(&[]);
    let r = c
        .node(leader)
        .req("POST", &format!("/{id}"), url.as_bytes())
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let again = c
        .node(leader)
        .req("POST", &format!("/{id}"), url.as_bytes())
        .unwrap();
    assert_eq!(again.status, 409, "adding a member twice must conflict");
    c.node_mut(id).start();
    c.wait_converged();
    assert_keys(&c, id, "j", 120);
    c.put_eventually(id, "written-on-4", "yes");
    assert_eq!(c.node(1).get("written-on-4").unwrap().text(), "yes");
    let s = c.node(id).status().unwrap();
    assert_eq!(s["voters"].as_array().unwrap().len(), 4);
    assert!(c.node(id).log().contains("installing snapshot"));
}

// Intent: removing a follower answers once applied; the removed node shuts itself down with
// exit 0 and the rest keep serving writes.
#[test]
fn removed_follower_exits_and_cluster_continues() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let r = c
        .node(leader)
        .req("DELETE", &format!("/{victim}"), b"")
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        c.node_mut(victim).wait_exit(Duration::from_secs(15)),
        Some(0)
    );
    assert!(c.node(victim).log().contains("removed from the cluster"));
    c.put_eventually(leader, "after-removal", "1");
    let s = c.node(leader).status().unwrap();
    assert_eq!(s["voters"].as_array().unwrap().len(), 2);
    let m = c.node(leader).req("GET", "/members", b"").unwrap();
    assert_eq!(m.status, 200);
    assert!(!m.text().contains(&format!("\"id\": {victim},")));
}

// Intent: removing the current leader moves leadership away first (trap 6); the old leader
// exits 0 and the remaining two elect a leader and accept writes.
#[test]
fn removing_the_leader_transfers_leadership_first() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let r = c
        .node(leader)
        .req("DELETE", &format!("/{leader}"), b"")
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        c.node_mut(leader).wait_exit(Duration::from_secs(15)),
        Some(0)
    );
    assert!(c
        .node(leader)
        .log()
        .contains("moving leadership before removing the leader"));
    let new = c.wait_leader();
    assert_ne!(new, leader);
    c.put_eventually(new, "after-leader-removal", "1");
    let s = c.node(new).status().unwrap();
    assert_eq!(s["voters"].as_array().unwrap().len(), 2);
}

// Intent: after a membership change and compaction, restarting every node keeps every member
// connected: the leader sees all followers replicating and they all converge.
#[test]
fn restart_after_membership_change_and_compaction_keeps_members_connected() {
    let mut c = Cluster::start(3, SMALL_SNAPSHOTS);
    let leader = c.wait_leader();
    let id = add_voter_and_start(&mut c, leader);
    write_keys(&c, leader, "m", 150);
    c.wait_converged();
    for n in &mut c.nodes {
        n.terminate();
    }
    for n in &mut c.nodes {
        n.start();
    }
    let leader = c.wait_leader();
    c.put_eventually(leader, "after-restart", "1");
    c.wait_converged();
    let s = c.node(leader).status().unwrap();
    let progress = s["progress"].as_array().unwrap();
    assert_eq!(progress.len(), 4);
    let commit = s["commit_index"].as_u64().unwrap();
    poll(Duration::from_secs(10), "all followers to match", || {
        let s = c.node(leader).status()?;
        s["progress"]
            .as_array()?
            .iter()
            .all(|p| p["match_index"].as_u64().unwrap_or(0) >= commit)
            .then_some(())
    });
    assert_keys(&c, id, "m", 150);
}

// Intent: a learner receives the log but does not vote; promotion makes it a voter.
#[test]
fn learner_receives_data_and_can_be_promoted() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    write_keys(&c, leader, "l", 20);
    let (id, url) = c.prepare_joiner(&[]);
    let r = c
        .node(leader)
        .req(
            "POST",
            &format!("/members/{id}?learner=true"),
            url.as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    c.node_mut(id).start();
    c.wait_converged();
    let s = c.node(leader).status().unwrap();
    assert_eq!(s["voters"].as_array().unwrap().len(), 3);
    assert_eq!(s["learners"].as_array().unwrap().len(), 1);
    let r = c
        .node(id)
        .req("GET", "/kv/l-3?consistency=serializable", b"")
        .unwrap();
    assert_eq!(r.status, 200);
    let promote = format!("/members/{id}/promote");
    let r = poll(Duration::from_secs(10), "the promotion", || {
        c.node(leader)
            .req("POST", &promote, b"")
            .ok()
            .filter(|r| r.status != 409)
    });
    assert_eq!(r.status, 204, "{}", r.text());
    let s = c.node(leader).status().unwrap();
    assert_eq!(s["voters"].as_array().unwrap().len(), 4);
    assert_eq!(s["learners"].as_array().unwrap().len(), 0);
}

// Intent: a learner that never started cannot be promoted, on the leader or through a
// follower, even in a young cluster whose commit index is within the promotion lag: a voter
// that cannot vote would raise the quorum (found by the ctl tests: a match index of 0 passed
// "caught up" while the commit index was under 100).
#[test]
fn a_learner_that_never_started_is_not_promoted() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let (id, url) = c.prepare_joiner(&[]);
    let r = c
        .node(leader)
        .req(
            "POST",
            &format!("/members/{id}?learner=true"),
            url.as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    for via in [leader, follower] {
        let r = c
            .node(via)
            .req("POST", &format!("/members/{id}/promote"), b"")
            .unwrap();
        assert_eq!(r.status, 409, "via {via}: {}", r.text());
    }
    let s = c.node(leader).status().unwrap();
    assert_eq!(s["voters"].as_array().unwrap().len(), 3, "{s}");
    assert_eq!(s["learners"].as_array().unwrap().len(), 1, "{s}");
}

// Intent: trap 3: of two membership changes sent while the first is still pending, one is
// applied and the other gets 409 instead of being silently turned into an empty entry. The
// followers are paused so that the first cannot commit before the second arrives (otherwise
// both may legitimately succeed one after the other).
#[test]
fn concurrent_membership_changes_one_wins_one_conflicts() {
    let mut c = Cluster::start(3, &["--request-timeout-ms", "10000"]);
    let leader = c.wait_leader();
    c.put_eventually(leader, "warm", "1");
    let (a, url_a) = c.prepare_joiner(&[]);
    let (b, url_b) = c.prepare_joiner(&[]);
    let addr = c.node(leader).client;
    let t = |id: u64, url: String| {
        std::thread::spawn(move || {
            support::request(
                addr,
                "POST",
                &format!("/members/{id}?learner=true"),
                &[],
                url.as_bytes(),
                Duration::from_secs(15),
            )
            .unwrap()
            .status
        })
    };
    let followers: Vec<u32> = (1..=3)
        .filter(|i| *i != leader)
        .map(|i| c.node_mut(i).child.as_ref().unwrap().id())
        .collect();
    for pid in &followers {
        support::signal(*pid, "STOP");
    }
    let last = |c: &Cluster| {
        c.node(leader).status().unwrap()["last_index"]
            .as_u64()
            .unwrap()
    };
    let before = last(&c);
    let ta = t(a, url_a);
    poll(
        Duration::from_secs(10),
        "the first change to be appended",
        || (last(&c) > before).then_some(()),
    );
    let tb = t(b, url_b);
    let second = tb.join().unwrap();
    for pid in &followers {
        support::signal(*pid, "CONT");
    }
    let mut codes = vec![ta.join().unwrap(), second];
    codes.sort();
    assert_eq!(codes, vec![204, 409]);
}

// Intent: `POST /leader` moves leadership to the chosen node and answers once it leads.
#[test]
fn leader_transfer_to_a_chosen_node() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let target = (1..=3).find(|i| *i != leader).unwrap();
    let r = c
        .node(leader)
        .req("POST", "/leader", target.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(c.wait_leader(), target);
    c.put_eventually(target, "after-transfer", "1");
}

// Intent: a node added with `POST /<id>` but started without `--join` is refused with one
// sentence naming `--join`, before it writes anything to disk.
#[test]
fn added_node_started_without_join_is_refused() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let (id, url) = c.prepare_joiner(&[]);
    assert_eq!(
        c.node(leader)
            .req("POST", &format!("/{id}"), url.as_bytes())
            .unwrap()
            .status,
        204
    );
    c.node_mut(id).args.retain(|a| a != "--join");
    c.node_mut(id).start();
    assert_eq!(c.node_mut(id).wait_exit(Duration::from_secs(15)), Some(1));
    assert!(c.node(id).log().contains("--join"), "{}", c.node(id).log());
    assert!(
        !c.dir().join(format!("raftexample-{id}")).exists(),
        "the refused node wrote a WAL"
    );
}

// Intent: `--join` with a data dir that belongs to another cluster exits 1 with a clear
// sentence instead of mixing two clusters' logs.
#[test]
fn join_with_another_clusters_data_dir_is_refused() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let (id, url) = c.prepare_joiner(&[]);
    // Node 4 of some other cluster left its WAL behind.
    wal::Wal::create(
        &c.dir().join(format!("raftexample-{id}")),
        wal::Metadata {
            node_id: id,
            cluster_id: 0xdead_beef,
        },
        wal::Options::default(),
    )
    .unwrap();
    assert_eq!(
        c.node(leader)
            .req("POST", &format!("/{id}"), url.as_bytes())
            .unwrap()
            .status,
        204
    );
    c.node_mut(id).start();
    assert_eq!(c.node_mut(id).wait_exit(Duration::from_secs(15)), Some(1));
    assert!(
        c.node(id).log().contains("belongs to cluster"),
        "{}",
        c.node(id).log()
    );
}

// Intent: a member whose disk was wiped is refused under its old ID (raft trusts what it once
// acknowledged, so it would never catch up and could vote twice); re-added under a new ID it
// catches up by snapshot.
#[test]
fn wiped_member_must_come_back_under_a_new_id() {
    let mut c = Cluster::start(3, SMALL_SNAPSHOTS);
    let leader = c.wait_leader();
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    write_keys(&c, leader, "w", 100);
    c.wait_converged();
    c.node_mut(victim).kill();
    std::fs::remove_dir_all(c.dir().join(format!("raftexample-{victim}"))).unwrap();
    std::fs::remove_dir_all(c.dir().join(format!("raftexample-{victim}-snap"))).unwrap();
    c.node_mut(victim).start();
    assert_eq!(
        c.node_mut(victim).wait_exit(Duration::from_secs(15)),
        Some(1)
    );
    assert!(
        c.node(victim).log().contains("data was lost"),
        "{}",
        c.node(victim).log()
    );
    let r = c
        .node(leader)
        .req("DELETE", &format!("/{victim}"), b"")
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let id = add_voter_and_start(&mut c, leader);
    c.wait_converged();
    assert_keys(&c, id, "w", 100);
}

// Intent: `GET /events` streams leader changes, membership changes and snapshots as they happen.
#[test]
fn events_stream_leader_membership_and_snapshot_changes() {
    use std::io::{Read, Write};
    let mut c = Cluster::start(3, SMALL_SNAPSHOTS);
    let leader = c.wait_leader();
    let watcher = (1..=3).find(|i| *i != leader).unwrap();
    let mut stream = std::net::TcpStream::connect(c.node(watcher).client).unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut seen = String::new();
    let mut read_until = |needle: &str, seen: &mut String| {
        poll(Duration::from_secs(20), needle, || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = stream.read(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            seen.contains(needle).then_some(())
        })
    };
    read_until("text/event-stream", &mut seen);
    let target = (1..=3).find(|i| *i != leader && *i != watcher).unwrap();
    let r = c
        .node(leader)
        .req("POST", "/leader", target.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status, 204);
    read_until(&format!("\"leader\":{target}"), &mut seen);
    assert!(seen.contains("event: leader"), "{seen}");
    let (id, url) = c.prepare_joiner(&[]);
    let r = c
        .node(target)
        .req(
            "POST",
            &format!("/members/{id}?learner=true"),
            url.as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 204);
    read_until("event: membership", &mut seen);
    write_keys(&c, target, "e", 60);
    read_until("event: snapshot", &mut seen);
}

// Intent: a peer URL that a member already has is refused with 409 and a sentence, whether
// added as a voter or as a learner (two voters with one URL can never both run, so losing one
// real node would stop all writes); the membership is unchanged.
#[test]
fn adding_a_node_with_a_members_peer_url_is_refused() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let url1 = c.peer_urls[0].clone();
    let r = c.node(leader).req("POST", "/4", url1.as_bytes()).unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("already belongs to node 1"),
        "{}",
        r.text()
    );
    let url2 = format!("{}/", c.peer_urls[1].to_uppercase().replace("HTTP", "http"));
    let r = c
        .node(leader)
        .req("POST", "/members/5?learner=true", url2.as_bytes())
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    let s = c.node(leader).status().unwrap();
    assert_eq!(s["voters"].as_array().unwrap().len(), 3);
    assert_eq!(s["learners"].as_array().unwrap().len(), 0);
    c.put_eventually(leader, "still-writable", "1");
}

// Intent: a node that is removed tells its `/events` subscribers with a `removed` event before
// it exits 0.
#[test]
fn a_removed_node_announces_removed_on_its_events_stream() {
    use std::io::{Read, Write};
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let mut stream = std::net::TcpStream::connect(c.node(victim).client).unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut seen = String::new();
    let mut read_until = |needle: &str, seen: &mut String| {
        poll(Duration::from_secs(20), needle, || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = stream.read(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            seen.contains(needle).then_some(())
        })
    };
    read_until("text/event-stream", &mut seen);
    let r = c
        .node(leader)
        .req("DELETE", &format!("/{victim}"), b"")
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    read_until("event: removed", &mut seen);
    assert!(seen.contains(&format!("\"node\":{victim}")), "{seen}");
    assert_eq!(
        c.node_mut(victim).wait_exit(Duration::from_secs(15)),
        Some(0)
    );
}
