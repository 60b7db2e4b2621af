//! Backups: `GET /snapshot` streams a consistent backup from a live member, and
//! `snapshot status` / `snapshot restore` read one offline (etcdctl's `snapshot save`,
//! etcdutl's `snapshot status` and `snapshot restore`).
//!
//! # The backup file (version 1)
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `RXBACKUP` |
//! | 1 | version, 1 |
//! | 8 | the source cluster's ID (u64, little-endian, as every integer here) |
//! | 8 | index of the snapshot |
//! | 8 | its term |
//! | n | the membership at that index, as a snapshot envelope head (`framing::envelope_head`) |
//! | 8 | length L of the snapshot data |
//! | L | the snapshot data exactly as in the member's snap file: the engine's envelope (the membership again) around the application's image |
//! | 32 | SHA-256 of every byte before it |
//!
//! The image is one of the engine's own snapshots, so it was taken at one applied index and
//! is streamed from its file: writes go on while it streams, and the state is never copied in
//! memory. A linearizable backup first passes the read barrier, then asks for a snapshot at or
//! above the applied index (`Handle::snapshot_now`), so it holds every write acknowledged
//! before the request.
//!
//! Restore (offline, on every member of the new cluster, from the same file) writes a snap
//! file at the backup's index and term whose envelope holds the new `--cluster` as voters and
//! no start or removal records, and a WAL whose metadata names a new cluster ID, derived from
//! the file's hash and the new `--cluster` list: every member computes the same one, and
//! members of the old cluster are refused with 412.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Response, StatusCode};
use raft::eraftpb::SnapshotMetadata;

use crate::config::{Config, NodeArgs};
use crate::framing::{envelope_head, read_envelope};
use crate::handle::Handle;
use crate::http::{text, Answer};
use crate::membership::Membership;
use crate::outcome::{query_param, Outcomes};
use crate::state_machine::StateMachine;

/// First bytes of a backup file.
pub const MAGIC: &[u8; 8] = b"RXBACKUP";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Length of the SHA-256 trailer.
pub const TRAILER_BYTES: usize = 32;
/// Backups streaming at once from one member; more are answered 503.
const MAX_STREAMS: usize = 2;
/// How long a backup may wait for its snapshot, beyond the request timeout: a merge of a
/// large state takes seconds.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);
/// Bytes per chunk of the streamed body.
const CHUNK_BYTES: usize = 1 << 20;

/// Highest index a backup may name: far above any real log, far below where raft-rs's
/// `index + 1` arithmetic would wrap.
const MAX_INDEX: u64 = 1 << 62;
/// Bound on a membership's encoding read from a backup (a hostile length must not make the
/// reader buffer a whole file): far above any real membership with its records.
const MAX_MEMBERSHIP_BYTES: u64 = 64 << 20;
/// How long one chunk of a backup may wait for a client that stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

static STREAMING: AtomicUsize = AtomicUsize::new(0);

/// What a backup's header says.
#[derive(Debug, Clone)]
pub struct Header {
    /// The source cluster.
    pub cluster_id: u64,
    /// Index of the snapshot.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The membership at that index.
    pub membership: Membership,
    /// Length of the snapshot data that follows.
    pub data_len: u64,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        for n in [self.cluster_id, self.index, self.term] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&envelope_head(&self.membership));
        out.extend_from_slice(&self.data_len.to_le_bytes());
        out
    }

    /// Reads a header from the start of `r`.
    ///
    /// # Errors
    /// A sentence: not a backup, an unknown version, a malformed membership, or the file
    /// ends inside the header.
    pub fn decode(r: &mut dyn Read) -> Result<Header, String> {
        let short = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => "the file ends inside the backup header".to_string(),
            _ => format!("cannot read the backup header: {e}"),
        };
        let mut magic = [0u8; 9];
        r.read_exact(&mut magic).map_err(short)?;
        if &magic[..8] != MAGIC {
            return Err("this is not a raftexample backup (no RXBACKUP magic)".into());
        }
        if magic[8] != VERSION {
            return Err(format!(
                "this backup has format version {}, this build reads version {VERSION}",
                magic[8]
            ));
        }
        let mut u64s = [0u64; 3];
        for n in &mut u64s {
            *n = read_u64(r).map_err(short)?;
        }
        let membership =
            read_envelope(&mut r.take(MAX_MEMBERSHIP_BYTES)).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    "the file ends inside the backup header".to_string()
                }
                _ => format!("the backup header's membership is malformed: {e}"),
            })?;
        let data_len = read_u64(r).map_err(short)?;
        let (index, term) = (u64s[1], u64s[2]);
        if index == 0 || index > MAX_INDEX || term == 0 || term > crate::limits::MAX_TERM {
            return Err(format!(
                "the backup header names index {index} and term {term}, which no snapshot has"
            ));
        }
        Ok(Header {
            cluster_id: u64s[0],
            index: u64s[1],
            term: u64s[2],
            membership,
            data_len,
        })
    }
}

