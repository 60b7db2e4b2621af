//! The flags and commands of `raftexample ctl`, and their validation into [`Settings`].
//!
//! Global flags may come before or after the command (`ctl get k -w json`), as etcdctl's.
//! Every parse error is one sentence with exit code 3 (invalid input).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand, ValueEnum};

use crate::ctl::endpoint::{Endpoint, Scheme};
use crate::ctl::error::{invalid, Result};
use crate::ctl::output::Format;

/// Where ctl goes when neither `--endpoints` nor the environment says: the service's default
/// client port.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9121";
/// Longest `--dial-timeout` and `--command-timeout` (a bound, so that deadlines never
/// overflow).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// `--command-timeout` when it is not given.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// `--command-timeout` of `snapshot save` when it is not given: the member waits up to about
/// this long for the backup's snapshot (`engine::backup`).
pub const DEFAULT_SAVE_TIMEOUT: Duration = Duration::from_secs(120);
/// The environment variable with the default endpoints (comma-separated).
pub const ENDPOINTS_ENV: &str = "RAFTEXAMPLE_ENDPOINTS";

/// An operator's client for a raftexample-rs cluster, as etcdctl.
#[derive(Parser, Debug)]
#[command(
    name = "raftexample ctl",
    about = "An operator's client for a raftexample-rs cluster, as etcdctl: keys, members, \
             endpoint status and health, leadership, backups, events.",
    after_help = "Exit codes: 0 done, 1 error, 2 no endpoint reachable, 3 invalid input.",
    version
)]
struct Cli {
    /// Client URLs of members, comma-separated [default: $RAFTEXAMPLE_ENDPOINTS, else
    /// http://127.0.0.1:9121].
    #[arg(long, global = true, value_delimiter = ',', value_name = "URL,...")]
    endpoints: Option<Vec<String>>,
    /// Output format.
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value_t = Format::Simple)]
    write_out: Format,
    /// Longest wait for one connection (TCP and TLS).
    #[arg(long, global = true, default_value = "2s", value_parser = check::parse_duration)]
    dial_timeout: Duration,
    /// Deadline of the whole command, retries included [default: 5s; for `snapshot save`, the
    /// wait for the answer and for each gap in it, 2m].
    #[arg(long, global = true, value_parser = check::parse_duration)]
    command_timeout: Option<Duration>,
    /// CA certificates (PEM) that https:// endpoints' certificates must chain to.
    #[arg(long, global = true, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Client certificate (PEM), for members with --client-cert-auth.
    #[arg(long, global = true, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Client certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// A ctl command.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Reads a key: its value (linearizable unless --consistency serializable).
    Get {
        /// The key (any bytes).
        #[arg(id = "KEY_ARG", value_name = "KEY")]
        key: OsString,
        /// linearizable (through the leader) or serializable (this member's, maybe stale).
        #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
        consistency: Consistency,
    },
    /// Writes a key; prints OK once it is committed and applied.
    Put {
        /// The key (any bytes).
        #[arg(id = "KEY_ARG", value_name = "KEY")]
        key: OsString,
        /// The value; `-` or none: read it from stdin.
        value: Option<OsString>,
    },
    /// Deletes a key; prints OK once applied.
    Del {
        /// The key.
        #[arg(id = "KEY_ARG", value_name = "KEY")]
        key: OsString,
    },
    /// Cluster membership.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Status and health of endpoints.
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// Leadership.
    Leader {
        #[command(subcommand)]
        command: LeaderCommand,
    },
    /// Backups.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Prints the cluster's events (leader, membership, snapshot, ...) as they happen, until
    /// interrupted or the stream ends.
    Watch,
}

/// `member ...`.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum MemberCommand {
    /// Lists the members: ID, voter or learner, peer URL, client URL, whether it leads.
    List,
    /// Adds a member: a learner that becomes a voter once it started and caught up, or with
    /// --learner a learner until `member promote`. Start it with --join afterwards.
    Add {
        /// The new member's ID (never one that was removed).
        #[arg(value_parser = parse_id)]
        id: u64,
        /// Its peer URL (http://HOST:PORT).
        peer_url: String,
        /// Keep it a learner until `member promote`.
        #[arg(long)]
        learner: bool,
    },
    /// Promotes a learner that caught up to a voter.
    Promote {
        /// The learner's ID.
        #[arg(value_parser = parse_id)]
        id: u64,
    },
    /// Removes a member (it stops itself).
    Remove {
        /// The member's ID.
        #[arg(value_parser = parse_id)]
        id: u64,
    },
}

/// `endpoint ...`.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum EndpointCommand {
    /// Role, term, indexes, keys and state digest of each endpoint.
    Status {
        /// Every member's client URL (from any endpoint's status) instead of --endpoints.
        #[arg(long)]
        cluster: bool,
    },
    /// Whether each endpoint is healthy (GET /health).
    Health {
        /// Every member's client URL (from any endpoint's status) instead of --endpoints.
        #[arg(long)]
        cluster: bool,
    },
}

