//! A cluster of real `raftexample` processes wired through fault proxies, and the operations
//! the nemesis performs on it.
//!
//! # Topology
//! Node `i` listens for peers on `IP_i:P_i` (`--listen-peer-addr`, `IP_i` = [`ip_of`]`(i)`,
//! 127.0.100.i) and binds its outgoing peer connections to `IP_i` (`--peer-source-addr`). Its
//! URL in `--cluster` is a [`faultproxy::Proxy`] on `127.0.0.1:X_i` forwarding to `IP_i:P_i`,
//! so the proxy in front of node `j` tells senders apart by source IP: the raft messages
//! `i -> j` travel on connections from `IP_i` into proxy `j`, and [`Cluster::block`] cuts
//! exactly them.
//!
//! Clients use *slots*: slot `k` is a fixed client address on its own IP ([`slot_ip`],
//! 127.0.99.k+1). A node that replaces a removed one takes over its slot (IP and port), so a
//! workload started with the slot endpoints keeps reaching a full cluster after membership
//! changes. Ports are picked by bind-and-release on IPs nobody else on the machine uses, so no
//! other test can take them before the node binds them.
//!
//! # Invariants
//! - Raft IDs are never reused: a replacement gets the next unused ID, a new data dir, a new
//!   loopback IP and a new proxy. Every ID ever used keeps its URL, so a joiner's `--cluster`
//!   lists IDs `1..=N` in order as `Config` requires.
//! - Every helper polls with a deadline; a deadline that passes panics with [`Cluster::dump`]
//!   (statuses and log tails) in the message.
//! - Dropping the cluster kills every process (SIGKILL also ends stopped ones). When the
//!   thread is panicking, the temp dir is kept and its path printed, for the bug report.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultproxy::{Direction, Fault, Proxy};
use serde_json::Value;

use crate::http::{call, Exchange};

/// Raft tick of the test clusters: 5x faster than the default.
pub const TICK_MS: u64 = 20;
/// Election timeout in ticks (200 ms; raft randomises it up to twice that).
pub const ELECTION_TICKS: u64 = 10;
/// The node's client request deadline; past it a write answers 504.
pub const REQUEST_TIMEOUT_MS: u64 = 2_000;
/// Applied entries between snapshots: small, so that faults meet compaction and catch-up by
/// snapshot.
pub const SNAPSHOT_COUNT: u64 = 500;
/// Entries kept after compaction: few, so that a node down for a second or two needs a
/// snapshot to catch up.
pub const CATCHUP_ENTRIES: u64 = 50;

/// Patience for anything that needs an election, a restart or a catch-up. Generous: two
/// shared cores, debug builds, fsync on every write.
pub const SLOW: Duration = Duration::from_secs(60);

/// One node process and what it takes to restart it.
pub struct Member {
    /// Raft ID.
    pub id: u64,
    /// Client slot (index into the cluster's client ports).
    pub slot: usize,
    /// Command line.
    args: Vec<String>,
    /// WAL dir (the snapshot dir is `<data_dir>-snap`).
    data_dir: PathBuf,
    /// stderr of every incarnation, appended.
    log: PathBuf,
    /// The running process, if any.
    child: Option<Child>,
    /// Stopped with SIGSTOP and not yet continued.
    paused: bool,
}

