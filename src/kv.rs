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
    /// Bytes of all keys and values (what `--quota-bytes` bounds).
    bytes: u64,
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
        self.bytes += (key.len() + value.len()) as u64;
        if let Some(old) = self.map.replace(Pair::new(key, value)) {
            self.digest ^= pair_hash(old.key(), old.value());
            self.bytes -= (old.key().len() + old.value().len()) as u64;
        }
    }

    /// The bytes of keys and values after putting `value` at `key`.
    fn bytes_after_put(&self, key: &[u8], value: &[u8]) -> u64 {
        let old = self
            .map
            .get(key)
            .map_or(0, |p| (p.key().len() + p.value().len()) as u64);
        self.bytes - old + (key.len() + value.len()) as u64
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.map.take(key) {
            self.digest ^= pair_hash(old.key(), old.value());
            self.bytes -= (old.key().len() + old.value().len()) as u64;
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

    /// Bytes of all keys and values.
    pub fn bytes(&self) -> u64 {
        self.read().bytes
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
    pub fn restore(&self, image: &mut dyn Read, index: u64) -> Result<(), ImageError> {
        let mut fresh = KvState {
            applied_index: index,
            ..KvState::default()
        };
        read_pairs(image, |k, v| {
            fresh.put(k, v);
            Ok(())
        })
        .map_err(|e| image_error(&e.to_string()))?;
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

/// What applying a command did, for its proposer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOutput {
    /// Done.
    Done,
    /// A put refused (nothing changed): it would take the data to `after` bytes, above
    /// `quota`.
    OverQuota {
        /// Bytes the put would have left.
        after: u64,
        /// The put's quota.
        quota: u64,
    },
}

/// Whether a put that takes the data from `before` to `after` bytes stays within `quota`. A
/// put that does not grow the data is always allowed (as deletes are).
fn within_quota(before: u64, after: u64, quota: u64) -> bool {
    after <= quota || after <= before
}

impl StateMachine for KvMachine {
    type Output = KvOutput;
    const MERGES_SNAPSHOTS: bool = true;
    const QUICK_APPLY: bool = true;

    fn apply(&mut self, c: Committed<'_>) -> Result<KvOutput, Rejected> {
        let command = Command::decode(c.bytes).map_err(|e| Rejected(e.to_string()));
        self.store.write_batch(|map| {
            map.applied_index = c.index;
            match command? {
                Command::Put { key, value, quota } => {
                    let after = map.bytes_after_put(key, value);
                    if !within_quota(map.bytes, after, quota) {
                        return Ok(KvOutput::OverQuota { after, quota });
                    }
                    map.put(key, value)
                }
                Command::Delete { key } => map.delete(key),
            }
            Ok(KvOutput::Done)
        })
    }

    fn restore(&mut self, image: &mut dyn Read, index: u64) -> Result<(), ImageError> {
        self.store.restore(image, index)
    }

    fn validate(image: &mut dyn Read) -> Result<(), ImageError> {
        read_pairs(image, |_, _| Ok(())).map_err(|e| image_error(&e.to_string()))
    }

    /// Keys, their bytes and the state digest (as `GET /status` gives it) of an image.
    fn summarize(image: &mut dyn Read) -> Result<Vec<(String, serde_json::Value)>, ImageError> {
        let (mut keys, mut bytes, mut digest) = (0u64, 0u64, 0u64);
        read_pairs(image, |key, value| {
            keys += 1;
            bytes += (key.len() + value.len()) as u64;
            digest ^= pair_hash(key, value);
            Ok(())
        })
        .map_err(|e| image_error(&e.to_string()))?;
        Ok(vec![
            ("keys".into(), keys.into()),
            ("bytes".into(), bytes.into()),
            ("state_digest".into(), format!("{digest:016x}").into()),
        ])
    }

    fn image(&self) -> Vec<u8> {
        self.store.image()
    }

    fn digest(&self) -> Option<u64> {
        Some(self.store.digest().1)
    }

    fn plan_merge(
        previous: &mut dyn Read,
        commands: &[Bytes],
    ) -> std::io::Result<Box<dyn MergedImage>> {
        Ok(Box::new(MergePlan::new(previous, commands)?))
    }
}

fn push_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// The changes made by a run of committed entries: key -> new value, or `None` for deleted.
pub type Overlay = HashMap<Bytes, Option<Bytes>>;

/// A new image = a previous image with the commands since applied, written without building
/// the map or holding the previous image in memory. [`MergePlan::new`] reads the previous image
/// once, keeping only its totals and the sizes of the keys the commands touch; it then replays
/// the commands on those (so each quota-bounded put is decided exactly as `apply` decided it)
/// into an [`Overlay`], and sizes the result. [`MergedImage::write_to`] reads the previous
/// image again, copies the pairs the overlay does not touch, and appends the overlay's values.
pub struct MergePlan {
    overlay: Overlay,
    count: u64,
    len: u64,
}

/// What the sizing pass keeps of the previous image.
#[derive(Default)]
struct PreviousTotals {
    count: u64,
    /// Encoded bytes of the pairs (8 + key + value each).
    pair_bytes: u64,
    /// Keys and values (what the quota bounds).
    data_bytes: u64,
    /// Size (key + value) of each touched key present in the image.
    touched: HashMap<Bytes, u64>,
}

impl MergePlan {
    /// Reads `prev` (the previous image) once and replays `commands` (undecodable ones are
    /// skipped, as `apply` rejects them).
    ///
    /// # Errors
    /// An I/O error, `InvalidData` when `prev` is malformed.
    pub fn new(prev: &mut dyn Read, commands: &[Bytes]) -> std::io::Result<MergePlan> {
        let decoded: Vec<(&Bytes, Command<'_>)> = commands
            .iter()
            .filter_map(|c| Command::decode(c).ok().map(|d| (c, d)))
            .collect();
        let keys: std::collections::HashSet<&[u8]> = decoded
            .iter()
            .map(|(_, d)| match d {
                Command::Put { key, .. } | Command::Delete { key } => *key,
            })
            .collect();
        let mut totals = PreviousTotals::default();
        read_pairs(prev, |k, v| {
            totals.count += 1;
            totals.pair_bytes += 8 + (k.len() + v.len()) as u64;
            totals.data_bytes += (k.len() + v.len()) as u64;
            if keys.contains(k) {
                totals
                    .touched
                    .insert(Bytes::copy_from_slice(k), (k.len() + v.len()) as u64);
            }
            Ok(())
        })?;
        let overlay = replay(&decoded, &totals);
        let (mut count, mut len) = (totals.count, 8 + totals.pair_bytes);
        for (k, v) in &overlay {
            if let Some(old) = totals.touched.get(k) {
                count -= 1;
                len -= 8 + old;
            }
            if let Some(v) = v {
                count += 1;
                len += 8 + (k.len() + v.len()) as u64;
            }
        }
        Ok(MergePlan {
            overlay,
            count,
            len,
        })
    }
}

/// Replays decoded commands over the touched keys' sizes, deciding each put's quota as
/// `apply` did, into the net change per key.
fn replay(decoded: &[(&Bytes, Command<'_>)], totals: &PreviousTotals) -> Overlay {
    let mut sizes: HashMap<&[u8], u64> = totals
        .touched
        .iter()
        .map(|(k, size)| (&k[..], *size))
        .collect();
    let mut bytes = totals.data_bytes;
    let mut overlay = Overlay::new();
    for (raw, command) in decoded {
        match *command {
            Command::Put { key, value, quota } => {
                let old = sizes.get(key).copied().unwrap_or(0);
                let after = bytes - old + (key.len() + value.len()) as u64;
                if !within_quota(bytes, after, quota) {
                    continue;
                }
                bytes = after;
                sizes.insert(key, (key.len() + value.len()) as u64);
                overlay.insert(raw.slice_ref(key), Some(raw.slice_ref(value)));
            }
            Command::Delete { key } => {
                bytes -= sizes.remove(key).unwrap_or(0);
                overlay.insert(raw.slice_ref(key), None);
            }
        }
    }
    overlay
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

/// No key or value is longer than one WAL record (a write carries it whole): a longer length
/// in an image is damage, refused before it is read (a hostile image or backup).
const MAX_PAIR_PART_BYTES: u64 = engine::limits::WAL_MAX_RECORD_BYTES;

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
        let klen = read_u32(r)?;
        if u64::from(klen) > MAX_PAIR_PART_BYTES {
            return Err(invalid("a key longer than any write can carry"));
        }
        read_bytes(r, klen as usize, &mut key)?;
        value.clear();
        let vlen = read_u32(r)?;
        if u64::from(vlen) > MAX_PAIR_PART_BYTES {
            return Err(invalid("a value longer than any write can carry"));
        }
        read_bytes(r, vlen as usize, &mut value)?;
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
        KvMachine::validate(&mut &image[..]).unwrap();

        let other = KvStore::default();
        other.restore(&mut &image[..], 5).unwrap();
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
            assert!(KvMachine::validate(&mut &image[..cut]).is_err());
            assert!(other.restore(&mut &image[..cut], 6).is_err());
        }
        let mut longer = image.clone();
        longer.push(0);
        assert!(KvMachine::validate(&mut &longer[..]).is_err());
        assert_eq!(other.len(), 2, "failed restores leave the map alone");
        KvMachine::validate(&mut &[][..]).unwrap();
        other.restore(&mut &[][..], 7).unwrap();
        assert_eq!(other.len(), 0);
        // A length no write can carry is refused at once, before anything is read for it.
        let mut huge = 1u64.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = KvMachine::validate(&mut &huge[..]).unwrap_err();
        assert!(err.to_string().contains("longer than any write"), "{err}");
        let summary = KvMachine::summarize(&mut &image[..]).unwrap();
        assert_eq!(summary[0], ("keys".to_string(), 2.into()));
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
                quota: u64::MAX,
            },
            Command::Delete { key: b"bb" },
            Command::Put {
                key: b"new",
                value: b"n",
                quota: u64::MAX,
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
        restored.restore(&mut &out[..], 9).unwrap();
        assert_eq!(restored.digest().1, kv.digest().1);
        assert_eq!(restored.len(), 2);
        assert_eq!(restored.get(b"new").unwrap(), Bytes::from_static(b"n"));

        let from_empty = KvMachine::plan_merge(&mut &[][..], &commands[2..3]).unwrap();
        let mut out = Vec::new();
        from_empty.write_to(&mut &[][..], &mut out).unwrap();
        assert_eq!(out.len() as u64, from_empty.len());
        let one = KvStore::default();
        one.restore(&mut &out[..], 1).unwrap();
        assert_eq!(one.get(b"new").unwrap(), Bytes::from_static(b"n"));
    }
}

#[cfg(test)]
mod quota {
    use super::*;

    fn apply(m: &mut KvMachine, index: u64, c: Command<'_>) -> KvOutput {
        let bytes = c.encode();
        m.apply(Committed {
            index,
            term: 1,
            bytes: &bytes,
        })
        .unwrap()
    }

    // Intent: a put that would take the data above its quota changes nothing and says so;
    // deletes and puts that do not grow the data always work; a merged snapshot decides each
    // put exactly as apply did (same image, same digest), refused puts included.
    #[test]
    fn puts_above_the_quota_are_refused_alike_by_apply_and_merge() {
        let store = Arc::new(KvStore::default());
        let mut m = KvMachine::new(store.clone());
        let put = |key: &'static [u8], value: &'static [u8]| Command::Put {
            key,
            value,
            quota: 10,
        };
        let commands = [
            put(b"a", b"12345"), // 6 bytes: ok
            put(b"b", b"1234"),  // 11: refused
            put(b"a", b"1"),     // shrinks to 2: ok
            put(b"b", b"1234"),  // 7: ok now
            put(b"c", b"12"),    // 10: ok (at the quota)
            put(b"d", b""),      // 11: refused
            Command::Delete { key: b"c" },
            put(b"b", b"123456"), // b grows to 7 bytes, 9 in all: ok
        ];
        let outputs: Vec<KvOutput> = commands
            .iter()
            .enumerate()
            .map(|(i, c)| apply(&mut m, i as u64 + 1, *c))
            .collect();
        let refused: Vec<usize> = outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| **o != KvOutput::Done)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(refused, vec![1, 5]);
        assert_eq!(store.bytes(), 9);
        assert_eq!(store.get(b"d"), None);

        let encoded: Vec<Bytes> = commands.iter().map(|c| Bytes::from(c.encode())).collect();
        let plan = KvMachine::plan_merge(&mut &[][..], &encoded).unwrap();
        let mut image = Vec::new();
        plan.write_to(&mut &[][..], &mut image).unwrap();
        assert_eq!(image.len() as u64, plan.len());
        let merged = KvStore::default();
        merged.restore(&mut &image[..], 8).unwrap();
        assert_eq!(merged.digest().1, store.digest().1);
        assert_eq!(merged.bytes(), 9);

        // The same from a non-empty previous image: the first three commands' state.
        let first = Arc::new(KvStore::default());
        let mut fm = KvMachine::new(first.clone());
        for (i, c) in commands[..3].iter().enumerate() {
            apply(&mut fm, i as u64 + 1, *c);
        }
        let prev = first.image();
        let plan = KvMachine::plan_merge(&mut &prev[..], &encoded[3..]).unwrap();
        let mut image = Vec::new();
        plan.write_to(&mut &prev[..], &mut image).unwrap();
        assert_eq!(image.len() as u64, plan.len());
        let merged = KvStore::default();
        merged.restore(&mut &image[..], 8).unwrap();
        assert_eq!(merged.digest().1, store.digest().1);
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    // Intent: the KV image stays byte for byte the image of release 0.1, and a whole 0.1
    // image (`["RXKVIMG1"][membership: count u32, (id u64, learner u8, url_len u32, url)*]`
    // `[pair count u64][(key_len u32, key, value_len u32, value)*]`) still opens. The engine's
    // envelope in front of it is now v2 (start records, removed IDs), which the engine owns.
    #[test]
    fn image_bytes_are_those_of_release_0_1() {
        let kv = KvStore::default();
        kv.write_batch(|m| m.put(b"k", b"vv"));
        let members = engine::Membership::initial(&["http://h:1".into()]);
        let mut want = b"RXKVIMG1".to_vec();
        want.extend_from_slice(&[1, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0]);
        want.extend_from_slice(b"http://h:1");
        let kv_image = [
            1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'k', 2, 0, 0, 0, b'v', b'v',
        ];
        want.extend_from_slice(&kv_image);
        assert_eq!(kv.image(), kv_image);
        let image = engine::framing::encode_image(&members, &kv.image());
        assert!(image.ends_with(&kv_image));
        let (m, app) = engine::framing::decode_image(&want).unwrap();
        assert_eq!(m, members);
        assert_eq!(app, kv.image());
    }
}
