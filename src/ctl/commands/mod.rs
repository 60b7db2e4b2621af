//! The commands, one file per group, on a [`Ctx`]: the session (client and deadline), the
//! endpoints and the output format.

mod endpoint;
mod kv;
mod leader;
mod member;
mod snapshot;
mod watch;

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;

use crate::ctl::args::{
    Command, EndpointCommand, LeaderCommand, MemberCommand, Settings, SnapshotCommand,
};
use crate::ctl::client::Client;
use crate::ctl::endpoint::Endpoint;
use crate::ctl::error::{failed, invalid, Result};
use crate::ctl::output::Format;
use crate::ctl::retry::Session;

/// Largest value `put` reads from stdin (the server takes at most about 59 MiB).
const MAX_STDIN_BYTES: u64 = 64 << 20;

/// What every command uses.
pub struct Ctx {
    /// The client and the command's deadline.
    pub session: Session,
    /// `--endpoints`, in order.
    pub endpoints: Vec<Endpoint>,
    /// `-w`.
    pub format: Format,
}

/// Runs the command of `settings` on a runtime of its own.
///
/// # Errors
/// The command's error; `Failed` when called inside a tokio runtime or one cannot be built.
pub fn run(settings: Settings) -> Result<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(failed("ctl cannot run inside a tokio runtime"));
    }
    // A value from stdin is read before the deadline starts: a human may be typing it.
    let stdin_value = match &settings.command {
        Command::Put { value, .. } if value.as_deref().is_none_or(|v| v == "-") => {
            Some(read_stdin()?)
        }
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(format!("cannot start the runtime: {e}")))?;
    let client = Client::new(settings.tls.clone(), settings.dial_timeout);
    runtime.block_on(async move {
        let ctx = Arc::new(Ctx {
            session: Session::new(client, settings.dial_timeout, settings.command_timeout),
            endpoints: settings.endpoints,
            format: settings.format,
        });
        dispatch(ctx, settings.command, stdin_value).await
    })
}

async fn dispatch(ctx: Arc<Ctx>, command: Command, stdin_value: Option<Bytes>) -> Result<()> {
    match command {
        Command::Get { key, consistency } => {
            kv::get(&ctx, key.as_encoded_bytes(), consistency).await
        }
        Command::Put { key, value } => {
            let value = match stdin_value {
                Some(value) => value,
                None => Bytes::from(value.unwrap_or_default().into_encoded_bytes()),
            };
            kv::put(&ctx, key.as_encoded_bytes(), value).await
        }
        Command::Del { key } => kv::del(&ctx, key.as_encoded_bytes()).await,
        Command::Member { command } => match command {
            MemberCommand::List => member::list(&ctx).await,
            MemberCommand::Add {
                id,
                peer_url,
                learner,
            } => member::add(&ctx, id, &peer_url, learner).await,
            MemberCommand::Promote { id } => member::promote(&ctx, id).await,
            MemberCommand::Remove { id } => member::remove(&ctx, id).await,
        },
        Command::Endpoint { command } => match command {
            EndpointCommand::Status { cluster } => endpoint::status(ctx, cluster).await,
            EndpointCommand::Health { cluster } => endpoint::health(ctx, cluster).await,
        },
        Command::Leader {
            command: LeaderCommand::Move { id },
        } => leader::move_to(&ctx, id).await,
        Command::Snapshot {
            command: SnapshotCommand::Save { file, consistency },
        } => snapshot::save(&ctx, &file, consistency).await,
        Command::Watch => watch::watch(&ctx).await,
    }
}

/// All of stdin, at most [`MAX_STDIN_BYTES`].
fn read_stdin() -> Result<Bytes> {
    let mut value = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut value)
        .map_err(|e| failed(format!("cannot read the value from stdin: {e}")))?;
    if value.len() as u64 > MAX_STDIN_BYTES {
        return Err(invalid(format!(
            "the value on stdin is over {MAX_STDIN_BYTES} bytes: the members take at most about 59 MiB"
        )));
    }
    Ok(Bytes::from(value))
}

/// `bytes` as a JSON string when it is UTF-8, else `None`.
fn utf8(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// `bytes` as lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds `"<name>": string` to `object` when `bytes` is UTF-8, else `"<name>_hex": hex`.
fn put_bytes(object: &mut serde_json::Map<String, serde_json::Value>, name: &str, bytes: &[u8]) {
    match utf8(bytes) {
        Some(text) => object.insert(name.to_string(), text.into()),
        None => object.insert(format!("{name}_hex"), hex(bytes).into()),
    };
}
