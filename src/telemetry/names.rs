//! Every metric name, dimension name and span-field name the library uses, in one place.
//!
//! Names and dimensions are the Java KCL's where it has the metric (`MetricsUtil`,
//! `ProcessTask`, `DynamoDBLeaseRenewer`, `DynamoDBLeaseTaker`, `ShardSyncTask`, ...), so
//! dashboards and alarms built for the Java KCL carry over. [`CATALOGUE`] lists every metric
//! with its kind, unit, dimensions and level, and its Prometheus name and type
//! ([`MetricSpec::prometheus`]: the one place where they are defined); the crate's metrics
//! tables ([`telemetry`](super)) are checked against it by a test.

use super::MetricsLevel;
pub use metrics::Unit;

// ---- Dimensions (the Java KCL's `MetricsUtil` names) ----

/// Dimension: the operation (Java: always present).
pub const OPERATION: &str = "Operation";
/// Dimension: the shard (lease key).
pub const SHARD_ID: &str = "ShardId";
/// Dimension: the worker (Java: `WorkerIdentifier`).
pub const WORKER_IDENTIFIER: &str = "WorkerIdentifier";
/// Dimension: the stream of a shard's metrics, in multi-stream applications (as Java's
/// `StreamId`: the serialized identifier `account:name:epoch`).
pub const STREAM_ID: &str = "StreamId";
/// Dimension (not in the Java KCL): why a batch was redelivered or a shard restarted.
pub const CAUSE: &str = "Cause";

/// Every dimension name, in the order they are documented.
pub const DIMENSIONS: &[&str] = &[OPERATION, SHARD_ID, WORKER_IDENTIFIER, STREAM_ID, CAUSE];

// ---- Operations (values of the `Operation` dimension) ----

/// Per-shard record processing (Java `ProcessTask`).
pub const OP_PROCESS_TASK: &str = "ProcessTask";
/// The application-wide lag (Java `ApplicationTracker`; synthesised by the CloudWatch exporter).
pub const OP_APPLICATION_TRACKER: &str = "ApplicationTracker";
/// The processor's `initialize` (Java `InitializeTask`).
pub const OP_INITIALIZE_TASK: &str = "InitializeTask";
/// The processor's `shutdown` (Java `ShutdownTask`).
pub const OP_SHUTDOWN_TASK: &str = "ShutdownTask";
/// Lease renewal (Java `RenewAllLeases`).
pub const OP_RENEW_ALL_LEASES: &str = "RenewAllLeases";
/// Lease taking (Java `TakeLeases`).
pub const OP_TAKE_LEASES: &str = "TakeLeases";
/// Shard discovery (Java `ShardSyncTask`).
pub const OP_SHARD_SYNC_TASK: &str = "ShardSyncTask";
/// Worker start-up (Java `Scheduler:Initialize`).
pub const OP_SCHEDULER_INITIALIZE: &str = "Scheduler:Initialize";
/// Not in the Java KCL: a shard consumer's life (restarts).
pub const OP_SHARD_CONSUMER: &str = "ShardConsumer";
/// Not in the Java KCL: releasing leases on graceful shutdown.
pub const OP_RELEASE_LEASES: &str = "ReleaseLeases";

// ---- Metric names ----

