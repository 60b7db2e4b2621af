//! The flags of `raftexample check`, and the duration syntax they use.
//!
//! `https://` endpoints need `--cacert` (the CA that signed the servers' certificates); with
//! `--cert` and `--key` the clients also present a client certificate.

use std::path::PathBuf;
use std::time::Duration;

/// Flags of `raftexample check`; a harness builds one with [`CheckArgs::new`].
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct CheckArgs {
    /// Client API base URLs of the cluster, comma-separated (http://127.0.0.1:12380,... or
    /// https://... with --cacert).
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// How long the workload runs (500ms, 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent clients, bound round-robin to the endpoints.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Keys the clients share (fewer keys, more contention).
    #[arg(long, default_value_t = 16)]
    pub keys: usize,
    /// Also delete keys through DELETE /kv/{key} (clusters of raftexample-rs only: on etcd's
    /// raftexample DELETE /{id} removes a node).
    #[arg(long)]
    pub deletes: bool,
    /// Per-request timeout; a write that times out is indeterminate.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Seed of the clients' choices of keys and operations (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Budget of the linearizability search; past it the result is "unknown" (exit 2).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub check_timeout: Duration,
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

impl CheckArgs {
    /// The command line defaults, against `endpoints`.
    pub fn new(endpoints: Vec<String>) -> CheckArgs {
        CheckArgs {
            endpoints,
            duration: Duration::from_secs(30),
            clients: 8,
            keys: 16,
            deletes: false,
            timeout: Duration::from_secs(2),
            seed: None,
            check_timeout: Duration::from_secs(60),
            cacert: None,
            cert: None,
            key: None,
        }
    }
}

/// Parses `500ms`, `30s`, `1.5s`, `2m` or `1h` into a [`Duration`].
///
/// # Errors
/// A sentence naming the accepted forms when `text` is not one of them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: use a number and a unit, e.g. 500ms, 30s, 2m");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(number * unit_secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    #[test]
    fn durations_parse_in_every_unit_and_garbage_is_refused() {
        // Intent: the documented forms parse exactly; anything else is an error, not a panic.
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "30",
            "s",
            "3x",
            "-1s",
            "1..2s",
            "1e400s",
            "9999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn new_matches_the_command_line_defaults() {
        // Intent: a harness calling CheckArgs::new gets what the CLI user gets.
        let cmd = CheckArgs::augment_args(clap::Command::new("check"));
        let matches = cmd
            .try_get_matches_from(["check", "--endpoints", "http://a:1,http://b:2"])
            .expect("valid flags");
        let parsed = CheckArgs::from_arg_matches(&matches).expect("valid flags");
        assert_eq!(
            parsed,
            CheckArgs::new(vec!["http://a:1".into(), "http://b:2".into()])
        );
    }
}
