//! A local CloudWatch API: `moto`'s server mode (PyPI `moto[server]` 5.2.5), for the metrics
//! exporter's tests.
//!
//! [`LocalCloudWatch::start`] installs moto once into the testkit cache
//! (`<cache>/moto@5.2.5/`, with `python3 -m pip install --target`; about 300 MB, a minute on
//! first use) and starts `python3 -S -m moto.server` on a free port of 127.0.0.1 (`-S`: only the
//! cached packages, not whatever the machine's Python has), waits until it answers a CloudWatch
//! call, and kills it when dropped (it also dies with the test process). Only its CloudWatch
//! is used: moto's Kinesis lacks what the KCL needs (see docs/TESTING.md).
//!
//! The current AWS SDK for Rust calls CloudWatch with the `rpc-v2-cbor` protocol, which moto
//! 5.2.5 does not serve (it serves CloudWatch's JSON 1.0 and query protocols): the endpoint
//! given to clients is a small adapter that re-encodes each call between CBOR and JSON; moto
//! does the CloudWatch work.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::install;
use crate::process::ServiceProcess;

/// The pinned moto version.
pub const MOTO_VERSION: &str = "5.2.5";
const PIP_DEADLINE: Duration = Duration::from_secs(900);
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// A running moto server; killed on drop.
pub struct LocalCloudWatch {
    endpoint: String,
    moto_endpoint: String,
    adapter: tokio::task::JoinHandle<()>,
    sdk_config: aws_config::SdkConfig,
    process: ServiceProcess,
    _logs: tempdir::LogDir,
}

impl std::fmt::Debug for LocalCloudWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCloudWatch")
            .field("endpoint", &self.endpoint)
            .field("pid", &self.process.pid())
            .finish()
    }
}

mod tempdir {
    use std::path::PathBuf;

    /// A log directory removed on drop.
    pub struct LogDir(pub PathBuf);

