//! Worker configuration: typed, with documented defaults, validated once in [`ConfigBuilder::build`].
//!
//! Defaults are the Java KCL's unless noted. Each setting's `.properties` key (for the
//! MultiLangDaemon) is given as "(properties: `key`)".

use crate::fleet::FleetConfig;
use crate::multi_stream::MultiStreamTracker;
use crate::processor::RetryPolicy;
use crate::retrieval::{ConsumerRef, StreamRef};
use crate::validation::{
    is_valid_consumer_name, is_valid_stream_name, is_valid_table_name, parse_consumer_arn,
    parse_stream_arn, CONSUMER_NAME_RULE, MAX_RECORDS_LIMIT, MIN_IDLE_TIME_BETWEEN_READS,
    STREAM_NAME_RULE, TABLE_NAME_RULE,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Default failover time (properties: `failoverTimeMillis`): 10 s.
pub const DEFAULT_FAILOVER_TIME: Duration = Duration::from_secs(10);
/// Default records per GetRecords call (properties: `maxRecords`): 10 000, the most Kinesis allows.
pub const DEFAULT_MAX_RECORDS: u32 = MAX_RECORDS_LIMIT;
/// Default pause between GetRecords calls on one shard (properties: `idleTimeBetweenReadsInMillis`): 1.5 s.
pub const DEFAULT_IDLE_TIME_BETWEEN_READS: Duration = Duration::from_millis(1500);
/// Default pause between checks of a parent shard (properties: `parentShardPollIntervalMillis`): 10 s.
pub const DEFAULT_PARENT_SHARD_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Default interval of the periodic shard sync (properties: `shardSyncIntervalMillis`): 60 s.
pub const DEFAULT_SHARD_SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Default backoff after a failed task (properties: `taskBackoffTimeMillis`): 500 ms.
pub const DEFAULT_TASK_BACKOFF: Duration = Duration::from_millis(500);
/// Default longest wait between redeliveries of a failing batch (and restarts of a failing
/// processor): 30 s. The wait starts at the task backoff and doubles with each failure.
pub const DEFAULT_MAX_TASK_BACKOFF: Duration = Duration::from_secs(30);
/// Default interval between clean-up passes over finished leases: 60 s (Java's `leaseCleanupIntervalMillis`).
pub const DEFAULT_LEASE_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// Default bound on graceful shutdown (properties: `shutdownGraceMillis`): 30 s (Java's is 0, which
/// gives processors no time to checkpoint).
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default interval at which a multi-stream worker re-reads its
/// [`MultiStreamTracker`]: 60 s (Java's fixed `NEW_STREAM_CHECK_INTERVAL_MILLIS`).
pub const DEFAULT_STREAM_TRACKER_INTERVAL: Duration = Duration::from_secs(60);
/// Default batches prefetched per shard: 3 (Java's `maxPendingProcessRecordsInput`).
pub const DEFAULT_MAX_PENDING_BATCHES: usize = 3;
/// Default bound on the bytes of records prefetched per shard: 8 MiB (Java's `maxByteSize`
/// of its prefetch cache).
pub const DEFAULT_MAX_PREFETCH_BYTES_PER_SHARD: usize = 8 << 20;
/// Default bound on the bytes of records prefetched by one worker, all shards together:
/// 256 MiB (the Java KCL has no such bound: its per-shard bound times the shard count).
pub const DEFAULT_MAX_PREFETCH_BYTES_PER_WORKER: usize = 256 << 20;

/// Default DescribeStreamConsumer calls while waiting for a fan-out consumer to become
/// `ACTIVE` (properties: `fanoutConfig.maxDescribeStreamConsumerRetries`): 10, as Java.
pub const DEFAULT_MAX_DESCRIBE_STREAM_CONSUMER_RETRIES: u32 = 10;
/// Default retries of a failed RegisterStreamConsumer (properties:
/// `fanoutConfig.registerStreamConsumerRetries`): 10, as Java.
pub const DEFAULT_REGISTER_STREAM_CONSUMER_RETRIES: u32 = 10;
/// Default pause between those calls (properties: `fanoutConfig.retryBackoffMillis`): 1 s, as
/// Java.
pub const DEFAULT_FAN_OUT_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// How records are read (properties: `retrievalMode`).
///
/// The default is [`RetrievalMode::Polling`] (the Java KCL 2.x/3.x library defaults to
/// fan-out). Polling costs nothing beyond the stream and needs only the read permissions;
/// enhanced fan-out is billed per consumer-shard hour and per GB read, needs three more IAM
/// permissions, and registers a stream consumer (at most 20 per stream, never deregistered by
/// the library). So turning it on is a decision an application makes, not a side effect of
/// upgrading: choose [`RetrievalMode::FanOut`] when several applications read the same stream
/// (each gets its own 2 MB/s per shard instead of sharing 2 MB/s and 5 reads/s) or when
/// latency matters (records arrive in about 70 ms instead of after half a read interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetrievalMode {
    /// GetRecords polling, every `idle_time_between_reads` per shard (properties: `POLLING`).
    #[default]
    Polling,
    /// Enhanced fan-out: SubscribeToShard pushes records as they arrive, through a
    /// registered stream consumer (properties: `FANOUT`); see [`FanOutConfig`].
    FanOut,
}

