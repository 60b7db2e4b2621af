//! The peer endpoint: raft message batches in, validated, into the raft inbox.
//!
//! Routes (on this node's `--cluster` URL):
//! - `POST /raft`: a batch (see `transport.rs` for the wire format), at most
//!   [`MAX_BATCH_BODY_BYTES`];
//! - `POST /raft/stream`: batches for as long as the sender keeps the body open, each framed
//!   as `[len u32 LE][batch]` (at most [`MAX_BATCH_BODY_BYTES`] each), checked one by one as
//!   `POST /raft` checks its body (and the headers again before each); the answer comes when
//!   the stream ends: 204 (ended by the sender, or idle for 30 s), else the refusal that
//!   ended it;
//! - `POST /raft/snapshot`: one `MsgSnapshot` as `[len u32 LE][message without its data][data]`
//!   with a `Content-Length`. At most one is received at a time, only from the member this
//!   node follows, in its current term; its data (at most [`MAX_SNAPSHOT_BYTES`], and never
//!   more than the disk holds above its floor) is streamed into a staged file in the snap dir,
//!   checked end to end there (CRC, envelope, the application's `validate`, all streamed),
//!   and only then handed to the raft thread, as the message with an empty data field and the
//!   staged file beside it ([`StagedSnapshot`]). Memory stays at a few chunks whatever the
//!   size;
//! - `GET /raft/cluster?id=N`: `{"fresh": false, "cluster_id": "<hex>", "id": M,
//!   "match_index": I, "started": {"incarnation": C, "nonce": X} | null, "removed": bool,
//!   "members": [{"id": ID, "url": URL}, ...]}`,
//!   asked by a starting node N (`I` is what a leader saw it acknowledge, else 0; `started` is
//!   its last start record as this member applied it). A node that has not bootstrapped yet
//!   answers `{"fresh": true, "id": M}` (see `node.rs`). A node that is not a member yet names
//!   the peer URL it would join with in [`HEADER_PEER_URL`] (what its certificate must name);
//! - `POST /raft/join`: `{"id": N, "url": URL}` (at most [`MAX_JOIN_BODY_BYTES`]), the cluster
//!   headers with `X-Raft-From: N`: a `--join` node that is not a member asks to be added (as
//!   `POST /{id}` does: a learner promoted once it started and caught up). See `join` below.
//!
//! Answers: 204 queued; 400 garbage (bad headers, undecodable message, a message not from the
//! sender or not for us, a local-only message type, a term above [`MAX_TERM`]); 409 this node
//! recorded a later start of the sender than the one it names in `X-Raft-Incarnation` (its
//! data dir was wiped or rolled back); 410 the sender was removed; 412 another
//! cluster; 411 a snapshot without a length; 413 too large; 507 an append or snapshot while
//! this node's disk is below its floor, or a snapshot larger than the disk holds; 503 the
//! inbox is full, another snapshot is being received, or a snapshot not from the leader this
//! node follows (the sender backs off and retries). Nothing is stepped unless the whole batch
//! is valid. Join requests answer as `join` says. Every refusal of a request's headers,
//! body or certificate is counted by [`Refused`] reason.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use crate::framing::read_envelope;
use crate::handle::{ChangeError, Conflict};
use crate::http::{json, read_body, text, Answer};
use crate::limits::{MAX_BATCH_BODY_BYTES, MAX_TERM};
use crate::membership::Membership;
use crate::protocol::{MemberChange, Msg, ReceiveSlot, StagedSnapshot};
use crate::transport::{HEADER_CLUSTER, HEADER_FROM, HEADER_INCARNATION, HEADER_TO};
use crate::waiters::Applied;

/// Largest snapshot data a node receives (its disk's free space above the floor bounds it
/// further).
pub const MAX_SNAPSHOT_BYTES: u64 = 64 << 30;
/// Largest message head of a snapshot request (the `MsgSnapshot` without its data).
const MAX_SNAPSHOT_HEAD_BYTES: usize = 16 << 20;
/// Bodies up to this size are decoded on the async worker itself.
const INLINE_DECODE_BYTES: usize = 1024 * 1024;
/// Time a batch body has to arrive.
const BATCH_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the next chunk of a snapshot body.
const SNAPSHOT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the next batch of a stream (a leader's stream carries a heartbeat every
/// tick; a stream with nothing to say ends, and the sender's next message opens another).
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunks of a snapshot body buffered between the connection and the file writer.
const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 8;
/// Largest join request body: an ID and one peer URL take a few dozen bytes.
pub const MAX_JOIN_BODY_BYTES: usize = 4096;
/// Time a join request body has to arrive.
const JOIN_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Header: the peer URL a node that is not a member yet would join with (on its probe).
pub const HEADER_PEER_URL: &str = "x-raft-peer-url";
/// Header on a join answer from a member that does not lead: the leader's ID.
pub const HEADER_LEADER: &str = "x-raft-leader";
/// Header on a join answer from a member that does not lead: the leader's peer URL.
pub const HEADER_LEADER_URL: &str = "x-raft-leader-url";

/// Why a peer request was refused; each reason has its own counter in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Missing or unparsable headers (400).
    Headers,
    /// Another cluster's ID (412).
    OtherCluster,
    /// Not addressed to this node (400).
    WrongReceiver,
    /// The sender was removed (410).
    Removed,
    /// An undecodable batch or message (400).
    Malformed,
    /// A message not from the sender or not to us (400).
    WrongPeer,
    /// A message type that only a node sends itself (400).
    LocalType,
    /// A term, log term or entry term above [`MAX_TERM`] (400).
    Term,
    /// A snapshot whose image does not validate (400).
    Snapshot,
    /// A sender whose start is older than the one recorded for it (409).
    Superseded,
    /// An append or snapshot while this node's disk is below its floor (507).
    DiskFull,
    /// A message that breaks what raft-rs assumes of a peer's message (400): a term of 0 on a
    /// type that always carries one, entries not contiguous after the append's index, entry
    /// terms decreasing or above the message's term.
    Invariant,
    /// A message the raft thread dropped because it contradicts this node's own state (an
    /// acknowledgement beyond our log, a snapshot older than our commit index).
    Contradicts,
    /// A snapshot from a member this node does not follow, or of another term (503).
    NotLeader,
    /// A snapshot while another one is being received (503).
    Busy,
    /// A snapshot without a length, or larger than the limit or the disk (411, 413, 507).
    SnapshotSize,
    /// A peer certificate that is not allowed, or that does not name the member the request
    /// claims to come from (403).
    Identity,
}

