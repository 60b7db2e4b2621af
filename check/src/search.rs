//! Wing-Gong linearizability search with Lowe's memoisation, for one register.
//!
//! # Model
//! A register holds a [`State`]: [`ABSENT`] or the id of a value. A write (or a delete, which
//! writes [`ABSENT`]) always succeeds and sets the state; a read succeeds only when it
//! returns the current state.
//!
//! # Algorithm
//! Every operation contributes a *call* entry at its invocation time and a *return* entry at
//! its completion time; all entries sit in one doubly linked list in time order (calls before
//! returns at equal times, so touching operations count as concurrent). The search walks the
//! list from the head:
//! - at a call entry it tries to linearize that operation next: if the model accepts it and
//!   the pair (set of linearized operations, new state) was never reached before, it *lifts*
//!   the operation (unlinks its call and return entries), pushes it on a stack and restarts
//!   from the head;
//! - at a return entry, the operation it belongs to cannot be postponed any further, so the
//!   last choice was wrong: pop the stack, *unlift* that operation (relink its two entries,
//!   whose own links still point at their old neighbours) and continue after its call entry.
//!
//! The history is linearizable when the list is empty. An operation whose return time is
//! [`NEVER`] (a write that may or may not have happened) has its return entry after every
//! finite one, so reaching such an entry means every operation that must happen has been
//! linearized: the remaining ones can all be placed at the end, where they are invisible.
//!
//! # Invariants
//! - The cache holds each (linearized bitset, state) pair at most once, so the search visits
//!   each configuration at most once and terminates; [`Limits`] bound its steps and memory.
//! - A bitset is identified in the cache by a Zobrist hash (XOR of one random word per
//!   linearized operation), kept incrementally, plus a full comparison on collision.

use std::collections::HashMap;
use std::time::Instant;

/// A register state: [`ABSENT`] or a value id.
pub(crate) type State = u32;

/// The state of a key that holds no value.
pub(crate) const ABSENT: State = 0;

/// The return time of an operation that may take effect at any time after its call, or never.
pub(crate) const NEVER: u64 = u64::MAX;

/// What an operation does to the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// Sets the state (a delete writes [`ABSENT`]).
    Write(State),
    /// Observed this state.
    Read(State),
}

/// One operation as the search sees it. `ret >= call`; `ret == NEVER` marks a write that need
/// not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SearchOp {
    pub call: u64,
    pub ret: u64,
    pub input: Input,
}

/// The answer of one search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Linearizable,
    NotLinearizable,
    /// The step, memory or time budget ran out first.
    Unknown,
}

/// Budget of one search.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most loop iterations.
    pub max_steps: u64,
    /// Most bytes of cached bitsets.
    pub max_cache_bytes: usize,
    /// Give up after this instant.
    pub deadline: Instant,
}

const NIL: u32 = u32::MAX;
/// How many steps pass between two looks at the clock.
const STEPS_PER_CLOCK_CHECK: u64 = 1 << 14;

/// The entry list: node `2 * op` is the call of `op`, node `2 * op + 1` its return; the head
/// sentinel is node `2 * ops.len()`.
struct EntryList {
    next: Vec<u32>,
    prev: Vec<u32>,
    head: u32,
}

impl EntryList {
    fn new(ops: &[SearchOp]) -> EntryList {
        let mut order: Vec<u32> = (0..2 * ops.len() as u32).collect();
        // Sort key: time, then calls before returns, then op id for determinism.
        order.sort_by_key(|&node| {
            let op = &ops[(node / 2) as usize];
            let is_return = node % 2;
            let time = if is_return == 1 { op.ret } else { op.call };
            (time, is_return, node)
        });
        let head = 2 * ops.len() as u32;
        let mut next = vec![NIL; ops.len() * 2 + 1];
        let mut prev = vec![NIL; ops.len() * 2 + 1];
        let mut last = head;
        for &node in &order {
            next[last as usize] = node;
            prev[node as usize] = last;
            last = node;
        }
        EntryList { next, prev, head }
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    /// Relinks `node` between the neighbours it had when it was unlinked. Nodes MUST be
    /// relinked in the reverse order of their unlinking.
    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        if n != NIL {
            self.prev[n as usize] = node;
        }
    }

    fn lift(&mut self, op: u32) {
        self.unlink(2 * op);
        self.unlink(2 * op + 1);
    }

    fn unlift(&mut self, op: u32) {
        self.relink(2 * op + 1);
        self.relink(2 * op);
    }

    fn first(&self) -> u32 {
        self.next[self.head as usize]
    }
}

/// The set of configurations already explored.
struct Cache {
    seen: HashMap<(u64, State), Vec<Box<[u64]>>>,
    bytes: usize,
}

impl Cache {
    /// Records (`bits`, `state`); false when it was already there.
    fn insert(&mut self, hash: u64, bits: &[u64], state: State) -> bool {
        let slot = self.seen.entry((hash, state)).or_default();
        if slot.iter().any(|seen| seen[..] == bits[..]) {
            return false;
        }
        slot.push(bits.into());
        self.bytes += bits.len() * 8 + 16;
        true
    }
}

fn step(state: State, input: Input) -> Option<State> {
    match input {
        Input::Write(value) => Some(value),
        Input::Read(seen) => (seen == state).then_some(state),
    }
}

