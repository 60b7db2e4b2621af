//! The checker against a brute-force oracle on many small random histories: same verdicts,
//! and every window the shrinking may report is a sound witness.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::checker::{check_key, KeyVerdict};
use crate::rng::SplitMix64;
use crate::search::{Limits, State, ABSENT, NEVER};
use crate::window::{window, KeyKind, KeyOp};

/// Tries every order allowed by real time: a done write or a read `a` precedes `b` when
/// `a.ret < b.call`; an indeterminate write may be placed anywhere after its call, or nowhere.
fn brute_force_linearizable(ops: &[KeyOp]) -> bool {
    fn place(ops: &[KeyOp], placed: u32, state: State, seen: &mut HashSet<(u32, State)>) -> bool {
        let required_left = ops.iter().enumerate().any(|(i, op)| {
            placed & (1 << i) == 0 && !matches!(op.kind, KeyKind::Write { sure: false, .. })
        });
        if !required_left {
            return true;
        }
        if !seen.insert((placed, state)) {
            return false;
        }
        for (i, op) in ops.iter().enumerate() {
            if placed & (1 << i) != 0 {
                continue;
            }
            // Every unplaced operation that must come before `op` blocks it.
            let blocked = ops.iter().enumerate().any(|(j, other)| {
                placed & (1 << j) == 0
                    && !matches!(other.kind, KeyKind::Write { sure: false, .. })
                    && other.ret < op.call
            });
            if blocked {
                continue;
            }
            let next = match op.kind {
                KeyKind::Write { value, .. } => value,
                KeyKind::Read(value) if value == state => state,
                KeyKind::Read(_) => continue,
            };
            if place(ops, placed | (1 << i), next, seen) {
                return true;
            }
        }
        false
    }
    place(ops, 0, ABSENT, &mut HashSet::new())
}

/// A random history of up to 8 operations on one key; values are unique per write, reads
/// return absent, a written value, or a value never written.
fn random_history(rng: &mut SplitMix64) -> Vec<KeyOp> {
    let count = 1 + rng.below(8) as usize;
    let mut next_value = 1;
    let mut ops = Vec::new();
    for index in 0..count {
        let call = rng.below(20);
        let ret = call + rng.below(8);
        let kind = if rng.below(2) == 0 {
            let value = if rng.below(6) == 0 {
                ABSENT
            } else {
                next_value
            };
            next_value += 1;
            KeyKind::Write {
                value,
                sure: rng.below(4) != 0,
            }
        } else {
            KeyKind::Read(rng.below(next_value as u64 + 1) as State)
        };
        ops.push(KeyOp {
            index,
            call,
            ret,
            kind,
        });
    }
    ops
}

fn limits() -> Limits {
    Limits {
        max_steps: 1_000_000,
        max_cache_bytes: 64 << 20,
        deadline: Instant::now() + Duration::from_secs(60),
    }
}

#[test]
fn verdicts_match_brute_force_on_random_small_histories() {
    // Intent: the memoised search with reads-first, pruning and clamping decides exactly
    // like an exhaustive enumeration of orders.
    let mut rng = SplitMix64::new(5);
    let mut violations = 0;
    for case in 0..10_000 {
        let ops = random_history(&mut rng);
        let expected = brute_force_linearizable(&ops);
        let verdict = check_key(&ops, &limits());
        match (&verdict, expected) {
            (KeyVerdict::Linearizable, true) => {}
            (KeyVerdict::Violation { window, .. }, false) => {
                violations += 1;
                assert!(!window.is_empty(), "case {case}: empty window for {ops:?}");
            }
            _ => panic!("case {case}: checker {verdict:?}, brute force {expected} for {ops:?}"),
        }
    }
    // The generator makes both kinds in good numbers.
    assert!(
        (1_000..9_000).contains(&violations),
        "{violations} violations"
    );
}

#[test]
fn every_failing_window_is_a_sound_witness() {
    // Intent: any window [start, end] that fails from all its initial states comes from a
    // history that is truly not linearizable, so reporting it can never be a false alarm.
    let mut rng = SplitMix64::new(9);
    let mut failing_windows = 0;
    for case in 0..1_500 {
        let ops = random_history(&mut rng);
        let linearizable = brute_force_linearizable(&ops);
        for start in 0..22 {
            for end in (start..28).chain([NEVER]) {
                if window(&ops, start, end, 1000).fails(&limits()) {
                    failing_windows += 1;
                    assert!(
                        !linearizable,
                        "case {case}: window [{start}, {end}] fails on linearizable {ops:?}"
                    );
                }
            }
        }
    }
    assert!(failing_windows > 3_000, "{failing_windows} failing windows");
}