    impl Drop for LogDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl LocalCloudWatch {
    /// Install (first use) and start moto's server; ready when this returns.
    pub async fn start() -> Result<LocalCloudWatch> {
        let site = tokio::task::spawn_blocking(install_moto)
            .await
            .map_err(|e| anyhow!("installing moto panicked: {e}"))??;
        let python = crate::clients::python3()?;
        let logs = std::env::temp_dir().join(format!(
            "kcl-testkit-moto-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&logs)?;
        let logs = tempdir::LogDir(logs);
        let sdk_config = crate::aws::sdk_config("us-east-1", crate::aws::static_credentials());
        let mut last_error = String::new();
        // A free port can be taken between choosing it and moto binding it: try again.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut cmd = Command::new(&python);
            cmd.args(["-S", "-m", "moto.server", "-H", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .env("PYTHONPATH", &site)
                .env("PYTHONDONTWRITEBYTECODE", "1");
            let log = logs.0.join(format!("moto-{port}.log"));
            let process = ServiceProcess::spawn("moto", cmd, &log)
                .with_context(|| format!("cannot start {} -m moto.server", python.display()))?;
            let moto_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            let (adapter_addr, adapter) = adapter::start(moto_addr).await?;
            let endpoint = format!("http://{adapter_addr}");
            let client = client_for(&sdk_config, &endpoint);
            let started = Instant::now();
            loop {
                match client.list_metrics().send().await {
                    Ok(_) => {
                        tracing::info!(endpoint = %endpoint, took = ?started.elapsed(), "moto (CloudWatch) ready");
                        return Ok(LocalCloudWatch {
                            endpoint,
                            moto_endpoint: format!("http://{moto_addr}"),
                            adapter,
                            sdk_config,
                            process,
                            _logs: logs,
                        });
                    }
                    Err(e) => last_error = format!("{e:?}"),
                }
                if let Some(status) = process.exited() {
                    adapter.abort();
                    last_error = format!("moto exited ({status}): {}", process.log_tail(20));
                    break;
                }
                if started.elapsed() > READY_DEADLINE {
                    adapter.abort();
                    bail!(
                        "moto did not answer within {READY_DEADLINE:?}: {last_error}\n{}",
                        process.log_tail(20)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        bail!("moto did not start: {last_error}")
    }

    /// The endpoint URL for the AWS SDK for Rust, e.g. `http://127.0.0.1:41234` (the
    /// protocol adapter in front of moto, see below).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// moto's own endpoint (JSON 1.0 and query protocols, e.g. for boto3).
    pub fn moto_endpoint(&self) -> &str {
        &self.moto_endpoint
    }

    /// Region (`us-east-1`) and static test credentials for it, with an HTTPS client of its
    /// own (a new one per call, as [`crate::LocalAws::sdk_config`]).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        crate::aws::with_own_http_client(&self.sdk_config)
    }

    /// A new CloudWatch client for it (a new one per call: clients must not outlive the tokio
    /// runtime they were first used on).
    pub fn client(&self) -> aws_sdk_cloudwatch::Client {
        client_for(&self.sdk_config, &self.endpoint)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

impl Drop for LocalCloudWatch {
    fn drop(&mut self) {
        self.adapter.abort();
    }
}

fn client_for(sdk: &aws_config::SdkConfig, endpoint: &str) -> aws_sdk_cloudwatch::Client {
    let conf = aws_sdk_cloudwatch::config::Builder::from(sdk)
        .http_client(crate::https::https_client())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_cloudwatch::Client::from_conf(conf)
}

/// `<cache>/moto@5.2.5/site`: moto with its server dependencies (blocking).
fn install_moto() -> Result<PathBuf> {
    let python = crate::clients::python3()?;
    let has_files = |dir: &Path| dir.join("site").join("moto").join("server.py").is_file();
    let dir = install::install_once(
        &install::cache_root()?,
        &format!("moto@{MOTO_VERSION}"),
        |dir| dir.join(install::MARKER).is_file() && has_files(dir),
        |dir| {
            pip_install(&python, dir)?;
            if !has_files(dir) {
                bail!("pip finished but {} lacks moto", dir.display());
            }
            Ok(())
        },
    )?;
    Ok(dir.join("site"))
}

fn pip_install(python: &Path, dir: &Path) -> Result<()> {
    let log = dir.join("pip.log");
    let out = std::fs::File::create(&log)?;
    let mut child = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--no-warn-conflicts",
            "--target",
        ])
        .arg(dir.join("site"))
        .arg(format!("moto[server]=={MOTO_VERSION}"))
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot run {} -m pip", python.display()))?;
    let status = install::wait_within(&mut child, PIP_DEADLINE, "pip install moto", &log)?;
    let text = install::tail(&log);
    let _ = std::fs::remove_file(&log);
    if !status.success() {
        bail!(
            "pip install moto[server]=={MOTO_VERSION} failed ({status}); it needs PyPI and pip \
             (`apt-get install python3-pip` on Debian/Ubuntu).\n{text}"
        );
    }
    Ok(())
}

/// The AWS SDK for Rust speaks CloudWatch's `rpc-v2-cbor` protocol; moto speaks its JSON 1.0
/// and query protocols. This adapter takes each SDK request
/// (`POST /service/GraniteServiceVersion20100801/operation/<Op>`, a CBOR body), sends it to
/// moto as JSON 1.0 (`X-Amz-Target: GraniteServiceVersion20100801.<Op>`), and answers with
/// moto's status and body re-encoded in CBOR. Timestamps are CBOR tag 1 one way and epoch
/// seconds the other (response fields named `…Timestamp`/`…Timestamps`).
mod adapter {
    use std::net::SocketAddr;

    use anyhow::{anyhow, bail, Context, Result};
    use ciborium::Value as Cbor;
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    use serde_json::Value as Json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TARGET_PREFIX: &str = "GraniteServiceVersion20100801";

    /// Serves on a free loopback port until the runtime ends or the task is aborted.
    pub async fn start(moto: SocketAddr) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| async move {
                        Ok::<_, std::convert::Infallible>(answer(moto, req).await)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok((addr, task))
    }

    async fn answer(moto: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match translate(moto, req).await {
            Ok((status, body)) => Response::builder()
                .status(status)
                .header("content-type", "application/cbor")
                .header("smithy-protocol", "rpc-v2-cbor")
                .body(Full::new(Bytes::from(body)))
                .expect("a valid response"),
            Err(e) => Response::builder()
                .status(500)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(format!(
                    "testkit CloudWatch adapter: {e:#}"
                ))))
                .expect("a valid response"),
        }
    }

    async fn translate(moto: SocketAddr, req: Request<Incoming>) -> Result<(u16, Vec<u8>)> {
        let operation = req
            .uri()
            .path()
            .rsplit_once("/operation/")
            .map(|(_, op)| op.to_string())
            .ok_or_else(|| anyhow!("not an rpc-v2-cbor path: {}", req.uri().path()))?;
        let gzip = req
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let mut body = req.into_body().collect().await?.to_bytes().to_vec();
        if gzip {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)?;
            body = plain;
        }
        let request = if body.is_empty() {
            Json::Object(Default::default())
        } else {
            let cbor: Cbor = ciborium::from_reader(&body[..]).context("request is not CBOR")?;
            to_json(cbor)?
        };
        let (status, response) =
            call_moto(moto, &operation, &serde_json::to_vec(&request)?).await?;
        let json: Json = if response.iter().all(u8::is_ascii_whitespace) {
            Json::Object(Default::default())
        } else {
            serde_json::from_slice(&response).with_context(|| {
                format!(
                    "moto's answer is not JSON: {}",
                    String::from_utf8_lossy(&response)
                )
            })?
        };
        let mut out = Vec::new();
        ciborium::into_writer(&to_cbor(json, false), &mut out)?;
        Ok((status, out))
    }

    /// One JSON 1.0 call to moto over HTTP/1.0: (status, body).
    async fn call_moto(moto: SocketAddr, operation: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let mut s = tokio::net::TcpStream::connect(moto).await?;
        let head = format!(
            "POST / HTTP/1.0\r\nHost: {moto}\r\nContent-Type: application/x-amz-json-1.0\r\n\
             X-Amz-Target: {TARGET_PREFIX}.{operation}\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=0\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| anyhow!("moto sent no HTTP header"))?;
        let head = String::from_utf8_lossy(&raw[..split]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("no status in {head}"))?;
        Ok((status, raw[split + 4..].to_vec()))
    }

    fn to_json(v: Cbor) -> Result<Json> {
        Ok(match v {
            Cbor::Null => Json::Null,
            Cbor::Bool(b) => Json::Bool(b),
            Cbor::Integer(i) => {
                let i = i128::from(i);
                match i64::try_from(i) {
                    Ok(n) => Json::from(n),
                    Err(_) => Json::from(u64::try_from(i)?),
                }
            }
            Cbor::Float(f) => Json::from(f),
            Cbor::Text(t) => Json::String(t),
            // Epoch-seconds timestamps.
            Cbor::Tag(1, inner) => to_json(*inner)?,
            Cbor::Array(a) => Json::Array(a.into_iter().map(to_json).collect::<Result<_>>()?),
            Cbor::Map(m) => Json::Object(
                m.into_iter()
                    .map(|(k, v)| match k {
                        Cbor::Text(k) => Ok((k, to_json(v)?)),
                        other => bail!("a CBOR map key that is not text: {other:?}"),
                    })
                    .collect::<Result<_>>()?,
            ),
            other => bail!("CBOR value not used by CloudWatch: {other:?}"),
        })
    }

    fn to_cbor(v: Json, timestamp: bool) -> Cbor {
        match v {
            Json::Null => Cbor::Null,
            Json::Bool(b) => Cbor::Bool(b),
            Json::Number(n) if timestamp => {
                Cbor::Tag(1, Box::new(Cbor::Float(n.as_f64().unwrap_or(0.0))))
            }
            Json::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Cbor::Integer(i.into()),
                (_, Some(u)) => Cbor::Integer(u.into()),
                _ => Cbor::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Cbor::Text(s),
            Json::Array(a) => Cbor::Array(a.into_iter().map(|v| to_cbor(v, timestamp)).collect()),
            Json::Object(m) => Cbor::Map(
                m.into_iter()
                    .map(|(k, v)| {
                        let ts = k.ends_with("Timestamp") || k.ends_with("Timestamps");
                        (Cbor::Text(k), to_cbor(v, ts))
                    })
                    .collect(),
            ),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_what_cloudwatch_sends() {
            let request = Cbor::Map(vec![
                (Cbor::Text("Namespace".into()), Cbor::Text("app".into())),
                (
                    Cbor::Text("StartTime".into()),
                    Cbor::Tag(1, Box::new(Cbor::Float(1_700_000_000.5))),
                ),
                (Cbor::Text("Period".into()), Cbor::Integer(60.into())),
            ]);
            let json = to_json(request).unwrap();
            assert_eq!(
                json,
                serde_json::json!({"Namespace": "app", "StartTime": 1_700_000_000.5, "Period": 60})
            );
            let response =
                serde_json::json!({"Datapoints": [{"Timestamp": 1_700_000_000.0, "Sum": 15.0}]});
            let Cbor::Map(m) = to_cbor(response, false) else {
                panic!()
            };
            let Cbor::Array(points) = &m[0].1 else {
                panic!()
            };
            let Cbor::Map(point) = &points[0] else {
                panic!()
            };
            let field = |name: &str| {
                point
                    .iter()
                    .find(|(k, _)| *k == Cbor::Text(name.into()))
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            assert!(matches!(field("Timestamp"), Cbor::Tag(1, _)), "{point:?}");
            assert!(
                matches!(field("Sum"), Cbor::Float(f) if f == 15.0),
                "{point:?}"
            );
        }
    }
}
