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