impl Member {
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let child = Command::new(env!("CARGO_BIN_EXE_raftexample"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftexample");
        self.child = Some(child);
        self.paused = false;
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Up and not paused: it can answer.
    pub fn live(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

/// The loopback IP of raft ID `id`: 127.0.100.id for the first 255 IDs. Not 127.0.0.x: node
/// 1 would share 127.0.0.1 with the proxies, the client ports and every other test on the
/// machine, and a port picked by bind-and-release there can be taken again before the node
/// binds it.
pub fn ip_of(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 100 + (id >> 8) as u8, (id & 0xff) as u8)
}

/// The loopback IP of client slot `slot`: 127.0.99.slot+1.
pub fn slot_ip(slot: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 99, slot as u8 + 1)
}

fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind port 0 on loopback")
}

/// Polls `f` every 20 ms until it returns `Some`, or `None` once `deadline` passed.
pub fn poll<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes a member's WAL dir `data_dir` and its snapshot dir `<data_dir>-snap`.
fn wipe(data_dir: &Path) {
    let _ = std::fs::remove_dir_all(data_dir);
    let mut snap = data_dir.as_os_str().to_owned();
    snap.push("-snap");
    let _ = std::fs::remove_dir_all(PathBuf::from(snap));
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// The cluster: members, every proxy, every URL, the client slots.
pub struct Cluster {
    runtime: tokio::runtime::Handle,
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    /// Every raft ID ever used -> its peer URL (the proxy).
    urls: BTreeMap<u64, String>,
    /// Every raft ID ever used -> the proxy in front of it.
    proxies: BTreeMap<u64, Proxy>,
    /// Current members.
    members: BTreeMap<u64, Member>,
    /// Log file of every node ever started, removed ones included.
    logs: Vec<PathBuf>,
    /// Logs of members the nemesis wiped: their refusal to start is expected, not an alarm.
    wiped_logs: Vec<PathBuf>,
    /// Client address of each slot.
    slots: Vec<SocketAddr>,
    /// Extra flags of every node.
    extra: Vec<String>,
    next_id: u64,
    /// With mutual TLS between members: the CA, which issues each new ID its certificate.
    tls: Option<raftexample::certs::Generated>,
}

impl Cluster {
    /// Starts `n` nodes (each with `extra` flags) behind proxies and waits for a leader.
    pub fn start(runtime: &tokio::runtime::Handle, n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(runtime, n, extra, false)
    }

    /// [`Cluster::start`]; with `tls`, the members speak mutual TLS to each other (https://
    /// URLs on the proxies, which forward the TLS bytes as they are).
    pub fn start_with(
        runtime: &tokio::runtime::Handle,
        n: usize,
        extra: &[&str],
        tls: bool,
    ) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("nemesis-")
            .tempdir()
            .expect("temp dir");
        let certs = tls.then(|| {
            raftexample::certs::generate(
                &tmp.path().join("certs"),
                &["https://127.0.0.1:1".to_string()],
                &raftexample::certs::CertOptions::default(),
            )
            .expect("a dev CA")
        });
        let mut c = Cluster {
            runtime: runtime.clone(),
            root: tmp.path().to_path_buf(),
            tmp: Some(tmp),
            urls: BTreeMap::new(),
            proxies: BTreeMap::new(),
            members: BTreeMap::new(),
            logs: Vec::new(),
            wiped_logs: Vec::new(),
            slots: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            next_id: 1,
            tls: certs,
        };
        let peers: Vec<(u64, SocketAddr)> = (0..n).map(|_| c.new_identity()).collect();
        for (slot, (id, peer_addr)) in peers.into_iter().enumerate() {
            let ip = slot_ip(slot);
            c.slots.push(SocketAddr::from((ip, free_port(ip))));
            let member = c.member(id, slot, peer_addr, false);
            c.logs.push(member.log.clone());
            c.members.insert(id, member);
        }
        for m in c.members.values_mut() {
            m.spawn();
        }
        c.wait_healthy();
        c
    }

    /// Allocates the next raft ID with its peer address and proxy.
    fn new_identity(&mut self) -> (u64, SocketAddr) {
        let id = self.next_id;
        self.next_id += 1;
        let ip = ip_of(id);
        let peer_addr = SocketAddr::from((ip, free_port(ip)));
        let proxy = self
            .runtime
            .block_on(Proxy::start("127.0.0.1:0".parse().unwrap(), peer_addr))
            .expect("start proxy");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", proxy.local_addr());
        if let Some(certs) = &self.tls {
            raftexample::certs::issue_member(
                certs,
                id,
                &url,
                &raftexample::certs::CertOptions::default(),
            )
            .expect("a member certificate");
        }
        self.urls.insert(id, url);
        self.proxies.insert(id, proxy);
        (id, peer_addr)
    }

    fn member(&self, id: u64, slot: usize, peer_addr: SocketAddr, join: bool) -> Member {
        let data_dir = self.root.join(format!("node-{id}"));
        // IDs are allocated in order, so this lists IDs 1..=newest, each at its position.
        let cluster: Vec<&str> = self.urls.values().map(String::as_str).collect();
        let mut args: Vec<String> = [
            "--id",
            &id.to_string(),
            "--cluster",
            &cluster.join(","),
            "--port",
            &self.slots[slot].port().to_string(),
            "--listen-client-addr",
            &self.slots[slot].ip().to_string(),
            "--listen-peer-addr",
            &peer_addr.to_string(),
            "--peer-source-addr",
            &ip_of(id).to_string(),
            "--tick-interval-ms",
            &TICK_MS.to_string(),
            "--election-ticks",
            &ELECTION_TICKS.to_string(),
            "--request-timeout-ms",
            &REQUEST_TIMEOUT_MS.to_string(),
            "--snapshot-count",
            &SNAPSHOT_COUNT.to_string(),
            "--snapshot-catchup-entries",
            &CATCHUP_ENTRIES.to_string(),
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--log-level",
            "info",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if join {
            args.push("--join".to_string());
        }
        if let Some(certs) = &self.tls {
            args.extend(certs.peer_flags(id));
        }
        args.extend(self.extra.iter().cloned());
        Member {
            id,
            slot,
            args,
            log: self.root.join(format!("node-{id}.log")),
            data_dir,
            child: None,
            paused: false,
        }
    }

    /// The client base URL of every slot, for the workload.
    pub fn endpoints(&self) -> Vec<String> {
        self.slots.iter().map(|a| format!("http://{a}")).collect()
    }

    /// The client address of every slot.
    pub fn slot_addrs(&self) -> Vec<SocketAddr> {
        self.slots.clone()
    }

    /// Client address of member `id`.
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.slots[self.members[&id].slot]
    }

    /// IDs of the current members.
    pub fn ids(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    /// Members that are up and not paused.
    pub fn live_ids(&self) -> Vec<u64> {
        self.members
            .values()
            .filter(|m| m.live())
            .map(|m| m.id)
            .collect()
    }

    /// One request to member `id`.
    pub fn req(
        &self,
        id: u64,
        method: &str,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Exchange {
        call(self.addr(id), method, path, body, timeout)
    }

    /// `GET /status` of member `id`, if it is live and answers within a second.
    pub fn status(&self, id: u64) -> Option<Value> {
        if !self.members.get(&id)?.live() {
            return None;
        }
        let reply = self
            .req(id, "GET", "/status", b"", Duration::from_secs(1))
            .reply()?;
        (reply.status == 200)
            .then(|| serde_json::from_slice(&reply.body).ok())
            .flatten()
    }

    /// The leader that every node of `ids` names, if they agree, it is one of them and it
    /// says it leads.
    pub fn agreed_leader(&self, ids: &[u64]) -> Option<u64> {
        let mut leader = None;
        for id in ids {
            let s = self.status(*id)?;
            let l = s["leader"].as_u64()?;
            if l == 0 || leader.is_some_and(|x| x != l) {
                return None;
            }
            if l == *id && s["role"].as_str() != Some("leader") {
                return None;
            }
            leader = Some(l);
        }
        leader.filter(|l| ids.contains(l))
    }

    /// Waits until the nodes of `ids` agree on a leader among themselves.
    pub fn wait_leader_among(&self, ids: &[u64]) -> u64 {
        match poll(SLOW, || self.agreed_leader(ids)) {
            Some(l) => l,
            None => panic!(
                "nodes {ids:?} did not agree on a leader among themselves within {SLOW:?}\n{}",
                self.dump()
            ),
        }
    }

    /// The current leader, as all live members see it (waits for agreement).
    pub fn leader(&self) -> u64 {
        self.wait_leader_among(&self.live_ids())
    }

    /// Waits until every member is up, all agree on a leader whose configuration is exactly
    /// the current members, and every member applied what that leader had committed when
    /// agreement was reached. Returns the leader.
    pub fn wait_healthy(&self) -> u64 {
        let ids = self.ids();
        assert_eq!(ids, self.live_ids(), "wait_healthy with members down");
        let leader = self.wait_leader_among(&ids);
        let want: Vec<u64> = ids.clone();
        let commit = poll(SLOW, || {
            let s = self.status(leader)?;
            let mut voters: Vec<u64> = s["voters"]
                .as_array()?
                .iter()
                .filter_map(|v| v["id"].as_u64())
                .collect();
            voters.sort_unstable();
            (voters == want).then(|| s["commit_index"].as_u64())?
        })
        .unwrap_or_else(|| {
            panic!(
                "leader {leader} did not report the voters {want:?}\n{}",
                self.dump()
            )
        });
        let caught_up = poll(SLOW, || {
            ids.iter()
                .all(|id| {
                    self.status(*id)
                        .and_then(|s| s["applied_index"].as_u64())
                        .is_some_and(|a| a >= commit)
                })
                .then_some(())
        });
        if caught_up.is_none() {
            panic!(
                "members did not apply the leader's commit index {commit} within {SLOW:?}\n{}",
                self.dump()
            );
        }
        leader
    }

    /// Waits until every member reports the same applied index and state digest (the
    /// cluster must be idle) and returns them.
    pub fn wait_converged(&self) -> (u64, String) {
        let ids = self.ids();
        poll(SLOW, || {
            let mut seen: Option<(u64, String)> = None;
            for id in &ids {
                let s = self.status(*id)?;
                let pair = (
                    s["applied_index"].as_u64()?,
                    s["state_digest"].as_str()?.to_string(),
                );
                if seen.as_ref().is_some_and(|p| *p != pair) {
                    return None;
                }
                seen = Some(pair);
            }
            seen
        })
        .unwrap_or_else(|| {
            panic!(
                "replicas did not converge to one applied index and digest within {SLOW:?}\n{}",
                self.dump()
            )
        })
    }

    /// kill -9 of member `id`.
    pub fn kill(&mut self, id: u64) {
        let m = self.members.get_mut(&id).expect("member");
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        m.paused = false;
    }

    /// Starts member `id` again with the same command line.
    pub fn restart(&mut self, id: u64) {
        self.members.get_mut(&id).expect("member").spawn();
    }

    /// Kills member `id`, wipes its data dirs and starts it again under its old ID. It MUST
    /// NOT take part: it is refused (exit status 1 within [`SLOW`]) because a member it
    /// reaches recorded its start (or, a joiner whose `--cluster` reaches no current member,
    /// because nobody answered its join); or, an initial member whose `--cluster` reaches no
    /// current member, it waits for them without bootstrapping (it is then killed, and must
    /// have written no WAL). Returns what happened (shortened).
    pub fn wipe_and_restart(&mut self, id: u64) -> String {
        self.kill(id);
        let m = self.members.get_mut(&id).expect("member");
        wipe(&m.data_dir);
        let log = m.log.clone();
        self.wiped_logs.push(log.clone());
        let before = std::fs::metadata(&log)
            .map(|f| f.len() as usize)
            .unwrap_or(0);
        let since_start = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.get(before..).unwrap_or_default().to_string()
        };
        m.spawn();
        let child = m.child.as_mut().expect("spawned");
        let outcome = poll(SLOW, || {
            if let Some(status) = child.try_wait().ok().flatten() {
                return Some(Ok(status));
            }
            since_start()
                .contains("waiting for every member to answer")
                .then_some(Err(()))
        });
        let data_dir = m.data_dir.clone();
        let status = match outcome {
            None => panic!(
                "wiped node {id} neither was refused nor waited\n{}",
                self.dump()
            ),
            Some(Err(())) => {
                self.kill(id);
                assert!(
                    !wal::Wal::exists(&data_dir),
                    "wiped node {id} wrote a WAL while it waited\n{}",
                    tail(&log, 20)
                );
                return "waited for the members, wrote nothing".to_string();
            }
            Some(Ok(status)) => status,
        };
        self.members.get_mut(&id).expect("member").child = None;
        assert_eq!(
            status.code(),
            Some(1),
            "wiped node {id} exited with {status}\n{}",
            tail(&log, 20)
        );
        let text = since_start();
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with("raftexample:"))
            .unwrap_or("(no sentence)");
        line.chars().take(90).collect()
    }

    /// Rotates every member's `--cluster` list by the same random shift (at least one place),
    /// for their next start. Returns the shift.
    pub fn rotate_cluster_flags(&mut self, rng: &mut crate::faults::Rng) -> usize {
        let n = self.urls.len();
        let shift = 1 + rng.below(n.saturating_sub(1).max(1) as u64) as usize;
        for m in self.members.values_mut() {
            let at = m
                .args
                .iter()
                .position(|a| a == "--cluster")
                .expect("--cluster")
                + 1;
            let mut urls: Vec<String> = m.args[at].split(',').map(str::to_string).collect();
            let len = urls.len();
            urls.rotate_left(shift % len);
            m.args[at] = urls.join(",");
        }
        shift
    }

    /// Restarts every member that is down and continues every paused one.
    pub fn revive_all(&mut self) {
        for id in self.ids() {
            if self.members[&id].paused {
                self.resume(id);
            }
            if self.members[&id].child.is_none() {
                self.restart(id);
            }
        }
    }

    /// SIGSTOP of member `id`.
    pub fn pause(&mut self, id: u64) {
        let m = self.members.get_mut(&id).expect("member");
        signal(m.pid().expect("running"), "STOP");
        m.paused = true;
    }

    /// SIGCONT of member `id`.
    pub fn resume(&mut self, id: u64) {
        let m = self.members.get_mut(&id).expect("member");
        signal(m.pid().expect("running"), "CONT");
        m.paused = false;
    }

    /// Cuts the raft messages `from -> to` (the requests and their answers) with `fault`.
    pub fn block(&self, from: u64, to: u64, fault: Fault) {
        self.proxies[&to].set_fault(Some(IpAddr::V4(ip_of(from))), Direction::Both, fault);
    }

    /// Cuts every link between `a` and `b`, both ways.
    pub fn partition(&self, a: &[u64], b: &[u64], fault: Fault) {
        for x in a {
            for y in b {
                self.block(*x, *y, fault);
                self.block(*y, *x, fault);
            }
        }
    }

    /// Delays every message into every node by `delay` (each link, both ways).
    pub fn delay_all(&self, delay: Duration) {
        for p in self.proxies.values() {
            p.set_fault(None, Direction::Both, Fault::Delay(delay));
        }
    }

    /// Replaces the CA and every member's certificate and key (same files, a new CA) and
    /// sends SIGHUP to every running member. Panics without TLS.
    pub fn rotate_certificates(&mut self) {
        let certs = self.tls.as_ref().expect("a TLS cluster");
        let new = raftexample::certs::generate(
            &self.root.join(format!("certs-{}", self.next_id)),
            &["https://127.0.0.1:1".to_string()],
            &raftexample::certs::CertOptions::default(),
        )
        .expect("a new CA");
        std::fs::copy(&new.ca, &certs.ca).expect("copy the CA");
        std::fs::copy(&new.ca_key, &certs.ca_key).expect("copy the CA key");
        for (id, url) in &self.urls {
            raftexample::certs::issue_member(
                certs,
                *id,
                url,
                &raftexample::certs::CertOptions::default(),
            )
            .expect("a member certificate");
        }
        for m in self.members.values() {
            if let Some(pid) = m.pid() {
                signal(pid, "HUP");
            }
        }
    }

    /// Everything member `id` logged so far.
    pub fn log_of(&self, id: u64) -> String {
        self.members
            .get(&id)
            .and_then(|m| std::fs::read_to_string(&m.log).ok())
            .unwrap_or_default()
    }

    /// Resets every proxied connection (each proxy refuses new ones while it lasts): pooled
    /// keep-alive connections are gone, every member dials again.
    pub fn cut_every_connection(&self, for_how_long: Duration) {
        for p in self.proxies.values() {
            p.set_fault(None, Direction::Both, Fault::Drop);
        }
        std::thread::sleep(for_how_long);
        self.heal();
    }

    /// Heals every link of every proxy.
    pub fn heal(&self) {
        for p in self.proxies.values() {
            p.heal();
        }
    }

    /// Removes member `victim` (`DELETE /{id}` on the leader), waits for it to exit 0 by
    /// itself, wipes its data, and adds a replacement under a new ID in the same client slot
    /// with `POST /{new}` and `--join`; with `crash_after`, the replacement is killed (-9)
    /// that long after its start, in the middle of joining, and restarted. Returns the new ID.
    pub fn replace(&mut self, victim: u64, crash_after: Option<Duration>) -> u64 {
        self.remove(victim);
        self.add_replacement(self.members_slot_free(), crash_after)
    }

    /// Which slot has no member (after a removal).
    fn members_slot_free(&self) -> usize {
        (0..self.slots.len())
            .find(|s| self.members.values().all(|m| m.slot != *s))
            .expect("a free slot")
    }

    /// `DELETE /{victim}` until the leader's configuration no longer has it; then waits for
    /// the process to exit 0 and wipes its directories.
    pub fn remove(&mut self, victim: u64) {
        let others: Vec<u64> = self.ids().into_iter().filter(|i| *i != victim).collect();
        let done = poll(SLOW, || {
            let leader = self.current_leader()?;
            if self.members_of(leader, "voters")?.contains(&victim) {
                let _ = self.req(
                    leader,
                    "DELETE",
                    &format!("/{victim}"),
                    b"",
                    Duration::from_secs(5),
                );
                return None;
            }
            Some(())
        });
        if done.is_none() {
            panic!("could not remove node {victim}\n{}", self.dump());
        }
        let mut m = self.members.remove(&victim).expect("member");
        // A member that was already refused (wiped) has no process left to exit.
        if let Some(mut child) = m.child.take() {
            match poll(SLOW, || child.try_wait().ok().flatten()) {
                Some(status) => assert_eq!(
                    status.code(),
                    Some(0),
                    "removed node {victim} exited with {status}\n{}",
                    self.dump()
                ),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "removed node {victim} did not exit by itself within {SLOW:?}\n{}\n{}",
                        self.dump(),
                        tail(&m.log, 30)
                    );
                }
            }
        }
        wipe(&m.data_dir);
        m.paused = false;
        // Others must still have a leader that no longer lists the victim.
        self.wait_leader_among(&others);
    }

    /// Adds a brand-new node in `slot` with `POST /{id}` then `--join` (killed and restarted
    /// `crash_after` its start, if given), and waits until the cluster is healthy with it.
    /// Returns its ID.
    pub fn add_replacement(&mut self, slot: usize, crash_after: Option<Duration>) -> u64 {
        let (id, peer_addr) = self.new_identity();
        let url = self.urls[&id].clone();
        let added = poll(SLOW, || {
            let leader = self.current_leader()?;
            // `POST /{id}` adds a learner, promoted once it started and caught up.
            if self.members_of(leader, "voters")?.contains(&id)
                || self.members_of(leader, "learners")?.contains(&id)
            {
                return Some(());
            }
            let _ = self.req(
                leader,
                "POST",
                &format!("/{id}"),
                url.as_bytes(),
                Duration::from_secs(5),
            );
            None
        });
        if added.is_none() {
            panic!("could not add node {id}\n{}", self.dump());
        }
        let mut member = self.member(id, slot, peer_addr, true);
        self.logs.push(member.log.clone());
        member.spawn();
        self.members.insert(id, member);
        if let Some(after) = crash_after {
            std::thread::sleep(after);
            self.kill(id);
            self.restart(id);
        }
        self.wait_healthy();
        let promoted = poll(SLOW, || {
            let leader = self.current_leader()?;
            self.members_of(leader, "voters")?
                .contains(&id)
                .then_some(())
        });
        if promoted.is_none() {
            panic!("node {id} was not promoted to voter\n{}", self.dump());
        }
        id
    }

    /// The live member that says it leads in the highest term, if any (no agreement
    /// needed: good enough to address an admin request, which is retried on failure).
    pub fn current_leader(&self) -> Option<u64> {
        self.live_ids()
            .into_iter()
            .filter_map(|id| {
                let s = self.status(id)?;
                (s["role"].as_str() == Some("leader")).then_some((s["term"].as_u64()?, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// The IDs in `kind` ("voters" or "learners") of node `id`'s status.
    fn members_of(&self, id: u64, kind: &str) -> Option<Vec<u64>> {
        let s = self.status(id)?;
        Some(
            s[kind]
                .as_array()?
                .iter()
                .filter_map(|v| v["id"].as_u64())
                .collect(),
        )
    }

    /// Every member's status line and log tail, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = format!("cluster dir: {}\n", self.root.display());
        for m in self.members.values() {
            let state =
                match (&m.child, m.paused) {
                    (None, _) => "down".to_string(),
                    (Some(_), true) => "paused".to_string(),
                    (Some(_), false) => {
                        self.status(m.id)
                            .map(|s| {
                                format!(
                            "role={} term={} leader={} commit={} applied={} last={} voters={}",
                            s["role"], s["term"], s["leader"], s["commit_index"],
                            s["applied_index"], s["last_index"], s["voters"]
                        )
                            })
                            .unwrap_or_else(|| "no status".to_string())
                    }
                };
            out.push_str(&format!(
                "--- node {} (slot {}): {state}\n{}",
                m.id,
                m.slot,
                tail(&m.log, 15)
            ));
        }
        out
    }

    /// Lines of every node log (removed nodes included) that show a panic or a critical
    /// error: a node must never panic, and must never fail to start under these faults (a
    /// wiped member's refusal to start under its old ID is the one expected failure).
    pub fn log_alarms(&self) -> Vec<String> {
        let mut alarms = Vec::new();
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let wiped = self.wiped_logs.contains(log);
            for line in text.lines() {
                // Refused because a member recorded its start, or (a wiped joiner whose
                // --cluster names no current member) because nobody answered: either way it
                // never took part.
                let refusal = line.contains("cannot start");
                if wiped && refusal {
                    continue;
                }
                if line.contains("panicked") || line.contains(" CRIT ") {
                    alarms.push(format!("{}: {line}", log.display()));
                }
            }
        }
        alarms
    }

    /// Keeps the temp dir after the test (for a failure report) and returns its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(tmp) = self.tmp.take() {
            let _ = tmp.keep();
        }
        self.root.clone()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.members.values_mut() {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            let dir = self.keep();
            eprintln!("nemesis: cluster files kept in {}", dir.display());
        }
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    out.push('\n');
    out
}
