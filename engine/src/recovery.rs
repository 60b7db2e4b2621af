//! Startup: bootstrap a new member, or rebuild a node from its snapshot and WAL.
//!
//! Bootstrap (trap 1) writes, on every initial member alike, a snapshot at index 1, term 1 whose
//! conf state holds voters 1..n and whose image is the envelope with the `--cluster` URLs around
//! an empty application image (the initial state); then the
//! normal restart path reads it back. A `--join` node starts with an empty WAL (metadata only)
//! and gets everything from the leader.
//!
//! Restart (DESIGN.md section 4):
//! 1. the newest snapshot file that passes its CRC and has a WAL mark;
//! 2. the WAL opened at that mark: metadata, hard state, later entries;
//! 3. raft storage: the snapshot, the hard state (commit never below the snapshot index),
//!    the entries;
//! 4. the state machine from the snapshot image;
//! 5. raft re-delivers the committed entries after the snapshot (`Config.applied` is the
//!    snapshot index).

use std::path::Path;

use bytes::Bytes;
use raft::eraftpb::{ConfState, HardState, Snapshot, SnapshotMetadata};
use slog::{info, warn, Logger};

use crate::config::Config;
use crate::framing::{decode_image, encode_image};
use crate::membership::Membership;
use crate::storage::RaftStorage;

/// A node's durable state, read back.
pub struct Recovered {
    /// The WAL, open for appending.
    pub wal: wal::Wal,
    /// Raft storage filled from snapshot and WAL.
    pub storage: RaftStorage,
    /// The newest usable snapshot, its metadata only: the image, checked here, stays in its
    /// file, streamed from there into the state machine (so it is never held beside it).
    pub snapshot: Option<Snapshot>,
    /// Membership as of the snapshot.
    pub membership: Membership,
    /// The cluster this node belongs to.
    pub cluster_id: u64,
    /// Index and term of the snapshot the state machine holds (0 when none).
    pub applied: (u64, u64),
    /// This node's peer URL as the committed log after the snapshot last set it (a URL
    /// update or the conf change that added it), if it did: where it listens.
    pub own_url: Option<String>,
}

/// Why the node cannot start. The message is the one sentence the user sees.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

fn fail(msg: impl Into<String>) -> StartError {
    StartError(msg.into())
}

/// WAL options from the config.
pub fn wal_options(config: &Config) -> wal::Options {
    wal::Options {
        segment_size_bytes: config.wal_segment_size_bytes,
        max_record_bytes: crate::limits::WAL_MAX_RECORD_BYTES,
    }
}

/// Creates the on-disk state of a brand-new node if there is none. `join_cluster_id` is the
/// cluster ID learned from a member for `--join`.
///
/// # Errors
/// Disk errors, as one sentence.
pub fn initialize(
    config: &Config,
    snapshotter: &snap::Snapshotter,
    join_cluster_id: Option<u64>,
    logger: &Logger,
) -> Result<(), StartError> {
    if wal::Wal::exists(&config.wal_dir) {
        return Ok(());
    }
    let dir = config.wal_dir.display();
    let cluster_id = join_cluster_id.unwrap_or_else(|| config.initial_cluster_id());
    let metadata = wal::Metadata {
        node_id: config.id,
        cluster_id,
    };
    let mut wal = wal::Wal::create(&config.wal_dir, metadata, wal_options(config))
        .map_err(|e| fail(format!("cannot create the WAL in {dir}: {e}")))?;
    if join_cluster_id.is_some() {
        info!(logger, "new WAL for joining cluster"; "cluster_id" => format!("{cluster_id:x}"));
        return Ok(());
    }
    let snapshot = bootstrap_snapshot(config);
    snapshotter
        .save(&snapshot)
        .map_err(|e| fail(format!("cannot write the bootstrap snapshot: {e}")))?;
    mark_snapshot(config, &mut wal, snapshot.get_metadata())?;
    info!(logger, "bootstrapped a new cluster";
        "cluster_id" => format!("{cluster_id:x}"), "voters" => config.cluster.len());
    Ok(())
}

