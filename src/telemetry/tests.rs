//! Every metric is emitted with its name, unit and dimensions (a test recorder), with values
//! that match what happened; the health follows the lease table.

use super::names::{self, MetricKind, MetricSpec, CATALOGUE};
use super::MetricsLevel;
use crate::checkpointer::Checkpointer;
use crate::lease::LeaseOp;
use crate::processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, RecordProcessor, RestartShard,
    Shutdown,
};
use crate::retrieval::StreamRef;
use crate::sync::Mutex;
use crate::testing::lease_store::{Fault, InMemoryLeaseStore};
use crate::testing::stream::{InMemoryStream, StreamFault, StreamOp};
use crate::{Config, InitialPosition, Scheduler, SchedulerHandle};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind as Kind;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One metric as the test recorder saw it.
#[derive(Debug)]
struct Seen {
    kind: Kind,
    name: String,
    labels: BTreeMap<String, String>,
    unit: Option<metrics::Unit>,
    value: DebugValue,
}

impl Seen {
    fn operation(&self) -> &str {
        self.labels.get(names::OPERATION).map_or("", String::as_str)
    }

    fn counter(&self) -> u64 {
        match &self.value {
            DebugValue::Counter(v) => *v,
            other => panic!("{} is not a counter: {other:?}", self.name),
        }
    }

    fn gauge(&self) -> f64 {
        match &self.value {
            DebugValue::Gauge(v) => v.into_inner(),
            other => panic!("{} is not a gauge: {other:?}", self.name),
        }
    }

    fn samples(&self) -> Vec<f64> {
        match &self.value {
            DebugValue::Histogram(v) => v.iter().map(|x| x.into_inner()).collect(),
            other => panic!("{} is not a histogram: {other:?}", self.name),
        }
    }
}

fn snapshot(recorder: &DebuggingRecorder) -> Vec<Seen> {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, unit, _, value)| {
            let (kind, key) = ck.into_parts();
            Seen {
                kind,
                name: key.name().to_string(),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect(),
                unit,
                value,
            }
        })
        .collect()
}

/// The metrics named `name` of `operation` whose labels include `with`.
fn find<'a>(seen: &'a [Seen], operation: &str, name: &str, with: &[(&str, &str)]) -> Vec<&'a Seen> {
    seen.iter()
        .filter(|s| s.name == name && s.operation() == operation)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn one<'a>(seen: &'a [Seen], operation: &str, name: &str, with: &[(&str, &str)]) -> &'a Seen {
    let found = find(seen, operation, name, with);
    assert_eq!(
        found.len(),
        1,
        "{operation}/{name} {with:?}: expected one metric, found {found:#?}"
    );
    found[0]
}

const S0: &str = "shardId-000000000000";
const S1: &str = "shardId-000000000001";
const S2: &str = "shardId-000000000002";

/// Checkpoints every batch; on S0 fails its first batch once (redelivery); on S1 asks for a
/// restart at its first batch and panics at its second (two restarts).
struct Scripted {
    shard: String,
    calls: Arc<Mutex<BTreeMap<String, u32>>>,
}

#[async_trait::async_trait]
impl RecordProcessor for Scripted {
    async fn initialize(&mut self, _: InitializationInput) -> Result<(), ProcessorError> {
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        cp: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let n = {
            let mut calls = self.calls.lock();
            let n = calls.entry(self.shard.clone()).or_default();
            *n += 1;
            *n
        };
        match (self.shard.as_str(), n) {
            (S0, 1) => return Err("not now".into()),
            (S1, 1) => return Err(RestartShard("start over".into()).into()),
            (S1, 2) => panic!("processor bug"),
            _ => {}
        }
        if !input.records.is_empty() {
            cp.checkpoint().await?;
        }
        Ok(())
    }

    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        if let Shutdown::Requested { checkpointer } | Shutdown::ShardEnded { checkpointer } = reason
        {
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }
}

/// Accepts every batch; checkpoints it while `checkpointing` is set.
struct Checkpointing(Arc<AtomicBool>);

impl Checkpointing {
    fn factory(checkpointing: bool) -> (Arc<AtomicBool>, impl crate::RecordProcessorFactory) {
        let flag = Arc::new(AtomicBool::new(checkpointing));
        let f = flag.clone();
        (flag, move |_: &str| Checkpointing(f.clone()))
    }
}

#[async_trait::async_trait]
impl RecordProcessor for Checkpointing {
    async fn initialize(&mut self, _: InitializationInput) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn process_records(
        &mut self,
        _: ProcessRecordsInput,
        cp: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        if self.0.load(Ordering::SeqCst) {
            cp.checkpoint().await?;
        }
        Ok(())
    }
    async fn shutdown(&mut self, _: Shutdown<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
}

fn config(worker: &str) -> Config {
    Config::builder("app", StreamRef::Name("s".into()))
        .worker_id(worker)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(3))
        .idle_time_between_reads(Duration::from_millis(200))
        .task_backoff(Duration::from_millis(100))
        .shard_sync_interval(Duration::from_secs(2))
        .rng_seed(Some(7))
        .build()
        .unwrap()
}

