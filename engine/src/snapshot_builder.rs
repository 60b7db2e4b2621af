//! Writing snapshot files on a `snapshot` thread, so that neither the raft thread nor the apply
//! thread waits for one.
//!
//! Two strategies, chosen by [`crate::StateMachine::MERGES_SNAPSHOTS`]:
//! - **image**: the apply thread serialised the state at the snapshot's index
//!   ([`crate::StateMachine::image`]); [`SnapshotJob::Image`] wraps it in the envelope and saves
//!   it.
//! - **merge**: [`SnapshotJob::Merge`] gets the previous snapshot's (index, term), the committed
//!   entries' data after it up to the new index (the raft log keeps them: it is only ever compacted
//!   below the newest snapshot), and the membership at the new index. It decodes the entries'
//!   framing (the same decoder as the apply thread), has the application plan the merge from
//!   the previous image read as a stream (never whole in memory), and streams envelope and
//!   merged image into the new file. The live state is never touched.
//!
//! Either way it reports [`Report::SnapshotSaved`]; the raft thread then writes the WAL mark
//! (file first, mark second) and compacts. Until that mark the WAL holds every entry, so a
//! snapshot is never on the durability path: a failure to read the previous snapshot or to
//! write the new file (a full disk, say) is reported ([`Report::SnapshotFailed`]) and retried
//! later. A failed write leaves no file under the final name (the snap crate writes a temp
//! file, fsyncs and renames it, and removes the temp file on failure), and a file renamed but
//! not yet marked is ignored at recovery; a retry writes the file anew, so no page of a failed
//! fsync is ever trusted.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use raft::eraftpb::{Snapshot, SnapshotMetadata};
use slog::{error, info, Logger};

use crate::framing::{decode_entry, encode_image, envelope_head, read_envelope, EntryData};
use crate::membership::Membership;
use crate::priority::JobThread;
use crate::protocol::Report;
use crate::state_machine::MergedImage;

/// The application's merge planner (`StateMachine::plan_merge`).
pub type PlanMerge = fn(&mut dyn Read, &[Bytes]) -> std::io::Result<Box<dyn MergedImage>>;

/// One snapshot to write.
pub enum SnapshotJob {
    /// An image the apply thread produced.
    Image {
        /// The new snapshot's metadata.
        meta: SnapshotMetadata,
        /// Membership at its index.
        membership: Membership,
        /// The application's image.
        image: Vec<u8>,
    },
    /// A merge of the previous image with the entries since.
    Merge {
        /// (index, term) of the previous snapshot, whose file MUST exist.
        prev: (u64, u64),
        /// The data of the committed normal entries after `prev.0`, in order, up to the new
        /// snapshot's index (shared with the raft log, not copied).
        entries: Vec<Bytes>,
        /// The new snapshot's metadata (index and term of the last entry, conf state there).
        meta: SnapshotMetadata,
        /// Membership at the new index.
        membership: Membership,
        /// The application's planner.
        plan: PlanMerge,
    },
}

/// Where a job writes and reports.
pub struct JobContext {
    /// The snap directory.
    pub files: snap::Snapshotter,
    /// Where to report.
    pub reports: crate::protocol::Reports,
    /// Log.
    pub logger: Logger,
    /// CPU time the snapshot threads spent, in µs (their own clock, failed jobs included).
    pub cpu_micros: Arc<AtomicU64>,
    /// Where the job's thread registers, so that the raft thread can raise it if it starves.
    pub thread: Arc<JobThread>,
}

/// CPU time this thread has used, in µs.
fn thread_cpu_micros() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ID is a constant Linux knows.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

impl SnapshotJob {
    /// Runs the job on its own thread.
    pub fn spawn(self, cx: JobContext) {
        let logger = cx.logger.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                crate::priority::run_when_idle();
                let _registered = cx.thread.register();
                let cpu_at_start = thread_cpu_micros();
                self.run(&cx);
                let used = thread_cpu_micros().saturating_sub(cpu_at_start);
                cx.cpu_micros.fetch_add(used, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            crate::logging::fatal(&logger, "cannot start the snapshot thread", &e);
        }
    }

