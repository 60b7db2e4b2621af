//! Round trips through real files: create, save, reopen, append, snapshot marks, release.

mod common;

use std::fs;

use common::*;
use wal::{Entry, Error, Options, Wal};

/// Writes `batches` batches of 1..4 entries (with a leader change every 40 batches that
/// overwrites the last 3 entries, and a mark every 25 batches) and returns the model.
fn write_many(wal: &mut Wal, model: &mut Model, batches: usize, next: &mut u64, term: &mut u64) {
    for b in 0..batches {
        if b % 25 == 24 {
            let index = *next - 1;
            model.save_mark(wal, &mark(index, *term));
            continue;
        }
        if b % 40 == 39 {
            *term += 1;
            *next -= 3;
        }
        let count = 1 + b % 4;
        let entries: Vec<Entry> = (0..count)
            .map(|i| entry(*next + i as u64, *term, (b * 7 + i * 11) % 200))
            .collect();
        *next += count as u64;
        let hs = hard_state(*term, 2, *next - 1);
        model.save(wal, Some(hs), entries);
    }
}

// Intent: entries, hard states and marks survive a reopen across many small segments,
// including suffix overwrites; reopening at a mark returns exactly the entries after it; and a
// reopened log can be appended to and reopened again.
#[test]
fn round_trip_across_many_segments_reopen_and_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(dir.path(), METADATA, small_options()).unwrap();
    let mut model = Model::new();
    let (mut next, mut term) = (1, 1);
    write_many(&mut wal, &mut model, 150, &mut next, &mut term);
    drop(wal);
    assert!(segment_files(dir.path()).len() > 20, "many segments");

    let (mut wal, replay) = Wal::open(dir.path(), (0, 0), small_options()).unwrap();
    assert_eq!(replay.metadata, METADATA);
    assert_eq!(&state_of(&replay), model.last());
    assert!(wal.tail_repair().is_none());
    write_many(&mut wal, &mut model, 60, &mut next, &mut term);
    drop(wal);

    let (wal, replay) = Wal::open(dir.path(), (0, 0), small_options()).unwrap();
    assert_eq!(&state_of(&replay), model.last());
    assert_eq!(wal.last_index(), next - 1);
    drop(wal);

    let marks = Wal::snapshot_marks(dir.path(), &small_options()).unwrap();
    assert_eq!(marks.len(), 8, "{marks:?}");
    for m in [&marks[0], &marks[5]] {
        let (_wal, replay) = Wal::open(dir.path(), (m.index, m.term), small_options()).unwrap();
        let after: Vec<Entry> = model
            .last()
            .entries
            .iter()
            .filter(|e| e.index > m.index)
            .cloned()
            .collect();
        assert_eq!(replay.entries, after);
        assert_eq!(replay.hard_state, model.last().hard_state);
    }
}

// Intent: a mark the log does not hold (wrong term or index) is refused.
#[test]
fn open_at_unknown_mark_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(dir.path(), METADATA, small_options()).unwrap();
    let mut model = Model::new();
    model.save(&mut wal, None, vec![entry(1, 1, 10), entry(2, 1, 10)]);
    model.save_mark(&mut wal, &mark(2, 1));
    drop(wal);
    let err = Wal::open(dir.path(), (2, 2), small_options()).unwrap_err();
    assert!(
        matches!(err, Error::SnapshotMarkNotFound { index: 2, term: 2 }),
        "{err}"
    );
    let (_wal, replay) = Wal::open(dir.path(), (2, 1), small_options()).unwrap();
    assert!(replay.entries.is_empty());
}

// Intent: snapshot_marks lists every mark of a complete batch once, oldest first, including
// a mark newer than the last commit, and ignores a mark in a torn tail.
#[test]
fn snapshot_marks_lists_complete_marks_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(dir.path(), METADATA, small_options()).unwrap();
    let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1, 5)).collect();
    wal.save(Some(&hard_state(1, 1, 5)), &entries, true)
        .unwrap();
    wal.save_snapshot_mark(&mark(4, 1)).unwrap();
    wal.save_snapshot_mark(&mark(8, 1)).unwrap();
    // Roll over twice: the new segments' heads repeat mark 8.
    for i in 11..=30 {
        wal.save(None, &[entry(i, 1, 100)], true).unwrap();
    }
    assert!(segment_files(dir.path()).len() >= 3);
    let listed = |dir| Wal::snapshot_marks(dir, &small_options()).unwrap();
    assert_eq!(listed(dir.path()), vec![mark(4, 1), mark(8, 1)]);
    let (file, end) = wal.write_position();
    let (file, end) = (file.to_path_buf(), end);
    wal.save_snapshot_mark(&mark(20, 1)).unwrap();
    drop(wal);
    assert_eq!(listed(dir.path()).len(), 3);
    // Tear the last mark's batch: it is no longer listed, and nothing was repaired.
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(&[0xee; 8], end + 20).unwrap();
    assert_eq!(listed(dir.path()), vec![mark(4, 1), mark(8, 1)]);
    assert!(broken_files(dir.path()).is_empty());
}

