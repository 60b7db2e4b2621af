//! raftexample-rs: a replicated key-value service on raft-rs, built the way etcd's
//! `contrib/raftexample` is built, with honest outcomes: a write is acknowledged only once it is
//! committed and applied, reads are linearizable by default, and a crash loses nothing that
//! was acknowledged.
//!
//! # Layout
//! - [`config`]: flags and the validated [`config::Config`].
//! - [`server`]: wiring, start and stop order.
//! - [`recovery`]: bootstrap and restart from snapshot + WAL.
//! - [`raft_node`]: the raft thread and `serve_channels`, sole owner of `RawNode`, the WAL, the
//!   raft storage, membership and the transport.
//! - [`storage`]: the in-memory raft log raft-rs reads.
//! - [`apply`]: the apply worker; [`kv`]: the state machine and its snapshot image;
//!   [`snapshot_builder`]: new snapshots merged from the previous one and the log;
//!   [`command`]: what an entry carries; [`membership`]: IDs and peer URLs.
//! - [`transport`] (outgoing) and [`peer_server`] (incoming): raft messages over HTTP.
//! - [`api`]: the client HTTP API; [`metrics`]: `GET /metrics`; [`events`]: `GET /events`;
//!   [`waiters`]: clients waiting for their entries;
//!   [`http`]: shared HTTP plumbing.
//!
//! See ARCHITECTURE.md for the channel map and who owns what.

pub mod api;
pub mod apply;
pub mod command;
pub mod config;
pub mod events;
pub mod http;
pub mod kv;
pub mod membership;
pub mod metrics;
pub mod peer_server;
pub mod raft_node;
pub mod recovery;
pub mod server;
pub mod snapshot_builder;
pub mod storage;
pub mod transport;
pub mod waiters;

use slog::{Drain, Logger};

/// The process logger: terminal output on stderr, filtered at `level`.
pub fn logger(level: slog::Level) -> Logger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog::LevelFilter::new(drain, level).fuse();
    Logger::root(std::sync::Mutex::new(drain).fuse(), slog::o!())
}

/// Aborts the process after an error on the durability path (a failed write or fsync of the
/// WAL or a snapshot). Never retried: after a failed fsync the page cache state is unknown
/// (fsyncgate), so the only safe answer is to stop and recover from disk.
pub fn fatal(logger: &Logger, what: &str, error: &dyn std::fmt::Display) -> ! {
    slog::crit!(logger, "fatal: {}", what; "error" => %error);
    eprintln!("raftexample: fatal: {what}: {error}");
    std::process::abort()
}
