//! The real KCL MultiLang client packages, for end-to-end tests of the MultiLangDaemon:
//! amazon-kclpy (Python) and aws-kcl (Node), at pinned versions, installed once into the
//! testkit cache (outside the work tree, next to the emulators).
//!
//! * [`kclpy`]: the amazon-kclpy 3.2.0 **sdist** from PyPI (`pip download --no-deps
//!   --no-binary :all:`), checked against its sha256 and unpacked; it is used from `PYTHONPATH`.
//!   `pip install amazon-kclpy` cannot work here: its build downloads the Java KCL jars from
//!   Maven Central, which this machine cannot reach. The Python modules need only the
//!   standard library.
//! * [`aws_kcl_node`]: `npm install aws-kcl@2.3.2` (no install scripts; the jars are fetched
//!   only by its `kcl-bootstrap` command, which is not used).
//!
//! Both install under an exclusive file lock into a temporary directory that is renamed into
//! place when complete, so concurrent test processes neither install twice nor see half an
//! install. Missing `python3`, `pip` or `npm` is an error that says what to install; nothing
//! is skipped silently.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::install::{self, hex, tail, Package};

/// The pinned amazon-kclpy version.
pub const KCLPY_VERSION: &str = "3.2.0";
/// sha256 of `amazon_kclpy-3.2.0.tar.gz` on PyPI.
pub const KCLPY_SDIST_SHA256: &str =
    "62e81cc84714c920fe6aa5d61837b298fe7e01f6326dcb564b12ab8e6c4aca4e";
/// The pinned aws-kcl (npm) version: the newest the registry offers (`lib/` is identical to
/// the git repository's 3.1.1).
pub const AWS_KCL_VERSION: &str = "2.3.2";

const AWS_KCL: Package = Package {
    name: "aws-kcl",
    version: AWS_KCL_VERSION,
    check_file: "index.js",
};

const MARKER: &str = ".complete";
const PIP_DEADLINE: Duration = Duration::from_secs(300);

/// amazon-kclpy, unpacked from its sdist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KclPy {
    /// The unpacked sdist directory (`.../amazon_kclpy-3.2.0`): put it on `PYTHONPATH`.
    pub pythonpath: PathBuf,
    /// The unmodified sample processor, `<pythonpath>/samples/sample_kclpy_app.py`.
    pub sample_app: PathBuf,
    /// The Python interpreter to run processors with: the real executable behind `python3`
    /// (`sys.executable`, so version-manager shims are not in the way of every child start).
    pub python: PathBuf,
}

impl KclPy {
    /// The `PYTHONPATH` value for a child: the sdist directory, then any inherited entries.
    pub fn pythonpath_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.pythonpath.clone()];
        if let Some(old) = std::env::var_os("PYTHONPATH") {
            paths.extend(std::env::split_paths(&old));
        }
        std::env::join_paths(paths).unwrap_or_else(|_| self.pythonpath.clone().into_os_string())
    }
}

/// amazon-kclpy 3.2.0, downloaded and unpacked on first use (blocking: file lock + pip).
/// The result is remembered for the rest of the process.
pub fn kclpy() -> Result<KclPy> {
    static CACHED: OnceLock<std::result::Result<KclPy, String>> = OnceLock::new();
    CACHED
        .get_or_init(|| install_kclpy().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("amazon-kclpy {KCLPY_VERSION}: {e}"))
}

/// The `node_modules` directory that contains `aws-kcl` 2.3.2 (use it as `NODE_PATH`),
/// installed with npm on first use (blocking). Remembered for the rest of the process.
pub fn aws_kcl_node() -> Result<PathBuf> {
    static CACHED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    CACHED
        .get_or_init(|| install_aws_kcl().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("aws-kcl {AWS_KCL_VERSION}: {e}"))
}

