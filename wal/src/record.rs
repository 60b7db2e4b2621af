//! Pure encoding and decoding of records: bytes in, bytes out, no I/O.
//!
//! ```text
//!  0        4          8          12     13       16               16+len    16+pad8(len)
//!  +--------+----------+----------+------+--------+----------------+---------+
//!  | crc    | prev_crc | len      | type | 0 0 0  | payload        | 0 .. 0  |
//!  | u32 LE | u32 LE   | u32 LE   | u8   |        | len bytes      | to 8    |
//!  +--------+----------+----------+------+--------+----------------+---------+
//!  crc = CRC-32 (crc32fast) of bytes 4 .. 16+pad8(len) of this record
//! ```
//!
//! `prev_crc` is the `crc` of the record before it (for a segment's first record, the seed),
//! so every record can be checked on its own *and* the chain proves that nothing was removed,
//! reordered or left over from an older write. Payloads (little-endian) by `type`:
//!
//! | type | kind | payload |
//! |---|---|---|
//! | 1 | CRC seed | seq u64, first_index u64, seed u32, zero u32 |
//! | 2 | metadata | node_id u64, cluster_id u64 |
//! | 3 | entry | index u64, term u64, entry_type u8, flags u8 (bit 0 sync_log), zero u16, data_len u32, data, context |
//! | 4 | hard state | term u64, vote u64, commit u64 |
//! | 5 | snapshot mark | index u64, term u64, conf_state (protobuf) |
//! | 6 | batch commit | batch_start u64, seq u64, seed u32, records u32 |
//! | 7 | log reset | index u64, term u64 |
//!
//! Invariants: every record starts at a multiple of 8; padding is zero; `len` never exceeds the
//! configured maximum, checked before anything is allocated or hashed.

use bytes::Bytes;
use protobuf::Message;
use raft_proto::eraftpb::{ConfState, Entry, EntryType, HardState};

use crate::{Error, Metadata, SnapshotMark};

/// Bytes in a record header.
pub(crate) const HEADER_BYTES: usize = 16;
/// Every record starts at a multiple of this.
pub(crate) const ALIGN_BYTES: usize = 8;
/// Fixed part of an entry payload before `data`.
const ENTRY_FIXED_BYTES: usize = 24;
/// Payload bytes of the fixed-size records.
const SEED_BYTES: usize = 24;
const METADATA_BYTES: usize = 16;
const HARD_STATE_BYTES: usize = 24;
const MARK_FIXED_BYTES: usize = 16;
const COMMIT_BYTES: usize = 24;
const RESET_BYTES: usize = 16;

/// `len` rounded up to [`ALIGN_BYTES`].
pub(crate) fn padded(len: usize) -> usize {
    len.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// Total bytes of a record with a payload of `payload_len` bytes.
pub(crate) fn record_bytes(payload_len: usize) -> usize {
    HEADER_BYTES + padded(payload_len)
}

/// Bytes of a batch commit record.
pub(crate) const COMMIT_RECORD_BYTES: usize = HEADER_BYTES + COMMIT_BYTES;
/// Bytes of a hard state record.
pub(crate) const HARD_STATE_RECORD_BYTES: usize = HEADER_BYTES + HARD_STATE_BYTES;
/// Bytes of a log reset record.
pub(crate) const LOG_RESET_RECORD_BYTES: usize = HEADER_BYTES + RESET_BYTES;

/// Payload bytes of the record holding `entry`.
pub(crate) fn entry_payload_len(entry: &Entry) -> usize {
    ENTRY_FIXED_BYTES + entry.data.len() + entry.context.len()
}

/// The record type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RecordType {
    CrcSeed = 1,
    Metadata = 2,
    Entry = 3,
    HardState = 4,
    SnapshotMark = 5,
    BatchCommit = 6,
    LogReset = 7,
}

impl RecordType {
    fn from_u8(byte: u8) -> Option<RecordType> {
        Some(match byte {
            1 => RecordType::CrcSeed,
            2 => RecordType::Metadata,
            3 => RecordType::Entry,
            4 => RecordType::HardState,
            5 => RecordType::SnapshotMark,
            6 => RecordType::BatchCommit,
            7 => RecordType::LogReset,
            _ => return None,
        })
    }
}

/// First record of every segment: which segment this is and where its chain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSeed {
    pub seq: u64,
    pub first_index: u64,
    pub seed: u32,
}

/// Last record of every batch: the batch is complete only when this record is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchCommit {
    /// Offset in the segment of the batch's first record.
    pub batch_start: u64,
    pub seq: u64,
    /// The segment's seed: ties the mark to this segment, not a stale copy elsewhere.
    pub seed: u32,
    /// Records in the batch before this one.
    pub records: u32,
}

