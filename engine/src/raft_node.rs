//! The raft loop: [`RaftNode::serve`], sole owner of `RawNode`, the WAL, the raft storage, the
//! membership and the peer transport. It is the main task of the raft thread's own runtime,
//! whose other tasks are the peer server and the transport's senders (`node.rs`).
//!
//! Everything reaches it through two channels: the bounded inbox ([`Msg`], from the client API
//! and the peer server; when full, clients get 503 and peer batches are refused) and the
//! unbounded report channel ([`Report`], from the transport and the apply worker; bounded by
//! construction: at most one report per request in flight).
//!
//! One loop turn: wait for input or the next tick; drain the inbox (group commit: every
//! proposal that arrived is in the same Ready); tick; issue one `read_index` for all waiting
//! reads; then handle the Ready in the order DESIGN.md section 3 gives:
//! 1. snapshot -> snap file, WAL mark, raft storage, apply worker
//! 2. `messages()` -> transport (a leader sends appends before its own fsync)
//! 3. entries + hard state -> WAL, one fdatasync when `must_sync()`
//! 4. entries + hard state -> raft storage
//! 5. `persisted_messages()` -> transport (only after step 3)
//! 6. committed entries: conf changes applied here, then all to the commit channel
//! 7. read states -> the waiting reads
//! 8. advance: LightReady's commit index to the WAL before its committed entries go out,
//!    its messages, its committed entries
//! 9. maybe start a snapshot (merged on a snapshot thread, or imaged by the apply thread);
//!    compaction follows its report.
//!
//! After each Ready it publishes role and leader changes ([`crate::events`]); "became leader"
//! only once an entry of this term is committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Message, MessageType,
    Snapshot, SnapshotMetadata,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage};
use slog::{debug, error, info, warn, Logger};
use tokio::sync::oneshot;

use crate::apply::{Applier, Apply};
use crate::config::Config;
use crate::events::{EventHub, EventKind, NodeState, Role};
use crate::framing::{
    decode_entry, encode_digest, encode_digest_check, encode_divergence_report, read_envelope,
    ConfChangeContext, EntryData, StartRecord,
};
use crate::limits::MAX_SIZE_PER_MSG;
use crate::membership::{Member, Membership, Start};
use crate::peer_server::PeerGate;
use crate::protocol::{Diverged, Exit, MemberChange, Msg, PeerProgress, Refusal, Report, Status};
use crate::snapshot_builder::{JobContext, PlanMerge, SnapshotJob};
use crate::storage::RaftStorage;
use crate::transport::Transport;
use crate::waiters::{Applied, ChangeOutcome, Waiters};

/// Inbox bound, in messages. Past it clients get 503 and peers are asked to retry.
pub const INBOX_BOUND: usize = 8192;
/// Most inbox messages handled before the next Ready (bounds one turn's latency).
const MAX_DRAIN: usize = 4096;
/// Raft's inflight append cap per follower (trap 10).
const MAX_INFLIGHT_MSGS: usize = 256;
/// Uncommitted bytes a leader accepts before dropping proposals (answered 503).
const MAX_UNCOMMITTED_BYTES: u64 = 256 * 1024 * 1024;
/// Pause before retrying a snapshot that could not be made.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(1);
/// How long a snapshot job may run at idle priority before it is raised to nice 10 (a merge
/// of 1M keys takes about 1.5 s on a busy 2-core host).
const SNAPSHOT_STARVED_AFTER: Duration = Duration::from_secs(10);
/// Snapshots are spaced so that the gap after one is this many times as long as building it
/// took (building takes at most a quarter of the time).
const SNAPSHOT_DUTY_DIVISOR: u32 = 3;

/// A learner is caught up when its match index is at most this many entries behind the
/// leader's commit index.
const PROMOTE_MAX_LAG: u64 = 100;

/// Where the raft thread answers a client: done, or why not.
type Reply<T> = oneshot::Sender<Result<T, Refusal>>;

/// A removal of the leader, proposed once leadership moved (see `defer_leader_removal`).
struct DeferredRemoval {
    /// The node to remove.
    id: u64,
    /// The waiting client's request ID.
    request_id: u64,
    /// Propose even if leadership has not moved by then.
    give_up: Instant,
    /// Last time it was proposed: a new leader silently drops conf changes until it applied
    /// its first entry, so the proposal is repeated until the removal is applied.
    proposed_at: Option<Instant>,
    /// Forget it then (the client has had its 504).
    expires: Instant,
}

/// Linearizable reads waiting for a read index.
///
/// Contexts MUST be unique across the cluster and across restarts: the leader's raft-rs
/// (`ReadOnly::add_request`) silently drops a read whose context is already pending, so two
/// nodes numbering their reads alike would lose each other's batches until the re-issue. A
/// context is `[node id u64 LE][incarnation u64 LE][sequence u64 LE]`, the incarnation being
/// the start time in microseconds.
struct ReadQueue {
    /// Arrived since the last `read_index` call.
    pending: Vec<Reply<u64>>,
    /// Issued, by sequence number, with the time they were issued.
    in_flight: HashMap<u64, (Instant, Vec<Reply<u64>>)>,
    /// The first 16 bytes of every context of this process.
    ctx_prefix: [u8; 16],
    next_seq: u64,
}

/// Length of a read context.
const READ_CTX_BYTES: usize = 24;

impl ReadQueue {
    fn new(node_id: u64) -> ReadQueue {
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut ctx_prefix = [0u8; 16];
        ctx_prefix[..8].copy_from_slice(&node_id.to_le_bytes());
        ctx_prefix[8..].copy_from_slice(&incarnation.to_le_bytes());
        ReadQueue {
            pending: Vec::new(),
            in_flight: HashMap::new(),
            ctx_prefix,
            next_seq: 0,
        }
    }

    /// A fresh context and its sequence number.
    fn next_ctx(&mut self) -> (u64, Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut ctx = Vec::with_capacity(READ_CTX_BYTES);
        ctx.extend_from_slice(&self.ctx_prefix);
        ctx.extend_from_slice(&seq.to_le_bytes());
        (seq, ctx)
    }

    /// The sequence number of one of our contexts (`None` for another node's).
    fn seq_of(&self, ctx: &[u8]) -> Option<u64> {
        if ctx.len() != READ_CTX_BYTES || ctx[..16] != self.ctx_prefix {
            return None;
        }
        Some(u64::from_le_bytes(ctx[16..].try_into().ok()?))
    }
}

/// What the raft thread is built from (see `node.rs`).
pub struct Parts {
    /// The recovered raft state machine.
    pub raw: RawNode<RaftStorage>,
    /// The durable log.
    pub wal: wal::Wal,
    /// The snap directory.
    pub snapshotter: snap::Snapshotter,
    /// Peer links.
    pub transport: Transport,
    /// The apply worker's end (the commit channel; quick machines apply here).
    pub applier: Applier,
    /// Members and their URLs as recovered.
    pub membership: Membership,
    /// Published to the peer server.
    pub gate: Arc<PeerGate>,
    /// Proposers waiting for conf changes.
    pub changes: Arc<Waiters<ChangeOutcome>>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Feeds `Report`s back to this thread (cloned into snapshot jobs).
    pub reports: crate::protocol::Reports,
    /// Publishes events and the node state.
    pub hub: EventHub,
    /// `Some` when the application merges snapshots (else the apply thread images them).
    pub plan_merge: Option<PlanMerge>,
    /// This start of this node (announced in a start record).
    pub start: Start,
    /// The data dirs' free space, and where the cluster's NOSPACE alarms are published.
    pub disk: Arc<crate::disk::DiskSpace>,
    /// Log.
    pub logger: Logger,
}

