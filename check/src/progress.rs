//! Live operation counters of a running workload, shared by the clients and the progress line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::history::{Counts, Outcome};

/// Counters the clients bump after every operation; read them at any time with
/// [`Progress::counts`].
#[derive(Debug, Default)]
pub struct Progress {
    ops: AtomicUsize,
    ok: AtomicUsize,
    indeterminate: AtomicUsize,
    unavailable: AtomicUsize,
    errors: AtomicUsize,
    /// Requests that got an HTTP answer of any status.
    answered: AtomicUsize,
}

impl Progress {
    /// Counts one finished operation; `answered` when an HTTP status came back.
    pub(crate) fn record(&self, outcome: &Outcome, answered: bool) {
        let counter = match outcome {
            Outcome::Done | Outcome::Read(_) => &self.ok,
            Outcome::Indeterminate => &self.indeterminate,
            Outcome::NotApplied => &self.unavailable,
            Outcome::Failed => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.ops.fetch_add(1, Ordering::Relaxed);
        if answered {
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts so far (each counter read separately, so they may be off by one in flight).
    pub fn counts(&self) -> Counts {
        Counts {
            ops: self.ops.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            indeterminate: self.indeterminate.load(Ordering::Relaxed),
            unavailable: self.unavailable.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// Requests that got an HTTP answer of any status.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }
}

/// The progress line, e.g. `check: 12s ops=3456 ok=3400 indeterminate=12 unavailable=44 errors=0`.
pub fn progress_line(elapsed: Duration, counts: &Counts) -> String {
    format!(
        "check: {}s ops={} ok={} indeterminate={} unavailable={} errors={}",
        elapsed.as_secs(),
        counts.ops,
        counts.ok,
        counts.indeterminate,
        counts.unavailable,
        counts.errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_counts_each_outcome_class() {
        // Intent: the line shows the documented fields in the documented format.
        let p = Progress::default();
        p.record(&Outcome::Done, true);
        p.record(&Outcome::Read(None), true);
        p.record(&Outcome::Indeterminate, false);
        p.record(&Outcome::NotApplied, false);
        p.record(&Outcome::Failed, true);
        assert_eq!(
            progress_line(Duration::from_millis(12_400), &p.counts()),
            "check: 12s ops=5 ok=2 indeterminate=1 unavailable=1 errors=1"
        );
        assert_eq!(p.answered(), 3);
    }
}
