//! The registry's client HTTP API: routing, request checks, and the mapping from the engine's
//! outcomes to status codes.
//!
//! | route | answer |
//! |---|---|
//! | `PUT /services/{service}/{instance}?ttl_ms=N`, body = address | 204 once applied (register or renew; `X-Raft-Index`, `X-Raft-Term`) |
//! | `DELETE /services/{service}/{instance}` | 204 once applied, 404 if it was not registered |
//! | `GET /services/{service}[?consistency=serializable]` | JSON `[{instance, address, ttl_ms}]` sorted by instance |
//! | `GET /services[?consistency=serializable]` | JSON array of the service names that have instances, sorted |
//! | `GET /watch` (`Last-Event-ID`) | Server-Sent Events, see `watch.rs` |
//! | `POST /{id}` (body = peer URL), `DELETE /{id}` | membership changes, 204 once applied |
//! | `GET /status`, `GET /health` | the engine's status with a state digest; 200 or 503 |
//!
//! Outcomes: 400 / 413 a bad request (nothing proposed); 404 no such route or instance; 405 a
//! method the route does not take (with `Allow`); 409 a membership conflict; 503 with
//! `Retry-After` known not applied (no leader, overloaded, shutting down); 504 outcome unknown
//! (the deadline passed: read it back before retrying). Every error body is one sentence
//! saying what to do next. Reads are linearizable by default (`Handle::read_barrier`, then
//! the local state).

use std::sync::Arc;
use std::time::Instant;

use engine::config::{parse_peer_url, Config};
use engine::http::{json, read_body, text, Answer};
use engine::outcome::{applied, not_allowed, query_param, Outcomes};
use engine::{Handle, MemberChange, ProposeError, Proposed, Status};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Serialize;

use crate::command::{
    check_address, check_name, check_ttl, Command, DEFAULT_TTL_MS, MAX_ADDRESS_BYTES,
};
use crate::registry::{Effect, Registry};

/// Largest body of `POST /{id}` (a peer URL).
const MAX_PEER_URL_BYTES: usize = 4096;

/// What every handler shares.
pub struct Api {
    node: Handle<Effect>,
    registry: Arc<Registry>,
    config: Arc<Config>,
    outcomes: Outcomes,
}

/// `GET /status`: the engine's status and the registry's digest.
#[derive(Serialize)]
struct RegistryStatus {
    #[serde(flatten)]
    status: Status,
    /// FNV-1a of the registry's image, hex: equal on replicas that applied the same index.
    state_digest: String,
    /// Services with instances.
    services: usize,
    /// Registered instances.
    instances: usize,
}

impl Api {
    /// The API of `node`, reading `registry`.
    pub fn new(node: Handle<Effect>, registry: Arc<Registry>, config: Arc<Config>) -> Api {
        Api {
            outcomes: Outcomes::new(&config),
            node,
            registry,
            config,
        }
    }
}

/// Handles one client request.
pub async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Answer {
    let deadline = Instant::now() + api.config.request_timeout;
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), method) {
        (["services"], Method::GET) => api.list_services(&query, deadline).await,
        (["services"], _) => not_allowed("GET"),
        (["services", service], Method::GET) => api.list(service, &query, deadline).await,
        (["services", _], _) => not_allowed("GET"),
        (["services", service, instance], Method::PUT) => {
            api.register(service, instance, &query, req, deadline).await
        }
        (["services", service, instance], Method::DELETE) => {
            api.deregister(service, instance, deadline).await
        }
        (["services", _, _], _) => not_allowed("PUT, DELETE"),
        (["watch"], Method::GET) => api.watch(&req),
        (["status"], Method::GET) => api.status_answer(deadline).await,
        (["health"], Method::GET) => {
            api.outcomes
                .health(&api.node, deadline, api.config.snapshot_count)
                .await
        }
        (["snapshot"], Method::GET) => {
            engine::backup::answer(&api.node, &api.outcomes, &query).await
        }
        (["watch" | "status" | "health" | "snapshot"], _) => not_allowed("GET"),
        ([id], Method::POST) if is_node_id(id) => api.add_member(id, req, deadline).await,
        ([id], Method::DELETE) if is_node_id(id) => {
            api.outcomes
                .change_membership(&api.node, id, MemberChange::Remove, deadline)
                .await
        }
        ([id], _) if is_node_id(id) => not_allowed("POST, DELETE"),
        _ => text(
            StatusCode::NOT_FOUND,
            "no such route: use /services/<service>/<instance>, /services, /watch, /status, \
             /health or /<node id>",
        ),
    }
}

