//! Crash-shaped recovery: torn tails, zeroed and garbage tails, missing segments, broken chain.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use wal::{Error, Wal};

/// Opens `dir` from the beginning, appends one batch after whatever it replayed, reopens, and
/// checks the appended batch is there. Returns the first replay's state.
fn open_append_reopen(dir: &Path) -> (State, bool) {
    let (mut wal, replay) = Wal::open(dir, (0, 0), small_options()).expect("open");
    let repaired = wal.tail_repair().is_some();
    let first = state_of(&replay);
    let next = first.entries.last().map_or(1, |e| e.index + 1);
    let hs = hard_state(9, 9, next);
    let appended = vec![entry(next, 9, 33), entry(next + 1, 9, 5)];
    wal.save(Some(&hs), &appended, true).expect("append");
    drop(wal);
    let (_wal, replay) = Wal::open(dir, (0, 0), small_options()).expect("reopen");
    let mut expected = first.entries.clone();
    expected.extend(appended);
    assert_eq!(replay.entries, expected, "appended batch survives a reopen");
    assert_eq!(replay.hard_state, hs);
    (first, repaired)
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    segment_files(dir).pop().expect("a segment")
}

// Intent: cutting the last segment at every byte offset inside its last batches (at least its
// last three records) yields exactly the longest prefix of complete batches, keeps a .broken
// copy whenever non-zero bytes of a partial batch were cut off, and the repaired log takes
// appends that survive a reopen.
#[test]
fn torn_tail_at_every_byte_of_the_last_records() {
    let pristine = tempfile::tempdir().unwrap();
    let model = write_small_log(pristine.path(), 10);
    let last = last_segment(pristine.path());
    let last_name = file_name(&last);
    let pristine_bytes = std::fs::read(&last).unwrap();
    let n = model.ends.len();
    let from = model.batch_start(n - 2);
    let to = model.ends[n - 1].offset;
    assert!(
        to - from > 2 * 48,
        "the last two batches hold at least three records"
    );
    for cut in from..=to {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        let file = dir.path().join(&last_name);
        OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (state, repaired) = open_append_reopen(dir.path());
        let k = model.prefix_ending_at(&last_name, cut);
        assert_eq!(state, model.states[k], "cut at {cut}");
        // What is left after the last complete batch: a torn batch, unless it is only zeros,
        // which no reader can tell from preallocated space (a cut right after a zero first
        // byte of a record's CRC; the CRC chain's seed is random, so that happens now and
        // then) and which is then a clean end.
        let boundary = model
            .ends
            .iter()
            .filter(|e| e.file == last_name && e.offset <= cut)
            .map(|e| e.offset)
            .max()
            .expect("a complete batch before the cut");
        let leftover = &pristine_bytes[boundary as usize..cut as usize];
        let torn = leftover.iter().any(|b| *b != 0);
        assert_eq!(repaired, torn, "cut at {cut} (leftover {leftover:?})");
        assert_eq!(broken_files(dir.path()).len(), usize::from(torn));
    }
}

// Intent: a zeroed last batch (size made it to disk, data did not) reads as if never written;
// a last batch zeroed only in its middle is a torn write and is cut with a .broken copy.
#[test]
fn zeroed_tail() {
    let pristine = tempfile::tempdir().unwrap();
    let model = write_small_log(pristine.path(), 10);
    let last_name = file_name(&last_segment(pristine.path()));
    let n = model.ends.len();
    let start = model.batch_start(n - 1);
    let end = model.ends[n - 1].offset;
    for (zero_from, zero_to, expect_repair) in [(start, end, false), (start, start + 24, true)] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(&last_name))
            .unwrap();
        let zeros = vec![0u8; (zero_to - zero_from) as usize];
        file.write_all_at(&zeros, zero_from).unwrap();
        drop(file);
        let (state, repaired) = open_append_reopen(dir.path());
        assert_eq!(state, model.states[n - 1]);
        assert_eq!(repaired, expect_repair);
    }
}

