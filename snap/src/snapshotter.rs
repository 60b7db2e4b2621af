//! [`Snapshotter`]: the snapshot directory and every file operation on it.
//!
//! Invariants:
//! - A file named `*.snap` only ever appears by an atomic rename of a fully written and
//!   fsynced temp file, followed by an fsync of the directory. A crash leaves either the old
//!   directory (plus perhaps a `*.snap.tmp`) or the new, complete file.
//! - A file is only ever handed out after its length, CRC and metadata checked out and its
//!   metadata matched its name.
//! - Nothing is deleted except by [`Snapshotter::purge`]; a corrupt file is renamed
//!   `*.broken` and kept for inspection.
//! - A snapshot received from a peer is written as `*.snap.staged` ([`Snapshotter::stage`]),
//!   which no load or purge looks at, checked there, and becomes `*.snap` only by
//!   [`Snapshotter::install_staged`] (or is discarded). Staging may run concurrently with
//!   `save` and `purge`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft_proto::eraftpb::{Snapshot, SnapshotMetadata};

use crate::error::{Error, Result};
use crate::format;
use crate::name::{
    is_staged_file_name, is_temp_file_name, parse_snap_file_name, snap_file_name, BROKEN_SUFFIX,
    STAGED_SUFFIX, TEMP_SUFFIX,
};

/// Owner of one snapshot directory.
///
/// One `Snapshotter` per directory, used by one owner (the raft thread): `save` and `purge`
/// MUST NOT run concurrently on the same directory, because `purge` deletes temp files.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    dir: PathBuf,
}

/// What [`Snapshotter::recover`] found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovered {
    /// The newest snapshot that passed its checks and has a WAL mark, if any.
    pub snapshot: Option<Snapshot>,
    /// Corrupt files renamed to `<name>.broken` on the way (the new paths), newest first.
    pub broken: Vec<PathBuf>,
    /// (index, term) of files newer than the chosen one that were skipped for lack of a WAL
    /// mark (a crash between saving the file and writing the mark); left in place.
    pub unmarked: Vec<(u64, u64)>,
}

