//! The bytes the engine owns: the framing of every normal entry, the context of conf change
//! entries, and the envelope of every snapshot image. Applications never see these bytes, and
//! the engine never looks inside the application's command or image bytes. One decode path
//! for each format: the apply thread and the snapshot thread both use [`decode_entry`].
//!
//! ```text
//! normal entry data, format 0x10:  [0x10][request_id u64 LE][application command ...]
//! normal entry data, release 0.1:  [kind 1|2][request_id u64 LE][rest ...]
//!                                  (the KV's own layout; the command handed to the
//!                                  application is [kind][rest ...])
//! empty entry data:                raft's no-op (a new leader's first entry)
//! conf change context:             [request_id u64 LE][peer URL, UTF-8 ...]
//! start record (engine-owned):     [0x20][request_id u64 LE][node id u64][incarnation u64]
//!                                  [nonce u64][client URL, UTF-8 ...]
//! NOSPACE alarm (engine-owned):    [0x21][request_id u64 LE][node id u64][raised u8]
//! peer URL update (engine-owned):  [0x22][request_id u64 LE][node id u64][peer URL ...]
//! digest check (engine-owned):     [0x23][0 u64]: every replica takes its state digest here
//! digest record (engine-owned):    [0x24][0 u64][node id u64][check index u64][digest u64]
//! divergence report (engine-owned): [0x25][0 u64][node id u64][commit index u64]: that
//!                                  member's committed log contradicts its leader's
//! snapshot image, envelope v2:     ["RXENVLP" 0x02][membership v2][application image ...]
//! snapshot image, envelope v1:     ["RXENVLP" 0x01][membership v1][application image ...]
//! snapshot image, release 0.1:     ["RXKVIMG1"][membership v1][application image ...]
//! membership v1:                   [count u32][(id u64, learner u8, url_len u32, url)*]
//! membership v2:                   membership v1 (learner 2: promoted when ready), then
//!                                  [count u32][(id u64, incarnation u64, nonce u64,
//!                                  url_len u32, client url)*][count u32][removed id u64*]
//!                                  [count u32][alarmed id u64*]
//! conf change context, v2:         [request_id u64 LE][0x00][flags u8][peer URL ...]
//!                                  (flag 1: the learner is promoted when ready)
//! ```
//!
//! This release writes envelope v2 and reads all three; a v1 or 0.1 image has no start
//! records and no removed IDs (the members publish new start records when they start).
//!
//! Bytes from the log never stop a node: an entry in a format this release does not know
//! ([`FormatError::UnknownFormat`]: a newer release, or a forged append) is a logged no-op on
//! every replica of this release, like a known format cut short. An image in an unknown
//! envelope is refused where it arrives (the peer server's validation, or recovery's sentence). An application command that does not decode is the application's
//! business (a no-op, rejected, on every replica alike).

use std::io::Read;

use bytes::Bytes;

use crate::membership::{Membership, MembershipDecodeError, Start};

/// The format byte of entries written by this release.
pub const ENTRY_FORMAT_V1: u8 = 0x10;
/// Release 0.1's KV put (the kind byte doubled as the format).
const LEGACY_PUT: u8 = 1;
/// Release 0.1's KV delete.
const LEGACY_DELETE: u8 = 2;
/// Format byte + request ID.
const ENTRY_HEADER_BYTES: usize = 9;

