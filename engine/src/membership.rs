//! Cluster membership as the application knows it: raft ID -> peer URL, voter or learner.
//!
//! raft-rs's `ConfState` knows only IDs; the peer URLs travel in conf change contexts and in
//! snapshots (this type is encoded at the head of every snapshot's data), so a node restarted
//! after compaction still knows how to reach every member. The raft thread owns the one
//! `Membership`; others see copies in status answers.
//!
//! It also holds what the cluster knows durably about its members beyond raft's conf state
//! (ARCHITECTURE.md, "Who has started"): each member's last start record (its incarnation, a
//! nonce unique to that start, its client URL) and every ID ever removed. Both come from the
//! log and live in every snapshot, so they survive restarts and compaction.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Raft ID.
    pub id: u64,
    /// Peer URL (`http://host:port`).
    pub url: String,
    /// A learner receives the log but does not vote.
    pub learner: bool,
    /// A learner that becomes a voter by itself once it has started (its start record is
    /// committed) and caught up: how `POST /{id}` adds a voter.
    pub promote_when_ready: bool,
}

/// One start of a member, as its start record in the log gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Start {
    /// Raised by one at every start, kept in the member's WAL dir.
    pub incarnation: u64,
    /// Random, new at every start: two starts with one incarnation (a wiped or rolled-back
    /// data dir counting again) still differ.
    pub nonce: u64,
    /// Where the member serves clients (for tools that find every member).
    pub client_url: String,
}

/// All members, by ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    members: BTreeMap<u64, Member>,
    /// The last start record of each member that has started.
    started: BTreeMap<u64, Start>,
    /// Every ID ever removed; never reused.
    removed: BTreeSet<u64>,
    /// Members whose disk went below the free-disk reserve (the NOSPACE alarm, as etcd's):
    /// while any is set, every member refuses writes that grow the data.
    alarms: BTreeSet<u64>,
}

