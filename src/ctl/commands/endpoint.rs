//! `endpoint status` and `endpoint health`: `/status` and `/health` of each endpoint (or, with
//! `--cluster`, of every member, found through any endpoint's `/status`), asked all at once.
//!
//! Every endpoint gets a row, one that failed with its error. Exit: 0 when every endpoint
//! answered (health: and is healthy), 2 when none could be reached, else 1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::Ctx;
use crate::ctl::endpoint::Endpoint;
use crate::ctl::error::{failed, CtlError, Result};
use crate::ctl::output::{self, Format};
use crate::ctl::retry::{Call, Policy};
use crate::ctl::status::{self, NodeStatus};

/// An endpoint to ask: its URL (none for a member that never started) and, with `--cluster`,
/// the member it is.
#[derive(Clone)]
struct Target {
    endpoint: Option<Endpoint>,
    id: Option<u64>,
}

impl Target {
    fn name(&self) -> String {
        self.endpoint
            .as_ref()
            .map_or_else(|| "-".to_string(), |e| e.to_string())
    }
}

/// Longest wait for the other members' statuses when the first one did not know every
/// member's client URL.
const GAP_TIMEOUT: Duration = Duration::from_secs(1);

/// The endpoints to ask: `--endpoints`, or every member with `--cluster`.
///
/// A member's start record (its client URL) may not be applied yet on the member that
/// answered first; the others are then asked too, briefly. A member none of them knows a URL
/// for (it never started) still gets its row, with that as its error.
async fn targets(ctx: &Arc<Ctx>, cluster: bool) -> Result<Vec<Target>> {
    if !cluster {
        return Ok(ctx
            .endpoints
            .iter()
            .map(|e| Target {
                endpoint: Some(e.clone()),
                id: None,
            })
            .collect());
    }
    let (answered, status) = status::fetch(&ctx.session, &ctx.endpoints, Policy::Read).await?;
    let mut targets: Vec<Target> = status
        .members()
        .into_iter()
        .map(|(id, endpoint)| Target {
            endpoint,
            id: Some(id),
        })
        .collect();
    if targets.iter().all(|t| t.endpoint.is_some()) {
        return Ok(targets);
    }
    let mut others: Vec<Target> = Vec::new();
    let known = targets.iter().filter_map(|t| t.endpoint.clone());
    for endpoint in known.chain(ctx.endpoints.iter().cloned()) {
        if endpoint != answered
            && !others
                .iter()
                .any(|t| t.endpoint.as_ref() == Some(&endpoint))
        {
            others.push(Target {
                endpoint: Some(endpoint),
                id: None,
            });
        }
    }
    let statuses = ask_all(ctx, &others, |ctx, endpoint| async move {
        let one = [endpoint];
        let fetch = status::fetch(&ctx.session, &one, Policy::Once);
        match tokio::time::timeout(GAP_TIMEOUT, fetch).await {
            Ok(fetched) => fetched.map(|(_, status)| status),
            Err(_) => Err(failed("no status in time")),
        }
    })
    .await;
    for target in targets.iter_mut().filter(|t| t.endpoint.is_none()) {
        let id = target.id.unwrap_or_default();
        target.endpoint = statuses
            .iter()
            .filter_map(|s| s.as_ref().ok())
            .find_map(|s| s.client_url(id));
    }
    Ok(targets)
}

/// Runs `ask` on every target at once; results in the targets' order.
async fn ask_all<T, F, Fut>(ctx: &Arc<Ctx>, targets: &[Target], ask: F) -> Vec<Result<T>>
where
    T: Send + 'static,
    F: Fn(Arc<Ctx>, Endpoint) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let Some(endpoint) = target.endpoint.clone() else {
            continue;
        };
        let job = ask(ctx.clone(), endpoint);
        tasks.spawn(async move { (i, job.await) });
    }
    let mut results: Vec<Option<Result<T>>> = (0..targets.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, result)) = joined {
            results[i] = Some(result);
        }
    }
    results
        .into_iter()
        .zip(targets)
        .map(|(result, target)| {
            result.unwrap_or_else(|| {
                Err(failed(match target.id {
                    Some(id) if target.endpoint.is_none() => {
                        format!("member {id} has not started yet: its client URL is unknown")
                    }
                    _ => "the request was lost".to_string(),
                }))
            })
        })
        .collect()
}