/// How workers without a leader share the leases (the Java KCL 3.x's `leaseAssignmentStrategy`
/// names; properties: `leaseAssignmentStrategy`). A KCL 3.x fleet's leader assigns leases by
/// its own rules instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LeaseAssignmentStrategy {
    /// Even out the load: each lease weighs its `throughputKBps` (as its owner measures it, an
    /// average over about 30 s, and writes it with its renewals), at least a small floor,
    /// and a worker asks a more loaded one for the leases that best even out their loads, by
    /// graceful hand-off. Without traffic this is count balancing; with equal traffic, counts
    /// stay within 10 % of each other. A worker whose processing lags more than a minute behind
    /// the stream takes no load. Balancing is by count in a fleet in KCL 3.x's 2.x-compatible
    /// mode (its Java workers balance by count), and from the moment another worker takes a
    /// lease this one renews without a hand-off (a Java KCL 2.x worker). Properties:
    /// `WORKER_UTILIZATION_AWARE` (the Java KCL 3.x's name: its leader weighs CPU as well;
    /// here the weight is throughput alone).
    #[default]
    Throughput,
    /// Even out the lease count, as the Java KCL 2.x does (properties: `LEASE_COUNT_BASED`).
    /// Choose it while Java KCL 2.x workers share the lease table: they steal by count, and
    /// would move leases back from a worker that balances by load.
    LeaseCount,
}

/// Enhanced fan-out settings (the Java KCL's `FanOutConfig`; properties: `fanoutConfig.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FanOutConfig {
    /// The stream consumer's name (properties: `fanoutConfig.consumerName`); registered when
    /// missing, and registered again when deleted while the worker runs. Default: the application name (as Java), resolved by
    /// [`ConfigBuilder::build`].
    pub consumer_name: Option<String>,
    /// An existing consumer's ARN (properties: `fanoutConfig.consumerArn`): used instead of
    /// the name, never registered. It must be a consumer of the configured stream: the
    /// stream name here, and at start also the account and region (against the stream's ARN).
    /// If it is deleted while the worker runs, the worker stops with
    /// [`SchedulerError::FanOutConsumerDeleted`](crate::SchedulerError::FanOutConsumerDeleted)
    /// and releases its leases (a consumer configured by name is registered again instead).
    pub consumer_arn: Option<String>,
    /// DescribeStreamConsumer calls while waiting for the consumer to become `ACTIVE`;
    /// default 10.
    pub max_describe_stream_consumer_retries: u32,
    /// Retries of a throttled or failed RegisterStreamConsumer; default 10.
    pub register_stream_consumer_retries: u32,
    /// The pause between those calls; default 1 s.
    pub retry_backoff: Duration,
}

impl FanOutConfig {
    /// Read through the stream consumer named `name` (registered when missing).
    pub fn with_consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer_name = Some(name.into());
        self
    }

    /// Read through the existing stream consumer `arn` (never registered).
    pub fn with_consumer_arn(mut self, arn: impl Into<String>) -> Self {
        self.consumer_arn = Some(arn.into());
        self
    }
}

impl Default for FanOutConfig {
    fn default() -> Self {
        FanOutConfig {
            consumer_name: None,
            consumer_arn: None,
            max_describe_stream_consumer_retries: DEFAULT_MAX_DESCRIBE_STREAM_CONSUMER_RETRIES,
            register_stream_consumer_retries: DEFAULT_REGISTER_STREAM_CONSUMER_RETRIES,
            retry_backoff: DEFAULT_FAN_OUT_RETRY_BACKOFF,
        }
    }
}

/// Where processing of a shard with no checkpoint starts [`initialPositionInStream`,
/// `initialPositionInStreamExtended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitialPosition {
    /// The oldest retained record.
    TrimHorizon,
    /// Records arriving after the worker starts (the Java KCL's default).
    Latest,
    /// Records arriving at or after this time.
    AtTimestamp(SystemTime),
}

impl InitialPosition {
    /// The position named `LATEST` or `TRIM_HORIZON` (any case), as in the Java KCL's
    /// `initialPositionInStream`. `AT_TIMESTAMP` needs a time: see
    /// [`InitialPosition::at_epoch_seconds`].
    pub fn from_name(name: &str) -> Result<Self, InitialPositionError> {
        match name.to_ascii_uppercase().as_str() {
            "LATEST" => Ok(InitialPosition::Latest),
            "TRIM_HORIZON" => Ok(InitialPosition::TrimHorizon),
            "AT_TIMESTAMP" => Err(InitialPositionError::NeedsTimestamp),
            _ => Err(InitialPositionError::Unknown(name.to_string())),
        }
    }

    /// `AT_TIMESTAMP` of `secs` whole seconds after the Unix epoch.
    pub fn at_epoch_seconds(secs: u64) -> Self {
        InitialPosition::AtTimestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }
}

/// Why a name is not an [`InitialPosition`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InitialPositionError {
    /// `AT_TIMESTAMP` without a time.
    #[error("AT_TIMESTAMP needs a time")]
    NeedsTimestamp,
    /// Neither `LATEST` nor `TRIM_HORIZON`.
    #[error("{0:?} is not LATEST or TRIM_HORIZON")]
    Unknown(String),
}

