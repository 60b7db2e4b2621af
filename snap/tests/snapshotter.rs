//! Crash-shaped tests of the `snap` crate on real files in temp dirs: save/load round trip,
//! corrupt files renamed `.broken`, unmarked files skipped, purge, temp and foreign files.

use std::fs;
use std::path::{Path, PathBuf};

use raft_proto::eraftpb::ConfState;
use snap::{Error, Snapshot, SnapshotMetadata, Snapshotter, DEFAULT_KEEP};
use tempfile::TempDir;

/// A snapshot at (index, term) whose data names it, with a three-voter conf state.
fn snapshot(index: u64, term: u64) -> Snapshot {
    let conf_state = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![7],
        ..Default::default()
    };
    let metadata = SnapshotMetadata {
        index,
        term,
        conf_state: Some(conf_state).into(),
        ..Default::default()
    };
    Snapshot {
        metadata: Some(metadata).into(),
        data: format!("state machine at index {index} term {term}")
            .into_bytes()
            .into(),
        ..Default::default()
    }
}

fn setup() -> (TempDir, Snapshotter) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let snapshotter = Snapshotter::new(&tmp.path().join("snap")).expect("new");
    (tmp, snapshotter)
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    names
}

fn broken(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.broken", path.display()))
}

#[test]
fn save_then_load_round_trips() {
    // Intent: what save writes, load, list and load_newest_available give back unchanged,
    // under the documented file name.
    let (_tmp, snapshotter) = setup();
    let big = {
        let mut s = snapshot(100, 4);
        s.data = (0..1_000_000u32)
            .map(|i| i as u8)
            .collect::<Vec<u8>>()
            .into();
        s
    };
    let path = snapshotter.save(&big).expect("save");
    assert_eq!(
        path,
        snapshotter
            .dir()
            .join("0000000000000004-0000000000000064.snap")
    );
    assert_eq!(snapshotter.load(100, 4).expect("load"), big);
    assert_eq!(snapshotter.list().expect("list"), vec![(100, 4)]);
    let newest = snapshotter
        .load_newest_available(&[(0, 0), (100, 4)])
        .expect("recover");
    assert_eq!(newest, Some(big));
    assert_eq!(
        file_names(snapshotter.dir()),
        vec!["0000000000000004-0000000000000064.snap"]
    );
}

#[test]
fn empty_data_round_trips() {
    // Intent: a snapshot with no data bytes (an empty state machine) is valid.
    let (_tmp, snapshotter) = setup();
    let mut s = snapshot(1, 1);
    s.data = Default::default();
    snapshotter.save(&s).expect("save");
    assert_eq!(snapshotter.load(1, 1).expect("load"), s);
}

#[test]
fn save_rejects_index_zero() {
    // Intent: an empty snapshot (index 0) is refused and leaves no file behind.
    let (_tmp, snapshotter) = setup();
    assert!(matches!(
        snapshotter.save(&Snapshot::default()),
        Err(Error::EmptySnapshot)
    ));
    assert!(matches!(
        snapshotter.save(&snapshot(0, 3)),
        Err(Error::EmptySnapshot)
    ));
    assert!(file_names(snapshotter.dir()).is_empty());
}

#[test]
fn new_creates_missing_dirs_and_reuses_existing() {
    // Intent: new creates nested missing directories, accepts an existing one with its
    // files, and refuses a path that is a regular file.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("a/b/c");
    let snapshotter = Snapshotter::new(&dir).expect("create");
    assert!(dir.is_dir());
    snapshotter.save(&snapshot(3, 1)).expect("save");
    let again = Snapshotter::new(&dir).expect("reopen");
    assert_eq!(again.list().expect("list"), vec![(3, 1)]);
    let file = tmp.path().join("plain");
    fs::write(&file, b"x").expect("write");
    assert!(matches!(Snapshotter::new(&file), Err(Error::Io { .. })));
}

#[test]
fn load_of_absent_snapshot_is_no_snapshot() {
    // Intent: asking for a file that is not there gives NoSnapshot, and an empty directory
    // recovers to None.
    let (_tmp, snapshotter) = setup();
    assert!(matches!(snapshotter.load(5, 1), Err(Error::NoSnapshot)));
    assert_eq!(
        snapshotter
            .load_newest_available(&[(5, 1)])
            .expect("recover"),
        None
    );
}

