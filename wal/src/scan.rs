//! Pure scanning of one segment's bytes (no I/O): finds the complete batches, hands each to a
//! [`BatchSink`], and classifies the bytes after the last complete batch.
//!
//! Classification of the tail (steps 4 to 6 of the recovery procedure in the crate docs):
//! - all zero: clean end;
//! - anything else in a closed segment, or before the segment's head batch is complete: damage;
//! - in the last segment: damage if a valid commit record of *this* segment (same seq and seed)
//!   for a batch starting after the last complete batch lies anywhere after the first bad
//!   record, because then a complete (maybe acknowledged) batch would be lost; otherwise torn.

use crate::record::{self, DecodeError, Decoded, Record, RecordType, ALIGN_BYTES};

/// One segment to scan.
pub(crate) struct SegmentInput<'a> {
    /// The whole file.
    pub bytes: &'a [u8],
    /// Sequence number from the file name.
    pub seq: u64,
    /// First index from the file name.
    pub first_index: u64,
    /// The chain value this segment must continue (the previous segment's last crc), or `None`
    /// for the first segment read, whose seed is taken as given.
    pub chain: Option<u32>,
    /// Only the last segment may end in a torn tail.
    pub last: bool,
    /// Records longer than this are invalid.
    pub max_record_bytes: u64,
}

/// A decoded record and where it starts in its segment.
#[derive(Debug)]
pub(crate) struct Located<'a> {
    pub offset: u64,
    pub record: Record<'a>,
}

/// Where and why bytes are not what they should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub offset: u64,
    pub index: Option<u64>,
    pub reason: String,
}

/// Receives complete batches in log order.
pub(crate) trait BatchSink {
    /// Applies one complete batch (its commit record excluded).
    ///
    /// # Errors
    /// A [`Damage`] when the batch is valid bytes but breaks the log's rules (entries that do
    /// not connect, metadata that changes); scanning stops and the log refuses to open.
    fn batch(&mut self, records: &[Located<'_>]) -> Result<(), Damage>;
}

/// What a scan found after the last complete batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Only zeros (or nothing) follow.
    Clean,
    /// The last segment ends in a torn write starting at `Damage::offset`; truncating at
    /// [`SegmentEnd::committed`] loses no complete batch.
    Torn(Damage),
}

/// Result of scanning one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentEnd {
    /// Bytes up to the end of the last complete batch.
    pub committed: u64,
    /// crc of the last record of the last complete batch.
    pub chain: u32,
    /// The segment's seed.
    pub seed: u32,
    pub tail: Tail,
}

/// Scans one segment, feeding complete batches to `sink`.
///
/// # Errors
/// A [`Damage`] when the segment cannot be trusted up to its end (see the module docs) or the
/// sink refuses a batch.
pub(crate) fn scan_segment(
    input: &SegmentInput<'_>,
    sink: &mut impl BatchSink,
) -> Result<SegmentEnd, Damage> {
    let mut scan = Scan {
        input,
        pos: 0,
        chain: input.chain,
        seed: None,
        pending: Vec::new(),
        committed: 0,
        committed_chain: 0,
        last_index: None,
    };
    let stop = scan.run(sink)?;
    scan.classify_tail(stop)
}

struct Scan<'i, 'a> {
    input: &'i SegmentInput<'a>,
    pos: usize,
    chain: Option<u32>,
    seed: Option<u32>,
    pending: Vec<Located<'a>>,
    committed: usize,
    committed_chain: u32,
    /// Index of the last entry read intact, for error reports.
    last_index: Option<u64>,
}

