//! Events that cannot be missed silently: what happens to the cluster as this node sees it.
//!
//! The raft thread is the only publisher ([`EventHub`]): it keeps the current [`NodeState`] in
//! a `watch` and broadcasts every change as an [`Event`] on a bounded `broadcast` channel of
//! `--events-bound` events ([`EVENTS_BOUND`] by default). Publishing never blocks and costs little without subscribers.
//!
//! A [`Subscription`] yields, in order:
//! 1. [`EventKind::Current`]: the state at subscription time;
//! 2. every later change, each with its term and an [`Epoch`] that strictly increases, also
//!    across restarts (the sequence starts from the start time in microseconds);
//! 3. if it fell more than the bound behind: [`EventKind::Lagged`] with the number
//!    missed and the current state, then the changes after that state. Never a silent gap.
//!
//! [`EventKind::BecameLeader`] is published only once this node leads *and* has committed an
//! entry of its own term (it can serve linearizable reads and its writes commit);
//! [`EventKind::SteppedDown`] always follows a `BecameLeader`, once.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::membership::Member;

/// Events buffered per subscriber before it lags (the default of `--events-bound`).
pub const EVENTS_BOUND: usize = 1024;

/// Orders events: strictly increasing on one node, across restarts too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
pub struct Epoch {
    /// Raft term when the event happened.
    pub term: u64,
    /// Sequence within this node (starts at the process start time in microseconds).
    pub seq: u64,
}

/// A raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Leads (see [`NodeState::serving`] for whether it can serve yet).
    Leader,
    /// Follows.
    Follower,
    /// Campaigns.
    Candidate,
    /// Asks for pre-votes.
    PreCandidate,
}

impl Role {
    /// The name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
        }
    }
}

/// What a node knows about itself and the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct NodeState {
    /// This node.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Known leader, 0 if none.
    pub leader: u64,
    /// This node leads and has committed an entry of its term.
    pub serving: bool,
    /// Members with their peer URLs (voters and learners).
    pub members: Vec<Member>,
    /// Index applied to the state machine when this state was taken.
    pub applied_index: u64,
    /// Epoch of the last change included.
    pub epoch: Epoch,
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Strictly increasing; `epoch.term` is the term it happened in.
    pub epoch: Epoch,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The state at subscription time (always first).
    Current(NodeState),
    /// `missed` events were dropped because the subscriber fell behind; the current state.
    Lagged {
        /// How many.
        missed: u64,
        /// The state now.
        state: NodeState,
    },
    /// The role, term or known leader changed.
    Leader {
        /// This node's role.
        role: Role,
        /// Known leader, 0 if none.
        leader: u64,
        /// Term.
        term: u64,
    },
    /// This node leads and committed an entry of its term: it serves from now on.
    BecameLeader {
        /// Its term.
        term: u64,
    },
    /// This node stopped leading (paired with an earlier `BecameLeader`).
    SteppedDown {
        /// The term it led in.
        term: u64,
    },
    /// A conf change was applied.
    Membership {
        /// add, promote or remove.
        change: &'static str,
        /// The node.
        node: u64,
        /// Its peer URL (added nodes).
        url: String,
        /// Added as a learner.
        learner: bool,
        /// Index of the conf change entry.
        index: u64,
    },
    /// A snapshot was saved locally or installed from the leader.
    Snapshot {
        /// Its index.
        index: u64,
        /// Its term.
        term: u64,
        /// local or leader.
        from: &'static str,
    },
    /// A member's state was found diverged (see `divergence.rs`).
    Diverged {
        /// The member.
        member: u64,
        /// Where (a check's index, or a log index).
        index: u64,
        /// How it was found.
        why: String,
    },
    /// This node was removed from the cluster and stops.
    Removed {
        /// How it learnt it.
        reason: String,
    },
}

/// The publishing side, owned by the raft thread.
pub struct EventHub {
    tx: broadcast::Sender<Event>,
    state: watch::Sender<NodeState>,
    seq: u64,
}

/// What subscriptions are made from (cloned into handles).
///
/// It holds the broadcast channel weakly: once the raft thread is gone, subscriptions end.
#[derive(Clone)]
pub struct EventSource {
    tx: broadcast::WeakSender<Event>,
    state: watch::Receiver<NodeState>,
    applied: watch::Receiver<u64>,
}

impl EventHub {
    /// A hub whose current state starts as `initial`; `applied` is the apply thread's index;
    /// each subscriber may fall `bound` events behind before it lags.
    pub fn new(
        mut initial: NodeState,
        applied: watch::Receiver<u64>,
        bound: usize,
    ) -> (EventHub, EventSource) {
        let seq = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        initial.epoch = Epoch {
            term: initial.term,
            seq,
        };
        let (tx, _) = broadcast::channel(bound.max(1));
        let (state, state_rx) = watch::channel(initial);
        let source = EventSource {
            tx: tx.downgrade(),
            state: state_rx,
            applied,
        };
        (EventHub { tx, state, seq }, source)
    }

    /// The current state (as last published).
    pub fn state(&self) -> NodeState {
        self.state.borrow().clone()
    }

    /// Publishes `kind` in `term`, after applying `update` to the current state.
    pub fn publish(&mut self, term: u64, kind: EventKind, update: impl FnOnce(&mut NodeState)) {
        self.seq += 1;
        let epoch = Epoch {
            term: term.max(self.state.borrow().epoch.term),
            seq: self.seq,
        };
        self.state.send_modify(|s| {
            update(s);
            s.epoch = epoch;
        });
        let _ = self.tx.send(Event { epoch, kind });
    }
}

impl EventSource {
    /// A new subscription (see the module doc for what it yields).
    pub fn subscribe(&self) -> Subscription {
        // Subscribe first, then read the state: an event in between is both in the state and
        // in the channel, and is skipped by its epoch.
        let rx = self.tx.upgrade().map(|tx| tx.subscribe());
        let current = self.current();
        Subscription {
            pending: VecDeque::from([Event {
                epoch: current.epoch,
                kind: EventKind::Current(current.clone()),
            }]),
            last: current.epoch,
            rx,
            state: self.state.clone(),
            applied: self.applied.clone(),
        }
    }

    /// The current state, with the applied index now.
    pub fn current(&self) -> NodeState {
        current(&self.state, &self.applied)
    }

    /// A receiver that changes whenever the state does (for waiting on a leader).
    pub fn watch_state(&self) -> watch::Receiver<NodeState> {
        self.state.clone()
    }
}

fn current(state: &watch::Receiver<NodeState>, applied: &watch::Receiver<u64>) -> NodeState {
    let mut s = state.borrow().clone();
    s.applied_index = *applied.borrow();
    s
}

/// One subscriber's stream of events.
pub struct Subscription {
    pending: VecDeque<Event>,
    last: Epoch,
    /// `None` when the node had stopped already.
    rx: Option<broadcast::Receiver<Event>>,
    state: watch::Receiver<NodeState>,
    applied: watch::Receiver<u64>,
}

impl Subscription {
    /// The next event; `None` once the node has stopped and every event was delivered.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let rx = self.rx.as_mut()?;
            match rx.recv().await {
                Ok(e) if e.epoch <= self.last => continue,
                Ok(e) => {
                    self.last = e.epoch;
                    return Some(e);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let state = current(&self.state, &self.applied);
                    self.last = state.epoch;
                    return Some(Event {
                        epoch: state.epoch,
                        kind: EventKind::Lagged { missed, state },
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