impl Refused {
    /// Every reason, in the order of their counters.
    pub const ALL: [Refused; 17] = [
        Refused::Headers,
        Refused::OtherCluster,
        Refused::WrongReceiver,
        Refused::Removed,
        Refused::Malformed,
        Refused::WrongPeer,
        Refused::LocalType,
        Refused::Term,
        Refused::Snapshot,
        Refused::Superseded,
        Refused::DiskFull,
        Refused::Invariant,
        Refused::Contradicts,
        Refused::NotLeader,
        Refused::Busy,
        Refused::SnapshotSize,
        Refused::Identity,
    ];

    /// The `reason` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Headers => "headers",
            Refused::OtherCluster => "other_cluster",
            Refused::WrongReceiver => "wrong_receiver",
            Refused::Removed => "removed",
            Refused::Malformed => "malformed",
            Refused::WrongPeer => "wrong_peer",
            Refused::LocalType => "local_type",
            Refused::Term => "term",
            Refused::Snapshot => "snapshot",
            Refused::Superseded => "superseded",
            Refused::DiskFull => "disk_full",
            Refused::Invariant => "invariant",
            Refused::Contradicts => "contradicts_state",
            Refused::NotLeader => "not_leader",
            Refused::Busy => "busy",
            Refused::SnapshotSize => "snapshot_size",
            Refused::Identity => "identity",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refused::OtherCluster => StatusCode::PRECONDITION_FAILED,
            Refused::Removed => StatusCode::GONE,
            Refused::Superseded => StatusCode::CONFLICT,
            Refused::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
            Refused::NotLeader | Refused::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Refused::SnapshotSize => StatusCode::PAYLOAD_TOO_LARGE,
            Refused::Identity => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A refusal with the sentence sent back.
type Refusal = (Refused, String);

/// Proposes a membership change through the engine (the node's `Handle`, which waits for a
/// leader) and resolves once it is applied on this node, or with why not. Set on the gate
/// once the handle exists (the end of `node::start`).
pub type ChangeMembers = Box<
    dyn Fn(
            u64,
            MemberChange,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Applied, ChangeError>> + Send>,
        > + Send
        + Sync,
>;

/// What the peer server checks requests against; published by the raft thread.
pub struct PeerGate {
    cluster_id: u64,
    self_id: u64,
    removed: RwLock<HashSet<u64>>,
    /// Each member's last start record as applied here: incarnation, nonce.
    starts: RwLock<HashMap<u64, (u64, u64)>>,
    /// Every member's ID and peer URL, as applied here.
    members: RwLock<Vec<(u64, String)>>,
    /// On the leader: each member's match index (empty elsewhere).
    matched: RwLock<HashMap<u64, u64>>,
    dropped: AtomicU64,
    refused: [AtomicU64; Refused::ALL.len()],
    duplicate_reads: AtomicU64,
    inbox: crate::protocol::Inbox,
    validate: ValidateImage,
    disk: Arc<crate::disk::DiskSpace>,
    /// Where received snapshots are staged before raft sees them.
    snapshots: snap::Snapshotter,
    /// The leader this node follows and its term, as the raft thread last published them.
    leader: RwLock<(u64, u64)>,
    /// Set while a snapshot is being received or waits for the raft thread.
    receiving: Arc<AtomicBool>,
    /// With peer TLS: what a peer's certificate must show.
    policy: Option<Arc<crate::tls::PeerPolicy>>,
    /// `--cluster`: whose URL a certificate must name while this node knows no membership
    /// yet (a joiner before its first snapshot).
    cluster_urls: Vec<String>,
    /// How join requests reach the engine; unset while the node starts (then 503).
    change_members: std::sync::OnceLock<ChangeMembers>,
    /// Turns true when the peer server stops: open streams end then (they never end on their
    /// own, and the server's drain would wait for them).
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// The application's image check (`StateMachine::validate`).
pub type ValidateImage = fn(&mut dyn std::io::Read) -> Result<(), crate::state_machine::ImageError>;

impl PeerGate {
    /// A gate for node `self_id` of cluster `cluster_id`; received snapshots are staged in
    /// `snapshots` and their images checked with `validate` (after the engine's envelope).
    pub fn new(
        cluster_id: u64,
        self_id: u64,
        inbox: crate::protocol::Inbox,
        validate: ValidateImage,
        disk: Arc<crate::disk::DiskSpace>,
        snapshots: snap::Snapshotter,
    ) -> PeerGate {
        PeerGate {
            cluster_id,
            self_id,
            removed: RwLock::new(HashSet::new()),
            starts: RwLock::new(HashMap::new()),
            members: RwLock::new(Vec::new()),
            matched: RwLock::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            refused: Default::default(),
            duplicate_reads: AtomicU64::new(0),
            inbox,
            validate,
            disk,
            snapshots,
            leader: RwLock::new((0, 0)),
            receiving: Arc::new(AtomicBool::new(false)),
            policy: None,
            cluster_urls: Vec::new(),
            change_members: std::sync::OnceLock::new(),
            stopping: tokio::sync::watch::channel(false).1,
        }
    }

    /// Ends open streams when `stopping` turns true (the peer server's own stop signal).
    pub fn with_stop(mut self, stopping: tokio::sync::watch::Receiver<bool>) -> PeerGate {
        self.stopping = stopping;
        self
    }

    /// Lets join requests ask for membership changes (once; later calls are ignored).
    pub fn set_change_members(&self, change: ChangeMembers) {
        let _ = self.change_members.set(change);
    }

    /// Checks every peer's certificate against `policy` (peer TLS); `cluster_urls` (the
    /// `--cluster` list) name the members until a membership is applied here.
    pub fn with_peer_policy(
        mut self,
        policy: Option<Arc<crate::tls::PeerPolicy>>,
        cluster_urls: Vec<String>,
    ) -> PeerGate {
        self.policy = policy;
        self.cluster_urls = cluster_urls;
        self
    }

    /// Whether the certificate of `req`'s connection may speak for member `from` (`None`:
    /// only that it is an allowed peer certificate), else the refusal. With
    /// `--peer-client-cert-auth` a certificate speaks only for the member it names: a URI
    /// SAN equal to that member's peer URL, or its URL's host among the SANs when no other
    /// member shares that host. `joining`: the peer URL a node that is not a member (yet)
    /// claims; its certificate must name that URL instead.
    fn check_identity(
        &self,
        extensions: &hyper::http::Extensions,
        from: Option<u64>,
        joining: Option<&str>,
    ) -> Result<(), Refusal> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let refuse = |why: String| (Refused::Identity, why);
        let cert = extensions.get::<crate::tls::PeerCertificate>();
        let Some(id) = policy.admit(cert).map_err(refuse)? else {
            return Ok(());
        };
        let Some(from) = from.filter(|_| policy.require_cert) else {
            return Ok(());
        };
        let applied = self.members.read().unwrap_or_else(|e| e.into_inner());
        let fallback: Vec<(u64, String)>;
        let members: &[(u64, String)] = if applied.is_empty() {
            fallback = self.initial_members();
            &fallback
        } else {
            &applied
        };
        let known = members.iter().find(|(m, _)| *m == from).map(|(_, u)| u);
        let Some(url) = known.map(String::as_str).or(joining) else {
            return Err(refuse(format!(
                "node {from} is not a member this node knows: its certificate ({}) cannot speak \
                 for it",
                id.describe()
            )));
        };
        let host = crate::tls::url_host(url);
        let shared = members
            .iter()
            .any(|(m, u)| *m != from && crate::tls::url_host(u) == host);
        if id.names_member(url, shared) {
            return Ok(());
        }
        Err(refuse(format!(
            "the peer certificate ({}) does not name node {from} ({url}): a member speaks only \
             for itself; issue node {from} a certificate with the URI SAN {url}",
            id.describe()
        )))
    }

    /// `--cluster` as members (whom a joiner knows before its first snapshot).
    fn initial_members(&self) -> Vec<(u64, String)> {
        (1u64..).zip(self.cluster_urls.iter().cloned()).collect()
    }

    /// Publishes the leader this node follows (0 for none) and the current term (raft
    /// thread, before it sends anything in that term).
    pub fn set_leader(&self, leader: u64, term: u64) {
        *self.leader.write().unwrap_or_else(|e| e.into_inner()) = (leader, term);
    }

    fn leader(&self) -> (u64, u64) {
        *self.leader.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The cluster ID.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Batches refused because the inbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Requests refused so far, by reason (in [`Refused::ALL`] order).
    pub fn refused(&self) -> Vec<(Refused, u64)> {
        Refused::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts a refusal (also for the raft thread's own, [`Refused::Contradicts`]).
    pub fn count_refused(&self, reason: Refused) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a ReadIndex request the leader's raft would drop as a duplicate context.
    pub fn count_duplicate_read(&self) {
        self.duplicate_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// ReadIndex requests with a context already pending on this leader.
    pub fn duplicate_reads(&self) -> u64 {
        self.duplicate_reads.load(Ordering::Relaxed)
    }

    /// Publishes the members, removed IDs and start records of `membership` (after the raft
    /// thread applied a change to them).
    pub fn set_records(&self, membership: &Membership) {
        *self.members.write().unwrap_or_else(|e| e.into_inner()) =
            membership.iter().map(|m| (m.id, m.url.clone())).collect();
        *self.removed.write().unwrap_or_else(|e| e.into_inner()) = membership.removed().collect();
        *self.starts.write().unwrap_or_else(|e| e.into_inner()) = membership
            .starts()
            .map(|(id, s)| (id, (s.incarnation, s.nonce)))
            .collect();
    }

    /// The last start record of `id` applied here: incarnation, nonce.
    pub fn start_of(&self, id: u64) -> Option<(u64, u64)> {
        self.starts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }

    /// Publishes the leader's view of each member's match index (`None` when not leading).
    pub fn set_matched(&self, matched: Option<HashMap<u64, u64>>) {
        *self.matched.write().unwrap_or_else(|e| e.into_inner()) = matched.unwrap_or_default();
    }

    /// The match index of member `id` as the leader last published it (0 when unknown).
    pub fn match_index(&self, id: u64) -> u64 {
        self.matched
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    fn is_removed(&self, id: u64) -> bool {
        self.removed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }
}

/// Handles one peer request.
pub async fn handle(gate: Arc<PeerGate>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::POST, "/raft") => {
            receive(
                gate,
                req,
                MAX_BATCH_BODY_BYTES,
                BATCH_BODY_TIMEOUT,
                decode_batch,
            )
            .await
        }
        (&Method::POST, "/raft/stream") => receive_stream(gate, req).await,
        (&Method::POST, "/raft/snapshot") => match receive_snapshot(&gate, req).await {
            Ok(answer) | Err(answer) => answer,
        },
        (&Method::GET, "/raft/cluster") => {
            let asker = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("id="))
                .and_then(|id| id.parse::<u64>().ok());
            // A node that is not a member yet names the URL it would join with.
            let joining = req
                .headers()
                .get(HEADER_PEER_URL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let Err((reason, sentence)) =
                gate.check_identity(req.extensions(), asker, joining.as_deref())
            {
                gate.count_refused(reason);
                return text(reason.status(), sentence);
            }
            let match_index = asker.map_or(0, |id| gate.match_index(id));
            let started = asker
                .and_then(|id| gate.start_of(id))
                .map(|(c, n)| serde_json::json!({"incarnation": c, "nonce": format!("{n:x}")}));
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "fresh": false,
                    "cluster_id": format!("{:x}", gate.cluster_id),
                    "id": gate.self_id,
                    "match_index": match_index,
                    "started": started,
                    "removed": asker.is_some_and(|id| gate.is_removed(id)),
                    "members": gate
                        .members
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .map(|(id, url)| serde_json::json!({"id": id, "url": url}))
                        .collect::<Vec<_>>(),
                }),
            )
        }
        (&Method::POST, "/raft/join") => join(&gate, req).await,
        (_, "/raft" | "/raft/stream" | "/raft/snapshot" | "/raft/cluster" | "/raft/join") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST for /raft, /raft/stream, /raft/snapshot and /raft/join, GET for /raft/cluster",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not a peer route: this is the raft peer port",
        ),
    }
}

/// A join request's body.
#[derive(Debug, serde::Deserialize)]
struct JoinRequest {
    id: u64,
    url: String,
}

/// `POST /raft/join`: a `--join` node that is not a member asks to be added with its peer URL,
/// as `POST /{id}` does (a learner, promoted once it started and caught up).
///
/// Nothing is proposed unless every check passes: the cluster headers (400, another cluster
/// 412), a removed ID (410: IDs are never reused), the body (over [`MAX_JOIN_BODY_BYTES`]
/// 413; not `{"id": N, "url": URL}`, ID 0 or not `X-Raft-From`, a URL that is not
/// `scheme://host:port` in this cluster's scheme: 400) and, under `--peer-client-cert-auth`,
/// a certificate that names that URL (403). Only the leader proposes: a follower cannot see
/// a change pending on the leader, whose raft-rs would turn a second one into an empty entry
/// (trap 3); a follower answers 503 with the leader's ID and URL in [`HEADER_LEADER`] and
/// [`HEADER_LEADER_URL`]. Then:
/// - 204 once the change is applied here, or at once when the ID already is a member with
///   that URL (a retry, or `POST /{id}` came first);
/// - 409 with `Retry-After` while another membership change is pending: retry;
/// - 409 without it when the ID is a member under another URL or another member has the
///   URL: final;
/// - 503 with `Retry-After`: known not applied (no leader, starting, overloaded); 504: the
///   outcome is unknown (a retry finds out).
async fn join(gate: &PeerGate, req: Request<Incoming>) -> Answer {
    match admit_join(gate, req).await {
        Ok((id, url)) => propose_join(gate, id, url).await,
        Err(answer) => answer,
    }
}

/// The checks of a join request, before anything is proposed: the joining ID and URL, or
/// the answer.
async fn admit_join(gate: &PeerGate, req: Request<Incoming>) -> Result<(u64, String), Answer> {
    let refuse = |(reason, sentence): Refusal| {
        gate.count_refused(reason);
        text(reason.status(), sentence)
    };
    let (parts, body) = req.into_parts();
    let from = check_cluster_headers(gate, &parts.headers).map_err(|(reason, sentence)| {
        let sentence = match reason {
            Refused::Removed => removed_sentence(header_id(&parts.headers)),
            _ => sentence,
        };
        refuse((reason, sentence))
    })?;
    // An allowed certificate at all, before the body is read.
    gate.check_identity(&parts.extensions, None, None)
        .map_err(refuse)?;
    let deadline = Instant::now() + JOIN_BODY_TIMEOUT;
    let body = read_body(body, MAX_JOIN_BODY_BYTES, deadline).await?;
    let (id, url) = parse_join(&body, from, gate.policy.is_some()).map_err(refuse)?;
    gate.check_identity(&parts.extensions, Some(id), Some(&url))
        .map_err(refuse)?;
    Ok((id, url))
}

fn header_id(headers: &hyper::HeaderMap) -> u64 {
    header_str(headers, HEADER_FROM)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn removed_sentence(id: u64) -> String {
    format!(
        "node {id} was removed from this cluster, and an ID is never reused (a node with its \
         old data could vote twice): wipe its data dirs and join under a new ID"
    )
}

/// The joining ID and its peer URL (without a trailing `/`) from a join request's body, sent
/// by `from`; `https`: this cluster's peer URLs are `https://`.
fn parse_join(body: &[u8], from: u64, https: bool) -> Result<(u64, String), Refusal> {
    let bad = |why: String| (Refused::Malformed, why);
    let request: JoinRequest = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "a join request is {{\"id\": <node ID>, \"url\": \"<peer URL>\"}}: {e}"
        ))
    })?;
    if request.id == 0 {
        return Err(bad(
            "node ID 0 is not a node ID: use a positive integer".into()
        ));
    }
    if request.id != from {
        return Err(bad(format!(
            "the join request is for node {} but comes from node {from} (X-Raft-From): a \
             node asks to join only for itself",
            request.id
        )));
    }
    let url = request.url.trim().trim_end_matches('/');
    crate::config::parse_peer_url(url).map_err(|e| bad(e.to_string()))?;
    let scheme = if https { "https://" } else { "http://" };
    if !url.starts_with(scheme) {
        return Err(bad(format!(
            "this cluster's peer URLs are {scheme}...: join with such a peer URL"
        )));
    }
    Ok((request.id, url.to_string()))
}