/// A raft entry borrowed from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryRef<'a> {
    pub index: u64,
    pub term: u64,
    pub entry_type: EntryType,
    pub sync_log: bool,
    pub data: &'a [u8],
    pub context: &'a [u8],
}

impl EntryRef<'_> {
    /// An owned raft entry (copies data and context into fresh buffers).
    #[cfg(test)]
    pub(crate) fn to_entry(self) -> Entry {
        self.to_entry_with(Bytes::copy_from_slice)
    }

    /// An owned raft entry whose data and context are made by `copy`.
    pub(crate) fn to_entry_with(self, mut copy: impl FnMut(&[u8]) -> Bytes) -> Entry {
        let context = if self.context.is_empty() {
            Bytes::new()
        } else {
            copy(self.context)
        };
        Entry {
            entry_type: self.entry_type,
            term: self.term,
            index: self.index,
            data: copy(self.data),
            context,
            sync_log: self.sync_log,
            ..Entry::default()
        }
    }
}

/// One decoded record payload.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record<'a> {
    CrcSeed(SegmentSeed),
    Metadata(Metadata),
    Entry(EntryRef<'a>),
    HardState(HardState),
    /// Boxed: marks are rare and large; entries are many and small.
    SnapshotMark(Box<SnapshotMark>),
    BatchCommit(BatchCommit),
    /// A snapshot received from the leader replaced the whole log: raft's log is now the
    /// snapshot's last entry, at this (index, term), and nothing after it.
    LogReset {
        index: u64,
        term: u64,
    },
}

/// A record read from bytes, with its framing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded<'a> {
    pub record: Record<'a>,
    pub crc: u32,
    pub prev_crc: u32,
    /// Bytes the record occupies, padding included.
    pub bytes: usize,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("record truncated: needs {need} bytes, {have} left")]
    Truncated { need: usize, have: usize },
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("record length {len} exceeds maximum {max}")]
    TooLarge { len: u64, max: u64 },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("bad {kind:?} payload: {what}")]
    BadPayload {
        kind: RecordType,
        what: &'static str,
    },
}

/// Decodes the record at the start of `buf`.
///
/// # Errors
/// A [`DecodeError`] when the header is invalid, the record runs past `buf`, its length exceeds
/// `max_record_bytes`, the CRC does not match or the payload is malformed. Never panics.
pub(crate) fn decode(buf: &[u8], max_record_bytes: u64) -> Result<Decoded<'_>, DecodeError> {
    if buf.len() < HEADER_BYTES {
        return Err(DecodeError::Truncated {
            need: HEADER_BYTES,
            have: buf.len(),
        });
    }
    let crc = u32_at(buf, 0);
    let prev_crc = u32_at(buf, 4);
    let len = u32_at(buf, 8);
    let kind = RecordType::from_u8(buf[12]).ok_or(DecodeError::UnknownType(buf[12]))?;
    if buf[13..16] != [0, 0, 0] {
        return Err(DecodeError::ReservedNotZero);
    }
    if u64::from(len) > max_record_bytes {
        return Err(DecodeError::TooLarge {
            len: u64::from(len),
            max: max_record_bytes,
        });
    }
    let len = len as usize;
    let total = record_bytes(len);
    if buf.len() < total {
        return Err(DecodeError::Truncated {
            need: total,
            have: buf.len(),
        });
    }
    let computed = crc32fast::hash(&buf[4..total]);
    if computed != crc {
        return Err(DecodeError::CrcMismatch {
            stored: crc,
            computed,
        });
    }
    let bad = |what| DecodeError::BadPayload { kind, what };
    if buf[HEADER_BYTES + len..total].iter().any(|&b| b != 0) {
        return Err(bad("padding is not zero"));
    }
    let record = decode_payload(kind, &buf[HEADER_BYTES..HEADER_BYTES + len])
        .ok_or_else(|| bad("malformed payload"))?;
    Ok(Decoded {
        record,
        crc,
        prev_crc,
        bytes: total,
    })
}

/// Quick pre-check used when hunting for records in garbage: could a valid record of `kind`
/// start at the beginning of `buf`? Cheaper than [`decode`]; `decode` still decides.
pub(crate) fn may_be(buf: &[u8], kind: RecordType) -> bool {
    buf.len() >= HEADER_BYTES && buf[12] == kind as u8 && buf[13..16] == [0, 0, 0]
}