fn start(
    stream: &InMemoryStream,
    store: &InMemoryLeaseStore,
    worker: &str,
    factory: impl crate::RecordProcessorFactory,
) -> (
    SchedulerHandle,
    tokio::task::JoinHandle<Result<(), crate::SchedulerError>>,
) {
    let scheduler = Scheduler::new(
        config(worker),
        factory,
        Arc::new(stream.clone()),
        Arc::new(store.clone()),
    );
    let handle = scheduler.handle();
    (handle, tokio::spawn(scheduler.run(std::future::pending())))
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A worker through records, a redelivery, two restarts, an expired iterator, a lease taken
/// away (lost, then taken back), shard syncs and a graceful shutdown, with the current
/// (local) recorder; returns how many records were put.
async fn run_through_every_metric() -> u64 {
    let stream = InMemoryStream::new("s", 3);
    let mut put = 0;
    for i in 0..30 {
        stream.put(&format!("pk-{i}"), format!("record-{i}").as_bytes());
        put += 1;
    }
    let expire_once = Arc::new(AtomicBool::new(true));
    stream.set_fault_injector(Some(Arc::new({
        let expire_once = expire_once.clone();
        move |op: StreamOp, shard: Option<&str>| {
            (op == StreamOp::GetRecords
                && shard == Some(S2)
                && expire_once.swap(false, Ordering::SeqCst))
            .then_some(StreamFault::ExpireIterator)
        }
    })));
    let store = InMemoryLeaseStore::new();
    let calls: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let factory = {
        let calls = calls.clone();
        move |shard: &str| Scripted {
            shard: shard.to_string(),
            calls: calls.clone(),
        }
    };
    let (handle, task) = start(&stream, &store, "w", factory);
    wait_for("three shards held", || handle.held_shards().len() == 3).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Another worker takes S0 away: this worker loses it at its next write, and takes it back
    // once the intruder's lease expires.
    store.with_table(|t| {
        let l = t.get_mut(S0).unwrap();
        l.owner = Some("intruder".into());
        l.counter += 1;
    });
    wait_for("S0 lost", || !handle.held_shards().contains(S0)).await;
    wait_for("S0 taken back", || handle.held_shards().contains(S0)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    handle.request_shutdown();
    task.await.unwrap().unwrap();
    put
}

/// [`run_through_every_metric`]: every metric of the catalogue appears with its kind, unit and
/// exactly its dimensions.
#[tokio::test(start_paused = true)]
async fn every_metric_is_emitted_with_its_name_unit_and_dimensions() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let put = run_through_every_metric().await;

    let seen = snapshot(&recorder);
    let mut missing = Vec::new();
    for spec in CATALOGUE {
        let found = find(&seen, spec.operation, spec.name, &[]);
        if found.is_empty() {
            missing.push(format!("{}/{}", spec.operation, spec.name));
        }
        for s in found {
            check_spec(spec, s);
        }
    }
    assert!(missing.is_empty(), "never emitted: {missing:?}");
    // Nothing outside the catalogue.
    for s in &seen {
        assert!(
            CATALOGUE
                .iter()
                .any(|spec| spec.name == s.name && spec.operation == s.operation()),
            "{} of {} is not in the catalogue",
            s.name,
            s.operation()
        );
    }

    // Values that follow from what happened.
    let processed: u64 = find(&seen, names::OP_PROCESS_TASK, names::RECORDS_PROCESSED, &[])
        .iter()
        .map(|s| s.counter())
        .sum();
    assert!(processed >= put, "{processed} records processed of {put}");
    let shard = |id| [(names::SHARD_ID, id)];
    let cause = |id, c| [(names::SHARD_ID, id), (names::CAUSE, c)];
    assert_eq!(
        one(
            &seen,
            names::OP_PROCESS_TASK,
            names::BATCH_REDELIVERIES,
            &cause(S0, names::CAUSE_PROCESSOR_ERROR)
        )
        .counter(),
        1
    );
    assert_eq!(
        one(
            &seen,
            names::OP_SHARD_CONSUMER,
            names::SHARD_RESTARTS,
            &cause(S1, names::CAUSE_RESTART_REQUESTED)
        )
        .counter(),
        1
    );
    assert_eq!(
        one(
            &seen,
            names::OP_SHARD_CONSUMER,
            names::SHARD_RESTARTS,
            &cause(S1, names::CAUSE_PROCESSOR_PANIC)
        )
        .counter(),
        1
    );
    assert_eq!(
        one(
            &seen,
            names::OP_PROCESS_TASK,
            names::EXPIRED_ITERATOR,
            &shard(S2)
        )
        .counter(),
        1
    );
    let worker = [(names::WORKER_IDENTIFIER, "w")];
    assert!(
        one(
            &seen,
            names::OP_RENEW_ALL_LEASES,
            names::LOST_LEASES,
            &worker
        )
        .counter()
            >= 1
    );
    assert_eq!(
        one(
            &seen,
            names::OP_RELEASE_LEASES,
            names::RELEASED_LEASES,
            &worker
        )
        .counter(),
        3,
        "the three held leases are released on shutdown"
    );
    assert!(one(&seen, names::OP_TAKE_LEASES, names::TAKEN_LEASES, &worker).counter() >= 4);
    assert_eq!(
        one(&seen, names::OP_TAKE_LEASES, names::TOTAL_LEASES, &worker).gauge(),
        3.0
    );
    assert_eq!(
        one(&seen, names::OP_TAKE_LEASES, names::NUM_WORKERS, &worker).gauge(),
        1.0
    );
    assert!(one(
        &seen,
        names::OP_SCHEDULER_INITIALIZE,
        names::INITIALIZE_SUCCESS,
        &[]
    )
    .samples()
    .iter()
    .all(|v| *v == 1.0));
    // The first batch of S0 failed and was redelivered: one 0 among its task outcomes.
    let outcomes = one(&seen, names::OP_PROCESS_TASK, names::SUCCESS, &shard(S0)).samples();
    assert_eq!(
        outcomes.iter().filter(|v| **v == 0.0).count(),
        1,
        "{outcomes:?}"
    );
}

fn check_spec(spec: &MetricSpec, s: &Seen) {
    let what = format!("{}/{} {:?}", spec.operation, spec.name, s.labels);
    let kind = match spec.kind {
        MetricKind::Counter => Kind::Counter,
        MetricKind::Gauge => Kind::Gauge,
        MetricKind::Histogram => Kind::Histogram,
    };
    assert_eq!(s.kind, kind, "{what}: kind");
    assert_eq!(s.unit, Some(spec.unit), "{what}: unit");
    let dims: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = spec.dimensions.iter().copied().collect();
    assert_eq!(dims, want, "{what}: dimensions");
    assert_eq!(
        spec.dimensions[0],
        names::OPERATION,
        "{what}: Operation first"
    );
}

/// Records and bytes count what the processor accepted; the lag is the stream's.
#[tokio::test(start_paused = true)]
async fn records_bytes_and_lag_follow_what_was_delivered() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let stream = InMemoryStream::new("s", 1);
    let mut bytes = 0;
    for i in 0..25 {
        let data = format!("payload number {i}");
        bytes += data.len();
        stream.put("pk", data.as_bytes());
    }
    let store = InMemoryLeaseStore::new();
    let (_, factory) = Checkpointing::factory(true);
    let (handle, task) = start(&stream, &store, "w", factory);
    wait_for("the shard held", || handle.held_shards().len() == 1).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    handle.request_shutdown();
    task.await.unwrap().unwrap();

    let seen = snapshot(&recorder);
    let shard = [(names::SHARD_ID, S0)];
    assert_eq!(
        one(
            &seen,
            names::OP_PROCESS_TASK,
            names::RECORDS_PROCESSED,
            &shard
        )
        .counter(),
        25
    );
    assert_eq!(
        one(
            &seen,
            names::OP_PROCESS_TASK,
            names::DATA_BYTES_PROCESSED,
            &shard
        )
        .counter(),
        bytes as u64
    );
    // Every record was read: the last batch is at the tip.
    assert_eq!(
        one(
            &seen,
            names::OP_PROCESS_TASK,
            names::MILLIS_BEHIND_LATEST,
            &shard
        )
        .gauge(),
        0.0
    );
    let calls = one(
        &seen,
        names::OP_PROCESS_TASK,
        names::PROCESS_RECORDS_TIME,
        &shard,
    )
    .samples()
    .len();
    assert!(calls >= 1);
    assert_eq!(
        one(
            &seen,
            names::OP_PROCESS_TASK,
            names::UPDATE_LEASE_SUCCESS,
            &shard
        )
        .samples()
        .iter()
        .filter(|v| **v == 1.0)
        .count(),
        calls,
        "one successful checkpoint write per batch"
    );
}

