//! The [`Wal`] handle: creating, opening (replay and repair), appending, releasing.
//!
//! Owns the active segment's file descriptor (the only file ever written) and the in-memory
//! facts the next segment head needs: the CRC chain, the last hard state, the latest snapshot
//! mark and raft's last index. Closed segments are only read (on open) and deleted (by
//! `release_to`).

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft_proto::eraftpb::{Entry, HardState};

use crate::error::{io_err, Error, Result};
use crate::record::{self, Encoder, SegmentSeed, COMMIT_RECORD_BYTES, HARD_STATE_RECORD_BYTES};
use crate::replay::ReplayState;
use crate::scan::{self, Damage, SegmentEnd, SegmentInput, Tail};
use crate::segment::{self, SegmentFile};
use crate::spare::Spares;
use crate::{Metadata, Options, Replay, SnapshotMark, TailRepair};

/// An open write-ahead log. See the crate docs for the format and the recovery procedure.
///
/// One `Wal` per directory: opening takes an advisory lock on the active segment.
/// After any [`Error::Io`] from a writing call the log is poisoned: every later call returns
/// [`Error::Poisoned`] and the caller MUST NOT use it again (abort the process).
pub struct Wal {
    dir: PathBuf,
    options: Options,
    metadata: Metadata,
    active: Active,
    closed: Vec<Closed>,
    /// crc of the last record written.
    chain: u32,
    hard_state: HardState,
    latest_mark: Option<SnapshotMark>,
    last_index: u64,
    /// Reused encoding buffer.
    buf: Vec<u8>,
    unsynced: bool,
    poisoned: bool,
    tail_repair: Option<TailRepair>,
    /// The next segment's zero-filled file, made in the background (`spare.rs`).
    spares: Spares,
}

/// The segment being appended to.
struct Active {
    file: File,
    path: PathBuf,
    seq: u64,
    seed: u32,
    /// Bytes written (end of the last batch).
    offset: u64,
    /// Preallocated size; a batch that would pass it goes to a new segment.
    capacity: u64,
    max_index: Option<u64>,
}

/// A full segment, never written again.
struct Closed {
    path: PathBuf,
    max_index: Option<u64>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("active", &self.active.path)
            .field("offset", &self.active.offset)
            .field("closed_segments", &self.closed.len())
            .field("last_index", &self.last_index)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// True when `dir` holds at least one segment file.
    pub fn exists(dir: &Path) -> bool {
        fs::read_dir(dir).is_ok_and(|mut entries| {
            entries.any(|e| {
                e.ok()
                    .and_then(|e| e.file_name().to_str().and_then(segment::parse_segment_name))
                    .is_some()
            })
        })
    }