/// Creates the WAL of a member whose starting snapshot (`meta`, already in its file) was
/// written by a restore: metadata with `cluster_id`, the snapshot's mark, a hard state
/// committed up to it.
///
/// # Errors
/// A WAL that exists already, or a disk error, as one sentence.
pub fn seed_wal(
    config: &Config,
    cluster_id: u64,
    meta: &SnapshotMetadata,
) -> Result<(), StartError> {
    if wal::Wal::exists(&config.wal_dir) {
        return Err(fail(format!(
            "{} already holds a WAL: restore into an empty --data-dir",
            config.wal_dir.display()
        )));
    }
    let metadata = wal::Metadata {
        node_id: config.id,
        cluster_id,
    };
    let mut wal =
        wal::Wal::create(&config.wal_dir, metadata, wal_options(config)).map_err(|e| {
            fail(format!(
                "cannot create the WAL in {}: {e}",
                config.wal_dir.display()
            ))
        })?;
    mark_snapshot(config, &mut wal, meta)
}

/// Writes the mark of the snapshot `meta` and a hard state committed up to it, synced.
fn mark_snapshot(
    config: &Config,
    wal: &mut wal::Wal,
    meta: &SnapshotMetadata,
) -> Result<(), StartError> {
    let dir = config.wal_dir.display();
    let mark = wal::SnapshotMark {
        index: meta.index,
        term: meta.term,
        conf_state: meta.get_conf_state().clone(),
    };
    wal.save_snapshot_mark(&mark)
        .and_then(|_| {
            let hs = HardState {
                term: meta.term,
                commit: meta.index,
                ..Default::default()
            };
            wal.save(Some(&hs), &[], true)
        })
        .map_err(|e| fail(format!("cannot write the WAL in {dir}: {e}")))
}

/// The identical initial snapshot of every bootstrapping member.
fn bootstrap_snapshot(config: &Config) -> Snapshot {
    let membership = Membership::initial(&config.cluster);
    let mut snapshot = Snapshot {
        data: Bytes::from(encode_image(&membership, &[])),
        ..Default::default()
    };
    let meta = snapshot.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.set_conf_state(initial_conf_state(config));
    snapshot
}

/// The conf state a new cluster starts with: every `--cluster` member a voter (bootstrap and
/// restore).
pub fn initial_conf_state(config: &Config) -> ConfState {
    ConfState::from((
        (1..=config.cluster.len() as u64).collect::<Vec<_>>(),
        vec![],
    ))
}

