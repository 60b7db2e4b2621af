//! The apply worker: applies committed entries to the [`KvStore`] in log order, off the raft
//! thread, and restores snapshots received from the leader.
//!
//! Input is the commit channel ([`Apply`], FIFO, bounded: when it is full the raft thread
//! blocks, which is the back-pressure we want: raft must not commit faster than we apply
//! forever).
//!
//! Output: completed [`Waiters`] and the applied index on a `watch` channel (linearizable and
//! `min_index` reads wait on it). Making snapshots is not its job: see `snapshot_builder.rs`,
//! which never touches the map, so applying never pauses for a snapshot.

use std::sync::Arc;

use raft::eraftpb::{Entry, EntryType, Snapshot};
use slog::{error, info, Logger};
use tokio::sync::watch;

use crate::command::{Command, Request};
use crate::kv::KvStore;
use crate::waiters::{Applied, Waiters};

/// Commit channel bound, in messages (each message is one Ready's worth of entries).
pub const COMMIT_CHANNEL_BOUND: usize = 1024;

/// A message on the commit channel.
pub enum Apply {
    /// Committed entries, in log order, following the previous ones without a gap.
    Entries(Vec<Entry>),
    /// Replace the state with this snapshot (already durable and validated).
    Restore(Snapshot),
}

/// Everything the apply worker owns or publishes.
pub struct ApplyWorker {
    /// The state machine.
    pub kv: Arc<KvStore>,
    /// Clients waiting for their entries.
    pub waiters: Arc<Waiters>,
    /// Publishes the applied index.
    pub applied_tx: watch::Sender<u64>,
    /// Log.
    pub logger: Logger,
    /// Index and term of the last applied entry.
    pub applied: Applied,
    /// Test-only: panic at the first committed entries (`--test-panic apply`).
    pub test_panic: bool,
}

impl ApplyWorker {
    /// Runs until the commit channel closes.
    pub fn run(mut self, commits: crossbeam_channel::Receiver<Apply>) {
        for msg in commits {
            match msg {
                Apply::Entries(entries) => self.apply_entries(entries),
                Apply::Restore(snapshot) => self.restore(snapshot),
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
        let applied_before = self.applied.index;
        self.kv.write_batch(|map| {
            for e in &entries {
                if e.index <= applied_before
                    || e.get_entry_type() != EntryType::EntryNormal
                    || e.data.is_empty()
                {
                    continue;
                }
                match Request::decode(&e.data) {
                    Ok(Request { id, command }) => {
                        match command {
                            Command::Put { key, value } => map.put(&key, &value),
                            Command::Delete { key } => map.delete(&key),
                        }
                        done.push((
                            id,
                            Applied {
                                index: e.index,
                                term: e.term,
                            },
                        ));
                    }
                    Err(err) => error!(self.logger, "skipping undecodable entry";
                        "index" => e.index, "error" => %err),
                }
            }
            map.applied_index = last.index;
        });
        self.applied = last;
        self.waiters.complete_all(done);
        self.applied_tx.send_replace(last.index);
    }

    fn restore(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        match self.kv.restore(&snapshot.data, meta.index) {
            Ok(_) => {
                self.applied = Applied {
                    index: meta.index,
                    term: meta.term,
                };
                info!(self.logger, "state restored from snapshot";
                    "index" => meta.index, "keys" => self.kv.len());
                self.applied_tx.send_replace(meta.index);
            }
            // Images are validated before raft sees them and CRC-checked on disk, so this is
            // a bug; carrying on would serve a wrong state.
            Err(e) => crate::fatal(&self.logger, "cannot restore a validated snapshot", &e),
        }
    }
}
