//! Child processes that cannot outlive the test process.
//!
//! Three layers, because a `static` instance is never dropped:
//! 1. [`ServiceProcess`] kills (SIGKILL) and reaps its child on drop, which also runs when a test
//!    panics and unwinds.
//! 2. On Linux every child is spawned with `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so the kernel kills
//!    it when its parent dies, however the parent dies (normal exit with a `static` still holding
//!    the guard, a panic that aborts, SIGKILL). The "parent" of PDEATHSIG is the *thread* that
//!    forked, so all children are spawned from one dedicated thread that never exits.
//! 3. The Node.js preload of kinesis-local also exits when its parent process id changes.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so `recv` only fails if that changes; even then
                // this thread must not exit (its death would kill the children).
                while let Ok(mut req) = rx.recv() {
                    let _ = req.reply.send(req.command.spawn());
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("cannot start the testkit spawner thread");
        tx
    })
}

/// Spawns `command` from the long-lived spawner thread, tied to the life of this process (see
/// the module docs). Blocks only for the fork/exec.
pub(crate) fn spawn_tied(mut command: Command) -> io::Result<Child> {
    tie_to_parent(&mut command);
    let (reply, rx) = mpsc::channel();
    spawner()
        .send(SpawnRequest { command, reply })
        .map_err(|_| io::Error::other("the testkit spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the testkit spawner thread did not answer"))?
}

#[cfg(target_os = "linux")]
fn tie_to_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody will signal us.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn tie_to_parent(_command: &mut Command) {}

/// A running service child process; killed and reaped on drop.
pub(crate) struct ServiceProcess {
    name: String,
    pid: u32,
    child: Mutex<Child>,
    log: PathBuf,
}

impl ServiceProcess {
    /// Spawns `command` (tied to this process) with stdout and stderr appended to `log`.
    pub(crate) fn spawn(name: &str, mut command: Command, log: &Path) -> io::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        command
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn_tied(command)?;
        Ok(ServiceProcess {
            name: name.to_string(),
            pid: child.id(),
            child: Mutex::new(child),
            log: log.to_path_buf(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    /// The last `max_lines` lines of the process's output.
    pub(crate) fn log_tail(&self, max_lines: usize) -> String {
        log_tail(&self.log, max_lines)
    }

    pub(crate) fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
        tracing::debug!(service = %self.name, pid = self.pid, "stopped");
    }
}

/// The last `max_lines` lines of a log file (at most 64 KiB are read), or a note why not.
pub(crate) fn log_tail(path: &Path, max_lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let read = || -> io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(max_lines)..];
            if tail.is_empty() {
                format!("({} is empty)", path.display())
            } else {
                format!("last lines of {}:\n{}", path.display(), tail.join("\n"))
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_kills_and_reaps() {
        let dir = std::env::temp_dir().join(format!("testkit-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("sleep.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; exec sleep 600"]);
        let p = ServiceProcess::spawn("sleep", cmd, &log).unwrap();
        let pid = p.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        assert!(p.exited().is_none());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !p.log_tail(5).contains("started") {
            assert!(std::time::Instant::now() < deadline, "{}", p.log_tail(5));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(p);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
