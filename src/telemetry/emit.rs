//! The calls the library makes to record metrics: one small function per event, so that
//! the code being measured stays as it is.
//!
//! Each call goes through the `metrics` facade's global (or thread-local) recorder: without
//! one installed, a call is a lookup that finds the no-op recorder and returns.

use super::names::{self as n, MetricKind, MetricSpec};
use super::MetricsLevel;
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, SharedString};
use std::sync::{Arc, OnceLock};
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

/// A registered metric of any kind.
#[derive(Clone)]
enum Handle {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl Handle {
    /// The metric `spec` (its operation, kind and level), with `extra` dimensions after
    /// `Operation`, registered with the current recorder.
    fn register(spec: &MetricSpec, extra: &[Label]) -> Handle {
        let mut labels = Vec::with_capacity(1 + extra.len());
        labels.push(Label::from_static_parts(n::OPERATION, spec.operation));
        labels.extend_from_slice(extra);
        let key = Key::from_parts(spec.name, labels);
        let meta = metadata(spec.level);
        metrics::with_recorder(|r| match spec.kind {
            MetricKind::Counter => Handle::Counter(r.register_counter(&key, meta)),
            MetricKind::Gauge => Handle::Gauge(r.register_gauge(&key, meta)),
            MetricKind::Histogram => Handle::Histogram(r.register_histogram(&key, meta)),
        })
    }

    fn record(&self, value: f64) {
        match self {
            Handle::Counter(c) => c.increment(value as u64),
            Handle::Gauge(g) => g.set(value),
            Handle::Histogram(h) => h.record(value),
        }
    }
}

/// One value for the metric `spec`, with `extra` dimensions after `Operation`.
fn record(spec: &MetricSpec, extra: &[Label], value: f64) {
    Handle::register(spec, extra).record(value);
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

/// Metrics of one shard (`Operation=ProcessTask`, `ShardId`, and `StreamId` in a
/// multi-stream application), of a shard this worker holds.
///
/// Each metric is registered at its first value and its handle kept (shared by clones) until
/// the last clone is dropped: the lease's slot in the coordinator, the shard consumer and its
/// fetcher each have one, so a shard's handles live exactly while the worker holds (or still
/// processes) the shard. That is how a recorder tells held shards from shards no longer held:
/// the Prometheus recorder keeps a shard's series while any of its handles lives, and drops
/// them a while after the last one went (the CloudWatch recorder forgets a metric not sampled
/// for a buffer period and referenced by no handle).
#[derive(Debug, Clone)]
pub(crate) struct ShardMetrics {
    /// `ShardId`, then `StreamId` for a lease of a multi-stream application.
    shard: Arc<[Label]>,
    handles: Arc<ShardHandles>,
}

/// The handles of one shard's metrics, registered on first use.
#[derive(Default)]
struct ShardHandles {
    lag: OnceLock<Handle>,
    process_records_time: OnceLock<Handle>,
    records_processed: OnceLock<Handle>,
    bytes_processed: OnceLock<Handle>,
    success: OnceLock<Handle>,
    time: OnceLock<Handle>,
    update_lease_success: OnceLock<Handle>,
    update_lease_time: OnceLock<Handle>,
    since_last_checkpoint: OnceLock<Handle>,
    get_records_success: OnceLock<Handle>,
    get_records_time: OnceLock<Handle>,
    expired_iterator: OnceLock<Handle>,
}

impl std::fmt::Debug for ShardHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardHandles").finish_non_exhaustive()
    }
}

impl ShardMetrics {
    /// The metrics of the lease `key`: a shard id, or for a multi-stream application
    /// `<stream>:<shard id>`, whose stream becomes the `StreamId` dimension (as in the Java
    /// KCL's multi-stream metrics).
    pub(crate) fn new(key: &str) -> Self {
        let label = |name, value: &str| {
            let value: Arc<str> = Arc::from(value);
            Label::new(name, SharedString::from_shared(value))
        };
        let shard = match crate::StreamIdentifier::split_lease_key(key) {
            Some((stream, shard_id)) => vec![
                label(n::SHARD_ID, shard_id),
                label(n::STREAM_ID, &stream.to_string()),
            ],
            None => vec![label(n::SHARD_ID, key)],
        };
        ShardMetrics {
            shard: shard.into(),
            handles: Arc::default(),
        }
    }

