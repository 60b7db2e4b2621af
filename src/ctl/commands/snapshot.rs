//! `snapshot save FILE`: a backup streamed from a member's `GET /snapshot` to disk.
//!
//! The contract of the answer: its body is the whole backup file, and the file's last 32 bytes
//! are the SHA-256 of every byte before them. The steps, in this order:
//! 1. the answer's head is fetched by the read rules (any endpoint, retried until the
//!    deadline);
//! 2. the body is written to `FILE.part` as it arrives (never held in memory) while its hash
//!    is taken; nothing arriving for `--command-timeout` fails the save;
//! 3. the trailer is compared with the hash;
//! 4. `FILE.part` is fsynced, renamed to `FILE`, and the directory fsynced.
//!
//! Any failure (a broken stream, a bad trailer, a full disk, Ctrl-C) removes `FILE.part` and
//! leaves `FILE` as it was.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use ring::digest::{Context, SHA256, SHA256_OUTPUT_LEN};
use serde_json::json;

use super::Ctx;
use crate::ctl::args::Consistency;
use crate::ctl::client::{error_chain, show};
use crate::ctl::error::{failed, Result};
use crate::ctl::output::{self, Format};
use crate::ctl::retry::{header_u64, Call};

/// `snapshot save FILE [--consistency serializable]`.
pub async fn save(ctx: &Ctx, file: &Path, consistency: Consistency) -> Result<()> {
    // A backup is background work: at idle priority its hashing and writing yield to a member
    // running on the same host (whose snapshot and backup threads run so too). On a saturated
    // host it slows down, bounded by --command-timeout.
    engine::priority::run_when_idle();
    let part = part_path(file);
    let call = Call::read(format!("/snapshot{}", consistency.query()), "the backup");
    let stream = ctx.session.open(&ctx.endpoints, &call).await.map_err(|e| {
        if e.to_string().contains(" answered 404:") {
            failed(format!(
                "{e}: the member does not serve GET /snapshot (an older release?)"
            ))
        } else {
            e
        }
    })?;
    let index = header_u64(&stream.headers, "x-raft-index");
    let idle = ctx.session.command_timeout();
    let received = tokio::select! {
        received = receive(stream.body, &part, idle) => received,
        _ = tokio::signal::ctrl_c() => Err(failed("interrupted")),
    };
    let bytes = match received.and_then(|bytes| finish(&part, file).map(|()| bytes)) {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(failed(format!(
                "the backup was not saved ({e}): no {} is left and {} is as it was",
                part.display(),
                file.display()
            )));
        }
    };
    match ctx.format {
        Format::Json => output::json(&json!({
            "file": file.display().to_string(),
            "bytes": bytes,
            "index": index,
            "endpoint": stream.endpoint.as_str(),
        })),
        Format::Simple | Format::Table => {
            let at = index.map(|i| format!(", index {i}")).unwrap_or_default();
            output::line(&format!(
                "Snapshot saved at {}: {bytes} bytes{at}, from {}",
                file.display(),
                stream.endpoint
            ))
        }
    }
}

/// `FILE.part`.
fn part_path(file: &Path) -> PathBuf {
    let mut name = OsString::from(file.as_os_str());
    name.push(".part");
    PathBuf::from(name)
}

/// Writes `body` to a new `part` as it arrives and checks its trailer; returns its size.
async fn receive(mut body: Incoming, part: &Path, idle: Duration) -> Result<u64> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(part)
        .map_err(|e| failed(format!("cannot create {}: {e}", part.display())))?;
    // Dirty pages are written back as they come, so the final fsync of a large backup does
    // not queue one burst in front of a local member's WAL fsyncs.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, snap::WriteBehind::new(file));
    let mut trailer = Trailer::new();
    let mut size: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(failed(format!(
                    "nothing arrived for {} after {size} bytes",
                    show(idle)
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(failed(format!(
                    "the stream broke off after {size} bytes: {}",
                    error_chain(&e)
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        out.write_all(&data)
            .map_err(|e| failed(format!("cannot write {}: {e}", part.display())))?;
        trailer.update(&data);
        size += data.len() as u64;
    }
    trailer.check(size)?;
    let file = out
        .into_inner()
        .map_err(|e| failed(format!("cannot write {}: {}", part.display(), e.error())))?
        .into_inner();
    file.sync_all()
        .map_err(|e| failed(format!("cannot fsync {}: {e}", part.display())))?;
    Ok(size)
}

/// Renames the complete `part` to `file` and makes the rename durable.
fn finish(part: &Path, file: &Path) -> Result<()> {
    std::fs::rename(part, file).map_err(|e| {
        failed(format!(
            "cannot rename {} to {}: {e}",
            part.display(),
            file.display()
        ))
    })?;
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed(format!("cannot fsync the directory {}: {e}", dir.display())))
}

/// The SHA-256 of everything but the last 32 bytes seen, and those 32 bytes.
struct Trailer {
    hash: Context,
    /// The last bytes seen, at most [`SHA256_OUTPUT_LEN`].
    tail: Vec<u8>,
}

impl Trailer {
    fn new() -> Trailer {
        Trailer {
            hash: Context::new(&SHA256),
            tail: Vec::with_capacity(2 * SHA256_OUTPUT_LEN),
        }
    }

    fn update(&mut self, data: &[u8]) {
        if data.len() >= SHA256_OUTPUT_LEN {
            let (body, last) = data.split_at(data.len() - SHA256_OUTPUT_LEN);
            self.hash.update(&self.tail);
            self.hash.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(last);
            return;
        }
        self.tail.extend_from_slice(data);
        if self.tail.len() > SHA256_OUTPUT_LEN {
            let spill = self.tail.len() - SHA256_OUTPUT_LEN;
            self.hash.update(&self.tail[..spill]);
            self.tail.drain(..spill);
        }
    }

    /// Whether the last 32 bytes are the SHA-256 of the bytes before them.
    fn check(self, size: u64) -> Result<()> {
        if self.tail.len() < SHA256_OUTPUT_LEN {
            return Err(failed(format!(
                "the backup is {size} bytes, shorter than its {SHA256_OUTPUT_LEN}-byte SHA-256 \
                 trailer"
            )));
        }
        if self.hash.finish().as_ref() != self.tail.as_slice() {
            return Err(failed(
                "its SHA-256 trailer does not match its content: it was damaged on the way or \
                 on the member",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_trailer(body: &[u8]) -> Vec<u8> {
        let mut file = body.to_vec();
        file.extend_from_slice(ring::digest::digest(&SHA256, body).as_ref());
        file
    }

    #[test]
    fn the_trailer_is_checked_whatever_the_chunking() {
        // Intent: a good file passes cut into chunks of any size (smaller and larger than the
        // trailer); one flipped byte, or a file shorter than a trailer, fails.
        let file = with_trailer(&(0..1000u32).map(|i| i as u8).collect::<Vec<u8>>());
        for chunk in [1, 7, 31, 32, 33, 100, 4096] {
            let mut t = Trailer::new();
            file.chunks(chunk).for_each(|c| t.update(c));
            assert!(t.check(file.len() as u64).is_ok(), "chunk {chunk}");
        }
        let mut bad = file.clone();
        bad[500] ^= 1;
        let mut t = Trailer::new();
        bad.chunks(64).for_each(|c| t.update(c));
        assert!(t.check(bad.len() as u64).is_err());
        let mut short = Trailer::new();
        short.update(&[0; 31]);
        assert!(short.check(31).is_err());
        let mut empty = Trailer::new();
        empty.update(&with_trailer(b""));
        assert!(empty.check(32).is_ok());
    }
}
