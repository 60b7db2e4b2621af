//! The linearizability checker: splits a [`History`] by key, checks each key's register
//! history with the search of [`crate::search`], and shrinks every failure to a small window.
//!
//! # From operations to register operations (per key)
//! Linearizability is compositional (Herlihy and Wing), so each key is checked alone.
//! 1. A GET that failed carries no information: dropped. A write known NOT applied (503,
//!    rejected, no connection) is dropped too, so a read of its value has no write to explain
//!    it and fails the check: a 503'd write must never become visible.
//! 2. A done write spans [invoked, completed]. An indeterminate write may take effect at any
//!    time after its invocation, or never: its completion is [`NEVER`].
//! 3. Values are unique, so a read of value `v` proves `v`'s write happened before the read
//!    returned: a write's completion is clamped to the earliest return of a read of its value,
//!    which turns a read indeterminate write into an ordinary one. An indeterminate write
//!    nobody read is dropped: if it happened, nothing observed it, and a later write or the
//!    end of the history hides it. (An indeterminate delete is kept unless no read saw the
//!    key absent.)
//!
//! These steps keep the set of linearizable histories exactly the same and remove almost all
//! never-returning operations, which are what make the search explode.
//!
//! # Shrinking a failure
//! 1. Smallest failing prefix: the history cut at time `t` keeps the operations invoked by
//!    `t`; those still running at `t` become pending (a pending read is dropped, a pending
//!    write is indeterminate). Linearizability is prefix-closed, so "the cut at `t` fails" is
//!    monotone in `t`: binary search over completion times.
//! 2. Drop from the front: in that prefix, drop the first `i` operations (by completion) when
//!    every one of them completed before any remaining one was invoked. The remaining window
//!    then starts from whatever state the dropped ones left, which is one of: a value one of
//!    them wrote, or absent when none wrote or one deleted. The window is reported only if
//!    it fails from *every* such initial state, so it is a sound witness on its own. Again
//!    monotone in `i`: binary search.
//!
//! A search that runs out of budget answers "unknown"; while shrinking, an unknown probe counts
//! as "does not fail", which only makes the reported window larger, never wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::history::{History, OpKind, Operation, Outcome};
use crate::report::{Report, Violation};
use crate::search::{search, Answer, Input, Limits, SearchOp, State, ABSENT, NEVER};

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
                earlier_ops,
            } => {
                window.sort_by_key(|&i| (history.ops[i].invoked, i));
                report.violations.push(Violation {
                    key: key.to_string(),
                    writers: writers_outside(history, indices, &window),
                    window: window.iter().map(|&i| history.ops[i].clone()).collect(),
                    earlier_ops,
                });
            }
        }
    }
    report
}

/// The writes among `indices` but outside `window` of values that reads in `window`
/// returned, whatever their outcome: the context a person needs to read the window.
fn writers_outside(history: &History, indices: &[usize], window: &[usize]) -> Vec<Operation> {
    let read: HashSet<&str> = window
        .iter()
        .filter_map(|&i| match &history.ops[i].outcome {
            Outcome::Read(Some(value)) => Some(value.as_str()),
            _ => None,
        })
        .collect();
    indices
        .iter()
        .filter(|i| !window.contains(i))
        .map(|&i| &history.ops[i])
        .filter(|op| matches!(&op.kind, OpKind::Put { value } if read.contains(value.as_str())))
        .cloned()
        .collect()
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
    /// `window` holds history indices; `earlier_ops` operations completed before it.
    Violation {
        window: Vec<usize>,
        earlier_ops: usize,
    },
    Unknown,
}

/// One operation of one key, after step 1 of the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyOp {
    /// Index in the history.
    pub index: usize,
    pub call: u64,
    /// Actual completion time (finite).
    pub ret: u64,
    pub kind: KeyKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// A write of a value id (a delete writes [`ABSENT`]); `sure` when it is known done.
    Write {
        value: State,
        sure: bool,
    },
    Read(State),
}

/// A [`KeyOp`] ready for the search.
#[derive(Debug, Clone, Copy)]
struct Prepared {
    index: usize,
    op: SearchOp,
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
    match search(&search_ops(&prepare(ops)), ABSENT, limits) {
        Answer::Linearizable => KeyVerdict::Linearizable,
        Answer::Unknown => KeyVerdict::Unknown,
        Answer::NotLinearizable => shrink(ops, limits),
    }
}

/// Steps 2 and 3 of the module doc.
fn prepare(ops: &[KeyOp]) -> Vec<Prepared> {
    let mut first_read_ret: HashMap<State, u64> = HashMap::new();
    for op in ops {
        if let KeyKind::Read(value) = op.kind {
            let ret = first_read_ret.entry(value).or_insert(op.ret);
            *ret = (*ret).min(op.ret);
        }
    }
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let (ret, input) = match op.kind {
            KeyKind::Read(value) => (op.ret, Input::Read(value)),
            KeyKind::Write { value, sure } => {
                let read_by = first_read_ret.get(&value).copied();
                let ret = match (sure, read_by) {
                    (false, None) => continue,
                    (false, Some(_)) if value == ABSENT => NEVER,
                    (true, _) if value == ABSENT => op.ret,
                    (true, None) => op.ret,
                    (false, Some(read)) => read.max(op.call),
                    (true, Some(read)) => op.ret.min(read).max(op.call),
                };
                (ret, Input::Write(value))
            }
        };
        out.push(Prepared {
            index: op.index,
            op: SearchOp {
                call: op.call,
                ret,
                input,
            },
        });
    }
    out
}

