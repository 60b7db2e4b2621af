//! Snapshot files for raftexample, like etcd's `snap` package.
//!
//! A raft snapshot (`eraftpb::Snapshot`: metadata with index, term and conf state, plus the
//! state machine's bytes) is stored as one file per snapshot in a directory owned by a
//! [`Snapshotter`]. The WAL records a *snapshot mark* (index, term) for every snapshot it
//! relies on; this crate and the WAL together give the restart rule of DESIGN.md section 4.
//!
//! # Layout
//! - `lib.rs`: this overview and the public re-exports.
//! - `error.rs`: [`Error`] and [`Result`].
//! - `format.rs`: the byte layout of one file, pure encode/decode, no I/O.
//! - `name.rs`: file names.
//! - `snapshotter.rs`: [`Snapshotter`], every file-system operation.
//!
//! # Files
//! `{term:016x}-{index:016x}.snap`, lowercase hex. While being written a file is named
//! `<name>.tmp`; a file that failed its checks during recovery is renamed `<name>.broken` and
//! kept. Every other name in the directory is ignored.
//!
//! # File format (version 1, little-endian)
//! ```text
//!  0        8 bytes  magic "RAFTSNAP"
//!  8        4 bytes  version = 1                       (u32)
//!  12       4 bytes  M = metadata length, <= 16 MiB    (u32)
//!  16       8 bytes  D = data length                   (u64)
//!  24       M bytes  eraftpb.SnapshotMetadata, protobuf (index, term, conf_state)
//!  24+M     D bytes  data (Snapshot.data)
//!  24+M+D   4 bytes  crc32 of bytes [0, 24+M+D)        (u32, crc32fast)
//!           file length = 28 + M + D, exactly
//! ```
//! A reader checks the lengths against the real file size before slicing anything, so a
//! corrupt length never causes a large allocation: the only allocation is one buffer of the
//! file's size, and `Snapshot.data` is a zero-copy slice of it.
//!
//! # Ordering rules (the caller's side)
//! 1. Save: [`Snapshotter::save`] (temp file, write, fsync, rename, directory fsync), and
//!    only after it returns `Ok`, write the WAL snapshot mark. A crash in between leaves a
//!    snapshot file without a mark, which recovery skips.
//! 2. Restart: read the WAL's snapshot marks, call
//!    [`Snapshotter::load_newest_available`] with them, then open the WAL at the snapshot it
//!    returns (or at the start of the log for `None`).
//! 3. Purge: after a save and its WAL mark, [`Snapshotter::purge`] with [`DEFAULT_KEEP`].
//!
//! # Recovery procedure ([`Snapshotter::load_newest_available`])
//! 1. List `*.snap` files with well-formed names, newest first by (index, term).
//! 2. Skip a file whose (index, term) is not among the WAL's marks; leave it in place.
//! 3. Read the file and check length, magic, CRC, version, metadata, and that the metadata
//!    matches the file name. On failure rename it `<name>.broken`, fsync the directory and
//!    go on with the next older file.
//! 4. Return the first file that passes; `None` if none does.
//!
//! This crate is synchronous and does no logging; [`Snapshotter::recover`] reports what
//! was renamed or skipped so the caller can log it.
#![deny(missing_docs)]

mod error;
mod format;
mod name;
mod snapshotter;

pub use error::{Error, Result};
pub use raft_proto::eraftpb::{Snapshot, SnapshotMetadata};
pub use snapshotter::{DataReader, Recovered, Snapshotter, WriteBehind};

/// How many snapshot files [`Snapshotter::purge`] callers keep by default.
pub const DEFAULT_KEEP: usize = 5;
