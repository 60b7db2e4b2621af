//! Wing-Gong linearizability search with Lowe's memoisation, for one register.
//!
//! # Model
//! A register holds a [`State`]: [`ABSENT`] or the id of a value. A write (or a delete, which
//! writes [`ABSENT`]) always succeeds and sets the state; a read succeeds only when it
//! returns the current state. An *optional* write may also be skipped (it took effect before
//! the window being searched).
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
//!   whose own links still point at their old neighbours) and try the next alternative.
//!
//! The history is linearizable when the list is empty. An operation whose return time is
//! [`NEVER`] (a write that may or may not have happened) has its return entry after every
//! finite one, so reaching such an entry means every operation that must happen has been
//! linearized: the remaining ones can all be placed at the end, where they are invisible.
//!
//! # Reads first
//! A read that is callable now (no pending operation returned before its call) and returns
//! the current state can always be linearized now: in any completion, moving it to the front
//! changes no state and breaks no real-time order. So the search tries such a read before
//! anything else, and when the configuration after it fails, the configuration before it
//! fails too: the search backtracks past it without trying alternatives. This keeps reads
//! from multiplying the configurations; only the order of concurrent writes branches.
//!
//! # Writes wait for readers
//! When the state holds a value that no remaining write can produce again (values are
//! unique; absent once no delete remains) and some read of it is not linearized yet, any
//! write now would make that read impossible forever: writes are not tried until the reads
//! are done. This stops the search from trying every order of a run of concurrent writes.
//!
//! # Invariants
//! - The cache holds each (linearized bitset, state) pair at most once, so the search visits
//!   each configuration at most once and terminates; [`Limits`] bound its steps and memory.
//!   Every cached configuration that is not on the stack has failed.
//! - A bitset is identified in the cache by a Zobrist hash (XOR of one random word per
//!   linearized operation), kept incrementally, plus a full comparison on collision; it is
//!   stored compressed (see `Linearized`).

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
/// not happen; an `optional` write may be skipped instead of linearized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SearchOp {
    pub call: u64,
    pub ret: u64,
    pub input: Input,
    pub optional: bool,
}

/// The result of one search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Searched {
    pub answer: Answer,
    /// The latest time at which the search got stuck (0 if it never did): a return it could
    /// not get past, or the last read of a value a write would have stranded there. Where
    /// to look for a violation.
    pub frontier: u64,
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

/// The set of linearized operations. Operation ids follow invocation order, so the set is
/// nearly always "every operation below some id, plus a few": it is stored as the count of
/// leading all-ones words and the words after them, which keeps cached sets a few words long
/// even in histories of many thousands of operations.
struct Linearized {
    words: Vec<u64>,
    /// `words[..full]` are all ones.
    full: usize,
    /// `words[top..]` are all zero.
    top: usize,
    /// Zobrist hash of the set.
    hash: u64,
}

impl Linearized {
    fn new(ops: usize) -> Linearized {
        Linearized {
            words: vec![0; ops.div_ceil(64)],
            full: 0,
            top: 0,
            hash: 0,
        }
    }

    fn set(&mut self, op: u32, hash: u64) {
        let word = (op / 64) as usize;
        self.words[word] |= 1 << (op % 64);
        self.hash ^= hash;
        self.top = self.top.max(word + 1);
        while self.full < self.words.len() && self.words[self.full] == u64::MAX {
            self.full += 1;
        }
    }

    fn clear(&mut self, op: u32, hash: u64) {
        let word = (op / 64) as usize;
        self.words[word] &= !(1 << (op % 64));
        self.hash ^= hash;
        self.full = self.full.min(word);
        while self.top > 0 && self.words[self.top - 1] == 0 {
            self.top -= 1;
        }
    }

    /// The words after the leading full ones, up to the last non-zero one.
    fn tail(&self) -> &[u64] {
        &self.words[self.full..self.top.max(self.full)]
    }
}

/// A linearized set as cached: (leading full words, the words after them).
type CompressedSet = (usize, Box<[u64]>);

/// The set of configurations already explored, by (set hash, state).
struct Cache {
    seen: HashMap<(u64, State), Vec<CompressedSet>>,
    bytes: usize,
}