/// Everything a worker needs to know. Build with [`Config::builder`], which validates every
/// setting; read them back with the accessors of the same names.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) application_name: String,
    pub(crate) streams: Streams,
    /// The single stream; an empty name for a multi-stream application.
    pub(crate) stream: StreamRef,
    pub(crate) table_name: String,
    pub(crate) worker_id: String,
    pub(crate) initial_position: InitialPosition,
    pub(crate) failover_time: Duration,
    pub(crate) lease_renew_interval: Duration,
    pub(crate) lease_take_interval: Duration,
    pub(crate) max_records: u32,
    pub(crate) idle_time_between_reads: Duration,
    pub(crate) max_pending_batches: usize,
    pub(crate) max_prefetch_bytes_per_shard: usize,
    pub(crate) max_prefetch_bytes_per_worker: usize,
    pub(crate) call_process_records_even_for_empty_list: bool,
    pub(crate) deaggregate_records: bool,
    pub(crate) parent_shard_poll_interval: Duration,
    pub(crate) shard_sync_interval: Duration,
    pub(crate) task_backoff: Duration,
    pub(crate) max_task_backoff: Duration,
    pub(crate) retry_policy: RetryPolicy,
    pub(crate) cleanup_leases_upon_shard_completion: bool,
    pub(crate) lease_cleanup_interval: Duration,
    pub(crate) max_leases_for_worker: usize,
    pub(crate) max_leases_to_steal_at_one_time: usize,
    pub(crate) lease_assignment_strategy: LeaseAssignmentStrategy,
    pub(crate) graceful_shutdown_timeout: Duration,
    pub(crate) rng_seed: Option<u64>,
    pub(crate) retrieval_mode: RetrievalMode,
    pub(crate) fan_out: FanOutConfig,
    pub(crate) stream_tracker_interval: Duration,
    pub(crate) fleet: FleetConfig,
}

/// The streams of a worker: one, or a tracked set.
#[derive(Clone)]
pub(crate) enum Streams {
    /// A single-stream application.
    Single(StreamRef),
    /// A multi-stream application.
    Multi(TrackerHandle),
}

/// The application's tracker. Asserted unwind-safe, so that `Config` stays
/// `UnwindSafe`/`RefUnwindSafe` as it was before multi-stream support (the library never
/// catches a panic across the tracker: a tracker that panics fails its round only).
#[derive(Clone)]
pub(crate) struct TrackerHandle(pub(crate) Arc<dyn MultiStreamTracker>);

impl std::panic::UnwindSafe for TrackerHandle {}
impl std::panic::RefUnwindSafe for TrackerHandle {}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Streams::Single(s) => f.debug_tuple("Single").field(s).finish(),
            Streams::Multi(_) => f.write_str("Multi(..)"),
        }
    }
}

impl std::fmt::Display for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Streams::Single(s) => s.fmt(f),
            Streams::Multi(_) => f.write_str("(multi-stream)"),
        }
    }
}

impl Config {
    /// The application's name (properties: `applicationName`): identifies the group of workers sharing the
    /// stream's shards.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    /// The stream (properties: `streamName` / `streamArn`). A multi-stream application
    /// ([`Config::is_multi_stream`]) has a set of streams instead
    /// ([`Config::multi_stream_tracker`]), and here a stream of empty name.
    pub fn stream(&self) -> &StreamRef {
        &self.stream
    }

    /// The streams of a multi-stream application (properties: `streamNames` /
    /// `streamArns`, in the MultiLangDaemon); `None` for a single-stream one.
    pub fn multi_stream_tracker(&self) -> Option<&Arc<dyn MultiStreamTracker>> {
        match &self.streams {
            Streams::Single(_) => None,
            Streams::Multi(t) => Some(&t.0),
        }
    }

    /// Whether this is a multi-stream application ([`Config::multi_stream_builder`]).
    pub fn is_multi_stream(&self) -> bool {
        matches!(self.streams, Streams::Multi(_))
    }

    /// How often a multi-stream worker re-reads its tracker; default 60 s
    /// ([`DEFAULT_STREAM_TRACKER_INTERVAL`]).
    pub fn stream_tracker_interval(&self) -> Duration {
        self.stream_tracker_interval
    }

    /// The lease table (properties: `tableName`); default: the application name.
    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    /// This worker's id (properties: `workerId`); default: host name plus a random suffix. Must be unique
    /// among live workers.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Where shards without a checkpoint start; default [`InitialPosition::Latest`]. A
    /// multi-stream application sets it per stream ([`StreamConfig`](crate::multi_stream::StreamConfig)).
    pub fn initial_position(&self) -> InitialPosition {
        self.initial_position
    }

    /// How long a lease may go unrenewed before other workers take it; default 10 s.
    pub fn failover_time(&self) -> Duration {
        self.failover_time
    }

    /// Renewal interval of held leases; default `failover_time / 3`.
    pub fn lease_renew_interval(&self) -> Duration {
        self.lease_renew_interval
    }

    /// Interval of lease-table scans for leases to take; default `failover_time / 3`.
    pub fn lease_take_interval(&self) -> Duration {
        self.lease_take_interval
    }

    /// GetRecords `Limit` (properties: `maxRecords`); 1..=10 000, default 10 000.
    pub fn max_records(&self) -> u32 {
        self.max_records
    }

    /// Pause between GetRecords calls on a shard (properties: `idleTimeBetweenReadsInMillis`); default
    /// 1.5 s, at least 200 ms.
    pub fn idle_time_between_reads(&self) -> Duration {
        self.idle_time_between_reads
    }

