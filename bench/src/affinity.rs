//! CPU affinity for section 12's split placement: the consumer and everything that serves it
//! on one CPU, the record-processor children on another, so that the children's CPU is theirs
//! alone and the daemon's cannot come out of it.

use anyhow::{bail, Result};
use std::io;

/// A set of CPUs, for `sched_setaffinity(2)`.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// Just `cpu`.
    pub fn one(cpu: usize) -> CpuSet {
        Self::of(std::iter::once(cpu))
    }

    /// The set thread `tid` (0: the calling thread) may run on now.
    pub fn of_thread(tid: libc::pid_t) -> io::Result<CpuSet> {
        // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the pointer and size describe `set`, which outlives the call.
        let rc = unsafe {
            libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
        };
        if rc == 0 {
            Ok(CpuSet(set))
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn of(cpus: impl Iterator<Item = usize>) -> CpuSet {
        // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for cpu in cpus {
            // SAFETY: CPU_SET only writes inside the set (a CPU beyond its 1,024 panics on the
            // index check).
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        CpuSet(set)
    }

    /// Applies the set to thread `tid` (0: the calling thread). Async-signal-safe (one
    /// syscall), so usable between `fork` and `exec`.
    pub fn apply(&self, tid: libc::pid_t) -> io::Result<()> {
        // SAFETY: the pointer and size describe `self.0`, which outlives the call.
        let rc = unsafe {
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &self.0)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Applies the set to every thread of process `pid` (threads it starts later inherit their
    /// creator's set).
    pub fn apply_to_process(&self, pid: u32) -> Result<()> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
        let mut applied = 0;
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread may have exited since the listing.
            if self.apply(tid).is_ok() {
                applied += 1;
            }
        }
        if applied == 0 {
            bail!("could not set the CPU affinity of any thread of process {pid}");
        }
        Ok(())
    }
}

/// Runs `f` with the calling thread on `cpus` (threads `f` starts keep that set), then puts the
/// thread back on the CPUs it had.
pub fn with_thread_on<T>(cpus: CpuSet, f: impl FnOnce() -> T) -> io::Result<T> {
    let before = CpuSet::of_thread(0)?;
    cpus.apply(0)?;
    let out = f();
    before.apply(0)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's `Cpus_allowed_list`.
    fn allowed() -> String {
        std::fs::read_to_string("/proc/thread-self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn a_thread_started_while_pinned_stays_pinned_and_the_caller_is_restored() {
        let cpus = crate::machine::cpus();
        assert!(cpus >= 1);
        let pinned = cpus.min(2) - 1;
        std::thread::spawn(move || {
            let all = allowed();
            let inner = with_thread_on(CpuSet::one(pinned), || {
                assert_eq!(allowed(), pinned.to_string());
                std::thread::spawn(allowed).join().unwrap()
            })
            .unwrap();
            assert_eq!(inner, pinned.to_string());
            assert_eq!(allowed(), all);
        })
        .join()
        .unwrap();
    }
}