// Intent: garbage in the preallocated space after the last batch is cut away (with a .broken
// copy) without losing any batch, including garbage that contains valid-looking stale
// records: an exact copy of the last batch, and a commit record of an earlier batch.
#[test]
fn garbage_tail() {
    let pristine = tempfile::tempdir().unwrap();
    let model = write_small_log(pristine.path(), 10);
    let last = last_segment(pristine.path());
    let last_name = file_name(&last);
    // More preallocated room, as a bigger segment would have.
    let room = fs::metadata(&last).unwrap().len() + 1024;
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(room)
        .unwrap();
    let bytes = fs::read(&last).unwrap();
    let n = model.ends.len();
    let end = model.ends[n - 1].offset as usize;
    let last_batch = &bytes[model.batch_start(n - 1) as usize..end];
    let earlier_commit = &bytes[model.ends[n - 2].offset as usize - 40..][..40];
    let random: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for garbage in [&random[..], last_batch, earlier_commit, &[0xff; 8][..]] {
        assert!(
            end + garbage.len() <= bytes.len(),
            "garbage fits the segment"
        );
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(&last_name))
            .unwrap();
        file.write_all_at(garbage, end as u64).unwrap();
        drop(file);
        let (state, repaired) = open_append_reopen(dir.path());
        assert_eq!(&state, model.last());
        assert!(repaired);
        let broken = broken_files(dir.path());
        assert_eq!(broken.len(), 1);
        assert_eq!(
            &fs::read(&broken[0]).unwrap()[end..][..garbage.len()],
            garbage
        );
    }
}

// Intent: a second repair of the same segment keeps the first .broken copy.
#[test]
fn second_repair_keeps_first_broken_copy() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_small_log(dir.path(), 6);
    let last = last_segment(dir.path());
    let end = model.ends[model.ends.len() - 1].offset;
    for round in 1..=2 {
        let file = OpenOptions::new().write(true).open(&last).unwrap();
        file.write_all_at(&[0xab; 16], end).unwrap();
        drop(file);
        let (wal, _replay) = Wal::open(dir.path(), (0, 0), small_options()).unwrap();
        assert!(wal.tail_repair().is_some());
        assert_eq!(broken_files(dir.path()).len(), round);
    }
}

// Intent: a missing middle segment and a missing first segment are errors, never a shorter log.
#[test]
fn missing_segments_are_errors() {
    for missing in [0usize, 1] {
        let dir = tempfile::tempdir().unwrap();
        write_small_log(dir.path(), 12);
        let files = segment_files(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        fs::remove_file(&files[missing]).unwrap();
        let err = Wal::open(dir.path(), (0, 0), small_options()).unwrap_err();
        assert!(
            matches!(err, Error::MissingSegment { seq, .. } if seq == missing as u64),
            "{err}"
        );
        if missing == 1 {
            let err = Wal::snapshot_marks(dir.path(), &small_options()).unwrap_err();
            assert!(matches!(err, Error::MissingSegment { seq: 1, .. }), "{err}");
        }
    }
}

// Intent: a segment from another log with identical content in the same place (a stale or
// foreign file) breaks the CRC chain and is reported, naming that file at offset 0.
#[test]
fn foreign_segment_breaks_the_chain() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    write_small_log(ours.path(), 12);
    write_small_log(theirs.path(), 12);
    let files = segment_files(ours.path());
    let swapped = &files[1];
    fs::copy(theirs.path().join(file_name(swapped)), swapped).unwrap();
    let err = Wal::open(ours.path(), (0, 0), small_options()).unwrap_err();
    match err {
        Error::Corrupt { file, offset, .. } => {
            assert_eq!(&file, swapped);
            assert_eq!(offset, 0);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

// Intent: renaming segments into another order is detected (each seed names its own segment).
#[test]
fn reordered_segments_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    write_small_log(dir.path(), 12);
    let files = segment_files(dir.path());
    let (a, b) = (&files[0], &files[1]);
    let tmp = dir.path().join("swap");
    fs::rename(a, &tmp).unwrap();
    fs::rename(b, a).unwrap();
    fs::rename(&tmp, b).unwrap();
    let err = Wal::open(dir.path(), (0, 0), small_options()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 0, .. }), "{err}");
}
