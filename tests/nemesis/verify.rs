//! What a nemesis run proves after the faults: durability of acknowledged writes and the
//! final reads that join the checked history.
//!
//! - [`WriteOnce`]: clients (one per client slot) that write keys nobody else writes, each
//!   exactly once. At the end every acknowledged (2xx) write MUST be on every replica
//!   with its value, and every write known not applied (503, 4xx, never sent) MUST be on none.
//! - [`final_reads`]: a linearizable GET of every workload key on every member after the run,
//!   appended to the history as reads that follow every operation, so the checker also judges
//!   the final state.
//! - [`lost_acknowledged`]: the acknowledged workload writes that the final state contradicts
//!   outright (a direct count; the checker's verdict covers them too).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use check::{History, OpKind, Operation, Outcome};

use crate::cluster::{poll, Cluster, SLOW};
use crate::http::{call, Exchange};

/// Per-request timeout of the write-once client: past the node's own request deadline, so
/// that a live node answers 504 before the client gives up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(4);
/// Pause between two write-once writes (a pace, not a wait for anything).
const WRITE_PACE: Duration = Duration::from_millis(50);

/// How a write-once write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WoOutcome {
    /// 2xx: it happened.
    Acked,
    /// 503, 4xx or never sent: it did not happen.
    NotApplied,
    /// 504, timeout, connection lost: unknown.
    Indeterminate,
}

/// One write-once write.
#[derive(Debug, Clone)]
pub struct WoWrite {
    /// Its key, written by nobody else.
    pub key: String,
    /// Its value.
    pub value: String,
    /// How it ended.
    pub outcome: WoOutcome,
    /// The answer, for people.
    pub note: String,
}

/// The write-once clients, one thread per client slot (so that a slot stalled by a paused
/// node does not stall the others), running until [`WriteOnce::stop`].
pub struct WriteOnce {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Vec<WoWrite>>>,
}