/// Records delivered to the processor.
pub const RECORDS_PROCESSED: &str = "RecordsProcessed";
/// Bytes of record data delivered to the processor.
pub const DATA_BYTES_PROCESSED: &str = "DataBytesProcessed";
/// How far behind the tip of the shard the last batch was.
pub const MILLIS_BEHIND_LATEST: &str = "MillisBehindLatest";
/// Time spent in `process_records`.
pub const PROCESS_RECORDS_TIME: &str = "RecordProcessor.processRecords.Time";
/// Time spent in `initialize`.
pub const INITIALIZE_TIME: &str = "RecordProcessor.initialize.Time";
/// Time spent in `shutdown`.
pub const SHUTDOWN_TIME: &str = "RecordProcessor.shutdown.Time";
/// An operation's outcome: 1 success, 0 failure (average = success rate).
pub const SUCCESS: &str = "Success";
/// An operation's duration.
pub const TIME: &str = "Time";
/// Shard iterators that expired and were replaced.
pub const EXPIRED_ITERATOR: &str = "ExpiredIterator";
/// GetRecords outcome (1/0).
pub const GET_RECORDS_SUCCESS: &str = "KinesisDataFetcher.getRecords.Success";
/// GetRecords duration.
pub const GET_RECORDS_TIME: &str = "KinesisDataFetcher.getRecords.Time";
/// Checkpoint write outcome (1/0).
pub const UPDATE_LEASE_SUCCESS: &str = "UpdateLease.Success";
/// Checkpoint write duration.
pub const UPDATE_LEASE_TIME: &str = "UpdateLease.Time";
/// Not in the Java KCL: batches delivered again after a processor error.
pub const BATCH_REDELIVERIES: &str = "BatchRedeliveries";
/// Not in the Java KCL: shard consumers restarted from the last checkpoint.
pub const SHARD_RESTARTS: &str = "ShardRestarts";
/// Not in the Java KCL: seconds since the shard's last successful checkpoint by this worker.
pub const SECONDS_SINCE_LAST_CHECKPOINT: &str = "SecondsSinceLastCheckpoint";
/// Leases this worker holds.
pub const CURRENT_LEASES: &str = "CurrentLeases";
/// Leases this worker lost (taken by another worker, expired locally, or deleted).
pub const LOST_LEASES: &str = "LostLeases";
/// One lease renewal's outcome (1/0).
pub const RENEW_LEASE_SUCCESS: &str = "RenewLease.Success";
/// One lease renewal's duration.
pub const RENEW_LEASE_TIME: &str = "RenewLease.Time";
/// Leases taken.
pub const TAKEN_LEASES: &str = "TakenLeases";
/// Leases chosen but lost to another worker's write.
pub const UNTAKEN_LEASES: &str = "UntakenLeases";
/// Leases available to take in the last scan: unowned or expired (Java counts both).
pub const EXPIRED_LEASES: &str = "ExpiredLeases";
/// Leases beyond `max_leases_for_worker` that this worker would need to reach its target.
pub const LEASE_SPILLOVER: &str = "LeaseSpillover";
/// Workers seen in the last scan (owners of live leases, plus this worker).
pub const NUM_WORKERS: &str = "NumWorkers";
/// Leases in the table.
pub const TOTAL_LEASES: &str = "TotalLeases";
/// Leases this worker needs to reach its target.
pub const NEEDED_LEASES: &str = "NeededLeases";
/// Leases the taker chose in the last scan.
pub const LEASES_TO_TAKE: &str = "LeasesToTake";
/// Not in the Java KCL: leases in the table with no owner.
pub const UNOWNED_LEASES: &str = "UnownedLeases";
/// Lease-table scan outcome (1/0).
pub const LIST_LEASES_SUCCESS: &str = "ListLeases.Success";
/// Lease-table scan duration.
pub const LIST_LEASES_TIME: &str = "ListLeases.Time";
/// One take's outcome (1/0).
pub const TAKE_LEASE_SUCCESS: &str = "TakeLease.Success";
/// One take's duration.
pub const TAKE_LEASE_TIME: &str = "TakeLease.Time";
/// Not in the Java KCL: leases released (owner cleared) on graceful shutdown.
pub const RELEASED_LEASES: &str = "ReleasedLeases";
/// Shard sync outcome (1/0).
pub const SYNC_SHARDS_SUCCESS: &str = "SyncShards.Success";
/// Shard sync duration (not in the Java KCL, which has only the outcome).
pub const SYNC_SHARDS_TIME: &str = "SyncShards.Time";
/// Worker start-up outcome (1/0).
pub const INITIALIZE_SUCCESS: &str = "Initialize.Success";

// ---- Values of the `Cause` dimension ----

/// Redelivery cause: `process_records` returned an error.
pub const CAUSE_PROCESSOR_ERROR: &str = "ProcessorError";
/// Restart cause: a processor call panicked.
pub const CAUSE_PROCESSOR_PANIC: &str = "ProcessorPanic";
/// Restart cause: the processor returned [`RestartShard`](crate::RestartShard) (in the
/// MultiLangDaemon: the child process exited, hung or broke the protocol).
pub const CAUSE_RESTART_REQUESTED: &str = "RestartRequested";
/// Restart cause: the shard consumer itself panicked.
pub const CAUSE_CONSUMER_PANIC: &str = "ConsumerPanic";

// ---- Span fields (tracing) ----

/// Span/event field: the worker id.
pub const FIELD_WORKER_ID: &str = "worker_id";
/// Span/event field: the shard id.
pub const FIELD_SHARD_ID: &str = "shard_id";
/// Span/event field: the lease key.
pub const FIELD_LEASE_KEY: &str = "lease_key";
/// Span name of a worker (`Scheduler::run`).
pub const SPAN_WORKER: &str = "worker";
/// Span name of a shard consumer.
pub const SPAN_SHARD: &str = "shard";

