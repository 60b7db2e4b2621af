//! The linearizability checker: splits a [`History`] by key, checks each key's register
//! history with the search of [`crate::search`], and shrinks every failure to a small window.
//!
//! # Per key
//! Linearizability is compositional (Herlihy and Wing), so each key is checked alone.
//! A GET that failed carries no information: dropped. A write known NOT applied (503,
//! rejected, no connection) is dropped too, so a read of its value has no write to explain
//! it and fails the check: a 503'd write must never become visible. A done write spans
//! [invoked, completed]; an indeterminate write may take effect at any time after its
//! invocation, or never. The search runs on the whole history as a [`crate::window`] from 0
//! to the end, which also prunes and clamps indeterminate writes.
//!
//! A violation late in a long history takes an exhaustive search to prove, so the first
//! search is short (64 steps per operation). If it runs out, a small window around where it
//! got stuck is tried (up to about 2048 operations, step 1 below): if one fails, that is the
//! proof. Otherwise the full search runs with the whole budget.
//!
//! # Shrinking a failure
//! A window that fails from every state its past may have left is a witness on its own
//! (see [`crate::window`]). Starting from where the failed search got stuck (its frontier):
//! 1. grow a window ending at the frontier backwards (8, 32, 128, ... operations) until it
//!    fails; if none does, fall back to the whole history;
//! 2. move its end back to the earliest completion time at which it still fails (binary
//!    search: failing is monotone in the end, since linearizability is prefix-closed);
//! 3. move its start forward to the latest invocation time at which it still fails (the
//!    last 64 candidates one by one, then binary search; every window reported was itself
//!    proven to fail).
//!
//! A search that runs out of budget answers "unknown"; while shrinking, an unknown probe counts
//! as "does not fail", which only makes the reported window larger, never wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::history::{History, OpKind, Operation, Outcome};
use crate::report::{Report, Violation};
use crate::search::{Answer, Limits, State, ABSENT, NEVER};
use crate::window::{window, KeyKind, KeyOp, Window};

/// Budget of a whole check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckLimits {
    /// Wall-clock budget for all keys together, shrinking included.
    pub timeout: Duration,
    /// Most steps of one search (one key, or one shrinking probe).
    pub max_steps: u64,
    /// Most bytes one search may spend on its memo cache.
    pub max_cache_bytes: usize,
}

impl Default for CheckLimits {
    /// 60 s, 50 million steps and 256 MiB per search.
    fn default() -> CheckLimits {
        CheckLimits {
            timeout: Duration::from_secs(60),
            max_steps: 50_000_000,
            max_cache_bytes: 256 << 20,
        }
    }
}

/// Checks every key of `history` with the default [`CheckLimits`].
pub fn check_history(history: &History) -> Report {
    check_history_with(history, &CheckLimits::default())
}

/// Checks every key of `history`; keys are checked in parallel on the available cores.
pub fn check_history_with(history: &History, limits: &CheckLimits) -> Report {
    let limits = Limits {
        max_steps: limits.max_steps,
        max_cache_bytes: limits.max_cache_bytes,
        deadline: Instant::now() + limits.timeout,
    };
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(index);
    }
    let keys: Vec<(&str, Vec<usize>)> = by_key.into_iter().collect();
    let verdicts = check_keys_in_parallel(history, &keys, &limits);

    let mut report = Report {
        counts: history.counts(),
        keys: keys.len(),
        violations: Vec::new(),
        unknown_keys: Vec::new(),
    };
    for ((key, indices), verdict) in keys.iter().zip(verdicts) {
        match verdict {
            KeyVerdict::Linearizable => {}
            KeyVerdict::Unknown => report.unknown_keys.push(key.to_string()),
            KeyVerdict::Violation {
                mut window,
                start,
                earlier_ops,
            } => {
                window.sort_by_key(|&i| (history.ops[i].invoked, i));
                let start = Duration::from_nanos(start);
                report.violations.push(Violation {
                    key: key.to_string(),
                    context: context(history, indices, &window, start),
                    window: window.iter().map(|&i| history.ops[i].clone()).collect(),
                    start,
                    earlier_ops,
                });
            }
        }
    }
    report
}