/// The format byte of start records.
pub const ENTRY_FORMAT_START: u8 = 0x20;
/// The format byte of NOSPACE alarm records.
pub const ENTRY_FORMAT_ALARM: u8 = 0x21;
/// The format byte of peer URL updates.
pub const ENTRY_FORMAT_URL: u8 = 0x22;
/// The format byte of digest checks.
pub const ENTRY_FORMAT_DIGEST_CHECK: u8 = 0x23;
/// The format byte of digest records.
pub const ENTRY_FORMAT_DIGEST: u8 = 0x24;
/// The format byte of divergence reports.
pub const ENTRY_FORMAT_DIVERGED: u8 = 0x25;
/// Envelope magic of this release (the last byte is the version).
const ENVELOPE_V2: &[u8; 8] = b"RXENVLP\x02";
/// Envelope magic of release 0.2.
const ENVELOPE_V1: &[u8; 8] = b"RXENVLP\x01";
/// Envelope magic of release 0.1 (its KV image; same layout, no version byte).
const ENVELOPE_LEGACY: &[u8; 8] = b"RXKVIMG1";

/// Bytes the engine cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A format (entry byte or envelope magic) this release does not know: written by a
    /// newer release, or damage. Never skipped.
    #[error("format {0:#04x} is unknown to this release: upgrade this node before it applies more of the log")]
    UnknownFormat(u8),
    /// A known format, but the bytes are cut short or impossible.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl From<MembershipDecodeError> for FormatError {
    fn from(e: MembershipDecodeError) -> Self {
        FormatError::Malformed(e.0)
    }
}

/// What a normal entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryData {
    /// Raft's empty entry.
    Noop,
    /// An application command and the request ID of its proposer.
    Command {
        /// Request ID (see `waiters.rs`); completes the proposer's wait.
        request_id: u64,
        /// The application's bytes.
        command: Bytes,
    },
    /// A member's start record; the engine's own, never handed to the application.
    Start(StartRecord),
    /// A member's new peer URL; the engine's own.
    UrlUpdate {
        /// Request ID of the waiting client.
        request_id: u64,
        /// The member.
        id: u64,
        /// Its new peer URL.
        url: String,
    },
    /// A member raising or clearing its NOSPACE alarm; the engine's own.
    Alarm {
        /// The member.
        id: u64,
        /// Raised (true) or cleared.
        raised: bool,
    },
    /// Every replica takes its state digest after the entries before this one; the engine's.
    DigestCheck,
    /// A member reports that its committed log contradicts its leader's; the engine's own.
    Diverged {
        /// The member.
        id: u64,
        /// The log index.
        index: u64,
    },
    /// A member's state digest at a digest check; the engine's own.
    Digest {
        /// The member.
        id: u64,
        /// Index of the digest check.
        index: u64,
        /// Its state digest there.
        digest: u64,
    },
}

/// The entry data of member `id` reporting its committed log contradicts its leader's at
/// `index`.
pub fn encode_divergence_report(id: u64, index: u64) -> Vec<u8> {
    let mut out = vec![ENTRY_FORMAT_DIVERGED];
    for v in [0, id, index] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The entry data of a digest check.
pub fn encode_digest_check() -> Vec<u8> {
    let mut out = vec![ENTRY_FORMAT_DIGEST_CHECK];
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

/// The entry data of member `id`'s state digest at the digest check at `index`.
pub fn encode_digest(id: u64, index: u64, digest: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + 24);
    out.push(ENTRY_FORMAT_DIGEST);
    out.extend_from_slice(&0u64.to_le_bytes());
    for v in [id, index, digest] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The entry data of member `id`'s peer URL update, proposed under `request_id`.
pub fn encode_url_update(request_id: u64, id: u64, url: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + 8 + url.len());
    out.push(ENTRY_FORMAT_URL);
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(url.as_bytes());
    out
}

/// The entry data of member `id` raising (or clearing) its NOSPACE alarm.
pub fn encode_alarm(id: u64, raised: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + 9);
    out.push(ENTRY_FORMAT_ALARM);
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.push(u8::from(raised));
    out
}

/// A member announcing one start of itself (see `membership::Start`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRecord {
    /// The member.
    pub id: u64,
    /// What it started as.
    pub start: Start,
}

