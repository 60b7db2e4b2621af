//! What can go wrong in a ctl command, and the exit code each kind gets (etcdctl's).

/// The command did what it was asked.
pub const EXIT_OK: i32 = 0;
/// The command failed: the server refused, a key is absent, an endpoint is unhealthy, a
/// write's outcome is unknown.
pub const EXIT_ERROR: i32 = 1;
/// No endpoint could be reached (nothing was sent anywhere).
pub const EXIT_UNREACHABLE: i32 = 2;
/// Bad flags or arguments: nothing was sent.
pub const EXIT_INVALID_INPUT: i32 = 3;

/// A failed ctl command. Each carries one sentence (no `raftexample ctl: ` prefix, no final
/// period), printed by [`CtlError::report`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtlError {
    /// Bad flags or arguments; exit 3.
    #[error("{0}")]
    Invalid(String),
    /// No endpoint could be reached; exit 2.
    #[error("{0}")]
    Unreachable(String),
    /// Anything else; exit 1.
    #[error("{0}")]
    Failed(String),
}

/// The ctl's result type.
pub type Result<T> = std::result::Result<T, CtlError>;

impl CtlError {
    /// The exit code of this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Invalid(_) => EXIT_INVALID_INPUT,
            CtlError::Unreachable(_) => EXIT_UNREACHABLE,
            CtlError::Failed(_) => EXIT_ERROR,
        }
    }

    /// Prints the sentence on stderr and returns the exit code.
    pub fn report(&self) -> i32 {
        eprintln!("raftexample ctl: {self}");
        self.exit_code()
    }
}

/// An `Invalid` error from anything printable.
pub fn invalid(sentence: impl Into<String>) -> CtlError {
    CtlError::Invalid(sentence.into())
}

/// A `Failed` error from anything printable.
pub fn failed(sentence: impl Into<String>) -> CtlError {
    CtlError::Failed(sentence.into())
}