/// What the raft thread owns.
pub struct RaftNode {
    raw: RawNode<RaftStorage>,
    wal: wal::Wal,
    snapshotter: snap::Snapshotter,
    transport: Transport,
    applier: Applier,
    membership: Membership,
    conf_state: ConfState,
    gate: Arc<PeerGate>,
    changes: Arc<Waiters<ChangeOutcome>>,
    config: Arc<Config>,
    logger: Logger,
    /// Index of the newest snapshot (saved and marked).
    snapshot_index: u64,
    /// Last committed index handed to the apply thread.
    sent_index: u64,
    reports: crate::protocol::Reports,
    hub: EventHub,
    plan_merge: Option<PlanMerge>,
    /// (role, leader, term) last published.
    seen: (Role, u64, u64),
    /// A `BecameLeader` was published and no `SteppedDown` yet.
    announced: bool,
    reads: ReadQueue,
    /// When the snapshot job in flight started.
    snapshot_started: Option<Instant>,
    /// No new snapshot job before this instant.
    next_snapshot_at: Instant,
    /// `Msg::Snapshot` callers, with the index their snapshot must reach.
    snapshot_waiters: Vec<(u64, Reply<u64>)>,
    removed: bool,
    stopping: Option<Instant>,
    transfers: Vec<(u64, Instant, Reply<()>)>,
    /// Proposals received this turn, proposed together by `flush_proposals`.
    proposals: Vec<(bytes::Bytes, Reply<()>)>,
    /// Removals of the current leader waiting for leadership to move first (trap 6).
    deferred_removals: Vec<DeferredRemoval>,
    /// Request ID -> when to stop proposing again a forwarded proposal that never left.
    redeliver: HashMap<u64, Instant>,
    /// Such proposals, waiting for a known leader.
    stranded: Vec<bytes::Bytes>,
    /// Request IDs of removals of this node proposed here (answered on a peer's 410 too).
    own_removals: Vec<u64>,
    /// Entry bytes committed since the snapshot in flight (or the last one) started.
    logged_bytes: u64,
    /// The bytes the snapshot in flight covers (given back if it fails).
    job_logged_bytes: u64,
    /// Last index whose commit the followers must hear at once: an entry a follower forwarded,
    /// or a peer URL update (the member it moves must apply it while the leader still reaches
    /// it at its old URL).
    prompt_commit_upto: u64,
    /// Size of the newest snapshot's data (saved here, received, or found at start).
    last_image_bytes: u64,
    /// CPU time of the snapshot threads, in µs.
    snapshot_cpu_micros: Arc<std::sync::atomic::AtomicU64>,
    /// The running snapshot job's thread (idle priority), and whether it was raised.
    snapshot_thread: Arc<crate::priority::JobThread>,
    snapshot_raised: bool,
    /// This start of this node, announced until its start record is applied.
    own_start: Start,
    /// When the start record was last proposed.
    start_proposed_at: Option<Instant>,
    /// A member recorded a later start of this node: stop.
    superseded: bool,
    disk: Arc<crate::disk::DiskSpace>,
    /// When this node last proposed raising or clearing its alarm.
    alarm_proposed_at: Option<Instant>,
    /// When this leader, below its disk floor, last handed leadership away.
    floor_transfer_at: Option<Instant>,
    /// When a dropped peer message was last logged (rate limit).
    contradiction_logged_at: Option<Instant>,
    /// The received snapshot stepped in this iteration, until its Ready installs it.
    staged: Option<crate::protocol::StagedSnapshot>,
    /// (leader, term) last told to the peer server.
    published_leader: (u64, u64),
    /// Digest reports and divergence verdicts (`divergence.rs`).
    digests: crate::divergence::DigestChecks,
    /// The commit index at start: digest checks up to it were answered before the restart.
    start_commit: u64,
    /// When this leader last proposed a periodic digest check.
    digest_check_at: Option<Instant>,
    /// Application commands were committed since the last digest check.
    commands_since_check: bool,
    /// This node found its committed log contradicting its leader's at this commit index:
    /// the report is proposed again now and then, since a wedged node never sees it applied.
    own_divergence: Option<u64>,
    /// When that report was last proposed.
    divergence_reported_at: Option<Instant>,
}

/// Builds raft-rs's config from ours (trap 10: pre-vote, check-quorum, batching limits).
pub fn raft_config(config: &Config, applied: u64) -> raft::Config {
    raft::Config {
        id: config.id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied,
        max_size_per_msg: MAX_SIZE_PER_MSG,
        max_inflight_msgs: MAX_INFLIGHT_MSGS,
        check_quorum: true,
        pre_vote: true,
        max_uncommitted_size: MAX_UNCOMMITTED_BYTES,
        // Until an entry needs it (see `RaftNode::prompt_commit`).
        skip_bcast_commit: true,
        ..Default::default()
    }
}

impl RaftNode {
    /// Wires a node around an already recovered `raw` node.
    pub fn new(parts: Parts) -> RaftNode {
        let Parts {
            raw,
            wal,
            snapshotter,
            transport,
            applier,
            membership,
            gate,
            changes,
            config,
            reports,
            hub,
            plan_merge,
            start,
            disk,
            logger,
        } = parts;
        let conf_state = raw
            .store()
            .initial_state()
            .map(|s| s.conf_state)
            .unwrap_or_default();
        let snapshot_index = raw.store().snapshot_metadata().index;
        let last_image_bytes = image_bytes(&snapshotter, raw.store().snapshot_metadata());
        let start_commit = raw.raft.raft_log.committed;
        let reads = ReadQueue::new(config.id);
        let mut node = RaftNode {
            raw,
            wal,
            snapshotter,
            transport,
            applier,
            membership,
            conf_state,
            gate,
            changes,
            config,
            logger,
            snapshot_index,
            sent_index: snapshot_index,
            reports,
            hub,
            plan_merge,
            seen: (Role::Follower, 0, 0),
            announced: false,
            reads,
            snapshot_started: None,
            next_snapshot_at: Instant::now(),
            snapshot_waiters: Vec::new(),
            removed: false,
            stopping: None,
            transfers: Vec::new(),
            deferred_removals: Vec::new(),
            proposals: Vec::new(),
            redeliver: HashMap::new(),
            stranded: Vec::new(),
            own_removals: Vec::new(),
            logged_bytes: 0,
            job_logged_bytes: 0,
            last_image_bytes,
            prompt_commit_upto: 0,
            snapshot_cpu_micros: Arc::default(),
            snapshot_thread: Arc::default(),
            snapshot_raised: false,
            own_start: start,
            start_proposed_at: None,
            superseded: false,
            disk,
            alarm_proposed_at: None,
            floor_transfer_at: None,
            contradiction_logged_at: None,
            staged: None,
            published_leader: (0, 0),
            digests: Default::default(),
            start_commit,
            digest_check_at: Some(Instant::now()),
            commands_since_check: false,
            own_divergence: None,
            divergence_reported_at: None,
        };
        node.publish_records();
        node.sync_peers();
        // A lone voter need not wait an election timeout to lead.
        if node.conf_state.voters == [node.config.id] && node.conf_state.learners.is_empty() {
            let _ = node.raw.campaign();
        } else {
            // Like etcd's initial-election-tick-advance: after a restart, do not sit out a
            // whole election timeout before the first (pre-)vote. Safe with pre-vote and
            // check-quorum: a live leader's heartbeat resets the clock, and its followers
            // refuse pre-votes while they hear from it.
            for _ in 1..node.config.election_ticks {
                node.raw.tick();
            }
        }
        node
    }

    /// The loop, the main task of the raft thread's runtime (which also runs this node's peer
    /// server and transport: see ARCHITECTURE's channel map). Everything in a turn is
    /// synchronous, fsyncs included; the loop gives way to the runtime's other tasks once per
    /// turn and between a Ready's messages and its fsync (`on_ready`). Returns when asked to
    /// stop or when this node was removed.
    pub async fn serve(
        mut self,
        mut inbox: tokio::sync::mpsc::Receiver<Msg>,
        mut reports: tokio::sync::mpsc::UnboundedReceiver<Report>,
    ) -> Exit {
        let tick = self.config.tick_interval;
        let mut next_tick = Instant::now() + tick;
        // One timer for the whole loop, moved on each tick (not one per turn).
        let tick_timer = tokio::time::sleep_until(next_tick.into());
        tokio::pin!(tick_timer);
        loop {
            tokio::select! {
                msg = inbox.recv() => match msg {
                    Some(msg) => self.handle_msg(msg),
                    None => self.begin_stop(),
                },
                Some(report) = reports.recv() => self.handle_report(report),
                () = &mut tick_timer => {},
            }
            for _ in 0..MAX_DRAIN {
                match inbox.try_recv() {
                    Ok(msg) => self.handle_msg(msg),
                    Err(_) => break,
                }
            }
            while let Ok(report) = reports.try_recv() {
                self.handle_report(report);
            }
            self.release_stranded();
            self.flush_proposals();
            let now = Instant::now();
            if now >= next_tick {
                if self.config.test_panic == Some(crate::config::TestPanic::Raft) {
                    panic!("--test-panic raft");
                }
                self.raw.tick();
                next_tick += tick;
                if next_tick < now {
                    next_tick = now + tick; // we fell behind (a long fsync): do not burst ticks
                }
                tick_timer.as_mut().reset(next_tick.into());
                self.retry_reads(now);
                self.check_transfers(now);
                self.publish_progress();
                self.propose_deferred_removals(now);
                self.announce_start(now);
                self.update_alarm(now);
                self.leave_leadership_when_full(now);
                self.promote_ready_learners();
                self.periodic_digest_check(now);
                self.report_own_divergence(now);
                self.raise_starved_snapshot(now);
            }
            self.issue_reads();
            self.publish_leader();
            if self.raw.has_ready() {
                self.on_ready().await;
            }
            // A staged snapshot raft did not take (stale, or not for us) is discarded.
            self.staged = None;
            self.publish_role();
            self.maybe_snapshot();
            if self.superseded {
                self.finish();
                return Exit::Superseded;
            }
            if self.removed {
                self.finish();
                return Exit::Removed;
            }
            if self.stopping.is_some_and(|deadline| {
                Instant::now() >= deadline || self.raw.raft.state != StateRole::Leader
            }) {
                self.finish();
                return Exit::Shutdown;
            }
            // The peer requests, answers and sends of this turn (tasks of this runtime) run
            // now, whatever is waiting in the inbox.
            tokio::task::yield_now().await;
        }
    }

