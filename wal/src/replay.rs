//! Replay state: folds complete batches, in log order, into what `open` returns.
//!
//! Invariants kept while folding:
//! - `entries` is contiguous and starts at `at.index + 1`;
//! - a later entry at an index already held replaces that entry and everything after it
//!   (raft's rule); an entry at or below `at.index` empties `entries`, since it replaced the
//!   whole suffix above it;
//! - a log reset (a snapshot received from the leader replaced the whole log) at or below
//!   `at.index` empties `entries`: every entry written before it is one the snapshot replaced;
//!   a reset above `at.index` cannot be replayed across (the entries up to it are not in the
//!   log): that is damage, and the reset's own snapshot file is needed;
//! - `last_index` is raft's last index after every record read so far (the last entry, a
//!   later snapshot mark above it, or a log reset); `save` checks new entries against it.
//!
//! Replayed entries' data is copied out of the segment into shared 1 MiB buffers (one
//! allocation per buffer instead of one per entry: replay speed). A buffer is freed when the
//! last entry using it is dropped; entries larger than a quarter buffer get their own.

/// Size of the shared buffers replayed entry data is copied into.
const ARENA_BYTES: usize = 1 << 20;

use bytes::{Bytes, BytesMut};
use raft_proto::eraftpb::{Entry, HardState};

use crate::record::Record;
use crate::scan::{BatchSink, Damage, Located};
use crate::segment::SegmentFile;
use crate::{Metadata, SnapshotMark};

/// Accumulates the replay of one log.
#[derive(Debug)]
pub(crate) struct ReplayState {
    at: (u64, u64),
    collect_entries: bool,
    pub metadata: Option<Metadata>,
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
    /// Marks in log order, consecutive duplicates (copies in segment heads) removed.
    pub marks: Vec<SnapshotMark>,
    /// Whether the mark `at` was seen.
    pub mark_found: bool,
    pub last_index: u64,
    /// Highest entry index in the segment being scanned.
    pub segment_max_index: Option<u64>,
    /// Where entry data is copied to.
    arena: BytesMut,
}

impl ReplayState {
    /// A replay starting at snapshot `at` = (index, term); entries are only kept when
    /// `collect_entries`.
    pub(crate) fn new(at: (u64, u64), collect_entries: bool) -> ReplayState {
        ReplayState {
            at,
            collect_entries,
            metadata: None,
            hard_state: HardState::default(),
            entries: Vec::new(),
            marks: Vec::new(),
            mark_found: false,
            last_index: 0,
            segment_max_index: None,
            arena: BytesMut::new(),
        }
    }

    /// Call before scanning each segment; `first_read` for the oldest segment present, whose
    /// predecessors (if any) were released.
    pub(crate) fn begin_segment(&mut self, first_index: u64, first_read: bool) {
        self.segment_max_index = None;
        if first_read {
            self.last_index = first_index.saturating_sub(1);
        }
    }