/// `leader ...`.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum LeaderCommand {
    /// Transfers leadership to another voter (sent to the current leader).
    Move {
        /// The voter to lead.
        #[arg(value_parser = parse_id)]
        id: u64,
    },
}

/// `snapshot ...`.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum SnapshotCommand {
    /// Streams a backup of a member's state to FILE (checked against its SHA-256 trailer,
    /// written as FILE.part, renamed once complete).
    Save {
        /// Where to write the backup.
        file: PathBuf,
        /// linearizable (the image includes every write acknowledged before) or serializable
        /// (what this member applied).
        #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
        consistency: Consistency,
    },
}

/// Read consistency.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Confirmed with the leader first.
    #[value(alias = "l")]
    Linearizable,
    /// This member's state, maybe stale.
    #[value(alias = "s")]
    Serializable,
}

impl Consistency {
    /// The query string for this consistency (`""` for the server's default).
    pub fn query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "",
            Consistency::Serializable => "?consistency=serializable",
        }
    }
}

/// Validated flags and the command.
pub struct Settings {
    /// Where to send requests, in order.
    pub endpoints: Vec<Endpoint>,
    /// `-w`.
    pub format: Format,
    /// `--dial-timeout`.
    pub dial_timeout: Duration,
    /// `--command-timeout`.
    pub command_timeout: Duration,
    /// TLS for `https://` endpoints (`None`: no `--cacert`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// What to do.
    pub command: Command,
}

/// What parsing decided.
pub enum Parsed {
    /// Run this.
    Run(Settings),
    /// Help or the version was printed: exit 0.
    Printed,
}

/// Parses and validates ctl's arguments (everything after `ctl`).
///
/// # Errors
/// `Invalid` with one sentence for anything wrong.
pub fn parse(args: &[OsString]) -> Result<Parsed> {
    let argv = std::iter::once(OsString::from("raftexample ctl")).chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            crate::ctl::output::write(e.to_string().as_bytes())?;
            return Ok(Parsed::Printed);
        }
        Err(e) => return Err(invalid(parse_error_sentence(&e))),
    };
    // A backup's answer waits for a fresh snapshot, which a busy member builds at idle
    // priority (seconds at 1M keys): without the flag, `snapshot save` waits up to the
    // member's own bound on that, as etcdctl's has no short default either.
    let save = matches!(
        cli.command,
        Command::Snapshot {
            command: SnapshotCommand::Save { .. }
        }
    );
    let command_timeout = cli.command_timeout.unwrap_or(if save {
        DEFAULT_SAVE_TIMEOUT
    } else {
        DEFAULT_COMMAND_TIMEOUT
    });
    let env = std::env::var(ENDPOINTS_ENV).ok();
    let endpoints = endpoints(cli.endpoints.as_deref(), env.as_deref())?;
    for (flag, d) in [
        ("--dial-timeout", cli.dial_timeout),
        ("--command-timeout", command_timeout),
    ] {
        if d.is_zero() || d > MAX_TIMEOUT {
            return Err(invalid(format!(
                "{flag} must be above 0 and at most {}h",
                MAX_TIMEOUT.as_secs() / 3600
            )));
        }
    }
    let tls = crate::ctl::tls::client_config(
        cli.cacert.as_deref(),
        cli.cert.as_deref(),
        cli.key.as_deref(),
    )?;
    if tls.is_none() && endpoints.iter().any(|e| e.scheme() == Scheme::Https) {
        return Err(invalid(
            "https:// endpoints need --cacert (the CA of the members' certificates)",
        ));
    }
    check_command(&cli.command)?;
    Ok(Parsed::Run(Settings {
        endpoints,
        format: cli.write_out,
        dial_timeout: cli.dial_timeout,
        command_timeout,
        tls,
        command: cli.command,
    }))
}

/// The endpoints from `--endpoints`, else from the environment, else the default.
fn endpoints(flag: Option<&[String]>, env: Option<&str>) -> Result<Vec<Endpoint>> {
    let (list, source): (Vec<&str>, &str) = match (flag, env) {
        (Some(list), _) => (list.iter().map(String::as_str).collect(), "--endpoints"),
        (None, Some(env)) if !env.trim().is_empty() => (env.split(',').collect(), ENDPOINTS_ENV),
        _ => (vec![DEFAULT_ENDPOINT], "the default endpoint"),
    };
    let list: Vec<&str> = list
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        return Err(invalid(format!("{source} lists no endpoint")));
    }
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(list.len());
    for text in list {
        let endpoint = Endpoint::parse(text, &format!("endpoint (from {source})"))?;
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    Ok(endpoints)
}

