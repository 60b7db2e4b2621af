//! `fsync-probe`: how long `fdatasync` takes on a disk, the way a WAL uses it. In a fresh
//! file in `--dir` it repeatedly appends 4 KiB and calls `sync_data` (fdatasync), timing
//! each call, until `--count` calls were made or `--duration-ms` passed, then removes the
//! file and prints one line:
//!
//! ```text
//! fdatasync dir=/work n=812 p50=1.93ms p99=4.10ms max=7.02ms
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

/// Bytes appended before each fdatasync.
const BLOCK_BYTES: usize = 4096;

/// Times 4 KiB append + fdatasync in a file in DIR.
#[derive(Debug, Parser)]
#[command(name = "fsync-probe")]
struct Args {
    /// Directory on the disk to probe (the file is created and removed there).
    #[arg(long)]
    dir: PathBuf,
    /// Most fdatasync calls.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Stop after this long even if fewer than --count calls were made.
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
}

fn probe(args: &Args) -> std::io::Result<Vec<Duration>> {
    let path = args
        .dir
        .join(format!("fsync-probe-{}.tmp", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let deadline = Instant::now() + Duration::from_millis(args.duration_ms);
    let result = append_and_sync(&mut file, args.count, deadline);
    drop(file);
    let removed = std::fs::remove_file(&path);
    let took = result?;
    removed?;
    Ok(took)
}

/// Appends a block and fdatasyncs it, `count` times or until `deadline`; returns how long
/// each fdatasync took.
fn append_and_sync(
    file: &mut std::fs::File,
    count: usize,
    deadline: Instant,
) -> std::io::Result<Vec<Duration>> {
    let block = vec![0x5au8; BLOCK_BYTES];
    let mut took = Vec::with_capacity(count.min(1 << 20));
    while took.len() < count && Instant::now() < deadline {
        file.write_all(&block)?;
        let start = Instant::now();
        file.sync_data()?;
        took.push(start.elapsed());
    }
    Ok(took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value at `quantile` (0..=1) of sorted, non-empty `values` (nearest rank).
fn at(values: &[Duration], quantile: f64) -> Duration {
    let rank = (quantile * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.count == 0 {
        eprintln!("fsync-probe: --count must be at least 1");
        return ExitCode::from(2);
    }
    let mut took = match probe(&args) {
        Ok(took) => took,
        Err(e) => {
            eprintln!("fsync-probe: in {}: {e}", args.dir.display());
            return ExitCode::from(1);
        }
    };
    if took.is_empty() {
        eprintln!("fsync-probe: no fdatasync finished within --duration-ms");
        return ExitCode::from(1);
    }
    took.sort();
    println!(
        "fdatasync dir={} n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        args.dir.display(),
        took.len(),
        ms(at(&took, 0.50)),
        ms(at(&took, 0.99)),
        ms(took[took.len() - 1]),
    );
    ExitCode::SUCCESS
}
