//! A TCP proxy on 127.0.0.1 in front of a service, that a test can cut: to make a real
//! service unreachable (connections refused or never answered) and reachable again, without
//! stopping it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward to the target.
    Forward,
    /// Close open connections, and every new one at once (an unreachable service).
    Refuse,
    /// Accept connections and never answer (a service that hangs).
    BlackHole,
}

struct State {
    mode: ProxyMode,
    /// The connections being forwarded or held (aborted when the mode changes).
    conns: JoinSet<()>,
}

/// A proxy to `target`; stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("addr", &self.addr)
            .finish()
    }
}

impl TcpProxy {
    /// A proxy to the service at `target` (an `http://host:port` URL or `host:port`), in
    /// [`ProxyMode::Forward`].
    pub async fn start(target: &str) -> Result<TcpProxy> {
        Self::start_in(target, ProxyMode::Forward).await
    }

    /// A proxy that starts in `mode` (e.g. a [`ProxyMode::BlackHole`] with any target).
    pub async fn start_in(target: &str, mode: ProxyMode) -> Result<TcpProxy> {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            mode,
            conns: JoinSet::new(),
        }));
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let mut st = state.lock().unwrap();
                    match st.mode {
                        ProxyMode::Refuse => drop(client),
                        ProxyMode::BlackHole => {
                            st.conns.spawn(async move {
                                let _held = client;
                                std::future::pending::<()>().await;
                            });
                        }
                        ProxyMode::Forward => {
                            let target = target.clone();
                            st.conns.spawn(async move {
                                let mut client = client;
                                if let Ok(mut server) = TcpStream::connect(&target).await {
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server)
                                        .await;
                                }
                            });
                        }
                    }
                    // Forget finished connections.
                    while st.conns.try_join_next().is_some() {}
                }
            }
        });
        Ok(TcpProxy { addr, state, task })
    }

    /// `http://127.0.0.1:<port>`: use it as the service's endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open now (forwarded or held).
    pub fn open_connections(&self) -> usize {
        let mut st = self.state.lock().unwrap();
        while st.conns.try_join_next().is_some() {}
        st.conns.len()
    }

    /// Switch mode; open connections are closed (so that pooled ones cannot bypass it).
    pub fn set_mode(&self, mode: ProxyMode) {
        let mut st = self.state.lock().unwrap();
        st.mode = mode;
        st.conns.abort_all();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.lock().unwrap().conns.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_refuses_and_holds() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::start(&format!("http://{echo_addr}"))
            .await
            .unwrap();
        let round_trip = || async {
            let mut c = TcpStream::connect(proxy.addr()).await.ok()?;
            c.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            tokio::time::timeout(
                std::time::Duration::from_millis(500),
                c.read_exact(&mut buf),
            )
            .await
            .ok()?
            .ok()?;
            Some(buf)
        };
        assert_eq!(round_trip().await, Some(*b"ping"));
        proxy.set_mode(ProxyMode::Refuse);
        assert_eq!(round_trip().await, None);
        proxy.set_mode(ProxyMode::BlackHole);
        assert_eq!(round_trip().await, None);
        proxy.set_mode(ProxyMode::Forward);
        assert_eq!(round_trip().await, Some(*b"ping"));
    }
}
