//! Exhaustive single-byte damage over a small multi-segment log.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use wal::{Error, Wal};

/// Puts every segment of `dir` back to `originals` and removes `.broken` copies.
fn restore(dir: &Path, originals: &[(std::path::PathBuf, Vec<u8>)], damaged: usize) {
    let broken = broken_files(dir);
    for path in &broken {
        fs::remove_file(path).unwrap();
    }
    let last = originals.len() - 1;
    for (i, (path, bytes)) in originals.iter().enumerate() {
        if i == damaged || (i == last && !broken.is_empty()) {
            fs::write(path, bytes).unwrap();
        }
    }
}

// Intent: for every byte of a small multi-segment log, each of (flip one bit, set 0x00, set
// 0xFF) makes open either fail with Corrupt or return exactly the state after a prefix of the
// batches written; whenever the damaged byte lies before the last complete batch, open fails.
// No panic, no wrong data.
#[test]
fn every_byte_damaged_fails_or_yields_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_small_log(dir.path(), 14);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "multi-segment: {files:?}");
    let originals: Vec<_> = files
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();
    let n = model.ends.len();
    let last_batch_start = model.batch_start(n - 1);
    let last = files.len() - 1;
    let (mut failed, mut prefixes, mut trials) = (0, 0, 0);
    for (fi, (path, bytes)) in originals.iter().enumerate() {
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        for (at, &old) in bytes.iter().enumerate() {
            for new in [old ^ (1 << (at % 8)), 0x00, 0xff] {
                if new == old {
                    continue;
                }
                trials += 1;
                file.write_all_at(&[new], at as u64).unwrap();
                let must_fail = fi < last || (at as u64) < last_batch_start;
                match Wal::open(dir.path(), (0, 0), small_options()) {
                    Err(Error::Corrupt { .. }) => failed += 1,
                    Err(other) => panic!("file {fi} byte {at} -> {new:#x}: unexpected {other}"),
                    Ok((wal, replay)) => {
                        drop(wal);
                        assert!(!must_fail, "file {fi} byte {at} -> {new:#x}: opened");
                        let state = state_of(&replay);
                        assert!(
                            model.states[n - 1..].contains(&state),
                            "file {fi} byte {at} -> {new:#x}: not a prefix: {state:?}"
                        );
                        prefixes += 1;
                    }
                }
                file.write_all_at(&[old], at as u64).unwrap();
                restore(dir.path(), &originals, usize::MAX);
            }
        }
        drop(file);
        restore(dir.path(), &originals, fi);
    }
    let (_wal, replay) = Wal::open(dir.path(), (0, 0), small_options()).unwrap();
    assert_eq!(&state_of(&replay), model.last(), "restored log is intact");
    eprintln!(
        "{trials} trials, {failed} failed, {prefixes} prefixes, files {:?}",
        originals.iter().map(|o| o.1.len()).collect::<Vec<_>>()
    );
    assert!(trials > 6000, "{trials} trials");
    assert!(
        failed > 0 && prefixes > 0,
        "{failed} failed, {prefixes} prefixes"
    );
}
