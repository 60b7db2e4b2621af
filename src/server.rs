//! Wiring: start every component of a node from a [`Config`], run until a signal or removal,
//! shut down in order.
//!
//! Start order: bind both listeners (a taken port is a clear error, before anything touches
//! disk), `--join` handshake, recover from disk, start the apply worker and the raft thread,
//! then serve peers and clients. Stop order: stop accepting clients, let the raft thread hand
//! leadership away and sync, stop the apply worker, stop serving peers.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use raft::RawNode;
use slog::{info, warn, Logger};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::api::Api;
use crate::apply::{ApplyWorker, COMMIT_CHANNEL_BOUND};
use crate::config::Config;
use crate::peer_server::PeerGate;
use crate::raft_node::{raft_config, Exit, Msg, RaftNode, INBOX_BOUND};
use crate::recovery::{initialize, recover, StartError};
use crate::transport::Transport;
use crate::waiters::{Applied, Waiters};

/// How long `--join` keeps trying to reach a member.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

fn fail(msg: impl Into<String>) -> StartError {
    StartError(msg.into())
}

/// Runs a node until it is told to stop or is removed; returns the process exit code.
pub fn run(config: Config) -> i32 {
    let logger = crate::logger(config.log_level);
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
    let result = runtime.block_on(serve(Arc::new(config), logger.clone()));
    match result {
        Ok(exit) => {
            info!(logger, "stopped"; "reason" => format!("{exit:?}"));
            0
        }
        Err(e) => {
            slog::crit!(logger, "cannot start"; "error" => %e);
            eprintln!("raftexample: {e}");
            1
        }
    }
}

async fn serve(config: Arc<Config>, logger: Logger) -> Result<Exit, StartError> {
    let nofile = crate::limits::raise_open_file_limit()
        .map_err(|e| fail(format!("cannot read the open-file limit: {e}")))?;
    let (max_clients, max_peers) = crate::limits::connection_bounds(nofile);
    info!(logger, "open-file limit"; "nofile" => nofile,
        "max_client_connections" => max_clients, "max_peer_connections" => max_peers);
    let client_listener = TcpListener::bind(config.client_addr).await.map_err(|e| {
        fail(format!(
            "cannot listen for clients on {}: {e} (pick another --port)",
            config.client_addr
        ))
    })?;
    let peer_listener = TcpListener::bind(config.peer_addr).await.map_err(|e| {
        fail(format!(
            "cannot listen for peers on {}: {e} (is another node using this --cluster URL?)",
            config.peer_addr
        ))
    })?;
    let snapshotter = snap::Snapshotter::new(&config.snap_dir).map_err(|e| {
        fail(format!(
            "cannot use the snapshot directory {}: {e}",
            config.snap_dir.display()
        ))
    })?;
    let fresh = !wal::Wal::exists(&config.wal_dir);
    let peers = probe_peers(&config, fresh && config.join, &logger).await;
    if fresh {
        check_fresh_start(&config, peers)?;
    }
    let join_cluster_id = peers.filter(|_| config.join).map(|p| p.cluster_id);
    initialize(&config, &snapshotter, join_cluster_id, &logger)?;
    let recovered = recover(&config, &snapshotter, &logger)?;
    if let Some(theirs) = peers
        .map(|p| p.cluster_id)
        .filter(|theirs| *theirs != recovered.cluster_id)
    {
        return Err(fail(format!(
            "this node's data belongs to cluster {:x} but the members of --cluster run cluster \
             {theirs:x}: wipe this node's data dirs, add it with POST /<id> and start it with --join",
            recovered.cluster_id,
        )));
    }

    let (inbox_tx, inbox_rx) = crossbeam_channel::bounded(INBOX_BOUND);
    let (report_tx, report_rx) = crossbeam_channel::unbounded();
    let (commit_tx, commit_rx) = crossbeam_channel::bounded(COMMIT_CHANNEL_BOUND);
    let (applied_index, applied_term) = recovered.applied;
    let (applied_tx, applied_rx) = watch::channel(applied_index);
    let kv = Arc::new(recovered.kv);
    let waiters = Arc::new(Waiters::new(config.id));
    let gate = Arc::new(PeerGate::new(
        recovered.cluster_id,
        config.id,
        inbox_tx.clone(),
    ));

    let events = crate::events::Events::default();
    let raw = RawNode::new(
        &raft_config(&config, applied_index),
        recovered.storage,
        &crate::raft_logger(&logger, config.log_level),
    )
    .map_err(|e| fail(format!("raft refused the recovered state: {e}")))?;
    let transport = Transport::new(
        tokio::runtime::Handle::current(),
        recovered.cluster_id,
        config.id,
        config.peer_source_addr,
        (config.tick_interval * config.election_ticks as u32).max(Duration::from_secs(1)),
        report_tx.clone(),
        logger.new(slog::o!("part" => "transport")),
    );
    let node = RaftNode::new(
        raw,
        recovered.wal,
        snapshotter.clone(),
        transport,
        commit_tx,
        recovered.membership,
        gate.clone(),
        waiters.clone(),
        config.clone(),
        report_tx,
        events.clone(),
        logger.new(slog::o!("part" => "raft")),
    );
    let worker = ApplyWorker {
        kv: kv.clone(),
        waiters: waiters.clone(),
        applied_tx,
        logger: logger.new(slog::o!("part" => "apply")),
        applied: Applied {
            index: applied_index,
            term: applied_term,
        },
        test_panic: config.test_panic == Some(crate::config::TestPanic::Apply),
    };
    let apply_thread = std::thread::Builder::new()
        .name("apply".into())
        .spawn(move || worker.run(commit_rx))
        .map_err(|e| fail(format!("cannot start the apply thread: {e}")))?;
    let (exit_tx, mut exit_rx) = oneshot::channel();
    let raft_thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || {
            let _ = exit_tx.send(node.serve_channels(inbox_rx, report_rx));
        })
        .map_err(|e| fail(format!("cannot start the raft thread: {e}")))?;

    let (peer_stop_tx, peer_stop) = watch::channel(false);
    let (client_stop_tx, client_stop) = watch::channel(false);
    let peer_logger = logger.new(slog::o!("part" => "peer-server"));
    let peer_server = tokio::spawn(crate::http::serve(
        peer_listener,
        max_peers,
        move |req| crate::peer_server::handle(gate.clone(), req),
        peer_stop,
        peer_logger,
    ));
    let api = Arc::new(Api {
        inbox: inbox_tx.clone(),
        waiters,
        kv,
        applied: applied_rx,
        config: config.clone(),
        metrics: crate::metrics::Metrics::default(),
        events,
    });
    let client_server = tokio::spawn(crate::http::serve(
        client_listener,
        max_clients,
        move |req| crate::api::handle(api.clone(), req),
        client_stop,
        logger.new(slog::o!("part" => "api")),
    ));
    info!(logger, "serving";
        "id" => config.id, "clients" => %config.client_addr, "peers" => %config.peer_addr);
    if config.test_panic == Some(crate::config::TestPanic::Runtime) {
        tokio::spawn(async { panic!("--test-panic runtime") });
    }

    // The raft thread always sends its exit; a closed channel means it died (a panic aborts
    // the process first, see `abort_on_panic`), which must never look like a clean stop.
    let exit = tokio::select! {
        exit = &mut exit_rx => exit.map_err(|_| fail("the raft thread died"))?,
        _ = shutdown_signal() => {
            info!(logger, "signal received: shutting down");
            let _ = client_stop_tx.send(true);
            let inbox = inbox_tx.clone();
            let _ = tokio::task::spawn_blocking(move || inbox.send(Msg::Shutdown)).await;
            exit_rx.await.map_err(|_| fail("the raft thread died during shutdown"))?
        }
    };
    let _ = client_stop_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = raft_thread.join();
        let _ = apply_thread.join();
    })
    .await;
    let _ = client_server.await;
    let _ = peer_stop_tx.send(true);
    let _ = peer_server.await;
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