/// `SecondsSinceLastCheckpoint` grows while a processor accepts batches without
/// checkpointing, and drops after a checkpoint.
#[tokio::test(start_paused = true)]
async fn seconds_since_the_last_checkpoint_grow_until_the_processor_checkpoints() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let stream = InMemoryStream::new("s", 1);
    let store = InMemoryLeaseStore::new();
    let (checkpoint_now, factory) = Checkpointing::factory(false);
    let (handle, task) = start(&stream, &store, "w", factory);
    wait_for("the shard held", || handle.held_shards().len() == 1).await;
    let gauge = |recorder: &DebuggingRecorder| {
        one(
            &snapshot(recorder),
            names::OP_PROCESS_TASK,
            names::SECONDS_SINCE_LAST_CHECKPOINT,
            &[(names::SHARD_ID, S0)],
        )
        .gauge()
    };
    for _ in 0..20 {
        stream.put("pk", b"x");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stale = gauge(&recorder);
    assert!(stale >= 9.0, "10 s without a checkpoint, reported {stale}");
    checkpoint_now.store(true, Ordering::SeqCst);
    stream.put("pk", b"y");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = gauge(&recorder);
    assert!(
        fresh <= 1.5,
        "checkpointed within the last 1.5 s, reported {fresh}"
    );
    handle.request_shutdown();
    task.await.unwrap().unwrap();
}