/// What a person needs to read a window, among `indices` but outside `window`: the writes
/// (whatever their outcome) of values that reads in the window returned, then the last write
/// done before the window began.
fn context(
    history: &History,
    indices: &[usize],
    window: &[usize],
    start: Duration,
) -> Vec<Operation> {
    let read: HashSet<&str> = window
        .iter()
        .filter_map(|&i| match &history.ops[i].outcome {
            Outcome::Read(Some(value)) => Some(value.as_str()),
            _ => None,
        })
        .collect();
    let outside = || {
        indices
            .iter()
            .filter(|i| !window.contains(i))
            .map(|&i| &history.ops[i])
    };
    let mut context: Vec<Operation> = outside()
        .filter(|op| matches!(&op.kind, OpKind::Put { value } if read.contains(value.as_str())))
        .cloned()
        .collect();
    let last_done = outside()
        .filter(|op| op.outcome == Outcome::Done && op.completed < start)
        .max_by_key(|op| op.completed);
    if let Some(op) = last_done {
        if !context.contains(op) {
            context.push(op.clone());
        }
    }
    context
}

fn check_keys_in_parallel(
    history: &History,
    keys: &[(&str, Vec<usize>)],
    limits: &Limits,
) -> Vec<KeyVerdict> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(keys.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let mut verdicts: Vec<KeyVerdict> = keys.iter().map(|_| KeyVerdict::Unknown).collect();
    let done: Vec<Vec<(usize, KeyVerdict)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some((_, indices)) = keys.get(k) else {
                            return out;
                        };
                        out.push((k, check_key(&key_ops(history, indices), limits)));
                    }
                })
            })
            .collect();
        // A worker that panicked leaves its keys Unknown.
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (k, verdict) in done.into_iter().flatten() {
        verdicts[k] = verdict;
    }
    verdicts
}

/// The checker's answer for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyVerdict {
    Linearizable,
    /// `window` holds history indices; it begins at `start` (ns); `earlier_ops`
    /// operations completed before it.
    Violation {
        window: Vec<usize>,
        start: u64,
        earlier_ops: usize,
    },
    Unknown,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(NEVER - 1)
        .min(NEVER - 1)
}

/// Step 1 of the module doc for the operations at `indices`, interning values to ids
/// (`ABSENT` is 0; a value read but never written gets an id no write has).
pub(crate) fn key_ops(history: &History, indices: &[usize]) -> Vec<KeyOp> {
    let mut ids: HashMap<&str, State> = HashMap::new();
    for &i in indices {
        let op = &history.ops[i];
        if let (OpKind::Put { value }, Outcome::Done | Outcome::Indeterminate) =
            (&op.kind, &op.outcome)
        {
            let next = ids.len() as State + 1;
            ids.entry(value.as_str()).or_insert(next);
        }
    }
    let mut out = Vec::with_capacity(indices.len());
    for &i in indices {
        let op = &history.ops[i];
        let sure = match op.outcome {
            Outcome::Done => true,
            Outcome::Indeterminate => false,
            Outcome::Read(_) | Outcome::NotApplied | Outcome::Failed => false,
        };
        let kind = match (&op.kind, &op.outcome) {
            (OpKind::Get, Outcome::Read(None)) => KeyKind::Read(ABSENT),
            (OpKind::Get, Outcome::Read(Some(value))) => {
                let next = ids.len() as State + 1;
                KeyKind::Read(*ids.entry(value.as_str()).or_insert(next))
            }
            (OpKind::Put { value }, Outcome::Done | Outcome::Indeterminate) => KeyKind::Write {
                value: ids[value.as_str()],
                sure,
            },
            (OpKind::Delete, Outcome::Done | Outcome::Indeterminate) => KeyKind::Write {
                value: ABSENT,
                sure,
            },
            // Failed reads, writes known not applied, and mismatched kind/outcome pairs.
            _ => continue,
        };
        let call = nanos(op.invoked);
        out.push(KeyOp {
            index: i,
            call,
            ret: nanos(op.completed).max(call),
            kind,
        });
    }
    out
}

