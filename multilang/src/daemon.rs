//! From parsed settings to a running [`kinesis_client::Scheduler`] of child processors.

use crate::child::{ChildProcessor, ChildSpec};
use crate::credentials::build_provider;
use crate::settings::DaemonSettings;
use crate::streams::PropertiesStreams;
use aws_config::{BehaviorVersion, Region};
use kinesis_client::lease::DynamoDbLeaseStore;
use kinesis_client::multi_stream::StreamConfig;
use kinesis_client::retrieval::{KinesisStreamClient, StreamClient, StreamRef};
#[cfg(feature = "cloudwatch")]
use kinesis_client::telemetry::cloudwatch::{
    CloudWatchConfig, CloudWatchExporter, CloudWatchPublisher,
};
use kinesis_client::telemetry::{MetricsLevel, PrometheusEndpoint, TelemetryError};
use kinesis_client::{Config, FanOutConfig, Scheduler};
use std::sync::Arc;

/// The `.properties` key for a library setting (for error messages).
fn property_key(setting: &str) -> &'static str {
    match setting {
        "application_name" => "applicationName",
        "stream" => "streamName/streamArn",
        "streams" => "streamNames/streamArns",
        "table_name" => "tableName",
        "worker_id" => "workerId",
        "failover_time" => "failoverTimeMillis",
        "max_records" => "maxRecords",
        "parent_shard_poll_interval" => "parentShardPollIntervalMillis",
        "shard_sync_interval" => "shardSyncIntervalMillis",
        "max_leases_for_worker" => "maxLeasesForWorker",
        "max_leases_to_steal_at_one_time" => "maxLeasesToStealAtOneTime",
        "fan_out.consumer_name" => "fanoutConfig.consumerName (default: applicationName)",
        "fan_out.consumer_arn" => "fanoutConfig.consumerArn",
        _ => "(derived setting)",
    }
}

/// A settings value the library rejects.
#[derive(Debug, thiserror::Error)]
#[error("properties: {key}: {message}")]
pub struct MappingError {
    /// The properties key.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Map the daemon settings onto the library's [`Config`] (Java KCL defaults for unset keys).
pub fn kcl_config(s: &DaemonSettings) -> Result<Config, MappingError> {
    let mut b = if s.streams.is_empty() {
        let stream = match &s.stream_arn {
            Some(arn) => StreamRef::Arn(arn.clone()),
            None => StreamRef::Name(s.stream_name.clone()),
        };
        Config::builder(&s.application_name, stream)
    } else {
        Config::multi_stream_builder(&s.application_name, PropertiesStreams::new(s))
    }
    .table_name(s.lease_table_name());
    if let Some(w) = &s.worker_id {
        b = b.worker_id(w);
    }
    if let Some(p) = s.initial_position {
        b = b.initial_position(p);
    }
    if let Some(v) = s.failover_time {
        b = b.failover_time(v);
    }
    if let Some(v) = s.max_records {
        b = b.max_records(v);
    }
    if let Some(v) = s.idle_time_between_reads {
        b = b.idle_time_between_reads(v);
    }
    if let Some(v) = s.call_process_records_even_for_empty_record_list {
        b = b.call_process_records_even_for_empty_list(v);
    }
    if let Some(v) = s.parent_shard_poll_interval {
        b = b.parent_shard_poll_interval(v);
    }
    if let Some(v) = s.shard_sync_interval {
        b = b.shard_sync_interval(v);
    }
    if let Some(v) = s.task_backoff_time {
        b = b.task_backoff(v);
    }
    if let Some(policy) = s.retry_policy() {
        b = b.retry_policy(policy);
    }
    if let Some(v) = s.cleanup_leases_upon_shard_completion {
        b = b.cleanup_leases_upon_shard_completion(v);
    }
    if let Some(v) = s.max_leases_for_worker {
        b = b.max_leases_for_worker(v as usize);
    }
    if let Some(v) = s.max_leases_to_steal_at_one_time {
        b = b.max_leases_to_steal_at_one_time(v as usize);
    }
    if let Some(v) = s.lease_assignment_strategy {
        b = b.lease_assignment_strategy(v);
    }
    if let Some(v) = s.shutdown_grace {
        b = b.graceful_shutdown_timeout(v);
    }
    b = b.retrieval_mode(s.retrieval());
    let f = &s.fan_out;
    let mut fan_out = FanOutConfig::default();
    fan_out.consumer_name = f.consumer_name.clone();
    fan_out.consumer_arn = f.consumer_arn.clone();
    if let Some(v) = f.max_describe_stream_consumer_retries {
        fan_out.max_describe_stream_consumer_retries = v;
    }
    if let Some(v) = f.register_stream_consumer_retries {
        fan_out.register_stream_consumer_retries = v;
    }
    if let Some(v) = f.retry_backoff {
        fan_out.retry_backoff = v;
    }
    b = b.fan_out(fan_out);
    b = b.fleet(s.fleet.to_config());
    b.build().map_err(|e| MappingError {
        key: property_key(e.setting),
        message: e.message,
    })
}

pub(crate) async fn sdk_config(
    region: Option<&str>,
    creds: &[crate::credentials::CredentialsSpec],
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::https::https_client())
        .credentials_provider(build_provider(creds, region).await);
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    loader.load().await
}

