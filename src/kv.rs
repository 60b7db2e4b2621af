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

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::sync::RwLock;

use bytes::Bytes;

use crate::membership::{Membership, MembershipDecodeError, Reader};

const MAGIC: &[u8; 8] = b"RXKVIMG1";

/// The key-value map.
#[derive(Debug, Default)]
pub struct KvStore {
    state: RwLock<KvState>,
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

/// One key and its value in a single allocation: `[key_len u32 LE][key][value]`. Hashed and
/// compared by key only, so a `HashSet<Pair>` is a map that costs one fat pointer per bucket
/// and one allocation per key (a `HashMap<Bytes, Bytes>` costs four times the bucket space).
struct Pair(Box<[u8]>);

impl Pair {
    fn new(key: &[u8], value: &[u8]) -> Pair {
        let mut buf = Vec::with_capacity(4 + key.len() + value.len());
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        Pair(buf.into_boxed_slice())
    }

    fn key_len(&self) -> usize {
        u32::from_le_bytes(self.0[..4].try_into().expect("4 bytes")) as usize
    }

    fn key(&self) -> &[u8] {
        &self.0[4..4 + self.key_len()]
    }

    fn value(&self) -> &[u8] {
        &self.0[4 + self.key_len()..]
    }
}

impl Borrow<[u8]> for Pair {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl Hash for Pair {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl PartialEq for Pair {
    fn eq(&self, other: &Pair) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Pair {}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pair({} byte key, {} byte value)",
            self.key_len(),
            self.value().len()
        )
    }
}

/// The map and a digest of its contents that every replica computes alike: the XOR of an
/// FNV-1a hash of each (key, value) pair, kept up to date on every change, so replicas can be
/// compared in `GET /status` without hashing the whole map.
#[derive(Debug, Default)]
pub struct KvState {
    map: HashSet<Pair>,
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
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.digest ^= pair_hash(key, value);
        if let Some(old) = self.map.replace(Pair::new(key, value)) {
            self.digest ^= pair_hash(old.key(), old.value());
        }
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.map.take(key) {
            self.digest ^= pair_hash(old.key(), old.value());
        }
    }
}

impl KvStore {
    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.read()
            .map
            .get(key)
            .map(|p| Bytes::copy_from_slice(p.value()))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.read().map.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The applied index and the digest of the contents at it (see [`KvState`]).
    pub fn digest(&self) -> (u64, u64) {
        let state = self.read();
        (state.applied_index, state.digest)
    }

    /// Runs `f` with the state locked for writing (one lock per batch of committed entries).
    pub fn write_batch<R>(&self, f: impl FnOnce(&mut KvState) -> R) -> R {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KvState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The snapshot image of `membership` and the current map, in memory (bootstrap and
    /// tests; running nodes build images with [`merge_image`] without touching the map).
    pub fn image(&self, membership: &Membership) -> Vec<u8> {
        let state = self.read();
        let mut out = image_head(membership, state.map.len() as u64);
        for p in &state.map {
            push_pair(&mut out, p.key(), p.value());
        }
        out
    }

    /// Replaces the map with the one in `image`, taken at `index`; returns the image's
    /// membership.
    ///
    /// # Errors
    /// [`ImageError`] when the image is malformed; the map is then unchanged.
    pub fn restore(&self, image: &[u8], index: u64) -> Result<Membership, ImageError> {
        let (_, pairs_at) = image_prefix(image)?;
        let count = Reader {
            bytes: image,
            pos: pairs_at,
        }
        .u64()?;
        // Sized once: a million keys would otherwise rehash the whole set ~20 times.
        let capacity = count.min(image.len() as u64 / 8) as usize;
        let mut fresh = KvState {
            map: HashSet::with_capacity(capacity),
            applied_index: index,
            ..KvState::default()
        };
        let membership = walk_image(image, |k, v| fresh.put(&image[k], &image[v]))?;
        self.write_batch(|state| *state = fresh);
        Ok(membership)
    }
}

fn image_head(membership: &Membership, count: u64) -> Vec<u8> {
    let mut head = Vec::new();
    head.extend_from_slice(MAGIC);
    membership.encode_into(&mut head);
    head.extend_from_slice(&count.to_le_bytes());
    head
}

fn push_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// The changes made by a run of committed entries: key -> new value, or `None` for deleted.
pub type Overlay = HashMap<Bytes, Option<Bytes>>;

/// A new image = a previous image with an [`Overlay`] applied, written without building the
/// map or holding the previous image in memory: the previous image is read as a stream twice,
/// once by [`MergePlan::new`] to size the result, once by [`MergePlan::write_to`] to copy the
/// pairs whose key the overlay does not touch; the overlay's values follow.
pub struct MergePlan<'a> {
    head: Vec<u8>,
    overlay: &'a Overlay,
    len: u64,
}

impl<'a> MergePlan<'a> {
    /// Reads `prev` (the previous image) once to size the merge.
    ///
    /// # Errors
    /// An I/O error, `InvalidData` when `prev` is malformed.
    pub fn new(
        prev: &mut dyn Read,
        overlay: &'a Overlay,
        membership: &Membership,
    ) -> std::io::Result<MergePlan<'a>> {
        let mut count = 0u64;
        let mut bytes = 0u64;
        read_pairs(prev, |k, v| {
            if !overlay.contains_key(k) {
                count += 1;
                bytes += 8 + (k.len() + v.len()) as u64;
            }
            Ok(())
        })?;
        for (k, v) in overlay {
            if let Some(v) = v {
                count += 1;
                bytes += 8 + (k.len() + v.len()) as u64;
            }
        }
        let head = image_head(membership, count);
        let len = head.len() as u64 + bytes;
        Ok(MergePlan { head, overlay, len })
    }