    /// Batches read ahead per shard; default 3.
    pub fn max_pending_batches(&self) -> usize {
        self.max_pending_batches
    }

    /// Bytes of records read ahead per shard (data plus partition keys); default 8 MiB
    /// ([`DEFAULT_MAX_PREFETCH_BYTES_PER_SHARD`]). A larger batch is still delivered, alone.
    pub fn max_prefetch_bytes_per_shard(&self) -> usize {
        self.max_prefetch_bytes_per_shard
    }

    /// Bytes of records read ahead by this worker, all shards together; default 256 MiB
    /// ([`DEFAULT_MAX_PREFETCH_BYTES_PER_WORKER`]). A larger batch is still delivered, alone.
    pub fn max_prefetch_bytes_per_worker(&self) -> usize {
        self.max_prefetch_bytes_per_worker
    }

    /// Call `process_records` for empty batches too (properties: `callProcessRecordsEvenForEmptyRecordList`);
    /// default false.
    pub fn call_process_records_even_for_empty_list(&self) -> bool {
        self.call_process_records_even_for_empty_list
    }

    /// De-aggregate KPL aggregates into their user records (see
    /// [`crate::retrieval::deaggregation`]); default true, as the Java KCL (which has no
    /// setting for it). Turned off, aggregates reach the processor as they are (one record,
    /// the packed bytes); a checkpoint inside an aggregate (written by a worker that
    /// de-aggregates) then delivers that aggregate again whole instead of dropping it.
    pub fn deaggregate_records(&self) -> bool {
        self.deaggregate_records
    }

    /// How often a child shard checks whether its parents have finished
    /// (properties: `parentShardPollIntervalMillis`); default 10 s.
    pub fn parent_shard_poll_interval(&self) -> Duration {
        self.parent_shard_poll_interval
    }

    /// Interval of the periodic shard sync that creates leases for new shards
    /// (properties: `shardSyncIntervalMillis`); default 60 s.
    pub fn shard_sync_interval(&self) -> Duration {
        self.shard_sync_interval
    }

    /// Wait before retrying a failed processor call or task (properties: `taskBackoffTimeMillis`); default 500 ms.
    /// Redeliveries of a failing batch (and restarts of a failing processor) start there and
    /// double with each failure of the same records, up to `max_task_backoff`, with jitter.
    pub fn task_backoff(&self) -> Duration {
        self.task_backoff
    }

    /// The longest wait between redeliveries of a failing batch; default 30 s
    /// ([`DEFAULT_MAX_TASK_BACKOFF`]).
    pub fn max_task_backoff(&self) -> Duration {
        self.max_task_backoff
    }

    /// When a failing batch stops being redelivered and the processor's
    /// [`retries_exhausted`](crate::RecordProcessor::retries_exhausted) hook decides
    /// (properties: `skipFailingRecordsAfterAttempts`, `skipFailingRecordsAfterAgeSeconds`,
    /// with which the daemon skips); default [`RetryPolicy::UNLIMITED`] (redeliver until it
    /// succeeds).
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry_policy
    }

    /// Delete a finished shard's lease once its children have started
    /// (properties: `cleanupLeasesUponShardCompletion`); default true.
    pub fn cleanup_leases_upon_shard_completion(&self) -> bool {
        self.cleanup_leases_upon_shard_completion
    }

    /// Interval of the clean-up pass over finished leases; default 60 s.
    pub fn lease_cleanup_interval(&self) -> Duration {
        self.lease_cleanup_interval
    }

    /// The most leases this worker holds (properties: `maxLeasesForWorker`); default unlimited.
    pub fn max_leases_for_worker(&self) -> usize {
        self.max_leases_for_worker
    }

    /// The most leases taken from another worker in one round (properties: `maxLeasesToStealAtOneTime`);
    /// default 1.
    pub fn max_leases_to_steal_at_one_time(&self) -> usize {
        self.max_leases_to_steal_at_one_time
    }

    /// How leaderless workers share the leases (properties: `leaseAssignmentStrategy`);
    /// default [`LeaseAssignmentStrategy::Throughput`].
    pub fn lease_assignment_strategy(&self) -> LeaseAssignmentStrategy {
        self.lease_assignment_strategy
    }

    /// How long graceful shutdown waits for processors to checkpoint (properties: `shutdownGraceMillis`);
    /// default 30 s.
    pub fn graceful_shutdown_timeout(&self) -> Duration {
        self.graceful_shutdown_timeout
    }

    /// Seed for the lease taker's random choices (deterministic tests); default from entropy.
    pub fn rng_seed(&self) -> Option<u64> {
        self.rng_seed
    }

    /// How records are read (properties: `retrievalMode`); default
    /// [`RetrievalMode::Polling`] (see there why).
    pub fn retrieval_mode(&self) -> RetrievalMode {
        self.retrieval_mode
    }

    /// Enhanced fan-out settings, used in [`RetrievalMode::FanOut`]; after `build` the
    /// consumer name is always set.
    pub fn fan_out(&self) -> &FanOutConfig {
        &self.fan_out
    }

    /// KCL 3.x fleet membership: how the worker chooses between the leaderless protocol and
    /// a 3.x fleet's leader, and the 3.x settings (see [`fleet`](crate::fleet)).
    pub fn fleet(&self) -> &FleetConfig {
        &self.fleet
    }
}

