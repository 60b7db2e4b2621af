//! What every application's `main` does around the engine, in one place: the runtime, the
//! client listener, the start order, signals and the stop order.
//!
//! Start order: bind the client listener (a taken port is a clear error, before anything
//! touches disk), start the engine ([`crate::start`]: peer port, join handshake, recovery,
//! threads), let the application start its own tasks, then serve clients. Stop order
//! (SIGINT/SIGTERM, or this node was removed): stop accepting clients, let the engine hand
//! leadership away, sync and stop, then let in-flight requests drain.

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request;
use slog::{info, warn, Logger};
use tokio::net::TcpListener;

use crate::http::Answer;
use crate::{Config, Exit, Handle, StartError, StateMachine};

/// Runs `name` (for messages) until it is told to stop or removed: builds the runtime, starts
/// the engine around `machine`, calls `wire` with the handle to get the client request handler
/// (and to start the application's own tasks), and serves it on `--port`. Returns the process
/// exit code: 0 after a clean stop, 1 when the node could not start.
pub fn run<S, W, H, F>(name: &str, config: Config, machine: S, wire: W) -> i32
where
    S: StateMachine,
    W: FnOnce(Handle<S::Output>, &Logger) -> H,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    let logger = crate::logging::logger(config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.io_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let served = runtime.block_on(serve(Arc::new(config), machine, wire, logger.clone()));
    match served {
        Ok(_) => 0,
        Err(e) => {
            slog::crit!(logger, "cannot start"; "error" => %e);
            eprintln!("{name}: {e}");
            1
        }
    }
}

async fn serve<S, W, H, F>(
    config: Arc<Config>,
    machine: S,
    wire: W,
    logger: Logger,
) -> Result<Exit, StartError>
where
    S: StateMachine,
    W: FnOnce(Handle<S::Output>, &Logger) -> H,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    let client_tls = match &config.client_tls {
        Some(files) => {
            let loaded = crate::tls::load(files, None, false).map_err(StartError)?;
            crate::node::warn_expiry(&logger, "--cert-file", &files.cert, loaded.not_after);
            let acceptor =
                crate::tls::Acceptor::new(&loaded, config.tls_min_version).map_err(StartError)?;
            Some((acceptor, loaded.not_after))
        }
        None => None,
    };
    let client_expiry = client_tls.as_ref().map(|(_, at)| *at);
    let client_tls = client_tls.map(|(acceptor, _)| acceptor);
    let client_tls_reload = client_tls.clone().zip(config.client_tls.clone());
    let client_listener = TcpListener::bind(config.client_addr).await.map_err(|e| {
        StartError(format!(
            "cannot listen for clients on {}: {e} (pick another --port)",
            config.client_addr
        ))
    })?;
    let node = crate::start(config.clone(), machine, logger.clone()).await?;
    let handle = node.handle();
    if let Some(at) = client_expiry {
        handle.set_cert_expiry("client", at);
    }
    let handler = wire(handle.clone(), &logger);
    let (client_stop_tx, client_stop) = tokio::sync::watch::channel(false);
    let client_server = tokio::spawn(crate::http::serve(
        client_listener,
        node.client_connections(),
        client_tls,
        handler,
        client_stop,
        logger.new(slog::o!("part" => "api")),
    ));
    info!(logger, "serving";
        "id" => config.id, "clients" => %config.client_addr, "peers" => %config.peer_addr);
    let reload = {
        let (node_tls, client_tls, config, logger, handle) = (
            node.tls_reloader(),
            client_tls_reload.clone(),
            config.clone(),
            logger.clone(),
            handle.clone(),
        );
        move || reload_tls(&node_tls, client_tls.as_ref(), &config, &handle, &logger)
    };
    let stopped = node.wait();
    tokio::pin!(stopped);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let exit = loop {
        tokio::select! {
            exit = &mut stopped => break exit?,
            _ = shutdown_signal() => {
                info!(logger, "signal received: shutting down");
                let _ = client_stop_tx.send(true);
                handle.shutdown();
                break stopped.await?;
            }
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => reload(),
        }
    };
    let _ = client_stop_tx.send(true);
    let _ = client_server.await;
    Ok(exit)
}

/// Resolves at SIGTERM or SIGINT.
/// SIGHUP: the client port's and the peer port's certificates, keys and CAs are read again;
/// a file that does not load keeps the old material, and the log says why.
fn reload_tls<O: Send + 'static>(
    node: &crate::node::TlsReloader,
    client: Option<&(crate::tls::Acceptor, crate::tls::TlsFiles)>,
    config: &Config,
    handle: &Handle<O>,
    logger: &Logger,
) {
    if let Some((acceptor, files)) = client {
        let reloaded = crate::tls::load(files, None, false).and_then(|loaded| {
            acceptor.replace(&loaded, config.tls_min_version)?;
            Ok(loaded.not_after)
        });
        match reloaded {
            Ok(at) => {
                handle.set_cert_expiry("client", at);
                info!(logger, "SIGHUP: client certificate reloaded")
            }
            Err(e) => {
                warn!(logger, "SIGHUP: client certificate NOT reloaded, the old one stays"; "why" => e)
            }
        }
    }
    match node.reload() {
        Ok(true) => info!(logger, "SIGHUP: peer certificate reloaded"),
        Ok(false) => {}
        Err(e) => {
            warn!(logger, "SIGHUP: peer certificate NOT reloaded, the old one stays"; "why" => e)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
