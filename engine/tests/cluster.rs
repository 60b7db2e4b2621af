//! The engine's own cluster tests: three engine nodes in this process, on one multi-threaded
//! runtime, around a toy state machine ([`common::Register`]), each behind a fault proxy.
//! Each test is named after the promise of the engine's API it tries to break.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cmd, deadline, events_until, http, poll, Cluster, REQUEST, SETTLE};
use engine::membership::Membership;
use engine::{Epoch, Event, EventKind, Exit, Handle, NotApplied, ProposeError, Proposed};
use raft::eraftpb::{Message, MessageType};

/// Leadership transfers made by the event tests.
const TRANSFERS: usize = 5;

/// The next node in 1..=3 after `id`.
fn next_of(id: u64) -> u64 {
    id % 3 + 1
}

/// Moves leadership from `from` to `to`, then waits until every node knows `to` and it
/// serves; returns `to`'s term.
async fn transfer(c: &Cluster, from: u64, to: u64) -> u64 {
    c.handle(from)
        .transfer_leader(to, deadline(REQUEST))
        .await
        .unwrap_or_else(|e| panic!("transferring leadership {from} -> {to}: {e:?}"));
    c.settle_on(to).await
}

// Intent: propose answers with the state machine's own output for the proposer, with the
// entry's index and term, on the leader and on a follower (which forwards) alike; and a
// command the machine cannot decode ends in Rejected and changes nothing on any replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn propose_returns_the_machines_output_and_rejects_undecodable_commands() {
    let c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader().await;
    let follower = c.other_than(leader);
    let term = c.handle(leader).state().term;
    let mut last_index = 0;
    for (proposer, value, length) in [(leader, 10, 1), (follower, 20, 2), (leader, 30, 3)] {
        let Proposed {
            index,
            term: entry_term,
            output,
        } = c.propose(proposer, value).await;
        assert_eq!(
            output, length,
            "output of {value} proposed on node {proposer}"
        );
        assert!(index > last_index, "index {index} after {last_index}");
        assert_eq!(entry_term, term, "the entry's term is the leader's");
        last_index = index;
    }
    for proposer in [follower, leader] {
        for bad in [&b"1234567"[..], &b""[..], &b"123456789"[..]] {
            let answer = c.handle(proposer).propose(bad, deadline(REQUEST)).await;
            assert!(
                matches!(answer, Err(ProposeError::Rejected(_))),
                "{} bytes on node {proposer}: {answer:?}",
                bad.len()
            );
        }
    }
    let after = c.propose(follower, 40).await;
    assert_eq!(after.output, 4, "rejected commands changed the length");
    assert!(
        after.index > last_index + 6,
        "the rejected ones were in the log"
    );
    c.wait_values(&[10, 20, 30, 40]).await;
    c.shutdown().await;
}

