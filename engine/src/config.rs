//! Command-line flags and the validated [`Config`] every component is built from.
//!
//! `NodeArgs` is what clap parses (raftexample's flags and defaults plus ours);
//! [`Config::from_args`] checks every value and every combination and turns a bad one into
//! one [`ConfigError`] sentence. Nothing else in the crate reads flags or globals: tests build
//! a `Config` directly.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// The raftexample-compatible flags, plus ours. Every flag has a default, so no flags at all
/// runs a working single-node cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's ID: its 1-based position in --cluster.
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// Comma-separated peer URLs of the cluster; this node's own entry is where it listens for peers.
    #[arg(long, default_value = "http://127.0.0.1:9021")]
    pub cluster: String,
    /// Client API port.
    #[arg(long, default_value_t = 9121)]
    pub port: u16,
    /// Join a running cluster instead of bootstrapping: it asks a member to add it (`POST /<id>` first also works).
    #[arg(long)]
    pub join: bool,
    /// After the majority is lost for good: commit everything in this member's log, make it
    /// the only voter, mark every other member removed, and serve. Done once (recorded in the
    /// data dir); the others come back under new IDs with --join. See the README first.
    #[arg(long)]
    pub force_new_cluster: bool,
    /// Directory for the write-ahead log [default: raftexample-<id>]; snapshots go to <data-dir>-snap.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Applied entries between two snapshots.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Entries kept in the raft log after a snapshot so that slow followers catch up without one.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_catchup_entries: u64,
    /// Raft tick interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub tick_interval_ms: u64,
    /// Ticks without a leader before a follower campaigns.
    #[arg(long, default_value_t = 10)]
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    #[arg(long, default_value_t = 1)]
    pub heartbeat_ticks: usize,
    /// Deadline for a client request, in milliseconds; past it the answer is 504 (outcome unknown).
    #[arg(long, default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// Largest accepted client request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_request_body_bytes: usize,
    /// Threads serving client HTTP (the peer port and the transport run on the raft thread).
    /// 1 saves cross-thread wakeups at light load (fewer context switches and a lower latency
    /// per request); 2 or more serve more clients per node, which matters most on the node
    /// that takes the load.
    #[arg(long, default_value_t = 2)]
    pub io_threads: usize,
    /// Address the client API listens on (host part; the port is --port).
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_client_addr: IpAddr,
    /// Address the peer API listens on [default: host and port of this node's --cluster URL].
    #[arg(long)]
    pub listen_peer_addr: Option<SocketAddr>,
    /// Local IP for outgoing peer connections [default: chosen by the OS].
    #[arg(long)]
    pub peer_source_addr: Option<IpAddr>,
    /// Size of one WAL segment file in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub wal_segment_size_bytes: u64,
    /// Free-disk reserve in bytes: below it, on the WAL's or the snapshots' filesystem, writes
    /// that grow the data are refused with 507 (reads and deletes keep working).
    #[arg(long, default_value_t = 128 * 1024 * 1024)]
    pub free_disk_reserve_bytes: u64,
    /// How often the leader starts a divergence check (every member reports its state digest
    /// at one index; a member that differs from the majority raises an alarm); 0: only on
    /// demand.
    #[arg(long, default_value_t = 60_000)]
    pub digest_check_interval_ms: u64,
    /// Client TLS certificate, PEM: turns on TLS on --port (as etcd's --cert-file).
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Key of --cert-file, PEM.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// CA bundle that client certificates must chain to, PEM.
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by --trusted-ca-file on the client port.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// Peer TLS certificate, PEM; https:// URLs in --cluster need it. Used to listen and to
    /// dial, so it needs both serverAuth and clientAuth.
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// Key of --peer-cert-file, PEM.
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// CA bundle that peer certificates must chain to (and that this node trusts when it
    /// dials a peer), PEM.
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require a peer certificate signed by --peer-trusted-ca-file; a request then speaks
    /// only for the member its certificate names.
    #[arg(long)]
    pub peer_client_cert_auth: bool,
    /// Accept peer certificates only with this common name.
    #[arg(long)]
    pub peer_cert_allowed_cn: Option<String>,
    /// Accept peer certificates only with this DNS or IP subject alternative name.
    #[arg(long)]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Lowest TLS version accepted on either port: TLS1.2 or TLS1.3.
    #[arg(long, default_value = "TLS1.2")]
    pub tls_min_version: String,
    /// Events buffered per event subscriber before it is told it lagged.
    #[arg(long, default_value_t = crate::events::EVENTS_BOUND)]
    pub events_bound: usize,
    /// Log level: critical, error, warning, info, debug or trace.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// TEST ONLY: serve linearizable reads from local state without ReadIndex (breaks
    /// linearizability on purpose so the `check` tool can prove it notices).
    #[arg(long, hide = true)]
    pub unsafe_local_reads: bool,
    /// TEST ONLY: panic on purpose in one thread (raft, apply or runtime) once the node serves,
    /// so tests can prove that any panic ends the process with a non-zero status.
    #[arg(long, hide = true, value_enum)]
    pub test_panic: Option<TestPanic>,
}

