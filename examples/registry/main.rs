//! `registry`: a replicated service registry on the engine, its second application after the
//! raftexample KV. Instances register with a TTL and renew it; the leader expires the ones
//! that stop renewing, through raft; clients list services linearizably and watch changes.
//!
//! ```sh
//! cargo run --release --example registry -- --id 1 --cluster http://127.0.0.1:12479 --port 12480
//! ```
//! Takes the same node flags as raftexample (`engine::NodeArgs`); with none it is a working
//! single-node registry.
//!
//! # Layout
//! - `main.rs`: flags and wiring (start and stop order);
//! - `machine.rs`: the `engine::StateMachine`; `registry.rs`: the shared state, the event
//!   history and the change broadcast; `command.rs`: command bytes and the rules of names,
//!   addresses and TTLs; `image.rs`: snapshot image bytes; `codec.rs`: their byte vocabulary;
//! - `api.rs`: the HTTP API; `watch.rs`: `GET /watch` (SSE); `expiry.rs`: the leader's timers.
//!
//! Start order: bind the client listener (a taken port is a clear error before anything
//! touches disk), start the engine, start the expiry task, serve clients. Stop order (SIGINT /
//! SIGTERM, or this node was removed): stop accepting clients, let the engine hand leadership
//! away and stop, then let in-flight requests drain.

mod api;
mod codec;
mod command;
mod expiry;
mod image;
mod machine;
mod registry;
mod watch;

use std::sync::Arc;

use clap::Parser;
use engine::{Config, NodeArgs};

use crate::api::Api;
use crate::machine::RegistryMachine;
use crate::registry::Registry;

/// A replicated service registry on raft.
#[derive(Parser)]
#[command(
    version,
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    node: NodeArgs,
    /// Registry events kept in memory for watchers that resume with Last-Event-ID.
    #[arg(long, default_value_t = registry::HISTORY_BOUND)]
    watch_history: usize,
}

/// Subcommands (none: run a node).
#[derive(clap::Subcommand)]
enum Sub {
    /// Backups offline: `status FILE` checks one, `restore FILE` makes a new member from one.
    Snapshot {
        #[command(subcommand)]
        command: engine::backup::SnapshotCommand,
    },
}

fn main() {
    engine::abort_on_panic();
    let cli = Cli::parse();
    if let Some(Sub::Snapshot { command }) = &cli.command {
        std::process::exit(engine::backup::run_cli::<RegistryMachine>(
            "registry", command,
        ));
    }
    let code = match Config::from_args(&cli.node) {
        Ok(config) => run(config, cli.watch_history),
        Err(e) => {
            eprintln!("registry: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Runs a node until it is told to stop or is removed; returns the process exit code. The
/// start and stop order are the engine's (`engine::app`); the expiry task starts once the
/// engine runs.
fn run(config: Config, watch_history: usize) -> i32 {
    let registry = Arc::new(Registry::new(watch_history));
    let machine = RegistryMachine::new(registry.clone());
    let api_config = Arc::new(config.clone());
    engine::app::run("registry", config, machine, move |node, logger| {
        let expiry_logger = logger.new(slog::o!("part" => "expiry"));
        tokio::spawn(expiry::run(node.clone(), registry.clone(), expiry_logger));
        let api = Arc::new(Api::new(node, registry, api_config));
        move |req| api::handle(api.clone(), req)
    })
}