/// What one node's events must show about the transfers: `leaders[0]` is the leader (and
/// term) at subscription time, `leaders[k]` the one after transfer `k`.
fn check_transfer_events(id: u64, events: &[Event], leaders: &[(u64, u64)]) {
    let EventKind::Current(current) = &events[0].kind else {
        panic!("node {id}: the first event is not Current: {events:#?}");
    };
    for pair in events.windows(2) {
        assert!(
            pair[0].epoch < pair[1].epoch,
            "node {id}: epochs not strictly increasing: {pair:#?}"
        );
        assert!(
            pair[0].epoch.term <= pair[1].epoch.term,
            "node {id}: terms decrease: {pair:#?}"
        );
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Lagged { .. })),
        "node {id} lagged: {events:#?}"
    );
    // Every new leader appears, in order, in this node's leader events, with its term.
    let seen: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Leader { leader, term, .. } => Some((leader, term)),
            _ => None,
        })
        .collect();
    assert!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1),
        "node {id}: leader event terms decrease: {seen:?}"
    );
    let mut from = 0;
    for wanted in &leaders[1..] {
        let at = seen[from..]
            .iter()
            .position(|s| s == wanted)
            .unwrap_or_else(|| panic!("node {id}: no leader event {wanted:?} in order: {seen:?}"));
        from += at + 1;
    }
    // BecameLeader and SteppedDown alternate, each SteppedDown with its BecameLeader's term.
    let mut leading = current.serving.then_some(current.term);
    let (mut became, mut stepped) = (Vec::new(), Vec::new());
    for e in events {
        match e.kind {
            EventKind::BecameLeader { term } => {
                assert_eq!(leading, None, "node {id}: BecameLeader {term} twice");
                leading = Some(term);
                became.push(term);
            }
            EventKind::SteppedDown { term } => {
                assert_eq!(
                    leading,
                    Some(term),
                    "node {id}: unpaired SteppedDown {term}"
                );
                leading = None;
                stepped.push(term);
            }
            _ => {}
        }
    }
    for pair in leaders.windows(2) {
        let ((old, old_term), (new, new_term)) = (pair[0], pair[1]);
        if new == id {
            assert!(
                became.contains(&new_term),
                "node {id}: no BecameLeader {new_term}: {became:?}"
            );
        }
        if old == id {
            assert!(
                stepped.contains(&old_term),
                "node {id}: no SteppedDown {old_term}: {stepped:?}"
            );
        }
    }
}

// Intent: a subscriber gets the current state first, then every one of 5 forced leadership
// transfers, on every node: strictly increasing epochs, non-decreasing terms, a leader event
// for each new leader with its term, and BecameLeader / SteppedDown paired on the nodes that
// took and left the leadership.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_see_every_leadership_transfer_in_order() {
    let c = Cluster::start(3, &[]).await;
    let first = c.wait_leader().await;
    let mut leaders = vec![(first, c.settle_on(first).await)];
    let mut subs: Vec<_> = c.ids().map(|id| c.handle(id).subscribe()).collect();
    for _ in 0..TRANSFERS {
        let from = leaders.last().expect("a leader").0;
        let to = next_of(from);
        leaders.push((to, transfer(&c, from, to).await));
    }
    for id in c.ids() {
        let newest = c.handle(id).state().epoch;
        let events = events_until(&mut subs[id as usize - 1], newest, SETTLE).await;
        check_transfer_events(id, &events, &leaders);
    }
    c.shutdown().await;
}

/// Reads `sub` until it shows `leader` (in a leader event or a lagged state); every event's
/// epoch must be above `after` and strictly increasing.
async fn read_until_leader(mut sub: engine::Subscription, leader: u64, after: Epoch) -> usize {
    let give_up = deadline(SETTLE);
    let mut last = after;
    for n in 1..=10_000 {
        let event = tokio::time::timeout_at(give_up.into(), sub.next())
            .await
            .unwrap_or_else(|_| panic!("leader {leader} not seen within {SETTLE:?}"))
            .expect("the subscription goes on");
        assert!(
            event.epoch > last,
            "event at or below {last:?} (the lagged state's epoch was {after:?}): {event:#?}"
        );
        last = event.epoch;
        let shows = match &event.kind {
            EventKind::Leader { leader: l, .. } => *l == leader,
            EventKind::Lagged { state, .. } => state.leader == leader,
            _ => false,
        };
        if shows {
            return n;
        }
    }
    panic!("leader {leader} not seen in 10000 events")
}