/// `status` with `Retry-After: 1`: a refusal that a later attempt can overcome.
fn retry_later(status: StatusCode, sentence: impl Into<String>) -> Answer {
    let mut answer = text(status, sentence);
    answer.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from(1),
    );
    answer
}

/// Proposes the joiner's addition on the leader (see [`join`]).
async fn propose_join(gate: &PeerGate, id: u64, url: String) -> Answer {
    let Some(change) = gate.change_members.get() else {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "this member is starting: retry shortly",
        );
    };
    let (leader, _) = gate.leader();
    if leader == 0 {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "this member knows no leader: retry shortly",
        );
    }
    let members = gate
        .members
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if leader != gate.self_id {
        let leader_url = members.iter().find(|(m, _)| *m == leader).map(|(_, u)| u);
        let mut answer = retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this member does not lead: send the join request to the leader, node {leader} \
                 ({})",
                leader_url.map_or("its URL is not known here", String::as_str)
            ),
        );
        if let Some(value) = leader_url.and_then(|u| u.parse().ok()) {
            let headers = answer.headers_mut();
            headers.insert(HEADER_LEADER_URL, value);
            headers.insert(HEADER_LEADER, leader.into());
        }
        return answer;
    }
    if let Some(answer) = known_join(&members, id, &url) {
        return answer;
    }
    let outcome = change(
        id,
        MemberChange::Add {
            url: url.clone(),
            learner: false,
        },
    )
    .await;
    match outcome {
        Ok(a) => crate::outcome::applied(StatusCode::NO_CONTENT, a.index, a.term),
        Err(e) => join_failed(e, id),
    }
}

