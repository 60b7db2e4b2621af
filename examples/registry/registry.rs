//! [`Registry`]: the replicated state (service -> instance -> address, TTL, renewal index),
//! the bounded history of recent registry events, and the broadcast of every change.
//!
//! Ownership: the engine's apply thread is the only writer (through `machine.rs`); HTTP
//! handlers, watch streams (`watch.rs`) and the expiry task (`expiry.rs`) read. One `RwLock`
//! guards the map, the history and the order of publication together.
//!
//! Invariants:
//! - A change is published on the broadcast channel while the write lock is held, and a
//!   subscriber subscribes while holding the read lock and reading what it starts from (the
//!   history or the whole state). So every change is either in what it started from or on its
//!   channel, never both, never neither.
//! - The history holds every registry event with an index above `complete_after`, in index
//!   order, at most `history_bound` of them. It is rebuilt only from entries applied by this
//!   process: after a start from a snapshot, or a snapshot restore, it begins at that index.
//! - Publishing never blocks: `broadcast::Sender::send` drops the oldest item for a subscriber
//!   that is [`CHANGES_BOUND`] behind, which then gets `Lagged` and starts over.
//! - A service is listed only while it has at least one instance.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::command::Command;

/// Changes buffered per subscriber before it lags.
pub const CHANGES_BOUND: usize = 1024;
/// Registry events kept for resuming watchers (the default of `--watch-history`).
pub const HISTORY_BOUND: usize = 10_000;

/// One registered instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Where it listens.
    pub address: String,
    /// Time to live without a renewal.
    pub ttl_ms: u64,
    /// Raft index of the register command that last renewed it.
    pub last_renewal_index: u64,
}

/// The whole state: services by name, their instances by name (both sorted).
pub type Services = BTreeMap<String, BTreeMap<String, Instance>>;

/// What applying a command did (the proposer's output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A new instance, or one whose address or TTL changed.
    Registered,
    /// An instance renewed with the same address and TTL.
    Renewed,
    /// The instance was removed by a deregister command.
    Deregistered,
    /// The instance was removed by an expire command.
    Expired,
    /// Nothing changed: no such instance, or (expire) it was renewed since.
    Unchanged,
}

/// What a registry event says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Registered, or its address or TTL changed.
    Registered {
        /// Its address.
        address: String,
        /// Its TTL.
        ttl_ms: u64,
    },
    /// Deregistered.
    Deregistered,
    /// Expired.
    Expired,
}

/// A change to the registry that watchers see, at its raft index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEvent {
    /// Raft index of the command.
    pub index: u64,
    /// Service name.
    pub service: String,
    /// Instance name.
    pub instance: String,
    /// What happened.
    pub kind: EventKind,
}

/// A renewal that changed nothing but the renewal index (not a watch event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// Raft index of the command (the new renewal index).
    pub index: u64,
    /// Service name.
    pub service: String,
    /// Instance name.
    pub instance: String,
    /// Its TTL.
    pub ttl_ms: u64,
}

/// One item on the broadcast channel.
#[derive(Debug, Clone)]
pub enum Change {
    /// A registry event (also kept in the history).
    Event(Arc<RegistryEvent>),
    /// A renewal (for the expiry task; watchers skip it).
    Renewed(Arc<Renewal>),
    /// The state was replaced by a snapshot at `index`; the history starts there.
    Restored {
        /// The snapshot's index.
        index: u64,
    },
}

/// One instance as the API and watchers show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InstanceView {
    /// Its name.
    pub instance: String,
    /// Its address.
    pub address: String,
    /// Its TTL.
    pub ttl_ms: u64,
}

/// The whole state at an index (a watch stream's `reset`).
#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    /// Index of the last command applied to it.
    pub index: u64,
    /// Every service and its instances.
    pub services: BTreeMap<String, Vec<InstanceView>>,
}

/// Where a subscriber starts.
pub enum Start {
    /// The events after the index it asked for, in order.
    Replay(Vec<Arc<RegistryEvent>>),
    /// The history does not reach back that far (or it asked for nothing): the whole state.
    Reset(StateView),
}

/// An instance's lease, for the expiry task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Service name.
    pub service: String,
    /// Instance name.
    pub instance: String,
    /// Its TTL.
    pub ttl_ms: u64,
    /// Its renewal index.
    pub renewal_index: u64,
}

#[derive(Debug, Default)]
struct Inner {
    services: Services,
    /// Index of the last command applied (or of the snapshot restored).
    index: u64,
    history: VecDeque<Arc<RegistryEvent>>,
    /// The history holds every event with an index above this one.
    complete_after: u64,
}

/// The registry's shared state (see the module doc).
pub struct Registry {
    inner: RwLock<Inner>,
    changes: broadcast::Sender<Change>,
    history_bound: usize,
}