/// Ready once initialised; not ready while the lease table fails (scans and renewals), ready
/// again when it answers; not live once `run` returned.
#[tokio::test(start_paused = true)]
async fn ready_follows_the_lease_table_and_live_ends_with_the_worker() {
    let stream = InMemoryStream::new("s", 2);
    let store = InMemoryLeaseStore::new();
    let failing = Arc::new(AtomicBool::new(false));
    let table_calls = Arc::new(AtomicU32::new(0));
    store.set_fault_injector(Some(Arc::new({
        let (failing, table_calls) = (failing.clone(), table_calls.clone());
        move |op: LeaseOp, _: Option<&str>| {
            table_calls.fetch_add(1, Ordering::SeqCst);
            (failing.load(Ordering::SeqCst) && op != LeaseOp::CreateTable).then_some(Fault::Timeout)
        }
    })));
    let scheduler = Scheduler::new(
        config("w"),
        Checkpointing::factory(false).1,
        Arc::new(stream.clone()),
        Arc::new(store.clone()),
    );
    let handle = scheduler.handle();
    let before = handle.health();
    assert!(
        before.live && !before.ready && !before.initialized,
        "{before}"
    );
    let task = tokio::spawn(scheduler.run(std::future::pending()));
    wait_for("ready", || handle.health().ready).await;
    let h = handle.health();
    assert!(
        h.live && h.initialized && h.lease_table_reachable && h.renewals_succeeding,
        "{h}"
    );

    failing.store(true, Ordering::SeqCst);
    wait_for("not ready while the table fails", || !handle.health().ready).await;
    let h = handle.health();
    assert!(h.live, "a failing table is not a dead worker: {h}");
    assert!(!h.lease_table_reachable || !h.renewals_succeeding, "{h}");
    // It stays not ready while the table keeps failing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!handle.health().ready, "{}", handle.health());

    failing.store(false, Ordering::SeqCst);
    wait_for("ready again", || handle.health().ready).await;

    handle.request_shutdown();
    task.await.unwrap().unwrap();
    let h = handle.health();
    assert!(!h.live && !h.ready && h.stopped && h.shutting_down, "{h}");
}

/// A coordinator that stops checking in for the failover time is not live.
#[tokio::test(start_paused = true)]
async fn a_stuck_coordinator_is_not_live() {
    let state = super::HealthState::new(Duration::from_secs(3));
    state.initialized();
    state.heartbeat();
    assert!(state.health().live && state.health().ready);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(state.health().live);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let h = state.health();
    assert!(!h.live && !h.ready, "{h}");
    state.heartbeat();
    assert!(state.health().live);
}

/// A lease whose renewal failed makes the worker not ready until a renewal of it succeeds or
/// the worker no longer holds it (a worker left with no lease must not stay not ready).
#[test]
fn only_held_leases_with_failing_renewals_make_the_worker_not_ready() {
    let state = super::HealthState::new(Duration::from_secs(3));
    state.initialized();
    state.renewal("a", false);
    state.renewal("b", true);
    assert!(!state.health().ready && !state.health().renewals_succeeding);
    state.renewal("a", true);
    assert!(state.health().ready);
    state.renewal("a", false);
    state.lease_gone("a");
    assert!(state.health().ready, "{}", state.health());
}

/// The crate docs' metrics table lists exactly the catalogue, in its order, with the same
/// operation, dimensions, kind, unit and level.
#[test]
fn the_docs_table_is_the_catalogue() {
    let (java, _) = docs_tables();
    let rows = java;
    assert_eq!(rows.len(), CATALOGUE.len(), "one row per catalogue entry");
    for (row, spec) in rows.iter().zip(CATALOGUE) {
        assert_eq!(row[0], format!("`{}`", spec.name));
        let kind = match spec.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        assert!(row[1].starts_with(kind), "{row:?}");
        assert!(
            row[1].ends_with(&format!("{:?}", spec.unit)),
            "{row:?} unit {:?}",
            spec.unit
        );
        let mut dims = vec![format!("`Operation={}`", spec.operation)];
        dims.extend(spec.dimensions[1..].iter().map(|d| format!("`{d}`")));
        assert_eq!(row[2], dims.join(", "), "{}", spec.name);
        let level = match spec.level {
            MetricsLevel::Summary => "SUMMARY",
            _ => "DETAILED",
        };
        assert_eq!(row[3], level, "{}", spec.name);
    }
}