// Intent: release_to deletes exactly the closed segments whose entries are all at or below
// the index; the log still opens at the mark with the right hard state and entries, and
// no longer from the beginning.
#[test]
fn release_to_deletes_old_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(dir.path(), METADATA, small_options()).unwrap();
    let mut model = Model::new();
    let (mut next, mut term) = (1, 1);
    write_many(&mut wal, &mut model, 60, &mut next, &mut term);
    let snap = mark(next - 5, term);
    model.save_mark(&mut wal, &snap);
    write_many(&mut wal, &mut model, 5, &mut next, &mut term);
    let before = segment_files(dir.path());

    wal.release_to(snap.index).unwrap();
    let after = segment_files(dir.path());
    assert!(after.len() < before.len(), "something released");
    assert_eq!(
        after,
        before[before.len() - after.len()..],
        "a prefix was deleted"
    );
    // Appending to the released log still works and survives a reopen.
    write_many(&mut wal, &mut model, 3, &mut next, &mut term);
    drop(wal);

    let (wal, replay) = Wal::open(dir.path(), (snap.index, snap.term), small_options()).unwrap();
    let expected: Vec<Entry> = model
        .last()
        .entries
        .iter()
        .filter(|e| e.index > snap.index)
        .cloned()
        .collect();
    assert_eq!(replay.entries, expected);
    assert_eq!(replay.hard_state, model.last().hard_state);
    drop(wal);
    let err = Wal::open(dir.path(), (0, 0), small_options()).unwrap_err();
    assert!(matches!(err, Error::MissingSegment { seq: 0, .. }), "{err}");
    assert!(Wal::snapshot_marks(dir.path(), &small_options())
        .unwrap()
        .contains(&snap));
}

// Intent: a batch bigger than a segment gets a segment of its own and reads back.
#[test]
fn batch_larger_than_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(dir.path(), METADATA, small_options()).unwrap();
    let entries: Vec<Entry> = (1..=3).map(|i| entry(i, 1, 3000)).collect();
    wal.save(Some(&hard_state(1, 1, 3)), &entries, true)
        .unwrap();
    wal.save(None, &[entry(4, 1, 10)], true).unwrap();
    drop(wal);
    let (_wal, replay) = Wal::open(dir.path(), (0, 0), small_options()).unwrap();
    assert_eq!(replay.entries.len(), 4);
    assert_eq!(replay.entries[..3], entries[..]);
}

// Intent: refused input writes nothing and leaves the log usable.
#[test]
fn refused_input_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(dir.path(), METADATA, small_options()).unwrap();
    wal.save(None, &[entry(1, 1, 10)], true).unwrap();
    let too_big = wal.save(None, &[entry(2, 1, 10), entry(3, 1, 5000)], true);
    assert!(matches!(
        too_big,
        Err(Error::RecordTooLarge { max: 4096, .. })
    ));
    let gap = wal.save(None, &[entry(3, 1, 10)], true);
    assert!(matches!(gap, Err(Error::InvalidInput { .. })), "{gap:?}");
    let holes = wal.save(None, &[entry(2, 1, 10), entry(4, 1, 10)], true);
    assert!(
        matches!(holes, Err(Error::InvalidInput { .. })),
        "{holes:?}"
    );
    wal.save(None, &[entry(2, 1, 10)], true).unwrap();
    drop(wal);
    let (_wal, replay) = Wal::open(dir.path(), (0, 0), small_options()).unwrap();
    assert_eq!(replay.entries, vec![entry(1, 1, 10), entry(2, 1, 10)]);
}

