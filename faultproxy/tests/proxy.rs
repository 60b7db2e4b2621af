//! End-to-end tests of the fault proxy: real TCP echo servers and clients on loopback.
//!
//! Clients that need a distinct source IP bind to `127.0.0.2`, `127.0.0.3`, ... before
//! connecting, as raft nodes do. Waits are bounded by deadlines; the only deliberate waits
//! are the delay under test and the absence window that proves nothing arrives.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultproxy::{Direction, Fault, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

/// Upper bound for anything that should happen "promptly" on loopback.
const DEADLINE: Duration = Duration::from_secs(5);

/// How long we watch a blackholed link to conclude that nothing comes through.
const ABSENCE_WINDOW: Duration = Duration::from_millis(300);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An echo server on loopback; counts every byte it receives.
async fn echo_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, received)
}

async fn proxy_to(target: SocketAddr) -> Proxy {
    Proxy::start("127.0.0.1:0".parse().unwrap(), target)
        .await
        .unwrap()
}

/// Connects to `addr` from source IP `from`.
async fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends `msg` and reads the same number of bytes back.
async fn roundtrip(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    timeout(DEADLINE, stream.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no echo"))??;
    Ok(back)
}

/// True when the stream is closed (EOF or reset) within the deadline.
async fn closed_soon(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        match timeout(end - Instant::now(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// True when nothing at all arrives within the absence window (and the stream stays open).
async fn silent(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    timeout(ABSENCE_WINDOW, stream.read(&mut buf))
        .await
        .is_err()
}

/// Polls `cond` until it holds or the deadline passes.
async fn eventually(cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

#[tokio::test]
async fn pass_forwards_both_ways_in_order() {
    // Intent: with no fault, bytes reach the target and come back unchanged and in order,
    // including a payload far larger than one chunk or one lane queue.
    let (echo, _) = echo_server().await;
    let proxy = proxy_to(echo).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert_eq!(roundtrip(&mut client, b"hello").await.unwrap(), b"hello");

    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = client.into_split();
    let sent = big.clone();
    let writer = tokio::spawn(async move { wr.write_all(&sent).await.map(|_| wr) });
    let mut back = vec![0u8; big.len()];
    timeout(DEADLINE, rd.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap().unwrap();
    assert!(back == big, "payload corrupted");
}

#[tokio::test]
async fn delay_applies_to_existing_connection() {
    // Intent: a Delay set after the connection was opened adds at least that much latency
    // to each chunk, and heal removes it.
    let (echo, _) = echo_server().await;
    let proxy = proxy_to(echo).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    roundtrip(&mut client, b"warm").await.unwrap();

    let delay = Duration::from_millis(150);
    proxy.set_fault(None, Direction::Both, Fault::Delay(delay));
    let started = Instant::now();
    assert_eq!(roundtrip(&mut client, b"slow").await.unwrap(), b"slow");
    let took = started.elapsed();
    assert!(
        took >= 2 * delay,
        "round trip took {took:?}, want >= {:?}",
        2 * delay
    );

    proxy.heal();
    assert_eq!(roundtrip(&mut client, b"fast").await.unwrap(), b"fast");
}

#[tokio::test]
async fn one_way_delay_delays_only_that_way() {
    // Intent: a FromTarget delay slows the answer but the request reaches the target at once.
    let (echo, received) = echo_server().await;
    let proxy = proxy_to(echo).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let delay = Duration::from_millis(200);
    proxy.set_fault(None, Direction::FromTarget, Fault::Delay(delay));

    let started = Instant::now();
    client.write_all(b"ping").await.unwrap();
    assert!(eventually(|| received.load(Ordering::SeqCst) == 4).await);
    let arrived = started.elapsed();
    let mut back = [0u8; 4];
    timeout(DEADLINE, client.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    let answered = started.elapsed();
    assert!(arrived < delay, "request itself was delayed: {arrived:?}");
    assert!(answered >= delay, "answer came after {answered:?}");
}

#[tokio::test]
async fn drop_resets_existing_and_refuses_new_until_heal() {
    // Intent: Drop closes open connections at once and closes new ones on arrival; after
    // heal, new connections work.
    let (echo, _) = echo_server().await;
    let proxy = proxy_to(echo).await;
    let mut open = TcpStream::connect(proxy.local_addr()).await.unwrap();
    roundtrip(&mut open, b"a").await.unwrap();

    proxy.set_fault(None, Direction::Both, Fault::Drop);
    assert!(
        closed_soon(&mut open).await,
        "existing connection survived Drop"
    );
    let mut fresh = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let _ = fresh.write_all(b"b").await;
    assert!(
        closed_soon(&mut fresh).await,
        "new connection accepted under Drop"
    );

    proxy.heal();
    let mut healed = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert_eq!(roundtrip(&mut healed, b"c").await.unwrap(), b"c");
}

#[tokio::test]
async fn blackhole_discards_and_heal_resets_holed_connection() {
    // Intent: under Blackhole nothing reaches the target and nothing comes back, while the
    // connection stays open; after heal the holed connection is reset and new ones pass.
    let (echo, received) = echo_server().await;
    let proxy = proxy_to(echo).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    roundtrip(&mut client, b"1234").await.unwrap();

    proxy.set_fault(None, Direction::Both, Fault::Blackhole);
    client.write_all(b"lost").await.unwrap();
    assert!(silent(&mut client).await, "blackholed bytes came back");
    assert_eq!(
        received.load(Ordering::SeqCst),
        4,
        "blackholed bytes reached target"
    );
    let mut during = TcpStream::connect(proxy.local_addr()).await.unwrap();
    during.write_all(b"also lost").await.unwrap();
    assert!(silent(&mut during).await);

    proxy.heal();
    assert!(closed_soon(&mut client).await, "holed connection not reset");
    let mut after = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert_eq!(roundtrip(&mut after, b"back").await.unwrap(), b"back");
}

#[tokio::test]
async fn one_way_blackhole_lets_requests_in_but_no_answers_out() {
    // Intent: a FromTarget blackhole delivers the client's bytes to the target but never
    // forwards the target's answers.
    let (echo, received) = echo_server().await;
    let proxy = proxy_to(echo).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    proxy.set_fault(None, Direction::FromTarget, Fault::Blackhole);

    client.write_all(b"one-way").await.unwrap();
    assert!(eventually(|| received.load(Ordering::SeqCst) == 7).await);
    assert!(
        silent(&mut client).await,
        "answer crossed a FromTarget blackhole"
    );
}

#[tokio::test]
async fn per_source_rules_pick_the_most_specific() {
    // Intent: rules keyed by source IP affect only that source, and a source rule (even
    // Pass) overrides the every-source rule.
    let (echo, _) = echo_server().await;
    let proxy = proxy_to(echo).await;
    let (a, b, c) = (ip("127.0.0.2"), ip("127.0.0.3"), ip("127.0.0.4"));
    let mut from_a = connect_from(a, proxy.local_addr()).await;
    let mut from_b = connect_from(b, proxy.local_addr()).await;
    roundtrip(&mut from_a, b"a").await.unwrap();
    roundtrip(&mut from_b, b"b").await.unwrap();

    proxy.set_fault(Some(a), Direction::Both, Fault::Drop);
    assert!(closed_soon(&mut from_a).await, "A not dropped");
    assert_eq!(roundtrip(&mut from_b, b"b2").await.unwrap(), b"b2");

    proxy.set_fault(None, Direction::Both, Fault::Blackhole);
    proxy.set_fault(Some(b), Direction::Both, Fault::Pass);
    assert_eq!(roundtrip(&mut from_b, b"b3").await.unwrap(), b"b3");
    let mut from_c = connect_from(c, proxy.local_addr()).await;
    from_c.write_all(b"c").await.unwrap();
    assert!(
        silent(&mut from_c).await,
        "C passed the every-source blackhole"
    );
    let mut again_a = connect_from(a, proxy.local_addr()).await;
    let _ = again_a.write_all(b"a").await;
    assert!(
        closed_soon(&mut again_a).await,
        "A's Drop lost to the every-source rule"
    );

    proxy.clear_fault(Some(a), Direction::Both);
    let mut a_now = connect_from(a, proxy.local_addr()).await;
    a_now.write_all(b"a").await.unwrap();
    assert!(
        silent(&mut a_now).await,
        "A did not fall back to the every-source rule"
    );
}

#[tokio::test]
async fn heal_restores_every_source() {
    // Intent: heal removes source-specific and every-source rules alike.
    let (echo, _) = echo_server().await;
    let proxy = proxy_to(echo).await;
    let (a, b) = (ip("127.0.0.2"), ip("127.0.0.3"));
    proxy.set_fault(Some(a), Direction::ToTarget, Fault::Drop);
    proxy.set_fault(None, Direction::FromTarget, Fault::Blackhole);
    proxy.set_fault(
        Some(b),
        Direction::Both,
        Fault::Delay(Duration::from_secs(60)),
    );

    proxy.heal();
    for from in [a, b, ip("127.0.0.1")] {
        let mut client = connect_from(from, proxy.local_addr()).await;
        assert_eq!(roundtrip(&mut client, b"ok").await.unwrap(), b"ok");
    }
}

#[tokio::test]
async fn shutdown_closes_connections_and_listener() {
    // Intent: after shutdown returns, open connections are closed and the port refuses.
    let (echo, _) = echo_server().await;
    let proxy = proxy_to(echo).await;
    let addr = proxy.local_addr();
    let mut client = TcpStream::connect(addr).await.unwrap();
    roundtrip(&mut client, b"x").await.unwrap();

    proxy.shutdown().await;
    assert!(closed_soon(&mut client).await);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
}

#[tokio::test]
async fn dropping_the_proxy_closes_connections() {
    // Intent: dropping the Proxy value is enough to close every proxied connection.
    let (echo, _) = echo_server().await;
    let proxy = proxy_to(echo).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    roundtrip(&mut client, b"x").await.unwrap();

    drop(proxy);
    assert!(closed_soon(&mut client).await);
}

#[tokio::test]
async fn target_down_closes_client() {
    // Intent: when nothing listens on the target, the client's connection is closed rather
    // than left hanging, as a connection to a dead node would be.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = dead.local_addr().unwrap();
    drop(dead);
    let proxy = proxy_to(target).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert!(closed_soon(&mut client).await);
}
