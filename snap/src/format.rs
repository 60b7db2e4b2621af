//! The byte layout of one snapshot file: pure encoding and decoding, no I/O.
//!
//! ```text
//!  offset          size  field
//!  0               8     magic  b"RAFTSNAP"
//!  8               4     version (u32 LE) = 1
//!  12              4     metadata_len M (u32 LE), at most MAX_METADATA_BYTES
//!  16              8     data_len D (u64 LE)
//!  24              M     metadata: eraftpb.SnapshotMetadata (protobuf)
//!  24+M            D     data: the state machine's snapshot bytes
//!  24+M+D          4     crc32 (u32 LE, crc32fast) over bytes [0, 24+M+D)
//!  file length = 28 + M + D exactly
//! ```
//!
//! Decoding checks, in this order: the file holds at least a header and a trailer; the magic;
//! `M <= MAX_METADATA_BYTES`; `28 + M + D` equals the file length (so a corrupt length can
//! never make anyone allocate or slice beyond what is on disk); the CRC; the version; the
//! metadata decodes. Every failure is a reason string the caller wraps into
//! [`Error::Corrupt`](crate::Error::Corrupt).

use std::ops::Range;

use protobuf::Message;
use raft_proto::eraftpb::SnapshotMetadata;

/// First eight bytes of every snapshot file.
pub(crate) const MAGIC: [u8; 8] = *b"RAFTSNAP";
/// The only format version this crate writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Magic, version, metadata length, data length.
pub(crate) const HEADER_BYTES: usize = 24;
/// The CRC32 after the data.
pub(crate) const TRAILER_BYTES: usize = 4;
/// Cap on the encoded metadata: a conf state costs at most 10 bytes per member id, so 16 MiB
/// is far above any real cluster while still bounding what a corrupt header can claim.
pub(crate) const MAX_METADATA_BYTES: usize = 16 << 20;

/// Encodes `metadata` and returns the bytes that precede the data (header + metadata) and
/// the trailer (CRC over header, metadata and `data`). The writer MUST write
/// `head`, then `data`, then `trailer`, and nothing else.
///
/// # Errors
/// A reason string when the metadata cannot be encoded or exceeds [`MAX_METADATA_BYTES`].
#[cfg(test)]
pub(crate) fn encode(
    metadata: &SnapshotMetadata,
    data: &[u8],
) -> Result<(Vec<u8>, [u8; 4]), String> {
    let head = encode_head(metadata, data.len() as u64)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(data);
    Ok((head, crc.finalize().to_le_bytes()))
}

/// The bytes before the data: header (with `data_len`) and encoded metadata. The CRC trailer
/// is computed by the writer over these bytes and the data that follows them.
///
/// # Errors
/// A reason string when the metadata cannot be encoded or exceeds [`MAX_METADATA_BYTES`].
pub(crate) fn encode_head(metadata: &SnapshotMetadata, data_len: u64) -> Result<Vec<u8>, String> {
    let metadata = metadata.write_to_bytes().map_err(|e| e.to_string())?;
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(format!(
            "metadata is {} bytes, more than the {MAX_METADATA_BYTES} allowed",
            metadata.len()
        ));
    }
    let mut head = Vec::with_capacity(HEADER_BYTES + metadata.len());
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    head.extend_from_slice(&data_len.to_le_bytes());
    head.extend_from_slice(&metadata);
    debug_assert_eq!(head.len(), HEADER_BYTES + metadata.len());
    Ok(head)
}

/// Checks a header against the real file length; returns (metadata length, data length).
///
/// # Errors
/// A reason string, as [`decode`] gives for the same checks (the CRC is not checked here).
pub(crate) fn check_header(
    header: &[u8; HEADER_BYTES],
    file_len: u64,
) -> Result<(usize, u64), String> {
    if header[0..8] != MAGIC {
        return Err("bad magic".to_string());
    }
    let version = u32::from_le_bytes(array(&header[8..12]));
    let metadata_len = u32::from_le_bytes(array(&header[12..16])) as u64;
    let data_len = u64::from_le_bytes(array(&header[16..24]));
    if metadata_len > MAX_METADATA_BYTES as u64 {
        return Err(format!(
            "metadata length {metadata_len} exceeds {MAX_METADATA_BYTES}"
        ));
    }
    let expected = ((HEADER_BYTES + TRAILER_BYTES) as u64 + metadata_len).checked_add(data_len);
    if expected != Some(file_len) {
        return Err(format!(
            "header says metadata {metadata_len} bytes and data {data_len} bytes, \
             which does not match the file length {file_len}"
        ));
    }
    if version != VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    Ok((metadata_len as usize, data_len))
}

/// Decodes the metadata bytes.
///
/// # Errors
/// A reason string when they are not a `SnapshotMetadata`.
pub(crate) fn decode_metadata(bytes: &[u8]) -> Result<SnapshotMetadata, String> {
    SnapshotMetadata::parse_from_bytes(bytes).map_err(|e| format!("metadata does not decode: {e}"))
}

