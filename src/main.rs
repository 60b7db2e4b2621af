//! `raftexample`: run a node (no subcommand), `raftexample check` against a cluster, or
//! `raftexample certs` to write development TLS certificates.

use clap::{Parser, Subcommand};
use engine::{Config, NodeArgs};

/// A replicated key-value service on raft, compatible with etcd's raftexample.
#[derive(Parser)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    kv: raftexample::server::KvArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a linearizability check against a running cluster.
    Check(check::CheckArgs),
    /// Write a development CA and member/client certificates for a TLS cluster.
    Certs(raftexample::certs::CertsArgs),
    /// A client for operators, as etcdctl: keys, members, endpoint status, backups.
    Ctl(raftexample::ctl::CtlArgs),
    /// Backups offline: `status FILE` checks one, `restore FILE` makes a new member from one.
    Snapshot {
        #[command(subcommand)]
        command: engine::backup::SnapshotCommand,
    },
}

/// glibc's allocator keeps freed memory of its per-thread arenas and, after the first large
/// free, raises its mmap threshold up to 32 MiB, so the multi-megabyte buffers of snapshots and
/// peer batches end up fragmenting arenas. A node holding a large state then shows a resident
/// size far above what it uses. Two arenas and a fixed 1 MiB threshold (large buffers are
/// mmap'd and go back to the kernel when freed) keep the resident size close to the live data.
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

fn main() {
    tune_allocator();
    engine::abort_on_panic();
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Check(args)) => check::run(&args),
        Some(Command::Certs(args)) => raftexample::certs::run(&args),
        Some(Command::Ctl(args)) => raftexample::ctl::run(&args),
        Some(Command::Snapshot { command }) => {
            engine::backup::run_cli::<raftexample::kv::KvMachine>("raftexample", &command)
        }
        None => match Config::from_args(&cli.node) {
            Ok(config) => raftexample::server::run(config, &cli.kv),
            Err(e) => {
                eprintln!("raftexample: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}
