//! The raft thread's protocol: its inbox ([`Msg`]), the reports it gets from the tasks it
//! started ([`Report`]), and the types of its answers. Whoever sends these imports this
//! module, never the loop that receives them (`raft_node.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use raft::eraftpb::{Message, SnapshotMetadata};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::membership::Member;

/// Where the raft thread's [`Msg`]s go: bounded (`raft_node::INBOX_BOUND`), and only
/// ever `try_send`: a full inbox is an answer (503), never a wait. A tokio channel, because
/// the raft loop is a task of the raft thread's own runtime (see ARCHITECTURE's channel map):
/// a send from that runtime's own tasks (the peer server) wakes it without a system call.
pub type Inbox = tokio::sync::mpsc::Sender<Msg>;
/// Where [`Report`]s go: unbounded by construction (at most one per in-flight peer request,
/// snapshot or image request), so sending never blocks, from any thread.
pub type Reports = tokio::sync::mpsc::UnboundedSender<Report>;

/// Why a request was not proposed (every variant means: nothing was applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No leader is known.
    #[error("this node knows no leader")]
    NoLeader,
    /// raft dropped the proposal (leader transfer in progress, too much uncommitted data).
    #[error("the proposal was dropped")]
    Dropped,
    /// A membership change is still pending (trap 3).
    #[error("a membership change is already pending")]
    ChangePending,
    /// The node to add is already a member.
    #[error("node {0} is already a member")]
    AlreadyMember(u64),
    /// Another member already has this peer URL (as etcd: "Peer URLs already exists").
    #[error("peer URL {url} already belongs to node {id}")]
    UrlInUse {
        /// The URL asked for.
        url: String,
        /// The member that has it.
        id: u64,
    },
    /// The node to remove or promote is not a member (or not a learner).
    #[error("node {0} is not a member that can take this change")]
    NotMember(u64),
    /// The learner to promote has not caught up with the leader's log yet.
    #[error("learner {0} has not caught up yet")]
    NotCaughtUp(u64),
    /// The node is shutting down.
    #[error("this node is shutting down")]
    ShuttingDown,
    /// The ID was removed once; IDs are never reused.
    #[error("node {0} was removed and its ID is never reused")]
    IdRemoved(u64),
}

/// A membership change request.
#[derive(Debug, Clone)]
pub enum MemberChange {
    /// Add a voter or a learner with this peer URL.
    Add {
        /// Peer URL.
        url: String,
        /// Add as a learner.
        learner: bool,
    },
    /// Promote a learner to voter.
    Promote,
    /// Remove the node.
    Remove,
    /// Change the member's peer URL (as etcd's `member update`): through the log, in effect
    /// on every member once applied; the member itself listens there from its next start.
    UpdateUrl {
        /// The new peer URL.
        url: String,
    },
}

/// The right to receive a snapshot: one at a time per node. Held from the first byte of the
/// request until the raft thread is done with the snapshot (installed or dropped).
pub struct ReceiveSlot(Arc<AtomicBool>);

impl ReceiveSlot {
    /// The slot, unless it is taken.
    pub fn take(flag: &Arc<AtomicBool>) -> Option<ReceiveSlot> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| ReceiveSlot(flag.clone()))
    }
}

impl Drop for ReceiveSlot {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A received snapshot staged (and checked) in the snap dir, on its way to the raft thread
/// with its message. Dropped without [`StagedSnapshot::install`], it discards the file; either
/// way its [`ReceiveSlot`] is freed.
pub struct StagedSnapshot {
    files: snap::Snapshotter,
    index: u64,
    term: u64,
    installed: bool,
    _slot: ReceiveSlot,
}

impl StagedSnapshot {
    /// The staged file of snapshot (`index`, `term`) in `files`.
    pub fn new(files: snap::Snapshotter, index: u64, term: u64, slot: ReceiveSlot) -> Self {
        StagedSnapshot {
            files,
            index,
            term,
            installed: false,
            _slot: slot,
        }
    }

    /// (index, term) of the snapshot.
    pub fn id(&self) -> (u64, u64) {
        (self.index, self.term)
    }

