//! Outgoing raft messages over HTTP: one bounded queue and one sender task per peer.
//!
//! The raft thread calls [`Transport::send`] with each Ready's messages; it never blocks:
//! a message that does not fit its peer's queue is dropped and counted (raft retransmits).
//! The sender tasks run on the raft thread's own runtime (see `node.rs`), so handing them a
//! message wakes no other thread. Each peer's sender task takes everything queued (up to
//! [`MAX_BATCH_MESSAGES`] / [`MAX_BATCH_BYTES`]) as one batch and writes it as one frame of a
//! stream: a `POST <peer>/raft/stream` whose chunked body stays open while messages come, with
//! no request and no answer per batch (two system calls per batch instead of four, and no
//! wakeup for a `204`). A member that answers 404 (an older release) gets one `POST
//! <peer>/raft` per batch instead, one in flight. A stream ends when the receiver ends it
//! (idle, refusal, stop) or a frame finds no room for `transfer_timeout` (a peer that
//! stopped reading); on failure the task reports the peer unreachable to the raft thread and
//! backs off, and the next message opens a new stream.
//!
//! Snapshots (`MsgSnapshot`) go on their own queue and task to `<peer>/raft/snapshot`, so a
//! large snapshot never delays heartbeats; the outcome is reported to raft
//! (`report_snapshot`, trap 9). raft-rs never reads a snapshot's data, so the message carries
//! none (see `storage.rs`): the sender streams the data from the snap file, in chunks of
//! [`SNAPSHOT_CHUNK_BYTES`], a few at a time, whatever its size. The body is
//! `[len u32 LE][the message][the data]`, with a `Content-Length`. The file's CRC is checked
//! before its last chunk leaves: a damaged file ends the body short, which the receiver
//! refuses, and asks the raft thread for a fresh snapshot.
//!
//! Wire format of a batch body: `[len u32 LE][eraftpb::Message protobuf]` repeated; a stream's
//! body is `[len u32 LE][batch body]` repeated. Headers name the cluster ([`HEADER_CLUSTER`],
//! hex), the sender and the receiver.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::StatusCode;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use slog::{info, warn, Logger};
use tokio::sync::mpsc;

use crate::limits::MAX_BATCH_BYTES;
use crate::protocol::Report;

/// Header carrying the cluster ID in hex.
pub const HEADER_CLUSTER: &str = "x-raft-cluster-id";
/// Header carrying the sender's raft ID.
pub const HEADER_FROM: &str = "x-raft-from";
/// Header carrying the receiver's raft ID.
pub const HEADER_TO: &str = "x-raft-to";
/// Header: the sender's start, `<incarnation>-<nonce hex>` (see `membership::Start`); a
/// receiver that recorded a later start of the sender refuses it (409).
pub const HEADER_INCARNATION: &str = "x-raft-incarnation";
/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_BOUND: usize = 4096;
/// Snapshots queued per peer (raft sends at most one at a time per follower).
pub const SNAPSHOT_QUEUE_BOUND: usize = 2;
/// Most messages in one request.
pub const MAX_BATCH_MESSAGES: usize = 1024;

/// The slowest peer link a batch's deadline allows for: a batch gets the base request timeout
/// plus its size at this rate, so a large append (up to ~60 MB, see `limits.rs`) is never cut
/// off by a deadline made for heartbeats, which would retry it forever.
const MIN_PEER_BYTES_PER_SEC: f64 = 8.0 * 1024.0 * 1024.0;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes per chunk of a snapshot body read from the snap file.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Chunks of a snapshot body in flight between the file reader and the connection.
const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 4;

/// The peer HTTP client.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, crate::http::Body>;

/// What every sender task needs.
#[derive(Clone)]
struct Shared {
    /// Replaced when the peer certificate is reloaded (`Node::reload_tls`); connections
    /// already pooled keep the old one.
    client: Arc<std::sync::RwLock<HttpClient>>,
    cluster_id: u64,
    self_id: u64,
    /// [`HEADER_INCARNATION`]'s value.
    incarnation: String,
    reports: crate::protocol::Reports,
    logger: Logger,
    request_timeout: Duration,
    dropped: Arc<AtomicU64>,
    /// The snap dir, where snapshot data is streamed from.
    files: snap::Snapshotter,
}

