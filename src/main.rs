//! `raftexample`: run a node (no subcommand), or `raftexample check` against a cluster.

use clap::{Parser, Subcommand};
use raftexample::config::{Config, NodeArgs};

/// A replicated key-value service on raft, compatible with etcd's raftexample.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a linearizability check against a running cluster.
    Check(check::CheckArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Check(args)) => check::run(&args),
        None => match Config::from_args(&cli.node) {
            Ok(config) => raftexample::server::run(config),
            Err(e) => {
                eprintln!("raftexample: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}
