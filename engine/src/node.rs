//! Starting and stopping a node: [`start`] wires every part around a [`StateMachine`] and
//! returns a [`Node`], whose [`Handle`] the application uses and whose [`Node::wait`] tells when
//! it stopped.
//!
//! Start order: raise the open-file limit; bind the peer listener (a taken port is a clear
//! error, before anything touches disk); ask the other members what they run (fresh starts
//! that cannot work are refused before writing anything); bootstrap or recover from disk;
//! restore the state machine from the snapshot; start the apply thread and the raft thread;
//! serve peers. Stop order: the raft thread hands leadership away and syncs, then the apply
//! thread drains, then the peer server stops.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use raft::RawNode;
use slog::{info, warn, Logger};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::apply::{ApplyWorker, COMMIT_CHANNEL_BOUND};
use crate::config::{Config, TestPanic};
use crate::events::EventHub;
use crate::framing::decode_image;
use crate::handle::{Handle, HandleParts};
use crate::peer_server::PeerGate;
use crate::protocol::Exit;
use crate::raft_node::{initial_state, raft_config, Parts, RaftNode, INBOX_BOUND};
use crate::recovery::{initialize, recover, StartError};
use crate::state_machine::StateMachine;
use crate::transport::Transport;
use crate::waiters::{Applied, Waiters};

/// How long `--join` keeps trying to reach a member.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

fn fail(msg: impl Into<String>) -> StartError {
    StartError(msg.into())
}

/// A running node.
pub struct Node<O> {
    handle: Handle<O>,
    exit_rx: oneshot::Receiver<Exit>,
    threads: Vec<std::thread::JoinHandle<()>>,
    peer_stop: watch::Sender<bool>,
    peer_server: tokio::task::JoinHandle<()>,
    client_connections: usize,
    logger: Logger,
}

/// Starts a node of `config` around `machine`. MUST be called inside a multi-threaded tokio
/// runtime; the raft and apply threads are OS threads of their own.
///
/// # Errors
/// [`StartError`]: one sentence naming what is wrong (a taken port, another node's data dir,
/// a damaged WAL, a fresh start that cannot work, ...). Nothing was started then.
pub async fn start<S: StateMachine>(
    config: Arc<Config>,
    mut machine: S,
    logger: Logger,
) -> Result<Node<S::Output>, StartError> {
    let nofile = crate::limits::raise_open_file_limit()
        .map_err(|e| fail(format!("cannot read the open-file limit: {e}")))?;
    let (max_clients, max_peers) = crate::limits::connection_bounds(nofile);
    info!(logger, "open-file limit"; "nofile" => nofile,
        "max_client_connections" => max_clients, "max_peer_connections" => max_peers);
    // A fresh node listens on its --cluster URL at once (a taken port is refused before
    // anything touches disk); a node with data listens where the store says it lives.
    let fresh = !wal::Wal::exists(&config.wal_dir);
    let early_listener = match fresh {
        true => Some(bind_peers(config.peer_addr).await?),
        false => None,
    };
    let snapshotter = snap::Snapshotter::new(&config.snap_dir).map_err(|e| {
        fail(format!(
            "cannot use the snapshot directory {}: {e}",
            config.snap_dir.display()
        ))
    })?;
    let recovered = recover_node(&config, &snapshotter, &logger).await?;
    let peer_listener = match early_listener {
        Some(listener) => listener,
        None => bind_peers(stored_peer_addr(&config, &recovered.membership, &logger)?).await?,
    };
    let (applied_index, applied_term) = recovered.applied;
    restore_machine(&mut machine, recovered.snapshot.as_ref(), applied_index)?;

    let (inbox_tx, inbox_rx) = crossbeam_channel::bounded(INBOX_BOUND);
    let (report_tx, report_rx) = crossbeam_channel::unbounded();
    let (commit_tx, commit_rx) = crossbeam_channel::bounded(COMMIT_CHANNEL_BOUND);
    let (applied_tx, applied_rx) = watch::channel(applied_index);
    let commands = Arc::new(Waiters::default());
    let changes = Arc::new(Waiters::default());
    let gate = Arc::new(PeerGate::new(
        recovered.cluster_id,
        config.id,
        inbox_tx.clone(),
        S::validate,
    ));
    let raw = RawNode::new(
        &raft_config(&config, applied_index),
        recovered.storage,
        &crate::logging::raft_logger(&logger, config.log_level),
    )
    .map_err(|e| fail(format!("raft refused the recovered state: {e}")))?;
    // The recovered term: epochs start at it, so they keep increasing across restarts.
    let (hub, events) = EventHub::new(
        initial_state(
            config.id,
            &recovered.membership,
            applied_index,
            raw.raft.term,
        ),
        applied_rx.clone(),
        config.events_bound,
    );
    let transport = Transport::new(
        tokio::runtime::Handle::current(),
        recovered.cluster_id,
        config.id,
        config.peer_source_addr,
        (config.tick_interval * config.election_ticks as u32).max(Duration::from_secs(1)),
        report_tx.clone(),
        logger.new(slog::o!("part" => "transport")),
    );
    let node = RaftNode::new(Parts {
        raw,
        wal: recovered.wal,
        snapshotter,
        transport,
        commits: commit_tx,
        membership: recovered.membership,
        gate: gate.clone(),
        changes: changes.clone(),
        config: config.clone(),
        reports: report_tx.clone(),
        hub,
        plan_merge: S::MERGES_SNAPSHOTS.then_some(S::plan_merge as _),
        logger: logger.new(slog::o!("part" => "raft")),
    });
    let worker = ApplyWorker {
        machine,
        waiters: commands.clone(),
        applied_tx,
        reports: report_tx,
        logger: logger.new(slog::o!("part" => "apply")),
        applied: Applied {
            index: applied_index,
            term: applied_term,
        },
        test_panic: config.test_panic == Some(TestPanic::Apply),
    };
    let apply_thread = spawn_thread("apply", move || worker.run(commit_rx))?;
    let (exit_tx, exit_rx) = oneshot::channel();
    let raft_thread = spawn_thread("raft", move || {
        let _ = exit_tx.send(node.serve_channels(inbox_rx, report_rx));
    })?;

    let (peer_stop, peer_stop_rx) = watch::channel(false);
    let peer_logger = logger.new(slog::o!("part" => "peer-server"));
    let peer_server = tokio::spawn(crate::http::serve(
        peer_listener,
        max_peers,
        move |req| crate::peer_server::handle(gate.clone(), req),
        peer_stop_rx,
        peer_logger,
    ));
    warn!(logger, "the peer port is not authenticated: anyone who can reach it can act as a member";
        "peers" => %config.peer_addr);
    if config.test_panic == Some(TestPanic::Runtime) {
        tokio::spawn(async { panic!("--test-panic runtime") });
    }
    let disk = crate::disk::DiskSpace::new(
        vec![config.wal_dir.clone(), config.snap_dir.clone()],
        config.free_disk_reserve_bytes,
    );
    tokio::spawn(disk.clone().watch());
    let handle = Handle::new(HandleParts {
        inbox: inbox_tx,
        commands,
        changes,
        applied: applied_rx,
        events,
        config,
        disk,
    });
    Ok(Node {
        handle,
        exit_rx,
        threads: vec![raft_thread, apply_thread],
        peer_stop,
        peer_server,
        client_connections: max_clients,
        logger,
    })
}