/// Where `--test-panic` panics.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestPanic {
    /// The raft thread, at its first tick.
    Raft,
    /// The apply worker, at its first committed entries.
    Apply,
    /// A task on the async runtime.
    Runtime,
}

/// A validated node configuration. Build one with [`Config::from_args`] (or by hand in tests).
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's raft ID (>= 1).
    pub id: u64,
    /// Peer URLs from `--cluster`; entry `i` belongs to node `i + 1`.
    pub cluster: Vec<String>,
    /// Join a running cluster instead of bootstrapping a new one.
    pub join: bool,
    /// `--force-new-cluster`.
    pub force_new_cluster: bool,
    /// WAL directory.
    pub wal_dir: PathBuf,
    /// Snapshot directory.
    pub snap_dir: PathBuf,
    /// Client API listen address.
    pub client_addr: SocketAddr,
    /// Peer API listen address (`--listen-peer-addr`, else the host and port of this node's
    /// `--cluster` URL; a node with data listens on its stored URL instead, see `node.rs`).
    pub peer_addr: SocketAddr,
    /// `--listen-peer-addr` was given: listen there whatever the store says.
    pub peer_addr_given: bool,
    /// Local IP for outgoing peer connections.
    pub peer_source_addr: Option<IpAddr>,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
    /// Entries kept in the raft log after compaction.
    pub snapshot_catchup_entries: u64,
    /// Threads of the async runtime (`--io-threads`).
    pub io_threads: usize,
    /// Raft tick interval.
    pub tick_interval: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Client request deadline.
    pub request_timeout: Duration,
    /// Largest client request body.
    pub max_request_body_bytes: usize,
    /// WAL segment size.
    pub wal_segment_size_bytes: u64,
    /// Events buffered per subscriber before it lags.
    pub events_bound: usize,
    /// Free-disk reserve (see `disk.rs`).
    pub free_disk_reserve_bytes: u64,
    /// Between the leader's divergence checks (zero: only on demand).
    pub digest_check_interval: Duration,
    /// TLS on the client port (`--cert-file`...).
    pub client_tls: Option<crate::tls::TlsFiles>,
    /// TLS on the peer port and for dialing peers (`https://` in `--cluster`).
    pub peer_tls: Option<PeerTls>,
    /// `--tls-min-version`.
    pub tls_min_version: crate::tls::MinVersion,
    /// slog level.
    pub log_level: slog::Level,
    /// Test-only broken read mode (see [`NodeArgs::unsafe_local_reads`]).
    pub unsafe_local_reads: bool,
    /// Test-only deliberate panic (see [`NodeArgs::test_panic`]).
    pub test_panic: Option<TestPanic>,
}

/// The peer port's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    /// Certificate, key, CA, client-cert auth.
    pub files: crate::tls::TlsFiles,
    /// `--peer-cert-allowed-cn`.
    pub allowed_cn: Option<String>,
    /// `--peer-cert-allowed-hostname`.
    pub allowed_hostname: Option<String>,
}

