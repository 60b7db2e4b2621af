//! The peer fuzz test (issue "No peer or client input"): a 3-node cluster receives tens of
//! thousands of well-formed raft messages with valid headers, in random types, terms (below the
//! ceiling), indexes, commits and entries, from every member ID, interleaved with real client
//! writes. Seeded: `PEER_FUZZ_SEED=<n>` replays a run; `PEER_FUZZ_MESSAGES=<n>` and
//! `PEER_FUZZ_SECONDS=<s>` bound it (100,000 messages or 60 s by default).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use support::Cluster;

/// xorshift64*: small, seeded, replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const TYPES: [MessageType; 14] = [
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
    MessageType::MsgSnapshot,
];

/// Near `base`, sometimes far: the interesting values are around the real ones.
fn around(rng: &mut Rng, base: u64) -> u64 {
    match rng.below(10) {
        0 => rng.below(1 << 40),
        1 => 0,
        _ => (base + rng.below(20)).saturating_sub(10),
    }
}

/// One random message from `from` to `to`, given the cluster's current term and last index.
fn message(rng: &mut Rng, from: u64, to: u64, term: u64, last: u64) -> Message {
    let mut m = Message {
        from,
        to,
        term: around(rng, term),
        log_term: around(rng, term),
        index: around(rng, last),
        commit: around(rng, last),
        reject: rng.chance(30),
        reject_hint: around(rng, last),
        request_snapshot: if rng.chance(5) { around(rng, last) } else { 0 },
        ..Default::default()
    };
    let t = TYPES[rng.below(TYPES.len() as u64) as usize];
    m.set_msg_type(t);
    let n = rng.below(4);
    let contiguous = rng.chance(60);
    for i in 0..n {
        let mut e = Entry {
            term: around(rng, term),
            index: if contiguous {
                m.index + 1 + i
            } else {
                around(rng, last)
            },
            ..Default::default()
        };
        e.set_entry_type(EntryType::EntryNormal);
        let len = rng.below(24) as usize;
        e.data = (0..len)
            .map(|_| rng.next() as u8)
            .collect::<Vec<u8>>()
            .into();
        m.mut_entries().push(e);
    }
    if t == MessageType::MsgSnapshot {
        let meta = m.mut_snapshot().mut_metadata();
        meta.index = around(rng, last);
        meta.term = around(rng, term);
        m.mut_snapshot().data = vec![0u8; rng.below(16) as usize].into();
    }
    if rng.chance(80) {
        plausible(&mut m);
    }
    m
}

/// Bends `m` into the shape a real member's message has (the peer server refuses the rest
/// before raft sees it), so that most fuzzed messages reach raft: the right use of term 0, an
/// append's entries contiguous after its index with terms rising from its log term up to its
/// term, one context entry on read requests, a snapshot no newer than its message.
fn plausible(m: &mut Message) {
    let t = m.get_msg_type();
    if matches!(t, MessageType::MsgPropose | MessageType::MsgReadIndex) {
        m.term = 0;
    } else {
        m.term = m.term.clamp(1, 1 << 40);
    }
    match t {
        MessageType::MsgAppend => {
            m.log_term = m.log_term.clamp(1, m.term);
            let (index, log_term, term) = (m.index, m.log_term, m.term);
            for (i, e) in m.mut_entries().iter_mut().enumerate() {
                e.index = index + 1 + i as u64;
                e.term = e.term.clamp(log_term, term);
            }
            let mut prev = log_term;
            for e in m.mut_entries().iter_mut() {
                e.term = e.term.max(prev);
                prev = e.term;
            }
        }
        MessageType::MsgPropose if m.entries.is_empty() => m.mut_entries().push(Entry::default()),
        MessageType::MsgReadIndex | MessageType::MsgReadIndexResp => {
            m.mut_entries().truncate(1);
            if m.entries.is_empty() {
                m.mut_entries().push(Entry::default());
            }
        }
        MessageType::MsgSnapshot => {
            let term = m.term;
            let meta = m.mut_snapshot().mut_metadata();
            meta.term = meta.term.clamp(1, term);
            meta.index = meta.index.max(1);
        }
        _ => {}
    }
}