impl Snapshotter {
    /// Uses `dir`, creating it (and fsyncing its parent) if missing.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be created or synced, or `dir` exists and is not
    /// a directory.
    pub fn new(dir: &Path) -> Result<Snapshotter> {
        create_dir_durably(dir)?;
        let meta =
            fs::metadata(dir).map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
        if !meta.is_dir() {
            let e = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
            return Err(Error::io(
                format!("use {} as snapshot dir", dir.display()),
                e,
            ));
        }
        Ok(Snapshotter {
            dir: dir.to_path_buf(),
        })
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `{term:016x}-{index:016x}.snap`: temp file, write, fsync, rename, dir fsync.
    ///
    /// Only after this returns `Ok` may the caller write the WAL snapshot mark; the mark
    /// MUST NOT be written first, or a crash in between leaves a mark without a file. A file
    /// already present at the same (index, term) is replaced atomically.
    ///
    /// # Errors
    /// - [`Error::EmptySnapshot`] if the metadata's index is 0 (nothing is written);
    /// - [`Error::Encode`] if the metadata cannot be encoded;
    /// - [`Error::Io`] if any step fails. The snapshot is then not durable (the temp file is
    ///   removed on a best-effort basis) and the caller MUST NOT write the WAL mark.
    pub fn save(&self, snapshot: &Snapshot) -> Result<PathBuf> {
        let data = &snapshot.data;
        self.save_streamed(snapshot.get_metadata(), data.len() as u64, |w| {
            w.write_all(data)
        })
    }

    /// Whether the file of snapshot (`index`, `term`) is there (its content is not checked:
    /// for a file this process saved itself, such as a received snapshot staged before raft
    /// sees it).
    pub fn has(&self, index: u64, term: u64) -> bool {
        self.dir
            .join(crate::name::snap_file_name(index, term))
            .is_file()
    }

    /// Like [`Snapshotter::save`], but the data is written by `write_data` instead of being
    /// held in memory: a large state machine image can be encoded straight into the file.
    /// `write_data` MUST write exactly `data_len` bytes.
    ///
    /// # Errors
    /// As [`Snapshotter::save`]; also [`Error::Encode`] when `write_data` wrote another
    /// number of bytes than `data_len`, and [`Error::Io`] when it failed.
    pub fn save_streamed<F>(
        &self,
        metadata: &SnapshotMetadata,
        data_len: u64,
        write_data: F,
    ) -> Result<PathBuf>
    where
        F: FnOnce(&mut dyn Write) -> io::Result<()>,
    {
        let head = file_head(metadata, data_len)?;
        let name = snap_file_name(metadata.index, metadata.term);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        let written = write_streamed(&temp, &head, data_len, write_data).and_then(|()| {
            fs::rename(&temp, &path).map_err(|e| {
                Error::io(
                    format!("rename {} to {}", temp.display(), path.display()),
                    e,
                )
            })
        });
        if let Err(e) = written {
            // Best effort: a leftover temp file is harmless (ignored by loads, purged later).
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        sync_dir(&self.dir)?;
        Ok(path)
    }

    /// Newest snapshot file that passes its CRC and whose (index, term) is in `marks` (the
    /// WAL's snapshot marks). A corrupt file is renamed `<name>.broken` and the next older
    /// one is tried; a file without a mark is skipped (left in place). `Ok(None)` when none
    /// qualifies.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be read, a file cannot be read, or a corrupt
    /// file cannot be renamed. Corruption itself is not an error here.
    pub fn load_newest_available(&self, marks: &[(u64, u64)]) -> Result<Option<Snapshot>> {
        Ok(self.recover(marks)?.snapshot)
    }

    /// Same as [`Snapshotter::load_newest_available`], but also reports the files it renamed
    /// `.broken` and the newer files it skipped for lack of a mark, for the caller to log.
    ///
    /// # Errors
    /// As [`Snapshotter::load_newest_available`].
    pub fn recover(&self, marks: &[(u64, u64)]) -> Result<Recovered> {
        let marks: HashSet<(u64, u64)> = marks.iter().copied().collect();
        let mut recovered = Recovered::default();
        for (index, term) in self.list()? {
            if !marks.contains(&(index, term)) {
                recovered.unmarked.push((index, term));
                continue;
            }
            match self.load(index, term) {
                Ok(snapshot) => {
                    recovered.snapshot = Some(snapshot);
                    return Ok(recovered);
                }
                Err(Error::Corrupt { file, .. }) => recovered.broken.push(self.quarantine(&file)?),
                Err(e) => return Err(e),
            }
        }
        Ok(recovered)
    }

    /// Reads one specific snapshot file by (index, term). The data is read with a single
    /// allocation the size of the file and handed over without a copy.
    ///
    /// # Errors
    /// - [`Error::NoSnapshot`] if the file does not exist;
    /// - [`Error::Corrupt`] if it fails any check (length, magic, CRC, version, metadata, or
    ///   metadata not matching the name); the file is left in place;
    /// - [`Error::Io`] if it cannot be read.
    pub fn load(&self, index: u64, term: u64) -> Result<Snapshot> {
        let path = self.dir.join(snap_file_name(index, term));
        let bytes = read_whole_file(&path)?;
        let corrupt = |reason: String| Error::Corrupt {
            file: path.clone(),
            reason,
        };
        let decoded = format::decode(&bytes).map_err(corrupt)?;
        let (found_index, found_term) = (decoded.metadata.index, decoded.metadata.term);
        if (found_index, found_term) != (index, term) {
            return Err(corrupt(format!(
                "metadata says index {found_index} term {found_term}, the file name index \
                 {index} term {term}"
            )));
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(decoded.metadata);
        snapshot.data = Bytes::from(bytes).slice(decoded.data);
        Ok(snapshot)
    }

    /// Opens one snapshot file by (index, term) for reading its data as a stream, without
    /// holding it in memory. The header, lengths, version and metadata are checked now; the
    /// CRC covers the whole file, so it is checked by [`DataReader::finish`] once the data has
    /// been read: a caller MUST call `finish` and MUST NOT trust what it read before that.
    ///
    /// # Errors
    /// As [`Snapshotter::load`], except that a CRC mismatch is reported by `finish`.
    pub fn read_data(&self, index: u64, term: u64) -> Result<DataReader> {
        self.open_data(self.dir.join(snap_file_name(index, term)), index, term)
    }

    /// Writes a snapshot received from a peer as `<name>.staged`, streamed from `write_data`
    /// (which MUST write exactly `data_len` bytes), and fsyncs it. The file is not a snapshot
    /// yet: loads, lists and purges ignore it until [`Snapshotter::install_staged`]. A staged
    /// file of the same (index, term) is replaced.
    ///
    /// # Errors
    /// As [`Snapshotter::save_streamed`]; the partial file is removed.
    pub fn stage<F>(&self, metadata: &SnapshotMetadata, data_len: u64, write_data: F) -> Result<()>
    where
        F: FnOnce(&mut dyn Write) -> io::Result<()>,
    {
        let head = file_head(metadata, data_len)?;
        let path = self.staged_path(metadata.index, metadata.term);
        let written = write_streamed(&path, &head, data_len, write_data);
        if written.is_err() {
            let _ = fs::remove_file(&path);
        }
        written
    }

    /// Opens a staged snapshot's data as a stream, as [`Snapshotter::read_data`] does for a
    /// snapshot file.
    ///
    /// # Errors
    /// As [`Snapshotter::read_data`].
    pub fn read_staged(&self, index: u64, term: u64) -> Result<DataReader> {
        self.open_data(self.staged_path(index, term), index, term)
    }

    /// Makes a staged snapshot a snapshot file (rename, directory fsync); the caller then
    /// writes its WAL mark. Replaces a snapshot file of the same (index, term).
    ///
    /// # Errors
    /// [`Error::NoSnapshot`] when nothing is staged at (index, term); [`Error::Io`] when the
    /// rename or the fsync fails.
    pub fn install_staged(&self, index: u64, term: u64) -> Result<PathBuf> {
        let staged = self.staged_path(index, term);
        let path = self.dir.join(snap_file_name(index, term));
        match fs::rename(&staged, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoSnapshot),
            Err(e) => {
                let what = format!("rename {} to {}", staged.display(), path.display());
                return Err(Error::io(what, e));
            }
        }
        sync_dir(&self.dir)?;
        Ok(path)
    }

    /// Removes the staged snapshot at (index, term), if any (best effort: a leftover is
    /// removed by [`Snapshotter::discard_all_staged`] at the next start).
    pub fn discard_staged(&self, index: u64, term: u64) {
        let _ = fs::remove_file(self.staged_path(index, term));
    }

    /// Removes every staged snapshot (at start: none of them was installed); returns their
    /// paths.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be read or a file cannot be removed.
    pub fn discard_all_staged(&self) -> Result<Vec<PathBuf>> {
        let doomed: Vec<PathBuf> = self
            .scan()?
            .staged
            .iter()
            .map(|name| self.dir.join(name))
            .collect();
        for path in &doomed {
            fs::remove_file(path)
                .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
        }
        Ok(doomed)
    }

    fn staged_path(&self, index: u64, term: u64) -> PathBuf {
        self.dir
            .join(format!("{}{STAGED_SUFFIX}", snap_file_name(index, term)))
    }

    /// Opens the snapshot file at `path`, which should hold (index, term), for streaming.
    fn open_data(&self, path: PathBuf, index: u64, term: u64) -> Result<DataReader> {
        let context = |what: &str| format!("{what} {}", path.display());
        let corrupt = |reason: String| Error::Corrupt {
            file: path.clone(),
            reason,
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoSnapshot),
            Err(e) => return Err(Error::io(context("open"), e)),
        };
        let file_len = file
            .metadata()
            .map_err(|e| Error::io(context("stat"), e))?
            .len();
        let mut reader = io::BufReader::with_capacity(1 << 20, file);
        let mut header = [0u8; format::HEADER_BYTES];
        reader
            .read_exact(&mut header)
            .map_err(|_| corrupt("shorter than its header".into()))?;
        let (metadata_len, data_len) = format::check_header(&header, file_len).map_err(corrupt)?;
        let mut metadata_bytes = vec![0u8; metadata_len];
        reader
            .read_exact(&mut metadata_bytes)
            .map_err(|e| Error::io(context("read"), e))?;
        let metadata = format::decode_metadata(&metadata_bytes).map_err(corrupt)?;
        if (metadata.index, metadata.term) != (index, term) {
            return Err(corrupt(format!(
                "metadata says index {} term {}, the file name index {index} term {term}",
                metadata.index, metadata.term
            )));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(&metadata_bytes);
        Ok(DataReader {
            path,
            reader,
            crc,
            remaining: data_len,
            metadata,
        })
    }

    /// (index, term) of every snapshot file present, newest first (by index, then term).
    /// Temp files, `.broken` files and foreign names are not listed.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be read.
    pub fn list(&self) -> Result<Vec<(u64, u64)>> {
        Ok(self.scan()?.snaps)
    }

    /// Deletes all but the newest `keep` snapshot files (and stale temp files); returns the
    /// deleted paths. `.broken` files and foreign files are kept.
    ///
    /// "Newest" counts every valid-looking file, including one whose WAL mark was never
    /// written; callers SHOULD call this only after the latest save and its WAL mark both
    /// succeeded, and keep at least 1. MUST NOT run concurrently with [`Snapshotter::save`].
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be read, a file cannot be deleted, or the
    /// directory cannot be synced. Files deleted before the failure stay deleted.
    pub fn purge(&self, keep: usize) -> Result<Vec<PathBuf>> {
        let scan = self.scan()?;
        let old = scan.snaps.iter().skip(keep);
        let doomed: Vec<PathBuf> = old
            .map(|&(index, term)| self.dir.join(snap_file_name(index, term)))
            .chain(scan.temps.iter().map(|name| self.dir.join(name)))
            .collect();
        for path in &doomed {
            fs::remove_file(path)
                .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(doomed)
    }

    /// Renames a corrupt file to `<name>.broken` (replacing an older one of that name) and
    /// syncs the directory; returns the new path.
    fn quarantine(&self, file: &Path) -> Result<PathBuf> {
        let mut broken = file.as_os_str().to_owned();
        broken.push(BROKEN_SUFFIX);
        let broken = PathBuf::from(broken);
        fs::rename(file, &broken).map_err(|e| {
            Error::io(
                format!("rename {} to {}", file.display(), broken.display()),
                e,
            )
        })?;
        sync_dir(&self.dir)?;
        Ok(broken)
    }

    /// Lists the directory once: snapshot files newest first, and temp file names.
    fn scan(&self) -> Result<Scan> {
        let context = || format!("read dir {}", self.dir.display());
        let mut scan = Scan::default();
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io(context(), e))? {
            let entry = entry.map_err(|e| Error::io(context(), e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue; // not UTF-8: not ours
            };
            let is_file = entry
                .file_type()
                .map_err(|e| Error::io(context(), e))?
                .is_file();
            if !is_file {
                continue;
            }
            if let Some(id) = parse_snap_file_name(&name) {
                scan.snaps.push(id);
            } else if is_temp_file_name(&name) {
                scan.temps.push(name);
            } else if is_staged_file_name(&name) {
                scan.staged.push(name);
            }
        }
        scan.snaps.sort_unstable_by(|a, b| b.cmp(a));
        Ok(scan)
    }
}

/// One listing of the snapshot directory.
#[derive(Debug, Default)]
struct Scan {
    /// (index, term) of snapshot files, newest first.
    snaps: Vec<(u64, u64)>,
    /// Names of temp files left by interrupted saves.
    temps: Vec<String>,
    /// Names of staged (received, not installed) snapshots.
    staged: Vec<String>,
}

/// Creates `dir` and any missing ancestors, fsyncing the parent of each one created.
fn create_dir_durably(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("create dir {}", dir.display()), e))?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

/// A writer that counts and CRCs what passes through it.
struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes written between two write-back steps of a large file.
const WRITE_BEHIND_BYTES: u64 = 8 << 20;

/// A file writer that keeps the dirty pages of a large file bounded: after every
/// [`WRITE_BEHIND_BYTES`] it starts the write-back of that range and waits for the range before
/// it (`sync_file_range`). The final fsync then has little left to flush, so a snapshot of
/// hundreds of MB does not queue one burst of writes in front of the WAL's fsyncs. Durability
/// still comes from that final fsync alone.
pub struct WriteBehind {
    file: File,
    written: u64,
    /// Write-back was started up to here...
    started_to: u64,
    /// ... and waited for up to here.
    waited_to: u64,
}

impl WriteBehind {
    /// Writes to `file` from its current start (a new, empty file).
    pub fn new(file: File) -> WriteBehind {
        WriteBehind {
            file,
            written: 0,
            started_to: 0,
            waited_to: 0,
        }
    }

    /// The file, for its final fsync.
    pub fn into_inner(self) -> File {
        self.file
    }

    fn range(&self, from: u64, to: u64, flags: libc::c_uint) {
        use std::os::fd::AsRawFd;
        let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
            return;
        };
        // SAFETY: a valid open descriptor and a range inside what was written; the call only
        // schedules or waits for write-back. A failure is harmless: the final fsync reports.
        unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), from, len, flags);
        }
    }
}

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started_to >= WRITE_BEHIND_BYTES {
            if self.started_to > self.waited_to {
                let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                self.range(self.waited_to, self.started_to, wait);
            }
            self.range(self.started_to, self.written, libc::SYNC_FILE_RANGE_WRITE);
            self.waited_to = self.started_to;
            self.started_to = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The header of a snapshot file (refused for an empty snapshot, index 0).
fn file_head(metadata: &SnapshotMetadata, data_len: u64) -> Result<Vec<u8>> {
    if metadata.index == 0 {
        return Err(Error::EmptySnapshot);
    }
    format::encode_head(metadata, data_len).map_err(|reason| Error::Encode { reason })
}

/// Creates (or truncates) `path`, writes `head`, the data from `write_data` and the CRC
/// trailer, and fsyncs the file.
fn write_streamed<F>(path: &Path, head: &[u8], data_len: u64, write_data: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let context = |what: &str| format!("{what} {}", path.display());
    let file = File::create(path).map_err(|e| Error::io(context("create"), e))?;
    let file = WriteBehind::new(file);
    let mut w = CrcWriter {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        written: 0,
    };
    w.write_all(head)
        .map_err(|e| Error::io(context("write"), e))?;
    write_data(&mut w).map_err(|e| Error::io(context("write"), e))?;
    let data_written = w.written - head.len() as u64;
    if data_written != data_len {
        return Err(Error::Encode {
            reason: format!("{data_written} data bytes written, {data_len} announced"),
        });
    }
    let trailer = w.crc.clone().finalize().to_le_bytes();
    let mut inner = w.inner;
    inner
        .write_all(&trailer)
        .map_err(|e| Error::io(context("write"), e))?;
    let file = inner
        .into_inner()
        .map_err(|e| Error::io(context("write"), e.into_error()))?;
    file.into_inner()
        .sync_all()
        .map_err(|e| Error::io(context("fsync"), e))
}

/// Reads a whole file into one exactly-sized buffer. `NotFound` becomes [`Error::NoSnapshot`].
fn read_whole_file(path: &Path) -> Result<Vec<u8>> {
    let context = |what: &str| format!("{what} {}", path.display());
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoSnapshot),
        Err(e) => return Err(Error::io(context("open"), e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io(context("stat"), e))?
        .len();
    let len = usize::try_from(len).map_err(|_| Error::Corrupt {
        file: path.to_path_buf(),
        reason: format!("file is {len} bytes, more than this machine can address"),
    })?;
    // The file's real size bounds the allocation; no length read from its bytes is trusted.
    let mut bytes = vec![0; len];
    file.read_exact(&mut bytes)
        .map_err(|e| Error::io(context("read"), e))?;
    Ok(bytes)
}

/// Fsyncs a directory so that renames, creations and deletions in it are durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync dir {}", dir.display()), e))
}

