//! Regression tests for defects that took nodes down or stalled them: each test is named after
//! what it proves. Real `raftexample` processes on loopback, real files.

mod support;

use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, HardState, Message, MessageType};
use support::{poll, request, Cluster, Reply};

/// POSTs `msgs` to node `to`'s peer port as a batch from `from`, with the cluster's real ID
/// (which anyone can learn from `GET /raft/cluster`).
fn forge(c: &Cluster, from: u64, to: u64, msgs: &[Message]) -> Reply {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], c.node(to).peer_port));
    let cluster = support::cluster_id_of(peer);
    support::post_raft_batch(peer, &cluster, from, to, msgs).unwrap()
}

fn message(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message {
        from,
        to,
        term,
        ..Default::default()
    };
    m.set_msg_type(t);
    m
}

// Intent: a forged heartbeat with term u64::MAX (which made every node panic on `term + 1`
// within seconds, and again at every restart) and forged appends with huge log or entry terms
// are refused with 400 before raft sees them, counted in /metrics, and the cluster keeps
// electing and writing in a term far below the ceiling.
#[test]
fn forged_terms_near_overflow_are_refused_and_the_cluster_survives() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let other = (1..=3).find(|i| *i != leader).unwrap();
    let hb = message(MessageType::MsgHeartbeat, other, leader, u64::MAX);
    let r = forge(&c, other, leader, &[hb]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("highest term"), "{}", r.text());
    let mut log_term = message(MessageType::MsgAppend, leader, other, 5);
    log_term.log_term = 1 << 60;
    let mut entry_term = message(MessageType::MsgAppend, leader, other, 5);
    entry_term.mut_entries().push(Entry {
        term: u64::MAX,
        index: 2,
        ..Default::default()
    });
    for m in [log_term, entry_term] {
        let r = forge(&c, leader, other, &[m]);
        assert_eq!(r.status, 400, "{}", r.text());
    }
    let refused = |id: u64| {
        c.node(id)
            .metric(&format!(
                "raftexample_peer_refused_total{{id=\"{id}\",reason=\"term\"}}"
            ))
            .unwrap()
    };
    assert_eq!(refused(leader), 1);
    assert_eq!(refused(other), 2);
    // The old failure took every node down within 6 s; write for longer than that.
    let until = Instant::now() + Duration::from_secs(8);
    let mut n = 0;
    while Instant::now() < until && n < 400 {
        c.put_eventually(leader, &format!("after-{n}"), "v");
        n += 1;
    }
    for node in &mut c.nodes {
        assert!(node.is_running(), "node {} died", node.id);
    }
    for id in 1..=3u64 {
        let term = c.node(id).status().unwrap()["term"].as_u64().unwrap();
        assert!(term < 100, "node {id} is at term {term}");
    }
}

