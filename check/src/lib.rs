//! `check`: does a raftexample-compatible cluster behave like one linearizable register per
//! key? A workload of concurrent clients records every operation; a Wing-Gong/Lowe search
//! with memoisation (as in porcupine) decides whether the history is linearizable and, when it
//! is not, shrinks the failure to a small window of operations on one key.
//!
//! Used by `raftexample check ...` through [`run`], and by test harnesses through
//! [`run_workload`] and [`check_history`].
//!
//! # Outcomes (DESIGN.md section 2)
//! A 2xx write happened; a 503 (or a refused connection) is known NOT applied, and its value
//! must never be read; a 504, a timeout or a connection lost mid-request is indeterminate: the
//! write may take effect at any time after its invocation, or never. A GET that failed tells
//! nothing and is dropped.
//!
//! # Layout
//! - `args.rs`: [`CheckArgs`] (the flags) and [`parse_duration`].
//! - `workload.rs`: the clients ([`run_workload`]); `client.rs`: one HTTP request and the
//!   classification of its answer; `tls.rs`: the TLS config of `--cacert`, `--cert`,
//!   `--key` (for `https://` endpoints); `progress.rs`: live counters and the progress line.
//! - `history.rs`: [`History`], [`Operation`], [`Outcome`].
//! - `checker.rs`: splitting by key, checking in parallel, shrinking failures
//!   ([`check_history`]); `window.rs`: a time window of one key's history as search input,
//!   with the states it may start from; `search.rs`: the linearizability search for one
//!   register; `report.rs`: [`Report`] and its lines.
//! - `rng.rs`: a seeded generator, so a run's choices can be replayed.
//! - `brute_force_tests.rs`: the checker against exhaustive enumeration (tests only).
//!
//! # Invariants
//! - A reported violation is always proven: the window shown fails from every state its past
//!   could have left, so it is a witness on its own. "Unknown" is never turned into a
//!   verdict either way.
//! - Values are unique per run (`<run>-<client>-<n>`) and keys are fresh per run
//!   (`ck-<run>-<n>`), so every key starts absent.
//!
//! # Exit codes of [`run`]
//! 0: linearizable; 1: a violation was found; 2: cannot run (bad flags, unreachable cluster)
//! or the search ran out of budget ("unknown").

mod args;
mod checker;
mod client;
mod error;
mod history;
mod progress;
mod report;
mod rng;
mod search;
mod tls;
mod window;
mod workload;

#[cfg(test)]
mod brute_force_tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use args::{parse_duration, CheckArgs};
pub use checker::{check_history, check_history_with, CheckLimits};
pub use error::Error;
pub use history::{Counts, History, OpKind, Operation, Outcome};
pub use progress::{progress_line, Progress};
pub use report::{Report, Verdict, Violation};
pub use workload::{run_workload, run_workload_with_progress};

/// Worker threads of the runtime [`run`] builds (the clients mostly wait on the network).
const RUNTIME_THREADS: usize = 2;

/// Runs the workload and the checker: a progress line per second on stderr, violations in
/// detail on stderr, and one summary line on stdout.
///
/// Returns the process exit code: 0 linearizable, 1 violation, 2 cannot run or unknown.
/// Builds its own tokio runtime, so it MUST NOT be called from inside one (it answers 2 if
/// it is).
pub fn run(args: &CheckArgs) -> i32 {
    match run_workload_printing_progress(args) {
        Ok(history) => check_and_print(&history, args.check_timeout),
        Err(e) => cannot_run(&e),
    }
}

/// The workload on a runtime of its own, with the progress line once a second.
fn run_workload_printing_progress(args: &CheckArgs) -> Result<History, Error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::InsideRuntime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let progress = Arc::new(Progress::default());
    runtime.block_on(async {
        let printer = tokio::spawn(print_progress(progress.clone()));
        // The sender lives until the workload ends: `run` itself never stops early.
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let history = run_workload_with_progress(args, stop, progress).await;
        printer.abort();
        history
    })
}

/// Checks `history` within `timeout`, prints the details and the summary line, and returns
/// the exit code.
fn check_and_print(history: &History, timeout: Duration) -> i32 {
    let keys: HashSet<&str> = history.ops.iter().map(|op| op.key.as_str()).collect();
    eprintln!(
        "check: checking {} operations on {} keys",
        history.ops.len(),
        keys.len()
    );
    let started = Instant::now();
    let limits = CheckLimits {
        timeout,
        ..CheckLimits::default()
    };
    let report = check_history_with(history, &limits);
    eprintln!("check: search took {:.3}s", started.elapsed().as_secs_f64());
    eprint!("{}", report.details());
    println!("{}", report.summary_line());
    report.exit_code()
}

fn cannot_run(error: &Error) -> i32 {
    eprintln!("check: cannot run: {error}");
    println!("check: result=cannot-run ({error})");
    2
}

/// Prints the progress line once a second until aborted.
async fn print_progress(progress: Arc<Progress>) {
    let start = Instant::now();
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        ticks.tick().await;
        eprintln!("{}", progress_line(start.elapsed(), &progress.counts()));
    }
}
