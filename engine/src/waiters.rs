//! Proposers waiting for their entry to be applied, by request ID.
//!
//! The handle registers a request ID *before* proposing (so the completion can never arrive
//! first), then waits with its deadline; on timeout or a known drop it removes itself. The
//! apply thread completes commands, the raft thread completes conf changes. Entries proposed on
//! other nodes have no waiter here; completing an unknown ID does nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::state_machine::Rejected;

/// Where and when an entry was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Raft index of the entry.
    pub index: u64,
    /// Raft term of the entry.
    pub term: u64,
}

/// How an applied command ended: the state machine's output, or its rejection.
pub type CommandOutcome<O> = Result<(Applied, O), Rejected>;

/// How a committed conf change ended: applied, or refused by raft (the reason).
pub type ChangeOutcome = Result<Applied, String>;

/// Request IDs unique across nodes (node ID in the top 16 bits) and across restarts (the low
/// 48 bits start from the clock in microseconds).
#[derive(Debug)]
pub struct RequestIds(AtomicU64);

impl RequestIds {
    /// The IDs of node `node_id`, starting now.
    pub fn new(node_id: u64) -> RequestIds {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        RequestIds(AtomicU64::new(
            (node_id << 48) | (micros & 0xFFFF_FFFF_FFFF),
        ))
    }

    /// A fresh request ID.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// The registry of one kind of wait.
#[derive(Debug)]
pub struct Waiters<T> {
    waiting: Mutex<HashMap<u64, oneshot::Sender<T>>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Waiters<T> {
    /// Registers `id`; the receiver resolves when [`Waiters::complete`] is called for it.
    pub fn register(&self, id: u64) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        rx
    }

    /// Forgets `id` (the proposer gave up or the proposal was dropped).
    pub fn cancel(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Completes `id` if someone waits for it.
    pub fn complete(&self, id: u64, outcome: T) {
        if let Some(tx) = self.lock().remove(&id) {
            let _ = tx.send(outcome);
        }
    }

    /// Completes many at once under one lock.
    pub fn complete_all(&self, done: impl IntoIterator<Item = (u64, T)>) {
        let mut waiting = self.lock();
        for (id, outcome) in done {
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(outcome);
            }
        }
    }

    /// Number of proposers waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<T>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}