/// `node` on `PATH`, or an error that says how to get it.
pub fn node() -> Result<PathBuf> {
    which("node").ok_or_else(|| {
        anyhow!(
            "`node` not found on PATH: the aws-kcl tests need Node.js 18+ \
             (`apt-get install nodejs npm` on Debian/Ubuntu, or https://nodejs.org)"
        )
    })
}

/// The real Python 3 interpreter behind `python3` on `PATH` (its `sys.executable`).
pub fn python3() -> Result<PathBuf> {
    static CACHED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    CACHED
        .get_or_init(|| find_python().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("{e}"))
}

fn find_python() -> Result<PathBuf> {
    let shim = which("python3").ok_or_else(|| {
        anyhow!(
            "`python3` not found on PATH: the amazon-kclpy tests need Python 3.8+ with pip \
             (`apt-get install python3 python3-pip` on Debian/Ubuntu)"
        )
    })?;
    let out = Command::new(&shim)
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", shim.display()))?;
    if !out.status.success() {
        bail!(
            "{} -c 'import sys' failed ({}): {}",
            shim.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(if exe.is_file() { exe } else { shim })
}

fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn install_aws_kcl() -> Result<PathBuf> {
    node()?;
    let npm = which("npm").ok_or_else(|| {
        anyhow!(
            "`npm` not found on PATH: installing aws-kcl needs npm \
             (`apt-get install npm` on Debian/Ubuntu)"
        )
    })?;
    let root = install::cache_root()?;
    let installed = install::ensure_installed(&npm, &root, &AWS_KCL)?;
    let node_modules = installed
        .dir
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("unexpected aws-kcl location {}", installed.dir.display()))?;
    Ok(node_modules)
}

/// `<cache>/amazon-kclpy@3.2.0/amazon_kclpy-3.2.0/` plus a `.complete` marker.
fn install_kclpy() -> Result<KclPy> {
    let python = python3()?;
    let root = install::cache_root()?;
    let target = root.join(format!("amazon-kclpy@{KCLPY_VERSION}"));
    let sdist_dir = target.join(format!("amazon_kclpy-{KCLPY_VERSION}"));
    let result = |python: PathBuf| KclPy {
        sample_app: sdist_dir.join("samples").join("sample_kclpy_app.py"),
        pythonpath: sdist_dir.clone(),
        python,
    };
    let complete = |t: &Path| {
        t.join(MARKER).is_file()
            && t.join(format!("amazon_kclpy-{KCLPY_VERSION}"))
                .join("amazon_kclpy")
                .join("kcl.py")
                .is_file()
    };
    install::install_once(
        &root,
        &format!("amazon-kclpy@{KCLPY_VERSION}"),
        complete,
        |dir| download_and_unpack(&python, dir),
    )?;
    Ok(result(python))
}

fn download_and_unpack(python: &Path, dir: &Path) -> Result<()> {
    let dl = dir.join("dl");
    let log = dir.join("pip.log");
    let out = File::create(&log)?;
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ])
    .arg(format!("amazon-kclpy=={KCLPY_VERSION}"))
    .arg("-d")
    .arg(&dl)
    .stdin(Stdio::null())
    .stdout(out.try_clone()?)
    .stderr(out);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {} -m pip", python.display()))?;
    let status = install::wait_within(&mut child, PIP_DEADLINE, "pip download", &log)?;
    if !status.success() {
        let text = tail(&log);
        let hint = if text.contains("No module named pip") {
            "pip is missing for this python3: `apt-get install python3-pip` (Debian/Ubuntu) \
             or `python3 -m ensurepip`"
        } else {
            "it needs the PyPI registry"
        };
        bail!(
            "`{} -m pip download` failed ({status}); {hint}:\n{text}",
            python.display()
        );
    }
    let sdist = dl.join(format!("amazon_kclpy-{KCLPY_VERSION}.tar.gz"));
    let bytes = fs::read(&sdist).with_context(|| {
        format!(
            "pip download succeeded but {} is missing:\n{}",
            sdist.display(),
            tail(&log)
        )
    })?;
    let digest = hex(&Sha256::digest(&bytes));
    if digest != KCLPY_SDIST_SHA256 {
        bail!(
            "{} has sha256 {digest}, expected {KCLPY_SDIST_SHA256}",
            sdist.display()
        );
    }
    // Unpack with Python's tarfile (the 'data' filter refuses absolute paths and links out of
    // the directory), so no `tar` binary is needed.
    let unpack = Command::new(python)
        .args([
            "-c",
            "import sys, tarfile\n\
             with tarfile.open(sys.argv[1]) as t:\n\
             \x20   kw = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}\n\
             \x20   t.extractall(sys.argv[2], **kw)\n",
        ])
        .arg(&sdist)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .context("cannot run python3 to unpack the sdist")?;
    if !unpack.status.success() {
        bail!(
            "unpacking {} failed: {}",
            sdist.display(),
            String::from_utf8_lossy(&unpack.stderr)
        );
    }
    let pkg = dir.join(format!("amazon_kclpy-{KCLPY_VERSION}"));
    // The protocol modules import only the standard library: check that they do here.
    let check = Command::new(python)
        .args([
            "-c",
            "import amazon_kclpy.kcl, amazon_kclpy.v3.processor, amazon_kclpy.messages",
        ])
        .env("PYTHONPATH", &pkg)
        .stdin(Stdio::null())
        .output()
        .context("cannot run python3 to check the unpacked amazon-kclpy")?;
    if !check.status.success() {
        bail!(
            "amazon_kclpy does not import from {}: {}",
            pkg.display(),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let _ = fs::remove_dir_all(&dl);
    let _ = fs::remove_file(&log);
    Ok(())
}

/// Process helpers for tests that drive the MultiLangDaemon binary and watch its children
/// (Linux `/proc`; signals with `kill(2)`).
pub mod procs {
    use std::path::Path;

    /// Sends SIGTERM to `pid`. False if the process does not exist (or cannot be signalled).
    pub fn sigterm(pid: u32) -> bool {
        signal(pid, libc::SIGTERM)
    }

    /// Sends SIGKILL to `pid`. False if the process does not exist (or cannot be signalled).
    pub fn sigkill(pid: u32) -> bool {
        signal(pid, libc::SIGKILL)
    }

    fn signal(pid: u32, sig: libc::c_int) -> bool {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // SAFETY: kill(2) with a positive pid only signals that one process.
        unsafe { libc::kill(pid, sig) == 0 }
    }

    /// The direct children of `pid` (from `/proc/<pid>/task/*/children`), sorted.
    pub fn children_of(pid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return out;
        };
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The process state letter from `/proc/<pid>/stat` (`R`, `S`, `Z`, ...), if it exists.
    pub fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may contain spaces: the state follows the last ')'.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// True while `pid` exists and is not a zombie.
    pub fn is_running(pid: u32) -> bool {
        !matches!(state(pid), None | Some('Z') | Some('X'))
    }

    /// The parent pid of `pid`, if it exists.
    pub fn parent_of(pid: u32) -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Resident set size of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The command line of `pid`, arguments joined with spaces.
    pub fn cmdline(pid: u32) -> Option<String> {
        let raw = std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")).ok()?;
        Some(
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    /// Makes the process spawned by `command` receive SIGKILL when the thread that spawns it
    /// exits (Linux `PR_SET_PDEATHSIG`), so a test that dies cannot leave it running. Spawn
    /// from the test's own thread (`#[tokio::test]`'s current-thread runtime), never from a
    /// pooled thread that may exit while the process should run.
    pub fn die_with_spawning_thread(command: &mut tokio::process::Command) {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // syscalls.
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
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("parent exited during spawn"));
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
        assert_eq!(hex(&Sha256::digest(b"")).len(), 64);
    }
}
