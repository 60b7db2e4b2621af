//! The KV's commands: what the application puts inside an engine entry.
//!
//! ```text
//! command: [kind u8][key_len u32 LE][key][value ...]
//!          kind 1 = put (value = the rest), kind 2 = delete (no value)
//!          kind 3 = [3][quota u64 LE][key_len u32 LE][key][value ...]: a put that is refused
//!                   at apply, on every replica alike, if it would take the keys and values
//!                   above `quota` bytes (the proposer's `--quota-bytes`)
//! ```
//! This release writes kinds 3 and 2; kind 1 (release 0.1's put) reads as a put without quota.
//! The engine adds its framing (format byte, request ID) around these bytes. Release 0.1 wrote
//! `[kind][request_id][key_len][key][value]`; the engine hands such old entries over as
//! `[kind][key_len][key][value]`, so one decoder serves both (see `engine::framing`).

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_PUT_WITHIN: u8 = 3;
const HEADER_BYTES: usize = 1 + 4;
const QUOTA_BYTES: usize = 8;

/// A state machine command, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Set `key` to `value`, unless that would take the data above `quota` bytes.
    Put {
        /// Key.
        key: &'a [u8],
        /// Value.
        value: &'a [u8],
        /// Most bytes of keys and values the map may hold after this put (`u64::MAX`: none).
        quota: u64,
    },
    /// Remove `key`.
    Delete {
        /// Key.
        key: &'a [u8],
    },
}

/// Command bytes that do not decode (a bug, a corrupted log or a forged entry); applying such a
/// command is a no-op on every replica.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed KV command: {0}")]
pub struct DecodeError(&'static str);

impl<'a> Command<'a> {
    /// The command's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, key, value) = match self {
            Command::Put { key, value, .. } => (KIND_PUT_WITHIN, key, *value),
            Command::Delete { key } => (KIND_DELETE, key, &[][..]),
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + QUOTA_BYTES + key.len() + value.len());
        out.push(kind);
        if let Command::Put { quota, .. } = self {
            out.extend_from_slice(&quota.to_le_bytes());
        }
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    /// Decodes [`Command::encode`]'s bytes.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not a command.
    pub fn decode(data: &'a [u8]) -> Result<Command<'a>, DecodeError> {
        let Some(&kind) = data.first() else {
            return Err(DecodeError("empty"));
        };
        let (quota, rest) = if kind == KIND_PUT_WITHIN {
            let quota = data
                .get(1..1 + QUOTA_BYTES)
                .ok_or(DecodeError("shorter than the quota"))?;
            let quota = u64::from_le_bytes(quota.try_into().expect("8 bytes"));
            (quota, &data[1 + QUOTA_BYTES..])
        } else {
            (u64::MAX, &data[1..])
        };
        if rest.len() < HEADER_BYTES - 1 {
            return Err(DecodeError("shorter than the header"));
        }
        let key_len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let key_end = 4usize
            .checked_add(key_len)
            .filter(|end| *end <= rest.len())
            .ok_or(DecodeError("key runs past the end"))?;
        let key = &rest[4..key_end];
        let data = rest;
        match kind {
            KIND_PUT | KIND_PUT_WITHIN => Ok(Command::Put {
                key,
                value: &data[key_end..],
                quota,
            }),
            KIND_DELETE if key_end == data.len() => Ok(Command::Delete { key }),
            KIND_DELETE => Err(DecodeError("delete with trailing bytes")),
            _ => Err(DecodeError("unknown command kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: commands survive encode/decode, and no byte string makes decode panic.
    #[test]
    fn round_trip_and_garbage() {
        let put = Command::Put {
            key: b"k",
            value: b"value",
            quota: 1 << 40,
        };
        let del = Command::Delete { key: b"key" };
        for c in [&put, &del] {
            let bytes = c.encode();
            assert_eq!(&Command::decode(&bytes).unwrap(), c);
        }
        let data = put.encode();
        for cut in 0..data.len() {
            let _ = Command::decode(&data[..cut]);
        }
        let mut huge = data.clone();
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Command::decode(&huge).is_err());
        assert!(Command::decode(&[9, 0, 0, 0, 0]).is_err());
    }
}

#[cfg(test)]
mod golden {
    use super::*;
    use bytes::Bytes;

    // Intent: the entry bytes of release 0.1 (`[kind][request_id u64 LE][key_len u32 LE][key]
    // [value]`) still decode through the engine's framing to the same command, and this
    // release's entries are the engine's framing around `[kind][key_len][key][value]`.
    #[test]
    fn entry_bytes_of_release_0_1_still_decode() {
        let old = Bytes::from_static(&[1, 8, 7, 6, 5, 4, 3, 2, 1, 1, 0, 0, 0, b'k', b'v', b'1']);
        let engine::framing::EntryData::Command {
            request_id,
            command,
        } = engine::framing::decode_entry(&old).unwrap()
        else {
            panic!("not a command");
        };
        assert_eq!(request_id, 0x0102_0304_0506_0708);
        assert_eq!(
            Command::decode(&command).unwrap(),
            Command::Put {
                key: b"k",
                value: b"v1",
                quota: u64::MAX,
            }
        );
        let old_delete = Bytes::from_static(&[2, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'a', b'b']);
        let engine::framing::EntryData::Command { command, .. } =
            engine::framing::decode_entry(&old_delete).unwrap()
        else {
            panic!("not a command");
        };
        assert_eq!(
            Command::decode(&command).unwrap(),
            Command::Delete { key: b"ab" }
        );
        let new = engine::framing::encode_entry(9, &Command::Delete { key: b"ab" }.encode());
        assert_eq!(
            new,
            [0x10, 9, 0, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 0, b'a', b'b']
        );
    }
}