/// One random word per operation for the Zobrist hash (SplitMix64 of the op index).
fn zobrist(op: u32) -> u64 {
    crate::rng::SplitMix64::new(u64::from(op) ^ 0x005e_ed0f_b175).next_u64()
}

/// Searches for a linearization of `ops` starting from `init`.
pub(crate) fn search(ops: &[SearchOp], init: State, limits: &Limits) -> Answer {
    if ops.len() >= (NIL / 2) as usize {
        return Answer::Unknown;
    }
    let mut list = EntryList::new(ops);
    let hashes: Vec<u64> = (0..ops.len() as u32).map(zobrist).collect();
    let mut bits = vec![0u64; ops.len().div_ceil(64)];
    let mut hash = 0u64;
    let mut cache = Cache {
        seen: HashMap::new(),
        bytes: 0,
    };
    let mut stack: Vec<(u32, State)> = Vec::new();
    let mut state = init;
    let mut entry = list.first();
    let mut steps = 0u64;
    while list.first() != NIL {
        steps += 1;
        if steps > limits.max_steps || cache.bytes > limits.max_cache_bytes {
            return Answer::Unknown;
        }
        if steps.is_multiple_of(STEPS_PER_CLOCK_CHECK) && Instant::now() >= limits.deadline {
            return Answer::Unknown;
        }
        if entry == NIL {
            // Unreachable: the list always ends with a return entry, where the scan stops.
            return Answer::Unknown;
        }
        let op = entry / 2;
        let is_call = entry.is_multiple_of(2);
        if is_call {
            if let Some(new_state) = step(state, ops[op as usize].input) {
                let (word, bit) = ((op / 64) as usize, 1u64 << (op % 64));
                bits[word] |= bit;
                hash ^= hashes[op as usize];
                if cache.insert(hash, &bits, new_state) {
                    stack.push((op, state));
                    state = new_state;
                    list.lift(op);
                    entry = list.first();
                    continue;
                }
                bits[word] &= !bit;
                hash ^= hashes[op as usize];
            }
            entry = list.next[entry as usize];
        } else {
            if ops[op as usize].ret == NEVER {
                return Answer::Linearizable;
            }
            let Some((undone, prior)) = stack.pop() else {
                return Answer::NotLinearizable;
            };
            bits[(undone / 64) as usize] &= !(1u64 << (undone % 64));
            hash ^= hashes[undone as usize];
            state = prior;
            list.unlift(undone);
            entry = list.next[(2 * undone) as usize];
        }
    }
    Answer::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            max_steps: 1_000_000,
            max_cache_bytes: 64 << 20,
            deadline: Instant::now() + Duration::from_secs(10),
        }
    }

    fn w(call: u64, ret: u64, v: State) -> SearchOp {
        SearchOp {
            call,
            ret,
            input: Input::Write(v),
        }
    }

    fn r(call: u64, ret: u64, v: State) -> SearchOp {
        SearchOp {
            call,
            ret,
            input: Input::Read(v),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        // Intent: nothing to order is trivially linearizable.
        assert_eq!(search(&[], ABSENT, &limits()), Answer::Linearizable);
    }

    #[test]
    fn concurrent_read_may_see_either_side_of_a_write() {
        // Intent: a read overlapping a write may return the old or the new value.
        let old = [w(0, 1, 1), w(2, 10, 2), r(3, 4, 1)];
        let new = [w(0, 1, 1), w(2, 10, 2), r(3, 4, 2)];
        assert_eq!(search(&old, ABSENT, &limits()), Answer::Linearizable);
        assert_eq!(search(&new, ABSENT, &limits()), Answer::Linearizable);
    }

    #[test]
    fn read_after_completed_write_must_see_it() {
        // Intent: a read that starts after a write completed cannot see the older value.
        let ops = [w(0, 1, 1), w(2, 3, 2), r(4, 5, 1)];
        assert_eq!(search(&ops, ABSENT, &limits()), Answer::NotLinearizable);
    }

    #[test]
    fn backtracking_finds_the_only_order() {
        // Intent: the first order tried (write 1 then 2) fails; the search must backtrack.
        let ops = [w(0, 10, 1), w(0, 10, 2), r(11, 12, 1)];
        assert_eq!(search(&ops, ABSENT, &limits()), Answer::Linearizable);
    }

    #[test]
    fn never_returning_write_may_be_left_out_or_placed_late() {
        // Intent: a write with no return may take effect late, or never.
        let late = [w(0, NEVER, 1), r(5, 6, ABSENT), r(7, 8, 1)];
        let never = [w(0, NEVER, 1), r(5, 6, ABSENT)];
        let early = [w(0, NEVER, 1), r(5, 6, 1), r(7, 8, ABSENT)];
        assert_eq!(search(&late, ABSENT, &limits()), Answer::Linearizable);
        assert_eq!(search(&never, ABSENT, &limits()), Answer::Linearizable);
        assert_eq!(search(&early, ABSENT, &limits()), Answer::NotLinearizable);
    }

    #[test]
    fn budget_exhaustion_says_unknown() {
        // Intent: a search that runs out of steps answers Unknown instead of guessing.
        let ops: Vec<SearchOp> = (0..20).map(|i| w(0, 100, i + 1)).collect();
        let mut ops = ops;
        ops.push(r(101, 102, 999));
        let tight = Limits {
            max_steps: 1000,
            ..limits()
        };
        assert_eq!(search(&ops, ABSENT, &tight), Answer::Unknown);
    }
}
