//! A time window of one key's register history, turned into search operations, plus the
//! states the register may hold when the window begins.
//!
//! The window `[start, end]` of a key's operations is built in four steps:
//! 1. Cut at `end` (keep what was invoked by `end`). An operation still running at `end` is
//!    pending: a pending read is dropped, a pending write becomes indeterminate. Any prefix
//!    of a linearizable history is linearizable, so a failing cut is a witness.
//! 2. Drop what was invoked before `start`, except writes that may take effect at or after
//!    `start` (not known done before it): those stay as *optional* writes, which the search
//!    may apply within their interval or skip (they took effect before the window). Dropping
//!    a read never hides a violation.
//! 3. The initial state is any state the dropped operations may have left: a value one of
//!    them wrote (all values no read in the window returns are equivalent, represented by one
//!    placeholder id), or absent unless a write completed before `start` and no delete was
//!    invoked before it. The window fails only if it fails from every one of these states.
//! 4. Prepare for the search (values are unique, so a read of `v` proves `v`'s write happened
//!    before the read returned):
//!    - a write's return is clamped to the earliest return of a read of its value, which
//!      turns a read indeterminate write into an ordinary one;
//!    - an indeterminate write nobody read is dropped: if it happened, nothing observed it,
//!      and a later write or the end of the history hides it; an indeterminate delete is
//!      kept (with no return) when some read saw the key absent.
//!
//! Steps 2 and 3 over-approximate what can precede the window, so "the window fails from
//! every initial state" implies "the whole history is not linearizable". The window from 0
//! to [`NEVER`] is the whole history, from absent only.

use std::collections::{HashMap, HashSet};

use crate::search::{search, Answer, Input, Limits, SearchOp, Searched, State, ABSENT, NEVER};

/// One operation of one key, as recorded (reads that failed and writes known not applied
/// are already gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyOp {
    /// Index in the history.
    pub index: usize,
    pub call: u64,
    /// Actual completion time (finite, `>= call`).
    pub ret: u64,
    pub kind: KeyKind,
}

/// What a [`KeyOp`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// A write of a value id (a delete writes [`ABSENT`]); `sure` when it is known done.
    Write {
        value: State,
        sure: bool,
    },
    Read(State),
}

/// A window ready for the search.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// The search operations and the history index of each.
    pub ops: Vec<SearchOp>,
    pub indices: Vec<usize>,
    /// The possible initial states (sorted, at least one).
    pub inits: Vec<State>,
    /// Where the window begins: operations invoked before it are only there as optional
    /// writes.
    pub start: u64,
    /// Operations that completed before the window began.
    pub earlier_ops: usize,
}

impl Window {
    /// Searches from every initial state: Linearizable if one works, NotLinearizable only
    /// if all fail, Unknown otherwise; the frontier is the latest of all searches.
    pub(crate) fn search(&self, limits: &Limits) -> Searched {
        let mut all = Searched {
            answer: Answer::NotLinearizable,
            frontier: 0,
        };
        for &init in &self.inits {
            let one = search(&self.ops, init, limits);
            all.frontier = all.frontier.max(one.frontier);
            match one.answer {
                Answer::Linearizable => return one,
                Answer::Unknown => all.answer = Answer::Unknown,
                Answer::NotLinearizable => {}
            }
        }
        all
    }

    /// True when the search proves this window not linearizable.
    pub(crate) fn fails(&self, limits: &Limits) -> bool {
        self.search(limits).answer == Answer::NotLinearizable
    }
}

