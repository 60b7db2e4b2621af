//! `GET /events`: Server-Sent Events of what happens to the cluster as this node sees it:
//! `leader` (role, term or leader changed), `membership` (a conf change applied), `snapshot`
//! (one saved locally or installed from the leader) and `removed` (this node leaves).
//!
//! The raft thread publishes on a `tokio::sync::broadcast` channel of [`EVENTS_BOUND`] events;
//! publishing never blocks and costs nothing without subscribers. A subscriber that falls
//! behind by more than the bound loses the oldest events and is told so with an SSE comment
//! (`: lagged N events`), never slowing the raft thread down.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::StatusCode;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use crate::http::Answer;

/// Events buffered per subscriber before the oldest are dropped.
pub const EVENTS_BOUND: usize = 1024;

/// The publishing side, owned by the raft thread (clones hand out subscriptions).
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Bytes>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENTS_BOUND).0,
        }
    }
}

impl Events {
    /// Publishes one event: `kind` is the SSE event name, `data` its JSON payload.
    pub fn publish(&self, kind: &str, data: &impl Serialize) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let json = serde_json::to_string(data).expect("event payloads serialize");
        let _ = self
            .tx
            .send(Bytes::from(format!("event: {kind}\ndata: {json}\n\n")));
    }

    /// The streaming answer for one subscriber.
    pub fn answer(&self) -> Answer {
        let stream = BroadcastStream::new(self.tx.subscribe()).map(|item| {
            let bytes = match item {
                Ok(bytes) => bytes,
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    Bytes::from(format!(": lagged {n} events\n\n"))
                }
            };
            Ok::<_, Infallible>(Frame::data(bytes))
        });
        // A first comment so that clients see the stream open at once.
        let hello = tokio_stream::once(Ok(Frame::data(Bytes::from_static(b": events\n\n"))));
        hyper::Response::builder()
            .status(StatusCode::OK)
            .header(hyper::header::CONTENT_TYPE, "text/event-stream")
            .header(hyper::header::CACHE_CONTROL, "no-cache")
            .body(StreamBody::new(hello.chain(stream)).boxed())
            .expect("valid response")
    }
}