/// What the other members said about the cluster.
#[derive(Debug, Clone, Copy)]
struct PeerView {
    /// The cluster they run.
    cluster_id: u64,
    /// The highest index a leader among them has seen this node acknowledge.
    match_index: u64,
}

/// Refuses a fresh (empty) start that cannot work, before anything is written to disk:
/// `--join` with no member reachable; bootstrapping when the members already run another
/// cluster (the node was added and needs `--join`); a member whose data is gone although the
/// leader saw it acknowledge entries (raft trusts acknowledgements: it would never be caught up
/// and could vote twice; it must come back under a new ID).
fn check_fresh_start(config: &Config, peers: Option<PeerView>) -> Result<(), StartError> {
    let Some(peers) = peers else {
        if config.join {
            return Err(fail(
                "cannot reach any member of --cluster to join: start the existing members, add \
                 this node with `curl -XPOST <member>/<id> -d <peer-url>`, then retry",
            ));
        }
        return Ok(());
    };
    if !config.join && peers.cluster_id != config.initial_cluster_id() {
        return Err(fail(format!(
            "the members of --cluster already run cluster {:x}: add this node with \
             `curl -XPOST <member>/{} -d <peer-url>` and start it with --join",
            peers.cluster_id, config.id
        )));
    }
    if peers.match_index > 1 {
        return Err(fail(format!(
            "this node's data dir is empty, but the leader saw node {} acknowledge entries up to \
             index {}: its data was lost; remove it (curl -XDELETE <member>/{}) and add it back \
             under a new ID with --join",
            config.id, peers.match_index, config.id
        )));
    }
    Ok(())
}

/// Asks the other members of `--cluster` (`GET /raft/cluster?id=<ours>`) which cluster they
/// run and what the leader knows of this node. With `patient`, retries for [`JOIN_TIMEOUT`]
/// until someone answers; otherwise one quick round. `None` when nobody answered.
async fn probe_peers(config: &Config, patient: bool, logger: &Logger) -> Option<PeerView> {
    let client = crate::transport::http_client(config.peer_source_addr);
    let give_up = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        let mut view: Option<PeerView> = None;
        for (i, url) in config.cluster.iter().enumerate() {
            if i as u64 + 1 == config.id {
                continue;
            }
            let Ok(req) = hyper::Request::get(format!("{url}/raft/cluster?id={}", config.id))
                .body(crate::http::full(bytes::Bytes::new()))
            else {
                continue;
            };
            let ask = async {
                let resp = client.request(req).await.ok()?;
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
                let cluster_id = u64::from_str_radix(v.get("cluster_id")?.as_str()?, 16).ok()?;
                let match_index = v.get("match_index").and_then(|m| m.as_u64()).unwrap_or(0);
                Some(PeerView {
                    cluster_id,
                    match_index,
                })
            };
            if let Ok(Some(answer)) = tokio::time::timeout(Duration::from_millis(500), ask).await {
                info!(logger, "a member answered"; "url" => url,
                    "cluster_id" => format!("{:x}", answer.cluster_id), "match_index" => answer.match_index);
                let best = view.map_or(0, |v| v.match_index).max(answer.match_index);
                view = Some(PeerView {
                    cluster_id: view.map_or(answer.cluster_id, |v| v.cluster_id),
                    match_index: best,
                });
            }
        }
        if view.is_some() || !patient || tokio::time::Instant::now() >= give_up {
            if view.is_none() && patient {
                warn!(logger, "no member of --cluster answered");
            }
            return view;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
