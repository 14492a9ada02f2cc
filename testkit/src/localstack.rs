//! The `LocalStack` backend: a Docker daemon probe and a LocalStack container via testcontainers.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use testcontainers_modules::localstack::LocalStack;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Where a Docker daemon might listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DockerAddr {
    Unix(PathBuf),
    /// `host:port`; `tls`: only a TCP connect is checked (no TLS handshake here).
    Tcp {
        addr: String,
        tls: bool,
    },
}

/// Candidate daemon addresses: `DOCKER_HOST` alone when set, else the usual socket paths
/// (system, rootless, Docker Desktop).
pub(crate) fn candidates(
    docker_host: Option<String>,
    tls_verify: bool,
    xdg_runtime_dir: Option<String>,
    home: Option<String>,
) -> Vec<DockerAddr> {
    if let Some(host) = docker_host.filter(|h| !h.is_empty()) {
        if let Some(path) = host.strip_prefix("unix://") {
            return vec![DockerAddr::Unix(PathBuf::from(path))];
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/').to_string();
            let tls = tls_verify || addr.ends_with(":2376");
            return vec![DockerAddr::Tcp { addr, tls }];
        }
        tracing::debug!(%host, "DOCKER_HOST scheme not probed (only unix:// and tcp://)");
        return Vec::new();
    }
    let mut v = vec![DockerAddr::Unix(PathBuf::from("/var/run/docker.sock"))];
    if let Some(x) = xdg_runtime_dir.filter(|x| !x.is_empty()) {
        v.push(DockerAddr::Unix(PathBuf::from(x).join("docker.sock")));
    }
    if let Some(h) = home.filter(|h| !h.is_empty()) {
        v.push(DockerAddr::Unix(
            PathBuf::from(h).join(".docker/run/docker.sock"),
        ));
    }
    v
}

/// True if a Docker daemon answers `GET /_ping` within a second. Never hangs.
pub(crate) fn daemon_answers() -> bool {
    let env = |k: &str| std::env::var(k).ok();
    let tls = env("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty() && v != "0");
    candidates(env("DOCKER_HOST"), tls, env("XDG_RUNTIME_DIR"), env("HOME"))
        .iter()
        .any(ping)
}

fn ping(addr: &DockerAddr) -> bool {
    let result = match addr {
        DockerAddr::Unix(path) => std::os::unix::net::UnixStream::connect(path).and_then(|s| {
            s.set_read_timeout(Some(PROBE_TIMEOUT))?;
            s.set_write_timeout(Some(PROBE_TIMEOUT))?;
            http_ping(s)
        }),
        DockerAddr::Tcp { addr, tls } => {
            use std::net::ToSocketAddrs;
            addr.to_socket_addrs().and_then(|mut addrs| {
                let sock = addrs
                    .next()
                    .ok_or_else(|| std::io::Error::other("no address"))?;
                let s = std::net::TcpStream::connect_timeout(&sock, PROBE_TIMEOUT)?;
                if *tls {
                    return Ok(true);
                }
                s.set_read_timeout(Some(PROBE_TIMEOUT))?;
                s.set_write_timeout(Some(PROBE_TIMEOUT))?;
                http_ping(s)
            })
        }
    };
    let ok = result.unwrap_or(false);
    tracing::debug!(?addr, answers = ok, "docker probe");
    ok
}

fn http_ping(mut s: impl Read + Write) -> std::io::Result<bool> {
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    Ok(head.starts_with("HTTP/1.") && head.contains(" 200"))
}

/// A running LocalStack container, removed on drop.
pub(crate) struct LocalStackGuard {
    container: Option<ContainerAsync<LocalStack>>,
    id: String,
}

/// Container ids to remove at process exit (a `static` LocalAws is never dropped).
static AT_EXIT: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn remove_containers_at_exit() {
    let ids = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()));
    for id in ids {
        docker_rm(&id);
    }
}

fn docker_rm(id: &str) {
    let _ = std::process::Command::new("docker")
        .args(["rm", "--force", "--volumes", id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Starts LocalStack with Kinesis and DynamoDB; returns the guard and the edge endpoint.
pub(crate) async fn start() -> Result<(LocalStackGuard, String)> {
    let container = LocalStack::default()
        .with_env_var("SERVICES", "kinesis,dynamodb")
        .with_env_var("KINESIS_LATENCY", "0")
        .with_env_var("KINESIS_SHARD_LIMIT", "10000")
        .with_startup_timeout(Duration::from_secs(300))
        .start()
        .await
        .context("cannot start the LocalStack container")?;
    let host = container.get_host().await?.to_string();
    let host = if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    let port = container.get_host_port_ipv4(4566).await?;
    let id = container.id().to_string();
    {
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| {
            // SAFETY: registering a plain extern "C" function.
            unsafe {
                libc::atexit(remove_containers_at_exit);
            }
        });
        AT_EXIT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.clone());
    }
    Ok((
        LocalStackGuard {
            container: Some(container),
            id,
        },
        format!("http://{host}:{port}"),
    ))
}

impl LocalStackGuard {
    /// The container id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for LocalStackGuard {
    fn drop(&mut self) {
        AT_EXIT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|i| i != &self.id);
        if let Some(c) = self.container.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                drop(c); // testcontainers removes it
            } else {
                // testcontainers' drop needs a runtime; remove it with the CLI instead.
                std::mem::forget(c);
                docker_rm(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_wins() {
        assert_eq!(
            candidates(
                Some("unix:///run/d.sock".into()),
                false,
                Some("/x".into()),
                None
            ),
            vec![DockerAddr::Unix("/run/d.sock".into())]
        );
        assert_eq!(
            candidates(Some("tcp://10.0.0.1:2376".into()), false, None, None),
            vec![DockerAddr::Tcp {
                addr: "10.0.0.1:2376".into(),
                tls: true
            }]
        );
        assert!(candidates(Some("ssh://me@host".into()), false, None, None).is_empty());
    }

    #[test]
    fn default_socket_paths() {
        let c = candidates(
            None,
            false,
            Some("/run/user/1".into()),
            Some("/home/me".into()),
        );
        assert_eq!(
            c,
            vec![
                DockerAddr::Unix("/var/run/docker.sock".into()),
                DockerAddr::Unix("/run/user/1/docker.sock".into()),
                DockerAddr::Unix("/home/me/.docker/run/docker.sock".into()),
            ]
        );
    }

    #[test]
    fn probe_of_absent_socket_is_quick_and_false() {
        let t = std::time::Instant::now();
        assert!(!ping(&DockerAddr::Unix("/nonexistent/docker.sock".into())));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn probe_of_a_silent_server_times_out() {
        // A listener that accepts (via the backlog) but never answers.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::time::Instant::now();
        assert!(!ping(&DockerAddr::Tcp { addr, tls: false }));
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