/// A flag value or combination that cannot work; the message is the one sentence printed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl Config {
    /// Validates the flags.
    ///
    /// # Errors
    /// One sentence naming the bad flag and what to do instead.
    pub fn from_args(args: &NodeArgs) -> Result<Config, ConfigError> {
        let cluster: Vec<String> = args
            .cluster
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .collect();
        for url in &cluster {
            parse_peer_url(url)?;
        }
        if args.id == 0 || args.id > cluster.len() as u64 {
            return Err(bad(format!(
                "--id {} is outside --cluster, which lists {} peer URL(s): use an id from 1 to {}",
                args.id,
                cluster.len(),
                cluster.len()
            )));
        }
        let mut sorted = cluster.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != cluster.len() {
            return Err(bad(
                "--cluster lists the same peer URL twice: give every node its own URL",
            ));
        }
        if args.force_new_cluster && args.join {
            return Err(bad(
                "--force-new-cluster and --join exclude each other: force the surviving member \
                 alone, then start the new members with --join",
            ));
        }
        let own_url = &cluster[(args.id - 1) as usize];
        let peer_addr = match args.listen_peer_addr {
            Some(addr) => addr,
            None => resolve(own_url)?,
        };
        let wal_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("raftexample-{}", args.id)));
        let mut snap_dir = wal_dir.clone().into_os_string();
        snap_dir.push("-snap");
        if args.snapshot_count == 0 {
            return Err(bad("--snapshot-count must be at least 1"));
        }
        if !(1..=1024).contains(&args.io_threads) {
            return Err(bad("--io-threads must be between 1 and 1024"));
        }
        if args.tick_interval_ms == 0 {
            return Err(bad("--tick-interval-ms must be at least 1"));
        }
        if args.heartbeat_ticks == 0 || args.election_ticks <= args.heartbeat_ticks {
            return Err(bad(
                "--election-ticks must be greater than --heartbeat-ticks, and both at least 1",
            ));
        }
        if args.request_timeout_ms == 0 {
            return Err(bad("--request-timeout-ms must be at least 1"));
        }
        if args.max_request_body_bytes == 0 {
            return Err(bad("--max-request-body-bytes must be at least 1"));
        }
        let body_ceiling = crate::limits::max_request_body_bytes();
        if args.max_request_body_bytes > body_ceiling {
            return Err(bad(format!(
                "--max-request-body-bytes {} is more than a write-ahead log record or a peer \
                 message can carry: use at most {body_ceiling}",
                args.max_request_body_bytes
            )));
        }
        if args.events_bound == 0 || args.events_bound > 1 << 20 {
            return Err(bad("--events-bound must be between 1 and 1048576"));
        }
        if args.wal_segment_size_bytes < 4096 {
            return Err(bad("--wal-segment-size-bytes must be at least 4096"));
        }
        let log_level = parse_level(&args.log_level)?;
        let (client_tls, peer_tls) = tls_flags(args, &cluster)?;
        let tls_min_version = crate::tls::MinVersion::parse(&args.tls_min_version).map_err(bad)?;
        Ok(Config {
            id: args.id,
            cluster,
            join: args.join,
            force_new_cluster: args.force_new_cluster,
            wal_dir,
            snap_dir: PathBuf::from(snap_dir),
            client_addr: SocketAddr::new(args.listen_client_addr, args.port),
            peer_addr,
            peer_addr_given: args.listen_peer_addr.is_some(),
            peer_source_addr: args.peer_source_addr,
            snapshot_count: args.snapshot_count,
            snapshot_catchup_entries: args.snapshot_catchup_entries,
            io_threads: args.io_threads,
            tick_interval: Duration::from_millis(args.tick_interval_ms),
            election_ticks: args.election_ticks,
            heartbeat_ticks: args.heartbeat_ticks,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            max_request_body_bytes: args.max_request_body_bytes,
            wal_segment_size_bytes: args.wal_segment_size_bytes,
            events_bound: args.events_bound,
            free_disk_reserve_bytes: args.free_disk_reserve_bytes,
            digest_check_interval: Duration::from_millis(args.digest_check_interval_ms),
            client_tls,
            peer_tls,
            tls_min_version,
            log_level,
            unsafe_local_reads: args.unsafe_local_reads,
            test_panic: args.test_panic,
        })
    }

    /// One election timeout (`--tick-interval-ms` x `--election-ticks`).
    pub fn election_timeout(&self) -> Duration {
        self.tick_interval * self.election_ticks as u32
    }

    /// Every difference between `--cluster` and the stored `membership`, one phrase each
    /// (empty when they agree or nothing is stored yet).
    pub fn cluster_differences(&self, membership: &crate::Membership) -> Vec<String> {
        if membership.iter().next().is_none() {
            return Vec::new();
        }
        let mut diffs = Vec::new();
        for m in membership.iter() {
            match self.cluster_url(m.id) {
                Some(url) if url.eq_ignore_ascii_case(&m.url) => {}
                Some(url) => diffs.push(format!(
                    "node {} is {} in the store but {url} in --cluster",
                    m.id, m.url
                )),
                None => diffs.push(format!("member {} ({}) is not in --cluster", m.id, m.url)),
            }
        }
        for id in 1..=self.cluster.len() as u64 {
            if membership.get(id).is_none() {
                diffs.push(format!("--cluster lists node {id}, which is not a member"));
            }
        }
        diffs
    }

    /// The peer URL of node `id` according to `--cluster`, if it lists one.
    pub fn cluster_url(&self, id: u64) -> Option<&str> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.cluster.get(i).map(String::as_str)
    }

    /// The cluster ID a bootstrapping cluster derives from its initial `--cluster` list
    /// (FNV-1a over the URLs in order), identical on every initial member.
    pub fn initial_cluster_id(&self) -> u64 {
        fnv1a(self.cluster.join(",").as_bytes()).max(1)
    }

    /// Where this node serves clients, as other hosts reach it: the client address, or, when
    /// it listens on every interface, the host of this node's peer URL with the client port.
    pub fn client_url(&self) -> String {
        let addr = self.client_addr;
        let scheme = if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        if !addr.ip().is_unspecified() {
            return format!("{scheme}://{addr}");
        }
        let host = self
            .cluster_url(self.id)
            .and_then(|url| parse_peer_url(url).ok())
            .map(|(host, _)| host)
            .unwrap_or_else(|| "127.0.0.1".to_string());
        format!("{scheme}://{host}:{}", addr.port())
    }
}

