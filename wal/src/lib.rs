//! `wal`: the segmented, CRC-chained write-ahead log under raftexample's raft storage.
//!
//! Synchronous (no tokio). The raft thread owns one [`Wal`]: it saves each Ready's hard state
//! and entries as one batch ([`Wal::save`], `fdatasync` when raft says `must_sync`), saves a
//! snapshot mark after each snapshot file ([`Wal::save_snapshot_mark`]), and on restart opens
//! the log at the snapshot it loaded ([`Wal::open`]) to get the hard state and later entries.
//!
//! # Layout
//! - `record.rs`: pure encode/decode of records (bytes only, no I/O);
//! - `scan.rs`: pure scan of one segment's bytes into batches, and the torn-tail decision;
//! - `replay.rs`: folding batches into metadata, hard state, marks and entries;
//! - `segment.rs`: segment files: names, atomic creation, preallocation, repair;
//! - `spare.rs`: the next segment's zero-filled file, made in the background;
//! - `wal.rs`: the [`Wal`] handle;
//! - `error.rs`: [`Error`].
//!
//! # Files
//! A directory of segments `{seq:016x}-{index:016x}.wal`: `seq` counts from 0 without holes;
//! `index` is the raft index expected next when the segment was made. Each segment is
//! preallocated to [`Options::segment_size_bytes`] (so `fdatasync` need not flush a size
//! change) and made as `<name>.tmp`, synced, renamed, then the directory is fsynced. Once the
//! active segment is half full, the next one's file is written full of zeros in the background
//! (`spare.rs`: `spare-<pid>-<n>.wal.tmp`): a segment made from it has no unwritten extents, so
//! an append's `fdatasync` writes no metadata.
//! A torn tail that recovery cut off is kept as `<name>.broken` (or `<name>.N.broken`).
//!
//! # Format
//! A segment is a sequence of batches followed by zeros (the unused preallocated space):
//!
//! ```text
//! segment: | head batch                                  | batch        | batch | 0 0 0 ...
//!          | seed  metadata  hard state  [mark]  commit  | [hard state] entry* commit |
//!
//! record (8-byte aligned, little-endian):
//!  0        4          8          12     13       16               16+len    16+pad8(len)
//!  +--------+----------+----------+------+--------+----------------+---------+
//!  | crc    | prev_crc | len      | type | 0 0 0  | payload        | 0 .. 0  |
//!  | u32    | u32      | u32      | u8   |        | len bytes      | to 8    |
//!  +--------+----------+----------+------+--------+----------------+---------+
//!  crc      = CRC-32 (crc32fast) of bytes 4 .. 16+pad8(len): prev_crc, len, type, payload, pad
//!  prev_crc = crc of the record before; the seed record's prev_crc is the segment's seed,
//!             which is the crc of the previous segment's last record (random for segment 0)
//!  len      = payload bytes, at most Options::max_record_bytes (checked on write and read)
//!
//! payloads:
//!  1 CRC seed      seq u64 | first_index u64 | seed u32 | 0 u32
//!  2 metadata      node_id u64 | cluster_id u64
//!  3 entry         index u64 | term u64 | entry_type u8 | flags u8 (1 = sync_log) | 0 u16
//!                  | data_len u32 | data | context
//!  4 hard state    term u64 | vote u64 | commit u64
//!  5 snapshot mark index u64 | term u64 | conf_state (protobuf)
//!  6 batch commit  batch_start u64 (offset of the batch's first record) | seq u64 | seed u32
//!                  | records u32 (records in the batch before this one)
//!  7 log reset     index u64 | term u64 (a received snapshot replaced the whole log; written
//!                  in the batch of its mark, before it)
//! ```
//!
//! Invariants: a batch is applied on replay only if its commit record is valid, so a batch is
//! all-or-nothing; a batch never spans segments (a batch larger than a segment gets a segment
//! sized to fit it); every segment starts with a head batch holding the seed, the metadata, the
//! hard state and the latest snapshot mark, so deleting older segments never loses them; every
//! record checks on its own (its crc) and in order (its `prev_crc`), so a missing, reordered or
//! stale record breaks the chain.
//!
//! # Recovery procedure (`open`; `snapshot_marks` does 1 to 6 without repairing)
//! 1. List the segments; delete leftover `*.wal.tmp` files (a crash before their rename).
//!    Sequence numbers must have no hole ([`Error::MissingSegment`]); opening at `(0, 0)`
//!    needs segment 0.
//! 2. Read segments oldest first: closed segments through a read-only memory map, the last one
//!    with ordinary reads. A record is valid when its type is known, reserved bytes are zero,
//!    `len` is at most the maximum and fits the file, the crc matches, and `prev_crc` equals the
//!    previous record's crc (across segments: the seed equals the previous segment's last crc).
//!    The first batch must be seed (naming this file's seq and index) then metadata.
//! 3. Records are held until their batch commit record, which must name the batch's start,
//!    this segment's seq and seed, and the batch's record count. Then the batch is applied:
//!    metadata must never change; the hard state replaces the previous one; marks are listed;
//!    entries with index <= the snapshot index are dropped (and drop every later entry held,
//!    raft's suffix rule); an entry at an index already held replaces it and all after it; an
//!    entry leaving a gap is [`Error::Corrupt`]. A log reset at or below the snapshot index
//!    drops every entry held (they are the log a received snapshot replaced); one above it is
//!    [`Error::Corrupt`] (the entries up to it are not in the log: its snapshot is needed).
//! 4. A segment's scan stops at the first record that is not valid (or at end of file). If all
//!    bytes after the last complete batch are zero, the segment ends cleanly.
//! 5. Otherwise, if the segment is closed (not the last), or its head batch is incomplete:
//!    [`Error::Corrupt`] naming the file, the offset of the first bad record and the index
//!    nearest to it. The log refuses to open.
//! 6. In the last segment: every 8-byte aligned offset after the first bad record is checked
//!    for a valid commit record of this segment (same seq and seed) closing a batch that
//!    starts after the last complete batch. If there is one, a complete batch follows the
//!    damage: [`Error::Corrupt`]. If not, the bytes after the last complete batch are a torn
//!    tail (a partial batch, zeroed or garbage preallocated space).
//! 7. Repair: copy the segment to `<name>.broken` and fsync the copy; truncate the segment at
//!    the end of the last complete batch, preallocate it again, fsync it and the directory.
//!    [`Wal::tail_repair`] reports what was cut.
//! 8. If `at != (0, 0)`, a mark with exactly that index and term must have been read
//!    ([`Error::SnapshotMarkNotFound`]). Appends continue after the last complete batch.
//!
//! Damage *inside* the last complete batch cannot be told from a torn write of it, so it is
//! cut off as in 7 (never silently: the `.broken` copy is kept and [`Wal::tail_repair`] says
//! so). Damage anywhere before the last complete batch makes `open` fail.
//!
//! # Durability contract
//! Nothing is durable before [`Wal::save`] with `sync`, [`Wal::sync`] or
//! [`Wal::save_snapshot_mark`] returns `Ok`. A write or sync error is FATAL: the log is poisoned
//! ([`Error::Poisoned`] afterwards) and the process MUST NOT go on using it (after a failed
//! `fdatasync` the kernel may have dropped the dirty pages, so a retry could report success for
//! data that is not on disk). No other program may change segment files while a `Wal` is open.

