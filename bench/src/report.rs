//! Counting outcomes and latencies, and printing the one-line result.
//!
//! Each client keeps its own [`Stats`] (no sharing on the hot path); the run merges them.
//! Latency is recorded for successful (2xx) requests only, in microseconds, in an
//! hdrhistogram with 3 significant digits.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::client::Outcome;
use crate::verify::Verification;

/// Highest latency the histogram resolves; longer ones are recorded as this (requests time
/// out well before).
const MAX_LATENCY_US: u64 = 600_000_000;

/// Outcome counts and the latency histogram of some requests.
#[derive(Debug, Clone)]
pub struct Stats {
    latency_us: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant bounds satisfy low >= 1, high >= 2 * low, sigfig <= 5"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Stats {
    /// Counts one request that took `took`.
    pub fn record(&mut self, outcome: Outcome, took: Duration) {
        let label = match outcome {
            Outcome::Status(code) if (200..300).contains(&code) => {
                self.ok += 1;
                let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                self.latency_us.saturating_record(us.max(1));
                return;
            }
            Outcome::Status(code) => code.to_string(),
            Outcome::Timeout => "timeout".to_owned(),
            Outcome::Connect => "connect".to_owned(),
            Outcome::Io => "io".to_owned(),
        };
        *self.errors.entry(label).or_default() += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Stats) {
        self.ok += other.ok;
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        for (label, n) in &other.errors {
            *self.errors.entry(label.clone()).or_default() += n;
        }
    }

    /// Successful (2xx) requests.
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// Failed requests by label: status code, `timeout`, `connect` or `io`.
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The latency at `quantile` (0..=1) of successful requests, in milliseconds.
    fn ms_at(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1000.0
    }
}

/// Which bound ended the timed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedBy {
    /// `--duration` elapsed.
    Duration,
    /// `--requests` were all issued.
    Requests,
}

/// The result of one timed run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Mode name (`put`, `get`, `get-serializable`).
    pub mode: &'static str,
    /// Concurrent closed-loop clients.
    pub connections: usize,
    /// Endpoints the clients were spread over.
    pub endpoints: Vec<String>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Which bound ended the run.
    pub stopped_by: StoppedBy,
    /// Everything counted.
    pub stats: Stats,
    /// The `--verify` result (put mode).
    pub verification: Option<Verification>,
}

impl Report {
    /// Successful requests per second of elapsed time.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.stats.ok() as f64 / secs
        } else {
            0.0
        }
    }

    fn stopped_by(&self) -> &'static str {
        match self.stopped_by {
            StoppedBy::Duration => "duration",
            StoppedBy::Requests => "requests",
        }
    }

    /// The human-readable one-line summary.
    pub fn line(&self) -> String {
        let errors = if self.stats.errors().is_empty() {
            "0".to_owned()
        } else {
            let parts: Vec<String> = self
                .stats
                .errors()
                .iter()
                .map(|(label, n)| format!("{label}:{n}"))
                .collect();
            format!("{}({})", self.stats.error_total(), parts.join(","))
        };
        let verification = match &self.verification {
            None => String::new(),
            Some(v) => format!(
                " drain={} verified={} lost={} unverified={}",
                v.drained_after
                    .map_or("never".to_owned(), |d| format!("{:.2}s", d.as_secs_f64())),
                v.verified,
                v.lost,
                v.unverified
            ),
        };
        format!(
            "mode={} connections={} elapsed={:.2}s ok={} errors={} req/s={:.1} \
             p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms stopped_by={}{}",
            self.mode,
            self.connections,
            self.elapsed.as_secs_f64(),
            self.stats.ok(),
            errors,
            self.rate(),
            self.stats.ms_at(0.50),
            self.stats.ms_at(0.90),
            self.stats.ms_at(0.99),
            self.stats.max_ms(),
            self.stopped_by(),
            verification,
        )
    }

    /// The machine-readable summary (one JSON object on one line).
    pub fn json(&self) -> String {
        json!({
            "mode": self.mode,
            "connections": self.connections,
            "endpoints": self.endpoints,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "requests_ok": self.stats.ok(),
            "errors": self.stats.errors(),
            "requests_per_s": self.rate(),
            "latency_ms": {
                "p50": self.stats.ms_at(0.50),
                "p90": self.stats.ms_at(0.90),
                "p99": self.stats.ms_at(0.99),
                "max": self.stats.max_ms(),
            },
            "stopped_by": self.stopped_by(),
            "verify": self.verification.map(|v| json!({
                "drain_s": v.drained_after.map(|d| d.as_secs_f64()),
                "verified": v.verified,
                "lost": v.lost,
                "unverified": v.unverified,
            })),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(stats: Stats) -> Report {
        Report {
            mode: "put",
            connections: 2,
            endpoints: vec!["http://127.0.0.1:1".into()],
            elapsed: Duration::from_secs(2),
            stopped_by: StoppedBy::Requests,
            stats,
            verification: None,
        }
    }

    #[test]
    fn counts_ok_and_errors_by_label_and_merges() {
        // Intent: 2xx count as ok with latency; everything else is counted under its label,
        // and merging adds both.
        let mut a = Stats::default();
        a.record(Outcome::Status(204), Duration::from_millis(2));
        a.record(Outcome::Status(503), Duration::from_millis(1));
        let mut b = Stats::default();
        b.record(Outcome::Status(200), Duration::from_millis(4));
        b.record(Outcome::Timeout, Duration::from_secs(5));
        b.record(Outcome::Status(503), Duration::from_millis(1));
        a.merge(&b);
        assert_eq!(a.ok(), 2);
        assert_eq!(a.errors().get("503"), Some(&2));
        assert_eq!(a.errors().get("timeout"), Some(&1));
        assert!((a.max_ms() - 4.0).abs() < 0.01);
    }

    #[test]
    fn line_and_json_carry_the_figures() {
        // Intent: both outputs show rate, error labels and percentiles.
        let mut stats = Stats::default();
        for _ in 0..10 {
            stats.record(Outcome::Status(204), Duration::from_millis(1));
        }
        stats.record(Outcome::Connect, Duration::ZERO);
        let r = report(stats);
        let line = r.line();
        assert!(line.contains("ok=10"), "{line}");
        assert!(line.contains("errors=1(connect:1)"), "{line}");
        assert!(line.contains("req/s=5.0"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["requests_ok"], 10);
        assert_eq!(v["errors"]["connect"], 1);
        assert_eq!(v["stopped_by"], "requests");
        assert!((v["latency_ms"]["p99"].as_f64().unwrap() - 1.0).abs() < 0.01);
    }
}