fn decode_payload(kind: RecordType, p: &[u8]) -> Option<Record<'_>> {
    let fixed = |n: usize| (p.len() == n).then_some(());
    Some(match kind {
        RecordType::CrcSeed => {
            fixed(SEED_BYTES)?;
            (u32_at(p, 20) == 0).then_some(())?;
            Record::CrcSeed(SegmentSeed {
                seq: u64_at(p, 0),
                first_index: u64_at(p, 8),
                seed: u32_at(p, 16),
            })
        }
        RecordType::Metadata => {
            fixed(METADATA_BYTES)?;
            Record::Metadata(Metadata {
                node_id: u64_at(p, 0),
                cluster_id: u64_at(p, 8),
            })
        }
        RecordType::Entry => Record::Entry(decode_entry(p)?),
        RecordType::HardState => {
            fixed(HARD_STATE_BYTES)?;
            Record::HardState(HardState {
                term: u64_at(p, 0),
                vote: u64_at(p, 8),
                commit: u64_at(p, 16),
                ..HardState::default()
            })
        }
        RecordType::SnapshotMark => {
            if p.len() < MARK_FIXED_BYTES {
                return None;
            }
            let conf_state = ConfState::parse_from_bytes(&p[MARK_FIXED_BYTES..]).ok()?;
            Record::SnapshotMark(Box::new(SnapshotMark {
                index: u64_at(p, 0),
                term: u64_at(p, 8),
                conf_state,
            }))
        }
        RecordType::LogReset => {
            fixed(RESET_BYTES)?;
            Record::LogReset {
                index: u64_at(p, 0),
                term: u64_at(p, 8),
            }
        }
        RecordType::BatchCommit => {
            fixed(COMMIT_BYTES)?;
            Record::BatchCommit(BatchCommit {
                batch_start: u64_at(p, 0),
                seq: u64_at(p, 8),
                seed: u32_at(p, 16),
                records: u32_at(p, 20),
            })
        }
    })
}