/// Checks what clap cannot: keys are not empty, peer URLs are URLs.
fn check_command(command: &Command) -> Result<()> {
    match command {
        Command::Get { key, .. } | Command::Put { key, .. } | Command::Del { key }
            if key.is_empty() =>
        {
            Err(invalid("the key is empty: give a key of at least one byte"))
        }
        Command::Member {
            command: MemberCommand::Add { peer_url, .. },
        } => Endpoint::parse(peer_url, "peer URL").map(|_| ()),
        _ => Ok(()),
    }
}

/// A member ID: a positive integer.
fn parse_id(text: &str) -> std::result::Result<u64, String> {
    match text.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!("member IDs are positive integers, not {text:?}")),
    }
}

/// clap's error as one sentence: its first line, without the `error: ` prefix.
fn parse_error_sentence(e: &clap::Error) -> String {
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "a command is missing: see raftexample ctl --help".to_string();
    }
    let text = e.to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("bad arguments");
    let mut sentence = first.strip_prefix("error: ").unwrap_or(first).to_string();
    // "the following required arguments were not provided:" names them on the next line.
    if sentence.ends_with(':') {
        if let Some(next) = lines.next().filter(|l| !l.starts_with("Usage:")) {
            sentence.push(' ');
            sentence.push_str(next);
        } else {
            sentence.pop();
        }
    }
    format!("{sentence}: see raftexample ctl --help")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Parsed> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&args)
    }

    #[test]
    fn the_parser_definition_is_consistent() {
        // Intent: clap's own checks of every command's flags (a clash of names panics only
        // when that command is parsed otherwise).
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_go_before_or_after_the_command() {
        // Intent: global flags are accepted on either side of the command, as etcdctl's.
        let Ok(Parsed::Run(s)) = parse_strs(&[
            "get",
            "k",
            "-w",
            "json",
            "--endpoints",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--command-timeout",
            "1s",
        ]) else {
            panic!("did not parse");
        };
        assert_eq!(s.format, Format::Json);
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.command_timeout, Duration::from_secs(1));
        assert!(matches!(s.command, Command::Get { .. }));
    }

    #[test]
    fn snapshot_save_waits_longer_unless_told() {
        // Intent: without --command-timeout a command has 5 s, but `snapshot save` waits up to
        // 2 min (its answer waits for a fresh snapshot); a --command-timeout given is obeyed.
        let timeout = |args: &[&str]| match parse_strs(args) {
            Ok(Parsed::Run(s)) => s.command_timeout,
            _ => panic!("did not parse: {args:?}"),
        };
        assert_eq!(timeout(&["get", "k"]), DEFAULT_COMMAND_TIMEOUT);
        assert_eq!(timeout(&["snapshot", "save", "f"]), DEFAULT_SAVE_TIMEOUT);
        assert_eq!(
            timeout(&["snapshot", "save", "f", "--command-timeout", "3s"]),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn invalid_input_is_one_sentence_with_exit_code_3() {
        // Intent: unknown flags, bad values, missing arguments, bad IDs and URLs are all
        // Invalid, with a sentence on one line.
        for args in [
            &["get"][..],
            &["bogus"],
            &["get", "k", "--nope"],
            &["get", "k", "--dial-timeout", "soon"],
            &["get", "k", "--command-timeout", "0s"],
            &["get", "k", "--command-timeout", "100000000000h"],
            &["get", "k", "--endpoints", "ftp://x:1"],
            &["get", "k", "--endpoints", "https://127.0.0.1:1"],
            &["get", ""],
            &["member", "add", "0", "http://127.0.0.1:1"],
            &["member", "add", "4", "not a url"],
            &["member", "remove", "x"],
            &["leader", "move"],
            &["member"],
            &[],
        ] {
            match parse_strs(args) {
                Err(e) => {
                    assert_eq!(e.exit_code(), 3, "{args:?}: {e}");
                    assert!(!e.to_string().contains('\n'), "{args:?}: {e}");
                }
                Ok(_) => panic!("{args:?} was accepted"),
            }
        }
    }

    #[test]
    fn endpoints_come_from_the_flag_then_the_environment_then_the_default() {
        // Intent: the precedence is --endpoints, RAFTEXAMPLE_ENDPOINTS, http://127.0.0.1:9121;
        // duplicates are dropped and an empty list is refused.
        let flag = vec!["http://a:1".to_string(), "http://a:1/".to_string()];
        let from_flag = endpoints(Some(&flag), Some("http://b:2")).unwrap();
        assert_eq!(from_flag.len(), 1);
        assert_eq!(from_flag[0].as_str(), "http://a:1");
        let from_env = endpoints(None, Some("http://b:2, http://c:3")).unwrap();
        assert_eq!(from_env[1].as_str(), "http://c:3");
        let default = endpoints(None, None).unwrap();
        assert_eq!(default[0].as_str(), DEFAULT_ENDPOINT);
        assert!(endpoints(Some(&[" ".to_string()]), None).is_err());
    }
}
