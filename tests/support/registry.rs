//! Test support for the registry example (`examples/registry`): its node processes on
//! loopback with temp data dirs, and a Server-Sent Events client for `GET /watch` that
//! records every event with the instant it arrived.
//!
//! The example is built by `cargo build --examples` (and by a plain `cargo test`, but not by
//! `cargo test --test registry` alone): [`binary`] finds it next to the test binary and fails
//! with a sentence when it is missing or older than its sources.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::support::{free_ports, poll, request, Reply, TICK_MS};

/// How long a test waits for anything the cluster should do soon.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The registry example binary: `target/<profile>/examples/registry`, next to this test's
/// `target/<profile>/deps/registry-<hash>`.
///
/// # Panics
/// When it is missing or older than a source file of the example or the engine.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps");
        let binary = profile_dir.join("examples").join("registry");
        assert!(
            binary.is_file(),
            "the registry example is not built at {}: run `cargo build --examples` first (a \
             plain `cargo test` builds it, `cargo test --test registry` alone does not)",
            binary.display()
        );
        check_fresh(&binary);
        binary
    })
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn check_fresh(binary: &Path) {
    let built = modified(binary);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["examples/registry", "engine/src"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            assert!(
                modified(&entry.path()) <= built,
                "the registry example at {} is older than {}: run `cargo build --examples` again",
                binary.display(),
                entry.path().display()
            );
        }
    }
}

/// One registry node process.
pub struct RegNode {
    pub id: u64,
    pub client: SocketAddr,
    pub peer_url: String,
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

impl RegNode {
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("registry-{}.log", self.id)))
            .expect("open the node's log file");
        let child = Command::new(binary())
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the registry example");
        self.child = Some(child);
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let c = self.child.as_mut()?;
        let status = poll(deadline, "the node to exit", || c.try_wait().ok().flatten());
        self.child = None;
        status.code()
    }

    pub fn req(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Reply> {
        self.req_with(method, path, &[], body)
    }

    pub fn req_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Reply> {
        request(
            self.client,
            method,
            path,
            headers,
            body,
            Duration::from_secs(10),
        )
    }

    /// `PUT /services/{service}/{instance}?ttl_ms={ttl_ms}` with `address`.
    pub fn register(
        &self,
        service: &str,
        instance: &str,
        address: &str,
        ttl_ms: u64,
    ) -> std::io::Result<Reply> {
        let path = format!("/services/{service}/{instance}?ttl_ms={ttl_ms}");
        self.req("PUT", &path, address.as_bytes())
    }

    /// The linearizable `GET /services/{service}`, when it answers 200.
    pub fn instances(&self, service: &str) -> Option<Vec<Value>> {
        let r = self.req("GET", &format!("/services/{service}"), b"").ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).ok())?
    }

    /// Whether a linearizable read lists `instance` of `service` (`None`: no answer).
    pub fn lists(&self, service: &str, instance: &str) -> Option<bool> {
        let all = self.instances(service)?;
        Some(all.iter().any(|i| i["instance"] == instance))
    }

    pub fn status(&self) -> Option<Value> {
        let r = self.req("GET", "/status", b"").ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).ok())?
    }

    pub fn watch(&self, last_event_id: Option<u64>) -> Watch {
        Watch::open(self.client, last_event_id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("registry-{}.log", self.id)))
            .unwrap_or_default()
    }
}

impl Drop for RegNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `X-Raft-Index` of a write's answer.
pub fn raft_index(r: &Reply) -> u64 {
    r.header("x-raft-index")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no X-Raft-Index in {r:?}"))
}

/// Registry nodes sharing one temp dir.
pub struct RegCluster {
    pub nodes: Vec<RegNode>,
    pub tmp: tempfile::TempDir,
}

impl RegCluster {
    /// Starts `n` nodes with `extra` flags each and waits for an agreed leader.
    pub fn start(n: usize, extra: &[&str]) -> RegCluster {
        let mut c = RegCluster::new(n, extra);
        for node in &mut c.nodes {
            node.start();
        }
        c.wait_leader();
        c
    }

