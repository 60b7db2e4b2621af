//! `raftexample check` without the server binary:
//! `cargo run --release -p check --example check -- --endpoints http://127.0.0.1:12380`.
//! Same flags, output and exit codes (0 linearizable, 1 violation, 2 cannot run).

use clap::Parser;

/// Checks that a raftexample-compatible cluster is linearizable.
#[derive(Parser, Debug)]
#[command(name = "check")]
struct Cli {
    #[command(flatten)]
    args: check::CheckArgs,
}

fn main() {
    std::process::exit(check::run(&Cli::parse().args));
}
