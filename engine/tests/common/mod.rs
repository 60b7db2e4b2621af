//! Shared harness of the engine's integration tests: a toy state machine ([`Register`]) and
//! an in-process [`Cluster`] of engine nodes on loopback.
//!
//! # Layout of a cluster
//! Every node listens for peers on its own real port (`--listen-peer-addr`), and its
//! `--cluster` URL points at a [`Proxy`] that forwards to that port. Node `i` binds its
//! outgoing peer connections to `127.0.0.i` (`--peer-source-addr`), so the proxy in front of
//! node `j` can cut the link `i -> j` alone. Isolating a node (every proxy drops its source
//! IP, its own proxy drops every source) is, for the rest of the cluster, a crash.
//!
//! # Invariants
//! - Every wait is bounded by a deadline (and so in count): [`poll`] and the helpers built
//!   on it panic with what they waited for instead of hanging.
//! - Dropping a [`Cluster`] asks every running node to shut down, so that a failed test
//!   does not leave raft threads ticking in the test process.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clap::Parser;
use engine::{
    Command, Config, Epoch, Event, Exit, Handle, ImageError, Node, NodeArgs, Proposed, Rejected,
    StateMachine, Subscription,
};
use faultproxy::{Direction, Fault, Proxy};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Raft tick of every test node.
pub const TICK_MS: u64 = 40;
/// Deadline of one proposal, read or transfer in the tests.
pub const REQUEST: Duration = Duration::from_secs(5);
/// How long a cluster may take to elect and settle on a leader.
pub const SETTLE: Duration = Duration::from_secs(10);
/// Pause between two looks at a polled condition (the mechanism is the deadline).
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Most events one subscription is read for in one call.
const MAX_EVENTS: usize = 10_000;

/// The instant `within` from now.
pub fn deadline(within: Duration) -> Instant {
    Instant::now() + within
}

/// Polls `check` until it returns `Some`, at most `within`; panics naming `what` otherwise.
pub async fn poll<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let give_up = deadline(within);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            Instant::now() < give_up,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Reads `sub` until an event at or past `epoch` arrived (included), at most `within`.
pub async fn events_until(sub: &mut Subscription, epoch: Epoch, within: Duration) -> Vec<Event> {
    let give_up = deadline(within);
    let mut events = Vec::new();
    for _ in 0..MAX_EVENTS {
        match tokio::time::timeout_at(give_up.into(), sub.next()).await {
            Ok(Some(event)) => {
                let reached = event.epoch >= epoch;
                events.push(event);
                if reached {
                    return events;
                }
            }
            Ok(None) => panic!("the subscription ended before epoch {epoch:?}: {events:#?}"),
            Err(_) => panic!("no event reached epoch {epoch:?} within {within:?}: {events:#?}"),
        }
    }
    panic!("more than {MAX_EVENTS} events before epoch {epoch:?}")
}

/// The toy command: append `value`.
pub fn cmd(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

/// What a [`Register`] shares with the test that made it.
#[derive(Debug, Default)]
pub struct RegisterState {
    /// The appended values, in log order.
    pub values: Vec<u64>,
    /// Every restore: (index, number of values in the image).
    pub restores: Vec<(u64, usize)>,
}

/// The toy state machine: a list of u64s. A command is 8 bytes LE, appended; the output is
/// the new length. Anything else is rejected. The image is every value LE.
#[derive(Debug, Clone, Default)]
pub struct Register {
    state: Arc<Mutex<RegisterState>>,
}

impl Register {
    /// The shared state (read it, never hold it across an await).
    pub fn lock(&self) -> MutexGuard<'_, RegisterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The values applied so far.
    pub fn values(&self) -> Vec<u64> {
        self.lock().values.clone()
    }
}

impl StateMachine for Register {
    type Output = u64;

    fn apply(&mut self, command: Command<'_>) -> Result<u64, Rejected> {
        let bytes: [u8; 8] = command
            .bytes
            .try_into()
            .map_err(|_| Rejected(format!("{} bytes, not 8", command.bytes.len())))?;
        let mut state = self.lock();
        state.values.push(u64::from_le_bytes(bytes));
        Ok(state.values.len() as u64)
    }

    fn restore(&mut self, image: &mut dyn Read, index: u64) -> Result<(), ImageError> {
        let image = engine::read_small_image(image, REGISTER_IMAGE_LIMIT)?;
        Self::check(&image)?;
        let values: Vec<u64> = image
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let mut state = self.lock();
        state.restores.push((index, values.len()));
        state.values = values;
        Ok(())
    }

    fn validate(image: &mut dyn Read) -> Result<(), ImageError> {
        Self::check(&engine::read_small_image(image, REGISTER_IMAGE_LIMIT)?)
    }

    fn image(&self) -> Vec<u8> {
        self.lock()
            .values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }
}

impl Register {
    fn check(image: &[u8]) -> Result<(), ImageError> {
        if !image.len().is_multiple_of(8) {
            return Err(ImageError(format!(
                "{} bytes is not a whole number of values",
                image.len()
            )));
        }
        Ok(())
    }
}

/// The largest register image a test node takes.
const REGISTER_IMAGE_LIMIT: u64 = 256 << 20;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: NodeArgs,
}