/// The answer when the applied membership already decides a join: the ID is a member (with
/// this URL: done; with another: the ID is taken), or another member has the URL.
fn known_join(members: &[(u64, String)], id: u64, url: &str) -> Option<Answer> {
    if let Some((_, theirs)) = members.iter().find(|(m, _)| *m == id) {
        if theirs == url {
            return Some(text(StatusCode::NO_CONTENT, ""));
        }
        return Some(text(
            StatusCode::CONFLICT,
            format!(
                "node ID {id} is taken: it is a member with the peer URL {theirs}, not {url}; \
                 start the new node under an ID of its own"
            ),
        ));
    }
    let (owner, _) = members.iter().find(|(_, u)| u == url)?;
    Some(text(
        StatusCode::CONFLICT,
        format!("peer URL {url} already belongs to node {owner}: give the new node its own URL"),
    ))
}

/// How a failed join reads to the joiner (see [`join`]).
fn join_failed(e: ChangeError, id: u64) -> Answer {
    match e {
        ChangeError::Conflict(Conflict::ChangePending) => retry_later(
            StatusCode::CONFLICT,
            "another membership change is pending: retry once it is applied",
        ),
        // Applied on the raft thread but not published here yet: a retry sees it.
        ChangeError::Conflict(Conflict::AlreadyMember(_)) => retry_later(
            StatusCode::CONFLICT,
            format!("node {id} just became a member: ask again"),
        ),
        ChangeError::Conflict(Conflict::IdRemoved(id)) => {
            text(StatusCode::GONE, removed_sentence(id))
        }
        ChangeError::Conflict(c) => crate::outcome::conflict(c),
        ChangeError::NotApplied(e) => retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the join was not applied ({e}): retry"),
        ),
        ChangeError::Refused(reason) => text(
            StatusCode::CONFLICT,
            format!("the join committed but was rejected: {reason}"),
        ),
        ChangeError::Unknown => text(
            StatusCode::GATEWAY_TIMEOUT,
            "the join timed out: it may still take effect; ask again (a member with this URL \
             is answered 204)",
        ),
    }
}

/// How a body becomes validated messages.
type Decoder = fn(&Bytes, Peers) -> Result<Vec<Message>, Refusal>;

/// The sender and the receiver a request names.
#[derive(Debug, Clone, Copy)]
pub struct Peers {
    /// Sender.
    pub from: u64,
    /// Receiver (this node).
    pub to: u64,
}

