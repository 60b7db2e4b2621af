//! [`Handle`]: the application's cloneable, async side of a running node. Every call takes a
//! deadline and says honestly how it ended.
//!
//! The two outcomes that matter to a client are kept apart in every error type:
//! - **known not applied** ([`NotApplied`]): no leader by the deadline, dropped, overloaded,
//!   shutting down, too large. Retrying is safe.
//! - **outcome unknown** (`Unknown`): the deadline passed after the command may have been
//!   appended; it may still commit. Read it back before retrying.
//!
//! A proposal (or read, or membership change) that arrives while no leader is known, or that
//! raft drops (a leader transfer in progress), is retried until its deadline, as etcd does: a
//! write sent while this node knows there is no leader succeeds once a leader is elected
//! within its deadline. A proposal forwarded to a leader that has just died, before this node
//! noticed (up to one election timeout), is lost with it: it ends outcome unknown at its
//! deadline, never "known not applied" (the dead leader may have replicated it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::events::{EventSource, NodeState, Subscription};
use crate::framing::encode_entry;
use crate::protocol::{MemberChange, Msg, Refusal, Status};
use crate::state_machine::Rejected;
use crate::waiters::{Applied, ChangeOutcome, CommandOutcome, RequestIds, Waiters};

/// Why something was known not to happen. Retrying is safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotApplied {
    /// No leader was known by the deadline.
    #[error("no leader was known by the deadline")]
    NoLeader,
    /// raft dropped it until the deadline (a leader transfer, too much uncommitted data).
    #[error("the proposal was dropped")]
    Dropped,
    /// The raft thread's inbox is full.
    #[error("this node is overloaded")]
    Overloaded,
    /// The node is stopping.
    #[error("this node is shutting down")]
    ShuttingDown,
    /// This node's disk is below its floor (a quarter of `--free-disk-reserve-bytes`): it
    /// takes no writes at all until space is freed.
    #[error("this node's disk has {free} bytes free, below its floor of {floor} bytes")]
    DiskFull {
        /// Free bytes.
        free: u64,
        /// The floor.
        floor: u64,
    },
    /// The command is larger than one entry can carry.
    #[error("the command has {size} bytes, more than the {max} an entry can carry")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a membership change cannot be made now (nothing was proposed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// A membership change is still pending (trap 3).
    #[error("a membership change is already pending")]
    ChangePending,
    /// The node to add is already a member.
    #[error("node {0} is already a member")]
    AlreadyMember(u64),
    /// The ID was removed once; IDs are never reused.
    #[error("node {0} was removed and its ID is never reused")]
    IdRemoved(u64),
    /// The node to remove or promote is not a member (or not a learner).
    #[error("node {0} is not a member that can take this change")]
    NotMember(u64),
    /// The learner to promote has not caught up with the leader's log yet.
    #[error("learner {0} has not caught up yet")]
    NotCaughtUp(u64),
    /// Another member already has this peer URL.
    #[error("peer URL {url} already belongs to node {id}")]
    UrlInUse {
        /// The URL asked for.
        url: String,
        /// The member that has it.
        id: u64,
    },
}

/// How a proposal failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Known not applied.
    #[error(transparent)]
    NotApplied(#[from] NotApplied),
    /// Committed, but the state machine could not decode it (a no-op everywhere).
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The deadline passed after it may have been appended: it may still commit.
    #[error("the outcome is unknown: the deadline passed, it may still commit")]
    Unknown,
}

/// How a read barrier or `wait_applied` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No read index could be had (no leader, shutting down, overloaded).
    #[error(transparent)]
    NotApplied(#[from] NotApplied),
    /// This node did not apply `index` by the deadline.
    #[error("index {index} was not applied here by the deadline")]
    Timeout {
        /// The index waited for (0 when no read index was had yet).
        index: u64,
    },
}

