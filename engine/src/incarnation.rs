//! This node's incarnation: a counter kept in the WAL dir (file `incarnation`, decimal text),
//! raised by one at every start before the node sends anything, plus a random nonce new at
//! every start. The node announces both in a start record through the log and names them in
//! every peer request (`X-Raft-Incarnation`), so a member that applied a later start of it can
//! tell that its data dir was wiped or rolled back (ARCHITECTURE.md, "Who has started").

use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The counter's file name inside the WAL dir.
const FILE: &str = "incarnation";

/// The counter file of the WAL dir `wal_dir`.
pub fn path(wal_dir: &Path) -> PathBuf {
    wal_dir.join(FILE)
}

/// The stored counter; `None` when there is no file (a fresh dir, or a WAL written by a
/// release before this one).
///
/// # Errors
/// A sentence naming the file, when it cannot be read or does not hold a number.
pub fn read(wal_dir: &Path) -> Result<Option<u64>, String> {
    let file = path(wal_dir);
    match std::fs::read_to_string(&file) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            format!(
                "{} does not hold an incarnation number ({:?}): restore it from a backup, or \
                 remove this member, wipe its data dirs and add it back under a new ID",
                file.display(),
                text.chars().take(40).collect::<String>()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// Stores `incarnation` durably. The record has a fixed width (20 digits and a newline, 21
/// bytes in the first sector), so an existing file is overwritten in place and fdatasynced:
/// no new block is needed, and a node restarted on a full disk can still raise its
/// incarnation. A new file is made as a temp file, fsynced, renamed, and the directory synced.
///
/// # Errors
/// A sentence naming the file.
pub fn save(wal_dir: &Path, incarnation: u64) -> Result<(), String> {
    let file = path(wal_dir);
    let record = format!("{incarnation:020}\n");
    let in_place = || -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&file)?;
        f.write_all_at(record.as_bytes(), 0)?;
        f.set_len(record.len() as u64)?;
        f.sync_data()
    };
    let fresh = || -> std::io::Result<()> {
        let tmp = wal_dir.join(format!("{FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(record.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)?;
        std::fs::File::open(wal_dir)?.sync_all()
    };
    let written = match file.exists() {
        true => in_place(),
        false => fresh(),
    };
    written.map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// A nonce for this start: random (the standard library's per-process hash keys) mixed with
/// the time and the process ID; never 0.
pub fn nonce() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: the counter survives a save and a read; no file reads as None; garbage in the
    // file is refused with a sentence naming it, never read as 0.
    #[test]
    fn counter_round_trips_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        save(dir.path(), 7).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(7));
        save(dir.path(), 8).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(8));
        // A file of an earlier layout (shorter or longer) is overwritten whole.
        std::fs::write(path(dir.path()), "12345678901234567890123\n").unwrap();
        save(dir.path(), 9).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(9));
        std::fs::write(path(dir.path()), "seven").unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(err.contains("incarnation"), "{err}");
        assert_ne!(nonce(), nonce());
    }
}
