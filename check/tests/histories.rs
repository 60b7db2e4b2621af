//! The checker against hand-made histories: linearizable ones must pass, non-linearizable
//! ones must be caught with a small window, and histories generated from a real sequential
//! register execution must always pass.

use std::time::Duration;

use check::{
    check_history, check_history_with, CheckLimits, History, OpKind, Operation, Outcome, Verdict,
};
use proptest::prelude::*;

/// Builds operations on key "k" with times in milliseconds.
fn op(client: usize, kind: OpKind, from_ms: u64, to_ms: u64, outcome: Outcome) -> Operation {
    Operation {
        client,
        key: "k".to_string(),
        kind,
        invoked: Duration::from_millis(from_ms),
        completed: Duration::from_millis(to_ms),
        outcome,
        note: String::new(),
    }
}

fn put(client: usize, value: &str, from: u64, to: u64) -> Operation {
    let kind = OpKind::Put {
        value: value.into(),
    };
    op(client, kind, from, to, Outcome::Done)
}

fn put_with(client: usize, value: &str, from: u64, to: u64, outcome: Outcome) -> Operation {
    let kind = OpKind::Put {
        value: value.into(),
    };
    op(client, kind, from, to, outcome)
}

fn get(client: usize, from: u64, to: u64, seen: Option<&str>) -> Operation {
    let outcome = Outcome::Read(seen.map(str::to_string));
    op(client, OpKind::Get, from, to, outcome)
}

fn delete(client: usize, from: u64, to: u64, outcome: Outcome) -> Operation {
    op(client, OpKind::Delete, from, to, outcome)
}

fn history(mut ops: Vec<Operation>) -> History {
    ops.sort_by_key(|op| op.invoked);
    History { ops }
}

fn assert_linearizable(ops: Vec<Operation>) {
    let report = check_history(&history(ops));
    assert_eq!(
        report.verdict(),
        Verdict::Linearizable,
        "{}",
        report.details()
    );
    assert_eq!(report.exit_code(), 0);
}

/// Asserts a violation on key "k" and returns its window as (client, kind) pairs.
fn assert_violation(ops: Vec<Operation>) -> Vec<Operation> {
    let report = check_history(&history(ops));
    assert_eq!(report.verdict(), Verdict::Violation);
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.violations.len(), 1);
    assert_eq!(report.violations[0].key, "k");
    assert!(report
        .summary_line()
        .contains("result=violation key=k window=["));
    report.violations[0].window.clone()
}

#[test]
fn overlapping_writes_and_reads_are_linearizable() {
    // Intent: concurrent writes may take effect in either order; reads inside the overlap may
    // see either, as long as one order explains all of them.
    assert_linearizable(vec![
        put(1, "a", 0, 10),
        put(2, "b", 5, 15),
        get(3, 6, 8, Some("b")),
        get(4, 9, 12, Some("a")),
        get(3, 16, 17, Some("a")),
    ]);
}

#[test]
fn read_before_any_write_sees_absent_and_deletes_clear() {
    // Intent: a key starts absent; a done delete makes it absent again.
    assert_linearizable(vec![
        get(1, 0, 1, None),
        put(1, "a", 2, 3),
        delete(2, 4, 5, Outcome::Done),
        get(1, 6, 7, None),
    ]);
}

#[test]
fn indeterminate_write_that_took_effect_is_linearizable() {
    // Intent: a 504'd write may have happened; a later read of its value is fine, even one
    // that started long after the client gave up.
    assert_linearizable(vec![
        put(1, "a", 0, 1),
        put_with(2, "b", 2, 3, Outcome::Indeterminate),
        get(3, 4, 5, Some("a")),
        get(3, 100, 101, Some("b")),
        get(1, 102, 103, Some("b")),
    ]);
}

#[test]
fn indeterminate_write_that_never_took_effect_is_linearizable() {
    // Intent: a 504'd write may also never happen; reads keep seeing the value before it.
    assert_linearizable(vec![
        put(1, "a", 0, 1),
        put_with(2, "b", 2, 3, Outcome::Indeterminate),
        get(3, 10, 11, Some("a")),
        get(3, 12, 13, Some("a")),
    ]);
}

