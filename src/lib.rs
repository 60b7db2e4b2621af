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
//! - [`limits`]: every size and count limit, and why they agree.
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
pub mod limits;
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

/// The logger raft-rs gets. raft-rs logs every message it sends at debug level, entries and
/// all: with `--log-level debug` one 60 MB value became hundreds of megabytes of log text on the
/// raft thread, stalling it past the election timeout. So raft-rs's own debug lines appear
/// only with `--log-level trace`; `debug` shows ours.
pub fn raft_logger(logger: &Logger, level: slog::Level) -> Logger {
    let raft_level = match level {
        slog::Level::Trace => slog::Level::Trace,
        slog::Level::Debug => slog::Level::Info,
        other => other,
    };
    Logger::root(
        slog::LevelFilter::new(logger.clone(), raft_level).fuse(),
        slog::o!(),
    )
}

/// Makes every panic, on any thread (the raft thread, the apply worker, a runtime task), end the
/// process: one fatal line on stderr, then abort (a non-zero status, so a supervisor restarts
/// the node). Without it a panicking raft thread would only end its loop, and the process would
/// shut down as if asked to and exit 0. Call once at start, before any thread exists.
pub fn abort_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("raftexample: fatal: panic in thread {name:?} at {at}: {what}");
        std::process::abort()
    }));
}

/// Aborts the process after an error on the durability path (a failed write or fsync of the
/// WAL or a snapshot). Never retried: after a failed fsync the page cache state is unknown
/// (fsyncgate), so the only safe answer is to stop and recover from disk.
pub fn fatal(logger: &Logger, what: &str, error: &dyn std::fmt::Display) -> ! {
    slog::crit!(logger, "fatal: {}", what; "error" => %error);
    eprintln!("raftexample: fatal: {what}: {error}");
    std::process::abort()
}
