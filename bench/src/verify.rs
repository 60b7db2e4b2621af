//! `--verify` (put mode): after the timed run, did the acknowledged writes really happen?
//!
//! A cluster that answers before commit (Go raftexample) can acknowledge writes it later
//! drops, and can still be committing its backlog when the clients stop. So:
//! 1. Drain: PUT a sentinel key (re-sent every [`SENTINEL_RESEND`], since such a cluster
//!    may drop it too) and wait until every endpoint with clients serves its value. It was
//!    proposed after every acknowledged write, so by then each endpoint applied (nearly)
//!    everything it ever will. The wait is reported; it is the backlog the ack rate hid.
//! 2. Check: GET every acknowledged key, spread over all clients and endpoints: a 200 is
//!    verified, a 404 is a lost write, anything else (or the check's deadline) is unverified.
//!
//! Both steps are bounded: [`DRAIN_TIMEOUT`] and [`CHECK_TIMEOUT`], each plus one request
//! timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Client, Outcome};
use crate::run::{spawn_all, Plan, RunError};

/// Longest wait for the sentinel to show on every endpoint.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the sentinel PUT is sent again while it is not visible everywhere.
const SENTINEL_RESEND: Duration = Duration::from_secs(1);

/// Pause between sentinel polls.
const POLL_PAUSE: Duration = Duration::from_millis(20);

/// Longest time spent reading back acknowledged keys.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// From the end of the timed run until every endpoint served the sentinel; `None` when
    /// that did not happen within [`DRAIN_TIMEOUT`].
    pub drained_after: Option<Duration>,
    /// Acknowledged keys read back (200).
    pub verified: u64,
    /// Acknowledged keys that are absent (404): writes the cluster acknowledged and lost.
    pub lost: u64,
    /// Acknowledged keys not checked or with another answer (error, timeout, deadline).
    pub unverified: u64,
}

/// Drains, then reads back every ticket in `acked` (the put mode's key numbers).
///
/// # Errors
/// [`RunError::Task`] when a client task fails.
pub async fn verify(
    plan: &Arc<Plan>,
    mut clients: Vec<(usize, Client)>,
    acked: Vec<u64>,
    run_ended: Instant,
) -> Result<Verification, RunError> {
    let drained_after = drain(plan, &mut clients, run_ended).await;
    let (verified, lost, unverified) = check(plan, clients, Arc::new(acked)).await?;
    Ok(Verification {
        drained_after,
        verified,
        lost,
        unverified,
    })
}

/// Step 1: waits until every endpoint serves the sentinel value.
async fn drain(
    plan: &Plan,
    clients: &mut [(usize, Client)],
    run_ended: Instant,
) -> Option<Duration> {
    let value = format!("drained-{}", run_ended.elapsed().as_nanos());
    let put = plan.workload.sentinel_put(&value);
    let get = plan.workload.sentinel_get();
    let mut last_put: Option<Instant> = None;
    // Clients 0..endpoints.len() cover every endpoint that has clients (round-robin).
    let probes = plan.endpoints.len().min(clients.len());
    while run_ended.elapsed() < DRAIN_TIMEOUT {
        if last_put.is_none_or(|at| at.elapsed() >= SENTINEL_RESEND) {
            clients[0].1.send(&put).await;
            last_put = Some(Instant::now());
        }
        let mut everywhere = true;
        for (_, client) in clients.iter_mut().take(probes) {
            let (outcome, body) = client.fetch(&get).await;
            everywhere &= outcome == Outcome::Status(200) && body == value.as_bytes();
        }
        if everywhere {
            return Some(run_ended.elapsed());
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
    None
}

/// Step 2: reads back every acknowledged key; returns (verified, lost, unverified).
async fn check(
    plan: &Arc<Plan>,
    clients: Vec<(usize, Client)>,
    acked: Arc<Vec<u64>>,
) -> Result<(u64, u64, u64), RunError> {
    let cursor = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let results = spawn_all(clients, |_, mut client| {
        let plan = plan.clone();
        let acked = acked.clone();
        let cursor = cursor.clone();
        async move {
            let mut counts = (0u64, 0u64, 0u64);
            while let Some(&ticket) = acked.get(cursor.fetch_add(1, Ordering::Relaxed)) {
                if Instant::now() >= deadline {
                    counts.2 += 1;
                    continue;
                }
                match client.send(&plan.workload.get(ticket, "")).await {
                    Outcome::Status(200) => counts.0 += 1,
                    Outcome::Status(404) => counts.1 += 1,
                    _ => counts.2 += 1,
                }
            }
            (client, counts)
        }
    })
    .await?;
    Ok(results.iter().fold((0, 0, 0), |acc, (_, _, c)| {
        (acc.0 + c.0, acc.1 + c.1, acc.2 + c.2)
    }))
}
