//! What a raft entry carries: the encoding of client commands and of conf change contexts.
//!
//! Every proposal carries a request ID so that the apply worker can tell the waiting client
//! that *its* entry was applied (trap 4: nothing else proves a write).
//!
//! ```text
//! normal entry data:   [kind u8][request_id u64 LE][key_len u32 LE][key][value ...]
//!                      kind 1 = put (value = the rest), kind 2 = delete (no value)
//! conf change context: [request_id u64 LE][peer URL, UTF-8 ...]
//! ```
//! Empty data is raft's own no-op entry (a new leader's first entry).

use bytes::Bytes;

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const HEADER_BYTES: usize = 1 + 8 + 4;

/// A state machine command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Set `key` to `value`.
    Put {
        /// Key.
        key: Bytes,
        /// Value.
        value: Bytes,
    },
    /// Remove `key`.
    Delete {
        /// Key.
        key: Bytes,
    },
}

/// A command with the request ID of the client waiting for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Unique per proposal (see [`crate::waiters::Waiters::next_id`]).
    pub id: u64,
    /// What to do.
    pub command: Command,
}

/// Entry data that does not decode (only possible with a bug or a corrupted log).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed entry data: {0}")]
pub struct DecodeError(&'static str);

impl Request {
    /// The entry data for this request.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, key, value) = match &self.command {
            Command::Put { key, value } => (KIND_PUT, key, &value[..]),
            Command::Delete { key } => (KIND_DELETE, key, &[][..]),
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + key.len() + value.len());
        out.push(kind);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    /// Decodes entry data written by [`Request::encode`]. `data` MUST NOT be empty (empty
    /// entries are raft no-ops and carry no request).
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not a request.
    pub fn decode(data: &Bytes) -> Result<Request, DecodeError> {
        if data.len() < HEADER_BYTES {
            return Err(DecodeError("shorter than the header"));
        }
        let kind = data[0];
        let id = u64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
        let key_len = u32::from_le_bytes(data[9..13].try_into().expect("4 bytes")) as usize;
        let key_end = HEADER_BYTES
            .checked_add(key_len)
            .filter(|end| *end <= data.len())
            .ok_or(DecodeError("key runs past the end"))?;
        let key = data.slice(HEADER_BYTES..key_end);
        let command = match kind {
            KIND_PUT => Command::Put {
                key,
                value: data.slice(key_end..),
            },
            KIND_DELETE if key_end == data.len() => Command::Delete { key },
            KIND_DELETE => return Err(DecodeError("delete with trailing bytes")),
            _ => return Err(DecodeError("unknown command kind")),
        };
        Ok(Request { id, command })
    }
}

/// The context of a conf change entry: who waits for it and the peer URL of an added node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfChangeContext {
    /// Request ID of the waiting client.
    pub request_id: u64,
    /// Peer URL of the node being added; empty for a removal.
    pub url: String,
}

impl ConfChangeContext {
    /// Bytes for `ConfChange.context`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.request_id.to_le_bytes().to_vec();
        out.extend_from_slice(self.url.as_bytes());
        out
    }

    /// Decodes [`ConfChangeContext::encode`]'s bytes.
    ///
    /// # Errors
    /// [`DecodeError`] when too short or the URL is not UTF-8.
    pub fn decode(bytes: &[u8]) -> Result<ConfChangeContext, DecodeError> {
        if bytes.len() < 8 {
            return Err(DecodeError("conf change context shorter than 8 bytes"));
        }
        let request_id = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let url = std::str::from_utf8(&bytes[8..])
            .map_err(|_| DecodeError("conf change URL is not UTF-8"))?
            .to_string();
        Ok(ConfChangeContext { request_id, url })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: requests survive encode/decode, and no byte string makes decode panic.
    #[test]
    fn round_trip_and_garbage() {
        let put = Request {
            id: 42,
            command: Command::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"value"),
            },
        };
        let del = Request {
            id: 7,
            command: Command::Delete {
                key: Bytes::from_static(b"key"),
            },
        };
        for r in [&put, &del] {
            assert_eq!(&Request::decode(&Bytes::from(r.encode())).unwrap(), r);
        }
        let data = put.encode();
        for cut in 0..data.len() {
            let _ = Request::decode(&Bytes::copy_from_slice(&data[..cut]));
        }
        let mut huge = data.clone();
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&Bytes::from(huge)).is_err());
        let ctx = ConfChangeContext {
            request_id: 9,
            url: "http://127.0.0.1:4".into(),
        };
        assert_eq!(ConfChangeContext::decode(&ctx.encode()).unwrap(), ctx);
        assert!(ConfChangeContext::decode(&[1, 2]).is_err());
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    // Intent: the entry framing of release 0.1 stays byte for byte what is in old WALs:
    // `[kind][request_id u64 LE][key_len u32 LE][key][value]` and `[request_id][url]`.
    #[test]
    fn entry_bytes_are_those_of_release_0_1() {
        let put = Request {
            id: 0x0102_0304_0506_0708,
            command: Command::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v1"),
            },
        };
        assert_eq!(
            put.encode(),
            [1, 8, 7, 6, 5, 4, 3, 2, 1, 1, 0, 0, 0, b'k', b'v', b'1']
        );
        let del = Request {
            id: 9,
            command: Command::Delete {
                key: Bytes::from_static(b"ab"),
            },
        };
        assert_eq!(
            del.encode(),
            [2, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'a', b'b']
        );
        let ctx = ConfChangeContext {
            request_id: 5,
            url: "http://h:1".into(),
        };
        let mut want = vec![5, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"http://h:1");
        assert_eq!(ctx.encode(), want);
    }
}
