//! Data-safety tests (issue "Data safety"): damaged or missing files are refused with a
//! sentence that names the damaged file. Real processes, real files.

mod support;

use std::time::Duration;

use support::Cluster;

// Intent: when the newest snapshot file is damaged and the WAL was already released up to it,
// the node refuses to start with a sentence that names the snapshot file (it used to blame the
// WAL: "entry N does not follow index M"), at the first start and at every later one.
#[test]
fn a_damaged_newest_snapshot_is_named_when_the_wal_cannot_cover_it() {
    let flags = [
        "--snapshot-count",
        "10",
        "--snapshot-catchup-entries",
        "0",
        "--wal-segment-size-bytes",
        "4096",
    ];
    let mut c = Cluster::start(1, &flags);
    let value = "v".repeat(3000);
    for i in 0..60 {
        c.put_eventually(1, &format!("k{i}"), &value);
    }
    let snap_dir = c.dir().join("raftexample-1-snap");
    support::poll(Duration::from_secs(20), "several snapshots", || {
        (c.snap_files(1) >= 3).then_some(())
    });
    assert_eq!(c.node_mut(1).terminate(), Some(0));
    // The newest snapshot with a WAL mark (a newer file may still lack its mark, and is
    // ignored at recovery anyway): its mark released the WAL up to it.
    let marks = wal::Wal::snapshot_marks(
        &c.dir().join("raftexample-1"),
        &wal::Options {
            segment_size_bytes: 4096,
            ..wal::Options::default()
        },
    )
    .unwrap();
    let mark = marks.iter().max_by_key(|m| m.index).unwrap();
    let newest = snap_dir.join(format!("{:016x}-{:016x}.snap", mark.term, mark.index));
    assert!(newest.exists(), "{}", newest.display());
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap();
    let name = newest.file_name().unwrap().to_string_lossy().to_string();
    for attempt in 0..2 {
        c.node_mut(1).start();
        let code = c.node_mut(1).wait_exit(Duration::from_secs(15));
        assert_eq!(code, Some(1), "attempt {attempt}");
        let log = c.node(1).log();
        let refusal = log
            .lines()
            .rev()
            .find(|l| l.starts_with("raftexample:"))
            .unwrap();
        assert!(refusal.contains(&name), "attempt {attempt}: {refusal}");
        assert!(refusal.contains("damaged"), "attempt {attempt}: {refusal}");
    }
}

// Intent: after bootstrap the stored membership is the truth: restarting every node with the
// `--cluster` list in another order (which used to wedge the cluster forever: each node
// listened on another's URL) elects a leader, keeps every key and takes writes, and each node
// logs one warning listing the differences.
#[test]
fn restarting_all_with_a_permuted_cluster_list_keeps_working() {
    let mut c = Cluster::start(3, &[]);
    for i in 0..20 {
        c.put_eventually(1 + i % 3, &format!("p{i}"), "v");
    }
    for id in 1..=3 {
        assert_eq!(c.node_mut(id).terminate(), Some(0));
    }
    let mut rotated = c.peer_urls.clone();
    rotated.rotate_left(1);
    let list = rotated.join(",");
    for node in &mut c.nodes {
        let at = node.args.iter().position(|a| a == "--cluster").unwrap();
        node.args[at + 1] = list.clone();
        node.start();
    }
    c.wait_leader();
    c.put_eventually(2, "after-permutation", "1");
    for id in 1..=3u64 {
        for i in 0..20 {
            let r = c.node(id).get(&format!("p{i}")).unwrap();
            assert_eq!(
                (r.status, r.text()),
                (200, "v".to_string()),
                "node {id} p{i}"
            );
        }
        let log = c.node(id).log();
        let warning = log
            .lines()
            .find(|l| l.contains("--cluster differs from the stored membership"))
            .unwrap_or_else(|| panic!("node {id} gave no warning"));
        assert!(warning.contains("in the store but"), "{warning}");
    }
}

/// Mounts a tmpfs of `size` (e.g. "16k") on `dir`; `None` (with the reason printed) when this
/// process may not mount (not root, or no tmpfs), so the caller skips visibly.
fn mount_tmpfs(dir: &std::path::Path, size: &str) -> Option<()> {
    std::fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(()),
        Ok(o) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs on {} ({}): run as root to test a full disk",
                dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run mount ({e}): run as root to test a full disk");
            None
        }
    }
}

fn remount(dir: &std::path::Path, size: &str) {
    let ok = std::process::Command::new("mount")
        .args(["-o", &format!("remount,size={size}")])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "remount {}", dir.display());
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