/// The exit of a command over `results`: done when all are, unreachable when none could be
/// reached, else `failure` (which names how many failed).
fn verdict<T>(results: &[Result<T>], failure: impl Fn(usize) -> String) -> Result<()> {
    let failures = results.iter().filter(|r| r.is_err()).count();
    if failures == 0 {
        return Ok(());
    }
    let unreachable = results
        .iter()
        .filter(|r| matches!(r, Err(CtlError::Unreachable(_))))
        .count();
    if unreachable == results.len() {
        return Err(CtlError::Unreachable(
            "no endpoint could be reached: check --endpoints and that the members are running"
                .to_string(),
        ));
    }
    Err(failed(failure(failures)))
}

/// `endpoint status [--cluster]`.
pub async fn status(ctx: Arc<Ctx>, cluster: bool) -> Result<()> {
    let targets = targets(&ctx, cluster).await?;
    let results = ask_all(&ctx, &targets, |ctx, endpoint| async move {
        status::fetch(&ctx.session, &[endpoint], Policy::Read)
            .await
            .map(|(_, status)| status)
    })
    .await;
    print_status(ctx.format, &targets, &results)?;
    verdict(&results, |n| {
        format!("{n} of {} endpoints did not answer", results.len())
    })
}

/// A row of `endpoint status`.
struct StatusRow<'a> {
    endpoint: String,
    id: Option<u64>,
    status: Option<&'a NodeStatus>,
    errors: Vec<String>,
}

impl StatusRow<'_> {
    fn json(&self) -> Value {
        let s = self.status;
        json!({
            "endpoint": self.endpoint,
            "id": self.id,
            "is_leader": s.map(|s| s.leader == s.id),
            "role": s.map(|s| s.role.as_str()),
            "term": s.map(|s| s.term),
            "leader": s.map(|s| s.leader),
            "commit_index": s.map(|s| s.commit_index),
            "applied_index": s.map(|s| s.applied_index),
            "last_index": s.map(|s| s.last_index),
            "snapshot_index": s.map(|s| s.snapshot_index),
            "keys": s.and_then(|s| s.keys),
            "state_digest": s.and_then(|s| s.state_digest.as_deref()),
            "errors": self.errors,
        })
    }

    fn cells(&self) -> Vec<String> {
        let field = |f: &dyn Fn(&NodeStatus) -> String| self.status.map_or(String::new(), f);
        vec![
            self.endpoint.clone(),
            self.id.map_or(String::new(), |id| id.to_string()),
            field(&|s| (s.leader == s.id).to_string()),
            field(&|s| s.role.clone()),
            field(&|s| s.term.to_string()),
            field(&|s| s.commit_index.to_string()),
            field(&|s| s.applied_index.to_string()),
            field(&|s| s.last_index.to_string()),
            field(&|s| s.snapshot_index.to_string()),
            field(&|s| s.keys.map_or(String::new(), |k| k.to_string())),
            field(&|s| s.state_digest.clone().unwrap_or_default()),
            self.errors.join("; "),
        ]
    }
}

const STATUS_HEADER: [&str; 12] = [
    "ENDPOINT",
    "ID",
    "IS LEADER",
    "ROLE",
    "TERM",
    "COMMIT",
    "APPLIED",
    "LAST INDEX",
    "SNAPSHOT INDEX",
    "KEYS",
    "STATE DIGEST",
    "ERRORS",
];