    /// Makes the staged file the snapshot file (the caller then writes the WAL mark).
    ///
    /// # Errors
    /// What the rename or the directory fsync returned.
    pub fn install(mut self) -> snap::Result<()> {
        self.files.install_staged(self.index, self.term)?;
        self.installed = true;
        Ok(())
    }
}

impl Drop for StagedSnapshot {
    fn drop(&mut self) {
        if !self.installed {
            self.files.discard_staged(self.index, self.term);
        }
    }
}

/// Input for the raft thread.
pub enum Msg {
    /// Propose entry data (framed by `framing::encode_entry`); answered once proposed or
    /// refused.
    Propose {
        /// The entry data.
        data: bytes::Bytes,
        /// Proposed, or why not.
        done: oneshot::Sender<Result<(), Refusal>>,
    },
    /// Propose a membership change; answered once proposed or refused.
    ChangeMembers {
        /// The node.
        id: u64,
        /// What to do.
        change: MemberChange,
        /// Request ID the waiter registered.
        request_id: u64,
        /// Proposed, or why not.
        done: oneshot::Sender<Result<(), Refusal>>,
    },
    /// A linearizable read: answered with the read index once the leader confirmed it.
    Read {
        /// Read index, or why not.
        done: oneshot::Sender<Result<u64, Refusal>>,
    },
    /// Messages from a peer (already validated by the peer server).
    Raft(Vec<Message>),
    /// A `MsgSnapshot` from the leader (its data field empty) and its staged, checked file.
    StagedSnapshot(Box<Message>, StagedSnapshot),
    /// Status snapshot.
    Status {
        /// The report.
        done: oneshot::Sender<Status>,
    },
    /// Make a snapshot now; answered with its index once it is saved and marked.
    Snapshot {
        /// The snapshot's index, or why not.
        done: oneshot::Sender<Result<u64, Refusal>>,
    },
    /// Start a divergence check now (propose a digest check); answered once proposed.
    CheckDigests {
        /// Proposed, or why not.
        done: oneshot::Sender<Result<(), Refusal>>,
    },
    /// Transfer leadership to `to`; answered when `to` leads, or refused at the deadline.
    TransferLeader {
        /// Target node.
        to: u64,
        /// When to give up.
        deadline: Instant,
        /// Done, or why not.
        done: oneshot::Sender<Result<(), Refusal>>,
    },
    /// Stop: hand leadership away if leading, sync, exit the loop.
    Shutdown,
}

/// Feedback for the raft thread from the tasks it started.
pub enum Report {
    /// A send to this peer failed.
    Unreachable(u64),
    /// A snapshot send finished.
    Snapshot {
        /// Receiver.
        to: u64,
        /// Delivered.
        ok: bool,
    },
    /// The snapshot thread saved the snapshot file; the WAL mark comes next.
    SnapshotSaved {
        /// Its metadata.
        meta: SnapshotMetadata,
        /// Bytes of its image (envelope included).
        bytes: u64,
    },
    /// A snapshot file could not be read for a follower (missing or damaged): make a new one.
    SnapshotUnreadable,
    /// The apply thread's state digest at the digest check at `index`.
    Digest {
        /// The check's index.
        index: u64,
        /// The state machine's digest there.
        digest: u64,
    },
    /// The snapshot thread could not make the snapshot (reading the previous one or writing
    /// the new file failed); no file was marked, the WAL still holds everything.
    SnapshotFailed,
    /// The apply thread produced this image for a snapshot (image strategy).
    SnapshotImage {
        /// Its metadata (index, term, conf state).
        meta: SnapshotMetadata,
        /// Membership at `meta.index`.
        membership: crate::membership::Membership,
        /// The application's image at `meta.index`.
        image: Vec<u8>,
    },
    /// Forwarded proposals (`MsgPropose`) that were certainly not sent: no connection to the
    /// leader could be made.
    Undelivered(Vec<Message>),
    /// A peer answered 410: this node was removed while it was away.
    Removed,
    /// A peer answered 409: it recorded a later start of this node than this one, so this
    /// node's data dir was wiped or rolled back (the sentence is the peer's).
    Superseded(String),
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Shutdown,
    /// This node was removed from the cluster.
    Removed,
    /// A member recorded a later start of this node: its data dir was wiped or rolled back,
    /// and it stopped before taking part (see `Report::Superseded`).
    Superseded,
}

/// A node's status, typed; applications build their own JSON from it (it also serialises as
/// the common part of `GET /status`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This node.
    pub id: u64,
    /// Cluster ID, hex.
    pub cluster_id: String,
    /// leader, follower, candidate or pre-candidate.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Known leader, 0 if none.
    pub leader: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Index applied to the state machine.
    pub applied_index: u64,
    /// Last log index.
    pub last_index: u64,
    /// Index of the newest snapshot.
    pub snapshot_index: u64,
    /// Voters with their peer URLs.
    pub voters: Vec<Member>,
    /// Learners with their peer URLs.
    pub learners: Vec<Member>,
    /// This start of this node.
    pub incarnation: u64,
    /// Every member's last start record applied here (its client URL: where tools reach it).
    pub started: Vec<Started>,
    /// IDs removed from the cluster (never reused).
    pub removed_ids: Vec<u64>,
    /// Members whose NOSPACE alarm is raised (see `disk.rs`).
    pub nospace_alarms: Vec<u64>,
    /// Members whose state digest differed from the majority's at a divergence check, as
    /// this member applied the checks.
    pub diverged: Vec<Diverged>,
    /// Index of the newest divergence check a majority of voters agreed on (0: none yet).
    pub digest_check_index: u64,
    /// On the leader: every follower's replication progress.
    pub progress: Option<Vec<PeerProgress>>,
    /// Peer messages dropped because a queue was full.
    pub dropped_messages: u64,
    /// Peer requests refused, by reason (see `peer_server::Refused`).
    pub peer_refused: std::collections::BTreeMap<&'static str, u64>,
    /// On a leader: ReadIndex requests whose context was already pending (raft-rs drops
    /// them silently; MUST stay 0).
    pub duplicate_read_contexts: u64,
    /// CPU time this node's snapshot threads have used since it started, in µs.
    pub snapshot_cpu_micros: u64,
}

