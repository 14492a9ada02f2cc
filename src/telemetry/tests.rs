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
/// away (lost, then taken back), shard syncs and a graceful shutdown: every metric of the
/// catalogue appears with its kind, unit and exactly its dimensions.
#[tokio::test(start_paused = true)]
async fn every_metric_is_emitted_with_its_name_unit_and_dimensions() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);

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
    let rows: Vec<Vec<String>> = include_str!("METRICS.md")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
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
    let label = format!("{}=\"{shard}\"", names::SHARD_ID);
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
        series_of(&endpoint.render(), shard)
            .iter()
            .any(|l| l.starts_with(&format!("{}{{", names::RECORDS_PROCESSED)))
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
    for (name, kind) in [
        (names::RECORDS_PROCESSED, "counter"),
        (names::DATA_BYTES_PROCESSED, "counter"),
        ("Time_count", "histogram"),
        ("RecordProcessor_processRecords_Time_count", "histogram"),
        (names::MILLIS_BEHIND_LATEST, "gauge"),
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
    // One page in the text format: every family announced once, with the samples of the
    // shards and of the worker (`Time` of ProcessTask and of RenewAllLeases) together.
    let mut families = BTreeSet::new();
    for l in page.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(families.insert(l.split(' ').nth(2)), "announced twice: {l}");
    }
    let times: BTreeSet<_> = page
        .lines()
        .filter(|l| l.starts_with("Time_count{"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(
        times.contains(names::OP_PROCESS_TASK) && times.contains(names::OP_RENEW_ALL_LEASES),
        "{times:?}"
    );
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
