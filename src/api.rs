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
use engine::outcome::{applied, not_allowed, query_param, Outcomes};
use engine::{ChangeError, Handle, MemberChange, NotApplied, ProposeError, Status};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Serialize;

use crate::command::Command;
use crate::kv::{KvOutput, KvStore};

/// First path segments that are API names, not raftexample keys.
pub const RESERVED: &[&str] = &[
    "kv", "members", "leader", "status", "health", "metrics", "events", "snapshot",
];

/// What every handler shares.
pub struct Api {
    node: Handle<KvOutput>,
    /// The state machine (read here, written by the engine's apply thread).
    kv: Arc<KvStore>,
    config: Arc<Config>,
    outcomes: Outcomes,
    /// `--quota-bytes`, carried by every put.
    quota: u64,
    /// Answers given, for `GET /metrics`.
    metrics: crate::metrics::Metrics,
}

/// `GET /status`: the engine's status and the KV's state digest.
#[derive(Serialize)]
struct KvStatus {
    #[serde(flatten)]
    status: Status,
    /// Digest of the map, hex (see `kv.rs`).
    state_digest: String,
    /// Number of keys.
    keys: u64,
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
    let method = req.method().clone();
    // `/kv/{key}`: the key is the rest of the path, slashes included, percent-decoded.
    if let Some(rest) = path.strip_prefix("/kv/").filter(|rest| !rest.is_empty()) {
        let key = match percent_decode(rest) {
            Ok(key) => Bytes::from(key),
            Err(why) => return text(StatusCode::BAD_REQUEST, why),
        };
        return match method {
            Method::GET => api.get(key, &query, deadline).await,
            Method::PUT => api.put(key, req, deadline).await,
            Method::DELETE => api.write(Command::Delete { key: &key }, deadline).await,
            _ => not_allowed("GET, PUT, DELETE"),
        };
    }
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    match segments.as_slice() {
        [""] => text(
            StatusCode::NOT_FOUND,
            "no key given: use /<key> or /kv/<key>",
        ),
        ["kv", ..] => text(StatusCode::NOT_FOUND, "no key given: use /kv/<key>"),
        ["status"] if method == Method::GET => api.status_answer(deadline).await,
        ["health"] if method == Method::GET => {
            api.outcomes
                .health(&api.node, deadline, api.config.snapshot_count)
                .await
        }
        ["members"] if method == Method::GET => api.members(deadline).await,
        ["metrics"] if method == Method::GET => api.metrics_answer(deadline).await,
        ["events"] if method == Method::GET => crate::events::answer(&api.node),
        ["snapshot"] if method == Method::GET => {
            engine::backup::answer(&api.node, &api.outcomes, &query).await
        }
        ["status", "digest-check"] => match method {
            Method::POST => api.digest_check(deadline).await,
            _ => not_allowed("POST"),
        },
        ["status" | "health" | "members" | "metrics" | "events" | "snapshot"] => not_allowed("GET"),
        ["members", id] => match method {
            Method::POST => {
                let learner = query_param(&query, "learner").is_some_and(|v| v == "true");
                api.add_member(id, learner, req, deadline).await
            }
            Method::PUT => api.update_member(id, req, deadline).await,
            Method::DELETE => {
                api.outcomes
                    .change_membership(&api.node, id, MemberChange::Remove, deadline)
                    .await
            }
            _ => not_allowed("POST, PUT, DELETE"),
        },
        ["members", id, "promote"] => match method {
            Method::POST => {
                api.outcomes
                    .change_membership(&api.node, id, MemberChange::Promote, deadline)
                    .await
            }
            _ => not_allowed("POST"),
        },
        ["leader"] => match method {
            Method::POST => api.transfer_leader(req, deadline).await,
            _ => not_allowed("POST"),
        },
        [name, ..] if RESERVED.contains(name) => text(
            StatusCode::NOT_FOUND,
            format!("/{name} is not a route of this API (a key of that name is /kv/{name})"),
        ),
        [key] => {
            let key_bytes = match raftexample_key(key) {
                Ok(key) => key,
                Err(why) => return text(StatusCode::BAD_REQUEST, why),
            };
            match method {
                Method::GET => api.get(key_bytes, &query, deadline).await,
                Method::PUT => api.put(key_bytes, req, deadline).await,
                Method::POST => api.add_member(key, false, req, deadline).await,
                Method::DELETE => {
                    api.outcomes
                        .change_membership(&api.node, key, MemberChange::Remove, deadline)
                        .await
                }
                _ => not_allowed("GET, PUT, POST, DELETE"),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "keys of the raftexample routes cannot contain '/': use /kv/<key>",
        ),
    }
}

/// The key of a raftexample route (`/{key}`): percent-decoded, like `/kv/{key}`'s, so `/A`,
/// `/%41`, `/kv/A` and `/kv/%41` are one key. A decoded key with a slash, or one that names a
/// reserved route, is refused (the 400's sentence) with a pointer to `/kv/`.
fn raftexample_key(segment: &str) -> Result<Bytes, String> {
    let key = percent_decode(segment)?;
    let refuse = |why: &str| format!("{why}: use /kv/{segment} for such a key");
    if key.contains(&b'/') {
        return Err(refuse("keys of the raftexample routes cannot contain '/'"));
    }
    if RESERVED.iter().any(|r| r.as_bytes() == key.as_slice()) {
        return Err(refuse("this key names a route of this API"));
    }
    Ok(Bytes::from(key))
}

/// Decodes `%XX` escapes (any byte; the key need not be UTF-8). A `%` not followed by two
/// hex digits is refused (the 400's sentence).
fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        let Some(byte) = hex else {
            return Err(format!(
                "bad percent escape at byte {i} of the key: use %XX with two hex digits"
            ));
        };
        out.push(byte);
        i += 3;
    }
    Ok(out)
}