impl<'a> Scan<'_, 'a> {
    /// Reads records until the first one that is not valid here; returns why it stopped.
    fn run(&mut self, sink: &mut impl BatchSink) -> Result<Damage, Damage> {
        let bytes: &'a [u8] = self.input.bytes;
        loop {
            if self.pos >= bytes.len() {
                return Ok(self.damage("end of file"));
            }
            let decoded = match record::decode(&bytes[self.pos..], self.input.max_record_bytes) {
                Ok(d) => d,
                Err(DecodeError::UnknownType(0)) if self.pending.is_empty() => {
                    return Ok(self.damage("end of records"));
                }
                Err(e) => return Ok(self.damage(&e.to_string())),
            };
            if let Err(reason) = self.check_order(&decoded) {
                return Ok(self.damage(reason));
            }
            let offset = self.pos as u64;
            self.pos += decoded.bytes;
            self.chain = Some(decoded.crc);
            match decoded.record {
                Record::BatchCommit(_) => {
                    sink.batch(&self.pending)?;
                    self.pending.clear();
                    self.committed = self.pos;
                    self.committed_chain = decoded.crc;
                }
                record => {
                    if let Record::Entry(e) = &record {
                        self.last_index = Some(e.index);
                    }
                    self.pending.push(Located { offset, record });
                }
            }
        }
    }

    /// Checks that `d` may follow what was read so far.
    fn check_order(&mut self, d: &Decoded<'_>) -> Result<(), &'static str> {
        if self.pos == 0 {
            let Record::CrcSeed(seed) = d.record else {
                return Err("segment does not start with a CRC seed record");
            };
            if seed.seq != self.input.seq || seed.first_index != self.input.first_index {
                return Err("CRC seed names another segment than the file name");
            }
            if seed.seed != d.prev_crc {
                return Err("CRC seed record does not chain from its own seed");
            }
            if self.chain.is_some_and(|chain| chain != seed.seed) {
                return Err("CRC chain broken: seed does not continue the previous segment");
            }
            self.seed = Some(seed.seed);
            return Ok(());
        }
        if Some(d.prev_crc) != self.chain {
            return Err("CRC chain broken: record does not follow the previous record");
        }
        let head_second = self.committed == 0 && self.pending.len() == 1;
        match d.record {
            Record::Metadata(_) if head_second => Ok(()),
            _ if head_second => Err("segment head lacks its metadata record"),
            Record::CrcSeed(_) | Record::Metadata(_) => Err("seed or metadata record out of place"),
            Record::BatchCommit(c) => {
                let start = self.pending.first().map(|l| l.offset);
                let ok = Some(c.batch_start) == start
                    && c.seq == self.input.seq
                    && Some(c.seed) == self.seed
                    && c.records as usize == self.pending.len();
                ok.then_some(())
                    .ok_or("batch commit does not match its batch")
            }
            _ => Ok(()),
        }
    }

    fn damage(&self, reason: &str) -> Damage {
        Damage {
            offset: self.pos as u64,
            index: self.last_index,
            reason: reason.to_string(),
        }
    }

    /// Steps 4 to 6 of the recovery procedure: what do the bytes after the last batch mean?
    fn classify_tail(&self, stop: Damage) -> Result<SegmentEnd, Damage> {
        let bytes = self.input.bytes;
        let with_reason = |why: &str| Damage {
            reason: format!("{why}: {}", stop.reason),
            ..stop.clone()
        };
        let Some(seed) = self.seed.filter(|_| self.committed > 0) else {
            return Err(with_reason("segment head batch is damaged"));
        };
        let tail = if is_zero(&bytes[self.committed..]) {
            Tail::Clean
        } else if !self.input.last {
            return Err(with_reason("damaged record in a closed segment"));
        } else if let Some(at) = self.later_commit(stop.offset as usize, seed) {
            return Err(with_reason(&format!(
                "damaged record before a complete batch (commit record at offset {at})"
            )));
        } else {
            Tail::Torn(stop)
        };
        Ok(SegmentEnd {
            committed: self.committed as u64,
            chain: self.committed_chain,
            seed,
            tail,
        })
    }

    /// Offset of a valid commit record of this segment, at or after `from`, whose batch starts
    /// after the last complete batch.
    fn later_commit(&self, from: usize, seed: u32) -> Option<usize> {
        let bytes = self.input.bytes;
        (from..bytes.len())
            .step_by(ALIGN_BYTES)
            .filter(|&q| record::may_be(&bytes[q..], RecordType::BatchCommit))
            .find(|&q| {
                matches!(
                    record::decode(&bytes[q..], self.input.max_record_bytes),
                    Ok(Decoded { record: Record::BatchCommit(c), .. })
                        if c.seq == self.input.seq
                            && c.seed == seed
                            && c.batch_start > self.committed as u64
                )
            })
    }
}

