//! Starting and stopping a node: [`start`] wires every part around a [`StateMachine`] and
//! returns a [`Node`], whose [`Handle`] the application uses and whose [`Node::wait`] tells when
//! it stopped.
//!
//! Start order: raise the open-file limit; bind the peer listener (a taken port is a clear
//! error, before anything touches disk) and, while fresh, answer other members' probes with
//! "fresh"; ask the other members what they run and what they recorded of this node (starts
//! that cannot be safe are refused before writing anything: a wiped, partly wiped or
//! rolled-back member, a removed ID); a `--join` node that is not a member yet asks the
//! leader to add it (`POST /raft/join`); bootstrap or recover from disk; raise the incarnation;
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

use crate::apply::ApplyWorker;
use crate::config::{Config, TestPanic};
use crate::events::EventHub;
use crate::framing::read_envelope;
use crate::handle::{Handle, HandleParts};
use crate::peer_server::PeerGate;
use crate::protocol::Exit;
use crate::raft_node::{initial_state, raft_config, Parts, RaftNode, INBOX_BOUND};
use crate::recovery::{initialize, recover, StartError};
use crate::state_machine::StateMachine;
use crate::transport::Transport;
use crate::waiters::{Applied, Waiters};

/// How long `--join` keeps trying to reach a member, and then to be added.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two join requests (the first ones follow each other faster), before
/// a jitter of up to 50 ms.
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(1);

fn fail(msg: impl Into<String>) -> StartError {
    StartError(msg.into())
}