// Intent: create refuses an existing log, open refuses a missing one, a second open of the
// same log is refused while the first is alive, and bad options are refused.
#[test]
fn create_open_guards() {
    let dir = tempfile::tempdir().unwrap();
    let err = Wal::open(dir.path(), (0, 0), small_options()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(!Wal::exists(dir.path()));
    let wal = Wal::create(dir.path(), METADATA, small_options()).unwrap();
    assert!(Wal::exists(dir.path()));
    let err = Wal::create(dir.path(), METADATA, small_options()).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let err = Wal::open(dir.path(), (0, 0), small_options()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(wal);
    let (wal, replay) = Wal::open(dir.path(), (0, 0), small_options()).unwrap();
    assert_eq!(wal.metadata(), METADATA);
    assert_eq!(replay.metadata, METADATA);
    let tiny = Options {
        segment_size_bytes: 100,
        ..small_options()
    };
    let err = Wal::create(&dir.path().join("x"), METADATA, tiny).unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
}

// Intent: a temp file left by a crash during segment creation is removed and ignored.
#[test]
fn leftover_temp_segment_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(dir.path(), METADATA, small_options()).unwrap();
    wal.save(None, &[entry(1, 1, 10)], true).unwrap();
    drop(wal);
    let temp = dir.path().join("0000000000000001-0000000000000002.wal.tmp");
    fs::write(&temp, b"half a segment").unwrap();
    let (_wal, replay) = Wal::open(dir.path(), (0, 0), small_options()).unwrap();
    assert_eq!(replay.entries.len(), 1);
    assert!(!temp.exists());
}

// Intent: unsynced batches are readable after an orderly reopen once sync() returned, and the
// head of every new segment carries the hard state and the latest mark, so deleting the
// segment that held them loses neither.
#[test]
fn sync_later_and_segment_heads_carry_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(dir.path(), METADATA, small_options()).unwrap();
    let hs = hard_state(4, 2, 1);
    wal.save(Some(&hs), &[entry(1, 4, 10)], false).unwrap();
    wal.save_snapshot_mark(&mark(1, 4)).unwrap();
    // Entry 2 does not fit the rest of segment 0, so segment 0 holds nothing after the mark.
    let later: Vec<Entry> = (2..40)
        .map(|i| entry(i, 4, if i == 2 { 900 } else { 40 }))
        .collect();
    for e in &later {
        wal.save(None, std::slice::from_ref(e), false).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let files = segment_files(dir.path());
    assert!(files.len() > 2);
    fs::remove_file(&files[0]).unwrap();
    let err = Wal::open(dir.path(), (0, 0), small_options()).unwrap_err();
    assert!(matches!(err, Error::MissingSegment { seq: 0, .. }), "{err}");
    let (_wal, replay) = Wal::open(dir.path(), (1, 4), small_options()).unwrap();
    assert_eq!(replay.hard_state, hs);
    assert_eq!(replay.entries, later);
    assert_eq!(
        Wal::snapshot_marks(dir.path(), &small_options()).unwrap(),
        vec![mark(1, 4)]
    );
}

// Intent: a snapshot received from the leader replaces the whole log, whatever the terms of
// the tail it replaced. After a crash before the first append, a reopen at its mark returns no
// stale entry and takes the next append; a reopen at an older mark refuses to replay across the
// reset (the entries up to it are not in the log) instead of returning the stale tail; and a
// log reset survives segment rolls and later appends.
#[test]
fn received_snapshot_mark_drops_the_tail_it_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(dir.path(), METADATA, small_options()).unwrap();
    let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 3, 40)).collect();
    wal.save(Some(&hard_state(3, 1, 2)), &entries, true)
        .unwrap();
    wal.save_snapshot_mark(&mark(2, 3)).unwrap();
    // The leader's snapshot at (7, 2) conflicts at 7: entries 7..10 at term 3 are stale, with
    // a term above the snapshot's (the engine's term filter would keep them).
    wal.save_received_snapshot_mark(&mark(7, 2)).unwrap();
    drop(wal);

    let (mut wal, replay) = Wal::open(dir.path(), (7, 2), small_options()).unwrap();
    assert!(replay.entries.is_empty(), "{:?}", replay.entries);
    let next: Vec<Entry> = (8..=30).map(|i| entry(i, 4, 60)).collect();
    wal.save(Some(&hard_state(4, 1, 7)), &next, true).unwrap();
    drop(wal);

    let (wal, replay) = Wal::open(dir.path(), (7, 2), small_options()).unwrap();
    assert_eq!(
        replay.entries, next,
        "appends after the reset replay as written"
    );
    drop(wal);
    let err = Wal::open(dir.path(), (2, 3), small_options()).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. })
            && err.to_string().contains("snapshot received at index 7"),
        "{err}"
    );
}