/// True when every byte is zero.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    bytes.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Encoder, SegmentSeed};
    use crate::Metadata;
    use raft_proto::eraftpb::{Entry, HardState};

    const MAX: u64 = 1 << 16;
    const SEQ: u64 = 4;
    const SEED: u32 = 0xfeed;

    /// Counts applied batches and entries.
    #[derive(Default)]
    struct Count {
        batches: usize,
        entries: usize,
    }

    impl BatchSink for Count {
        fn batch(&mut self, records: &[Located<'_>]) -> Result<(), Damage> {
            self.batches += 1;
            self.entries += records
                .iter()
                .filter(|l| matches!(l.record, Record::Entry(_)))
                .count();
            Ok(())
        }
    }

    /// A segment: head batch, then `batches` batches of two entries, then `zeros` zero bytes.
    /// Returns the bytes and the offset where each batch (head batch first) ends.
    fn segment(batches: u64, zeros: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf, 0, SEED, MAX);
        enc.seed(&SegmentSeed {
            seq: SEQ,
            first_index: 1,
            seed: SEED,
        });
        enc.metadata(&Metadata {
            node_id: 1,
            cluster_id: 2,
        });
        enc.hard_state(&HardState::default());
        enc.commit(SEQ, SEED);
        for b in 0..batches {
            for i in 0..2 {
                let entry = Entry {
                    index: 1 + 2 * b + i,
                    data: vec![7; 20].into(),
                    ..Entry::default()
                };
                enc.entry(&entry).unwrap();
            }
            enc.commit(SEQ, SEED);
        }
        // Batch ends, found by decoding (the encoder does not expose offsets).
        let mut offsets = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let d = record::decode(&buf[pos..], MAX).unwrap();
            pos += d.bytes;
            if matches!(d.record, Record::BatchCommit(_)) {
                offsets.push(pos);
            }
        }
        assert_eq!(offsets.len() as u64, batches + 1);
        buf.resize(buf.len() + zeros, 0);
        (buf, offsets)
    }

    fn scan(bytes: &[u8], last: bool) -> (Result<SegmentEnd, Damage>, Count) {
        let input = SegmentInput {
            bytes,
            seq: SEQ,
            first_index: 1,
            chain: None,
            last,
            max_record_bytes: MAX,
        };
        let mut count = Count::default();
        (scan_segment(&input, &mut count), count)
    }

    // Intent: complete batches followed by zeros end cleanly, in closed and last segments.
    #[test]
    fn clean_end() {
        let (bytes, ends) = segment(3, 100);
        for last in [false, true] {
            let (end, count) = scan(&bytes, last);
            let end = end.unwrap();
            assert_eq!(end.tail, Tail::Clean);
            assert_eq!(end.committed as usize, ends[3]);
            assert_eq!((count.batches, count.entries), (4, 6));
        }
    }

    // Intent: a partial last batch is torn in the last segment and damage in a closed one.
    #[test]
    fn partial_batch() {
        let (bytes, ends) = segment(3, 0);
        let cut = &bytes[..ends[3] - 8];
        let (end, count) = scan(cut, true);
        let end = end.unwrap();
        assert_eq!(end.committed as usize, ends[2]);
        assert!(matches!(end.tail, Tail::Torn(_)));
        assert_eq!(count.batches, 3);
        assert!(scan(cut, false).0.is_err());
    }

    // Intent: damage followed by a complete batch is corruption even in the last segment,
    // while damage inside the last batch is a torn tail.
    #[test]
    fn damage_before_a_complete_batch() {
        let (mut bytes, ends) = segment(3, 64);
        let in_second = ends[1] + 20;
        bytes[in_second] ^= 1;
        let err = scan(&bytes, true).0.unwrap_err();
        assert_eq!(err.offset as usize, ends[1]);
        bytes[in_second] ^= 1;
        bytes[ends[2] + 20] ^= 1;
        let end = scan(&bytes, true).0.unwrap();
        assert!(matches!(end.tail, Tail::Torn(_)));
        assert_eq!(end.committed as usize, ends[2]);
    }

    // Intent: a segment must continue the chain it is given, and its head must be intact.
    #[test]
    fn chain_and_head() {
        let (bytes, _) = segment(1, 0);
        let input = SegmentInput {
            bytes: &bytes,
            seq: SEQ,
            first_index: 1,
            chain: Some(SEED ^ 1),
            last: true,
            max_record_bytes: MAX,
        };
        let err = scan_segment(&input, &mut Count::default()).unwrap_err();
        assert_eq!(err.offset, 0);
        let mut damaged = bytes.clone();
        damaged[20] ^= 0x40;
        assert!(scan(&damaged, true).0.is_err());
    }
}