/// Data dirs and files are this node's alone: everything the process creates is 0700 (dirs)
/// or 0600 (files) through its umask, and a data dir that others could write to is refused
/// (they could plant or change the log).
fn check_private_dirs(config: &Config) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask only sets the process's file mode mask.
    unsafe {
        libc::umask(0o077);
    }
    for dir in [&config.wal_dir, &config.snap_dir] {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue; // created later, 0700
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(fail(format!(
                "the data dir {} is writable by group or others (mode {mode:o}): run chmod 700 \
                 {}",
                dir.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Loads and checks the peer port's TLS (`https://` peers), refusing to start with one
/// sentence; warns when the certificate expires within [`crate::tls::EXPIRY_WARNING`].
fn load_peer_tls(
    config: &Config,
    logger: &Logger,
) -> Result<Option<crate::tls::PeerTlsContext>, StartError> {
    let Some(peer) = &config.peer_tls else {
        return Ok(None);
    };
    let own_host = config
        .cluster_url(config.id)
        .and_then(crate::tls::url_host)
        .map(str::to_string);
    let files = &peer.files;
    let loaded =
        crate::tls::load(files, own_host.as_deref(), files.client_cert_auth).map_err(fail)?;
    warn_expiry(logger, "--peer-cert-file", &files.cert, loaded.not_after);
    let min = config.tls_min_version;
    Ok(Some(crate::tls::PeerTlsContext {
        acceptor: crate::tls::Acceptor::new(&loaded, min).map_err(fail)?,
        client: crate::tls::client_config(&loaded, min).map_err(fail)?,
        policy: Arc::new(crate::tls::PeerPolicy {
            require_cert: files.client_cert_auth,
            allowed_cn: peer.allowed_cn.clone(),
            allowed_hostname: peer.allowed_hostname.clone(),
        }),
        not_after: loaded.not_after,
    }))
}

/// Logs a warning when a certificate expires within [`crate::tls::EXPIRY_WARNING`].
pub fn warn_expiry(logger: &Logger, flag: &str, file: &std::path::Path, not_after: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let left = not_after.saturating_sub(now);
    if left < crate::tls::EXPIRY_WARNING.as_secs() as i64 {
        warn!(logger, "a certificate expires soon: renew it and send SIGHUP";
            "flag" => flag, "file" => file.display().to_string(), "days_left" => left / 86_400);
    }
}

/// A running node.
pub struct Node<O> {
    handle: Handle<O>,
    exit_rx: oneshot::Receiver<Exit>,
    threads: Vec<std::thread::JoinHandle<()>>,
    peer_stop: watch::Sender<bool>,
    client_connections: usize,
    logger: Logger,
    tls: TlsReloader,
}

/// Reloads the peer port's TLS (see [`TlsReloader::reload`]); cloned out of a [`Node`].
#[derive(Clone)]
pub struct TlsReloader {
    /// The peer port's TLS and the transport's client, which a reload replaces.
    peer: Option<(
        crate::tls::PeerTlsContext,
        Arc<std::sync::RwLock<crate::transport::HttpClient>>,
    )>,
    config: Arc<Config>,
    logger: Logger,
    expiries: crate::tls::Expiries,
}

impl TlsReloader {
    /// Reads the peer certificate, key and CA again (SIGHUP): connections accepted or dialed
    /// from now on use them, existing ones keep theirs. A file that does not load keeps the
    /// old material; the sentence says why. `Ok(false)` without peer TLS.
    ///
    /// # Errors
    /// The sentence of [`crate::tls::load`].
    pub fn reload(&self) -> Result<bool, String> {
        let (Some((tls, http)), Some(peer)) = (&self.peer, &self.config.peer_tls) else {
            return Ok(false);
        };
        let own_host = self
            .config
            .cluster_url(self.config.id)
            .and_then(crate::tls::url_host)
            .map(str::to_string);
        let files = &peer.files;
        let loaded = crate::tls::load(files, own_host.as_deref(), files.client_cert_auth)?;
        let min = self.config.tls_min_version;
        let client = crate::tls::client_config(&loaded, min)?;
        tls.acceptor.replace(&loaded, min)?;
        *http.write().unwrap_or_else(|e| e.into_inner()) =
            crate::transport::http_client(self.config.peer_source_addr, Some(client));
        warn_expiry(
            &self.logger,
            "--peer-cert-file",
            &files.cert,
            loaded.not_after,
        );
        crate::tls::set_expiry(&self.expiries, "peer", loaded.not_after);
        Ok(true)
    }
}

/// The raft thread's own tokio runtime (current-thread): the raft loop, the peer server and the
/// transport's sender tasks all run on that one thread, so a peer request reaches the loop,
/// and the loop's messages reach their sockets, without waking another thread. Dropped without
/// waiting: a start that fails before the raft thread drives it drops it inside the caller's
/// runtime, where waiting is not allowed.
struct RaftRuntime(Option<tokio::runtime::Runtime>);

impl RaftRuntime {
    fn new() -> Result<RaftRuntime, StartError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("raft-blocking")
            .build()
            .map(|rt| RaftRuntime(Some(rt)))
            .map_err(|e| fail(format!("cannot start the raft thread's runtime: {e}")))
    }

    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime is only taken on drop")
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts a node of `config` around `machine`. MUST be called inside a multi-threaded tokio
/// runtime (the client side: [`Handle`]'s callers); the raft thread runs a runtime of its own
/// (the raft loop, the peer server, the transport), and the apply thread is a plain OS
/// thread.
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
    check_private_dirs(&config)?;
    // A fresh node listens on its --cluster URL at once (a taken port is refused before
    // anything touches disk); a node with data listens where the store says it lives.
    let fresh = !wal::Wal::exists(&config.wal_dir);
    let stored_incarnation = crate::incarnation::read(&config.wal_dir).map_err(fail)?;
    if fresh {
        check_not_partly_wiped(&config, stored_incarnation)?;
    }
    let peer_tls = load_peer_tls(&config, &logger)?;
    let expiries = crate::tls::Expiries::default();
    if let Some(t) = &peer_tls {
        crate::tls::set_expiry(&expiries, "peer", t.not_after);
    }
    // A fresh node answers probes with "fresh" while it waits for the other initial members.
    let early = match fresh {
        true => Some(FreshResponder::start(&config, max_peers, peer_tls.as_ref(), &logger).await?),
        false => None,
    };
    let snapshotter = snap::Snapshotter::new(&config.snap_dir).map_err(|e| {
        fail(format!(
            "cannot use the snapshot directory {}: {e}",
            config.snap_dir.display()
        ))
    })?;
    // A snapshot received but not installed before a stop is of no use: raft sends it again.
    match snapshotter.discard_all_staged() {
        Ok(gone) if !gone.is_empty() => {
            info!(logger, "discarded received snapshots never installed"; "files" => gone.len())
        }
        Ok(_) => {}
        Err(e) => return Err(fail(format!("cannot clean the snapshot directory: {e}"))),
    }
    let incarnation = stored_incarnation.unwrap_or(0) + 1;
    let peer_client = peer_tls.as_ref().map(|t| t.client.clone());
    let recovered = recover_node(
        &config,
        &snapshotter,
        incarnation,
        peer_client.clone(),
        &logger,
    )
    .await?;
    let peer_listener = match early {
        Some(early) => early.stop().await?,
        None => bind_peers(stored_peer_addr(&config, &recovered, &logger)?).await?,
    };
    // Raised before this node sends anything: a later copy of this data dir restored from
    // an older backup names an older start than the one the cluster recorded.
    crate::incarnation::save(&config.wal_dir, incarnation).map_err(fail)?;
    let start = crate::membership::Start {
        incarnation,
        nonce: crate::incarnation::nonce(),
        client_url: config.client_url(),
    };
    info!(logger, "starting"; "incarnation" => incarnation, "client_url" => &start.client_url);
    let (applied_index, applied_term) = recovered.applied;
    restore_machine(
        &mut machine,
        &snapshotter,
        recovered.snapshot.as_ref(),
        applied_index,
    )?;

    let (inbox_tx, inbox_rx) = tokio::sync::mpsc::channel(INBOX_BOUND);
    let (report_tx, report_rx) = tokio::sync::mpsc::unbounded_channel();
    let raft_runtime = RaftRuntime::new()?;
    let (applied_tx, applied_rx) = watch::channel(applied_index);
    let commands = Arc::new(Waiters::default());
    let changes = Arc::new(Waiters::default());
    let disk = crate::disk::DiskSpace::new(
        vec![config.wal_dir.clone(), config.snap_dir.clone()],
        config.free_disk_reserve_bytes,
    );
    tokio::spawn(disk.clone().watch());
    let (peer_stop, peer_stop_rx) = watch::channel(false);
    let gate = Arc::new(
        PeerGate::new(
            recovered.cluster_id,
            config.id,
            inbox_tx.clone(),
            S::validate,
            disk.clone(),
            snapshotter.clone(),
        )
        .with_peer_policy(
            peer_tls.as_ref().map(|t| t.policy.clone()),
            config.cluster.clone(),
        )
        .with_stop(peer_stop_rx.clone()),
    );
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
    let peer_http = Arc::new(std::sync::RwLock::new(crate::transport::http_client(
        config.peer_source_addr,
        peer_client,
    )));
    let transport = Transport::new(
        raft_runtime.get().handle().clone(),
        crate::transport::Sender {
            cluster_id: recovered.cluster_id,
            id: config.id,
            incarnation: (start.incarnation, start.nonce),
        },
        (config.tick_interval * config.election_ticks as u32).max(Duration::from_secs(1)),
        snapshotter.clone(),
        peer_http.clone(),
        report_tx.clone(),
        logger.new(slog::o!("part" => "transport")),
    );
    let worker = ApplyWorker {
        machine,
        waiters: commands.clone(),
        applied_tx,
        reports: report_tx.clone(),
        logger: logger.new(slog::o!("part" => "apply")),
        applied: Applied {
            index: applied_index,
            term: applied_term,
        },
        test_panic: config.test_panic == Some(TestPanic::Apply),
        files: snapshotter.clone(),
    };
    let (applier, apply_thread) = worker
        .spawn()
        .map_err(|e| fail(format!("cannot start the apply thread: {e}")))?;
    let node = RaftNode::new(Parts {
        raw,
        wal: recovered.wal,
        snapshotter: snapshotter.clone(),
        transport,
        applier,
        membership: recovered.membership,
        gate: gate.clone(),
        changes: changes.clone(),
        config: config.clone(),
        reports: report_tx.clone(),
        hub,
        plan_merge: S::MERGES_SNAPSHOTS.then_some(S::plan_merge as _),
        start,
        disk: disk.clone(),
        logger: logger.new(slog::o!("part" => "raft")),
    });
    let (exit_tx, exit_rx) = oneshot::channel();
    let join_gate = gate.clone();
    let peer_logger = logger.new(slog::o!("part" => "peer-server"));
    // The listener moves to the raft thread's runtime, which serves the peer port.
    let peer_listener = peer_listener
        .into_std()
        .and_then(|l| {
            let _in_raft_runtime = raft_runtime.get().enter();
            TcpListener::from_std(l)
        })
        .map_err(|e| fail(format!("cannot listen for peers: {e}")))?;
    let peer_server = raft_runtime.get().spawn(crate::http::serve(
        peer_listener,
        max_peers,
        peer_tls.as_ref().map(|t| t.acceptor.clone()),
        move |req| crate::peer_server::handle(gate.clone(), req),
        peer_stop_rx,
        peer_logger,
    ));
    let raft_thread = spawn_thread("raft", move || {
        raft_runtime.get().block_on(async move {
            let _ = exit_tx.send(node.serve(inbox_rx, report_rx).await);
            // Peers are still answered (a removed node's 410s, a stopping one's 503s) until
            // `Node::wait` stops the peer server, which runs on this thread.
            let _ = peer_server.await;
        });
    })?;
    if peer_tls.as_ref().is_none_or(|t| !t.policy.require_cert) {
        warn!(logger, "the peer port is not authenticated (no --peer-client-cert-auth): anyone who can reach it can act as a member";
            "peers" => %config.peer_addr);
    }
    if config.test_panic == Some(TestPanic::Runtime) {
        tokio::spawn(async { panic!("--test-panic runtime") });
    }
    let handle = Handle::new(HandleParts {
        inbox: inbox_tx,
        commands,
        changes,
        applied: applied_rx,
        events,
        config: config.clone(),
        disk,
        expiries: expiries.clone(),
    });
    // Join requests (`POST /raft/join`) propose through the handle, as `POST /{id}` does.
    let changer = handle.clone();
    let request_timeout = config.request_timeout;
    join_gate.set_change_members(Box::new(move |id, change| {
        let handle = changer.clone();
        let deadline = std::time::Instant::now() + request_timeout;
        Box::pin(async move { handle.change_membership(id, change, deadline).await })
    }));
    Ok(Node {
        handle,
        exit_rx,
        threads: vec![raft_thread, apply_thread],
        peer_stop,
        client_connections: max_clients,
        tls: TlsReloader {
            peer: peer_tls.map(|t| (t, peer_http)),
            config,
            logger: logger.clone(),
            expiries,
        },
        logger,
    })
}

impl<O: Send + 'static> Node<O> {
    /// What reloads this node's peer TLS on SIGHUP.
    pub fn tls_reloader(&self) -> TlsReloader {
        self.tls.clone()
    }

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
    /// removed): the peer server is stopped and the threads are joined.
    ///
    /// # Errors
    /// [`StartError`] when the raft thread died without its exit report (a panic aborts the
    /// process before that, see `abort_on_panic`; this must never look like a clean stop), or
    /// when it stopped because a member recorded a later start of this node.
    pub async fn wait(mut self) -> Result<Exit, StartError> {
        let exit = (&mut self.exit_rx)
            .await
            .map_err(|_| fail("the raft thread died"))?;
        // The raft thread ends once the peer server it runs has drained.
        let _ = self.peer_stop.send(true);
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        info!(self.logger, "stopped"; "reason" => format!("{exit:?}"));
        if exit == Exit::Superseded {
            return Err(fail(
                "a member recorded a later start of this node than this one: its data dir was \
                 wiped or rolled back, and it would forget what it acknowledged; remove it \
                 (curl -XDELETE <member>/<id>) and add it back under a new ID with --join",
            ));
        }
        Ok(exit)
    }
}

/// Asks the members, refuses starts that cannot be safe, asks to be added (a fresh `--join`
/// node that is not a member yet, before anything is written), bootstraps or opens the data
/// dirs, and checks that they belong to the cluster the members run. `incarnation` is the
/// start this node is about to make.
async fn recover_node(
    config: &Config,
    snapshotter: &snap::Snapshotter,
    incarnation: u64,
    peer_client: Option<Arc<rustls::ClientConfig>>,
    logger: &Logger,
) -> Result<crate::recovery::Recovered, StartError> {
    let fresh = !wal::Wal::exists(&config.wal_dir);
    // A force happens once (recorded in the WAL dir) and only with the survivor's data.
    let forcing = config.force_new_cluster && !crate::recovery::forced_marker(config).exists();
    if forcing && fresh {
        return Err(fail(format!(
            "--force-new-cluster needs the surviving member's data, and {} holds no WAL: start \
             it with its own data dir",
            config.wal_dir.display()
        )));
    }
    let wait = match (fresh, config.join) {
        (true, true) => Wait::Anyone,
        (true, false) => Wait::Everyone,
        (false, _) => Wait::OneRound,
    };
    let answers = probe_peers(config, wait, peer_client.clone(), logger).await;
    check_records(config, &answers, fresh, incarnation)?;
    let running: Vec<&PeerView> = answers.iter().filter(|a| !a.fresh).collect();
    if let Some(alive) = running.first().filter(|_| forcing) {
        return Err(fail(format!(
            "--force-new-cluster is for a majority lost for good, but member {} answered (it \
             runs cluster {:x}): forcing would remove it and lose what the live members \
             committed since this node last heard of it; start without the flag, or stop every \
             other member for good first",
            alive.id, alive.cluster_id
        )));
    }
    if fresh {
        check_fresh_start(config, &running)?;
    }
    if fresh && config.join {
        ask_to_join(config, &running, peer_client.clone(), logger).await?;
    }
    let join_cluster_id = running
        .first()
        .filter(|_| config.join)
        .map(|p| p.cluster_id);
    initialize(config, snapshotter, join_cluster_id, logger)?;
    let recovered = recover(config, snapshotter, logger)?;
    if let Some(theirs) = running
        .iter()
        .map(|p| p.cluster_id)
        .find(|theirs| *theirs != recovered.cluster_id)
    {
        return Err(fail(format!(
            "this node's data belongs to cluster {:x} but the members of --cluster run cluster \
             {theirs:x}: wipe this node's data dirs, add it with POST /<id> and start it with --join",
            recovered.cluster_id,
        )));
    }
    Ok(recovered)
}

/// A WAL dir without segments is fresh only when nothing else of this node is left: an
/// incarnation file, or snapshot files, mean that part of its data was wiped. Starting as new
/// would forget what it acknowledged.
fn check_not_partly_wiped(config: &Config, incarnation: Option<u64>) -> Result<(), StartError> {
    let remedy = format!(
        "remove it (curl -XDELETE <member>/{id}), wipe both {wal} and {snap}, and add it back \
         under a new ID with --join",
        id = config.id,
        wal = config.wal_dir.display(),
        snap = config.snap_dir.display()
    );
    if let Some(n) = incarnation {
        return Err(fail(format!(
            "the WAL in {} is gone but {} says node {} started {n} time(s): its data dir was \
             partly wiped, and it would forget what it acknowledged; {remedy}",
            config.wal_dir.display(),
            crate::incarnation::path(&config.wal_dir).display(),
            config.id
        )));
    }
    let snaps = std::fs::read_dir(&config.snap_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
                .count()
        })
        .unwrap_or(0);
    if snaps > 0 {
        return Err(fail(format!(
            "the WAL in {} is gone but {} still holds {snaps} snapshot file(s): node {}'s data \
             dir was partly wiped, and it would forget what it acknowledged; {remedy}",
            config.wal_dir.display(),
            config.snap_dir.display(),
            config.id
        )));
    }
    Ok(())
}

/// Refuses a start that the members' records of this node rule out: a removed ID; a fresh
/// node that a member recorded as started (its data was lost); a node with data whose
/// incarnation is not above the one a member recorded (its data dir was rolled back).
fn check_records(
    config: &Config,
    answers: &[PeerView],
    fresh: bool,
    incarnation: u64,
) -> Result<(), StartError> {
    let id = config.id;
    if let Some(a) = answers.iter().find(|a| a.removed) {
        return Err(fail(format!(
            "member {} says node {id} was removed from the cluster, and an ID is never reused: \
             wipe this node's data dirs and add it under a new ID with --join",
            a.id
        )));
    }
    let Some(a) = answers
        .iter()
        .filter(|a| a.started.is_some())
        .max_by_key(|a| a.started)
    else {
        return Ok(());
    };
    let recorded = a.started.unwrap_or(0);
    if fresh {
        return Err(fail(format!(
            "this node's data dir is empty, but member {} recorded that node {id} started \
             (incarnation {recorded}): its data was lost, and it would forget what it \
             acknowledged; remove it (curl -XDELETE <member>/{id}) and add it back under a new \
             ID with --join",
            a.id
        )));
    }
    if recorded >= incarnation {
        return Err(fail(format!(
            "this node's data dir is at incarnation {}, but member {} recorded that node {id} \
             started as incarnation {recorded}: the data dir was rolled back to an older copy \
             (a VM or disk snapshot restore?), and it would forget what it acknowledged since; \
             remove it (curl -XDELETE <member>/{id}) and add it back under a new ID with --join",
            incarnation - 1,
            a.id
        )));
    }
    Ok(())
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
    recovered: &crate::recovery::Recovered,
    logger: &Logger,
) -> Result<std::net::SocketAddr, StartError> {
    let membership = &recovered.membership;
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
    let stored = recovered
        .own_url
        .clone()
        .or_else(|| membership.get(config.id).map(|me| me.url.clone()));
    match stored {
        Some(url) => {
            info!(logger, "listening for peers where the store says"; "url" => &url);
            crate::config::resolve(&url).map_err(|e| fail(e.to_string()))
        }
        None => Ok(config.peer_addr),
    }
}

/// Streams the application's image from the recovered snapshot's file (the state at
/// `index`).
fn restore_machine<S: StateMachine>(
    machine: &mut S,
    files: &snap::Snapshotter,
    snapshot: Option<&raft::eraftpb::Snapshot>,
    index: u64,
) -> Result<(), StartError> {
    let Some(snapshot) = snapshot else {
        return Ok(());
    };
    let meta = snapshot.get_metadata();
    let restored = files
        .read_data(meta.index, meta.term)
        .map_err(|e| e.to_string())
        .and_then(|mut data| {
            read_envelope(&mut data).map_err(|e| e.to_string())?;
            machine
                .restore(&mut data, index)
                .map_err(|e| e.to_string())?;
            data.finish().map_err(|e| e.to_string())
        });
    restored.map_err(|e| fail(format!("the snapshot at index {index} is unusable: {e}")))
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

/// What one other member said.
#[derive(Debug, Clone)]
struct PeerView {
    /// Its ID.
    id: u64,
    /// The peer URL it answered at.
    url: String,
    /// It has not bootstrapped yet either (the rest is then empty).
    fresh: bool,
    /// The cluster it runs.
    cluster_id: u64,
    /// The highest index a leader among them has seen this node acknowledge.
    match_index: u64,
    /// The incarnation of this node's last start record it applied.
    started: Option<u64>,
    /// It applied this node's removal.
    removed: bool,
    /// The members it knows, with their peer URLs.
    members: Vec<(u64, String)>,
}

/// How long probing goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// One quick round (a restart: whoever answers).
    OneRound,
    /// Until one running member answers, for [`JOIN_TIMEOUT`] (`--join`).
    Anyone,
    /// Until every other initial member answered, however long (a fresh bootstrap).
    Everyone,
}

/// Refuses a fresh (empty) start that cannot work, before anything is written to disk:
/// `--join` with no member reachable; bootstrapping when the members already run another
/// cluster (the node was added and needs `--join`); a member whose data is gone although the
/// leader saw it acknowledge entries (raft trusts acknowledgements: it would never be caught up
/// and could vote twice; it must come back under a new ID).
fn check_fresh_start(config: &Config, running: &[&PeerView]) -> Result<(), StartError> {
    let Some(first) = running.first() else {
        if config.join {
            return Err(fail(
                "cannot reach any member of --cluster to join: start the existing members (or \
                 name at least one running member in --cluster), then retry",
            ));
        }
        return Ok(());
    };
    if !config.join && first.cluster_id != config.initial_cluster_id() {
        return Err(fail(format!(
            "the members of --cluster already run cluster {:x}: add this node with \
             `curl -XPOST <member>/{} -d <peer-url>` and start it with --join",
            first.cluster_id, config.id
        )));
    }
    let matched = running.iter().map(|p| p.match_index).max().unwrap_or(0);
    if matched > 1 {
        return Err(fail(format!(
            "this node's data dir is empty, but the leader saw node {} acknowledge entries up to \
             index {matched}: its data was lost; remove it (curl -XDELETE <member>/{}) and add it \
             back under a new ID with --join",
            config.id, config.id
        )));
    }
    Ok(())
}

/// A fresh `--join` node that is not a member yet asks to be added with its `--cluster` URL
/// (`POST /raft/join`, see `peer_server::join`): the leader adds it as `POST /{id}` does, a
/// learner promoted once it started and caught up. Nothing is asked when a running member
/// lists this ID with that URL (`POST /{id}` came first). Retried with backoff while another
/// membership change is pending or no leader is known, following a member's pointer to the
/// leader, until [`JOIN_TIMEOUT`].
///
/// # Errors
/// One sentence: the ID is a member under another URL (taken), removed, the members run
/// another cluster, the certificate does not name this node, or no member added it in time.
async fn ask_to_join(
    config: &Config,
    running: &[&PeerView],
    tls: Option<Arc<rustls::ClientConfig>>,
    logger: &Logger,
) -> Result<(), StartError> {
    let id = config.id;
    let own_url = config
        .cluster_url(id)
        .ok_or_else(|| fail(format!("--cluster has no URL for node {id}")))?;
    if already_member(id, own_url, running)? {
        info!(logger, "already a member: nothing to ask"; "url" => own_url);
        return Ok(());
    }
    let client = crate::transport::http_client(config.peer_source_addr, tls);
    let ask = JoinAsk {
        client: &client,
        cluster_id: running.first().map_or(0, |a| a.cluster_id),
        id,
        own_url,
    };
    let members = join_targets(id, running);
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let mut backoff = Duration::from_millis(25);
    let mut leader: Option<(u64, String)> = None;
    let mut last = String::from("no member answered");
    for turn in 0.. {
        let (to, url) = leader
            .take()
            .unwrap_or_else(|| members[turn % members.len()].clone());
        let pause = match ask.send(to, &url, deadline).await {
            JoinAnswer::Joined => {
                info!(logger, "added to the cluster"; "by" => to, "url" => own_url);
                return Ok(());
            }
            JoinAnswer::Refused(why) => {
                return Err(fail(format!(
                    "node {id} cannot join: member {to} ({url}) refused it: {why}"
                )))
            }
            JoinAnswer::Leader(leader_id, leader_url, why) => {
                last = why;
                leader = Some((leader_id, leader_url));
                Duration::from_millis(20)
            }
            JoinAnswer::Retry(why) => {
                info!(logger, "join not done yet: retrying"; "member" => to, "why" => &why);
                last = why;
                backoff = (backoff * 2).min(JOIN_BACKOFF_MAX);
                // Jitter, so that joiners refused together do not ask together again.
                backoff + Duration::from_millis(crate::incarnation::nonce() % 50)
            }
        };
        if tokio::time::Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    Err(fail(format!(
        "node {id} could not join within {}s: the last answer was: {last}",
        JOIN_TIMEOUT.as_secs()
    )))
}

/// Whether a running member lists node `id` with `own_url` already; refused when one lists it
/// under another URL (the ID is taken), when none answered, or when they run different
/// clusters.
fn already_member(id: u64, own_url: &str, running: &[&PeerView]) -> Result<bool, StartError> {
    let Some(first) = running.first() else {
        return Err(fail("cannot reach any member of --cluster to join"));
    };
    if let Some(other) = running.iter().find(|a| a.cluster_id != first.cluster_id) {
        return Err(fail(format!(
            "node {id} cannot join: the members of --cluster run different clusters (member {} \
             runs {:x}, member {} runs {:x}): give it the URLs of one cluster",
            first.id, first.cluster_id, other.id, other.cluster_id
        )));
    }
    for a in running {
        match a.members.iter().find(|(m, _)| *m == id) {
            Some((_, url)) if url == own_url => return Ok(true),
            Some((_, url)) => {
                return Err(fail(format!(
                    "node {id} cannot join: member {} lists node {id} with the peer URL {url}, \
                     not {own_url}, so the ID is taken; start this node under an ID of its own",
                    a.id
                )))
            }
            None => {}
        }
    }
    Ok(false)
}

/// Whom node `id` asks to join, in turn: the members that answered its probe, then every
/// member they name (one that did not answer the probe in time may lead).
fn join_targets(id: u64, running: &[&PeerView]) -> Vec<(u64, String)> {
    let mut targets: Vec<(u64, String)> = running.iter().map(|a| (a.id, a.url.clone())).collect();
    for (m, url) in running.iter().flat_map(|a| a.members.iter()) {
        if *m != id && !targets.iter().any(|(known, _)| known == m) {
            targets.push((*m, url.clone()));
        }
    }
    targets
}

/// How a join request ended.
#[derive(Debug)]
enum JoinAnswer {
    /// Added (or already a member with this URL).
    Joined,
    /// Ask the leader instead: its ID, its URL, the sentence.
    Leader(u64, String, String),
    /// Not now: a change pending, no leader, no answer, the outcome unknown.
    Retry(String),
    /// Never: the sentence.
    Refused(String),
}

/// What every join request of one node carries.
struct JoinAsk<'a> {
    client: &'a crate::transport::HttpClient,
    cluster_id: u64,
    id: u64,
    own_url: &'a str,
}

impl JoinAsk<'_> {
    /// One `POST /raft/join` to member `to` at `url`, answered by `deadline`.
    async fn send(&self, to: u64, url: &str, deadline: tokio::time::Instant) -> JoinAnswer {
        use crate::transport::{HEADER_CLUSTER, HEADER_FROM, HEADER_TO};
        let body = serde_json::json!({"id": self.id, "url": self.own_url}).to_string();
        let req = hyper::Request::post(format!("{url}/raft/join"))
            .header(HEADER_CLUSTER, format!("{:x}", self.cluster_id))
            .header(HEADER_FROM, self.id.to_string())
            .header(HEADER_TO, to.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(crate::http::full(body));
        let Ok(req) = req else {
            return JoinAnswer::Refused(format!("{url} is not a URL to send a request to"));
        };
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let limit = crate::peer_server::MAX_JOIN_BODY_BYTES;
            let text = http_body_util::Limited::new(body, limit)
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
                .unwrap_or_default();
            Ok::<_, String>((parts, text))
        };
        let (parts, text) = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return JoinAnswer::Retry(format!("member {to} did not answer: {e}")),
            Err(_) => return JoinAnswer::Retry(format!("member {to} did not answer in time")),
        };
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let retry = header(hyper::header::RETRY_AFTER.as_str()).is_some();
        let leader = header(crate::peer_server::HEADER_LEADER)
            .and_then(|v| v.parse::<u64>().ok())
            .zip(header(crate::peer_server::HEADER_LEADER_URL));
        use hyper::StatusCode as S;
        match parts.status {
            S::NO_CONTENT => JoinAnswer::Joined,
            S::SERVICE_UNAVAILABLE if leader.is_some() => {
                let (id, url) = leader.expect("checked");
                JoinAnswer::Leader(id, url.to_string(), text)
            }
            S::PRECONDITION_FAILED => JoinAnswer::Refused(format!(
                "it runs another cluster than the one it answered for ({text})"
            )),
            // An older member without the route: another member may take it.
            S::NOT_FOUND | S::METHOD_NOT_ALLOWED => JoinAnswer::Retry(format!(
                "member {to} does not take join requests (an older release?): add this node \
                 with `curl -XPOST <member>/{} -d {}` and start it again",
                self.id, self.own_url
            )),
            S::GATEWAY_TIMEOUT | S::REQUEST_TIMEOUT => JoinAnswer::Retry(text),
            _ if retry => JoinAnswer::Retry(text),
            _ => JoinAnswer::Refused(text),
        }
    }
}