/// How a metric is recorded through the `metrics` facade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricKind {
    /// A monotonic count (`metrics::counter!`): one sample per increment.
    Counter,
    /// A value that goes up and down (`metrics::gauge!`): one sample per update.
    Gauge,
    /// A distribution of samples (`metrics::histogram!`).
    Histogram,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct MetricSpec {
    /// The metric name.
    pub name: &'static str,
    /// The value of the `Operation` dimension.
    pub operation: &'static str,
    /// Every dimension, `Operation` first.
    pub dimensions: &'static [&'static str],
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Its unit.
    pub unit: Unit,
    /// `SUMMARY` or `DETAILED` (as the Java KCL; selects what the CloudWatch exporter sends).
    pub level: MetricsLevel,
    /// How the Prometheus endpoint serves it: its name there, and as what.
    pub prometheus: PrometheusSpec,
}

impl MetricSpec {
    /// What a recorded value is divided by to give the value Prometheus serves: 1000 for
    /// milliseconds (served as seconds), 1 otherwise.
    pub fn prometheus_divisor(&self) -> f64 {
        match self.unit {
            Unit::Milliseconds => 1000.0,
            _ => 1.0,
        }
    }

    /// The unit Prometheus serves it in: `seconds` (milliseconds and seconds), `bytes`, or
    /// `count` (counts, and the calls of an [`PrometheusKind::Outcomes`] counter).
    pub fn prometheus_unit(&self) -> &'static str {
        match self.unit {
            Unit::Milliseconds | Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
            _ => "count",
        }
    }

    /// The labels of its Prometheus series, in order: its dimensions' labels
    /// ([`prometheus_label`]), then [`PROMETHEUS_OUTCOME`] for an
    /// [`PrometheusKind::Outcomes`] counter. A multi-stream shard's series also have
    /// [`PROMETHEUS_STREAM_ID`].
    pub fn prometheus_labels(&self) -> Vec<&'static str> {
        let mut labels: Vec<&'static str> = self
            .dimensions
            .iter()
            .map(|d| prometheus_label(d).unwrap_or(d))
            .collect();
        if self.prometheus.kind == PrometheusKind::Outcomes {
            labels.push(PROMETHEUS_OUTCOME);
        }
        labels
    }
}

// ---- Prometheus ----
//
// The Prometheus endpoint serves every metric of the catalogue under its own name, with the
// Prometheus conventions: one prefix (`kcl_`), snake_case names and labels, seconds, counters
// ending in `_total`, histograms with buckets, and Java's 1/0 `Success` histograms as counters
// of calls by outcome. The CloudWatch exporter keeps the Java names.

/// The prefix of every Prometheus name of the library's metrics.
pub const PROMETHEUS_PREFIX: &str = "kcl_";
/// Prometheus label of the `Operation` dimension (its values stay the Java ones, e.g.
/// `TakeLeases`).
pub const PROMETHEUS_OPERATION: &str = "operation";
/// Prometheus label of the `ShardId` dimension.
pub const PROMETHEUS_SHARD_ID: &str = "shard_id";
/// Prometheus label of the `WorkerIdentifier` dimension.
pub const PROMETHEUS_WORKER_IDENTIFIER: &str = "worker_identifier";
/// Prometheus label of the `StreamId` dimension.
pub const PROMETHEUS_STREAM_ID: &str = "stream_id";
/// Prometheus label of the `Cause` dimension (its values stay as they are, e.g.
/// `ProcessorError`).
pub const PROMETHEUS_CAUSE: &str = "cause";
/// Prometheus label of an [`PrometheusKind::Outcomes`] counter:
/// [`OUTCOME_SUCCESS`] or [`OUTCOME_FAILURE`].
pub const PROMETHEUS_OUTCOME: &str = "outcome";
/// `outcome` of a call that succeeded (Java: a `Success` sample of 1).
pub const OUTCOME_SUCCESS: &str = "success";
/// `outcome` of a call that failed (Java: a `Success` sample of 0).
pub const OUTCOME_FAILURE: &str = "failure";

