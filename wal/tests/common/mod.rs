//! Shared helpers for the wal integration tests: a model of what was written, batch by batch,
//! so a replay can be compared with "exactly the state after batch k".
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use wal::{ConfState, Entry, HardState, Metadata, Options, SnapshotMark, Wal};

pub const METADATA: Metadata = Metadata {
    node_id: 3,
    cluster_id: 0xc1a5,
};

/// Small segments so that a few batches span several files.
pub fn small_options() -> Options {
    Options {
        segment_size_bytes: 1024,
        max_record_bytes: 4096,
    }
}

pub fn entry(index: u64, term: u64, len: usize) -> Entry {
    let data: Vec<u8> = (0..len).map(|i| (index as usize * 31 + i) as u8).collect();
    Entry {
        index,
        term,
        data: data.into(),
        ..Entry::default()
    }
}

pub fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

pub fn mark(index: u64, term: u64) -> SnapshotMark {
    SnapshotMark {
        index,
        term,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
    }
}

/// The replayed state after a number of batches.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
}

/// Where a batch ended on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEnd {
    /// Segment file name (no directory: tests replay copies of the log).
    pub file: String,
    pub offset: u64,
}

/// What was written, batch by batch (every call syncs).
#[derive(Debug, Default)]
pub struct Model {
    /// `states[k]` = state after the first k batches (`states[0]` = empty log).
    pub states: Vec<State>,
    /// `ends[k]` = where batch k (0-based) ended; `ends` is one shorter than `states`.
    pub ends: Vec<BatchEnd>,
}

impl Model {
    pub fn new() -> Model {
        Model {
            states: vec![State {
                hard_state: HardState::default(),
                entries: Vec::new(),
            }],
            ends: Vec::new(),
        }
    }

    pub fn last(&self) -> &State {
        self.states.last().expect("initial state")
    }

    pub fn save(&mut self, wal: &mut Wal, hs: Option<HardState>, entries: Vec<Entry>) {
        wal.save(hs.as_ref(), &entries, true).expect("save");
        let mut state = self.last().clone();
        if let Some(hs) = hs {
            state.hard_state = hs;
        }
        if let Some(first) = entries.first() {
            state.entries.retain(|e| e.index < first.index);
        }
        state.entries.extend(entries);
        self.push(wal, state);
    }

    pub fn save_mark(&mut self, wal: &mut Wal, m: &SnapshotMark) {
        wal.save_snapshot_mark(m).expect("save mark");
        let state = self.last().clone();
        self.push(wal, state);
    }

    fn push(&mut self, wal: &Wal, state: State) {
        let (file, offset) = wal.write_position();
        self.ends.push(BatchEnd {
            file: file_name(file),
            offset,
        });
        self.states.push(state);
    }

    /// Index into `states` of the state after the longest prefix of batches that ends at or
    /// before `offset` in the last file.
    pub fn prefix_ending_at(&self, last_file: &str, offset: u64) -> usize {
        // Batches in the last file are the latest, so the complete ones form a prefix.
        self.ends
            .iter()
            .filter(|end| end.file != last_file || end.offset <= offset)
            .count()
    }

    /// Offset where batch `k` (0-based) starts; it MUST share its file with batch `k - 1`.
    pub fn batch_start(&self, k: usize) -> u64 {
        assert_eq!(
            self.ends[k].file,
            self.ends[k - 1].file,
            "batch {k} starts a segment"
        );
        self.ends[k - 1].offset
    }
}

/// Builds a small multi-segment log: hard states, entries of varied sizes, a suffix overwrite,
/// a snapshot mark; the last two batches share the last segment.
pub fn write_small_log(dir: &Path, batches: usize) -> Model {
    let mut wal = Wal::create(dir, METADATA, small_options()).expect("create");
    let mut model = Model::new();
    let mut next = 1u64;
    let mut term = 1u64;
    for b in 0..batches {
        if b == batches / 2 {
            model.save_mark(&mut wal, &mark(next - 2, term));
            continue;
        }
        if b == batches / 3 {
            // A new leader overwrites the last two entries.
            term += 1;
            next -= 2;
        }
        let count = 1 + b % 3;
        let entries: Vec<Entry> = (0..count)
            .map(|i| entry(next + i as u64, term, 8 + (b * 13 + i * 7) % 60))
            .collect();
        next += count as u64;
        let hs = (b % 2 == 0).then(|| hard_state(term, 1, next.saturating_sub(3)));
        model.save(&mut wal, hs, entries);
    }
    ensure_last_batches_share_a_segment(&mut wal, &mut model, next, term);
    model
}

/// Appends small batches until the last three batches are in the same segment.
fn ensure_last_batches_share_a_segment(wal: &mut Wal, model: &mut Model, mut next: u64, term: u64) {
    loop {
        let n = model.ends.len();
        if n >= 3
            && model.ends[n - 3..]
                .iter()
                .all(|e| e.file == model.ends[n - 1].file)
        {
            return;
        }
        model.save(wal, None, vec![entry(next, term, 16)]);
        next += 1;
    }
}

/// The file name of `path`.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// The replayed state of `replay`.
pub fn state_of(replay: &wal::Replay) -> State {
    State {
        hard_state: replay.hard_state.clone(),
        entries: replay.entries.clone(),
    }
}

/// Segment files of `dir` (sorted), without `.broken` copies or other files.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

/// Files in `dir` whose name ends with `.broken`.
pub fn broken_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".broken"))
        .collect();
    files.sort();
    files
}

/// Copies every file of `from` into the (existing) directory `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).expect("read dir") {
        let path = e.expect("dir entry").path();
        fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
    }
}
