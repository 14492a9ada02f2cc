//! The calls the library makes to record metrics: one small function per event, so that
//! the code being measured stays as it is.
//!
//! Each call goes through the `metrics` facade's global (or thread-local) recorder: without
//! one installed, a call is a lookup that finds the no-op recorder and returns.

use super::names::{self as n, MetricKind, MetricSpec};
use super::MetricsLevel;
use metrics::{Key, Label, Level, Metadata, SharedString};
use std::sync::Arc;
use std::time::Duration;

const TARGET: &str = "kinesis_client";
static SUMMARY: Metadata<'static> = Metadata::new(TARGET, Level::INFO, Some(module_path!()));
static DETAILED: Metadata<'static> = Metadata::new(TARGET, Level::DEBUG, Some(module_path!()));

/// The facade level a Java KCL metrics level maps to: `SUMMARY` = `INFO`, `DETAILED` = `DEBUG`.
pub(crate) fn metadata(level: MetricsLevel) -> &'static Metadata<'static> {
    match level {
        MetricsLevel::Detailed | MetricsLevel::None => &DETAILED,
        MetricsLevel::Summary => &SUMMARY,
    }
}

/// One value for the metric `spec` (its operation, kind and level), with `extra` dimensions
/// after `Operation`.
fn record(spec: &MetricSpec, extra: &[Label], value: f64) {
    let mut labels = Vec::with_capacity(1 + extra.len());
    labels.push(Label::from_static_parts(n::OPERATION, spec.operation));
    labels.extend_from_slice(extra);
    let key = Key::from_parts(spec.name, labels);
    let meta = metadata(spec.level);
    metrics::with_recorder(|r| match spec.kind {
        MetricKind::Counter => r.register_counter(&key, meta).increment(value as u64),
        MetricKind::Gauge => r.register_gauge(&key, meta).set(value),
        MetricKind::Histogram => r.register_histogram(&key, meta).record(value),
    });
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn outcome(ok: bool) -> f64 {
    if ok {
        1.0
    } else {
        0.0
    }
}

/// Describe every metric (unit and meaning) to the installed recorder. The scheduler calls it
/// when it starts; call it yourself after installing a recorder if you read the metrics before.
pub fn describe() {
    let mut seen = std::collections::BTreeSet::new();
    for spec in n::CATALOGUE {
        if !seen.insert(spec.name) {
            continue;
        }
        let name = metrics::KeyName::from_const_str(spec.name);
        let text = SharedString::const_str(spec.name);
        metrics::with_recorder(|r| match spec.kind {
            MetricKind::Counter => r.describe_counter(name, Some(spec.unit), text),
            MetricKind::Gauge => r.describe_gauge(name, Some(spec.unit), text),
            MetricKind::Histogram => r.describe_histogram(name, Some(spec.unit), text),
        });
    }
}

/// Metrics of one shard consumer (`Operation=ProcessTask`, `ShardId`).
#[derive(Debug, Clone)]
pub(crate) struct ShardMetrics {
    shard: Label,
}

impl ShardMetrics {
    pub(crate) fn new(shard_id: &str) -> Self {
        let value: Arc<str> = Arc::from(shard_id);
        ShardMetrics {
            shard: Label::new(n::SHARD_ID, SharedString::from_shared(value)),
        }
    }

    fn shard(&self, spec: &MetricSpec, value: f64) {
        record(spec, std::slice::from_ref(&self.shard), value);
    }

    /// A batch reached the consumer: its lag (Java records it for every batch, empty or not).
    pub(crate) fn batch_received(&self, millis_behind_latest: Option<i64>) {
        if let Some(ms) = millis_behind_latest {
            self.shard(&n::PT_MILLIS_BEHIND_LATEST, ms as f64);
        }
    }

    /// `process_records` returned after `took`; `records` and `bytes` were delivered.
    pub(crate) fn processed(&self, records: usize, bytes: usize, took: Duration, ok: bool) {
        self.shard(&n::PT_PROCESS_RECORDS_TIME, millis(took));
        if ok {
            self.shard(&n::PT_RECORDS_PROCESSED, records as f64);
            self.shard(&n::PT_DATA_BYTES_PROCESSED, bytes as f64);
        }
    }

    /// One batch's task (fetching it from the queue to done) ended after `took`.
    pub(crate) fn task(&self, ok: bool, took: Duration) {
        self.shard(&n::PT_SUCCESS, outcome(ok));
        self.shard(&n::PT_TIME, millis(took));
    }

    /// The same batch will be delivered again because of `cause`.
    pub(crate) fn redelivery(&self, cause: &'static str) {
        let labels = [
            self.shard.clone(),
            Label::from_static_parts(n::CAUSE, cause),
        ];
        record(&n::PT_BATCH_REDELIVERIES, &labels, 1.0);
    }

    /// A checkpoint write finished.
    pub(crate) fn checkpoint_write(&self, ok: bool, took: Duration) {
        self.shard(&n::PT_UPDATE_LEASE_SUCCESS, outcome(ok));
        self.shard(&n::PT_UPDATE_LEASE_TIME, millis(took));
    }

    /// Seconds since this worker's last successful checkpoint of the shard.
    pub(crate) fn since_last_checkpoint(&self, since: Duration) {
        self.shard(&n::PT_SECONDS_SINCE_LAST_CHECKPOINT, since.as_secs_f64());
    }

    /// A GetRecords call finished.
    pub(crate) fn get_records(&self, ok: bool, took: Duration) {
        self.shard(&n::PT_GET_RECORDS_SUCCESS, outcome(ok));
        self.shard(&n::PT_GET_RECORDS_TIME, millis(took));
    }

    /// A shard iterator expired.
    pub(crate) fn expired_iterator(&self) {
        self.shard(&n::PT_EXPIRED_ITERATOR, 1.0);
    }

    /// The consumer ends and the scheduler restarts the shard because of `cause`.
    pub(crate) fn restart(&self, cause: &'static str) {
        let labels = [
            self.shard.clone(),
            Label::from_static_parts(n::CAUSE, cause),
        ];
        record(&n::CONSUMER_RESTARTS, &labels, 1.0);
    }
}

/// `initialize` returned after `took`.
pub(crate) fn initialize_time(took: Duration) {
    record(&n::INIT_TIME, &[], millis(took));
}

/// `shutdown` returned after `took`.
pub(crate) fn shutdown_time(took: Duration) {
    record(&n::SHUTDOWN_TIME_SPEC, &[], millis(took));
}

/// A shard sync ended.
pub(crate) fn shard_sync(ok: bool, took: Duration) {
    record(&n::SYNC_SUCCESS, &[], outcome(ok));
    record(&n::SYNC_TIME, &[], millis(took));
}

/// The worker's start-up ended.
pub(crate) fn scheduler_initialized(ok: bool) {
    record(&n::SCHED_INITIALIZE, &[], outcome(ok));
}

/// What a take round saw and decided (Java `TakeLeases`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TakeStats {
    /// Leases in the table.
    pub total: usize,
    /// Leases with no owner.
    pub unowned: usize,
    /// Leases available: unowned or expired.
    pub available: usize,
    /// Workers (owners of live leases, plus this one).
    pub workers: usize,
    /// Leases needed to reach the target.
    pub needed: usize,
    /// Target beyond `max_leases_for_worker`.
    pub spillover: usize,
    /// Leases chosen to take.
    pub to_take: usize,
}

