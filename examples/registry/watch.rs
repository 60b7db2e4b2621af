//! `GET /watch`: the registry's changes and the cluster's leader as Server-Sent Events.
//!
//! | SSE event | `id:` | data |
//! |---|---|---|
//! | `leader` | none | `{leader, term}` (leader 0: none known); first on every stream, then on every change |
//! | `reset` | its index | `{index, services: {service: [{instance, address, ttl_ms}]}}`: the whole state |
//! | `registered` | its index | `{service, instance, address, ttl_ms, index}`: new, or its address or TTL changed |
//! | `deregistered` | its index | `{service, instance, index}` |
//! | `expired` | its index | `{service, instance, index}` |
//!
//! A stream starts with `leader`, then either a `reset` (no `Last-Event-ID`) or, with
//! `Last-Event-ID: N`, every registry event with an index above N while this node's history
//! still holds them all, else a `reset`. Then live events, in index order. A renewal that
//! changes nothing is not an event (heartbeats would flood watchers and the history).
//!
//! Invariant: a watcher never silently misses an event. Whenever the stream cannot continue
//! from the last index it delivered (its channel lagged, the state was restored from a
//! snapshot), it resumes from that index exactly as a reconnecting client would: a replay from
//! the history, or a `reset`. A slow client only slows its own task (bounded by
//! `engine::http::SSE_BOUND` frames), never the apply thread.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use engine::http::{sse, sse_frame, Answer, SSE_BOUND};
use engine::{Event, EventKind, Handle, Subscription};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use crate::registry::{Change, Effect, EventKind as Happened, Registry, RegistryEvent, Start};

/// The streaming answer for one watcher, resuming after `last_event_id` if given.
pub fn answer(
    handle: &Handle<Effect>,
    registry: &Arc<Registry>,
    last_event_id: Option<u64>,
) -> Answer {
    let (tx, rx) = mpsc::channel(SSE_BOUND);
    let watcher = Watcher {
        handle: handle.clone(),
        registry: registry.clone(),
        tx,
        leader: None,
        after: 0,
    };
    tokio::spawn(watcher.run(last_event_id));
    sse(rx)
}

/// One stream's producer.
struct Watcher {
    handle: Handle<Effect>,
    registry: Arc<Registry>,
    tx: mpsc::Sender<Bytes>,
    /// The (leader, term) last sent.
    leader: Option<(u64, u64)>,
    /// Every registry event up to this index was delivered (or is in the `reset` sent).
    after: u64,
}

/// What woke the producer.
enum Input {
    Gone,
    Node(Option<Event>),
    Change(Result<Change, RecvError>),
}

impl Watcher {
    async fn run(mut self, last_event_id: Option<u64>) {
        let mut events = self.handle.subscribe();
        if let Some(Event {
            kind: EventKind::Current(state),
            ..
        }) = events.next().await
        {
            if self.leader(state.leader, state.term).await.is_none() {
                return;
            }
        }
        let Some(mut changes) = self.start(last_event_id).await else {
            return;
        };
        loop {
            let delivered = match self.next_input(&mut events, &mut changes).await {
                Input::Gone | Input::Node(None) | Input::Change(Err(RecvError::Closed)) => None,
                Input::Node(Some(event)) => self.on_node_event(event.kind).await,
                Input::Change(Ok(Change::Event(e))) => self.event(&e).await,
                Input::Change(Ok(Change::Renewed(_))) => Some(()),
                Input::Change(Ok(Change::Restored { .. }) | Err(RecvError::Lagged(_))) => {
                    self.start(Some(self.after)).await.map(|rx| changes = rx)
                }
            };
            if delivered.is_none() {
                return;
            }
        }
    }

    async fn next_input(
        &self,
        events: &mut Subscription,
        changes: &mut broadcast::Receiver<Change>,
    ) -> Input {
        tokio::select! {
            _ = self.tx.closed() => Input::Gone,
            event = events.next() => Input::Node(event),
            change = changes.recv() => Input::Change(change),
        }
    }

    /// Subscribes and sends what the stream starts from (a replay or a reset); `None` when
    /// the client is gone.
    async fn start(&mut self, after: Option<u64>) -> Option<broadcast::Receiver<Change>> {
        let after = match after {
            Some(index) => self.applied_here(index).await.then_some(index),
            None => None,
        };
        let (rx, start) = self.registry.subscribe(after);
        match start {
            Start::Replay(events) => {
                self.after = after.unwrap_or(0);
                for e in events {
                    self.event(&e).await?;
                }
            }
            Start::Reset(view) => {
                self.after = view.index;
                self.send(sse_frame("reset", Some(view.index), &view))
                    .await?;
            }
        }
        Some(rx)
    }

    /// Waits (one request timeout at most) until this node applied `index`, which the client
    /// may have seen on another node.
    async fn applied_here(&self, index: u64) -> bool {
        let deadline = Instant::now() + self.handle.config().request_timeout;
        self.handle.wait_applied(index, deadline).await.is_ok()
    }

    async fn on_node_event(&mut self, kind: EventKind) -> Option<()> {
        match kind {
            EventKind::Current(state) | EventKind::Lagged { state, .. } => {
                self.leader(state.leader, state.term).await
            }
            EventKind::Leader { leader, term, .. } => self.leader(leader, term).await,
            EventKind::BecameLeader { term } => self.leader(self.handle.config().id, term).await,
            _ => Some(()),
        }
    }

    async fn leader(&mut self, leader: u64, term: u64) -> Option<()> {
        if self.leader == Some((leader, term)) {
            return Some(());
        }
        self.leader = Some((leader, term));
        let data = json!({ "leader": leader, "term": term });
        self.send(sse_frame("leader", None, &data)).await
    }

    /// Sends `e` unless it was delivered already.
    async fn event(&mut self, e: &RegistryEvent) -> Option<()> {
        if e.index <= self.after {
            return Some(());
        }
        self.after = e.index;
        let (name, data) = match &e.kind {
            Happened::Registered { address, ttl_ms } => (
                "registered",
                json!({ "service": e.service, "instance": e.instance, "address": address,
                        "ttl_ms": ttl_ms, "index": e.index }),
            ),
            Happened::Deregistered => (
                "deregistered",
                json!({ "service": e.service, "instance": e.instance, "index": e.index }),
            ),
            Happened::Expired => (
                "expired",
                json!({ "service": e.service, "instance": e.instance, "index": e.index }),
            ),
        };
        self.send(sse_frame(name, Some(e.index), &data)).await
    }

    async fn send(&self, frame: Bytes) -> Option<()> {
        self.tx.send(frame).await.ok()
    }
}