/// Build the worker: Kinesis and DynamoDB clients with their own regions, credentials and
/// endpoints, and one [`ChildProcessor`] per shard.
pub async fn build_scheduler(
    s: &DaemonSettings,
    config: Config,
) -> Scheduler<impl kinesis_client::RecordProcessorFactory> {
    let region = s.region_name.as_deref();
    let kinesis_sdk = sdk_config(region, &s.credentials.kinesis).await;
    let dynamodb_sdk = sdk_config(
        s.dynamodb_region_name.as_deref().or(region),
        s.credentials.for_dynamodb(),
    )
    .await;
    let kinesis = kinesis_client::aws::kinesis_client(&kinesis_sdk, s.kinesis_endpoint.as_deref());
    let dynamodb =
        kinesis_client::aws::dynamodb_client(&dynamodb_sdk, s.dynamodb_endpoint.as_deref());
    let clients = move |s: &StreamConfig| -> Arc<dyn StreamClient> {
        Arc::new(KinesisStreamClient::new(kinesis.clone(), s.stream_ref()))
    };
    let store = DynamoDbLeaseStore::new(dynamodb, config.table_name().to_string());
    let spec = Arc::new(ChildSpec {
        argv: s.command(),
        timeout: s.timeout,
    });
    let factory = move |shard: &str| ChildProcessor::new(shard, spec.clone());
    Scheduler::multi_stream(config, factory, clients, Arc::new(store))
}

/// The daemon's metrics: the CloudWatch exporter (unless `metricsLevel = NONE`) and the
/// Prometheus endpoint (when `metricsPrometheusPort` is set), installed together.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// `/metrics` (Prometheus names, `kcl_…`), `/healthz`, `/readyz`.
    pub prometheus: Option<PrometheusEndpoint>,
    /// The CloudWatch publisher.
    #[cfg(feature = "cloudwatch")]
    pub cloudwatch: Option<CloudWatchPublisher>,
}

impl Telemetry {
    /// Send what is left to CloudWatch (bounded by its request timeout) when the worker stops.
    pub async fn shutdown(self) {
        #[cfg(feature = "cloudwatch")]
        if let Some(p) = self.cloudwatch {
            p.shutdown().await;
        }
    }
}

/// Why the daemon's metrics could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The Prometheus endpoint or the recorders could not start.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The settings ask for CloudWatch metrics, and this build has no CloudWatch exporter.
    #[error(
        "metricsLevel = {0} publishes metrics to CloudWatch (the default is DETAILED), and this \
         kcl-multilang was built without its `cloudwatch` feature: set metricsLevel = NONE, or \
         build it with that feature (one of its defaults)"
    )]
    CloudWatchNotBuilt(String),
}

/// CloudWatch metrics (any level but `NONE`) need a build with the `cloudwatch` feature.
fn check_cloudwatch_built(level: MetricsLevel, built: bool) -> Result<(), MetricsError> {
    if level == MetricsLevel::None || built {
        return Ok(());
    }
    Err(MetricsError::CloudWatchNotBuilt(
        format!("{level:?}").to_uppercase(),
    ))
}

/// Start the exporters the settings ask for, and install their recorders (before the
/// scheduler starts, so that every metric reaches them).
pub async fn start_telemetry(
    s: &DaemonSettings,
    config: &Config,
) -> Result<Telemetry, MetricsError> {
    let m = &s.metrics;
    check_cloudwatch_built(m.level(), cfg!(feature = "cloudwatch"))?;
    let mut recorders: Vec<Box<dyn metrics::Recorder + Send + Sync>> = Vec::new();
    let mut telemetry = Telemetry::default();
    if let Some(addr) = m.prometheus_addr() {
        let (endpoint, recorder) = PrometheusEndpoint::bind(addr).await?;
        recorders.push(Box::new(recorder));
        telemetry.prometheus = Some(endpoint);
    }
    #[cfg(not(feature = "cloudwatch"))]
    let _ = config; // the CloudWatch namespace is the application name
    #[cfg(feature = "cloudwatch")]
    if m.level() != MetricsLevel::None {
        let region = m
            .cloudwatch_region_name
            .as_deref()
            .or(s.region_name.as_deref());
        let sdk = sdk_config(region, s.credentials.for_cloudwatch()).await;
        let client = kinesis_client::aws::cloudwatch_client(&sdk, m.cloudwatch_endpoint.as_deref());
        let mut cw = CloudWatchConfig::new(config.application_name().to_string());
        cw.level = m.level();
        if let Some(d) = &m.enabled_dimensions {
            cw.enabled_dimensions = d.clone();
        }
        if let Some(t) = m.buffer_time {
            cw.buffer_time = t;
        }
        if let Some(n) = m.max_queue_size {
            cw.max_queue_size = n as usize;
        }
        tracing::info!(namespace = %cw.namespace, level = ?cw.level, dimensions = ?cw.enabled_dimensions,
            buffer_time = ?cw.buffer_time, "publishing metrics to CloudWatch (metricsLevel = NONE turns this off)");
        let (recorder, publisher) = CloudWatchExporter::build(client, cw);
        recorders.push(Box::new(recorder));
        telemetry.cloudwatch = Some(publisher);
    }
    if !recorders.is_empty() {
        kinesis_client::telemetry::install(recorders)?;
    }
    Ok(telemetry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudwatch_metrics_without_the_cloudwatch_feature_are_refused_by_name() {
        assert!(check_cloudwatch_built(MetricsLevel::None, false).is_ok());
        assert!(check_cloudwatch_built(MetricsLevel::Detailed, true).is_ok());
        for level in [MetricsLevel::Summary, MetricsLevel::Detailed] {
            let e = check_cloudwatch_built(level, false)
                .unwrap_err()
                .to_string();
            let name = format!("{level:?}").to_uppercase();
            assert!(e.contains(&format!("metricsLevel = {name}")), "{e}");
            assert!(
                e.contains("metricsLevel = NONE") && e.contains("`cloudwatch` feature"),
                "{e}"
            );
        }
    }
}
