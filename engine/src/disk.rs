//! The free-disk reserve: a task checks the free space of the data dirs once a second, so that
//! applications refuse data-growing writes (507) *before* the disk fills, while reads and
//! deletes keep working. The WAL's own writes never check: a write the raft thread must make
//! (a delete, a heartbeat's commit, a conf change) still has the reserve to use.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the free space is checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The free space of the data dirs, as last measured (shared with handles).
#[derive(Debug)]
pub struct DiskSpace {
    dirs: Vec<PathBuf>,
    reserve: u64,
    /// The smallest free space among the dirs, in bytes (`u64::MAX` until measured).
    free: AtomicU64,
}

impl DiskSpace {
    /// Watches `dirs` against `reserve` bytes; measures once now.
    pub fn new(dirs: Vec<PathBuf>, reserve: u64) -> Arc<DiskSpace> {
        let space = Arc::new(DiskSpace {
            dirs,
            reserve,
            free: AtomicU64::new(u64::MAX),
        });
        space.measure();
        space
    }

    /// `Some(free bytes)` when the smallest free space is below the reserve.
    pub fn low(&self) -> Option<u64> {
        let free = self.free.load(Ordering::Relaxed);
        (free < self.reserve).then_some(free)
    }

    /// The reserve, in bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    fn measure(&self) {
        let free = self
            .dirs
            .iter()
            .filter_map(|d| free_bytes(d))
            .min()
            .unwrap_or(u64::MAX);
        self.free.store(free, Ordering::Relaxed);
    }

    /// Re-measures every second, forever (spawn it on the runtime).
    pub async fn watch(self: Arc<DiskSpace>) {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        loop {
            tick.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.measure()).await;
        }
    }
}

/// Bytes available to unprivileged writers on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes one struct that we own; `path` is a valid C string.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}
