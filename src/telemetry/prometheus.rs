//! The Prometheus endpoint: `/metrics` (text format), `/healthz`, `/readyz`, and its recorder,
//! which serves the library's metrics under their Prometheus names ([`names::PrometheusSpec`])
//! and forgets the series of shards this worker no longer holds.

use super::names::{self, MetricSpec, PrometheusKind};
use super::shard_series::{self, ShardSeries};
use super::{describe, Health, TelemetryError};
use crate::scheduler::SchedulerHandle;
use crate::sync::{Mutex, RwLock};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Label, Metadata, Recorder,
    SharedString, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a gauge without a `ShardId` may go without an update before Prometheus stops
/// reporting it. Every gauge of a running worker is updated at least every
/// `lease_take_interval`.
pub const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long the series of a shard this worker no longer holds are still reported (counters,
/// gauges and histograms alike): long enough for a few scrapes to see their last values. They
/// go within 5 s after this (the recorder's upkeep interval).
pub const RELEASED_SHARD_TIMEOUT: Duration = Duration::from_secs(300);

/// How often the recorder's upkeep runs (it drains the exporter's histogram samples into
/// their buckets and forgets the shards released more than [`RELEASED_SHARD_TIMEOUT`] ago).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

type HealthSource = Arc<Mutex<Option<SchedulerHandle>>>;

/// The `metrics` recorder of a [`PrometheusEndpoint`]: install it (alone with
/// [`metrics::set_global_recorder`], or with others through [`install`](super::install)).
///
/// It serves every metric of the [catalogue](names::CATALOGUE) under its Prometheus name
/// ([`MetricSpec::prometheus`]): prefix `kcl_`, snake_case labels, seconds for
/// milliseconds, histograms with the metric's buckets, Java's 1/0 `Success` histograms as
/// counters by `outcome`. Other metrics recorded through it (an application's own) are served
/// as recorded, their histograms as summaries.
///
/// The series of each shard (the library's metrics with a `ShardId`) are kept together, for
/// as long as this worker holds the shard: while any handle of the shard's metrics lives (the library keeps
/// them while it holds the lease and its consumer runs), however long the shard stays idle.
/// Once the last handle is gone, the shard's series are still reported for
/// [`RELEASED_SHARD_TIMEOUT`], then forgotten; if the worker takes the shard again, its
/// counters start again from zero (a counter reset, which Prometheus' `rate` and `increase`
/// handle), as do its histograms. An application's own metrics are not forgotten (gauges
/// go after five minutes without an update), `ShardId` or not.
#[derive(Clone)]
pub struct PrometheusRecorder {
    series: Arc<Series>,
}

impl std::fmt::Debug for PrometheusRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusRecorder").finish_non_exhaustive()
    }
}

/// Every series: the shards' (of the catalogue's metrics) in a [`ShardSeries`] each, the
/// others in one exporter recorder.
struct Series {
    rest: metrics_exporter_prometheus::PrometheusRecorder,
    rest_handle: PrometheusHandle,
    shards: RwLock<HashMap<String, ShardSeries>>,
    /// Every metric's first description (the `# HELP` of the shards' families).
    descriptions: Mutex<HashMap<String, Description>>,
}

#[derive(Clone)]
struct Description {
    kind: Kind,
    name: KeyName,
    unit: Option<Unit>,
    text: SharedString,
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// An exporter builder with the buckets of every histogram of the catalogue.
fn builder() -> PrometheusBuilder {
    names::CATALOGUE
        .iter()
        .fold(PrometheusBuilder::new(), |b, spec| {
            match spec.prometheus.kind {
                PrometheusKind::Histogram { buckets } => b
                    .set_buckets_for_metric(
                        Matcher::Full(spec.prometheus.name.to_string()),
                        buckets,
                    )
                    .expect("the catalogue's buckets are not empty"),
                _ => b,
            }
        })
}

impl Series {
    fn new() -> Self {
        let rest = builder()
            .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
            .build_recorder();
        Series {
            rest_handle: rest.handle(),
            rest,
            shards: RwLock::default(),
            descriptions: Mutex::default(),
        }
    }