fn read_u64(r: &mut dyn Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// `GET /snapshot[?consistency=serializable]`: streams a backup of this member's state (see
/// the module doc). Linearizable by default (the read barrier first); serializable lets any
/// member answer without a leader. Answers 503 when the barrier or the snapshot cannot be had
/// (nothing was changed), and ends the body short (the client's hash check fails) if the
/// snap file turns out damaged while it streams.
pub async fn answer<O: Send + 'static>(
    node: &Handle<O>,
    outcomes: &Outcomes,
    query: &str,
) -> Answer {
    let config = node.config();
    let deadline = Instant::now() + config.request_timeout;
    let linearizable = match query_param(query, "consistency") {
        None | Some("linearizable") => true,
        Some("serializable") => false,
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("consistency={other} is unknown: use linearizable or serializable"),
            )
        }
    };
    let Some(slot) = StreamSlot::take() else {
        return outcomes.unavailable(format!(
            "{MAX_STREAMS} backups are already streaming from this member: retry later, or \
             use another member"
        ));
    };
    if linearizable {
        if let Err(e) = node.read_barrier(deadline).await {
            return outcomes.read_failed(e);
        }
    }
    let not_taken = |e: crate::handle::NotApplied| {
        outcomes.unavailable(format!(
            "no backup was taken ({e}): retry, possibly on another member"
        ))
    };
    let at_least = match node.snapshot_now(deadline + SNAPSHOT_WAIT).await {
        Ok(index) => index,
        Err(e) => return not_taken(e),
    };
    let status = match node.status(deadline + SNAPSHOT_WAIT).await {
        Ok(status) => status,
        Err(e) => return not_taken(e),
    };
    let cluster_id = u64::from_str_radix(&status.cluster_id, 16).unwrap_or(0);
    let snap_dir = config.snap_dir.clone();
    let opened =
        tokio::task::spawn_blocking(move || open_newest(&snap_dir, at_least, cluster_id)).await;
    let (header, data) = match opened {
        Ok(Ok(found)) => found,
        Ok(Err(why)) => return outcomes.unavailable(format!("no backup was taken: {why}; retry")),
        Err(_) => return outcomes.unavailable("no backup was taken: retry"),
    };
    let head = Bytes::from(header.encode());
    let total = head.len() as u64 + header.data_len + TRAILER_BYTES as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let runtime = tokio::runtime::Handle::current();
    // Its own thread (not the blocking pool, whose threads serve other work later), at the
    // snapshot threads' idle priority (`priority`): a client that gives up closes the stream,
    // and the thread ends at its next send.
    let spawned = std::thread::Builder::new()
        .name("backup".into())
        .spawn(move || {
            crate::priority::run_when_idle();
            let _slot = slot;
            // A client that stops reading gives up its slot (and the open file) after a while.
            let send = |chunk: Bytes| {
                // The timer is made inside `block_on`: this thread is not the runtime's.
                runtime
                    .block_on(async { tokio::time::timeout(SEND_TIMEOUT, tx.send(chunk)).await })
                    .is_ok_and(|sent| sent.is_ok())
            };
            stream(head, data, send)
        });
    if spawned.is_err() {
        return outcomes.unavailable("no backup was taken: cannot start a thread; retry");
    }
    use http_body_util::{BodyExt, StreamBody};
    use tokio_stream::StreamExt;
    let body = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)));
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .header(hyper::header::CONTENT_LENGTH, total)
        .header("X-Raft-Index", header.index)
        .header("X-Raft-Term", header.term)
        .body(StreamBody::new(body).boxed())
        .expect("valid response")
}

