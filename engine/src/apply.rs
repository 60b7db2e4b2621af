//! The apply thread: hands committed commands to the [`StateMachine`] in log order, off the
//! raft thread, restores received snapshots, and (image strategy) takes snapshot images.
//!
//! Input is the commit channel ([`Apply`], FIFO, bounded: when it is full the raft thread
//! blocks, which is the back-pressure we want: raft must not commit faster than we apply
//! forever). Because it is FIFO, an [`Apply::Snapshot`] sees every earlier entry applied.
//!
//! Output: completed command waiters (output or rejection, by request ID), the applied index
//! on a `watch` channel (reads wait on it), and [`Report::SnapshotImage`] for the raft thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use raft::eraftpb::{Entry, EntryType, SnapshotMetadata};
use slog::{error, info, Logger};
use tokio::sync::watch;

use crate::framing::{decode_entry, read_envelope, EntryData, FormatError};
use crate::membership::Membership;
use crate::protocol::Report;
use crate::state_machine::{Command, StateMachine};
use crate::waiters::{Applied, CommandOutcome, Waiters};

/// Commit channel bound, in messages (each message is one Ready's worth of entries).
pub const COMMIT_CHANNEL_BOUND: usize = 1024;

/// A message on the commit channel.
pub enum Apply {
    /// Committed entries, in log order, following the previous ones without a gap.
    Entries(Vec<Entry>),
    /// Replace the state with the snapshot saved at this (index, term), already durable and
    /// validated: its image is streamed from the snap file.
    Restore(SnapshotMetadata),
    /// Take the image at `meta.index` (every earlier entry was applied) for a snapshot.
    Snapshot {
        /// The snapshot's metadata.
        meta: SnapshotMetadata,
        /// Membership at `meta.index`.
        membership: Membership,
    },
}

/// Everything the apply thread owns or publishes.
pub struct ApplyWorker<S: StateMachine> {
    /// The state machine.
    pub machine: S,
    /// Proposers waiting for their commands.
    pub waiters: Arc<Waiters<CommandOutcome<S::Output>>>,
    /// Publishes the applied index.
    pub applied_tx: watch::Sender<u64>,
    /// Where snapshot images go.
    pub reports: crate::protocol::Reports,
    /// Log.
    pub logger: Logger,
    /// Index and term of the last applied entry.
    pub applied: Applied,
    /// Test-only: panic at the first committed entries.
    pub test_panic: bool,
    /// The snap dir, to stream received snapshots from.
    pub files: snap::Snapshotter,
}

/// The apply worker, shared by the apply thread and (for [`StateMachine::QUICK_APPLY`]
/// machines) the raft thread.
struct Shared<S: StateMachine> {
    worker: Mutex<ApplyWorker<S>>,
    /// Messages sent to the apply thread and not yet handled (counted down under the lock).
    queued: AtomicUsize,
}

/// The worker as the raft thread sees it (not generic: the raft thread names no machine).
trait Worker: Send + Sync {
    /// Messages on their way to the apply thread or being handled there.
    fn queued(&self) -> &AtomicUsize;
    /// Applies `entries` now, or gives them back when the apply thread has work (FIFO).
    fn try_apply(&self, entries: Vec<Entry>) -> Result<(), Vec<Entry>>;
}

impl<S: StateMachine> Worker for Shared<S> {
    fn queued(&self) -> &AtomicUsize {
        &self.queued
    }

    fn try_apply(&self, entries: Vec<Entry>) -> Result<(), Vec<Entry>> {
        // Only the raft thread adds to `queued`: zero means nothing is in the channel or
        // being handled, and the lock (held by the apply thread while it handles a message)
        // settles the rest.
        if self.queued.load(Ordering::Acquire) != 0 {
            return Err(entries);
        }
        match self.worker.try_lock() {
            Ok(mut worker) => {
                worker.apply_entries(entries);
                Ok(())
            }
            Err(_) => Err(entries),
        }
    }
}

/// The raft thread's end of the apply worker: the commit channel, and the worker itself for
/// quick machines.
pub struct Applier {
    commits: crossbeam_channel::Sender<Apply>,
    worker: Arc<dyn Worker>,
    quick: bool,
}

/// The commit channel is closed: the apply thread is gone.
#[derive(Debug)]
pub struct ApplyThreadGone;

impl Applier {
    /// Hands `msg` to the apply worker, in log order: quick machines apply entries right here
    /// when the apply thread has nothing queued. The channel is bounded: when it is full this
    /// blocks, which is the back-pressure that keeps raft from committing faster than the
    /// machine applies.
    pub fn send(&self, msg: Apply) -> Result<(), ApplyThreadGone> {
        let msg = match msg {
            Apply::Entries(entries) if self.quick => match self.worker.try_apply(entries) {
                Ok(()) => return Ok(()),
                Err(entries) => Apply::Entries(entries),
            },
            msg => msg,
        };
        self.worker.queued().fetch_add(1, Ordering::AcqRel);
        self.commits.send(msg).map_err(|_| {
            self.worker.queued().fetch_sub(1, Ordering::AcqRel);
            ApplyThreadGone
        })
    }
}

