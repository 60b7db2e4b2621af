//! One benchmark run: preload (get modes), settle, then the timed closed loop.
//!
//! # Phases
//! 1. Preload (get modes only): PUT keys `0..keys` through all clients, each PUT retried
//!    up to [`PRELOAD_ATTEMPTS`] times; the first key that never answers 2xx stops the
//!    preload and fails the run.
//! 2. Settle (get modes only): every endpoint that has clients must serve a 200 for every
//!    preloaded key within [`SETTLE_TIMEOUT`]. Go raftexample acknowledges a PUT before it
//!    commits, so its followers may lag; reading before they catch up would measure 404s.
//! 3. Timed run: every client loops "take a ticket, send, record" until the duration has
//!    passed or `--requests` tickets were taken, whichever comes first.
//! 4. Verify (put mode with `--verify`): see `verify.rs`.
//!
//! # Bounds
//! Nothing waits without a limit: every request is bounded by the request timeout, the
//! settle phase by [`SETTLE_TIMEOUT`], and no request starts after the duration ended. So a
//! run ends within preload + settle + duration + one request timeout, and a preload that
//! fails costs at most [`PRELOAD_ATTEMPTS`] request timeouts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client::{Client, Outcome};
use crate::endpoint::Endpoint;
use crate::report::{Report, Stats, StoppedBy};
use crate::verify;
use crate::workload::{Mode, Rng, Workload};

/// Tries per preload PUT before the run gives up.
const PRELOAD_ATTEMPTS: u32 = 3;

/// Longest wait for every endpoint to serve every preloaded key.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between reads of a key that is not visible yet, and after a refused connection (a
/// closed loop against a dead port would otherwise spin).
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A validated description of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Client `i` connects to `endpoints[i % len]`. Never empty.
    pub endpoints: Vec<Endpoint>,
    /// What the timed run sends.
    pub mode: Mode,
    /// Builds requests for `mode`.
    pub workload: Workload,
    /// Concurrent closed-loop clients, one connection each. At least 1.
    pub connections: usize,
    /// The timed run stops starting requests after this long.
    pub duration: Duration,
    /// The timed run stops after this many requests were started.
    pub max_requests: Option<u64>,
    /// Bound on each request, connect and answer included.
    pub request_timeout: Duration,
    /// Put mode: after the run, wait for the cluster to drain and read back every
    /// acknowledged key.
    pub verify: bool,
    /// TLS config of `https://` endpoints (`--cacert`); `None` when only http is spoken.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `--latency-log`: where the successful requests' starts and latencies go.
    pub latency_log: Option<std::path::PathBuf>,
}

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Some preload PUTs never succeeded: the cluster is down or refusing writes.
    #[error(
        "preloading failed: {failed} of {keys} keys could not be written (last answer: {last}); \
         check that the cluster is up and has a leader"
    )]
    Preload {
        /// Keys that could not be written before the preload stopped.
        failed: u64,
        /// Keys to preload.
        keys: u64,
        /// The last failing outcome, for the operator.
        last: String,
    },
    /// Preloaded keys did not become readable on an endpoint in time.
    #[error(
        "{missing} preloaded keys were still not readable on {endpoint} after {waited_s} s; \
         the node may be partitioned or lagging (PUTs acknowledged before commit can be lost)"
    )]
    Settle {
        /// Keys not readable.
        missing: u64,
        /// The endpoint that lacks them.
        endpoint: Endpoint,
        /// How long we waited.
        waited_s: u64,
    },
    /// A client task panicked: a bug in raftbench.
    #[error("a client task failed: {0}")]
    Task(String),
}

