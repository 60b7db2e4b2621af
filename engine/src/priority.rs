//! CPU priorities of background work: snapshot jobs, backup streams, the reaper, and
//! `raftexample ctl snapshot save`.
//!
//! Snapshots and backups read and write whole images. On a busy host, at normal priority (and
//! even at nice 10 or 19), their bursts add milliseconds to every request that waits behind
//! them for a CPU: measured at 1M keys on 2 cores, nice 10 doubled the p99 of concurrent PUTs.
//! So they run under `SCHED_IDLE` ([`run_when_idle`]): they get the CPU time that nothing
//! else wants, and any normal thread that wakes up preempts them at once.
//!
//! `SCHED_IDLE` can starve on a host whose CPUs stay saturated by normal threads (ours or
//! anybody's), and a snapshot that never ends lets the log, the WAL and memory grow. A
//! snapshot job therefore registers its thread ([`JobThread`]), and the raft thread raises a
//! job that runs too long to nice 10 ([`JobThread::raise`]).

use std::sync::Mutex;

/// The nice value of the reaper, and of a starved snapshot job once raised.
pub const BACKGROUND_NICE: libc::c_int = 10;

fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Moves the calling thread (and the threads it starts afterwards) to `SCHED_IDLE`. Returns
/// false when the kernel refused, and then falls back to nice [`BACKGROUND_NICE`].
pub fn run_when_idle() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; moving to SCHED_IDLE needs no privilege and only
    // changes this thread's scheduling.
    let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
    if !idle {
        run_at_low_priority();
    }
    idle
}

/// Lowers the calling thread to nice [`BACKGROUND_NICE`] (about a tenth of a normal thread's
/// share when they compete), for short background work that must not starve (the reaper).
pub fn run_at_low_priority() {
    // SAFETY: setpriority on this thread's own ID only changes its scheduling weight; a
    // failure leaves the priority as it was, which is harmless.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, gettid() as libc::id_t, BACKGROUND_NICE);
    }
}

/// The thread running the current snapshot job, if any.
#[derive(Debug, Default)]
pub struct JobThread {
    tid: Mutex<Option<libc::pid_t>>,
}

/// Registration of the calling thread as the job's; clears it when dropped.
pub struct Registered<'a>(&'a JobThread);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        *self.0.tid.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl JobThread {
    /// Registers the calling thread until the guard drops. The thread ID is only ever used
    /// under the lock that the drop takes, so it never names a thread that has exited.
    pub fn register(&self) -> Registered<'_> {
        *self.tid.lock().unwrap_or_else(|e| e.into_inner()) = Some(gettid());
        Registered(self)
    }

    /// Moves the registered thread from `SCHED_IDLE` to normal scheduling at nice
    /// [`BACKGROUND_NICE`]. `Ok(false)` when no thread is registered, or when it is
    /// registering or leaving right now (the caller tries again later): the lock is only
    /// tried, so the raft thread never waits for an idle thread that holds it.
    ///
    /// # Errors
    /// The kernel's refusal: an unprivileged process may leave `SCHED_IDLE` only within its
    /// `RLIMIT_NICE` (systemd's `LimitNICE=`), so EPERM is likely without it.
    pub fn raise(&self) -> std::io::Result<bool> {
        let tid = match self.tid.try_lock() {
            Ok(tid) => tid,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
        };
        let Some(tid) = *tid else {
            return Ok(false);
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `tid` is a live thread of this process: it clears itself under this lock
        // before it exits. Both calls only change that thread's scheduling.
        unsafe {
            if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE) != 0
                || libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn policy_and_nice(tid: libc::pid_t) -> (libc::c_int, libc::c_int) {
        // SAFETY: plain queries about a thread of this process.
        unsafe {
            (
                libc::sched_getscheduler(tid),
                libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t),
            )
        }
    }

    // Intent: a job thread moves itself to SCHED_IDLE, and another thread can raise it back
    // to normal scheduling at nice 10 while it runs; once it is gone, raising is a no-op.
    #[test]
    fn idle_job_is_raised_while_registered() {
        let job = Arc::new(JobThread::default());
        let (to_main, from_job) = std::sync::mpsc::channel();
        let (to_job, from_main) = std::sync::mpsc::channel::<()>();
        let worker = {
            let job = job.clone();
            std::thread::spawn(move || {
                assert!(run_when_idle(), "SCHED_IDLE refused");
                let _registered = job.register();
                to_main.send(gettid()).unwrap();
                from_main.recv().unwrap();
            })
        };
        let tid = from_job.recv().unwrap();
        assert_eq!(policy_and_nice(tid).0, libc::SCHED_IDLE);
        assert!(job.raise().unwrap());
        assert_eq!(policy_and_nice(tid), (libc::SCHED_OTHER, BACKGROUND_NICE));
        to_job.send(()).unwrap();
        worker.join().unwrap();
        assert!(!job.raise().unwrap());
    }
}