fn is_node_id(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

fn bad_request(sentence: impl Into<String>) -> Answer {
    text(StatusCode::BAD_REQUEST, sentence)
}

/// `ttl_ms` from the query: [`DEFAULT_TTL_MS`] when absent.
///
/// # Errors
/// The sentence for a 400.
fn ttl_ms(query: &str) -> Result<u64, String> {
    let Some(value) = query_param(query, "ttl_ms") else {
        return Ok(DEFAULT_TTL_MS);
    };
    let ttl = value.parse::<u64>().map_err(|_| {
        format!("ttl_ms={value:?} is not a number: use milliseconds, e.g. ttl_ms=10000")
    })?;
    check_ttl(ttl)?;
    Ok(ttl)
}

impl Api {
    async fn register(
        &self,
        service: &str,
        instance: &str,
        query: &str,
        req: Request<Incoming>,
        deadline: Instant,
    ) -> Answer {
        if let Err(sentence) = check_names(service, instance) {
            return bad_request(sentence);
        }
        let ttl_ms = match ttl_ms(query) {
            Ok(ttl) => ttl,
            Err(sentence) => return bad_request(sentence),
        };
        let body = match read_body(req.into_body(), MAX_ADDRESS_BYTES, deadline).await {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        let Ok(address) = std::str::from_utf8(&body) else {
            return bad_request("the body is not UTF-8: send the instance's address as text");
        };
        let address = address.trim();
        if let Err(sentence) = check_address(address) {
            return bad_request(sentence);
        }
        let command = Command::Register {
            service,
            instance,
            address,
            ttl_ms,
        };
        match self.propose(command, deadline).await {
            Ok(p) => applied(StatusCode::NO_CONTENT, p.index, p.term),
            Err(answer) => answer,
        }
    }

    async fn deregister(&self, service: &str, instance: &str, deadline: Instant) -> Answer {
        if let Err(sentence) = check_names(service, instance) {
            return bad_request(sentence);
        }
        let command = Command::Deregister { service, instance };
        match self.propose(command, deadline).await {
            Ok(p) if p.output == Effect::Deregistered => {
                applied(StatusCode::NO_CONTENT, p.index, p.term)
            }
            Ok(_) => text(
                StatusCode::NOT_FOUND,
                format!("{service}/{instance} is not registered: nothing to deregister"),
            ),
            Err(answer) => answer,
        }
    }

    async fn propose(
        &self,
        command: Command<'_>,
        deadline: Instant,
    ) -> Result<Proposed<Effect>, Answer> {
        match self.node.propose(&command.encode(), deadline).await {
            Ok(proposed) => Ok(proposed),
            Err(ProposeError::NotApplied(e)) => Err(self.outcomes.not_applied(e, "the write")),
            Err(ProposeError::Rejected(e)) => Err(bad_request(format!(
                "the write committed as a no-op ({e}): fix the request"
            ))),
            Err(ProposeError::Unknown) => Err(self.outcomes.timed_out("the write")),
        }
    }

    async fn list(&self, service: &str, query: &str, deadline: Instant) -> Answer {
        if let Err(sentence) = check_name("service", service) {
            return bad_request(sentence);
        }
        if let Err(answer) = self.before_read(query, deadline).await {
            return answer;
        }
        json(StatusCode::OK, &self.registry.instances(service))
    }

    async fn list_services(&self, query: &str, deadline: Instant) -> Answer {
        if let Err(answer) = self.before_read(query, deadline).await {
            return answer;
        }
        json(StatusCode::OK, &self.registry.service_names())
    }

    /// The read barrier a read's `consistency` asks for.
    async fn before_read(&self, query: &str, deadline: Instant) -> Result<(), Answer> {
        match query_param(query, "consistency") {
            None | Some("linearizable") => self
                .node
                .read_barrier(deadline)
                .await
                .map(|_| ())
                .map_err(|e| self.outcomes.read_failed(e)),
            Some("serializable") => Ok(()),
            Some(other) => Err(bad_request(format!(
                "consistency={other} is unknown: use linearizable or serializable"
            ))),
        }
    }

    fn watch(&self, req: &Request<Incoming>) -> Answer {
        let last_event_id =
            match req.headers().get("last-event-id") {
                None => None,
                Some(value) => match value.to_str().ok().and_then(|v| v.trim().parse().ok()) {
                    Some(index) => Some(index),
                    None => return bad_request(
                        "Last-Event-ID must be the id of an event of this stream (a raft index)",
                    ),
                },
            };
        crate::watch::answer(&self.node, &self.registry, last_event_id)
    }

    async fn add_member(&self, id: &str, req: Request<Incoming>, deadline: Instant) -> Answer {
        let body = match read_body(req.into_body(), MAX_PEER_URL_BYTES, deadline).await {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        let url = String::from_utf8_lossy(&body)
            .trim()
            .trim_end_matches('/')
            .to_string();
        if let Err(e) = parse_peer_url(&url) {
            return bad_request(format!("the body must be the new node's peer URL: {e}"));
        }
        let change = MemberChange::Add {
            url,
            learner: false,
        };
        self.outcomes
            .change_membership(&self.node, id, change, deadline)
            .await
    }

    async fn status_answer(&self, deadline: Instant) -> Answer {
        let status = match self.outcomes.status(&self.node, deadline).await {
            Ok(status) => status,
            Err(answer) => return answer,
        };
        let (image, services, instances) = self.registry.with_services(|s| {
            let instances = s.values().map(|i| i.len()).sum::<usize>();
            (crate::image::encode(s), s.len(), instances)
        });
        let report = RegistryStatus {
            status,
            state_digest: format!("{:016x}", fnv1a(&image)),
            services,
            instances,
        };
        json(StatusCode::OK, &report)
    }
}

fn check_names(service: &str, instance: &str) -> Result<(), String> {
    check_name("service", service)?;
    check_name("instance", instance)
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