async fn receive(
    gate: Arc<PeerGate>,
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
    decode: Decoder,
) -> Answer {
    let from = match check_headers(&gate, &req) {
        Ok(from) => from,
        Err((reason, sentence)) => {
            gate.count_refused(reason);
            return text(reason.status(), sentence);
        }
    };
    let body = match read_body(req.into_body(), limit, Instant::now() + timeout).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    match deliver(&gate, from, body, decode).await {
        Ok(()) => text(StatusCode::NO_CONTENT, ""),
        Err(answer) => answer,
    }
}

/// Decodes and checks one batch body from `from` and queues it in the inbox; else the answer
/// that refuses it (nothing of it was queued then).
async fn deliver(gate: &PeerGate, from: u64, body: Bytes, decode: Decoder) -> Result<(), Answer> {
    let peers = Peers {
        from,
        to: gate.self_id,
    };
    // Batches decode inline (a thread hop per batch costs more than the decoding); a large
    // one moves off the async workers.
    let decoded = if body.len() <= INLINE_DECODE_BYTES {
        Ok(decode(&body, peers))
    } else {
        tokio::task::spawn_blocking(move || decode(&body, peers)).await
    };
    let msgs = match decoded {
        Ok(Ok(msgs)) => msgs,
        Ok(Err((reason, sentence))) => {
            gate.count_refused(reason);
            return Err(text(reason.status(), sentence));
        }
        Err(_) => {
            return Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "decoder failed: retry",
            ))
        }
    };
    if msgs.is_empty() {
        return Ok(());
    }
    let grows_log = |m: &Message| match m.get_msg_type() {
        MessageType::MsgPropose => true,
        MessageType::MsgAppend => !m.entries.is_empty(),
        _ => false,
    };
    if msgs.iter().any(grows_log) {
        if let Some(answer) = refuse_when_disk_full(gate, "appends") {
            return Err(answer);
        }
    }
    match queue(gate, Msg::Raft(msgs)) {
        None => Ok(()),
        Some(refused) => Err(refused),
    }
}

/// Puts `msg` in the raft inbox; else the 503 that refuses it: full (counted as dropped; the
/// sender retries later) or shutting down.
fn queue(gate: &PeerGate, msg: Msg) -> Option<Answer> {
    match gate.inbox.try_send(msg) {
        Ok(()) => None,
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            gate.dropped.fetch_add(1, Ordering::Relaxed);
            Some(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "inbox full: retry later",
            ))
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Some(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is shutting down",
        )),
    }
}

/// `POST /raft/stream` (see the module docs): batches for as long as the sender keeps the
/// request open, each framed as `[len u32 LE][batch]`. The headers are checked at the start
/// and again before every batch (a sender removed or superseded meanwhile is refused from its
/// next batch on); each batch is checked and queued as a `POST /raft` body is. The answer
/// comes when the stream ends: 204 when the sender ended it or after [`STREAM_IDLE_TIMEOUT`]
/// without a batch, 503 when this node stops, else the refusal that ended it (the sender then
/// opens another stream, after its backoff).
async fn receive_stream(gate: Arc<PeerGate>, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let head = Request::from_parts(parts, ());
    let refuse = |(reason, sentence): Refusal| {
        gate.count_refused(reason);
        text(reason.status(), sentence)
    };
    if let Err(refusal) = check_headers(&gate, &head) {
        return refuse(refusal);
    }
    let mut stopping = gate.stopping.clone();
    // Within a batch, a pause of twice the idle time breaks the stream.
    let mut reader = BodyReader::new(body, 2 * STREAM_IDLE_TIMEOUT);
    let ended = async {
        loop {
            match tokio::time::timeout(STREAM_IDLE_TIMEOUT, reader.at_end()).await {
                Ok(Ok(false)) => {}
                Ok(Ok(true)) | Err(_) => return Ok(text(StatusCode::NO_CONTENT, "")),
                Ok(Err(why)) => return Err(why),
            }
            let len = u32::from_le_bytes(reader.read_array::<4>().await?) as usize;
            if len > MAX_BATCH_BODY_BYTES {
                gate.count_refused(Refused::Malformed);
                return Ok(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a streamed batch of {len} bytes is over {MAX_BATCH_BODY_BYTES}"),
                ));
            }
            let batch = reader.read_exact(len).await?;
            let from = match check_headers(&gate, &head) {
                Ok(from) => from,
                Err(refusal) => return Ok(refuse(refusal)),
            };
            if let Err(answer) = deliver(&gate, from, batch, decode_batch).await {
                return Ok(answer);
            }
        }
    };
    let stop = async {
        if stopping.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await; // no stop signal: the stream ends otherwise
        }
    };
    let ended: Result<Answer, String> = tokio::select! {
        ended = ended => ended,
        () = stop => return text(StatusCode::SERVICE_UNAVAILABLE, "this node is shutting down"),
    };
    ended.unwrap_or_else(|why| {
        gate.count_refused(Refused::Malformed);
        text(StatusCode::BAD_REQUEST, format!("broken stream: {why}"))
    })
}

