//! Measures `Snapshotter::save` and `Snapshotter::load` of one large snapshot on the disk
//! holding the current directory, next to a bare write+fsync and read of the same bytes in
//! the same run. Five interleaved rounds; the median of each is printed.
//!
//! Run: `cargo run --release -p snap --example snap_bench -- [size_mib, default 256]`

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use snap::{Snapshot, SnapshotMetadata, Snapshotter};

const ROUNDS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size_mib: usize = std::env::args().nth(1).map_or(Ok(256), |s| s.parse())?;
    let bytes = size_mib << 20;
    let tmp = tempfile::tempdir_in(std::env::current_dir()?)?;
    let snapshotter = Snapshotter::new(&tmp.path().join("snap"))?;
    let data: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    let snapshot = Snapshot {
        metadata: Some(SnapshotMetadata {
            index: 1000,
            term: 2,
            ..Default::default()
        })
        .into(),
        data: data.clone().into(),
        ..Default::default()
    };
    let bare = tmp.path().join("bare");
    let mut times: [Vec<f64>; 4] = Default::default();
    for round in 0..ROUNDS as u64 {
        // Every round writes new files, as a node does: the old ones are removed untimed.
        let _ = std::fs::remove_file(&bare);
        snapshotter.purge(0)?;
        let mut snapshot = snapshot.clone();
        snapshot.mut_metadata().index = 1000 + round;
        times[0].push(timed(|| bare_write(&bare, &data))?);
        times[1].push(timed(|| {
            snapshotter.save(&snapshot).map(drop).map_err(Into::into)
        })?);
        times[2].push(timed(|| bare_read(&bare, bytes))?);
        times[3].push(timed(|| {
            let loaded = snapshotter.load(1000 + round, 2)?;
            assert_eq!(loaded.data.len(), bytes);
            Ok(())
        })?);
    }
    let [bare_write, save, bare_read, load] = times.map(median);
    let mib = size_mib as f64;
    println!("snapshot of {size_mib} MiB, median of {ROUNDS} rounds (reads hit the page cache)");
    println!("bare write+fsync  {:8.1} MiB/s", mib / bare_write);
    println!(
        "save              {:8.1} MiB/s  ({:.2}x bare time)",
        mib / save,
        save / bare_write
    );
    println!("bare read         {:8.1} MiB/s", mib / bare_read);
    println!(
        "load (CRC check)  {:8.1} MiB/s  ({:.2}x bare time)",
        mib / load,
        load / bare_read
    );
    Ok(())
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn timed(f: impl FnOnce() -> Res) -> Result<f64, Box<dyn std::error::Error>> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed().as_secs_f64())
}

fn bare_write(path: &Path, data: &[u8]) -> Res {
    let mut file = File::create(path)?;
    file.write_all(data)?;
    file.sync_all()?;
    Ok(())
}

fn bare_read(path: &Path, bytes: usize) -> Res {
    let mut buf = vec![0; bytes];
    File::open(path)?.read_exact(&mut buf)?;
    Ok(())
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