    /// Length of the merged image in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the image would be empty (never: it has a header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the merged image, reading the previous one again from `prev`.
    ///
    /// # Errors
    /// Whatever reading or writing returns.
    pub fn write_to(&self, prev: &mut dyn Read, w: &mut dyn Write) -> std::io::Result<()> {
        w.write_all(&self.head)?;
        let mut buf = Vec::with_capacity(256);
        read_pairs(prev, |k, v| {
            if self.overlay.contains_key(k) {
                return Ok(());
            }
            buf.clear();
            push_pair(&mut buf, k, v);
            w.write_all(&buf)
        })?;
        for (k, v) in self.overlay {
            if let Some(v) = v {
                buf.clear();
                push_pair(&mut buf, k, v);
                w.write_all(&buf)?;
            }
        }
        Ok(())
    }
}

/// Reads an image from a stream, calling `pair` for each key and value; returns the image's
/// membership. Lengths are never trusted for allocation: a corrupt length ends in
/// `UnexpectedEof` once the stream runs out.
///
/// # Errors
/// An I/O error, or `InvalidData` for a malformed image.
pub fn read_pairs(
    r: &mut dyn Read,
    mut pair: impl FnMut(&[u8], &[u8]) -> std::io::Result<()>,
) -> std::io::Result<Membership> {
    let invalid = |e: ImageError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid(ImageError("bad magic")));
    }
    // The membership's encoding, gathered field by field, then decoded by its own decoder.
    let mut members = Vec::new();
    let count = read_u32(r, &mut members)?;
    for _ in 0..count {
        read_bytes(r, 8 + 1, &mut members)?;
        let url_len = read_u32(r, &mut members)?;
        read_bytes(r, url_len as usize, &mut members)?;
    }
    let (membership, _) = Membership::decode_prefix(&members).map_err(|e| invalid(e.into()))?;
    let mut scratch = Vec::new();
    let pairs = read_u64(r, &mut scratch)?;
    let mut key = Vec::new();
    let mut value = Vec::new();
    for _ in 0..pairs {
        key.clear();
        let klen = read_u32(r, &mut scratch)? as usize;
        read_bytes(r, klen, &mut key)?;
        value.clear();
        let vlen = read_u32(r, &mut scratch)? as usize;
        read_bytes(r, vlen, &mut value)?;
        pair(&key, &value)?;
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest)? != 0 {
        return Err(invalid(ImageError("trailing bytes after the last pair")));
    }
    Ok(membership)
}

/// Appends exactly `n` bytes from `r` to `out` (growing only as data arrives).
fn read_bytes(r: &mut dyn Read, n: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    let got = r.take(n as u64).read_to_end(out)?;
    if got != n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn read_u32(r: &mut dyn Read, out: &mut Vec<u8>) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    out.extend_from_slice(&b);
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut dyn Read, out: &mut Vec<u8>) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    out.extend_from_slice(&b);
    Ok(u64::from_le_bytes(b))
}

/// The membership at the head of an image, without decoding the pairs.
///
/// # Errors
/// [`ImageError`] when the head is malformed.
pub fn image_membership(image: &[u8]) -> Result<Membership, ImageError> {
    Ok(image_prefix(image)?.0)
}

/// Checks that `image` is well formed from end to end, without building the map.
///
/// # Errors
/// [`ImageError`] naming the first problem.
pub fn validate_image(image: &[u8]) -> Result<(), ImageError> {
    walk_image(image, |_, _| {}).map(|_| ())
}