#[test]
fn indeterminate_delete_may_explain_an_absent_read() {
    // Intent: a delete with an unknown outcome is an indeterminate write of "absent".
    assert_linearizable(vec![
        put(1, "a", 0, 1),
        delete(2, 2, 3, Outcome::Indeterminate),
        get(3, 10, 11, Some("a")),
        get(3, 12, 13, None),
    ]);
}

#[test]
fn write_known_not_applied_and_never_seen_is_linearizable() {
    // Intent: a 503'd write whose value nobody reads is simply not there; failed reads are
    // dropped whatever they would have said.
    assert_linearizable(vec![
        put(1, "a", 0, 1),
        put_with(2, "b", 2, 3, Outcome::NotApplied),
        op(3, OpKind::Get, 2, 3, Outcome::Failed),
        get(3, 4, 5, Some("a")),
    ]);
}

#[test]
fn stale_read_after_a_completed_write_is_caught_with_a_small_window() {
    // Intent: a read that starts after "b" was acknowledged cannot return the older "a";
    // the window is the acknowledged write and the stale read, after the earlier write.
    let window = assert_violation(vec![
        put(1, "a", 0, 1),
        put(2, "b", 2, 3),
        get(3, 4, 5, Some("a")),
    ]);
    assert_eq!(window, vec![put(2, "b", 2, 3), get(3, 4, 5, Some("a"))]);
}

#[test]
fn read_of_a_never_written_value_is_caught() {
    // Intent: a value no write carried cannot be read; the read alone is the witness.
    let window = assert_violation(vec![put(1, "a", 0, 1), get(2, 2, 3, Some("zzz"))]);
    assert_eq!(window, vec![get(2, 2, 3, Some("zzz"))]);
}

#[test]
fn read_of_a_write_known_not_applied_is_caught() {
    // Intent: a 503 promises the write did not happen; seeing its value is a violation.
    let ops = vec![
        put(1, "a", 0, 1),
        put_with(2, "b", 2, 3, Outcome::NotApplied),
        get(3, 4, 5, Some("b")),
    ];
    let report = check_history(&history(ops.clone()));
    assert_eq!(assert_violation(ops), vec![get(3, 4, 5, Some("b"))]);
    // The report names the 503'd write as where the value came from, and the last write
    // done before the window.
    assert_eq!(
        report.violations[0].context,
        vec![
            put_with(2, "b", 2, 3, Outcome::NotApplied),
            put(1, "a", 0, 1)
        ]
    );
    assert!(report
        .details()
        .contains("context, outside the window: c2 put k \"b\""));
}

#[test]
fn reads_going_back_in_time_are_caught() {
    // Intent: once a read saw the newer "b", a later read must not see the older "a", even
    // while b's write is still in flight.
    let window = assert_violation(vec![
        put(1, "a", 0, 1),
        put(2, "b", 2, 20),
        get(3, 3, 4, Some("b")),
        get(4, 5, 6, Some("a")),
    ]);
    assert!(window.contains(&get(4, 5, 6, Some("a"))));
    assert!(window.contains(&get(3, 3, 4, Some("b"))));
}

#[test]
fn indeterminate_write_seen_then_unseen_is_caught() {
    // Intent: an indeterminate write, once read, happened; the older value cannot come back.
    assert_violation(vec![
        put(1, "a", 0, 1),
        put_with(2, "b", 2, 3, Outcome::Indeterminate),
        get(3, 4, 5, Some("b")),
        get(3, 6, 7, Some("a")),
    ]);
}

#[test]
fn absent_read_after_a_completed_write_is_caught() {
    // Intent: without deletes, a written key never reads absent again.
    let window = assert_violation(vec![put(1, "a", 0, 1), get(2, 2, 3, None)]);
    assert_eq!(window, vec![get(2, 2, 3, None)]);
}

#[test]
fn window_of_a_late_violation_in_a_long_history_is_small() {
    // Intent: shrinking drops the long linearizable past and reports only the operations
    // that show the stale read.
    let mut ops = Vec::new();
    for i in 0..2000u64 {
        ops.push(put(1, &format!("v{i}"), 10 * i, 10 * i + 3));
        ops.push(get(2, 10 * i + 4, 10 * i + 6, Some(&format!("v{i}"))));
    }
    ops.push(get(3, 20_001, 20_002, Some("v1000")));
    let report = check_history(&history(ops));
    assert_eq!(report.verdict(), Verdict::Violation);
    let violation = &report.violations[0];
    assert!(violation.window.len() <= 3, "{}", report.details());
    assert!(violation
        .window
        .contains(&get(3, 20_001, 20_002, Some("v1000"))));
    assert!(violation.earlier_ops >= 3990);
}

