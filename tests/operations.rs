//! Operating a cluster (issue "Operating a cluster"): backups streamed from a live member
//! (`GET /snapshot`), `snapshot status` and `snapshot restore` offline, and
//! `--force-new-cluster` after a majority is lost for good. Real processes, real files.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{poll, Cluster};

/// Runs `raftexample <args>` in `dir`.
fn raftexample(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftexample"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run raftexample")
}

/// `GET /snapshot` (with `query`) from `node`, written to `file`; the status code.
fn save_backup(node: &support::Node, query: &str, file: &Path) -> u16 {
    let reply = support::request(
        node.client,
        "GET",
        &format!("/snapshot{query}"),
        &[],
        b"",
        Duration::from_secs(60),
    )
    .expect("GET /snapshot answers");
    if reply.status == 200 {
        std::fs::write(file, &reply.body).unwrap();
    }
    reply.status
}

/// `raftexample ctl snapshot save FILE` through `node`; panics with stderr when it fails.
fn ctl_save(dir: &Path, node: &support::Node, file: &Path) {
    let endpoint = format!("http://{}", node.client);
    let out = raftexample(
        dir,
        &[
            "ctl",
            "--endpoints",
            &endpoint,
            "--command-timeout",
            "30s",
            "snapshot",
            "save",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "ctl snapshot save failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let part = format!("{}.part", file.display());
    assert!(!Path::new(&part).exists(), "no .part is left");
}

/// `snapshot status -w json`, parsed; panics with stderr when it fails.
fn backup_status(dir: &Path, file: &Path) -> serde_json::Value {
    let out = raftexample(
        dir,
        &["snapshot", "status", "-w", "json", file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "snapshot status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("snapshot status -w json is JSON")
}

/// Restores `file` into every (prepared, not started) node of `c`.
fn restore_into(c: &Cluster, file: &Path) {
    let cluster = c.peer_urls.join(",");
    for node in &c.nodes {
        let id = node.id.to_string();
        let out = raftexample(
            c.dir(),
            &[
                "snapshot",
                "restore",
                file.to_str().unwrap(),
                "--id",
                &id,
                "--cluster",
                &cluster,
            ],
        );
        assert!(
            out.status.success(),
            "restore of node {id} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// Intent: a backup taken from a follower with `ctl snapshot save` while writes go on holds
// every write acknowledged
// before it was asked for; restoring the one file on three fresh members gives a new cluster
// with the same digest and key count as the backup, that serves and takes writes, whose
// members refuse the old cluster's peers with 412; and a backup of the quiet source has the
// source's digest.
#[test]
fn a_backup_under_load_restores_into_a_new_cluster() {
    let mut source = Cluster::start(3, &["--snapshot-count", "300"]);
    let leader = source.wait_leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (acked, stop) = (acked.clone(), stop.clone());
            let addr = source.node(1 + w).client;
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(40);
                for i in 0..5_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > end {
                        break;
                    }
                    let (key, value) = (format!("w{w}-{i}"), format!("value-{i}"));
                    let r = support::request(
                        addr,
                        "PUT",
                        &format!("/{key}"),
                        &[],
                        value.as_bytes(),
                        Duration::from_secs(5),
                    );
                    if r.is_ok_and(|r| r.status == 204) {
                        acked.lock().unwrap().insert(key, value);
                    }
                }
            })
        })
        .collect();
    poll(Duration::from_secs(30), "400 acknowledged writes", || {
        (acked.lock().unwrap().len() >= 400).then_some(())
    });
    let before = acked.lock().unwrap().clone();
    let file = source.dir().join("backup.rxb");
    ctl_save(source.dir(), source.node(follower), &file);
    // Writes go on while the backup streams and after it.
    let at_save = acked.lock().unwrap().len();
    poll(Duration::from_secs(30), "writes after the backup", || {
        (acked.lock().unwrap().len() > at_save + 50).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let status = backup_status(source.dir(), &file);
    let keys = status["keys"].as_u64().unwrap();
    assert!(keys >= before.len() as u64, "{status}");
    assert_eq!(status["hash"].as_str().unwrap().len(), 64);

    let mut restored = Cluster::new(3, &[]);
    restore_into(&restored, &file);
    for node in &mut restored.nodes {
        node.start();
    }
    restored.wait_leader();
    for id in 1..=3 {
        let s = restored.node(id).status().unwrap();
        assert_eq!(s["state_digest"], status["state_digest"], "node {id}: {s}");
        assert_eq!(s["keys"].as_u64(), Some(keys), "node {id}");
        assert_ne!(
            s["cluster_id"],
            source.node(1).status().unwrap()["cluster_id"]
        );
    }
    for (key, value) in &before {
        let r = restored.node(2).get(key).unwrap();
        assert_eq!((r.status, r.text()), (200, value.clone()), "key {key}");
    }
    restored.put_eventually(3, "after-restore", "yes");
    assert_eq!(restored.node(1).get("after-restore").unwrap().text(), "yes");
    // A member of the old cluster is refused by the new one.
    let old_id = support::cluster_id_of(([127, 0, 0, 1], source.node(1).peer_port).into());
    let peer = ([127, 0, 0, 1], restored.node(1).peer_port).into();
    let r = support::post_raft_batch(peer, &old_id, 2, 1, &[]).unwrap();
    assert_eq!(r.status, 412, "{}", r.text());

    // The quiet source: a serializable backup from any member has its digest.
    let (_, digest) = source.wait_converged();
    let quiet = source.dir().join("quiet.rxb");
    assert_eq!(
        save_backup(source.node(leader), "?consistency=serializable", &quiet),
        200
    );
    assert_eq!(backup_status(source.dir(), &quiet)["state_digest"], digest);
}

// Intent: a backup with one flipped byte, a truncated one, or any other file is refused by
// `snapshot status` and by `snapshot restore` with a sentence and exit status 1, and a refused
// restore writes nothing; a restore never overwrites a data dir that is not empty.
#[test]
fn a_damaged_backup_is_refused_and_a_restore_never_overwrites() {
    let c = Cluster::start(1, &[]);
    for i in 0..30 {
        c.put_eventually(1, &format!("k{i}"), &"x".repeat(100));
    }
    let good = c.dir().join("good.rxb");
    assert_eq!(save_backup(c.node(1), "", &good), 200);
    let bytes = std::fs::read(&good).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("flipped", flipped, "damaged"),
        ("truncated", bytes[..bytes.len() - 10].to_vec(), "truncated"),
        (
            "trailing",
            [bytes.clone(), vec![0]].concat(),
            "after its SHA-256",
        ),
        (
            "foreign",
            b"not a backup at all".to_vec(),
            "not a raftexample backup",
        ),
    ];
    let cluster = "http://127.0.0.1:1,http://127.0.0.1:2";
    for (name, content, says) in cases {
        let file = work.path().join(name);
        std::fs::write(&file, content).unwrap();
        let path = file.to_str().unwrap();
        let out = raftexample(work.path(), &["snapshot", "status", path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
        let out = raftexample(
            work.path(),
            &[
                "snapshot",
                "restore",
                path,
                "--id",
                "1",
                "--cluster",
                cluster,
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
        assert!(!work.path().join("raftexample-1").exists(), "{name}");
        assert!(!work.path().join("raftexample-1-snap").exists(), "{name}");
    }
    let path = good.to_str().unwrap();
    let args = [
        "snapshot",
        "restore",
        path,
        "--id",
        "1",
        "--cluster",
        cluster,
    ];
    // What an interrupted restore left under its temporary names is replaced.
    std::fs::create_dir(work.path().join("raftexample-1-snap.restoring")).unwrap();
    std::fs::write(work.path().join("raftexample-1-snap.restoring/junk"), b"x").unwrap();
    assert!(raftexample(work.path(), &args).status.success());
    assert!(!work.path().join("raftexample-1-snap.restoring").exists());
    assert!(!work.path().join("raftexample-1.restoring").exists());
    // The member's data is its own: 0700 dirs, 0600 files, whatever the caller's umask.
    use std::os::unix::fs::PermissionsExt;
    for dir in ["raftexample-1", "raftexample-1-snap"] {
        let dir = work.path().join(dir);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
    }
    let wal: Vec<PathBuf> = std::fs::read_dir(work.path().join("raftexample-1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let out = raftexample(work.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not empty"), "{err}");
    let after: Vec<PathBuf> = std::fs::read_dir(work.path().join("raftexample-1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(wal, after, "the refused restore changed nothing");
}

// Intent: without a leader, a linearizable backup is refused with 503 (known not taken) and a
// serializable one is served by the lone member.
#[test]
fn a_member_without_a_leader_serves_only_serializable_backups() {
    let mut c = Cluster::start(3, &[]);
    c.put_eventually(1, "k", "v");
    c.node_mut(2).kill();
    c.node_mut(3).kill();
    poll(Duration::from_secs(20), "node 1 to lose its leader", || {
        let s = c.node(1).status()?;
        (s["leader"].as_u64()? == 0).then_some(())
    });
    let file = c.dir().join("b.rxb");
    assert_eq!(save_backup(c.node(1), "", &file), 503);
    assert!(!file.exists());
    assert_eq!(
        save_backup(c.node(1), "?consistency=serializable", &file),
        200
    );
    assert_eq!(backup_status(c.dir(), &file)["keys"], 1);
    let r = c
        .node(1)
        .req("GET", "/snapshot?consistency=eventual", b"")
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let r = c.node(1).req("PUT", "/snapshot", b"x").unwrap();
    assert_eq!(r.status, 405, "{}", r.text());
}

// Intent: after two of three members are lost for good, `--force-new-cluster` on the survivor
// keeps every acknowledged write, makes it the only voter and serves; two new members added
// under new IDs catch up and hold every write; the old IDs are refused (410) when they come
// back; a restart with the flag still set does not force again.
#[test]
fn force_new_cluster_recovers_a_lost_majority_without_losing_writes() {
    let mut c = Cluster::start(3, &["--snapshot-count", "50"]);
    let mut acked = Vec::new();
    for i in 0..120 {
        let via = 1 + i % 3;
        c.put_eventually(via, &format!("k{i}"), &format!("v{i}"));
        acked.push(i);
    }
    // Two members are gone for good (killed; their data stays on disk for the last check).
    c.node_mut(2).kill();
    c.node_mut(3).kill();
    c.node_mut(1).kill();
    c.node_mut(1).args.push("--force-new-cluster".into());
    c.node_mut(1).start();
    let s = poll(Duration::from_secs(20), "the forced member to lead", || {
        let s = c.node(1).status()?;
        (s["role"] == "leader").then_some(s)
    });
    assert_eq!(s["voters"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["removed_ids"], serde_json::json!([2, 3]), "{s}");
    assert!(c.node(1).log().contains("FORCING A NEW CLUSTER"));
    c.put_eventually(1, "after-force", "yes");
    for i in &acked {
        assert_eq!(
            c.node(1).get(&format!("k{i}")).unwrap().text(),
            format!("v{i}")
        );
    }
    // Two new members, one at a time, the raftexample way (their flags are node 1's, without
    // the force).
    c.node_mut(1).args.pop();
    for _ in 0..2 {
        let (id, url) = c.prepare_joiner(&[]);
        let r = c
            .node(1)
            .req("POST", &format!("/{id}"), url.as_bytes())
            .unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        c.node_mut(id).start();
        poll(
            Duration::from_secs(30),
            "the new member to be a voter",
            || {
                let s = c.node(1).status()?;
                let voters = s["voters"].as_array()?;
                voters.iter().any(|v| v["id"] == id).then_some(())
            },
        );
    }
    for id in [4, 5] {
        for i in &acked {
            let r = c.node(id).get(&format!("k{i}")).unwrap();
            assert_eq!((r.status, r.text()), (200, format!("v{i}")), "node {id}");
        }
        assert_eq!(c.node(id).get("after-force").unwrap().text(), "yes");
    }
    // A restart with the flag still set does not force again: the cluster keeps 3 voters.
    c.node_mut(1).args.push("--force-new-cluster".into());
    c.node_mut(1).terminate();
    c.node_mut(1).start();
    c.wait_leader();
    let s = c.node(1).status().unwrap();
    assert_eq!(s["voters"].as_array().unwrap().len(), 3, "{s}");
    assert!(c.node(1).log().contains("already forced a new cluster"));
    c.put_eventually(4, "after-restart", "yes");
    // An old member that comes back is refused: its ID was removed.
    c.node_mut(2).start();
    assert_eq!(c.node_mut(2).wait_exit(Duration::from_secs(30)), Some(1));
    assert!(c.node(2).log().contains("removed"), "{}", c.node(2).log());
}

// Intent: `--force-new-cluster` is refused with a sentence where it cannot work: with --join,
// and on a member with no data (at once, not after waiting for the other members).
#[test]
fn force_new_cluster_is_refused_without_data_or_with_join() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_ports(4);
    // Three members, none running: the refusal comes at once, without waiting for them.
    let cluster = format!(
        "http://127.0.0.1:{},http://127.0.0.1:{},http://127.0.0.1:{}",
        port[0], port[2], port[3]
    );
    let client = port[1].to_string();
    let base = [
        "--cluster",
        &cluster,
        "--port",
        &client,
        "--force-new-cluster",
    ];
    let out = raftexample(dir.path(), &[&base[..], &["--join"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exclude each other"));
    let started = Instant::now();
    let out = raftexample(dir.path(), &base);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("holds no WAL"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!dir
        .path()
        .join("raftexample-1")
        .join("0000000000000000-0000000000000000.wal")
        .exists());
}

// Intent: a member whose majority is alive is never forced: it would remove live members and
// lose what they committed while it was down. It exits 1 with a sentence, the live members
// go on, and it rejoins them when started without the flag.
#[test]
fn force_new_cluster_is_refused_while_other_members_answer() {
    let mut c = Cluster::start(3, &[]);
    c.put_eventually(2, "before", "1");
    c.node_mut(1).kill();
    c.put_eventually(2, "while-down", "1");
    c.node_mut(1).args.push("--force-new-cluster".into());
    c.node_mut(1).start();
    assert_eq!(c.node_mut(1).wait_exit(Duration::from_secs(30)), Some(1));
    let log = c.node(1).log();
    assert!(log.contains("is for a majority lost for good"), "{log}");
    assert!(!c.dir().join("raftexample-1/force-new-cluster").exists());
    c.node_mut(1).args.pop();
    c.node_mut(1).start();
    c.wait_leader();
    poll(Duration::from_secs(20), "node 1 to catch up", || {
        let r = c.node(1).get("while-down").ok()?;
        (r.status == 200).then_some(())
    });
    for id in 1..=3 {
        assert!(c.node_mut(id).is_running(), "node {id}");
    }
}

// Intent: the force commits what reached only the survivor: a write its leader appended but
// could not commit (answered 504, outcome unknown) once both followers died is applied after
// the force, as etcd does.
#[test]
fn force_new_cluster_commits_an_entry_that_reached_only_the_survivor() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    c.put_eventually(leader, "committed", "1");
    for id in (1..=3).filter(|id| *id != leader) {
        c.node_mut(id).kill();
    }
    let r = c.node(leader).put("only-here", "1").unwrap();
    assert_eq!(
        r.status,
        504,
        "the leader appended it but could not commit: {}",
        r.text()
    );
    c.node_mut(leader).kill();
    c.node_mut(leader).args.push("--force-new-cluster".into());
    c.node_mut(leader).start();
    poll(Duration::from_secs(20), "the forced member to lead", || {
        let s = c.node(leader).status()?;
        (s["role"] == "leader").then_some(())
    });
    assert_eq!(c.node(leader).get("only-here").unwrap().text(), "1");
    assert_eq!(c.node(leader).get("committed").unwrap().text(), "1");
}

// Intent: backups asked for while a snapshot is already being made (by another backup) are
// each answered with a snapshot at or above their own applied index, instead of waiting for
// one that is never made (they used to get 503 after two minutes).
#[test]
fn backups_during_a_snapshot_in_flight_are_all_answered() {
    let c = Cluster::start(1, &[]);
    // 60 MB, so that a snapshot takes long enough for the second backup to find it running.
    let value = "v".repeat(200_000);
    for i in 0..300 {
        c.put_eventually(1, &format!("big{i}"), &value);
    }
    let addr = c.node(1).client;
    let started = Instant::now();
    let backups: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                let mut applied_before = 0;
                if i == 1 {
                    // The second asks once the first's snapshot is under way and a write
                    // moved the applied index past it.
                    std::thread::sleep(Duration::from_millis(30));
                    let r =
                        support::request(addr, "PUT", "/late", &[], b"1", Duration::from_secs(10))
                            .unwrap();
                    assert_eq!(r.status, 204);
                    applied_before = r.header("x-raft-index").unwrap().parse().unwrap();
                }
                let r =
                    support::request(addr, "GET", "/snapshot", &[], b"", Duration::from_secs(60))
                        .unwrap();
                let index: u64 = r.header("x-raft-index").map_or(0, |i| i.parse().unwrap());
                (r.status, index, applied_before, r.body.len())
            })
        })
        .collect();
    let answers: Vec<_> = backups.into_iter().map(|b| b.join().unwrap()).collect();
    for (status, index, applied_before, len) in &answers {
        assert_eq!(*status, 200, "{answers:?}");
        assert!(index >= applied_before && *len > 60_000_000, "{answers:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

// Intent: a backup client that stops reading cannot hold a member's backup slots for ever.
// Two clients ask for a backup larger than the socket buffers and never read it: a third
// backup is refused with 503 (at most two stream at once) while the member goes on serving
// writes, and once the stalled streams' send timeout (30 s) has passed a backup is served
// again, whole, while the stalled connections are still open.
#[test]
fn a_backup_client_that_stops_reading_gives_up_its_slot() {
    use std::io::Write;
    let mut c = Cluster::start(1, &[]);
    c.wait_leader();
    // About 40 MB of state: more than the member's send buffer and queue for one connection.
    let value = "v".repeat(1_000_000);
    for i in 0..40 {
        c.put_eventually(1, &format!("big-{i}"), &value);
    }
    let node = c.node(1);
    let stalled: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(node.client).unwrap();
            // A fixed small receive buffer (no autotuning, which may grow it to tens of MB):
            // the member's stream must block on this client.
            let small: libc::c_int = 4096;
            // SAFETY: a valid socket and a c_int option of the size given.
            let set = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&small as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(set, 0, "SO_RCVBUF");
            s.write_all(b"GET /snapshot HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            // Its stream has begun (it holds a slot), and then it reads nothing more.
            let mut head = [0u8; 12];
            std::io::Read::read_exact(&mut s, &mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200", "the stalled backups are served");
            s
        })
        .collect();
    let dir = c.dir();
    poll(Duration::from_secs(30), "a third backup refused", || {
        (save_backup(node, "", &dir.join("refused.rxb")) == 503).then_some(())
    });
    node.put("during-stall", "yes").expect("writes go on");
    poll(Duration::from_secs(90), "a backup served again", || {
        (save_backup(node, "", &dir.join("served.rxb")) == 200).then_some(())
    });
    let status = backup_status(dir, &dir.join("served.rxb"));
    assert!(status["keys"].as_u64().unwrap() >= 41, "{status}");
    drop(stalled);
}
