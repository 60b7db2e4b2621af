//! The raft log as raft-rs reads it: hard state, conf state, the newest snapshot's metadata
//! and the entries after the compaction point, in memory (the WAL is the durable copy). The
//! snapshot's data stays in its snap file and is read only when a follower needs it, so a
//! large state machine is not held twice in memory.
//!
//! Owned by `RawNode` on the raft thread; the raft thread mutates it through
//! `RawNode::mut_store` in the order of `RaftNode::serve` (WAL first, then here).
//!
//! Trap 2 lives here: a leader asked for a snapshot for follower `to` MUST NOT hand out one
//! whose `conf_state` lacks `to` (the follower would silently ignore it). Then we answer
//! `SnapshotTemporarilyUnavailable` and raise [`RaftStorage::take_snapshot_wanted`], and the raft
//! thread has the apply worker make a fresh one.

use std::cell::Cell;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// In-memory raft storage.
#[derive(Default)]
pub struct RaftStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// Metadata of the newest snapshot (saved and marked in the WAL).
    snapshot: SnapshotMetadata,
    /// Where the newest snapshot's data is read from when a follower needs it.
    files: Option<snap::Snapshotter>,
    /// Index and term of the entry just before `entries[0]` (the compaction point).
    offset_index: u64,
    offset_term: u64,
    entries: Vec<Entry>,
    snapshot_wanted: Cell<bool>,
}

impl RaftStorage {
    /// The hard state last set.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Metadata of the newest snapshot (index 0 when none).
    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.snapshot
    }

    /// Where snapshot data is read from for followers.
    pub fn set_snapshot_files(&mut self, files: snap::Snapshotter) {
        self.files = Some(files);
    }

    /// Sets the hard state (after it is in the WAL).
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Raises the commit index only (LightReady's commit, after it is in the WAL).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// Sets the conf state (after `apply_conf_change`).
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Replaces everything with `snapshot` (restart, or a snapshot received from the leader).
    /// Entries the snapshot covers are gone; later ones are dropped too, since raft hands us
    /// a snapshot only when our log conflicts with or lags behind it.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata) {
        self.offset_index = meta.index;
        self.offset_term = meta.term;
        self.conf_state = meta.get_conf_state().clone();
        if self.hard_state.commit < meta.index {
            self.hard_state.commit = meta.index;
        }
        if self.hard_state.term < meta.term {
            self.hard_state.term = meta.term;
        }
        self.entries.clear();
        self.snapshot = meta.clone();
    }

    /// Records a snapshot made locally from the state machine, for followers that need it,
    /// without touching the log. It MUST already be saved and marked in the WAL.
    pub fn set_snapshot(&mut self, meta: SnapshotMetadata) {
        if meta.index >= self.snapshot.index {
            self.snapshot = meta;
        }
    }

    /// Appends entries after the WAL has them; a conflicting suffix is replaced (raft's rule).
    ///
    /// # Panics
    /// If the first entry would leave a gap after the last one: raft-rs never asks for that.
    pub fn append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(
            first.index > self.offset_index && first.index <= self.last() + 1,
            "append at {} leaves a gap after {} (offset {})",
            first.index,
            self.last(),
            self.offset_index
        );
        let keep = (first.index - self.offset_index - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend(entries);
    }

    /// Drops entries up to and including `index` (which MUST be covered by a saved snapshot).
    /// An index outside the log is clamped.
    ///
    /// Returns the entries compacted away, for the caller to free where it likes: dropping
    /// hundreds of thousands of entries takes tens of ms, too long for the raft thread.
    pub fn compact(&mut self, index: u64) -> Vec<Entry> {
        let index = index.min(self.last());
        if index <= self.offset_index {
            return Vec::new();
        }
        let drop = (index - self.offset_index) as usize;
        self.offset_term = self.entries[drop - 1].term;
        self.offset_index = index;
        let kept = self.entries.split_off(drop);
        std::mem::replace(&mut self.entries, kept)
    }

    /// The lowest index to compact to so that the entries kept up to `upto` hold at most
    /// `max_bytes` of data (0 when everything fits).
    pub fn index_keeping_bytes(&self, upto: u64, max_bytes: u64) -> u64 {
        let upto = upto.min(self.last());
        let mut kept = 0u64;
        let mut index = upto;
        while index > self.offset_index {
            let e = &self.entries[(index - self.offset_index - 1) as usize];
            kept += e.data.len() as u64;
            if kept > max_bytes {
                return index;
            }
            index -= 1;
        }
        0
    }

    /// The data of the normal entries in `lo..=hi` (shared, not copied) and the term at `hi`;
    /// `None` unless the log holds all of them.
    pub fn normal_entry_data(&self, lo: u64, hi: u64) -> Option<(Vec<bytes::Bytes>, u64)> {
        if lo <= self.offset_index || hi > self.last() || lo > hi {
            return None;
        }
        let at = |index: u64| (index - self.offset_index - 1) as usize;
        let data = self.entries[at(lo)..=at(hi)]
            .iter()
            .filter(|e| e.get_entry_type() == raft::eraftpb::EntryType::EntryNormal)
            .map(|e| e.data.clone())
            .collect();
        Some((data, self.entries[at(hi)].term))
    }

    /// Remembers that a follower still needs a fresh snapshot.
    pub fn want_snapshot(&self) {
        self.snapshot_wanted.set(true);
    }

    /// True once since the last call if a follower needed a snapshot we could not give.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    fn last(&self) -> u64 {
        self.offset_index + self.entries.len() as u64
    }
}

