//! Snapshot transfer between real node processes on loopback: a hostile or broken upload to
//! `POST /raft/snapshot` is refused at once (or as soon as its head or its image shows it),
//! leaves no file behind, never holds the receiving slot after it ends, and never stops the
//! node; a real catch-up from a snapshot still works afterwards.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use raft::eraftpb::{ConfState, Message, MessageType};
use support::{cluster_id_of, count_files, poll, Cluster, Reply};

/// A `MsgSnapshot` head (no data) from `from` to `to` in `term`, for a snapshot at `index`
/// whose conf state holds `voters`.
fn snapshot_head(from: u64, to: u64, term: u64, index: u64, voters: Vec<u64>) -> Vec<u8> {
    let mut m = Message {
        from,
        to,
        term,
        ..Default::default()
    };
    m.set_msg_type(MessageType::MsgSnapshot);
    let meta = m.mut_snapshot().mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(ConfState {
        voters,
        ..Default::default()
    });
    raftexample::transport::encode_batch(&[m])
}

/// Sends the request head of a snapshot upload with `content_length` (none: no header) and
/// the first `body` bytes; returns the open connection.
fn start_upload(
    peer: SocketAddr,
    cluster: &str,
    from: u64,
    to: u64,
    content_length: Option<u64>,
    body: &[u8],
) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&peer, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "POST /raft/snapshot HTTP/1.1\r\nHost: {peer}\r\nConnection: close\r\n\
         X-Raft-Cluster-Id: {cluster}\r\nX-Raft-From: {from}\r\nX-Raft-To: {to}\r\n"
    );
    if let Some(len) = content_length {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The node may answer (and close) before reading the body: a failed write is fine.
    let _ = s.write_all(body);
    s
}

/// The whole answer on `s` (after the node closed it or sent it in full).
fn answer(mut s: TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    support::parse_reply(&raw).unwrap_or_else(|| panic!("no HTTP answer: {raw:?}"))
}

fn staged_files(snap_dir: &Path) -> usize {
    count_files(snap_dir, ".staged")
}

// Intent: every way an upload can be wrong is refused with its own status and counted,
// without the node keeping a file or the receiving slot: no length (411), over the limit
// (413), from a member this node does not follow or in another term (503), a second upload
// while one is in flight (503 busy), a cut-off upload, and an image that does not validate
// (400). The node serves writes and linearizable reads throughout, and a real catch-up from
// a snapshot still works after all of it.
#[test]
fn hostile_snapshot_uploads_are_refused_and_leave_nothing_behind() {
    let mut c = Cluster::start(
        3,
        &["--snapshot-count", "20", "--snapshot-catchup-entries", "0"],
    );
    let leader = c.wait_leader();
    let f = if leader == 3 { 2 } else { 3 };
    let other = (1..=3).find(|id| *id != leader && *id != f).unwrap();
    let peer: SocketAddr = format!("127.0.0.1:{}", c.node(f).peer_port)
        .parse()
        .unwrap();
    let cluster = cluster_id_of(peer);
    let term = c.node(f).status().unwrap()["term"].as_u64().unwrap();
    let snap_dir = c.dir().join(format!("raftexample-{f}-snap"));
    let head = |from: u64, term: u64| snapshot_head(from, f, term, 1_000_000, vec![1, 2, 3]);
    let refused = |reason: &str| {
        c.node(f).status().unwrap()["peer_refused"][reason]
            .as_u64()
            .unwrap()
    };

    let r = answer(start_upload(
        peer,
        &cluster,
        leader,
        f,
        None,
        &head(leader, term),
    ));
    assert_eq!(r.status, 411, "{}", r.text());
    let r = answer(start_upload(peer, &cluster, leader, f, Some(1 << 50), &[]));
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(refused("snapshot_size") >= 2);

    // Not the leader this node follows, or not its term: refused on the head alone.
    for (from, t) in [(other, term), (leader, term + 1)] {
        let h = head(from, t);
        let r = answer(start_upload(
            peer,
            &cluster,
            from,
            f,
            Some(h.len() as u64 + 64),
            &h,
        ));
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("follows"), "{}", r.text());
    }
    assert!(refused("not_leader") >= 2);

    // An upload in flight holds the one receiving slot: a second one is busy.
    let h = head(leader, term);
    let total = h.len() as u64 + (64 << 20);
    let mut first = start_upload(peer, &cluster, leader, f, Some(total), &h);
    first.write_all(&vec![7u8; 1 << 20]).unwrap();
    poll(
        Duration::from_secs(10),
        "the first upload to be staged",
        || (staged_files(&snap_dir) == 1).then_some(()),
    );
    let r = answer(start_upload(peer, &cluster, leader, f, Some(total), &h));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(refused("busy") >= 1);
    // Cut off: the partial file goes, and so does the slot.
    drop(first);
    poll(
        Duration::from_secs(10),
        "the cut-off upload's file to go",
        || (staged_files(&snap_dir) == 0).then_some(()),
    );

    // A whole upload whose image does not validate: 400, nothing kept.
    let junk = b"RXENVLP\x02 this is not a membership nor an image".to_vec();
    let h = head(leader, term);
    let mut body = h.clone();
    body.extend_from_slice(&junk);
    let r = poll(Duration::from_secs(10), "the slot to be free again", || {
        let r = answer(start_upload(
            peer,
            &cluster,
            leader,
            f,
            Some(body.len() as u64),
            &body,
        ));
        (r.status != 503).then_some(r)
    });
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("snapshot rejected"), "{}", r.text());
    assert_eq!(staged_files(&snap_dir), 0);

    // The node never stopped, serves, and still catches up from a real snapshot.
    assert!(c.node_mut(f).is_running(), "{}", c.node(f).log());
    c.put_eventually(f, "after", "v");
    let r = c.node(f).get("after").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "v"));
    assert_eq!(c.node_mut(other).terminate(), Some(0));
    for i in 0..60 {
        c.put_eventually(leader, &format!("k{i}"), "x");
    }
    c.node_mut(other).start();
    c.wait_converged();
    let r = c
        .node(other)
        .req("GET", "/kv/k59?consistency=serializable", b"")
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "x"));
    assert!(
        c.node(other)
            .log()
            .contains("installing snapshot from the leader"),
        "the restarted member caught up without a snapshot: {}",
        c.node(other).log()
    );
    assert_eq!(
        staged_files(&c.dir().join(format!("raftexample-{other}-snap"))),
        0
    );
}