/// A member's last start record.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    /// The member.
    pub id: u64,
    /// Its incarnation at that start.
    pub incarnation: u64,
    /// Where it serves clients.
    pub client_url: String,
}

/// One follower's progress, as the leader sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerProgress {
    /// Follower.
    pub id: u64,
    /// Highest index known replicated.
    pub match_index: u64,
    /// Next index to send.
    pub next_index: u64,
    /// probe, replicate or snapshot.
    pub state: String,
    /// Heard from recently.
    pub recent_active: bool,
}

/// A member whose state diverged (see `Status::diverged`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diverged {
    /// The member.
    pub id: u64,
    /// The index where it was found: a divergence check's, or the log index its committed log
    /// contradicts its leader's at.
    pub index: u64,
    /// How it was found, as one sentence.
    pub why: String,
}

impl Status {
    /// `Ok` when this node can serve: it knows a leader and applies within `max_lag` entries of
    /// the commit index; else the reason, as one sentence.
    ///
    /// # Errors
    /// The reason this node is unhealthy.
    pub fn health(&self, max_lag: u64) -> Result<(), String> {
        if self.leader == 0 {
            return Err("unhealthy: this node knows no leader".into());
        }
        if let Some(d) = self.diverged.iter().find(|d| d.id == self.id) {
            return Err(format!(
                "unhealthy: this member's state diverged at index {}: {}; remove it, wipe its \
                 data dirs and add it back under a new ID",
                d.index, d.why
            ));
        }
        if !self.nospace_alarms.is_empty() {
            return Err(format!(
                "unhealthy: the NOSPACE alarm is raised by member(s) {:?}: writes that grow the \
                 data are refused until space is freed there",
                self.nospace_alarms
            ));
        }
        let lag = self.commit_index.saturating_sub(self.applied_index);
        if lag > max_lag {
            return Err(format!(
                "unhealthy: applying lags {lag} entries behind the commit index"
            ));
        }
        Ok(())
    }
}