/// Reads the node back from disk (see the module doc).
///
/// # Errors
/// A sentence naming what is wrong (corrupt WAL, no usable snapshot, another node's data).
pub fn recover(
    config: &Config,
    snapshotter: &snap::Snapshotter,
    logger: &Logger,
) -> Result<Recovered, StartError> {
    let dir = &config.wal_dir;
    let options = wal_options(config);
    let marks = wal::Wal::snapshot_marks(dir, &options)
        .map_err(|e| fail(format!("the WAL in {} is damaged: {e}", dir.display())))?;
    let keys: Vec<(u64, u64)> = marks.iter().map(|m| (m.index, m.term)).collect();
    let found = snapshotter
        .recover(&keys)
        .map_err(|e| fail(format!("cannot read snapshots: {e}")))?;
    for broken in &found.broken {
        warn!(logger, "corrupt snapshot file set aside"; "file" => broken.display().to_string());
    }
    let mut snapshot = found.snapshot;
    if snapshot.is_none() && !marks.is_empty() {
        return Err(fail(format!(
            "the WAL in {} has snapshot marks but no snapshot file in {} matches one: \
             restore the snapshot files or wipe both directories and re-join",
            dir.display(),
            snapshotter.dir().display()
        )));
    }
    let at = snapshot
        .as_ref()
        .map(|s| (s.get_metadata().index, s.get_metadata().term))
        .unwrap_or((0, 0));
    let (wal, replay) = wal::Wal::open(dir, at, options)
        .map_err(|e| wal_refusal(dir, snapshotter.dir(), at.0, &e))?;
    check_owner(config, replay.metadata, dir)?;
    check_terms(&replay, at.1, dir)?;

    let mut storage = RaftStorage::default();
    storage.set_snapshot_files(snapshotter.clone());
    let mut membership = Membership::default();
    if let Some(snapshot) = &mut snapshot {
        membership = decode_image(&snapshot.data)
            .map_err(|e| fail(format!("the snapshot at index {} is unusable: {e}", at.0)))?
            .0;
        snapshot.data = bytes::Bytes::new();
        storage.apply_snapshot(snapshot.get_metadata());
    }
    let mut hs = replay.hard_state;
    let mut wal = wal;
    let mut entries = replay.entries;
    // A received snapshot's mark resets the log in the WAL (`save_received_snapshot_mark`), so
    // the tail it replaced is not replayed. WALs written before log resets existed may still
    // hold one until the first append after the install: terms never fall along a log, so an
    // entry after the snapshot with a lower term is such a tail, and it must not count as
    // this node's log, neither for votes nor for a force.
    if let Some(stale) = entries.iter().position(|e| e.term < at.1) {
        warn!(logger, "dropping entries a received snapshot replaced";
            "from" => entries[stale].index, "count" => entries.len() - stale,
            "snapshot_term" => at.1);
        entries.truncate(stale);
    }
    if config.force_new_cluster {
        let conf = snapshot
            .as_ref()
            .map(|s| s.get_metadata().get_conf_state().clone())
            .unwrap_or_default();
        force_new_cluster(config, &mut wal, &mut hs, &mut entries, conf, at, logger)?;
    }
    let last = entries.last().map(|e| e.index).unwrap_or(at.0);
    hs.commit = hs.commit.max(at.0);
    if hs.commit > last {
        warn!(logger, "hard state commit beyond the log; clamping"; "commit" => hs.commit, "last" => last);
        hs.commit = last;
    }
    hs.term = hs.term.max(at.1);
    storage.set_hard_state(hs.clone());
    let own_url = own_url_in_log(config.id, &entries, hs.commit);
    let count = entries.len();
    storage.append(entries);
    info!(logger, "recovered from disk";
        "snapshot_index" => at.0, "entries" => count, "term" => hs.term, "commit" => hs.commit,
        "cluster_id" => format!("{:x}", replay.metadata.cluster_id));
    Ok(Recovered {
        wal,
        storage,
        snapshot,
        membership,
        cluster_id: replay.metadata.cluster_id,
        applied: at,
        own_url,
    })
}

/// Where a forced new cluster is recorded (in the WAL dir): it happens once.
pub fn forced_marker(config: &Config) -> std::path::PathBuf {
    config.wal_dir.join("force-new-cluster")
}