/// The window `[start, end]` of `ops` (see the module doc); `placeholder` is a state id no
/// operation uses.
pub(crate) fn window(ops: &[KeyOp], start: u64, end: u64, placeholder: State) -> Window {
    let mut inside: Vec<(KeyOp, bool)> = Vec::new();
    let mut earlier_values: Vec<State> = Vec::new();
    let (mut wrote_before, mut deleted_before, mut earlier_ops) = (false, false, 0);
    for op in ops.iter().filter(|op| op.call <= end) {
        let mut op = *op;
        if op.ret > end {
            match op.kind {
                KeyKind::Read(_) => continue,
                KeyKind::Write { value, .. } => op.kind = KeyKind::Write { value, sure: false },
            }
        }
        if op.call >= start {
            inside.push((op, false));
            continue;
        }
        match op.kind {
            KeyKind::Read(_) => earlier_ops += usize::from(op.ret < start),
            KeyKind::Write { value, sure } => {
                if value == ABSENT {
                    deleted_before = true;
                } else {
                    earlier_values.push(value);
                }
                if sure && op.ret < start {
                    wrote_before |= value != ABSENT;
                    earlier_ops += 1;
                } else {
                    inside.push((op, true));
                }
            }
        }
    }
    let (ops, indices) = prepare(&inside);
    let read: HashSet<State> = ops
        .iter()
        .filter_map(|op| match op.input {
            Input::Read(value) => Some(value),
            Input::Write(_) => None,
        })
        .collect();
    let mut inits: Vec<State> = earlier_values
        .iter()
        .map(|value| match read.contains(value) {
            true => *value,
            false => placeholder,
        })
        .collect();
    if !wrote_before || deleted_before {
        inits.push(ABSENT);
    }
    inits.sort_unstable();
    inits.dedup();
    Window {
        ops,
        indices,
        inits,
        start,
        earlier_ops,
    }
}

/// Step 4 of the module doc; `optional` marks writes that may be skipped.
fn prepare(ops: &[(KeyOp, bool)]) -> (Vec<SearchOp>, Vec<usize>) {
    let mut first_read_ret: HashMap<State, u64> = HashMap::new();
    for (op, _) in ops {
        if let KeyKind::Read(value) = op.kind {
            let ret = first_read_ret.entry(value).or_insert(op.ret);
            *ret = (*ret).min(op.ret);
        }
    }
    let mut prepared = Vec::with_capacity(ops.len());
    let mut indices = Vec::with_capacity(ops.len());
    for &(op, optional) in ops {
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
        prepared.push(SearchOp {
            call: op.call,
            ret,
            input,
            optional,
        });
        indices.push(op.index);
    }
    (prepared, indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(index: usize, call: u64, ret: u64, value: State, sure: bool) -> KeyOp {
        KeyOp {
            index,
            call,
            ret,
            kind: KeyKind::Write { value, sure },
        }
    }

    fn read(index: usize, call: u64, ret: u64, value: State) -> KeyOp {
        KeyOp {
            index,
            call,
            ret,
            kind: KeyKind::Read(value),
        }
    }

    #[test]
    fn whole_history_window_starts_absent_and_keeps_everything_needed() {
        // Intent: the window [0, NEVER] is the prepared history from absent; an unread
        // indeterminate write is dropped, a read one is clamped to its first reader.
        let ops = [
            write(0, 0, 1, 1, true),
            write(1, 2, 3, 2, false),
            write(2, 4, 50, 3, false),
            read(3, 10, 11, 3),
        ];
        let w = window(&ops, 0, NEVER, 99);
        assert_eq!(w.inits, vec![ABSENT]);
        assert_eq!(w.indices, vec![0, 2, 3]);
        assert_eq!(w.ops[1].ret, 11);
        assert!(w.ops.iter().all(|op| !op.optional));
    }

    #[test]
    fn window_start_turns_earlier_writes_into_initial_states_or_optional_writes() {
        // Intent: writes done before `start` become initial states; a write still running at
        // `start` is optional; reads invoked before `start` are dropped.
        let ops = [
            write(0, 0, 1, 1, true),
            write(1, 2, 20, 2, true),
            read(2, 3, 12, 1),
            read(3, 15, 16, 2),
            read(4, 17, 18, 1),
        ];
        let w = window(&ops, 10, NEVER, 99);
        assert_eq!(w.indices, vec![1, 3, 4]);
        assert!(w.ops[0].optional);
        // Value 1 is read in the window; 2 is too; absent is impossible after a done write.
        assert_eq!(w.inits, vec![1, 2]);
        assert_eq!(w.earlier_ops, 1);
    }

    #[test]
    fn window_end_makes_running_writes_indeterminate_and_drops_running_reads() {
        // Intent: the cut at `end` treats what was still running as pending.
        let ops = [
            write(0, 0, 10, 1, true),
            read(1, 1, 10, 1),
            read(2, 2, 3, ABSENT),
        ];
        let w = window(&ops, 0, 5, 99);
        // The running write is now indeterminate and unread: dropped; the running read too.
        assert_eq!(w.indices, vec![2]);
    }
}