/// Who a transport speaks as.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    /// The cluster.
    pub cluster_id: u64,
    /// This node.
    pub id: u64,
    /// This start of it: incarnation and nonce.
    pub incarnation: (u64, u64),
}

struct PeerLink {
    url: String,
    queue: mpsc::Sender<Message>,
    snapshots: mpsc::Sender<Message>,
}

/// The raft thread's handle on all peer links.
pub struct Transport {
    shared: Shared,
    runtime: tokio::runtime::Handle,
    peers: HashMap<u64, PeerLink>,
}

impl Transport {
    /// A transport with no peers yet, sending through `client` (see [`http_client`]).
    /// `request_timeout` bounds one batch request (a blackholed peer then costs at most that
    /// long before the next batch).
    pub fn new(
        runtime: tokio::runtime::Handle,
        sender: Sender,
        request_timeout: Duration,
        files: snap::Snapshotter,
        client: Arc<std::sync::RwLock<HttpClient>>,
        reports: crate::protocol::Reports,
        logger: Logger,
    ) -> Transport {
        Transport {
            shared: Shared {
                client,
                cluster_id: sender.cluster_id,
                self_id: sender.id,
                incarnation: format!("{}-{:x}", sender.incarnation.0, sender.incarnation.1),
                reports,
                logger,
                request_timeout,
                dropped: Arc::new(AtomicU64::new(0)),
                files,
            },
            runtime,
            peers: HashMap::new(),
        }
    }

    /// Messages dropped so far because a peer's queue was full or the peer is unknown.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Starts (or re-points) the link to `id`. Our own ID is ignored.
    pub fn set_peer(&mut self, id: u64, url: &str) {
        if id == self.shared.self_id || self.peers.get(&id).is_some_and(|p| p.url == url) {
            return;
        }
        let _guard = self.runtime.enter();
        let (queue, rx) = mpsc::channel(PEER_QUEUE_BOUND);
        let (snapshots, snap_rx) = mpsc::channel(SNAPSHOT_QUEUE_BOUND);
        let url = url.trim_end_matches('/').to_string();
        tokio::spawn(run_sender(self.shared.clone(), id, url.clone(), rx));
        tokio::spawn(run_snapshot_sender(
            self.shared.clone(),
            id,
            url.clone(),
            snap_rx,
        ));
        info!(self.shared.logger, "peer link started"; "peer" => id, "url" => &url);
        // Replacing the link drops the old senders, which ends the old tasks.
        self.peers.insert(
            id,
            PeerLink {
                url,
                queue,
                snapshots,
            },
        );
    }

    /// Stops the link to `id` (its tasks end once their queues drain).
    pub fn remove_peer(&mut self, id: u64) {
        if self.peers.remove(&id).is_some() {
            info!(self.shared.logger, "peer link stopped"; "peer" => id);
        }
    }

    /// Queues `msgs` for their receivers. Never blocks. A snapshot that cannot be queued is
    /// reported failed at once, so raft retries it later.
    pub fn send(&mut self, msgs: Vec<Message>) {
        for msg in msgs {
            let to = msg.to;
            let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
            let Some(peer) = self.peers.get(&to) else {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if is_snapshot {
                    let _ = self.shared.reports.send(Report::Snapshot { to, ok: false });
                }
                continue;
            };
            let queued = if is_snapshot {
                peer.snapshots.try_send(msg).is_ok()
            } else {
                peer.queue.try_send(msg).is_ok()
            };
            if !queued {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if is_snapshot {
                    let _ = self.shared.reports.send(Report::Snapshot { to, ok: false });
                }
            }
        }
    }
}

/// The hyper client used for peer traffic (also by the join handshake).
pub fn http_client(
    source_addr: Option<IpAddr>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    connector.set_local_address(source_addr);
    connector.enforce_http(false);
    // Without peer TLS the cluster is all http:// (config.rs refuses a mix), so the empty
    // root store is never used.
    let tls = tls.unwrap_or_else(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    });
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2)
        .build(connector)
}

/// Encodes messages as a batch body.
pub fn encode_batch(msgs: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_batch_into(&mut out, msgs);
    out
}