/// `POST /raft/snapshot` (see the module docs): refusals are counted and answered at once,
/// before the body is read wherever the headers or the message head suffice.
async fn receive_snapshot(gate: &Arc<PeerGate>, req: Request<Incoming>) -> Result<Answer, Answer> {
    let refuse = |reason: Refused, sentence: String| {
        gate.count_refused(reason);
        text(reason.status(), sentence)
    };
    let from = check_headers(gate, &req).map_err(|(reason, s)| refuse(reason, s))?;
    if let Some(answer) = refuse_when_disk_full(gate, "snapshots") {
        return Err(answer);
    }
    let total = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            gate.count_refused(Refused::SnapshotSize);
            text(
                StatusCode::LENGTH_REQUIRED,
                "a snapshot needs a Content-Length",
            )
        })?;
    let limit = MAX_SNAPSHOT_BYTES + MAX_SNAPSHOT_HEAD_BYTES as u64 + 4;
    if total > limit {
        return Err(refuse(
            Refused::SnapshotSize,
            format!("a snapshot of {total} bytes is over the limit of {limit} bytes"),
        ));
    }
    let room = gate.disk.free().saturating_sub(gate.disk.floor());
    if total > room {
        gate.count_refused(Refused::DiskFull);
        return Err(text(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "a snapshot of {total} bytes does not fit: this node's disk has {room} bytes \
                 free above its floor; free space there"
            ),
        ));
    }
    let slot = ReceiveSlot::take(&gate.receiving).ok_or_else(|| {
        refuse(
            Refused::Busy,
            "another snapshot is being received: retry later".into(),
        )
    })?;
    let mut body = BodyReader::new(req.into_body(), SNAPSHOT_IDLE_TIMEOUT);
    let bad = |what: String| refuse(Refused::Malformed, what);
    let head_len = u32::from_le_bytes(body.read_array().await.map_err(bad)?) as usize;
    if head_len > MAX_SNAPSHOT_HEAD_BYTES {
        return Err(refuse(
            Refused::SnapshotSize,
            format!("a snapshot head of {head_len} bytes is over {MAX_SNAPSHOT_HEAD_BYTES}"),
        ));
    }
    let head = body.read_exact(head_len).await.map_err(bad)?;
    let msg = Message::parse_from_carllerche_bytes(&head)
        .map_err(|e| bad(format!("undecodable raft message: {e}")))?;
    if msg.get_msg_type() != MessageType::MsgSnapshot || !msg.get_snapshot().data.is_empty() {
        return Err(bad(format!(
            "{:?} with {} bytes of inline data sent as a snapshot head",
            msg.get_msg_type(),
            msg.get_snapshot().data.len()
        )));
    }
    let peers = Peers {
        from,
        to: gate.self_id,
    };
    check_message(&msg, peers).map_err(|(reason, s)| refuse(reason, s))?;
    let (leader, term) = gate.leader();
    if (msg.from, msg.term) != (leader, term) {
        return Err(refuse(
            Refused::NotLeader,
            format!(
                "a snapshot from node {} in term {}, but this node follows node {leader} in \
                 term {term}: retry later",
                msg.from, msg.term
            ),
        ));
    }
    let data_len = total
        .checked_sub(4 + head_len as u64)
        .ok_or_else(|| bad("Content-Length shorter than the snapshot head".into()))?;
    let meta = msg.get_snapshot().get_metadata().clone();
    let staged = StagedSnapshot::new(gate.snapshots.clone(), meta.index, meta.term, slot);
    stage_body(gate, &meta, data_len, body).await?;
    check_staged(gate, &meta).await?;
    match queue(gate, Msg::StagedSnapshot(Box::new(msg), staged)) {
        None => Ok(text(StatusCode::NO_CONTENT, "")),
        Some(refused) => Err(refused),
    }
}

/// Streams the rest of `body` (`data_len` bytes) into the staged file of `meta`, a few chunks
/// in flight between this task and a blocking writer.
async fn stage_body(
    gate: &PeerGate,
    meta: &raft::eraftpb::SnapshotMetadata,
    data_len: u64,
    mut body: BodyReader,
) -> Result<(), Answer> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(SNAPSHOT_CHUNKS_IN_FLIGHT);
    let (files, meta_owned) = (gate.snapshots.clone(), meta.clone());
    let writer = tokio::task::spawn_blocking(move || {
        files.stage(&meta_owned, data_len, |w| {
            while let Some(chunk) = rx.blocking_recv() {
                w.write_all(&chunk)?;
            }
            Ok(())
        })
    });
    let mut received = 0u64;
    let read = loop {
        match body.next_chunk().await {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                if received > data_len || tx.send(chunk).await.is_err() {
                    break Err(format!("more than the {data_len} data bytes announced"));
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    drop(tx);
    let written = writer.await;
    if let Err(why) = read {
        gate.count_refused(Refused::Malformed);
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("snapshot body cut short or too long ({why}): nothing was kept"),
        ));
    }
    let why = match written {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    gate.count_refused(Refused::DiskFull);
    Err(text(
        StatusCode::INSUFFICIENT_STORAGE,
        format!("this node cannot stage the snapshot ({why}): retry later"),
    ))
}

/// Checks the staged file end to end, streamed: the engine's envelope, the application's
/// image (`StateMachine::validate`), the file's CRC.
async fn check_staged(
    gate: &PeerGate,
    meta: &raft::eraftpb::SnapshotMetadata,
) -> Result<(), Answer> {
    let (files, check) = (gate.snapshots.clone(), gate.validate);
    let (index, term) = (meta.index, meta.term);
    let checked = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut data = files.read_staged(index, term).map_err(|e| e.to_string())?;
        read_envelope(&mut data).map_err(|e| format!("bad envelope: {e}"))?;
        check(&mut data).map_err(|e| e.to_string())?;
        data.finish().map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    checked.map_err(|e| {
        gate.count_refused(Refused::Snapshot);
        text(StatusCode::BAD_REQUEST, format!("snapshot rejected: {e}"))
    })
}

/// A request body read chunk by chunk, each within [`SNAPSHOT_IDLE_TIMEOUT`].
struct BodyReader {
    body: Incoming,
    /// Bytes received but not consumed yet.
    pending: Bytes,
    /// Longest wait for the next chunk.
    idle: Duration,
}

impl BodyReader {
    fn new(body: Incoming, idle: Duration) -> BodyReader {
        BodyReader {
            body,
            pending: Bytes::new(),
            idle,
        }
    }

    /// Whether the body ended (waits for the next chunk if nothing is pending).
    async fn at_end(&mut self) -> Result<bool, String> {
        if !self.pending.is_empty() {
            return Ok(false);
        }
        match self.next_chunk().await? {
            None => Ok(true),
            Some(chunk) => {
                self.pending = chunk;
                Ok(false)
            }
        }
    }

    /// The next chunk of data (what is pending first); `None` at the end of the body.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        loop {
            let frame = tokio::time::timeout(self.idle, self.body.frame())
                .await
                .map_err(|_| format!("no data for {:?}", self.idle))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
    }

    /// Exactly `n` bytes (gathered as they arrive: `n` is not trusted for allocation).
    async fn read_exact(&mut self, n: usize) -> Result<Bytes, String> {
        let mut out = Vec::new();
        while out.len() < n {
            let Some(mut chunk) = self.next_chunk().await? else {
                return Err(format!("the body ends {} bytes short", n - out.len()));
            };
            let take = (n - out.len()).min(chunk.len());
            out.extend_from_slice(&chunk[..take]);
            chunk.advance(take);
            self.pending = chunk;
        }
        Ok(Bytes::from(out))
    }

    async fn read_array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self.read_exact(N).await?;
        Ok(bytes[..].try_into().expect("N bytes"))
    }
}

/// 507 while this node's disk is below its floor: it takes no `what` (the leader retries
/// later; this node lags and keeps serving serializable reads).
fn refuse_when_disk_full(gate: &PeerGate, what: &str) -> Option<Answer> {
    let free = gate.disk.below_floor()?;
    gate.count_refused(Refused::DiskFull);
    Some(text(
        Refused::DiskFull.status(),
        format!(
            "this node takes no {what}: its disk has {free} bytes free, below its floor of {} bytes",
            gate.disk.floor()
        ),
    ))
}