/// One of [`MAX_STREAMS`] backup streams.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<StreamSlot> {
        let taken = STREAMING.fetch_add(1, Ordering::AcqRel);
        if taken >= MAX_STREAMS {
            STREAMING.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(StreamSlot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        STREAMING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The newest snap file at or above `at_least`, opened (an open file survives a purge), with
/// the header that describes it.
fn open_newest(
    dir: &Path,
    at_least: u64,
    cluster_id: u64,
) -> Result<(Header, snap::DataReader), String> {
    let files = snap::Snapshotter::new(dir).map_err(|e| e.to_string())?;
    // A newer snapshot may purge the one listed before it is opened: list again.
    for _ in 0..3 {
        let listed = files.list().map_err(|e| e.to_string())?;
        let Some(&(index, term)) = listed.first().filter(|(index, _)| *index >= at_least) else {
            return Err(format!("no snapshot file at or above index {at_least}"));
        };
        let (mut head, data) = match (files.read_data(index, term), files.read_data(index, term)) {
            (Ok(head), Ok(data)) => (head, data),
            (Err(snap::Error::Corrupt { .. }), _) | (_, Err(snap::Error::Corrupt { .. })) => {
                return Err(format!(
                    "the newest snapshot file (index {index}) is damaged: use another member, \
                     or retry after this one's next snapshot"
                ));
            }
            _ => continue, // purged meanwhile
        };
        let membership = read_envelope(&mut head)
            .map_err(|e| format!("the snapshot at index {index} is unreadable: {e}"))?;
        let header = Header {
            cluster_id,
            index,
            term,
            membership,
            data_len: data.remaining(),
        };
        return Ok((header, data));
    }
    Err("the snapshot files changed three times while opening one".into())
}

/// Sends the header, the snapshot data and the SHA-256 trailer; stops early (the body ends
/// short) when the file fails its CRC or cannot be read, or the client went away.
fn stream(head: Bytes, mut data: snap::DataReader, send: impl Fn(Bytes) -> bool) {
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    sha.update(&head);
    if !send(head) {
        return;
    }
    // The last chunk is held back until the CRC of the whole file checks out: a damaged file
    // never yields a complete body.
    let mut held: Option<Bytes> = None;
    loop {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let Ok(n) = read_full(&mut data, &mut buf) else {
            return;
        };
        if n == 0 {
            break;
        }
        buf.truncate(n);
        sha.update(&buf);
        if let Some(chunk) = held.replace(Bytes::from(buf)) {
            if !send(chunk) {
                return;
            }
        }
    }
    if data.finish().is_err() {
        return;
    }
    if let Some(chunk) = held {
        if !send(chunk) {
            return;
        }
    }
    send(Bytes::copy_from_slice(sha.finish().as_ref()));
}

/// Reads until `buf` is full or the stream ends; the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A buffered file reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    sha: ring::digest::Context,
}

impl Hashing<io::BufReader<std::fs::File>> {
    fn new(file: std::fs::File) -> Self {
        Hashing {
            inner: io::BufReader::with_capacity(CHUNK_BYTES, file),
            sha: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// A backup file, checked end to end.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// Its header.
    pub header: Header,
    /// SHA-256 of the file (its trailer), hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// Bytes of the envelope head at the start of the snapshot data.
    pub envelope_bytes: u64,
    /// The application's summary of its image (`StateMachine::summarize`).
    pub summary: Vec<(String, serde_json::Value)>,
}

/// Reads the backup at `path` once, end to end: the header, the envelope, the application's
/// image through `S::summarize` (which checks it), and the SHA-256 trailer. Nothing is held
/// in memory beyond a buffer.
///
/// # Errors
/// One sentence: unreadable, not a backup, truncated, damaged (the hash does not match), or
/// an image the application refuses.
pub fn inspect<S: StateMachine>(path: &Path) -> Result<Inspected, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let mut r = Hashing::new(file);
    let header = Header::decode(&mut r)?;
    let truncated = || {
        format!(
            "{} is truncated: it ends before its snapshot data and SHA-256 trailer",
            path.display()
        )
    };
    let mut data = (&mut r).take(header.data_len);
    // The application's verdict waits for the hash: a flipped byte is "damaged", whatever the
    // decoder makes of it.
    let mut envelope_bytes = 0;
    let verdict = match read_envelope(&mut (&mut data).take(MAX_MEMBERSHIP_BYTES)) {
        Ok(_) => {
            envelope_bytes = header.data_len - data.limit();
            S::summarize(&mut data).map_err(|e| format!("the application's image: {e}"))
        }
        Err(e) => Err(format!("the snapshot envelope: {e}")),
    };
    if io::copy(&mut data, &mut io::sink()).is_err() || data.limit() > 0 {
        return Err(truncated());
    }
    let computed = r.sha.clone().finish();
    let mut trailer = [0u8; TRAILER_BYTES];
    r.inner.read_exact(&mut trailer).map_err(|_| truncated())?;
    if computed.as_ref() != trailer {
        return Err(format!(
            "{} is damaged: its SHA-256 does not match its trailer (a flipped or lost byte); \
             take another backup",
            path.display()
        ));
    }
    let mut extra = [0u8; 1];
    if r.inner.read(&mut extra).map_err(|e| e.to_string())? > 0 {
        return Err(format!(
            "{} has bytes after its SHA-256 trailer: it is not one backup",
            path.display()
        ));
    }
    let summary = verdict.map_err(|e| format!("{} holds a bad image: {e}", path.display()))?;
    Ok(Inspected {
        header,
        sha256: hex(&trailer),
        size,
        envelope_bytes,
        summary,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cluster ID every member restored from the file with hash `sha256` into `cluster`
/// computes alike (FNV-1a over both), never the source's.
pub fn restored_cluster_id(sha256: &str, cluster: &[String], source: u64) -> u64 {
    let hash = crate::config::fnv1a(format!("restore\n{sha256}\n{}", cluster.join(",")).as_bytes());
    let hash = if hash == source { hash ^ 2 } else { hash };
    hash.max(1)
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The backup, as checked.
    pub backup: Inspected,
    /// The new cluster's ID.
    pub cluster_id: u64,
}

/// Writes the starting state of member `config.id` of a new cluster (`config.cluster`) from
/// the backup at `path`: the file is checked end to end first, the data dirs must be empty (or
/// absent), then the snap file and the WAL are written as a bootstrap writes them, at the
/// backup's index. Start the member normally afterwards (without `--join`).
///
/// # Errors
/// One sentence; nothing is written unless the file checks out and the dirs are empty.
pub fn restore<S: StateMachine>(path: &Path, config: &Config) -> Result<Restored, String> {
    // The data dirs are the member's alone (0700 dirs, 0600 files), as the node makes them.
    // SAFETY: umask only sets the process's file mode mask.
    unsafe {
        libc::umask(0o077);
    }
    let backup = inspect::<S>(path)?;
    for dir in [&config.wal_dir, &config.snap_dir] {
        let used = std::fs::read_dir(dir).map(|mut d| d.next().is_some());
        match used {
            Ok(true) => {
                return Err(format!(
                    "{} is not empty: a restore writes a new member's data and never overwrites \
                     one; use an empty --data-dir (an interrupted restore leaves its snapshot \
                     dir behind: delete both dirs and restore again)",
                    dir.display()
                ))
            }
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        }
    }
    // Both dirs are written under temporary names and renamed into place, the WAL last: a
    // crash leaves either nothing a node would start from, or a snapshot dir without a WAL,
    // which a start refuses.
    let snap_tmp = restoring(&config.snap_dir);
    let wal_tmp = restoring(&config.wal_dir);
    let written =
        write_restored(path, config, &backup, &snap_tmp, &wal_tmp).and_then(|cluster_id| {
            install_dir(&snap_tmp, &config.snap_dir)?;
            install_dir(&wal_tmp, &config.wal_dir)?;
            Ok(cluster_id)
        });
    let cluster_id = match written {
        Ok(cluster_id) => cluster_id,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&snap_tmp);
            let _ = std::fs::remove_dir_all(&wal_tmp);
            return Err(e);
        }
    };
    Ok(Restored { backup, cluster_id })
}

/// `dir` with `.restoring` appended: where a restore writes it first.
fn restoring(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".restoring");
    PathBuf::from(name)
}

/// Moves the written dir `from` to `to` (absent or empty) and syncs their parent.
fn install_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::rename(from, to)
        .map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))?;
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", parent.display()))
}

