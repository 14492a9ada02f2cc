//! Typed MultiLangDaemon settings from properties entries, using the Java KCL key names.
//!
//! [`DaemonSettings`] holds what the user wrote, typed and validated: `Option` for keys that
//! were not set (the library supplies its own documented defaults), `Duration` for times.
//!
//! Differences from the Java daemon, on purpose (the key names and defaults are Java's; where
//! Java silently drops or ignores what was written, we honour it or say so):
//!
//! * **Values equal to the Java field default are honoured.** Java pushes a value into its
//!   config objects only if it differs from the Java field's zero value, so
//!   `cleanupLeasesUponShardCompletion = false` silently stays `true` and `failoverTimeMillis = 0`
//!   is dropped. Here `false` is `Some(false)`; `0` is `Some(0)` where zero means something
//!   (e.g. `taskBackoffTimeMillis = 0`, `shutdownGraceMillis = 0`), and an error where it
//!   cannot work (e.g. `failoverTimeMillis = 0`, `maxLeasesForWorker = 0`, `timeoutInSeconds = 0`).
//! * **Unknown keys are warnings** naming the key and line (Java ignores them silently).
//!   Keys the Java daemon knows but this implementation does not use (KCL 3.x CPU-based
//!   balancing, table creation options, ...) are listed in [`Parsed::ignored`].
//! * **`clientVersionConfig` unset** follows the fleet's state and starts a new application
//!   leaderless, creating nothing (Java starts it as a KCL 3.x fleet); see [`FleetSettings`].
//! * **`retrievalMode`** follows Java: `FANOUT` reads by enhanced fan-out, `POLLING` polls,
//!   and `DEFAULT` (or no key) polls when a polling key is set (`maxRecords`,
//!   `idleTimeBetweenReadsInMillis`, `millisBehindLatestThresholdForReducedTps`,
//!   `retryGetRecordsInSeconds`, `maxGetRecordsThreadPool`), else uses fan-out; an info line
//!   says which and why. Settings of the mode not used are warnings.
//! * **Metrics**: the Java keys (`metricsLevel`, `metricsEnabledDimensions`,
//!   `metricsBufferTimeMillis`, `metricsMaxQueueSize`) drive the CloudWatch exporter, as in
//!   Java; `cloudWatchEndpoint`, `metricsPrometheusPort` and `metricsPrometheusBindAddress`
//!   are this daemon's own (see [`MetricsSettings`]).
//! * **An empty value means "not set"** (`workerId =` leaves the worker id to the library).
//! * **Values are trimmed**; Java keeps trailing whitespace, which only ever causes surprises.
//! * **A missing `AwsCredentialsProvider` is a warning**, not an error: the SDK default chain
//!   is used (Java requires the key).
//! * Booleans accept what commons-beanutils accepts, case-insensitively: `true`/`false`,
//!   `yes`/`no`, `y`/`n`, `on`/`off`, `1`/`0`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::credentials::{parse_provider_list, redact_provider_list, CredentialsSpec};
use crate::properties::{self, Entry, PropertiesError};

pub use fleet::FleetSettings;
use kinesis_client::config::InitialPositionError;
use kinesis_client::telemetry::names::DIMENSIONS;
/// `metricsLevel`.
pub use kinesis_client::telemetry::MetricsLevel;
use kinesis_client::validation::{
    is_valid_consumer_name, is_valid_region, is_valid_stream_name, is_valid_table_name,
    parse_consumer_arn, CONSUMER_NAME_RULE, MIN_IDLE_TIME_BETWEEN_READS, STREAM_NAME_RULE,
    TABLE_NAME_RULE,
};
pub use kinesis_client::validation::{parse_stream_arn, StreamArn, MAX_RECORDS_LIMIT};
/// Where a shard without a checkpoint starts reading (`initialPositionInStream`, or
/// `initialPositionInStreamExtended` in epoch seconds for `AT_TIMESTAMP`).
pub use kinesis_client::InitialPosition;
use kinesis_client::LeaseAssignmentStrategy;
pub use streams::StreamSetting;

/// `retrievalMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrievalMode {
    /// `DEFAULT`: as Java, polling if a polling key is set, else enhanced fan-out.
    Default,
    /// `POLLING`: GetRecords polling.
    Polling,
    /// `FANOUT`: enhanced fan-out (SubscribeToShard).
    FanOut,
}

/// `fanoutConfig.*`: the enhanced fan-out settings (the Java daemon's `FanoutConfigBean`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanOutSettings {
    /// `fanoutConfig.consumerName`: the stream consumer; default the application name.
    pub consumer_name: Option<String>,
    /// `fanoutConfig.consumerArn`: an existing consumer, used instead of the name.
    pub consumer_arn: Option<String>,
    /// `fanoutConfig.maxDescribeStreamConsumerRetries`.
    pub max_describe_stream_consumer_retries: Option<u32>,
    /// `fanoutConfig.registerStreamConsumerRetries`.
    pub register_stream_consumer_retries: Option<u32>,
    /// `fanoutConfig.retryBackoffMillis`.
    pub retry_backoff: Option<Duration>,
    /// The `fanoutConfig.*` keys set, as `"key (line N)"` (for warnings when polling).
    pub keys: Vec<String>,
}

/// Credentials provider chains per AWS client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsSettings {
    /// `AwsCredentialsProvider`: used for Kinesis, and for the others when they are unset.
    /// `[CredentialsSpec::Default]` when the key is missing.
    pub kinesis: Vec<CredentialsSpec>,
    /// `AwsCredentialsProviderDynamoDB`.
    pub dynamodb: Option<Vec<CredentialsSpec>>,
    /// `AwsCredentialsProviderCloudWatch`: for publishing metrics.
    pub cloudwatch: Option<Vec<CredentialsSpec>>,
}

impl CredentialsSettings {
    /// The chain for DynamoDB: its own key, else the Kinesis one (as Java does).
    pub fn for_dynamodb(&self) -> &[CredentialsSpec] {
        self.dynamodb.as_deref().unwrap_or(&self.kinesis)
    }

