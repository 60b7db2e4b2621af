//! `raftexample ctl`: a client for operators, as etcdctl (being built).

/// `raftexample ctl` flags.
#[derive(clap::Args, Debug)]
pub struct CtlArgs {}

/// Runs one ctl command; returns the exit status.
pub fn run(_args: &CtlArgs) -> i32 {
    eprintln!("raftexample ctl: not built yet");
    1
}
