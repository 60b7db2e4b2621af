//! Cluster membership as the application knows it: raft ID -> peer URL, voter or learner.
//!
//! raft-rs's `ConfState` knows only IDs; the peer URLs travel in conf change contexts and in
//! snapshots (this type is encoded at the head of every snapshot's data), so a node restarted
//! after compaction still knows how to reach every member. The raft thread owns the one
//! `Membership`; others see copies in status answers.

use std::collections::BTreeMap;

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
}

/// All members, by ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    members: BTreeMap<u64, Member>,
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
        self.members.insert(id, Member { id, url, learner });
    }

    /// Removes a member; returns it if it was there.
    pub fn remove(&mut self, id: u64) -> Option<Member> {
        self.members.remove(&id)
    }

    /// The member `id`, if any.
    pub fn get(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Every member in ID order.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Appends the encoding to `out`:
    /// `[count u32][per member: id u64, learner u8, url_len u32, url]`, all little-endian.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for m in self.members.values() {
            out.extend_from_slice(&m.id.to_le_bytes());
            out.push(u8::from(m.learner));
            out.extend_from_slice(&(m.url.len() as u32).to_le_bytes());
            out.extend_from_slice(m.url.as_bytes());
        }
    }

    /// Decodes from the head of `bytes`; returns the membership and the bytes consumed.
    ///
    /// # Errors
    /// [`MembershipDecodeError`] for truncated or impossible input.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Membership, usize), MembershipDecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let count = r.u32()?;
        if count > MAX_MEMBERS {
            return Err(MembershipDecodeError("too many members"));
        }
        let mut m = Membership::default();
        for _ in 0..count {
            let id = r.u64()?;
            let learner = match r.take(1)?[0] {
                0 => false,
                1 => true,
                _ => return Err(MembershipDecodeError("bad learner flag")),
            };
            let len = r.u32()? as usize;
            let url = std::str::from_utf8(r.take(len)?)
                .map_err(|_| MembershipDecodeError("URL is not UTF-8"))?;
            m.insert(id, url.to_string(), learner);
        }
        Ok((m, r.pos))
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: membership survives encoding, and every truncation is an error, not a panic.
    #[test]
    fn round_trip_and_truncation() {
        let mut m = Membership::initial(&["http://a:1".into(), "http://b:2".into()]);
        m.insert(4, "http://d:4".into(), true);
        let mut bytes = Vec::new();
        m.encode_into(&mut bytes);
        let (back, used) = Membership::decode_prefix(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(used, bytes.len());
        for cut in 0..bytes.len() {
            assert!(Membership::decode_prefix(&bytes[..cut]).is_err());
        }
    }
}
