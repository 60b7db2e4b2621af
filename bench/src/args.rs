//! Command-line flags and their validation into a [`Plan`].
//!
//! `https://` endpoints need `--cacert`; `--cert` and `--key` go together. The TLS files are
//! read here, so a bad one is a bad-flags exit before any connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::endpoint::Endpoint;
use crate::run::Plan;
use crate::workload::{valid_key_prefix, Mode, Workload};

/// Most concurrent clients; each holds one socket.
const MAX_CONNECTIONS: usize = 10_000;

/// Largest value written (the default server body limit is far below).
const MAX_VALUE_SIZE_BYTES: usize = 64 * 1024 * 1024;

/// HTTP load generator for raftexample-compatible clusters (ours and etcd's Go raftexample).
///
/// Runs closed-loop clients, each with its own keep-alive connection, spread round-robin
/// over the endpoints, and prints one line: mode, connections, successful requests, errors
/// by status, req/s and p50/p90/p99/max latency of the successful requests.
#[derive(Debug, Parser)]
#[command(
    name = "raftbench",
    version,
    after_help = "The run stops at whichever bound comes first: --duration or --requests.\n\
                  https:// endpoints need --cacert; add --cert and --key for client \
                  certificates.\n\
                  Exit status: 0 when a report was printed (even with errors counted in it), \
                  1 when the run could not be done (e.g. preloading failed), 2 on bad flags."
)]
pub struct Args {
    /// Comma-separated client URLs of the cluster's nodes (http:// or, with --cacert,
    /// https://).
    #[arg(
        long,
        default_value = "http://127.0.0.1:12380,http://127.0.0.1:22380,http://127.0.0.1:32380"
    )]
    pub endpoints: String,
    /// put: PUT /{key} with unique keys; get: GET /{key}; get-serializable: GET
    /// /{key}?consistency=serializable.
    #[arg(long, value_enum, default_value_t = Mode::Put)]
    pub mode: Mode,
    /// Concurrent closed-loop clients, each with its own connection.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// How long the timed run lasts (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests (the duration still bounds the run).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Key prefix (letters, digits, '-', '_', '.'); default bench-<unix seconds>-.
    #[arg(long)]
    pub key_prefix: Option<String>,
    /// Keys preloaded and then read at random in the get modes.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Bound on each request, connecting included (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Put mode: after the run, wait until every endpoint applied a sentinel write (reported
    /// as drain=) and read back every acknowledged key (verified/lost/unverified).
    #[arg(long)]
    pub verify: bool,
    /// Print the result as one JSON object instead of a text line.
    #[arg(long)]
    pub json: bool,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write one line per successful request of the timed run to FILE: its start (Unix time,
    /// µs) and its latency (µs), to compute latencies over a window of the run.
    #[arg(long, value_name = "FILE")]
    pub latency_log: Option<PathBuf>,
    /// PEM file of the CA certificates that verify the servers; needed for https:// endpoints.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// PEM client certificate presented to the servers (with --key and --cacert).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// A flag value that parses but cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// A bad endpoint URL.
    #[error(transparent)]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// A number or duration outside what the tool can honour.
    #[error("{0}")]
    OutOfRange(String),
    /// TLS flags that do not fit together, or a TLS file that cannot be used.
    #[error("{0}")]
    Tls(String),
}