/// The Prometheus label of a dimension ([`DIMENSIONS`]): `Operation` → `operation`,
/// `ShardId` → `shard_id`, `WorkerIdentifier` → `worker_identifier`, `StreamId` →
/// `stream_id`, `Cause` → `cause`; `None` for any other name.
pub fn prometheus_label(dimension: &str) -> Option<&'static str> {
    match dimension {
        OPERATION => Some(PROMETHEUS_OPERATION),
        SHARD_ID => Some(PROMETHEUS_SHARD_ID),
        WORKER_IDENTIFIER => Some(PROMETHEUS_WORKER_IDENTIFIER),
        STREAM_ID => Some(PROMETHEUS_STREAM_ID),
        CAUSE => Some(PROMETHEUS_CAUSE),
        _ => None,
    }
}

/// Histogram buckets (seconds) of lease-table (DynamoDB) calls and rounds of them: 1 ms to 10 s.
pub const LEASE_TABLE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Histogram buckets (seconds) of GetRecords calls: 5 ms to 30 s.
pub const GET_RECORDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram buckets (seconds) of the record processor's calls and of a batch's whole task:
/// 1 ms to 5 minutes.
pub const PROCESSING_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// What a metric is in Prometheus.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum PrometheusKind {
    /// A counter (its name ends in `_total`).
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram (`_bucket{le=…}`, `_sum`, `_count`) with these bucket upper bounds.
    Histogram {
        /// The upper bounds, in the unit served (seconds for durations).
        buckets: &'static [f64],
    },
    /// Java's 1/0 `Success` histogram: a counter of calls (its name ends in `_total`) with the
    /// label [`PROMETHEUS_OUTCOME`]: [`OUTCOME_SUCCESS`] for a 1, [`OUTCOME_FAILURE`] for a 0.
    /// Both series are served from the first call on.
    Outcomes,
}

impl PrometheusKind {
    /// The `# TYPE` of its family: `counter`, `gauge` or `histogram`.
    pub fn type_name(&self) -> &'static str {
        match self {
            PrometheusKind::Counter | PrometheusKind::Outcomes => "counter",
            PrometheusKind::Gauge => "gauge",
            PrometheusKind::Histogram { .. } => "histogram",
        }
    }
}

/// A metric as the Prometheus endpoint serves it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct PrometheusSpec {
    /// Its name, [`PROMETHEUS_PREFIX`] first.
    pub name: &'static str,
    /// Counter, gauge, histogram or counter by outcome.
    pub kind: PrometheusKind,
}

const fn counter(name: &'static str) -> PrometheusSpec {
    PrometheusSpec {
        name,
        kind: PrometheusKind::Counter,
    }
}

const fn gauge(name: &'static str) -> PrometheusSpec {
    PrometheusSpec {
        name,
        kind: PrometheusKind::Gauge,
    }
}

const fn histogram(name: &'static str, buckets: &'static [f64]) -> PrometheusSpec {
    PrometheusSpec {
        name,
        kind: PrometheusKind::Histogram { buckets },
    }
}

const fn outcomes(name: &'static str) -> PrometheusSpec {
    PrometheusSpec {
        name,
        kind: PrometheusKind::Outcomes,
    }
}

const SHARD: &[&str] = &[OPERATION, SHARD_ID];
const SHARD_CAUSE: &[&str] = &[OPERATION, SHARD_ID, CAUSE];
const WORKER: &[&str] = &[OPERATION, WORKER_IDENTIFIER];
const OP: &[&str] = &[OPERATION];

const fn spec(
    operation: &'static str,
    name: &'static str,
    dimensions: &'static [&'static str],
    kind: MetricKind,
    unit: Unit,
    level: MetricsLevel,
    prometheus: PrometheusSpec,
) -> MetricSpec {
    MetricSpec {
        name,
        operation,
        dimensions,
        kind,
        unit,
        level,
        prometheus,
    }
}

use MetricKind::{Counter, Gauge, Histogram};
use MetricsLevel::{Detailed, Summary};
use Unit::{Bytes, Count, Milliseconds, Seconds};

