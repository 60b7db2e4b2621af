//! Divergence detection, like etcd's corruption check but through the log.
//!
//! A digest check is an entry (`framing::encode_digest_check`), proposed by the leader every
//! `--digest-check-interval-ms` (when commands were applied since the last one) or on demand.
//! Every replica's apply thread takes the application's digest
//! (`StateMachine::digest`) when it reaches that entry, so all digests are of the state after
//! the same entries; each member then proposes its digest as a digest record. The raft thread
//! feeds the committed records, in log order, to [`DigestChecks`]: once a majority of voters
//! agree on one digest at a check, every member that reported another one is diverged, and one
//! that reported the majority's is no longer. Replicas that apply the same log reach the same
//! verdicts. A diverged member answers `/health` with 503 and every member lists it in
//! `/status` (`diverged`), `/metrics` and `/events`.
//!
//! A member also finds itself diverged when its leader, in its current term, sends an append
//! that contradicts an entry this member already committed (raft guarantees a real leader
//! never does): such a member is wedged, since it cannot apply the checks. It raises the
//! alarm itself and proposes a divergence report (forwarded to the leader), which every
//! member that applies it records. A later check that finds it with the majority clears it.
//!
//! What is not covered: the verdicts live in memory (re-derived from the records the log
//! still holds after a restart, else at the next check); an application whose `digest` is
//! `None` takes no part.

use std::collections::BTreeMap;

use crate::protocol::Diverged;

/// Checks whose reports are kept (a late report of an older check is ignored).
pub const CHECKS_KEPT: usize = 16;

/// The digest reports of the newest checks and the verdicts so far.
#[derive(Debug, Default)]
pub struct DigestChecks {
    /// Check index -> member -> digest.
    reports: BTreeMap<u64, BTreeMap<u64, u64>>,
    /// Member -> the check that found it diverged.
    diverged: BTreeMap<u64, Diverged>,
    /// Member -> the newest index that decided it (diverged or not): older reports cannot
    /// overturn it.
    decided: BTreeMap<u64, u64>,
    /// The newest check a majority of voters agreed on.
    agreed_index: u64,
}

impl DigestChecks {
    /// Records member `id`'s `digest` at the check at `index`, with `voters` the current
    /// voters; returns the members this record shows diverged for the first time.
    pub fn record(&mut self, id: u64, index: u64, digest: u64, voters: &[u64]) -> Vec<Diverged> {
        let oldest = self.reports.keys().next().copied().unwrap_or(0);
        if self.reports.len() >= CHECKS_KEPT && index < oldest {
            return Vec::new();
        }
        self.reports.entry(index).or_default().insert(id, digest);
        while self.reports.len() > CHECKS_KEPT {
            self.reports.pop_first();
        }
        let Some(at) = self.reports.get(&index) else {
            return Vec::new();
        };
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for (member, d) in at {
            if voters.contains(member) {
                *votes.entry(*d).or_default() += 1;
            }
        }
        let quorum = voters.len() / 2 + 1;
        let Some(majority) = votes.iter().find(|(_, n)| **n >= quorum).map(|(d, _)| *d) else {
            return Vec::new();
        };
        self.agreed_index = self.agreed_index.max(index);
        let mut newly = Vec::new();
        for (member, d) in at {
            if self.decided.get(member).is_some_and(|k| *k > index) {
                continue; // a newer check already decided this member
            }
            self.decided.insert(*member, index);
            let known = self.diverged.get(member).map(|v| v.index);
            if *d == majority {
                self.diverged.remove(member);
                continue;
            }
            let verdict = Diverged {
                id: *member,
                index,
                why: format!(
                    "its state digest {d:016x} at the divergence check at index {index} differs \
                     from the {majority:016x} of a majority of voters"
                ),
            };
            if known.is_none() {
                newly.push(verdict.clone());
            }
            self.diverged.insert(*member, verdict);
        }
        newly
    }

    /// Records that member `id` found its committed log contradicting its leader's at
    /// `index` (see the module docs); true when it was not known diverged already.
    pub fn mark(&mut self, id: u64, index: u64, why: String) -> bool {
        if self.decided.get(&id).is_some_and(|k| *k >= index) {
            return false;
        }
        self.decided.insert(id, index);
        let newly = !self.diverged.contains_key(&id);
        self.diverged.insert(id, Diverged { id, index, why });
        newly
    }

    /// Forgets a member that left the cluster.
    pub fn forget(&mut self, id: u64) {
        self.diverged.remove(&id);
        self.decided.remove(&id);
        for at in self.reports.values_mut() {
            at.remove(&id);
        }
    }

    /// Whether member `id` is diverged.
    pub fn is_diverged(&self, id: u64) -> bool {
        self.diverged.contains_key(&id)
    }

    /// The diverged members, by ID.
    pub fn diverged(&self) -> Vec<Diverged> {
        self.diverged.values().cloned().collect()
    }

    /// Index of the newest check a majority of voters agreed on (0: none).
    pub fn agreed_index(&self) -> u64 {
        self.agreed_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: a member is diverged only once a majority of voters agreed on another digest at
    // the same check; it stops being diverged when a later check finds it with the majority;
    // a late report of an old check cannot undo a newer verdict; no majority, no verdict.
    #[test]
    fn verdicts_follow_the_majority_of_voters() {
        let voters = [1, 2, 3];
        let mut c = DigestChecks::default();
        assert!(c.record(3, 10, 0xbad, &voters).is_empty());
        assert!(c.record(1, 10, 0xa, &voters).is_empty(), "no majority yet");
        let newly = c.record(2, 10, 0xa, &voters);
        assert_eq!(newly.len(), 1);
        assert_eq!((newly[0].id, newly[0].index), (3, 10));
        assert!(
            newly[0].why.contains(&format!("{:016x}", 0xa)),
            "{}",
            newly[0].why
        );
        assert_eq!(c.agreed_index(), 10);
        // A learner's report is compared but never votes.
        assert_eq!(c.record(7, 10, 0xbad, &voters).len(), 1);
        assert_eq!(c.diverged().len(), 2);
        // A later check finds 3 with the majority again.
        c.record(1, 20, 0xb, &voters);
        c.record(3, 20, 0xb, &voters);
        assert_eq!(c.diverged().iter().map(|d| d.id).collect::<Vec<_>>(), [7]);
        // A late report from check 10 does not bring back what check 20 decided.
        c.record(2, 20, 0xb, &voters);
        assert!(c.record(3, 10, 0xbad, &voters).is_empty());
        assert!(c.diverged().iter().all(|d| d.id != 3));
        // Three different digests: no majority, no verdict.
        for (id, d) in [(1, 1), (2, 2), (3, 3)] {
            assert!(c.record(id, 30, d, &voters).is_empty());
        }
        assert_eq!(c.agreed_index(), 20);
        c.forget(7);
        assert!(c.diverged().is_empty());
        // A member that found its log contradicting its leader's is diverged until a later
        // check finds it with the majority.
        assert!(c.mark(2, 35, "its log contradicts".into()));
        assert!(!c.mark(2, 35, "again".into()));
        c.record(1, 40, 9, &voters);
        c.record(2, 40, 9, &voters);
        assert!(c.diverged().is_empty());
    }

    // Intent: only the newest checks are kept, so memory stays bounded however many run.
    #[test]
    fn old_checks_are_forgotten() {
        let mut c = DigestChecks::default();
        for i in 0..(3 * CHECKS_KEPT as u64) {
            c.record(1, i, 1, &[1]);
        }
        assert_eq!(c.reports.len(), CHECKS_KEPT);
        assert!(c.record(1, 0, 2, &[1]).is_empty());
    }
}