    /// `register` on the series of `shard` (created if new). Under the shards' lock, so that
    /// the upkeep never forgets a shard between the lookup and the registration.
    fn on_shard<T>(&self, shard: &str, register: impl FnOnce(&ShardSeries) -> T) -> T {
        let on = |s: &ShardSeries| {
            *s.released.lock() = None;
            register(s)
        };
        if let Some(s) = self.shards.read().get(shard) {
            return on(s);
        }
        let mut shards = self.shards.write();
        on(shards.entry(shard.to_string()).or_default())
    }

    /// Describe a metric (the first description of a metric counts, as in the exporter; the
    /// scheduler describes every metric when it starts).
    fn describe(&self, d: Description) {
        let mut descriptions = self.descriptions.lock();
        if descriptions.contains_key(d.name.as_str()) {
            return;
        }
        d.apply(&self.rest);
        descriptions.insert(d.name.as_str().to_string(), d);
    }

    /// Drain the exporter's histogram samples; forget the shards no handle has marked held for
    /// [`RELEASED_SHARD_TIMEOUT`].
    fn upkeep(&self, now: Instant) {
        self.rest_handle.run_upkeep();
        let mut expired = Vec::new();
        for (shard, s) in self.shards.read().iter() {
            if s.held() {
                *s.released.lock() = None;
                continue;
            }
            let released = *s.released.lock().get_or_insert(now);
            if now.duration_since(released) >= RELEASED_SHARD_TIMEOUT {
                expired.push(shard.clone());
            }
        }
        if expired.is_empty() {
            return;
        }
        let mut shards = self.shards.write();
        for shard in expired {
            // Registered again meanwhile: held, or released later.
            if shards
                .get(&shard)
                .is_some_and(|s| !s.held() && s.released.lock().is_some())
            {
                shards.remove(&shard);
            }
        }
    }

    /// Every series in the text format: the exporter's page and the shards' merged by metric.
    fn render(&self) -> String {
        let shards = {
            let descriptions = self.descriptions.lock();
            shard_series::render(self.shards.read().values(), |name| {
                descriptions.get(name).map(|d| d.text.to_string())
            })
        };
        merge_pages(&[self.rest_handle.render(), shards])
    }
}

impl Description {
    fn apply(&self, r: &metrics_exporter_prometheus::PrometheusRecorder) {
        let (name, unit, text) = (self.name.clone(), self.unit, self.text.clone());
        match self.kind {
            Kind::Counter => r.describe_counter(name, unit, text),
            Kind::Gauge => r.describe_gauge(name, unit, text),
            Kind::Histogram => r.describe_histogram(name, unit, text),
        }
    }
}

/// A recorded value divided into the unit Prometheus serves (milliseconds to seconds).
struct Scaled<T> {
    inner: T,
    divisor: f64,
}

impl GaugeFn for Scaled<Gauge> {
    fn increment(&self, value: f64) {
        self.inner.increment(value / self.divisor);
    }
    fn decrement(&self, value: f64) {
        self.inner.decrement(value / self.divisor);
    }
    fn set(&self, value: f64) {
        self.inner.set(value / self.divisor);
    }
}

impl HistogramFn for Scaled<Histogram> {
    fn record(&self, value: f64) {
        self.inner.record(value / self.divisor);
    }
}

/// Java's 1/0 `Success` histogram as Prometheus counts it: one call more, by outcome.
struct Outcomes {
    success: Counter,
    failure: Counter,
}

impl HistogramFn for Outcomes {
    fn record(&self, value: f64) {
        if value > 0.5 {
            self.success.increment(1);
        } else {
            self.failure.increment(1);
        }
    }
}

/// The catalogue's entry of a metric (by its name and `Operation`), if it has one.
fn spec_of(key: &Key) -> Option<&'static MetricSpec> {
    let operation = key
        .labels()
        .find(|l| l.key() == names::OPERATION)
        .map_or("", |l| l.value());
    names::find(key.name(), operation)
}