    /// The chain for CloudWatch: its own key, else the Kinesis one (as Java does).
    pub fn for_cloudwatch(&self) -> &[CredentialsSpec] {
        self.cloudwatch.as_deref().unwrap_or(&self.kinesis)
    }
}

/// The metrics settings: CloudWatch (the Java keys) and the Prometheus endpoint (this
/// daemon's keys). `None` = not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// `metricsLevel`: `NONE`, `SUMMARY` or `DETAILED` (Java's default); `NONE` turns the
    /// CloudWatch exporter off.
    pub level: Option<MetricsLevel>,
    /// `metricsEnabledDimensions`: dimensions sent to CloudWatch besides `Operation`;
    /// `Some(None)` for `ALL`.
    pub enabled_dimensions: Option<Option<BTreeSet<String>>>,
    /// `metricsBufferTimeMillis`: how often metrics are sent to CloudWatch.
    pub buffer_time: Option<Duration>,
    /// `metricsMaxQueueSize`: the most distinct metrics waiting to be sent.
    pub max_queue_size: Option<u32>,
    /// `cloudWatchRegionName`: region override for CloudWatch.
    pub cloudwatch_region_name: Option<String>,
    /// `cloudWatchEndpoint` (not a Java key): endpoint URL override for CloudWatch.
    pub cloudwatch_endpoint: Option<String>,
    /// `metricsPrometheusPort` (not a Java key): serve `/metrics` (the metrics under their
    /// Prometheus names, `kcl_…`), `/healthz` and `/readyz` on this port (0: any free port,
    /// logged).
    pub prometheus_port: Option<u16>,
    /// `metricsPrometheusBindAddress` (not a Java key): the endpoint's address (default
    /// `127.0.0.1`).
    pub prometheus_bind_address: Option<IpAddr>,
}

impl MetricsSettings {
    /// The metrics level in effect (Java's default: `DETAILED`).
    pub fn level(&self) -> MetricsLevel {
        self.level.unwrap_or(MetricsLevel::Detailed)
    }

    /// Where the Prometheus endpoint listens, when it is enabled.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        let ip = self
            .prometheus_bind_address
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        self.prometheus_port.map(|port| SocketAddr::new(ip, port))
    }
}

/// Everything the daemon reads from its properties file, typed. `None` = not set.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DaemonSettings {
    /// `executableName`: the command run once per shard (see [`DaemonSettings::command`]).
    pub executable_name: String,
    /// The line of `executableName` in the properties file (for error messages).
    pub executable_line: usize,
    /// `applicationName`: KCL application name; the lease table name unless `tableName` is set.
    pub application_name: String,
    /// The stream name: from `streamArn` when given, else `streamName`; empty for a
    /// multi-stream daemon (see [`DaemonSettings::streams`]).
    pub stream_name: String,
    /// `streamArn`, validated (`arn:<partition>:kinesis:<region>:<account>:stream/<name>`).
    pub stream_arn: Option<String>,
    /// `streamNames` and `streamArns` (our extension): the streams of a multi-stream daemon,
    /// with their `initialPositionInStream.<name>`; empty for a single-stream one.
    pub streams: Vec<StreamSetting>,
    /// `formerStreamsLeasesDeletionWaitSeconds` (our extension): a multi-stream daemon deletes
    /// the leases of a stream out of its list for this long; `None` keeps them.
    pub former_streams_leases_deletion_wait: Option<Duration>,
    /// `tableName`: lease table name.
    pub table_name: Option<String>,
    /// `workerId` (alias `workerIdentifier`).
    pub worker_id: Option<String>,
    /// `regionName`: region of every client.
    pub region_name: Option<String>,
    /// `dynamoDBRegionName`: region override for DynamoDB.
    pub dynamodb_region_name: Option<String>,
    /// `kinesisEndpoint`: endpoint URL override for Kinesis.
    pub kinesis_endpoint: Option<String>,
    /// `dynamoDBEndpoint`: endpoint URL override for DynamoDB.
    pub dynamodb_endpoint: Option<String>,
    /// `AwsCredentialsProvider*` keys.
    pub credentials: CredentialsSettings,
    /// `initialPositionInStream` / `initialPositionInStreamExtended` (the latter wins).
    pub initial_position: Option<InitialPosition>,
    /// `failoverTimeMillis`: lease duration (> 0).
    pub failover_time: Option<Duration>,
    /// `shardSyncIntervalMillis`: period of shard discovery (> 0).
    pub shard_sync_interval: Option<Duration>,
    /// `maxRecords`: records per GetRecords call (1..=10000).
    pub max_records: Option<u32>,
    /// `idleTimeBetweenReadsInMillis`: pause between GetRecords calls (Java raises values
    /// below 200 ms to 200 ms; a warning says so, the library decides).
    pub idle_time_between_reads: Option<Duration>,
    /// `callProcessRecordsEvenForEmptyRecordList`.
    pub call_process_records_even_for_empty_record_list: Option<bool>,
    /// `parentShardPollIntervalMillis`: how often a child shard checks its parents (> 0).
    pub parent_shard_poll_interval: Option<Duration>,
    /// `cleanupLeasesUponShardCompletion`.
    pub cleanup_leases_upon_shard_completion: Option<bool>,
    /// `taskBackoffTimeMillis`: backoff after a failed task (0 allowed).
    pub task_backoff_time: Option<Duration>,
    /// `skipFailingRecordsAfterAttempts` (>= 1): a batch the child failed on (it crashed,
    /// hung or broke the protocol) this many times is skipped. Not a Java key.
    pub skip_failing_records_after_attempts: Option<u32>,
    /// `skipFailingRecordsAfterAgeSeconds` (>= 1): a batch the child failed on whose first
    /// record is this old is skipped. Not a Java key.
    pub skip_failing_records_after_age: Option<Duration>,
    /// `maxLeasesForWorker` (>= 1).
    pub max_leases_for_worker: Option<u32>,
    /// `maxLeasesToStealAtOneTime` (>= 1; the library requires at least one).
    pub max_leases_to_steal_at_one_time: Option<u32>,
    /// `leaseAssignmentStrategy` (the Java KCL 3.x's values): `WORKER_UTILIZATION_AWARE`
    /// balances leaderless workers by each lease's throughput, `LEASE_COUNT_BASED` by count.
    pub lease_assignment_strategy: Option<LeaseAssignmentStrategy>,
    /// `timeoutInSeconds`: how long a child may take to answer one message (>= 1 s).
    pub timeout: Option<Duration>,
    /// `shutdownGraceMillis`: how long graceful shutdown may take (0 allowed).
    pub shutdown_grace: Option<Duration>,
    /// `maxActiveThreads`: Java's executor size. Child I/O here is async, so no pool can
    /// starve; the value is kept only to be logged.
    pub max_active_threads: Option<i32>,
    /// `processingLanguage`: informational (Java logs it as a would-be User-Agent suffix).
    pub processing_language: Option<String>,
    /// `retrievalMode`, as written.
    pub retrieval_mode: Option<RetrievalMode>,
    /// The polling keys set (Java's `PollingConfigBean.anyPropertiesSet`: non-zero values),
    /// as `"key (line N)"`: with `retrievalMode` `DEFAULT` or unset they select polling.
    pub polling_keys: Vec<String>,
    /// `fanoutConfig.*`.
    pub fan_out: FanOutSettings,
    /// `metrics*` keys, `cloudWatch*` keys.
    pub metrics: MetricsSettings,
    /// The KCL 3.x keys (`clientVersionConfig`, …).
    pub fleet: FleetSettings,
}

