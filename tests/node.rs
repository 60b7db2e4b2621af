//! Replicated KV node tests: real `raftexample` processes on loopback HTTP with temp dirs.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{poll, request, Cluster};

// Intent: a single node serves PUT/GET/DELETE on both route families, answers writes with
// their raft index and term, and answers absent keys, bad methods and reserved names honestly.
#[test]
fn single_node_put_get_delete() {
    let c = Cluster::start(1, &[]);
    let n = c.node(1);
    let r = n.put("k", "v1").unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.header("x-raft-index").unwrap().parse::<u64>().unwrap() > 1);
    assert!(r.header("x-raft-term").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(n.get("k").unwrap().text(), "v1");
    assert_eq!(n.req("GET", "/kv/k", b"").unwrap().text(), "v1");
    assert_eq!(n.req("PUT", "/kv/k", b"v2").unwrap().status, 204);
    assert_eq!(n.get("k").unwrap().text(), "v2");
    let s = n.req("GET", "/kv/k?consistency=serializable", b"").unwrap();
    assert_eq!((s.status, s.text()), (200, "v2".to_string()));
    assert_eq!(n.req("DELETE", "/kv/k", b"").unwrap().status, 204);
    assert_eq!(n.get("k").unwrap().status, 404);
    assert_eq!(n.get("never").unwrap().status, 404);
    let r = n.req("PATCH", "/k", b"").unwrap();
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap().contains("PUT"));
    assert_eq!(
        n.req("GET", "/kv/k?consistency=weird", b"").unwrap().status,
        400
    );
    assert_eq!(n.req("GET", "/kv/k?min_index=x", b"").unwrap().status, 400);
    assert_eq!(n.req("GET", "/", b"").unwrap().status, 404);
    let s = n.status().unwrap();
    assert_eq!(s["role"], "leader");
    assert_eq!(s["voters"].as_array().unwrap().len(), 1);
    assert_eq!(n.req("GET", "/health", b"").unwrap().status, 200);
    let m = n.req("GET", "/metrics", b"").unwrap();
    assert_eq!(m.status, 200);
    let m = m.text();
    assert!(m.contains("raftexample_is_leader{id=\"1\"} 1"), "{m}");
    assert!(m.contains("raftexample_keys{id=\"1\"} 0"), "{m}");
    let put_answers = m
        .lines()
        .find(|l| l.starts_with("raftexample_http_responses_total{id=\"1\",code=\"204\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap();
    assert!(put_answers >= 3, "{m}");
    assert_eq!(n.req("POST", "/metrics", b"").unwrap().status, 405);
}

// Intent: writes through any node, leader or follower, are replicated to every node.
#[test]
fn three_nodes_replicate_writes_from_any_node() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    for id in 1..=3u64 {
        let r = c.put_eventually(id, &format!("from-{id}"), &format!("v{id}"));
        assert_eq!(r.status, 204);
    }
    for reader in 1..=3u64 {
        for writer in 1..=3u64 {
            let r = c.node(reader).get(&format!("from-{writer}")).unwrap();
            assert_eq!(
                (r.status, r.text()),
                (200, format!("v{writer}")),
                "reader {reader}"
            );
        }
    }
    let s = c.node(leader).status().unwrap();
    let progress = s["progress"].as_array().unwrap();
    assert_eq!(progress.len(), 3);
}

// Intent: linearizable reads: a PUT acknowledged by node A is visible to an immediate GET on
// node B, 200 times in a row, for every pair of nodes.
#[test]
fn acknowledged_put_is_visible_on_another_node_at_once() {
    let c = Cluster::start(3, &[]);
    for i in 0..200u64 {
        let a = i % 3 + 1;
        let b = (i + 1) % 3 + 1;
        let key = format!("lin-{i}");
        let r = c.put_eventually(a, &key, &format!("v{i}"));
        assert_eq!(r.status, 204);
        let g = c.node(b).get(&key).unwrap();
        assert_eq!(
            (g.status, g.text()),
            (200, format!("v{i}")),
            "write on {a} not visible on {b}"
        );
    }
}

// Intent: durability: 500 concurrent acknowledged PUTs survive kill -9 of every node at once.
#[test]
fn acknowledged_puts_survive_kill_9_of_all_nodes() {
    let mut c = Cluster::start(3, &[]);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..25u64)
        .map(|t| {
            let addrs: Vec<_> = c.nodes.iter().map(|n| n.client).collect();
            let acked = acked.clone();
            std::thread::spawn(move || {
                for j in 0..20u64 {
                    let key = format!("d-{t}-{j}");
                    let addr = addrs[((t + j) % 3) as usize];
                    let r = request(
                        addr,
                        "PUT",
                        &format!("/{key}"),
                        &[],
                        key.as_bytes(),
                        Duration::from_secs(5),
                    );
                    if r.is_ok_and(|r| r.status == 204) {
                        acked.lock().unwrap().push(key);
                    }
                }
            })
        })
        .collect();
    for t in clients {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 450,
        "only {} of 500 PUTs acknowledged",
        acked.len()
    );
    for n in &mut c.nodes {
        n.kill();
    }
    for n in &mut c.nodes {
        n.start();
    }
    c.wait_leader();
    for id in 1..=3u64 {
        for key in &acked {
            let r = poll(Duration::from_secs(10), "a read after restart", || {
                c.node(id).get(key).ok().filter(|r| r.status != 503)
            });
            assert_eq!(
                (r.status, r.text()),
                (200, key.clone()),
                "node {id} lost {key}"
            );
        }
    }
}