/// The Prometheus key of a catalogue metric: its Prometheus name, its labels renamed
/// ([`names::prometheus_label`]), then `extra`.
fn prometheus_key(spec: &MetricSpec, key: &Key, extra: Option<Label>) -> Key {
    let labels = key
        .labels()
        .map(|l| match names::prometheus_label(l.key()) {
            Some(name) => Label::new(name, l.clone().into_parts().1),
            None => l.clone(),
        })
        .chain(extra)
        .collect::<Vec<_>>();
    Key::from_parts(KeyName::from_const_str(spec.prometheus.name), labels)
}

/// Where a catalogue metric's series live: the exporter's registry or a shard's series.
trait Target {
    fn counter(&self, key: Key) -> Counter;
    /// A gauge whose values are divided by `divisor`.
    fn gauge(&self, key: Key, divisor: f64) -> Gauge;
    /// A histogram with these buckets (the exporter has them from its builder), its values
    /// divided by `divisor`.
    fn histogram(&self, key: Key, buckets: &'static [f64], divisor: f64) -> Histogram;
}

/// The exporter's registry, with the metadata of the registration.
struct Exported<'a> {
    recorder: &'a metrics_exporter_prometheus::PrometheusRecorder,
    metadata: &'a Metadata<'a>,
}

impl Target for Exported<'_> {
    fn counter(&self, key: Key) -> Counter {
        self.recorder.register_counter(&key, self.metadata)
    }
    fn gauge(&self, key: Key, divisor: f64) -> Gauge {
        let inner = self.recorder.register_gauge(&key, self.metadata);
        if divisor == 1.0 {
            return inner;
        }
        Gauge::from_arc(Arc::new(Scaled { inner, divisor }))
    }
    fn histogram(&self, key: Key, _: &'static [f64], divisor: f64) -> Histogram {
        let inner = self.recorder.register_histogram(&key, self.metadata);
        if divisor == 1.0 {
            return inner;
        }
        Histogram::from_arc(Arc::new(Scaled { inner, divisor }))
    }
}

impl Target for ShardSeries {
    fn counter(&self, key: Key) -> Counter {
        ShardSeries::counter(self, key)
    }
    fn gauge(&self, key: Key, divisor: f64) -> Gauge {
        ShardSeries::gauge(self, key, divisor)
    }
    fn histogram(&self, key: Key, buckets: &'static [f64], divisor: f64) -> Histogram {
        ShardSeries::histogram(self, key, buckets, divisor)
    }
}

/// A catalogue counter under its Prometheus name.
fn counter_on(t: &impl Target, spec: &MetricSpec, key: &Key) -> Counter {
    t.counter(prometheus_key(spec, key, None))
}

/// A catalogue gauge under its Prometheus name, scaled to its unit.
fn gauge_on(t: &impl Target, spec: &MetricSpec, key: &Key) -> Gauge {
    t.gauge(prometheus_key(spec, key, None), spec.prometheus_divisor())
}

/// A catalogue histogram under its Prometheus name: a histogram scaled to its unit, or for a
/// 1/0 outcome, the counters of its two outcomes. `None` for a metric the catalogue does not
/// serve as either.
fn histogram_on(t: &impl Target, spec: &MetricSpec, key: &Key) -> Option<Histogram> {
    match spec.prometheus.kind {
        PrometheusKind::Outcomes => {
            let outcome = |value| {
                let label = Label::from_static_parts(names::PROMETHEUS_OUTCOME, value);
                t.counter(prometheus_key(spec, key, Some(label)))
            };
            Some(Histogram::from_arc(Arc::new(Outcomes {
                success: outcome(names::OUTCOME_SUCCESS),
                failure: outcome(names::OUTCOME_FAILURE),
            })))
        }
        PrometheusKind::Histogram { buckets } => Some(t.histogram(
            prometheus_key(spec, key, None),
            buckets,
            spec.prometheus_divisor(),
        )),
        PrometheusKind::Counter | PrometheusKind::Gauge => None,
    }
}