impl Config {
    /// The stream consumer fan-out reads through: the configured ARN, else the name.
    pub fn fan_out_consumer(&self) -> ConsumerRef {
        match (&self.fan_out.consumer_arn, &self.fan_out.consumer_name) {
            (Some(arn), _) => ConsumerRef::Arn(arn.clone()),
            (None, Some(name)) => ConsumerRef::Name(name.clone()),
            (None, None) => ConsumerRef::Name(self.application_name.clone()),
        }
    }

    /// The stream consumer fan-out reads `stream` of a multi-stream application through: its
    /// configured ARN, else the worker's consumer name.
    pub(crate) fn fan_out_consumer_of(
        &self,
        stream: &crate::multi_stream::StreamConfig,
    ) -> ConsumerRef {
        match (&stream.consumer_arn, &self.fan_out.consumer_name) {
            (Some(arn), _) => ConsumerRef::Arn(arn.clone()),
            (None, Some(name)) => ConsumerRef::Name(name.clone()),
            (None, None) => ConsumerRef::Name(self.application_name.clone()),
        }
    }
}

/// A setting that is out of range, or a required one that is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {setting}: {message}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The setting's name.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Config {
    /// A builder for the application `application_name` reading `stream` (a [`StreamRef`], or
    /// a stream name or ARN as a string).
    pub fn builder(
        application_name: impl Into<String>,
        stream: impl Into<StreamRef>,
    ) -> ConfigBuilder {
        Self::builder_of(application_name.into(), Streams::Single(stream.into()))
    }

    /// A builder for the multi-stream application `application_name` consuming the streams
    /// `tracker` names (see [`multi_stream`](crate::multi_stream)). Its leases are in the
    /// Java KCL's multi-stream format; each stream has its own initial position and fan-out
    /// consumer, so [`ConfigBuilder::initial_position`] and the consumer ARN of
    /// [`ConfigBuilder::fan_out`] do not apply (the consumer name does).
    pub fn multi_stream_builder(
        application_name: impl Into<String>,
        tracker: impl MultiStreamTracker,
    ) -> ConfigBuilder {
        Self::builder_of(
            application_name.into(),
            Streams::Multi(TrackerHandle(Arc::new(tracker))),
        )
    }

    fn builder_of(application_name: String, streams: Streams) -> ConfigBuilder {
        ConfigBuilder {
            application_name,
            streams,
            stream_tracker_interval: DEFAULT_STREAM_TRACKER_INTERVAL,
            table_name: None,
            worker_id: None,
            initial_position: InitialPosition::Latest,
            failover_time: DEFAULT_FAILOVER_TIME,
            lease_renew_interval: None,
            lease_take_interval: None,
            max_records: DEFAULT_MAX_RECORDS,
            idle_time_between_reads: DEFAULT_IDLE_TIME_BETWEEN_READS,
            max_pending_batches: DEFAULT_MAX_PENDING_BATCHES,
            max_prefetch_bytes_per_shard: DEFAULT_MAX_PREFETCH_BYTES_PER_SHARD,
            max_prefetch_bytes_per_worker: DEFAULT_MAX_PREFETCH_BYTES_PER_WORKER,
            call_process_records_even_for_empty_list: false,
            deaggregate_records: true,
            parent_shard_poll_interval: DEFAULT_PARENT_SHARD_POLL_INTERVAL,
            shard_sync_interval: DEFAULT_SHARD_SYNC_INTERVAL,
            task_backoff: DEFAULT_TASK_BACKOFF,
            max_task_backoff: DEFAULT_MAX_TASK_BACKOFF,
            retry_policy: RetryPolicy::UNLIMITED,
            cleanup_leases_upon_shard_completion: true,
            lease_cleanup_interval: DEFAULT_LEASE_CLEANUP_INTERVAL,
            max_leases_for_worker: usize::MAX,
            max_leases_to_steal_at_one_time: 1,
            lease_assignment_strategy: LeaseAssignmentStrategy::default(),
            graceful_shutdown_timeout: DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT,
            rng_seed: None,
            retrieval_mode: RetrievalMode::default(),
            fan_out: FanOutConfig::default(),
            fleet: FleetConfig::default(),
        }
    }
}

/// Builds a [`Config`]; each setting's default and properties key are documented on its
/// accessor of the same name on [`Config`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    application_name: String,
    streams: Streams,
    stream_tracker_interval: Duration,
    table_name: Option<String>,
    worker_id: Option<String>,
    initial_position: InitialPosition,
    failover_time: Duration,
    lease_renew_interval: Option<Duration>,
    lease_take_interval: Option<Duration>,
    max_records: u32,
    idle_time_between_reads: Duration,
    max_pending_batches: usize,
    max_prefetch_bytes_per_shard: usize,
    max_prefetch_bytes_per_worker: usize,
    call_process_records_even_for_empty_list: bool,
    deaggregate_records: bool,
    parent_shard_poll_interval: Duration,
    shard_sync_interval: Duration,
    task_backoff: Duration,
    max_task_backoff: Duration,
    retry_policy: RetryPolicy,
    cleanup_leases_upon_shard_completion: bool,
    lease_cleanup_interval: Duration,
    max_leases_for_worker: usize,
    max_leases_to_steal_at_one_time: usize,
    lease_assignment_strategy: LeaseAssignmentStrategy,
    graceful_shutdown_timeout: Duration,
    rng_seed: Option<u64>,
    retrieval_mode: RetrievalMode,
    fan_out: FanOutConfig,
    fleet: FleetConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = value;
                self
            }
        )*
    };
}