#![deny(missing_docs)]

mod error;
mod record;
mod replay;
mod scan;
mod segment;
mod spare;
mod wal;

use std::path::PathBuf;

pub use error::{Error, Result};
pub use raft_proto::eraftpb::{ConfState, Entry, HardState};
pub use wal::Wal;

/// Identity of the log's owner, written at the head of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// The raft node id.
    pub node_id: u64,
    /// The cluster id.
    pub cluster_id: u64,
}

/// A snapshot's position in the log: raft state up to `index` lives in a snapshot file.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotMark {
    /// Last raft index covered by the snapshot.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
    /// Membership as of `index`.
    pub conf_state: ConfState,
}

/// Smallest allowed [`Options::segment_size_bytes`].
pub const MIN_SEGMENT_BYTES: u64 = 1024;
/// Smallest allowed [`Options::max_record_bytes`].
pub const MIN_RECORD_BYTES: u64 = 1024;

/// Tuning of a log; tests use small segments.
#[derive(Debug, Clone)]
pub struct Options {
    /// Preallocated size of a segment; a batch that does not fit goes to a new segment.
    /// Default 64 MiB; at least [`MIN_SEGMENT_BYTES`].
    pub segment_size_bytes: u64,
    /// Largest payload of one record (one raft entry), enforced on write and on read.
    /// Default 64 MiB: far above raft's message and proposal sizes, yet a corrupt length can
    /// never make the reader allocate more (and lengths are also checked against the file).
    /// Between [`MIN_RECORD_BYTES`] and `u32::MAX`.
    pub max_record_bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_size_bytes: 64 << 20,
            max_record_bytes: 64 << 20,
        }
    }
}

impl Options {
    /// Checks the ranges documented on the fields.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] naming the field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.segment_size_bytes < MIN_SEGMENT_BYTES {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "segment_size_bytes {} is below {MIN_SEGMENT_BYTES}",
                    self.segment_size_bytes
                ),
            });
        }
        if !(MIN_RECORD_BYTES..=u64::from(u32::MAX)).contains(&self.max_record_bytes) {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "max_record_bytes {} is outside {MIN_RECORD_BYTES}..={}",
                    self.max_record_bytes,
                    u32::MAX
                ),
            });
        }
        Ok(())
    }
}

/// What [`Wal::open`] read.
#[derive(Debug)]
pub struct Replay {
    /// The log's metadata.
    pub metadata: Metadata,
    /// The last hard state saved (default if none was).
    pub hard_state: HardState,
    /// Entries after the snapshot index, raft's suffix rule applied; contiguous from
    /// `at.index + 1`.
    pub entries: Vec<Entry>,
}

/// What [`Wal::open`] cut off the last segment (recovery step 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRepair {
    /// The repaired segment.
    pub file: PathBuf,
    /// The copy of the segment as it was before the repair.
    pub broken_copy: PathBuf,
    /// The segment now ends here (end of the last complete batch).
    pub truncated_at: u64,
    /// Offset of the first bad record.
    pub damage_offset: u64,
    /// Why that record was bad.
    pub reason: String,
}