#[test]
fn list_orders_newest_first_by_index_then_term() {
    // Intent: list sorts by index, then term, newest first, whatever the save order.
    let (_tmp, snapshotter) = setup();
    for (index, term) in [(10, 2), (30, 1), (10, 3), (0x1_0000, 1), (20, 5)] {
        snapshotter.save(&snapshot(index, term)).expect("save");
    }
    assert_eq!(
        snapshotter.list().expect("list"),
        vec![(0x1_0000, 1), (30, 1), (20, 5), (10, 3), (10, 2)]
    );
}

/// One way of damaging the newest file, by name.
type Damage = (&'static str, fn(&mut Vec<u8>));

fn damages() -> Vec<Damage> {
    // Offsets: header 0..24 (magic 0..8, version 8..12, lengths 12..24), metadata from 24,
    // data after it, CRC in the last 4 bytes.
    vec![
        ("flip in magic", |b| b[0] ^= 0x01),
        ("flip in version", |b| b[9] ^= 0x80),
        ("flip in metadata length", |b| b[12] ^= 0x04),
        ("flip in data length", |b| b[16] ^= 0x01),
        ("huge data length", |b| b[23] = 0xff),
        ("flip in metadata", |b| b[26] ^= 0x10),
        ("flip in data", |b| {
            let at = b.len() - 10;
            b[at] ^= 0x01
        }),
        ("flip in CRC", |b| {
            let at = b.len() - 1;
            b[at] ^= 0x40
        }),
        ("truncated by one byte", |b| {
            b.pop();
        }),
        ("truncated to half", |b| b.truncate(b.len() / 2)),
        ("truncated inside header", |b| b.truncate(10)),
        ("empty file", |b| b.clear()),
        ("trailing garbage", |b| b.extend_from_slice(b"junk")),
        ("zeroed", |b| b.iter_mut().for_each(|x| *x = 0)),
    ]
}

#[test]
fn corrupt_newest_is_renamed_broken_and_older_loads() {
    // Intent: for each kind of damage to the newest file, recovery renames it `.broken`,
    // reports it, and returns the older intact snapshot.
    for (what, damage) in damages() {
        let (_tmp, snapshotter) = setup();
        let older = snapshot(10, 1);
        snapshotter.save(&older).expect("save older");
        let newest = snapshotter.save(&snapshot(20, 2)).expect("save newest");
        let mut bytes = fs::read(&newest).expect("read");
        damage(&mut bytes);
        fs::write(&newest, &bytes).expect("write damaged");

        assert!(
            matches!(snapshotter.load(20, 2), Err(Error::Corrupt { ref file, .. }) if *file == newest),
            "{what}: load must report Corrupt"
        );
        let recovered = snapshotter.recover(&[(10, 1), (20, 2)]).expect(what);
        assert_eq!(recovered.snapshot, Some(older.clone()), "{what}");
        assert_eq!(recovered.broken, vec![broken(&newest)], "{what}");
        assert!(!newest.exists(), "{what}: the corrupt file must be renamed");
        assert_eq!(
            fs::read(broken(&newest)).expect("broken kept"),
            bytes,
            "{what}"
        );
        assert_eq!(snapshotter.list().expect("list"), vec![(10, 1)], "{what}");
        // A second recovery finds the same answer without touching anything.
        assert_eq!(
            snapshotter
                .load_newest_available(&[(10, 1), (20, 2)])
                .expect(what),
            Some(older)
        );
    }
}

#[test]
fn all_corrupt_recovers_to_none() {
    // Intent: when every marked file is corrupt, each is renamed and the answer is None.
    let (_tmp, snapshotter) = setup();
    let paths: Vec<PathBuf> = [(1, 1), (2, 1)]
        .iter()
        .map(|&(i, t)| snapshotter.save(&snapshot(i, t)).expect("save"))
        .collect();
    for path in &paths {
        fs::write(path, b"").expect("empty");
    }
    let recovered = snapshotter.recover(&[(1, 1), (2, 1)]).expect("recover");
    assert_eq!(recovered.snapshot, None);
    assert_eq!(recovered.broken, vec![broken(&paths[1]), broken(&paths[0])]);
}

#[test]
fn file_with_metadata_not_matching_its_name_is_corrupt() {
    // Intent: a valid file under another snapshot's name (e.g. copied by hand) is not
    // trusted: it is corrupt and recovery falls back to the older one.
    let (_tmp, snapshotter) = setup();
    let older = snapshot(10, 1);
    snapshotter.save(&older).expect("save");
    let real = snapshotter.save(&snapshot(20, 2)).expect("save");
    let fake = snapshotter
        .dir()
        .join("0000000000000002-0000000000000021.snap");
    fs::rename(&real, &fake).expect("rename");
    assert!(matches!(
        snapshotter.load(0x21, 2),
        Err(Error::Corrupt { .. })
    ));
    let newest = snapshotter
        .load_newest_available(&[(10, 1), (0x21, 2)])
        .expect("recover");
    assert_eq!(newest, Some(older));
    assert!(broken(&fake).exists());
}

#[test]
fn snapshot_without_wal_mark_is_skipped_and_left_in_place() {
    // Intent: a newer file whose (index, term) the WAL has no mark for is not used and not
    // touched; the newest marked one is returned.
    let (_tmp, snapshotter) = setup();
    let marked = snapshot(10, 1);
    snapshotter.save(&marked).expect("save");
    let unmarked_path = snapshotter.save(&snapshot(20, 1)).expect("save");
    // Same index, other term: not the same snapshot.
    snapshotter.save(&snapshot(30, 2)).expect("save");
    let recovered = snapshotter.recover(&[(10, 1), (30, 1)]).expect("recover");
    assert_eq!(recovered.snapshot, Some(marked));
    assert_eq!(recovered.unmarked, vec![(30, 2), (20, 1)]);
    assert!(recovered.broken.is_empty());
    assert!(unmarked_path.exists());
    assert_eq!(snapshotter.list().expect("list").len(), 3);
    assert_eq!(
        snapshotter.load_newest_available(&[]).expect("no marks"),
        None
    );
}

#[test]
fn crash_between_snap_file_and_wal_mark_recovers_older() {
    // Intent: the node saved snapshot 2's file but crashed before writing its WAL mark; on
    // restart (a fresh Snapshotter, the WAL's marks holding only snapshot 1) recovery
    // returns snapshot 1, and saving snapshot 2 again afterwards works.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("snap");
    let first = snapshot(100, 3);
    let second = snapshot(200, 3);
    {
        let before_crash = Snapshotter::new(&dir).expect("new");
        before_crash.save(&first).expect("save first");
        // WAL mark (100, 3) written here.
        before_crash.save(&second).expect("save second");
        // crash: WAL mark (200, 3) never written.
    }
    let wal_marks = [(0, 0), (100, 3)];
    let restarted = Snapshotter::new(&dir).expect("reopen");
    assert_eq!(
        restarted
            .load_newest_available(&wal_marks)
            .expect("recover"),
        Some(first)
    );
    restarted.save(&second).expect("save second again");
    let wal_marks = [(0, 0), (100, 3), (200, 3)];
    assert_eq!(
        restarted
            .load_newest_available(&wal_marks)
            .expect("recover"),
        Some(second)
    );
}

#[test]
fn purge_keeps_newest_n() {
    // Intent: purge deletes all but the newest `keep` files, returns what it deleted, keeps
    // `.broken` and foreign files, and is a no-op once nothing is left to delete.
    let (_tmp, snapshotter) = setup();
    for index in 1..=8 {
        snapshotter.save(&snapshot(index * 10, 1)).expect("save");
    }
    fs::write(
        snapshotter
            .dir()
            .join("0000000000000001-0000000000000001.snap.broken"),
        b"x",
    )
    .expect("broken");
    fs::write(snapshotter.dir().join("notes.txt"), b"x").expect("foreign");
    let mut deleted = snapshotter.purge(DEFAULT_KEEP).expect("purge");
    deleted.sort();
    let expected: Vec<PathBuf> = [10, 20, 30]
        .iter()
        .map(|&i| {
            snapshotter
                .dir()
                .join(format!("0000000000000001-{i:016x}.snap"))
        })
        .collect();
    assert_eq!(deleted, expected);
    assert_eq!(
        snapshotter.list().expect("list"),
        vec![(80, 1), (70, 1), (60, 1), (50, 1), (40, 1)]
    );
    assert!(snapshotter.purge(DEFAULT_KEEP).expect("again").is_empty());
    assert_eq!(snapshotter.purge(1).expect("keep 1").len(), 4);
    assert_eq!(snapshotter.list().expect("list"), vec![(80, 1)]);
    assert_eq!(
        file_names(snapshotter.dir()).len(),
        3,
        "snap, .broken and notes.txt remain"
    );
}

#[test]
fn stale_temp_files_are_ignored_by_load_and_removed_by_purge() {
    // Intent: a temp file left by a crash mid-save (even one newer than every snapshot) is
    // never loaded or listed, and purge removes it.
    let (_tmp, snapshotter) = setup();
    let good = snapshot(10, 1);
    snapshotter.save(&good).expect("save");
    let temp = snapshotter
        .dir()
        .join("0000000000000001-0000000000000014.snap.tmp");
    fs::write(&temp, b"half a snapshot").expect("temp");
    assert_eq!(snapshotter.list().expect("list"), vec![(10, 1)]);
    let newest = snapshotter
        .load_newest_available(&[(10, 1), (20, 1)])
        .expect("recover");
    assert_eq!(newest, Some(good));
    assert!(temp.exists(), "load must not touch temp files");
    assert_eq!(
        snapshotter.purge(DEFAULT_KEEP).expect("purge"),
        vec![temp.clone()]
    );
    assert!(!temp.exists());
    // A save over a leftover temp file of the same name still succeeds.
    fs::write(&temp, b"leftover").expect("temp");
    snapshotter.save(&snapshot(20, 1)).expect("save over temp");
    assert!(!temp.exists());
    assert_eq!(snapshotter.list().expect("list"), vec![(20, 1), (10, 1)]);
}

#[test]
fn garbage_file_names_are_ignored() {
    // Intent: files and directories whose names are not exactly ours are never listed,
    // loaded, renamed or purged.
    let (_tmp, snapshotter) = setup();
    let good = snapshot(10, 1);
    snapshotter.save(&good).expect("save");
    let garbage = [
        "garbage.snap",
        "0000000000000001-00000000000000ff.snapx",
        "0000000000000001-00000000000000FF.snap",
        "1-ff.snap",
        "0000000000000001-00000000000000ff.snap.old",
        "README",
    ];
    for name in garbage {
        fs::write(snapshotter.dir().join(name), b"not a snapshot").expect("write");
    }
    fs::create_dir(
        snapshotter
            .dir()
            .join("0000000000000009-00000000000000ff.snap"),
    )
    .expect("dir");
    assert_eq!(snapshotter.list().expect("list"), vec![(10, 1)]);
    let marks = [(10, 1), (0xff, 1), (0xff, 9)];
    assert_eq!(
        snapshotter.load_newest_available(&marks).expect("recover"),
        Some(good)
    );
    assert_eq!(snapshotter.purge(0).expect("purge").len(), 1);
    let names = file_names(snapshotter.dir());
    for name in garbage {
        assert!(names.iter().any(|n| n == name), "{name} must be left alone");
    }
}

// Intent: a streamed save writes the same file a buffered save would, and a writer that
// writes fewer bytes than announced leaves no snapshot behind.
#[test]
fn streamed_save_matches_buffered_and_checks_length() {
    let dir = tempfile::tempdir().unwrap();
    let s = snap::Snapshotter::new(dir.path()).unwrap();
    let mut meta = snap::SnapshotMetadata {
        index: 9,
        term: 2,
        ..Default::default()
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    s.save_streamed(&meta, data.len() as u64, |w| {
        for chunk in data.chunks(777) {
            w.write_all(chunk)?;
        }
        Ok(())
    })
    .unwrap();
    let loaded = s.load(9, 2).unwrap();
    assert_eq!(&loaded.data[..], &data[..]);
    meta.index = 10;
    let short = s.save_streamed(&meta, 100, |w| w.write_all(&[1; 99]));
    assert!(matches!(short, Err(snap::Error::Encode { .. })));
    assert!(matches!(s.load(10, 2), Err(snap::Error::NoSnapshot)));
}

// Intent: a streamed file larger than several write-behind windows (8 MiB each: write-back is
// started and waited for as it is written) holds exactly the bytes written, CRC included.
#[test]
fn a_large_streamed_save_is_written_back_as_it_goes_and_reads_back_whole() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let s = snap::Snapshotter::new(dir.path()).unwrap();
    let meta = snap::SnapshotMetadata {
        index: 3,
        term: 1,
        ..Default::default()
    };
    let len: u64 = 40 << 20;
    let byte = |i: u64| (i % 241) as u8;
    s.save_streamed(&meta, len, |w| {
        let chunk: Vec<u8> = (0..65_536u64).map(byte).collect();
        for _ in 0..len / 65_536 {
            w.write_all(&chunk)?;
        }
        Ok(())
    })
    .unwrap();
    let mut r = s.read_data(3, 1).unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut at = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, byte((at + k as u64) % 65_536), "byte {}", at + k as u64);
        }
        at += n as u64;
    }
    assert_eq!(at, len);
    r.finish().unwrap();
}