/// Writes the snap file into `snap_dir` and the WAL into `wal_dir` (both fresh); returns the
/// new cluster ID.
fn write_restored(
    path: &Path,
    config: &Config,
    backup: &Inspected,
    snap_dir: &Path,
    wal_dir: &Path,
) -> Result<u64, String> {
    for leftover in [snap_dir, wal_dir] {
        match std::fs::remove_dir_all(leftover) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", leftover.display())),
        }
    }
    let h = &backup.header;
    let cluster_id = restored_cluster_id(&backup.sha256, &config.cluster, h.cluster_id);
    let membership = Membership::initial(&config.cluster);
    let head = envelope_head(&membership);
    let image_len = h.data_len - backup.envelope_bytes;
    let mut meta = SnapshotMetadata {
        index: h.index,
        term: h.term,
        ..Default::default()
    };
    meta.set_conf_state(crate::recovery::initial_conf_state(config));
    let files = snap::Snapshotter::new(snap_dir)
        .map_err(|e| format!("cannot use {}: {e}", snap_dir.display()))?;
    let expected = backup.sha256.clone();
    files
        .save_streamed(&meta, head.len() as u64 + image_len, |out| {
            out.write_all(&head)?;
            copy_image(path, &expected, out)
        })
        .map_err(|e| format!("cannot write the snapshot file: {e}"))?;
    let seeded = Config {
        wal_dir: wal_dir.to_path_buf(),
        ..config.clone()
    };
    crate::recovery::seed_wal(&seeded, cluster_id, &meta).map_err(|e| e.to_string())?;
    Ok(cluster_id)
}