/// Checks one key's operations and shrinks a failure to a window.
pub(crate) fn check_key(ops: &[KeyOp], limits: &Limits) -> KeyVerdict {
    let placeholder = ops
        .iter()
        .map(|op| match op.kind {
            KeyKind::Write { value, .. } | KeyKind::Read(value) => value,
        })
        .max()
        .unwrap_or(ABSENT)
        + 1;
    let whole = window(ops, 0, NEVER, placeholder);
    // A violation in a long history costs an exhaustive search to prove; a small window
    // around where a short search got stuck usually proves it for much less.
    let quick = Limits {
        max_steps: limits
            .max_steps
            .min(QUICK_STEPS_PER_OP.saturating_mul(ops.len() as u64 + 1)),
        ..*limits
    };
    let mut searched = whole.search(&quick);
    if searched.answer == Answer::Unknown && quick.max_steps < limits.max_steps {
        let fails = |start: u64, end: u64| window(ops, start, end, placeholder).fails(limits);
        if let Some(found) = failing_window_before(ops, searched.frontier, QUICK_WINDOW_OPS, &fails)
        {
            return violation(shrink(ops, found, placeholder, limits));
        }
        searched = whole.search(limits);
    }
    match searched.answer {
        Answer::Linearizable => KeyVerdict::Linearizable,
        Answer::Unknown => KeyVerdict::Unknown,
        Answer::NotLinearizable => {
            let fails = |start: u64, end: u64| window(ops, start, end, placeholder).fails(limits);
            let found = failing_window_before(ops, searched.frontier, usize::MAX, &fails)
                .unwrap_or((0, NEVER));
            violation(shrink(ops, found, placeholder, limits))
        }
    }
}

/// Steps of the first, short search per operation of the key.
const QUICK_STEPS_PER_OP: u64 = 64;
/// Largest window tried around the frontier of a short search that ran out of steps.
const QUICK_WINDOW_OPS: usize = 2048;

fn violation(shrunk: Window) -> KeyVerdict {
    KeyVerdict::Violation {
        window: shrunk.indices,
        start: shrunk.start,
        earlier_ops: shrunk.earlier_ops,
    }
}

/// Steps 2 and 3 of "Shrinking a failure", from the failing window `[start, end]`; returns
/// a window proven to fail.
fn shrink(ops: &[KeyOp], (start, end): (u64, u64), placeholder: State, limits: &Limits) -> Window {
    let fails = |start: u64, end: u64| window(ops, start, end, placeholder).fails(limits);

    // 2. Earliest end: ends[last] == end is known to fail.
    let mut ends: Vec<u64> = ops
        .iter()
        .map(|op| op.ret)
        .filter(|&t| t >= start && t < end)
        .chain([end])
        .collect();
    ends.sort_unstable();
    ends.dedup();
    let (mut lo, mut hi) = (0, ends.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(start, ends[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let end = ends[hi];

    // 3. Latest start: starts[0] == start is known to fail.
    let mut starts: Vec<u64> = ops
        .iter()
        .map(|op| op.call)
        .filter(|&t| t > start && t <= end)
        .chain([start])
        .collect();
    starts.sort_unstable();
    starts.dedup();
    // Over-approximating the past makes "fails" only roughly monotone in the start: look at
    // the latest starts one by one (small windows, cheap), then bisect the rest.
    let linear_from = starts.len().saturating_sub(LINEAR_START_PROBES).max(1);
    if let Some(&latest) = starts[linear_from..].iter().rev().find(|&&s| fails(s, end)) {
        return window(ops, latest, end, placeholder);
    }
    let (mut lo, mut hi) = (0, linear_from - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fails(starts[mid], end) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    window(ops, starts[lo], end, placeholder)
}

/// Step 1 of "Shrinking a failure": a failing window ending at `frontier` and holding at
/// most about `max_ops` operations, if any.
fn failing_window_before(
    ops: &[KeyOp],
    frontier: u64,
    max_ops: usize,
    fails: &impl Fn(u64, u64) -> bool,
) -> Option<(u64, u64)> {
    if frontier == 0 {
        return None;
    }
    let mut calls: Vec<u64> = ops
        .iter()
        .map(|op| op.call)
        .filter(|&t| t <= frontier)
        .collect();
    calls.sort_unstable();
    calls.dedup();
    let mut back = FIRST_WINDOW_OPS;
    loop {
        let start = calls.len().checked_sub(back).map_or(0, |i| calls[i]);
        if fails(start, frontier) {
            return Some((start, frontier));
        }
        if start == 0 || back >= calls.len() || back >= max_ops {
            return None;
        }
        back = back.saturating_mul(WINDOW_GROWTH);
    }
}

/// Latest window starts tried one by one before bisecting.
const LINEAR_START_PROBES: usize = 64;
/// Operations in the first window tried when shrinking, and its growth factor.
const FIRST_WINDOW_OPS: usize = 8;
const WINDOW_GROWTH: usize = 4;