    /// A new log in `dir` (created if missing) whose first segment holds `metadata`.
    ///
    /// The segment is made as a temp file, synced, renamed, and the directory fsynced.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if `dir` holds segments; [`Error::InvalidOptions`];
    /// [`Error::Io`] on any file system failure.
    pub fn create(dir: &Path, metadata: Metadata, options: Options) -> Result<Wal> {
        options.validate()?;
        if !dir.is_dir() {
            fs::create_dir_all(dir)
                .map_err(io_err(|| format!("creating directory {}", dir.display())))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                segment::sync_dir(parent)?;
            }
        }
        if Wal::exists(dir) {
            return Err(Error::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        segment::remove_temp_files(dir)?;
        let head = SegmentHead {
            seq: 0,
            first_index: 1,
            seed: random_seed(),
            metadata: &metadata,
            hard_state: &HardState::default(),
            mark: None,
        };
        let mut spares = Spares::default();
        let (active, chain) = new_segment(dir, &options, &head, 0, &mut spares)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            metadata,
            active,
            closed: Vec::new(),
            chain,
            hard_state: HardState::default(),
            latest_mark: None,
            last_index: 0,
            buf: Vec::new(),
            unsynced: false,
            poisoned: false,
            tail_repair: None,
            spares,
            options,
        })
    }

    /// Every snapshot mark in a complete batch of the log, oldest first (the copies repeated in
    /// segment heads listed once), without changing anything. A torn tail is ignored.
    ///
    /// A mark may be newer than the last hard state's commit (a crash between the mark and the
    /// hard state after it): a snapshot only holds committed state, so the caller that opens at
    /// such a mark MUST raise the replayed hard state's commit to the mark's index.
    ///
    /// # Errors
    /// [`Error::NotFound`] without segments; [`Error::Corrupt`] / [`Error::MissingSegment`] for
    /// damage before the torn tail; [`Error::Io`] if files cannot be read.
    pub fn snapshot_marks(dir: &Path, options: &Options) -> Result<Vec<SnapshotMark>> {
        options.validate()?;
        let segments = list_existing(dir)?;
        let mut state = ReplayState::new((0, 0), false);
        let mut chain = None;
        for (i, seg) in segments.iter().enumerate() {
            state.begin_segment(seg.first_index, i == 0);
            let last = i + 1 == segments.len();
            let end = if last {
                let bytes = fs::read(&seg.path)
                    .map_err(io_err(|| format!("reading {}", seg.path.display())))?;
                scan_bytes(seg, &bytes, chain, true, options, &mut state)?
            } else {
                scan_closed(seg, chain, options, &mut state)?
            };
            chain = Some(end.chain);
        }
        Ok(state.marks)
    }

    /// Opens the log for appending after replaying it from snapshot `at` = (index, term).
    ///
    /// `(0, 0)` replays from the very beginning (segment 0 must exist). Otherwise a mark with
    /// exactly that index and term must be in the log. A torn tail in the last segment is
    /// repaired (see the crate docs, and [`Wal::tail_repair`]).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::MissingSegment`], [`Error::Corrupt`],
    /// [`Error::SnapshotMarkNotFound`], [`Error::Locked`], [`Error::InvalidOptions`],
    /// [`Error::Io`].
    pub fn open(dir: &Path, at: (u64, u64), options: Options) -> Result<(Wal, Replay)> {
        options.validate()?;
        let segments = list_existing(dir)?;
        if at == (0, 0) && segments[0].seq != 0 {
            return Err(Error::MissingSegment {
                dir: dir.to_path_buf(),
                seq: 0,
            });
        }
        let last = segments.last().ok_or_else(|| Error::NotFound {
            dir: dir.to_path_buf(),
        })?;
        // Lock before reading anything, so a live writer makes this fail fast.
        let last_file = open_locked(&last.path)?;
        segment::remove_temp_files(dir)?;
        let mut state = ReplayState::new(at, true);
        let (closed, chain) = scan_closed_segments(&segments, &options, &mut state)?;
        state.begin_segment(last.first_index, segments.len() == 1);
        let (active, end, tail_repair) = open_last(last, last_file, chain, &options, &mut state)?;
        if at != (0, 0) && !state.mark_found {
            return Err(Error::SnapshotMarkNotFound {
                index: at.0,
                term: at.1,
            });
        }
        let metadata = state.metadata.ok_or_else(|| Error::Corrupt {
            file: last.path.clone(),
            offset: 0,
            index: None,
            reason: "no metadata record".into(),
        })?;
        let replay = Replay {
            metadata,
            hard_state: state.hard_state.clone(),
            entries: std::mem::take(&mut state.entries),
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
            metadata,
            active,
            closed,
            chain: end.chain,
            hard_state: state.hard_state.clone(),
            latest_mark: state.latest_mark().cloned(),
            last_index: state.last_index.max(at.0),
            buf: Vec::new(),
            unsynced: false,
            poisoned: false,
            tail_repair,
            spares: Spares::default(),
            options,
        };
        Ok((wal, replay))
    }

    /// The metadata written at the head of every segment.
    pub fn metadata(&self) -> Metadata {
        self.metadata
    }

    /// What `open` cut off a torn tail, if it did.
    pub fn tail_repair(&self) -> Option<&TailRepair> {
        self.tail_repair.as_ref()
    }

    /// The active segment and the offset at which the next batch will be written.
    pub fn write_position(&self) -> (&Path, u64) {
        (&self.active.path, self.active.offset)
    }

    /// Raft's last index as this log knows it: the last entry saved, or a later snapshot mark.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Appends one batch: `hard_state` (if any), then `entries`, then a batch commit mark, in one
    /// write; then `fdatasync` when `sync`. Nothing is durable before a sync.
    ///
    /// `entries` MUST be contiguous and start at or below [`Wal::last_index`] + 1; an entry at
    /// an existing index replaces that entry and all after it (raft's rule). A batch never spans
    /// segments: when it does not fit the active segment, a new one is made first (sized to fit
    /// if the batch is bigger than `segment_size_bytes`). Empty input only syncs (if asked).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] and [`Error::RecordTooLarge`] write nothing. [`Error::Io`] is
    /// FATAL: the log is poisoned and MUST NOT be used again. [`Error::Poisoned`].
    pub fn save(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        sync: bool,
    ) -> Result<()> {
        self.check_poisoned()?;
        if hard_state.is_none() && entries.is_empty() {
            return if sync { self.sync() } else { Ok(()) };
        }
        self.check_entries(entries)?;
        let needed = self.batch_bytes(hard_state.is_some(), entries)?;
        self.make_room(needed)?;
        let mut enc = Encoder::new(
            &mut self.buf,
            self.active.offset,
            self.chain,
            self.options.max_record_bytes,
        );
        if let Some(hs) = hard_state {
            enc.hard_state(hs);
        }
        for entry in entries {
            enc.entry(entry)?;
        }
        enc.commit(self.active.seq, self.active.seed);
        let chain = enc.chain();
        self.write_batch(chain, sync)?;
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            debug_assert!(first.index <= last.index);
            self.last_index = last.index;
            self.active.max_index = self.active.max_index.max(Some(last.index));
        }
        Ok(())
    }

    /// Appends a snapshot mark as its own batch and `fdatasync`s before returning.
    ///
    /// The snapshot itself MUST already be durable (snap file saved) before this call.
    ///
    /// # Errors
    /// As [`Wal::save`].
    pub fn save_snapshot_mark(&mut self, mark: &SnapshotMark) -> Result<()> {
        self.mark_batch(mark, false)
    }

    /// Appends the mark of a snapshot received from the leader, which replaced the whole log,
    /// and `fdatasync`s before returning. Its batch holds a log reset record before the mark:
    /// on replay, every entry written before it is dropped (a crash before the first append
    /// after the install would otherwise leave a stale tail after the snapshot), and a replay
    /// from an older snapshot refuses to cross it. Raft's last index becomes the mark's.
    ///
    /// # Errors
    /// As [`Wal::save`].
    pub fn save_received_snapshot_mark(&mut self, mark: &SnapshotMark) -> Result<()> {
        self.mark_batch(mark, true)
    }

    fn mark_batch(&mut self, mark: &SnapshotMark, reset: bool) -> Result<()> {
        self.check_poisoned()?;
        let conf_state = record::encode_conf_state(&mark.conf_state)?;
        let len = 16 + conf_state.len();
        self.check_record_len(len)?;
        let reset_bytes = if reset {
            record::LOG_RESET_RECORD_BYTES
        } else {
            0
        };
        let needed = (reset_bytes + record::record_bytes(len) + COMMIT_RECORD_BYTES) as u64;
        self.make_room(needed)?;
        let mut enc = Encoder::new(
            &mut self.buf,
            self.active.offset,
            self.chain,
            self.options.max_record_bytes,
        );
        if reset {
            enc.log_reset(mark.index, mark.term);
        }
        enc.snapshot_mark(mark, &conf_state)?;
        enc.commit(self.active.seq, self.active.seed);
        let chain = enc.chain();
        self.write_batch(chain, true)?;
        self.last_index = if reset {
            mark.index
        } else {
            self.last_index.max(mark.index)
        };
        if self
            .latest_mark
            .as_ref()
            .is_none_or(|m| m.index <= mark.index)
        {
            self.latest_mark = Some(mark.clone());
        }
        Ok(())
    }

    /// `fdatasync`s everything saved so far.
    ///
    /// # Errors
    /// [`Error::Io`] is FATAL (poisons the log); [`Error::Poisoned`].
    pub fn sync(&mut self) -> Result<()> {
        self.check_poisoned()?;
        if self.unsynced {
            let path = self.active.path.clone();
            let result = self
                .active
                .file
                .sync_data()
                .map_err(io_err(|| format!("fdatasync {}", path.display())));
            self.poison_on_err(result)?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Deletes, oldest first, the closed segments whose entries all have index <= `index`
    /// (the active segment is never deleted), then fsyncs the directory.
    ///
    /// The caller MUST have saved a snapshot mark at or above `index` first. Every segment head
    /// repeats the metadata, the hard state and the latest mark, so nothing else is lost.
    ///
    /// # Errors
    /// [`Error::Io`] if a deletion fails (segments deleted before it stay deleted);
    /// [`Error::Poisoned`].
    pub fn release_to(&mut self, index: u64) -> Result<()> {
        self.check_poisoned()?;
        let releasable = self.releasable(index);
        for deleted in 0..releasable {
            let path = &self.closed[deleted].path;
            if let Err(e) = fs::remove_file(path) {
                let path = path.clone();
                self.closed.drain(..deleted);
                return Err(io_err(|| format!("deleting {}", path.display()))(e));
            }
        }
        self.closed.drain(..releasable);
        if releasable > 0 {
            segment::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Like [`Wal::release_to`], but leaves the deleting to the caller: the closed segments
    /// whose entries all have index <= `index` are forgotten here and their paths returned, to
    /// be deleted (then the directory fsynced) off the writer's thread. A segment left behind
    /// by a crash before that is only disk space: replay starts at the mark.
    ///
    /// # Errors
    /// [`Error::Poisoned`].
    pub fn forget_to(&mut self, index: u64) -> Result<Vec<std::path::PathBuf>> {
        self.check_poisoned()?;
        let releasable = self.releasable(index);
        Ok(self.closed.drain(..releasable).map(|c| c.path).collect())
    }

    /// How many of the oldest closed segments hold only entries at or below `index`.
    fn releasable(&self, index: u64) -> usize {
        self.closed
            .iter()
            .take_while(|c| c.max_index.is_none_or(|m| m <= index))
            .count()
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    fn poison_on_err<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn check_entries(&self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index == 0 || first.index > self.last_index + 1 {
            return Err(Error::InvalidInput {
                reason: format!(
                    "first entry index {} must be in 1..={}",
                    first.index,
                    self.last_index + 1
                ),
            });
        }
        if let Some(pair) = entries.windows(2).find(|p| p[1].index != p[0].index + 1) {
            return Err(Error::InvalidInput {
                reason: format!(
                    "entries not contiguous: {} then {}",
                    pair[0].index, pair[1].index
                ),
            });
        }
        Ok(())
    }

    fn check_record_len(&self, len: usize) -> Result<()> {
        if len as u64 > self.options.max_record_bytes {
            return Err(Error::RecordTooLarge {
                size: len as u64,
                max: self.options.max_record_bytes,
            });
        }
        Ok(())
    }

    /// Bytes the batch will take on disk; checks every record's size first.
    fn batch_bytes(&self, with_hard_state: bool, entries: &[Entry]) -> Result<u64> {
        let mut total = COMMIT_RECORD_BYTES;
        if with_hard_state {
            total += HARD_STATE_RECORD_BYTES;
        }
        for entry in entries {
            let len = record::entry_payload_len(entry);
            self.check_record_len(len)?;
            total += record::record_bytes(len);
        }
        Ok(total as u64)
    }

    /// Rolls over to a new segment unless `needed` bytes fit the active one.
    fn make_room(&mut self, needed: u64) -> Result<()> {
        if self.active.offset + needed <= self.active.capacity {
            return Ok(());
        }
        let result = self.sync().and_then(|()| {
            let seq = self.active.seq + 1;
            self.start_segment(seq, needed)
        });
        self.poison_on_err(result)
    }

    /// Makes segment `seq` (head: seed, metadata, hard state, latest mark) with room for
    /// `needed` more bytes and makes it the active segment; the old one becomes closed.
    fn start_segment(&mut self, seq: u64, needed: u64) -> Result<()> {
        let head = SegmentHead {
            seq,
            first_index: self.last_index + 1,
            seed: self.chain,
            metadata: &self.metadata,
            hard_state: &self.hard_state,
            mark: self.latest_mark.as_ref(),
        };
        let (active, chain) =
            new_segment(&self.dir, &self.options, &head, needed, &mut self.spares)?;
        let old = std::mem::replace(&mut self.active, active);
        self.closed.push(Closed {
            path: old.path,
            max_index: old.max_index,
        });
        self.chain = chain;
        Ok(())
    }

    /// Writes the encoded batch in `self.buf` at the end of the active segment.
    fn write_batch(&mut self, chain: u32, sync: bool) -> Result<()> {
        let path = &self.active.path;
        let result = self
            .active
            .file
            .write_all_at(&self.buf, self.active.offset)
            .map_err(io_err(|| format!("writing {}", path.display())));
        self.poison_on_err(result)?;
        let before = self.active.offset;
        self.active.offset += self.buf.len() as u64;
        self.chain = chain;
        // The next segment's spare is started when this one fills past half (once per
        // segment): only a log that grows makes one, and it has half a segment's time.
        let half = self.active.capacity / 2;
        if before < half && self.active.offset >= half {
            self.spares
                .prepare(&self.dir, self.options.segment_size_bytes);
        }
        self.unsynced = true;
        if sync {
            self.sync()?;
        }
        Ok(())
    }
}

/// What the head batch of a new segment holds.
struct SegmentHead<'a> {
    seq: u64,
    first_index: u64,
    /// The chain value the segment continues (random for segment 0).
    seed: u32,
    metadata: &'a Metadata,
    hard_state: &'a HardState,
    mark: Option<&'a SnapshotMark>,
}

/// Creates the segment described by `head` with room for `needed` bytes after the head (in a
/// spare if one is ready), locks it, and returns it with the chain value after its head batch.
fn new_segment(
    dir: &Path,
    options: &Options,
    head: &SegmentHead<'_>,
    needed: u64,
    spares: &mut Spares,
) -> Result<(Active, u32)> {
    let mut bytes = Vec::new();
    let mut enc = Encoder::new(&mut bytes, 0, head.seed, options.max_record_bytes);
    enc.seed(&SegmentSeed {
        seq: head.seq,
        first_index: head.first_index,
        seed: head.seed,
    });
    enc.metadata(head.metadata);
    enc.hard_state(head.hard_state);
    if let Some(mark) = head.mark {
        enc.snapshot_mark(mark, &record::encode_conf_state(&mark.conf_state)?)?;
    }
    enc.commit(head.seq, head.seed);
    let chain = enc.chain();
    let capacity = options.segment_size_bytes.max(bytes.len() as u64 + needed);
    let spare = spares.take(capacity);
    let (file, path) = segment::create(dir, head.seq, head.first_index, &bytes, capacity, spare)?;
    lock(&file, &path)?;
    let active = Active {
        file,
        path,
        seq: head.seq,
        seed: head.seed,
        offset: bytes.len() as u64,
        capacity,
        max_index: None,
    };
    Ok((active, chain))
}

/// Segments of an existing log.
fn list_existing(dir: &Path) -> Result<Vec<SegmentFile>> {
    let not_found = || Error::NotFound {
        dir: dir.to_path_buf(),
    };
    if !dir.is_dir() {
        return Err(not_found());
    }
    let segments = segment::list(dir)?;
    if segments.is_empty() {
        return Err(not_found());
    }
    Ok(segments)
}

/// Scans every segment but the last, oldest first, into `state`; returns them as closed
/// segments with the chain value after the last one.
fn scan_closed_segments(
    segments: &[SegmentFile],
    options: &Options,
    state: &mut ReplayState,
) -> Result<(Vec<Closed>, Option<u32>)> {
    let older = &segments[..segments.len().saturating_sub(1)];
    let mut closed = Vec::with_capacity(older.len());
    let mut chain = None;
    for (i, seg) in older.iter().enumerate() {
        state.begin_segment(seg.first_index, i == 0);
        let end = scan_closed(seg, chain, options, state)?;
        chain = Some(end.chain);
        if i == 0 {
            state.reserve_for(end.committed, &segments[1..]);
        }
        closed.push(Closed {
            path: seg.path.clone(),
            max_index: state.segment_max_index,
        });
    }
    Ok((closed, chain))
}

/// Scans a closed segment through a read-only memory map (dropped before returning).
fn scan_closed(
    seg: &SegmentFile,
    chain: Option<u32>,
    options: &Options,
    state: &mut ReplayState,
) -> Result<SegmentEnd> {
    let ctx = |what: &'static str| io_err(move || format!("{what} {}", seg.path.display()));
    let file = File::open(&seg.path).map_err(ctx("opening"))?;
    let len = file.metadata().map_err(ctx("reading size of"))?.len();
    if len == 0 {
        return scan_bytes(seg, &[], chain, false, options, state);
    }
    // SAFETY: closed segments are immutable: this crate never writes, truncates or deletes a
    // closed segment while this map (local to this call) is alive, and the advisory lock on the
    // active segment keeps other `Wal`s off the directory. Another program changing the file
    // meanwhile is outside the contract (crate docs).
    let map =
        unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(ctx("mapping"))?;
    scan_bytes(seg, &map, chain, false, options, state)
}

/// Scans bytes of `seg`, mapping damage to [`Error::Corrupt`].
fn scan_bytes(
    seg: &SegmentFile,
    bytes: &[u8],
    chain: Option<u32>,
    last: bool,
    options: &Options,
    state: &mut ReplayState,
) -> Result<SegmentEnd> {
    let input = SegmentInput {
        bytes,
        seq: seg.seq,
        first_index: seg.first_index,
        chain,
        last,
        max_record_bytes: options.max_record_bytes,
    };
    scan::scan_segment(&input, state).map_err(|d| corrupt(&seg.path, d))
}

fn corrupt(file: &Path, d: Damage) -> Error {
    Error::Corrupt {
        file: file.to_path_buf(),
        offset: d.offset,
        index: d.index,
        reason: d.reason,
    }
}

/// Opens `path` for reading and writing and takes the advisory lock on it.
fn open_locked(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(|| format!("opening {}", path.display())))?;
    lock(&file, path)?;
    Ok(file)
}

/// Reads (ordinary reads) and scans the last segment, already open and locked as `file`;
/// repairs a torn tail and restores its preallocation.
fn open_last(
    seg: &SegmentFile,
    mut file: File,
    chain: Option<u32>,
    options: &Options,
    state: &mut ReplayState,
) -> Result<(Active, SegmentEnd, Option<TailRepair>)> {
    let ctx = |what: &'static str| io_err(move || format!("{what} {}", seg.path.display()));
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(ctx("reading"))?;
    let end = scan_bytes(seg, &bytes, chain, true, options, state)?;
    let file_len = bytes.len() as u64;
    drop(bytes);
    let capacity = file_len.max(options.segment_size_bytes);
    let tail_repair = match &end.tail {
        Tail::Clean => {
            if capacity > file_len {
                segment::preallocate(&file, capacity).map_err(ctx("preallocating"))?;
                file.sync_all().map_err(ctx("syncing"))?;
            }
            None
        }
        Tail::Torn(damage) => {
            let broken_copy =
                segment::truncate_torn_tail(&file, &seg.path, end.committed, capacity)?;
            Some(TailRepair {
                file: seg.path.clone(),
                broken_copy,
                truncated_at: end.committed,
                damage_offset: damage.offset,
                reason: damage.reason.clone(),
            })
        }
    };
    let active = Active {
        file,
        path: seg.path.clone(),
        seq: seg.seq,
        seed: end.seed,
        offset: end.committed,
        capacity,
        max_index: state.segment_max_index,
    };
    Ok((active, end, tail_repair))
}

/// Takes the advisory lock that keeps a second `Wal` off this directory.
fn lock(file: &File, path: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            file: path.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(io_err(|| format!("locking {}", path.display()))(e)),
    }
}

/// A fresh chain start, so that records of two different logs (say, blocks of a deleted log
/// showing up in a new file's tail) never chain into each other.
fn random_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}