// Intent: a subscriber that does not read is never left with a silent gap: with
// --events-bound 2 and several transfers unread, it gets Current, then Lagged (missed > 0) with
// the current state (the newest leader), then only events newer than that state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_falls_behind_gets_lagged_with_the_current_state() {
    let c = Cluster::start(3, &["--events-bound", "2"]).await;
    let mut leader = c.wait_leader().await;
    let mut subs: Vec<_> = c.ids().map(|id| c.handle(id).subscribe()).collect();
    for _ in 0..3 {
        let to = next_of(leader);
        transfer(&c, leader, to).await;
        leader = to;
    }
    let mut readers = Vec::new();
    for id in c.ids() {
        let mut sub = subs.remove(0);
        let current = sub.next().await.expect("an event");
        assert!(
            matches!(current.kind, EventKind::Current(_)),
            "node {id}: first event {current:#?}"
        );
        let lagged = sub.next().await.expect("an event");
        let EventKind::Lagged { missed, state } = &lagged.kind else {
            panic!("node {id}: second event is not Lagged: {lagged:#?}");
        };
        assert!(*missed > 0, "node {id}: missed {missed}");
        assert_eq!(state.leader, leader, "node {id}: lagged state {state:#?}");
        assert_eq!(lagged.epoch, state.epoch, "node {id}");
        assert!(lagged.epoch > current.epoch, "node {id}");
        let next = next_of(leader);
        readers.push(tokio::spawn(read_until_leader(sub, next, lagged.epoch)));
    }
    let to = next_of(leader);
    transfer(&c, leader, to).await;
    for reader in readers {
        reader.await.expect("the reader ran");
    }
    c.shutdown().await;
}

/// How one batch of proposals ended.
#[derive(Debug, Default)]
struct Batch {
    ok: usize,
    unknown: usize,
    not_applied: Vec<NotApplied>,
    rejected: usize,
    longest: Duration,
    values_ok: Vec<u64>,
}

/// One proposer task: its value, how long it took, how it ended.
type Proposer = tokio::task::JoinHandle<(u64, Duration, Result<Proposed<u64>, ProposeError>)>;

/// Proposes `count` values from `first` on `handle`, all at once, each with the request
/// deadline.
fn spawn_batch(handle: &Handle<u64>, first: u64, count: u64) -> Vec<Proposer> {
    (first..first + count)
        .map(|value| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = handle.propose(&cmd(value), deadline(REQUEST)).await;
                (value, started.elapsed(), answer)
            })
        })
        .collect()
}

async fn collect_batch(tasks: Vec<Proposer>) -> Batch {
    let mut batch = Batch::default();
    for task in tasks {
        let (value, took, answer) = task.await.expect("the proposer ran");
        batch.longest = batch.longest.max(took);
        match answer {
            Ok(_) => {
                batch.ok += 1;
                batch.values_ok.push(value);
            }
            Err(ProposeError::Unknown) => batch.unknown += 1,
            Err(ProposeError::NotApplied(e)) => batch.not_applied.push(e),
            Err(ProposeError::Rejected(_)) => batch.rejected += 1,
        }
    }
    batch
}