/// The rows of the two tables of METRICS.md: the metrics (before the `## Prometheus` heading)
/// and their Prometheus names (after it).
fn docs_tables() -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let doc = include_str!("METRICS.md");
    let (java, prometheus) = doc
        .split_once("\n## Prometheus")
        .expect("a `## Prometheus` section");
    let rows = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .collect()
    };
    (rows(java), rows(prometheus))
}

/// The docs' Prometheus table lists the catalogue, in its order, with each metric's
/// Prometheus name, labels, type and unit as [`MetricSpec::prometheus`] defines them.
#[test]
fn the_docs_prometheus_table_is_the_catalogue() {
    let (_, rows) = docs_tables();
    assert_eq!(rows.len(), CATALOGUE.len(), "one row per catalogue entry");
    for (row, spec) in rows.iter().zip(CATALOGUE) {
        assert_eq!(row.len(), 6, "{row:?}");
        assert_eq!(row[0], format!("`{}`", spec.name), "{row:?}");
        let mut dims = vec![format!("`Operation={}`", spec.operation)];
        dims.extend(spec.dimensions[1..].iter().map(|d| format!("`{d}`")));
        assert_eq!(row[1], dims.join(", "), "{row:?}");
        assert_eq!(row[2], format!("`{}`", spec.prometheus.name), "{row:?}");
        let labels: Vec<String> = spec
            .prometheus_labels()
            .into_iter()
            .map(|l| match l {
                names::PROMETHEUS_OPERATION => format!("`{l}=\"{}\"`", spec.operation),
                names::PROMETHEUS_OUTCOME => format!(
                    "`{l}` (`{}`, `{}`)",
                    names::OUTCOME_SUCCESS,
                    names::OUTCOME_FAILURE
                ),
                l => format!("`{l}`"),
            })
            .collect();
        assert_eq!(row[3], labels.join(", "), "{row:?}");
        assert_eq!(row[4], spec.prometheus.kind.type_name(), "{row:?}");
        assert_eq!(row[5], spec.prometheus_unit(), "{row:?}");
    }
}

/// Every Prometheus name is the prefix's, snake_case, unique, and follows the conventions:
/// counters end in `_total` (and nothing else does), durations and lags in `_seconds`.
#[test]
fn prometheus_names_follow_the_conventions() {
    let mut seen = BTreeSet::new();
    for spec in CATALOGUE {
        let p = spec.prometheus;
        assert!(seen.insert(p.name), "{} twice", p.name);
        assert!(p.name.starts_with(names::PROMETHEUS_PREFIX), "{}", p.name);
        assert!(
            p.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{}",
            p.name
        );
        let counter = p.kind.type_name() == "counter";
        assert_eq!(p.name.ends_with("_total"), counter, "{}", p.name);
        if spec.prometheus_unit() == "seconds" {
            assert!(p.name.ends_with("_seconds"), "{}", p.name);
        }
        if spec.prometheus_unit() == "bytes" {
            assert!(p.name.ends_with("_bytes_total"), "{}", p.name);
        }
        // Java's 1/0 outcomes are counters by outcome; every other histogram stays one.
        let outcome = spec.kind == MetricKind::Histogram && spec.unit == metrics::Unit::Count;
        assert_eq!(
            p.kind == names::PrometheusKind::Outcomes,
            outcome,
            "{}",
            p.name
        );
        if let names::PrometheusKind::Histogram { buckets } = p.kind {
            assert!(!buckets.is_empty() && buckets.windows(2).all(|w| w[0] < w[1]));
        }
    }
    for dim in names::DIMENSIONS {
        let label = names::prometheus_label(dim).unwrap();
        assert!(label.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    }
}

#[test]
fn metrics_levels_are_the_java_ones() {
    use MetricsLevel::*;
    assert_eq!(MetricsLevel::from_name("summary"), Some(Summary));
    assert_eq!(MetricsLevel::from_name("DETAILED"), Some(Detailed));
    assert_eq!(MetricsLevel::from_name("None"), Some(None));
    assert_eq!(MetricsLevel::from_name("ALL"), Option::None);
    assert!(Detailed.includes(Summary) && Detailed.includes(Detailed));
    assert!(Summary.includes(Summary) && !Summary.includes(Detailed));
    assert!(!None.includes(Summary));
    assert_eq!(
        MetricsLevel::of_facade_level(&metrics::Level::INFO),
        Summary
    );
    assert_eq!(
        MetricsLevel::of_facade_level(&metrics::Level::DEBUG),
        Detailed
    );
}

/// The lines of a Prometheus page that belong to `shard`.
#[cfg(feature = "prometheus")]
fn series_of<'a>(page: &'a str, shard: &str) -> Vec<&'a str> {
    let label = format!("{}=\"{shard}\"", names::PROMETHEUS_SHARD_ID);
    page.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&label))
        .collect()
}

