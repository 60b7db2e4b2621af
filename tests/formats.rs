//! Golden tests of the on-disk formats: a data dir written by raftexample-rs 0.1 (before the
//! engine split) must still open with every key, and the entry framing and snapshot image
//! bytes must stay what they were. If one of these fails, a format changed: old data would be
//! mis-decoded, so the change must be a new format version with an explicit refusal or
//! migration instead.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{free_ports, poll, Cluster};

/// Copies `from` into `to` recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

// Intent: the fixture `tests/fixtures/v0.1-single-node` (a single node written by the 0.1
// release: three compacting snapshots, then a delete and a put in the WAL after the last one)
// opens with exactly its keys and its state digest, and takes new writes after them.
#[test]
fn a_data_dir_written_by_release_0_1_still_opens() {
    let mut c = Cluster::new(1, &[]);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0.1-single-node");
    copy_dir(&fixture, c.dir());
    // The fixture was written with --cluster http://127.0.0.1:47021 (its cluster ID derives
    // from it); listen for peers on a free port instead.
    let peer = free_ports(1)[0];
    let node = c.node_mut(1);
    let mut args = Vec::new();
    let mut i = 0;
    while i < node.args.len() {
        if node.args[i] == "--cluster" {
            i += 2;
        } else {
            args.push(node.args[i].clone());
            i += 1;
        }
    }
    args.extend([
        "--cluster".to_string(),
        "http://127.0.0.1:47021".to_string(),
        "--listen-peer-addr".to_string(),
        format!("127.0.0.1:{peer}"),
        "--wal-segment-size-bytes".to_string(),
        "4096".to_string(),
    ]);
    node.args = args;
    node.start();
    let status = poll(Duration::from_secs(20), "the old data dir to open", || {
        let s = c.node(1).status()?;
        (s["leader"].as_u64()? == 1).then_some(s)
    });
    assert_eq!(status["cluster_id"], "23903991ee7500a4");
    let digest_at_18 = poll(Duration::from_secs(10), "index 18 applied", || {
        let s = c.node(1).status()?;
        (s["applied_index"].as_u64()? >= 18)
            .then(|| s["state_digest"].as_str().map(String::from))?
    });
    // A new leader term appends one empty entry, which leaves the digest alone.
    assert_eq!(digest_at_18, "f86a635ed1321602");
    for i in 0..14 {
        let r = c.node(1).get(&format!("k{i}")).unwrap();
        if i == 3 {
            assert_eq!(r.status, 404, "k3 was deleted");
        } else {
            assert_eq!((r.status, r.text()), (200, format!("value-{i}")), "k{i}");
        }
    }
    assert_eq!(c.node(1).get("after").unwrap().text(), "last");
    let r = c.put_eventually(1, "new", "v");
    assert!(r.header("x-raft-index").unwrap().parse::<u64>().unwrap() > 18);
}