impl Args {
    /// Checks the flags and builds the run's [`Plan`].
    ///
    /// # Errors
    /// [`ArgsError`] with one sentence naming the bad flag.
    pub fn plan(&self) -> Result<Plan, ArgsError> {
        let endpoints = Endpoint::parse_list(&self.endpoints)?;
        let out_of_range = |msg: &str| Err(ArgsError::OutOfRange(msg.to_owned()));
        if endpoints.is_empty() {
            return out_of_range("--endpoints must name at least one URL");
        }
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return out_of_range("--connections must be between 1 and 10000");
        }
        if self.duration.is_zero() || self.timeout.is_zero() {
            return out_of_range("--duration and --timeout must be longer than zero");
        }
        if self.requests == Some(0) || self.keys == 0 {
            return out_of_range("--requests and --keys must be at least 1");
        }
        if self.value_size > MAX_VALUE_SIZE_BYTES {
            return out_of_range("--value-size must be at most 64 MiB");
        }
        if self.threads == Some(0) {
            return out_of_range("--threads must be at least 1");
        }
        let tls = self.tls(&endpoints)?;
        let key_prefix =
            match &self.key_prefix {
                Some(prefix) if valid_key_prefix(prefix) => prefix.clone(),
                Some(_) => return out_of_range(
                    "--key-prefix must be letters, digits, '-', '_' or '.', and not only digits",
                ),
                None => default_key_prefix(),
            };
        Ok(Plan {
            endpoints,
            mode: self.mode,
            workload: Workload::new(self.mode, key_prefix, self.keys, self.value_size),
            connections: self.connections,
            duration: self.duration,
            max_requests: self.requests,
            request_timeout: self.timeout,
            verify: self.verify,
            tls,
            latency_log: self.latency_log.clone(),
        })
    }

    /// The TLS config of `--cacert`, `--cert` and `--key`, if `--cacert` was given.
    fn tls(&self, endpoints: &[Endpoint]) -> Result<Option<Arc<rustls::ClientConfig>>, ArgsError> {
        let refuse = |msg: &str| Err(ArgsError::Tls(msg.to_owned()));
        let client_auth = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => return refuse("--cert and --key go together: give both or neither"),
        };
        let Some(cacert) = &self.cacert else {
            if endpoints.iter().any(|e| e.tls_name.is_some()) {
                return refuse(
                    "https endpoint needs --cacert FILE (the CA of the servers' certificates)",
                );
            }
            if client_auth.is_some() {
                return refuse("--cert and --key need --cacert too (and https:// endpoints)");
            }
            return Ok(None);
        };
        let config = crate::tls::client_config(cacert, client_auth).map_err(ArgsError::Tls)?;
        Ok(Some(Arc::new(config)))
    }
}

/// `bench-<unix seconds>-`: a fresh key space per run, so put runs never overwrite.
fn default_key_prefix() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("bench-{secs}-")
}

/// Parses `10s`, `500ms`, `1.5s`, `2m`, `1h` (a bare number means seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{text:?} has an unknown unit (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        // Intent: the duration forms used in docs and scripts parse; nonsense is refused.
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1e400s").is_err());
    }

    #[test]
    fn flags_become_a_plan_or_one_clear_error() {
        // Intent: good flags build a plan; each bad flag is refused with a sentence naming it.
        let ok = Args::parse_from([
            "raftbench",
            "--endpoints",
            "http://127.0.0.1:1",
            "--requests",
            "5",
        ]);
        let plan = ok.plan().unwrap();
        assert_eq!(plan.max_requests, Some(5));
        assert_eq!(plan.connections, 16);

        for bad in [
            vec!["--connections", "0"],
            vec!["--endpoints", "ftp://x"],
            vec!["--endpoints", ","],
            vec!["--key-prefix", "a/b"],
            vec!["--requests", "0"],
        ] {
            let args = Args::parse_from(std::iter::once("raftbench").chain(bad.iter().copied()));
            let err = args.plan().unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad:?}");
        }
        assert!(Args::try_parse_from(["raftbench", "--mode", "scan"]).is_err());
        assert!(Args::try_parse_from(["raftbench", "--duration", "soon"]).is_err());
    }

    #[test]
    fn tls_flags_are_checked_before_any_connection() {
        // Intent: https without --cacert, --cert without --key (and the reverse) and an
        // unreadable --cacert are each refused with one sentence; plain http needs no TLS.
        let plan = |flags: &[&str]| {
            Args::parse_from(std::iter::once("raftbench").chain(flags.iter().copied()))
                .plan()
                .map(|plan| plan.tls.is_some())
                .map_err(|e| e.to_string())
        };
        assert_eq!(plan(&["--endpoints", "http://127.0.0.1:1"]), Ok(false));
        let err = plan(&["--endpoints", "http://127.0.0.1:1,https://127.0.0.1:2"]).unwrap_err();
        assert!(err.contains("https endpoint needs --cacert"), "{err}");
        for half in [["--cert", "client.pem"], ["--key", "client-key.pem"]] {
            let mut flags = vec!["--endpoints", "https://a:1", "--cacert", "ca.pem"];
            flags.extend(half);
            let err = plan(&flags).unwrap_err();
            assert!(err.contains("--cert and --key go together"), "{err}");
        }
        let err = plan(&[
            "--endpoints",
            "https://a:1",
            "--cacert",
            "/nonexistent/ca.pem",
        ])
        .unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
