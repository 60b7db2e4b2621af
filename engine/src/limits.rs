//! Every size and count limit of a node in one place, with the reasons they agree.
//!
//! A client request that the API accepts must also fit every later stage: one WAL record
//! ([`WAL_MAX_RECORD_BYTES`]), one raft message inside one peer batch request
//! ([`MAX_BATCH_BODY_BYTES`], of which the sender fills at most [`MAX_BATCH_BYTES`]
//! before the last message), and one forwarded proposal. [`max_request_body_bytes`] is the
//! largest `--max-request-body-bytes` for which all of that holds; `config.rs` refuses larger
//! values at start, so a body the API accepted is never refused later (the failure that used to
//! abort a node with "wal record exceeds the maximum", or never replicate).
//!
//! Terms are bounded too: raft-rs computes `term + 1` unchecked, so a message (or a WAL) with a
//! term near `u64::MAX` would wrap to 0 and panic every node that stepped it. A real cluster
//! reaches [`MAX_TERM`] after 2^48 elections: never.
//!

/// Highest term accepted from a peer, a WAL or a snapshot (far below overflow).
pub const MAX_TERM: u64 = 1 << 48;

/// Raft's per-message size cap: appends (and forwarded proposals) are batched up to this, and
/// a single entry larger than it travels alone (trap 10).
pub const MAX_SIZE_PER_MSG: u64 = 1024 * 1024;

/// Most members a starting node takes from one member's answer to its probe, and the largest
/// answer it reads: a hostile answer cannot make it probe or buffer without end.
pub const MAX_PROBED_MEMBERS: usize = 64;
/// See [`MAX_PROBED_MEMBERS`].
pub const MAX_PROBE_ANSWER_BYTES: usize = 256 * 1024;

/// Bytes a peer sender puts in one batch request before it stops adding messages (raft's
/// `max_size_per_msg` is 1 MiB, so a few appends fit); the last message may take it past this.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Largest batch request body the peer server accepts.
pub const MAX_BATCH_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Largest WAL record (`wal::Options::max_record_bytes`): one entry with its framing.
pub const WAL_MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Largest URI path (the key) plus headers hyper reads for one request: hyper's default read
/// buffer bound, which it answers with 431 when exceeded.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Bytes of framing around a command's key and value, bounded generously: the command header
/// (`command.rs`), the entry's fixed fields in the WAL (`wal` record header and entry header),
/// and the protobuf framing of the entry and the message that carries it.
const ENTRY_OVERHEAD_BYTES: usize = 4096;

/// The largest entry data (command bytes) every stage can carry.
pub fn max_entry_data_bytes() -> usize {
    let wal = WAL_MAX_RECORD_BYTES as usize;
    // The sender stops adding messages once a batch holds MAX_BATCH_BYTES, so a batch is at
    // most that plus one message.
    let peer = MAX_BATCH_BODY_BYTES - MAX_BATCH_BYTES;
    wal.min(peer) - ENTRY_OVERHEAD_BYTES
}

/// The largest `--max-request-body-bytes`: a value of that size under the longest key hyper
/// accepts still fits [`max_entry_data_bytes`].
pub fn max_request_body_bytes() -> usize {
    max_entry_data_bytes() - MAX_REQUEST_HEAD_BYTES
}

/// A snapshot is also due once the entry bytes committed since the last one reach the larger of
/// this and the last image's size (besides `--snapshot-count` entries): with large values the
/// in-memory raft log and the WAL then track the live data, not the number of writes.
pub const SNAPSHOT_MIN_LOGGED_BYTES: u64 = 64 * 1024 * 1024;

/// A snapshot due by `--snapshot-count` also waits until the entry bytes committed since the
/// last one reach 1/this of that snapshot's image. A snapshot reads and writes the whole image,
/// so its cost is then spread over entry bytes in proportion to the image: a constant cost per
/// byte logged whatever the state size (at most about this many image bytes read and written
/// per entry byte), while the raft log kept in memory stays within 1/this of the image.
pub const SNAPSHOT_IMAGE_DIVISOR: u64 = 2;

/// Catch-up entries kept after compaction are bounded by this many bytes as well as by
/// `--snapshot-catchup-entries`.
pub const CATCHUP_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// File descriptors kept free for files and peer links whatever the client load: WAL segments,
/// snapshot files (a snapshot thread, a follower's snapshot send, one received), the
/// listeners, outgoing peer connections, the runtime's own.
pub const FD_RESERVE: u64 = 256;

/// Client connections served at once when the open-file limit allows it.
pub const MAX_CLIENT_CONNECTIONS: usize = 4096;

/// Peer connections served at once when the open-file limit allows it (a cluster needs a few
/// per member).
pub const MAX_PEER_CONNECTIONS: usize = 1024;

/// Connection bounds `(client, peer)` under an open-file limit of `nofile`: together they
/// leave [`FD_RESERVE`] descriptors for files, peers get a quarter of the rest at most, and
/// each server gets at least 16.
pub fn connection_bounds(nofile: u64) -> (usize, usize) {
    let usable = nofile.saturating_sub(FD_RESERVE);
    let peer = ((usable / 4) as usize).clamp(16, MAX_PEER_CONNECTIONS);
    let client = (usable.saturating_sub(peer as u64) as usize).clamp(16, MAX_CLIENT_CONNECTIONS);
    (client, peer)
}

/// Raises the soft open-file limit to the hard limit (as the Go runtime does at start) and
/// returns the limit now in force.
///
/// # Errors
/// The OS error when the limit cannot be read; a failure to raise it is not an error (the
/// current soft limit is returned and the connection bounds follow it).
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct that we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct that we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: the largest accepted body, under the longest key, fits a WAL record and a peer
    // batch with room for its framing; the default body limit is far below it.
    #[test]
    fn accepted_bodies_fit_every_stage() {
        let body = max_request_body_bytes();
        let entry = body + MAX_REQUEST_HEAD_BYTES + ENTRY_OVERHEAD_BYTES;
        assert!(entry as u64 <= WAL_MAX_RECORD_BYTES);
        assert!(entry + MAX_BATCH_BYTES <= MAX_BATCH_BODY_BYTES);
        assert!(body > 32 * 1024 * 1024, "{body}");
    }

    // Intent: connection bounds leave the file reserve free and never exceed their caps.
    #[test]
    fn connection_bounds_leave_a_file_reserve() {
        for nofile in [0, 64, 300, 1024, 4096, 1 << 20] {
            let (client, peer) = connection_bounds(nofile);
            assert!(client <= MAX_CLIENT_CONNECTIONS && peer <= MAX_PEER_CONNECTIONS);
            assert!(client >= 16 && peer >= 16);
            if nofile >= 1024 {
                assert!((client + peer) as u64 + FD_RESERVE <= nofile, "{nofile}");
            }
        }
        assert_eq!(connection_bounds(1 << 20), (4096, 1024));
        assert_eq!(connection_bounds(1024), (576, 192));
    }
}