// Intent: when the leader is killed, the others elect a new leader and accept writes within a
// few election timeouts.
#[test]
fn leader_kill_elects_a_new_leader() {
    let mut c = Cluster::start(3, &[]);
    let old = c.wait_leader();
    c.put_eventually(old, "before", "1");
    c.node_mut(old).kill();
    let started = Instant::now();
    let new = poll(Duration::from_secs(20), "a new leader", || {
        Some(c.wait_leader()).filter(|l| *l != old)
    });
    let other = (1..=3).find(|i| *i != old && *i != new).unwrap();
    c.put_eventually(other, "after", "2");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(c.node(new).get("before").unwrap().text(), "1");
}

// Intent: with 2 of 3 nodes down a PUT never hangs: 503 or 504 within its deadline; and a key
// answered 503 never appears later, once the cluster is whole again.
#[test]
fn minority_put_answers_within_deadline_and_503_is_never_applied() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let survivor = (1..=3).find(|i| *i != leader).unwrap();
    c.put_eventually(survivor, "warm", "1");
    for id in 1..=3u64 {
        if id != survivor {
            c.node_mut(id).kill();
        }
    }
    let mut refused = Vec::new();
    for i in 0..6 {
        let key = format!("minority-{i}");
        let started = Instant::now();
        let r = c.node(survivor).put(&key, "x").unwrap();
        let took = started.elapsed();
        assert!(
            r.status == 503 || r.status == 504,
            "got {} {}",
            r.status,
            r.text()
        );
        assert!(took < Duration::from_millis(3000 + 1500), "took {took:?}");
        if r.status == 503 {
            assert!(r.header("retry-after").is_some());
            refused.push(key);
        }
    }
    assert!(
        !refused.is_empty(),
        "no PUT was answered 503 once the leader was known gone"
    );
    for id in 1..=3u64 {
        if id != survivor {
            c.node_mut(id).start();
        }
    }
    c.wait_leader();
    c.put_eventually(survivor, "whole-again", "1");
    for key in &refused {
        for id in 1..=3u64 {
            assert_eq!(
                c.node(id).get(key).unwrap().status,
                404,
                "503'd {key} appeared"
            );
        }
    }
}

// Intent: SIGTERM shuts a node down cleanly (exit 0) and a restart keeps every key.
#[test]
fn restart_after_sigterm_keeps_everything() {
    let mut c = Cluster::start(3, &[]);
    let mut expect = BTreeMap::new();
    for i in 0..30 {
        let key = format!("t-{i}");
        c.put_eventually((i % 3) + 1, &key, &format!("v{i}"));
        expect.insert(key, format!("v{i}"));
    }
    for n in &mut c.nodes {
        assert_eq!(n.terminate(), Some(0), "{}", n.log());
    }
    for n in &mut c.nodes {
        n.start();
    }
    c.wait_leader();
    for (k, v) in &expect {
        let r = poll(Duration::from_secs(10), "a read", || {
            c.node(2).get(k).ok().filter(|r| r.status != 503)
        });
        assert_eq!(&r.text(), v);
    }
}

// Intent: a leader that gets SIGTERM hands leadership to another node before exiting.
#[test]
fn sigterm_on_leader_transfers_leadership() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    c.put_eventually(leader, "k", "v");
    assert_eq!(c.node_mut(leader).terminate(), Some(0));
    let log = c.node(leader).log();
    assert!(log.contains("transferring leadership"), "{log}");
    poll(Duration::from_secs(20), "a new leader", || {
        Some(c.wait_leader()).filter(|l| *l != leader)
    });
}