/// Copies the application's image out of the backup at `path` into `out`, checking the
/// file's hash again (it must be the file [`inspect`] checked).
fn copy_image(path: &Path, expected: &str, out: &mut dyn Write) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    let mut r = Hashing::new(file);
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let header = Header::decode(&mut r).map_err(invalid)?;
    let mut data = (&mut r).take(header.data_len);
    read_envelope(&mut data)?;
    io::copy(&mut data, out)?;
    let computed = hex(r.sha.clone().finish().as_ref());
    if computed != expected {
        return Err(invalid(format!(
            "{} changed while it was restored",
            path.display()
        )));
    }
    Ok(())
}

/// `snapshot status` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `key: value` lines.
    Simple,
    /// A table, as etcdutl's.
    Table,
    /// One JSON object.
    Json,
}

/// `snapshot` subcommands (the same for every application on the engine).
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Check a backup file end to end and print its hash, index, term, size and the
    /// application's summary of its state.
    Status {
        /// The backup file (`raftexample ctl snapshot save` writes one).
        file: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Format::Simple)]
        write_out: Format,
    },
    /// Write a new member's data dirs from a backup, offline, for a new cluster: run it on
    /// every member of the new cluster with the same file and --cluster, then start them
    /// without --join.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The new member's flags (--id, --cluster, --data-dir; the others as it will run).
        #[command(flatten)]
        node: Box<NodeArgs>,
    },
}

/// Runs a `snapshot` subcommand for the application `S`; returns the exit status (0 ok,
/// 1 the file or the disk failed, 3 bad flags). `name` prefixes the error sentence.
pub fn run_cli<S: StateMachine>(name: &str, command: &SnapshotCommand) -> i32 {
    match command {
        SnapshotCommand::Status { file, write_out } => match inspect::<S>(file) {
            Ok(found) => {
                print!("{}", render(&found, *write_out));
                0
            }
            Err(e) => {
                eprintln!("{name} snapshot status: {e}");
                1
            }
        },
        SnapshotCommand::Restore { file, node } => {
            if node.join || node.force_new_cluster {
                eprintln!(
                    "{name} snapshot restore: --join and --force-new-cluster do not apply: a \
                     restore makes a member of a new cluster, started afterwards without them"
                );
                return 3;
            }
            let config = match Config::from_args(node) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{name} snapshot restore: {e}");
                    return 3;
                }
            };
            match restore::<S>(file, &config) {
                Ok(done) => {
                    println!(
                        "restored index {} (term {}) of cluster {:x} into member {} of new \
                         cluster {:x}: {} and {}",
                        done.backup.header.index,
                        done.backup.header.term,
                        done.backup.header.cluster_id,
                        config.id,
                        done.cluster_id,
                        config.wal_dir.display(),
                        config.snap_dir.display()
                    );
                    0
                }
                Err(e) => {
                    eprintln!("{name} snapshot restore: {e}");
                    1
                }
            }
        }
    }
}

