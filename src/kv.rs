//! The replicated state machine: a key-value map, and its image inside a raft snapshot.
//!
//! The apply worker is the only writer of [`KvStore`]; HTTP handlers read it (serializable
//! reads directly, linearizable reads once the applied index reached their read index).
//!
//! Snapshot data (the *image*) is, little-endian:
//! ```text
//! [magic "RXKVIMG1" 8 bytes][membership (see membership.rs)][pair count u64]
//! [per pair: key_len u32, key, value_len u32, value]
//! ```
//! The snap file around it carries the CRC; [`validate_image`] checks the structure of an
//! image received from a peer before raft ever sees it.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;

use crate::membership::{Membership, MembershipDecodeError, Reader};

const MAGIC: &[u8; 8] = b"RXKVIMG1";

/// The key-value map.
#[derive(Debug, Default)]
pub struct KvStore {
    state: RwLock<KvState>,
}

/// The map and a digest of its contents that every replica computes alike: the XOR of an
/// FNV-1a hash of each (key, value) pair, kept up to date on every change, so replicas can be
/// compared in `GET /status` without hashing the whole map.
#[derive(Debug, Default)]
pub struct KvState {
    map: HashMap<Bytes, Bytes>,
    digest: u64,
    /// Index of the last entry applied to this state.
    pub applied_index: u64,
}

fn pair_hash(key: &[u8], value: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let len = (key.len() as u64).to_le_bytes();
    for byte in len.iter().chain(key).chain(value) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl KvState {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Bytes, value: Bytes) {
        self.digest ^= pair_hash(&key, &value);
        if let Some(old) = self.map.insert(key.clone(), value) {
            self.digest ^= pair_hash(&key, &old);
        }
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.digest ^= pair_hash(key, &old);
        }
    }
}