impl Registry {
    /// An empty registry keeping at most `history_bound` events for resuming watchers.
    pub fn new(history_bound: usize) -> Registry {
        let (changes, _) = broadcast::channel(CHANGES_BOUND);
        Registry {
            inner: RwLock::new(Inner::default()),
            changes,
            history_bound: history_bound.max(1),
        }
    }

    /// Applies a decoded command at `index` (apply thread only) and publishes its change.
    pub fn apply(&self, index: u64, command: Command<'_>) -> Effect {
        let mut inner = self.write();
        inner.index = index;
        let (effect, change) = match command {
            Command::Register {
                service,
                instance,
                address,
                ttl_ms,
            } => inner.register(index, service, instance, address, ttl_ms),
            Command::Deregister { service, instance } => {
                inner.remove(index, service, instance, None)
            }
            Command::Expire {
                service,
                instance,
                renewal_index,
            } => inner.remove(index, service, instance, Some(renewal_index)),
        };
        if let Some(change) = change {
            if let Change::Event(event) = &change {
                inner.remember(event.clone(), self.history_bound);
            }
            let _ = self.changes.send(change);
        }
        effect
    }

    /// Replaces the whole state with `services` at `index` (a snapshot); the history starts
    /// over there and subscribers are told.
    pub fn restore(&self, services: Services, index: u64) {
        let mut inner = self.write();
        *inner = Inner {
            services,
            index,
            history: VecDeque::new(),
            complete_after: index,
        };
        let _ = self.changes.send(Change::Restored { index });
    }

    /// Runs `f` on the services (read lock held).
    pub fn with_services<R>(&self, f: impl FnOnce(&Services) -> R) -> R {
        f(&self.read().services)
    }

    /// The instances of `service`, sorted by name (empty when it has none).
    pub fn instances(&self, service: &str) -> Vec<InstanceView> {
        self.read()
            .services
            .get(service)
            .map(views)
            .unwrap_or_default()
    }

    /// The services that have instances, sorted.
    pub fn service_names(&self) -> Vec<String> {
        self.read().services.keys().cloned().collect()
    }

    /// The renewal index of an instance, if it is registered.
    pub fn renewal_index(&self, service: &str, instance: &str) -> Option<u64> {
        let inner = self.read();
        let found = inner.services.get(service)?.get(instance)?;
        Some(found.last_renewal_index)
    }

    /// Subscribes to changes, starting after `after`: the events since, when the history
    /// still holds them all, else (or without `after`) the whole state.
    ///
    /// The caller MUST have waited until this node applied `after` (an index seen on another
    /// node may not be here yet), and MUST skip channel items at or below the index it goes
    /// on from.
    pub fn subscribe(&self, after: Option<u64>) -> (broadcast::Receiver<Change>, Start) {
        let inner = self.read();
        let rx = self.changes.subscribe();
        let start = match after {
            Some(after) if after >= inner.complete_after => {
                let first = inner.history.partition_point(|e| e.index <= after);
                Start::Replay(inner.history.iter().skip(first).cloned().collect())
            }
            _ => Start::Reset(inner.view()),
        };
        (rx, start)
    }

    /// Subscribes to changes, starting from every lease now (for the expiry task).
    pub fn leases(&self) -> (broadcast::Receiver<Change>, Vec<Lease>) {
        let inner = self.read();
        let rx = self.changes.subscribe();
        let leases = inner
            .services
            .iter()
            .flat_map(|(service, instances)| {
                instances.iter().map(move |(name, i)| Lease {
                    service: service.clone(),
                    instance: name.clone(),
                    ttl_ms: i.ttl_ms,
                    renewal_index: i.last_renewal_index,
                })
            })
            .collect();
        (rx, leases)
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn views(instances: &BTreeMap<String, Instance>) -> Vec<InstanceView> {
    instances
        .iter()
        .map(|(name, i)| InstanceView {
            instance: name.clone(),
            address: i.address.clone(),
            ttl_ms: i.ttl_ms,
        })
        .collect()
}

impl Inner {
    fn register(
        &mut self,
        index: u64,
        service: &str,
        instance: &str,
        address: &str,
        ttl_ms: u64,
    ) -> (Effect, Option<Change>) {
        let instances = self.services.entry(service.to_string()).or_default();
        let fresh = Instance {
            address: address.to_string(),
            ttl_ms,
            last_renewal_index: index,
        };
        let renewed = instances
            .insert(instance.to_string(), fresh)
            .is_some_and(|old| old.address == address && old.ttl_ms == ttl_ms);
        if renewed {
            let renewal = Renewal {
                index,
                service: service.to_string(),
                instance: instance.to_string(),
                ttl_ms,
            };
            return (Effect::Renewed, Some(Change::Renewed(Arc::new(renewal))));
        }
        let kind = EventKind::Registered {
            address: address.to_string(),
            ttl_ms,
        };
        (
            Effect::Registered,
            Some(event(index, service, instance, kind)),
        )
    }

    /// Removes an instance: always (deregister), or only if its renewal index is
    /// `renewal_index` (expire).
    fn remove(
        &mut self,
        index: u64,
        service: &str,
        instance: &str,
        renewal_index: Option<u64>,
    ) -> (Effect, Option<Change>) {
        let Some(instances) = self.services.get_mut(service) else {
            return (Effect::Unchanged, None);
        };
        let due = match (instances.get(instance), renewal_index) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(found), Some(seen)) => found.last_renewal_index == seen,
        };
        if !due {
            return (Effect::Unchanged, None);
        }
        instances.remove(instance);
        if instances.is_empty() {
            self.services.remove(service);
        }
        let (effect, kind) = match renewal_index {
            None => (Effect::Deregistered, EventKind::Deregistered),
            Some(_) => (Effect::Expired, EventKind::Expired),
        };
        (effect, Some(event(index, service, instance, kind)))
    }