    /// Grows `entries` once for the rest of the log, guessing from the entries per byte of the
    /// `scanned_bytes` read so far and the sizes of the `remaining` segments (speed only: it
    /// saves the copies of repeated doubling on a big log).
    pub(crate) fn reserve_for(&mut self, scanned_bytes: u64, remaining: &[SegmentFile]) {
        if self.entries.is_empty() || scanned_bytes == 0 {
            return;
        }
        let remaining_bytes: u64 = remaining
            .iter()
            .filter_map(|s| std::fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum();
        let per_byte = self.entries.len() as f64 / scanned_bytes as f64;
        self.entries
            .reserve((per_byte * remaining_bytes as f64) as usize);
    }

    /// The snapshot mark with the highest index seen (ties: the latest).
    pub(crate) fn latest_mark(&self) -> Option<&SnapshotMark> {
        self.marks.iter().rev().max_by_key(|m| m.index)
    }

    fn entry(&mut self, offset: u64, index: u64, record: &Record<'_>) -> Result<(), Damage> {
        let Record::Entry(e) = record else {
            return Ok(());
        };
        self.segment_max_index = self.segment_max_index.max(Some(index));
        self.last_index = index;
        if !self.collect_entries {
            return Ok(());
        }
        let at = self.at.0;
        if index <= at {
            self.entries.clear();
            return Ok(());
        }
        let next = at + 1 + self.entries.len() as u64;
        if index > next {
            return Err(Damage {
                offset,
                index: Some(index),
                reason: format!(
                    "entry {index} does not follow index {} (replaying after snapshot index {at})",
                    next - 1
                ),
            });
        }
        self.entries.truncate((index - at - 1) as usize);
        let arena = &mut self.arena;
        self.entries
            .push(e.to_entry_with(|data| copy_to_arena(arena, data)));
        Ok(())
    }

    fn reset(&mut self, offset: u64, index: u64, term: u64) -> Result<(), Damage> {
        self.last_index = index;
        if !self.collect_entries {
            return Ok(());
        }
        let at = self.at.0;
        if index > at {
            return Err(Damage {
                offset,
                index: Some(index),
                reason: format!(
                    "a snapshot received at index {index} (term {term}) replaced the log here, \
                     so it cannot be replayed from the snapshot at index {at}: the snapshot \
                     file at index {index} is needed"
                ),
            });
        }
        self.entries.clear();
        Ok(())
    }

    fn mark(&mut self, mark: &SnapshotMark) {
        self.last_index = self.last_index.max(mark.index);
        if (mark.index, mark.term) == self.at {
            self.mark_found = true;
        }
        let duplicate = self
            .marks
            .last()
            .is_some_and(|m| (m.index, m.term) == (mark.index, mark.term));
        if !duplicate {
            self.marks.push(mark.clone());
        }
    }
}

/// `data` as `Bytes`, copied into the shared buffer `arena` (see the module docs).
fn copy_to_arena(arena: &mut BytesMut, data: &[u8]) -> Bytes {
    if data.len() > ARENA_BYTES / 4 {
        return Bytes::copy_from_slice(data);
    }
    if arena.capacity() - arena.len() < data.len() {
        *arena = BytesMut::with_capacity(ARENA_BYTES);
    }
    arena.extend_from_slice(data);
    arena.split().freeze()
}

impl BatchSink for ReplayState {
    fn batch(&mut self, records: &[Located<'_>]) -> Result<(), Damage> {
        for located in records {
            match &located.record {
                Record::Metadata(m) => {
                    if self.metadata.is_some_and(|known| known != *m) {
                        return Err(Damage {
                            offset: located.offset,
                            index: None,
                            reason: format!(
                                "metadata {m:?} differs from earlier segments' {:?}",
                                self.metadata
                            ),
                        });
                    }
                    self.metadata = Some(*m);
                }
                Record::HardState(hs) => self.hard_state = hs.clone(),
                Record::SnapshotMark(mark) => self.mark(mark),
                Record::Entry(e) => self.entry(located.offset, e.index, &located.record)?,
                Record::LogReset { index, term } => self.reset(located.offset, *index, *term)?,
                Record::CrcSeed(_) | Record::BatchCommit(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EntryRef;
    use raft_proto::eraftpb::EntryType;

    fn entry(index: u64, term: u64) -> Located<'static> {
        Located {
            offset: index * 8,
            record: Record::Entry(EntryRef {
                index,
                term,
                entry_type: EntryType::EntryNormal,
                sync_log: false,
                data: b"x",
                context: b"",
            }),
        }
    }

    fn indexes_terms(state: &ReplayState) -> Vec<(u64, u64)> {
        state.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    // Intent: a later entry at an existing index replaces it and everything after it.
    #[test]
    fn suffix_is_replaced() {
        let mut state = ReplayState::new((0, 0), true);
        state
            .batch(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        state.batch(&[entry(2, 2)]).unwrap();
        assert_eq!(indexes_terms(&state), vec![(1, 1), (2, 2)]);
        assert_eq!(state.last_index, 2);
    }

    // Intent: entries at or below the snapshot index are dropped and drop the suffix above.
    #[test]
    fn entries_at_or_below_the_snapshot_are_dropped() {
        let mut state = ReplayState::new((5, 1), true);
        let early: Vec<_> = (3..=8).map(|i| entry(i, 1)).collect();
        state.batch(&early).unwrap();
        assert_eq!(indexes_terms(&state), vec![(6, 1), (7, 1), (8, 1)]);
        state
            .batch(&[entry(4, 2), entry(5, 2), entry(6, 2)])
            .unwrap();
        assert_eq!(indexes_terms(&state), vec![(6, 2)]);
    }

    // Intent: an entry that leaves a gap is refused, naming its index and offset.
    #[test]
    fn gap_is_refused() {
        let mut state = ReplayState::new((0, 0), true);
        state.batch(&[entry(1, 1)]).unwrap();
        let err = state.batch(&[entry(3, 1)]).unwrap_err();
        assert_eq!((err.offset, err.index), (24, Some(3)));
    }

    // Intent: metadata may not change between segments.
    #[test]
    fn metadata_must_not_change() {
        let meta = |node_id| Located {
            offset: 16,
            record: Record::Metadata(Metadata {
                node_id,
                cluster_id: 1,
            }),
        };
        let mut state = ReplayState::new((0, 0), true);
        state.batch(&[meta(1)]).unwrap();
        state.batch(&[meta(1)]).unwrap();
        assert!(state.batch(&[meta(2)]).is_err());
    }
}