    /// Prepares (does not start) `n` nodes.
    pub fn new(n: usize, extra: &[&str]) -> RegCluster {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let ports = free_ports(2 * n);
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", ports[2 * i]))
            .collect();
        let nodes = (0..n)
            .map(|i| {
                let id = i as u64 + 1;
                let client = ports[2 * i + 1];
                node_args(id, &urls.join(","), client, tmp.path(), extra, &urls[i])
            })
            .collect();
        RegCluster { nodes, tmp }
    }

    /// Prepares node `len + 1` to join with `--join` (start it after `POST /<id>`); returns
    /// its ID and peer URL.
    pub fn prepare_joiner(&mut self) -> (u64, String) {
        let id = self.nodes.len() as u64 + 1;
        let ports = free_ports(2);
        let url = format!("http://127.0.0.1:{}", ports[0]);
        let mut urls: Vec<String> = self.nodes.iter().map(|n| n.peer_url.clone()).collect();
        urls.push(url.clone());
        let mut node = node_args(id, &urls.join(","), ports[1], self.tmp.path(), &[], &url);
        node.args.push("--join".to_string());
        self.nodes.push(node);
        (id, url)
    }

    pub fn node(&self, id: u64) -> &RegNode {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut RegNode {
        &mut self.nodes[(id - 1) as usize]
    }

    /// The leader every running node agrees on, once they agree.
    pub fn wait_leader(&self) -> u64 {
        let running: Vec<&RegNode> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        poll(PATIENCE * 2, "an agreed leader", || {
            let mut agreed = None;
            for node in &running {
                let leader = node.status()?["leader"].as_u64()?;
                if leader == 0 || agreed.is_some_and(|l| l != leader) {
                    return None;
                }
                agreed = Some(leader);
            }
            agreed
        })
    }

    /// The IDs of the running nodes other than `id`.
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.id != id && n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Registers through `id`, retrying answers other than 204 (503 during an election),
    /// until a 204.
    pub fn register_eventually(
        &self,
        id: u64,
        service: &str,
        instance: &str,
        address: &str,
        ttl_ms: u64,
    ) -> Reply {
        poll(PATIENCE, "a successful registration", || {
            let r = self.node(id).register(service, instance, address, ttl_ms);
            r.ok().filter(|r| r.status == 204)
        })
    }
}

fn node_args(
    id: u64,
    cluster: &str,
    client: u16,
    dir: &Path,
    extra: &[&str],
    url: &str,
) -> RegNode {
    let mut args: Vec<String> = [
        "--id",
        &id.to_string(),
        "--cluster",
        cluster,
        "--port",
        &client.to_string(),
        "--listen-client-addr",
        "127.0.0.1",
        "--tick-interval-ms",
        &TICK_MS.to_string(),
        "--request-timeout-ms",
        "3000",
        "--data-dir",
        &format!("registry-{id}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    RegNode {
        id,
        client: SocketAddr::from(([127, 0, 0, 1], client)),
        peer_url: url.to_string(),
        args,
        dir: dir.to_path_buf(),
        child: None,
    }
}

/// One Server-Sent Event, as received.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub name: String,
    pub id: Option<u64>,
    pub data: Value,
    /// When the client parsed it.
    pub at: Instant,
}

impl SseEvent {
    /// Whether this is a registry event (not `leader`) about `service`/`instance`.
    pub fn is_about(&self, service: &str, instance: &str) -> bool {
        self.data["service"] == service && self.data["instance"] == instance
    }