impl DaemonSettings {
    /// How records are read, as the Java daemon decides: `FANOUT`, `POLLING`, or for
    /// `DEFAULT` (and no key) polling if a polling key is set, else fan-out.
    pub fn retrieval(&self) -> kinesis_client::RetrievalMode {
        match self.retrieval_mode {
            Some(RetrievalMode::FanOut) => kinesis_client::RetrievalMode::FanOut,
            Some(RetrievalMode::Polling) => kinesis_client::RetrievalMode::Polling,
            Some(RetrievalMode::Default) | None if self.polling_keys.is_empty() => {
                kinesis_client::RetrievalMode::FanOut
            }
            Some(RetrievalMode::Default) | None => kinesis_client::RetrievalMode::Polling,
        }
    }

    /// The retry policy from `skipFailingRecordsAfterAttempts` and
    /// `skipFailingRecordsAfterAgeSeconds`; `None` (never skip) when neither is set.
    pub fn retry_policy(&self) -> Option<kinesis_client::processor::RetryPolicy> {
        if self.skip_failing_records_after_attempts.is_none()
            && self.skip_failing_records_after_age.is_none()
        {
            return None;
        }
        let mut policy = kinesis_client::processor::RetryPolicy::default();
        if let Some(n) = self.skip_failing_records_after_attempts {
            policy = policy.with_max_attempts(n);
        }
        if let Some(age) = self.skip_failing_records_after_age {
            policy = policy.with_max_record_age(age);
        }
        Some(policy)
    }