/// Prometheus: every series of a shard this worker no longer holds (counters and histograms
/// too, not only gauges) leaves the scrape within a bounded time; a shard the worker still
/// holds keeps all its series however long it stays idle.
#[cfg(feature = "prometheus")]
#[tokio::test(start_paused = true)]
async fn prometheus_forgets_the_shards_no_longer_held_and_keeps_the_idle_held_ones() {
    let (endpoint, recorder) = super::PrometheusEndpoint::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let stream = InMemoryStream::new("s", 2);
    let mut on = BTreeSet::new();
    for i in 0.. {
        on.insert(stream.put(&format!("pk-{i}"), b"x").0);
        if on.len() == 2 {
            break;
        }
    }
    let store = InMemoryLeaseStore::new();
    let (_, factory) = Checkpointing::factory(true);
    let (handle, task) = start(&stream, &store, "w", factory);
    let processed = |shard: &str| {
        series_of(&endpoint.render(), shard).iter().any(|l| {
            l.starts_with(&format!(
                "{}{{",
                names::PT_RECORDS_PROCESSED.prometheus.name
            ))
        })
    };
    wait_for("records processed on both shards", || {
        processed(S0) && processed(S1)
    })
    .await;

    // Another worker takes S0 and keeps it (its counter moves as a live owner's would).
    let intruder = tokio::spawn({
        let store = store.clone();
        async move {
            loop {
                store.with_table(|t| {
                    let l = t.get_mut(S0).unwrap();
                    l.owner = Some("intruder".into());
                    l.counter += 1;
                });
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    wait_for("S0 lost", || !handle.held_shards().contains(S0)).await;
    let held_before = series_of(&endpoint.render(), S1).len();

    // Long past any bound, with no records at all: S1 is held but idle.
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    assert!(!handle.held_shards().contains(S0), "the intruder kept S0");
    assert!(handle.held_shards().contains(S1));
    let page = endpoint.render();
    let gone = series_of(&page, S0);
    assert!(
        gone.is_empty(),
        "series of a shard no longer held are still scraped: {gone:#?}"
    );
    let kept = series_of(&page, S1);
    let count = |spec: &MetricSpec| format!("{}_count", spec.prometheus.name);
    for (name, kind) in [
        (
            names::PT_RECORDS_PROCESSED.prometheus.name.to_string(),
            "counter",
        ),
        (
            names::PT_DATA_BYTES_PROCESSED.prometheus.name.to_string(),
            "counter",
        ),
        (count(&names::PT_TIME), "histogram"),
        (count(&names::PT_PROCESS_RECORDS_TIME), "histogram"),
        (
            names::PT_MILLIS_BEHIND_LATEST.prometheus.name.to_string(),
            "gauge",
        ),
    ] {
        assert!(
            kept.iter().any(|l| l.starts_with(&format!("{name}{{"))),
            "the idle held shard lost its {kind} {name}: {kept:#?}"
        );
    }
    assert!(
        kept.len() >= held_before,
        "the held shard had {held_before} series, now {}",
        kept.len()
    );
    // One page in the text format: every family announced once, the shard's and the
    // worker's together.
    let mut families = BTreeSet::new();
    for l in page.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(families.insert(l.split(' ').nth(2)), "announced twice: {l}");
    }
    for spec in [names::PT_TIME, names::RENEW_TIME] {
        assert!(
            page.lines().any(|l| l.starts_with(&count(&spec))),
            "no {}: {page}",
            count(&spec)
        );
    }
    intruder.abort();
    handle.request_shutdown();
    task.await.unwrap().unwrap();
}

/// A multi-stream lease's metrics: `ShardId` the bare shard id, `StreamId` its stream (the
/// polling fetcher's metrics, shared with its consumer, too).
#[test]
fn a_multi_stream_shard_has_its_stream_as_a_dimension() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let m =
        crate::telemetry::ShardMetrics::new("123456789012:orders:1600000000:shardId-000000000001");
    m.task(true, std::time::Duration::from_millis(3));
    m.get_records(true, std::time::Duration::from_millis(3));
    m.redelivery(names::CAUSE_CONSUMER_PANIC);
    let seen = snapshot(&recorder);
    assert_eq!(
        seen.len(),
        5,
        "{:?}",
        seen.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for s in &seen {
        assert_eq!(
            s.labels[names::SHARD_ID],
            "shardId-000000000001",
            "{}",
            s.name
        );
        assert_eq!(
            s.labels[names::STREAM_ID],
            "123456789012:orders:1600000000",
            "{}",
            s.name
        );
    }
    let single = crate::telemetry::ShardMetrics::new("shardId-000000000001");
    single.task(true, std::time::Duration::from_millis(3));
    assert!(snapshot(&recorder)
        .iter()
        .any(|s| !s.labels.contains_key(names::STREAM_ID)));
}

/// A sample line of a Prometheus page: its name, labels and value.
#[cfg(feature = "prometheus")]
fn sample(line: &str) -> (&str, BTreeMap<&str, &str>, f64) {
    let (series, value) = line.rsplit_once(' ').expect("a value");
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}').expect("labels end")),
        None => (series, ""),
    };
    let labels = labels
        .split("\",")
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once("=\"").expect("label=\"value\"");
            (k, v.trim_end_matches('"'))
        })
        .collect();
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().expect("a number"),
    };
    (name, labels, value)
}

