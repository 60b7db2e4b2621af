//! The client HTTP API (DESIGN.md section 2): raftexample's routes and ours, with honest
//! outcomes.
//!
//! | answer | meaning |
//! |---|---|
//! | 2xx | committed and applied on this node |
//! | 400 / 413 | bad request / body over the limit: nothing proposed |
//! | 404 | key absent (reads) or unknown route |
//! | 409 | a membership change is pending, or the node already is (or is not) a member |
//! | 503 + Retry-After | known not applied: no leader, dropped, inbox full, shutting down |
//! | 504 | outcome unknown: the deadline passed, the write may still commit |
//!
//! This file only routes and maps the engine's outcomes to status codes: writes are
//! `Handle::propose` (answered once applied here), linearizable reads are
//! `Handle::read_barrier` and then a local read, membership changes and leader transfers are
//! the handle's, `/status`, `/health`, `/metrics` and `/events` render the engine's typed status
//! and events.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use engine::config::{parse_peer_url, Config};
use engine::http::{json, read_body, text, Answer};
use engine::{
    ChangeError, Conflict, Handle, MemberChange, NotApplied, ProposeError, ReadError, Status,
};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use serde::Serialize;

use crate::command::Command;
use crate::kv::KvStore;

/// First path segments that are API names, not raftexample keys.
pub const RESERVED: &[&str] = &[
    "kv", "members", "leader", "status", "health", "metrics", "events",
];

