//! Test support: real `raftexample` processes on loopback, temp data dirs, a tiny blocking
//! HTTP client, and polling with deadlines.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tick interval the test clusters use: 2.5x faster than the default so tests stay short.
pub const TICK_MS: u64 = 40;

/// A reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`; `Err` on connection or parse failure.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // One write, no Nagle: a head and a body in two small writes would wait for a delayed ACK.
    s.set_nodelay(true)?;
    s.write_all(&request_bytes(addr, method, path, headers, body))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_reply(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP reply"))
}

/// One HTTP/1.1 request with `Connection: close`, as bytes.
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

/// Parses a whole HTTP/1.1 reply (de-chunking a chunked body); `None` when malformed.
pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).ok()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// Polls `f` every 20 ms until it returns `Some` or `deadline` passes.
pub fn poll<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Free loopback ports (bound then released; the race with other processes is accepted).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One node process.
pub struct Node {
    pub id: u64,
    pub client: SocketAddr,
    pub peer_port: u16,
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Soft open-file limit to start the process with (the hard limit stays as it is).
    pub soft_nofile: Option<u64>,
}

impl Node {
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{}.log", self.id)))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftexample"));
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(soft) = self.soft_nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe libc calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    lim.rlim_cur = soft.min(lim.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn raftexample");
        self.child = Some(child);
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        signal(c.id(), "TERM");
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > end {
                let _ = c.kill();
                panic!("node {} did not exit after SIGTERM", self.id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let c = self.child.as_mut()?;
        let status = poll(deadline, "the node to exit", || c.try_wait().unwrap());
        self.child = None;
        status.code()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn req(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Reply> {
        request(
            self.client,
            method,
            path,
            &[],
            body,
            Duration::from_secs(10),
        )
    }

    pub fn put(&self, key: &str, value: &str) -> std::io::Result<Reply> {
        self.req("PUT", &format!("/{key}"), value.as_bytes())
    }

    pub fn get(&self, key: &str) -> std::io::Result<Reply> {
        self.req("GET", &format!("/{key}"), b"")
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let r = self.req("GET", "/status", b"").ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).ok())?
    }

    /// The sum of the `/metrics` samples whose line starts with `prefix` (a metric name, or a
    /// name with the start of its labels).
    pub fn metric(&self, prefix: &str) -> Option<u64> {
        let r = self.req("GET", "/metrics", b"").ok()?;
        if r.status != 200 {
            return None;
        }
        let text = r.text();
        let values: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("node-{}.log", self.id))).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid} failed");
}

