//! Expiry: the leader's timers, and the expire commands they propose.
//!
//! Only the leader decides that an instance expired, and it decides through raft, so every
//! replica removes the same instance at the same index exactly once. Time is never an input of
//! apply: the timers live only in the leader's memory, in one task ([`run`]).
//!
//! The task follows the engine's events:
//! - `BecameLeader` (or a current / lagged state that is serving): subscribe to the
//!   registry's changes and start a timer for every instance with a FULL TTL from now, so no
//!   instance expires because of a failover (as etcd renews leases on a leader change).
//! - `SteppedDown`, or a `Leader` event naming another node or role: drop every timer and the
//!   subscription.
//! - While leading, every applied register (new or renewal) sets its instance's deadline to
//!   now + TTL and remembers its renewal index; a deregister or expiry cancels it.
//! - At a deadline: propose `Expire { service, instance, renewal_index }`. The state machine
//!   removes the instance only if that is still its renewal index, so a renewal racing the
//!   expiry wins. A proposal that fails is retried after one election timeout while the
//!   instance still has that renewal index.
//!
//! Bounds: one task; timers in a `BTreeSet` ordered by deadline (one `sleep_until` for the
//! earliest); at most [`MAX_IN_FLIGHT`] expire proposals at once (each its own small task).
//! A lagged subscription rebuilds the timers from the state, with a full TTL again (late,
//! never early).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use engine::{Event, EventKind, Handle, ProposeError, Role, Subscription};
use slog::{debug, info, warn, Logger};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::command::Command;
use crate::registry::{Change, Effect, EventKind as Happened, Registry};

/// Expire proposals in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// (service, instance).
type Key = (String, String);

struct Timer {
    deadline: Instant,
    renewal_index: u64,
}

/// Deadlines by instance, and instances by deadline.
#[derive(Default)]
struct Timers {
    by_key: HashMap<Key, Timer>,
    queue: BTreeSet<(Instant, Key)>,
}

impl Timers {
    fn set(&mut self, key: Key, deadline: Instant, renewal_index: u64) {
        let timer = Timer {
            deadline,
            renewal_index,
        };
        if let Some(old) = self.by_key.insert(key.clone(), timer) {
            self.queue.remove(&(old.deadline, key.clone()));
        }
        self.queue.insert((deadline, key));
    }

    fn cancel(&mut self, key: Key) {
        if let Some(old) = self.by_key.remove(&key) {
            self.queue.remove(&(old.deadline, key));
        }
    }

