//! The CloudWatch exporter: the library's metrics to `PutMetricData`, as the Java KCL sends
//! them.
//!
//! * Namespace: the application name (Java `ConfigsBuilder.namespace`), or any you choose.
//! * [`MetricsLevel`]: `SUMMARY` sends only the summary metrics, `DETAILED` (the default)
//!   all, `NONE` nothing (Java `metricsLevel`).
//! * Enabled dimensions: `Operation` always, plus those listed (default: all; Java
//!   `metricsEnabledDimensions`). Metrics that differ only in a dropped dimension are merged.
//! * Every `buffer_time` (default 10 s, Java `metricsBufferTimeMillis`) the samples of each
//!   metric are sent as one statistic set (sum, minimum, maximum, count), in requests of 20
//!   datums, each bounded by `request_timeout` (5 s, as Java).
//! * Bounded: at most `max_queue_size` distinct metrics wait to be sent (Java
//!   `metricsMaxQueueSize`, 10 000); a datum with a key already waiting is merged into it,
//!   a new one beyond the bound is dropped. A request that fails or times out drops its datums.
//!   Dropped datums are counted ([`PublisherStats`]) and logged (a warning when publishing
//!   starts to fail, an info line when it works again).
//! * Never blocks record processing: recording a value is a short lock on that metric's
//!   statistic set; only the publisher task waits for CloudWatch.
//!
//! The publisher needs `cloudwatch:PutMetricData`.

mod queue;
mod recorder;

pub use recorder::CloudWatchRecorder;

use super::{describe, MetricsLevel, TelemetryError};
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};
use queue::{Datum, Queue};
use recorder::{Filter, Registry};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Datums per `PutMetricData` request (the Java KCL's batch size).
pub const BATCH_SIZE: usize = 20;

/// The default bound on one `PutMetricData` request, the SDK's retries included (5 s, as the
/// Java KCL).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the CloudWatch exporter (defaults: the Java KCL's).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CloudWatchConfig {
    /// The CloudWatch namespace (Java: the application name).
    pub namespace: String,
    /// Which metrics are sent.
    pub level: MetricsLevel,
    /// Dimensions sent besides `Operation`; `None` = all (Java `ALL`).
    pub enabled_dimensions: Option<BTreeSet<String>>,
    /// How often the samples are sent (Java `metricsBufferTimeMillis`, 10 s).
    pub buffer_time: Duration,
    /// The most distinct metrics waiting to be sent (Java `metricsMaxQueueSize`, 10 000).
    pub max_queue_size: usize,
    /// The longest a `PutMetricData` request may take, the SDK's retries included (5 s, as
    /// Java). The exporter never retries a request itself: the client's SDK retries are the
    /// only ones, and this becomes the client's SDK operation timeout.
    pub request_timeout: Duration,
}

impl CloudWatchConfig {
    /// The Java KCL's defaults, with `namespace` (use the application name).
    pub fn new(namespace: impl Into<String>) -> Self {
        CloudWatchConfig {
            namespace: namespace.into(),
            level: MetricsLevel::Detailed,
            enabled_dimensions: None,
            buffer_time: Duration::from_secs(10),
            max_queue_size: 10_000,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// What the publisher did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublisherStats {
    /// Datums CloudWatch accepted.
    pub published: u64,
    /// Datums dropped: the queue was full, or their request failed or timed out.
    pub dropped: u64,
    /// `PutMetricData` requests that failed or timed out.
    pub failed_requests: u64,
    /// Datums waiting to be sent now.
    pub queued: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    dropped: AtomicU64,
    failed_requests: AtomicU64,
    queued: AtomicU64,
}

/// Why a batch of datums was not published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// PutMetricData failed.
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    /// PutMetricData did not answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Where datums go (CloudWatch; something else in tests).
pub(crate) trait Sink: Send + Sync + 'static {
    fn put<'a>(
        &'a self,
        namespace: &'a str,
        data: Vec<Datum>,
    ) -> Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>>;
}

struct CloudWatchSink(aws_sdk_cloudwatch::Client);

fn standard_unit(u: Option<metrics::Unit>) -> StandardUnit {
    use metrics::Unit;
    match u {
        Some(Unit::Count) => StandardUnit::Count,
        Some(Unit::Bytes) => StandardUnit::Bytes,
        Some(Unit::Milliseconds) => StandardUnit::Milliseconds,
        Some(Unit::Seconds) => StandardUnit::Seconds,
        Some(Unit::Microseconds) => StandardUnit::Microseconds,
        Some(Unit::Percent) => StandardUnit::Percent,
        Some(Unit::CountPerSecond) => StandardUnit::CountSecond,
        _ => StandardUnit::None,
    }
}

fn to_cloudwatch(d: Datum) -> MetricDatum {
    let dimensions = d
        .key
        .dimensions
        .into_iter()
        .map(|(name, value)| Dimension::builder().name(name).value(value).build())
        .collect();
    let stats = StatisticSet::builder()
        .sample_count(d.stats.count)
        .sum(d.stats.sum)
        .minimum(d.stats.min)
        .maximum(d.stats.max)
        .build();
    MetricDatum::builder()
        .metric_name(d.key.name)
        .set_dimensions(Some(dimensions))
        .unit(standard_unit(d.unit))
        .statistic_values(stats)
        .timestamp(aws_smithy_types::DateTime::from(d.timestamp))
        .build()
}