/// Asks the other members (`GET /raft/cluster?id=<ours>`) what they run and what they
/// recorded of this node, as long as `wait` says. Every `--cluster` URL is asked (its own
/// position too: the list may be permuted, answers name their ID), and every member URL a
/// running member names. A fresh bootstrap waits for every member: the current members a
/// running member names, or, while none has answered, every initial member. Only then can it
/// know that none of them recorded a start of this ID (a lost data dir) and none runs another
/// cluster; one that did settles it at once.
async fn probe_peers(
    config: &Config,
    wait: Wait,
    tls: Option<Arc<rustls::ClientConfig>>,
    logger: &Logger,
) -> Vec<PeerView> {
    let client = crate::transport::http_client(config.peer_source_addr, tls);
    let own_url = config.cluster_url(config.id).unwrap_or_default();
    let started = tokio::time::Instant::now();
    let mut next_warning = started + Duration::from_secs(5);
    let mut answers: Vec<PeerView> = Vec::new();
    // URLs whose running member answered (asked no more).
    let mut settled_urls: Vec<String> = Vec::new();
    loop {
        let mut urls: Vec<String> = config.cluster.clone();
        for a in &answers {
            urls.extend(a.members.iter().map(|(_, url)| url.clone()));
        }
        urls.sort();
        urls.dedup();
        urls.retain(|u| !settled_urls.contains(u));
        for url in &urls {
            let Some(answer) = probe(&client, url, config.id, own_url).await else {
                continue;
            };
            if answer.id == config.id {
                continue; // our own port (a permuted --cluster)
            }
            info!(logger, "a member answered"; "url" => url, "id" => answer.id, "fresh" => answer.fresh,
                "cluster_id" => format!("{:x}", answer.cluster_id),
                "match_index" => answer.match_index, "started" => answer.started);
            if !answer.fresh {
                settled_urls.push(url.clone());
            }
            answers.retain(|a| a.id != answer.id);
            answers.push(answer);
        }
        let running = answers.iter().any(|a| !a.fresh);
        // One member that recorded this ID as started or removed settles it: refused.
        let settled = answers
            .iter()
            .any(|a| a.started.is_some() || a.removed || a.match_index > 1);
        let mut expected: Vec<u64> = answers
            .iter()
            .flat_map(|a| a.members.iter().map(|(id, _)| *id))
            .collect();
        if !running {
            expected = (1..=config.cluster.len() as u64).collect();
        }
        expected.sort_unstable();
        expected.dedup();
        let missing: Vec<u64> = expected
            .into_iter()
            .filter(|id| *id != config.id && !answers.iter().any(|a| a.id == *id))
            .collect();
        let now = tokio::time::Instant::now();
        let done = match wait {
            Wait::OneRound => true,
            Wait::Anyone => running || now >= started + JOIN_TIMEOUT,
            Wait::Everyone => missing.is_empty() || settled,
        };
        if done {
            if wait == Wait::Anyone && !running {
                warn!(logger, "no member of --cluster answered");
            }
            return answers;
        }
        if wait == Wait::Everyone && now >= next_warning {
            warn!(logger, "waiting for every member to answer before bootstrapping \
                (a member that lost its data must not bootstrap again)"; "missing" => format!("{missing:?}"));
            next_warning = now + Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One probe of the member at `url` for node `id`, which would join with `own_url` (what its
/// certificate must name while it is not a member); `None` when it did not answer in time.
async fn probe(
    client: &crate::transport::HttpClient,
    url: &str,
    id: u64,
    own_url: &str,
) -> Option<PeerView> {
    let req = hyper::Request::get(format!("{url}/raft/cluster?id={id}"))
        .header(crate::peer_server::HEADER_PEER_URL, own_url)
        .body(crate::http::full(bytes::Bytes::new()))
        .ok()?;
    let ask = async {
        let resp = client.request(req).await.ok()?;
        let limit = crate::limits::MAX_PROBE_ANSWER_BYTES;
        let body = http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let peer_id = v.get("id")?.as_u64()?;
        if v.get("fresh").and_then(|f| f.as_bool()) == Some(true) {
            return Some(PeerView {
                id: peer_id,
                url: url.to_string(),
                fresh: true,
                cluster_id: 0,
                match_index: 0,
                started: None,
                removed: false,
                members: Vec::new(),
            });
        }
        Some(PeerView {
            id: peer_id,
            url: url.to_string(),
            fresh: false,
            cluster_id: u64::from_str_radix(v.get("cluster_id")?.as_str()?, 16).ok()?,
            match_index: v.get("match_index").and_then(|m| m.as_u64()).unwrap_or(0),
            started: v
                .get("started")
                .and_then(|s| s.get("incarnation"))
                .and_then(|c| c.as_u64()),
            removed: v.get("removed").and_then(|r| r.as_bool()).unwrap_or(false),
            members: v
                .get("members")
                .and_then(|m| m.as_array())
                .map(|members| {
                    members
                        .iter()
                        .filter_map(|m| Some((m["id"].as_u64()?, m["url"].as_str()?.to_string())))
                        .take(crate::limits::MAX_PROBED_MEMBERS)
                        .collect()
                })
                .unwrap_or_default(),
        })
    };
    tokio::time::timeout(Duration::from_millis(500), ask)
        .await
        .ok()
        .flatten()
}

/// Answers `GET /raft/cluster` with "fresh" on this node's peer port until the node has
/// bootstrapped or joined; everything else gets 503. The listener is shared with the real
/// peer server, which takes over once [`FreshResponder::stop`] returns.
struct FreshResponder {
    listener: std::net::TcpListener,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl FreshResponder {
    async fn start(
        config: &Config,
        max_peers: usize,
        tls: Option<&crate::tls::PeerTlsContext>,
        logger: &Logger,
    ) -> Result<FreshResponder, StartError> {
        let listener = bind_peers(config.peer_addr).await?;
        let keep = listener.into_std().map_err(|e| fail(e.to_string()))?;
        let serving = keep
            .try_clone()
            .and_then(TcpListener::from_std)
            .map_err(|e| fail(format!("cannot listen for peers: {e}")))?;
        let id = config.id;
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(crate::http::serve(
            serving,
            max_peers,
            tls.map(|t| t.acceptor.clone()),
            move |req: hyper::Request<hyper::body::Incoming>| async move {
                if req.uri().path() == "/raft/cluster" {
                    let answer = serde_json::json!({"fresh": true, "id": id});
                    return crate::http::json(hyper::StatusCode::OK, &answer);
                }
                crate::http::text(
                    hyper::StatusCode::SERVICE_UNAVAILABLE,
                    "this node is starting: retry",
                )
            },
            stop_rx,
            logger.new(slog::o!("part" => "fresh-responder")),
        ));
        Ok(FreshResponder {
            listener: keep,
            stop,
            server,
        })
    }

    /// Stops answering and hands the listener over.
    async fn stop(self) -> Result<TcpListener, StartError> {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        TcpListener::from_std(self.listener)
            .map_err(|e| fail(format!("cannot listen for peers: {e}")))
    }
}