/// Prometheus: [`run_through_every_metric`] scraped is every metric of the catalogue under
/// its Prometheus name only (prefix `kcl_`, nothing un-prefixed), with its `# TYPE`, its
/// snake_case labels, its buckets, both outcomes, and values that follow from what happened.
#[cfg(feature = "prometheus")]
#[tokio::test(start_paused = true)]
async fn prometheus_serves_every_metric_under_its_prometheus_name_labels_and_type() {
    let (endpoint, recorder) = super::PrometheusEndpoint::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let _guard = metrics::set_default_local_recorder(&recorder);
    super::describe();
    let put = run_through_every_metric().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let page = endpoint.render();

    // Families: every `# HELP` and `# TYPE` is the prefix's.
    let mut types = BTreeMap::new();
    for l in page.lines().filter(|l| l.starts_with('#')) {
        let mut words = l.split(' ').skip(1);
        let (what, name) = (words.next().unwrap(), words.next().unwrap());
        assert!(name.starts_with(names::PROMETHEUS_PREFIX), "{l}");
        if what == "TYPE" {
            types.insert(name, words.next().unwrap());
        }
    }
    let samples: Vec<_> = page
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(sample)
        .collect();
    for (name, labels, _) in &samples {
        assert!(name.starts_with(names::PROMETHEUS_PREFIX), "{name}");
        for k in labels.keys() {
            assert!(
                k.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}: label {k}"
            );
        }
    }
    // No Java label or summary in any series (`# HELP` names the CloudWatch metric).
    for l in page.lines().filter(|l| !l.starts_with('#')) {
        for java in ["Operation=", "ShardId=", "WorkerIdentifier=", "quantile="] {
            assert!(!l.contains(java), "{java} served: {l}");
        }
    }

    for spec in CATALOGUE {
        let p = spec.prometheus;
        assert_eq!(
            types.get(p.name).copied(),
            Some(p.kind.type_name()),
            "# TYPE of {}",
            p.name
        );
        let of_family: Vec<_> = samples
            .iter()
            .filter(|(name, _, _)| match p.kind {
                names::PrometheusKind::Histogram { .. } => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(p.name)),
                _ => *name == p.name,
            })
            .collect();
        assert!(!of_family.is_empty(), "no sample of {}", p.name);
        let want: BTreeSet<&str> = spec.prometheus_labels().into_iter().collect();
        for (name, labels, _) in &of_family {
            let keys: BTreeSet<&str> = labels.keys().copied().filter(|k| *k != "le").collect();
            assert_eq!(keys, want, "labels of {name}");
            assert_eq!(
                labels[names::PROMETHEUS_OPERATION],
                spec.operation,
                "{name}"
            );
        }
        match p.kind {
            names::PrometheusKind::Histogram { buckets } => {
                let series = of_family[0].1.clone();
                let les: Vec<f64> = of_family
                    .iter()
                    .filter(|(name, labels, _)| {
                        name.ends_with("_bucket")
                            && labels
                                .iter()
                                .all(|(k, v)| *k == "le" || series.get(k) == Some(v))
                    })
                    .map(|(_, labels, _)| sample(&format!("x {}", labels["le"])).2)
                    .collect();
                let mut want = buckets.to_vec();
                want.push(f64::INFINITY);
                assert_eq!(les, want, "buckets of {}", p.name);
            }
            names::PrometheusKind::Outcomes => {
                for (_, labels, _) in &of_family {
                    let mut other = labels.clone();
                    let outcome = other[names::PROMETHEUS_OUTCOME];
                    let flip = if outcome == names::OUTCOME_SUCCESS {
                        names::OUTCOME_FAILURE
                    } else {
                        names::OUTCOME_SUCCESS
                    };
                    other.insert(names::PROMETHEUS_OUTCOME, flip);
                    assert!(
                        of_family.iter().any(|(_, l, _)| *l == other),
                        "{} {labels:?}: no {flip} series",
                        p.name
                    );
                }
            }
            _ => {}
        }
    }

    // Values.
    let value = |name: &str, with: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|(n, labels, _)| {
                *n == name && with.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|(_, _, v)| v)
            .sum()
    };
    let processed = value(names::PT_RECORDS_PROCESSED.prometheus.name, &[]);
    assert!(processed >= put as f64, "{processed} of {put}");
    let s0 = (names::PROMETHEUS_SHARD_ID, S0);
    assert_eq!(
        value(
            names::PT_BATCH_REDELIVERIES.prometheus.name,
            &[s0, (names::PROMETHEUS_CAUSE, names::CAUSE_PROCESSOR_ERROR)]
        ),
        1.0
    );
    assert_eq!(
        value(
            names::PT_SUCCESS.prometheus.name,
            &[s0, (names::PROMETHEUS_OUTCOME, names::OUTCOME_FAILURE)]
        ),
        1.0,
        "the first batch of S0 failed once"
    );
    assert_eq!(
        value(names::RELEASE_RELEASED.prometheus.name, &[]),
        3.0,
        "three leases released on shutdown"
    );
    assert_eq!(value(names::TAKE_TOTAL_LEASES.prometheus.name, &[]), 3.0);
}