impl StartRecord {
    /// The entry data of this record.
    pub fn encode(&self) -> Vec<u8> {
        let url = self.start.client_url.as_bytes();
        let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + 24 + url.len());
        out.push(ENTRY_FORMAT_START);
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.start.incarnation.to_le_bytes());
        out.extend_from_slice(&self.start.nonce.to_le_bytes());
        out.extend_from_slice(url);
        out
    }

    fn decode(data: &[u8]) -> Result<StartRecord, FormatError> {
        let field = |i: usize| -> Result<u64, FormatError> {
            let at = ENTRY_HEADER_BYTES + 8 * i;
            data.get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or(FormatError::Malformed("start record cut short"))
        };
        let (id, incarnation, nonce) = (field(0)?, field(1)?, field(2)?);
        let client_url = std::str::from_utf8(&data[ENTRY_HEADER_BYTES + 24..])
            .map_err(|_| FormatError::Malformed("start record URL is not UTF-8"))?
            .to_string();
        Ok(StartRecord {
            id,
            start: Start {
                incarnation,
                nonce,
                client_url,
            },
        })
    }
}

/// The entry data for `command` proposed under `request_id`.
pub fn encode_entry(request_id: u64, command: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + command.len());
    out.push(ENTRY_FORMAT_V1);
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(command);
    out
}

/// Decodes entry data written by [`encode_entry`] or by release 0.1. Zero-copy for this
/// release's format.
///
/// # Errors
/// [`FormatError::UnknownFormat`] for a format byte this release does not know (the caller
/// treats it as a no-op, as every replica of this release does), [`FormatError::Malformed`] for a known format cut short.
pub fn decode_entry(data: &Bytes) -> Result<EntryData, FormatError> {
    let Some(&format) = data.first() else {
        return Ok(EntryData::Noop);
    };
    if !matches!(
        format,
        ENTRY_FORMAT_V1
            | ENTRY_FORMAT_START
            | ENTRY_FORMAT_ALARM
            | ENTRY_FORMAT_URL
            | ENTRY_FORMAT_DIGEST_CHECK
            | ENTRY_FORMAT_DIGEST
            | ENTRY_FORMAT_DIVERGED
            | LEGACY_PUT
            | LEGACY_DELETE
    ) {
        return Err(FormatError::UnknownFormat(format));
    }
    if data.len() < ENTRY_HEADER_BYTES {
        return Err(FormatError::Malformed("entry shorter than its header"));
    }
    if format == ENTRY_FORMAT_START {
        return StartRecord::decode(data).map(EntryData::Start);
    }
    let request_id = u64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
    if format == ENTRY_FORMAT_URL {
        let body = &data[ENTRY_HEADER_BYTES..];
        let id = body
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or(FormatError::Malformed("URL update cut short"))?;
        let url = std::str::from_utf8(&body[8..])
            .map_err(|_| FormatError::Malformed("URL update is not UTF-8"))?
            .to_string();
        return Ok(EntryData::UrlUpdate {
            request_id,
            id,
            url,
        });
    }
    if format == ENTRY_FORMAT_DIGEST_CHECK {
        return Ok(EntryData::DigestCheck);
    }
    if format == ENTRY_FORMAT_DIGEST {
        let body = &data[ENTRY_HEADER_BYTES..];
        if body.len() != 24 {
            return Err(FormatError::Malformed("digest record"));
        }
        let word = |i: usize| u64::from_le_bytes(body[8 * i..8 * i + 8].try_into().expect("8"));
        return Ok(EntryData::Digest {
            id: word(0),
            index: word(1),
            digest: word(2),
        });
    }
    if format == ENTRY_FORMAT_DIVERGED {
        let body = &data[ENTRY_HEADER_BYTES..];
        if body.len() != 16 {
            return Err(FormatError::Malformed("divergence report"));
        }
        let word = |i: usize| u64::from_le_bytes(body[8 * i..8 * i + 8].try_into().expect("8"));
        return Ok(EntryData::Diverged {
            id: word(0),
            index: word(1),
        });
    }
    if format == ENTRY_FORMAT_ALARM {
        let body = &data[ENTRY_HEADER_BYTES..];
        return match body {
            [id @ .., raised @ (0 | 1)] if id.len() == 8 => Ok(EntryData::Alarm {
                id: u64::from_le_bytes(id.try_into().expect("8 bytes")),
                raised: *raised == 1,
            }),
            _ => Err(FormatError::Malformed("alarm record")),
        };
    }
    let command = if format == ENTRY_FORMAT_V1 {
        data.slice(ENTRY_HEADER_BYTES..)
    } else {
        let mut legacy = Vec::with_capacity(data.len() - 8);
        legacy.push(format);
        legacy.extend_from_slice(&data[ENTRY_HEADER_BYTES..]);
        Bytes::from(legacy)
    };
    Ok(EntryData::Command {
        request_id,
        command,
    })
}