/// A cluster of node processes sharing one temp dir.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub peer_urls: Vec<String>,
    pub tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes with `extra` flags each and waits for a leader.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster::new(n, extra);
        for node in &mut c.nodes {
            node.start();
        }
        c.wait_leader();
        c
    }

    /// Prepares (does not start) `n` nodes.
    pub fn new(n: usize, extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n);
        let peer_urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", ports[2 * i]))
            .collect();
        let nodes = (0..n)
            .map(|i| {
                let id = i as u64 + 1;
                let mut args = vec![
                    "--id".to_string(),
                    id.to_string(),
                    "--cluster".to_string(),
                    peer_urls.join(","),
                    "--port".to_string(),
                    ports[2 * i + 1].to_string(),
                    "--listen-client-addr".to_string(),
                    "127.0.0.1".to_string(),
                    "--tick-interval-ms".to_string(),
                    TICK_MS.to_string(),
                    "--request-timeout-ms".to_string(),
                    "3000".to_string(),
                    "--log-level".to_string(),
                    "debug".to_string(),
                ];
                args.extend(extra.iter().map(|s| s.to_string()));
                Node {
                    id,
                    client: SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
                    peer_port: ports[2 * i],
                    args,
                    dir: tmp.path().to_path_buf(),
                    child: None,
                    soft_nofile: None,
                }
            })
            .collect();
        Cluster {
            nodes,
            peer_urls,
            tmp,
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The ID every running node agrees leads, once they agree.
    pub fn wait_leader(&mut self) -> u64 {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect();
        let nodes = &self.nodes;
        poll(Duration::from_secs(30), "an agreed leader", || {
            let mut leader = None;
            for i in &running {
                let s = nodes[*i].status()?;
                let l = s["leader"].as_u64()?;
                if l == 0 || leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
            }
            leader
        })
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// PUTs through `id`, retrying 503s, until a 204 or the deadline.
    pub fn put_eventually(&self, id: u64, key: &str, value: &str) -> Reply {
        poll(Duration::from_secs(20), "a successful PUT", || {
            self.node(id)
                .put(key, value)
                .ok()
                .filter(|r| r.status == 204)
        })
    }
}

impl Cluster {
    /// Prepares node `len + 1` to join: a fresh peer URL appended to `--cluster`, `--join`.
    /// Returns its ID and peer URL; start it with `node_mut(id).start()` after `POST /<id>`.
    pub fn prepare_joiner(&mut self, extra: &[&str]) -> (u64, String) {
        let id = self.nodes.len() as u64 + 1;
        let ports = free_ports(2);
        let url = format!("http://127.0.0.1:{}", ports[0]);
        self.peer_urls.push(url.clone());
        let template = &self.nodes[0].args;
        let mut args: Vec<String> = Vec::new();
        let mut i = 0;
        while i < template.len() {
            match template[i].as_str() {
                "--id" | "--cluster" | "--port" => i += 2,
                _ => {
                    args.push(template[i].clone());
                    i += 1;
                }
            }
        }
        args.extend([
            "--id".to_string(),
            id.to_string(),
            "--cluster".to_string(),
            self.peer_urls.join(","),
            "--port".to_string(),
            ports[1].to_string(),
            "--join".to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        self.nodes.push(Node {
            id,
            client: SocketAddr::from(([127, 0, 0, 1], ports[1])),
            peer_port: ports[0],
            args,
            dir: self.tmp.path().to_path_buf(),
            child: None,
            soft_nofile: None,
        });
        (id, url)
    }

    /// Waits until every running node reports the same applied index and state digest.
    pub fn wait_converged(&mut self) -> (u64, String) {
        let ids: Vec<u64> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then_some(n.id))
            .collect();
        poll(Duration::from_secs(30), "replicas to converge", || {
            let mut seen = None;
            for id in &ids {
                let s = self.node(*id).status()?;
                let pair = (
                    s["applied_index"].as_u64()?,
                    s["state_digest"].as_str()?.to_string(),
                );
                if seen.as_ref().is_some_and(|p| p != &pair) {
                    return None;
                }
                seen = Some(pair);
            }
            seen
        })
    }

    /// Files in this node's snapshot dir ending in `.snap`.
    pub fn snap_files(&self, id: u64) -> usize {
        count_files(&self.dir().join(format!("raftexample-{id}-snap")), ".snap")
    }

    /// Segment files in this node's WAL dir.
    pub fn wal_files(&self, id: u64) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir().join(format!("raftexample-{id}")))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.ends_with(".wal"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

pub fn count_files(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

/// The cluster ID (hex) that the peer port `peer` hands anyone (`GET /raft/cluster`).
pub fn cluster_id_of(peer: SocketAddr) -> String {
    let info = request(
        peer,
        "GET",
        "/raft/cluster",
        &[],
        b"",
        Duration::from_secs(5),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    v["cluster_id"].as_str().unwrap().to_string()
}

/// POSTs `msgs` as one raft batch to the peer port `peer`, with valid headers naming
/// `cluster_id` (hex, as `GET /raft/cluster` gives it), `from` and `to`: what any process that
/// can reach a peer port can send.
pub fn post_raft_batch(
    peer: SocketAddr,
    cluster_id: &str,
    from: u64,
    to: u64,
    msgs: &[raft::eraftpb::Message],
) -> std::io::Result<Reply> {
    let body = raftexample::transport::encode_batch(msgs);
    post_peer(peer, "/raft", cluster_id, from, to, &body)
}

/// POSTs `body` to `path` on the peer port `peer` with valid headers naming `cluster_id`,
/// `from` and `to`, and a `Content-Length`.
pub fn post_peer(
    peer: SocketAddr,
    path: &str,
    cluster_id: &str,
    from: u64,
    to: u64,
    body: &[u8],
) -> std::io::Result<Reply> {
    let (from_s, to_s) = (from.to_string(), to.to_string());
    let headers = [
        ("X-Raft-Cluster-Id", cluster_id),
        ("X-Raft-From", from_s.as_str()),
        ("X-Raft-To", to_s.as_str()),
    ];
    request(peer, "POST", path, &headers, body, Duration::from_secs(5))
}

/// `batches` as the frames of a `POST /raft/stream` body: `[len u32 LE][batch]` each.
pub fn stream_frames(batches: &[&[raft::eraftpb::Message]]) -> Vec<u8> {
    let mut body = Vec::new();
    for msgs in batches {
        let batch = raftexample::transport::encode_batch(msgs);
        body.extend_from_slice(&(batch.len() as u32).to_le_bytes());
        body.extend_from_slice(&batch);
    }
    body
}