/// Bytes a cache entry costs beyond its tail words (map slot, box, counts), roughly.
const CACHE_ENTRY_OVERHEAD_BYTES: usize = 64;

impl Cache {
    /// Records (`linearized`, `state`); false when it was already there.
    fn insert(&mut self, linearized: &Linearized, state: State) -> bool {
        let slot = self.seen.entry((linearized.hash, state)).or_default();
        let (full, tail) = (linearized.full, linearized.tail());
        if slot.iter().any(|(f, t)| *f == full && t[..] == tail[..]) {
            return false;
        }
        slot.push((full, tail.into()));
        self.bytes += tail.len() * 8 + CACHE_ENTRY_OVERHEAD_BYTES;
        true
    }
}

/// The state after linearizing `op` in `state` by alternative `alt` (0: apply, 1: skip an
/// optional write), or None when that alternative does not exist or the model refuses it.
fn transition(op: &SearchOp, state: State, alt: u8) -> Option<State> {
    match (alt, op.input) {
        (0, Input::Write(value)) => Some(value),
        (0, Input::Read(seen)) => (seen == state).then_some(state),
        (1, Input::Write(_)) if op.optional => Some(state),
        _ => None,
    }
}

/// One random word per operation for the Zobrist hash (SplitMix64 of the op index).
fn zobrist(op: u32) -> u64 {
    crate::rng::SplitMix64::new(u64::from(op) ^ 0x005e_ed0f_b175).next_u64()
}

/// Searches for a linearization of `ops` starting from `init`.
pub(crate) fn search(ops: &[SearchOp], init: State, limits: &Limits) -> Searched {
    if ops.len() >= (NIL / 2) as usize {
        return Searched {
            answer: Answer::Unknown,
            frontier: 0,
        };
    }
    // Ids in invocation order keep the linearized sets compact (see `Linearized`).
    let mut ops = ops.to_vec();
    ops.sort_by_key(|op| (op.call, op.ret));
    Search::new(&ops, init, *limits).run()
}