impl Sink for CloudWatchSink {
    fn put<'a>(
        &'a self,
        namespace: &'a str,
        data: Vec<Datum>,
    ) -> Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>> {
        Box::pin(async move {
            let data: Vec<MetricDatum> = data.into_iter().map(to_cloudwatch).collect();
            self.0
                .put_metric_data()
                .namespace(namespace)
                .set_metric_data(Some(data))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| crate::aws::AwsError::from_sdk(e).into())
        })
    }
}

/// The CloudWatch exporter: a recorder and the task that publishes what it records.
#[derive(Debug)]
pub struct CloudWatchExporter;

impl CloudWatchExporter {
    /// Start publishing to `client` what the returned recorder records (spawned on the
    /// current tokio runtime), without installing the recorder: install it yourself (with
    /// others: [`telemetry::install`](crate::telemetry::install)). The client keeps its SDK
    /// retries (the exporter does not retry), bounded by `config.request_timeout` as its SDK
    /// operation timeout.
    pub fn build(
        client: aws_sdk_cloudwatch::Client,
        config: CloudWatchConfig,
    ) -> (CloudWatchRecorder, CloudWatchPublisher) {
        let timeouts = aws_smithy_types::timeout::TimeoutConfig::builder()
            .operation_timeout(config.request_timeout)
            .build();
        let client = aws_sdk_cloudwatch::Client::from_conf(
            client
                .config()
                .to_builder()
                .timeout_config(timeouts)
                .build(),
        );
        Self::with_sink(Arc::new(CloudWatchSink(client)), config)
    }

    /// Start publishing to `client` and install the recorder as the process's global `metrics`
    /// recorder (one line; call it before running the scheduler).
    pub fn start(
        client: aws_sdk_cloudwatch::Client,
        config: CloudWatchConfig,
    ) -> Result<CloudWatchPublisher, TelemetryError> {
        let (recorder, publisher) = Self::build(client, config);
        metrics::set_global_recorder(recorder)
            .map_err(|_| TelemetryError::RecorderAlreadyInstalled)?;
        describe();
        Ok(publisher)
    }

    pub(crate) fn with_sink(
        sink: Arc<dyn Sink>,
        config: CloudWatchConfig,
    ) -> (CloudWatchRecorder, CloudWatchPublisher) {
        let registry = Arc::new(Registry::new(Filter {
            level: config.level,
            dimensions: config.enabled_dimensions.clone(),
        }));
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(publish(
            registry.clone(),
            sink,
            config,
            counters.clone(),
            stop.clone(),
        ));
        (
            CloudWatchRecorder { registry },
            CloudWatchPublisher {
                counters,
                stop,
                task: Some(task),
            },
        )
    }
}

/// The publishing task of a [`CloudWatchExporter`]: its counts, and a final flush.
#[derive(Debug)]
pub struct CloudWatchPublisher {
    counters: Arc<Counters>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl CloudWatchPublisher {
    /// What it did so far.
    pub fn stats(&self) -> PublisherStats {
        let c = &self.counters;
        PublisherStats {
            published: c.published.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed_requests: c.failed_requests.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
        }
    }

    /// Send what was recorded so far and stop (each request still bounded by the request
    /// timeout). Call it when the worker has stopped.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for CloudWatchPublisher {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn publish(
    registry: Arc<Registry>,
    sink: Arc<dyn Sink>,
    config: CloudWatchConfig,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut queue = Queue::new(config.max_queue_size);
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            biased;
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(config.buffer_time) => false,
        };
        for d in registry.take(SystemTime::now()) {
            if !queue.offer(d) {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        counters.queued.store(queue.len() as u64, Ordering::Relaxed);
        while !queue.is_empty() {
            let batch = queue.drain(BATCH_SIZE);
            let n = batch.len() as u64;
            counters.queued.store(queue.len() as u64, Ordering::Relaxed);
            let sent =
                tokio::time::timeout(config.request_timeout, sink.put(&config.namespace, batch))
                    .await
                    .unwrap_or(Err(PublishError::Timeout(config.request_timeout)));
            match sent {
                Ok(()) => {
                    counters.published.fetch_add(n, Ordering::Relaxed);
                    if failing {
                        failing = false;
                        tracing::info!(namespace = %config.namespace, "publishing metrics to CloudWatch works again");
                    }
                }
                Err(e) => {
                    counters.dropped.fetch_add(n, Ordering::Relaxed);
                    counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        failing = true;
                        tracing::warn!(namespace = %config.namespace, error = %e, dropped = n,
                            "cannot publish metrics to CloudWatch; dropping them (record processing is not affected)");
                    } else {
                        tracing::debug!(error = %e, dropped = n, "cannot publish metrics to CloudWatch");
                    }
                }
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