    fn run(self, cx: &JobContext) {
        // The files the last snapshot made old go first, here rather than on the raft thread
        // (unlinking a large file takes ms): the last snapshot's mark is written, and no other
        // job writes the directory now.
        if let Err(e) = cx.files.purge(snap::DEFAULT_KEEP) {
            slog::warn!(cx.logger, "cannot purge old snapshot files"; "error" => %e);
        }
        let started = Instant::now();
        let (meta, bytes) = match self {
            SnapshotJob::Image {
                meta,
                membership,
                image,
            } => {
                let snapshot = Snapshot {
                    data: Bytes::from(encode_image(&membership, &image)),
                    metadata: Some(meta.clone()).into(),
                    ..Default::default()
                };
                if let Err(e) = cx.files.save(&snapshot) {
                    give_up(cx, meta.index, "cannot save the snapshot file", &e);
                    return;
                }
                (meta, snapshot.data.len() as u64)
            }
            SnapshotJob::Merge {
                prev,
                entries,
                meta,
                membership,
                plan,
            } => match merge(cx, prev, &entries, &meta, &membership, plan) {
                Some(bytes) => (meta, bytes),
                None => return,
            },
        };
        info!(cx.logger, "snapshot saved";
            "index" => meta.index, "bytes" => bytes, "ms" => started.elapsed().as_millis() as u64);
        let _ = cx.reports.send(Report::SnapshotSaved { meta, bytes });
    }
}

/// The merge strategy; `None` when the previous snapshot could not be read (reported).
fn merge(
    cx: &JobContext,
    (index, term): (u64, u64),
    entries: &[Bytes],
    meta: &SnapshotMetadata,
    membership: &Membership,
    plan: PlanMerge,
) -> Option<u64> {
    let commands = commands(entries);
    let give_up = |what: &str, e: &dyn std::fmt::Display| {
        give_up(cx, meta.index, what, e);
        None
    };
    // First pass: size the merge, and check the previous file's CRC before writing.
    let planned = cx.files.read_data(index, term).and_then(|mut prev| {
        read_envelope(&mut prev).map_err(|e| corrupt(cx, (index, term), e))?;
        let merged = plan(&mut prev, &commands).map_err(|e| corrupt(cx, (index, term), e))?;
        prev.finish()?;
        Ok(merged)
    });
    let merged = match planned {
        Ok(merged) => merged,
        Err(e) => return give_up("cannot read the previous snapshot", &e),
    };
    let head = envelope_head(membership);
    let bytes = head.len() as u64 + merged.len();
    let mut prev = match cx.files.read_data(index, term) {
        Ok(prev) => prev,
        Err(e) => return give_up("cannot reopen the previous snapshot", &e),
    };
    if let Err(e) = read_envelope(&mut prev) {
        return give_up("cannot reread the previous snapshot", &e);
    }
    let saved = cx
        .files
        .save_streamed(meta, bytes, |w| {
            w.write_all(&head)?;
            merged.write_to(&mut prev, w)
        })
        .and_then(|path| prev.finish().map(|()| path));
    if let Err(e) = saved {
        return give_up("cannot save the snapshot file", &e);
    }
    Some(bytes)
}

/// Reports a snapshot that was not made; the raft thread tries again later.
fn give_up(cx: &JobContext, index: u64, what: &str, e: &dyn std::fmt::Display) {
    error!(cx.logger, "snapshot not made, retrying later: {}", what;
        "index" => index, "error" => %e);
    let _ = cx.reports.send(Report::SnapshotFailed);
}

/// The application commands among the normal entries' `data`, in order (the same decoder as
/// the apply thread; undecodable ones are skipped here as there).
fn commands(data: &[Bytes]) -> Vec<Bytes> {
    data.iter()
        .filter_map(|data| match decode_entry(data) {
            Ok(EntryData::Command { command, .. }) => Some(command),
            _ => None,
        })
        .collect()
}

fn corrupt(cx: &JobContext, prev: (u64, u64), e: std::io::Error) -> snap::Error {
    snap::Error::Corrupt {
        file: cx.files.dir().to_path_buf(),
        reason: format!("snapshot {prev:?} image: {e}"),
    }
}
