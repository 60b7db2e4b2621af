//! Divergence detection on real node processes: members compare their state digests at one
//! index (a digest check through the log) and a member whose state differs from the
//! majority's raises an alarm everywhere, and is unhealthy itself.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, Message, MessageType};
use support::{cluster_id_of, poll, post_raft_batch, Cluster};

/// The entry data of a KV put of `key` = `value`, as the engine frames it (format 0x10, no
/// waiting proposer) around the KV's release-0.1 put command (kind 1).
fn put_entry(key: &str, value: &str) -> Vec<u8> {
    let mut data = vec![0x10];
    data.extend_from_slice(&0u64.to_le_bytes());
    data.push(1);
    data.extend_from_slice(&(key.len() as u32).to_le_bytes());
    data.extend_from_slice(key.as_bytes());
    data.extend_from_slice(value.as_bytes());
    data
}

/// Sends follower `f` an append "from `leader`" in its current term that adds a PUT nobody
/// wrote after its last entry, and commits it; waits until `f` applied it. A real entry that
/// reaches `f` first at that index makes `f` ignore the forgery: then it is sent again after
/// the new last entry. Returns the forged entry's (index, term).
fn forge_committed_put(c: &Cluster, leader: u64, f: u64) -> (u64, u64) {
    let peer: SocketAddr = format!("127.0.0.1:{}", c.node(f).peer_port)
        .parse()
        .unwrap();
    let cluster = cluster_id_of(peer);
    // Every start record applied everywhere: no member proposes one again meanwhile.
    poll(
        Duration::from_secs(20),
        "every start record applied",
        || {
            (1..=3)
                .all(|id| {
                    c.node(id)
                        .status()
                        .is_some_and(|s| s["started"].as_array().is_some_and(|a| a.len() == 3))
                })
                .then_some(())
        },
    );
    for _ in 0..10 {
        let s = c.node(f).status().unwrap();
        let (term, last) = (
            s["term"].as_u64().unwrap(),
            s["last_index"].as_u64().unwrap(),
        );
        let mut forged = Message {
            from: leader,
            to: f,
            term,
            index: last,
            log_term: term,
            commit: last + 1,
            ..Default::default()
        };
        forged.set_msg_type(MessageType::MsgAppend);
        forged.mut_entries().push(Entry {
            index: last + 1,
            term,
            data: put_entry("forged", "x").into(),
            ..Default::default()
        });
        let r = post_raft_batch(peer, &cluster, leader, f, &[forged]).unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            let r = c
                .node(f)
                .req("GET", "/kv/forged?consistency=serializable", b"")
                .unwrap();
            if r.status == 200 {
                return (last + 1, term);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!(
        "the follower never applied the forgery: {}",
        c.node(f).log()
    );
}

fn diverged_ids(c: &Cluster, id: u64) -> Option<(Vec<u64>, u64)> {
    let s = c.node(id).status()?;
    let ids = s["diverged"]
        .as_array()?
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    Some((ids, s["digest_check_index"].as_u64()?))
}

// Intent: a follower that accepted a forged append (a PUT nobody wrote, "from the leader" in
// the current term, which no check can tell from a real one) holds a state the others do not.
// A divergence check asked for on any member finds it: every member lists exactly that
// follower as diverged, its /health answers 503 naming the divergence and its /metrics says
// so, while the other members stay healthy and the cluster keeps taking writes.
#[test]
fn a_member_that_applied_a_forged_append_is_found_diverged() {
    let mut c = Cluster::start(3, &["--digest-check-interval-ms", "0"]);
    let leader = c.wait_leader();
    let f = if leader == 3 { 2 } else { 3 };
    for i in 0..5 {
        c.put_eventually(leader, &format!("k{i}"), "v");
    }
    c.wait_converged();
    let (last, _) = forge_committed_put(&c, leader, f);
    // The leader's own entry at that index is taken as already there.
    c.put_eventually(leader, "real", "w");

    let r = c.node(f).req("POST", "/status/digest-check", b"").unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    for id in 1..=3 {
        poll(
            Duration::from_secs(20),
            "every member to list the diverged one",
            || {
                let (ids, index) = diverged_ids(&c, id)?;
                (ids == [f] && index > last).then_some(())
            },
        );
    }
    let health = c.node(f).req("GET", "/health", b"").unwrap();
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(health.text().contains("diverged"), "{}", health.text());
    assert_eq!(c.node(f).metric("raftexample_self_diverged"), Some(1));
    assert_eq!(
        c.node(leader).metric("raftexample_diverged_members"),
        Some(1)
    );
    assert_eq!(c.node(leader).metric("raftexample_self_diverged"), Some(0));
    let ok = c.node(leader).req("GET", "/health", b"").unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    c.put_eventually(leader, "after", "v");
    assert!(c.node(f).log().contains("diverged"), "{}", c.node(f).log());
}

// Intent: the leader's periodic check runs by itself while every member takes writes, and
// members with equal states are never reported (no false alarm from checks racing writes).
#[test]
fn periodic_checks_under_writes_on_every_member_find_nothing() {
    let mut c = Cluster::start(3, &["--digest-check-interval-ms", "200"]);
    c.wait_leader();
    let mut checks = 0;
    for round in 0..40 {
        for id in 1..=3 {
            c.put_eventually(id, &format!("k{}", round % 7), &format!("{round}-{id}"));
        }
        checks = (1..=3)
            .filter_map(|id| diverged_ids(&c, id))
            .map(|(ids, index)| {
                assert!(ids.is_empty(), "false alarm: {ids:?}");
                index
            })
            .min()
            .unwrap_or(0);
        if round >= 10 && checks > 0 {
            break;
        }
    }
    assert!(
        checks > 0,
        "no periodic check reached a verdict on every member"
    );
    c.wait_converged();
    for id in 1..=3 {
        let (ids, _) = diverged_ids(&c, id).unwrap();
        assert!(ids.is_empty(), "false alarm on {id}: {ids:?}");
    }
}

// Intent: a follower whose forged committed entry is then contradicted by a new leader (one
// that was elected without it and wrote another term at that index) is wedged: raft-rs can
// never repair a committed entry, and it cannot apply a divergence check. It finds itself
// diverged from the contradicting append, answers /health with 503, and reports it through
// the leader, so every member lists it; the others keep serving.
#[test]
fn a_member_whose_committed_log_contradicts_its_leader_finds_itself_diverged() {
    let mut c = Cluster::start(3, &["--digest-check-interval-ms", "0"]);
    let leader = c.wait_leader();
    let f = if leader == 3 { 2 } else { 3 };
    let g = (1..=3).find(|id| *id != leader && *id != f).unwrap();
    c.put_eventually(leader, "k", "v");
    c.wait_converged();
    forge_committed_put(&c, leader, f);
    // g takes over without f's vote; its first entry lands at f's forged index.
    let r = c
        .node(leader)
        .req("POST", "/leader", g.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    for id in 1..=3 {
        let end = Instant::now() + Duration::from_secs(20);
        while diverged_ids(&c, id).map(|(ids, _)| ids) != Some(vec![f]) {
            assert!(
                Instant::now() < end,
                "member {id} does not list {f} as diverged: {}\n{}",
                c.node(id).log(),
                c.node(f).log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let health = c.node(f).req("GET", "/health", b"").unwrap();
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(health.text().contains("contradict"), "{}", health.text());
    c.put_eventually(g, "after", "v");
    let ok = c.node(g).req("GET", "/health", b"").unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
}