/// The data of one snapshot file, read as a stream (see [`Snapshotter::read_data`]).
pub struct DataReader {
    path: PathBuf,
    reader: io::BufReader<File>,
    crc: crc32fast::Hasher,
    remaining: u64,
    metadata: SnapshotMetadata,
}

impl DataReader {
    /// The snapshot's metadata.
    pub fn metadata(&self) -> &SnapshotMetadata {
        &self.metadata
    }

    /// Data bytes not read yet (all of them, before the first read).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Reads whatever data is left and checks the file's CRC.
    ///
    /// # Errors
    /// [`Error::Corrupt`] on a CRC mismatch, [`Error::Io`] when reading fails.
    pub fn finish(mut self) -> Result<()> {
        io::copy(&mut self, &mut io::sink())
            .map_err(|e| Error::io(format!("read {}", self.path.display()), e))?;
        let mut trailer = [0u8; format::TRAILER_BYTES];
        self.reader
            .read_exact(&mut trailer)
            .map_err(|e| Error::io(format!("read {}", self.path.display()), e))?;
        let stored = u32::from_le_bytes(trailer);
        let actual = self.crc.clone().finalize();
        if stored != actual {
            return Err(Error::Corrupt {
                file: self.path.clone(),
                reason: format!("CRC mismatch: stored {stored:08x}, computed {actual:08x}"),
            });
        }
        Ok(())
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "snapshot file ends inside its data",
            ));
        }
        self.crc.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}
