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
//! - `https://` endpoints need `--cacert`; the TLS flags are checked and their files read
//!   before the first operation, so a bad file is a "cannot run", not a run of failures.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Method;
use rustls::ClientConfig;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::args::CheckArgs;
use crate::client::{classify, normalize_endpoint, HttpClient, Reply};
use crate::error::Error;
use crate::history::{History, OpKind, Operation};
use crate::progress::Progress;
use crate::rng::SplitMix64;
use crate::tls;

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
/// Bad arguments ([`Error::NoEndpoints`], [`Error::BadEndpoint`], [`Error::BadArgument`],
/// [`Error::Tls`]);
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
    for id in 0..args.clients {
        let client = Client::new(id, plan.clone());
        tasks.spawn(client.run(progress.clone(), stop.clone()));
    }
    let (mut ops, mut answered) = (Vec::new(), 0);
    while let Some(joined) = tasks.join_next().await {
        let (client_ops, client_answered) = joined.map_err(|e| Error::ClientTask(e.to_string()))?;
        ops.extend(client_ops);
        answered += client_answered;
    }
    if !ops.is_empty() && answered == 0 {
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
    /// Every client's TLS config (trusting nothing without `--cacert`).
    tls: ClientConfig,
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
        let (tls, verifies_servers) = tls::client_config(args)?;
        if !verifies_servers && endpoints.iter().any(|e| e.starts_with("https://")) {
            return Err(Error::BadArgument(
                "https endpoint needs --cacert FILE (the CA of the servers' certificates)",
            ));
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
            tls,
            seed: args.seed.unwrap_or(fresh),
            start,
            end: start + args.duration,
        })
    }
}

/// One client: its own connection pool, random choices and current endpoint.
struct Client {
    id: usize,
    plan: Arc<Plan>,
    http: HttpClient,
    rng: SplitMix64,
    endpoint: usize,
    /// Writes issued so far (the last part of this client's values).
    writes: u64,
    /// Requests that got an HTTP answer.
    answered: usize,
}

impl Client {
    fn new(id: usize, plan: Arc<Plan>) -> Client {
        Client {
            id,
            http: HttpClient::new(plan.timeout, plan.tls.clone()),
            rng: SplitMix64::new(plan.seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            endpoint: id % plan.endpoints.len(),
            writes: 0,
            answered: 0,
            plan,
        }
    }

    /// Operations back to back until the end of the run; returns them and how many got an
    /// HTTP answer.
    async fn run(
        mut self,
        progress: Arc<Progress>,
        stop: watch::Receiver<bool>,
    ) -> (Vec<Operation>, usize) {
        let mut ops = Vec::new();
        while Instant::now() < self.plan.end && !*stop.borrow() {
            let (op, reply) = self.next_operation().await;
            progress.record(&op.outcome, matches!(reply, Reply::Status { .. }));
            ops.push(op);
            let refused = matches!(reply, Reply::ConnectFailed(_));
            if refused {
                self.endpoint = (self.endpoint + 1) % self.plan.endpoints.len();
            }
            if refused || matches!(reply, Reply::Status { code: 503, .. }) {
                tokio::time::sleep(BACKOFF).await;
            }
        }
        (ops, self.answered)
    }

    /// Chooses, sends and records one operation.
    async fn next_operation(&mut self) -> (Operation, Reply) {
        let key = format!("ck-{}-{}", self.plan.run, self.rng.below(self.plan.keys));
        let kind = self.choose_kind();
        let base = &self.plan.endpoints[self.endpoint];
        let (method, url, body) = match &kind {
            OpKind::Put { value } => (Method::PUT, format!("{base}/{key}"), value.clone()),
            OpKind::Get => (Method::GET, format!("{base}/{key}"), String::new()),
            OpKind::Delete => (Method::DELETE, format!("{base}/kv/{key}"), String::new()),
        };
        let invoked = self.plan.start.elapsed();
        let reply = self.http.send(method, &url, Bytes::from(body)).await;
        let completed = self.plan.start.elapsed();
        self.answered += usize::from(matches!(reply, Reply::Status { .. }));
        let (outcome, note) = classify(&kind, &reply);
        let op = Operation {
            client: self.id,
            key,
            kind,
            invoked,
            completed,
            outcome,
            note,
        };
        (op, reply)
    }

    fn choose_kind(&mut self) -> OpKind {
        if self.plan.deletes && self.rng.below(100) < DELETE_PERCENT {
            OpKind::Delete
        } else if self.rng.below(100) < PUT_PERCENT {
            self.writes += 1;
            OpKind::Put {
                value: format!("{}-{}-{}", self.plan.run, self.id, self.writes),
            }
        } else {
            OpKind::Get
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_endpoints_need_cacert_and_tls_flags_are_checked_up_front() {
        // Intent: an https:// endpoint without --cacert, or --cert without --key, is refused
        // with one sentence before any connection; plain http needs no TLS flag.
        assert!(Plan::new(&CheckArgs::new(vec!["http://127.0.0.1:1".into()])).is_ok());
        let https = CheckArgs::new(vec!["http://127.0.0.1:1".into(), "https://a:1".into()]);
        let err = Plan::new(&https).err().expect("refused").to_string();
        assert!(err.contains("https endpoint needs --cacert"), "{err}");
        let cert_only = CheckArgs {
            cert: Some("client.pem".into()),
            ..CheckArgs::new(vec!["http://127.0.0.1:1".into()])
        };
        let err = Plan::new(&cert_only).err().expect("refused").to_string();
        assert!(err.contains("--cert and --key go together"), "{err}");
    }
}