/// The rows of `snapshot status`.
fn rows(found: &Inspected) -> Vec<(String, serde_json::Value)> {
    let h = &found.header;
    let members: Vec<String> = h
        .membership
        .iter()
        .map(|m| {
            let role = if m.learner { " (learner)" } else { "" };
            format!("{}={}{role}", m.id, m.url)
        })
        .collect();
    let mut rows = vec![
        ("hash".to_string(), found.sha256.clone().into()),
        ("index".into(), h.index.into()),
        ("term".into(), h.term.into()),
        ("size".into(), found.size.into()),
        ("cluster_id".into(), format!("{:x}", h.cluster_id).into()),
        ("members".into(), members.join(",").into()),
    ];
    rows.extend(found.summary.iter().cloned());
    rows
}

/// A value as a table cell: strings without their quotes.
fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render(found: &Inspected, format: Format) -> String {
    let rows = rows(found);
    match format {
        Format::Simple => rows
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", cell(v)))
            .collect(),
        Format::Json => {
            let map: serde_json::Map<String, serde_json::Value> = rows.into_iter().collect();
            format!("{}\n", serde_json::Value::Object(map))
        }
        Format::Table => {
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::ASCII_FULL);
            table.set_header(rows.iter().map(|(k, _)| k.to_uppercase()));
            table.add_row(rows.iter().map(|(_, v)| cell(v)));
            format!("{table}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: a header reads back as written, and every cut of it is refused with a sentence
    // (never a panic, never an allocation from a length it carries).
    #[test]
    fn header_round_trip_and_truncation() {
        let header = Header {
            cluster_id: 0xfeed,
            index: 42,
            term: 7,
            membership: Membership::initial(&["http://a:1".into(), "http://b:2".into()]),
            data_len: 1234,
        };
        let bytes = header.encode();
        let back = Header::decode(&mut bytes.as_slice()).unwrap();
        assert_eq!(
            (back.cluster_id, back.index, back.term, back.data_len),
            (0xfeed, 42, 7, 1234)
        );
        assert_eq!(back.membership.iter().count(), 2);
        for cut in 0..bytes.len() {
            let err = Header::decode(&mut &bytes[..cut]).unwrap_err();
            assert!(
                err.contains("ends inside") || err.contains("not a raftexample backup"),
                "{cut}: {err}"
            );
        }
        let mut huge = bytes.clone();
        huge[17..25].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Header::decode(&mut huge.as_slice())
            .unwrap_err()
            .contains("which no snapshot has"));
        let mut zero = bytes.clone();
        zero[17..25].fill(0);
        assert!(Header::decode(&mut zero.as_slice())
            .unwrap_err()
            .contains("which no snapshot has"));
        let mut other = bytes.clone();
        other[8] = 9;
        assert!(Header::decode(&mut other.as_slice())
            .unwrap_err()
            .contains("version 9"));
    }

    // Intent: every member restored from one file into one --cluster derives the same cluster
    // ID, another file or list gives another, and it never equals the source's.
    #[test]
    fn restored_cluster_ids_agree_and_differ() {
        let cluster: Vec<String> = vec!["http://a:1".into(), "http://b:2".into()];
        let id = restored_cluster_id("ab", &cluster, 1);
        assert_eq!(id, restored_cluster_id("ab", &cluster, 1));
        assert_ne!(id, restored_cluster_id("ac", &cluster, 1));
        assert_ne!(id, restored_cluster_id("ab", &cluster[..1], 1));
        assert_ne!(restored_cluster_id("ab", &cluster, id), id);
    }
}
