//! How the engine's outcomes read over HTTP, the same for every application: one status code per
//! kind of outcome and one sentence saying what to do next.
//!
//! | outcome | answer |
//! |---|---|
//! | done | 2xx; writes carry `X-Raft-Index` and `X-Raft-Term` ([`applied`]) |
//! | [`NotApplied::TooLarge`] | 413 |
//! | other [`NotApplied`] | 503 + `Retry-After` (one election timeout): known not applied |
//! | [`Conflict`], a change refused after commit | 409 |
//! | outcome unknown, read not applied in time | 504 |
//! | a method a route does not take | 405 + `Allow` ([`not_allowed`]) |

use std::time::Duration;

use hyper::header::{HeaderValue, ALLOW, RETRY_AFTER};
use hyper::StatusCode;

use std::time::Instant;

use crate::handle::{ChangeError, Conflict, Handle, NotApplied, ReadError};
use crate::http::{text, Answer};
use crate::protocol::{MemberChange, Status};

/// The answers of one node (they quote its retry delay and its request deadline).
#[derive(Debug, Clone, Copy)]
pub struct Outcomes {
    retry_after: Duration,
    request_timeout: Duration,
}

impl Outcomes {
    /// The answers of a node with `config`.
    pub fn new(config: &crate::Config) -> Outcomes {
        Outcomes {
            retry_after: config.election_timeout(),
            request_timeout: config.request_timeout,
        }
    }

    /// 503 with `Retry-After`: known not applied, retry (possibly elsewhere).
    pub fn unavailable(&self, sentence: impl Into<String>) -> Answer {
        let mut answer = text(StatusCode::SERVICE_UNAVAILABLE, sentence);
        let secs = self.retry_after.as_secs().max(1);
        answer
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
        answer
    }

    /// `what` (e.g. "the write") was known not applied.
    pub fn not_applied(&self, e: NotApplied, what: &str) -> Answer {
        match e {
            NotApplied::TooLarge { .. } => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{what} was not applied ({e}): send a smaller one"),
            ),
            NotApplied::DiskFull { .. } => text(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "{what} was not applied ({e}): free space on this node, or use another \
                     node; serializable reads still work here"
                ),
            ),
            NotApplied::ShuttingDown => {
                self.unavailable(format!("{what} was not applied ({e}): use another node"))
            }
            _ => self.unavailable(format!(
                "{what} was not applied ({e}): retry, possibly on another node"
            )),
        }
    }

    /// 504: the deadline passed and `what` may still take effect.
    pub fn timed_out(&self, what: &str) -> Answer {
        text(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{what} timed out after {} ms: it may still take effect, read it back before \
                 retrying",
                self.request_timeout.as_millis()
            ),
        )
    }

    /// A read barrier or `wait_applied` that failed.
    pub fn read_failed(&self, e: ReadError) -> Answer {
        match e {
            ReadError::NotApplied(e) => self.not_applied(e, "the read"),
            ReadError::Timeout { index: 0 } => text(
                StatusCode::GATEWAY_TIMEOUT,
                "the read timed out: retry, possibly on another node",
            ),
            ReadError::Timeout { index } => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("this node did not reach applied index {index} in time: retry"),
            ),
        }
    }

    /// A membership change (or leader transfer) named `what` that failed.
    pub fn change_failed(&self, e: ChangeError, what: &str) -> Answer {
        match e {
            ChangeError::NotApplied(e) => self.not_applied(e, what),
            ChangeError::Conflict(c) => conflict(c),
            ChangeError::Refused(reason) => text(
                StatusCode::CONFLICT,
                format!("{what} committed but was rejected: {reason}"),
            ),
            ChangeError::Unknown => self.timed_out(what),
        }
    }
}

impl Outcomes {
    /// `POST /{id}`, `DELETE /{id}` and the like: changes the membership of node `id` (the
    /// path segment; 400 when it is not a positive integer) and answers 204 once applied.
    pub async fn change_membership<O: Send + 'static>(
        &self,
        node: &Handle<O>,
        id: &str,
        change: MemberChange,
        deadline: Instant,
    ) -> Answer {
        let Some(id) = id.parse::<u64>().ok().filter(|id| *id != 0) else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("{id:?} is not a node ID: use a positive integer"),
            );
        };
        match node.change_membership(id, change, deadline).await {
            Ok(a) => applied(StatusCode::NO_CONTENT, a.index, a.term),
            Err(e) => self.change_failed(e, "the membership change"),
        }
    }

    /// The node's status, or the answer to give instead.
    ///
    /// # Errors
    /// The 503 when the raft thread cannot answer by the deadline.
    pub async fn status<O: Send + 'static>(
        &self,
        node: &Handle<O>,
        deadline: Instant,
    ) -> Result<Status, Answer> {
        node.status(deadline)
            .await
            .map_err(|e| self.not_applied(e, "the status request"))
    }

    /// `GET /health`: 200, or 503 with the reason (see [`Status::health`]).
    pub async fn health<O: Send + 'static>(
        &self,
        node: &Handle<O>,
        deadline: Instant,
        max_lag: u64,
    ) -> Answer {
        match self.status(node, deadline).await.map(|s| s.health(max_lag)) {
            Ok(Ok(())) => text(StatusCode::OK, "healthy"),
            Ok(Err(reason)) => self.unavailable(reason),
            Err(answer) => answer,
        }
    }
}

/// 409 for a membership change that cannot be made now.
pub fn conflict(c: Conflict) -> Answer {
    let sentence = match c {
        Conflict::ChangePending => {
            "a membership change is already pending: retry once it is applied".to_string()
        }
        Conflict::AlreadyMember(id) => {
            format!("node {id} is already a member: remove it first to re-add it")
        }
        Conflict::IdRemoved(id) => format!(
            "node {id} was removed from this cluster, and an ID is never reused (a node with \
             its old data could vote twice): add the new node under a new ID"
        ),
        Conflict::NotCaughtUp(id) => {
            format!("learner {id} has not caught up with the log yet: retry the promotion shortly")
        }
        Conflict::NotMember(id) => {
            format!("node {id} is not a member that can take this change: check GET /status")
        }
        Conflict::UrlInUse { url, id } => {
            format!("peer URL {url} already belongs to node {id}: give the new node its own URL")
        }
    };
    text(StatusCode::CONFLICT, sentence)
}

/// `status` (usually 204) with the `X-Raft-Index` and `X-Raft-Term` of the applied entry.
pub fn applied(status: StatusCode, index: u64, term: u64) -> Answer {
    let mut answer = text(status, "");
    let headers = answer.headers_mut();
    headers.insert("x-raft-index", HeaderValue::from(index));
    headers.insert("x-raft-term", HeaderValue::from(term));
    answer
}

/// 405 with `Allow: allow`.
pub fn not_allowed(allow: &'static str) -> Answer {
    let mut answer = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here: use {allow}"),
    );
    answer
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    answer
}

/// The value of `name` in a URL query string (`a=1&b`: `b` has the value "").
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