/// Whether any extent of `path` is unwritten (reserved, reading as zeros), by FIEMAP; `None`
/// where the file system cannot tell.
fn has_unwritten_extents(path: &std::path::Path) -> Option<bool> {
    use std::os::unix::io::AsRawFd;
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped: u32,
        count: u32,
        reserved: u32,
        extents: [Extent; 64],
    }
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 1;
    const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
    let file = fs::File::open(path).ok()?;
    let mut map = Fiemap {
        start: 0,
        length: u64::MAX,
        flags: FIEMAP_FLAG_SYNC,
        mapped: 0,
        count: 64,
        reserved: 0,
        extents: [Extent::default(); 64],
    };
    // SAFETY: FS_IOC_FIEMAP fills at most `count` extents of the struct we pass and own.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map) };
    if rc != 0 {
        return None;
    }
    let extents = &map.extents[..(map.mapped as usize).min(64)];
    Some(
        extents
            .iter()
            .any(|e| e.flags & FIEMAP_EXTENT_UNWRITTEN != 0),
    )
}

// Intent: a log that grows gets its next segments from zero-filled spares made in the
// background: their blocks are already written, so an append's fdatasync converts no extent
// (no inode write). The first segment is preallocated, with unwritten extents, which shows
// the check can tell. Every entry still replays.
#[test]
fn grown_segments_are_zero_filled_spares() {
    // A real file system (ext4 here), not a tmpfs, which has no extents to report.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let options = Options {
        segment_size_bytes: 64 * 1024,
        ..Options::default()
    };
    let mut wal = Wal::create(dir.path(), METADATA, options.clone()).unwrap();
    let Some(true) = has_unwritten_extents(&segment_files(dir.path())[0]) else {
        eprintln!("this file system does not report unwritten extents: nothing to check");
        return;
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (mut next, mut seen, mut zero_filled) = (1, 1, 0);
    loop {
        let batch: Vec<Entry> = (0..4).map(|i| entry(next + i, 1, 1000)).collect();
        next += 4;
        wal.save(Some(&hard_state(1, 1, next - 1)), &batch, true)
            .unwrap();
        // A segment just made holds its head and this batch: the rest is zeros, written or
        // merely reserved.
        let segments = segment_files(dir.path());
        if segments.len() > seen {
            seen = segments.len();
            if has_unwritten_extents(&segments[seen - 1]) == Some(false) {
                zero_filled += 1;
            }
        }
        if zero_filled >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && seen < 200,
            "{zero_filled} segment(s) came from a spare after {seen} segments"
        );
    }
    drop(wal);
    let (_, replay) = Wal::open(dir.path(), (0, 0), options).unwrap();
    assert_eq!(replay.entries.len() as u64, next - 1);
    assert!(zero_filled >= 2);
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

// Intent: the disk fills while the log grows and spares are being made. Nothing panics; the
// append that finds no room fails with an I/O error (the log is poisoned, as after any
// failed write); a reopen deletes whatever spare or temp file is left, never takes one for a
// segment, and replays exactly the batches that were synced before the failure.
#[test]
fn a_disk_that_fills_while_spares_are_made_keeps_a_replayable_log() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("small");
    fs::create_dir_all(&dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=320k", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs: run as root to test a full disk");
        return;
    }
    let _unmount = Unmount(dir.clone());
    let options = Options {
        segment_size_bytes: 64 * 1024,
        ..Options::default()
    };
    let mut wal = Wal::create(&dir, METADATA, options.clone()).unwrap();
    let mut next = 1;
    let failure = loop {
        assert!(next < 10_000, "the disk never filled");
        let batch: Vec<Entry> = (0..4).map(|i| entry(next + i, 1, 1000)).collect();
        match wal.save(Some(&hard_state(1, 1, next + 3)), &batch, true) {
            Ok(()) => next += 4,
            Err(e) => break e,
        }
    };
    assert!(matches!(failure, Error::Io { .. }), "{failure}");
    drop(wal);
    let (_wal, replay) = Wal::open(&dir, (0, 0), options).unwrap();
    assert_eq!(replay.entries.len() as u64, next - 1);
    let left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
