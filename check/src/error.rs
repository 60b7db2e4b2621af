//! Why `check` cannot run (exit code 2).

/// Errors of [`crate::run_workload`]: each says what the user should change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--endpoints` was empty.
    #[error("no endpoints given: pass --endpoints http://HOST:PORT[,http://HOST:PORT...]")]
    NoEndpoints,
    /// An endpoint is not an `http://host:port` or `https://host:port` base URL.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A flag value the workload cannot use.
    #[error("bad argument: {0}")]
    BadArgument(&'static str),
    /// A TLS file (`--cacert`, `--cert`, `--key`) cannot be read or used.
    #[error("{0}")]
    Tls(String),
    /// Not a single request got an HTTP answer from any endpoint.
    #[error("no endpoint answered any request ({endpoints}): is the cluster running?")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
    },
    /// A client task died (a bug in `check`); its operations are lost.
    #[error("a client task failed: {0}")]
    ClientTask(String),
    /// [`crate::run`] was called from inside a tokio runtime; use [`crate::run_workload`].
    #[error("check::run builds its own runtime: call run_workload from async code instead")]
    InsideRuntime,
    /// The async runtime could not be built (out of threads or file descriptors).
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}