// Intent: streaming the data of a snapshot gives the same bytes as loading it, and a damaged
// data byte is caught by `finish` (the CRC), never silently accepted.
#[test]
fn read_data_streams_the_bytes_and_checks_the_crc() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let s = snap::Snapshotter::new(dir.path()).unwrap();
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 4;
    snapshot.mut_metadata().term = 1;
    snapshot.data = (0..100_000u32)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>()
        .into();
    let path = s.save(&snapshot).unwrap();
    let mut r = s.read_data(4, 1).unwrap();
    assert_eq!(r.metadata().index, 4);
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(&out[..], &snapshot.data[..]);
    r.finish().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let r = s.read_data(4, 1).unwrap();
    assert!(matches!(r.finish(), Err(Error::Corrupt { .. })));
    assert!(matches!(s.read_data(5, 1), Err(Error::NoSnapshot)));
}

#[test]
fn staged_snapshots_are_invisible_until_installed() {
    // Intent: a received snapshot written by stage is not listed, loaded or purged; it reads
    // back (with its CRC checked) from read_staged; install_staged turns it into the snapshot
    // file; discard and discard_all_staged remove what was never installed.
    let (_tmp, snapshotter) = setup();
    let s = snapshot(9, 2);
    let meta = s.get_metadata();
    let data = s.data.clone();
    snapshotter
        .stage(meta, data.len() as u64, |w| w.write_all(&data))
        .expect("stage");
    assert!(snapshotter.list().expect("list").is_empty());
    assert!(!snapshotter.has(9, 2));
    snapshotter.purge(0).expect("purge");
    let mut reader = snapshotter.read_staged(9, 2).expect("read staged");
    assert_eq!(reader.remaining(), data.len() as u64);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut got).expect("read");
    reader.finish().expect("crc");
    assert_eq!(got, &data[..]);
    snapshotter.install_staged(9, 2).expect("install");
    assert_eq!(snapshotter.load(9, 2).expect("load"), s);
    assert!(matches!(
        snapshotter.install_staged(9, 2),
        Err(Error::NoSnapshot)
    ));

    // A stage that writes the wrong length leaves nothing behind.
    let short = snapshotter.stage(snapshot(10, 2).get_metadata(), 5, |w| w.write_all(b"abc"));
    assert!(short.is_err());
    snapshotter
        .stage(snapshot(11, 2).get_metadata(), 1, |w| w.write_all(b"x"))
        .expect("stage");
    snapshotter
        .stage(snapshot(12, 2).get_metadata(), 1, |w| w.write_all(b"y"))
        .expect("stage");
    snapshotter.discard_staged(11, 2);
    assert_eq!(snapshotter.discard_all_staged().expect("discard").len(), 1);
    assert_eq!(
        file_names(snapshotter.dir()),
        vec!["0000000000000002-0000000000000009.snap"]
    );
}
