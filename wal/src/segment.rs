//! Segment files on disk: names, listing, atomic creation, preallocation, repair.
//!
//! A segment is `{seq:016x}-{index:016x}.wal`: `seq` counts segments from 0 without holes,
//! `index` is the raft index expected next when the segment was made. A segment is made as
//! `<name>.tmp` (head batch written, preallocated, fsynced), then renamed, then the directory is
//! fsynced, so a segment under its real name always holds a complete head batch. Leftover
//! `.tmp` files are from a crash before the rename and are deleted by `open`.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Error, Result};

const SUFFIX: &str = ".wal";
const TEMP_SUFFIX: &str = ".wal.tmp";

/// A segment file found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub seq: u64,
    pub first_index: u64,
    pub path: PathBuf,
}

/// `{seq:016x}-{index:016x}.wal`.
pub(crate) fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}{SUFFIX}")
}

/// Parses a segment file name; `None` for any other file.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (seq, index) = stem.split_once('-')?;
    let hex = |s: &str| {
        let ok = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| u64::from_str_radix(s, 16).ok()).flatten()
    };
    Some((hex(seq)?, hex(index)?))
}

/// Segments in `dir`, ordered by seq.
///
/// # Errors
/// [`Error::Io`] if the directory cannot be read; [`Error::MissingSegment`] if the sequence
/// numbers have a hole.
pub(crate) fn list(dir: &Path) -> Result<Vec<SegmentFile>> {
    let mut segments = Vec::new();
    let entries = fs::read_dir(dir).map_err(io_err(|| format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(|| format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        if let Some((seq, first_index)) = name.to_str().and_then(parse_segment_name) {
            segments.push(SegmentFile {
                seq,
                first_index,
                path: entry.path(),
            });
        }
    }
    segments.sort_by_key(|s| s.seq);
    for pair in segments.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            return Err(Error::MissingSegment {
                dir: dir.to_path_buf(),
                seq: pair[0].seq + 1,
            });
        }
    }
    Ok(segments)
}

/// Deletes `<name>.wal.tmp` files left by a crash during segment creation.
///
/// # Errors
/// [`Error::Io`] if listing or deleting fails.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(io_err(|| format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(|| format!("listing {}", dir.display())))?;
        if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err(|| format!("removing {}", path.display())))?;
        }
    }
    Ok(())
}

/// Makes segment (`seq`, `first_index`) holding `head` with room for `capacity_bytes`: in a
/// zero-filled `spare` of at least that size when one is given (head written, data synced), else
/// in a temp file (head written, preallocated, synced); then renamed, then the directory fsynced.
/// Returns it open for writing.
///
/// # Errors
/// [`Error::Io`] on any failure; the segment may then exist only as a temp file.
pub(crate) fn create(
    dir: &Path,
    seq: u64,
    first_index: u64,
    head: &[u8],
    capacity_bytes: u64,
    spare: Option<crate::spare::Spare>,
) -> Result<(File, PathBuf)> {
    let path = dir.join(segment_name(seq, first_index));
    let (file, temp) = match spare {
        Some(spare) => {
            let ctx = |what: &'static str| io_err_at(what, &spare.path);
            spare
                .file
                .write_all_at(head, 0)
                .map_err(ctx("writing head of"))?;
            spare.file.sync_data().map_err(ctx("syncing"))?;
            (spare.file, spare.path)
        }
        None => {
            let temp = dir.join(format!("{}.tmp", segment_name(seq, first_index)));
            let ctx = |what: &'static str| io_err_at(what, &temp);
            if temp.exists() {
                fs::remove_file(&temp).map_err(ctx("removing stale"))?;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&temp)
                .map_err(ctx("creating"))?;
            file.write_all_at(head, 0).map_err(ctx("writing head of"))?;
            preallocate(&file, capacity_bytes.max(head.len() as u64))
                .map_err(ctx("preallocating"))?;
            file.sync_all().map_err(ctx("syncing"))?;
            (file, temp)
        }
    };
    fs::rename(&temp, &path).map_err(io_err_at("renaming", &temp))?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// An I/O error mapper naming `what` was done to `path`.
fn io_err_at(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    io_err(move || format!("{what} {}", path.display()))
}

/// Reserves `len` bytes for `file` (zeros when read) so appends need no size change.
///
/// # Errors
/// The OS error of `posix_fallocate`.
pub(crate) fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// fsyncs a directory so that creations, renames and deletions in it are durable.
///
/// # Errors
/// [`Error::Io`] if the directory cannot be opened or synced.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let ctx = || format!("syncing directory {}", dir.display());
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(ctx))
}

/// Repairs a torn tail: keeps a `.broken` copy of the whole file, truncates it to
/// `keep_bytes`, preallocates it again to `capacity_bytes` and makes all of it durable.
/// Returns the copy's path.
///
/// # Errors
/// [`Error::Io`] on any failure (the copy is made durable before the original is touched).
pub(crate) fn truncate_torn_tail(
    file: &File,
    path: &Path,
    keep_bytes: u64,
    capacity_bytes: u64,
) -> Result<PathBuf> {
    let copy = free_broken_name(path);
    fs::copy(path, &copy).map_err(io_err_at("copying torn segment to", &copy))?;
    File::open(&copy)
        .and_then(|c| c.sync_all())
        .map_err(io_err_at("syncing", &copy))?;
    file.set_len(keep_bytes)
        .map_err(io_err_at("truncating", path))?;
    preallocate(file, capacity_bytes).map_err(io_err_at("preallocating", path))?;
    file.sync_all().map_err(io_err_at("syncing", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(copy)
}

/// `<file>.broken`, or `<file>.N.broken` for the first N not taken.
fn free_broken_name(path: &Path) -> PathBuf {
    let base = path.as_os_str().to_string_lossy().into_owned();
    let first = PathBuf::from(format!("{base}.broken"));
    if !first.exists() {
        return first;
    }
    (1u64..)
        .map(|n| PathBuf::from(format!("{base}.{n}.broken")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: names round-trip and nothing else parses as a segment.
    #[test]
    fn names() {
        let name = segment_name(0x1f, 0xabc);
        assert_eq!(name, "000000000000001f-0000000000000abc.wal");
        assert_eq!(parse_segment_name(&name), Some((0x1f, 0xabc)));
        for other in [
            "000000000000001f-0000000000000abc.wal.tmp",
            "000000000000001f-0000000000000abc.wal.broken",
            "000000000000001F-0000000000000abc.wal",
            "00000000000001f-0000000000000abc.wal",
            "+00000000000001f-0000000000000abc.wal",
            "x.wal",
        ] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }
}
