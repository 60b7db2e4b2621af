//! Write-ahead log benchmark: batch append latency next to a bare write + fdatasync loop of the
//! same bytes on the same disk in the same run, then replay throughput.
//!
//! ```text
//! cargo run --release -p wal --example bench -- <dir> [--batches N] [--replay-mib N]
//!     [--replay-entry-bytes N]
//! ```
//!
//! For each batch size (1, 64, 512 entries of 100 bytes, plus a hard state, as one raft Ready)
//! it alternates: one `Wal::save(.., sync = true)`, then one bare `pwrite` + `fdatasync` of the
//! same number of bytes into a file preallocated the same way (`posix_fallocate`), so both see
//! the same disk conditions. Then it writes a `--replay-mib` log (default 1024) and times
//! `Wal::open` on it, warm (page cache) and cold (pages dropped with `POSIX_FADV_DONTNEED`),
//! best of three runs each.
//! Everything is made under `<dir>` and deleted afterwards.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wal::{Entry, HardState, Metadata, Options, Wal};

const ENTRY_BYTES: usize = 100;
const METADATA: Metadata = Metadata {
    node_id: 1,
    cluster_id: 1,
};

struct Args {
    dir: PathBuf,
    batches: usize,
    replay_mib: u64,
    replay_entry_bytes: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let root = args.dir.join(format!("wal-bench-{}", std::process::id()));
    fs::create_dir_all(&root)?;
    let result = run(&args, &root);
    fs::remove_dir_all(&root)?;
    result
}

fn run(args: &Args, root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "append: {} batches per size, entries of {ENTRY_BYTES} bytes, fdatasync per batch",
        args.batches
    );
    println!(
        "{:>7} {:>9} {:>11} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11}",
        "entries",
        "bytes",
        "records/s",
        "MB/s",
        "wal p50",
        "wal p99",
        "bare p50",
        "bare p99",
        "p50 ratio"
    );
    for entries_per_batch in [1, 64, 512] {
        let dir = root.join(format!("append-{entries_per_batch}"));
        append(&dir, entries_per_batch, args.batches)?;
        fs::remove_dir_all(&dir)?;
    }
    replay(
        &root.join("replay"),
        args.replay_mib,
        args.replay_entry_bytes,
    )?;
    Ok(())
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: bench <dir> [--batches N] [--replay-mib N] [--replay-entry-bytes N]";
    let mut it = std::env::args().skip(1);
    let dir = PathBuf::from(it.next().ok_or(usage)?);
    let mut args = Args {
        dir,
        batches: 2000,
        replay_mib: 1024,
        replay_entry_bytes: ENTRY_BYTES,
    };
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number; {usage}"))?;
        match flag.as_str() {
            "--batches" => args.batches = value.max(1) as usize,
            "--replay-mib" => args.replay_mib = value.max(1),
            "--replay-entry-bytes" => args.replay_entry_bytes = value as usize,
            _ => return Err(usage.to_string()),
        }
    }
    Ok(args)
}

fn batch(first_index: u64, count: usize, entry_bytes: usize) -> (HardState, Vec<Entry>) {
    let entries = (0..count as u64)
        .map(|i| Entry {
            index: first_index + i,
            term: 1,
            data: vec![(first_index + i) as u8; entry_bytes].into(),
            ..Entry::default()
        })
        .collect();
    let hs = HardState {
        term: 1,
        vote: 1,
        commit: first_index,
        ..HardState::default()
    };
    (hs, entries)
}

