//! The record of a run: every operation a client invoked, with its times and its outcome.
//!
//! A [`History`] is what the workload produces and what the checker consumes; a harness may
//! also build one by hand. Times are offsets from the start of the run on one monotonic
//! clock, so operations of different clients compare in real time.
//!
//! Invariants the checker relies on (and enforces defensively when they do not hold):
//! - `completed >= invoked` for every operation;
//! - within one run, every value written is unique (two writes never carry the same value).

use std::fmt;
use std::time::Duration;

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// `PUT /{key}` with this value as the body.
    Put {
        /// The value written; unique within the run.
        value: String,
    },
    /// `GET /{key}`.
    Get,
    /// `DELETE /kv/{key}`.
    Delete,
}

/// How an operation ended, as the client observed it (DESIGN.md section 2, outcome codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer to a PUT or DELETE: the write happened.
    Done,
    /// A GET answered 200 with `Some(value)`, or 404 with `None` (the key is absent).
    Read(Option<String>),
    /// Known NOT applied: 503, a 4xx rejection, or no connection could be made. The checker
    /// treats the operation as never having happened, so its value MUST never be read.
    NotApplied,
    /// A write whose fate is unknown: 504, a timeout, or a connection that failed after the
    /// request may have been sent. It may take effect at any time after its invocation, or
    /// never.
    Indeterminate,
    /// A GET that did not succeed: it carries no information and the checker drops it.
    Failed,
}

/// One operation of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The client that ran it (clients run one operation at a time).
    pub client: usize,
    /// The key it addressed.
    pub key: String,
    /// What it asked for.
    pub kind: OpKind,
    /// When the client sent it, from the start of the run.
    pub invoked: Duration,
    /// When the client stopped waiting for it. For an [`Outcome::Indeterminate`] write the
    /// checker ignores this and lets the write take effect at any later time.
    pub completed: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// What the client saw, for people: `"204"`, `"504"`, `"timeout"`, `"connection refused"`.
    pub note: String,
}

/// Every operation of a run, in invocation order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The operations, sorted by `invoked`.
    pub ops: Vec<Operation>,
}

/// Operation counts by outcome class, as the progress and summary lines print them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every operation.
    pub ops: usize,
    /// Writes done and reads answered (200 or 404).
    pub ok: usize,
    /// Writes with an unknown outcome.
    pub indeterminate: usize,
    /// Operations known not applied (503, rejected, connection refused).
    pub unavailable: usize,
    /// Reads that failed and carry no information.
    pub errors: usize,
}

impl Counts {
    /// Counts one operation that ended with `outcome`.
    pub fn add(&mut self, outcome: &Outcome) {
        self.ops += 1;
        match outcome {
            Outcome::Done | Outcome::Read(_) => self.ok += 1,
            Outcome::Indeterminate => self.indeterminate += 1,
            Outcome::NotApplied => self.unavailable += 1,
            Outcome::Failed => self.errors += 1,
        }
    }
}

impl History {
    /// Counts the operations by outcome class.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for op in &self.ops {
            counts.add(&op.outcome);
        }
        counts
    }
}

impl fmt::Display for Operation {
    /// One line for people, e.g. `c3 put ck-1f-2 "1f-3-17" 1.203110s..1.205034s done (204)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{} ", self.client)?;
        match &self.kind {
            OpKind::Put { value } => write!(f, "put {} {:?}", self.key, value)?,
            OpKind::Get => write!(f, "get {}", self.key)?,
            OpKind::Delete => write!(f, "delete {}", self.key)?,
        }
        write!(
            f,
            " {:.6}s..{:.6}s ",
            self.invoked.as_secs_f64(),
            self.completed.as_secs_f64()
        )?;
        match &self.outcome {
            Outcome::Done => write!(f, "done")?,
            Outcome::Read(Some(value)) => write!(f, "-> {value:?}")?,
            Outcome::Read(None) => write!(f, "-> absent")?,
            Outcome::NotApplied => write!(f, "not-applied")?,
            Outcome::Indeterminate => write!(f, "indeterminate")?,
            Outcome::Failed => write!(f, "failed")?,
        }
        if !self.note.is_empty() {
            write!(f, " ({})", self.note)?;
        }
        Ok(())
    }
}