/// The descriptions of the metric `name` as Prometheus serves it: one per catalogue entry of
/// that name (`Time` is one metric per operation there), or `name` itself.
fn prometheus_descriptions(
    kind: Kind,
    name: KeyName,
    unit: Option<Unit>,
    text: SharedString,
) -> Vec<Description> {
    let specs: Vec<&MetricSpec> = names::CATALOGUE
        .iter()
        .filter(|s| s.name == name.as_str())
        .collect();
    if specs.is_empty() {
        return vec![Description {
            kind,
            name,
            unit,
            text,
        }];
    }
    specs
        .into_iter()
        .map(|spec| {
            let (kind, unit) = match spec.prometheus.kind {
                PrometheusKind::Counter | PrometheusKind::Outcomes => (Kind::Counter, Unit::Count),
                PrometheusKind::Gauge => (Kind::Gauge, spec.unit),
                PrometheusKind::Histogram { .. } => (Kind::Histogram, spec.unit),
            };
            let unit = match unit {
                Unit::Milliseconds => Unit::Seconds,
                unit => unit,
            };
            let here = if spec.prometheus.kind == PrometheusKind::Outcomes {
                "1 or 0 per call; here calls by outcome"
            } else {
                spec.prometheus_unit()
            };
            Description {
                kind,
                name: KeyName::from_const_str(spec.prometheus.name),
                unit: Some(unit),
                text: SharedString::from(format!(
                    "CloudWatch: {} of Operation={} ({here})",
                    spec.name, spec.operation,
                )),
            }
        })
        .collect()
}

/// The shard of a metric: its `ShardId` label.
fn shard_of(key: &Key) -> Option<&str> {
    key.labels()
        .find(|l| l.key() == names::SHARD_ID)
        .map(|l| l.value())
}

impl PrometheusRecorder {
    /// The exporter's registry, for a registration with this metadata.
    fn exported<'a>(&'a self, metadata: &'a Metadata<'a>) -> Exported<'a> {
        Exported {
            recorder: &self.series.rest,
            metadata,
        }
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, text: SharedString) {
        for d in prometheus_descriptions(Kind::Counter, name, unit, text) {
            self.series.describe(d);
        }
    }
    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, text: SharedString) {
        for d in prometheus_descriptions(Kind::Gauge, name, unit, text) {
            self.series.describe(d);
        }
    }
    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, text: SharedString) {
        for d in prometheus_descriptions(Kind::Histogram, name, unit, text) {
            self.series.describe(d);
        }
    }
    // A catalogue metric of a shard goes to the shard's series; everything else (an
    // application's own metrics too, `ShardId` or not) to the exporter's registry.
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let Some(spec) = spec_of(key) else {
            return self.series.rest.register_counter(key, metadata);
        };
        match shard_of(key) {
            Some(shard) if spec.prometheus.kind == PrometheusKind::Counter => {
                self.series.on_shard(shard, |s| counter_on(s, spec, key))
            }
            _ => counter_on(&self.exported(metadata), spec, key),
        }
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        let Some(spec) = spec_of(key) else {
            return self.series.rest.register_gauge(key, metadata);
        };
        match shard_of(key) {
            Some(shard) if spec.prometheus.kind == PrometheusKind::Gauge => {
                self.series.on_shard(shard, |s| gauge_on(s, spec, key))
            }
            _ => gauge_on(&self.exported(metadata), spec, key),
        }
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let Some(spec) = spec_of(key) else {
            return self.series.rest.register_histogram(key, metadata);
        };
        let on_shard = match (shard_of(key), spec.prometheus.kind) {
            (Some(shard), PrometheusKind::Histogram { .. } | PrometheusKind::Outcomes) => {
                self.series.on_shard(shard, |s| histogram_on(s, spec, key))
            }
            _ => None,
        };
        on_shard
            .or_else(|| histogram_on(&self.exported(metadata), spec, key))
            .unwrap_or_else(|| self.series.rest.register_histogram(key, metadata))
    }
}