/// `--force-new-cluster` (etcd's): this member survived the permanent loss of its majority.
/// Every entry in its log is committed (an entry that reached it may have been acknowledged by
/// the lost majority), then one removal per other member is appended and committed, in the
/// WAL, before raft starts: raft applies them like any committed conf change, so this member
/// is the only voter and every other ID is removed (peers hear 410 and can never depose it).
/// Recorded in [`forced_marker`] once the WAL is synced; a restart with the flag still set
/// does nothing more.
fn force_new_cluster(
    config: &Config,
    wal: &mut wal::Wal,
    hs: &mut HardState,
    entries: &mut Vec<raft::eraftpb::Entry>,
    snapshot_conf: ConfState,
    at: (u64, u64),
    logger: &Logger,
) -> Result<(), StartError> {
    use protobuf::Message as _;
    use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType};
    let marker = forced_marker(config);
    if let Ok(done) = std::fs::read_to_string(&marker) {
        warn!(logger, "--force-new-cluster is set but this member already forced a new cluster: \
            ignoring it (remove the flag; to force again after another lost majority, delete the \
            record file)"; "record" => done.trim(), "file" => marker.display().to_string());
        return Ok(());
    }
    if !snapshot_conf.voters_outgoing.is_empty() || !snapshot_conf.learners_next.is_empty() {
        return Err(fail(
            "the snapshot holds a joint configuration, which --force-new-cluster cannot resolve",
        ));
    }
    // The configuration after every entry of the log (all of them are about to commit).
    let mut voters: std::collections::BTreeSet<u64> =
        snapshot_conf.voters.iter().copied().collect();
    let mut learners: std::collections::BTreeSet<u64> =
        snapshot_conf.learners.iter().copied().collect();
    for e in entries.iter() {
        match e.get_entry_type() {
            EntryType::EntryConfChange => {
                let mut cc = ConfChange::default();
                if cc.merge_from_bytes(&e.data).is_err() {
                    continue;
                }
                let id = cc.node_id;
                match cc.get_change_type() {
                    ConfChangeType::AddNode => {
                        learners.remove(&id);
                        voters.insert(id);
                    }
                    ConfChangeType::AddLearnerNode => {
                        voters.remove(&id);
                        learners.insert(id);
                    }
                    ConfChangeType::RemoveNode => {
                        voters.remove(&id);
                        learners.remove(&id);
                    }
                }
            }
            EntryType::EntryConfChangeV2 => {
                return Err(fail(format!(
                    "the log holds a joint configuration change at index {}, which \
                     --force-new-cluster cannot resolve",
                    e.index
                )))
            }
            EntryType::EntryNormal => {}
        }
    }
    if !voters.contains(&config.id) {
        return Err(fail(format!(
            "node {} is not a voter in its own log (a learner, or removed): only a surviving \
             voter can force a new cluster",
            config.id
        )));
    }
    let last = entries.last().map_or(at, |e| (e.index, e.term));
    // A term of its own: no entry of a lost leader can share an (index, term) with these.
    let term = hs.term.max(last.1) + 1;
    let others: Vec<u64> = voters
        .iter()
        .chain(learners.iter())
        .copied()
        .filter(|id| *id != config.id)
        .collect();
    let context = crate::framing::ConfChangeContext {
        request_id: 0,
        url: String::new(),
        promote_when_ready: false,
    }
    .encode();
    let added: Vec<Entry> = others
        .iter()
        .zip(last.0 + 1..)
        .map(|(id, index)| {
            let cc = ConfChange {
                change_type: ConfChangeType::RemoveNode,
                node_id: *id,
                context: context.clone().into(),
                ..Default::default()
            };
            Entry {
                entry_type: EntryType::EntryConfChange,
                term,
                index,
                data: cc.write_to_bytes().expect("a conf change encodes").into(),
                ..Default::default()
            }
        })
        .collect();
    let from_commit = hs.commit;
    if term > hs.term {
        hs.vote = 0;
    }
    hs.term = term;
    hs.commit = last.0 + added.len() as u64;
    wal.save(Some(hs), &added, true).map_err(|e| {
        fail(format!(
            "cannot write the WAL in {}: {e}",
            config.wal_dir.display()
        ))
    })?;
    let record = format!(
        "forced at index {} (commit raised from {from_commit}), removed {others:?}\n",
        hs.commit
    );
    std::fs::write(&marker, &record)
        .and_then(|_| std::fs::File::open(&marker)?.sync_all())
        .and_then(|_| std::fs::File::open(&config.wal_dir)?.sync_all())
        .map_err(|e| {
            fail(format!(
                "cannot record the forced cluster in {}: {e}",
                marker.display()
            ))
        })?;
    warn!(logger, "FORCING A NEW CLUSTER (--force-new-cluster): every entry in this member's log \
        is now committed, it is the only voter and every other member is removed for good; add \
        new members with `member add` and --join, under new IDs";
        "commit_was" => from_commit, "commit" => hs.commit, "removed" => format!("{others:?}"));
    entries.extend(added);
    Ok(())
}