/// The last `n` lines of `log`.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// Intent: no well-formed peer message, whatever its type, term, indexes, commit or entries,
// and from whichever member ID, sent as a batch or in a stream, crashes or wedges a node. Tens of thousands of them arrive,
// interleaved with client writes; afterwards no node has panicked or exited, once the fuzzing
// stops the cluster elects a leader and serves linearizable writes and reads within a few
// election timeouts, and a divergence check reports exactly the members whose state the
// forged messages made differ.
#[test]
fn random_well_formed_peer_messages_never_crash_or_wedge_a_node() {
    let seed = std::env::var("PEER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let total: usize = std::env::var("PEER_FUZZ_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let seconds: u64 = std::env::var("PEER_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!("peer fuzz: seed {seed} (replay with PEER_FUZZ_SEED={seed}), {total} messages");
    let mut rng = Rng(seed);
    let mut c = Cluster::start(3, &["--snapshot-count", "200"]);
    let peers: Vec<SocketAddr> = (1..=3)
        .map(|id| SocketAddr::from(([127, 0, 0, 1], c.node(id).peer_port)))
        .collect();
    let cluster = support::cluster_id_of(peers[0]);
    let started = Instant::now();
    let (mut sent, mut batches) = (0usize, 0usize);
    // Real client traffic beside the forged batches, on its own thread: a write waits for its
    // commit, which the fuzzing can delay by seconds.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writes = std::sync::atomic::AtomicUsize::new(0);
    let clients: Vec<SocketAddr> = (1..=3).map(|id| c.node(id).client).collect();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let (mut term, mut last) = (1, 1);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 100_000 {
                let addr = clients[n % clients.len()];
                let path = format!("/real{n}");
                let _ = support::request(addr, "PUT", &path, &[], b"v", Duration::from_secs(5));
                n += 1;
                writes.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        });
        while sent < total && started.elapsed() < Duration::from_secs(seconds) {
            if batches % 50 == 0 {
                let s = (1..=3).find_map(|id| c.node(id).status());
                if let Some(s) = s {
                    term = s["term"].as_u64().unwrap_or(term);
                    last = s["last_index"].as_u64().unwrap_or(last);
                }
            }
            let to = 1 + rng.below(3);
            let from = loop {
                let f = 1 + rng.below(3);
                if f != to {
                    break f;
                }
            };
            let n = 1 + rng.below(8) as usize;
            let msgs: Vec<Message> = (0..n)
                .map(|_| message(&mut rng, from, to, term, last))
                .collect();
            // Every other batch goes as a stream (`POST /raft/stream`, what members send),
            // split in two frames; the rest as `POST /raft` (what older members send).
            let peer = peers[(to - 1) as usize];
            let status = if batches % 2 == 0 {
                support::post_raft_batch(peer, &cluster, from, to, &msgs)
            } else {
                let (a, b) = msgs.split_at(msgs.len() / 2);
                let body = support::stream_frames(&[a, b]);
                support::post_peer(peer, "/raft/stream", &cluster, from, to, &body)
            }
            .map(|r| r.status)
            .unwrap_or(0);
            *statuses.entry(status).or_default() += 1;
            sent += n;
            batches += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let writes = writes.into_inner();
    println!(
        "peer fuzz: {sent} messages in {batches} batches and {writes} client writes in {:?}; \
         answers {statuses:?}",
        started.elapsed()
    );
    for id in 1..=3 {
        assert!(
            c.node_mut(id).is_running(),
            "node {id} exited (seed {seed})\n{}",
            c.node(id).log()
        );
        assert!(
            !c.node(id).log().contains("panicked"),
            "node {id} panicked (seed {seed})"
        );
    }
    // Once the fuzzing stops: a leader, then linearizable writes and reads on it. A forged
    // append that a follower accepted can leave its log diverged for good (only peer
    // authentication, the TLS issue, stops a forger who holds the cluster ID): every member
    // that does not serve must say why (below).
    // A leader that commits a write, if the forgeries left a majority that can.
    let end = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let committed = (1..=3).find(|id| {
            c.node(*id).status().is_some_and(|s| s["role"] == "leader")
                && c.node(*id)
                    .put("after-fuzz", "ok")
                    .is_ok_and(|r| r.status == 204)
        });
        if committed.is_some() || Instant::now() > end {
            break committed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(leader) = leader else {
        // No majority can commit: that is only acceptable when a majority of the members know
        // they diverged (forged committed appends), never as an unexplained wedge.
        let healths: Vec<(u64, u16, String)> = (1..=3)
            .map(|id| {
                let h = c.node(id).req("GET", "/health", b"").unwrap();
                (id, h.status, h.text().trim().to_string())
            })
            .collect();
        println!("peer fuzz: no leader commits a write; /health: {healths:#?}");
        let diverged = healths
            .iter()
            .filter(|h| h.1 == 503 && h.2.contains("diverged"))
            .count();
        assert!(
            diverged >= 2,
            "no leader commits a write after the fuzzing and fewer than 2 members know they \
             diverged (seed {seed}): {healths:#?}\n{:#?}",
            (1..=3).map(|n| c.node(n).status()).collect::<Vec<_>>()
        );
        return;
    };
    let mut serving = Vec::new();
    let mut diverged = Vec::new();
    for id in 1..=3 {
        let end = Instant::now() + Duration::from_secs(20);
        let read = loop {
            let r = c
                .node(id)
                .get("after-fuzz")
                .ok()
                .filter(|r| r.status == 200);
            if r.is_some() || Instant::now() > end {
                break r;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        match read {
            Some(r) => {
                assert_eq!(r.text(), "ok", "node {id} (seed {seed})");
                serving.push(id);
            }
            None => diverged.push(id),
        }
    }
    println!(
        "peer fuzz: serving linearizable reads {serving:?}; not serving (diverged) {diverged:?}"
    );
    assert!(
        serving.contains(&leader),
        "the leader does not serve after the fuzzing (seed {seed}): serving {serving:?}\n{:#?}",
        (1..=3).map(|n| c.node(n).status()).collect::<Vec<_>>()
    );
    // Any divergence the fuzzing caused is reported by a divergence check: each member that
    // applies the check and holds another state than the leader at the same applied index is
    // listed as diverged (and none with the same state is); a member that cannot apply it
    // (wedged in a forged term) answers /health with 503.
    let status_of = |id: u64| c.node(id).status();
    let before = status_of(leader).unwrap()["commit_index"].as_u64().unwrap();
    let r = c
        .node(leader)
        .req("POST", "/status/digest-check", b"")
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    // With a majority of voters diverged the check reaches no verdict: then /health must tell.
    let end = Instant::now() + Duration::from_secs(20);
    let reported: Vec<u64> = loop {
        let s = status_of(leader);
        let verdict = s.as_ref().and_then(|s| {
            (s["digest_check_index"].as_u64()? > before).then(|| {
                s["diverged"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d["id"].as_u64())
                    .collect()
            })
        });
        if let Some(v) = verdict {
            break v;
        }
        if Instant::now() > end {
            println!("peer fuzz: the divergence check reached no verdict");
            break Vec::new();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("peer fuzz: the divergence check reports {reported:?} diverged");
    // The members' states at one applied index: all of them once the writes stopped, unless
    // one is wedged and never gets there.
    let end = Instant::now() + Duration::from_secs(10);
    let states: Vec<(u64, u64, String)> = loop {
        let states: Vec<(u64, u64, String)> = (1..=3)
            .filter_map(|id| {
                let s = status_of(id)?;
                let applied = s["applied_index"].as_u64()?;
                Some((id, applied, s["state_digest"].as_str()?.to_string()))
            })
            .collect();
        let top = states.iter().map(|s| s.1).max().unwrap_or(0);
        let at_top = states.iter().filter(|s| s.1 == top).count();
        if at_top == 3 || Instant::now() > end {
            break states;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let top = states.iter().map(|s| s.1).max().unwrap_or(0);
    let at_top: Vec<&(u64, u64, String)> = states.iter().filter(|s| s.1 == top).collect();
    let majority = at_top
        .iter()
        .map(|s| &s.2)
        .find(|d| at_top.iter().filter(|s| &&s.2 == d).count() >= 2);
    for (id, applied, digest) in &states {
        if *applied == top {
            if let Some(majority) = majority {
                assert_eq!(
                    digest != majority,
                    reported.contains(id),
                    "node {id}: digest {digest} vs the majority's {majority} at index {top}, \
                     reported diverged: {reported:?} (seed {seed})"
                );
            }
            continue;
        }
        let health = c.node(*id).req("GET", "/health", b"").unwrap();
        println!(
            "peer fuzz: node {id} stays at index {applied} below {top}: /health {} {}",
            health.status,
            health.text().trim()
        );
        assert!(
            reported.contains(id) || health.status == 503,
            "node {id} stays at index {applied} below {top}, is not reported diverged and \
             answers /health {} (seed {seed})\n{:#}\n{}",
            health.status,
            status_of(*id).unwrap_or_default(),
            tail(&c.node(*id).log(), 40)
        );
    }
}
