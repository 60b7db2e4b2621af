//! Wiring: the KV's state machine on the engine, the client API on its port, signals.
//!
//! Start order: bind the client listener (a taken port is a clear error, before anything
//! touches disk), start the engine (peer port, join handshake, recovery, threads), then serve
//! clients. Stop order (SIGINT/SIGTERM, or this node was removed): stop accepting clients, let
//! the engine hand leadership away, sync and stop, then let in-flight requests drain.

use std::sync::Arc;

use engine::{Config, Exit, StartError};
use slog::{info, Logger};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::Api;
use crate::kv::{KvMachine, KvStore};

/// Runs a node until it is told to stop or is removed; returns the process exit code.
pub fn run(config: Config) -> i32 {
    let logger = engine::logger(config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftexample: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(Arc::new(config), logger.clone())) {
        Ok(_) => 0,
        Err(e) => {
            slog::crit!(logger, "cannot start"; "error" => %e);
            eprintln!("raftexample: {e}");
            1
        }
    }
}

async fn serve(config: Arc<Config>, logger: Logger) -> Result<Exit, StartError> {
    let client_listener = TcpListener::bind(config.client_addr).await.map_err(|e| {
        StartError(format!(
            "cannot listen for clients on {}: {e} (pick another --port)",
            config.client_addr
        ))
    })?;
    let kv = Arc::new(KvStore::default());
    let node = engine::start(config.clone(), KvMachine::new(kv.clone()), logger.clone()).await?;
    let handle = node.handle();
    let api = Arc::new(Api {
        node: handle.clone(),
        kv,
        config: config.clone(),
        metrics: crate::metrics::Metrics::default(),
    });
    let (client_stop_tx, client_stop) = watch::channel(false);
    let client_server = tokio::spawn(engine::http::serve(
        client_listener,
        node.client_connections(),
        move |req| crate::api::handle(api.clone(), req),
        client_stop,
        logger.new(slog::o!("part" => "api")),
    ));
    info!(logger, "serving";
        "id" => config.id, "clients" => %config.client_addr, "peers" => %config.peer_addr);
    let stopped = node.wait();
    tokio::pin!(stopped);
    let exit = tokio::select! {
        exit = &mut stopped => exit?,
        _ = shutdown_signal() => {
            info!(logger, "signal received: shutting down");
            let _ = client_stop_tx.send(true);
            handle.shutdown();
            stopped.await?
        }
    };
    let _ = client_stop_tx.send(true);
    let _ = client_server.await;
    Ok(exit)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
