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
        // mode=0700: a data dir others may write to is refused (a tmpfs root is 1777).
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
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

/// Free bytes on the filesystem of `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills one struct we own; `path` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Grows or shrinks the filler file in `dir` so that about `leave` bytes stay free (0: until
/// the filesystem refuses to give more).
fn fill_leaving(dir: &std::path::Path, leave: u64) {
    use std::io::Write;
    let filler = dir.join("filler");
    let _ = std::fs::remove_file(&filler);
    let want = free_bytes(dir).saturating_sub(leave);
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0;
    while written < want {
        let n = chunk.len().min((want - written) as usize);
        if f.write_all(&chunk[..n]).is_err() {
            break; // the disk is full
        }
        written += n as u64;
    }
    let _ = f.sync_all();
}

// Intent: the NOSPACE alarm, as an operator meets it with curl. Node 3's data dirs sit on a
// 64 MiB tmpfs with an 8 MiB reserve (floor 2 MiB).
// - Below the reserve, node 3 raises the alarm through the log: every member then refuses
//   PUTs with 507 and a sentence naming member 3, /health says why, and reads and deletes work.
// - Below the floor, node 3 takes no appends (507 to the leader, counted): it stays up, serves
//   serializable reads and lags, while nodes 1 and 2 commit deletes.
// - Once space is back the alarm clears by itself, node 3 catches up and replicas converge.
// - Restarted on a completely full disk, node 3 starts, serves reads and refuses writes with a
//   sentence; freeing space lets it catch up again.
#[test]
fn a_nospace_alarm_refuses_writes_everywhere_and_a_full_member_lags_without_crashing() {
    let mut c = Cluster::new(
        3,
        &[
            "--free-disk-reserve-bytes",
            "8388608",
            "--wal-segment-size-bytes",
            "1048576",
        ],
    );
    let disk = c.dir().join("disk3");
    if mount_tmpfs(&disk, "64m").is_none() {
        return;
    }
    let _unmount = Unmount(disk.clone());
    c.node_mut(3)
        .args
        .extend(["--data-dir".to_string(), "disk3/raftexample-3".to_string()]);
    for id in 1..=3 {
        c.node_mut(id).start();
    }
    c.wait_leader();
    for i in 0..5 {
        c.put_eventually(1, &format!("k{i}"), "v");
    }

    // Below the reserve: the alarm, on every member.
    fill_leaving(&disk, 5 * 1024 * 1024);
    // Each member refuses once it has applied the alarm: a follower may apply it a
    // heartbeat after the leader.
    let refused_on = |id: u64| {
        support::poll(
            Duration::from_secs(20),
            &format!("a PUT refused by the alarm on node {id}"),
            || {
                let r = c.node(id).put("grow", "v").ok()?;
                (r.status == 507).then(|| r.text())
            },
        )
    };
    let refusal = refused_on(1);
    assert!(
        refusal.contains("NOSPACE") && refusal.contains("[3]"),
        "{refusal}"
    );
    let refusal = refused_on(2);
    assert!(refusal.contains("NOSPACE"), "{refusal}");
    let health = c.node(1).req("GET", "/health", b"").unwrap();
    assert_eq!(health.status, 503);
    assert!(health.text().contains("NOSPACE"), "{}", health.text());
    assert_eq!(c.node(2).req("DELETE", "/kv/k0", b"").unwrap().status, 204);
    assert_eq!(c.node(1).get("k0").unwrap().status, 404);
    assert_eq!(c.node(1).get("k1").unwrap().text(), "v");

    // Below the floor: node 3 lags but stays up and serves serializable reads.
    fill_leaving(&disk, 1024 * 1024);
    support::poll(Duration::from_secs(20), "appends refused by node 3", || {
        let _ = c.node(1).req("DELETE", "/kv/k1", b"");
        let _ = c.node(1).req("DELETE", "/kv/k2", b"");
        let refused = c.node(3).status()?["peer_refused"]["disk_full"].as_u64()?;
        (refused > 0).then_some(())
    });
    assert_eq!(c.node(1).req("DELETE", "/kv/k3", b"").unwrap().status, 204);
    let local = c
        .node(3)
        .req("GET", "/kv/k4?consistency=serializable", b"")
        .unwrap();
    assert_eq!(local.status, 200, "{}", local.text());
    let lagging = c.node(3).status().unwrap()["applied_index"]
        .as_u64()
        .unwrap();
    let ahead = c.node(1).status().unwrap()["applied_index"]
        .as_u64()
        .unwrap();
    assert!(lagging < ahead, "node 3 at {lagging}, node 1 at {ahead}");
    assert!(c.node_mut(3).is_running());

    // Space back: the alarm clears by itself and node 3 catches up.
    std::fs::remove_file(disk.join("filler")).unwrap();
    support::poll(Duration::from_secs(20), "the alarm to clear", || {
        (c.node(1).put("grow", "v").ok()?.status == 204).then_some(())
    });
    c.wait_converged();

    // Restarted on a full disk: it starts, serves reads, refuses writes, and recovers.
    assert_eq!(c.node_mut(3).terminate(), Some(0));
    fill_leaving(&disk, 0);
    c.node_mut(3).start();
    let read = support::poll(Duration::from_secs(20), "a read on the full node", || {
        let r = c
            .node(3)
            .req("GET", "/kv/k4?consistency=serializable", b"")
            .ok()?;
        (r.status == 200).then_some(r)
    });
    assert_eq!(read.text(), "v");
    let r = c.node(3).put("more", "v").unwrap();
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(c.node_mut(3).is_running(), "{}", c.node(3).log());
    std::fs::remove_file(disk.join("filler")).unwrap();
    support::poll(
        Duration::from_secs(20),
        "writes after space is back",
        || (c.node(3).put("more", "v").ok()?.status == 204).then_some(()),
    );
    c.wait_converged();
}