impl Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.offset_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.offset_index - 1) as usize;
        let hi = (high - self.offset_index - 1) as usize;
        let mut out = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.offset_index {
            return Ok(self.offset_term);
        }
        if idx < self.offset_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.offset_index - 1) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.offset_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let meta = &self.snapshot;
        let cs = meta.get_conf_state();
        let has_to = cs.voters.contains(&to) || cs.learners.contains(&to);
        let unavailable = || {
            self.snapshot_wanted.set(true);
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ))
        };
        if meta.index == 0 || meta.index < request_index || !has_to {
            return unavailable();
        }
        // A missing file: make a fresh snapshot rather than send nothing. raft-rs never reads
        // the data: the transport streams it from the file (a damaged file is found there).
        if !self
            .files
            .as_ref()
            .is_some_and(|f| f.has(meta.index, meta.term))
        {
            return unavailable();
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta.clone());
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn snapshot(index: u64, term: u64, voters: Vec<u64>) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().mut_conf_state().voters = voters;
        s.data = bytes::Bytes::from_static(b"image");
        s
    }

    // Intent: the byte bound on catch-up entries keeps the newest entries whose data fits it.
    #[test]
    fn index_keeping_bytes_keeps_the_newest_entries_that_fit() {
        let mut s = RaftStorage::default();
        let mut entries = Vec::new();
        for i in 1..=5u64 {
            let mut e = entry(i, 1);
            e.data = vec![0u8; 10].into();
            entries.push(e);
        }
        s.append(entries);
        assert_eq!(s.index_keeping_bytes(5, 100), 0);
        assert_eq!(s.index_keeping_bytes(5, 30), 2);
        assert_eq!(s.index_keeping_bytes(5, 25), 3);
        assert_eq!(s.index_keeping_bytes(4, 10), 3);
        assert_eq!(s.index_keeping_bytes(5, 0), 5);
    }

    // Intent: append replaces a conflicting suffix, compact keeps the term of the compaction
    // point, and reads outside the log are errors rather than panics.
    #[test]
    fn append_compact_and_bounds() {
        let mut s = RaftStorage::default();
        s.apply_snapshot(snapshot(1, 1, vec![1, 2, 3]).get_metadata());
        s.append((2..=10).map(|i| entry(i, 1)).collect());
        s.append(vec![entry(8, 2), entry(9, 2)]);
        assert_eq!(s.last_index().unwrap(), 9);
        assert_eq!(s.term(8).unwrap(), 2);
        s.compact(5);
        assert_eq!(s.first_index().unwrap(), 6);
        assert_eq!(s.term(5).unwrap(), 1);
        assert!(s.term(4).is_err());
        assert!(s
            .entries(5, 7, None, GetEntriesContext::empty(false))
            .is_err());
        assert!(s
            .entries(6, 11, None, GetEntriesContext::empty(false))
            .is_err());
        assert_eq!(
            s.entries(6, 10, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            4
        );
    }

    // Intent: trap 2, a snapshot lacking the requesting follower is never handed out; the
    // storage asks for a fresh one instead. The data stays in the snap file (the transport
    // streams it): the message carries the metadata only.
    #[test]
    fn snapshot_must_contain_the_receiver() {
        let dir = tempfile::tempdir().unwrap();
        let files = snap::Snapshotter::new(dir.path()).unwrap();
        let mut s = RaftStorage::default();
        s.set_snapshot_files(files.clone());
        let first = snapshot(5, 1, vec![1, 2, 3]);
        files.save(&first).unwrap();
        s.apply_snapshot(first.get_metadata());
        let meta_only = |snap: &Snapshot| {
            let mut m = Snapshot::default();
            m.set_metadata(snap.get_metadata().clone());
            m
        };
        assert_eq!(s.snapshot(0, 2).unwrap(), meta_only(&first));
        assert!(!s.take_snapshot_wanted());
        assert!(s.snapshot(0, 4).is_err());
        assert!(s.take_snapshot_wanted());
        let fresh = snapshot(7, 1, vec![1, 2, 3, 4]);
        files.save(&fresh).unwrap();
        s.set_snapshot(fresh.get_metadata().clone());
        assert_eq!(s.snapshot(0, 4).unwrap(), meta_only(&fresh));
        // The file is gone: ask for a fresh snapshot instead of failing raft.
        std::fs::remove_dir_all(dir.path()).unwrap();
        assert!(s.snapshot(0, 4).is_err());
        assert!(s.take_snapshot_wanted());
    }
}