    fn handle_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Propose { data, done } => self.proposals.push((data, done)),
            Msg::ChangeMembers {
                id,
                change,
                request_id,
                done,
            } => {
                let _ = done.send(self.propose_member_change(id, change, request_id));
            }
            Msg::Read { done } => {
                if self.stopping.is_some() {
                    let _ = done.send(Err(Refusal::ShuttingDown));
                } else if self.raw.raft.leader_id == 0 {
                    let _ = done.send(Err(Refusal::NoLeader));
                } else {
                    self.reads.pending.push(done);
                }
            }
            Msg::Raft(msgs) => {
                for m in msgs {
                    self.step(m);
                }
            }
            Msg::StagedSnapshot(m, staged) => {
                // Installed by this iteration's Ready if raft takes the snapshot, else
                // discarded after it (see the loop).
                self.staged = Some(staged);
                self.step(*m);
            }
            Msg::Status { done } => {
                let _ = done.send(self.status());
            }
            Msg::TransferLeader { to, deadline, done } => self.transfer_leader(to, deadline, done),
            Msg::Snapshot { done } => {
                if self.sent_index <= self.snapshot_index {
                    let _ = done.send(Ok(self.snapshot_index));
                } else {
                    self.snapshot_waiters.push((self.sent_index, done));
                    self.raw.mut_store().want_snapshot();
                }
            }
            Msg::CheckDigests { done } => {
                let _ = done.send(self.propose_digest_check());
            }
            Msg::Shutdown => self.begin_stop(),
        }
    }

    fn handle_report(&mut self, report: Report) {
        match report {
            Report::Unreachable(id) => self.raw.report_unreachable(id),
            Report::Snapshot { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Report::SnapshotUnreadable => self.raw.mut_store().want_snapshot(),
            // Checks up to the commit index at start were answered before the restart.
            Report::Digest { index, digest } if index > self.start_commit => {
                let record = encode_digest(self.config.id, index, digest);
                self.propose_unwatched(record.into());
            }
            Report::Digest { .. } => {}
            Report::SnapshotSaved { meta, bytes } => {
                self.last_image_bytes = bytes;
                self.on_snapshot_saved(meta)
            }
            Report::SnapshotImage {
                meta,
                membership,
                image,
            } => SnapshotJob::Image {
                meta,
                membership,
                image,
            }
            .spawn(self.job_context()),
            Report::Undelivered(msgs) => self.propose_again(msgs),
            Report::SnapshotFailed => {
                // Try again after a pause; a follower that needed it asks again by itself.
                self.snapshot_started = None;
                self.logged_bytes += self.job_logged_bytes;
                self.next_snapshot_at = Instant::now() + SNAPSHOT_RETRY;
            }
            Report::Removed => {
                info!(
                    self.logger,
                    "a peer says this node was removed from the cluster: shutting down"
                );
                // A peer answers 410 only once it applied our removal, which is therefore
                // committed: whoever asked this node to remove itself gets its answer, although
                // this node stops before applying the entry itself (its index is unknown: 0).
                for request_id in std::mem::take(&mut self.own_removals) {
                    self.changes
                        .complete(request_id, Ok(Applied { index: 0, term: 0 }));
                }
                self.on_removed("a peer answered that this node was removed");
            }
            Report::Superseded(why) => {
                slog::crit!(self.logger, "a member recorded a later start of this node: its data \
                    dir was wiped or rolled back; stopping before it takes part"; "peer_said" => why);
                self.superseded = true;
            }
        }
    }

    /// Proposes this node's start record until it is applied: once per election timeout
    /// while a leader is known and this node is a member.
    fn announce_start(&mut self, now: Instant) {
        let me = self.config.id;
        if self.membership.started(me) == Some(&self.own_start)
            || self.raw.raft.leader_id == 0
            || self.stopping.is_some()
            || !(self.conf_state.voters.contains(&me) || self.conf_state.learners.contains(&me))
        {
            return;
        }
        let every = self.election_timeout();
        if !due(&mut self.start_proposed_at, now, every) {
            return;
        }
        let record = StartRecord {
            id: me,
            start: self.own_start.clone(),
        };
        self.propose_unwatched(record.encode().into());
    }

    /// On the leader: promotes a learner added by `POST /{id}` once it has started (its start
    /// record is applied) and caught up, one change at a time.
    fn promote_ready_learners(&mut self) {
        if self.raw.raft.state != StateRole::Leader
            || self.raw.raft.has_pending_conf()
            || self.stopping.is_some()
        {
            return;
        }
        let ready = self.membership.iter().find(|m| {
            m.learner
                && m.promote_when_ready
                && self.membership.started(m.id).is_some()
                && self.conf_state.learners.contains(&m.id)
                && self.learner_caught_up(m.id)
        });
        if let Some(id) = ready.map(|m| m.id) {
            info!(self.logger, "promoting a learner that started and caught up"; "node" => id);
            let _ = self.propose_conf_change(id, ConfChangeType::AddNode, String::new(), 0, false);
        }
    }

    /// Raises this node's NOSPACE alarm through the log when its disk is below the reserve,
    /// and clears it once space is back; once per election timeout until applied.
    fn update_alarm(&mut self, now: Instant) {
        let me = self.config.id;
        let low = self.disk.low().is_some();
        let raised = self.membership.alarms().any(|id| id == me);
        if low == raised || self.raw.raft.leader_id == 0 || self.stopping.is_some() {
            return;
        }
        let every = self.election_timeout();
        if !due(&mut self.alarm_proposed_at, now, every) {
            return;
        }
        let what = if low { "raising" } else { "clearing" };
        info!(self.logger, "NOSPACE alarm: {what} it"; "free" => self.disk.low(),
            "reserve" => self.disk.reserve());
        self.propose_unwatched(crate::framing::encode_alarm(me, low).into());
    }

    /// A leader below its disk floor takes no proposals (peers' and its own are refused), so
    /// it hands leadership to the most up-to-date voter, once per election timeout.
    fn leave_leadership_when_full(&mut self, now: Instant) {
        if self.disk.below_floor().is_none() || self.raw.raft.state != StateRole::Leader {
            return;
        }
        let every = self.election_timeout();
        if !due(&mut self.floor_transfer_at, now, every) {
            return;
        }
        if let Some(to) = self.best_transferee() {
            warn!(self.logger, "this leader's disk is below its floor: moving leadership"; "to" => to);
            self.raw.transfer_leader(to);
        }
    }

    /// A peer URL update became committed: every member sends to `id` at `url` from now on
    /// (and `id` itself listens there from its next start).
    fn apply_url_update(&mut self, request_id: u64, id: u64, url: String, e: &Entry) {
        let Some(member) = self.membership.get(id).cloned() else {
            self.changes
                .complete(request_id, Err(format!("node {id} is not a member")));
            return;
        };
        info!(self.logger, "member peer URL updated"; "node" => id, "from" => &member.url, "to" => &url);
        self.membership.insert_member(Member {
            url: url.clone(),
            ..member.clone()
        });
        self.transport.set_peer(id, &url);
        self.publish_records();
        self.publish_membership("update", id, url, member.learner, e.index);
        let applied = Applied {
            index: e.index,
            term: e.term,
        };
        self.changes.complete(request_id, Ok(applied));
    }

    /// An alarm record became committed.
    fn apply_alarm(&mut self, id: u64, raised: bool, index: u64) {
        if self.membership.set_alarm(id, raised) {
            let state = if raised { "raised" } else { "cleared" };
            warn!(self.logger, "NOSPACE alarm {state}"; "member" => id, "index" => index);
            self.publish_records();
        }
    }

    /// A start record became committed: remember it (it reaches the snapshot envelope).
    fn apply_start_record(&mut self, record: StartRecord, index: u64) {
        let StartRecord { id, start } = record;
        info!(self.logger, "member started"; "node" => id, "incarnation" => start.incarnation,
            "client_url" => &start.client_url, "index" => index);
        if self.membership.record_start(id, start) {
            self.publish_records();
        }
    }

    /// Proposals forwarded to a leader that could not even be connected to (it died, and this
    /// node does not know yet): nobody has them, so they are proposed again, to whoever leads
    /// next, until the request deadline. Their proposers still wait for their request IDs.
    /// Conf changes are not: their proposer learns the outcome at its deadline.
    fn propose_again(&mut self, msgs: Vec<Message>) {
        let now = Instant::now();
        let give_up = now + self.config.request_timeout;
        self.redeliver.retain(|_, until| *until > now);
        for e in msgs.into_iter().flat_map(|m| m.entries.into_iter()) {
            if e.get_entry_type() != EntryType::EntryNormal {
                continue;
            }
            let Ok(EntryData::Command { request_id, .. }) = decode_entry(&e.data) else {
                continue;
            };
            if *self.redeliver.entry(request_id).or_insert(give_up) <= now {
                continue;
            }
            self.stranded.push(e.data);
        }
    }

    /// Proposes the stranded proposals again once a leader is known.
    fn release_stranded(&mut self) {
        if self.stranded.is_empty() || self.raw.raft.leader_id == 0 {
            return;
        }
        for data in std::mem::take(&mut self.stranded) {
            self.propose_unwatched(data);
        }
    }

    /// Queues entry data for this turn's proposal batch with nobody waiting for its outcome
    /// (the caller proposes again until it sees the entry applied).
    fn propose_unwatched(&mut self, data: bytes::Bytes) {
        let (done, _) = oneshot::channel();
        self.proposals.push((data, done));
    }

    /// The base election timeout.
    fn election_timeout(&self) -> Duration {
        self.config.tick_interval * self.config.election_ticks as u32
    }

    /// Publishes what the peer server and the disk watcher read of the membership: members,
    /// start records, removed IDs, NOSPACE alarms.
    fn publish_records(&self) {
        self.gate.set_records(&self.membership);
        self.disk.set_alarms(self.membership.alarms().collect());
    }

    /// This node is no longer a member: tell `/events` subscribers (once), then leave the loop.
    fn on_removed(&mut self, why: &str) {
        if !self.removed {
            let kind = EventKind::Removed {
                reason: why.to_string(),
            };
            self.hub.publish(self.raw.raft.term, kind, |_| {});
        }
        self.removed = true;
    }

    /// Proposes every entry that arrived this turn in as few `MsgPropose` messages as
    /// [`MAX_SIZE_PER_MSG`] allows (at least one entry each): raft appends each message's
    /// entries together and sends one append per follower instead of one per proposal, and a
    /// follower forwards each message whole, so no forwarded batch can outgrow the peer
    /// server's request limit (see `limits.rs`).
    fn flush_proposals(&mut self) {
        let mut proposals = std::mem::take(&mut self.proposals).into_iter().peekable();
        while proposals.peek().is_some() {
            let mut bytes = 0u64;
            let mut entries = Vec::new();
            let mut dones = Vec::new();
            while let Some((data, _)) = proposals.peek() {
                let size = data.len() as u64;
                if !entries.is_empty() && bytes + size > MAX_SIZE_PER_MSG {
                    break;
                }
                bytes += size;
                let (data, done) = proposals.next().expect("peeked");
                entries.push(Entry {
                    data,
                    ..Default::default()
                });
                dones.push(done);
            }
            let outcome = self.propose_entries(entries);
            for done in dones {
                let _ = done.send(outcome.clone());
            }
        }
    }

    /// Steps one `MsgPropose` carrying `entries`.
    fn propose_entries(&mut self, entries: Vec<Entry>) -> Result<(), Refusal> {
        if self.stopping.is_some() {
            return Err(Refusal::ShuttingDown);
        }
        if self.raw.raft.leader_id == 0 {
            return Err(Refusal::NoLeader);
        }
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.config.id;
        m.set_entries(entries.into());
        self.raw.step(m).map_err(|e| {
            if !matches!(e, raft::Error::ProposalDropped) {
                warn!(self.logger, "proposal refused"; "error" => %e);
            }
            Refusal::Dropped
        })
    }

    fn propose_member_change(
        &mut self,
        id: u64,
        change: MemberChange,
        request_id: u64,
    ) -> Result<(), Refusal> {
        if self.stopping.is_some() {
            return Err(Refusal::ShuttingDown);
        }
        if self.raw.raft.leader_id == 0 {
            return Err(Refusal::NoLeader);
        }
        if self.raw.raft.has_pending_conf() {
            return Err(Refusal::ChangePending);
        }
        if matches!(change, MemberChange::Add { .. }) && self.membership.was_removed(id) {
            return Err(Refusal::IdRemoved(id));
        }
        let is_voter = self.conf_state.voters.contains(&id);
        let is_learner = self.conf_state.learners.contains(&id);
        let (change_type, url) = match change {
            MemberChange::Add { .. } if is_voter || is_learner => {
                return Err(Refusal::AlreadyMember(id))
            }
            MemberChange::Add { url, .. } if self.url_owner(&url).is_some() => {
                let owner = self.url_owner(&url).expect("checked");
                return Err(Refusal::UrlInUse { url, id: owner });
            }
            // A voter comes in as a learner, promoted once it started and caught up
            // (`promote_ready_learners`): a node that never ran cannot stall the quorum.
            MemberChange::Add { url, learner } => {
                let promote = !learner;
                return self.propose_conf_change(
                    id,
                    ConfChangeType::AddLearnerNode,
                    url,
                    request_id,
                    promote,
                );
            }
            MemberChange::Promote if !is_learner => return Err(Refusal::NotMember(id)),
            // A learner that never started (no start record applied here) is not caught up,
            // wherever the request lands: promoting it would raise the quorum with a voter
            // that cannot vote.
            MemberChange::Promote
                if self.membership.started(id).is_none() || !self.learner_caught_up(id) =>
            {
                return Err(Refusal::NotCaughtUp(id))
            }
            MemberChange::Promote => (ConfChangeType::AddNode, String::new()),
            MemberChange::UpdateUrl { .. } | MemberChange::Remove if !is_voter && !is_learner => {
                return Err(Refusal::NotMember(id))
            }
            MemberChange::UpdateUrl { url } => {
                if let Some(owner) = self.url_owner(&url).filter(|owner| *owner != id) {
                    return Err(Refusal::UrlInUse { url, id: owner });
                }
                let data = crate::framing::encode_url_update(request_id, id, &url);
                self.raw
                    .propose(Vec::new(), data)
                    .map_err(|_| Refusal::Dropped)?;
                // The member that moves must hear this commit before the leader applies it
                // and stops reaching it at its old URL (see `prompt_commit_upto`).
                self.prompt_commit(self.raw.raft.raft_log.last_index());
                return Ok(());
            }
            MemberChange::Remove if id == self.raw.raft.leader_id && self.voters_besides(id) => {
                return self.defer_leader_removal(id, request_id);
            }
            MemberChange::Remove => (ConfChangeType::RemoveNode, String::new()),
        };
        if change_type == ConfChangeType::RemoveNode && id == self.config.id {
            self.own_removals.push(request_id);
        }
        self.propose_conf_change(id, change_type, url, request_id, false)
    }

    fn propose_conf_change(
        &mut self,
        id: u64,
        change_type: ConfChangeType,
        url: String,
        request_id: u64,
        promote_when_ready: bool,
    ) -> Result<(), Refusal> {
        let mut cc = ConfChange::default();
        cc.set_change_type(change_type);
        cc.node_id = id;
        cc.context = ConfChangeContext {
            request_id,
            url,
            promote_when_ready,
        }
        .encode()
        .into();
        self.raw
            .propose_conf_change(Vec::new(), cc)
            .map_err(|_| Refusal::Dropped)
    }

    /// The member whose peer URL is `url` (compared without case), if any. Two members with one
    /// URL would count as two voters although at most one can ever run.
    fn url_owner(&self, url: &str) -> Option<u64> {
        self.membership
            .iter()
            .find(|m| m.url.eq_ignore_ascii_case(url))
            .map(|m| m.id)
    }

    /// On the leader: whether learner `id` acknowledged entries and replicated close enough to
    /// the commit index (a match of 0 is a learner that never answered, however young the
    /// log). A follower cannot tell and lets the leader's log decide.
    fn learner_caught_up(&self, id: u64) -> bool {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return true;
        }
        raft.prs().get(id).is_some_and(|pr| {
            pr.matched > 0 && pr.matched + PROMOTE_MAX_LAG >= raft.raft_log.committed
        })
    }

    /// Lets the peer server tell a starting node what the leader saw it acknowledge.
    fn publish_progress(&self) {
        let raft = &self.raw.raft;
        let matched = (raft.state == StateRole::Leader).then(|| {
            raft.prs()
                .iter()
                .map(|(id, pr)| (*id, pr.matched))
                .collect()
        });
        self.gate.set_matched(matched);
    }

    fn voters_besides(&self, id: u64) -> bool {
        self.conf_state.voters.iter().any(|v| *v != id)
    }

    /// Trap 6: a removed leader does not step down in raft-rs 0.7. Move leadership away from
    /// `id` first (to this node if it is a voter and not `id`, else to the most up-to-date
    /// voter), and propose the removal once another node leads, or at the deadline anyway.
    fn defer_leader_removal(&mut self, id: u64, request_id: u64) -> Result<(), Refusal> {
        if id == self.config.id {
            self.own_removals.push(request_id);
        }
        let me = self.config.id;
        let target = if me != id && self.conf_state.voters.contains(&me) {
            Some(me)
        } else {
            self.best_transferee()
        };
        let Some(target) = target else {
            return Err(Refusal::Dropped);
        };
        info!(self.logger, "moving leadership before removing the leader"; "leader" => id, "to" => target);
        self.raw.transfer_leader(target);
        let patience = self.election_timeout() * 2;
        let now = Instant::now();
        self.deferred_removals.push(DeferredRemoval {
            id,
            request_id,
            give_up: now + patience,
            proposed_at: None,
            expires: now + self.config.request_timeout,
        });
        Ok(())
    }

    fn propose_deferred_removals(&mut self, now: Instant) {
        let leader = self.raw.raft.leader_id;
        let retry = self.election_timeout();
        let conf_state = &self.conf_state;
        self.deferred_removals.retain(|r| {
            let member = conf_state.voters.contains(&r.id) || conf_state.learners.contains(&r.id);
            member && now < r.expires
        });
        let mut due = Vec::new();
        for r in &mut self.deferred_removals {
            let moved = leader != 0 && leader != r.id;
            let retry_due = r
                .proposed_at
                .is_none_or(|at| now.duration_since(at) >= retry);
            if (moved || now >= r.give_up) && retry_due {
                r.proposed_at = Some(now);
                due.push((r.id, r.request_id));
            }
        }
        for (id, request_id) in due {
            // A refusal here (no leader for a moment) is retried at the next due time.
            let _ = self.propose_conf_change(
                id,
                ConfChangeType::RemoveNode,
                String::new(),
                request_id,
                false,
            );
        }
    }

    /// The voter other than this node with the highest match index (leader only).
    fn best_transferee(&self) -> Option<u64> {
        let me = self.config.id;
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me && self.conf_state.voters.contains(id))
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(id, _)| *id)
    }

    /// Steps one peer message. A heartbeat's commit index is clamped to our log: raft-rs would
    /// panic on a larger one, and nothing a peer sends may crash the node.
    fn step(&mut self, mut m: Message) {
        self.check_committed_log(&m);
        if let Some(why) = self.contradiction(&m) {
            self.gate
                .count_refused(crate::peer_server::Refused::Contradicts);
            if due(
                &mut self.contradiction_logged_at,
                Instant::now(),
                Duration::from_secs(1),
            ) {
                warn!(self.logger, "peer message dropped: it contradicts this node's state";
                    "from" => m.from, "type" => format!("{:?}", m.get_msg_type()), "why" => why);
            }
            return;
        }
        match m.get_msg_type() {
            MessageType::MsgHeartbeat => {
                m.commit = m.commit.min(self.raw.raft.raft_log.last_index());
            }
            MessageType::MsgReadIndex => {
                if let Some(ctx) = m.entries.first() {
                    self.count_duplicate_read(&ctx.data);
                }
            }
            _ => {}
        }
        let forwarded = m.get_msg_type() == MessageType::MsgPropose;
        if let Err(e) = self.raw.step(m) {
            debug!(self.logger, "peer message not stepped"; "error" => %e);
        }
        if forwarded && self.raw.raft.state == StateRole::Leader {
            // That follower answers its client once it applied the entry.
            self.prompt_commit(self.raw.raft.raft_log.last_index());
        } else {
            self.prompt_commit(0);
        }
    }

    /// A commit is sent to the followers at once (an append of its own) only while an entry up
    /// to `index` (or an earlier such one) is uncommitted. Otherwise followers learn the commit
    /// index from the next append or heartbeat (a read's round sends heartbeats), which saves a
    /// round of peer messages per commit. Conf changes are always sent at once (raft-rs).
    fn prompt_commit(&mut self, index: u64) {
        self.prompt_commit_upto = self.prompt_commit_upto.max(index);
        let skip = self.raw.raft.raft_log.committed >= self.prompt_commit_upto;
        self.raw.skip_bcast_commit(skip);
    }

    /// Why a peer message (already checked by the peer server) contradicts this node's own
    /// state, where raft-rs would panic or go wrong on it: an acknowledgement of entries beyond
    /// our log (a leader would slice its log past the end and commit what it does not have), a
    /// leader transfer request to a non-leader, a snapshot not newer than our commit index.
    fn contradiction(&self, m: &Message) -> Option<String> {
        let log = &self.raw.raft.raft_log;
        match m.get_msg_type() {
            MessageType::MsgAppendResponse if !m.reject && m.index > log.last_index() => {
                Some(format!(
                    "acknowledges index {} beyond our last {}",
                    m.index,
                    log.last_index()
                ))
            }
            // A follower would forward it with its term still set, which raft-rs aborts on.
            MessageType::MsgTransferLeader if self.raw.raft.state != StateRole::Leader => {
                Some("a leader transfer request sent to a node that does not lead".into())
            }
            MessageType::MsgSnapshot if m.get_snapshot().get_metadata().index <= log.committed => {
                Some(format!(
                    "snapshot at {} is not newer than our commit index {}",
                    m.get_snapshot().get_metadata().index,
                    log.committed
                ))
            }
            _ => None,
        }
    }

    fn issue_reads(&mut self) {
        if self.reads.pending.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut self.reads.pending);
        self.issue_read_batch(waiters);
    }

    fn issue_read_batch(&mut self, waiters: Vec<oneshot::Sender<Result<u64, Refusal>>>) {
        let (seq, ctx) = self.reads.next_ctx();
        self.count_duplicate_read(&ctx);
        self.raw.read_index(ctx);
        self.reads.in_flight.insert(seq, (Instant::now(), waiters));
    }

    /// On the leader, counts a read whose context is already pending: raft-rs drops it
    /// silently (see [`ReadQueue`]), so this must stay 0.
    fn count_duplicate_read(&self, ctx: &[u8]) {
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader && raft.read_only.pending_read_index.contains_key(ctx) {
            self.gate.count_duplicate_read();
        }
    }

    /// Trap 5: raft drops ReadIndex requests silently (no leader, leader not yet committed in
    /// its term). Re-issue batches that got no answer within half an election timeout.
    fn retry_reads(&mut self, now: Instant) {
        let patience = self.config.tick_interval * (self.config.election_ticks as u32 / 2).max(1);
        let stale: Vec<u64> = self
            .reads
            .in_flight
            .iter()
            .filter(|(_, (at, _))| now.duration_since(*at) >= patience)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            let (_, mut waiters) = self.reads.in_flight.remove(&ctx).expect("listed above");
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                continue;
            }
            if self.raw.raft.leader_id == 0 {
                for w in waiters {
                    let _ = w.send(Err(Refusal::NoLeader));
                }
            } else {
                self.issue_read_batch(waiters);
            }
        }
    }

    async fn on_ready(&mut self) {
        let mut rd = self.raw.ready();
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone());
        }
        let messages = rd.take_messages();
        let early = !messages.is_empty();
        self.transport.send(messages);
        let hard_state = rd.hs().cloned();
        if hard_state.is_some() || !rd.entries().is_empty() {
            if early {
                // A leader's appends leave before its fsync (the sender tasks run on this
                // thread, so they must get the chance): the followers' fsyncs overlap ours.
                tokio::task::yield_now().await;
            }
            if let Err(e) = self
                .wal
                .save(hard_state.as_ref(), rd.entries(), rd.must_sync())
            {
                crate::logging::fatal(&self.logger, "cannot write the WAL", &e);
            }
        }
        let store = self.raw.mut_store();
        store.append(rd.take_entries());
        if let Some(hs) = hard_state {
            store.set_hard_state(hs);
        }
        self.transport.send(rd.take_persisted_messages());
        self.handle_committed(rd.take_committed_entries());
        self.answer_reads(rd.take_read_states());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.save_commit(commit);
        }
        self.transport.send(light.take_messages());
        self.handle_committed(light.take_committed_entries());
        self.raw.advance_apply();
    }

    /// Trap 7: the commit index reaches the WAL before the entries it commits are applied.
    fn save_commit(&mut self, commit: u64) {
        let mut hs: HardState = self.raw.store().hard_state().clone();
        hs.commit = commit;
        if let Err(e) = self.wal.save(Some(&hs), &[], false) {
            crate::logging::fatal(&self.logger, "cannot write the WAL", &e);
        }
        self.raw.mut_store().set_commit(commit);
    }

    /// Step 1 (trap 8: a Ready with a snapshot carries no committed entries): the snapshot
    /// file first, then its WAL mark, then the raft storage and the state machine.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata().clone();
        info!(self.logger, "installing snapshot from the leader";
            "index" => meta.index, "term" => meta.term);
        // The peer server staged and checked the file before raft saw the snapshot, whose
        // message carries no data (`peer_server::receive_snapshot`).
        let installed = match self.staged.take() {
            Some(staged) if staged.id() == (meta.index, meta.term) => {
                staged.install().map_err(|e| e.to_string())
            }
            _ => Err("raft took a snapshot that was not staged".to_string()),
        };
        if let Err(e) = installed {
            crate::logging::fatal(&self.logger, "cannot install a received snapshot", &e);
        }
        self.save_snapshot_mark(&meta, true);
        self.last_image_bytes = image_bytes(&self.snapshotter, &meta);
        let envelope = self
            .snapshotter
            .read_data(meta.index, meta.term)
            .map_err(|e| e.to_string())
            .and_then(|mut data| read_envelope(&mut data).map_err(|e| e.to_string()));
        match envelope {
            Ok(membership) => {
                self.membership = membership;
                self.publish_records();
            }
            Err(e) => {
                crate::logging::fatal(&self.logger, "a validated snapshot has no membership", &e)
            }
        }
        self.conf_state = meta.get_conf_state().clone();
        self.raw.mut_store().apply_snapshot(&meta);
        self.snapshot_index = meta.index;
        self.sent_index = meta.index;
        let kind = EventKind::Snapshot {
            index: meta.index,
            term: meta.term,
            from: "leader",
        };
        let members: Vec<Member> = self.membership.iter().cloned().collect();
        self.hub
            .publish(self.raw.raft.term, kind, |s| s.members = members);
        self.sync_peers();
        self.send_commits(Apply::Restore(meta));
    }

    /// Tells the peer server which leader (and term) this node follows, before this
    /// iteration's messages go out: it takes snapshots only from that leader.
    fn publish_leader(&mut self) {
        let now = (self.raw.raft.leader_id, self.raw.raft.term);
        if now != self.published_leader {
            self.published_leader = now;
            self.gate.set_leader(now.0, now.1);
        }
    }

    /// The WAL mark of a snapshot file made here, or `received` from the leader (then it also
    /// resets the log: the stale tail it replaced never comes back at a restart).
    fn save_snapshot_mark(&mut self, meta: &raft::eraftpb::SnapshotMetadata, received: bool) {
        let mark = wal::SnapshotMark {
            index: meta.index,
            term: meta.term,
            conf_state: meta.get_conf_state().clone(),
        };
        let saved = if received {
            self.wal.save_received_snapshot_mark(&mark)
        } else {
            self.wal.save_snapshot_mark(&mark)
        };
        if let Err(e) = saved {
            crate::logging::fatal(&self.logger, "cannot write a WAL snapshot mark", &e);
        }
    }

    /// Step 6: conf changes take effect here, in log order; then every entry goes to the
    /// apply worker.
    fn handle_committed(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last() else {
            return;
        };
        let last_index = last.index;
        self.logged_bytes += entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
        for e in &entries {
            match e.get_entry_type() {
                EntryType::EntryConfChange => self.apply_conf_change(e),
                EntryType::EntryConfChangeV2 => {
                    warn!(self.logger, "ignoring a ConfChangeV2 entry"; "index" => e.index)
                }
                EntryType::EntryNormal => {
                    use crate::framing::{
                        ENTRY_FORMAT_ALARM, ENTRY_FORMAT_DIGEST, ENTRY_FORMAT_DIVERGED,
                        ENTRY_FORMAT_START, ENTRY_FORMAT_URL, ENTRY_FORMAT_V1,
                    };
                    match e.data.first() {
                        Some(
                            &(ENTRY_FORMAT_START
                            | ENTRY_FORMAT_ALARM
                            | ENTRY_FORMAT_URL
                            | ENTRY_FORMAT_DIGEST
                            | ENTRY_FORMAT_DIVERGED),
                        ) => self.apply_engine_record(e),
                        Some(&ENTRY_FORMAT_V1) => self.commands_since_check = true,
                        _ => {}
                    }
                }
            }
        }
        self.sent_index = last_index;
        self.send_commits(Apply::Entries(entries));
    }

    /// A committed start record, alarm record, peer URL update, digest record or divergence
    /// report (the engine's own entries).
    fn apply_engine_record(&mut self, e: &Entry) {
        match decode_entry(&e.data) {
            Ok(EntryData::Start(record)) => self.apply_start_record(record, e.index),
            Ok(EntryData::Alarm { id, raised }) => self.apply_alarm(id, raised, e.index),
            Ok(EntryData::UrlUpdate {
                request_id,
                id,
                url,
            }) => self.apply_url_update(request_id, id, url, e),
            Ok(EntryData::Digest { id, index, digest }) => self.apply_digest(id, index, digest),
            Ok(EntryData::Diverged { id, index }) => self.apply_divergence_report(id, index),
            other => {
                warn!(self.logger, "skipping a malformed engine record";
                    "index" => e.index, "error" => format!("{other:?}"))
            }
        }
    }

    /// A member's committed digest report: a member newly found diverged is logged and
    /// published (`divergence.rs`).
    fn apply_digest(&mut self, id: u64, index: u64, digest: u64) {
        let voters = self.conf_state.voters.clone();
        for d in self.digests.record(id, index, digest, &voters) {
            self.publish_diverged(d);
        }
    }

    /// A member's committed report that its log contradicts its leader's (found when its
    /// commit index was `index`).
    fn apply_divergence_report(&mut self, id: u64, index: u64) {
        let why = format!(
            "it reported its committed log contradicting its leader's (at its commit index \
             {index})"
        );
        if self.digests.mark(id, index, why.clone()) {
            self.publish_diverged(Diverged { id, index, why });
        }
    }

    fn publish_diverged(&mut self, d: Diverged) {
        error!(self.logger, "a member's state diverged"; "member" => d.id, "index" => d.index,
            "why" => &d.why);
        let kind = EventKind::Diverged {
            member: d.id,
            index: d.index,
            why: d.why,
        };
        self.hub.publish(self.raw.raft.term, kind, |_| {});
    }

    /// An append from a leader of our term or a later one that contradicts an entry this
    /// node committed: a real leader never sends one (raft's leader completeness), so
    /// this node's committed log is not the cluster's. raft-rs cannot repair that (it answers
    /// such appends with its commit index, or rejects them, forever): raise the alarm here,
    /// and report it through the leader so that every member lists it.
    fn check_committed_log(&mut self, m: &Message) {
        // Only a term's leader sends appends: one in our term or a later one is its leader's.
        let raft = &self.raw.raft;
        if m.get_msg_type() != MessageType::MsgAppend || m.term < raft.term {
            return;
        }
        let log = &raft.raft_log;
        let contradicts = |index: u64, term: u64| {
            index > 0 && index <= log.committed && log.term(index).is_ok_and(|ours| ours != term)
        };
        let at = std::iter::once((m.index, m.log_term))
            .chain(m.entries.iter().map(|e| (e.index, e.term)))
            .find(|(index, term)| contradicts(*index, *term));
        let Some((index, theirs)) = at else {
            return;
        };
        let ours = log.term(index).unwrap_or(0);
        let why = format!(
            "its committed entry {index} of term {ours} contradicts its leader's, of term {theirs}"
        );
        // Found at our commit index: comparable with the indexes of divergence checks.
        let (id, at) = (self.config.id, log.committed);
        if self.digests.mark(id, at, why.clone()) {
            self.publish_diverged(Diverged { id, index: at, why });
            self.own_divergence = Some(at);
            self.divergence_reported_at = None;
            self.report_own_divergence(Instant::now());
        }
    }

    /// Proposes this node's divergence report (again, every few election timeouts: it may
    /// have been dropped, and a wedged node never sees it applied).
    fn report_own_divergence(&mut self, now: Instant) {
        let Some(at) = self.own_divergence else {
            return;
        };
        if !self.digests.is_diverged(self.config.id) {
            self.own_divergence = None; // a later check found this node with the majority
            return;
        }
        let every = self.election_timeout() * 5;
        if self.raw.raft.leader_id == 0 || !due(&mut self.divergence_reported_at, now, every) {
            return;
        }
        let report = encode_divergence_report(self.config.id, at);
        self.propose_unwatched(report.into());
    }

    /// Proposes a digest check (from any member: a follower's is forwarded).
    fn propose_digest_check(&mut self) -> Result<(), Refusal> {
        if self.raw.raft.leader_id == 0 {
            return Err(Refusal::NoLeader);
        }
        self.commands_since_check = false;
        self.propose_unwatched(encode_digest_check().into());
        Ok(())
    }

    /// The leader's periodic digest check, when commands were committed since the last one.
    fn periodic_digest_check(&mut self, now: Instant) {
        let every = self.config.digest_check_interval;
        if every.is_zero()
            || self.raw.raft.state != StateRole::Leader
            || !self.commands_since_check
            || !due(&mut self.digest_check_at, now, every)
        {
            return;
        }
        let _ = self.propose_digest_check();
    }

    fn apply_conf_change(&mut self, e: &Entry) {
        let mut cc = ConfChange::default();
        if let Err(err) = cc.merge_from_bytes(&e.data) {
            error!(self.logger, "undecodable conf change entry"; "index" => e.index, "error" => %err);
            return;
        }
        let ctx = ConfChangeContext::decode(&cc.context).ok();
        let id = cc.node_id;
        let outcome = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                self.conf_state = cs.clone();
                self.raw.mut_store().set_conf_state(cs);
                self.record_member_change(&cc, ctx.as_ref(), e.index);
                Ok(Applied {
                    index: e.index,
                    term: e.term,
                })
            }
            Err(err) => {
                warn!(self.logger, "conf change rejected"; "node" => id, "error" => %err);
                Err(err.to_string())
            }
        };
        if let Some(ctx) = ctx {
            self.changes.complete(ctx.request_id, outcome);
        }
    }

    fn record_member_change(
        &mut self,
        cc: &ConfChange,
        ctx: Option<&ConfChangeContext>,
        index: u64,
    ) {
        let id = cc.node_id;
        let url = ctx.map(|c| c.url.clone()).unwrap_or_default();
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let learner = cc.get_change_type() == ConfChangeType::AddLearnerNode;
                let url = if url.is_empty() {
                    self.membership
                        .get(id)
                        .map(|m| m.url.clone())
                        .unwrap_or_default()
                } else {
                    url
                };
                let promote_when_ready = learner && ctx.is_some_and(|c| c.promote_when_ready);
                info!(self.logger, "member added"; "node" => id, "url" => &url, "learner" => learner,
                    "promote_when_ready" => promote_when_ready);
                let promoted = self.membership.get(id).is_some_and(|m| m.learner) && !learner;
                self.membership.insert_member(Member {
                    id,
                    url: url.clone(),
                    learner,
                    promote_when_ready,
                });
                let change = if promoted { "promote" } else { "add" };
                self.publish_membership(change, id, url.clone(), learner, index);
                self.publish_records();
                if !url.is_empty() {
                    self.transport.set_peer(id, &url);
                }
            }
            ConfChangeType::RemoveNode => {
                info!(self.logger, "member removed"; "node" => id);
                self.membership.remove(id);
                self.digests.forget(id);
                self.publish_membership("remove", id, String::new(), false, index);
                self.transport.remove_peer(id);
                self.publish_records();
                if id == self.config.id {
                    info!(
                        self.logger,
                        "this node was removed from the cluster: shutting down"
                    );
                    self.on_removed("applied its own removal");
                }
            }
        }
    }

    fn publish_membership(
        &mut self,
        change: &'static str,
        node: u64,
        url: String,
        learner: bool,
        index: u64,
    ) {
        let kind = EventKind::Membership {
            change,
            node,
            url,
            learner,
            index,
        };
        let members: Vec<Member> = self.membership.iter().cloned().collect();
        self.hub
            .publish(self.raw.raft.term, kind, |s| s.members = members);
    }

    /// Publishes role, leader and term changes; "became leader" once this node leads and an
    /// entry of its term is committed (it can serve), "stepped down" when it stops leading.
    fn publish_role(&mut self) {
        let raft = &self.raw.raft;
        let role = role_of(raft.state);
        let now = (role, raft.leader_id, raft.term);
        let serving = role == Role::Leader
            && raft.raft_log.term(raft.raft_log.committed).ok() == Some(raft.term);
        if now != self.seen {
            let (old_term, announced) = (self.seen.2, self.announced);
            self.seen = now;
            if announced && role != Role::Leader {
                self.announced = false;
                let kind = EventKind::SteppedDown { term: old_term };
                self.hub.publish(now.2, kind, |s| s.serving = false);
            }
            let kind = EventKind::Leader {
                role,
                leader: now.1,
                term: now.2,
            };
            self.hub.publish(now.2, kind, |s| {
                (s.role, s.leader, s.term) = now;
            });
        }
        if serving && !self.announced {
            self.announced = true;
            let kind = EventKind::BecameLeader { term: now.2 };
            self.hub.publish(now.2, kind, |s| s.serving = true);
        }
    }

    /// The commit channel is bounded: blocking here is the back-pressure that keeps raft from
    /// committing faster than the state machine applies.
    fn send_commits(&mut self, msg: Apply) {
        if self.applier.send(msg).is_err() {
            crate::logging::fatal(
                &self.logger,
                "the apply worker is gone",
                &"commit channel closed",
            );
        }
    }

    fn answer_reads(&mut self, states: Vec<raft::ReadState>) {
        for rs in states {
            let Some(seq) = self.reads.seq_of(&rs.request_ctx) else {
                continue;
            };
            if let Some((_, waiters)) = self.reads.in_flight.remove(&seq) {
                for w in waiters {
                    let _ = w.send(Ok(rs.index));
                }
            }
        }
    }

    /// Step 9: every `snapshot_count` applied entries, or when a follower needs a snapshot
    /// that contains it (trap 2), start a [`SnapshotJob`]. Snapshots are also spaced so that
    /// building them takes at most a quarter of the time ([`SNAPSHOT_DUTY_DIVISOR`]): with a
    /// large state and a small count, back-to-back snapshots would otherwise eat a core.
    fn maybe_snapshot(&mut self) {
        // A `Msg::Snapshot` caller (a backup) keeps a snapshot wanted until one reaches its
        // index, across a job already running, a failed one, or a received snapshot.
        self.answer_snapshot_waiters(self.snapshot_index);
        let wanted = self.raw.store().take_snapshot_wanted() || !self.snapshot_waiters.is_empty();
        if self.snapshot_started.is_some() || self.sent_index <= self.snapshot_index {
            return;
        }
        // By count, but also only once the entries since are a fair share of the image: a
        // snapshot reads and writes the whole image, so spacing them in proportion to it keeps
        // their cost per entry byte constant whatever the state size.
        let by_count = self.sent_index - self.snapshot_index >= self.config.snapshot_count
            && self
                .logged_bytes
                .saturating_mul(crate::limits::SNAPSHOT_IMAGE_DIVISOR)
                >= self.last_image_bytes;
        let by_bytes = self.logged_bytes
            >= crate::limits::SNAPSHOT_MIN_LOGGED_BYTES.max(self.last_image_bytes);
        if !wanted && !by_count && !by_bytes {
            return;
        }
        if Instant::now() < self.next_snapshot_at {
            if wanted {
                self.raw.mut_store().want_snapshot();
            }
            return;
        }
        let store = self.raw.store();
        let prev = store.snapshot_metadata();
        let prev = (prev.index, prev.term);
        // The entries' data is shared with the log (no copy, no Entry clones on this thread).
        let Some((entries, term)) = store.normal_entry_data(prev.0 + 1, self.sent_index) else {
            error!(self.logger, "entries since the last snapshot are gone";
                "from" => prev.0 + 1, "to" => self.sent_index);
            return;
        };
        let mut meta = SnapshotMetadata {
            index: self.sent_index,
            term,
            ..Default::default()
        };
        meta.set_conf_state(self.conf_state.clone());
        self.snapshot_started = Some(Instant::now());
        self.snapshot_raised = false;
        self.job_logged_bytes = std::mem::take(&mut self.logged_bytes);
        let membership = self.membership.clone();
        match self.plan_merge {
            Some(plan) => SnapshotJob::Merge {
                prev,
                entries,
                meta,
                membership,
                plan,
            }
            .spawn(self.job_context()),
            // Every entry up to `meta.index` is on the commit channel before this request.
            None => self.send_commits(Apply::Snapshot { meta, membership }),
        }
    }

    /// A snapshot job still running after [`SNAPSHOT_STARVED_AFTER`] is starved at idle
    /// priority by a saturated host (`priority`): it goes on at nice 10, so that the log, the
    /// WAL and memory stop growing. Checked on ticks; tried again until the job's thread has
    /// registered.
    fn raise_starved_snapshot(&mut self, now: Instant) {
        let starved = self
            .snapshot_started
            .is_some_and(|started| now.duration_since(started) >= SNAPSHOT_STARVED_AFTER);
        if !starved || self.snapshot_raised {
            return;
        }
        match self.snapshot_thread.raise() {
            Ok(false) => {} // an image job not yet handed to its thread
            Ok(true) => {
                self.snapshot_raised = true;
                warn!(self.logger, "a snapshot job ran at idle priority for too long: raised to nice 10";
                    "seconds" => SNAPSHOT_STARVED_AFTER.as_secs());
            }
            Err(e) => {
                self.snapshot_raised = true;
                warn!(self.logger, "a snapshot job ran at idle priority for too long and cannot be raised (allow it with RLIMIT_NICE, e.g. systemd's LimitNICE=10)";
                    "error" => %e);
            }
        }
    }

    /// Answers the `Msg::Snapshot` callers whose index the snapshot at `index` (saved here or
    /// received) reaches, and forgets those that gave up.
    fn answer_snapshot_waiters(&mut self, index: u64) {
        if self.snapshot_waiters.is_empty() {
            return; // every loop turn asks
        }
        let (done, waiting) = std::mem::take(&mut self.snapshot_waiters)
            .into_iter()
            .filter(|(_, reply)| !reply.is_closed())
            .partition(|(wanted, _)| *wanted <= index);
        self.snapshot_waiters = waiting;
        for (_, reply) in done {
            let _ = reply.send(Ok(index));
        }
    }

    fn job_context(&self) -> JobContext {
        JobContext {
            files: self.snapshotter.clone(),
            reports: self.reports.clone(),
            logger: self.logger.clone(),
            cpu_micros: self.snapshot_cpu_micros.clone(),
            thread: self.snapshot_thread.clone(),
        }
    }

    /// The snapshot file is durable: mark it in the WAL, keep it for followers, compact the
    /// raft log (keeping the catch-up entries), release WAL segments, purge old files.
    fn on_snapshot_saved(&mut self, meta: SnapshotMetadata) {
        if let Some(started) = self.snapshot_started.take() {
            self.next_snapshot_at = Instant::now() + started.elapsed() * SNAPSHOT_DUTY_DIVISOR;
        }
        if meta.index <= self.snapshot_index {
            return;
        }
        self.save_snapshot_mark(&meta, false);
        self.snapshot_index = meta.index;
        let kind = EventKind::Snapshot {
            index: meta.index,
            term: meta.term,
            from: "local",
        };
        self.hub.publish(self.raw.raft.term, kind, |_| {});
        self.answer_snapshot_waiters(meta.index);
        let store = self.raw.mut_store();
        store.set_snapshot(meta.clone());
        let compact_to = meta
            .index
            .saturating_sub(self.config.snapshot_catchup_entries)
            .max(store.index_keeping_bytes(meta.index, crate::limits::CATCHUP_MAX_BYTES));
        let dropped = if compact_to > 0 {
            store.compact(compact_to)
        } else {
            Vec::new()
        };
        let segments = match self.wal.forget_to(meta.index) {
            Ok(segments) => segments,
            Err(e) => crate::logging::fatal(&self.logger, "cannot release WAL segments", &e),
        };
        // Freeing the compacted entries and deleting WAL segments (unlinks and a directory
        // fsync) took up to 40 and 80 ms on this thread at a million keys: a background
        // thread does it. Old snap files are purged by the next snapshot job, on its thread.
        reap(
            dropped,
            segments,
            self.config.wal_dir.clone(),
            self.logger.clone(),
        );
        info!(self.logger, "log compacted"; "snapshot_index" => meta.index, "compacted_to" => compact_to);
    }

    /// Points the transport at every member; before the first snapshot of a joining node the
    /// membership is empty and `--cluster` is all we know.
    fn sync_peers(&mut self) {
        if self.membership.iter().next().is_none() {
            for (i, url) in self.config.cluster.clone().iter().enumerate() {
                self.transport.set_peer(i as u64 + 1, url);
            }
            return;
        }
        let members: Vec<(u64, String)> = self
            .membership
            .iter()
            .map(|m| (m.id, m.url.clone()))
            .collect();
        for (id, url) in &members {
            self.transport.set_peer(*id, url);
        }
    }

    fn transfer_leader(
        &mut self,
        to: u64,
        deadline: Instant,
        done: oneshot::Sender<Result<(), Refusal>>,
    ) {
        if !self.conf_state.voters.contains(&to) {
            let _ = done.send(Err(Refusal::NotMember(to)));
            return;
        }
        if self.raw.raft.leader_id == to {
            let _ = done.send(Ok(()));
            return;
        }
        if self.raw.raft.state != StateRole::Leader {
            let _ = done.send(Err(Refusal::NoLeader));
            return;
        }
        self.raw.transfer_leader(to);
        self.transfers.push((to, deadline, done));
    }

    fn check_transfers(&mut self, now: Instant) {
        let leader = self.raw.raft.leader_id;
        let mut i = 0;
        while i < self.transfers.len() {
            let (to, deadline, _) = &self.transfers[i];
            if leader == *to || now >= *deadline {
                let (to, _, done) = self.transfers.swap_remove(i);
                let _ = done.send(if leader == to {
                    Ok(())
                } else {
                    Err(Refusal::Dropped)
                });
            } else {
                i += 1;
            }
        }
    }

    /// Shutdown: a leader hands leadership to its most up-to-date voter first, waiting at most
    /// one election timeout.
    fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let timeout = self.election_timeout();
        self.stopping = Some(Instant::now() + timeout);
        if self.raw.raft.state != StateRole::Leader {
            self.stopping = Some(Instant::now());
            return;
        }
        match self.best_transferee() {
            Some(to) => {
                info!(self.logger, "shutting down: transferring leadership"; "to" => to);
                self.raw.transfer_leader(to);
            }
            None => self.stopping = Some(Instant::now()),
        }
    }

    fn finish(&mut self) {
        for (_, (_, waiters)) in self.reads.in_flight.drain() {
            for w in waiters {
                let _ = w.send(Err(Refusal::ShuttingDown));
            }
        }
        for (_, reply) in self.snapshot_waiters.drain(..) {
            let _ = reply.send(Err(Refusal::ShuttingDown));
        }
        if let Err(e) = self.wal.sync() {
            crate::logging::fatal(&self.logger, "cannot sync the WAL", &e);
        }
    }

    fn status(&self) -> Status {
        let raft = &self.raw.raft;
        let role = role_of(raft.state).name();
        let pick = |ids: &[u64]| -> Vec<Member> {
            ids.iter()
                .map(|id| {
                    self.membership.get(*id).cloned().unwrap_or(Member {
                        id: *id,
                        url: self.config.cluster_url(*id).unwrap_or_default().to_string(),
                        learner: false,
                        promote_when_ready: false,
                    })
                })
                .collect()
        };
        let progress = (raft.state == StateRole::Leader).then(|| {
            let mut v: Vec<PeerProgress> = raft
                .prs()
                .iter()
                .map(|(id, pr)| PeerProgress {
                    id: *id,
                    match_index: pr.matched,
                    next_index: pr.next_idx,
                    state: format!("{:?}", pr.state).to_lowercase(),
                    recent_active: pr.recent_active,
                })
                .collect();
            v.sort_by_key(|p| p.id);
            v
        });
        let mut voters = self.conf_state.voters.clone();
        voters.sort_unstable();
        let mut learners = self.conf_state.learners.clone();
        learners.sort_unstable();
        Status {
            id: self.config.id,
            cluster_id: format!("{:x}", self.gate.cluster_id()),
            role: role.to_string(),
            term: raft.term,
            leader: raft.leader_id,
            commit_index: raft.raft_log.committed,
            applied_index: self.sent_index,
            last_index: raft.raft_log.last_index(),
            snapshot_index: self.snapshot_index,
            voters: pick(&voters),
            learners: pick(&learners),
            incarnation: self.own_start.incarnation,
            started: self
                .membership
                .starts()
                .map(|(id, s)| crate::protocol::Started {
                    id,
                    incarnation: s.incarnation,
                    client_url: s.client_url.clone(),
                })
                .collect(),
            removed_ids: self.membership.removed().collect(),
            nospace_alarms: self.membership.alarms().collect(),
            diverged: self.digests.diverged(),
            digest_check_index: self.digests.agreed_index(),
            progress,
            dropped_messages: self.transport.dropped() + self.gate.dropped(),
            peer_refused: self
                .gate
                .refused()
                .into_iter()
                .map(|(reason, n)| (reason.label(), n))
                .collect(),
            duplicate_read_contexts: self.gate.duplicate_reads(),
            snapshot_cpu_micros: self
                .snapshot_cpu_micros
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Our name for a raft role.
/// The data size of the snapshot file at `meta` (0 if it cannot be opened: the next snapshot
/// is then due by count alone).
fn image_bytes(files: &snap::Snapshotter, meta: &SnapshotMetadata) -> u64 {
    files
        .read_data(meta.index, meta.term)
        .map_or(0, |data| data.remaining())
}

fn role_of(role: StateRole) -> Role {
    match role {
        StateRole::Leader => Role::Leader,
        StateRole::Follower => Role::Follower,
        StateRole::Candidate => Role::Candidate,
        StateRole::PreCandidate => Role::PreCandidate,
    }
}

/// The state a node starts publishing with (before its first Ready), at the recovered `term`.
pub fn initial_state(id: u64, membership: &Membership, applied_index: u64, term: u64) -> NodeState {
    NodeState {
        id,
        role: Role::Follower,
        term,
        leader: 0,
        serving: false,
        members: membership.iter().cloned().collect(),
        applied_index,
        epoch: Default::default(),
    }
}

/// Whether something rate-limited to once per `every` is due at `now`; if so, records `now` as
/// its last time.
fn due(last: &mut Option<Instant>, now: Instant, every: Duration) -> bool {
    if last.is_some_and(|at| now.duration_since(at) < every) {
        return false;
    }
    *last = Some(now);
    true
}

/// Frees `entries` and deletes the WAL `segments` (then fsyncs `wal_dir`) on a background
/// thread at low priority. A segment that cannot be deleted is only disk space (replay starts
/// at the newest mark): it is logged, not fatal.
fn reap(
    entries: Vec<Entry>,
    segments: Vec<std::path::PathBuf>,
    wal_dir: std::path::PathBuf,
    logger: Logger,
) {
    if entries.is_empty() && segments.is_empty() {
        return;
    }
    let log = logger.clone();
    let spawned = std::thread::Builder::new().name("reaper".into()).spawn(move || {
        crate::priority::run_at_low_priority();
        drop(entries);
        for path in &segments {
            if let Err(e) = std::fs::remove_file(path) {
                warn!(logger, "cannot delete a released WAL segment"; "file" => path.display().to_string(), "error" => %e);
            }
        }
        if !segments.is_empty() {
            if let Err(e) = std::fs::File::open(&wal_dir).and_then(|d| d.sync_all()) {
                warn!(logger, "cannot sync the WAL dir after releasing segments"; "error" => %e);
            }
        }
    });
    if let Err(e) = spawned {
        warn!(log, "cannot start the reaper thread"; "error" => %e);
    }
}