impl Api {
    /// The API of `node`, reading `kv`.
    pub fn new(node: Handle<KvOutput>, kv: Arc<KvStore>, config: Arc<Config>, quota: u64) -> Api {
        Api {
            outcomes: Outcomes::new(&config),
            quota,
            node,
            kv,
            config,
            metrics: crate::metrics::Metrics::default(),
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
            return self.outcomes.read_failed(e);
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
        if let Some(why) = self.node.no_space() {
            return text(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("the write was not applied: {why}"),
            );
        }
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
                quota: self.quota,
            },
            deadline,
        )
        .await
    }

    async fn write(&self, command: Command<'_>, deadline: Instant) -> Answer {
        let bytes = command.encode();
        match self.node.propose(&bytes, deadline).await {
            Ok(p) => match p.output {
                KvOutput::Done => applied(StatusCode::NO_CONTENT, p.index, p.term),
                KvOutput::OverQuota { after, quota } => text(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!(
                        "the write was not applied: it would take the data to {after} bytes, \
                         above the space quota of {quota} bytes (--quota-bytes): delete keys or \
                         raise the quota"
                    ),
                ),
            },
            Err(ProposeError::NotApplied(e)) => self.outcomes.not_applied(e, "the write"),
            Err(ProposeError::Rejected(e)) => text(
                StatusCode::BAD_REQUEST,
                format!("the write committed as a no-op ({e}): fix the request"),
            ),
            Err(ProposeError::Unknown) => self.outcomes.timed_out("the write"),
        }
    }

    async fn add_member(
        &self,
        id: &str,
        learner: bool,
        req: Request<Incoming>,
        deadline: Instant,
    ) -> Answer {
        let url = match peer_url_body(
            req,
            "the new node's",
            self.config.peer_tls.is_some(),
            deadline,
        )
        .await
        {
            Ok(url) => url,
            Err(answer) => return answer,
        };
        self.outcomes
            .change_membership(&self.node, id, MemberChange::Add { url, learner }, deadline)
            .await
    }

    /// `PUT /members/{id}` body = new peer URL, as etcd's `member update`: 204 once applied;
    /// the member listens there from its next start.
    async fn update_member(&self, id: &str, req: Request<Incoming>, deadline: Instant) -> Answer {
        let url = match peer_url_body(
            req,
            "the member's new",
            self.config.peer_tls.is_some(),
            deadline,
        )
        .await
        {
            Ok(url) => url,
            Err(answer) => return answer,
        };
        self.outcomes
            .change_membership(&self.node, id, MemberChange::UpdateUrl { url }, deadline)
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
        match self.node.transfer_leader(to, deadline).await {
            Ok(()) => text(StatusCode::NO_CONTENT, ""),
            Err(ChangeError::NotApplied(NotApplied::NoLeader)) => self.outcomes.unavailable(
                "this node is not the leader: send POST /leader to the leader (see GET /status)",
            ),
            Err(e) => self.outcomes.change_failed(e, "the leader transfer"),
        }
    }

    /// `POST /status/digest-check`: every member reports its state digest at one index; the
    /// verdict is in `GET /status` (`diverged`, `digest_check_index`) once applied.
    async fn digest_check(&self, deadline: Instant) -> Answer {
        match self.node.check_digests(deadline).await {
            Ok(()) => text(
                StatusCode::ACCEPTED,
                "a divergence check was proposed: see diverged and digest_check_index in GET \
                 /status",
            ),
            Err(e) => self.outcomes.not_applied(e, "the divergence check"),
        }
    }

    async fn status_answer(&self, deadline: Instant) -> Answer {
        match self.outcomes.status(&self.node, deadline).await {
            Ok(status) => {
                let (_, digest) = self.kv.digest();
                let report = KvStatus {
                    status,
                    state_digest: format!("{digest:016x}"),
                    keys: self.kv.len() as u64,
                };
                json(StatusCode::OK, &report)
            }
            Err(answer) => answer,
        }
    }

    async fn metrics_answer(&self, deadline: Instant) -> Answer {
        match self.outcomes.status(&self.node, deadline).await {
            Ok(report) => {
                let body = self.metrics.render(
                    &report,
                    self.kv.len(),
                    self.node.waiting(),
                    &self.node.cert_expiries(),
                );
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
        match self.outcomes.status(&self.node, deadline).await {
            Ok(r) => json(
                StatusCode::OK,
                &serde_json::json!({ "leader": r.leader, "voters": r.voters, "learners": r.learners }),
            ),
            Err(answer) => answer,
        }
    }
}

/// A request body that must be a peer URL (`whose` names it in the 400's sentence).
async fn peer_url_body(
    req: Request<Incoming>,
    whose: &str,
    https: bool,
    deadline: Instant,
) -> Result<String, Answer> {
    let body = read_body(req.into_body(), 4096, deadline).await?;
    let url = String::from_utf8_lossy(&body)
        .trim()
        .trim_end_matches('/')
        .to_string();
    parse_peer_url(&url).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            format!("the body must be {whose} peer URL: {e}"),
        )
    })?;
    let scheme = if https { "https://" } else { "http://" };
    if !url.starts_with(scheme) {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("this cluster's peer URLs are {scheme}...: give {whose} peer URL so"),
        ));
    }
    Ok(url)
}