// Intent: a snapshot received from the leader is staged on disk before raft sees it, so a
// follower whose snapshot disk is full answers 507 and stays up (it used to abort on "cannot
// save a received snapshot"); the leader sends it again, and once space is back the follower
// installs it and converges.
#[test]
fn a_received_snapshot_that_cannot_be_saved_is_retried_not_fatal() {
    let flags = [
        "--snapshot-count",
        "10",
        "--snapshot-catchup-entries",
        "0",
        "--free-disk-reserve-bytes",
        "0",
    ];
    let mut c = Cluster::new(3, &flags);
    let snap_dir = c.dir().join("raftexample-3-snap");
    if mount_tmpfs(&snap_dir, "16k").is_none() {
        return;
    }
    let _unmount = Unmount(snap_dir.clone());
    for id in 1..=3 {
        c.node_mut(id).start();
    }
    c.wait_leader();
    assert_eq!(c.node_mut(3).terminate(), Some(0));
    let value = "s".repeat(2000);
    for i in 0..40 {
        c.put_eventually(1, &format!("s{i}"), &value);
    }
    c.node_mut(3).start();
    support::poll(Duration::from_secs(30), "a refused snapshot", || {
        let refused = c.node(3).status()?["peer_refused"]["disk_full"].as_u64()?;
        (refused > 0).then_some(())
    });
    assert!(c.node_mut(3).is_running(), "{}", c.node(3).log());
    remount(&snap_dir, "8m");
    c.wait_converged();
    let r = c
        .node(3)
        .req("GET", "/kv/s39?consistency=serializable", b"")
        .unwrap();
    assert_eq!((r.status, r.body.len()), (200, 2000));
}

// Intent: `PUT /members/{id}` changes a member's peer URL through the log, as etcd's `member
// update` does: every member lists and uses the new URL once applied, and the member, restarted
// with its old `--cluster` flags, listens on the stored new URL and serves. A URL of another
// member is 409, garbage is 400, a non-member is 409; none changes anything.
#[test]
fn a_members_peer_url_is_updated_through_the_log() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let f = if leader == 3 { 2 } else { 3 };
    let new_url = format!("http://127.0.0.1:{}", support::free_ports(1)[0]);
    let other = c.peer_urls[(leader - 1) as usize].clone();
    let path = format!("/members/{f}");
    let r = c.node(leader).req("PUT", &path, other.as_bytes()).unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    let r = c.node(leader).req("PUT", &path, b"not a url").unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let r = c
        .node(leader)
        .req("PUT", "/members/9", new_url.as_bytes())
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    let r = c
        .node(leader)
        .req("PUT", &path, new_url.as_bytes())
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    support::poll(
        Duration::from_secs(20),
        "every member to list the new URL",
        || {
            (1..=3)
                .all(|id| {
                    c.node(id).status().is_some_and(|s| {
                        let voters = s["voters"].as_array().cloned().unwrap_or_default();
                        voters
                            .iter()
                            .any(|v| v["id"] == f && v["url"] == new_url.as_str())
                    })
                })
                .then_some(())
        },
    );
    assert_eq!(c.node_mut(f).terminate(), Some(0));
    c.node_mut(f).start();
    let leader = c.wait_leader();
    c.put_eventually(leader, "after-move", "v");
    support::poll(
        Duration::from_secs(20),
        "the moved member to catch up",
        || {
            let r = c
                .node(f)
                .req("GET", "/kv/after-move?consistency=serializable", b"")
                .ok()?;
            (r.status == 200).then_some(())
        },
    );
    assert!(
        c.node(f).log().contains(&new_url),
        "the node did not log its new URL"
    );
}

// Intent: a disk that fills up under a backup or a restore leaves nothing half-written: `ctl
// snapshot save` onto a full disk exits 1 with no FILE and no FILE.part, and a restore onto
// one exits 1 with neither data dir nor its temporary names left (so a later restore, or a
// start, never finds a partial member).
#[test]
fn a_full_disk_under_a_backup_or_a_restore_leaves_nothing_behind() {
    let c = Cluster::start(1, &[]);
    let value = "v".repeat(100_000);
    for i in 0..30 {
        c.put_eventually(1, &format!("k{i}"), &value);
    }
    let full = c.dir().join("full");
    let Some(()) = mount_tmpfs(&full, "1m") else {
        return;
    };
    let _unmount = Unmount(full.clone());
    let ctl = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_raftexample"))
            .args([
                "ctl",
                "--endpoints",
                &format!("http://{}", c.node(1).client),
            ])
            .args(["snapshot", "save"])
            .arg(file)
            .output()
            .unwrap()
    };
    let out = ctl(&full.join("b.rxb"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !full.join("b.rxb").exists() && !full.join("b.rxb.part").exists(),
        "{err}"
    );

    let good = c.dir().join("good.rxb");
    assert!(ctl(&good).status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftexample"))
        .args(["snapshot", "restore"])
        .arg(&good)
        .args(["--id", "1", "--cluster", "http://127.0.0.1:1", "--data-dir"])
        .arg(full.join("wal"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let left: Vec<_> = std::fs::read_dir(&full)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "a refused restore left {left:?}: {err}");
}
