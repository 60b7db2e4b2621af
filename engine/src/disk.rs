//! The free-disk reserve and the NOSPACE alarm. A task checks the free space of the data dirs
//! once a second. Two levels:
//! - **below the reserve** (`--free-disk-reserve-bytes`) the member raises a NOSPACE alarm
//!   through the log (as etcd does); while any member's alarm is raised, every member refuses
//!   writes that grow the data with 507 (known not applied). Reads and deletes keep working,
//!   and the member clears its alarm once space is back;
//! - **below the floor** (a quarter of the reserve) the member also stops taking appends and
//!   snapshots from the leader (the peer server answers 507) and refuses every proposal of its
//!   own: it stays up, serves serializable reads and lags, and its WAL never meets ENOSPC.
//!
//! A write the raft thread must make (a hard state, a conf change, the alarm itself) uses the
//! room between the floor and the full disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Members whose NOSPACE alarm is raised, as the raft thread last applied them.
    alarms: Mutex<Vec<u64>>,
}

/// Why writes that grow the data are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSpace {
    /// This node's own disk is below its reserve.
    Local {
        /// Free bytes.
        free: u64,
        /// The reserve.
        reserve: u64,
    },
    /// These members raised the NOSPACE alarm.
    Alarm(Vec<u64>),
}

impl std::fmt::Display for NoSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoSpace::Local { free, reserve } => write!(
                f,
                "this node's disk has {free} bytes free, below its reserve of {reserve} bytes \
                 (--free-disk-reserve-bytes): free some space; reads and deletes still work"
            ),
            NoSpace::Alarm(members) => write!(
                f,
                "the NOSPACE alarm is raised by member(s) {members:?}, whose disk is below its \
                 reserve (--free-disk-reserve-bytes): free space there; reads and deletes still \
                 work, and the alarm clears by itself"
            ),
        }
    }
}

impl DiskSpace {
    /// Watches `dirs` against `reserve` bytes; measures once now.
    pub fn new(dirs: Vec<PathBuf>, reserve: u64) -> Arc<DiskSpace> {
        let space = Arc::new(DiskSpace {
            dirs,
            reserve,
            free: AtomicU64::new(u64::MAX),
            alarms: Mutex::new(Vec::new()),
        });
        space.measure();
        space
    }

    /// `Some(free bytes)` when the smallest free space is below the reserve.
    pub fn low(&self) -> Option<u64> {
        let free = self.free.load(Ordering::Relaxed);
        (free < self.reserve).then_some(free)
    }

    /// The smallest free space among the dirs, as last measured.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// The reserve, in bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// The floor: a quarter of the reserve.
    pub fn floor(&self) -> u64 {
        self.reserve / 4
    }

    /// `Some(free bytes)` when the smallest free space is below the floor.
    pub fn below_floor(&self) -> Option<u64> {
        let free = self.free.load(Ordering::Relaxed);
        (free < self.floor()).then_some(free)
    }

    /// Publishes the members whose alarm is raised (raft thread).
    pub fn set_alarms(&self, members: Vec<u64>) {
        *self.alarms.lock().unwrap_or_else(|e| e.into_inner()) = members;
    }

    /// Members whose NOSPACE alarm is raised.
    pub fn alarms(&self) -> Vec<u64> {
        self.alarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why writes that grow the data must be refused now, if they must: this node's disk
    /// first, then the cluster's alarm.
    pub fn no_space(&self) -> Option<NoSpace> {
        if let Some(free) = self.low() {
            return Some(NoSpace::Local {
                free,
                reserve: self.reserve,
            });
        }
        let alarms = self.alarms();
        (!alarms.is_empty()).then_some(NoSpace::Alarm(alarms))
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