/// The context of a conf change entry: who waits for it and the peer URL of an added node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfChangeContext {
    /// Request ID of the waiting client.
    pub request_id: u64,
    /// Peer URL of the node being added; empty for a removal or a promotion.
    pub url: String,
    /// An added learner becomes a voter once it has started and caught up.
    pub promote_when_ready: bool,
}

/// Context flag: [`ConfChangeContext::promote_when_ready`].
const CONTEXT_PROMOTE: u8 = 1;

impl ConfChangeContext {
    /// Bytes for `ConfChange.context` (v2: a URL never starts with a NUL byte, so the v2
    /// marker cannot be mistaken for release 0.2's `[request_id][url]`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.request_id.to_le_bytes().to_vec();
        out.push(0);
        out.push(if self.promote_when_ready {
            CONTEXT_PROMOTE
        } else {
            0
        });
        out.extend_from_slice(self.url.as_bytes());
        out
    }

    /// Decodes [`ConfChangeContext::encode`]'s bytes.
    ///
    /// # Errors
    /// [`FormatError::Malformed`] when too short or the URL is not UTF-8.
    pub fn decode(bytes: &[u8]) -> Result<ConfChangeContext, FormatError> {
        if bytes.len() < 8 {
            return Err(FormatError::Malformed(
                "conf change context shorter than 8 bytes",
            ));
        }
        let request_id = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let (promote_when_ready, url) = match bytes.get(8..10) {
            Some([0, flags]) => (flags & CONTEXT_PROMOTE != 0, &bytes[10..]),
            _ => (false, &bytes[8..]),
        };
        let url = std::str::from_utf8(url)
            .map_err(|_| FormatError::Malformed("conf change URL is not UTF-8"))?
            .to_string();
        Ok(ConfChangeContext {
            request_id,
            url,
            promote_when_ready,
        })
    }
}

/// The envelope head (magic, version, membership) that precedes the application's image.
pub fn envelope_head(membership: &Membership) -> Vec<u8> {
    let mut out = ENVELOPE_V2.to_vec();
    membership.encode_into(&mut out, 2);
    out
}

/// A whole image: the envelope head, then `app_image`.
pub fn encode_image(membership: &Membership, app_image: &[u8]) -> Vec<u8> {
    let mut out = envelope_head(membership);
    out.extend_from_slice(app_image);
    out
}

/// Splits an image into its membership and the application's image.
///
/// # Errors
/// [`FormatError`] for an unknown envelope or a malformed membership.
pub fn decode_image(image: &[u8]) -> Result<(Membership, &[u8]), FormatError> {
    let magic: &[u8; 8] = image
        .get(..8)
        .and_then(|m| m.try_into().ok())
        .ok_or(FormatError::Malformed("image shorter than its envelope"))?;
    let version = check_magic(magic)?;
    let (membership, used) = Membership::decode_prefix(&image[8..], version)?;
    Ok((membership, &image[8 + used..]))
}

