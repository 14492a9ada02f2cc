//! Where `executableName`'s program lives: resolved as a shell would, checked before any shard
//! starts.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The executable file `program` names: a path when it contains `/` (relative to the working
/// directory), else the first match on `path_var` (`PATH`). The error says what was looked for
/// and why nothing matched.
pub fn resolve(program: &str, path_var: Option<&OsStr>) -> Result<PathBuf, String> {
    if program.is_empty() {
        return Err("the command is empty".into());
    }
    if program.contains('/') {
        let path = PathBuf::from(program);
        return check(&path).map(|()| path).map_err(|why| {
            let cwd = std::env::current_dir()
                .map(|d| format!(" (working directory {})", d.display()))
                .unwrap_or_default();
            format!("{program}: {why}{cwd}")
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
            Err(why) if candidate.exists() => {
                rejected.push(format!("{}: {why}", candidate.display()))
            }
            Err(_) => {}
        }
    }
    if rejected.is_empty() {
        Err(format!(
            "program {program:?} was not found on PATH ({}); give its path (e.g. ./{program} or /usr/bin/{program}) or install it",
            if dirs.is_empty() { "PATH is empty".to_string() } else { std::env::join_paths(&dirs).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default() }
        ))
    } else {
        Err(format!(
            "program {program:?} is on PATH but cannot be run: {}",
            rejected.join("; ")
        ))
    }
}

fn check(path: &Path) -> Result<(), &'static str> {
    let meta = std::fs::metadata(path).map_err(|_| "no such file")?;
    if !meta.is_file() {
        return Err("not a file");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("not executable (chmod +x, or run it through its interpreter, e.g. `python3 app.py`)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

        let e = resolve("pyhton3", Some(&path)).unwrap_err();
        assert!(
            e.contains("\"pyhton3\" was not found on PATH") && e.contains("/nonexistent"),
            "{e}"
        );
        let e = resolve("data.txt", Some(&path)).unwrap_err();
        assert!(
            e.contains("cannot be run") && e.contains("not executable"),
            "{e}"
        );
        let e = resolve(plain.to_str().unwrap(), None).unwrap_err();
        assert!(e.contains("not executable"), "{e}");
        let e = resolve("./missing/app.py", None).unwrap_err();
        assert!(
            e.contains("no such file") && e.contains("working directory"),
            "{e}"
        );
        let e = resolve(dir.to_str().unwrap(), None).unwrap_err();
        assert!(e.contains("not a file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
