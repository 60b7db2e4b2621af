//! The nemesis: the kinds of fault, and how one round of each is injected and healed.
//!
//! Every round starts from a healthy cluster (the caller waits for it), injects exactly one
//! fault, keeps it for the fault's own duration (long enough to matter: past the election
//! timeout, and for leader faults until the rest elected a new leader), then heals it
//! (restart, SIGCONT, proxies healed, node replaced). The caller waits for health again
//! before the next round, so faults never overlap.

use std::time::Duration;

use faultproxy::Fault;

use crate::cluster::Cluster;
use crate::http::Exchange;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// kill -9 of the leader, restarted once the others elected a new one.
    KillLeader,
    /// kill -9 of a follower, restarted after a while.
    KillFollower,
    /// kill -9 of every node, then all restarted; half the time killed and restarted again
    /// during recovery.
    KillAll,
    /// SIGSTOP of the leader until the others elected a new one, then SIGCONT.
    PauseLeader,
    /// SIGSTOP of a follower for longer than the election timeout, then SIGCONT.
    PauseFollower,
    /// Every link into and out of the leader cut until the others elected a new one.
    IsolateLeader,
    /// The cluster split into a minority and a majority (the leader on either side).
    Split,
    /// One node's outgoing raft messages cut (the leader's, mostly); it still hears the others.
    OneWayOut,
    /// One node's incoming raft messages cut (the leader's, mostly); it still talks.
    OneWayIn,
    /// Every link slowed down (the same delay on each, from 50 to 400 ms) for a while:
    /// heartbeats late by up to twice the election timeout.
    SlowNetwork,
    /// `POST /leader` to a random other voter.
    TransferLeader,
    /// `DELETE /{id}` of a node (the leader sometimes), data wiped, re-added under a new ID
    /// with `POST /{new}` and `--join`; sometimes the new node is killed while it joins.
    ReplaceNode,
    /// kill -9 of a node (the leader sometimes), its data dirs wiped, restarted under its old
    /// ID: it MUST be refused (exit status 1); then replaced under a new ID as an operator
    /// would.
    WipeRejoin,
    /// kill -9 of every node, each restarted with its `--cluster` list rotated: the stored
    /// membership wins, the cluster elects a leader and serves.
    PermutedCluster,
}

impl Kind {
    /// Every kind, in the order a schedule cycles through them.
    pub const ALL: [Kind; 14] = [
        Kind::KillLeader,
        Kind::KillFollower,
        Kind::KillAll,
        Kind::PauseLeader,
        Kind::PauseFollower,
        Kind::IsolateLeader,
        Kind::Split,
        Kind::OneWayOut,
        Kind::OneWayIn,
        Kind::SlowNetwork,
        Kind::TransferLeader,
        Kind::ReplaceNode,
        Kind::WipeRejoin,
        Kind::PermutedCluster,
    ];

    /// Short name for logs and the summary.
    pub fn name(self) -> &'static str {
        match self {
            Kind::KillLeader => "kill-leader",
            Kind::KillFollower => "kill-follower",
            Kind::KillAll => "kill-all",
            Kind::PauseLeader => "pause-leader",
            Kind::PauseFollower => "pause-follower",
            Kind::IsolateLeader => "isolate-leader",
            Kind::Split => "minority-majority-split",
            Kind::OneWayOut => "one-way-out",
            Kind::OneWayIn => "one-way-in",
            Kind::SlowNetwork => "slow-network",
            Kind::TransferLeader => "leader-transfer",
            Kind::ReplaceNode => "remove-and-readd",
            Kind::WipeRejoin => "wipe-and-rejoin",
            Kind::PermutedCluster => "permuted-cluster",
        }
    }
}

/// A small seeded generator (SplitMix64), so that a schedule can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A duration uniform in `[lo_ms, hi_ms]`.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.below(hi_ms - lo_ms + 1))
    }

    /// `items` in a random order.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// How a partition cuts links: silently (blackhole) or with resets (drop).
fn cut(rng: &mut Rng) -> Fault {
    if rng.chance(50) {
        Fault::Blackhole
    } else {
        Fault::Drop
    }
}

