//! [`StateMachine`]: the whole contract between the engine and an application.
//!
//! The engine calls it on its apply thread, in log order, one committed command at a time.
//! Commands and images are opaque bytes: the engine frames them (request ID, format byte,
//! snapshot envelope with the membership) and the application never sees that framing.

use std::io::{Read, Write};

use bytes::Bytes;

/// One committed command.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// Its raft index.
    pub index: u64,
    /// Its raft term.
    pub term: u64,
    /// The bytes the proposer gave [`crate::Handle::propose`].
    pub bytes: &'a [u8],
}

/// A committed command that the application cannot decode. It MUST be a no-op (on every
/// replica alike, so state never diverges); its proposer is answered with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command rejected: {0}")]
pub struct Rejected(pub String);

/// An application image that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed application image: {0}")]
pub struct ImageError(pub String);

/// Reads a whole image of at most `limit` bytes into memory, for applications whose state is
/// small enough to decode from one buffer. The buffer grows only as bytes arrive.
///
/// # Errors
/// [`ImageError`] when reading fails or the image is larger than `limit`.
pub fn read_small_image(image: &mut dyn Read, limit: u64) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    image
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| ImageError(format!("cannot read the image: {e}")))?;
    if out.len() as u64 > limit {
        return Err(ImageError(format!(
            "the image is larger than this application's limit of {limit} bytes"
        )));
    }
    Ok(out)
}

/// A snapshot image merged on the snapshot thread (see [`StateMachine::plan_merge`]).
pub trait MergedImage: Send {
    /// Exact length in bytes of what [`MergedImage::write_to`] writes.
    fn len(&self) -> u64;
    /// True when the image has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the image, reading the previous application image once more from `previous`.
    ///
    /// # Errors
    /// Whatever reading or writing returns.
    fn write_to(&self, previous: &mut dyn Read, out: &mut dyn Write) -> std::io::Result<()>;
}

/// A replicated state machine.
///
/// # Contract
/// - [`StateMachine::apply`] MUST be deterministic: the same commands in the same order give
///   the same state and outputs on every replica. Time, randomness and local files are not
///   inputs; if the application needs time, it puts it in the command.
/// - A command that does not decode MUST change nothing and return [`Rejected`], never panic.
///   The engine never stops on bytes that came from the log (an entry of an engine format it
///   does not know is a no-op on every replica); it stops (aborts) only on a local failure
///   (a failed disk write).
/// - The output goes to the proposer on this node only (other replicas drop theirs).
/// - An empty image is the initial state: every initial member bootstraps from it.
/// - Snapshots MUST NOT pause applying for long. Small states serialise themselves in
///   [`StateMachine::image`] (called on the apply thread at the snapshot's index). Large ones
///   set [`StateMachine::MERGES_SNAPSHOTS`] and build each image on the snapshot thread from
///   the previous image and the commands committed since ([`StateMachine::plan_merge`]),
///   never touching the live state.
pub trait StateMachine: Send + 'static {
    /// What [`StateMachine::apply`] returns to the proposer.
    type Output: Send + 'static;

    /// Whether snapshots are merged on the snapshot thread ([`StateMachine::plan_merge`])
    /// instead of serialised on the apply thread ([`StateMachine::image`]).
    const MERGES_SNAPSHOTS: bool = false;

    /// Whether applying one batch of commands is always quick (microseconds per command, no
    /// I/O, no lock held by a slow reader): the engine then applies committed entries on the
    /// raft thread itself whenever the apply thread has nothing queued, which saves a thread
    /// hop per batch on every member. Restores and images always stay on the apply thread.
    /// Leave it `false` when one command can take long: the raft loop must never stall.
    const QUICK_APPLY: bool = false;

    /// Applies one committed command.
    ///
    /// # Errors
    /// [`Rejected`] when the bytes are not a command (nothing changed).
    fn apply(&mut self, command: Command<'_>) -> Result<Self::Output, Rejected>;

    /// Replaces the whole state with the image read from `image` (already validated), taken
    /// at `index`. An empty image is the initial state. The image is streamed from its snap
    /// file, so a large state is never held twice: read it as it comes, and never trust a
    /// length in it for an allocation.
    ///
    /// # Errors
    /// [`ImageError`] when the image does not decode (or cannot be read); the state MUST then
    /// be unchanged.
    fn restore(&mut self, image: &mut dyn Read, index: u64) -> Result<(), ImageError>;

    /// Checks an image received from a peer, end to end (read all of it), before raft sees
    /// it. It is streamed from the staged file, like [`StateMachine::restore`]'s.
    ///
    /// # Errors
    /// [`ImageError`] naming the first problem.
    fn validate(image: &mut dyn Read) -> Result<(), ImageError>
    where
        Self: Sized;

    /// A summary of an image for operators (`snapshot status`: the KV gives its key count),
    /// as (name, value) rows, read from the stream like [`StateMachine::validate`], which it
    /// MUST imply: an image it accepts restores. The default validates and says nothing more.
    ///
    /// # Errors
    /// [`ImageError`] naming the first problem.
    fn summarize(image: &mut dyn Read) -> Result<Vec<(String, serde_json::Value)>, ImageError>
    where
        Self: Sized,
    {
        Self::validate(image)?;
        Ok(Vec::new())
    }

    /// The image of the current state (image strategy; called on the apply thread).
    fn image(&self) -> Vec<u8>;

    /// A digest of the whole current state: equal on replicas with equal states, and cheap
    /// (keep it up to date as commands apply, as the KV does). The engine compares the
    /// members' digests at one index to find a member whose state diverged. `None` (the
    /// default) leaves this application out of the check.
    fn digest(&self) -> Option<u64> {
        None
    }

    /// Merge strategy, on the snapshot thread: plans the image that `commands` (committed
    /// since the previous snapshot, in order, undecodable ones included) make of the previous
    /// image, read once from `previous` to size the result.
    ///
    /// # Errors
    /// An I/O error, or `InvalidData` when the previous image is malformed.
    fn plan_merge(
        previous: &mut dyn Read,
        commands: &[Bytes],
    ) -> std::io::Result<Box<dyn MergedImage>>
    where
        Self: Sized,
    {
        let _ = (previous, commands);
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this state machine does not merge snapshots",
        ))
    }
}