/// Runs `plan` and reports the timed run.
///
/// # Errors
/// [`RunError`] when the get modes' keys cannot be preloaded or never become readable.
pub async fn run(plan: Plan) -> Result<Report, RunError> {
    let plan = Arc::new(plan);
    let mut clients: Vec<(usize, Client)> = (0..plan.connections)
        .map(|i| {
            let endpoint = plan.endpoints[i % plan.endpoints.len()].clone();
            (
                i,
                Client::new(endpoint, plan.request_timeout, plan.tls.as_ref()),
            )
        })
        .collect();
    if plan.mode.needs_preload() {
        clients = preload(&plan, clients).await?;
        clients = settle(&plan, clients).await?;
    }
    let (mut report, clients, acked) = timed(&plan, clients).await?;
    if plan.verify && plan.mode == Mode::Put {
        let run_ended = Instant::now();
        report.verification = Some(verify::verify(&plan, clients, acked, run_ended).await?);
    }
    Ok(report)
}

/// Phase 1: writes keys `0..keys`.
async fn preload(
    plan: &Arc<Plan>,
    clients: Vec<(usize, Client)>,
) -> Result<Vec<(usize, Client)>, RunError> {
    let next = Arc::new(AtomicU64::new(0));
    let give_up = Arc::new(AtomicBool::new(false));
    let results = spawn_all(clients, |_, mut client| {
        let plan = plan.clone();
        let next = next.clone();
        let give_up = give_up.clone();
        async move {
            let mut failed = 0u64;
            let mut last = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= plan.workload.keys() || give_up.load(Ordering::Relaxed) {
                    break;
                }
                let call = plan.workload.put(n);
                let mut written = false;
                for _ in 0..PRELOAD_ATTEMPTS {
                    match client.send(&call).await {
                        Outcome::Status(code) if (200..300).contains(&code) => {
                            written = true;
                            break;
                        }
                        outcome => last = Some(outcome),
                    }
                }
                if !written {
                    // One lost key fails the run: stop everyone rather than time out on
                    // every remaining key.
                    failed += 1;
                    give_up.store(true, Ordering::Relaxed);
                }
            }
            (client, (failed, last))
        }
    })
    .await?;
    let failed: u64 = results.iter().map(|(_, _, (f, _))| f).sum();
    let last = results.iter().find_map(|(_, _, (_, l))| *l);
    if failed > 0 {
        return Err(RunError::Preload {
            failed,
            keys: plan.workload.keys(),
            last: format!("{last:?}"),
        });
    }
    Ok(results.into_iter().map(|(i, c, _)| (i, c)).collect())
}

