//! The replicated state machine: a key-value map ([`KvStore`]), and [`KvMachine`], its
//! [`engine::StateMachine`].
//!
//! The apply thread is the only writer of [`KvStore`]; HTTP handlers read it (serializable
//! reads directly, linearizable reads once the applied index reached their read barrier).
//!
//! The KV's image (inside the engine's envelope, which holds the membership) is,
//! little-endian:
//! ```text
//! [pair count u64][per pair: key_len u32, key, value_len u32, value]
//! ```
//! An empty image is the empty map (the bootstrap snapshot). Envelope + image are byte for byte
//! the image of release 0.1 (whose magic was `RXKVIMG1`), so old snap files open.
//! [`KvMachine::validate`] checks an image received from a peer before raft ever sees it.
//! Snapshots are merged ([`MergePlan`]): the previous image with the commands since, streamed,
//! on the engine's snapshot thread; the live map is never copied.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use engine::{Command as Committed, ImageError, MergedImage, Rejected, StateMachine};

use crate::command::Command;

/// The key-value map.
#[derive(Debug, Default)]
pub struct KvStore {
    state: RwLock<KvState>,
}

fn image_error(what: &str) -> ImageError {
    ImageError(what.to_string())
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

    /// Runs `f` with the state locked for writing.
    pub fn write_batch<R>(&self, f: impl FnOnce(&mut KvState) -> R) -> R {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KvState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The image of the current map (`[count][pairs]`; tests and the image strategy).
    pub fn image(&self) -> Vec<u8> {
        let state = self.read();
        let mut out = (state.map.len() as u64).to_le_bytes().to_vec();
        for p in &state.map {
            push_pair(&mut out, p.key(), p.value());
        }
        out
    }

    /// Replaces the map with the one in `image`, taken at `index`.
    ///
    /// # Errors
    /// [`ImageError`] when the image is malformed; the map is then unchanged.
    pub fn restore(&self, image: &[u8], index: u64) -> Result<(), ImageError> {
        let count = pair_count(image)?;
        // Sized once: a million keys would otherwise rehash the whole set ~20 times.
        let capacity = count.min(image.len() as u64 / 8) as usize;
        let mut fresh = KvState {
            map: HashSet::with_capacity(capacity),
            applied_index: index,
            ..KvState::default()
        };
        walk_image(image, |k, v| fresh.put(&image[k], &image[v]))?;
        self.write_batch(|state| *state = fresh);
        Ok(())
    }
}

/// The KV's [`StateMachine`]: applies put and delete commands to the shared [`KvStore`].
pub struct KvMachine {
    store: Arc<KvStore>,
}

impl KvMachine {
    /// The machine writing into `store` (which the API reads).
    pub fn new(store: Arc<KvStore>) -> KvMachine {
        KvMachine { store }
    }
}

impl StateMachine for KvMachine {
    type Output = ();
    const MERGES_SNAPSHOTS: bool = true;

    fn apply(&mut self, c: Committed<'_>) -> Result<(), Rejected> {
        let command = Command::decode(c.bytes).map_err(|e| Rejected(e.to_string()));
        self.store.write_batch(|map| {
            map.applied_index = c.index;
            match command? {
                Command::Put { key, value } => map.put(key, value),
                Command::Delete { key } => map.delete(key),
            }
            Ok(())
        })
    }

    fn restore(&mut self, image: &[u8], index: u64) -> Result<(), ImageError> {
        self.store.restore(image, index)
    }

    fn validate(image: &[u8]) -> Result<(), ImageError> {
        walk_image(image, |_, _| {})
    }

    fn image(&self) -> Vec<u8> {
        self.store.image()
    }

    fn plan_merge(
        previous: &mut dyn Read,
        commands: &[Bytes],
    ) -> std::io::Result<Box<dyn MergedImage>> {
        Ok(Box::new(MergePlan::new(previous, overlay(commands))?))
    }
}

/// The net effect of `commands` on the map: the last write of each key wins. Undecodable
/// commands are skipped, as `apply` rejects them.
fn overlay(commands: &[Bytes]) -> Overlay {
    let mut overlay = Overlay::new();
    for c in commands {
        match Command::decode(c) {
            Ok(Command::Put { key, value }) => {
                overlay.insert(c.slice_ref(key), Some(c.slice_ref(value)));
            }
            Ok(Command::Delete { key }) => {
                overlay.insert(c.slice_ref(key), None);
            }
            Err(_) => {}
        }
    }
    overlay
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
/// once by [`MergePlan::new`] to size the result, once by [`MergedImage::write_to`] to copy the
/// pairs whose key the overlay does not touch; the overlay's values follow.
pub struct MergePlan {
    overlay: Overlay,
    count: u64,
    len: u64,
}

impl MergePlan {
    /// Reads `prev` (the previous image) once to size the merge.
    ///
    /// # Errors
    /// An I/O error, `InvalidData` when `prev` is malformed.
    pub fn new(prev: &mut dyn Read, overlay: Overlay) -> std::io::Result<MergePlan> {
        let mut count = 0u64;
        let mut bytes = 0u64;
        read_pairs(prev, |k, v| {
            if !overlay.contains_key(k) {
                count += 1;
                bytes += 8 + (k.len() + v.len()) as u64;
            }
            Ok(())
        })?;
        for (k, v) in &overlay {
            if let Some(v) = v {
                count += 1;
                bytes += 8 + (k.len() + v.len()) as u64;
            }
        }
        Ok(MergePlan {
            overlay,
            count,
            len: 8 + bytes,
        })
    }
}

impl MergedImage for MergePlan {
    fn len(&self) -> u64 {
        self.len
    }

    fn write_to(&self, prev: &mut dyn Read, w: &mut dyn Write) -> std::io::Result<()> {
        w.write_all(&self.count.to_le_bytes())?;
        let mut buf = Vec::with_capacity(256);
        read_pairs(prev, |k, v| {
            if self.overlay.contains_key(k) {
                return Ok(());
            }
            buf.clear();
            push_pair(&mut buf, k, v);
            w.write_all(&buf)
        })?;
        for (k, v) in &self.overlay {
            if let Some(v) = v {
                buf.clear();
                push_pair(&mut buf, k, v);
                w.write_all(&buf)?;
            }
        }
        Ok(())
    }
}

/// Reads an image from a stream, calling `pair` for each key and value. An empty stream is the
/// empty map. Lengths are never trusted for allocation: a corrupt length ends in
/// `UnexpectedEof` once the stream runs out.
///
/// # Errors
/// An I/O error, or `InvalidData` for a malformed image.
pub fn read_pairs(
    r: &mut dyn Read,
    mut pair: impl FnMut(&[u8], &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, image_error(what));
    let mut count = [0u8; 8];
    let got = read_up_to(r, &mut count)?;
    if got == 0 {
        return Ok(());
    }
    if got < 8 {
        return Err(invalid("image shorter than its pair count"));
    }
    let pairs = u64::from_le_bytes(count);
    let mut key = Vec::new();
    let mut value = Vec::new();
    for _ in 0..pairs {
        key.clear();
        let klen = read_u32(r)? as usize;
        read_bytes(r, klen, &mut key)?;
        value.clear();
        let vlen = read_u32(r)? as usize;
        read_bytes(r, vlen, &mut value)?;
        pair(&key, &value)?;
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest)? != 0 {
        return Err(invalid("trailing bytes after the last pair"));
    }
    Ok(())
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Appends exactly `n` bytes from `r` to `out` (growing only as data arrives).
fn read_bytes(r: &mut dyn Read, n: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    let got = r.take(n as u64).read_to_end(out)?;
    if got != n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn read_u32(r: &mut dyn Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

type Range = std::ops::Range<usize>;

/// The pair count at the head of an image (0 for the empty image).
fn pair_count(image: &[u8]) -> Result<u64, ImageError> {
    if image.is_empty() {
        return Ok(0);
    }
    let count = image
        .get(..8)
        .ok_or_else(|| image_error("image shorter than its pair count"))?;
    Ok(u64::from_le_bytes(count.try_into().expect("8 bytes")))
}

fn walk_image(image: &[u8], mut pair: impl FnMut(Range, Range)) -> Result<(), ImageError> {
    let count = pair_count(image)?;
    if image.is_empty() {
        return Ok(());
    }
    // Each pair takes at least 8 bytes: a count beyond that is corrupt.
    if count > (image.len() as u64) / 8 {
        return Err(image_error("pair count larger than the image"));
    }
    let mut pos = 8usize;
    let mut take = |n: usize| -> Result<usize, ImageError> {
        let start = pos;
        pos = pos
            .checked_add(n)
            .filter(|end| *end <= image.len())
            .ok_or_else(|| image_error("pair runs past the end of the image"))?;
        Ok(start)
    };
    for _ in 0..count {
        let at = take(4)?;
        let klen = u32::from_le_bytes(image[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kstart = take(klen)?;
        let at = take(4)?;
        let vlen = u32::from_le_bytes(image[at..at + 4].try_into().expect("4 bytes")) as usize;
        let vstart = take(vlen)?;
        pair(kstart..kstart + klen, vstart..vstart + vlen);
    }
    if take(0)? != image.len() {
        return Err(image_error("trailing bytes after the last pair"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KvStore {
        let kv = KvStore::default();
        kv.write_batch(|m| {
            m.put(b"a", b"0");
            m.put(b"a", b"1");
            m.put(b"bb", b"");
            m.put(b"gone", b"x");
            m.delete(b"gone");
        });
        kv
    }

    // Intent: an image restores the same map and digest; every truncation or a trailing byte
    // is rejected without touching the current map; the empty image is the empty map.
    #[test]
    fn image_round_trip_and_damage() {
        let kv = sample();
        let image = kv.image();
        KvMachine::validate(&image).unwrap();

        let other = KvStore::default();
        other.restore(&image, 5).unwrap();
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

        for cut in 1..image.len() {
            assert!(KvMachine::validate(&image[..cut]).is_err());
            assert!(other.restore(&image[..cut], 6).is_err());
        }
        let mut longer = image.clone();
        longer.push(0);
        assert!(KvMachine::validate(&longer).is_err());
        assert_eq!(other.len(), 2, "failed restores leave the map alone");
        KvMachine::validate(&[]).unwrap();
        other.restore(&[], 7).unwrap();
        assert_eq!(other.len(), 0);
    }

    // Intent: merging an image with the changes of later entries gives exactly the image of
    // the map with those changes applied (overwrites, deletes, new keys, deletes of absent
    // keys), with the length announced in advance; the empty image merges too.
    #[test]
    fn merged_image_equals_the_image_of_the_changed_map() {
        let kv = sample();
        let prev = kv.image();
        let commands: Vec<Bytes> = [
            Command::Put {
                key: b"a",
                value: b"2",
            },
            Command::Delete { key: b"bb" },
            Command::Put {
                key: b"new",
                value: b"n",
            },
            Command::Delete { key: b"never" },
        ]
        .iter()
        .map(|c| Bytes::from(c.encode()))
        .chain([Bytes::from_static(b"\x09garbage")])
        .collect();
        let plan = KvMachine::plan_merge(&mut &prev[..], &commands).unwrap();
        let mut out = Vec::new();
        plan.write_to(&mut &prev[..], &mut out).unwrap();
        assert_eq!(out.len() as u64, plan.len());
        for cut in 1..prev.len() {
            assert!(KvMachine::plan_merge(&mut &prev[..cut], &commands).is_err());
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

        let from_empty = KvMachine::plan_merge(&mut &[][..], &commands[2..3]).unwrap();
        let mut out = Vec::new();
        from_empty.write_to(&mut &[][..], &mut out).unwrap();
        assert_eq!(out.len() as u64, from_empty.len());
        let one = KvStore::default();
        one.restore(&out, 1).unwrap();
        assert_eq!(one.get(b"new").unwrap(), Bytes::from_static(b"n"));
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    // Intent: envelope + KV image stay byte for byte the image of release 0.1 (apart from the
    // envelope's magic, which the engine still reads as 0.1's):
    // `["RXKVIMG1"][membership: count u32, (id u64, learner u8, url_len u32, url)*]`
    // `[pair count u64][(key_len u32, key, value_len u32, value)*]`.
    #[test]
    fn image_bytes_are_those_of_release_0_1() {
        let kv = KvStore::default();
        kv.write_batch(|m| m.put(b"k", b"vv"));
        let members = engine::Membership::initial(&["http://h:1".into()]);
        let mut image = engine::framing::encode_image(&members, &kv.image());
        image[..8].copy_from_slice(b"RXKVIMG1");
        let mut want = b"RXKVIMG1".to_vec();
        want.extend_from_slice(&[1, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0]);
        want.extend_from_slice(b"http://h:1");
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, b'k', 2, 0, 0, 0, b'v', b'v']);
        assert_eq!(image, want);
        let (m, app) = engine::framing::decode_image(&want).unwrap();
        assert_eq!(m, members);
        assert_eq!(app, kv.image());
    }
}