/// How a membership change or a leadership transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// Known not applied.
    #[error(transparent)]
    NotApplied(#[from] NotApplied),
    /// Cannot be made now; nothing was proposed.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// Committed, but raft refused to apply it (the reason).
    #[error("committed but refused: {0}")]
    Refused(String),
    /// The deadline passed after it may have been appended.
    #[error("the outcome is unknown: the deadline passed, it may still take effect")]
    Unknown,
}

/// A proposal that was applied: where, and what the state machine answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed<O> {
    /// Raft index of its entry.
    pub index: u64,
    /// Raft term of its entry.
    pub term: u64,
    /// The state machine's output.
    pub output: O,
}

struct Shared<O> {
    inbox: crate::protocol::Inbox,
    ids: RequestIds,
    commands: Arc<Waiters<CommandOutcome<O>>>,
    changes: Arc<Waiters<ChangeOutcome>>,
    applied: watch::Receiver<u64>,
    events: EventSource,
    config: Arc<Config>,
    disk: Arc<crate::disk::DiskSpace>,
    expiries: crate::tls::Expiries,
}

/// The application's handle on a running node; cheap to clone.
pub struct Handle<O> {
    shared: Arc<Shared<O>>,
}

impl<O> Clone for Handle<O> {
    fn clone(&self) -> Self {
        Handle {
            shared: self.shared.clone(),
        }
    }
}

/// What a handle is made of (see `node.rs`).
pub(crate) struct HandleParts<O> {
    pub inbox: crate::protocol::Inbox,
    pub commands: Arc<Waiters<CommandOutcome<O>>>,
    pub changes: Arc<Waiters<ChangeOutcome>>,
    pub applied: watch::Receiver<u64>,
    pub events: EventSource,
    pub config: Arc<Config>,
    pub disk: Arc<crate::disk::DiskSpace>,
    /// Certificate expiries, by port.
    pub expiries: crate::tls::Expiries,
}

/// How a raft thread refusal reads to a caller, and whether waiting can help.
fn classify(refusal: Refusal) -> Result<NotApplied, Conflict> {
    match refusal {
        Refusal::NoLeader => Ok(NotApplied::NoLeader),
        Refusal::Dropped => Ok(NotApplied::Dropped),
        Refusal::ShuttingDown => Ok(NotApplied::ShuttingDown),
        Refusal::ChangePending => Err(Conflict::ChangePending),
        Refusal::AlreadyMember(id) => Err(Conflict::AlreadyMember(id)),
        Refusal::IdRemoved(id) => Err(Conflict::IdRemoved(id)),
        Refusal::NotMember(id) => Err(Conflict::NotMember(id)),
        Refusal::NotCaughtUp(id) => Err(Conflict::NotCaughtUp(id)),
        Refusal::UrlInUse { url, id } => Err(Conflict::UrlInUse { url, id }),
    }
}

/// The answer of the raft thread, or what happened instead.
enum Asked<T> {
    Answer(T),
    /// The inbox was full or closed: nothing was sent.
    NotSent(NotApplied),
    /// Sent, but no answer by the deadline (or the raft thread stopped).
    NoAnswer,
}