impl ConfigBuilder {
    /// The lease table name.
    pub fn table_name(mut self, name: impl Into<String>) -> Self {
        self.table_name = Some(name.into());
        self
    }

    /// This worker's id.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Renewal interval of held leases.
    pub fn lease_renew_interval(mut self, value: Duration) -> Self {
        self.lease_renew_interval = Some(value);
        self
    }

    /// Interval of lease-table scans.
    pub fn lease_take_interval(mut self, value: Duration) -> Self {
        self.lease_take_interval = Some(value);
        self
    }

    setters! {
        /// Where shards without a checkpoint start.
        initial_position: InitialPosition,
        /// Failover time.
        failover_time: Duration,
        /// GetRecords limit.
        max_records: u32,
        /// Pause between GetRecords calls on a shard.
        idle_time_between_reads: Duration,
        /// Batches read ahead per shard.
        max_pending_batches: usize,
        /// Bytes read ahead per shard (at least 1 KiB).
        max_prefetch_bytes_per_shard: usize,
        /// Bytes read ahead per worker, all shards together (at least 1 KiB).
        max_prefetch_bytes_per_worker: usize,
        /// Deliver empty batches too.
        call_process_records_even_for_empty_list: bool,
        /// De-aggregate KPL aggregates (default true).
        deaggregate_records: bool,
        /// Parent shard poll interval.
        parent_shard_poll_interval: Duration,
        /// Shard sync interval.
        shard_sync_interval: Duration,
        /// Task backoff (the first wait before a redelivery).
        task_backoff: Duration,
        /// The longest wait between redeliveries.
        max_task_backoff: Duration,
        /// When a failing batch's records are handed to the processor's `retries_exhausted` hook.
        retry_policy: RetryPolicy,
        /// Delete finished leases once their children started.
        cleanup_leases_upon_shard_completion: bool,
        /// Interval of the clean-up pass.
        lease_cleanup_interval: Duration,
        /// Most leases held.
        max_leases_for_worker: usize,
        /// Most leases stolen per round.
        max_leases_to_steal_at_one_time: usize,
        /// How leaderless workers share the leases.
        lease_assignment_strategy: LeaseAssignmentStrategy,
        /// Graceful shutdown bound.
        graceful_shutdown_timeout: Duration,
        /// Seed for random choices.
        rng_seed: Option<u64>,
        /// How records are read.
        retrieval_mode: RetrievalMode,
        /// Enhanced fan-out settings.
        fan_out: FanOutConfig,
        /// How often a multi-stream worker re-reads its tracker.
        stream_tracker_interval: Duration,
        /// KCL 3.x fleet settings.
        fleet: FleetConfig,
    }