/// Bytes that are not an encoded membership.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed membership: {0}")]
pub struct MembershipDecodeError(pub &'static str);

/// Most members a snapshot may list; a bound so that a corrupt count never allocates much.
const MAX_MEMBERS: u32 = 4096;

impl Membership {
    /// The initial voters 1..=n of a bootstrapping cluster, from `--cluster`.
    pub fn initial(cluster: &[String]) -> Membership {
        let mut m = Membership::default();
        for (i, url) in cluster.iter().enumerate() {
            m.insert(i as u64 + 1, url.clone(), false);
        }
        m
    }

    /// Adds or replaces a member.
    pub fn insert(&mut self, id: u64, url: String, learner: bool) {
        self.insert_member(Member {
            id,
            url,
            learner,
            promote_when_ready: false,
        });
    }

    /// Adds or replaces `member`.
    pub fn insert_member(&mut self, member: Member) {
        self.members.insert(member.id, member);
    }

    /// Removes a member; returns it if it was there. Its ID is then removed for good.
    pub fn remove(&mut self, id: u64) -> Option<Member> {
        self.removed.insert(id);
        self.started.remove(&id);
        self.alarms.remove(&id);
        self.members.remove(&id)
    }

    /// Whether `id` was ever removed.
    pub fn was_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// Every removed ID.
    pub fn removed(&self) -> impl Iterator<Item = u64> + '_ {
        self.removed.iter().copied()
    }

    /// Records a start of member `id`; ignored for a non-member.
    pub fn record_start(&mut self, id: u64, start: Start) -> bool {
        if !self.members.contains_key(&id) {
            return false;
        }
        self.started.insert(id, start);
        true
    }

    /// Raises (`on`) or clears member `id`'s NOSPACE alarm; false when nothing changed (or
    /// `id` is not a member).
    pub fn set_alarm(&mut self, id: u64, on: bool) -> bool {
        if on && !self.members.contains_key(&id) {
            return false;
        }
        match on {
            true => self.alarms.insert(id),
            false => self.alarms.remove(&id),
        }
    }

    /// Members whose NOSPACE alarm is raised.
    pub fn alarms(&self) -> impl Iterator<Item = u64> + '_ {
        self.alarms.iter().copied()
    }

    /// The last start record of `id`.
    pub fn started(&self, id: u64) -> Option<&Start> {
        self.started.get(&id)
    }

    /// Every member's last start record.
    pub fn starts(&self) -> impl Iterator<Item = (u64, &Start)> {
        self.started.iter().map(|(id, s)| (*id, s))
    }

    /// The member `id`, if any.
    pub fn get(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Every member in ID order.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Appends the encoding to `out`, in the layout of `version` (1 or 2):
    /// `[count u32][per member: id u64, learner u8, url_len u32, url]`, all little-endian;
    /// version 2 adds learner value 2 (a learner promoted when ready) and then
    /// `[starts u32][per start: id u64, incarnation u64, nonce u64, url_len u32, client url]`
    /// `[removed u32][id u64 ...][alarms u32][id u64 ...]`.
    pub fn encode_into(&self, out: &mut Vec<u8>, version: u8) {
        out.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for m in self.members.values() {
            out.extend_from_slice(&m.id.to_le_bytes());
            let flag = match (m.learner, m.promote_when_ready && version >= 2) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => 2,
            };
            out.push(flag);
            put_str(out, &m.url);
        }
        if version < 2 {
            return;
        }
        out.extend_from_slice(&(self.started.len() as u32).to_le_bytes());
        for (id, s) in &self.started {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&s.incarnation.to_le_bytes());
            out.extend_from_slice(&s.nonce.to_le_bytes());
            put_str(out, &s.client_url);
        }
        for set in [&self.removed, &self.alarms] {
            out.extend_from_slice(&(set.len() as u32).to_le_bytes());
            for id in set {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }

    /// Decodes the `version` layout from the head of `bytes`; returns the membership and the
    /// bytes consumed. A version 1 membership has no start records and no removed IDs.
    ///
    /// # Errors
    /// [`MembershipDecodeError`] for truncated or impossible input.
    pub fn decode_prefix(
        bytes: &[u8],
        version: u8,
    ) -> Result<(Membership, usize), MembershipDecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let count = r.count()?;
        let mut m = Membership::default();
        for _ in 0..count {
            let id = r.u64()?;
            let (learner, promote_when_ready) = match (r.take(1)?[0], version) {
                (0, _) => (false, false),
                (1, _) => (true, false),
                (2, 2..) => (true, true),
                _ => return Err(MembershipDecodeError("bad learner flag")),
            };
            let url = r.string()?;
            m.insert_member(Member {
                id,
                url,
                learner,
                promote_when_ready,
            });
        }
        if version < 2 {
            return Ok((m, r.pos));
        }
        for _ in 0..r.count()? {
            let id = r.u64()?;
            let incarnation = r.u64()?;
            let nonce = r.u64()?;
            let client_url = r.string()?;
            m.started.insert(
                id,
                Start {
                    incarnation,
                    nonce,
                    client_url,
                },
            );
        }
        // Not capped: a long-lived cluster may remove many IDs, and nothing is allocated
        // ahead of the bytes read.
        for _ in 0..r.u32()? {
            m.removed.insert(r.u64()?);
        }
        for _ in 0..r.count()? {
            m.alarms.insert(r.u64()?);
        }
        Ok((m, r.pos))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A bounds-checked little-endian reader over a byte slice.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], MembershipDecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(MembershipDecodeError("truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, MembershipDecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, MembershipDecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    /// A count of items, at most [`MAX_MEMBERS`] (a corrupt count never allocates much).
    fn count(&mut self) -> Result<u32, MembershipDecodeError> {
        let count = self.u32()?;
        if count > MAX_MEMBERS {
            return Err(MembershipDecodeError("too many members"));
        }
        Ok(count)
    }

    fn string(&mut self) -> Result<String, MembershipDecodeError> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?)
            .map(str::to_string)
            .map_err(|_| MembershipDecodeError("URL is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: membership, start records and removed IDs survive encoding; version 1 keeps
    // its old layout (no starts, no removed IDs, no promote flag); every truncation is an
    // error, not a panic.
    #[test]
    fn round_trip_and_truncation() {
        let mut m = Membership::initial(&["http://a:1".into(), "http://b:2".into()]);
        m.insert(4, "http://d:4".into(), true);
        m.insert_member(Member {
            id: 5,
            url: "http://e:5".into(),
            learner: true,
            promote_when_ready: true,
        });
        let start = Start {
            incarnation: 3,
            nonce: 99,
            client_url: "http://a:11".into(),
        };
        assert!(m.record_start(1, start.clone()));
        assert!(!m.record_start(9, start.clone()), "not a member");
        m.insert(3, "http://c:3".into(), false);
        assert!(m.set_alarm(3, true) && m.set_alarm(2, true));
        assert!(!m.set_alarm(9, true), "not a member");
        m.remove(3);
        assert_eq!(m.alarms().collect::<Vec<_>>(), vec![2]);
        let mut bytes = Vec::new();
        m.encode_into(&mut bytes, 2);
        let (back, used) = Membership::decode_prefix(&bytes, 2).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.started(1), Some(&start));
        assert!(back.was_removed(3));
        assert_eq!(back.alarms().collect::<Vec<_>>(), vec![2]);
        assert_eq!(used, bytes.len());
        for cut in 0..bytes.len() {
            assert!(Membership::decode_prefix(&bytes[..cut], 2).is_err());
        }
        let mut v1 = Vec::new();
        m.encode_into(&mut v1, 1);
        let (old, _) = Membership::decode_prefix(&v1, 1).unwrap();
        assert_eq!(old.iter().count(), 4);
        assert!(old.started(1).is_none() && !old.was_removed(3));
        assert!(!old.get(5).unwrap().promote_when_ready);
    }
}
