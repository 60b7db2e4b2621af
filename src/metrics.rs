//! `GET /metrics`: Prometheus text exposition of the node's state and of the answers the client
//! API gave (so the share of 503 and 504 is visible without reading logs).
//!
//! Counting an answer is one relaxed atomic increment; the rest is rendered on request from a
//! status report.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use engine::Status;

/// Status codes counted one by one; anything else counts as `other`.
const CODES: [u16; 12] = [200, 204, 400, 404, 405, 408, 409, 410, 413, 503, 504, 507];

/// Answers given by the client API, by status code.
#[derive(Debug, Default)]
pub struct Metrics {
    by_code: [AtomicU64; CODES.len()],
    other: AtomicU64,
}

impl Metrics {
    /// Counts one answer.
    pub fn record(&self, status: u16) {
        let counter = CODES
            .iter()
            .position(|c| *c == status)
            .map_or(&self.other, |i| &self.by_code[i]);
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text for `report`, `keys` in the state machine and `waiting` clients.
    pub fn render(
        &self,
        report: &Status,
        keys: usize,
        waiting: usize,
        certs: &[(&str, i64)],
    ) -> String {
        let mut out = String::new();
        let id = report.id;
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP raftexample_{name} {help}");
            let _ = writeln!(out, "# TYPE raftexample_{name} gauge");
            let _ = writeln!(out, "raftexample_{name}{{id=\"{id}\"}} {value}");
        };
        gauge("term", "Current raft term.", report.term);
        gauge(
            "leader",
            "ID of the known leader, 0 if none.",
            report.leader,
        );
        gauge(
            "is_leader",
            "1 if this node leads.",
            u64::from(report.leader == id),
        );
        gauge("commit_index", "Raft commit index.", report.commit_index);
        gauge(
            "applied_index",
            "Index applied to the state machine.",
            report.applied_index,
        );
        gauge("last_index", "Last raft log index.", report.last_index);
        gauge(
            "snapshot_index",
            "Index of the newest snapshot.",
            report.snapshot_index,
        );
        gauge("voters", "Voting members.", report.voters.len() as u64);
        gauge("learners", "Learners.", report.learners.len() as u64);
        gauge("keys", "Keys in the state machine.", keys as u64);
        gauge(
            "diverged_members",
            "Members whose state digest differed from the majority's at a divergence check.",
            report.diverged.len() as u64,
        );
        gauge(
            "self_diverged",
            "1 if this member's own state diverged from the majority's.",
            u64::from(report.diverged.iter().any(|d| d.id == id)),
        );
        gauge(
            "digest_check_index",
            "Index of the newest divergence check a majority agreed on.",
            report.digest_check_index,
        );
        gauge(
            "waiting_requests",
            "Clients waiting for their entry to apply.",
            waiting as u64,
        );
        let _ = writeln!(
            out,
            "# HELP raftexample_dropped_messages_total Peer messages dropped (full queues).\n\
             # TYPE raftexample_dropped_messages_total counter\n\
             raftexample_dropped_messages_total{{id=\"{id}\"}} {}",
            report.dropped_messages
        );
        let _ = writeln!(
            out,
            "# HELP raftexample_snapshot_cpu_seconds_total CPU time spent building snapshots \
             (the snapshot threads' own clocks).\n\
             # TYPE raftexample_snapshot_cpu_seconds_total counter\n\
             raftexample_snapshot_cpu_seconds_total{{id=\"{id}\"}} {}.{:06}",
            report.snapshot_cpu_micros / 1_000_000,
            report.snapshot_cpu_micros % 1_000_000
        );
        let _ = writeln!(
            out,
            "# HELP raftexample_read_index_duplicates_total ReadIndex requests this leader got \
             with a context already pending (raft drops them; must stay 0).\n\
             # TYPE raftexample_read_index_duplicates_total counter\n\
             raftexample_read_index_duplicates_total{{id=\"{id}\"}} {}",
            report.duplicate_read_contexts
        );
        let _ = writeln!(
            out,
            "# HELP raftexample_peer_refused_total Peer requests refused, by reason.\n\
             # TYPE raftexample_peer_refused_total counter"
        );
        for (reason, n) in &report.peer_refused {
            let _ = writeln!(
                out,
                "raftexample_peer_refused_total{{id=\"{id}\",reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP raftexample_http_responses_total Client API answers by status code.\n\
             # TYPE raftexample_http_responses_total counter"
        );
        for (code, counter) in CODES.iter().zip(&self.by_code) {
            let n = counter.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "raftexample_http_responses_total{{id=\"{id}\",code=\"{code}\"}} {n}"
            );
        }
        let n = self.other.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "raftexample_http_responses_total{{id=\"{id}\",code=\"other\"}} {n}"
        );
        if !certs.is_empty() {
            let _ = writeln!(
                out,
                "# HELP raftexample_tls_cert_expiry_seconds When the certificate in use on a \
                 port expires, in seconds since the epoch.\n\
                 # TYPE raftexample_tls_cert_expiry_seconds gauge"
            );
            for (port, at) in certs {
                let _ = writeln!(
                    out,
                    "raftexample_tls_cert_expiry_seconds{{id=\"{id}\",port=\"{port}\"}} {at}"
                );
            }
        }
        out
    }
}