// Intent: proposals issued on a follower right after the leader died (isolated by the proxies,
// a crash for the others), before a new leader is elected, are never answered "not applied":
// those already forwarded to the dead leader may end Unknown, and those issued once the
// follower knows there is no leader wait for the new one and succeed within their deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proposals_during_a_leader_crash_wait_for_the_new_leader() {
    const PER_BATCH: u64 = 10;
    let c = Cluster::start(3, &[]).await;
    let old = c.wait_leader().await;
    let mut expected = Vec::new();
    for id in c.ids() {
        c.propose(id, id).await;
        expected.push(id);
    }
    c.wait_values(&expected).await;
    let follower = c.other_than(old);
    let mut events = c.handle(follower).subscribe();
    c.isolate(old);
    let isolated = Instant::now();
    let first = spawn_batch(c.handle(follower), 1000, PER_BATCH);
    // The follower learns it has no leader (pre-vote or a vote for a higher term).
    let give_up = deadline(SETTLE);
    let known = loop {
        let event = tokio::time::timeout_at(give_up.into(), events.next())
            .await
            .expect("the follower notices the dead leader in time")
            .expect("the subscription goes on");
        match event.kind {
            EventKind::Leader { leader, .. } if leader != old => break leader,
            EventKind::Lagged { state, .. } if state.leader != old => break state.leader,
            _ => {}
        }
    };
    let noticed = isolated.elapsed();
    let leader_at_second = c.handle(follower).state().leader;
    let second = spawn_batch(c.handle(follower), 2000, PER_BATCH);
    let (first, second) = (collect_batch(first).await, collect_batch(second).await);
    let survivors: Vec<u64> = c.ids().filter(|id| *id != old).collect();
    let new = c.wait_leader_among(&survivors).await;
    eprintln!(
        "leader crash: old leader {old}, follower {follower}, new leader {new}; the follower \
         knew leader {known} after {noticed:?} (leader {leader_at_second} when the second \
         batch went out); first batch: {} ok, {} unknown, longest {:?}; second batch: {} ok, \
         {} unknown, longest {:?}",
        first.ok, first.unknown, first.longest, second.ok, second.unknown, second.longest
    );
    for (name, batch) in [("first", &first), ("second", &second)] {
        assert!(
            batch.not_applied.is_empty() && batch.rejected == 0,
            "{name} batch: {batch:?}"
        );
    }
    assert_eq!(second.ok as u64, PER_BATCH, "second batch: {second:?}");
    c.heal();
    let new = c.wait_leader().await;
    c.propose(new, 3000).await;
    // Every replica, the old leader included, ends with the same values, each at most once,
    // and every acknowledged one among them.
    let values = c.values(new);
    let mut unique = HashSet::new();
    assert!(
        values.iter().all(|v| unique.insert(*v)),
        "a value applied twice: {values:?}"
    );
    for v in first.values_ok.iter().chain(&second.values_ok) {
        assert!(
            values.contains(v),
            "acknowledged {v} is missing: {values:?}"
        );
    }
    let first_applied = values.iter().filter(|v| (1000..2000).contains(*v)).count();
    eprintln!("leader crash: {first_applied} of the first batch were applied in the end");
    c.wait_values(&values).await;
    c.shutdown().await;
}

fn message(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message {
        from,
        to,
        term,
        ..Default::default()
    };
    m.set_msg_type(t);
    m
}

/// A `/raft/snapshot` body: the message head, then the image.
fn snapshot_body(from: u64, to: u64, term: u64, image: &[u8]) -> Vec<u8> {
    let mut m = message(MessageType::MsgSnapshot, from, to, term);
    let meta = m.mut_snapshot().mut_metadata();
    meta.index = 1000;
    meta.term = term;
    let mut body = engine::transport::encode_batch(&[m]);
    body.extend_from_slice(image);
    body
}