fn print_status(format: Format, targets: &[Target], results: &[Result<NodeStatus>]) -> Result<()> {
    let rows: Vec<StatusRow> = targets
        .iter()
        .zip(results)
        .map(|(target, result)| match result {
            Ok(s) => StatusRow {
                endpoint: target.name(),
                id: Some(s.id),
                status: Some(s),
                errors: s.problems(),
            },
            Err(e) => StatusRow {
                endpoint: target.name(),
                id: target.id,
                status: None,
                errors: vec![e.to_string()],
            },
        })
        .collect();
    match format {
        Format::Json => output::json(&Value::Array(rows.iter().map(StatusRow::json).collect())),
        Format::Simple | Format::Table => {
            let cells: Vec<Vec<String>> = rows.iter().map(StatusRow::cells).collect();
            print_rows(format, &STATUS_HEADER, &cells)
        }
    }
}

/// One health answer: how long it took, and the reason when unhealthy.
struct Health {
    took: Duration,
    unhealthy: Option<String>,
}

/// `endpoint health [--cluster]`.
pub async fn health(ctx: Arc<Ctx>, cluster: bool) -> Result<()> {
    let targets = targets(&ctx, cluster).await?;
    let results = ask_all(&ctx, &targets, |ctx, endpoint| async move {
        let started = Instant::now();
        let call = Call::read("/health", "the health check").with_policy(Policy::Once);
        let reply = ctx.session.send(&[endpoint], &call).await?;
        let unhealthy = (reply.status.as_u16() != 200)
            .then(|| format!("answered {}: {}", reply.status.as_u16(), reply.sentence()));
        Ok(Health {
            took: started.elapsed(),
            unhealthy,
        })
    })
    .await;
    // An endpoint that answered "unhealthy" is a failure of the command as well.
    let judged: Vec<Result<()>> = results
        .iter()
        .map(|r| match r {
            Ok(Health {
                unhealthy: Some(why),
                ..
            }) => Err(failed(why.clone())),
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        })
        .collect();
    print_health(ctx.format, &targets, &results)?;
    verdict(&judged, |n| {
        format!(
            "unhealthy cluster: {n} of {} endpoints are unhealthy",
            judged.len()
        )
    })
}

fn print_health(format: Format, targets: &[Target], results: &[Result<Health>]) -> Result<()> {
    let rows: Vec<(String, bool, Option<Duration>, Option<String>)> = targets
        .iter()
        .zip(results)
        .map(|(target, result)| match result {
            Ok(h) => (
                target.name(),
                h.unhealthy.is_none(),
                Some(h.took),
                h.unhealthy.clone(),
            ),
            Err(e) => (target.name(), false, None, Some(e.to_string())),
        })
        .collect();
    match format {
        Format::Json => {
            let rows: Vec<Value> = rows
                .iter()
                .map(|(endpoint, healthy, took, error)| {
                    json!({
                        "endpoint": endpoint,
                        "health": healthy,
                        "took": took.map(|t| format!("{t:?}")),
                        "error": error,
                    })
                })
                .collect();
            output::json(&Value::Array(rows))
        }
        Format::Simple => {
            for (endpoint, healthy, took, error) in &rows {
                let took = took.map(|t| format!("{t:?}")).unwrap_or_default();
                match (healthy, error) {
                    (true, _) => output::line(&format!("{endpoint} is healthy: took = {took}"))?,
                    (false, error) => output::line(&format!(
                        "{endpoint} is unhealthy: {}",
                        error.as_deref().unwrap_or("unknown")
                    ))?,
                }
            }
            Ok(())
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|(endpoint, healthy, took, error)| {
                    vec![
                        endpoint.clone(),
                        healthy.to_string(),
                        took.map(|t| format!("{t:?}")).unwrap_or_default(),
                        error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_rows(format, &["ENDPOINT", "HEALTH", "TOOK", "ERROR"], &cells)
        }
    }
}

/// A table (table) or one `, `-separated line per row (simple).
fn print_rows(format: Format, header: &[&str], cells: &[Vec<String>]) -> Result<()> {
    if format == Format::Table {
        return output::line(&output::table(header, cells));
    }
    for row in cells {
        output::line(&row.join(", "))?;
    }
    Ok(())
}