/// The state of one search; see the module doc.
struct Search<'a> {
    ops: &'a [SearchOp],
    list: EntryList,
    hashes: Vec<u64>,
    linearized: Linearized,
    cache: Cache,
    /// Linearized operations, with the state before each and the alternative taken.
    stack: Vec<(u32, State, u8)>,
    state: State,
    /// By state: reads of it not linearized yet.
    readers_left: Vec<u32>,
    /// By state: writes of it not linearized (or skipped) yet.
    writers_left: Vec<u32>,
    /// By state: the latest return of a read of it.
    last_read_ret: Vec<u64>,
    steps: u64,
    frontier: u64,
    limits: Limits,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [SearchOp], init: State, limits: Limits) -> Search<'a> {
        let states = ops
            .iter()
            .map(|op| match op.input {
                Input::Write(v) | Input::Read(v) => v,
            })
            .chain([init])
            .max()
            .unwrap_or(ABSENT) as usize
            + 1;
        let (mut readers_left, mut writers_left) = (vec![0; states], vec![0; states]);
        let mut last_read_ret = vec![0; states];
        for op in ops {
            match op.input {
                Input::Read(v) => {
                    readers_left[v as usize] += 1;
                    last_read_ret[v as usize] = last_read_ret[v as usize].max(op.ret);
                }
                Input::Write(v) => writers_left[v as usize] += 1,
            }
        }
        Search {
            ops,
            list: EntryList::new(ops),
            hashes: (0..ops.len() as u32).map(zobrist).collect(),
            linearized: Linearized::new(ops.len()),
            cache: Cache {
                seen: HashMap::new(),
                bytes: 0,
            },
            stack: Vec::new(),
            state: init,
            readers_left,
            writers_left,
            last_read_ret,
            steps: 0,
            frontier: 0,
            limits,
        }
    }

    fn run(mut self) -> Searched {
        let answer = self.walk();
        Searched {
            answer,
            frontier: self.frontier,
        }
    }

    fn walk(&mut self) -> Answer {
        let mut entry = self.pick();
        let mut first_alt = 0;
        while self.list.first() != NIL {
            if self.out_of_budget() || entry == NIL {
                // entry == NIL is unreachable: the list ends with a return entry.
                return Answer::Unknown;
            }
            let op = entry / 2;
            if !entry.is_multiple_of(2) {
                if self.ops[op as usize].ret == NEVER {
                    return Answer::Linearizable;
                }
                // Stuck here; if a read of the current value is still to come, the conflict
                // reaches to it.
                let stranded = match self.starves_readers() {
                    true => self.last_read_ret[self.state as usize],
                    false => 0,
                };
                let stuck = self.ops[op as usize].ret.max(stranded);
                self.frontier = self.frontier.max(stuck);
            } else if self.try_linearize(op, first_alt) {
                (entry, first_alt) = (self.pick(), 0);
                continue;
            } else if !self.is_matching_read(op) {
                (entry, first_alt) = (self.list.next[entry as usize], 0);
                continue;
            }
            // Stuck at a return entry, or a matching read whose next configuration failed
            // before (so this one fails too): backtrack.
            match self.backtrack() {
                Some(resume) => (entry, first_alt) = resume,
                None => return Answer::NotLinearizable,
            }
        }
        Answer::Linearizable
    }

    fn out_of_budget(&mut self) -> bool {
        self.steps += 1;
        self.steps > self.limits.max_steps
            || self.cache.bytes > self.limits.max_cache_bytes
            || (self.steps.is_multiple_of(STEPS_PER_CLOCK_CHECK)
                && Instant::now() >= self.limits.deadline)
    }

    fn is_matching_read(&self, op: u32) -> bool {
        self.ops[op as usize].input == Input::Read(self.state)
    }

    /// The entry to try first: a callable read of the current state if there is one, else
    /// the head of the list.
    fn pick(&self) -> u32 {
        let mut entry = self.list.first();
        while entry != NIL && entry.is_multiple_of(2) {
            if self.is_matching_read(entry / 2) {
                return entry;
            }
            entry = self.list.next[entry as usize];
        }
        self.list.first()
    }

    /// Linearizes `op` by the first alternative from `first_alt` that leads to a new
    /// configuration; false when there is none.
    fn try_linearize(&mut self, op: u32, first_alt: u8) -> bool {
        let hash = self.hashes[op as usize];
        for alt in first_alt..2 {
            let Some(next) = transition(&self.ops[op as usize], self.state, alt) else {
                continue;
            };
            if next != self.state && self.starves_readers() {
                continue;
            }
            self.linearized.set(op, hash);
            if self.cache.insert(&self.linearized, next) {
                self.stack.push((op, self.state, alt));
                self.state = next;
                self.list.lift(op);
                self.count(op, |n| n - 1);
                return true;
            }
            self.linearized.clear(op, hash);
        }
        false
    }

    /// "Writes wait for readers": changing the state now would strand a read.
    fn starves_readers(&self) -> bool {
        let s = self.state as usize;
        self.readers_left[s] > 0 && self.writers_left[s] == 0
    }

    /// Updates the counts of reads or writes left of `op`'s value.
    fn count(&mut self, op: u32, f: impl Fn(u32) -> u32) {
        let (counts, v) = match self.ops[op as usize].input {
            Input::Read(v) => (&mut self.readers_left, v),
            Input::Write(v) => (&mut self.writers_left, v),
        };
        counts[v as usize] = f(counts[v as usize]);
    }

    /// Undoes the last choice that may have an alternative (reads have none, see "Reads
    /// first"); returns where to resume: the call entry and the next alternative to try.
    fn backtrack(&mut self) -> Option<(u32, u8)> {
        loop {
            let (op, prior, alt) = self.stack.pop()?;
            self.linearized.clear(op, self.hashes[op as usize]);
            self.state = prior;
            self.list.unlift(op);
            self.count(op, |n| n + 1);
            if !matches!(self.ops[op as usize].input, Input::Read(_)) {
                return Some((2 * op, alt + 1));
            }
        }
    }
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
            optional: false,
        }
    }

    fn r(call: u64, ret: u64, v: State) -> SearchOp {
        SearchOp {
            call,
            ret,
            input: Input::Read(v),
            optional: false,
        }
    }

    fn fails(ops: &[SearchOp], init: State) -> bool {
        search(ops, init, &limits()).answer == Answer::NotLinearizable
    }

    #[test]
    fn empty_history_is_linearizable() {
        // Intent: nothing to order is trivially linearizable.
        assert_eq!(search(&[], ABSENT, &limits()).answer, Answer::Linearizable);
    }

    #[test]
    fn concurrent_read_may_see_either_side_of_a_write() {
        // Intent: a read overlapping a write may return the old or the new value.
        let old = [w(0, 1, 1), w(2, 10, 2), r(3, 4, 1)];
        let new = [w(0, 1, 1), w(2, 10, 2), r(3, 4, 2)];
        assert_eq!(search(&old, ABSENT, &limits()).answer, Answer::Linearizable);
        assert_eq!(search(&new, ABSENT, &limits()).answer, Answer::Linearizable);
    }

    #[test]
    fn read_after_completed_write_must_see_it() {
        // Intent: a read that starts after a write completed cannot see the older value.
        let ops = [w(0, 1, 1), w(2, 3, 2), r(4, 5, 1)];
        assert!(fails(&ops, ABSENT));
    }

    #[test]
    fn backtracking_finds_the_only_order() {
        // Intent: the first order tried (write 1 then 2) fails; the search must backtrack.
        let ops = [w(0, 10, 1), w(0, 10, 2), r(11, 12, 1)];
        assert_eq!(search(&ops, ABSENT, &limits()).answer, Answer::Linearizable);
    }

    #[test]
    fn never_returning_write_may_be_left_out_or_placed_late() {
        // Intent: a write with no return may take effect late, or never.
        let late = [w(0, NEVER, 1), r(5, 6, ABSENT), r(7, 8, 1)];
        let never = [w(0, NEVER, 1), r(5, 6, ABSENT)];
        let early = [w(0, NEVER, 1), r(5, 6, 1), r(7, 8, ABSENT)];
        assert_eq!(
            search(&late, ABSENT, &limits()).answer,
            Answer::Linearizable
        );
        assert_eq!(
            search(&never, ABSENT, &limits()).answer,
            Answer::Linearizable
        );
        assert!(fails(&early, ABSENT));
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
        assert_eq!(search(&ops, ABSENT, &tight).answer, Answer::Unknown);
    }

    #[test]
    fn optional_write_may_be_skipped_or_applied_but_not_late() {
        // Intent: an optional write either happened before the window (skipped) or takes
        // effect within its interval; it cannot take effect after its return.
        let optional = |call, ret, v| SearchOp {
            optional: true,
            ..w(call, ret, v)
        };
        let skipped = [optional(0, 5, 1), r(6, 7, 2)];
        let applied = [optional(0, 5, 1), r(6, 7, 1)];
        let too_late = [optional(0, 5, 1), r(6, 7, 2), r(8, 9, 1)];
        assert_eq!(search(&skipped, 2, &limits()).answer, Answer::Linearizable);
        assert_eq!(search(&applied, 2, &limits()).answer, Answer::Linearizable);
        assert!(fails(&too_late, 2));
    }

    #[test]
    fn frontier_points_at_the_stranded_reads() {
        // Intent: a failed search says where to look: here writing 2 would strand the reads
        // of 1, so the frontier reaches the last of them.
        let ops = [w(0, 1, 1), w(2, 3, 2), r(4, 5, 2), r(6, 7, 1), r(8, 9, 1)];
        let searched = search(&ops, ABSENT, &limits());
        assert_eq!(searched.answer, Answer::NotLinearizable);
        assert_eq!(searched.frontier, 9);
    }

    #[test]
    fn writes_wait_for_the_readers_of_the_current_value() {
        // Intent: 10 concurrent writes whose reads fix one order (the reverse of the order
        // tried first): the search finds it without trying the orders of the writes.
        let mut ops: Vec<SearchOp> = (1..=10).map(|v| w(0, 200, v)).collect();
        ops.extend((1..=10).map(|v| r(10 * u64::from(11 - v), 10 * u64::from(11 - v) + 1, v)));
        let tight = Limits {
            max_steps: 2_000,
            ..limits()
        };
        assert_eq!(search(&ops, ABSENT, &tight).answer, Answer::Linearizable);
    }
}
