//! Wiring: the KV's state machine on the engine and the client API on its port. The start and
//! stop order are the engine's (`engine::app`).

use std::sync::Arc;

use engine::Config;

use crate::api::Api;
use crate::kv::{KvMachine, KvStore};

/// The KV's own flags (the node flags are `engine::NodeArgs`).
#[derive(clap::Args, Debug, Clone)]
pub struct KvArgs {
    /// Space quota: most bytes of keys and values; a write that would exceed it gets 507
    /// (deletes and writes that do not grow the data always work).
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    pub quota_bytes: u64,
}

/// Runs a node until it is told to stop or is removed; returns the process exit code.
pub fn run(config: Config, args: &KvArgs) -> i32 {
    let kv = Arc::new(KvStore::default());
    let machine = KvMachine::new(kv.clone());
    let api_config = Arc::new(config.clone());
    let quota = args.quota_bytes;
    engine::app::run("raftexample", config, machine, move |node, _| {
        let api = Arc::new(Api::new(node, kv, api_config, quota));
        move |req| crate::api::handle(api.clone(), req)
    })
}
