//! The Prometheus endpoint: `/metrics` (text format), `/healthz`, `/readyz`.

use super::{describe, Health, TelemetryError};
use crate::scheduler::SchedulerHandle;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a gauge may go without an update before Prometheus stops reporting it (the lag of
/// a shard this worker no longer holds, ...). Every gauge of a running worker is updated at
/// least every `lease_take_interval`.
pub const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How often the recorder's upkeep runs (it drains histogram samples into their summaries).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

type HealthSource = Arc<Mutex<Option<SchedulerHandle>>>;

/// A running Prometheus endpoint. It serves until the tokio runtime it was started on shuts
/// down (dropping this value does not stop it). Cheap to clone.
///
/// * `GET /metrics`: every metric in the Prometheus text format.
/// * `GET /healthz`: 200 when the worker is live (see [`Health`]), else 503; 200 while no
///   worker is attached ([`PrometheusEndpoint::report_health_of`]).
/// * `GET /readyz`: 200 when the worker is ready, else 503 (also when no worker is attached).
///
/// Both health answers list the checks in their body.
#[derive(Clone)]
pub struct PrometheusEndpoint {
    addr: SocketAddr,
    handle: PrometheusHandle,
    health: HealthSource,
}

impl std::fmt::Debug for PrometheusEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusEndpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl PrometheusEndpoint {
    /// Serve on `addr` (port 0: any free port, see [`PrometheusEndpoint::local_addr`]) and
    /// install the recorder as the process's global `metrics` recorder. Call it before
    /// running the scheduler. Keep the address on loopback unless the network is trusted.
    pub async fn start(addr: SocketAddr) -> Result<Self, TelemetryError> {
        let (endpoint, recorder) = Self::bind(addr).await?;
        metrics::set_global_recorder(recorder)
            .map_err(|_| TelemetryError::RecorderAlreadyInstalled)?;
        describe();
        Ok(endpoint)
    }

    /// Serve on `addr` without installing the recorder: install the returned recorder
    /// yourself (with others: [`install`](super::install)), or use it as a local recorder.
    pub async fn bind(addr: SocketAddr) -> Result<(Self, PrometheusRecorder), TelemetryError> {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
            .build_recorder();
        let handle = recorder.handle();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let endpoint = PrometheusEndpoint {
            addr,
            handle,
            health: Arc::default(),
        };
        tokio::spawn(endpoint.clone().serve(listener));
        tokio::spawn({
            let handle = endpoint.handle.clone();
            async move {
                let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    handle.run_upkeep();
                }
            }
        });
        tracing::info!(addr = %addr, "Prometheus endpoint: /metrics, /healthz, /readyz");
        Ok((endpoint, recorder))
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `/healthz` and `/readyz` answer for this worker from now on.
    pub fn report_health_of(&self, worker: &SchedulerHandle) {
        *self.health.lock().unwrap() = Some(worker.clone());
    }

    /// The metrics in the Prometheus text format (what `/metrics` serves).
    pub fn render(&self) -> String {
        self.handle.render()
    }

    async fn serve(self, listener: tokio::net::TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "Prometheus endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let this = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, std::convert::Infallible>(this.answer(&req)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %e, "Prometheus endpoint: connection ended");
                }
            });
        }
    }

    fn health(&self) -> Option<Health> {
        self.health.lock().unwrap().as_ref().map(|h| h.health())
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, content_type: &str, body: String| {
            Response::builder()
                .status(status)
                .header(hyper::header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(body)))
                .expect("a valid response")
        };
        const PLAIN: &str = "text/plain; charset=utf-8";
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
        }
        let status = |ok: bool| {
            if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        match req.uri().path() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.render(),
            ),
            "/healthz" => match self.health() {
                Some(h) => text(status(h.live), PLAIN, h.to_string()),
                None => text(
                    StatusCode::OK,
                    PLAIN,
                    "live: yes (no worker attached)\n".into(),
                ),
            },
            "/readyz" => match self.health() {
                Some(h) => text(status(h.ready), PLAIN, h.to_string()),
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    "ready: no (no worker attached)\n".into(),
                ),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                PLAIN,
                "not found: try /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }
}