/// A port that was free a moment ago.
/// `n` free ports on a loopback IP of this cluster's own (127.200-249.x.y, picked at random):
/// the proxies, the other tests and the other processes on the machine bind elsewhere, so no
/// port picked here can be taken before its node binds it. All are held at once, so they
/// differ.
fn own_addrs(n: u64) -> Vec<SocketAddr> {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let r = h.finish();
    let ip = Ipv4Addr::new(
        127,
        200 + (r % 50) as u8,
        (r >> 8) as u8,
        1 + (r >> 16) as u8 % 250,
    );
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind((ip, 0)).expect("a free port on loopback"))
        .collect();
    held.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The loopback source IP of node `id`'s outgoing peer connections.
pub fn source_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, id as u8))
}

fn test_logger() -> slog::Logger {
    engine::logger(slog::Level::Error)
}

/// One member of a test cluster.
struct Slot {
    config: Arc<Config>,
    node: Option<Node<u64>>,
    handle: Handle<u64>,
    register: Register,
}

/// `n` engine nodes in this process, each behind its fault proxy.
pub struct Cluster {
    proxies: Vec<Proxy>,
    slots: Vec<Slot>,
    _dir: TempDir,
}

impl Cluster {
    /// Starts `n` nodes (tick 40 ms) with `extra` flags added to each node's own.
    pub async fn start(n: u64, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("a temp dir");
        let real: Vec<SocketAddr> = own_addrs(n);
        let mut proxies = Vec::new();
        for target in &real {
            let listen = SocketAddr::from(([127, 0, 0, 1], 0));
            proxies.push(Proxy::start(listen, *target).await.expect("a proxy"));
        }
        let cluster = proxies
            .iter()
            .map(|p| format!("http://{}", p.local_addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut slots = Vec::new();
        let mut starts = Vec::new();
        for id in 1..=n {
            let argv: Vec<String> = [
                "--id".to_string(),
                id.to_string(),
                "--cluster".into(),
                cluster.clone(),
                "--port".into(),
                free_port().to_string(),
                "--listen-client-addr".into(),
                "127.0.0.1".into(),
                "--listen-peer-addr".into(),
                real[id as usize - 1].to_string(),
                "--peer-source-addr".into(),
                source_ip(id).to_string(),
                "--data-dir".into(),
                dir.path().join(format!("node-{id}")).display().to_string(),
                "--tick-interval-ms".into(),
                TICK_MS.to_string(),
                "--log-level".into(),
                "error".into(),
            ]
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
            let cli = Cli::try_parse_from(std::iter::once("engine-test".to_string()).chain(argv))
                .expect("clap accepts the test flags");
            let config = Arc::new(Config::from_args(&cli.args).expect("valid test flags"));
            let register = Register::default();
            // All at once: a fresh member bootstraps only once every initial member answered.
            let starting = tokio::spawn(engine::start(
                config.clone(),
                register.clone(),
                test_logger(),
            ));
            starts.push((id, config, register, starting));
        }
        for (id, config, register, starting) in starts {
            let node = starting
                .await
                .expect("the start task")
                .unwrap_or_else(|e| panic!("node {id} did not start: {e}"));
            slots.push(Slot {
                config,
                handle: node.handle(),
                node: Some(node),
                register,
            });
        }
        Cluster {
            proxies,
            slots,
            _dir: dir,
        }
    }

    fn slot(&self, id: u64) -> &Slot {
        &self.slots[id as usize - 1]
    }

    /// Every node ID.
    pub fn ids(&self) -> impl Iterator<Item = u64> {
        1..=self.slots.len() as u64
    }

    /// IDs of the nodes that run.
    pub fn running(&self) -> Vec<u64> {
        self.ids()
            .filter(|id| self.slot(*id).node.is_some())
            .collect()
    }

    /// Node `id`'s handle (of its current incarnation).
    pub fn handle(&self, id: u64) -> &Handle<u64> {
        &self.slot(id).handle
    }

    /// Node `id`'s toy state machine (of its current incarnation).
    pub fn register(&self, id: u64) -> &Register {
        &self.slot(id).register
    }

    /// Node `id`'s applied values.
    pub fn values(&self, id: u64) -> Vec<u64> {
        self.register(id).values()
    }

    /// Node `id`'s real peer address (not its proxy).
    pub fn peer_addr(&self, id: u64) -> SocketAddr {
        self.slot(id).config.peer_addr
    }

    /// The cluster ID every member derived.
    pub fn cluster_id(&self) -> u64 {
        self.slot(1).config.initial_cluster_id()
    }

    /// Some running node other than `id`.
    pub fn other_than(&self, id: u64) -> u64 {
        self.running()
            .into_iter()
            .find(|o| *o != id)
            .expect("another running node")
    }

    /// Waits until every running node knows one leader and that leader serves; returns it.
    pub async fn wait_leader(&self) -> u64 {
        self.wait_leader_among(&self.running()).await
    }

    /// Waits until the nodes `among` know one leader among them and it serves; returns it.
    pub async fn wait_leader_among(&self, running: &[u64]) -> u64 {
        poll(
            SETTLE,
            &format!("nodes {running:?} to know one serving leader"),
            || {
                let leader = self.handle(running[0]).state().leader;
                let agreed = leader != 0
                    && running.contains(&leader)
                    && running
                        .iter()
                        .all(|id| self.handle(*id).state().leader == leader);
                (agreed && self.handle(leader).state().serving).then_some(leader)
            },
        )
        .await
    }

    /// Waits until every running node knows `leader` and it serves; returns its term.
    pub async fn settle_on(&self, leader: u64) -> u64 {
        let running = self.running();
        poll(SETTLE, &format!("node {leader} to lead and serve"), || {
            let state = self.handle(leader).state();
            let known = running
                .iter()
                .all(|id| self.handle(*id).state().leader == leader);
            (known && state.serving).then_some(state.term)
        })
        .await
    }

    /// Proposes `value` on node `id`; it MUST succeed.
    pub async fn propose(&self, id: u64, value: u64) -> Proposed<u64> {
        self.handle(id)
            .propose(&cmd(value), deadline(REQUEST))
            .await
            .unwrap_or_else(|e| panic!("proposing {value} on node {id}: {e:?}"))
    }

    /// Waits until every running node's register holds exactly `expected`.
    pub async fn wait_values(&self, expected: &[u64]) {
        for id in self.running() {
            let register = self.register(id).clone();
            poll(SETTLE, &format!("node {id} to apply {expected:?}"), || {
                (register.values() == expected).then_some(())
            })
            .await;
        }
    }

    /// Cuts node `id` off from every other node, both ways: a crash, seen from the others.
    pub fn isolate(&self, id: u64) {
        for (i, proxy) in self.proxies.iter().enumerate() {
            if i as u64 + 1 == id {
                proxy.set_fault(None, Direction::Both, Fault::Blackhole);
            } else {
                proxy.set_fault(Some(source_ip(id)), Direction::Both, Fault::Blackhole);
            }
        }
    }

    /// Delays every request `from -> to` by `by`.
    pub fn delay(&self, from: u64, to: u64, by: Duration) {
        self.proxies[to as usize - 1].set_fault(
            Some(source_ip(from)),
            Direction::ToTarget,
            Fault::Delay(by),
        );
    }

    /// Removes every fault.
    pub fn heal(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }

    /// Shuts node `id` down and waits until it stopped.
    pub async fn stop(&mut self, id: u64) -> Exit {
        let slot = &mut self.slots[id as usize - 1];
        slot.handle.shutdown();
        let node = slot.node.take().expect("the node runs");
        tokio::time::timeout(SETTLE, node.wait())
            .await
            .unwrap_or_else(|_| panic!("node {id} did not stop within {SETTLE:?}"))
            .unwrap_or_else(|e| panic!("node {id} stopped badly: {e}"))
    }

    /// Starts node `id` again from its data dir, around a fresh state machine.
    pub async fn restart(&mut self, id: u64) {
        let slot = &mut self.slots[id as usize - 1];
        assert!(slot.node.is_none(), "node {id} still runs");
        let register = Register::default();
        let node = engine::start(slot.config.clone(), register.clone(), test_logger())
            .await
            .unwrap_or_else(|e| panic!("node {id} did not restart: {e}"));
        slot.handle = node.handle();
        slot.node = Some(node);
        slot.register = register;
    }

    /// Shuts every running node down and waits for all.
    pub async fn shutdown(mut self) {
        for id in self.running() {
            self.handle(id).shutdown();
        }
        for id in self.running() {
            self.stop(id).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for slot in &self.slots {
            if slot.node.is_some() {
                slot.handle.shutdown();
            }
        }
    }
}

/// One HTTP/1.1 exchange with `addr` (the connection closes after it): status and body text.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(REQUEST, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} got no answer within {REQUEST:?}"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {text:?}"));
    (status, body.to_string())
}