fn search_ops(prepared: &[Prepared]) -> Vec<SearchOp> {
    prepared.iter().map(|p| p.op).collect()
}

/// The history cut at `t` (step 1 of "Shrinking a failure").
fn cut(ops: &[KeyOp], t: u64) -> Vec<KeyOp> {
    ops.iter()
        .filter(|op| op.call <= t)
        .filter_map(|op| match op.kind {
            _ if op.ret <= t => Some(*op),
            KeyKind::Read(_) => None,
            KeyKind::Write { value, .. } => Some(KeyOp {
                kind: KeyKind::Write { value, sure: false },
                ..*op
            }),
        })
        .collect()
}

/// Linearizable if some initial state works; NotLinearizable only if every one fails.
fn search_from_any(ops: &[SearchOp], inits: &[State], limits: &Limits) -> Answer {
    let mut answer = Answer::NotLinearizable;
    for &init in inits {
        match search(ops, init, limits) {
            Answer::Linearizable => return Answer::Linearizable,
            Answer::Unknown => answer = Answer::Unknown,
            Answer::NotLinearizable => {}
        }
    }
    answer
}

fn shrink(ops: &[KeyOp], limits: &Limits) -> KeyVerdict {
    let fails_at = |t: u64| {
        search(&search_ops(&prepare(&cut(ops, t))), ABSENT, limits) == Answer::NotLinearizable
    };
    let mut times: Vec<u64> = ops.iter().map(|op| op.ret).collect();
    times.sort_unstable();
    times.dedup();
    // Smallest i with fails_at(times[i]); times.len() stands for "the whole history".
    let (mut lo, mut hi) = (0, times.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails_at(times[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let prefix_end = times.get(hi).copied().unwrap_or(NEVER);
    let mut prefix = prepare(&cut(ops, prefix_end));
    prefix.sort_by_key(|p| (p.op.ret, p.op.call, p.index));
    let start = shrink_front(&prefix, limits);
    KeyVerdict::Violation {
        window: prefix[start..].iter().map(|p| p.index).collect(),
        earlier_ops: start,
    }
}

/// Step 2 of "Shrinking a failure" on a failing prefix sorted by completion: the start of
/// the smallest failing window found (the number of operations dropped before it).
fn shrink_front(prefix: &[Prepared], limits: &Limits) -> usize {
    // suffix_min_call[i] = earliest invocation among prefix[i..].
    let mut suffix_min_call = vec![NEVER; prefix.len() + 1];
    for i in (0..prefix.len()).rev() {
        suffix_min_call[i] = suffix_min_call[i + 1].min(prefix[i].op.call);
    }
    let splits: Vec<usize> = (0..prefix.len())
        .filter(|&i| i == 0 || prefix[i - 1].op.ret < suffix_min_call[i])
        .collect();
    let placeholder = prefix
        .iter()
        .map(|p| match p.op.input {
            Input::Write(v) | Input::Read(v) => v,
        })
        .max()
        .unwrap_or(ABSENT)
        + 1;
    let window_fails = |start: usize| {
        let (dropped, window) = prefix.split_at(start);
        let inits = initial_states(dropped, window, placeholder);
        search_from_any(&search_ops(window), &inits, limits) == Answer::NotLinearizable
    };
    // splits[0] == 0 is the whole prefix, which fails; find the last split that still fails.
    let (mut lo, mut hi) = (0, splits.len().saturating_sub(1));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if window_fails(splits[mid]) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    splits.get(lo).copied().unwrap_or(0)
}

/// The states the register may hold after `dropped` (all of which completed before any of
/// `window` started), up to equivalence: values no read in `window` returns are
/// indistinguishable, so they are all represented by `placeholder`.
fn initial_states(dropped: &[Prepared], window: &[Prepared], placeholder: State) -> Vec<State> {
    let read: HashSet<State> = window
        .iter()
        .filter_map(|p| match p.op.input {
            Input::Read(v) => Some(v),
            Input::Write(_) => None,
        })
        .collect();
    let (mut wrote, mut deleted, mut unread) = (false, false, false);
    let mut states = Vec::new();
    for p in dropped {
        match p.op.input {
            Input::Write(ABSENT) => deleted = true,
            Input::Write(v) if read.contains(&v) => {
                wrote = true;
                states.push(v);
            }
            Input::Write(_) => {
                wrote = true;
                unread = true;
            }
            Input::Read(_) => {}
        }
    }
    if !wrote || deleted {
        states.push(ABSENT);
    }
    if unread {
        states.push(placeholder);
    }
    states.sort_unstable();
    states.dedup();
    states
}