/// One metric family of a text-format page: its `# HELP` and `# TYPE` lines and its samples.
#[derive(Default)]
struct Family<'a> {
    help: Option<&'a str>,
    kind: Option<&'a str>,
    samples: Vec<&'a str>,
}

/// Several text-format pages as one: each metric family once (the text format allows a
/// family's `# TYPE` line only once), with the samples of every page, families by name.
fn merge_pages(pages: &[String]) -> String {
    let mut families: BTreeMap<&str, Family<'_>> = BTreeMap::new();
    for page in pages {
        let mut current: Option<&str> = None;
        for line in page.lines() {
            let header = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|rest| rest.split(' ').next())
            };
            if let Some(name) = header("# HELP ") {
                families.entry(name).or_default().help.get_or_insert(line);
                current = Some(name);
            } else if let Some(name) = header("# TYPE ") {
                families.entry(name).or_default().kind.get_or_insert(line);
                current = Some(name);
            } else if line.is_empty() || line.starts_with('#') {
                continue;
            } else {
                // A sample belongs to the family announced before it (`x_sum` and `x_count`
                // to `x`); the exporter announces every family.
                let name = current.unwrap_or_else(|| line.split(['{', ' ']).next().unwrap_or(line));
                families.entry(name).or_default().samples.push(line);
            }
        }
    }
    let mut out = String::new();
    for family in families.values() {
        if family.samples.is_empty() {
            continue;
        }
        for line in family
            .help
            .iter()
            .chain(&family.kind)
            .chain(&family.samples)
        {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// A running Prometheus endpoint. It serves until the tokio runtime it was started on shuts
/// down (dropping this value does not stop it). Cheap to clone.
///
/// * `GET /metrics`: every metric in the Prometheus text format, under its Prometheus name
///   (see [`PrometheusRecorder`]).
/// * `GET /healthz`: 200 when the worker is live (see [`Health`]), else 503; 200 while no
///   worker is attached ([`PrometheusEndpoint::report_health_of`]).
/// * `GET /readyz`: 200 when the worker is ready, else 503 (also when no worker is attached).
///
/// Both health answers list the checks in their body. The series of a shard this worker no
/// longer holds go [`RELEASED_SHARD_TIMEOUT`] after it let the shard go (see
/// [`PrometheusRecorder`]).
#[derive(Clone)]
pub struct PrometheusEndpoint {
    addr: SocketAddr,
    series: Arc<Series>,
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
        let series = Arc::new(Series::new());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let endpoint = PrometheusEndpoint {
            addr,
            series: series.clone(),
            health: Arc::default(),
        };
        tokio::spawn(endpoint.clone().serve(listener));
        tokio::spawn({
            let series = series.clone();
            async move {
                let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    series.upkeep(Instant::now());
                }
            }
        });
        tracing::info!(addr = %addr, "Prometheus endpoint: /metrics, /healthz, /readyz, /status");
        Ok((endpoint, PrometheusRecorder { series }))
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `/healthz` and `/readyz` answer for this worker from now on.
    pub fn report_health_of(&self, worker: &SchedulerHandle) {
        *self.health.lock() = Some(worker.clone());
    }

    /// The metrics in the Prometheus text format (what `/metrics` serves).
    pub fn render(&self) -> String {
        self.series.render()
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
        self.health.lock().as_ref().map(|h| h.health())
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
            "/status" | "/status/" => text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                super::status_page::PAGE.into(),
            ),
            "/status.json" => match self.health.lock().clone() {
                Some(worker) => text(
                    StatusCode::OK,
                    "application/json",
                    super::status_page::to_json(&worker.status()).to_string(),
                ),
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    r#"{"error":"no worker attached"}"#.into(),
                ),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                PLAIN,
                "not found: try /metrics, /healthz, /readyz or /status\n".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Label, Level};

    static META: Metadata<'static> = Metadata::new("test", Level::INFO, None);

    fn shard_key(name: &'static str, shard: &'static str) -> Key {
        Key::from_parts(
            name,
            vec![
                Label::from_static_parts(names::OPERATION, names::OP_PROCESS_TASK),
                Label::from_static_parts(names::SHARD_ID, shard),
            ],
        )
    }

    fn lines_of<'a>(page: &'a str, shard: &str) -> Vec<&'a str> {
        page.lines()
            .filter(|l| l.contains(&format!("shard_id=\"{shard}\"")))
            .collect()
    }

    /// A shard's series stay while a handle of it lives, idle or not; once the last handle is
    /// gone they stay for the grace time, then go (and a counter that comes back restarts).
    #[tokio::test(start_paused = true)]
    async fn a_shard_is_reported_while_held_and_for_the_grace_time_after() {
        let (endpoint, recorder) = PrometheusEndpoint::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let held = recorder.register_counter(&shard_key("RecordsProcessed", "a"), &META);
        held.increment(1);
        let held_time = recorder.register_histogram(&shard_key("Time", "a"), &META);
        held_time.record(5.0);
        let released = recorder.register_counter(&shard_key("RecordsProcessed", "b"), &META);
        released.increment(2);
        recorder
            .register_histogram(&shard_key("Time", "b"), &META)
            .record(7.0);
        drop(released);
        let worker = recorder.register_counter(
            &Key::from_parts(
                "LostLeases",
                vec![Label::from_static_parts(
                    names::OPERATION,
                    names::OP_RENEW_ALL_LEASES,
                )],
            ),
            &META,
        );
        worker.increment(1);

        tokio::time::sleep(RELEASED_SHARD_TIMEOUT - UPKEEP_INTERVAL).await;
        let page = endpoint.render();
        assert!(
            lines_of(&page, "b").contains(
                &"kcl_records_processed_total{operation=\"ProcessTask\",shard_id=\"b\"} 2"
            ),
            "still within the grace time: {page}"
        );
        tokio::time::sleep(UPKEEP_INTERVAL * 3).await;
        let page = endpoint.render();
        assert!(lines_of(&page, "b").is_empty(), "{page}");
        assert!(page
            .contains("kcl_records_processed_total{operation=\"ProcessTask\",shard_id=\"a\"} 1"));
        assert!(page.contains(
            "kcl_process_task_duration_seconds_count{operation=\"ProcessTask\",shard_id=\"a\"} 1"
        ));
        assert!(
            page.contains("kcl_lost_leases_total{operation=\"RenewAllLeases\"} 1"),
            "{page}"
        );

        // Hours later, still held and idle: still there.
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        assert_eq!(
            lines_of(&endpoint.render(), "a").len(),
            lines_of(&page, "a").len()
        );

        // Taken again: a fresh counter.
        recorder
            .register_counter(&shard_key("RecordsProcessed", "b"), &META)
            .increment(1);
        assert!(endpoint
            .render()
            .contains("kcl_records_processed_total{operation=\"ProcessTask\",shard_id=\"b\"} 1"));
        drop((held, held_time));
    }

    #[test]
    fn pages_merge_into_one_family_each() {
        let a = "# HELP Time Time\n# TYPE Time summary\nTime{Operation=\"A\",quantile=\"0.5\"} 1\nTime_sum{Operation=\"A\"} 1\nTime_count{Operation=\"A\"} 1\n\n# TYPE LostLeases counter\nLostLeases 3\n\n";
        let b = "# TYPE Time summary\nTime{Operation=\"B\",quantile=\"0.5\"} 2\nTime_sum{Operation=\"B\"} 2\nTime_count{Operation=\"B\"} 1\n\n# TYPE Empty gauge\n\n";
        assert_eq!(
            merge_pages(&[a.to_string(), b.to_string()]),
            "# TYPE LostLeases counter\nLostLeases 3\n\n\
             # HELP Time Time\n# TYPE Time summary\n\
             Time{Operation=\"A\",quantile=\"0.5\"} 1\nTime_sum{Operation=\"A\"} 1\nTime_count{Operation=\"A\"} 1\n\
             Time{Operation=\"B\",quantile=\"0.5\"} 2\nTime_sum{Operation=\"B\"} 2\nTime_count{Operation=\"B\"} 1\n\n"
        );
    }
}
