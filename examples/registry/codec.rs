//! The little-endian byte vocabulary shared by the registry's commands (`command.rs`) and its
//! image (`image.rs`): writers that append to a `Vec<u8>`, and [`Reader`], a bounds-checked
//! cursor.
//!
//! ```text
//! u16, u32, u64: little-endian
//! str16:         [len u16][UTF-8 bytes]     (names)
//! str32:         [len u32][UTF-8 bytes]     (addresses)
//! ```
//!
//! Invariants: a [`Reader`] never panics and never allocates from a length it read (it only
//! borrows slices of its input), so any byte string, however corrupt, ends in [`Malformed`].

/// Bytes that do not decode: what was wrong, as a phrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// A [`Malformed`] naming `what`.
pub fn malformed(what: impl Into<String>) -> Malformed {
    Malformed(what.into())
}

/// Appends `v`.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v`.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a str16. The caller MUST have checked that `s` fits (names are bounded by
/// `command::MAX_NAME_BYTES`, far below `u16::MAX`).
pub fn put_str16(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("names are checked to fit a u16 length");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends a str32. The caller MUST have checked that `s` fits (addresses are bounded by
/// `command::MAX_ADDRESS_BYTES`).
pub fn put_str32(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).expect("addresses are checked to fit a u32 length");
    put_u32(out, len);
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over untrusted bytes.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    /// [`Malformed`] when fewer than `n` remain.
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| malformed(format!("{what} runs past the end")))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// The next byte.
    ///
    /// # Errors
    /// [`Malformed`] at the end.
    pub fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    /// The next little-endian u16.
    ///
    /// # Errors
    /// [`Malformed`] when fewer than 2 bytes remain.
    pub fn u16(&mut self, what: &str) -> Result<u16, Malformed> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2, what)?);
        Ok(u16::from_le_bytes(b))
    }

    /// The next little-endian u32.
    ///
    /// # Errors
    /// [`Malformed`] when fewer than 4 bytes remain.
    pub fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(b))
    }

    /// The next little-endian u64.
    ///
    /// # Errors
    /// [`Malformed`] when fewer than 8 bytes remain.
    pub fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }

    /// The next str16.
    ///
    /// # Errors
    /// [`Malformed`] when it runs past the end or is not UTF-8.
    pub fn str16(&mut self, what: &str) -> Result<&'a str, Malformed> {
        let len = self.u16(what)? as usize;
        utf8(self.take(len, what)?, what)
    }

    /// The next str32.
    ///
    /// # Errors
    /// [`Malformed`] when it runs past the end or is not UTF-8.
    pub fn str32(&mut self, what: &str) -> Result<&'a str, Malformed> {
        let len = usize::try_from(self.u32(what)?).map_err(|_| malformed(what.to_string()))?;
        utf8(self.take(len, what)?, what)
    }

    /// Checks that every byte was read.
    ///
    /// # Errors
    /// [`Malformed`] when bytes are left.
    pub fn finish(&self, what: &str) -> Result<(), Malformed> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(malformed(format!("trailing bytes after the {what}")))
        }
    }
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, Malformed> {
    std::str::from_utf8(bytes).map_err(|_| malformed(format!("{what} is not UTF-8")))
}