/// `OP_PROCESS_TASK` / `RECORDS_PROCESSED` (see the crate's metrics table).
pub const PT_RECORDS_PROCESSED: MetricSpec = spec(
    OP_PROCESS_TASK,
    RECORDS_PROCESSED,
    SHARD,
    Counter,
    Count,
    Summary,
    counter("kcl_records_processed_total"),
);
/// `OP_PROCESS_TASK` / `DATA_BYTES_PROCESSED` (see the crate's metrics table).
pub const PT_DATA_BYTES_PROCESSED: MetricSpec = spec(
    OP_PROCESS_TASK,
    DATA_BYTES_PROCESSED,
    SHARD,
    Counter,
    Bytes,
    Summary,
    counter("kcl_data_processed_bytes_total"),
);
/// `OP_PROCESS_TASK` / `MILLIS_BEHIND_LATEST` (see the crate's metrics table).
pub const PT_MILLIS_BEHIND_LATEST: MetricSpec = spec(
    OP_PROCESS_TASK,
    MILLIS_BEHIND_LATEST,
    SHARD,
    Gauge,
    Milliseconds,
    Summary,
    gauge("kcl_behind_latest_seconds"),
);
/// `OP_PROCESS_TASK` / `PROCESS_RECORDS_TIME` (see the crate's metrics table).
pub const PT_PROCESS_RECORDS_TIME: MetricSpec = spec(
    OP_PROCESS_TASK,
    PROCESS_RECORDS_TIME,
    SHARD,
    Histogram,
    Milliseconds,
    Summary,
    histogram(
        "kcl_processor_process_records_duration_seconds",
        PROCESSING_BUCKETS,
    ),
);
/// `OP_PROCESS_TASK` / `SUCCESS` (see the crate's metrics table).
pub const PT_SUCCESS: MetricSpec = spec(
    OP_PROCESS_TASK,
    SUCCESS,
    SHARD,
    Histogram,
    Count,
    Summary,
    outcomes("kcl_process_task_runs_total"),
);
/// `OP_PROCESS_TASK` / `TIME` (see the crate's metrics table).
pub const PT_TIME: MetricSpec = spec(
    OP_PROCESS_TASK,
    TIME,
    SHARD,
    Histogram,
    Milliseconds,
    Summary,
    histogram("kcl_process_task_duration_seconds", PROCESSING_BUCKETS),
);
/// `OP_PROCESS_TASK` / `EXPIRED_ITERATOR` (see the crate's metrics table).
pub const PT_EXPIRED_ITERATOR: MetricSpec = spec(
    OP_PROCESS_TASK,
    EXPIRED_ITERATOR,
    SHARD,
    Counter,
    Count,
    Summary,
    counter("kcl_expired_iterators_total"),
);
/// `OP_PROCESS_TASK` / `GET_RECORDS_SUCCESS` (see the crate's metrics table).
pub const PT_GET_RECORDS_SUCCESS: MetricSpec = spec(
    OP_PROCESS_TASK,
    GET_RECORDS_SUCCESS,
    SHARD,
    Histogram,
    Count,
    Detailed,
    outcomes("kcl_get_records_calls_total"),
);
/// `OP_PROCESS_TASK` / `GET_RECORDS_TIME` (see the crate's metrics table).
pub const PT_GET_RECORDS_TIME: MetricSpec = spec(
    OP_PROCESS_TASK,
    GET_RECORDS_TIME,
    SHARD,
    Histogram,
    Milliseconds,
    Detailed,
    histogram("kcl_get_records_duration_seconds", GET_RECORDS_BUCKETS),
);
/// `OP_PROCESS_TASK` / `UPDATE_LEASE_SUCCESS` (see the crate's metrics table).
pub const PT_UPDATE_LEASE_SUCCESS: MetricSpec = spec(
    OP_PROCESS_TASK,
    UPDATE_LEASE_SUCCESS,
    SHARD,
    Histogram,
    Count,
    Detailed,
    outcomes("kcl_update_lease_calls_total"),
);
/// `OP_PROCESS_TASK` / `UPDATE_LEASE_TIME` (see the crate's metrics table).
pub const PT_UPDATE_LEASE_TIME: MetricSpec = spec(
    OP_PROCESS_TASK,
    UPDATE_LEASE_TIME,
    SHARD,
    Histogram,
    Milliseconds,
    Detailed,
    histogram("kcl_update_lease_duration_seconds", LEASE_TABLE_BUCKETS),
);
/// `OP_PROCESS_TASK` / `BATCH_REDELIVERIES` (see the crate's metrics table).
pub const PT_BATCH_REDELIVERIES: MetricSpec = spec(
    OP_PROCESS_TASK,
    BATCH_REDELIVERIES,
    SHARD_CAUSE,
    Counter,
    Count,
    Summary,
    counter("kcl_batch_redeliveries_total"),
);
/// `OP_PROCESS_TASK` / `SECONDS_SINCE_LAST_CHECKPOINT` (see the crate's metrics table).
pub const PT_SECONDS_SINCE_LAST_CHECKPOINT: MetricSpec = spec(
    OP_PROCESS_TASK,
    SECONDS_SINCE_LAST_CHECKPOINT,
    SHARD,
    Gauge,
    Seconds,
    Summary,
    gauge("kcl_since_last_checkpoint_seconds"),
);
/// `OP_INITIALIZE_TASK` / `INITIALIZE_TIME` (see the crate's metrics table).
pub const INIT_TIME: MetricSpec = spec(
    OP_INITIALIZE_TASK,
    INITIALIZE_TIME,
    OP,
    Histogram,
    Milliseconds,
    Summary,
    histogram(
        "kcl_processor_initialize_duration_seconds",
        PROCESSING_BUCKETS,
    ),
);
/// `OP_SHUTDOWN_TASK` / `SHUTDOWN_TIME` (see the crate's metrics table).
pub const SHUTDOWN_TIME_SPEC: MetricSpec = spec(
    OP_SHUTDOWN_TASK,
    SHUTDOWN_TIME,
    OP,
    Histogram,
    Milliseconds,
    Summary,
    histogram(
        "kcl_processor_shutdown_duration_seconds",
        PROCESSING_BUCKETS,
    ),
);
/// `OP_SHARD_CONSUMER` / `SHARD_RESTARTS` (see the crate's metrics table).
pub const CONSUMER_RESTARTS: MetricSpec = spec(
    OP_SHARD_CONSUMER,
    SHARD_RESTARTS,
    SHARD_CAUSE,
    Counter,
    Count,
    Summary,
    counter("kcl_shard_restarts_total"),
);
/// `OP_RENEW_ALL_LEASES` / `CURRENT_LEASES` (see the crate's metrics table).
pub const RENEW_CURRENT_LEASES: MetricSpec = spec(
    OP_RENEW_ALL_LEASES,
    CURRENT_LEASES,
    WORKER,
    Gauge,
    Count,
    Summary,
    gauge("kcl_current_leases"),
);
/// `OP_RENEW_ALL_LEASES` / `LOST_LEASES` (see the crate's metrics table).
pub const RENEW_LOST_LEASES: MetricSpec = spec(
    OP_RENEW_ALL_LEASES,
    LOST_LEASES,
    WORKER,
    Counter,
    Count,
    Summary,
    counter("kcl_lost_leases_total"),
);
/// `OP_RENEW_ALL_LEASES` / `SUCCESS` (see the crate's metrics table).
pub const RENEW_SUCCESS: MetricSpec = spec(
    OP_RENEW_ALL_LEASES,
    SUCCESS,
    WORKER,
    Histogram,
    Count,
    Summary,
    outcomes("kcl_renew_all_leases_runs_total"),
);
/// `OP_RENEW_ALL_LEASES` / `TIME` (see the crate's metrics table).
pub const RENEW_TIME: MetricSpec = spec(
    OP_RENEW_ALL_LEASES,
    TIME,
    WORKER,
    Histogram,
    Milliseconds,
    Summary,
    histogram("kcl_renew_all_leases_duration_seconds", LEASE_TABLE_BUCKETS),
);
/// `OP_RENEW_ALL_LEASES` / `RENEW_LEASE_SUCCESS` (see the crate's metrics table).
pub const RENEW_ONE_SUCCESS: MetricSpec = spec(
    OP_RENEW_ALL_LEASES,
    RENEW_LEASE_SUCCESS,
    WORKER,
    Histogram,
    Count,
    Detailed,
    outcomes("kcl_renew_lease_calls_total"),
);
/// `OP_RENEW_ALL_LEASES` / `RENEW_LEASE_TIME` (see the crate's metrics table).
pub const RENEW_ONE_TIME: MetricSpec = spec(
    OP_RENEW_ALL_LEASES,
    RENEW_LEASE_TIME,
    WORKER,
    Histogram,
    Milliseconds,
    Detailed,
    histogram("kcl_renew_lease_duration_seconds", LEASE_TABLE_BUCKETS),
);
/// `OP_TAKE_LEASES` / `TAKEN_LEASES` (see the crate's metrics table).
pub const TAKE_TAKEN: MetricSpec = spec(
    OP_TAKE_LEASES,
    TAKEN_LEASES,
    WORKER,
    Counter,
    Count,
    Summary,
    counter("kcl_taken_leases_total"),
);
/// `OP_TAKE_LEASES` / `UNTAKEN_LEASES` (see the crate's metrics table).
pub const TAKE_UNTAKEN: MetricSpec = spec(
    OP_TAKE_LEASES,
    UNTAKEN_LEASES,
    WORKER,
    Counter,
    Count,
    Summary,
    counter("kcl_untaken_leases_total"),
);
/// `OP_TAKE_LEASES` / `EXPIRED_LEASES` (see the crate's metrics table).
pub const TAKE_EXPIRED_LEASES: MetricSpec = spec(
    OP_TAKE_LEASES,
    EXPIRED_LEASES,
    WORKER,
    Gauge,
    Count,
    Summary,
    gauge("kcl_expired_leases"),
);
/// `OP_TAKE_LEASES` / `LEASE_SPILLOVER` (see the crate's metrics table).
pub const TAKE_LEASE_SPILLOVER: MetricSpec = spec(
    OP_TAKE_LEASES,
    LEASE_SPILLOVER,
    WORKER,
    Gauge,
    Count,
    Summary,
    gauge("kcl_lease_spillover"),
);
/// `OP_TAKE_LEASES` / `NUM_WORKERS` (see the crate's metrics table).
pub const TAKE_NUM_WORKERS: MetricSpec = spec(
    OP_TAKE_LEASES,
    NUM_WORKERS,
    WORKER,
    Gauge,
    Count,
    Summary,
    gauge("kcl_num_workers"),
);
/// `OP_TAKE_LEASES` / `UNOWNED_LEASES` (see the crate's metrics table).
pub const TAKE_UNOWNED_LEASES: MetricSpec = spec(
    OP_TAKE_LEASES,
    UNOWNED_LEASES,
    WORKER,
    Gauge,
    Count,
    Summary,
    gauge("kcl_unowned_leases"),
);
/// `OP_TAKE_LEASES` / `TOTAL_LEASES` (see the crate's metrics table).
pub const TAKE_TOTAL_LEASES: MetricSpec = spec(
    OP_TAKE_LEASES,
    TOTAL_LEASES,
    WORKER,
    Gauge,
    Count,
    Detailed,
    gauge("kcl_total_leases"),
);
/// `OP_TAKE_LEASES` / `NEEDED_LEASES` (see the crate's metrics table).
pub const TAKE_NEEDED_LEASES: MetricSpec = spec(
    OP_TAKE_LEASES,
    NEEDED_LEASES,
    WORKER,
    Gauge,
    Count,
    Detailed,
    gauge("kcl_needed_leases"),
);
/// `OP_TAKE_LEASES` / `LEASES_TO_TAKE` (see the crate's metrics table).
pub const TAKE_LEASES_TO_TAKE: MetricSpec = spec(
    OP_TAKE_LEASES,
    LEASES_TO_TAKE,
    WORKER,
    Gauge,
    Count,
    Detailed,
    gauge("kcl_leases_to_take"),
);
/// `OP_TAKE_LEASES` / `SUCCESS` (see the crate's metrics table).
pub const TAKE_SUCCESS: MetricSpec = spec(
    OP_TAKE_LEASES,
    SUCCESS,
    WORKER,
    Histogram,
    Count,
    Summary,
    outcomes("kcl_take_leases_runs_total"),
);
/// `OP_TAKE_LEASES` / `TIME` (see the crate's metrics table).
pub const TAKE_TIME: MetricSpec = spec(
    OP_TAKE_LEASES,
    TIME,
    WORKER,
    Histogram,
    Milliseconds,
    Summary,
    histogram("kcl_take_leases_duration_seconds", LEASE_TABLE_BUCKETS),
);
/// `OP_TAKE_LEASES` / `LIST_LEASES_SUCCESS` (see the crate's metrics table).
pub const TAKE_LIST_LEASES_SUCCESS: MetricSpec = spec(
    OP_TAKE_LEASES,
    LIST_LEASES_SUCCESS,
    WORKER,
    Histogram,
    Count,
    Detailed,
    outcomes("kcl_list_leases_calls_total"),
);
/// `OP_TAKE_LEASES` / `LIST_LEASES_TIME` (see the crate's metrics table).
pub const TAKE_LIST_LEASES_TIME: MetricSpec = spec(
    OP_TAKE_LEASES,
    LIST_LEASES_TIME,
    WORKER,
    Histogram,
    Milliseconds,
    Detailed,
    histogram("kcl_list_leases_duration_seconds", LEASE_TABLE_BUCKETS),
);
/// `OP_TAKE_LEASES` / `TAKE_LEASE_SUCCESS` (see the crate's metrics table).
pub const TAKE_ONE_SUCCESS: MetricSpec = spec(
    OP_TAKE_LEASES,
    TAKE_LEASE_SUCCESS,
    WORKER,
    Histogram,
    Count,
    Detailed,
    outcomes("kcl_take_lease_calls_total"),
);
/// `OP_TAKE_LEASES` / `TAKE_LEASE_TIME` (see the crate's metrics table).
pub const TAKE_ONE_TIME: MetricSpec = spec(
    OP_TAKE_LEASES,
    TAKE_LEASE_TIME,
    WORKER,
    Histogram,
    Milliseconds,
    Detailed,
    histogram("kcl_take_lease_duration_seconds", LEASE_TABLE_BUCKETS),
);
/// `OP_RELEASE_LEASES` / `RELEASED_LEASES` (see the crate's metrics table).
pub const RELEASE_RELEASED: MetricSpec = spec(
    OP_RELEASE_LEASES,
    RELEASED_LEASES,
    WORKER,
    Counter,
    Count,
    Summary,
    counter("kcl_released_leases_total"),
);
/// `OP_SHARD_SYNC_TASK` / `SYNC_SHARDS_SUCCESS` (see the crate's metrics table).
pub const SYNC_SUCCESS: MetricSpec = spec(
    OP_SHARD_SYNC_TASK,
    SYNC_SHARDS_SUCCESS,
    OP,
    Histogram,
    Count,
    Detailed,
    outcomes("kcl_sync_shards_calls_total"),
);
/// `OP_SHARD_SYNC_TASK` / `SYNC_SHARDS_TIME` (see the crate's metrics table).
pub const SYNC_TIME: MetricSpec = spec(
    OP_SHARD_SYNC_TASK,
    SYNC_SHARDS_TIME,
    OP,
    Histogram,
    Milliseconds,
    Detailed,
    histogram("kcl_sync_shards_duration_seconds", LEASE_TABLE_BUCKETS),
);
/// `OP_SCHEDULER_INITIALIZE` / `INITIALIZE_SUCCESS` (see the crate's metrics table).
pub const SCHED_INITIALIZE: MetricSpec = spec(
    OP_SCHEDULER_INITIALIZE,
    INITIALIZE_SUCCESS,
    OP,
    Histogram,
    Count,
    Summary,
    outcomes("kcl_scheduler_initialize_calls_total"),
);

