//! Faults and the rule table that decides which fault applies to a byte stream.
//!
//! A rule is keyed by (source IP or "every source", lane). A [`Direction`] given by the caller
//! expands to one or both lanes. Lookup is most-specific-first: a rule for the connection's
//! source IP wins over the rule for every source; no rule at all means [`Fault::Pass`].
//!
//! The table lives in a `tokio::sync::watch` channel owned by the `Proxy`; every connection
//! holds a receiver and re-reads the table on each chunk and on every change, which is how a
//! new fault reaches connections that already exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Which way the bytes travel, seen from the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the connecting client to the proxied target.
    ToTarget,
    /// From the proxied target back to the client.
    FromTarget,
    /// Both of the above.
    Both,
}

impl Direction {
    /// The lanes this direction covers.
    pub(crate) fn lanes(self) -> &'static [Lane] {
        match self {
            Direction::ToTarget => &[Lane::ToTarget],
            Direction::FromTarget => &[Lane::FromTarget],
            Direction::Both => &[Lane::ToTarget, Lane::FromTarget],
        }
    }
}

/// What happens to traffic that a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward bytes unchanged, as fast as they come.
    Pass,
    /// Forward every chunk this long after the proxy read it (latency, not a rate limit:
    /// chunks stay in order and later chunks keep being read meanwhile).
    Delay(Duration),
    /// Reset affected connections (a TCP RST to both ends) and refuse new ones from the
    /// matched source. Connection-level: a `Drop` rule in either lane closes the whole
    /// connection, since a TCP connection cannot be closed one way.
    Drop,
    /// Accept and read, but discard: nothing is forwarded in the matched lane. A connection
    /// that lost bytes this way is reset once its lane stops being blackholed, because its
    /// byte stream has a hole that the endpoints cannot detect.
    Blackhole,
}

/// One of the two byte streams of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    ToTarget,
    FromTarget,
}

impl Lane {
    /// Index into per-lane arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Lane::ToTarget => 0,
            Lane::FromTarget => 1,
        }
    }
}

/// The rule table. Absent keys mean "no rule" (not Pass), so that a source-specific lookup
/// can fall back to the every-source rule.
#[derive(Debug, Default, Clone)]
pub(crate) struct Rules {
    rules: HashMap<(Option<IpAddr>, Lane), Fault>,
}

impl Rules {
    /// Sets `fault` for `from` in every lane of `direction`, replacing earlier rules for the
    /// same key. An explicit `Pass` for a source overrides an every-source rule.
    pub(crate) fn set(&mut self, from: Option<IpAddr>, direction: Direction, fault: Fault) {
        for &lane in direction.lanes() {
            self.rules.insert((from, lane), fault);
        }
    }

    /// Removes the rules for `from` in the lanes of `direction` (fallback applies again).
    pub(crate) fn clear(&mut self, from: Option<IpAddr>, direction: Direction) {
        for &lane in direction.lanes() {
            self.rules.remove(&(from, lane));
        }
    }

    /// Removes every rule: all traffic passes.
    pub(crate) fn clear_all(&mut self) {
        self.rules.clear();
    }

    /// The fault for traffic from `source` in `lane`: source rule, else every-source rule,
    /// else `Pass`.
    pub(crate) fn fault(&self, source: IpAddr, lane: Lane) -> Fault {
        self.rules
            .get(&(Some(source), lane))
            .or_else(|| self.rules.get(&(None, lane)))
            .copied()
            .unwrap_or(Fault::Pass)
    }

    /// Whether connections from `source` must be reset (a `Drop` in either lane).
    pub(crate) fn drops(&self, source: IpAddr) -> bool {
        [Lane::ToTarget, Lane::FromTarget]
            .iter()
            .any(|&lane| self.fault(source, lane) == Fault::Drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

    #[test]
    fn no_rule_means_pass() {
        // Intent: an empty table forwards everything.
        let rules = Rules::default();
        assert_eq!(rules.fault(A, Lane::ToTarget), Fault::Pass);
        assert!(!rules.drops(A));
    }

    #[test]
    fn source_rule_wins_over_every_source_rule() {
        // Intent: the most specific rule decides, even when it is an explicit Pass.
        let mut rules = Rules::default();
        rules.set(None, Direction::Both, Fault::Drop);
        rules.set(Some(A), Direction::Both, Fault::Pass);
        assert_eq!(rules.fault(A, Lane::FromTarget), Fault::Pass);
        assert_eq!(rules.fault(B, Lane::FromTarget), Fault::Drop);
        assert!(!rules.drops(A));
        assert!(rules.drops(B));
    }

    #[test]
    fn one_way_rule_leaves_other_lane_alone() {
        // Intent: a ToTarget rule does not touch the FromTarget lane.
        let mut rules = Rules::default();
        rules.set(Some(A), Direction::ToTarget, Fault::Blackhole);
        assert_eq!(rules.fault(A, Lane::ToTarget), Fault::Blackhole);
        assert_eq!(rules.fault(A, Lane::FromTarget), Fault::Pass);
    }

    #[test]
    fn clear_restores_fallback() {
        // Intent: clearing a source rule makes the every-source rule apply again.
        let mut rules = Rules::default();
        rules.set(None, Direction::Both, Fault::Blackhole);
        rules.set(Some(A), Direction::Both, Fault::Pass);
        rules.clear(Some(A), Direction::ToTarget);
        assert_eq!(rules.fault(A, Lane::ToTarget), Fault::Blackhole);
        assert_eq!(rules.fault(A, Lane::FromTarget), Fault::Pass);
        rules.clear_all();
        assert_eq!(rules.fault(B, Lane::ToTarget), Fault::Pass);
    }
}