#[test]
fn keys_are_checked_independently() {
    // Intent: the same value pattern on two keys does not mix; only the bad key is named.
    let mut bad = vec![put(1, "a", 0, 1), get(2, 2, 3, None)];
    for o in &mut bad {
        o.key = "bad".into();
    }
    let mut ops = vec![put(1, "x", 0, 1), get(2, 2, 3, Some("x"))];
    ops.extend(bad);
    let report = check_history(&history(ops));
    assert_eq!(report.keys, 2);
    assert_eq!(report.violations.len(), 1);
    assert_eq!(report.violations[0].key, "bad");
}

#[test]
fn exhausted_budget_reports_unknown() {
    // Intent: a search that runs out of steps says "unknown" (exit 2) instead of hanging or
    // guessing.
    let ops = (0..30u64)
        .map(|i| put(1, &format!("v{i}"), 0, 100))
        .chain([get(2, 101, 102, Some("nope"))])
        .collect();
    let tight = CheckLimits {
        max_steps: 100,
        ..CheckLimits::default()
    };
    let report = check_history_with(&history(ops), &tight);
    assert_eq!(report.verdict(), Verdict::Unknown);
    assert_eq!(report.exit_code(), 2);
    assert!(report.summary_line().contains("result=unknown"));
}

#[test]
fn summary_line_has_the_documented_shape() {
    // Intent: the one stdout line carries ops, indeterminate share, violations and result.
    let report = check_history(&history(vec![
        put(1, "a", 0, 1),
        put_with(2, "b", 2, 3, Outcome::Indeterminate),
        get(3, 4, 5, Some("a")),
        get(3, 6, 7, Some("a")),
    ]));
    assert_eq!(
        report.summary_line(),
        "check: ops=4 indeterminate=1 (25.00%) violations=0 result=linearizable"
    );
}

#[test]
fn many_concurrent_clients_on_one_key_check_quickly() {
    // Intent: a contended key with thousands of operations (8 overlapping clients) is decided,
    // not left "unknown": the memoised search stays near-linear on linearizable histories.
    let history = history(sequential_execution(&generated_steps(6000, 8), 8));
    let report = check_history(&history);
    assert_eq!(
        report.verdict(),
        Verdict::Linearizable,
        "{}",
        report.details()
    );
}

#[test]
fn violation_in_a_long_contended_history_gets_a_small_window() {
    // Intent: with 8 overlapping clients there is never a quiet moment to cut at, yet the
    // window reported around a stale read in the middle of 6000 operations stays small.
    let mut ops = sequential_execution(&generated_steps(6000, 8), 1);
    ops.sort_by_key(|o| o.completed);
    let middle = ops[3000].completed;
    let overwritten = ops[..2900]
        .iter()
        .rev()
        .find_map(|o| match (&o.kind, &o.outcome) {
            (OpKind::Put { value }, Outcome::Done) => Some(value.clone()),
            _ => None,
        })
        .expect("a done write");
    let mut stale = get(9, 0, 0, Some(&overwritten));
    stale.key = "k0".into();
    stale.invoked = middle + Duration::from_micros(1);
    stale.completed = middle + Duration::from_micros(2);
    ops.push(stale.clone());
    let report = check_history(&history(ops));
    assert_eq!(report.verdict(), Verdict::Violation);
    let window = &report.violations[0].window;
    assert!(window.contains(&stale), "{}", report.details());
    assert!(window.len() <= 16, "{}", report.details());
}

/// One step of a sequential register execution: which operation, and how far its interval
/// reaches before and after its linearization point (in microseconds).
#[derive(Debug, Clone)]
struct Step {
    key: usize,
    action: Action,
    before_us: u64,
    after_us: u64,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Put,
    PutIndeterminateApplied,
    PutIndeterminateLost,
    PutNotApplied,
    Get,
    GetFailed,
    Delete,
}

const ACTIONS: [Action; 7] = [
    Action::Put,
    Action::PutIndeterminateApplied,
    Action::PutIndeterminateLost,
    Action::PutNotApplied,
    Action::Get,
    Action::GetFailed,
    Action::Delete,
];