/// FNV-1a (64-bit) of `bytes`: the hash every member computes alike for cluster IDs.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash: u64, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Checks that `url` is `http://host:port` (an optional trailing `/` was already trimmed).
///
/// # Errors
/// A sentence naming the URL and the expected shape.
pub fn parse_peer_url(url: &str) -> Result<(String, u16), ConfigError> {
    let shape = || {
        bad(format!(
            "peer URL {url:?} is not of the form http://host:port or https://host:port (for \
             example http://127.0.0.1:12379)"
        ))
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(shape)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(shape)?;
    if host.is_empty() || host.contains('/') || port.is_empty() {
        return Err(shape());
    }
    let port: u16 = port.parse().map_err(|_| shape())?;
    if port == 0 {
        return Err(shape());
    }
    Ok((host.to_string(), port))
}

/// The TLS settings of both ports, or the sentence refusing the combination: `https` peer
/// URLs need a peer certificate and a plain `http` cluster takes none; `--cluster` is all one
/// scheme; a certificate comes with its key; client-cert auth needs a certificate.
fn tls_flags(
    args: &NodeArgs,
    cluster: &[String],
) -> Result<(Option<crate::tls::TlsFiles>, Option<PeerTls>), ConfigError> {
    let https = cluster.iter().filter(|u| u.starts_with("https://")).count();
    if https != 0 && https != cluster.len() {
        return Err(bad(
            "--cluster mixes http:// and https:// peer URLs: use one scheme for every member",
        ));
    }
    let pair = |cert: &Option<PathBuf>, key: &Option<PathBuf>, prefix: &str| match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
        (None, None) => Ok(None),
        _ => Err(bad(format!(
            "--{prefix}cert-file and --{prefix}key-file go together: give both"
        ))),
    };
    let client = pair(&args.cert_file, &args.key_file, "")?;
    let peer = pair(&args.peer_cert_file, &args.peer_key_file, "peer-")?;
    if client.is_none() && args.client_cert_auth {
        return Err(bad("--client-cert-auth needs --cert-file and --key-file"));
    }
    let client_tls = client.map(|(cert, key)| crate::tls::TlsFiles {
        cert,
        key,
        ca: args.trusted_ca_file.clone(),
        client_cert_auth: args.client_cert_auth,
        flag_prefix: "",
    });
    let peer_tls = match (https > 0, peer) {
        (false, None) => {
            let peer_only = args.peer_client_cert_auth
                || args.peer_trusted_ca_file.is_some()
                || args.peer_cert_allowed_cn.is_some()
                || args.peer_cert_allowed_hostname.is_some();
            if peer_only {
                return Err(bad(
                    "peer TLS flags are given but --cluster uses http:// URLs: use https:// URLs \
                     and --peer-cert-file/--peer-key-file",
                ));
            }
            None
        }
        (false, Some(_)) => {
            return Err(bad(
                "--peer-cert-file is given but --cluster uses http:// URLs: use https:// URLs",
            ))
        }
        (true, None) => {
            return Err(bad(
                "--cluster uses https:// URLs but no --peer-cert-file/--peer-key-file is given",
            ))
        }
        (true, Some((cert, key))) => {
            if args.peer_trusted_ca_file.is_none() {
                return Err(bad(
                    "https:// peers need --peer-trusted-ca-file: the CA this node checks its \
                     peers' certificates against",
                ));
            }
            Some(PeerTls {
                files: crate::tls::TlsFiles {
                    cert,
                    key,
                    ca: args.peer_trusted_ca_file.clone(),
                    client_cert_auth: args.peer_client_cert_auth,
                    flag_prefix: "peer-",
                },
                allowed_cn: args.peer_cert_allowed_cn.clone(),
                allowed_hostname: args.peer_cert_allowed_hostname.clone(),
            })
        }
    };
    Ok((client_tls, peer_tls))
}