/// Phase 2: waits until each endpoint serves every preloaded key.
async fn settle(
    plan: &Arc<Plan>,
    clients: Vec<(usize, Client)>,
) -> Result<Vec<(usize, Client)>, RunError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    // One key cursor per endpoint, shared by the clients connected to it.
    let cursors: Arc<Vec<AtomicU64>> =
        Arc::new(plan.endpoints.iter().map(|_| AtomicU64::new(0)).collect());
    let results = spawn_all(clients, |i, mut client| {
        let plan = plan.clone();
        let cursors = cursors.clone();
        async move {
            let cursor = &cursors[i % plan.endpoints.len()];
            let mut missing = 0u64;
            loop {
                let n = cursor.fetch_add(1, Ordering::Relaxed);
                if n >= plan.workload.keys() {
                    break;
                }
                let call = plan.workload.get(n, "");
                loop {
                    if Instant::now() >= deadline {
                        missing += 1;
                        break;
                    }
                    if client.send(&call).await == Outcome::Status(200) {
                        break;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            (client, missing)
        }
    })
    .await?;
    let mut missing_per_endpoint = vec![0u64; plan.endpoints.len()];
    for (i, _, missing) in &results {
        missing_per_endpoint[i % plan.endpoints.len()] += missing;
    }
    if let Some((e, &missing)) = missing_per_endpoint
        .iter()
        .enumerate()
        .find(|(_, &m)| m > 0)
    {
        return Err(RunError::Settle {
            missing,
            endpoint: plan.endpoints[e].clone(),
            waited_s: SETTLE_TIMEOUT.as_secs(),
        });
    }
    Ok(results.into_iter().map(|(i, c, _)| (i, c)).collect())
}

/// The clients handed back after the timed run, and (put mode with verify) the tickets of
/// acknowledged writes.
type Timed = (Report, Vec<(usize, Client)>, Vec<u64>);

/// Phase 3: the closed loop, bounded by time and by request count.
async fn timed(plan: &Arc<Plan>, clients: Vec<(usize, Client)>) -> Result<Timed, RunError> {
    let max_requests = plan.max_requests.unwrap_or(u64::MAX);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let started_unix_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let deadline = started + plan.duration;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let results = spawn_all(clients, |i, mut client| {
        let plan = plan.clone();
        let issued = issued.clone();
        async move {
            let mut rng = Rng::new(seed ^ i as u64);
            let mut stats = Stats::default();
            let mut acked = Vec::new();
            let mut latencies: Vec<(u64, u64)> = Vec::new();
            let keep_acked = plan.verify && plan.mode == Mode::Put;
            while Instant::now() < deadline {
                let ticket = issued.fetch_add(1, Ordering::Relaxed);
                if ticket >= max_requests {
                    break;
                }
                let call = plan.workload.call(ticket, &mut rng);
                let sent = Instant::now();
                let outcome = client.send(&call).await;
                let took = sent.elapsed();
                stats.record(outcome, took);
                if keep_acked && matches!(outcome, Outcome::Status(200..=299)) {
                    acked.push(ticket);
                }
                if plan.latency_log.is_some() && matches!(outcome, Outcome::Status(200..=299)) {
                    let start = (sent - started).as_micros() as u64;
                    latencies.push((start, took.as_micros() as u64));
                }
                if outcome == Outcome::Connect {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            (client, (stats, acked, latencies))
        }
    })
    .await?;
    let elapsed = started.elapsed();
    let mut stats = Stats::default();
    let mut acked = Vec::new();
    let mut latencies = Vec::new();
    let mut clients = Vec::with_capacity(results.len());
    for (i, client, (s, a, l)) in results {
        stats.merge(&s);
        acked.extend(a);
        latencies.extend(l);
        clients.push((i, client));
    }
    if let Some(path) = &plan.latency_log {
        write_latency_log(path, started_unix_micros, latencies);
    }
    let stopped_by = if issued.load(Ordering::Relaxed) >= max_requests {
        StoppedBy::Requests
    } else {
        StoppedBy::Duration
    };
    let report = Report {
        mode: plan.mode.name(),
        connections: plan.connections,
        endpoints: plan.endpoints.iter().map(ToString::to_string).collect(),
        elapsed,
        stopped_by,
        stats,
        verification: None,
    };
    Ok((report, clients, acked))
}

/// Runs `work(index, client)` for every client on its own task and collects the results in
/// client order, handing each client back.
pub(crate) async fn spawn_all<F, Fut, T>(
    clients: Vec<(usize, Client)>,
    work: F,
) -> Result<Vec<(usize, Client, T)>, RunError>
where
    F: Fn(usize, Client) -> Fut,
    Fut: std::future::Future<Output = (Client, T)> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = clients
        .into_iter()
        .map(|(i, client)| (i, tokio::spawn(work(i, client))))
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for (i, handle) in handles {
        let (client, value) = handle.await.map_err(|e| RunError::Task(e.to_string()))?;
        results.push((i, client, value));
    }
    Ok(results)
}

/// Writes `start_unix_us latency_us` per request, in start order; a failure is reported on
/// stderr (the run's figures stand without it).
fn write_latency_log(path: &std::path::Path, base: u64, mut latencies: Vec<(u64, u64)>) {
    use std::io::Write as _;
    latencies.sort_unstable();
    let written = std::fs::File::create(path).and_then(|file| {
        let mut out = std::io::BufWriter::new(file);
        for (start, took) in latencies {
            writeln!(out, "{} {took}", base + start)?;
        }
        out.flush()
    });
    if let Err(e) = written {
        eprintln!(
            "raftbench: cannot write the latency log {}: {e}",
            path.display()
        );
    }
}
