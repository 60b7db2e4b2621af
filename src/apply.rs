//! The apply worker: applies committed entries to the [`KvStore`] in log order, off the raft
//! thread, and makes snapshot images.
//!
//! Input is the commit channel ([`Apply`], FIFO, bounded: when it is full the raft thread
//! blocks, which is the back-pressure we want: raft must not commit faster than we apply
//! forever). Because the channel is FIFO, an [`Apply::Snapshot`] request sees every earlier
//! entry applied, so the image is exactly the state at `applied_index`.
//!
//! Output: completed [`Waiters`], the applied index on a `watch` channel (linearizable and
//! `min_index` reads wait on it), and [`Report::SnapshotSaved`] to the raft thread once a
//! snapshot file is durable (the raft thread then writes the WAL mark: file first, mark second).
//! A snapshot pauses applying only while the map's handles are copied; the image is encoded
//! into the file by a short-lived `snapshot` thread.

use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, EntryType, Snapshot, SnapshotMetadata};
use slog::{error, info, Logger};
use tokio::sync::watch;

use crate::command::{Command, Request};
use crate::kv::KvStore;
use crate::membership::Membership;
use crate::raft_node::Report;
use crate::waiters::{Applied, Waiters};

/// Commit channel bound, in messages (each message is one Ready's worth of entries).
pub const COMMIT_CHANNEL_BOUND: usize = 1024;

/// A message on the commit channel.
pub enum Apply {
    /// Committed entries, in log order, following the previous ones without a gap.
    Entries(Vec<Entry>),
    /// Replace the state with this snapshot (already durable and validated).
    Restore(Snapshot),
    /// Make a snapshot of the state at the current applied index, with this membership.
    Snapshot {
        /// Conf state as of the applied index.
        conf_state: ConfState,
        /// Membership as of the applied index.
        membership: Membership,
    },
}

/// Everything the apply worker owns or publishes.
pub struct ApplyWorker {
    /// The state machine.
    pub kv: Arc<KvStore>,
    /// Clients waiting for their entries.
    pub waiters: Arc<Waiters>,
    /// Publishes the applied index.
    pub applied_tx: watch::Sender<u64>,
    /// Reports snapshots back to the raft thread.
    pub reports: crossbeam_channel::Sender<Report>,
    /// Saves snapshot files.
    pub snapshotter: snap::Snapshotter,
    /// Log.
    pub logger: Logger,
    /// Index and term of the last applied entry.
    pub applied: Applied,
}

impl ApplyWorker {
    /// Runs until the commit channel closes.
    pub fn run(mut self, commits: crossbeam_channel::Receiver<Apply>) {
        for msg in commits {
            match msg {
                Apply::Entries(entries) => self.apply_entries(entries),
                Apply::Restore(snapshot) => self.restore(snapshot),
                Apply::Snapshot {
                    conf_state,
                    membership,
                } => self.snapshot(conf_state, membership),
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last() else {
            return;
        };
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
                            Command::Put { key, value } => map.put(key, value),
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

    /// Takes a copy-free picture of the state (applies pause only for that), then encodes it
    /// straight into the snap file on a separate thread while applying goes on.
    fn snapshot(&mut self, conf_state: ConfState, membership: Membership) {
        let started = std::time::Instant::now();
        let image = self.kv.freeze(&membership);
        let frozen_ms = started.elapsed().as_millis() as u64;
        let mut meta = SnapshotMetadata {
            index: self.applied.index,
            term: self.applied.term,
            ..Default::default()
        };
        meta.set_conf_state(conf_state);
        let snapshotter = self.snapshotter.clone();
        let reports = self.reports.clone();
        let logger = self.logger.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let bytes = image.len();
                let saved = snapshotter.save_streamed(&meta, bytes, |w| image.write_to(w));
                if let Err(e) = saved {
                    crate::fatal(&logger, "cannot save a snapshot file", &e);
                }
                info!(logger, "snapshot saved";
                    "index" => meta.index, "bytes" => bytes, "freeze_ms" => frozen_ms,
                    "total_ms" => started.elapsed().as_millis() as u64);
                let _ = reports.send(Report::SnapshotSaved(meta));
            });
        if let Err(e) = spawned {
            crate::fatal(&self.logger, "cannot start the snapshot thread", &e);
        }
    }
}
