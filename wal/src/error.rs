//! The crate's error type.
//!
//! Every variant says what a caller does about it:
//! - [`Error::Io`] and [`Error::Poisoned`] are fatal: the log MUST NOT be used any more and the
//!   process should abort (a failed `fdatasync` may have dropped dirty pages; retrying could
//!   acknowledge data that is not on disk).
//! - [`Error::Corrupt`] and [`Error::MissingSegment`] mean the log on disk is damaged before its
//!   torn tail; the log refuses to open and an operator has to look at the named file.
//! - [`Error::SnapshotMarkNotFound`] means the caller picked a snapshot the log has no mark for;
//!   try an older snapshot.
//! - [`Error::InvalidInput`], [`Error::InvalidOptions`] and [`Error::RecordTooLarge`] are caller
//!   bugs or limits; nothing was written.

use std::path::PathBuf;

/// Result alias used by every fallible function of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the write-ahead log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system call failed. During `save`, `sync`, `save_snapshot_mark` or segment
    /// rollover this is FATAL: the log is poisoned and MUST NOT be used again.
    #[error("wal I/O error while {context}: {source}")]
    Io {
        /// What the log was doing, with the path involved.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Damaged data before the torn tail: a bad record in a closed segment, a broken CRC chain,
    /// a damaged record followed by a complete batch, or entries that do not connect.
    #[error("wal corrupt: {} at offset {offset} (index {index:?}): {reason}", file.display())]
    Corrupt {
        /// The segment file holding the damage.
        file: PathBuf,
        /// Byte offset of the first bad record inside `file`.
        offset: u64,
        /// Raft index nearest the damage: the entry at `offset` when it could be read,
        /// otherwise the last entry read intact before `offset`.
        index: Option<u64>,
        /// What is wrong, for the operator.
        reason: String,
    },
    /// The segment sequence has a hole (or, when opening from the beginning, segment 0 is gone).
    #[error("wal segment {seq:016x} is missing in {}", dir.display())]
    MissingSegment {
        /// The log directory.
        dir: PathBuf,
        /// Sequence number of the first missing segment.
        seq: u64,
    },
    /// `open` was asked to start at a snapshot the log holds no mark for.
    #[error("wal has no snapshot mark with index {index} and term {term}")]
    SnapshotMarkNotFound {
        /// The requested snapshot index.
        index: u64,
        /// The requested snapshot term.
        term: u64,
    },
    /// The directory holds no segment.
    #[error("no wal segments in {}", dir.display())]
    NotFound {
        /// The log directory.
        dir: PathBuf,
    },
    /// `create` found segments already present.
    #[error("a wal already exists in {}", dir.display())]
    AlreadyExists {
        /// The log directory.
        dir: PathBuf,
    },
    /// One record would exceed [`crate::Options::max_record_bytes`]; nothing was written.
    #[error("wal record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Payload size of the offending record.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// An earlier write, sync or rollover failed; the log refuses every further call.
    #[error("wal is poisoned by an earlier fatal write or sync error")]
    Poisoned,
    /// The caller broke a contract (entries not contiguous, not connecting to the log, ...);
    /// nothing was written.
    #[error("invalid input to wal: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// [`crate::Options`] out of range.
    #[error("invalid wal options: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: String,
    },
    /// Another open `Wal` (this or another process) holds the active segment's lock.
    #[error("wal segment {} is locked by another user", file.display())]
    Locked {
        /// The active segment file.
        file: PathBuf,
    },
}

/// Maps an `io::Error` to [`Error::Io`] with a context built lazily.
pub(crate) fn io_err(context: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        context: context(),
        source,
    }
}
