//! Where `executableName`'s program lives: resolved as a shell would, checked before any shard
//! starts.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Why a file cannot be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// Nothing is there.
    #[error("no such file")]
    Missing,
    /// A directory or other non-file.
    #[error("not a file")]
    NotAFile,
    /// No execute permission.
    #[error("not executable (chmod +x, or run it through its interpreter, e.g. `python3 app.py`)")]
    NotExecutable,
}

/// Why `executableName`'s program cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// `executableName` names no program.
    #[error("the command is empty")]
    Empty,
    /// The program is given by path, and that file cannot be run.
    #[error("{program}: {why}{}", .working_directory.as_ref().map(|d| format!(" (working directory {})", d.display())).unwrap_or_default())]
    Path {
        /// The program as written.
        program: String,
        /// Why it cannot be run.
        #[source]
        why: Unusable,
        /// The directory a relative path is taken from.
        working_directory: Option<PathBuf>,
    },
    /// No directory of `PATH` has the program.
    #[error("program {program:?} was not found on PATH ({}); give its path (e.g. ./{program} or /usr/bin/{program}) or install it", if .path.is_empty() { "PATH is empty" } else { .path.as_str() })]
    NotOnPath {
        /// The program as written.
        program: String,
        /// The directories searched, joined as in `PATH` (empty when there were none).
        path: String,
    },
    /// Files of that name are on `PATH`, but none can be run.
    #[error("program {program:?} is on PATH but cannot be run: {}", .rejected.iter().map(|(p, why)| format!("{}: {why}", p.display())).collect::<Vec<_>>().join("; "))]
    NotRunnable {
        /// The program as written.
        program: String,
        /// The files found, each with why it cannot be run.
        rejected: Vec<(PathBuf, Unusable)>,
    },
}

/// The executable file `program` names: a path when it contains `/` (relative to the working
/// directory), else the first match on `path_var` (`PATH`). The error says what was looked for
/// and why nothing matched.
pub fn resolve(program: &str, path_var: Option<&OsStr>) -> Result<PathBuf, ResolveError> {
    if program.is_empty() {
        return Err(ResolveError::Empty);
    }
    if program.contains('/') {
        let path = PathBuf::from(program);
        return check(&path)
            .map(|()| path)
            .map_err(|why| ResolveError::Path {
                program: program.to_string(),
                why,
                working_directory: std::env::current_dir().ok(),
            });
    }
    let dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    let mut rejected = Vec::new();
    for dir in &dirs {
        let candidate = dir.join(program);
        match check(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(why) if candidate.exists() => rejected.push((candidate, why)),
            Err(_) => {}
        }
    }
    if rejected.is_empty() {
        Err(ResolveError::NotOnPath {
            program: program.to_string(),
            path: std::env::join_paths(&dirs)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    } else {
        Err(ResolveError::NotRunnable {
            program: program.to_string(),
            rejected,
        })
    }
}

fn check(path: &Path) -> Result<(), Unusable> {
    let meta = std::fs::metadata(path).map_err(|_| Unusable::Missing)?;
    if !meta.is_file() {
        return Err(Unusable::NotAFile);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(Unusable::NotExecutable);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_err(program: &str, path_var: Option<&OsStr>) -> String {
        resolve(program, path_var).unwrap_err().to_string()
    }

    #[test]
    fn resolves_through_path_and_explains_failures() {
        let dir = std::env::temp_dir().join(format!("kcl-exe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("app");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = dir.join("data.txt");
        std::fs::write(&plain, "x").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let path = std::env::join_paths([Path::new("/nonexistent"), &dir]).unwrap();
        assert_eq!(resolve("app", Some(&path)).unwrap(), exe);
        assert_eq!(resolve(exe.to_str().unwrap(), None).unwrap(), exe);

        let e = resolve_err("pyhton3", Some(&path));
        assert!(
            e.contains("\"pyhton3\" was not found on PATH") && e.contains("/nonexistent"),
            "{e}"
        );
        let e = resolve_err("data.txt", Some(&path));
        assert!(
            e.contains("cannot be run") && e.contains("not executable"),
            "{e}"
        );
        let e = resolve_err(plain.to_str().unwrap(), None);
        assert!(e.contains("not executable"), "{e}");
        let e = resolve_err("./missing/app.py", None);
        assert!(
            e.contains("no such file") && e.contains("working directory"),
            "{e}"
        );
        let e = resolve_err(dir.to_str().unwrap(), None);
        assert!(e.contains("not a file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