/// The socket address of a peer URL.
///
/// # Errors
/// A sentence when the URL does not parse or its host does not resolve.
pub fn resolve(url: &str) -> Result<SocketAddr, ConfigError> {
    let (host, port) = parse_peer_url(url)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            bad(format!(
                "cannot resolve the host of this node's peer URL {url:?}"
            ))
        })
}

fn parse_level(level: &str) -> Result<slog::Level, ConfigError> {
    match level.to_ascii_lowercase().as_str() {
        "critical" => Ok(slog::Level::Critical),
        "error" => Ok(slog::Level::Error),
        "warning" | "warn" => Ok(slog::Level::Warning),
        "info" => Ok(slog::Level::Info),
        "debug" => Ok(slog::Level::Debug),
        "trace" => Ok(slog::Level::Trace),
        other => Err(bad(format!(
            "--log-level {other:?} is unknown: use critical, error, warning, info, debug or trace"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: NodeArgs,
    }

    fn parse(argv: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("raftexample").chain(argv.iter().copied()))
            .expect("clap accepts the flags");
        Config::from_args(&cli.args)
    }

    // Intent: no flags at all gives raftexample's single-node defaults.
    #[test]
    fn defaults_are_raftexamples() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.id, 1);
        assert_eq!(c.cluster, vec!["http://127.0.0.1:9021".to_string()]);
        assert_eq!(c.client_addr.port(), 9121);
        assert_eq!(c.peer_addr, "127.0.0.1:9021".parse().unwrap());
        assert_eq!(c.wal_dir, PathBuf::from("raftexample-1"));
        assert_eq!(c.snap_dir, PathBuf::from("raftexample-1-snap"));
        assert_eq!(c.snapshot_count, 10_000);
        assert_eq!(c.tick_interval, Duration::from_millis(100));
    }

    // Intent: every bad value or combination is refused with one sentence, never a panic.
    #[test]
    fn bad_flags_are_refused() {
        let cases: &[&[&str]] = &[
            &["--id", "0"],
            &["--id", "4", "--cluster", "http://a:1,http://b:2,http://c:3"],
            &["--cluster", "127.0.0.1:9021"],
            &["--cluster", "http://127.0.0.1:notaport"],
            &["--cluster", "http://:9021"],
            &["--cluster", "http://127.0.0.1:1,http://127.0.0.1:1"],
            &["--election-ticks", "1", "--heartbeat-ticks", "1"],
            &["--snapshot-count", "0"],
            &["--io-threads", "0"],
            &["--io-threads", "1025"],
            &["--log-level", "loud"],
            &["--wal-segment-size-bytes", "10"],
            &["--max-request-body-bytes", "134217728"],
        ];
        for argv in cases {
            let err = parse(argv).expect_err(&format!("{argv:?} must be refused"));
            let text = err.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{argv:?}: {text}");
        }
    }

    // Intent: all initial members derive the same cluster ID; another list derives another.
    #[test]
    fn cluster_id_depends_on_the_initial_list() {
        let two = "http://127.0.0.1:1,http://127.0.0.1:2";
        let a = parse(&["--cluster", two]).unwrap();
        let b = parse(&["--id", "2", "--cluster", two]).unwrap();
        let c = parse(&["--cluster", "http://127.0.0.1:1,http://127.0.0.1:3"]).unwrap();
        assert_eq!(a.initial_cluster_id(), b.initial_cluster_id());
        assert_ne!(a.initial_cluster_id(), c.initial_cluster_id());
        assert_eq!(b.cluster_url(2), Some("http://127.0.0.1:2"));
        assert_eq!(b.cluster_url(3), None);
    }
}