fn encode_batch_into(out: &mut Vec<u8>, msgs: &[Message]) {
    for m in msgs {
        let bytes = m
            .write_to_bytes()
            .expect("encoding a raft message cannot fail");
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
}

/// A batch as one frame of a stream: `[len u32 LE][batch body]`.
fn encode_frame(msgs: &[Message]) -> Bytes {
    let mut out = vec![0u8; 4];
    encode_batch_into(&mut out, msgs);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    Bytes::from(out)
}

/// `first` and whatever else is queued, up to [`MAX_BATCH_MESSAGES`] / [`MAX_BATCH_BYTES`].
fn gather(first: Message, rx: &mut mpsc::Receiver<Message>) -> Vec<Message> {
    let mut size = first.compute_size() as usize;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH_MESSAGES && size < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(m) => {
                size += m.compute_size() as usize;
                batch.push(m);
            }
            Err(_) => break,
        }
    }
    batch
}

/// The forwarded proposals of `batch`.
fn proposals(batch: &[Message]) -> Vec<Message> {
    batch
        .iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgPropose)
        .cloned()
        .collect()
}

/// How long `bytes` may take to leave: the base request timeout plus their size at the
/// slowest link allowed for.
fn transfer_timeout(shared: &Shared, bytes: usize) -> Duration {
    shared.request_timeout + Duration::from_secs_f64(bytes as f64 / MIN_PEER_BYTES_PER_SEC)
}