/// What every handler shares.
pub struct Api {
    /// The node.
    pub node: Handle<()>,
    /// The state machine (read here, written by the engine's apply thread).
    pub kv: Arc<KvStore>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Answers given, for `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
}

/// `GET /status`: the engine's status and the KV's state digest.
#[derive(Serialize)]
struct KvStatus {
    #[serde(flatten)]
    status: Status,
    /// Digest of the map, hex (see `kv.rs`).
    state_digest: String,
}

/// Read consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consistency {
    Linearizable,
    Serializable,
}

/// Handles one client request.
pub async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Answer {
    let answer = route(&api, req).await;
    api.metrics.record(answer.status().as_u16());
    answer
}

async fn route(api: &Api, req: Request<Incoming>) -> Answer {
    let deadline = Instant::now() + api.config.request_timeout;
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    let method = req.method().clone();
    match segments.as_slice() {
        [""] => text(
            StatusCode::NOT_FOUND,
            "no key given: use /<key> or /kv/<key>",
        ),
        ["kv", key] if !key.is_empty() => {
            let key = Bytes::copy_from_slice(key.as_bytes());
            match method {
                Method::GET => api.get(key, &query, deadline).await,
                Method::PUT => api.put(key, req, deadline).await,
                Method::DELETE => api.write(Command::Delete { key: &key }, deadline).await,
                _ => not_allowed("GET, PUT, DELETE"),
            }
        }
        ["kv", ..] => text(StatusCode::NOT_FOUND, "no key given: use /kv/<key>"),
        ["status"] if method == Method::GET => api.status_answer(deadline).await,
        ["health"] if method == Method::GET => api.health(deadline).await,
        ["members"] if method == Method::GET => api.members(deadline).await,
        ["metrics"] if method == Method::GET => api.metrics_answer(deadline).await,
        ["events"] if method == Method::GET => crate::events::answer(&api.node),
        ["status" | "health" | "members" | "metrics" | "events"] => not_allowed("GET"),
        ["members", id] => match method {
            Method::POST => {
                let learner = query_param(&query, "learner").is_some_and(|v| v == "true");
                api.add_member(id, learner, req, deadline).await
            }
            Method::DELETE => api.change_member(id, MemberChange::Remove, deadline).await,
            _ => not_allowed("POST, DELETE"),
        },
        ["members", id, "promote"] => match method {
            Method::POST => api.change_member(id, MemberChange::Promote, deadline).await,
            _ => not_allowed("POST"),
        },
        ["leader"] => match method {
            Method::POST => api.transfer_leader(req, deadline).await,
            _ => not_allowed("POST"),
        },
        [name, ..] if RESERVED.contains(name) => text(
            StatusCode::NOT_FOUND,
            format!("/{name} is not a route of this API"),
        ),
        [key] => {
            let key_bytes = Bytes::copy_from_slice(key.as_bytes());
            match method {
                Method::GET => api.get(key_bytes, &query, deadline).await,
                Method::PUT => api.put(key_bytes, req, deadline).await,
                Method::POST => api.add_member(key, false, req, deadline).await,
                Method::DELETE => api.change_member(key, MemberChange::Remove, deadline).await,
                _ => not_allowed("GET, PUT, POST, DELETE"),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "keys of the raftexample routes cannot contain '/': use /kv/<key>",
        ),
    }
}

fn not_allowed(allow: &'static str) -> Answer {
    let mut answer = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here: use {allow}"),
    );
    answer
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    answer
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Api {
    fn unavailable(&self, sentence: impl Into<String>) -> Answer {
        let mut answer = text(StatusCode::SERVICE_UNAVAILABLE, sentence);
        let secs = self.node.retry_after().as_secs().max(1);
        answer
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
        answer
    }

    fn not_applied(&self, e: NotApplied, what: &str) -> Answer {
        match e {
            NotApplied::TooLarge { .. } => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{what} was not applied ({e}): send a smaller one"),
            ),
            NotApplied::ShuttingDown => {
                self.unavailable(format!("{what} was not applied ({e}): use another node"))
            }
            _ => self.unavailable(format!(
                "{what} was not applied ({e}): retry, possibly on another node"
            )),
        }
    }

    fn conflict(&self, c: Conflict) -> Answer {
        let sentence = match c {
            Conflict::ChangePending => {
                "a membership change is already pending: retry once it is applied".to_string()
            }
            Conflict::AlreadyMember(id) => {
                format!("node {id} is already a member: remove it first to re-add it")
            }
            Conflict::NotCaughtUp(id) => format!(
                "learner {id} has not caught up with the log yet: retry the promotion shortly"
            ),
            Conflict::NotMember(id) => {
                format!("node {id} is not a member that can take this change: check GET /members")
            }
            Conflict::UrlInUse { url, id } => format!(
                "peer URL {url} already belongs to node {id}: give the new node its own URL"
            ),
        };
        text(StatusCode::CONFLICT, sentence)
    }

    fn timed_out(&self, what: &str) -> Answer {
        text(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{what} timed out after {} ms: it may still take effect, read it back before retrying",
                self.config.request_timeout.as_millis()
            ),
        )
    }

    fn read_failed(&self, e: ReadError) -> Answer {
        match e {
            ReadError::NotApplied(e) => self.not_applied(e, "the read"),
            ReadError::Timeout { index: 0 } => {
                text(StatusCode::GATEWAY_TIMEOUT, "the read timed out: retry")
            }
            ReadError::Timeout { index } => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("this node did not reach applied index {index} in time: retry"),
            ),
        }
    }

    async fn get(&self, key: Bytes, query: &str, deadline: Instant) -> Answer {
        let consistency = match query_param(query, "consistency") {
            None | Some("linearizable") => Consistency::Linearizable,
            Some("serializable") => Consistency::Serializable,
            Some(other) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("consistency={other} is unknown: use linearizable or serializable"),
                )
            }
        };
        let min_index = match query_param(query, "min_index").map(str::parse::<u64>) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "min_index must be a non-negative integer",
                )
            }
        };
        let waited = match (min_index, consistency) {
            (Some(n), _) => self.node.wait_applied(n, deadline).await,
            (None, Consistency::Serializable) => Ok(()),
            (None, Consistency::Linearizable) if self.config.unsafe_local_reads => Ok(()),
            (None, Consistency::Linearizable) => self.node.read_barrier(deadline).await.map(|_| ()),
        };
        if let Err(e) = waited {
            return self.read_failed(e);
        }
        match self.kv.get(&key) {
            Some(value) => hyper::Response::builder()
                .status(StatusCode::OK)
                .header("x-raft-applied-index", self.node.applied_index())
                .body(engine::http::full(value))
                .expect("valid response"),
            None => text(StatusCode::NOT_FOUND, "key not found"),
        }
    }

    async fn put(&self, key: Bytes, req: Request<Incoming>, deadline: Instant) -> Answer {
        let value = match read_body(
            req.into_body(),
            self.config.max_request_body_bytes,
            deadline,
        )
        .await
        {
            Ok(v) => v,
            Err(answer) => return answer,
        };
        self.write(
            Command::Put {
                key: &key,
                value: &value,
            },
            deadline,
        )
        .await
    }

    async fn write(&self, command: Command<'_>, deadline: Instant) -> Answer {
        let bytes = command.encode();
        match self.node.propose(&bytes, deadline).await {
            Ok(proposed) => {
                let mut answer = text(StatusCode::NO_CONTENT, "");
                let headers = answer.headers_mut();
                headers.insert("x-raft-index", HeaderValue::from(proposed.index));
                headers.insert("x-raft-term", HeaderValue::from(proposed.term));
                answer
            }
            Err(ProposeError::NotApplied(e)) => self.not_applied(e, "the write"),
            Err(ProposeError::Rejected(e)) => text(
                StatusCode::BAD_REQUEST,
                format!("the write committed as a no-op ({e}): fix the request"),
            ),
            Err(ProposeError::Unknown) => self.timed_out("the write"),
        }
    }

    async fn add_member(
        &self,
        id: &str,
        learner: bool,
        req: Request<Incoming>,
        deadline: Instant,
    ) -> Answer {
        let body = match read_body(req.into_body(), 4096, deadline).await {
            Ok(b) => b,
            Err(answer) => return answer,
        };
        let url = String::from_utf8_lossy(&body)
            .trim()
            .trim_end_matches('/')
            .to_string();
        if let Err(e) = parse_peer_url(&url) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("the body must be the new node's peer URL: {e}"),
            );
        }
        self.change_member(id, MemberChange::Add { url, learner }, deadline)
            .await
    }

    async fn change_member(&self, id: &str, change: MemberChange, deadline: Instant) -> Answer {
        let Some(id) = id.parse::<u64>().ok().filter(|id| *id != 0) else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("{id:?} is not a node ID: use a positive integer"),
            );
        };
        match self.node.change_membership(id, change, deadline).await {
            Ok(applied) => {
                let mut answer = text(StatusCode::NO_CONTENT, "");
                let headers = answer.headers_mut();
                headers.insert("x-raft-index", HeaderValue::from(applied.index));
                headers.insert("x-raft-term", HeaderValue::from(applied.term));
                answer
            }
            Err(e) => self.change_failed(e, "the membership change"),
        }
    }

    fn change_failed(&self, e: ChangeError, what: &str) -> Answer {
        match e {
            ChangeError::NotApplied(e) => self.not_applied(e, what),
            ChangeError::Conflict(c) => self.conflict(c),
            ChangeError::Refused(reason) => text(
                StatusCode::CONFLICT,
                format!("{what} committed but was rejected: {reason}"),
            ),
            ChangeError::Unknown => self.timed_out(what),
        }
    }

    async fn transfer_leader(&self, req: Request<Incoming>, deadline: Instant) -> Answer {
        let body = match read_body(req.into_body(), 64, deadline).await {
            Ok(b) => b,
            Err(answer) => return answer,
        };
        let Some(to) = std::str::from_utf8(&body)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            return text(
                StatusCode::BAD_REQUEST,
                "the body must be the target node's ID",
            );
        };
        match self.node.transfer_leader(to, deadline).await {
            Ok(()) => text(StatusCode::NO_CONTENT, ""),
            Err(ChangeError::NotApplied(NotApplied::NoLeader)) => self.unavailable(
                "this node is not the leader: send POST /leader to the leader (see GET /status)",
            ),
            Err(e) => self.change_failed(e, "the leader transfer"),
        }
    }

    async fn status(&self, deadline: Instant) -> Result<Status, Answer> {
        self.node
            .status(deadline)
            .await
            .map_err(|e| self.not_applied(e, "the status request"))
    }

    async fn status_answer(&self, deadline: Instant) -> Answer {
        match self.status(deadline).await {
            Ok(status) => {
                let (_, digest) = self.kv.digest();
                let report = KvStatus {
                    status,
                    state_digest: format!("{digest:016x}"),
                };
                json(StatusCode::OK, &report)
            }
            Err(answer) => answer,
        }
    }

    async fn metrics_answer(&self, deadline: Instant) -> Answer {
        match self.status(deadline).await {
            Ok(report) => {
                let body = self
                    .metrics
                    .render(&report, self.kv.len(), self.node.waiting());
                hyper::Response::builder()
                    .status(StatusCode::OK)
                    .header(
                        hyper::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                    .body(engine::http::full(body))
                    .expect("valid response")
            }
            Err(answer) => answer,
        }
    }

    async fn members(&self, deadline: Instant) -> Answer {
        match self.status(deadline).await {
            Ok(r) => json(
                StatusCode::OK,
                &serde_json::json!({ "leader": r.leader, "voters": r.voters, "learners": r.learners }),
            ),
            Err(answer) => answer,
        }
    }

    async fn health(&self, deadline: Instant) -> Answer {
        let report = match self.status(deadline).await {
            Ok(r) => r,
            Err(answer) => return answer,
        };
        match report.health(self.config.snapshot_count) {
            Ok(()) => text(StatusCode::OK, "healthy"),
            Err(reason) => self.unavailable(reason),
        }
    }
}
