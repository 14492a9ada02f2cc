//! A child's stdin written by an OS thread of its own, so that a large `processRecords` line
//! reaches the child at the pace the child reads it, whatever the runtime is doing meanwhile.
//!
//! A `processRecords` line is large (10,000 records of 1 KiB make a 15.6 MB line) and goes
//! through a 64 KiB pipe, which the child drains a few KiB per read. Written from the runtime,
//! every refill of the pipe waits for a runtime thread to poll the writing task, and the same
//! threads decode the GetRecords responses of every shard, each a poll of tens of milliseconds
//! at 1 KiB records: the children sit before empty pipes for the whole of it, and all of them at
//! once, since the shards' batches fall due together. Bench section 12 (8 shards, the daemon on
//! one CPU and the 8 kclpy children on the other) measured the children's CPU busy 65 to 80 % of
//! the time with the runtime writing; with a thread per child blocked in `write(2)` (which the
//! kernel wakes as soon as the child frees pipe space) 95 to 99 %. The Java MultiLangDaemon also
//! writes from a thread per child.
//!
//! The pipe is also enlarged to [`PIPE_CAPACITY`] where the system allows it
//! (see [`pipe_capacity`]): the child's reads then rarely find it empty, and the writer
//! thread is woken less often. In the same runs a child's waits while reading a line fell from
//! 23 to 35 to 5 or 6, and its CPU per line by about a tenth.
//!
//! The thread takes each line by value (no copy of the line), writes lines whole and in the
//! order they were handed over, and ends, closing the pipe (EOF for the child), when the
//! [`ThreadedStdin`] is closed or dropped and the lines before are written, or at the first
//! failed write (a child that exited: `EPIPE`). A line whose future is dropped before it is
//! written is still written: the driver stops using a child after any failure, and the daemon
//! kills it, which ends a write that blocks.

use crate::driver::ChildInput;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Stack of a writer thread: it only calls `write(2)`.
const STACK_SIZE: usize = 128 * 1024;

/// One line for the thread, and where to say how its write went.
struct Job {
    line: Vec<u8>,
    done: oneshot::Sender<io::Result<()>>,
}

/// The write end of a child's stdin pipe, written by a thread of its own (see the module
/// documentation).
#[derive(Debug)]
pub struct ThreadedStdin {
    /// `None` once closed.
    jobs: Option<mpsc::Sender<Job>>,
}

impl ThreadedStdin {
    /// Takes over `stdin` (the runtime no longer polls it) and starts its writer thread.
    pub fn new(stdin: tokio::process::ChildStdin) -> io::Result<Self> {
        Self::from_fd(stdin.into_owned_fd()?)
    }

    /// Writes to the pipe (or any file) `fd` from a new thread; `fd` is made blocking.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        set_blocking(&fd)?;
        let enlarged = pipe_capacity::enlarge(&fd);
        let file = File::from(fd);
        let (jobs, queue) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("kcl-child-stdin".into())
            .stack_size(STACK_SIZE)
            .spawn(move || {
                write_lines(file, queue);
                // The file is closed: the pipe's capacity goes back to the budget.
                drop(enlarged);
            });
        spawned?;
        Ok(ThreadedStdin { jobs: Some(jobs) })
    }
}

/// The writer thread: each line whole, in order, until the queue closes or a write fails.
/// Returns with the file closed.
fn write_lines(mut file: File, queue: mpsc::Receiver<Job>) {
    while let Ok(Job { line, done }) = queue.recv() {
        let written = file.write_all(&line);
        drop(line);
        let failed = written.is_err();
        let _ = done.send(written);
        if failed {
            return;
        }
    }
}

/// Clears `O_NONBLOCK` (tokio opens its pipes non-blocking).
fn set_blocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows, reading and setting its status flags.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags & !libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the child's stdin is closed (a write to it failed, or it was closed)",
    )
}

#[async_trait::async_trait]
impl ChildInput for ThreadedStdin {
    async fn write_line(&mut self, line: Vec<u8>) -> io::Result<()> {
        let (done, written) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or_else(closed)?
            .send(Job { line, done })
            .map_err(|_| closed())?;
        // The thread ends without answering only after an earlier write failed.
        written.await.unwrap_or_else(|_| Err(closed()))
    }

    async fn close(&mut self) -> io::Result<()> {
        // The thread writes what it was given, then drops the file: EOF for the child.
        self.jobs = None;
        Ok(())
    }
}

pub use pipe_capacity::PIPE_CAPACITY;

/// Enlarging the children's stdin pipes, within a budget for the whole daemon.
///
/// Linux counts pipe capacity per user: once a user's pipes hold more than
/// `fs.pipe-user-pages-soft` (64 MiB by default), every new pipe of that user (in any of its
/// processes) gets two pages only, and enlarging fails. The daemon's enlarged pipes therefore
/// hold at most [`BUDGET`](pipe_capacity::BUDGET) together; the pipes past it keep the
/// kernel's default capacity (64 KiB), which only makes them slower.
pub mod pipe_capacity {
    use std::os::fd::OwnedFd;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The capacity asked for each child's stdin pipe: 1 MiB (Linux's default
    /// `fs.pipe-max-size`, the most an unprivileged process may ask for).
    pub const PIPE_CAPACITY: usize = 1 << 20;
    /// The most capacity the daemon's enlarged pipes hold at once: 16 MiB, a quarter of
    /// Linux's default per-user soft limit (16 children's pipes at [`PIPE_CAPACITY`]).
    pub const BUDGET: usize = 16 << 20;

    static IN_USE: AtomicUsize = AtomicUsize::new(0);

    /// A pipe's share of the budget, given back when dropped (once the pipe is closed).
    #[derive(Debug)]
    pub struct Enlarged(usize);

    impl Drop for Enlarged {
        fn drop(&mut self) {
            IN_USE.fetch_sub(self.0, Ordering::SeqCst);
        }
    }

    /// Capacity held by the enlarged pipes now.
    pub fn in_use() -> usize {
        IN_USE.load(Ordering::SeqCst)
    }

    /// Enlarges the pipe `fd` to [`PIPE_CAPACITY`] if the budget has room and the system
    /// allows it; `None` leaves it as it was (also for a descriptor that is not a pipe).
    pub fn enlarge(fd: &OwnedFd) -> Option<Enlarged> {
        IN_USE
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used + PIPE_CAPACITY <= BUDGET).then_some(used + PIPE_CAPACITY)
            })
            .ok()?;
        let share = Enlarged(PIPE_CAPACITY);
        set_capacity(fd).then_some(share)
    }

    #[cfg(target_os = "linux")]
    fn set_capacity(fd: &OwnedFd) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor this function borrows, asking the kernel to resize
        // the pipe's buffer; it fails without effect on anything else.
        let capacity = unsafe {
            libc::fcntl(
                fd.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_CAPACITY as libc::c_int,
            )
        };
        capacity >= PIPE_CAPACITY as libc::c_int
    }

    #[cfg(not(target_os = "linux"))]
    fn set_capacity(_: &OwnedFd) -> bool {
        false
    }
}

#[cfg(test)]
mod tests;
