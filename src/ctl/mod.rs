//! `raftexample ctl`: a client for operators, as etcdctl: keys, members, endpoint status and
//! health, leadership transfer, backups and the event stream, over the client HTTP API
//! (DESIGN.md sections 2 and 8).
//!
//! ```text
//! raftexample ctl [--endpoints URL,...] [-w simple|json|table] [--dial-timeout 2s]
//!                 [--command-timeout 5s] [--cacert F --cert F --key F] COMMAND
//! ```
//!
//! # Layout
//! - `args.rs`: the flags and commands (clap), validated into [`args::Settings`].
//! - `endpoint.rs`: [`endpoint::Endpoint`] (a client base URL) and key percent-encoding.
//! - `tls.rs`: the rustls client config of `--cacert`, `--cert`, `--key`.
//! - `client.rs`: one request on a connection of its own, and what came of it
//!   ([`client::Attempt`]): not sent, answered, lost after sending, or timed out.
//! - `retry.rs`: the retry rules below, over the endpoint list, within the deadline.
//! - `status.rs`: the JSON that ctl reads (`/status`, `/members`) and cluster discovery.
//! - `output.rs`: `-w simple|json|table`.
//! - `commands/`: one file per command group (`kv`, `member`, `endpoint`, `leader`,
//!   `snapshot`, `watch`).
//! - `error.rs`: [`error::CtlError`] and the exit codes.
//!
//! # Retry rules (the reason this tool exists)
//! - A request that was never sent (connection refused, dial timeout, TLS handshake failed)
//!   moves on to the next endpoint, for every command.
//! - Reads are also retried on the next endpoint, and around the list again until the
//!   deadline, after a 503, a 504 or a timeout; a 503's `Retry-After` is waited out between
//!   rounds, at most a second.
//! - Writes (put, del, member add/promote/remove, leader move) are retried only after a 503
//!   (known not applied). After a 504, a timeout or a connection lost once the request was
//!   sent, the outcome is unknown: ctl stops at once and says the write may or may not have
//!   been applied. It never sends such a write again.
//! - Every command has a deadline (`--command-timeout`: 5 s unless given, 2 min for
//!   `snapshot save`, whose answer waits for a fresh snapshot); every connection attempt has
//!   `--dial-timeout`. A read attempt gets at most half the command timeout, so that one
//!   endpoint that hangs leaves time for the others.
//! - Streams (`snapshot save`, `watch`) follow the read rules until their answer starts; the
//!   body then has no deadline (a backup of a large state takes as long as it takes), but a
//!   `snapshot save` that receives nothing for a command timeout fails.
//!
//! # Exit codes (etcdctl's)
//! 0 done; 1 error (the server refused, a key not found, an unhealthy endpoint, an outcome
//! unknown); 2 no endpoint could be reached; 3 invalid input (flags, arguments). Every error is
//! one sentence on stderr, prefixed `raftexample ctl: `.
//!
//! # Why the flags are parsed here
//! `main.rs` hands ctl its arguments as they are and ctl parses them with a clap parser of its
//! own: clap's own parse errors exit 2, which is ctl's "no endpoint reachable".

mod args;
mod client;
mod commands;
mod endpoint;
mod error;
mod output;
mod retry;
mod status;
mod tls;

use std::ffi::OsString;

pub use error::{EXIT_ERROR, EXIT_INVALID_INPUT, EXIT_OK, EXIT_UNREACHABLE};

/// `raftexample ctl` flags: everything after `ctl`, parsed by [`run`] (see the module doc).
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true, disable_version_flag = true)]
pub struct CtlArgs {
    /// Flags and command, as `raftexample ctl --help` lists them.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

/// Runs one ctl command; returns the exit status.
///
/// Builds its own single-threaded tokio runtime, so it MUST NOT be called from inside one.
pub fn run(args: &CtlArgs) -> i32 {
    let settings = match args::parse(&args.args) {
        Ok(args::Parsed::Run(settings)) => settings,
        Ok(args::Parsed::Printed) => return EXIT_OK,
        Err(e) => return e.report(),
    };
    match commands::run(settings) {
        Ok(()) => EXIT_OK,
        Err(e) => e.report(),
    }
}
