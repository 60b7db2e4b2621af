//! The checker self-test scenario: stale reads from an isolated old leader.
//!
//! Two writer clients are bound to the two nodes that will form the majority, two reader
//! clients to the leader that will be isolated. Once writes flow, the leader is cut off (both
//! ways); the majority elects a new leader and acknowledges more writes to every key; the
//! readers keep asking the old leader for a while, then the partition heals. A node that
//! serves linearizable reads without ReadIndex (`--unsafe-local-reads`) answers those reads
//! from its frozen state, which no linearization can explain; a correct node refuses or times
//! them out. The operations are recorded with `check`'s types and judged by its checker.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use check::{check_history, History, OpKind, Operation, Outcome, Report};
use faultproxy::Fault;

use crate::cluster::{poll, Cluster, SLOW};
use crate::http::{call, Exchange};

/// Keys the scenario uses.
const KEYS: usize = 4;
/// Writes the majority must acknowledge after the isolation before the stale window opens.
const WRITES_AFTER_ISOLATION: usize = 20;
/// How long the readers keep reading from the isolated leader after that (the fault's own
/// duration).
const STALE_WINDOW: Duration = Duration::from_millis(1_500);

/// What the client threads share.
struct Shared {
    start: Instant,
    stop: AtomicBool,
    ops: Mutex<Vec<Operation>>,
    /// Micros since `start` when the isolation began (u64::MAX before).
    isolated_at: std::sync::atomic::AtomicU64,
    acked_after_isolation: AtomicUsize,
    acked: AtomicUsize,
}

/// Runs the scenario on a fresh 3-node cluster whose nodes get `extra` flags, and returns the
/// checker's report on the recorded history.
pub fn stale_read_scenario(rt: &tokio::runtime::Handle, extra: &[&str]) -> (Report, usize) {
    let c = Cluster::start(rt, 3, extra);
    let old = c.leader();
    let majority: Vec<u64> = c.ids().into_iter().filter(|i| *i != old).collect();
    let shared = Arc::new(Shared {
        start: Instant::now(),
        stop: AtomicBool::new(false),
        ops: Mutex::new(Vec::new()),
        isolated_at: std::sync::atomic::AtomicU64::new(u64::MAX),
        acked_after_isolation: AtomicUsize::new(0),
        acked: AtomicUsize::new(0),
    });
    let mut threads = Vec::new();
    for (client, id) in majority.iter().enumerate() {
        let (addr, shared) = (c.addr(*id), shared.clone());
        threads.push(std::thread::spawn(move || writer(client, addr, &shared)));
    }
    for client in 2..4 {
        let (addr, shared) = (c.addr(old), shared.clone());
        threads.push(std::thread::spawn(move || reader(client, addr, &shared)));
    }
    let serving = poll(SLOW, || {
        (shared.acked.load(Ordering::Relaxed) >= 8).then_some(())
    });
    assert!(serving.is_some(), "no writes acknowledged\n{}", c.dump());

    c.partition(&[old], &majority, Fault::Blackhole);
    shared
        .isolated_at
        .store(shared.start.elapsed().as_micros() as u64, Ordering::Relaxed);
    c.wait_leader_among(&majority);
    let written = poll(SLOW, || {
        (shared.acked_after_isolation.load(Ordering::Relaxed) >= WRITES_AFTER_ISOLATION)
            .then_some(())
    });
    assert!(
        written.is_some(),
        "the majority did not acknowledge writes while the old leader was isolated\n{}",
        c.dump()
    );
    std::thread::sleep(STALE_WINDOW);
    c.heal();
    c.wait_healthy();
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    let mut ops = std::mem::take(&mut *shared.ops.lock().unwrap());
    ops.sort_by_key(|op| (op.invoked, op.client));
    let reads_from_old = ops
        .iter()
        .filter(|op| op.kind == OpKind::Get && matches!(op.outcome, Outcome::Read(_)))
        .count();
    let history = History { ops };
    (check_history(&history), reads_from_old)
}

fn writer(client: usize, addr: std::net::SocketAddr, shared: &Shared) {
    let mut seq = 0usize;
    while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("st-{}", seq % KEYS);
        let value = format!("w{client}-{seq}");
        let invoked = shared.start.elapsed();
        let sent = call(
            addr,
            "PUT",
            &format!("/{key}"),
            value.as_bytes(),
            Duration::from_secs(4),
        );
        let completed = shared.start.elapsed();
        let (outcome, note) = match sent {
            Exchange::Reply(r) if (200..300).contains(&r.status) => (Outcome::Done, r.status),
            Exchange::Reply(r) if r.status == 503 || (400..500).contains(&r.status) => {
                (Outcome::NotApplied, r.status)
            }
            Exchange::Reply(r) => (Outcome::Indeterminate, r.status),
            Exchange::NotSent(_) => (Outcome::NotApplied, 0),
            Exchange::Lost(_) => (Outcome::Indeterminate, 0),
        };
        if outcome == Outcome::Done {
            shared.acked.fetch_add(1, Ordering::Relaxed);
            if invoked.as_micros() as u64 > shared.isolated_at.load(Ordering::Relaxed) {
                shared.acked_after_isolation.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        shared.ops.lock().unwrap().push(Operation {
            client,
            key,
            kind: OpKind::Put { value },
            invoked,
            completed,
            outcome,
            note: note.to_string(),
        });
    }
}

fn reader(client: usize, addr: std::net::SocketAddr, shared: &Shared) {
    let mut seq = client;
    while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("st-{}", seq % KEYS);
        let invoked = shared.start.elapsed();
        let sent = call(addr, "GET", &format!("/{key}"), b"", Duration::from_secs(4));
        let completed = shared.start.elapsed();
        let (outcome, note) = match sent {
            Exchange::Reply(r) if r.status == 200 => (Outcome::Read(Some(r.text())), r.status),
            Exchange::Reply(r) if r.status == 404 => (Outcome::Read(None), r.status),
            Exchange::Reply(r) => (Outcome::Failed, r.status),
            Exchange::NotSent(_) | Exchange::Lost(_) => (Outcome::Failed, 0),
        };
        if outcome == Outcome::Failed {
            std::thread::sleep(Duration::from_millis(20));
        }
        shared.ops.lock().unwrap().push(Operation {
            client,
            key,
            kind: OpKind::Get,
            invoked,
            completed,
            outcome,
            note: note.to_string(),
        });
    }
}
