//! How fast the checker decides large single-key histories (a measurement, not a test):
//! `cargo run --release -p check --example checker_perf`.
//!
//! Histories come from a real register driven by 8 sequential clients on ONE key (the worst
//! contention `check` can produce), operations 1 to 21 us long, half writes. Variants: all
//! writes done; a tenth of the writes indeterminate (half of them applied); and the latter
//! with one stale read appended at the end or in the middle.

use std::time::{Duration, Instant};

use check::{check_history, History, OpKind, Operation, Outcome};

/// Xorshift64: enough randomness for shaping a history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `n` operations of 8 sequential clients on key "k"; every `indeterminate_every`-th
/// operation that is a write has an unknown outcome (0: none).
fn history(n: usize, indeterminate_every: usize, seed: u64) -> Vec<Operation> {
    let mut rng = Rng(seed);
    let mut free_at = [0u64; 8];
    let mut plan = Vec::with_capacity(n);
    for i in 0..n {
        let client = i % 8;
        let invoked = free_at[client] + 1 + rng.next() % 3;
        let completed = invoked + 1 + rng.next() % 20;
        let point = invoked + rng.next() % (completed - invoked + 1);
        free_at[client] = completed;
        plan.push((point, client, invoked, completed));
    }
    plan.sort_unstable();
    let mut state: Option<String> = None;
    let mut ops = Vec::with_capacity(n + 1);
    for (i, (_, client, invoked, completed)) in plan.into_iter().enumerate() {
        let r = rng.next();
        let value = format!("v{i}");
        let (kind, outcome) = if r % 2 == 1 {
            (OpKind::Get, Outcome::Read(state.clone()))
        } else if indeterminate_every > 0 && i % indeterminate_every == 0 {
            if (r >> 8).is_multiple_of(2) {
                state = Some(value.clone());
            }
            (OpKind::Put { value }, Outcome::Indeterminate)
        } else {
            state = Some(value.clone());
            (OpKind::Put { value }, Outcome::Done)
        };
        ops.push(Operation {
            client,
            key: "k".into(),
            kind,
            invoked: Duration::from_micros(invoked),
            completed: Duration::from_micros(completed),
            outcome,
            note: String::new(),
        });
    }
    ops
}

/// Appends a read, right after the operation completing `at`-th, of a value overwritten
/// about 200 operations earlier.
fn with_stale_read(mut ops: Vec<Operation>, at: usize) -> Vec<Operation> {
    ops.sort_by_key(|o| o.completed);
    let after = ops[at].completed;
    let old =
        ops[..at.saturating_sub(200)]
            .iter()
            .rev()
            .find_map(|o| match (&o.kind, &o.outcome) {
                (OpKind::Put { value }, Outcome::Done) => Some(value.clone()),
                _ => None,
            });
    ops.push(Operation {
        client: 9,
        key: "k".into(),
        kind: OpKind::Get,
        invoked: after + Duration::from_micros(1),
        completed: after + Duration::from_micros(3),
        outcome: Outcome::Read(old),
        note: String::new(),
    });
    ops
}

fn measure(name: &str, mut ops: Vec<Operation>) {
    ops.sort_by_key(|o| o.invoked);
    let count = ops.len();
    let history = History { ops };
    let started = Instant::now();
    let report = check_history(&history);
    let window = report.violations.first().map_or(0, |v| v.window.len());
    println!(
        "{name:<28} ops={count:<6} {:?} in {:.3}s window={window}",
        report.verdict(),
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    for n in [5_000, 20_000, 60_000] {
        measure("all done", history(n, 0, 7));
        measure("10% writes indeterminate", history(n, 10, 7));
        measure(
            "stale read at the end",
            with_stale_read(history(n, 10, 7), n - 1),
        );
        measure(
            "stale read in the middle",
            with_stale_read(history(n, 10, 7), n / 2),
        );
    }
}