type Range = std::ops::Range<usize>;

/// The membership at the head of `image` and the offset of the pair count after it.
fn image_prefix(image: &[u8]) -> Result<(Membership, usize), ImageError> {
    let rest = image.strip_prefix(MAGIC).ok_or(ImageError("bad magic"))?;
    let (membership, used) = Membership::decode_prefix(rest)?;
    Ok((membership, MAGIC.len() + used))
}

fn walk_image(image: &[u8], mut pair: impl FnMut(Range, Range)) -> Result<Membership, ImageError> {
    let (membership, pairs_at) = image_prefix(image)?;
    let mut r = Reader {
        bytes: image,
        pos: pairs_at,
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

    fn sample() -> (KvStore, Membership) {
        let kv = KvStore::default();
        kv.write_batch(|m| {
            m.put(b"a", b"0");
            m.put(b"a", b"1");
            m.put(b"bb", b"");
            m.put(b"gone", b"x");
            m.delete(b"gone");
        });
        (kv, Membership::initial(&["http://127.0.0.1:1".into()]))
    }

    // Intent: an image restores the same map, digest and membership; every truncation or a
    // trailing byte is rejected without touching the current map.
    #[test]
    fn image_round_trip_and_damage() {
        let (kv, members) = sample();
        let image = kv.image(&members);
        validate_image(&image).unwrap();
        assert_eq!(image_membership(&image).unwrap(), members);

        let other = KvStore::default();
        assert_eq!(other.restore(&image, 5).unwrap(), members);
        assert_eq!(other.get(b"a").unwrap(), Bytes::from_static(b"1"));
        assert_eq!(other.get(b"bb").unwrap(), Bytes::new());
        assert_eq!(other.get(b"gone"), None);
        assert_eq!(other.len(), 2);
        assert_eq!(
            other.digest(),
            (5, kv.digest().1),
            "same contents, same digest"
        );
        assert_ne!(kv.digest().1, 0);

        for cut in 0..image.len() {
            assert!(validate_image(&image[..cut]).is_err());
            assert!(other.restore(&image[..cut], 6).is_err());
        }
        let mut longer = image.clone();
        longer.push(0);
        assert!(validate_image(&longer).is_err());
        assert_eq!(other.len(), 2, "failed restores leave the map alone");
    }

    // Intent: merging an image with the changes of later entries gives exactly the image of
    // the map with those changes applied (overwrites, deletes, new keys, deletes of absent
    // keys), with the length announced in advance.
    #[test]
    fn merged_image_equals_the_image_of_the_changed_map() {
        let (kv, members) = sample();
        let prev = kv.image(&members);
        let mut overlay = Overlay::new();
        overlay.insert(Bytes::from_static(b"a"), Some(Bytes::from_static(b"2")));
        overlay.insert(Bytes::from_static(b"bb"), None);
        overlay.insert(Bytes::from_static(b"new"), Some(Bytes::from_static(b"n")));
        overlay.insert(Bytes::from_static(b"never"), None);
        let plan = MergePlan::new(&mut &prev[..], &overlay, &members).unwrap();
        let mut out = Vec::new();
        plan.write_to(&mut &prev[..], &mut out).unwrap();
        assert_eq!(out.len() as u64, plan.len());
        for cut in 0..prev.len() {
            assert!(MergePlan::new(&mut &prev[..cut], &overlay, &members).is_err());
        }

        kv.write_batch(|m| {
            m.put(b"a", b"2");
            m.delete(b"bb");
            m.put(b"new", b"n");
        });
        let restored = KvStore::default();
        restored.restore(&out, 9).unwrap();
        assert_eq!(restored.digest().1, kv.digest().1);
        assert_eq!(restored.len(), 2);
        assert_eq!(restored.get(b"new").unwrap(), Bytes::from_static(b"n"));
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    // Intent: the snapshot image of release 0.1 stays byte for byte what is in old snap files:
    // `["RXKVIMG1"][membership: count u32, (id u64, learner u8, url_len u32, url)*]`
    // `[pair count u64][(key_len u32, key, value_len u32, value)*]`.
    #[test]
    fn image_bytes_are_those_of_release_0_1() {
        let kv = KvStore::default();
        kv.write_batch(|m| m.put(b"k", b"vv"));
        let image = kv.image(&Membership::initial(&["http://h:1".into()]));
        let mut want = b"RXKVIMG1".to_vec();
        want.extend_from_slice(&[1, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0]);
        want.extend_from_slice(b"http://h:1");
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, b'k', 2, 0, 0, 0, b'v', b'v']);
        assert_eq!(image, want);
    }
}