/// The last peer URL the committed `entries` (up to `commit`) give node `id`.
fn own_url_in_log(id: u64, entries: &[raft::eraftpb::Entry], commit: u64) -> Option<String> {
    use protobuf::Message as _;
    let mut url = None;
    for e in entries.iter().take_while(|e| e.index <= commit) {
        match e.get_entry_type() {
            raft::eraftpb::EntryType::EntryNormal => {
                if let Ok(crate::framing::EntryData::UrlUpdate { id: of, url: u, .. }) =
                    crate::framing::decode_entry(&e.data)
                {
                    if of == id {
                        url = Some(u);
                    }
                }
            }
            raft::eraftpb::EntryType::EntryConfChange => {
                let mut cc = raft::eraftpb::ConfChange::default();
                if cc.merge_from_bytes(&e.data).is_err() || cc.node_id != id {
                    continue;
                }
                let ctx = crate::framing::ConfChangeContext::decode(&cc.context).ok();
                if let Some(ctx) = ctx.filter(|c| !c.url.is_empty()) {
                    url = Some(ctx.url);
                }
            }
            raft::eraftpb::EntryType::EntryConfChangeV2 => {}
        }
    }
    url
}

/// The sentence for a WAL that cannot be opened from the snapshot at `index`. When newer
/// snapshot files were found damaged (set aside as `*.broken`, now or at an earlier start), the
/// damage is theirs: the WAL was released up to them, so it no longer holds the entries after
/// `index`. Name those files, not the WAL.
fn wal_refusal(wal_dir: &Path, snap_dir: &Path, index: u64, e: &wal::Error) -> StartError {
    let broken = newer_broken_snapshots(snap_dir, index);
    if broken.is_empty() {
        return fail(format!("cannot open the WAL in {}: {e}", wal_dir.display()));
    }
    fail(format!(
        "the newest snapshot file(s) {} are damaged (set aside as .broken) and the WAL in {} \
         was already released up to them, so it cannot replay from the older snapshot at index \
         {index} ({e}): restore the snapshot file from a backup, or remove this member \
         (curl -XDELETE <member>/<id>), wipe its data dirs and add it back under a new ID",
        broken.join(", "),
        wal_dir.display()
    ))
}

/// `*.snap.broken` files in `snap_dir` whose index is above `index`, newest first.
fn newer_broken_snapshots(snap_dir: &Path, index: u64) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(snap_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, String)> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_name()?.to_str()?.to_string();
            let stem = name.strip_suffix(".snap.broken")?;
            let file_index = u64::from_str_radix(stem.split_once('-')?.1, 16).ok()?;
            (file_index > index).then(|| (file_index, path.display().to_string()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, path)| path).collect()
}

/// Refuses a WAL whose hard state, snapshot or entries carry a term above
/// [`crate::limits::MAX_TERM`]: raft-rs would wrap `term + 1` to 0 and panic at the first
/// election, at every restart. Such a term was never reached by a real cluster (it came from a
/// forged message written before the peer server refused them, or from damage).
fn check_terms(replay: &wal::Replay, snapshot_term: u64, dir: &Path) -> Result<(), StartError> {
    let max = crate::limits::MAX_TERM;
    let entry = replay.entries.iter().find(|e| e.term > max);
    let found = [
        ("its hard state", replay.hard_state.term),
        ("its snapshot", snapshot_term),
    ]
    .into_iter()
    .chain(entry.map(|e| ("the entry at this index", e.term)))
    .find(|(_, term)| *term > max);
    let Some((what, term)) = found else {
        return Ok(());
    };
    let index = entry.map_or(String::new(), |e| format!(" {}", e.index));
    Err(fail(format!(
        "the WAL in {} records term {term} in {what}{index}, above the highest term a cluster can \
         reach ({max}): this node cannot take part safely; remove it (curl -XDELETE \
         <member>/<id>), wipe its data dirs and add it back under a new ID with --join",
        dir.display()
    )))
}

fn check_owner(config: &Config, metadata: wal::Metadata, dir: &Path) -> Result<(), StartError> {
    if metadata.node_id != config.id {
        return Err(fail(format!(
            "{} holds the data of node {}, not node {}: pass --id {} or another --data-dir",
            dir.display(),
            metadata.node_id,
            config.id,
            metadata.node_id
        )));
    }
    Ok(())
}