/// The sender's ID, or why the request is refused.
fn check_headers<B>(gate: &PeerGate, req: &Request<B>) -> Result<u64, Refusal> {
    let from = check_cluster_headers(gate, req.headers())?;
    gate.check_identity(req.extensions(), Some(from), None)?;
    // A sender that names an older start of itself than the one applied here lost its data
    // (wiped, or rolled back to an older copy): its votes and acknowledgements are not
    // trusted. No header (an older release, a tool) is not checked.
    let incarnation = header_str(req.headers(), HEADER_INCARNATION);
    if let Some((incarnation, nonce)) = incarnation.and_then(parse_start) {
        if let Some((known, known_nonce)) = gate.start_of(from) {
            if known >= incarnation && known_nonce != nonce {
                return Err((
                    Refused::Superseded,
                    format!(
                        "node {from} speaks as start {incarnation} but this member recorded its \
                         start {known}: its data dir was wiped or rolled back; remove it \
                         (curl -XDELETE <member>/{from}) and add it back under a new ID"
                    ),
                ));
            }
        }
    }
    Ok(from)
}

fn header_str<'h>(headers: &'h hyper::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The sender's ID from the headers every peer request carries (cluster, sender, receiver),
/// or why the request is refused: another cluster, not for this node, a removed sender.
fn check_cluster_headers(gate: &PeerGate, headers: &hyper::HeaderMap) -> Result<u64, Refusal> {
    let header = |name: &str| header_str(headers, name);
    let bad = |what: &str| (Refused::Headers, format!("missing or bad {what} header"));
    let cluster = header(HEADER_CLUSTER)
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| bad("X-Raft-Cluster-Id"))?;
    let from = header(HEADER_FROM)
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|id| *id != 0)
        .ok_or_else(|| bad("X-Raft-From"))?;
    let to = header(HEADER_TO)
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| bad("X-Raft-To"))?;
    if cluster != gate.cluster_id {
        return Err((
            Refused::OtherCluster,
            format!(
                "cluster ID mismatch: this node belongs to cluster {:x}, the sender to {cluster:x}",
                gate.cluster_id
            ),
        ));
    }
    if to != gate.self_id {
        return Err((
            Refused::WrongReceiver,
            format!("this is node {}, not node {to}", gate.self_id),
        ));
    }
    if gate.is_removed(from) {
        return Err((
            Refused::Removed,
            format!("node {from} was removed from this cluster: it must shut down"),
        ));
    }
    Ok(from)
}

/// `<incarnation>-<nonce hex>`.
fn parse_start(v: &str) -> Option<(u64, u64)> {
    let (incarnation, nonce) = v.split_once('-')?;
    Some((
        incarnation.parse().ok()?,
        u64::from_str_radix(nonce, 16).ok()?,
    ))
}

/// Decodes and validates a batch body.
///
/// # Errors
/// Why the batch is refused, with a sentence.
pub fn decode_batch(body: &Bytes, peers: Peers) -> Result<Vec<Message>, Refusal> {
    let malformed = |what: &str| (Refused::Malformed, what.to_string());
    let mut msgs = Vec::new();
    let mut pos = 0usize;
    while pos < body.len() {
        let len_bytes = body
            .get(pos..pos + 4)
            .ok_or_else(|| malformed("batch ends inside a length prefix"))?;
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        pos += 4;
        let end = pos
            .checked_add(len)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| malformed("message length runs past the end of the batch"))?;
        // Zero-copy: a snapshot's data stays a slice of the request body.
        let msg = Message::parse_from_carllerche_bytes(&body.slice(pos..end))
            .map_err(|e| malformed(&format!("undecodable raft message: {e}")))?;
        pos = end;
        check_message(&msg, peers)?;
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            return Err((
                Refused::Snapshot,
                "a snapshot in a batch: snapshots go to /raft/snapshot".into(),
            ));
        }
        msgs.push(msg);
    }
    Ok(msgs)
}

/// The checks every peer message passes, whatever its route: sender and receiver, terms,
/// raft-rs's assumptions, no local-only type.
fn check_message(msg: &Message, peers: Peers) -> Result<(), Refusal> {
    let Peers { from, to: self_id } = peers;
    if msg.from != from || msg.to != self_id {
        return Err((
            Refused::WrongPeer,
            format!(
                "message from {} to {} in a batch from {from} to {self_id}",
                msg.from, msg.to
            ),
        ));
    }
    check_terms(msg)?;
    check_invariants(msg)?;
    match msg.get_msg_type() {
        MessageType::MsgHup
        | MessageType::MsgBeat
        | MessageType::MsgUnreachable
        | MessageType::MsgSnapStatus
        | MessageType::MsgCheckQuorum => Err((
            Refused::LocalType,
            format!("{:?} is local to a node", msg.get_msg_type()),
        )),
        _ => Ok(()),
    }
}