/// A decoded snapshot file: its metadata and where the data lies in the file's bytes.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The snapshot metadata (index, term, conf state).
    pub(crate) metadata: SnapshotMetadata,
    /// Byte range of the data inside the decoded buffer.
    pub(crate) data: Range<usize>,
}

/// Decodes a whole snapshot file held in `file`.
///
/// # Errors
/// A reason string naming the first check that failed (see the module doc).
pub(crate) fn decode(file: &[u8]) -> Result<Decoded, String> {
    let file_len = file.len();
    if file_len < HEADER_BYTES + TRAILER_BYTES {
        return Err(format!(
            "file is {file_len} bytes, shorter than the {} bytes of header and trailer",
            HEADER_BYTES + TRAILER_BYTES
        ));
    }
    if file[0..8] != MAGIC {
        return Err("bad magic".to_string());
    }
    let version = u32::from_le_bytes(array(&file[8..12]));
    let metadata_len = u32::from_le_bytes(array(&file[12..16])) as u64;
    let data_len = u64::from_le_bytes(array(&file[16..24]));
    if metadata_len > MAX_METADATA_BYTES as u64 {
        return Err(format!(
            "metadata length {metadata_len} exceeds {MAX_METADATA_BYTES}"
        ));
    }
    let expected = (HEADER_BYTES + TRAILER_BYTES) as u64 + metadata_len;
    let expected = expected.checked_add(data_len);
    if expected != Some(file_len as u64) {
        return Err(format!(
            "header says metadata {metadata_len} bytes and data {data_len} bytes, \
             which does not match the file length {file_len}"
        ));
    }
    // The lengths now fit in the file, hence in usize.
    let metadata_end = HEADER_BYTES + metadata_len as usize;
    let crc_at = file_len - TRAILER_BYTES;
    let stored_crc = u32::from_le_bytes(array(&file[crc_at..]));
    let actual_crc = crc32fast::hash(&file[..crc_at]);
    if stored_crc != actual_crc {
        return Err(format!(
            "CRC mismatch: stored {stored_crc:08x}, computed {actual_crc:08x}"
        ));
    }
    if version != VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let metadata = SnapshotMetadata::parse_from_bytes(&file[HEADER_BYTES..metadata_end])
        .map_err(|e| format!("metadata does not decode: {e}"))?;
    Ok(Decoded {
        metadata,
        data: metadata_end..crc_at,
    })
}

/// Copies a slice of known length into an array.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_proto::eraftpb::ConfState;

    fn metadata(index: u64, term: u64) -> SnapshotMetadata {
        let conf_state = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        };
        SnapshotMetadata {
            index,
            term,
            conf_state: Some(conf_state).into(),
            ..Default::default()
        }
    }

    fn file(metadata: &SnapshotMetadata, data: &[u8]) -> Vec<u8> {
        let (mut head, trailer) = encode(metadata, data).expect("encode");
        head.extend_from_slice(data);
        head.extend_from_slice(&trailer);
        head
    }

    #[test]
    fn encode_then_decode_round_trips() {
        // Intent: what encode writes, decode reads back exactly, including empty data.
        for data in [&b""[..], b"x", b"hello snapshot data"] {
            let meta = metadata(42, 7);
            let bytes = file(&meta, data);
            assert_eq!(
                bytes.len(),
                HEADER_BYTES + TRAILER_BYTES + meta.compute_size() as usize + data.len()
            );
            let decoded = decode(&bytes).expect("decode");
            assert_eq!(decoded.metadata, meta);
            assert_eq!(&bytes[decoded.data], data);
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        // Intent: flipping any one bit anywhere in a file makes decode fail (never panic,
        // never return different contents).
        let bytes = file(&metadata(9, 2), b"some data bytes");
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                assert!(
                    decode(&damaged).is_err(),
                    "flip at byte {at} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_and_extension_is_detected() {
        // Intent: a file cut at any length, or with bytes appended, fails to decode.
        let bytes = file(&metadata(9, 2), b"some data bytes");
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncation to {len} went unnoticed"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn absurd_lengths_are_rejected_without_allocating() {
        // Intent: a header claiming huge or overflowing lengths is rejected by the length
        // check against the file size, before anything is sliced or allocated.
        let bytes = file(&metadata(1, 1), b"data");
        for (metadata_len, data_len) in [
            (u32::MAX, 0u64),
            (0, u64::MAX),
            (MAX_METADATA_BYTES as u32, u64::MAX - 10),
            (1, u64::MAX - 28),
        ] {
            let mut damaged = bytes.clone();
            damaged[12..16].copy_from_slice(&metadata_len.to_le_bytes());
            damaged[16..24].copy_from_slice(&data_len.to_le_bytes());
            assert!(decode(&damaged).is_err());
        }
    }

    #[test]
    fn unknown_version_with_valid_crc_is_rejected() {
        // Intent: a file from another format version is not misread even if its CRC holds.
        let mut bytes = file(&metadata(1, 1), b"data");
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc_at = bytes.len() - TRAILER_BYTES;
        let crc = crc32fast::hash(&bytes[..crc_at]);
        bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
        let err = decode(&bytes).expect_err("version 2 must not decode");
        assert!(err.contains("version"), "{err}");
    }
}