    /// Validate and build.
    pub fn build(self) -> Result<Config, ConfigError> {
        let err = |setting, message: String| Err(ConfigError { setting, message });
        if self.application_name.trim().is_empty() {
            return err("application_name", "must not be empty".into());
        }
        if let Streams::Single(stream) = &self.streams {
            if stream.name().trim().is_empty() {
                return err("stream", "must not be empty".into());
            }
        }
        if self.failover_time < Duration::from_millis(100) {
            return err(
                "failover_time",
                format!("{:?} is too short (at least 100 ms)", self.failover_time),
            );
        }
        let renew = self.lease_renew_interval.unwrap_or(self.failover_time / 3);
        if renew.is_zero() || renew >= self.failover_time {
            return err(
                "lease_renew_interval",
                format!(
                    "{renew:?} must be above zero and below the failover time {:?}",
                    self.failover_time
                ),
            );
        }
        let take = self.lease_take_interval.unwrap_or(self.failover_time / 3);
        if take.is_zero() {
            return err("lease_take_interval", "must be above zero".into());
        }
        if !(1..=MAX_RECORDS_LIMIT).contains(&self.max_records) {
            return err(
                "max_records",
                format!("{} is outside 1..={MAX_RECORDS_LIMIT}", self.max_records),
            );
        }
        if self.max_pending_batches == 0 {
            return err("max_pending_batches", "must be at least 1".into());
        }
        for (name, bytes) in [
            (
                "max_prefetch_bytes_per_shard",
                self.max_prefetch_bytes_per_shard,
            ),
            (
                "max_prefetch_bytes_per_worker",
                self.max_prefetch_bytes_per_worker,
            ),
        ] {
            if bytes < 1024 {
                return err(name, format!("{bytes} bytes is too small (at least 1 KiB)"));
            }
        }
        if self.max_leases_for_worker == 0 {
            return err("max_leases_for_worker", "must be at least 1".into());
        }
        if self.max_leases_to_steal_at_one_time == 0 {
            return err(
                "max_leases_to_steal_at_one_time",
                "must be at least 1".into(),
            );
        }
        for (name, d) in [
            (
                "parent_shard_poll_interval",
                self.parent_shard_poll_interval,
            ),
            ("shard_sync_interval", self.shard_sync_interval),
            ("lease_cleanup_interval", self.lease_cleanup_interval),
            ("stream_tracker_interval", self.stream_tracker_interval),
            ("fleet.check_interval", self.fleet.check_interval),
            (
                "fleet.lease_assignment_interval",
                self.fleet
                    .lease_assignment_interval
                    .unwrap_or(Duration::MAX),
            ),
            (
                "fleet.lease_discovery_interval",
                self.fleet.lease_discovery_interval,
            ),
            (
                "fleet.worker_metrics_reporter_interval",
                self.fleet.worker_metrics_reporter_interval,
            ),
            (
                "fleet.graceful_lease_handoff_timeout",
                self.fleet.graceful_lease_handoff_timeout,
            ),
        ] {
            if d.is_zero() {
                return err(name, "must be above zero".into());
            }
        }
        let fan_out = self.validated_fan_out()?;
        let table_name = self
            .table_name
            .unwrap_or_else(|| self.application_name.clone());
        if !is_valid_table_name(&table_name) {
            return err("table_name", format!("{table_name:?}: {TABLE_NAME_RULE}"));
        }
        match &self.streams {
            Streams::Single(StreamRef::Name(name)) if !is_valid_stream_name(name) => {
                return err("stream", format!("{name:?}: {STREAM_NAME_RULE}"));
            }
            Streams::Single(StreamRef::Arn(arn)) => {
                if let Err(why) = parse_stream_arn(arn) {
                    return err("stream", format!("{arn:?} is not a Kinesis stream ARN (arn:aws:kinesis:<region>:<account>:stream/<name>): {why}"));
                }
            }
            Streams::Single(StreamRef::Name(_)) | Streams::Multi(_) => {}
        }
        let worker_id = match self.worker_id {
            Some(id) if id.trim().is_empty() => {
                return err("worker_id", "must not be empty".into())
            }
            Some(id) => id,
            None => default_worker_id(),
        };
        Ok(Config {
            application_name: self.application_name,
            stream: match &self.streams {
                Streams::Single(s) => s.clone(),
                Streams::Multi(_) => StreamRef::Name(String::new()),
            },
            streams: self.streams,
            stream_tracker_interval: self.stream_tracker_interval,
            table_name,
            worker_id,
            initial_position: self.initial_position,
            failover_time: self.failover_time,
            lease_renew_interval: renew,
            lease_take_interval: take,
            max_records: self.max_records,
            idle_time_between_reads: self
                .idle_time_between_reads
                .max(MIN_IDLE_TIME_BETWEEN_READS),
            max_pending_batches: self.max_pending_batches,
            max_prefetch_bytes_per_shard: self.max_prefetch_bytes_per_shard,
            max_prefetch_bytes_per_worker: self.max_prefetch_bytes_per_worker,
            call_process_records_even_for_empty_list: self.call_process_records_even_for_empty_list,
            deaggregate_records: self.deaggregate_records,
            parent_shard_poll_interval: self.parent_shard_poll_interval,
            shard_sync_interval: self.shard_sync_interval,
            task_backoff: self.task_backoff,
            max_task_backoff: self.max_task_backoff,
            retry_policy: self.retry_policy,
            cleanup_leases_upon_shard_completion: self.cleanup_leases_upon_shard_completion,
            lease_cleanup_interval: self.lease_cleanup_interval,
            max_leases_for_worker: self.max_leases_for_worker,
            max_leases_to_steal_at_one_time: self.max_leases_to_steal_at_one_time,
            lease_assignment_strategy: self.lease_assignment_strategy,
            graceful_shutdown_timeout: self.graceful_shutdown_timeout,
            rng_seed: self.rng_seed,
            retrieval_mode: self.retrieval_mode,
            fan_out,
            fleet: self.fleet,
        })
    }

    /// The fan-out settings with the consumer name resolved, checked against the stream.
    fn validated_fan_out(&self) -> Result<FanOutConfig, ConfigError> {
        let err = |setting, message: String| Err(ConfigError { setting, message });
        let mut f = self.fan_out.clone();
        if let Some(arn) = &f.consumer_arn {
            let parsed = match parse_consumer_arn(arn) {
                Ok(p) => p,
                Err(why) => return err("fan_out.consumer_arn", format!("{arn:?}: {why}")),
            };
            let same_stream = match &self.streams {
                Streams::Single(StreamRef::Name(n)) => parsed.stream.stream_name == *n,
                Streams::Single(StreamRef::Arn(a)) => arn.starts_with(&format!("{a}/consumer/")),
                Streams::Multi(_) => {
                    return err(
                        "fan_out.consumer_arn",
                        format!("{arn:?}: a multi-stream application reads each stream through its own consumer: give it in that stream's StreamConfig::consumer_arn"),
                    );
                }
            };
            if !same_stream {
                return err(
                    "fan_out.consumer_arn",
                    format!(
                        "{arn:?} is a consumer of another stream than {}",
                        self.streams
                    ),
                );
            }
        }
        match &f.consumer_name {
            Some(name) if !is_valid_consumer_name(name) => {
                return err(
                    "fan_out.consumer_name",
                    format!("{name:?}: {CONSUMER_NAME_RULE}"),
                );
            }
            Some(_) => {}
            None if is_valid_consumer_name(&self.application_name) => {
                f.consumer_name = Some(self.application_name.clone());
            }
            None if self.retrieval_mode == RetrievalMode::FanOut && f.consumer_arn.is_none() => {
                return err(
                    "fan_out.consumer_name",
                    format!(
                        "the default, the application name {:?}, is not a valid consumer name ({CONSUMER_NAME_RULE}); set one",
                        self.application_name
                    ),
                );
            }
            None => {}
        }
        Ok(f)
    }
}