/// What raft-rs assumes of any message from a peer, checked before it can reach a raft-rs
/// assertion: forwarded proposals and read requests carry term 0 and every other type a term;
/// a proposal carries entries, a read request or answer exactly one (its context);
/// an append's entries follow its index one by one, with terms never decreasing, never below
/// its log term and never above its term; a snapshot's term is not above the message's.
fn check_invariants(msg: &Message) -> Result<(), Refusal> {
    let bad = |what: String| Err((Refused::Invariant, what));
    let t = msg.get_msg_type();
    let forwarded = matches!(t, MessageType::MsgPropose | MessageType::MsgReadIndex);
    if forwarded != (msg.term == 0) {
        return bad(format!("{t:?} with term {}", msg.term));
    }
    match t {
        // raft-rs reads the first entry of these unchecked (or aborts on none).
        MessageType::MsgPropose if msg.entries.is_empty() => {
            return bad("a proposal without entries".into())
        }
        MessageType::MsgReadIndex | MessageType::MsgReadIndexResp if msg.entries.len() != 1 => {
            return bad(format!("{t:?} with {} entries, not 1", msg.entries.len()))
        }
        // raft-rs takes term 0 for any index past its log as a match; and nothing precedes
        // index 0 but term 0.
        MessageType::MsgAppend if (msg.log_term == 0) != (msg.index == 0) => {
            return bad(format!(
                "append after index {} of term {}",
                msg.index, msg.log_term
            ))
        }
        MessageType::MsgAppend => {
            let mut prev_term = msg.log_term;
            for (i, e) in msg.entries.iter().enumerate() {
                let want = msg.index.checked_add(1 + i as u64);
                if want != Some(e.index) {
                    return bad(format!(
                        "append after index {} carries entry {} at position {i}",
                        msg.index, e.index
                    ));
                }
                if e.term < prev_term || e.term > msg.term {
                    return bad(format!(
                        "append of term {} carries entry {} of term {} after term {prev_term}",
                        msg.term, e.index, e.term
                    ));
                }
                prev_term = e.term;
            }
        }
        MessageType::MsgSnapshot => {
            let meta = msg.get_snapshot().get_metadata();
            if meta.term > msg.term || meta.index == 0 {
                return bad(format!(
                    "snapshot at index {} of term {} in a message of term {}",
                    meta.index, meta.term, msg.term
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every term a message carries (its own, its log term, its entries', its snapshot's) is at
/// most [`MAX_TERM`]: raft-rs adds 1 to terms unchecked and would wrap and panic.
fn check_terms(msg: &Message) -> Result<(), Refusal> {
    let terms = [
        ("term", msg.term),
        ("log term", msg.log_term),
        ("snapshot term", msg.get_snapshot().get_metadata().term),
    ];
    let entry_term = msg.entries.iter().map(|e| e.term).max().unwrap_or(0);
    for (what, term) in terms.into_iter().chain([("entry term", entry_term)]) {
        if term > MAX_TERM {
            return Err((
                Refused::Term,
                format!("{what} {term} is above the highest term a cluster can reach ({MAX_TERM})"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::encode_batch;

    const P: Peers = Peers { from: 2, to: 1 };

    /// A plausible message: term 1 (0 for the forwarded types), a snapshot at index 1.
    fn msg(from: u64, to: u64, t: MessageType) -> Message {
        let forwarded = matches!(t, MessageType::MsgPropose | MessageType::MsgReadIndex);
        let mut m = Message {
            from,
            to,
            term: u64::from(!forwarded),
            ..Default::default()
        };
        m.set_msg_type(t);
        if t == MessageType::MsgSnapshot {
            m.mut_snapshot().mut_metadata().index = 1;
            m.mut_snapshot().mut_metadata().term = 1;
        }
        m
    }

    // Intent: each raft-rs assumption about a peer's message is checked: term 0 only on
    // forwarded types, entries contiguous after the index with rising terms within the
    // message's, contexts on reads, entries on proposals, no term-0 match past the log.
    #[test]
    fn messages_breaking_raft_rs_assumptions_are_refused() {
        let ok = |m: &Message| check_invariants(m).is_ok();
        let mut append = msg(2, 1, MessageType::MsgAppend);
        append.term = 3;
        append.index = 5;
        append.log_term = 2;
        for (i, term) in [2, 3].into_iter().enumerate() {
            append.mut_entries().push(raft::eraftpb::Entry {
                index: 6 + i as u64,
                term,
                ..Default::default()
            });
        }
        assert!(ok(&append));
        let mut gap = append.clone();
        gap.mut_entries()[1].index = 8;
        let mut falling = append.clone();
        falling.mut_entries()[1].term = 1;
        let mut above = append.clone();
        above.mut_entries()[1].term = 4;
        let mut zero_log_term = append.clone();
        zero_log_term.log_term = 0;
        zero_log_term.mut_entries().clear();
        let mut termed_index_zero = zero_log_term.clone();
        termed_index_zero.index = 0;
        termed_index_zero.log_term = 1;
        let mut no_term = msg(2, 1, MessageType::MsgHeartbeat);
        no_term.term = 0;
        let mut termed_proposal = msg(2, 1, MessageType::MsgPropose);
        termed_proposal.term = 1;
        termed_proposal.mut_entries().push(Default::default());
        let empty_proposal = msg(2, 1, MessageType::MsgPropose);
        let contextless_read = msg(2, 1, MessageType::MsgReadIndex);
        for bad in [
            gap,
            falling,
            above,
            zero_log_term,
            termed_index_zero,
            no_term,
            termed_proposal,
            empty_proposal,
            contextless_read,
        ] {
            assert!(!ok(&bad), "{bad:?}");
        }
    }

    // Intent: a join body names the sender itself with a peer URL of the cluster's scheme;
    // anything else (bad JSON, ID 0, another ID, a bad or wrong-scheme URL) is refused as
    // malformed, and a trailing slash is dropped.
    #[test]
    fn join_bodies_are_validated() {
        let ok = parse_join(br#"{"id": 4, "url": "http://127.0.0.1:42379/"}"#, 4, false);
        assert_eq!(ok.unwrap(), (4, "http://127.0.0.1:42379".to_string()));
        let https = parse_join(br#"{"id": 4, "url": "https://h:1"}"#, 4, true);
        assert_eq!(https.unwrap(), (4, "https://h:1".to_string()));
        for (body, https) in [
            (&b"not json"[..], false),
            (br#"{"id": 4}"#, false),
            (br#"{"id": -4, "url": "http://h:1"}"#, false),
            (br#"{"id": 0, "url": "http://h:1"}"#, false),
            (br#"{"id": 5, "url": "http://h:1"}"#, false),
            (br#"{"id": 4, "url": "h:1"}"#, false),
            (br#"{"id": 4, "url": "http://h:0"}"#, false),
            (br#"{"id": 4, "url": "http://h/x:1"}"#, false),
            (br#"{"id": 4, "url": "http://h:1"}"#, true),
            (br#"{"id": 4, "url": "https://h:1"}"#, false),
        ] {
            let r = parse_join(body, 4, https);
            assert_eq!(r.map_err(|e| e.0), Err(Refused::Malformed), "{body:?}");
        }
    }

    // Intent: the applied membership decides a join without a proposal when the ID is a
    // member (same URL: done; another URL: taken) or the URL is another member's.
    #[test]
    fn known_members_decide_joins_at_once() {
        let members = vec![(1, "http://a:1".to_string()), (2, "http://b:2".to_string())];
        let status = |id, url| known_join(&members, id, url).map(|a| a.status());
        assert_eq!(status(2, "http://b:2"), Some(StatusCode::NO_CONTENT));
        assert_eq!(status(2, "http://c:3"), Some(StatusCode::CONFLICT));
        assert_eq!(status(4, "http://a:1"), Some(StatusCode::CONFLICT));
        assert_eq!(status(4, "http://d:4"), None);
    }

    // Intent: a valid batch decodes; garbage, truncation, spoofed senders, local message
    // types and snapshots (which have their own route) are refused as a whole.
    #[test]
    fn batches_are_validated() {
        let good = encode_batch(&[
            msg(2, 1, MessageType::MsgHeartbeat),
            msg(2, 1, MessageType::MsgAppend),
        ]);
        assert_eq!(
            decode_batch(&Bytes::from(good.clone()), P).unwrap().len(),
            2
        );
        for cut in 1..good.len() {
            let r = decode_batch(&Bytes::copy_from_slice(&good[..cut]), P);
            assert!(r.is_err() || r.unwrap().len() < 2);
        }
        let spoofed = encode_batch(&[msg(3, 1, MessageType::MsgHeartbeat)]);
        assert!(decode_batch(&Bytes::from(spoofed), P).is_err());
        let local = encode_batch(&[msg(2, 1, MessageType::MsgHup)]);
        assert!(decode_batch(&Bytes::from(local), P).is_err());
        let garbage = Bytes::from_static(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode_batch(&garbage, P).is_err());
        // Snapshots have their own route.
        let snap = msg(2, 1, MessageType::MsgSnapshot);
        assert!(decode_batch(&Bytes::from(encode_batch(&[snap])), P).is_err());
    }
}