fn decode_entry(p: &[u8]) -> Option<EntryRef<'_>> {
    if p.len() < ENTRY_FIXED_BYTES {
        return None;
    }
    let entry_type = match p[16] {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return None,
    };
    let flags = p[17];
    if flags & !1 != 0 || p[18..20] != [0, 0] {
        return None;
    }
    let data_len = u32_at(p, 20) as usize;
    let rest = &p[ENTRY_FIXED_BYTES..];
    if data_len > rest.len() {
        return None;
    }
    let (data, context) = rest.split_at(data_len);
    Some(EntryRef {
        index: u64_at(p, 0),
        term: u64_at(p, 8),
        entry_type,
        sync_log: flags & 1 == 1,
        data,
        context,
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Appends records to a buffer that will be written at file offset `base_offset`.
///
/// Keeps the CRC chain and the batch bookkeeping; [`Encoder::commit`] closes a batch.
/// A failed call leaves the buffer with a partial batch: the caller MUST discard the buffer
/// (nothing was written to disk, so the log is unchanged).
pub(crate) struct Encoder<'b> {
    buf: &'b mut Vec<u8>,
    base_offset: u64,
    chain: u32,
    batch_start: u64,
    batch_records: u32,
    max_record_bytes: u64,
}

impl<'b> Encoder<'b> {
    /// Starts encoding after the record whose crc is `chain`; clears `buf`.
    pub(crate) fn new(
        buf: &'b mut Vec<u8>,
        base_offset: u64,
        chain: u32,
        max_record_bytes: u64,
    ) -> Encoder<'b> {
        buf.clear();
        Encoder {
            buf,
            base_offset,
            chain,
            batch_start: base_offset,
            batch_records: 0,
            max_record_bytes,
        }
    }

    /// The crc of the last record encoded (the chain value the next record continues).
    pub(crate) fn chain(&self) -> u32 {
        self.chain
    }

    /// A segment's first record. The encoder's chain MUST equal `seed.seed`.
    pub(crate) fn seed(&mut self, seed: &SegmentSeed) {
        debug_assert_eq!(self.chain, seed.seed, "seed must continue the chain");
        self.fixed(RecordType::CrcSeed, SEED_BYTES, |b| {
            put_u64(b, seed.seq);
            put_u64(b, seed.first_index);
            put_u32(b, seed.seed);
            put_u32(b, 0);
        });
    }

    /// A metadata record.
    pub(crate) fn metadata(&mut self, metadata: &Metadata) {
        self.fixed(RecordType::Metadata, METADATA_BYTES, |b| {
            put_u64(b, metadata.node_id);
            put_u64(b, metadata.cluster_id);
        });
    }

    /// A log reset record: the log is replaced by a snapshot at (`index`, `term`).
    pub(crate) fn log_reset(&mut self, index: u64, term: u64) {
        self.fixed(RecordType::LogReset, RESET_BYTES, |b| {
            put_u64(b, index);
            put_u64(b, term);
        });
    }

    /// A hard state record.
    pub(crate) fn hard_state(&mut self, hs: &HardState) {
        self.fixed(RecordType::HardState, HARD_STATE_BYTES, |b| {
            put_u64(b, hs.term);
            put_u64(b, hs.vote);
            put_u64(b, hs.commit);
        });
    }

    /// An entry record.
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`] when data and context exceed the maximum record size.
    pub(crate) fn entry(&mut self, entry: &Entry) -> Result<(), Error> {
        let len = entry_payload_len(entry);
        self.check_len(len)?;
        self.record(RecordType::Entry, len, |b| {
            put_u64(b, entry.index);
            put_u64(b, entry.term);
            b.push(entry.entry_type as u8);
            b.push(u8::from(entry.sync_log));
            b.extend_from_slice(&[0, 0]);
            put_u32(b, entry.data.len() as u32);
            b.extend_from_slice(&entry.data);
            b.extend_from_slice(&entry.context);
        });
        Ok(())
    }

    /// A snapshot mark whose conf state is already protobuf-encoded in `conf_state`.
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`] when the conf state exceeds the maximum record size.
    pub(crate) fn snapshot_mark(
        &mut self,
        mark: &SnapshotMark,
        conf_state: &[u8],
    ) -> Result<(), Error> {
        let len = MARK_FIXED_BYTES + conf_state.len();
        self.check_len(len)?;
        self.record(RecordType::SnapshotMark, len, |b| {
            put_u64(b, mark.index);
            put_u64(b, mark.term);
            b.extend_from_slice(conf_state);
        });
        Ok(())
    }

    /// Closes the current batch of segment (`seq`, `seed`) with a commit record.
    pub(crate) fn commit(&mut self, seq: u64, seed: u32) {
        let commit = BatchCommit {
            batch_start: self.batch_start,
            seq,
            seed,
            records: self.batch_records,
        };
        self.fixed(RecordType::BatchCommit, COMMIT_BYTES, |b| {
            put_u64(b, commit.batch_start);
            put_u64(b, commit.seq);
            put_u32(b, commit.seed);
            put_u32(b, commit.records);
        });
        self.batch_start = self.base_offset + self.buf.len() as u64;
        self.batch_records = 0;
    }

    fn check_len(&self, len: usize) -> Result<(), Error> {
        if len as u64 > self.max_record_bytes {
            return Err(Error::RecordTooLarge {
                size: len as u64,
                max: self.max_record_bytes,
            });
        }
        Ok(())
    }

    /// Fixed-size records are tiny; the options guarantee they fit the maximum.
    fn fixed(&mut self, kind: RecordType, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        self.record(kind, len, write);
    }

    fn record(&mut self, kind: RecordType, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        self.buf.reserve(record_bytes(len));
        put_u32(self.buf, 0);
        put_u32(self.buf, self.chain);
        put_u32(self.buf, len as u32);
        self.buf.extend_from_slice(&[kind as u8, 0, 0, 0]);
        write(self.buf);
        assert_eq!(self.buf.len(), start + HEADER_BYTES + len, "payload length");
        self.buf.resize(start + record_bytes(len), 0);
        let crc = crc32fast::hash(&self.buf[start + 4..]);
        self.buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
        self.chain = crc;
        self.batch_records += 1;
    }
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// Protobuf bytes of a conf state for a snapshot mark.
///
/// # Errors
/// [`Error::InvalidInput`] if protobuf refuses to encode it.
pub(crate) fn encode_conf_state(conf_state: &ConfState) -> Result<Vec<u8>, Error> {
    conf_state
        .write_to_bytes()
        .map_err(|e| Error::InvalidInput {
            reason: format!("conf state does not encode: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u64 = 1 << 20;

    fn entry(index: u64, term: u64, ty: u8, sync_log: bool, data: &[u8], ctx: &[u8]) -> Entry {
        let entry_type = match ty % 3 {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            _ => EntryType::EntryConfChangeV2,
        };
        Entry {
            index,
            term,
            entry_type,
            sync_log,
            data: Bytes::copy_from_slice(data),
            context: Bytes::copy_from_slice(ctx),
            ..Entry::default()
        }
    }

    /// Decodes every record of `buf` in order, checking alignment and the chain.
    fn decode_all(buf: &[u8], mut chain: u32) -> Vec<Record<'_>> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            assert_eq!(pos % ALIGN_BYTES, 0);
            let d = decode(&buf[pos..], MAX).expect("valid record");
            assert_eq!(d.prev_crc, chain, "chain");
            chain = d.crc;
            out.push(d.record);
            pos += d.bytes;
        }
        out
    }

    proptest! {
        // Intent: any entry survives encode then decode unchanged, aligned and chained.
        #[test]
        fn entry_round_trip(
            index in any::<u64>(), term in any::<u64>(), ty in 0u8..3, sync_log in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            ctx in proptest::collection::vec(any::<u8>(), 0..40),
            chain in any::<u32>(),
        ) {
            let e = entry(index, term, ty, sync_log, &data, &ctx);
            let mut buf = Vec::new();
            let mut enc = Encoder::new(&mut buf, 0, chain, MAX);
            enc.entry(&e).unwrap();
            let records = decode_all(&buf, chain);
            prop_assert_eq!(records.len(), 1);
            match &records[0] {
                Record::Entry(r) => prop_assert_eq!(r.to_entry(), e),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        // Intent: every record kind round-trips inside one batch, and the commit names the batch.
        #[test]
        fn batch_round_trip(
            node_id in any::<u64>(), cluster_id in any::<u64>(),
            term in any::<u64>(), vote in any::<u64>(), commit in any::<u64>(),
            voters in proptest::collection::vec(any::<u64>(), 0..5),
            learners in proptest::collection::vec(any::<u64>(), 0..3),
            mark_index in any::<u64>(), mark_term in any::<u64>(),
            seq in any::<u64>(), seed in any::<u32>(), base in 0u64..1000,
        ) {
            let base = base * 8;
            let metadata = Metadata { node_id, cluster_id };
            let hs = HardState { term, vote, commit, ..HardState::default() };
            let cs = ConfState { voters, learners, ..ConfState::default() };
            let mark = SnapshotMark { index: mark_index, term: mark_term, conf_state: cs.clone() };
            let mut buf = Vec::new();
            let mut enc = Encoder::new(&mut buf, base, seed, MAX);
            let seg = SegmentSeed { seq, first_index: mark_index, seed };
            enc.seed(&seg);
            enc.metadata(&metadata);
            enc.hard_state(&hs);
            enc.snapshot_mark(&mark, &encode_conf_state(&cs).unwrap()).unwrap();
            enc.commit(seq, seed);
            let records = decode_all(&buf, seed);
            prop_assert_eq!(records, vec![
                Record::CrcSeed(seg),
                Record::Metadata(metadata),
                Record::HardState(hs),
                Record::SnapshotMark(Box::new(mark)),
                Record::BatchCommit(BatchCommit { batch_start: base, seq, seed, records: 4 }),
            ]);
        }

        // Intent: decoding arbitrary bytes never panics and never over-reads.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(d) = decode(&bytes, MAX) {
                prop_assert!(d.bytes <= bytes.len());
            }
        }

        // Intent: any single changed byte of an encoded record is detected.
        #[test]
        fn any_byte_change_is_detected(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            at in any::<prop::sample::Index>(), xor in 1u8..=255,
        ) {
            let mut buf = Vec::new();
            Encoder::new(&mut buf, 0, 7, MAX).entry(&entry(3, 2, 0, false, &data, b"")).unwrap();
            let i = at.index(buf.len());
            buf[i] ^= xor;
            prop_assert!(decode(&buf, MAX).is_err());
        }
    }

    // Intent: a record longer than the maximum is refused on write and on read.
    #[test]
    fn max_record_size_enforced_both_ways() {
        let e = entry(1, 1, 0, false, &[7u8; 100], b"");
        let mut buf = Vec::new();
        let err = Encoder::new(&mut buf, 0, 0, 64).entry(&e).unwrap_err();
        assert!(matches!(err, Error::RecordTooLarge { size: 124, max: 64 }));
        Encoder::new(&mut buf, 0, 0, MAX).entry(&e).unwrap();
        assert_eq!(
            decode(&buf, 64),
            Err(DecodeError::TooLarge { len: 124, max: 64 })
        );
    }

    // Intent: a huge length in a short buffer is reported as truncation, not allocated.
    #[test]
    fn corrupt_length_does_not_allocate() {
        let mut buf = Vec::new();
        Encoder::new(&mut buf, 0, 0, MAX).metadata(&Metadata {
            node_id: 1,
            cluster_id: 2,
        });
        buf[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&buf, u64::from(u32::MAX)),
            Err(DecodeError::Truncated { .. })
        ));
    }

    // Intent: an all-zero header is not a record.
    #[test]
    fn zeros_are_not_a_record() {
        assert_eq!(decode(&[0u8; 64], MAX), Err(DecodeError::UnknownType(0)));
    }
}
