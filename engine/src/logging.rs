//! Logging and the two ways the process ends on its own: [`fatal`] (a failure on the
//! durability path, or a format this release does not know) and [`abort_on_panic`] (any panic).
//! Both print one line and abort, so a supervisor always sees a failure.

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

/// Makes every panic, on any thread (the raft thread, the apply thread, a runtime task), end
/// the process: one fatal line on stderr, then abort (a non-zero status, so a supervisor
/// restarts the node). Without it a panicking raft thread would only end its loop, and the
/// process would shut down as if asked to and exit 0. Call once at start, before any thread
/// exists.
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
        // With RUST_BACKTRACE set, where it happened (for the bug report).
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("{trace}");
        }
        std::process::abort()
    }));
}

/// Aborts the process after an error on the durability path (a failed write or fsync of the
/// WAL or a snapshot), or an engine format this release does not know. Never retried: after a
/// failed fsync the page cache state is unknown (fsyncgate), so the only safe answer is to stop
/// and recover from disk.
pub fn fatal(logger: &Logger, what: &str, error: &dyn std::fmt::Display) -> ! {
    slog::crit!(logger, "fatal: {}", what; "error" => %error);
    eprintln!("raftexample: fatal: {what}: {error}");
    std::process::abort()
}
