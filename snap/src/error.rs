//! The crate's error type.
//!
//! Each variant tells the caller what to do:
//! - [`Error::Io`]: the disk or the file system failed. On the save path the snapshot is not
//!   durable and the caller MUST NOT write the WAL snapshot mark.
//! - [`Error::Corrupt`]: a snapshot file failed its checks (deterministic: reading it again
//!   gives the same answer). [`Snapshotter::load_newest_available`] handles it by renaming
//!   the file `<name>.broken` and trying the next older one.
//! - [`Error::NoSnapshot`]: the requested snapshot file does not exist.
//! - [`Error::EmptySnapshot`]: a snapshot at index 0 was given to `save`; raft never makes one.
//! - [`Error::Encode`]: the metadata could not be encoded (a bug or an oversized conf state).
//!
//! [`Snapshotter::load_newest_available`]: crate::Snapshotter::load_newest_available

use std::path::PathBuf;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when saving, loading, listing or purging snapshot files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed; `context` says which one and on which path.
    #[error("snapshot I/O failed: {context}: {source}")]
    Io {
        /// What was being done, with the path involved.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A snapshot file is damaged: bad magic, bad lengths, bad CRC, undecodable metadata, or
    /// metadata that does not match the file name.
    #[error("snapshot file {} is corrupt: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// The requested snapshot file does not exist.
    #[error("no such snapshot file")]
    NoSnapshot,
    /// The snapshot to save has index 0 (an empty snapshot); it is never written.
    #[error("refusing to save an empty snapshot (index 0)")]
    EmptySnapshot,
    /// The snapshot metadata could not be encoded or is larger than the format allows.
    #[error("cannot encode snapshot metadata: {reason}")]
    Encode {
        /// Why encoding failed.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with a description of the operation.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
