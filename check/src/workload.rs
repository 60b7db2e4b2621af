//! The workload: concurrent clients doing PUT, GET (and with `--deletes`, DELETE) over a small
//! key space, recording every operation.
//!
//! - Client `c` starts on endpoint `c % endpoints`; when a connection cannot be made it moves
//!   to the next endpoint. Each client runs one operation at a time with its own connection
//!   pool, so its operations never overlap each other.
//! - Keys are `ck-<run>-<n>` and values `<run>-<client>-<seq>`, where `<run>` is fresh for
//!   every run: values are unique, and a key starts absent even on a cluster that served
//!   earlier runs.
//! - Routes are raftexample's `PUT /{key}` and `GET /{key}`, so the workload also runs against
//!   etcd's Go raftexample; deletes use `DELETE /kv/{key}` (on raftexample `DELETE /{id}`
//!   removes a node), which assumes `/{key}` and `/kv/{key}` name the same key.
//! - After an operation known not applied (503, refused) the client backs off briefly, so an
//!   unavailable cluster is not hammered in a tight loop.
//! - The workload ends at `--duration` or when `stop` turns true; operations in flight finish
//!   (each within `--timeout`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Method;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::args::CheckArgs;
use crate::client::{classify, normalize_endpoint, HttpClient, Reply};
use crate::error::Error;
use crate::history::{History, OpKind, Operation};
use crate::progress::Progress;
use crate::rng::SplitMix64;

/// Pause after an operation known not applied.
const BACKOFF: Duration = Duration::from_millis(20);
/// Share of operations that are deletes with `--deletes`, in percent.
const DELETE_PERCENT: u64 = 10;
/// Share of the remaining operations that are writes, in percent.
const PUT_PERCENT: u64 = 50;

/// Runs the workload of `args` until `--duration` passes or `stop` turns true, and returns
/// every operation. Prints nothing.
///
/// A `stop` whose sender is dropped never stops the run early.
///
/// # Errors
/// Bad arguments ([`Error::NoEndpoints`], [`Error::BadEndpoint`], [`Error::BadArgument`]);
/// [`Error::Unreachable`] when not one request got an HTTP answer; [`Error::ClientTask`] if a
/// client task died.
pub async fn run_workload(args: &CheckArgs, stop: watch::Receiver<bool>) -> Result<History, Error> {
    run_workload_with_progress(args, stop, Arc::new(Progress::default())).await
}

/// [`run_workload`], counting every finished operation in `progress` as it goes.
///
/// # Errors
/// As [`run_workload`].
pub async fn run_workload_with_progress(
    args: &CheckArgs,
    stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> Result<History, Error> {
    let plan = Arc::new(Plan::new(args)?);
    let mut tasks = JoinSet::new();
    for client in 0..args.clients {
        let (plan, progress, stop) = (plan.clone(), progress.clone(), stop.clone());
        tasks.spawn(run_client(client, plan, progress, stop));
    }
    let mut ops = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        ops.extend(joined.map_err(|e| Error::ClientTask(e.to_string()))?);
    }
    if !ops.is_empty() && progress.answered() == 0 {
        return Err(Error::Unreachable {
            endpoints: plan.endpoints.join(","),
        });
    }
    ops.sort_by_key(|op: &Operation| (op.invoked, op.client));
    Ok(History { ops })
}

/// What every client needs to know, fixed before the first operation.
struct Plan {
    endpoints: Vec<String>,
    run: String,
    keys: u64,
    deletes: bool,
    timeout: Duration,
    seed: u64,
    start: Instant,
    end: Instant,
}

impl Plan {
    fn new(args: &CheckArgs) -> Result<Plan, Error> {
        if args.endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let endpoints = args
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if args.clients == 0 {
            return Err(Error::BadArgument("--clients must be at least 1"));
        }
        if args.keys == 0 {
            return Err(Error::BadArgument("--keys must be at least 1"));
        }
        if args.timeout.is_zero() {
            return Err(Error::BadArgument("--timeout must be more than 0"));
        }
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let fresh =
            SplitMix64::new(clock ^ u64::from(std::process::id()).rotate_left(32)).next_u64();
        let start = Instant::now();
        Ok(Plan {
            endpoints,
            run: format!("{:08x}", fresh as u32),
            keys: args.keys as u64,
            deletes: args.deletes,
            timeout: args.timeout,
            seed: args.seed.unwrap_or(fresh),
            start,
            end: start + args.duration,
        })
    }
}

/// One client: operations back to back until the end of the run.
async fn run_client(
    client: usize,
    plan: Arc<Plan>,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
) -> Vec<Operation> {
    let http = HttpClient::new(plan.timeout);
    let mut rng = SplitMix64::new(plan.seed ^ (client as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut endpoint = client % plan.endpoints.len();
    let mut ops = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < plan.end && !*stop.borrow() {
        let key = format!("ck-{}-{}", plan.run, rng.below(plan.keys));
        let kind = choose_kind(&mut rng, plan.deletes, || {
            seq += 1;
            format!("{}-{client}-{seq}", plan.run)
        });
        let base = &plan.endpoints[endpoint];
        let (method, url, body) = match &kind {
            OpKind::Put { value } => (Method::PUT, format!("{base}/{key}"), value.clone()),
            OpKind::Get => (Method::GET, format!("{base}/{key}"), String::new()),
            OpKind::Delete => (Method::DELETE, format!("{base}/kv/{key}"), String::new()),
        };
        let invoked = plan.start.elapsed();
        let reply = http.send(method, &url, Bytes::from(body)).await;
        let completed = plan.start.elapsed();
        let (outcome, note) = classify(&kind, &reply);
        progress.record(&outcome, matches!(reply, Reply::Status { .. }));
        let refused = matches!(reply, Reply::ConnectFailed(_));
        if refused {
            endpoint = (endpoint + 1) % plan.endpoints.len();
        }
        let back_off = refused || matches!(reply, Reply::Status { code: 503, .. });
        ops.push(Operation {
            client,
            key,
            kind,
            invoked,
            completed,
            outcome,
            note,
        });
        if back_off {
            tokio::time::sleep(BACKOFF).await;
        }
    }
    ops
}

fn choose_kind(rng: &mut SplitMix64, deletes: bool, next_value: impl FnOnce() -> String) -> OpKind {
    if deletes && rng.below(100) < DELETE_PERCENT {
        OpKind::Delete
    } else if rng.below(100) < PUT_PERCENT {
        OpKind::Put {
            value: next_value(),
        }
    } else {
        OpKind::Get
    }
}
