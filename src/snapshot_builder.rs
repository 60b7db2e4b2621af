//! Making a snapshot without pausing the state machine: the new image is the previous snapshot's
//! image with the committed entries since applied to it, merged on a separate thread.
//!
//! The raft thread starts a [`SnapshotJob`] when `--snapshot-count` entries were applied since
//! the newest snapshot (or a follower needs one that contains it, trap 2). The job gets the
//! previous snapshot's (index, term), the committed entries after it up to the new index (the
//! raft log keeps them: it is only ever compacted below the newest snapshot), the conf state and
//! membership at the new index. It folds the entries into an [`Overlay`] (only the keys they
//! touch), reads the previous image from its snap file as a stream (twice: to size the result,
//! then to copy it; never whole in memory), streams the merged image into the new snap file,
//! and reports [`Report::SnapshotSaved`]; the raft thread then writes the WAL mark
//! (file first, mark second) and compacts.
//!
//! So the apply worker never stops for a snapshot and the map is never copied; the price is
//! reading the previous image once per snapshot, which the raft thread bounds by spacing
//! snapshots (see `raft_node.rs`).

use std::time::Instant;

use raft::eraftpb::{Entry, EntryType, SnapshotMetadata};
use slog::{error, info, Logger};

use crate::command::{Command, Request};
use crate::kv::{MergePlan, Overlay};
use crate::membership::Membership;
use crate::raft_node::Report;

/// Everything one snapshot needs.
pub struct SnapshotJob {
    /// (index, term) of the previous snapshot, whose file MUST exist.
    pub prev: (u64, u64),
    /// Committed entries after `prev.0`, in order, up to the new snapshot's index.
    pub entries: Vec<Entry>,
    /// The new snapshot's metadata (index and term of the last entry, conf state there).
    pub meta: SnapshotMetadata,
    /// Membership at the new index.
    pub membership: Membership,
    /// The snap directory.
    pub files: snap::Snapshotter,
    /// Where to report.
    pub reports: crossbeam_channel::Sender<Report>,
    /// Log.
    pub logger: Logger,
}

impl SnapshotJob {
    /// Runs the job on its own thread.
    pub fn spawn(self) {
        let logger = self.logger.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || self.run());
        if let Err(e) = spawned {
            crate::fatal(&logger, "cannot start the snapshot thread", &e);
        }
    }

    fn run(self) {
        let started = Instant::now();
        let overlay = overlay(&self.entries);
        let (index, term) = self.prev;
        // First pass: size the merge, and check the previous file's CRC before writing.
        // Reading is not on the durability path (the WAL still holds every entry), so a failure
        // to open or read the previous file (out of file descriptors, say) is reported and
        // retried later, never fatal.
        let plan = self.files.read_data(index, term).and_then(|mut prev| {
            let plan = MergePlan::new(&mut prev, &overlay, &self.membership)
                .map_err(|e| self.corrupt(e))?;
            prev.finish()?;
            Ok(plan)
        });
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => return self.give_up("cannot read the previous snapshot", e),
        };
        let bytes = plan.len();
        let mut prev = match self.files.read_data(index, term) {
            Ok(prev) => prev,
            Err(e) => return self.give_up("cannot reopen the previous snapshot", e),
        };
        // Writing the new file is on the durability path: its failure stays fatal.
        let saved = self
            .files
            .save_streamed(&self.meta, bytes, |w| plan.write_to(&mut prev, w))
            .and_then(|path| prev.finish().map(|()| path));
        if let Err(e) = saved {
            crate::fatal(&self.logger, "cannot save a snapshot file", &e);
        }
        info!(self.logger, "snapshot saved";
            "index" => self.meta.index, "bytes" => bytes, "entries_merged" => self.entries.len(),
            "ms" => started.elapsed().as_millis() as u64);
        let _ = self.reports.send(Report::SnapshotSaved(self.meta));
    }

    /// Reports a snapshot that could not be made; the raft thread tries again later.
    fn give_up(self, what: &str, e: snap::Error) {
        error!(self.logger, "snapshot not made, retrying later: {}", what;
            "index" => self.meta.index, "error" => %e);
        let _ = self.reports.send(Report::SnapshotFailed);
    }

    fn corrupt(&self, e: std::io::Error) -> snap::Error {
        snap::Error::Corrupt {
            file: self.files.dir().to_path_buf(),
            reason: format!("snapshot {:?} image: {e}", self.prev),
        }
    }
}

/// The net effect of `entries` on the map: the last write of each key wins.
fn overlay(entries: &[Entry]) -> Overlay {
    let mut overlay = Overlay::new();
    for e in entries {
        if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
            continue;
        }
        // Undecodable entries are skipped by the apply worker too; both stay in step.
        match Request::decode(&e.data).map(|r| r.command) {
            Ok(Command::Put { key, value }) => {
                overlay.insert(key, Some(value));
            }
            Ok(Command::Delete { key }) => {
                overlay.insert(key, None);
            }
            Err(_) => {}
        }
    }
    overlay
}