/// Metrics of one worker's lease coordination (`WorkerIdentifier`).
#[derive(Debug, Clone)]
pub(crate) struct WorkerMetrics {
    worker: Label,
}

impl WorkerMetrics {
    pub(crate) fn new(worker_id: &str) -> Self {
        let value: Arc<str> = Arc::from(worker_id);
        WorkerMetrics {
            worker: Label::new(n::WORKER_IDENTIFIER, SharedString::from_shared(value)),
        }
    }

    fn worker(&self, spec: &MetricSpec, value: f64) {
        record(spec, std::slice::from_ref(&self.worker), value);
    }

    /// One lease renewal ended (`ok` = the write landed or the lease was found lost; false
    /// when the lease table failed).
    pub(crate) fn renewal(&self, ok: bool, took: Duration) {
        self.worker(&n::RENEW_ONE_SUCCESS, outcome(ok));
        self.worker(&n::RENEW_ONE_TIME, millis(took));
        self.worker(&n::RENEW_SUCCESS, outcome(ok));
        self.worker(&n::RENEW_TIME, millis(took));
    }

    /// The number of held leases now.
    pub(crate) fn current_leases(&self, held: usize) {
        self.worker(&n::RENEW_CURRENT_LEASES, held as f64);
    }

    /// A held lease was lost.
    pub(crate) fn lost_lease(&self) {
        self.worker(&n::RENEW_LOST_LEASES, 1.0);
    }

    /// The lease-table scan of a take round ended.
    pub(crate) fn list_leases(&self, ok: bool, took: Duration) {
        self.worker(&n::TAKE_LIST_LEASES_SUCCESS, outcome(ok));
        self.worker(&n::TAKE_LIST_LEASES_TIME, millis(took));
    }

    /// What a take round's scan saw and what it decided.
    pub(crate) fn take_decision(&self, s: &TakeStats) {
        self.worker(&n::TAKE_TOTAL_LEASES, s.total as f64);
        self.worker(&n::TAKE_UNOWNED_LEASES, s.unowned as f64);
        self.worker(&n::TAKE_EXPIRED_LEASES, s.available as f64);
        self.worker(&n::TAKE_NUM_WORKERS, s.workers as f64);
        self.worker(&n::TAKE_NEEDED_LEASES, s.needed as f64);
        self.worker(&n::TAKE_LEASE_SPILLOVER, s.spillover as f64);
        self.worker(&n::TAKE_LEASES_TO_TAKE, s.to_take as f64);
    }

    /// One take write ended (`ok` = it landed).
    pub(crate) fn take_lease(&self, ok: bool, took: Duration) {
        self.worker(&n::TAKE_ONE_SUCCESS, outcome(ok));
        self.worker(&n::TAKE_ONE_TIME, millis(took));
    }

    /// A take round ended: `taken` leases taken, `untaken` chosen but lost to another worker.
    pub(crate) fn take_round(&self, ok: bool, took: Duration, taken: usize, untaken: usize) {
        self.worker(&n::TAKE_TAKEN, taken as f64);
        self.worker(&n::TAKE_UNTAKEN, untaken as f64);
        self.worker(&n::TAKE_SUCCESS, outcome(ok));
        self.worker(&n::TAKE_TIME, millis(took));
    }

    /// Leases released on graceful shutdown.
    pub(crate) fn released(&self, count: usize) {
        self.worker(&n::RELEASE_RELEASED, count as f64);
    }
}