/// Sends every batch to one peer: over a stream (`POST /raft/stream`, which stays open while
/// messages come), or one `POST /raft` per batch to a member that has no streams (an older
/// release answers 404). After a failure it reports the peer unreachable (and forwarded
/// proposals that certainly never left, so the raft thread proposes them again) and backs off.
async fn run_sender(shared: Shared, to: u64, url: String, mut rx: mpsc::Receiver<Message>) {
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    let mut streams = true;
    while let Some(first) = rx.recv().await {
        let batch = gather(first, &mut rx);
        let (outcome, unsent) = if streams {
            match stream(&shared, to, &url, batch, &mut rx).await {
                Streamed::Closed => return,
                Streamed::Ended(outcome, unsent) => (outcome, unsent),
            }
        } else {
            let unsent = proposals(&batch);
            let encoded = encode_batch(&batch);
            let timeout = transfer_timeout(&shared, encoded.len());
            let body = crate::http::full(encoded);
            let outcome = post(&shared, to, &format!("{url}/raft"), body, None, timeout).await;
            (outcome, unsent)
        };
        match outcome {
            Ok(()) => {
                if failures > 0 {
                    info!(shared.logger, "peer reachable again"; "peer" => to, "after_failures" => failures);
                }
                failures = 0;
                backoff = BACKOFF_MIN;
            }
            Err(SendError::Status(StatusCode::NOT_FOUND, _)) if streams => {
                info!(shared.logger, "peer takes no streams (an older release): one request per batch"; "peer" => to);
                streams = false;
                // The route was refused before the body was read.
                if !unsent.is_empty() {
                    let _ = shared.reports.send(Report::Undelivered(unsent));
                }
            }
            Err(SendError::Status(StatusCode::GONE, _)) => {
                warn!(shared.logger, "peer says this node was removed from the cluster"; "peer" => to);
                let _ = shared.reports.send(Report::Removed);
                tokio::time::sleep(BACKOFF_MAX).await;
            }
            Err(SendError::Status(StatusCode::CONFLICT, why)) => {
                warn!(shared.logger, "peer recorded a later start of this node"; "peer" => to, "why" => &why);
                let _ = shared.reports.send(Report::Superseded(why));
                tokio::time::sleep(BACKOFF_MAX).await;
            }
            Err(e) => {
                if failures == 0 || failures.is_power_of_two() {
                    warn!(shared.logger, "cannot send to peer"; "peer" => to, "error" => %e, "failures" => failures + 1);
                }
                failures += 1;
                // Forwarded proposals that certainly never left this node go back to the raft
                // thread, which proposes them again (to the next leader): nobody has them, so
                // no entry can be duplicated. After any other failure their fate is unknown.
                if matches!(e, SendError::NotSent(_)) && !unsent.is_empty() {
                    let _ = shared.reports.send(Report::Undelivered(unsent));
                }
                let _ = shared.reports.send(Report::Unreachable(to));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// How a stream ended.
enum Streamed {
    /// The link was removed (its queue closed).
    Closed,
    /// The stream ended (`Ok`: the receiver ended it, idle) or failed; with the forwarded
    /// proposals sent on it before its connection took anything (they never left this node
    /// if no connection could be made).
    Ended(Result<(), SendError>, Vec<Message>),
}

/// Frames handed to a stream's connection and not yet taken by it. Few: a peer that stops
/// reading stalls the sender soon, and a frame waits at most [`transfer_timeout`] for room.
const STREAM_FRAMES_IN_FLIGHT: usize = 8;

/// Sends `first`, then every batch that comes on `rx`, as frames of one `POST /raft/stream`
/// (chunked; no request per batch, no answer per batch), until it ends or fails.
async fn stream(
    shared: &Shared,
    to: u64,
    url: &str,
    first: Vec<Message>,
    rx: &mut mpsc::Receiver<Message>,
) -> Streamed {
    let (frames, body) = mpsc::channel::<Bytes>(STREAM_FRAMES_IN_FLIGHT);
    let req = match peer_request(
        shared,
        to,
        &format!("{url}/raft/stream"),
        channel_body(body),
        None,
    ) {
        Ok(req) => req,
        Err(e) => return Streamed::Ended(Err(e), proposals(&first)),
    };
    let exchange = exchange(shared, req);
    tokio::pin!(exchange);
    // `Some` until the connection takes a frame: nothing has left this node before that.
    let mut unsent = Some(Vec::new());
    let mut sent = false;
    let mut next = Some(first);
    loop {
        let batch = match next.take() {
            Some(batch) => batch,
            None => tokio::select! {
                ended = &mut exchange => return Streamed::Ended(ended, unsent.unwrap_or_default()),
                m = rx.recv() => match m {
                    Some(m) => gather(m, rx),
                    None => return Streamed::Closed,
                },
            },
        };
        // Every frame sent so far was taken: the connection is made.
        if sent && frames.capacity() == STREAM_FRAMES_IN_FLIGHT {
            unsent = None;
        }
        if let Some(unsent) = &mut unsent {
            unsent.extend(proposals(&batch));
        }
        let frame = encode_frame(&batch);
        let timeout = transfer_timeout(shared, frame.len());
        tokio::select! {
            ended = &mut exchange => return Streamed::Ended(ended, unsent.unwrap_or_default()),
            sent = tokio::time::timeout(timeout, frames.send(frame)) => match sent {
                Ok(Ok(())) => {}
                // The connection dropped the body: its answer (if any) says why.
                Ok(Err(_)) => {
                    let ended = tokio::time::timeout(shared.request_timeout, &mut exchange)
                        .await
                        .unwrap_or(Err(SendError::Timeout));
                    return Streamed::Ended(ended, unsent.unwrap_or_default());
                }
                Err(_) => return Streamed::Ended(Err(SendError::Timeout), Vec::new()),
            },
        }
        sent = true;
    }
}

async fn run_snapshot_sender(
    shared: Shared,
    to: u64,
    url: String,
    mut rx: mpsc::Receiver<Message>,
) {
    while let Some(msg) = rx.recv().await {
        let ok = match send_snapshot(&shared, to, &url, msg).await {
            Ok(()) => true,
            Err(e) => {
                warn!(shared.logger, "snapshot send failed"; "peer" => to, "error" => %e);
                let _ = shared.reports.send(Report::Unreachable(to));
                false
            }
        };
        let _ = shared.reports.send(Report::Snapshot { to, ok });
    }
}

/// Streams one snapshot's data from its file to `to` (see the module docs).
async fn send_snapshot(shared: &Shared, to: u64, url: &str, msg: Message) -> Result<(), SendError> {
    let meta = msg.get_snapshot().get_metadata().clone();
    let files = shared.files.clone();
    let opened = tokio::task::spawn_blocking(move || files.read_data(meta.index, meta.term)).await;
    let data = match opened {
        Ok(Ok(data)) => data,
        Ok(Err(e)) => {
            let _ = shared.reports.send(Report::SnapshotUnreadable);
            return Err(SendError::NotSent(format!(
                "cannot read the snapshot file: {e}"
            )));
        }
        Err(e) => return Err(SendError::NotSent(e.to_string())),
    };
    let head = Bytes::from(encode_batch(std::slice::from_ref(&msg)));
    let total = head.len() as u64 + data.remaining();
    info!(shared.logger, "sending snapshot"; "peer" => to, "index" => meta.index,
        "bytes" => total);
    let (tx, chunks) = mpsc::channel::<Bytes>(SNAPSHOT_CHUNKS_IN_FLIGHT);
    let _ = tx.send(head).await;
    let reports = shared.reports.clone();
    let logger = shared.logger.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = stream_file(data, &tx) {
            // The body ends short of its Content-Length: the receiver refuses it.
            warn!(logger, "snapshot file unreadable while sending"; "error" => %e);
            let _ = reports.send(Report::SnapshotUnreadable);
        }
    });
    let body = channel_body(chunks);
    // As for batches: the slowest link we allow for must be able to carry it in time.
    let timeout = SNAPSHOT_TIMEOUT + Duration::from_secs_f64(total as f64 / MIN_PEER_BYTES_PER_SEC);
    let target = format!("{url}/raft/snapshot");
    post(shared, to, &target, body, Some(total), timeout).await
}

/// Reads `data` in chunks into `tx`, holding the last chunk back until the file's CRC checks
/// out. Stops early (without error) when the receiving side is gone.
fn stream_file(mut data: snap::DataReader, tx: &mpsc::Sender<Bytes>) -> Result<(), snap::Error> {
    use std::io::Read as _;
    let mut held: Option<Bytes> = None;
    loop {
        let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        let mut filled = 0;
        while filled < buf.len() {
            let n = data.read(&mut buf[filled..]).map_err(|e| snap::Error::Io {
                context: "read the snapshot file".into(),
                source: e,
            })?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        if let Some(chunk) = held.replace(Bytes::from(buf)) {
            if tx.blocking_send(chunk).is_err() {
                return Ok(());
            }
        }
    }
    data.finish()?;
    if let Some(chunk) = held {
        let _ = tx.blocking_send(chunk);
    }
    Ok(())
}

/// Why a peer request failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// No connection could be made: the request was certainly not sent.
    #[error("cannot connect: {0}")]
    NotSent(String),
    #[error("request failed: {0}")]
    Http(String),
    #[error("timed out")]
    Timeout,
    #[error("peer answered {0}: {1}")]
    Status(StatusCode, String),
}

/// A request body made of the chunks that come on `chunks`, ending when its senders are gone.
fn channel_body(chunks: mpsc::Receiver<Bytes>) -> crate::http::Body {
    StreamBody::new(tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(chunks),
        |b| Ok(Frame::data(b)),
    ))
    .boxed()
}

/// A request to `url` with the headers every peer request carries.
fn peer_request(
    shared: &Shared,
    to: u64,
    url: &str,
    body: crate::http::Body,
    content_length: Option<u64>,
) -> Result<hyper::Request<crate::http::Body>, SendError> {
    let mut req = hyper::Request::post(url);
    if let Some(len) = content_length {
        req = req.header(hyper::header::CONTENT_LENGTH, len);
    }
    req.header(HEADER_CLUSTER, format!("{:x}", shared.cluster_id))
        .header(HEADER_FROM, shared.self_id.to_string())
        .header(HEADER_TO, to.to_string())
        .header(HEADER_INCARNATION, &shared.incarnation)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .map_err(|e| SendError::Http(e.to_string()))
}

/// Sends `req` and reads the answer: `Ok` for a success status.
async fn exchange(
    shared: &Shared,
    req: hyper::Request<crate::http::Body>,
) -> Result<(), SendError> {
    let client = shared
        .client
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let resp = client.request(req).await.map_err(|e| {
        if e.is_connect() {
            SendError::NotSent(e.to_string())
        } else {
            SendError::Http(e.to_string())
        }
    })?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| SendError::Http(e.to_string()))?
        .to_bytes();
    if status.is_success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string();
        Err(SendError::Status(status, text))
    }
}

async fn post(
    shared: &Shared,
    to: u64,
    url: &str,
    body: crate::http::Body,
    content_length: Option<u64>,
    timeout: Duration,
) -> Result<(), SendError> {
    let req = peer_request(shared, to, url, body, content_length)?;
    match tokio::time::timeout(timeout, exchange(shared, req)).await {
        Ok(result) => result,
        Err(_) => Err(SendError::Timeout),
    }
}