    fn contains(&self, key: &Key) -> bool {
        self.by_key.contains_key(key)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|(deadline, _)| *deadline)
    }

    /// The earliest timer if it is due at `now`, removed.
    fn pop_due(&mut self, now: Instant) -> Option<(Key, u64)> {
        if self.next_deadline()? > now {
            return None;
        }
        let (_, key) = self.queue.pop_first()?;
        let timer = self.by_key.remove(&key)?;
        Some((key, timer.renewal_index))
    }

    fn clear(&mut self) {
        self.by_key.clear();
        self.queue.clear();
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// How an expire proposal ended.
struct Outcome {
    key: Key,
    renewal_index: u64,
    result: Result<Effect, ProposeError>,
}

/// What woke the task.
enum Input {
    Node(Option<Event>),
    Change(Result<Change, RecvError>),
    Done(Outcome),
    Due,
}

struct Expiry {
    handle: Handle<Effect>,
    registry: Arc<Registry>,
    logger: Logger,
    timers: Timers,
    /// The registry's changes: `Some` exactly while this node leads.
    changes: Option<broadcast::Receiver<Change>>,
    in_flight: usize,
    done_tx: mpsc::Sender<Outcome>,
    done_rx: mpsc::Receiver<Outcome>,
}

/// Runs the expiry task until the node stops.
pub async fn run(handle: Handle<Effect>, registry: Arc<Registry>, logger: Logger) {
    let mut events = handle.subscribe();
    let (done_tx, done_rx) = mpsc::channel(MAX_IN_FLIGHT);
    let mut expiry = Expiry {
        handle,
        registry,
        logger,
        timers: Timers::default(),
        changes: None,
        in_flight: 0,
        done_tx,
        done_rx,
    };
    loop {
        match expiry.next_input(&mut events).await {
            Input::Node(None) => return,
            Input::Node(Some(event)) => expiry.on_node_event(event.kind),
            Input::Change(change) => expiry.on_change(change),
            Input::Done(outcome) => expiry.on_outcome(outcome),
            Input::Due => expiry.fire_due(),
        }
    }
}

async fn recv(changes: Option<&mut broadcast::Receiver<Change>>) -> Result<Change, RecvError> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Expiry {
    async fn next_input(&mut self, events: &mut Subscription) -> Input {
        let fire_at = self
            .timers
            .next_deadline()
            .filter(|_| self.in_flight < MAX_IN_FLIGHT);
        let sleep_to = fire_at.unwrap_or_else(Instant::now);
        tokio::select! {
            event = events.next() => Input::Node(event),
            change = recv(self.changes.as_mut()) => Input::Change(change),
            Some(outcome) = self.done_rx.recv() => Input::Done(outcome),
            _ = tokio::time::sleep_until(sleep_to), if fire_at.is_some() => Input::Due,
        }
    }

    fn on_node_event(&mut self, kind: EventKind) {
        let me = self.handle.config().id;
        match kind {
            EventKind::Current(state) | EventKind::Lagged { state, .. } => {
                if state.serving {
                    self.lead();
                } else {
                    self.follow();
                }
            }
            EventKind::BecameLeader { .. } => self.lead(),
            EventKind::SteppedDown { .. } | EventKind::Removed { .. } => self.follow(),
            EventKind::Leader { role, leader, .. } if role != Role::Leader || leader != me => {
                self.follow()
            }
            _ => {}
        }
    }

    /// Starts (or restarts) leading: every instance gets a full TTL from now.
    fn lead(&mut self) {
        let (rx, leases) = self.registry.leases();
        let now = Instant::now();
        self.timers.clear();
        for lease in leases {
            let deadline = now + Duration::from_millis(lease.ttl_ms);
            self.timers.set(
                (lease.service, lease.instance),
                deadline,
                lease.renewal_index,
            );
        }
        self.changes = Some(rx);
        info!(self.logger, "leading: expiry timers started with a full TTL";
            "instances" => self.timers.len());
    }

    fn follow(&mut self) {
        if self.changes.take().is_some() {
            info!(self.logger, "not leading: expiry timers stopped";
                "instances" => self.timers.len());
        }
        self.timers.clear();
    }

    fn on_change(&mut self, change: Result<Change, RecvError>) {
        let now = Instant::now();
        match change {
            Ok(Change::Event(e)) => {
                let key = (e.service.clone(), e.instance.clone());
                match &e.kind {
                    Happened::Registered { ttl_ms, .. } => {
                        let deadline = now + Duration::from_millis(*ttl_ms);
                        self.timers.set(key, deadline, e.index)
                    }
                    Happened::Deregistered | Happened::Expired => self.timers.cancel(key),
                }
            }
            Ok(Change::Renewed(r)) => {
                let key = (r.service.clone(), r.instance.clone());
                self.timers
                    .set(key, now + Duration::from_millis(r.ttl_ms), r.index)
            }
            Ok(Change::Restored { index }) => {
                info!(self.logger, "state restored while leading"; "index" => index);
                self.lead()
            }
            Err(RecvError::Lagged(missed)) => {
                warn!(self.logger, "expiry fell behind the registry's changes"; "missed" => missed);
                self.lead()
            }
            Err(RecvError::Closed) => self.follow(),
        }
    }

    /// Proposes an expiry for every due timer, up to [`MAX_IN_FLIGHT`].
    fn fire_due(&mut self) {
        let now = Instant::now();
        while self.in_flight < MAX_IN_FLIGHT {
            let Some((key, renewal_index)) = self.timers.pop_due(now) else {
                return;
            };
            // A renewal (or removal) applied meanwhile comes with its own change.
            if self.registry.renewal_index(&key.0, &key.1) == Some(renewal_index) {
                self.propose(key, renewal_index);
            }
        }
    }

    fn propose(&mut self, key: Key, renewal_index: u64) {
        debug!(self.logger, "proposing an expiry";
            "service" => &key.0, "instance" => &key.1, "renewal_index" => renewal_index);
        let handle = self.handle.clone();
        let done = self.done_tx.clone();
        let deadline = std::time::Instant::now() + handle.config().request_timeout;
        self.in_flight += 1;
        tokio::spawn(async move {
            let bytes = Command::Expire {
                service: &key.0,
                instance: &key.1,
                renewal_index,
            }
            .encode();
            let result = handle.propose(&bytes, deadline).await.map(|p| p.output);
            let outcome = Outcome {
                key,
                renewal_index,
                result,
            };
            let _ = done.send(outcome).await;
        });
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Outcome {
            key,
            renewal_index,
            result,
        } = outcome;
        let e = match result {
            Ok(Effect::Expired) => return,
            Ok(_) => {
                debug!(self.logger, "the instance was renewed or removed before its expiry applied";
                    "service" => &key.0, "instance" => &key.1);
                return;
            }
            Err(e) => e,
        };
        let still_due = self.changes.is_some()
            && !self.timers.contains(&key)
            && self.registry.renewal_index(&key.0, &key.1) == Some(renewal_index);
        warn!(self.logger, "an expiry proposal failed"; "error" => %e,
            "service" => &key.0, "instance" => &key.1, "retry" => still_due);
        if still_due {
            let retry = Instant::now() + self.handle.retry_after();
            self.timers.set(key, retry, renewal_index);
        }
    }
}