impl WriteOnce {
    /// Starts writing `wo-<tag>-<slot>-<n>` keys, one thread per slot.
    pub fn start(slots: Vec<SocketAddr>, tag: String) -> WriteOnce {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let threads = slots
            .into_iter()
            .enumerate()
            .map(|(slot, addr)| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let prefix = format!("wo-{tag}-{slot}");
                std::thread::spawn(move || write_once_client(addr, &prefix, &stop, &acked))
            })
            .collect();
        WriteOnce {
            stop,
            acked,
            threads,
        }
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` further writes were acknowledged: the cluster serves writes.
    pub fn wait_progress(&self, more: usize, c: &Cluster) {
        let want = self.acked() + more;
        if poll(SLOW, || (self.acked() >= want).then_some(())).is_none() {
            panic!(
                "no {more} acknowledged writes within {SLOW:?}: the cluster does not serve\n{}",
                c.dump()
            );
        }
    }

    /// Stops the clients and returns every write they made.
    pub fn stop(self) -> Vec<WoWrite> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().expect("write-once thread"))
            .collect()
    }
}

/// One write-once client: keys `<prefix>-<n>` through `addr` until `stop`.
fn write_once_client(
    addr: SocketAddr,
    prefix: &str,
    stop: &AtomicBool,
    acked: &AtomicUsize,
) -> Vec<WoWrite> {
    let mut writes = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{prefix}-{n}");
        let value = format!("{key}-v");
        let sent = call(
            addr,
            "PUT",
            &format!("/{key}"),
            value.as_bytes(),
            WRITE_TIMEOUT,
        );
        let (outcome, note) = match sent {
            Exchange::Reply(r) if (200..300).contains(&r.status) => {
                (WoOutcome::Acked, r.status.to_string())
            }
            Exchange::Reply(r) if r.status == 503 || (400..500).contains(&r.status) => {
                (WoOutcome::NotApplied, format!("{} {}", r.status, r.text()))
            }
            Exchange::Reply(r) => (
                WoOutcome::Indeterminate,
                format!("{} {}", r.status, r.text()),
            ),
            Exchange::NotSent(e) => (WoOutcome::NotApplied, format!("not sent: {e}")),
            Exchange::Lost(e) => (WoOutcome::Indeterminate, format!("lost: {e}")),
        };
        if outcome == WoOutcome::Acked {
            acked.fetch_add(1, Ordering::Relaxed);
        }
        writes.push(WoWrite {
            key,
            value,
            outcome,
            note,
        });
        n += 1;
        std::thread::sleep(WRITE_PACE);
    }
    writes
}

/// The verdict on the write-once keys.
#[derive(Debug, Default)]
pub struct WoReport {
    /// Writes made.
    pub total: usize,
    /// Acknowledged writes.
    pub acked: usize,
    /// Writes with an unknown outcome, and how many of them took effect.
    pub indeterminate: usize,
    /// Indeterminate writes found present.
    pub indeterminate_present: usize,
    /// Writes known not applied.
    pub not_applied: usize,
    /// Acknowledged writes missing (or wrong) on some replica: `key@node: found`.
    pub lost: Vec<String>,
    /// Writes known not applied that are visible on some replica.
    pub phantom: Vec<String>,
    /// Indeterminate writes present on some replicas and not others.
    pub divergent: Vec<String>,
}

/// Reads every write-once key on every member (serializable: the replica's own state, after
/// convergence) and judges each write by its outcome.
pub fn verify_write_once(c: &Cluster, writes: &[WoWrite]) -> WoReport {
    let mut report = WoReport {
        total: writes.len(),
        ..WoReport::default()
    };
    let ids = c.ids();
    for w in writes {
        let mut seen = BTreeSet::new();
        for id in &ids {
            let found = read(c, *id, &w.key, "?consistency=serializable");
            let ok = match w.outcome {
                WoOutcome::Acked => found.as_deref() == Some(w.value.as_str()),
                WoOutcome::NotApplied => found.is_none(),
                WoOutcome::Indeterminate => found.is_none() || found.as_deref() == Some(&w.value),
            };
            if !ok {
                let line = format!(
                    "{}@{id}: found {found:?} ({:?}, {})",
                    w.key, w.outcome, w.note
                );
                match w.outcome {
                    WoOutcome::NotApplied => report.phantom.push(line),
                    _ => report.lost.push(line),
                }
            }
            seen.insert(found.is_some());
        }
        match w.outcome {
            WoOutcome::Acked => report.acked += 1,
            WoOutcome::NotApplied => report.not_applied += 1,
            WoOutcome::Indeterminate => {
                report.indeterminate += 1;
                if seen.contains(&true) {
                    report.indeterminate_present += 1;
                }
                if seen.len() > 1 {
                    report.divergent.push(w.key.clone());
                }
            }
        }
    }
    report
}

/// GET `/{key}{query}` on member `id` until it answers 200 (the value) or 404 (`None`).
fn read(c: &Cluster, id: u64, key: &str, query: &str) -> Option<String> {
    let answer = poll(SLOW, || {
        let r = c
            .req(
                id,
                "GET",
                &format!("/{key}{query}"),
                b"",
                Duration::from_secs(5),
            )
            .reply()?;
        match r.status {
            200 => Some(Some(r.text())),
            404 => Some(None),
            _ => None,
        }
    });
    match answer {
        Some(value) => value,
        None => panic!(
            "GET /{key}{query} on node {id} never answered 200 or 404\n{}",
            c.dump()
        ),
    }
}

/// Appends to `history` a linearizable GET of each of its keys on every member, timed after
/// every operation of the run. Returns the value of each key as the first member read it.
pub fn final_reads(c: &Cluster, history: &mut History) -> BTreeMap<String, Option<String>> {
    let keys: BTreeSet<String> = history.ops.iter().map(|op| op.key.clone()).collect();
    let end = history
        .ops
        .iter()
        .map(|op| op.completed.max(op.invoked))
        .max()
        .unwrap_or_default();
    let mut at = end + Duration::from_secs(1);
    let mut finals = BTreeMap::new();
    for key in &keys {
        for id in c.ids() {
            let value = read(c, id, key, "");
            finals.entry(key.clone()).or_insert_with(|| value.clone());
            history.ops.push(Operation {
                client: 1_000_000 + id as usize,
                key: key.clone(),
                kind: OpKind::Get,
                invoked: at,
                completed: at + Duration::from_micros(1),
                outcome: Outcome::Read(value),
                note: format!("final read on node {id}"),
            });
            at += Duration::from_micros(2);
        }
    }
    finals
}

/// Acknowledged writes of `ops` that the final state `finals` contradicts outright: a write
/// that was acknowledged, was invoked after the write that produced the final state had
/// completed, and is not what the final state shows. Conservative: an indeterminate write
/// producing the final state may have taken effect at any time, so it hides nothing.
pub fn lost_acknowledged(
    ops: &[Operation],
    finals: &BTreeMap<String, Option<String>>,
) -> Vec<String> {
    let never = Duration::MAX;
    let mut lost = Vec::new();
    for (key, fin) in finals {
        let on_key: Vec<&Operation> = ops.iter().filter(|op| &op.key == key).collect();
        let effective_end = |op: &Operation| match op.outcome {
            Outcome::Done => Some(op.completed),
            Outcome::Indeterminate => Some(never),
            _ => None,
        };
        // When did the write that produced the final state surely complete?
        let source_done = match fin {
            Some(v) => on_key
                .iter()
                .find(|op| matches!(&op.kind, OpKind::Put { value } if value == v))
                .and_then(|op| effective_end(op))
                // A value nobody wrote (or a 503'd write): the checker reports it.
                .unwrap_or(never),
            None => on_key
                .iter()
                .filter(|op| op.kind == OpKind::Delete)
                .filter_map(|op| effective_end(op))
                .max()
                .unwrap_or(Duration::ZERO),
        };
        for op in &on_key {
            if op.outcome != Outcome::Done || op.invoked <= source_done {
                continue;
            }
            let contradicted = match (&op.kind, fin) {
                (OpKind::Put { value }, Some(v)) => value != v,
                (OpKind::Put { .. }, None) => true,
                (OpKind::Delete, Some(_)) => true,
                _ => false,
            };
            if contradicted {
                lost.push(format!("{op} but the final value is {fin:?}"));
            }
        }
    }
    lost
}