impl<S: StateMachine> ApplyWorker<S> {
    /// Starts the apply thread (named `apply`) with this worker; returns the raft thread's end.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(self) -> std::io::Result<(Applier, std::thread::JoinHandle<()>)> {
        let (commits, rx) = crossbeam_channel::bounded(COMMIT_CHANNEL_BOUND);
        let shared = Arc::new(Shared {
            worker: Mutex::new(self),
            queued: AtomicUsize::new(0),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("apply".into())
            .spawn(move || {
                for msg in rx {
                    let mut worker = thread_shared
                        .worker
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    worker.handle(msg);
                    thread_shared.queued.fetch_sub(1, Ordering::AcqRel);
                }
            })?;
        let applier = Applier {
            commits,
            worker: shared,
            quick: S::QUICK_APPLY,
        };
        Ok((applier, thread))
    }

    fn handle(&mut self, msg: Apply) {
        match msg {
            Apply::Entries(entries) => self.apply_entries(entries),
            Apply::Restore(meta) => self.restore(&meta),
            Apply::Snapshot { meta, membership } => {
                let image = self.machine.image();
                let report = Report::SnapshotImage {
                    meta,
                    membership,
                    image,
                };
                let _ = self.reports.send(report);
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last() else {
            return;
        };
        assert!(!self.test_panic, "--test-panic apply");
        let last = Applied {
            index: last.index,
            term: last.term,
        };
        if last.index <= self.applied.index {
            return; // already in the state (re-delivered after a restore)
        }
        let mut done = Vec::new();
        for e in &entries {
            if e.index <= self.applied.index || e.get_entry_type() != EntryType::EntryNormal {
                continue;
            }
            if let Some(outcome) = self.apply_one(e) {
                done.push(outcome);
            }
        }
        self.applied = last;
        // The applied index first: a proposer that got its answer must find it applied.
        self.applied_tx.send_replace(last.index);
        self.waiters.complete_all(done);
    }

    /// Applies one normal entry; returns the proposer's outcome, if it has a request ID.
    fn apply_one(&mut self, e: &Entry) -> Option<(u64, CommandOutcome<S::Output>)> {
        let (request_id, command) = match decode_entry(&e.data) {
            // Start records are the engine's (see `raft_node.rs`).
            Ok(
                EntryData::Noop
                | EntryData::Start(_)
                | EntryData::Alarm { .. }
                | EntryData::UrlUpdate { .. }
                | EntryData::Digest { .. }
                | EntryData::Diverged { .. },
            ) => return None,
            // The state here is the state after every earlier entry, on every replica.
            Ok(EntryData::DigestCheck) => {
                if let Some(digest) = self.machine.digest() {
                    let report = Report::Digest {
                        index: e.index,
                        digest,
                    };
                    let _ = self.reports.send(report);
                }
                return None;
            }
            Ok(EntryData::Command {
                request_id,
                command,
            }) => (request_id, command),
            // Bytes from the log never stop a node: an entry of an unknown format (a newer
            // release, a forged append) or a known format cut short is the same no-op on every
            // replica of this release. Its proposer, if any, cannot be named and times out.
            Err(err @ FormatError::UnknownFormat(_)) => {
                error!(self.logger, "skipping an entry of an unknown format (a newer release \
                    must not share a cluster with this one)"; "index" => e.index, "error" => %err);
                return None;
            }
            Err(err) => {
                error!(self.logger, "skipping a malformed entry"; "index" => e.index, "error" => %err);
                return None;
            }
        };
        let applied = Applied {
            index: e.index,
            term: e.term,
        };
        let outcome = self
            .machine
            .apply(Command {
                index: e.index,
                term: e.term,
                bytes: &command,
            })
            .map(|output| (applied, output));
        Some((request_id, outcome))
    }

    fn restore(&mut self, meta: &SnapshotMetadata) {
        let restored = self
            .files
            .read_data(meta.index, meta.term)
            .map_err(|e| e.to_string())
            .and_then(|mut data| {
                read_envelope(&mut data).map_err(|e| e.to_string())?;
                self.machine
                    .restore(&mut data, meta.index)
                    .map_err(|e| e.to_string())?;
                data.finish().map_err(|e| e.to_string())
            });
        match restored {
            Ok(()) => {
                self.applied = Applied {
                    index: meta.index,
                    term: meta.term,
                };
                info!(self.logger, "state restored from snapshot"; "index" => meta.index);
                self.applied_tx.send_replace(meta.index);
            }
            // Images are validated before raft sees them and CRC-checked on disk, so this is
            // a bug; carrying on would serve a wrong state.
            Err(e) => {
                crate::logging::fatal(&self.logger, "cannot restore a validated snapshot", &e)
            }
        }
    }
}
