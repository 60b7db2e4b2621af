//! A userspace TCP proxy that injects faults into loopback links, for fault-injection tests
//! where `tc netem` is not available.
//!
//! In the nemesis tests each raft node listens for peers on its real port, and the cluster's
//! peer URL for node `j` points at a [`Proxy`] that forwards to that port. Every node binds
//! its outgoing peer connections to its own loopback source IP (node `i` uses `127.0.0.i`),
//! so the proxy in front of node `j` tells senders apart by the connection's peer IP and
//! [`Proxy::set_fault`] can cut, slow or blackhole the link `i -> j` alone, one way or both.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use faultproxy::{Direction, Fault, Proxy};
//! let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), "127.0.0.1:12379".parse().unwrap()).await?;
//! // Partition node 2 away from the node behind this proxy, in both directions.
//! proxy.set_fault(Some("127.0.0.2".parse().unwrap()), Direction::Both, Fault::Blackhole);
//! proxy.heal();
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `fault.rs`: [`Direction`], [`Fault`] and the rule table (most specific rule wins).
//! - `connection.rs`: one proxied connection: two lanes and a guard.
//! - this file: [`Proxy`], the accept loop and its lifetime.
//!
//! # Invariants
//! - The `Proxy` value owns everything: its accept task owns every connection task (in a
//!   `JoinSet`), so dropping the `Proxy` aborts the accept task, which drops all
//!   connections. [`Proxy::shutdown`] does the same and waits until every socket is closed.
//! - A rule change reaches existing connections at once (they watch the rule table), not
//!   only new ones.
//! - At most [`MAX_CONNECTIONS`] connections are proxied at once; more are refused.

mod connection;
mod fault;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use fault::Rules;
pub use fault::{Direction, Fault};

/// Most connections proxied at once; a raft cluster needs a handful per link.
pub const MAX_CONNECTIONS: usize = 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// A running proxy from one listen address to one target address.
///
/// Dropping it stops the listener and closes every proxied connection (asynchronously, on
/// the runtime); [`Proxy::shutdown`] does it and waits.
#[derive(Debug)]
pub struct Proxy {
    local_addr: SocketAddr,
    rules: watch::Sender<Rules>,
    stop: Option<oneshot::Sender<()>>,
    accept_task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Binds `listen` (port 0 picks a free port) and starts forwarding every accepted
    /// connection to `target`, all traffic passing until a fault is set. The target need not
    /// be up: a connection accepted while it is down is reset.
    ///
    /// MUST be called within a tokio runtime (it spawns the accept task).
    ///
    /// # Errors
    /// The `bind` error when `listen` cannot be bound.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let (rules, rules_rx) = watch::channel(Rules::default());
        let (stop, stop_rx) = oneshot::channel();
        let accept_task = tokio::spawn(accept_loop(listener, target, rules_rx, stop_rx));
        Ok(Proxy {
            local_addr,
            rules,
            stop: Some(stop),
            accept_task: Some(accept_task),
        })
    }

    /// The address the proxy listens on (with the real port when started with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sets the fault for traffic from clients whose source IP is `from` (`None` = every
    /// source) in `direction`, replacing the earlier rule for the same source and lanes.
    ///
    /// The most specific rule wins: a rule for a source IP, even `Fault::Pass`, overrides
    /// the every-source rule for that source. Applies to existing connections at once.
    pub fn set_fault(&self, from: Option<IpAddr>, direction: Direction, fault: Fault) {
        self.rules
            .send_modify(|rules| rules.set(from, direction, fault));
    }

    /// Removes the rule for `from` in `direction`, so that the every-source rule (or `Pass`)
    /// applies again to that source.
    pub fn clear_fault(&self, from: Option<IpAddr>, direction: Direction) {
        self.rules.send_modify(|rules| rules.clear(from, direction));
    }

    /// Removes every rule: all traffic passes again. Connections that lost bytes to a
    /// blackhole are reset (see [`Fault::Blackhole`]); new connections work normally.
    pub fn heal(&self) {
        self.rules.send_modify(Rules::clear_all);
    }

    /// Stops listening and closes every proxied connection, returning once all of their
    /// sockets are closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.accept_task.take() {
            // A JoinError here means the task panicked or was aborted: either way it is gone.
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
        }
    }
}

/// Accepts connections until `stop` fires (or the `Proxy` is dropped), then closes all.
async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    rules: watch::Receiver<Rules>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    if let Some(client) = admit(client, peer.ip(), &rules, connections.len()) {
                        connections.spawn(connection::serve(client, peer.ip(), target, rules.clone()));
                    }
                }
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Returns the client if it may be proxied; otherwise resets it (a `Drop` rule covers its
/// source, or [`MAX_CONNECTIONS`] are open).
fn admit(
    client: TcpStream,
    source: IpAddr,
    rules: &watch::Receiver<Rules>,
    open: usize,
) -> Option<TcpStream> {
    if rules.borrow().drops(source) || open >= MAX_CONNECTIONS {
        let _ = client.set_zero_linger();
        return None;
    }
    let _ = client.set_nodelay(true);
    Some(client)
}
