//! Snapshot file names: `{term:016x}-{index:016x}.snap`, plus the temp and broken suffixes.
//!
//! Only names this module would produce are recognised (lowercase hex, exact widths); any
//! other file in the directory is left alone by every operation.

/// Suffix of a finished snapshot file.
const SNAP_SUFFIX: &str = ".snap";
/// Appended to a snapshot file name while it is being written.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";
/// Appended to a snapshot file name when the file fails its checks.
pub(crate) const BROKEN_SUFFIX: &str = ".broken";
/// Appended to a snapshot file name while a received snapshot waits to be installed.
pub(crate) const STAGED_SUFFIX: &str = ".staged";

/// The file name of the snapshot at (`index`, `term`).
pub(crate) fn snap_file_name(index: u64, term: u64) -> String {
    format!("{term:016x}-{index:016x}{SNAP_SUFFIX}")
}

/// Parses a snapshot file name into (index, term); `None` for any other name.
pub(crate) fn parse_snap_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SNAP_SUFFIX)?;
    let (term, index) = stem.split_once('-')?;
    Some((parse_hex16(index)?, parse_hex16(term)?))
}

/// True for a temp file left behind by an interrupted save: `<snapshot file name>.tmp`.
pub(crate) fn is_temp_file_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX)
        .and_then(parse_snap_file_name)
        .is_some()
}

/// True for a received snapshot not installed (yet): `<snapshot file name>.staged`.
pub(crate) fn is_staged_file_name(name: &str) -> bool {
    name.strip_suffix(STAGED_SUFFIX)
        .and_then(parse_snap_file_name)
        .is_some()
}

/// Parses exactly 16 lowercase hex digits.
fn parse_hex16(digits: &str) -> Option<u64> {
    let well_formed = digits.len() == 16
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        // Intent: every name we produce parses back to the same (index, term).
        for (index, term) in [(1, 1), (0xdead_beef, 3), (u64::MAX, u64::MAX), (5, 0)] {
            let name = snap_file_name(index, term);
            assert_eq!(parse_snap_file_name(&name), Some((index, term)));
            assert!(is_temp_file_name(&format!("{name}{TEMP_SUFFIX}")));
            assert!(is_staged_file_name(&format!("{name}{STAGED_SUFFIX}")));
            assert!(parse_snap_file_name(&format!("{name}{STAGED_SUFFIX}")).is_none());
        }
        assert_eq!(
            snap_file_name(0x10, 0x2),
            "0000000000000002-0000000000000010.snap"
        );
    }

    #[test]
    fn foreign_names_are_rejected() {
        // Intent: anything that is not exactly our format is not taken for a snapshot.
        for name in [
            "",
            ".snap",
            "0000000000000002-0000000000000010.snap.broken",
            "0000000000000002-0000000000000010.snap.tmp",
            "0000000000000002-0000000000000010.snapx",
            "0000000000000002-000000000000010.snap",
            "0000000000000002-00000000000000100.snap",
            "0000000000000002_0000000000000010.snap",
            "000000000000000G-0000000000000010.snap",
            "000000000000000A-0000000000000010.snap",
            "+000000000000002-0000000000000010.snap",
            "0000000000000002-0000000000000010-0000000000000010.snap",
            "garbage.snap",
        ] {
            assert_eq!(parse_snap_file_name(name), None, "{name:?}");
        }
        assert!(!is_temp_file_name("garbage.tmp"));
        assert!(!is_temp_file_name("0000000000000002-0000000000000010.snap"));
    }
}