    /// One value of `spec`, through the handle in `slot` (registered now if it is not yet).
    fn shard(
        &self,
        slot: impl FnOnce(&ShardHandles) -> &OnceLock<Handle>,
        spec: &MetricSpec,
        value: f64,
    ) {
        slot(&self.handles)
            .get_or_init(|| Handle::register(spec, &self.shard))
            .record(value);
    }

    /// The shard's labels and a `Cause`.
    fn with_cause(&self, cause: &'static str) -> Vec<Label> {
        let mut labels = self.shard.to_vec();
        labels.push(Label::from_static_parts(n::CAUSE, cause));
        labels
    }

    /// A batch reached the consumer: its lag (Java records it for every batch, empty or not).
    pub(crate) fn batch_received(&self, millis_behind_latest: Option<i64>) {
        if let Some(ms) = millis_behind_latest {
            self.shard(|h| &h.lag, &n::PT_MILLIS_BEHIND_LATEST, ms as f64);
        }
    }

    /// `process_records` returned after `took`; `records` and `bytes` were delivered.
    pub(crate) fn processed(&self, records: usize, bytes: usize, took: Duration, ok: bool) {
        self.shard(
            |h| &h.process_records_time,
            &n::PT_PROCESS_RECORDS_TIME,
            millis(took),
        );
        if ok {
            self.shard(
                |h| &h.records_processed,
                &n::PT_RECORDS_PROCESSED,
                records as f64,
            );
            self.shard(
                |h| &h.bytes_processed,
                &n::PT_DATA_BYTES_PROCESSED,
                bytes as f64,
            );
        }
    }

    /// One batch's task (fetching it from the queue to done) ended after `took`.
    pub(crate) fn task(&self, ok: bool, took: Duration) {
        self.shard(|h| &h.success, &n::PT_SUCCESS, outcome(ok));
        self.shard(|h| &h.time, &n::PT_TIME, millis(took));
    }

    /// The same batch will be delivered again because of `cause`.
    pub(crate) fn redelivery(&self, cause: &'static str) {
        let labels = self.with_cause(cause);
        record(&n::PT_BATCH_REDELIVERIES, &labels, 1.0);
    }

    /// A checkpoint write finished.
    pub(crate) fn checkpoint_write(&self, ok: bool, took: Duration) {
        self.shard(
            |h| &h.update_lease_success,
            &n::PT_UPDATE_LEASE_SUCCESS,
            outcome(ok),
        );
        self.shard(
            |h| &h.update_lease_time,
            &n::PT_UPDATE_LEASE_TIME,
            millis(took),
        );
    }

    /// Seconds since this worker's last successful checkpoint of the shard.
    pub(crate) fn since_last_checkpoint(&self, since: Duration) {
        self.shard(
            |h| &h.since_last_checkpoint,
            &n::PT_SECONDS_SINCE_LAST_CHECKPOINT,
            since.as_secs_f64(),
        );
    }

    /// A GetRecords call finished.
    pub(crate) fn get_records(&self, ok: bool, took: Duration) {
        self.shard(
            |h| &h.get_records_success,
            &n::PT_GET_RECORDS_SUCCESS,
            outcome(ok),
        );
        self.shard(
            |h| &h.get_records_time,
            &n::PT_GET_RECORDS_TIME,
            millis(took),
        );
    }

    /// A shard iterator expired.
    pub(crate) fn expired_iterator(&self) {
        self.shard(|h| &h.expired_iterator, &n::PT_EXPIRED_ITERATOR, 1.0);
    }

    /// The consumer ends and the scheduler restarts the shard because of `cause`.
    pub(crate) fn restart(&self, cause: &'static str) {
        let labels = self.with_cause(cause);
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