/// Every metric the library emits (the CloudWatch exporter's synthesised
/// `ApplicationTracker` `MillisBehindLatest` aside).
pub const CATALOGUE: &[MetricSpec] = &[
    PT_RECORDS_PROCESSED,
    PT_DATA_BYTES_PROCESSED,
    PT_MILLIS_BEHIND_LATEST,
    PT_PROCESS_RECORDS_TIME,
    PT_SUCCESS,
    PT_TIME,
    PT_EXPIRED_ITERATOR,
    PT_GET_RECORDS_SUCCESS,
    PT_GET_RECORDS_TIME,
    PT_UPDATE_LEASE_SUCCESS,
    PT_UPDATE_LEASE_TIME,
    PT_BATCH_REDELIVERIES,
    PT_SECONDS_SINCE_LAST_CHECKPOINT,
    INIT_TIME,
    SHUTDOWN_TIME_SPEC,
    CONSUMER_RESTARTS,
    RENEW_CURRENT_LEASES,
    RENEW_LOST_LEASES,
    RENEW_SUCCESS,
    RENEW_TIME,
    RENEW_ONE_SUCCESS,
    RENEW_ONE_TIME,
    TAKE_TAKEN,
    TAKE_UNTAKEN,
    TAKE_EXPIRED_LEASES,
    TAKE_LEASE_SPILLOVER,
    TAKE_NUM_WORKERS,
    TAKE_UNOWNED_LEASES,
    TAKE_TOTAL_LEASES,
    TAKE_NEEDED_LEASES,
    TAKE_LEASES_TO_TAKE,
    TAKE_SUCCESS,
    TAKE_TIME,
    TAKE_LIST_LEASES_SUCCESS,
    TAKE_LIST_LEASES_TIME,
    TAKE_ONE_SUCCESS,
    TAKE_ONE_TIME,
    RELEASE_RELEASED,
    SYNC_SUCCESS,
    SYNC_TIME,
    SCHED_INITIALIZE,
];

/// The catalogue's metric `name` of the operation `operation`.
pub fn find(name: &str, operation: &str) -> Option<&'static MetricSpec> {
    CATALOGUE
        .iter()
        .find(|s| s.name == name && s.operation == operation)
}

/// The kind and unit of the metric `name` (the same under every operation).
pub fn kind_and_unit(name: &str) -> Option<(MetricKind, Unit)> {
    CATALOGUE
        .iter()
        .find(|s| s.name == name)
        .map(|s| (s.kind, s.unit))
}