impl<O: Send + 'static> Handle<O> {
    pub(crate) fn new(parts: HandleParts<O>) -> Handle<O> {
        let ids = RequestIds::new(parts.config.id);
        Handle {
            shared: Arc::new(Shared {
                inbox: parts.inbox,
                ids,
                commands: parts.commands,
                changes: parts.changes,
                applied: parts.applied,
                events: parts.events,
                config: parts.config,
                disk: parts.disk,
                expiries: parts.expiries,
            }),
        }
    }

    /// When each port's certificate in use expires (seconds since the epoch), by port.
    pub fn cert_expiries(&self) -> Vec<(&'static str, i64)> {
        let expiries = self
            .shared
            .expiries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        expiries.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Records the expiry of `port`'s certificate in use (the client port's is the
    /// application's to load; see `app.rs`).
    pub fn set_cert_expiry(&self, port: &'static str, not_after: i64) {
        crate::tls::set_expiry(&self.shared.expiries, port, not_after);
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Why writes that grow the data must be refused now (507), if they must: this node's
    /// data dirs are below `--free-disk-reserve-bytes`, or a member raised the NOSPACE alarm.
    /// The application should then refuse such writes and keep serving reads and deletes.
    pub fn no_space(&self) -> Option<crate::disk::NoSpace> {
        self.shared.disk.no_space()
    }

    /// Proposes `command` and waits until this node applied it, or the deadline.
    ///
    /// # Errors
    /// [`ProposeError::NotApplied`] when it is known not to have been appended (retry safely),
    /// [`ProposeError::Rejected`] when the state machine could not decode it,
    /// [`ProposeError::Unknown`] when the deadline passed after it may have been appended.
    pub async fn propose(
        &self,
        command: &[u8],
        deadline: Instant,
    ) -> Result<Proposed<O>, ProposeError> {
        if let Some(free) = self.shared.disk.below_floor() {
            return Err(NotApplied::DiskFull {
                free,
                floor: self.shared.disk.floor(),
            }
            .into());
        }
        let max = crate::limits::max_entry_data_bytes();
        if command.len() > max {
            return Err(NotApplied::TooLarge {
                size: command.len(),
                max,
            }
            .into());
        }
        let id = self.shared.ids.next();
        let data = Bytes::from(encode_entry(id, command));
        let applied = self.shared.commands.register(id);
        let proposed = self
            .until_leader(deadline, |done| Msg::Propose {
                data: data.clone(),
                done,
            })
            .await;
        if let Err(e) = proposed {
            self.shared.commands.cancel(id);
            return Err(e.map_or(ProposeError::Unknown, ProposeError::NotApplied));
        }
        match tokio::time::timeout_at(deadline.into(), applied).await {
            Ok(Ok(Ok((Applied { index, term }, output)))) => Ok(Proposed {
                index,
                term,
                output,
            }),
            Ok(Ok(Err(rejected))) => Err(ProposeError::Rejected(rejected)),
            Ok(Err(_)) | Err(_) => {
                self.shared.commands.cancel(id);
                Err(ProposeError::Unknown)
            }
        }
    }

    /// A linearizable read barrier: once it returns `Ok(index)`, this node's state machine has
    /// applied everything committed when the call was made (ReadIndex, then the local apply).
    ///
    /// # Errors
    /// [`ReadError`]: no read index by the deadline, or not applied here in time.
    pub async fn read_barrier(&self, deadline: Instant) -> Result<u64, ReadError> {
        let index = self
            .until_leader(deadline, |done| Msg::Read { done })
            .await
            .map_err(|e| e.map_or(ReadError::Timeout { index: 0 }, ReadError::NotApplied))?;
        self.wait_applied(index, deadline).await?;
        Ok(index)
    }

    /// Waits until this node applied `index`.
    ///
    /// # Errors
    /// [`ReadError::Timeout`] at the deadline; [`NotApplied::ShuttingDown`] if the node stops.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ReadError> {
        if *self.shared.applied.borrow() >= index {
            return Ok(());
        }
        let mut applied = self.shared.applied.clone();
        let reached =
            tokio::time::timeout_at(deadline.into(), applied.wait_for(|a| *a >= index)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(NotApplied::ShuttingDown.into()),
            Err(_) => Err(ReadError::Timeout { index }),
        }
    }

    /// The index this node's state machine has applied.
    pub fn applied_index(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    /// Changes the membership (one change at a time) and waits until it is applied here.
    ///
    /// # Errors
    /// [`ChangeError`]: a conflict (nothing proposed), known not applied, refused by raft
    /// after commit, or unknown at the deadline.
    pub async fn change_membership(
        &self,
        id: u64,
        change: MemberChange,
        deadline: Instant,
    ) -> Result<Applied, ChangeError> {
        let request_id = self.shared.ids.next();
        let applied = self.shared.changes.register(request_id);
        let asked = self
            .until_leader_raw(deadline, |done| Msg::ChangeMembers {
                id,
                change: change.clone(),
                request_id,
                done,
            })
            .await;
        match asked {
            Ok(()) => {}
            Err(e) => {
                self.shared.changes.cancel(request_id);
                return Err(match e {
                    Some(Ok(not_applied)) => ChangeError::NotApplied(not_applied),
                    Some(Err(conflict)) => ChangeError::Conflict(conflict),
                    None => ChangeError::Unknown,
                });
            }
        }
        match tokio::time::timeout_at(deadline.into(), applied).await {
            Ok(Ok(Ok(applied))) => Ok(applied),
            Ok(Ok(Err(reason))) => Err(ChangeError::Refused(reason)),
            Ok(Err(_)) | Err(_) => {
                self.shared.changes.cancel(request_id);
                Err(ChangeError::Unknown)
            }
        }
    }

    /// Moves leadership to `to` (this node must lead) and waits until `to` leads.
    ///
    /// # Errors
    /// [`ChangeError::NotApplied`] with `NoLeader` when this node does not lead, `Dropped`
    /// when `to` did not take over by the deadline; a conflict when `to` is not a voter.
    pub async fn transfer_leader(&self, to: u64, deadline: Instant) -> Result<(), ChangeError> {
        match self
            .ask(deadline, |done| Msg::TransferLeader { to, deadline, done })
            .await
        {
            Asked::Answer(Ok(())) => Ok(()),
            Asked::Answer(Err(refusal)) => Err(match classify(refusal) {
                Ok(not_applied) => ChangeError::NotApplied(not_applied),
                Err(conflict) => ChangeError::Conflict(conflict),
            }),
            Asked::NotSent(not_applied) => Err(ChangeError::NotApplied(not_applied)),
            Asked::NoAnswer => Err(ChangeError::Unknown),
        }
    }

    /// The node's status.
    ///
    /// # Errors
    /// [`NotApplied`] when the raft thread cannot answer by the deadline.
    pub async fn status(&self, deadline: Instant) -> Result<Status, NotApplied> {
        match self.ask(deadline, |done| Msg::Status { done }).await {
            Asked::Answer(mut status) => {
                status.applied_index = self.applied_index();
                Ok(status)
            }
            Asked::NotSent(e) => Err(e),
            Asked::NoAnswer => Err(NotApplied::Overloaded),
        }
    }

    /// Makes a snapshot of everything applied so far; returns its index once it is saved.
    ///
    /// # Errors
    /// [`NotApplied`] when the node stops or the deadline passes first.
    pub async fn snapshot_now(&self, deadline: Instant) -> Result<u64, NotApplied> {
        match self.ask(deadline, |done| Msg::Snapshot { done }).await {
            Asked::Answer(Ok(index)) => Ok(index),
            Asked::Answer(Err(_)) => Err(NotApplied::ShuttingDown),
            Asked::NotSent(e) => Err(e),
            Asked::NoAnswer => Err(NotApplied::Dropped),
        }
    }

    /// Starts a divergence check now: every member reports its state digest at one index
    /// (see `divergence.rs`); the verdict appears in [`Status::diverged`] once applied.
    ///
    /// # Errors
    /// [`NotApplied`] when no leader is known, the node stops, or the deadline passes.
    pub async fn check_digests(&self, deadline: Instant) -> Result<(), NotApplied> {
        match self.ask(deadline, |done| Msg::CheckDigests { done }).await {
            Asked::Answer(Ok(())) => Ok(()),
            Asked::Answer(Err(_)) => Err(NotApplied::NoLeader),
            Asked::NotSent(e) => Err(e),
            Asked::NoAnswer => Err(NotApplied::Dropped),
        }
    }

    /// Asks the node to stop: a leader hands leadership away first (at most one election
    /// timeout), then the WAL is synced and the threads end. Returns at once; `Node::wait`
    /// tells when it is done.
    pub fn shutdown(&self) {
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(msg)) =
            self.shared.inbox.try_send(Msg::Shutdown)
        {
            let inbox = self.shared.inbox.clone();
            std::thread::spawn(move || inbox.blocking_send(msg));
        }
    }

    /// Subscribes to events: the current state first, then every change (see `events.rs`).
    pub fn subscribe(&self) -> Subscription {
        self.shared.events.subscribe()
    }

    /// The current node state (role, term, leader, members, applied index, epoch).
    pub fn state(&self) -> NodeState {
        self.shared.events.current()
    }

    /// Proposers waiting for their command or membership change.
    pub fn waiting(&self) -> usize {
        self.shared.commands.len() + self.shared.changes.len()
    }

    /// How long a caller should wait before retrying after [`NotApplied`]: one election
    /// timeout.
    pub fn retry_after(&self) -> Duration {
        self.shared.config.election_timeout()
    }

    /// Sends `make(done)` to the raft thread and waits for its answer until `deadline`.
    async fn ask<T>(
        &self,
        deadline: Instant,
        make: impl FnOnce(oneshot::Sender<T>) -> Msg,
    ) -> Asked<T> {
        let (tx, rx) = oneshot::channel();
        match self.shared.inbox.try_send(make(tx)) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                return Asked::NotSent(NotApplied::Overloaded)
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                return Asked::NotSent(NotApplied::ShuttingDown)
            }
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(answer)) => Asked::Answer(answer),
            Ok(Err(_)) => Asked::NotSent(NotApplied::ShuttingDown),
            Err(_) => Asked::NoAnswer,
        }
    }

    /// Like [`Handle::until_leader_raw`] for requests that cannot conflict.
    async fn until_leader<T>(
        &self,
        deadline: Instant,
        make: impl FnMut(oneshot::Sender<Result<T, Refusal>>) -> Msg,
    ) -> Result<T, Option<NotApplied>> {
        self.until_leader_raw(deadline, make)
            .await
            .map_err(|e| e.map(|c| c.unwrap_or(NotApplied::Dropped)))
    }

    /// Asks the raft thread again and again while it refuses for want of a leader (or raft
    /// dropped the request), waiting for a leader in between, until `deadline`.
    /// `Err(None)`: no answer by the deadline (outcome unknown); `Err(Some(Ok(_)))`: known not
    /// applied; `Err(Some(Err(_)))`: a conflict.
    async fn until_leader_raw<T>(
        &self,
        deadline: Instant,
        mut make: impl FnMut(oneshot::Sender<Result<T, Refusal>>) -> Msg,
    ) -> Result<T, Option<Result<NotApplied, Conflict>>> {
        let pause = self.shared.config.tick_interval;
        let mut state = self.shared.events.watch_state();
        loop {
            let refusal = match self.ask(deadline, &mut make).await {
                Asked::Answer(Ok(answer)) => return Ok(answer),
                Asked::Answer(Err(refusal)) => refusal,
                Asked::NotSent(e) => return Err(Some(Ok(e))),
                Asked::NoAnswer => return Err(None),
            };
            let not_applied = match classify(refusal) {
                Ok(n @ (NotApplied::NoLeader | NotApplied::Dropped)) => n,
                other => return Err(Some(other)),
            };
            let now = Instant::now();
            if now + pause >= deadline {
                return Err(Some(Ok(not_applied)));
            }
            // Wait for a known leader (or one tick when raft dropped it with a leader).
            let wait = async {
                if not_applied == NotApplied::NoLeader {
                    let _ = state.wait_for(|s| s.leader != 0).await;
                }
                tokio::time::sleep(pause).await;
            };
            if tokio::time::timeout_at(deadline.into(), wait)
                .await
                .is_err()
            {
                return Err(Some(Ok(not_applied)));
            }
        }
    }
}