/// Injects one fault of `kind` into the healthy cluster `c` and heals it. Returns what was
/// done, for the round's log line.
pub fn inject(c: &mut Cluster, kind: Kind, rng: &mut Rng) -> String {
    let leader = c.leader();
    let ids = c.ids();
    let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let sleep = std::thread::sleep;
    match kind {
        Kind::KillLeader => {
            c.kill(leader);
            let new = c.wait_leader_among(&followers);
            sleep(rng.millis(0, 500));
            c.restart(leader);
            format!("killed leader {leader}; {new} took over; restarted {leader}")
        }
        Kind::KillFollower => {
            let victim = rng.pick(&followers);
            c.kill(victim);
            sleep(rng.millis(300, 3_000));
            c.restart(victim);
            format!("killed follower {victim}, restarted it")
        }
        Kind::KillAll => {
            let mut order = ids.clone();
            rng.shuffle(&mut order);
            for id in &order {
                c.kill(*id);
            }
            sleep(rng.millis(0, 700));
            for id in &order {
                c.restart(*id);
            }
            if rng.chance(50) {
                // Again, during recovery or the first election.
                let after = rng.millis(0, 400);
                sleep(after);
                for id in &order {
                    c.kill(*id);
                    c.restart(*id);
                }
                return format!("killed all {order:?}, restarted all, again {after:?} later");
            }
            format!("killed all {order:?}, restarted all")
        }
        Kind::PauseLeader => {
            c.pause(leader);
            let new = c.wait_leader_among(&followers);
            sleep(rng.millis(0, 500));
            c.resume(leader);
            format!("paused leader {leader} until {new} took over; continued")
        }
        Kind::PauseFollower => {
            let victim = rng.pick(&followers);
            let pause = rng.millis(500, 2_000);
            c.pause(victim);
            sleep(pause);
            c.resume(victim);
            format!("paused follower {victim} for {pause:?}")
        }
        Kind::IsolateLeader => {
            let fault = cut(rng);
            c.partition(&[leader], &followers, fault);
            let new = c.wait_leader_among(&followers);
            sleep(rng.millis(0, 1_000));
            c.heal();
            format!("isolated leader {leader} ({fault:?}); {new} took over; healed")
        }
        Kind::Split => {
            let fault = cut(rng);
            let minority_size = if ids.len() >= 5 && rng.chance(70) {
                ids.len() / 2
            } else {
                1
            };
            let mut others = followers.clone();
            rng.shuffle(&mut others);
            let mut minority: Vec<u64> = Vec::new();
            if rng.chance(50) {
                minority.push(leader);
            }
            while minority.len() < minority_size {
                minority.push(others.pop().expect("enough followers"));
            }
            let majority: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|i| !minority.contains(i))
                .collect();
            c.partition(&minority, &majority, fault);
            let new = c.wait_leader_among(&majority);
            sleep(rng.millis(200, 1_200));
            c.heal();
            format!("split {minority:?} | {majority:?} ({fault:?}), majority led by {new}; healed")
        }
        Kind::OneWayOut => {
            let fault = cut(rng);
            let victim = if rng.chance(70) {
                leader
            } else {
                rng.pick(&followers)
            };
            for to in ids.iter().filter(|i| **i != victim) {
                c.block(victim, *to, fault);
            }
            let others: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
            if victim == leader {
                c.wait_leader_among(&others);
            }
            sleep(rng.millis(500, 1_500));
            c.heal();
            format!("cut messages out of {victim} ({fault:?}); healed")
        }
        Kind::OneWayIn => {
            let fault = cut(rng);
            let victim = if rng.chance(70) {
                leader
            } else {
                rng.pick(&followers)
            };
            for from in ids.iter().filter(|i| **i != victim) {
                c.block(*from, victim, fault);
            }
            sleep(rng.millis(1_000, 2_000));
            c.heal();
            format!("cut messages into {victim} ({fault:?}); healed")
        }
        Kind::SlowNetwork => {
            let delay = rng.millis(50, 400);
            let hold = rng.millis(1_000, 2_500);
            c.delay_all(delay);
            sleep(hold);
            c.heal();
            format!("delayed every link by {delay:?} for {hold:?}; healed")
        }
        Kind::TransferLeader => {
            let target = rng.pick(&followers);
            let code = match c.req(
                leader,
                "POST",
                "/leader",
                target.to_string().as_bytes(),
                Duration::from_secs(5),
            ) {
                Exchange::Reply(r) => r.status.to_string(),
                Exchange::NotSent(e) | Exchange::Lost(e) => e,
            };
            format!("POST /leader {target} to {leader}: {code}")
        }
        Kind::ReplaceNode => {
            let victim = if rng.chance(35) {
                leader
            } else {
                rng.pick(&followers)
            };
            let crash = rng.chance(30).then(|| rng.millis(0, 600));
            let new = c.replace(victim, crash);
            format!(
                "removed {victim} (leader was {leader}), re-added as {new}{}",
                crash.map_or(String::new(), |d| format!(", killed {d:?} into its join"))
            )
        }
        Kind::WipeRejoin => {
            let victim = if rng.chance(30) {
                leader
            } else {
                rng.pick(&followers)
            };
            let refusal = c.wipe_and_restart(victim);
            let new = c.replace(victim, None);
            format!("wiped {victim} (leader was {leader}): refused ({refusal}); replaced by {new}")
        }
        Kind::PermutedCluster => {
            for id in &ids {
                c.kill(*id);
            }
            let shift = c.rotate_cluster_flags(rng);
            sleep(rng.millis(0, 500));
            for id in &ids {
                c.restart(*id);
            }
            format!("killed all, restarted all with --cluster rotated by {shift}")
        }
    }
}
