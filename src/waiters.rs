//! Clients waiting for their proposal to be applied, by request ID.
//!
//! A handler registers its request ID *before* proposing (so the completion can never arrive
//! first), then waits with its deadline; on timeout or a known drop it removes itself. The apply
//! worker completes normal entries, the raft thread completes conf changes. Entries proposed on
//! other nodes have no waiter here; completing an unknown ID does nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

/// Where and when an entry was applied: the `X-Raft-Index` and `X-Raft-Term` of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Raft index of the entry.
    pub index: u64,
    /// Raft term of the entry.
    pub term: u64,
}

/// Why a conf change that committed did not take effect.
pub type Outcome = Result<Applied, String>;

/// The registry.
#[derive(Debug)]
pub struct Waiters {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
}

impl Waiters {
    /// A registry whose IDs are unique across nodes (node ID in the top 16 bits) and across
    /// restarts (the low 48 bits start from the clock in microseconds).
    pub fn new(node_id: u64) -> Waiters {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Waiters {
            next: AtomicU64::new((node_id << 48) | (micros & 0xFFFF_FFFF_FFFF)),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh request ID.
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers `id`; the receiver resolves when [`Waiters::complete`] is called for it.
    pub fn register(&self, id: u64) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        rx
    }

    /// Forgets `id` (the client gave up or the proposal was dropped).
    pub fn cancel(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Completes `id` if someone waits for it.
    pub fn complete(&self, id: u64, outcome: Outcome) {
        if let Some(tx) = self.lock().remove(&id) {
            let _ = tx.send(outcome);
        }
    }

    /// Completes many at once under one lock.
    pub fn complete_all(&self, done: impl IntoIterator<Item = (u64, Applied)>) {
        let mut waiting = self.lock();
        for (id, applied) in done {
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(Ok(applied));
            }
        }
    }

    /// Number of clients waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Outcome>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}