/// Prometheus: milliseconds are served as seconds (histogram sums and buckets, the lag gauge),
/// seconds stay seconds, a 1/0 outcome is a counter per outcome (both from the first call),
/// every metric has a `# HELP`, and an application's own metric is served as recorded.
#[cfg(feature = "prometheus")]
#[tokio::test(start_paused = true)]
async fn prometheus_serves_seconds_buckets_and_outcome_counters() {
    let (endpoint, recorder) = super::PrometheusEndpoint::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let _guard = metrics::set_default_local_recorder(&recorder);
    super::describe();
    let shard = crate::telemetry::ShardMetrics::new(S0);
    shard.get_records(true, Duration::from_millis(250));
    shard.get_records(false, Duration::ZERO);
    shard.batch_received(Some(1500));
    shard.since_last_checkpoint(Duration::from_secs(90));
    let worker = crate::telemetry::WorkerMetrics::new("w");
    worker.renewal(true, Duration::from_millis(20));
    metrics::counter!("my_app_events_total").increment(2);
    tokio::time::sleep(Duration::from_secs(6)).await;

    let page = endpoint.render();
    let has = |line: &str| assert!(page.lines().any(|l| l == line), "no {line} in\n{page}");
    let sl = format!("operation=\"ProcessTask\",shard_id=\"{S0}\"");
    has("# TYPE kcl_get_records_duration_seconds histogram");
    has(&format!(
        "kcl_get_records_duration_seconds_bucket{{{sl},le=\"0.1\"}} 1"
    ));
    has(&format!(
        "kcl_get_records_duration_seconds_bucket{{{sl},le=\"0.25\"}} 2"
    ));
    has(&format!(
        "kcl_get_records_duration_seconds_bucket{{{sl},le=\"+Inf\"}} 2"
    ));
    has(&format!(
        "kcl_get_records_duration_seconds_sum{{{sl}}} 0.25"
    ));
    has(&format!("kcl_get_records_duration_seconds_count{{{sl}}} 2"));
    has("# TYPE kcl_get_records_calls_total counter");
    has(&format!(
        "kcl_get_records_calls_total{{{sl},outcome=\"success\"}} 1"
    ));
    has(&format!(
        "kcl_get_records_calls_total{{{sl},outcome=\"failure\"}} 1"
    ));
    has("# TYPE kcl_behind_latest_seconds gauge");
    has(&format!("kcl_behind_latest_seconds{{{sl}}} 1.5"));
    has(&format!("kcl_since_last_checkpoint_seconds{{{sl}}} 90"));
    let wl = "operation=\"RenewAllLeases\",worker_identifier=\"w\"";
    has(&format!(
        "kcl_renew_lease_calls_total{{{wl},outcome=\"success\"}} 1"
    ));
    has(&format!(
        "kcl_renew_lease_calls_total{{{wl},outcome=\"failure\"}} 0"
    ));
    has(&format!(
        "kcl_renew_lease_duration_seconds_bucket{{{wl},le=\"0.01\"}} 0"
    ));
    has(&format!(
        "kcl_renew_lease_duration_seconds_bucket{{{wl},le=\"0.025\"}} 1"
    ));
    has(&format!(
        "kcl_renew_lease_duration_seconds_sum{{{wl}}} 0.02"
    ));
    for family in page.lines().filter_map(|l| l.strip_prefix("# TYPE kcl_")) {
        let name = family.split(' ').next().unwrap();
        assert!(
            page.lines()
                .any(|l| l.starts_with(&format!("# HELP kcl_{name} "))),
            "no # HELP of kcl_{name}"
        );
    }
    has("my_app_events_total 2");
    drop((shard, worker));
}