impl<O: Send + 'static> Node<O> {
    /// The application's handle.
    pub fn handle(&self) -> Handle<O> {
        self.handle.clone()
    }

    /// How many client connections the application may serve at once under the open-file
    /// limit (see `limits::connection_bounds`).
    pub fn client_connections(&self) -> usize {
        self.client_connections
    }

    /// Resolves once the node stopped (after [`Handle::shutdown`], or because it was
    /// removed): the threads are joined and the peer server is stopped.
    ///
    /// # Errors
    /// [`StartError`] when the raft thread died without its exit report (a panic aborts the
    /// process before that, see `abort_on_panic`; this must never look like a clean stop).
    pub async fn wait(mut self) -> Result<Exit, StartError> {
        let exit = (&mut self.exit_rx)
            .await
            .map_err(|_| fail("the raft thread died"))?;
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        let _ = self.peer_stop.send(true);
        let _ = (&mut self.peer_server).await;
        info!(self.logger, "stopped"; "reason" => format!("{exit:?}"));
        Ok(exit)
    }
}

/// Asks the members, refuses fresh starts that cannot work, bootstraps or opens the data dirs,
/// and checks that they belong to the cluster the members run.
async fn recover_node(
    config: &Config,
    snapshotter: &snap::Snapshotter,
    logger: &Logger,
) -> Result<crate::recovery::Recovered, StartError> {
    let fresh = !wal::Wal::exists(&config.wal_dir);
    let peers = probe_peers(config, fresh && config.join, logger).await;
    if fresh {
        check_fresh_start(config, peers)?;
    }
    let join_cluster_id = peers.filter(|_| config.join).map(|p| p.cluster_id);
    initialize(config, snapshotter, join_cluster_id, logger)?;
    let recovered = recover(config, snapshotter, logger)?;
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
    Ok(recovered)
}

async fn bind_peers(addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| {
        fail(format!(
            "cannot listen for peers on {addr}: {e} (is another node using this --cluster URL?)"
        ))
    })
}

/// After bootstrap the stored membership is the truth (as etcd ignores `--initial-cluster` once
/// a data dir exists): this node listens on its stored URL, unless `--listen-peer-addr` says
/// otherwise. Every difference between `--cluster` and the store is logged in one warning.
fn stored_peer_addr(
    config: &Config,
    membership: &crate::Membership,
    logger: &Logger,
) -> Result<std::net::SocketAddr, StartError> {
    let diffs = config.cluster_differences(membership);
    if !diffs.is_empty() {
        warn!(
            logger,
            "--cluster differs from the stored membership, which wins: {}",
            diffs.join("; ")
        );
    }
    if config.peer_addr_given {
        return Ok(config.peer_addr);
    }
    match membership.get(config.id) {
        Some(me) => crate::config::resolve(&me.url).map_err(|e| fail(e.to_string())),
        None => Ok(config.peer_addr),
    }
}

/// Loads the application's image from the recovered snapshot (the state at `index`).
fn restore_machine<S: StateMachine>(
    machine: &mut S,
    snapshot: Option<&raft::eraftpb::Snapshot>,
    index: u64,
) -> Result<(), StartError> {
    let Some(snapshot) = snapshot else {
        return Ok(());
    };
    let unusable =
        |e: &dyn std::fmt::Display| fail(format!("the snapshot at index {index} is unusable: {e}"));
    let (_, image) = decode_image(&snapshot.data).map_err(|e| unusable(&e))?;
    machine.restore(image, index).map_err(|e| unusable(&e))
}

fn spawn_thread(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| fail(format!("cannot start the {name} thread: {e}")))
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