/// Reads the envelope from the head of a stream; the stream is then at the application's
/// image. Lengths are never trusted for allocation.
///
/// # Errors
/// An I/O error, or `InvalidData` for an unknown envelope or a malformed membership.
pub fn read_envelope(r: &mut dyn Read) -> std::io::Result<Membership> {
    let invalid = |e: FormatError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    let version = check_magic(&magic).map_err(invalid)?;
    // The membership's encoding, gathered field by field, then decoded by its own decoder.
    let mut members = Vec::new();
    let count = read_u32(r, &mut members)?;
    for _ in 0..count {
        read_exact_into(r, 8 + 1, &mut members)?;
        let url_len = read_u32(r, &mut members)?;
        read_exact_into(r, url_len as usize, &mut members)?;
    }
    if version >= 2 {
        for _ in 0..read_u32(r, &mut members)? {
            read_exact_into(r, 3 * 8, &mut members)?;
            let url_len = read_u32(r, &mut members)?;
            read_exact_into(r, url_len as usize, &mut members)?;
        }
        for _ in 0..2 {
            // Removed IDs, then alarmed members.
            let ids = read_u32(r, &mut members)?;
            read_exact_into(r, ids as usize * 8, &mut members)?;
        }
    }
    let (membership, _) =
        Membership::decode_prefix(&members, version).map_err(|e| invalid(FormatError::from(e)))?;
    Ok(membership)
}

/// The membership layout version an envelope magic announces.
fn check_magic(magic: &[u8; 8]) -> Result<u8, FormatError> {
    if magic == ENVELOPE_V2 {
        return Ok(2);
    }
    if magic == ENVELOPE_V1 || magic == ENVELOPE_LEGACY {
        return Ok(1);
    }
    if magic[..7] == ENVELOPE_V1[..7] {
        return Err(FormatError::UnknownFormat(magic[7]));
    }
    Err(FormatError::Malformed(
        "image without the engine's envelope",
    ))
}