/// Host name plus a random suffix, e.g. `ip-10-0-0-1-3f9a2c1b`.
pub fn default_worker_id() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> ConfigBuilder {
        Config::builder("my-app", StreamRef::Name("orders".into()))
    }

    #[test]
    fn defaults_follow_the_java_kcl() {
        let c = builder().build().unwrap();
        assert_eq!(c.table_name, "my-app");
        assert_eq!(c.failover_time, Duration::from_secs(10));
        assert_eq!(c.lease_renew_interval, Duration::from_secs(10) / 3);
        assert_eq!(c.max_records, 10_000);
        assert_eq!(c.idle_time_between_reads, Duration::from_millis(1500));
        assert_eq!(c.initial_position, InitialPosition::Latest);
        assert_eq!(c.max_leases_to_steal_at_one_time, 1);
        assert_eq!(c.max_prefetch_bytes_per_shard, 8 * 1024 * 1024);
        assert_eq!(c.max_prefetch_bytes_per_worker, 256 * 1024 * 1024);
        assert!(c.cleanup_leases_upon_shard_completion);
        assert_eq!(c.retrieval_mode, RetrievalMode::Polling);
        assert_eq!(c.fan_out_consumer(), ConsumerRef::Name("my-app".into()));
        assert_eq!(c.fan_out.max_describe_stream_consumer_retries, 10);
        assert_eq!(c.fan_out.retry_backoff, Duration::from_secs(1));
        assert!(!c.worker_id.is_empty());
        assert_ne!(
            c.worker_id,
            builder().build().unwrap().worker_id,
            "worker ids are unique"
        );
    }

    #[test]
    fn invalid_values_name_the_setting() {
        assert_eq!(
            builder().max_records(0).build().unwrap_err().setting,
            "max_records"
        );
        assert_eq!(
            builder().max_records(10_001).build().unwrap_err().setting,
            "max_records"
        );
        assert_eq!(
            builder()
                .failover_time(Duration::ZERO)
                .build()
                .unwrap_err()
                .setting,
            "failover_time"
        );
        assert_eq!(
            builder()
                .lease_renew_interval(Duration::from_secs(11))
                .build()
                .unwrap_err()
                .setting,
            "lease_renew_interval"
        );
        assert_eq!(
            builder()
                .max_prefetch_bytes_per_shard(0)
                .build()
                .unwrap_err()
                .setting,
            "max_prefetch_bytes_per_shard"
        );
        assert_eq!(
            builder()
                .max_prefetch_bytes_per_worker(1023)
                .build()
                .unwrap_err()
                .setting,
            "max_prefetch_bytes_per_worker"
        );
        assert_eq!(
            builder().table_name("a b").build().unwrap_err().setting,
            "table_name"
        );
        assert_eq!(
            builder().worker_id(" ").build().unwrap_err().setting,
            "worker_id"
        );
        let arn = Config::builder("app", StreamRef::Arn("orders".into()))
            .build()
            .unwrap_err();
        assert_eq!(arn.setting, "stream");
        assert!(
            arn.to_string().contains("not a Kinesis stream ARN"),
            "{arn}"
        );
    }

    #[test]
    fn fan_out_consumer_name_or_arn_is_checked_against_the_stream() {
        let fan_out = |name: Option<&str>, arn: Option<&str>| FanOutConfig {
            consumer_name: name.map(str::to_string),
            consumer_arn: arn.map(str::to_string),
            ..FanOutConfig::default()
        };
        let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/orders/consumer/c1:1700000000";
        let c = builder()
            .retrieval_mode(RetrievalMode::FanOut)
            .fan_out(fan_out(None, Some(arn)))
            .build()
            .unwrap();
        assert_eq!(c.fan_out_consumer(), ConsumerRef::Arn(arn.into()));
        let c = builder()
            .fan_out(fan_out(Some("c2"), None))
            .build()
            .unwrap();
        assert_eq!(c.fan_out_consumer(), ConsumerRef::Name("c2".into()));
        let other = "arn:aws:kinesis:us-east-1:123456789012:stream/other/consumer/c1:1";
        let e = builder()
            .fan_out(fan_out(None, Some(other)))
            .build()
            .unwrap_err();
        assert_eq!(e.setting, "fan_out.consumer_arn");
        assert!(e.to_string().contains("another stream"), "{e}");
        let e = builder()
            .fan_out(fan_out(Some("a b"), None))
            .build()
            .unwrap_err();
        assert_eq!(e.setting, "fan_out.consumer_name");
        let long = "a".repeat(200);
        let e = Config::builder(long, StreamRef::Name("orders".into()))
            .retrieval_mode(RetrievalMode::FanOut)
            .build()
            .unwrap_err();
        assert_eq!(e.setting, "fan_out.consumer_name");
    }

    #[test]
    fn idle_time_is_raised_to_the_per_shard_read_limit() {
        let c = builder()
            .idle_time_between_reads(Duration::from_millis(10))
            .build()
            .unwrap();
        assert_eq!(c.idle_time_between_reads, Duration::from_millis(200));
    }

    #[test]
    fn arn_gives_the_stream_name() {
        let c = Config::builder(
            "app",
            StreamRef::Arn("arn:aws:kinesis:us-east-1:123456789012:stream/orders".into()),
        )
        .build()
        .unwrap();
        assert_eq!(c.stream().name(), "orders");
    }
}