/// An image that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed snapshot image: {0}")]
pub struct ImageError(&'static str);

impl From<MembershipDecodeError> for ImageError {
    fn from(e: MembershipDecodeError) -> Self {
        ImageError(e.0)
    }
}

impl KvStore {
    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.read().map.get(key).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.read().map.len()
    }

    /// The applied index and the digest of the contents at it (see [`KvState`]).
    pub fn digest(&self) -> (u64, u64) {
        let state = self.read();
        (state.applied_index, state.digest)
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` with the state locked for writing (one lock per batch of committed entries).
    pub fn write_batch<R>(&self, f: impl FnOnce(&mut KvState) -> R) -> R {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KvState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The snapshot image of `membership` and the current map, in memory.
    pub fn image(&self, membership: &Membership) -> Vec<u8> {
        let image = self.freeze(membership);
        let mut out = Vec::with_capacity(image.len() as usize);
        image
            .write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// The state at this instant, ready to be written as an image without holding the lock:
    /// only the key and value handles are copied (reference counts), not their bytes.
    pub fn freeze(&self, membership: &Membership) -> FrozenImage {
        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        membership.encode_into(&mut head);
        let state = self.read();
        let pairs: Vec<(Bytes, Bytes)> = state
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        FrozenImage {
            head,
            pairs,
            applied_index: state.applied_index,
        }
    }

    /// Replaces the map with the one in `image`, taken at `index`; returns the image's
    /// membership.
    ///
    /// # Errors
    /// [`ImageError`] when the image is malformed; the map is then unchanged.
    pub fn restore(&self, image: &Bytes, index: u64) -> Result<Membership, ImageError> {
        let (membership, pairs) = decode_image(image)?;
        let mut fresh = KvState {
            map: HashMap::with_capacity(pairs.len()),
            digest: 0,
            applied_index: index,
        };
        for (k, v) in pairs {
            fresh.put(k, v);
        }
        self.write_batch(|state| *state = fresh);
        Ok(membership)
    }
}

/// A copy-free picture of the state, to be written out as an image (see [`KvStore::freeze`]).
pub struct FrozenImage {
    head: Vec<u8>,
    pairs: Vec<(Bytes, Bytes)>,
    /// The applied index the picture was taken at.
    pub applied_index: u64,
}

impl FrozenImage {
    /// Length of the encoded image in bytes.
    pub fn len(&self) -> u64 {
        let pairs: u64 = self
            .pairs
            .iter()
            .map(|(k, v)| 8 + (k.len() + v.len()) as u64)
            .sum();
        self.head.len() as u64 + 8 + pairs
    }

    /// True when the image holds no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Writes the image (the format in the module doc).
    ///
    /// # Errors
    /// Whatever the writer returns.
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        w.write_all(&self.head)?;
        w.write_all(&(self.pairs.len() as u64).to_le_bytes())?;
        for (k, v) in &self.pairs {
            w.write_all(&(k.len() as u32).to_le_bytes())?;
            w.write_all(k)?;
            w.write_all(&(v.len() as u32).to_le_bytes())?;
            w.write_all(v)?;
        }
        Ok(())
    }
}

/// The membership at the head of an image, without decoding the pairs.
///
/// # Errors
/// [`ImageError`] when the head is malformed.
pub fn image_membership(image: &[u8]) -> Result<Membership, ImageError> {
    let rest = image.strip_prefix(MAGIC).ok_or(ImageError("bad magic"))?;
    Ok(Membership::decode_prefix(rest)?.0)
}

/// Checks that `image` is well formed from end to end, without building the map.
///
/// # Errors
/// [`ImageError`] naming the first problem.
pub fn validate_image(image: &[u8]) -> Result<(), ImageError> {
    walk_image(image, |_, _| {}).map(|_| ())
}

fn decode_image(image: &Bytes) -> Result<(Membership, Vec<(Bytes, Bytes)>), ImageError> {
    let mut ranges = Vec::new();
    let membership = walk_image(image, |k, v| ranges.push((k, v)))?;
    let pairs = ranges
        .into_iter()
        .map(|(k, v)| (image.slice(k), image.slice(v)))
        .collect();
    Ok((membership, pairs))
}

type Range = std::ops::Range<usize>;

fn walk_image(image: &[u8], mut pair: impl FnMut(Range, Range)) -> Result<Membership, ImageError> {
    let rest = image.strip_prefix(MAGIC).ok_or(ImageError("bad magic"))?;
    let (membership, used) = Membership::decode_prefix(rest)?;
    let mut r = Reader {
        bytes: image,
        pos: MAGIC.len() + used,
    };
    let count = r.u64()?;
    // Each pair takes at least 8 bytes: a count beyond that is corrupt.
    if count > (image.len() as u64) / 8 {
        return Err(ImageError("pair count larger than the image"));
    }
    for _ in 0..count {
        let klen = r.u32()? as usize;
        let kstart = r.pos;
        r.take(klen)?;
        let vlen = r.u32()? as usize;
        let vstart = r.pos;
        r.take(vlen)?;
        pair(kstart..kstart + klen, vstart..vstart + vlen);
    }
    if r.pos != image.len() {
        return Err(ImageError("trailing bytes after the last pair"));
    }
    Ok(membership)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: an image restores the same map and membership; every truncation or a trailing
    // byte is rejected without touching the current map.
    #[test]
    fn image_round_trip_and_damage() {
        let kv = KvStore::default();
        kv.write_batch(|m| {
            m.put(Bytes::from_static(b"a"), Bytes::from_static(b"0"));
            m.put(Bytes::from_static(b"a"), Bytes::from_static(b"1"));
            m.put(Bytes::from_static(b"bb"), Bytes::from_static(b""));
            m.put(Bytes::from_static(b"gone"), Bytes::from_static(b"x"));
            m.delete(b"gone");
        });
        let members = Membership::initial(&["http://127.0.0.1:1".into()]);
        let image = Bytes::from(kv.image(&members));
        assert_eq!(image.len() as u64, kv.freeze(&members).len());
        validate_image(&image).unwrap();
        assert_eq!(image_membership(&image).unwrap(), members);

        let other = KvStore::default();
        assert_eq!(other.restore(&image, 5).unwrap(), members);
        assert_eq!(other.get(b"a").unwrap(), Bytes::from_static(b"1"));
        assert_eq!(other.get(b"bb").unwrap(), Bytes::new());
        assert_eq!(other.len(), 2);
        assert_eq!(
            other.digest(),
            (5, kv.digest().1),
            "same contents, same digest"
        );
        assert_ne!(kv.digest().1, 0);

        for cut in 0..image.len() {
            let damaged = image.slice(..cut);
            assert!(validate_image(&damaged).is_err());
            assert!(other.restore(&damaged, 6).is_err());
        }
        let mut longer = image.to_vec();
        longer.push(0);
        assert!(validate_image(&longer).is_err());
        assert_eq!(other.len(), 2, "failed restores leave the map alone");
    }
}