// Intent: hostile or broken input on the peer port is refused before raft sees it (garbage
// 400, another cluster 412, a term above 2^48 400, a local-only message type 400, a snapshot in
// a batch 400, a snapshot from the leader whose image fails the machine's validation or lacks
// the engine's envelope 400), each counted
// by reason, and the cluster still commits proposals afterwards in a sane term.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_peer_input_is_refused_and_the_cluster_goes_on() {
    let c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader().await;
    let other = c.other_than(leader);
    let term = c.handle(leader).state().term;
    let addr = c.peer_addr(leader);
    let (status, body) = http(addr, "GET", "/raft/cluster", &[], b"").await;
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let cluster = u64::from_str_radix(info["cluster_id"].as_str().expect("a string"), 16)
        .expect("hex cluster ID");
    assert_eq!(cluster, c.cluster_id());
    let headers = |cluster: u64| {
        vec![
            ("X-Raft-Cluster-Id", format!("{cluster:x}")),
            ("X-Raft-From", other.to_string()),
            ("X-Raft-To", leader.to_string()),
        ]
    };
    let batch = |m: Message| engine::transport::encode_batch(&[m]);
    let heartbeat = message(MessageType::MsgHeartbeat, other, leader, term);
    let members = Membership::initial(&c.handle(leader).config().cluster);
    let bad_image = engine::framing::encode_image(&members, b"12345");
    let mut snapshot_in_batch = message(MessageType::MsgSnapshot, other, leader, term);
    snapshot_in_batch.mut_snapshot().data = Bytes::from(bad_image.clone());
    // Plausible metadata, so that it is the image that fails.
    snapshot_in_batch.mut_snapshot().mut_metadata().index = 1000;
    snapshot_in_batch.mut_snapshot().mut_metadata().term = term;
    let cases: Vec<(&str, &str, u64, Vec<u8>, u16)> = vec![
        (
            "garbage",
            "/raft",
            cluster,
            vec![5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff],
            400,
        ),
        ("text", "/raft", cluster, b"hello, raft".to_vec(), 400),
        ("other cluster", "/raft", cluster ^ 1, batch(heartbeat), 412),
        (
            "term above 2^48",
            "/raft",
            cluster,
            batch(message(
                MessageType::MsgHeartbeat,
                other,
                leader,
                (1 << 48) + 1,
            )),
            400,
        ),
        (
            "MsgHup",
            "/raft",
            cluster,
            batch(message(MessageType::MsgHup, other, leader, term)),
            400,
        ),
        (
            "snapshot in a batch failing validate",
            "/raft",
            cluster,
            batch(snapshot_in_batch),
            400,
        ),
    ];
    for (what, path, cluster, body, want) in &cases {
        let (status, text) = http(addr, "POST", path, &headers(*cluster), body).await;
        assert_eq!(status, *want, "{what}: {text}");
    }
    // Snapshots are taken only from the leader a node follows: these come "from the leader".
    let from_leader = vec![
        ("X-Raft-Cluster-Id", format!("{cluster:x}")),
        ("X-Raft-From", leader.to_string()),
        ("X-Raft-To", other.to_string()),
    ];
    for (what, image) in [
        ("snapshot failing validate", &bad_image[..]),
        ("snapshot without envelope", &[0u8; 16][..]),
    ] {
        let body = snapshot_body(leader, other, term, image);
        let (status, text) = http(
            c.peer_addr(other),
            "POST",
            "/raft/snapshot",
            &from_leader,
            &body,
        )
        .await;
        assert_eq!(status, 400, "{what}: {text}");
    }
    let status = c
        .handle(leader)
        .status(deadline(REQUEST))
        .await
        .expect("a status");
    let refused = |reason: &str| status.peer_refused.get(reason).copied().unwrap_or(0);
    assert_eq!(refused("malformed"), 2, "{:?}", status.peer_refused);
    assert_eq!(refused("other_cluster"), 1, "{:?}", status.peer_refused);
    assert_eq!(refused("term"), 1, "{:?}", status.peer_refused);
    assert_eq!(refused("local_type"), 1, "{:?}", status.peer_refused);
    assert_eq!(refused("snapshot"), 1, "{:?}", status.peer_refused);
    let at_other = c
        .handle(other)
        .status(deadline(REQUEST))
        .await
        .expect("a status");
    assert_eq!(
        at_other.peer_refused.get("snapshot"),
        Some(&2),
        "{:?}",
        at_other.peer_refused
    );
    let mut expected = Vec::new();
    for id in c.ids() {
        c.propose(id, 100 + id).await;
        expected.push(100 + id);
    }
    c.wait_values(&expected).await;
    for id in c.ids() {
        let term = c.handle(id).state().term;
        assert!(term < 1000, "node {id} is at term {term}");
    }
    c.shutdown().await;
}