// Intent: garbage, truncated, spoofed and oversized input on the peer and client ports gets a
// 4xx, never crashes a node, and changes nothing.
#[test]
fn garbage_on_both_ports_is_refused_and_changes_nothing() {
    let c = Cluster::start(3, &["--max-request-body-bytes", "1024"]);
    let n = c.node(1);
    c.put_eventually(1, "stable", "1");
    let before = n.status().unwrap();
    let peer: std::net::SocketAddr = ([127, 0, 0, 1], n.peer_port).into();
    let cluster_id = before["cluster_id"].as_str().unwrap().to_string();
    let t = Duration::from_secs(5);
    let good = |from: &str, to: &str| {
        vec![
            ("X-Raft-Cluster-Id", cluster_id.clone()),
            ("X-Raft-From", from.to_string()),
            ("X-Raft-To", to.to_string()),
        ]
    };
    let as_refs = |h: &Vec<(&'static str, String)>| -> Vec<(&'static str, String)> { h.clone() };
    let send = |headers: Vec<(&'static str, String)>, body: &[u8]| {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(peer, "POST", "/raft", &h, body, t).unwrap().status
    };
    assert_eq!(
        send(as_refs(&good("2", "1")), b"\xff\xff\xff\xff garbage"),
        400
    );
    assert_eq!(send(as_refs(&good("2", "1")), &[3, 0, 0, 0, 1]), 400);
    assert_eq!(send(vec![], b""), 400);
    let mut wrong = good("2", "1");
    wrong[0].1 = "deadbeef".into();
    assert_eq!(send(wrong, b""), 412);
    assert_eq!(send(good("2", "7"), b""), 400);
    // A message claiming another sender than the header.
    let spoof = raftexample::transport::encode_batch(&[{
        let mut m = raft::eraftpb::Message {
            from: 3,
            to: 1,
            commit: u64::MAX,
            ..Default::default()
        };
        m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
        m
    }]);
    assert_eq!(send(good("2", "1"), &spoof), 400);
    // A heartbeat with an impossible commit index from a real peer must not crash the node.
    let hb = raftexample::transport::encode_batch(&[{
        let mut m = raft::eraftpb::Message {
            from: 2,
            to: 1,
            term: 1,
            commit: u64::MAX,
            ..Default::default()
        };
        m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
        m
    }]);
    let code = send(good("2", "1"), &hb);
    assert!(code == 204 || code == 503, "{code}");
    let r = request(peer, "GET", "/nothing", &[], b"", t).unwrap();
    assert_eq!(r.status, 404);
    // Client port: oversized body, truncated request, bad member URL, bad node id.
    let big = vec![b'x'; 4096];
    assert_eq!(n.req("PUT", "/big", &big).unwrap().status, 413);
    assert_eq!(n.req("POST", "/9", b"not a url").unwrap().status, 400);
    assert_eq!(
        n.req("POST", "/abc", b"http://127.0.0.1:1").unwrap().status,
        400
    );
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(n.client).unwrap();
        let _ = s.write_all(b"PUT /trunc HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort");
    }
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(n.client).unwrap();
        let _ = s.write_all(b"\x00\x01\x02 garbage\r\n\r\n");
    }
    assert_eq!(n.get("big").unwrap().status, 404);
    assert_eq!(n.get("trunc").unwrap().status, 404);
    c.put_eventually(1, "after-garbage", "ok");
    for id in 1..=3 {
        assert_eq!(c.node(id).get("stable").unwrap().text(), "1");
        assert_eq!(c.node(id).get("after-garbage").unwrap().text(), "ok");
    }
    let after = n.status().unwrap();
    assert_eq!(after["voters"], before["voters"]);
}

// Intent: bad flags exit 1 with one clear sentence on stderr, before touching the disk.
#[test]
fn bad_flags_give_one_clear_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[&[&str]] = &[
        &[
            "--id",
            "5",
            "--cluster",
            "http://127.0.0.1:1,http://127.0.0.1:2",
        ],
        &["--cluster", "localhost:9021"],
        &["--port", "99999"],
        &["--election-ticks", "1"],
        &["--no-such-flag"],
    ];
    for argv in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftexample"))
            .args(*argv)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let code = out.status.code();
        assert!(
            code == Some(1) || code == Some(2),
            "{argv:?} exited {code:?}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{argv:?} printed nothing");
        assert!(!err.contains("panicked"), "{argv:?}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "bad flags wrote files"
    );
}

// Intent: one canonical key mapping for both routes. The key is the percent-decoded path after
// the route prefix: `/A`, `/%41`, `/kv/A` and `/kv/%41` are one key; `/kv/` keys keep their
// slashes (`/kv/a%2Fb` is `/kv/a/b`); a raftexample-route key with a slash or a reserved name,
// and a bad escape, are refused with a sentence and change nothing.
#[test]
fn both_routes_map_keys_alike_and_kv_keys_may_hold_slashes() {
    let c = Cluster::start(1, &[]);
    let n = c.node(1);
    assert_eq!(n.put("A", "one").unwrap().status, 204);
    for path in ["/A", "/%41", "/kv/A", "/kv/%41"] {
        let r = n.req("GET", path, b"").unwrap();
        assert_eq!((r.status, r.text()), (200, "one".to_string()), "{path}");
    }
    assert_eq!(n.req("PUT", "/kv/a/b", b"slash").unwrap().status, 204);
    let r = n.req("GET", "/kv/a%2Fb", b"").unwrap();
    assert_eq!((r.status, r.text()), (200, "slash".to_string()));
    let r = n.req("GET", "/a%2Fb", b"").unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("/kv/"), "{}", r.text());
    let r = n.req("PUT", "/%73tatus", b"x").unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("/kv/"), "{}", r.text());
    assert_eq!(n.req("PUT", "/kv/status", b"x").unwrap().status, 204);
    assert_eq!(n.req("GET", "/kv/status", b"").unwrap().text(), "x");
    for bad in ["/kv/%4", "/kv/%zz", "/%+1"] {
        let r = n.req("PUT", bad, b"x").unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    assert_eq!(n.req("DELETE", "/kv/a/b", b"").unwrap().status, 204);
    assert_eq!(n.req("GET", "/kv/a%2fb", b"").unwrap().status, 404);
}
