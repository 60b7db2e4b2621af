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
//! Writes register a waiter (`waiters.rs`) before proposing and answer when the apply worker
//! applied *their* request ID. Linearizable reads get a read index from the raft thread and
//! answer once the state machine's applied index reached it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use tokio::sync::{oneshot, watch};

use crate::command::{Command, Request as KvRequest};
use crate::config::{parse_peer_url, Config};
use crate::http::{json, read_body, text, Answer};
use crate::kv::KvStore;
use crate::raft_node::{retry_after, MemberChange, Msg, Refusal, StatusReport};
use crate::waiters::{Applied, Waiters};

/// First path segments that are API names, not raftexample keys.
pub const RESERVED: &[&str] = &[
    "kv", "members", "leader", "status", "health", "metrics", "events",
];

/// What every handler shares.
pub struct Api {
    /// The raft thread's inbox.
    pub inbox: crossbeam_channel::Sender<Msg>,
    /// Clients waiting for their entries.
    pub waiters: Arc<Waiters>,
    /// The state machine.
    pub kv: Arc<KvStore>,
    /// The state machine's applied index.
    pub applied: watch::Receiver<u64>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Answers given, for `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Subscriptions for `GET /events`.
    pub events: crate::events::Events,
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
                Method::DELETE => api.write(Command::Delete { key }, deadline).await,
                _ => not_allowed("GET, PUT, DELETE"),
            }
        }
        ["kv", ..] => text(StatusCode::NOT_FOUND, "no key given: use /kv/<key>"),
        ["status"] if method == Method::GET => api.status_answer(deadline).await,
        ["health"] if method == Method::GET => api.health(deadline).await,
        ["members"] if method == Method::GET => api.members(deadline).await,
        ["metrics"] if method == Method::GET => api.metrics_answer(deadline).await,
        ["events"] if method == Method::GET => api.events.answer(),
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
        let secs = retry_after(&self.config).as_secs().max(1);
        answer
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
        answer
    }

    fn refused(&self, refusal: Refusal, what: &str) -> Answer {
        match refusal {
            Refusal::ChangePending => text(
                StatusCode::CONFLICT,
                "a membership change is already pending: retry once it is applied",
            ),
            Refusal::AlreadyMember(id) => text(
                StatusCode::CONFLICT,
                format!("node {id} is already a member: remove it first to re-add it"),
            ),
            Refusal::UrlInUse { url, id } => text(
                StatusCode::CONFLICT,
                format!(
                    "peer URL {url} already belongs to node {id}: give the new node its own URL"
                ),
            ),
            Refusal::NotCaughtUp(id) => text(
                StatusCode::CONFLICT,
                format!(
                    "learner {id} has not caught up with the log yet: retry the promotion shortly"
                ),
            ),
            Refusal::NotMember(id) => text(
                StatusCode::CONFLICT,
                format!("node {id} is not a member that can take this change: check GET /members"),
            ),
            other => self.unavailable(format!(
                "{what} was not applied ({other}): retry, possibly on another node"
            )),
        }
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

    /// Sends `make(done)` to the raft thread and waits for its answer until `deadline`.
    async fn ask<T>(
        &self,
        deadline: Instant,
        make: impl FnOnce(oneshot::Sender<T>) -> Msg,
    ) -> Result<T, Answer> {
        let (tx, rx) = oneshot::channel();
        match self.inbox.try_send(make(tx)) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                return Err(self.unavailable("this node is overloaded: retry shortly"))
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                return Err(self.unavailable("this node is shutting down: use another node"))
            }
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(self.unavailable("this node is shutting down: use another node")),
            Err(_) => Err(self.timed_out("the request")),
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
        let wait_for = match (min_index, consistency) {
            (Some(n), _) => n,
            (None, Consistency::Serializable) => 0,
            (None, Consistency::Linearizable) if self.config.unsafe_local_reads => 0,
            (None, Consistency::Linearizable) => {
                match self.ask(deadline, |done| Msg::Read { done }).await {
                    Ok(Ok(index)) => index,
                    Ok(Err(refusal)) => return self.refused(refusal, "the read"),
                    Err(answer) => return answer,
                }
            }
        };
        if let Err(answer) = self.wait_applied(wait_for, deadline).await {
            return answer;
        }
        match self.kv.get(&key) {
            Some(value) => hyper::Response::builder()
                .status(StatusCode::OK)
                .header("x-raft-applied-index", *self.applied.borrow())
                .body(crate::http::full(value))
                .expect("valid response"),
            None => text(StatusCode::NOT_FOUND, "key not found"),
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), Answer> {
        if *self.applied.borrow() >= index {
            return Ok(());
        }
        let mut applied = self.applied.clone();
        let reached = tokio::time::timeout_at(deadline.into(), async {
            applied.wait_for(|a| *a >= index).await.map(|_| ())
        })
        .await;
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.unavailable("this node is shutting down: use another node")),
            Err(_) => Err(text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("this node did not reach applied index {index} in time: retry"),
            )),
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
        self.write(Command::Put { key, value }, deadline).await
    }

    async fn write(&self, command: Command, deadline: Instant) -> Answer {
        let id = self.waiters.next_id();
        let data = KvRequest { id, command }.encode();
        let applied = self.waiters.register(id);
        let proposed = self.ask(deadline, |done| Msg::Propose { data, done }).await;
        match proposed {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => {
                self.waiters.cancel(id);
                return self.refused(refusal, "the write");
            }
            Err(answer) => {
                self.waiters.cancel(id);
                return answer;
            }
        }
        self.await_applied(id, applied, deadline, "the write").await
    }

    async fn await_applied(
        &self,
        id: u64,
        applied: oneshot::Receiver<crate::waiters::Outcome>,
        deadline: Instant,
        what: &str,
    ) -> Answer {
        match tokio::time::timeout_at(deadline.into(), applied).await {
            Ok(Ok(Ok(Applied { index, term }))) => {
                let mut answer = text(StatusCode::NO_CONTENT, "");
                let headers = answer.headers_mut();
                headers.insert("x-raft-index", HeaderValue::from(index));
                headers.insert("x-raft-term", HeaderValue::from(term));
                answer
            }
            Ok(Ok(Err(reason))) => text(
                StatusCode::CONFLICT,
                format!("{what} committed but was rejected: {reason}"),
            ),
            Ok(Err(_)) => {
                self.waiters.cancel(id);
                self.timed_out(what)
            }
            Err(_) => {
                self.waiters.cancel(id);
                self.timed_out(what)
            }
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
        let request_id = self.waiters.next_id();
        let applied = self.waiters.register(request_id);
        let asked = self
            .ask(deadline, |done| Msg::ChangeMembers {
                id,
                change,
                request_id,
                done,
            })
            .await;
        match asked {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => {
                self.waiters.cancel(request_id);
                return self.refused(refusal, "the membership change");
            }
            Err(answer) => {
                self.waiters.cancel(request_id);
                return answer;
            }
        }
        self.await_applied(request_id, applied, deadline, "the membership change")
            .await
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
        match self
            .ask(deadline, |done| Msg::TransferLeader { to, deadline, done })
            .await
        {
            Ok(Ok(())) => text(StatusCode::NO_CONTENT, ""),
            Ok(Err(Refusal::NoLeader)) => self.unavailable(
                "this node is not the leader: send POST /leader to the leader (see GET /status)",
            ),
            Ok(Err(refusal)) => self.refused(refusal, "the leader transfer"),
            Err(answer) => answer,
        }
    }

    async fn status(&self, deadline: Instant) -> Result<StatusReport, Answer> {
        let mut report = self.ask(deadline, |done| Msg::Status { done }).await?;
        let (applied_index, digest) = self.kv.digest();
        report.applied_index = applied_index;
        report.state_digest = format!("{digest:016x}");
        Ok(report)
    }

    async fn status_answer(&self, deadline: Instant) -> Answer {
        match self.status(deadline).await {
            Ok(report) => json(StatusCode::OK, &report),
            Err(answer) => answer,
        }
    }

    async fn metrics_answer(&self, deadline: Instant) -> Answer {
        match self.status(deadline).await {
            Ok(report) => {
                let body = self
                    .metrics
                    .render(&report, self.kv.len(), self.waiters.len());
                hyper::Response::builder()
                    .status(StatusCode::OK)
                    .header(
                        hyper::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                    .body(crate::http::full(body))
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
        if report.leader == 0 {
            return self.unavailable("unhealthy: this node knows no leader");
        }
        let lag = report.commit_index.saturating_sub(report.applied_index);
        if lag > self.config.snapshot_count {
            return self.unavailable(format!(
                "unhealthy: applying lags {lag} entries behind the commit index"
            ));
        }
        text(StatusCode::OK, "healthy")
    }
}