/// Linearization points are 10 µs apart; every interval contains its point, so real-time
/// order is the execution's order wherever intervals do not overlap.
fn sequential_execution(steps: &[Step], keys: usize) -> Vec<Operation> {
    let mut state: Vec<Option<String>> = vec![None; keys];
    let mut ops = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let point = 1000 + 10 * i as u64;
        let value = format!("v{i}");
        let (kind, outcome) = match step.action {
            Action::Put | Action::PutIndeterminateApplied => {
                state[step.key] = Some(value.clone());
                let outcome = match step.action {
                    Action::Put => Outcome::Done,
                    _ => Outcome::Indeterminate,
                };
                (OpKind::Put { value }, outcome)
            }
            Action::PutIndeterminateLost => (OpKind::Put { value }, Outcome::Indeterminate),
            Action::PutNotApplied => (OpKind::Put { value }, Outcome::NotApplied),
            Action::Get => (OpKind::Get, Outcome::Read(state[step.key].clone())),
            Action::GetFailed => (OpKind::Get, Outcome::Failed),
            Action::Delete => {
                state[step.key] = None;
                (OpKind::Delete, Outcome::Done)
            }
        };
        ops.push(Operation {
            client: i % 8,
            key: format!("k{}", step.key),
            kind,
            invoked: Duration::from_micros(point - step.before_us.min(point)),
            completed: Duration::from_micros(point + step.after_us),
            outcome,
            note: String::new(),
        });
    }
    ops
}

/// Deterministic steps on one key with overlap of up to `overlap` neighbours on each side.
fn generated_steps(count: usize, overlap: u64) -> Vec<Step> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|_| Step {
            key: 0,
            action: [Action::Put, Action::Get, Action::Get, Action::Put][(next() % 4) as usize],
            before_us: next() % (10 * overlap),
            after_us: next() % (10 * overlap),
        })
        .collect()
}

fn step_strategy(keys: usize) -> impl Strategy<Value = Step> {
    (0..keys, 0..ACTIONS.len(), 0u64..60, 0u64..60).prop_map(|(key, a, before_us, after_us)| Step {
        key,
        action: ACTIONS[a],
        before_us,
        after_us,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn histories_of_a_real_register_are_linearizable(
        steps in proptest::collection::vec(step_strategy(3), 0..120)
    ) {
        // Intent: any history produced by a sequential register, with intervals stretched
        // around the linearization points, with lost and 503'd writes and failed reads, is
        // accepted.
        let history = history(sequential_execution(&steps, 3));
        let report = check_history(&history);
        prop_assert_eq!(report.verdict(), Verdict::Linearizable, "{}", report.details());
    }
}

/// Appends to `ops` a read on key "k0", after everything, of a value whose done write was
/// followed (strictly in real time) by another done write on "k0": a stale read no order can
/// explain. None when the history has no such pair.
fn with_stale_read(mut ops: Vec<Operation>) -> Option<Vec<Operation>> {
    let done_write = |o: &&Operation| o.key == "k0" && o.outcome == Outcome::Done;
    let stale = ops.iter().filter(done_write).find_map(|old| {
        let OpKind::Put { value } = &old.kind else {
            return None;
        };
        let overwritten = ops
            .iter()
            .filter(done_write)
            .any(|newer| newer.invoked > old.completed);
        overwritten.then(|| value.clone())
    })?;
    let end = ops.iter().map(|o| o.completed).max()? + Duration::from_micros(10);
    let mut read = get(9, 0, 0, Some(&stale));
    read.key = "k0".into();
    read.invoked = end;
    read.completed = end + Duration::from_micros(5);
    ops.push(read);
    Some(ops)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_stale_read_appended_to_a_real_register_history_is_caught(
        steps in proptest::collection::vec(step_strategy(2), 0..120)
    ) {
        // Intent: the checker is not just permissive: a read of an overwritten value after
        // everything else is always found, and the window shown contains that read.
        let ops = with_stale_read(sequential_execution(&steps, 2));
        prop_assume!(ops.is_some());
        let ops = ops.unwrap_or_default();
        let last = ops.last().cloned();
        let report = check_history(&history(ops));
        prop_assert_eq!(report.verdict(), Verdict::Violation);
        prop_assert_eq!(&report.violations[0].key, "k0");
        prop_assert!(last.is_some_and(|last| report.violations[0].window.contains(&last)));
    }
}