    fn remember(&mut self, event: Arc<RegistryEvent>, bound: usize) {
        self.history.push_back(event);
        while self.history.len() > bound {
            if let Some(oldest) = self.history.pop_front() {
                self.complete_after = oldest.index;
            }
        }
    }

    fn view(&self) -> StateView {
        StateView {
            index: self.index,
            services: self
                .services
                .iter()
                .map(|(name, instances)| (name.clone(), views(instances)))
                .collect(),
        }
    }
}

fn event(index: u64, service: &str, instance: &str, kind: EventKind) -> Change {
    Change::Event(Arc::new(RegistryEvent {
        index,
        service: service.to_string(),
        instance: instance.to_string(),
        kind,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(r: &Registry, index: u64, instance: &str, address: &str) -> Effect {
        r.apply(
            index,
            Command::Register {
                service: "web",
                instance,
                address,
                ttl_ms: 100,
            },
        )
    }

    fn expire(r: &Registry, index: u64, instance: &str, renewal_index: u64) -> Effect {
        r.apply(
            index,
            Command::Expire {
                service: "web",
                instance,
                renewal_index,
            },
        )
    }

    // Intent: an expiry naming an old renewal is a no-op (a renewal racing its expiry wins);
    // one naming the current renewal removes the instance once; a second is a no-op.
    #[test]
    fn expire_only_removes_an_unrenewed_instance() {
        let r = Registry::new(100);
        assert_eq!(register(&r, 2, "a", "x"), Effect::Registered);
        assert_eq!(register(&r, 3, "a", "x"), Effect::Renewed);
        assert_eq!(expire(&r, 4, "a", 2), Effect::Unchanged);
        assert_eq!(r.renewal_index("web", "a"), Some(3));
        assert_eq!(expire(&r, 5, "a", 3), Effect::Expired);
        assert_eq!(expire(&r, 6, "a", 3), Effect::Unchanged);
        assert_eq!(r.service_names(), Vec::<String>::new());
        let deregister = Command::Deregister {
            service: "web",
            instance: "a",
        };
        assert_eq!(r.apply(7, deregister), Effect::Unchanged);
    }

    // Intent: a subscriber resumes with exactly the events after its index while the history
    // holds them, and gets the whole state once the bound dropped one it needs, or after a
    // restore.
    #[test]
    fn resume_replays_or_resets() {
        let r = Registry::new(3);
        for i in 0..5u64 {
            register(&r, 10 + i, &format!("i{i}"), "x");
        }
        let (_, start) = r.subscribe(Some(12));
        let Start::Replay(events) = start else {
            panic!("the history holds 12 to 14");
        };
        let indexes: Vec<u64> = events.iter().map(|e| e.index).collect();
        assert_eq!(indexes, vec![13, 14]);
        let Start::Replay(events) = r.subscribe(Some(11)).1 else {
            panic!("the history holds every event after 11");
        };
        assert_eq!(events.len(), 3);
        assert!(matches!(r.subscribe(Some(10)).1, Start::Reset(_)));
        assert!(matches!(r.subscribe(None).1, Start::Reset(_)));
        let (mut rx, _) = r.subscribe(Some(14));
        r.restore(Services::new(), 20);
        assert!(matches!(rx.try_recv(), Ok(Change::Restored { index: 20 })));
        let Start::Reset(view) = r.subscribe(Some(14)).1 else {
            panic!("the history starts at the restore");
        };
        assert_eq!((view.index, view.services.len()), (20, 0));
    }
}