/// Appends exactly `n` bytes from `r` to `out` (growing only as data arrives).
fn read_exact_into(r: &mut dyn Read, n: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: this release's entries round-trip zero-copy; release 0.1's entries decode to the
    // command the KV wrote (kind byte first); unknown formats are refused, never skipped; no
    // byte string panics.
    #[test]
    fn entries_round_trip_and_old_entries_decode() {
        let data = Bytes::from(encode_entry(7, b"cmd"));
        assert_eq!(&data[..], &[0x10, 7, 0, 0, 0, 0, 0, 0, 0, b'c', b'm', b'd']);
        assert_eq!(
            decode_entry(&data).unwrap(),
            EntryData::Command {
                request_id: 7,
                command: Bytes::from_static(b"cmd")
            }
        );
        // 0.1: put of key "k" = "v1" by request 0x0102030405060708.
        let old = Bytes::from_static(&[1, 8, 7, 6, 5, 4, 3, 2, 1, 1, 0, 0, 0, b'k', b'v', b'1']);
        assert_eq!(
            decode_entry(&old).unwrap(),
            EntryData::Command {
                request_id: 0x0102_0304_0506_0708,
                command: Bytes::from_static(&[1, 1, 0, 0, 0, b'k', b'v', b'1'])
            }
        );
        assert_eq!(decode_entry(&Bytes::new()).unwrap(), EntryData::Noop);
        assert_eq!(
            decode_entry(&Bytes::from_static(&[0x11, 0, 0])),
            Err(FormatError::UnknownFormat(0x11))
        );
        for cut in 1..data.len().min(9) {
            assert!(decode_entry(&data.slice(..cut)).is_err());
        }
        let record = StartRecord {
            id: 3,
            start: Start {
                incarnation: 7,
                nonce: 0xdead_beef,
                client_url: "http://127.0.0.1:12380".into(),
            },
        };
        let data = Bytes::from(record.encode());
        assert_eq!(decode_entry(&data).unwrap(), EntryData::Start(record));
        for cut in 1..ENTRY_HEADER_BYTES + 24 {
            assert!(decode_entry(&data.slice(..cut)).is_err());
        }
        let alarm = Bytes::from(encode_alarm(2, true));
        assert_eq!(
            decode_entry(&alarm).unwrap(),
            EntryData::Alarm {
                id: 2,
                raised: true
            }
        );
        for cut in 1..alarm.len() {
            assert!(decode_entry(&alarm.slice(..cut)).is_err());
        }
        let digest = Bytes::from(encode_digest(3, 40, 0xfeed));
        assert_eq!(
            decode_entry(&digest).unwrap(),
            EntryData::Digest {
                id: 3,
                index: 40,
                digest: 0xfeed
            }
        );
        for cut in 1..digest.len() {
            assert!(decode_entry(&digest.slice(..cut)).is_err());
        }
        let report = Bytes::from(encode_divergence_report(2, 17));
        assert_eq!(
            decode_entry(&report).unwrap(),
            EntryData::Diverged { id: 2, index: 17 }
        );
        for cut in 1..report.len() {
            assert!(decode_entry(&report.slice(..cut)).is_err());
        }
        let check = Bytes::from(encode_digest_check());
        assert_eq!(decode_entry(&check).unwrap(), EntryData::DigestCheck);
        let update = Bytes::from(encode_url_update(4, 2, "http://h:9"));
        assert_eq!(
            decode_entry(&update).unwrap(),
            EntryData::UrlUpdate {
                request_id: 4,
                id: 2,
                url: "http://h:9".into()
            }
        );
        for cut in 1..ENTRY_HEADER_BYTES + 8 {
            assert!(decode_entry(&update.slice(..cut)).is_err());
        }
    }

    // Intent: an image splits into membership and application bytes, from memory and from a
    // stream alike; a 0.1 image still opens; an unknown envelope version is named.
    #[test]
    fn envelopes_round_trip_and_old_images_open() {
        let mut m = Membership::initial(&["http://h:1".into(), "http://h:2".into()]);
        m.record_start(
            1,
            Start {
                incarnation: 2,
                nonce: 3,
                client_url: "http://h:11".into(),
            },
        );
        m.set_alarm(1, true);
        m.remove(2);
        let image = encode_image(&m, b"app");
        let (got, app) = decode_image(&image).unwrap();
        assert_eq!((got, app), (m.clone(), &b"app"[..]));
        let mut stream = &image[..];
        assert_eq!(read_envelope(&mut stream).unwrap(), m);
        assert_eq!(stream, b"app");
        // Older envelopes carry members only.
        let plain = Membership::initial(&["http://h:1".into()]);
        for magic in [ENVELOPE_LEGACY, ENVELOPE_V1] {
            let mut old = magic.to_vec();
            plain.encode_into(&mut old, 1);
            old.extend_from_slice(b"app");
            assert_eq!(decode_image(&old).unwrap(), (plain.clone(), &b"app"[..]));
            assert_eq!(read_envelope(&mut &old[..]).unwrap(), plain);
        }
        let mut newer = image.clone();
        newer[7] = 3;
        assert_eq!(decode_image(&newer), Err(FormatError::UnknownFormat(3)));
        for cut in 0..image.len() - 3 {
            assert!(decode_image(&image[..cut]).is_err());
        }
        let ctx = ConfChangeContext {
            request_id: 5,
            url: "http://h:1".into(),
            promote_when_ready: true,
        };
        assert_eq!(ConfChangeContext::decode(&ctx.encode()).unwrap(), ctx);
        // Release 0.2's context: [request_id][url].
        let mut old_ctx = 5u64.to_le_bytes().to_vec();
        old_ctx.extend_from_slice(b"http://h:1");
        let old = ConfChangeContext::decode(&old_ctx).unwrap();
        assert_eq!(
            (old.url.as_str(), old.promote_when_ready),
            ("http://h:1", false)
        );
    }
}
