//! The checker's result and the lines `raftexample check` prints from it.

use std::fmt::Write as _;
use std::time::Duration;

use crate::history::{Counts, Operation};

/// What the checker concluded about a whole history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// At least one key's history is not linearizable.
    Violation,
    /// No violation found, but the search ran out of budget on at least one key.
    Unknown,
}

/// A key whose history is not linearizable, and a small window of its operations that shows
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// Operations on `key`, by invocation time, that cannot be linearized from any state the
    /// earlier operations could have left the key in (a witness on its own).
    pub window: Vec<Operation>,
    /// Where the window begins. An operation of the window invoked before this is a write
    /// that was still running then: it may have taken effect before the window or in it.
    pub start: Duration,
    /// How many operations on `key` completed before the window began.
    pub earlier_ops: usize,
    /// For people, operations outside the window that explain it: the writes of values the
    /// window's reads returned, whatever their outcome (e.g. a 503'd write whose value was
    /// read anyway), and the last write done before the window.
    pub context: Vec<Operation>,
}

/// The result of [`crate::check_history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Operations by outcome class.
    pub counts: Counts,
    /// Keys checked.
    pub keys: usize,
    /// One entry per key found not linearizable, by key.
    pub violations: Vec<Violation>,
    /// Keys whose search ran out of budget (neither proven nor refuted).
    pub unknown_keys: Vec<String>,
}

impl Report {
    /// The overall verdict: a violation anywhere wins over an unknown key.
    pub fn verdict(&self) -> Verdict {
        if !self.violations.is_empty() {
            Verdict::Violation
        } else if !self.unknown_keys.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Linearizable
        }
    }

    /// `raftexample check`'s exit code: 0 linearizable, 1 violation, 2 unknown.
    pub fn exit_code(&self) -> i32 {
        match self.verdict() {
            Verdict::Linearizable => 0,
            Verdict::Violation => 1,
            Verdict::Unknown => 2,
        }
    }

    /// The one summary line, e.g.
    /// `check: ops=12345 indeterminate=23 (0.19%) violations=0 result=linearizable`; for a
    /// violation it goes on with the first violated key and its window, `;`-separated.
    pub fn summary_line(&self) -> String {
        let c = &self.counts;
        let share = if c.ops == 0 {
            0.0
        } else {
            100.0 * c.indeterminate as f64 / c.ops as f64
        };
        let mut line = format!(
            "check: ops={} indeterminate={} ({share:.2}%) violations={} result=",
            c.ops,
            c.indeterminate,
            self.violations.len()
        );
        match self.verdict() {
            Verdict::Linearizable => line.push_str("linearizable"),
            Verdict::Unknown => {
                let _ = write!(
                    line,
                    "unknown (search budget exceeded on keys {})",
                    self.unknown_keys.join(",")
                );
            }
            Verdict::Violation => {
                let v = &self.violations[0];
                let ops: Vec<String> = v.window.iter().map(|op| op.to_string()).collect();
                let _ = write!(line, "violation key={} window=[{}]", v.key, ops.join("; "));
            }
        }
        line
    }

    /// Every violation, one operation per line, for people (stderr).
    pub fn details(&self) -> String {
        let mut out = String::new();
        for v in &self.violations {
            let _ = writeln!(
                out,
                "check: key {} is not linearizable: no order of these {} operations works, from \
                 any state the {} operations done before {:.6}s could have left:",
                v.key,
                v.window.len(),
                v.earlier_ops,
                v.start.as_secs_f64()
            );
            for op in &v.window {
                let note = if op.invoked < v.start {
                    "   [still running at the window start: may have taken effect before it]"
                } else {
                    ""
                };
                let _ = writeln!(out, "  {op}{note}");
            }
            for op in &v.context {
                let _ = writeln!(out, "  context, outside the window: {op}");
            }
        }
        out
    }
}