    pub fn index(&self) -> u64 {
        self.id
            .unwrap_or_else(|| panic!("event without an id: {self:?}"))
    }
}

#[derive(Default)]
struct Received {
    status: Option<u16>,
    events: Vec<SseEvent>,
    ended: bool,
}

/// A `GET /watch` stream read by a thread of its own.
pub struct Watch {
    received: Arc<Mutex<Received>>,
    stream: TcpStream,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    /// Opens `GET /watch` (with `Last-Event-ID` if given) and waits for a 200.
    pub fn open(addr: SocketAddr, last_event_id: Option<u64>) -> Watch {
        let mut stream = TcpStream::connect(addr).expect("connect for /watch");
        let mut head = format!("GET /watch HTTP/1.1\r\nHost: {addr}\r\n");
        if let Some(id) = last_event_id {
            head.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("send /watch");
        let received = Arc::new(Mutex::new(Received::default()));
        let reading = stream.try_clone().expect("clone the watch socket");
        let shared = received.clone();
        let reader = std::thread::spawn(move || read_stream(reading, shared));
        let watch = Watch {
            received,
            stream,
            reader: Some(reader),
        };
        let status = poll(PATIENCE, "the /watch answer", || {
            watch.received.lock().unwrap().status
        });
        assert_eq!(status, 200, "GET /watch answered {status}");
        watch
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<SseEvent> {
        self.received.lock().unwrap().events.clone()
    }

    /// Every registry event so far (all but `leader`).
    pub fn registry_events(&self) -> Vec<SseEvent> {
        let mut events = self.events();
        events.retain(|e| e.name != "leader");
        events
    }

    /// Polls the events until `f` returns `Some`.
    pub fn wait_until<T>(&self, what: &str, mut f: impl FnMut(&[SseEvent]) -> Option<T>) -> T {
        poll(PATIENCE, what, || {
            let received = self.received.lock().unwrap();
            f(&received.events)
        })
    }

    /// Waits until a registry event with an index of at least `index` arrived.
    pub fn wait_index(&self, index: u64) -> Vec<SseEvent> {
        self.wait_until(&format!("an event at index {index} or later"), |events| {
            events
                .iter()
                .any(|e| e.name != "leader" && e.id.is_some_and(|i| i >= index))
                .then(|| events.to_vec())
        })
    }

    /// The id of the last event that had one.
    pub fn last_id(&self) -> Option<u64> {
        self.events().iter().rev().find_map(|e| e.id)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Reads the answer head, de-chunks the body and parses SSE frames until the stream ends.
fn read_stream(mut stream: TcpStream, received: Arc<Mutex<Received>>) {
    let mut raw = Vec::new();
    let mut body = Vec::new();
    let mut head_done = false;
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        raw.extend_from_slice(&buf[..n]);
        if !head_done {
            let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..split]).to_string();
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
            received.lock().unwrap().status = Some(status.unwrap_or(0));
            raw.drain(..split + 4);
            head_done = true;
        }
        let ended = dechunk(&mut raw, &mut body);
        for frame in take_frames(&mut body) {
            received.lock().unwrap().events.push(frame);
        }
        if ended {
            break;
        }
    }
    received.lock().unwrap().ended = true;
}

/// Moves every complete chunk of `raw` to `body`; true at the last chunk.
fn dechunk(raw: &mut Vec<u8>, body: &mut Vec<u8>) -> bool {
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]).to_string();
        let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
            return true;
        };
        if size == 0 {
            return true;
        }
        let end = line_end + 2 + size + 2;
        if raw.len() < end {
            return false;
        }
        body.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw.drain(..end);
    }
}

/// Removes and parses every complete SSE frame (ended by a blank line) from `body`.
fn take_frames(body: &mut Vec<u8>) -> Vec<SseEvent> {
    let mut frames = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\n\n") {
        let frame = String::from_utf8_lossy(&body[..end]).to_string();
        body.drain(..end + 2);
        let (mut name, mut id, mut data) = (String::new(), None, String::new());
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v.to_string();
            }
        }
        if name.is_empty() {
            continue; // a comment
        }
        let data = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("event {name} has data that is not JSON ({e}): {data}"));
        frames.push(SseEvent {
            name,
            id,
            data,
            at: Instant::now(),
        });
    }
    frames
}