// Intent: a read barrier on a follower returns only once that follower applied a write the
// leader acknowledged just before (a linearizable read), even when the leader's appends reach
// the follower late (every request leader -> follower delayed by 100 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_barrier_on_a_follower_sees_the_write_just_acknowledged() {
    const ROUNDS: u64 = 10;
    let c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader().await;
    let follower = c.other_than(leader);
    c.delay(leader, follower, Duration::from_millis(100));
    let mut stale = 0;
    for round in 1..=ROUNDS {
        let value = 5000 + round;
        let written = c.propose(leader, value).await;
        assert_eq!(written.output, round);
        if !c.values(follower).contains(&value) {
            stale += 1;
        }
        let index = c
            .handle(follower)
            .read_barrier(deadline(REQUEST))
            .await
            .unwrap_or_else(|e| panic!("read barrier on node {follower}: {e:?}"));
        assert!(
            index >= written.index,
            "read index {index} < {}",
            written.index
        );
        assert!(c.handle(follower).applied_index() >= written.index);
        let values = c.values(follower);
        assert!(
            values.contains(&value),
            "round {round}: {value} missing after the barrier: {values:?}"
        );
    }
    eprintln!(
        "read barrier: the follower lacked the write before the barrier in {stale}/{ROUNDS} rounds"
    );
    assert!(stale > 0, "the delay never made the follower lag");
    c.heal();
    c.shutdown().await;
}

// Intent: a node that made a snapshot, applied more, shut down and restarted from its data dir
// restores its machine from that snapshot and replays the WAL tail by itself (while cut off
// from the others), then catches up with what it missed: the same state as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_restores_its_snapshot_and_replays_its_wal() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader().await;
    let node = c.other_than(leader);
    let mut values = Vec::new();
    for v in 1..=20 {
        let last = c.propose(leader, v).await;
        values.push(v);
        c.handle(node)
            .wait_applied(last.index, deadline(REQUEST))
            .await
            .expect("applied on the node");
    }
    let snapshot = c
        .handle(node)
        .snapshot_now(deadline(REQUEST))
        .await
        .expect("a snapshot");
    assert_eq!(c.values(node), values, "state at the snapshot");
    for v in 21..=30 {
        let last = c.propose(leader, v).await;
        values.push(v);
        c.handle(node)
            .wait_applied(last.index, deadline(REQUEST))
            .await
            .expect("applied on the node");
    }
    assert_eq!(c.stop(node).await, Exit::Shutdown);
    for v in 31..=35 {
        c.propose(leader, v).await;
    }
    c.isolate(node);
    c.restart(node).await;
    let restores = c.register(node).lock().restores.clone();
    assert_eq!(restores, vec![(snapshot, 20)], "restored from the snapshot");
    // Cut off from the others, the node can only have its WAL tail.
    let register = c.register(node).clone();
    poll(SETTLE, "the WAL tail to be replayed", || {
        (register.values() == values).then_some(())
    })
    .await;
    assert_eq!(c.handle(node).state().leader, 0, "the node is cut off");
    c.heal();
    values.extend(31..=35);
    c.wait_values(&values).await;
    c.propose(node, 36).await;
    values.push(36);
    c.wait_values(&values).await;
    c.shutdown().await;
}

// Intent: epochs increase strictly across a restart too (events.rs: "also across restarts"): a
// subscriber that reconnects to a restarted node must never get a state older, by epoch, than
// the last event it saw before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn epochs_keep_increasing_across_a_restart() {
    let mut c = Cluster::start(1, &[]).await;
    c.wait_leader().await;
    c.propose(1, 7).await;
    let before = c.handle(1).state().epoch;
    assert_eq!(c.stop(1).await, Exit::Shutdown);
    c.restart(1).await;
    let mut sub = c.handle(1).subscribe();
    let current = sub.next().await.expect("an event");
    let EventKind::Current(state) = &current.kind else {
        panic!("first event {current:#?}");
    };
    assert!(
        current.epoch > before,
        "after the restart, Current has epoch {:?} (term {}), not above {before:?} from before",
        current.epoch,
        state.term
    );
    c.wait_leader().await;
    let newest = c.handle(1).state().epoch;
    for event in events_until(&mut sub, newest, SETTLE).await {
        assert!(event.epoch > before, "{event:#?} not above {before:?}");
    }
    c.shutdown().await;
}