// Intent: a WAL whose hard state carries a term above the ceiling (written by the old code
// after a forged message) is refused at start with one sentence and a non-zero exit, instead of
// panicking in raft at the first election after every restart.
#[test]
fn wal_with_a_term_above_the_ceiling_is_refused_at_start() {
    let mut c = Cluster::start(1, &[]);
    c.put_eventually(1, "k", "v");
    assert_eq!(c.node_mut(1).terminate(), Some(0));
    let dir = c.dir().join("raftexample-1");
    let options = wal::Options::default();
    let marks = wal::Wal::snapshot_marks(&dir, &options).unwrap();
    let at = marks.last().map(|m| (m.index, m.term)).unwrap();
    let (mut log, replay) = wal::Wal::open(&dir, at, options).unwrap();
    let hs = HardState {
        term: u64::MAX - 1,
        commit: replay.hard_state.commit,
        ..Default::default()
    };
    log.save(Some(&hs), &[], true).unwrap();
    drop(log);
    c.node_mut(1).start();
    let code = c.node_mut(1).wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1));
    let log = c.node(1).log();
    assert!(log.contains("above the highest term"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

// Intent: a panic on any thread (the raft thread, the apply worker, a runtime task) ends the
// process with a non-zero status after one fatal line; it used to look like a clean shutdown
// (exit 0), so a supervisor restarting on failure left the node down.
#[test]
fn a_panic_on_any_thread_exits_non_zero() {
    for place in ["raft", "apply", "runtime"] {
        let mut c = support::Cluster::new(1, &["--test-panic", place]);
        c.node_mut(1).start();
        let child = c.node_mut(1).child.as_mut().unwrap();
        let status = poll(Duration::from_secs(15), "the node to die", || {
            child.try_wait().unwrap()
        });
        c.node_mut(1).child = None;
        assert!(!status.success(), "{place}: {status:?}");
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{place}: {status:?}");
        let log = c.node(1).log();
        let fatal = log.lines().filter(|l| l.contains("fatal: panic")).count();
        assert_eq!(fatal, 1, "{place}: {log}");
        assert!(log.contains(&format!("--test-panic {place}")), "{log}");
    }
}

// Intent: linearizable reads served by every node at once never reuse a ReadIndex context that
// is still pending on the leader (raft-rs drops such a read silently, and the batch waited for
// its re-issue: follower p99 near 500 ms). The leader counts each duplicate; it stays 0.
#[test]
fn reads_on_every_node_never_reuse_a_pending_read_context() {
    let c = Cluster::start(3, &[]);
    c.put_eventually(1, "r", "v");
    let deadline = Instant::now() + Duration::from_secs(4);
    let handles: Vec<_> = (1..=3u64)
        .flat_map(|id| (0..6).map(move |_| id))
        .map(|id| {
            let addr = c.node(id).client;
            std::thread::spawn(move || {
                let mut ok = 0u32;
                while Instant::now() < deadline && ok < 2000 {
                    let r = request(addr, "GET", "/r", &[], b"", Duration::from_secs(5));
                    if r.is_ok_and(|r| r.status == 200) {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let ok: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(ok > 100, "only {ok} reads succeeded");
    for id in 1..=3u64 {
        let dups = c
            .node(id)
            .metric("raftexample_read_index_duplicates_total")
            .unwrap();
        assert_eq!(dups, 0, "node {id} saw {dups} duplicate read contexts");
    }
}

// Intent: with a soft open-file limit below the idle client connections held open, the node
// raises it to the hard limit at start (as Go does), keeps accepting clients, and its
// snapshots, which open files, keep working (they used to abort the node with EMFILE).
#[test]
fn idle_connections_above_the_soft_file_limit_do_not_break_snapshots() {
    let mut c = Cluster::new(1, &["--snapshot-count", "20"]);
    c.node_mut(1).soft_nofile = Some(128);
    c.node_mut(1).start();
    c.wait_leader();
    let pid = c.node_mut(1).child.as_ref().unwrap().id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "soft limit not raised: {line}");
    let addr = c.node(1).client;
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    for i in 0..80 {
        let r = c.node(1).put(&format!("k{i}"), "v").unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
    }
    poll(Duration::from_secs(10), "snapshots", || {
        (c.snap_files(1) >= 3).then_some(())
    });
    assert!(c.node_mut(1).is_running());
    drop(idle);
    assert_eq!(c.node(1).get("k79").unwrap().text(), "v");
}

// Intent: a PUT whose body is exactly the configured `--max-request-body-bytes` is logged and
// replicated on every member, even two at once through a follower (forwarded as one proposal
// message each); one byte more is refused with 413 and nothing is proposed. The limit is a
// quarter of the largest the node accepts (about 15 MiB): the full ~60 MB took the debug
// build's nodes long enough under CI load to cause elections; that the ceiling itself fits a
// WAL record and a peer batch is `limits::tests::accepted_bodies_fit_every_stage`, and a
// release cluster carries two such PUTs in about 1 s.
#[test]
fn put_at_the_largest_accepted_body_is_applied_on_every_member() {
    let max = raftexample::limits::max_request_body_bytes() / 4;
    let flag = max.to_string();
    let mut c = Cluster::start(
        3,
        &[
            "--max-request-body-bytes",
            &flag,
            "--request-timeout-ms",
            "20000",
            // A 3 s election timeout: in a debug build under load the raft thread spends a good
            // part of a second on each 60 MB entry (copies and CRCs), and an append of one takes
            // seconds to cross; the test clusters' 400 ms timeout would turn that into
            // elections (and honest 504s).
            "--tick-interval-ms",
            "100",
            "--election-ticks",
            "30",
        ],
    );
    let leader = c.wait_leader();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let addr = c.node(follower).client;
    let writers: Vec<_> = [b'a', b'b']
        .into_iter()
        .map(|fill| {
            std::thread::spawn(move || {
                let body = vec![fill; max];
                let path = format!("/big-{}", fill as char);
                request(addr, "PUT", &path, &[], &body, Duration::from_secs(30)).unwrap()
            })
        })
        .collect();
    for w in writers {
        let r = w.join().unwrap();
        let elections = || {
            (1..=3)
                .flat_map(|id| {
                    c.node(id)
                        .log()
                        .lines()
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .filter(|l| !l.contains("DEBG") || l.contains("proposal"))
                .filter(|l| l.contains("became") || l.contains("WARN") || l.contains("ERRO"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(r.status, 204, "{}\n{}", r.text(), elections());
    }
    let over = vec![b'x'; max + 1];
    let r = request(addr, "PUT", "/over", &[], &over, Duration::from_secs(30)).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    c.wait_converged();
    for id in 1..=3u64 {
        for fill in [b'a', b'b'] {
            let path = format!("/kv/big-{}?consistency=serializable", fill as char);
            let r = c.node(id).req("GET", &path, b"").unwrap();
            assert_eq!(r.status, 200, "node {id}");
            assert_eq!(r.body.len(), max, "node {id}");
            assert!(r.body.iter().all(|b| *b == fill), "node {id}");
        }
        assert_eq!(c.node(id).get("over").unwrap().status, 404);
    }
}

// Intent: a body limit that the WAL or the peer transport could not carry is refused at start
// with one sentence (a 70 MB PUT used to abort the node).
#[test]
fn a_body_limit_the_log_cannot_carry_is_refused_at_start() {
    let mut c = Cluster::new(1, &["--max-request-body-bytes", "134217728"]);
    c.node_mut(1).start();
    assert_eq!(c.node_mut(1).wait_exit(Duration::from_secs(10)), Some(1));
    let log = c.node(1).log();
    assert!(log.contains("--max-request-body-bytes"), "{log}");
    assert_eq!(log.trim().lines().count(), 1, "{log}");
}

// Intent: each well-formed peer message the fuzz test (`tests/peer_fuzz.rs`) found to panic a
// node through a raft-rs assertion is refused before raft sees it (400, counted as
// `invariant`) or dropped by the raft thread (counted as `contradicts_state`), and every node
// keeps running and writing: an append of term 0 (a debug assertion in a candidate), an empty
// proposal, a read request without its context, an append after an index past the log with
// log term 0 (taken as a match, then a commit past the log), a leader transfer request to a
// follower (forwarded with its term, which raft-rs aborts on), and an acknowledgement beyond
// the leader's log.
#[test]
fn peer_messages_that_broke_raft_rs_assumptions_are_refused() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let other = (1..=3).find(|i| *i != leader).unwrap();
    let term = c.node(leader).status().unwrap()["term"].as_u64().unwrap();
    let mut zero_term_append = message(MessageType::MsgAppend, leader, other, 0);
    zero_term_append.index = 1;
    zero_term_append.log_term = 1;
    let empty_proposal = message(MessageType::MsgPropose, other, leader, 0);
    let no_context_read = message(MessageType::MsgReadIndex, other, leader, 0);
    let mut past_the_log = message(MessageType::MsgAppend, leader, other, term);
    past_the_log.index = 1_000;
    past_the_log.commit = 2_000;
    for m in [zero_term_append, past_the_log] {
        let r = forge(&c, leader, other, &[m]);
        assert_eq!(r.status, 400, "{}", r.text());
    }
    for m in [empty_proposal, no_context_read] {
        let r = forge(&c, other, leader, &[m]);
        assert_eq!(r.status, 400, "{}", r.text());
    }
    let transfer = message(MessageType::MsgTransferLeader, leader, other, term);
    assert_eq!(forge(&c, leader, other, &[transfer]).status, 204);
    let mut ack = message(MessageType::MsgAppendResponse, other, leader, term);
    ack.index = 1_000_000;
    assert_eq!(forge(&c, other, leader, &[ack]).status, 204);
    let refused = |id: u64, reason: &str| {
        c.node(id).status().unwrap()["peer_refused"][reason]
            .as_u64()
            .unwrap()
    };
    assert_eq!(refused(other, "invariant"), 2);
    assert_eq!(refused(leader, "invariant"), 2);
    poll(
        Duration::from_secs(10),
        "the dropped messages counted",
        || {
            (refused(other, "contradicts_state") >= 1 && refused(leader, "contradicts_state") >= 1)
                .then_some(())
        },
    );
    for i in 0..20 {
        c.put_eventually(leader, &format!("after-{i}"), "v");
    }
    for node in &mut c.nodes {
        assert!(node.is_running(), "node {} died", node.id);
    }
}

// Intent: the peer stream route (`POST /raft/stream`, batches framed as `[len][batch]` in one
// long body) refuses hostile input as `POST /raft` does, and changes nothing: another
// cluster's headers (412, before any body), a frame length over the batch limit (413, never
// allocated), a frame cut short or garbage in a frame (400). A stream left open in the middle
// of a frame neither blocks the node's writes nor delays its stop: SIGTERM ends it at once.
#[test]
fn hostile_peer_streams_are_refused_and_an_open_one_never_delays_a_stop() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let target = (1..=3).find(|id| *id != leader).unwrap();
    let sender = (1..=3).find(|id| *id != leader && *id != target).unwrap();
    c.put_eventually(leader, "before", "1");
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], c.node(target).peer_port));
    let cluster = support::cluster_id_of(peer);
    let stream = |cluster: &str, body: &[u8]| {
        support::post_peer(peer, "/raft/stream", cluster, sender, target, body)
            .unwrap()
            .status
    };
    assert_eq!(stream("deadbeef", &[]), 412);
    assert_eq!(stream(&cluster, &0xffff_fff0u32.to_le_bytes()), 413);
    let mut short = 100u32.to_le_bytes().to_vec();
    short.extend_from_slice(b"12345");
    assert_eq!(stream(&cluster, &short), 400);
    let mut garbage = 9u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"\xff\xff\xff\xffgarba");
    assert_eq!(stream(&cluster, &garbage), 400);
    // A spoofed sender inside a well-framed batch.
    let spoof = message(MessageType::MsgHeartbeat, 99, target, 1);
    let body = support::stream_frames(&[&[spoof]]);
    assert_eq!(stream(&cluster, &body), 400);
    let refused = c
        .node(target)
        .metric("raftexample_peer_refused_total")
        .unwrap_or(0);
    assert!(refused >= 4, "refusals were not counted: {refused}");
    // Headers and half a frame, then nothing: the node goes on serving.
    let mut open = TcpStream::connect(peer).unwrap();
    let head = format!(
        "POST /raft/stream HTTP/1.1\r\nHost: {peer}\r\nTransfer-Encoding: chunked\r\n\
         X-Raft-Cluster-Id: {cluster}\r\nX-Raft-From: {sender}\r\nX-Raft-To: {target}\r\n\r\n\
         4\r\n\x40\x00\x00\x00\r\n"
    );
    std::io::Write::write_all(&mut open, head.as_bytes()).unwrap();
    c.put_eventually(target, "during", "2");
    assert_eq!(c.node(target).get("before").unwrap().text(), "1");
    let started = Instant::now();
    let code = c.node_mut(target).terminate();
    assert_eq!(code, Some(0));
    assert!(
        // The peer server's drain gives up after 3 s; the stream must end before that.
        started.elapsed() < Duration::from_millis(2500),
        "an open stream delayed the stop by {:?}",
        started.elapsed()
    );
    drop(open);
    c.node_mut(target).start();
    c.put_eventually(target, "after", "3");
    assert_eq!(c.node(target).get("during").unwrap().text(), "2");
}

// Intent: a member of an older release answers 404 to `POST /raft/stream`; its messages then
// come as one `POST /raft` per batch. Node 1 of a 2-member cluster whose other member is a
// fake of that release: after the fake's 404 to a stream, it gets node 1's election messages
// as batches it can decode, addressed to it.
#[test]
fn a_member_without_streams_gets_one_request_per_batch() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut c = Cluster::new(2, &[]);
    let fake = std::net::TcpListener::bind(("127.0.0.1", c.node(2).peer_port)).unwrap();
    fake.set_nonblocking(true).unwrap();
    c.node_mut(1).start();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut refused_stream, mut batch) = (false, None::<Vec<u8>>);
    while batch.is_none() && Instant::now() < deadline {
        let Ok((conn, _)) = fake.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let mut length = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let answer = |mut conn: &std::net::TcpStream, status: &str, body: &str| {
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        };
        if line.starts_with("GET /raft/cluster") {
            answer(&conn, "200 OK", r#"{"fresh": true, "id": 2}"#);
        } else if line.starts_with("POST /raft/stream") {
            refused_stream = true;
            answer(&conn, "404 Not Found", "not a peer route");
        } else if line.starts_with("POST /raft ") {
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            answer(&conn, "204 No Content", "");
            batch = Some(body);
        } else {
            answer(&conn, "404 Not Found", "");
        }
    }
    let body = batch.expect("no POST /raft batch came");
    assert!(refused_stream, "a batch came without a stream being tried");
    let peers = engine::peer_server::Peers { from: 1, to: 2 };
    let msgs = engine::peer_server::decode_batch(&bytes::Bytes::from(body), peers).unwrap();
    assert!(!msgs.is_empty() && msgs.iter().all(|m| (m.from, m.to) == (1, 2)));
    assert!(c.node(1).log().contains("peer takes no streams"));
}