/// Alternates WAL batches and bare write + fdatasync of the same bytes; prints one row.
fn append(dir: &Path, per_batch: usize, batches: usize) -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::default();
    let mut wal = Wal::create(dir, METADATA, options.clone())?;
    let bare_path = dir.join("bare.dat");
    let bare = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&bare_path)?;
    let mut bare_capacity = 0u64;
    let mut bare_offset = 0u64;
    let (mut wal_times, mut bare_times) = (Vec::new(), Vec::new());
    let mut next = 1u64;
    let mut batch_bytes = 0u64;
    let started = Instant::now();
    let mut wal_total = Duration::ZERO;
    for _ in 0..batches {
        let (hs, entries) = batch(next, per_batch, ENTRY_BYTES);
        next += per_batch as u64;
        let before = wal.write_position().1;
        let t = Instant::now();
        wal.save(Some(&hs), &entries, true)?;
        let took = t.elapsed();
        wal_total += took;
        wal_times.push(took);
        if batch_bytes == 0 {
            batch_bytes = wal.write_position().1 - before;
        }
        let buf = vec![0x5a; batch_bytes as usize];
        if bare_offset + batch_bytes > bare_capacity {
            bare_capacity += options.segment_size_bytes;
            fallocate(&bare, bare_capacity)?;
            bare.sync_all()?;
        }
        let t = Instant::now();
        bare.write_all_at(&buf, bare_offset)?;
        bare.sync_data()?;
        bare_times.push(t.elapsed());
        bare_offset += batch_bytes;
    }
    let _ = started;
    let records_per_s = (per_batch * batches) as f64 / wal_total.as_secs_f64();
    let mb_per_s = (batch_bytes as f64 * batches as f64) / wal_total.as_secs_f64() / 1e6;
    let (w50, w99) = percentiles(&mut wal_times);
    let (b50, b99) = percentiles(&mut bare_times);
    println!(
        "{:>7} {:>9} {:>11.0} {:>9.1} {:>10} {:>10} {:>10} {:>10} {:>10.2}x",
        per_batch,
        batch_bytes,
        records_per_s,
        mb_per_s,
        us(w50),
        us(w99),
        us(b50),
        us(b99),
        w50.as_secs_f64() / b50.as_secs_f64()
    );
    Ok(())
}

/// Writes a log of about `mib` MiB and times replaying it, warm and cold.
fn replay(dir: &Path, mib: u64, entry_bytes: usize) -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::default();
    let mut wal = Wal::create(dir, METADATA, options.clone())?;
    let target = mib << 20;
    let mut next = 1u64;
    let mut written = 0u64;
    let t = Instant::now();
    while written < target {
        let (hs, entries) = batch(next, 512, entry_bytes);
        next += 512;
        let before = wal.write_position().1;
        wal.save(Some(&hs), &entries, false)?;
        written += wal.write_position().1.saturating_sub(before);
    }
    wal.sync()?;
    drop(wal);
    let write_secs = t.elapsed().as_secs_f64();
    let log_bytes: u64 = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "replay: log of {:.0} MiB ({} entries of {entry_bytes} bytes in batches of 512; \
         written unsynced in {write_secs:.1} s, {:.0} MiB on disk with preallocation)",
        written as f64 / (1 << 20) as f64,
        next - 1,
        log_bytes as f64 / (1 << 20) as f64,
    );
    // Best of three each: the machine is shared, so single runs mostly measure neighbours.
    for (label, cold) in [("warm (page cache)", false), ("cold (pages dropped)", true)] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            if cold {
                drop_cache(dir)?;
            }
            let t = Instant::now();
            let (wal, replayed) = Wal::open(dir, (0, 0), options.clone())?;
            runs.push(t.elapsed().as_secs_f64());
            assert_eq!(
                replayed.entries.len() as u64,
                next - 1,
                "every entry replayed"
            );
            drop(wal);
            drop(replayed);
        }
        let best = runs.iter().copied().fold(f64::INFINITY, f64::min);
        let all: Vec<String> = runs.iter().map(|s| format!("{s:.2}")).collect();
        println!(
            "  {label:<22} best {best:>5.2} s  {:>6.0} MB/s  {:>9.0} entries/s  (runs: {} s)",
            written as f64 / best / 1e6,
            (next - 1) as f64 / best,
            all.join(", ")
        );
    }
    fs::remove_dir_all(dir)?;
    Ok(())
}

fn percentiles(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (at(0.50), at(0.99))
}

fn us(d: Duration) -> String {
    format!("{:.0}us", d.as_secs_f64() * 1e6)
}

fn fallocate(file: &File, len: u64) -> std::io::Result<()> {
    // SAFETY: plain syscall on a file descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    match rc {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// Evicts the log's pages from the page cache (only these files; nothing system-wide).
fn drop_cache(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let file = File::open(entry?.path())?;
        file.sync_all()?;
        // SAFETY: plain syscall on a file descriptor we own.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}
