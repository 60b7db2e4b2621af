//! `GET /events`: the engine's events as Server-Sent Events.
//!
//! | SSE event | from | data |
//! |---|---|---|
//! | `state` | the subscription's first event | the node state (role, term, leader, members, applied index, epoch) |
//! | `leader` | role, term or leader changed; `became_leader` / `stepped_down` on this node | `{term, leader, role}` |
//! | `membership` | a conf change applied | `{change, node, url, learner, index}` |
//! | `snapshot` | saved locally or installed from the leader | `{index, term, from}` |
//! | `removed` | this node was removed and stops | `{node, term, reason}` |
//! | `lagged` | this client fell behind: events were dropped | `{missed, state}` |
//!
//! A client that falls behind never slows the node down: the engine's subscription reports
//! `lagged` with the current state instead.

use engine::http::{sse, sse_frame, Answer, SSE_BOUND};
use engine::{Event, EventKind, Handle};

use crate::kv::KvOutput;
use serde_json::json;

/// The streaming answer for one subscriber.
pub fn answer(node: &Handle<KvOutput>) -> Answer {
    let mut events = node.subscribe();
    let id = node.config().id;
    let (tx, rx) = tokio::sync::mpsc::channel(SSE_BOUND);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if tx.send(frame(id, &event)).await.is_err() {
                return;
            }
        }
    });
    sse(rx)
}

fn frame(id: u64, e: &Event) -> bytes::Bytes {
    let term = e.epoch.term;
    let (name, data) = match &e.kind {
        EventKind::Current(state) => ("state", json!(state)),
        EventKind::Lagged { missed, state } => {
            ("lagged", json!({ "missed": missed, "state": state }))
        }
        EventKind::Leader { role, leader, term } => (
            "leader",
            json!({ "term": term, "leader": leader, "role": role.name() }),
        ),
        EventKind::BecameLeader { term } => (
            "leader",
            json!({ "term": term, "leader": id, "role": "leader", "serving": true }),
        ),
        EventKind::SteppedDown { term } => {
            ("leader", json!({ "term": term, "stepped_down": true }))
        }
        EventKind::Membership {
            change,
            node,
            url,
            learner,
            index,
        } => (
            "membership",
            json!({ "change": change, "node": node, "url": url, "learner": learner, "index": index }),
        ),
        EventKind::Snapshot { index, term, from } => (
            "snapshot",
            json!({ "index": index, "term": term, "from": from }),
        ),
        EventKind::Diverged { member, index, why } => (
            "diverged",
            json!({ "member": member, "index": index, "why": why }),
        ),
        EventKind::Removed { reason } => (
            "removed",
            json!({ "node": id, "term": term, "reason": reason }),
        ),
    };
    sse_frame(name, None, &data)
}