// Intent: a snapshot directory that fills up (ENOSPC on our own snapshot save) no longer
// aborts the node: writes keep being acknowledged (the WAL holds everything), the failed save
// is retried, and once space is back a snapshot is saved and every key is still there, also
// after a restart.
#[test]
fn a_full_snapshot_disk_is_retried_not_fatal() {
    // No free-disk reserve: this test is about the save failing, not about refusing writes.
    let flags = ["--snapshot-count", "10", "--free-disk-reserve-bytes", "0"];
    let mut c = Cluster::new(1, &flags);
    let snap_dir = c.dir().join("raftexample-1-snap");
    if mount_tmpfs(&snap_dir, "16k").is_none() {
        return;
    }
    let _unmount = Unmount(snap_dir.clone());
    c.node_mut(1).start();
    c.wait_leader();
    let value = "x".repeat(2000);
    for i in 0..40 {
        c.put_eventually(1, &format!("f{i}"), &value);
    }
    support::poll(Duration::from_secs(20), "a failed snapshot save", || {
        c.node(1)
            .log()
            .contains("snapshot not made, retrying later")
            .then_some(())
    });
    for i in 40..50 {
        c.put_eventually(1, &format!("f{i}"), &value);
    }
    assert!(c.node_mut(1).is_running(), "the node died on a full disk");
    let before = c.snap_files(1);
    remount(&snap_dir, "8m");
    support::poll(
        Duration::from_secs(20),
        "a snapshot once space is back",
        || (c.snap_files(1) > before).then_some(()),
    );
    assert_eq!(c.node_mut(1).terminate(), Some(0));
    c.node_mut(1).start();
    c.wait_leader();
    for i in 0..50 {
        let r = c.node(1).get(&format!("f{i}")).unwrap();
        assert_eq!((r.status, r.body.len()), (200, 2000), "f{i}");
    }
}

// Intent: the space quota refuses a write that would exceed it with 507 (known not applied:
// the key stays absent on every replica), deletes always work and make room again, every
// replica decides alike (digests converge), and a node restored from a merged snapshot holds
// exactly the same state.
#[test]
fn writes_above_the_space_quota_get_507_and_deletes_make_room() {
    let mut c = Cluster::start(3, &["--quota-bytes", "10000", "--snapshot-count", "5"]);
    let leader = c.wait_leader();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let value = "q".repeat(4000);
    assert_eq!(c.put_eventually(follower, "q1", &value).status, 204);
    assert_eq!(c.put_eventually(follower, "q2", &value).status, 204);
    let r = c.node(follower).put("q3", &value).unwrap();
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.text().contains("--quota-bytes"), "{}", r.text());
    let r = c.node(leader).put("q3", &value).unwrap();
    assert_eq!(r.status, 507, "{}", r.text());
    assert_eq!(
        c.node(leader).req("DELETE", "/kv/q1", b"").unwrap().status,
        204
    );
    assert_eq!(c.put_eventually(follower, "q3", &value).status, 204);
    for i in 0..8 {
        c.put_eventually(leader, &format!("s{i}"), "1");
    }
    let (_, digest) = c.wait_converged();
    for id in 1..=3u64 {
        assert_eq!(c.node(id).get("q1").unwrap().status, 404, "node {id}");
        assert_eq!(c.node(id).get("q3").unwrap().body.len(), 4000, "node {id}");
    }
    assert_eq!(c.node_mut(follower).terminate(), Some(0));
    c.node_mut(follower).start();
    let (_, after) = c.wait_converged();
    assert_eq!(after, digest);
}

// Intent: a disk that fills up is answered, not crashed on: once the data dirs' free space is
// below --free-disk-reserve-bytes, PUTs get 507 (nothing proposed) while reads and deletes keep
// working, and the node stays up.
#[test]
fn writes_are_refused_with_507_before_the_disk_fills() {
    let mut c = Cluster::new(
        1,
        &[
            "--data-dir",
            "disk/raftexample-1",
            "--free-disk-reserve-bytes",
            "4194304",
            "--wal-segment-size-bytes",
            "1048576",
            "--max-request-body-bytes",
            "200000",
        ],
    );
    let disk = c.dir().join("disk");
    if mount_tmpfs(&disk, "12m").is_none() {
        return;
    }
    let _unmount = Unmount(disk.clone());
    c.node_mut(1).start();
    c.wait_leader();
    let value = "d".repeat(150_000);
    let mut refused = None;
    for i in 0..120 {
        let r = c.node(1).put(&format!("d{i}"), &value).unwrap();
        if r.status == 507 {
            refused = Some((i, r.text()));
            break;
        }
        assert_eq!(r.status, 204, "{}", r.text());
        // The reserve is measured once a second: give it a chance to see the disk.
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
    let (i, sentence) = refused.expect("no write was refused before the disk filled");
    assert!(sentence.contains("--free-disk-reserve-bytes"), "{sentence}");
    assert!(i > 0);
    assert_eq!(c.node(1).get("d0").unwrap().body.len(), 150_000);
    assert_eq!(c.node(1).get(&format!("d{i}")).unwrap().status, 404);
    assert_eq!(c.node(1).req("DELETE", "/kv/d0", b"").unwrap().status, 204);
    assert_eq!(c.node(1).get("d0").unwrap().status, 404);
    assert!(c.node_mut(1).is_running());
}
