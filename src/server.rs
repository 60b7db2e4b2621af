//! Wiring: the KV's state machine on the engine and the client API on its port. The start and
//! stop order are the engine's (`engine::app`).

use std::sync::Arc;

use engine::Config;

use crate::api::Api;
use crate::kv::{KvMachine, KvStore};

/// Runs a node until it is told to stop or is removed; returns the process exit code.
pub fn run(config: Config) -> i32 {
    let kv = Arc::new(KvStore::default());
    let machine = KvMachine::new(kv.clone());
    let api_config = Arc::new(config.clone());
    engine::app::run("raftexample", config, machine, move |node, _| {
        let api = Arc::new(Api::new(node, kv, api_config));
        move |req| crate::api::handle(api.clone(), req)
    })
}
