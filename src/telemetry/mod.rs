//! Metrics with the Java KCL's names (and Prometheus names for Prometheus), exporters
//! (Prometheus, CloudWatch) and worker health.
//!
//! The library records metrics through the [`metrics`] facade: until an application installs
//! a recorder, every call finds the no-op recorder and returns. Install one **before**
//! running the [`Scheduler`](crate::Scheduler):
//!
//! * **Prometheus** (cargo feature `prometheus`): one line serves `/metrics`, `/healthz` and
//!   `/readyz`:
//!   ```no_run
//!   # async fn f(handle: kinesis_client::SchedulerHandle) -> Result<(), Box<dyn std::error::Error>> {
//!   # #[cfg(feature = "prometheus")] {
//!   let endpoint = kinesis_client::telemetry::PrometheusEndpoint::start("127.0.0.1:9464".parse()?).await?;
//!   endpoint.report_health_of(&handle); // optional: /healthz and /readyz answer for this worker
//!   # }
//!   # Ok(()) }
//!   ```
//! * **CloudWatch** (cargo feature `cloudwatch`): [`cloudwatch::CloudWatchExporter`] batches
//!   `PutMetricData` as the Java KCL does (namespace = application name, metrics level,
//!   enabled dimensions, buffer time, bounded queue) and never blocks record processing.
//! * Both at once, or with your own recorders: [`install`].
//! * Any other `metrics` recorder (StatsD, OpenTelemetry bridges, ...): install it with
//!   [`metrics::set_global_recorder`]; the scheduler describes every metric (unit and
//!   meaning) to it when it starts ([`describe`]).
//!
//! # The metrics
//!
//! The library records its metrics with the Java KCL's names and dimensions (`Operation`
//! always, `ShardId` per shard, `WorkerIdentifier` per worker), and CloudWatch (and any
//! recorder of your own) gets them so, so dashboards and alarms carry over; levels are the
//! Java KCL's `SUMMARY`/`DETAILED` (recorded as the facade's `INFO`/`DEBUG` level, which the
//! CloudWatch exporter filters on). Java's `Success` and `.Success` metrics are 1 or 0 per
//! operation (their average is the success rate): here they are histograms of 1s and 0s.
//! Metrics marked *none* in the last column are not in the Java KCL. The Prometheus endpoint
//! serves them under Prometheus names (prefix `kcl_`, snake_case, seconds, `_total`,
//! histograms with buckets, success as counters by `outcome`): see the second table, after
//! this one. Every name lives in [`names`]; [`names::CATALOGUE`] lists the same rows.
//!
//! In a [multi-stream](crate::multi_stream) application every metric with `ShardId` also
//! has `StreamId`, the stream's serialized identifier (`account:name:epoch`), as the Java
//! KCL's multi-stream metrics do; `ShardId` is then the bare shard id.
//!
//! Not emitted: Java's `VeryOldLeases` (this taker has no "very old lease" rule) and the 3.x
//! lease-assignment and migration metrics.
//!
#![doc = include_str!("METRICS.md")]
//!
//! The Prometheus series of a shard (`shard_id`: counters, gauges and histograms) are
//! reported while this worker holds the shard, however idle it is, and for five minutes
//! ([`RELEASED_SHARD_TIMEOUT`]) after it let the shard go; then they are forgotten, so a
//! worker's scrape and memory hold only the shards it has held lately. A shard taken again
//! starts its counters from zero (a counter reset, which Prometheus' `rate` and `increase`
//! handle). Gauges without a shard go five minutes after
//! their last update. The CloudWatch exporter likewise forgets a metric that no held shard
//! references and that had no sample for a buffer period.
//!
//! # Health
//!
//! [`SchedulerHandle::health`](crate::SchedulerHandle::health) returns a [`Health`]: `live`
//! (the worker runs and its lease coordinator is not stuck) and `ready` (initialised, lease
//! table reachable, renewals succeeding, not shutting down). The Prometheus endpoint serves
//! them as `/healthz` and `/readyz` (200 or 503, with the checks in the body).
//!
//! # Logs
//!
//! A worker runs in a [`names::SPAN_WORKER`] span with the field [`names::FIELD_WORKER_ID`],
//! each shard consumer in a [`names::SPAN_SHARD`] span with [`names::FIELD_WORKER_ID`] and
//! [`names::FIELD_SHARD_ID`]; log lines about a lease carry [`names::FIELD_LEASE_KEY`].

#[cfg(feature = "cloudwatch")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudwatch")))]
pub mod cloudwatch;
mod emit;
mod health;
pub mod names;
#[cfg(feature = "prometheus")]
mod prometheus;
#[cfg(feature = "prometheus")]
mod shard_series;
#[cfg(feature = "prometheus")]
mod status_page;
#[cfg(all(test, feature = "prometheus"))]
pub(crate) use status_page::to_json as status_json;
#[cfg(test)]
mod tests;

pub use emit::describe;
pub(crate) use emit::{
    initialize_time, scheduler_initialized, shard_sync, shutdown_time, ShardMetrics, TakeStats,
    WorkerMetrics,
};
pub use health::Health;
pub(crate) use health::HealthState;
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub use prometheus::{PrometheusEndpoint, PrometheusRecorder, RELEASED_SHARD_TIMEOUT};

/// The Java KCL's metrics levels: which metrics an exporter sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MetricsLevel {
    /// Nothing.
    None,
    /// The most significant metrics (Java `SUMMARY`).
    Summary,
    /// Every metric (Java `DETAILED`, the default).
    #[default]
    Detailed,
}

impl MetricsLevel {
    /// `NONE`, `SUMMARY` or `DETAILED`, in any case (as the Java daemon's `metricsLevel`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_uppercase().as_str() {
            "NONE" => Some(MetricsLevel::None),
            "SUMMARY" => Some(MetricsLevel::Summary),
            "DETAILED" => Some(MetricsLevel::Detailed),
            _ => None,
        }
    }

    /// Whether a metric of level `metric` is sent at this level.
    pub fn includes(self, metric: MetricsLevel) -> bool {
        match self {
            MetricsLevel::None => false,
            MetricsLevel::Summary => metric == MetricsLevel::Summary,
            MetricsLevel::Detailed => metric != MetricsLevel::None,
        }
    }

    /// The level of a metric recorded with the facade `level` (`INFO` and above: SUMMARY).
    pub fn of_facade_level(level: &metrics::Level) -> Self {
        if *level >= metrics::Level::INFO {
            MetricsLevel::Summary
        } else {
            MetricsLevel::Detailed
        }
    }
}

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// Another `metrics` recorder is already installed in this process.
    #[error("a metrics recorder is already installed in this process")]
    RecorderAlreadyInstalled,
    /// The endpoint's address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Install several recorders at once as the process's global recorder (each gets every
/// metric), e.g. a [`PrometheusEndpoint`]'s and a CloudWatch exporter's.
#[cfg(any(feature = "prometheus", feature = "cloudwatch"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "prometheus", feature = "cloudwatch"))))]
pub fn install(
    recorders: impl IntoIterator<Item = Box<dyn metrics::Recorder + Send + Sync>>,
) -> Result<(), TelemetryError> {
    let mut fanout = metrics_util::layers::FanoutBuilder::default();
    for r in recorders {
        fanout = fanout.add_recorder(r);
    }
    metrics::set_global_recorder(fanout.build())
        .map_err(|_| TelemetryError::RecorderAlreadyInstalled)?;
    describe();
    Ok(())
}