    /// `executableName` split on runs of spaces, as Java's `split(" +")`: program then arguments.
    pub fn command(&self) -> Vec<String> {
        self.executable_name
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Checks that the program of `executableName` resolves to an executable file (through
    /// `PATH` when it has no `/`, else relative to the working directory), so that a typo is
    /// an error at start naming the key and line, not a restart loop for every shard.
    pub fn check_executable(&self) -> Result<std::path::PathBuf, SettingsError> {
        let command = self.command();
        let program = command.first().map(String::as_str).unwrap_or_default();
        crate::executable::resolve(program, std::env::var_os("PATH").as_deref()).map_err(|why| {
            SettingsError::InvalidValue {
                key: "executableName".into(),
                value: self.executable_name.clone(),
                line: self.executable_line,
                expected: why.to_string(),
            }
        })
    }

    /// The lease table name: `tableName`, else `applicationName`.
    pub fn lease_table_name(&self) -> &str {
        self.table_name.as_deref().unwrap_or(&self.application_name)
    }
}

/// The outcome of reading the settings, with messages for the binary to log.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The typed settings.
    pub settings: DaemonSettings,
    /// Things the user should fix (unknown keys, skipped credentials providers, ...).
    pub warnings: Vec<String>,
    /// Informational notes (e.g. an SDK v1 provider name mapped to v2).
    pub info: Vec<String>,
    /// Keys the Java daemon accepts that this implementation does not use, as
    /// `"key (line N: reason)"`; the binary logs them on one info line.
    pub ignored: Vec<String>,
}

/// Why the settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The file is not valid properties syntax.
    #[error(transparent)]
    Syntax(#[from] PropertiesError),
    /// A value that cannot be used for its key.
    #[error("properties line {line}: {key} = {value:?}: {expected}")]
    InvalidValue {
        /// The key as written.
        key: String,
        /// The value as written (redacted for secret-bearing keys: see [`shown_value`]).
        value: String,
        /// Line where the entry starts.
        line: usize,
        /// What was expected.
        expected: String,
    },
    /// A required key is absent (or empty).
    #[error("missing required property {key}: {hint}")]
    MissingKey {
        /// The key (or keys) required.
        key: &'static str,
        /// What it is for.
        hint: &'static str,
    },
}

/// Reads settings from the text of a properties file.
pub fn from_properties_text(text: &str) -> Result<Parsed, SettingsError> {
    from_entries(&properties::parse(text)?)
}

/// Reads settings from the bytes of a properties file (UTF-8, else ISO-8859-1).
pub fn from_properties_bytes(bytes: &[u8]) -> Result<Parsed, SettingsError> {
    from_entries(&properties::parse_bytes(bytes)?)
}

/// Keys the Java daemon accepts but this implementation does not use, with the reason.
const IGNORED_KEYS: &[(&str, &str)] = &[
    ("validateSequenceNumberBeforeCheckpointing", NO_EFFECT),
    ("retryGetRecordsInSeconds", NO_EFFECT),
    ("maxGetRecordsThreadPool", NO_EFFECT),
    ("millisBehindLatestThresholdForReducedTps", NOT_IMPLEMENTED),
    (
        "fanoutConfig.maxDescribeStreamSummaryRetries",
        "the stream ARN is looked up once, within the start-up retries",
    ),
    ("initialLeaseTableReadCapacity", NOT_IMPLEMENTED),
    ("initialLeaseTableWriteCapacity", NOT_IMPLEMENTED),
    ("leaseTableDeletionProtectionEnabled", NOT_IMPLEMENTED),
    ("leaseTablePitrEnabled", NOT_IMPLEMENTED),
    ("leaseTableScanTotalSegments", NOT_IMPLEMENTED),
    ("maxLeaseRenewalThreads", NOT_IMPLEMENTED),
    ("enablePriorityLeaseAssignment", NOT_IMPLEMENTED),
    ("shardPrioritization", NOT_IMPLEMENTED),
    (
        "skipShardSyncAtWorkerInitializationIfLeasesExist",
        NOT_IMPLEMENTED,
    ),
    ("schedulerInitializationBackoffTimeMillis", NOT_IMPLEMENTED),
    ("listShardsBackoffTimeInMillis", NOT_IMPLEMENTED),
    ("ignoreUnexpectedChildShards", NOT_IMPLEMENTED),
    ("logWarningForTaskAfterMillis", NOT_IMPLEMENTED),
    ("maxListShardsRetryAttempts", NOT_IMPLEMENTED),
    ("migrateAllEntitiesToLeaseTable", TABLE_MIGRATION),
    ("tableMigrationCompleteBakeTimeSeconds", TABLE_MIGRATION),
    ("inMemoryWorkerMetricsCaptureFrequencyMillis", UTILISATION),
    ("noOfPersistedMetricsPerWorkerMetrics", UTILISATION),
    ("disableWorkerMetrics", UTILISATION),
    ("maxThroughputPerHostKBps", UTILISATION),
    ("dampeningPercentage", UTILISATION),
    ("reBalanceThresholdPercentage", UTILISATION),
    ("allowThroughputOvershoot", UTILISATION),
    ("varianceBalancingFrequency", UTILISATION),
    ("workerMetricsEMAAlpha", UTILISATION),
    ("staleWorkerMetricsEntryCleanupDuration", UTILISATION),
    ("workerMetricsBillingMode", KCL3_TABLES),
    ("workerMetricsReadCapacity", KCL3_TABLES),
    ("workerMetricsWriteCapacity", KCL3_TABLES),
    ("workerMetricsPointInTimeRecoveryEnabled", KCL3_TABLES),
    ("workerMetricsDeletionProtectionEnabled", KCL3_TABLES),
    ("workerMetricsTags", KCL3_TABLES),
    ("coordinatorStateBillingMode", KCL3_TABLES),
    ("coordinatorStateReadCapacity", KCL3_TABLES),
    ("coordinatorStateWriteCapacity", KCL3_TABLES),
    ("coordinatorStatePointInTimeRecoveryEnabled", KCL3_TABLES),
    ("coordinatorStateDeletionProtectionEnabled", KCL3_TABLES),
    ("coordinatorStateTags", KCL3_TABLES),
];
const NO_EFFECT: &str = "no effect since KCL 2.x";
const NOT_IMPLEMENTED: &str = "not implemented by this KCL";
const TABLE_MIGRATION: &str =
    "KCL 3.5's move of the fleet's items into the lease table is not done by this KCL; it follows where they are";
const UTILISATION: &str = "this KCL's leader balances by lease count and throughput, and its workers report no CPU metric (as Java workers outside EC2)";
const KCL3_TABLES: &str =
    "this KCL creates the KCL 3.x tables, when a new fleet needs them, with on-demand billing";
/// Keys of the Java daemon's `PollingConfigBean`: setting one (non-zero) selects polling in
/// `DEFAULT` mode.
const POLLING_KEYS: &[&str] = &[
    "maxRecords",
    "idleTimeBetweenReadsInMillis",
    "millisBehindLatestThresholdForReducedTps",
    "retryGetRecordsInSeconds",
    "maxGetRecordsThreadPool",
];

/// Keys with a typed field, for "did you mean" suggestions.
const KNOWN_KEYS: &[&str] = &[
    "executableName",
    "applicationName",
    "streamName",
    "streamArn",
    "streamNames",
    "streamArns",
    "formerStreamsLeasesDeletionWaitSeconds",
    "tableName",
    "workerId",
    "workerIdentifier",
    "regionName",
    "dynamoDBRegionName",
    "kinesisEndpoint",
    "dynamoDBEndpoint",
    "AwsCredentialsProvider",
    "AwsCredentialsProviderDynamoDB",
    "AwsCredentialsProviderCloudWatch",
    "initialPositionInStream",
    "initialPositionInStreamExtended",
    "failoverTimeMillis",
    "shardSyncIntervalMillis",
    "maxRecords",
    "idleTimeBetweenReadsInMillis",
    "callProcessRecordsEvenForEmptyRecordList",
    "parentShardPollIntervalMillis",
    "cleanupLeasesUponShardCompletion",
    "taskBackoffTimeMillis",
    "skipFailingRecordsAfterAttempts",
    "skipFailingRecordsAfterAgeSeconds",
    "maxLeasesForWorker",
    "maxLeasesToStealAtOneTime",
    "leaseAssignmentStrategy",
    "timeoutInSeconds",
    "shutdownGraceMillis",
    "maxActiveThreads",
    "processingLanguage",
    "retrievalMode",
    "fanoutConfig.consumerName",
    "fanoutConfig.consumerArn",
    "fanoutConfig.maxDescribeStreamConsumerRetries",
    "fanoutConfig.registerStreamConsumerRetries",
    "fanoutConfig.retryBackoffMillis",
    "metricsBufferTimeMillis",
    "metricsMaxQueueSize",
    "metricsLevel",
    "metricsEnabledDimensions",
    "cloudWatchRegionName",
    "cloudWatchEndpoint",
    "metricsPrometheusPort",
    "metricsPrometheusBindAddress",
    "clientVersionConfig",
    "coordinatorStateTableName",
    "workerMetricsTableName",
    "leaseAssignmentIntervalMillis",
    "gracefulLeaseHandoffTimeoutMillis",
    "isGracefulLeaseHandoffEnabled",
    "workerMetricsReporterFreqInMillis",
];

/// Collects typed values while walking the entries.
#[derive(Default)]
struct Builder<'a> {
    executable_name: Option<&'a Entry>,
    application_name: Option<&'a Entry>,
    stream_name: Option<&'a Entry>,
    stream_arn: Option<&'a Entry>,
    multi: streams::MultiStreamKeys<'a>,
    fleet: FleetSettings,
    table_name: Option<String>,
    worker_id: Option<String>,
    region_name: Option<&'a Entry>,
    dynamodb_region_name: Option<String>,
    kinesis_endpoint: Option<String>,
    dynamodb_endpoint: Option<String>,
    credentials_kinesis: Option<Vec<CredentialsSpec>>,
    credentials_dynamodb: Option<Vec<CredentialsSpec>>,
    credentials_cloudwatch: Option<Vec<CredentialsSpec>>,
    initial_position: Option<(InitialPosition, &'a Entry)>,
    initial_position_extended: Option<(InitialPosition, &'a Entry)>,
    failover_time: Option<Duration>,
    shard_sync_interval: Option<Duration>,
    max_records: Option<u32>,
    idle_time_between_reads: Option<Duration>,
    call_process_records_even_for_empty_record_list: Option<bool>,
    parent_shard_poll_interval: Option<Duration>,
    cleanup_leases_upon_shard_completion: Option<bool>,
    task_backoff_time: Option<Duration>,
    skip_failing_records_after_attempts: Option<u32>,
    skip_failing_records_after_age: Option<Duration>,
    max_leases_for_worker: Option<u32>,
    max_leases_to_steal_at_one_time: Option<u32>,
    lease_assignment_strategy: Option<LeaseAssignmentStrategy>,
    timeout: Option<Duration>,
    shutdown_grace: Option<Duration>,
    max_active_threads: Option<i32>,
    processing_language: Option<String>,
    retrieval_mode: Option<(RetrievalMode, &'a Entry)>,
    polling_keys: Vec<String>,
    fan_out: FanOutSettings,
    metrics: MetricsSettings,
    warnings: Vec<String>,
    info: Vec<String>,
    ignored: Vec<String>,
}

/// Reads settings from parsed properties entries (in file order; see [`properties::parse`]).
pub fn from_entries(entries: &[Entry]) -> Result<Parsed, SettingsError> {
    let mut b = Builder::default();
    for entry in entries {
        b.apply(entry)?;
    }
    b.finish()
}

impl<'a> Builder<'a> {
    fn apply(&mut self, e: &'a Entry) -> Result<(), SettingsError> {
        let key = e.key.as_str();
        let value = e.value.trim();
        if let Some(suffix) = credentials_key_suffix(key) {
            return self.apply_credentials(e, suffix);
        }
        if value.is_empty() {
            // "not set", for every key (Java's empty KCL 3.x block in the samples, `workerId =`).
            return Ok(());
        }
        // Java counts a polling key as set when its value is not zero (the two Integer ones:
        // when present).
        let nonzero = value.parse::<f64>() != Ok(0.0);
        let integer_key = matches!(key, "retryGetRecordsInSeconds" | "maxGetRecordsThreadPool");
        if POLLING_KEYS.contains(&key) && (nonzero || integer_key) {
            self.polling_keys.push(format!("{key} (line {})", e.line));
        }
        if self.multi.apply(e)? || self.fleet.apply(e)? {
            return Ok(());
        }
        if key.starts_with("fanoutConfig.") && KNOWN_KEYS.contains(&key) {
            self.fan_out.keys.push(format!("{key} (line {})", e.line));
        }
        match key {
            "executableName" => self.executable_name = Some(e),
            "applicationName" => self.application_name = Some(e),
            "streamName" => self.stream_name = Some(e),
            "streamArn" => self.stream_arn = Some(e),
            "tableName" => {
                if !is_valid_table_name(value) {
                    return Err(invalid(e, TABLE_NAME_RULE));
                }
                self.table_name = Some(value.to_string());
            }
            "workerId" | "workerIdentifier" => self.worker_id = Some(value.to_string()),
            "regionName" => {
                region(e)?;
                self.region_name = Some(e);
            }
            "dynamoDBRegionName" => self.dynamodb_region_name = Some(region(e)?),
            "kinesisEndpoint" => self.kinesis_endpoint = Some(endpoint(e)?),
            "dynamoDBEndpoint" => self.dynamodb_endpoint = Some(endpoint(e)?),
            "initialPositionInStream" => {
                let position = InitialPosition::from_name(value).map_err(|why| match why {
                    InitialPositionError::NeedsTimestamp => invalid(
                        e,
                        "AT_TIMESTAMP needs a time: set initialPositionInStreamExtended = <epoch seconds> instead",
                    ),
                    _ => invalid(e, "expected LATEST or TRIM_HORIZON"),
                })?;
                self.initial_position = Some((position, e));
            }
            "initialPositionInStreamExtended" => {
                let secs: u64 = value.parse().map_err(|_| {
                    invalid(
                        e,
                        "expected a time in whole seconds since the Unix epoch (AT_TIMESTAMP)",
                    )
                })?;
                self.initial_position_extended = Some((InitialPosition::at_epoch_seconds(secs), e));
            }
            "failoverTimeMillis" => self.failover_time = Some(millis(e, 1)?),
            "shardSyncIntervalMillis" => self.shard_sync_interval = Some(millis(e, 1)?),
            "maxRecords" => {
                self.max_records = Some(int_in(e, 1, MAX_RECORDS_LIMIT, "a number of records")?)
            }
            "idleTimeBetweenReadsInMillis" => {
                let idle = millis(e, 0)?;
                if idle < MIN_IDLE_TIME_BETWEEN_READS {
                    self.warnings.push(format!(
                        "properties line {}: idleTimeBetweenReadsInMillis = {} is below {floor} ms; Kinesis allows 5 GetRecords calls per second per shard (the Java KCL raises it to {floor} ms)",
                        e.line, value, floor = MIN_IDLE_TIME_BETWEEN_READS.as_millis()
                    ));
                }
                self.idle_time_between_reads = Some(idle);
            }
            "callProcessRecordsEvenForEmptyRecordList" => {
                self.call_process_records_even_for_empty_record_list = Some(boolean(e)?)
            }
            "parentShardPollIntervalMillis" => {
                self.parent_shard_poll_interval = Some(millis(e, 1)?)
            }
            "cleanupLeasesUponShardCompletion" => {
                self.cleanup_leases_upon_shard_completion = Some(boolean(e)?)
            }
            "taskBackoffTimeMillis" => self.task_backoff_time = Some(millis(e, 0)?),
            "skipFailingRecordsAfterAttempts" => {
                self.skip_failing_records_after_attempts =
                    Some(int_in(e, 1, u32::MAX, "a number of attempts")?)
            }
            "skipFailingRecordsAfterAgeSeconds" => {
                let secs = int_in(e, 1, u32::MAX, "a number of seconds")?;
                self.skip_failing_records_after_age = Some(Duration::from_secs(secs.into()));
            }
            "maxLeasesForWorker" => {
                self.max_leases_for_worker = Some(int_in(e, 1, u32::MAX, "a number of leases")?)
            }
            "maxLeasesToStealAtOneTime" => {
                self.max_leases_to_steal_at_one_time =
                    Some(int_in(e, 1, u32::MAX, "a number of leases")?)
            }
            "leaseAssignmentStrategy" => {
                self.lease_assignment_strategy = Some(match value {
                    "WORKER_UTILIZATION_AWARE" => LeaseAssignmentStrategy::Throughput,
                    "LEASE_COUNT_BASED" => LeaseAssignmentStrategy::LeaseCount,
                    _ => {
                        return Err(invalid(
                            e,
                            "expected WORKER_UTILIZATION_AWARE or LEASE_COUNT_BASED",
                        ))
                    }
                })
            }
            "timeoutInSeconds" => {
                let secs = int_in(e, 1, u32::MAX, "a number of seconds")?;
                self.timeout = Some(Duration::from_secs(secs.into()));
            }
            "shutdownGraceMillis" => self.shutdown_grace = Some(millis(e, 0)?),
            "maxActiveThreads" => {
                let n: i32 = value
                    .parse()
                    .map_err(|_| invalid(e, "expected a whole number of threads"))?;
                self.max_active_threads = Some(n);
            }
            "processingLanguage" => self.processing_language = Some(value.to_string()),
            "retrievalMode" => {
                let mode = match value.to_ascii_uppercase().as_str() {
                    "DEFAULT" => RetrievalMode::Default,
                    "POLLING" => RetrievalMode::Polling,
                    "FANOUT" => RetrievalMode::FanOut,
                    _ => return Err(invalid(e, "expected FANOUT, POLLING or DEFAULT")),
                };
                self.retrieval_mode = Some((mode, e));
            }
            "fanoutConfig.consumerName" => {
                if !is_valid_consumer_name(value) {
                    return Err(invalid(e, CONSUMER_NAME_RULE));
                }
                self.fan_out.consumer_name = Some(value.to_string());
            }
            "fanoutConfig.consumerArn" => {
                parse_consumer_arn(value).map_err(|why| {
                    invalid(e, format!("{why} (expected arn:aws:kinesis:<region>:<account>:stream/<stream>/consumer/<name>:<creation timestamp>)"))
                })?;
                self.fan_out.consumer_arn = Some(value.to_string());
            }
            "fanoutConfig.maxDescribeStreamConsumerRetries" => {
                self.fan_out.max_describe_stream_consumer_retries =
                    Some(int_in(e, 0, u32::MAX, "a number of retries")?)
            }
            "fanoutConfig.registerStreamConsumerRetries" => {
                self.fan_out.register_stream_consumer_retries =
                    Some(int_in(e, 0, u32::MAX, "a number of retries")?)
            }
            "fanoutConfig.retryBackoffMillis" => self.fan_out.retry_backoff = Some(millis(e, 0)?),
            "metricsLevel" => {
                self.metrics.level = Some(
                    MetricsLevel::from_name(value)
                        .ok_or_else(|| invalid(e, "expected NONE, SUMMARY or DETAILED"))?,
                )
            }
            "metricsEnabledDimensions" => {
                let names: BTreeSet<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
                    .collect();
                if names.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
                    self.metrics.enabled_dimensions = Some(None);
                } else {
                    for d in names.iter().filter(|d| !DIMENSIONS.contains(&d.as_str())) {
                        self.warnings.push(format!(
                            "properties line {}: metricsEnabledDimensions: no metric has the dimension {d} (known: {}, or ALL)",
                            e.line,
                            DIMENSIONS.join(", ")
                        ));
                    }
                    self.metrics.enabled_dimensions = Some(Some(names));
                }
            }
            "metricsBufferTimeMillis" => self.metrics.buffer_time = Some(millis(e, 1)?),
            "metricsMaxQueueSize" => {
                self.metrics.max_queue_size = Some(int_in(e, 1, u32::MAX, "a number of metrics")?)
            }
            "cloudWatchRegionName" => self.metrics.cloudwatch_region_name = Some(region(e)?),
            "cloudWatchEndpoint" => self.metrics.cloudwatch_endpoint = Some(endpoint(e)?),
            "metricsPrometheusPort" => {
                let port = int_in(e, 0, u16::MAX.into(), "a TCP port")?;
                self.metrics.prometheus_port = Some(port as u16);
            }
            "metricsPrometheusBindAddress" => {
                self.metrics.prometheus_bind_address =
                    Some(value.parse().map_err(|_| {
                        invalid(e, "expected an IP address, e.g. 127.0.0.1 or 0.0.0.0")
                    })?)
            }
            _ => self.unrecognised(e),
        }
        Ok(())
    }

    fn apply_credentials(
        &mut self,
        e: &Entry,
        suffix: CredentialsKey,
    ) -> Result<(), SettingsError> {
        let value = e.value.trim();
        if value.is_empty() {
            return Ok(());
        }
        let parsed = parse_provider_list(value).map_err(|err| invalid(e, err.to_string()))?;
        let prefix = format!("properties line {}: {}: ", e.line, e.key);
        self.warnings
            .extend(parsed.warnings.iter().map(|w| format!("{prefix}{w}")));
        self.info
            .extend(parsed.info.iter().map(|w| format!("{prefix}{w}")));
        let slot = match suffix {
            CredentialsKey::Kinesis => &mut self.credentials_kinesis,
            CredentialsKey::DynamoDb => &mut self.credentials_dynamodb,
            CredentialsKey::CloudWatch => &mut self.credentials_cloudwatch,
        };
        *slot = Some(parsed.specs);
        Ok(())
    }

    fn unrecognised(&mut self, e: &Entry) {
        let key = e.key.as_str();
        if let Some((_, reason)) = IGNORED_KEYS.iter().find(|(k, _)| *k == key) {
            self.ignored
                .push(format!("{key} (line {}: {reason})", e.line));
        } else {
            let suggestion = KNOWN_KEYS
                .iter()
                .chain(IGNORED_KEYS.iter().map(|(k, _)| k))
                .find(|k| k.eq_ignore_ascii_case(key))
                .map(|k| format!("; did you mean {k}?"))
                .unwrap_or_default();
            self.warnings.push(format!(
                "properties line {}: unknown key {key} (ignored){suggestion}",
                e.line
            ));
        }
    }

    fn finish(mut self) -> Result<Parsed, SettingsError> {
        let executable_entry = self.executable_name.ok_or(SettingsError::MissingKey {
            key: "executableName",
            hint: "the command the daemon runs for each shard, e.g. `python3 app.py`",
        })?;
        let executable_name = executable_entry.value.trim().to_string();
        let executable_line = executable_entry.line;
        let application_entry = self.application_name.ok_or(SettingsError::MissingKey {
            key: "applicationName",
            hint: "the KCL application name (also the lease table name)",
        })?;
        let application_name = application_entry.value.trim().to_string();

        let multi_streams = if self.multi.is_set() {
            self.multi.streams()?
        } else {
            if let Some((_, e)) = self.multi.positions.values().next() {
                return Err(invalid(
                    e,
                    "a per-stream initial position needs streamNames or streamArns",
                ));
            }
            Vec::new()
        };
        let (stream_name, stream_arn) = match (self.stream_arn, self.stream_name) {
            _ if !multi_streams.is_empty() => {
                for e in [self.stream_name, self.stream_arn].into_iter().flatten() {
                    self.warnings.push(format!(
                        "properties line {}: {} has no effect: streamNames/streamArns name the streams",
                        e.line, e.key
                    ));
                }
                (String::new(), None)
            }
            (Some(arn_entry), name_entry) => {
                let arn = parse_stream_arn(arn_entry.value.trim()).map_err(|why| {
                    invalid(arn_entry, format!("{why} (expected arn:aws:kinesis:<region>:<12-digit account>:stream/<name>)"))
                })?;
                if let Some(n) = name_entry.filter(|n| n.value.trim() != arn.stream_name) {
                    self.warnings.push(format!(
                        "properties line {}: streamName = {} differs from the name in streamArn (line {}); using {} from the ARN",
                        n.line,
                        n.value.trim(),
                        arn_entry.line,
                        arn.stream_name
                    ));
                }
                if let Some(r) = self.region_name.filter(|r| r.value.trim() != arn.region) {
                    self.warnings.push(format!(
                        "properties line {}: regionName = {} differs from the region in streamArn ({}, line {})",
                        r.line,
                        r.value.trim(),
                        arn.region,
                        arn_entry.line
                    ));
                }
                (arn.stream_name, Some(arn_entry.value.trim().to_string()))
            }
            (None, Some(name_entry)) => {
                let name = name_entry.value.trim();
                if !is_valid_stream_name(name) {
                    return Err(invalid(name_entry, STREAM_NAME_RULE));
                }
                (name.to_string(), None)
            }
            (None, None) => {
                return Err(SettingsError::MissingKey {
                    key: "streamName or streamArn",
                    hint: "the Kinesis stream to consume (streamArn wins when both are set; several streams: streamNames or streamArns)",
                })
            }
        };

        if self.table_name.is_none() && !is_valid_table_name(&application_name) {
            return Err(invalid(
                application_entry,
                format!(
                    "it is also the lease table name unless tableName is set; {TABLE_NAME_RULE}"
                ),
            ));
        }

        let initial_position = match (self.initial_position, self.initial_position_extended) {
            (Some((_, plain)), Some((extended, ext_entry))) => {
                self.warnings.push(format!(
                    "properties line {}: initialPositionInStreamExtended takes precedence over initialPositionInStream (line {})",
                    ext_entry.line, plain.line
                ));
                Some(extended)
            }
            (plain, extended) => extended.or(plain).map(|(p, _)| p),
        };

        self.retrieval_notes();

        let kinesis_credentials = match self.credentials_kinesis {
            Some(specs) => specs,
            None => {
                self.warnings.push(
                    "AwsCredentialsProvider is not set; using DefaultCredentialsProvider (the Java daemon requires this key)"
                        .to_string(),
                );
                vec![CredentialsSpec::Default]
            }
        };

        let settings = DaemonSettings {
            executable_name,
            executable_line,
            application_name,
            stream_name,
            stream_arn,
            streams: multi_streams,
            former_streams_leases_deletion_wait: self.multi.deletion_wait,
            fleet: self.fleet,
            table_name: self.table_name,
            worker_id: self.worker_id,
            region_name: self.region_name.map(|e| e.value.trim().to_string()),
            dynamodb_region_name: self.dynamodb_region_name,
            kinesis_endpoint: self.kinesis_endpoint,
            dynamodb_endpoint: self.dynamodb_endpoint,
            credentials: CredentialsSettings {
                kinesis: kinesis_credentials,
                dynamodb: self.credentials_dynamodb,
                cloudwatch: self.credentials_cloudwatch,
            },
            initial_position,
            failover_time: self.failover_time,
            shard_sync_interval: self.shard_sync_interval,
            max_records: self.max_records,
            idle_time_between_reads: self.idle_time_between_reads,
            call_process_records_even_for_empty_record_list: self
                .call_process_records_even_for_empty_record_list,
            parent_shard_poll_interval: self.parent_shard_poll_interval,
            cleanup_leases_upon_shard_completion: self.cleanup_leases_upon_shard_completion,
            task_backoff_time: self.task_backoff_time,
            skip_failing_records_after_attempts: self.skip_failing_records_after_attempts,
            skip_failing_records_after_age: self.skip_failing_records_after_age,
            max_leases_for_worker: self.max_leases_for_worker,
            max_leases_to_steal_at_one_time: self.max_leases_to_steal_at_one_time,
            lease_assignment_strategy: self.lease_assignment_strategy,
            timeout: self.timeout,
            shutdown_grace: self.shutdown_grace,
            max_active_threads: self.max_active_threads,
            processing_language: self.processing_language,
            retrieval_mode: self.retrieval_mode.map(|(m, _)| m),
            polling_keys: self.polling_keys,
            fan_out: self.fan_out,
            metrics: self.metrics,
        };
        Ok(Parsed {
            settings,
            warnings: self.warnings,
            info: self.info,
            ignored: self.ignored,
        })
    }
}

impl Builder<'_> {
    /// Say how records will be read and why (for `DEFAULT`), and warn about settings of the
    /// other mode.
    fn retrieval_notes(&mut self) {
        let mode = self.retrieval_mode.map(|(m, _)| m);
        let polling = match mode {
            Some(RetrievalMode::FanOut) => false,
            Some(RetrievalMode::Polling) => true,
            Some(RetrievalMode::Default) | None => !self.polling_keys.is_empty(),
        };
        let how = match self.retrieval_mode {
            Some((_, e)) => format!("retrievalMode = {} (line {})", e.value.trim(), e.line),
            None => "retrievalMode is not set (DEFAULT)".to_string(),
        };
        if matches!(mode, Some(RetrievalMode::Default) | None) {
            self.info.push(if polling {
                format!(
                    "{how}: a polling key is set ({}), so records are read by polling GetRecords, as the Java daemon does; set retrievalMode = FANOUT for enhanced fan-out",
                    self.polling_keys.join(", ")
                )
            } else {
                format!(
                    "{how}: no polling key is set, so records are read by enhanced fan-out (SubscribeToShard), as the Java daemon does; set retrievalMode = POLLING to poll"
                )
            });
        }
        if polling && !self.fan_out.keys.is_empty() {
            self.warnings.push(format!(
                "{} have no effect: records are read by polling ({how})",
                self.fan_out.keys.join(", ")
            ));
        }
        if !polling && !self.polling_keys.is_empty() {
            self.warnings.push(format!(
                "{} have no effect: records are read by enhanced fan-out ({how})",
                self.polling_keys.join(", ")
            ));
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum CredentialsKey {
    Kinesis,
    DynamoDb,
    CloudWatch,
}

/// Java lower-cases the `AwsCredentialsProvider` prefix before matching; we also accept the
/// `DynamoDB` / `CloudWatch` suffixes in any case.
fn credentials_key_suffix(key: &str) -> Option<CredentialsKey> {
    const PREFIX: &str = "awscredentialsprovider";
    let head = key.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    match key[PREFIX.len()..].to_ascii_lowercase().as_str() {
        "" => Some(CredentialsKey::Kinesis),
        "dynamodb" => Some(CredentialsKey::DynamoDb),
        "cloudwatch" => Some(CredentialsKey::CloudWatch),
        _ => None,
    }
}

/// Whether a key's value may carry a secret: the credentials keys, and anything named like a
/// secret. Such values are never echoed in a message (see [`shown_value`]).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["credential", "secret", "password", "token", "accesskey"]
        .iter()
        .any(|s| k.contains(s))
}

/// A value as it may appear in a message: secret-bearing keys are redacted.
pub fn shown_value(key: &str, value: &str) -> String {
    if credentials_key_suffix(key).is_some() {
        redact_provider_list(value)
    } else if is_secret_key(key) {
        "***".to_string()
    } else {
        value.to_string()
    }
}

fn invalid(e: &Entry, expected: impl Into<String>) -> SettingsError {
    SettingsError::InvalidValue {
        key: e.key.clone(),
        value: shown_value(&e.key, &e.value),
        line: e.line,
        expected: expected.into(),
    }
}

fn millis(e: &Entry, min: u64) -> Result<Duration, SettingsError> {
    let ms: u64 = e
        .value
        .trim()
        .parse()
        .map_err(|_| invalid(e, "expected a whole number of milliseconds"))?;
    if ms < min {
        return Err(invalid(
            e,
            "expected a whole number of milliseconds greater than 0",
        ));
    }
    Ok(Duration::from_millis(ms))
}

fn int_in(e: &Entry, min: u32, max: u32, what: &str) -> Result<u32, SettingsError> {
    let n: u64 = e
        .value
        .trim()
        .parse()
        .map_err(|_| invalid(e, format!("expected {what} (a whole number)")))?;
    if n < u64::from(min) || n > u64::from(max) {
        let range = if max == u32::MAX {
            format!("at least {min}")
        } else {
            format!("between {min} and {max}")
        };
        return Err(invalid(e, format!("expected {what} {range}")));
    }
    Ok(n as u32)
}

fn boolean(e: &Entry) -> Result<bool, SettingsError> {
    match e.value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" => Ok(true),
        "false" | "no" | "n" | "off" | "0" => Ok(false),
        _ => Err(invalid(e, "expected true or false")),
    }
}

fn region(e: &Entry) -> Result<String, SettingsError> {
    let v = e.value.trim();
    if !is_valid_region(v) {
        return Err(invalid(e, "expected an AWS region name such as us-east-1"));
    }
    Ok(v.to_string())
}

fn endpoint(e: &Entry) -> Result<String, SettingsError> {
    let v = e.value.trim();
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') && !v.contains(char::is_whitespace) => {
            Ok(v.to_string())
        }
        _ => Err(invalid(
            e,
            "expected an endpoint URL with scheme, e.g. https://kinesis.us-east-1.amazonaws.com or http://localhost:4567",
        )),
    }
}

mod fleet;
mod streams;
#[cfg(test)]
mod streams_tests;
#[cfg(test)]
mod tests;
