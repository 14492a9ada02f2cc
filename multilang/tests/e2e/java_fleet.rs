//! Rolling-fleet scenarios: several MultiLangDaemons (the real Java KCL 3.1.3 daemon from the
//! `kclpy-ext` wheel, and `kcl-multilang`) share one 4-shard stream and one lease table while
//! workers join and leave. Every worker runs the recording processor
//! (`samples/python/recording_processor.py`, amazon-kclpy) into ONE shared output file, with
//! `KCL_SAMPLE_WORKER=<worker id>`, so each delivery is attributed to a worker, a processor
//! incarnation (its pid) and a time.
//!
//! The harness:
//! * [`Fleet`]: the scenario driver. It creates the stream, runs a [`Producer`] (numbered
//!   records at a steady rate, every put kept with its shard and sequence number), starts
//!   and stops (SIGTERM) workers of either kind ([`Worker`]: [`JavaWorker`], [`RustWorker`],
//!   both with [`fleet_settings`]), waits with bounded, named conditions ([`Fleet::until`]),
//!   and finally builds a [`Report`];
//! * [`LeasePoller`]: scans the lease table, `<app>-CoordinatorState` and
//!   `<app>-WorkerMetricStats` every 500 ms and keeps every [`Sample`] (per lease
//!   `leaseOwner`, `checkpointOwner`, `leaseCounter`; the leader lock's owner; the client
//!   version; the workers with a metrics row; any item of another kind);
//! * [`Timeline`] (from the samples): owner spans per lease, owner changes, leases that went
//!   back to a former owner, hand-offs in flight, when a set of workers first owned every
//!   lease, the leader's spans, the balance at the end;
//! * [`Recording`] (from the output file): processor incarnations (worker, pid, start,
//!   batches, how they ended), lost and unexpected records, order within each incarnation,
//!   duplicates with their cause ([`Duplicate`]), incarnations of different workers
//!   delivering the same shard at the same time ([`Overlap`]), per-shard delivery gaps;
//! * [`Report`]: all of the above plus the scenario's own figures, printed with `eprintln!`
//!   (copy the numbers into BENCHMARKS.md), with assertion helpers.
//!
//! At most 4 worker JVMs run at once (plus DynamoDB Local's): JVM start is slow on a 2-core
//! machine. Run one scenario alone (`KCL_E2E_KEEP=1` keeps the logs and the recording):
//! `cargo test -p kinesis-client-multilang --test e2e java_fleet -- --nocapture`.
//!
//! What the Java KCL 3.1.3 does on the local services (DynamoDB Local 3.3.1, kinesis-mock),
//! from the workers' logs:
//! * Native 3.x mode works on DynamoDB Local: the `-CoordinatorState` and
//!   `-WorkerMetricStats` tables are created, the GSI `LeaseOwnerToLeaseKeyIndex` too (the
//!   first worker logs "GSI status is not active, trying again in 10s", then finds it ACTIVE),
//!   the lock client's conditional writes elect a leader ("Worker : java-a is new leader") and
//!   let another worker take an expired lock, and graceful hand-offs complete. Nothing needed a
//!   work-around.
//! * Both first workers find the lease table empty, both create leases, and both race to
//!   create `-WorkerMetricStats`: the loser logs "Caught exception when initializing
//!   LeaseCoordinator ... ResourceInUseException: Cannot create preexisting table" and
//!   succeeds at its second attempt a second later.
//! * No CPU metric off EC2/ECS/EKS ("WorkerMetricsSelector - Did not find an operating range
//!   metadata provider."): every worker is a default-metric worker, balanced by lease
//!   throughput. With 4 near-equal leases the variance balancing often moves nothing: "Leases
//!   taken from worker : java-a are : [shardId-000000000003]" followed by "No worker to assign
//!   anymore in this iteration due to hitting average values"; it runs every third LAM run
//!   (60 s), so a joining worker waits 30 s to minutes for its first lease.
//! * SIGTERM: see [`fleet_settings`] (no shutdown grace by default: no lock release, no
//!   `shutdownRequested`). The leader lock of a stopped leader is taken over only after its
//!   120 s lease duration; the new leader's LAM reassigns the stopped workers' leases one or
//!   two 20 s runs later.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use testkit::clients::KclPy;
use testkit::java_kcl::{self, JavaKcl, MultiLangDaemon};
use testkit::{LocalAws, PutRecord, PutResult};

use crate::harness::{
    command_line, kclpy, python_env, recording_processor, seq_cmp, Daemon, Line, Output, Props,
    Scratch,
};

/// `failoverTimeMillis` of every fleet worker.
pub const FAILOVER_MS: i64 = 10_000;
/// How often the [`LeasePoller`] samples the tables.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// Milliseconds since the Unix epoch: the clock of the recording processor's stamps.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `12.3s`.
fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The settings every fleet worker gets, Java or Rust, beyond its identity and endpoints:
/// native 3.x mode, 10 s failover, polling from TRIM_HORIZON, no CloudWatch. `kcl-multilang`
/// accepts the 3.x keys (for now it logs them as not implemented).
///
/// `shardSyncIntervalMillis = 5000`: the Java worker that creates the leases on the empty table
/// sleeps `shardSyncIntervalMillis` (default 60 s) after that first shard sync
/// (`ShardSyncTask`'s idle time) before it initializes its 3.x components; with 5 s the start
/// phase does not depend on which worker won that race. The stream is never resharded here.
///
/// Not set: `shutdownGraceMillis`. The Java MultiLangDaemon's default is 0, so its shutdown
/// hook's `startGracefulShutdown().get(0 ms)` fails at once ("Encountered an error during
/// shutdown. java.util.concurrent.TimeoutException") and the JVM exits about 0.3 s after
/// SIGTERM without `shutdownRequested`, without releasing the leader lock and without touching
/// its leases. `kcl-multilang` workers get [`Props::new`]'s 15 s.
pub fn fleet_settings() -> Vec<(&'static str, String)> {
    vec![
        ("shardSyncIntervalMillis", "5000".into()),
        ("clientVersionConfig", "CLIENT_VERSION_CONFIG_3X".into()),
        ("failoverTimeMillis", FAILOVER_MS.to_string()),
        ("retrievalMode", "POLLING".into()),
        ("initialPositionInStream", "TRIM_HORIZON".into()),
        ("idleTimeBetweenReadsInMillis", "500".into()),
        ("maxRecords", "1000".into()),
        ("parentShardPollIntervalMillis", "500".into()),
        ("metricsLevel", "NONE".into()),
    ]
}

// ------------------------------------------------------------------------------------------
// Workers
// ------------------------------------------------------------------------------------------

/// Which daemon a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The Java KCL 3.1.3 MultiLangDaemon.
    Java,
    /// `kcl-multilang`.
    Rust,
}

/// What a worker needs to know about its fleet.
pub struct FleetSetup {
    pub aws: Arc<LocalAws>,
    pub kclpy: KclPy,
    pub stream: String,
    pub app: String,
    /// The shared recording file.
    pub output: PathBuf,
    /// The scratch directory (one sub-directory per worker).
    pub dir: PathBuf,
    /// [`fleet_settings`], possibly changed by the scenario.
    pub settings: Vec<(&'static str, String)>,
    java: Option<JavaKcl>,
}

impl FleetSetup {
    /// `executableName`: the recording processor under amazon-kclpy's Python.
    pub fn executable(&self) -> String {
        command_line(&[&self.kclpy.python, &recording_processor()])
    }

    fn region(&self) -> String {
        self.aws
            .sdk_config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into())
    }

    fn worker_dir(&self, id: &str) -> Result<PathBuf> {
        assert!(
            !id.contains(' ') && !id.is_empty(),
            "worker ids are written space-separated: {id:?}"
        );
        let dir = self.dir.join(id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    async fn java_kcl(&mut self) -> Result<JavaKcl> {
        if self.java.is_none() {
            self.java = Some(tokio::task::spawn_blocking(java_kcl::java_kcl).await??);
        }
        Ok(self.java.clone().expect("just set"))
    }
}

/// A Java MultiLangDaemon worker: log in `<dir>/<id>/java.log`.
pub struct JavaWorker {
    pub id: String,
    daemon: MultiLangDaemon,
}

impl JavaWorker {
    /// Writes `<dir>/<id>/java.properties` and starts the daemon (from the test's thread).
    pub async fn start(setup: &mut FleetSetup, id: &str) -> Result<JavaWorker> {
        let kcl = setup.java_kcl().await?;
        let dir = setup.worker_dir(id)?;
        let mut pairs: Vec<(&str, String)> = vec![
            ("executableName", setup.executable()),
            ("processingLanguage", "python/3".into()),
            ("streamName", setup.stream.clone()),
            ("applicationName", setup.app.clone()),
            ("workerId", id.into()),
            (
                "AwsCredentialsProvider",
                "EnvironmentVariableCredentialsProvider".into(),
            ),
            ("regionName", setup.region()),
            ("kinesisEndpoint", setup.aws.kinesis_endpoint().into()),
            ("dynamoDBEndpoint", setup.aws.dynamodb_endpoint().into()),
        ];
        pairs.extend(setup.settings.iter().cloned());
        let properties = dir.join("java.properties");
        std::fs::write(&properties, java_kcl::properties_text(&pairs))?;
        let mut env = java_kcl::credentials_env(&setup.aws.sdk_config()).await?;
        env.push((
            "PYTHONPATH".into(),
            setup.kclpy.pythonpath_env().to_string_lossy().into_owned(),
        ));
        env.push((
            "KCL_SAMPLE_OUTPUT".into(),
            setup.output.display().to_string(),
        ));
        env.push(("KCL_SAMPLE_WORKER".into(), id.into()));
        let daemon = MultiLangDaemon::start(&kcl, &properties, &dir, &env, &dir.join("java.log"))?;
        Ok(JavaWorker {
            id: id.into(),
            daemon,
        })
    }
}

/// A `kcl-multilang` worker: log in `<dir>/<id>/daemon.log`.
pub struct RustWorker {
    pub id: String,
    daemon: Daemon,
}

// Not used by the Java-only baseline; the mixed-fleet scenarios start Rust workers.
#[allow(dead_code)]
impl RustWorker {
    /// Writes `<dir>/<id>/app.properties` (the e2e defaults of [`Props::new`], then the same
    /// keys a Java worker gets) and starts the daemon.
    pub fn start(setup: &FleetSetup, id: &str) -> Result<RustWorker> {
        let dir = setup.worker_dir(id)?;
        let mut props = Props::new(&setup.aws, &setup.stream, &setup.app, &setup.executable())
            .set("workerId", id);
        for (k, v) in &setup.settings {
            props = props.set(k, v);
        }
        let properties = props.write(&dir.join("app.properties"))?;
        let mut env = python_env(&setup.kclpy, &setup.output);
        env.push(("KCL_SAMPLE_WORKER", OsString::from(id)));
        let daemon = Daemon::start(&dir, &properties, &env)?;
        Ok(RustWorker {
            id: id.into(),
            daemon,
        })
    }
}

/// A worker of either kind.
#[allow(dead_code)]
pub enum Worker {
    Java(JavaWorker),
    Rust(RustWorker),
}

impl Worker {
    pub fn id(&self) -> &str {
        match self {
            Worker::Java(w) => &w.id,
            Worker::Rust(w) => &w.id,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Worker::Java(_) => Kind::Java,
            Worker::Rust(_) => Kind::Rust,
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            Worker::Java(w) => w.daemon.pid(),
            Worker::Rust(w) => w.daemon.pid,
        }
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        match self {
            Worker::Java(w) => w.daemon.exited(),
            Worker::Rust(w) => w.daemon.exited(),
        }
    }

    /// SIGTERM, then waits for the exit; returns the status and how long the exit took.
    pub async fn terminate(&mut self, within: Duration) -> Result<(ExitStatus, Duration)> {
        match self {
            Worker::Java(w) => w.daemon.terminate(within).await,
            Worker::Rust(w) => w.daemon.terminate(within).await,
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        match self {
            Worker::Java(w) => w.daemon.log(),
            Worker::Rust(w) => w.daemon.log(),
        }
    }
}

/// One worker's life, for the report.
#[derive(Debug, Clone)]
pub struct WorkerRun {
    pub id: String,
    pub kind: Kind,
    pub started: i64,
    pub sigterm: Option<i64>,
    pub exited: Option<i64>,
    pub status: Option<String>,
}

// ------------------------------------------------------------------------------------------
// Producer
// ------------------------------------------------------------------------------------------

/// A record that was put, and when.
#[derive(Debug, Clone)]
pub struct Put {
    pub at: i64,
    pub result: PutResult,
}

/// Puts numbered records (`fleet-<i>`, partition key `pk-<i>`: spread over the shards) at a
/// steady rate, in batches every 250 ms, until stopped.
pub struct Producer {
    puts: Arc<Mutex<Vec<Put>>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Producer {
    pub fn start(kinesis: aws_sdk_kinesis::Client, stream: String, per_second: usize) -> Producer {
        let puts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let per_tick = per_second.div_ceil(4).max(1);
        let task = tokio::spawn({
            let puts = puts.clone();
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut next = 0usize;
                while !stop.load(AtomicOrdering::SeqCst) {
                    tick.tick().await;
                    let records = (next..next + per_tick)
                        .map(|i| PutRecord {
                            partition_key: format!("pk-{i}"),
                            data: format!("fleet-{i:06}").into_bytes(),
                        })
                        .collect();
                    let at = unix_ms();
                    let put = testkit::put_records(&kinesis, &stream, records)
                        .await
                        .with_context(|| format!("the producer's put of records {next}.."))?;
                    next += per_tick;
                    puts.lock()
                        .unwrap()
                        .extend(put.into_iter().map(|result| Put { at, result }));
                }
                Ok(())
            }
        });
        Producer {
            puts,
            stop,
            task: Some(task),
        }
    }

    /// Everything put so far.
    pub fn puts(&self) -> Vec<Put> {
        self.puts.lock().unwrap().clone()
    }

    /// True if the producer task ended without being stopped (a put failed).
    pub fn failed(&self) -> bool {
        !self.stop.load(AtomicOrdering::SeqCst)
            && self.task.as_ref().map(|t| t.is_finished()).unwrap_or(false)
    }

    /// Stops putting (after the batch in flight) and returns every put.
    pub async fn stop(&mut self) -> Result<Vec<Put>> {
        self.stop.store(true, AtomicOrdering::SeqCst);
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| anyhow!("the producer task panicked: {e}"))??;
        }
        Ok(self.puts())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ------------------------------------------------------------------------------------------
// Lease poller
// ------------------------------------------------------------------------------------------

/// One lease as the poller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub owner: Option<String>,
    pub checkpoint_owner: Option<String>,
    pub counter: i64,
    pub checkpoint: Option<String>,
}

/// One scan of the tables of an application.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// When the scan started.
    pub at: i64,
    /// Lease items, by `leaseKey`.
    pub leases: BTreeMap<String, LeaseRow>,
    /// `ownerName` of the `Leader` lock item (`<app>-CoordinatorState`, or the lease table).
    pub leader: Option<String>,
    /// `cv` of the `Migration3.0` item.
    pub client_version: Option<String>,
    /// Worker id → `lut` (epoch seconds) of its WorkerMetricStats row.
    pub metrics: BTreeMap<String, i64>,
    /// Items of no known kind: `<table>/<key>` → their attribute names.
    pub other: BTreeMap<String, String>,
    /// Scans that failed (other than a table that does not exist yet).
    pub errors: Vec<String>,
}

/// Scans the lease table and the 3.x coordinator-state and worker-metrics tables every
/// [`POLL_EVERY`] in a background task, keeping every sample.
pub struct LeasePoller {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

type Item = std::collections::HashMap<String, AttributeValue>;

fn s_attr(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        Some(AttributeValue::N(n)) => Some(n.clone()),
        _ => None,
    }
}

fn n_attr(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.split('.').next().and_then(|n| n.parse().ok()),
        Some(AttributeValue::S(s)) => s.parse().ok(),
        _ => None,
    }
}

/// Every item of `table` (consistent reads); empty if the table does not exist (yet).
pub async fn scan_table(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> std::result::Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let out = ddb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await;
        match out {
            Ok(out) => {
                items.extend(out.items().iter().cloned());
                match out.last_evaluated_key() {
                    Some(k) if !k.is_empty() => start = Some(k.clone()),
                    _ => return Ok(items),
                }
            }
            Err(e) => {
                let missing = e
                    .as_service_error()
                    .map(|s| s.is_resource_not_found_exception())
                    .unwrap_or(false);
                return if missing {
                    Ok(items)
                } else {
                    Err(format!(
                        "scan {table}: {}",
                        aws_sdk_dynamodb::error::DisplayErrorContext(e)
                    ))
                };
            }
        }
    }
}

/// Sorts one item into `sample`: the lock, the migration state, a metrics row, a lease, or
/// "other".
fn classify(table: &str, item: &Item, sample: &mut Sample) {
    let key = s_attr(item, "leaseKey")
        .or_else(|| s_attr(item, "key"))
        .or_else(|| s_attr(item, "wid"))
        .unwrap_or_else(|| "?".into());
    let entity = s_attr(item, "entityType");
    match entity.as_deref() {
        _ if key == "Leader" || entity.as_deref() == Some("LEADER") => {
            sample.leader = s_attr(item, "ownerName");
        }
        _ if key == "Migration3.0" || entity.as_deref() == Some("CLIENT_VERSION_MIGRATION") => {
            sample.client_version = s_attr(item, "cv");
        }
        _ if item.contains_key("wid") || entity.as_deref() == Some("WORKER_METRIC_STATS") => {
            sample
                .metrics
                .insert(key, n_attr(item, "lut").unwrap_or_default());
        }
        None | Some("LEASE") if item.contains_key("leaseCounter") => {
            sample.leases.insert(
                key,
                LeaseRow {
                    owner: s_attr(item, "leaseOwner"),
                    checkpoint_owner: s_attr(item, "checkpointOwner"),
                    counter: n_attr(item, "leaseCounter").unwrap_or_default(),
                    checkpoint: s_attr(item, "checkpoint"),
                },
            );
        }
        _ => {
            let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
            names.sort_unstable();
            sample
                .other
                .insert(format!("{table}/{key}"), names.join(","));
        }
    }
}

impl LeasePoller {
    /// Starts sampling `app`, `<app>-CoordinatorState` and `<app>-WorkerMetricStats`.
    pub fn start(ddb: aws_sdk_dynamodb::Client, app: &str) -> LeasePoller {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let tables = [
            app.to_string(),
            format!("{app}-CoordinatorState"),
            format!("{app}-WorkerMetricStats"),
        ];
        let task = tokio::spawn({
            let samples = samples.clone();
            async move {
                let mut tick = tokio::time::interval(POLL_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let mut sample = Sample {
                        at: unix_ms(),
                        ..Sample::default()
                    };
                    for table in &tables {
                        match scan_table(&ddb, table).await {
                            Ok(items) => {
                                for item in &items {
                                    classify(table, item, &mut sample);
                                }
                            }
                            Err(e) => sample.errors.push(e),
                        }
                    }
                    samples.lock().unwrap().push(sample);
                }
            }
        });
        LeasePoller { samples, task }
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<Sample> {
        self.samples.lock().unwrap().last().cloned()
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for LeasePoller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------------------------------
// Timeline (lease table history)
// ------------------------------------------------------------------------------------------

/// Consecutive samples in which a lease had the same `leaseOwner` and `checkpointOwner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSpan {
    pub owner: Option<String>,
    pub checkpoint_owner: Option<String>,
    /// First and last sample of the span.
    pub from: i64,
    pub to: i64,
    pub counter_from: i64,
    pub counter_to: i64,
}

/// The samples of a [`LeasePoller`], with what assertions want to know about them.
pub struct Timeline {
    pub samples: Vec<Sample>,
}

impl Timeline {
    pub fn new(samples: Vec<Sample>) -> Timeline {
        Timeline { samples }
    }

    /// Every lease key ever seen.
    pub fn leases(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .flat_map(|s| s.leases.keys().cloned())
            .collect()
    }

    /// The owner spans of `lease`, oldest first.
    pub fn spans(&self, lease: &str) -> Vec<OwnerSpan> {
        let mut out: Vec<OwnerSpan> = Vec::new();
        for s in &self.samples {
            let Some(row) = s.leases.get(lease) else {
                continue;
            };
            match out.last_mut() {
                Some(last)
                    if last.owner == row.owner && last.checkpoint_owner == row.checkpoint_owner =>
                {
                    last.to = s.at;
                    last.counter_to = row.counter;
                }
                _ => out.push(OwnerSpan {
                    owner: row.owner.clone(),
                    checkpoint_owner: row.checkpoint_owner.clone(),
                    from: s.at,
                    to: s.at,
                    counter_from: row.counter,
                    counter_to: row.counter,
                }),
            }
        }
        out
    }

    /// The successive `leaseOwner`s of `lease` (unowned spans left out, repeats merged).
    pub fn owner_sequence(&self, lease: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for span in self.spans(lease) {
            if let Some(o) = span.owner {
                if out.last() != Some(&o) {
                    out.push(o);
                }
            }
        }
        out
    }

    /// How often `lease` changed owner (the first assignment is not a change).
    pub fn owner_changes(&self, lease: &str) -> usize {
        self.owner_sequence(lease).len().saturating_sub(1)
    }

    /// Owners that got `lease` back after it had moved away from them (a lease moving back
    /// and forth).
    pub fn returned_to(&self, lease: &str) -> Vec<String> {
        let seq = self.owner_sequence(lease);
        seq.iter()
            .enumerate()
            .filter(|(i, o)| seq[..*i].contains(o))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Spans of `lease` with a `checkpointOwner` (a graceful hand-off in flight).
    pub fn handoffs(&self, lease: &str) -> Vec<OwnerSpan> {
        self.spans(lease)
            .into_iter()
            .filter(|s| s.checkpoint_owner.is_some())
            .collect()
    }

    /// The first sample at or after `after` in which `worker` owned a lease with no hand-off
    /// in flight.
    pub fn first_owned_by(&self, worker: &str, after: i64) -> Option<i64> {
        self.samples
            .iter()
            .filter(|s| s.at >= after)
            .find(|s| {
                s.leases
                    .values()
                    .any(|l| l.owner.as_deref() == Some(worker) && l.checkpoint_owner.is_none())
            })
            .map(|s| s.at)
    }

    /// The first sample at or after `after` in which every lease (at least one) was owned by
    /// one of `workers`, with no hand-off in flight.
    pub fn all_owned_by(&self, workers: &[&str], after: i64) -> Option<i64> {
        self.samples
            .iter()
            .filter(|s| s.at >= after)
            .find(|s| sample_all_owned_by(s, workers))
            .map(|s| s.at)
    }

    /// `(leader, from, to)` spans of the `Leader` lock's owner.
    pub fn leader_spans(&self) -> Vec<(Option<String>, i64, i64)> {
        let mut out: Vec<(Option<String>, i64, i64)> = Vec::new();
        for s in &self.samples {
            match out.last_mut() {
                Some(last) if last.0 == s.leader => last.2 = s.at,
                _ => out.push((s.leader.clone(), s.at, s.at)),
            }
        }
        out
    }

    /// The first sample at or after `after` in which one of `workers` held the leader lock:
    /// `(time, worker)`.
    pub fn leader_among(&self, workers: &[&str], after: i64) -> Option<(i64, String)> {
        self.samples.iter().filter(|s| s.at >= after).find_map(|s| {
            s.leader
                .as_deref()
                .filter(|l| workers.contains(l))
                .map(|l| (s.at, l.to_string()))
        })
    }

    /// The first sample with a metrics row of `worker`.
    pub fn first_metrics(&self, worker: &str) -> Option<i64> {
        self.samples
            .iter()
            .find(|s| s.metrics.contains_key(worker))
            .map(|s| s.at)
    }

    /// Leases per owner in the last sample.
    pub fn balance_at_end(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        if let Some(s) = self.samples.last() {
            for l in s.leases.values() {
                *out.entry(l.owner.clone().unwrap_or_else(|| "(none)".into()))
                    .or_default() += 1;
            }
        }
        out
    }

    /// The lease's owner at time `at` (the last sample at or before it).
    pub fn owner_at(&self, lease: &str, at: i64) -> Option<String> {
        self.samples
            .iter()
            .take_while(|s| s.at <= at)
            .filter_map(|s| s.leases.get(lease))
            .last()
            .and_then(|l| l.owner.clone())
    }

    /// Every distinct `other` item and scan error seen.
    pub fn oddities(&self) -> (BTreeMap<String, String>, BTreeSet<String>) {
        let mut other = BTreeMap::new();
        let mut errors = BTreeSet::new();
        for s in &self.samples {
            for (k, v) in &s.other {
                other.insert(k.clone(), v.clone());
            }
            errors.extend(s.errors.iter().cloned());
        }
        (other, errors)
    }
}

/// True if every lease (at least one) in `s` is owned by one of `workers`, with no hand-off
/// in flight.
pub fn sample_all_owned_by(s: &Sample, workers: &[&str]) -> bool {
    !s.leases.is_empty()
        && s.leases.values().all(|l| {
            l.checkpoint_owner.is_none()
                && l.owner
                    .as_deref()
                    .map(|o| workers.contains(&o))
                    .unwrap_or(false)
        })
}

// ------------------------------------------------------------------------------------------
// Recording (the shared output file)
// ------------------------------------------------------------------------------------------

/// One processor child: one shard, one worker, one pid.
#[derive(Debug, Clone)]
pub struct Incarnation {
    pub shard: String,
    pub worker: String,
    pub pid: u32,
    /// The starting checkpoint it was initialized with.
    pub start: String,
    pub initialized: i64,
    /// `(time, number of records)` of each batch.
    pub batches: Vec<(i64, usize)>,
    /// Sequence numbers in delivery order.
    pub records: Vec<String>,
    /// How it ended (`lease_lost`, `shutdown_requested`, `shard_ended`, `exit`) and when.
    pub ends: Vec<(String, i64)>,
}

impl Incarnation {
    pub fn first_batch(&self) -> Option<i64> {
        self.batches.first().map(|b| b.0)
    }

    pub fn last_batch(&self) -> Option<i64> {
        self.batches.last().map(|b| b.0)
    }

    /// `worker/pid`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.worker, self.pid)
    }
}

/// One delivered record.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub shard: String,
    pub seq: String,
    pub data: Vec<u8>,
    /// Index into [`Recording::incarnations`].
    pub incarnation: usize,
    pub at: i64,
}

/// A record delivered again.
#[derive(Debug, Clone)]
pub struct Duplicate {
    pub shard: String,
    pub seq: String,
    /// `worker/pid` and time of the earlier and of the repeated delivery.
    pub first: (String, i64),
    pub again: (String, i64),
    /// Why, as far as the timeline tells.
    pub cause: String,
    /// The repeat came from another worker after a planned stop of the first one or after
    /// the lease table moved the lease between them.
    pub after_planned_move: bool,
}

/// Two incarnations of different workers that delivered batches of one shard in overlapping
/// time windows.
#[derive(Debug, Clone)]
pub struct Overlap {
    pub shard: String,
    pub a: String,
    pub b: String,
    pub from: i64,
    pub ms: i64,
}

/// The recording processors' shared output, attributed to workers and incarnations
/// (needs `KCL_SAMPLE_WORKER`: every batch has a `#batch` header).
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub incarnations: Vec<Incarnation>,
    pub deliveries: Vec<Delivery>,
}

impl Recording {
    pub fn read(path: &std::path::Path) -> Recording {
        let out = Output::read(path);
        let mut rec = Recording::default();
        let mut by_pid: BTreeMap<u32, usize> = BTreeMap::new();
        // (incarnation, time, records left) of the batch being read.
        let mut batch: Option<(usize, i64, usize)> = None;
        let arg = |args: &[String], i: usize| args.get(i).cloned().unwrap_or_default();
        for (i, line) in out.lines.iter().enumerate() {
            match line {
                Line::Event { kind, shard, args } => {
                    if let Some((_, _, left)) = batch {
                        assert_eq!(
                            left, 0,
                            "line {i}: event {kind} inside a batch (a batch is one write)"
                        );
                    }
                    match kind.as_str() {
                        "initialize" => {
                            // <startingSeq> <pid> <stream> <worker> <unixMs>
                            assert!(
                                args.len() >= 5,
                                "line {i}: #initialize without worker and time: was the \
                                 processor run with KCL_SAMPLE_WORKER? {args:?}"
                            );
                            let pid: u32 = arg(args, 1).parse().unwrap_or(0);
                            by_pid.insert(pid, rec.incarnations.len());
                            rec.incarnations.push(Incarnation {
                                shard: shard.clone(),
                                worker: arg(args, 3),
                                pid,
                                start: arg(args, 0),
                                initialized: arg(args, 4).parse().unwrap_or(0),
                                batches: Vec::new(),
                                records: Vec::new(),
                                ends: Vec::new(),
                            });
                        }
                        "batch" => {
                            // <pid> <unixMs> <n>
                            let pid: u32 = arg(args, 0).parse().unwrap_or(0);
                            let at: i64 = arg(args, 1).parse().unwrap_or(0);
                            let n: usize = arg(args, 2).parse().unwrap_or(0);
                            let inc = *by_pid.get(&pid).unwrap_or_else(|| {
                                panic!("line {i}: batch of pid {pid} before its #initialize")
                            });
                            rec.incarnations[inc].batches.push((at, n));
                            batch = Some((inc, at, n));
                        }
                        "lease_lost" | "shutdown_requested" | "shard_ended" => {
                            // <pid> <unixMs>
                            let pid: u32 = arg(args, 0).parse().unwrap_or(0);
                            if let Some(&inc) = by_pid.get(&pid) {
                                rec.incarnations[inc]
                                    .ends
                                    .push((kind.clone(), arg(args, 1).parse().unwrap_or(0)));
                            }
                        }
                        "exit" => {
                            // <pid> <unixMs>
                            let pid: u32 = arg(args, 0).parse().unwrap_or(0);
                            if let Some(&inc) = by_pid.get(&pid) {
                                rec.incarnations[inc]
                                    .ends
                                    .push((kind.clone(), arg(args, 1).parse().unwrap_or(0)));
                            }
                        }
                        _ => {}
                    }
                }
                Line::Record { shard, seq, data } => {
                    let (inc, at, left) = batch.unwrap_or_else(|| {
                        panic!(
                            "line {i}: record {shard} {seq} outside a #batch: was the processor \
                             run with KCL_SAMPLE_WORKER?"
                        )
                    });
                    assert!(left > 0, "line {i}: more records than its #batch announced");
                    assert_eq!(
                        &rec.incarnations[inc].shard, shard,
                        "line {i}: record of another shard inside a batch"
                    );
                    batch = Some((inc, at, left - 1));
                    rec.incarnations[inc].records.push(seq.clone());
                    rec.deliveries.push(Delivery {
                        shard: shard.clone(),
                        seq: seq.clone(),
                        data: data.clone(),
                        incarnation: inc,
                        at,
                    });
                }
            }
        }
        rec
    }

    /// Distinct `(shard, seq)` delivered.
    pub fn distinct(&self) -> BTreeSet<(String, String)> {
        self.deliveries
            .iter()
            .map(|d| (d.shard.clone(), d.seq.clone()))
            .collect()
    }

    /// Shards with at least one delivery.
    pub fn delivered_shards(&self) -> BTreeSet<String> {
        self.deliveries.iter().map(|d| d.shard.clone()).collect()
    }

    /// Put records never delivered.
    pub fn lost(&self, puts: &[Put]) -> Vec<(String, String)> {
        let got = self.distinct();
        puts.iter()
            .map(|p| (p.result.shard_id.clone(), p.result.sequence_number.clone()))
            .filter(|k| !got.contains(k))
            .collect()
    }

    /// Deliveries that were never put, or whose payload differs from what was put.
    pub fn unexpected(&self, puts: &[Put]) -> Vec<String> {
        let put: BTreeMap<(&str, &str), &[u8]> = puts
            .iter()
            .map(|p| {
                (
                    (
                        p.result.shard_id.as_str(),
                        p.result.sequence_number.as_str(),
                    ),
                    &p.result.data[..],
                )
            })
            .collect();
        self.deliveries
            .iter()
            .filter_map(|d| match put.get(&(d.shard.as_str(), d.seq.as_str())) {
                None => Some(format!("{} {}: never put", d.shard, d.seq)),
                Some(data) if *data != &d.data[..] => {
                    Some(format!("{} {}: payload differs", d.shard, d.seq))
                }
                _ => None,
            })
            .collect()
    }

    /// Within each incarnation, sequence numbers strictly increase and start after its
    /// starting checkpoint.
    pub fn order_violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for inc in &self.incarnations {
            let numeric = inc.start.chars().all(|c| c.is_ascii_digit()) && !inc.start.is_empty();
            if let (true, Some(first)) = (numeric, inc.records.first()) {
                if seq_cmp(first, &inc.start) != std::cmp::Ordering::Greater {
                    out.push(format!(
                        "{} {}: first record {first} not after its starting checkpoint {}",
                        inc.shard,
                        inc.name(),
                        inc.start
                    ));
                }
            }
            for w in inc.records.windows(2) {
                if seq_cmp(&w[0], &w[1]) != std::cmp::Ordering::Less {
                    out.push(format!(
                        "{} {}: {} delivered after {}",
                        inc.shard,
                        inc.name(),
                        w[1],
                        w[0]
                    ));
                }
            }
        }
        out
    }

    /// Every repeated delivery, with its cause: same incarnation, a restarted processor on the
    /// same worker, another worker after a planned stop (`stops`: worker → SIGTERM time) of
    /// the first, another worker after the lease moved between them, or unplanned.
    pub fn duplicates(&self, timeline: &Timeline, stops: &BTreeMap<String, i64>) -> Vec<Duplicate> {
        let mut seen: BTreeMap<(&str, &str), &Delivery> = BTreeMap::new();
        let mut out = Vec::new();
        for d in &self.deliveries {
            let key = (d.shard.as_str(), d.seq.as_str());
            let Some(first) = seen.get(&key).copied() else {
                seen.insert(key, d);
                continue;
            };
            let a = &self.incarnations[first.incarnation];
            let b = &self.incarnations[d.incarnation];
            let (cause, planned) = if first.incarnation == d.incarnation {
                ("redelivered within one incarnation".to_string(), false)
            } else if a.worker == b.worker {
                (
                    "a restarted processor on the same worker".to_string(),
                    false,
                )
            } else if let Some(&stop) = stops.get(&a.worker).filter(|&&t| t <= d.at) {
                (
                    format!(
                        "after the planned stop of {} (SIGTERM {} before)",
                        a.worker,
                        secs(d.at - stop)
                    ),
                    true,
                )
            } else {
                let moved = timeline.owner_at(&d.shard, first.at).as_deref()
                    == Some(a.worker.as_str())
                    && timeline.owner_at(&d.shard, d.at).as_deref() == Some(b.worker.as_str());
                if moved {
                    (
                        format!("after a lease move {} -> {}", a.worker, b.worker),
                        true,
                    )
                } else {
                    (
                        "unplanned (both workers live, no owner change seen)".into(),
                        false,
                    )
                }
            };
            out.push(Duplicate {
                shard: d.shard.clone(),
                seq: d.seq.clone(),
                first: (a.name(), first.at),
                again: (b.name(), d.at),
                cause,
                after_planned_move: planned,
            });
        }
        out
    }

    /// Incarnations of different workers whose delivery windows (first to last batch) of the
    /// same shard overlap.
    pub fn overlaps(&self) -> Vec<Overlap> {
        let mut out = Vec::new();
        for (i, a) in self.incarnations.iter().enumerate() {
            for b in &self.incarnations[i + 1..] {
                if a.shard != b.shard || a.worker == b.worker {
                    continue;
                }
                let (Some(a0), Some(a1), Some(b0), Some(b1)) = (
                    a.first_batch(),
                    a.last_batch(),
                    b.first_batch(),
                    b.last_batch(),
                ) else {
                    continue;
                };
                let from = a0.max(b0);
                let to = a1.min(b1);
                if to > from {
                    out.push(Overlap {
                        shard: a.shard.clone(),
                        a: a.name(),
                        b: b.name(),
                        from,
                        ms: to - from,
                    });
                }
            }
        }
        out
    }

    /// Per shard, the longest time between two consecutive batches (any worker) at or after
    /// `after`, and when it began.
    pub fn longest_gaps(&self, after: i64) -> BTreeMap<String, (i64, i64)> {
        let mut times: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for inc in &self.incarnations {
            times
                .entry(inc.shard.as_str())
                .or_default()
                .extend(inc.batches.iter().map(|b| b.0));
        }
        times
            .into_iter()
            .map(|(shard, mut t)| {
                t.sort_unstable();
                let gap = t
                    .windows(2)
                    .filter(|w| w[1] >= after)
                    .map(|w| (w[1] - w[0].max(after), w[0].max(after)))
                    .max()
                    .unwrap_or((0, after));
                (shard.to_string(), gap)
            })
            .collect()
    }
}

// ------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------

/// Everything measured in one scenario.
pub struct Report {
    pub name: String,
    pub t0: i64,
    pub marks: Vec<(i64, String)>,
    pub runs: Vec<WorkerRun>,
    pub puts: Vec<Put>,
    pub timeline: Timeline,
    pub recording: Recording,
    pub lost: Vec<(String, String)>,
    pub unexpected: Vec<String>,
    pub order_violations: Vec<String>,
    pub duplicates: Vec<Duplicate>,
    pub overlaps: Vec<Overlap>,
    /// Warnings and errors of the workers' logs: normalized message → (count, workers, one
    /// example line).
    pub log_complaints: BTreeMap<String, (usize, BTreeSet<String>, String)>,
    /// The scenario's own figures, in order.
    pub figures: Vec<(String, String)>,
    /// The workers' settings beyond identity and endpoints.
    pub settings: Vec<(&'static str, String)>,
    /// From the last SIGTERM until the remaining workers owned every lease (set by scenarios
    /// that stop workers).
    pub takeover: Option<i64>,
    /// Whether every joining worker owned a lease while the first ones still ran.
    pub joiners_given_work: bool,
    /// Graceful hand-offs started by leaderless `kcl-multilang` workers balancing (their
    /// logs' "asked the lease's owner to hand it over").
    pub leaderless_handoffs: usize,
}

impl Report {
    fn at(&self, t: i64) -> String {
        format!("+{}", secs(t - self.t0))
    }

    /// Adds a named figure to the report.
    pub fn figure(&mut self, name: &str, value: impl std::fmt::Display) {
        self.figures.push((name.to_string(), value.to_string()));
    }

    /// The report as text.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "==== fleet report: {} ====", self.name);
        let _ = writeln!(
            w,
            "-- worker settings: {}",
            self.settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let _ = writeln!(w, "-- steps (time since the fleet started)");
        for (t, m) in &self.marks {
            let _ = writeln!(w, "  {:>8}  {m}", self.at(*t));
        }
        let _ = writeln!(w, "-- workers");
        for r in &self.runs {
            let first_metrics = self.timeline.first_metrics(&r.id);
            let first_lease = self.timeline.first_owned_by(&r.id, r.started);
            let _ = writeln!(
                w,
                "  {:<10} {:?}  started {}  metrics row {}  first lease {}  SIGTERM {}  exited {} ({})",
                r.id,
                r.kind,
                self.at(r.started),
                first_metrics.map(|t| self.at(t)).unwrap_or_else(|| "never".into()),
                first_lease
                    .map(|t| format!("{} (after {})", self.at(t), secs(t - r.started)))
                    .unwrap_or_else(|| "never".into()),
                r.sigterm.map(|t| self.at(t)).unwrap_or_else(|| "-".into()),
                r.exited.map(|t| self.at(t)).unwrap_or_else(|| "-".into()),
                r.status.clone().unwrap_or_else(|| "running".into()),
            );
        }
        let _ = writeln!(w, "-- leader lock (ownerName of `Leader`)");
        for (leader, from, to) in self.timeline.leader_spans() {
            let _ = writeln!(
                w,
                "  {} .. {}  {}",
                self.at(from),
                self.at(to),
                leader.unwrap_or_else(|| "(no lock item)".into())
            );
        }
        if let Some(cv) = self
            .timeline
            .samples
            .iter()
            .rev()
            .find_map(|s| s.client_version.clone())
        {
            let _ = writeln!(w, "  Migration3.0 cv = {cv}");
        }
        let _ = writeln!(
            w,
            "-- lease owners (lease table; spans of leaseOwner[<-checkpointOwner], leaseCounter)"
        );
        for lease in self.timeline.leases() {
            let _ = writeln!(
                w,
                "  {lease}: {} owner changes, sequence {}{}",
                self.timeline.owner_changes(&lease),
                self.timeline.owner_sequence(&lease).join(" -> "),
                match self.timeline.returned_to(&lease) {
                    r if r.is_empty() => String::new(),
                    r => format!("  BACK TO {}", r.join(", ")),
                }
            );
            for span in self.timeline.spans(&lease) {
                let _ = writeln!(
                    w,
                    "      {} .. {} ({:>6})  {}{}  counter {}..{}",
                    self.at(span.from),
                    self.at(span.to),
                    secs(span.to - span.from),
                    span.owner.clone().unwrap_or_else(|| "(none)".into()),
                    span.checkpoint_owner
                        .map(|c| format!(" <- {c} (hand-off)"))
                        .unwrap_or_default(),
                    span.counter_from,
                    span.counter_to
                );
            }
        }
        let _ = writeln!(
            w,
            "  leases per owner at the end: {:?}",
            self.timeline.balance_at_end()
        );
        let _ = writeln!(w, "-- processor incarnations (recording; shard worker/pid)");
        for inc in &self.recording.incarnations {
            let _ = writeln!(
                w,
                "  {} {:<16} init {}  batches {} .. {}  {} records  ended {}",
                inc.shard,
                inc.name(),
                self.at(inc.initialized),
                inc.first_batch()
                    .map(|t| self.at(t))
                    .unwrap_or_else(|| "-".into()),
                inc.last_batch()
                    .map(|t| self.at(t))
                    .unwrap_or_else(|| "-".into()),
                inc.records.len(),
                if inc.ends.is_empty() {
                    "-".to_string()
                } else {
                    inc.ends
                        .iter()
                        .map(|(k, t)| format!("{k}@{}", self.at(*t)))
                        .collect::<Vec<_>>()
                        .join(",")
                }
            );
        }
        let _ = writeln!(w, "-- records");
        let _ = writeln!(
            w,
            "  put {}, delivered {} distinct in {} deliveries; lost {}, unexpected {}, order violations {}, duplicates {} ({} after a planned move)",
            self.puts.len(),
            self.recording.distinct().len(),
            self.recording.deliveries.len(),
            self.lost.len(),
            self.unexpected.len(),
            self.order_violations.len(),
            self.duplicates.len(),
            self.duplicates.iter().filter(|d| d.after_planned_move).count()
        );
        let mut by_cause: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        for d in &self.duplicates {
            let wa = d.first.0.split('/').next().unwrap_or_default().to_string();
            let wb = d.again.0.split('/').next().unwrap_or_default().to_string();
            *by_cause.entry((wa, wb, d.cause.clone())).or_default() += 1;
        }
        for ((a, b, cause), n) in by_cause {
            let _ = writeln!(w, "  duplicates {a} -> {b}: {n} ({cause})");
        }
        for d in self.duplicates.iter().take(10) {
            let _ = writeln!(
                w,
                "    {} {}: {} at {}, again {} at {}",
                d.shard,
                d.seq,
                d.first.0,
                self.at(d.first.1),
                d.again.0,
                self.at(d.again.1)
            );
        }
        for l in self.lost.iter().take(10) {
            let _ = writeln!(w, "  LOST {} {}", l.0, l.1);
        }
        for u in self.unexpected.iter().take(10) {
            let _ = writeln!(w, "  UNEXPECTED {u}");
        }
        for o in self.order_violations.iter().take(10) {
            let _ = writeln!(w, "  ORDER {o}");
        }
        let max_overlap = self.overlaps.iter().map(|o| o.ms).max().unwrap_or(0);
        let _ = writeln!(
            w,
            "  concurrent delivery of one shard by two workers: {} cases, longest {}",
            self.overlaps.len(),
            secs(max_overlap)
        );
        for o in &self.overlaps {
            let _ = writeln!(
                w,
                "    {} {} & {} from {} for {}",
                o.shard,
                o.a,
                o.b,
                self.at(o.from),
                secs(o.ms)
            );
        }
        let handoffs = self.handoffs();
        let _ = writeln!(
            w,
            "  graceful hand-offs seen (checkpointOwner set): {}, longest {} (sampled every {POLL_EVERY:?})",
            handoffs.len(),
            secs(handoffs.iter().map(|(_, s)| s.to - s.from).max().unwrap_or(0))
        );
        let (p50, p99, max) = self.latencies();
        let _ = writeln!(
            w,
            "  put -> first delivery: median {}, p99 {}, max {}",
            secs(p50),
            secs(p99),
            secs(max)
        );
        let (other, errors) = self.timeline.oddities();
        if !other.is_empty() {
            let _ = writeln!(w, "-- other items seen in the tables");
            for (k, v) in other {
                let _ = writeln!(w, "  {k}: {v}");
            }
        }
        if !errors.is_empty() {
            let _ = writeln!(w, "-- scan errors");
            for e in errors {
                let _ = writeln!(w, "  {e}");
            }
        }
        let _ = writeln!(
            w,
            "-- warnings and errors in the worker logs (normalized, count, workers)"
        );
        for (msg, (n, workers, example)) in &self.log_complaints {
            let workers: Vec<&str> = workers.iter().map(String::as_str).collect();
            let _ = writeln!(w, "  {n:>4}x [{}] {msg}", workers.join(","));
            let _ = writeln!(w, "         e.g. {example}");
        }
        let _ = writeln!(w, "-- figures");
        for (k, v) in &self.figures {
            let _ = writeln!(w, "  {k}: {v}");
        }
        let _ = writeln!(w, "==== end of fleet report ====");
        s
    }

    pub fn print(&self) {
        eprintln!("{}", self.render());
    }

    /// Put-to-first-delivery latency over every delivered record: (median, 99th percentile,
    /// max) in ms.
    pub fn latencies(&self) -> (i64, i64, i64) {
        let mut first: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for d in &self.recording.deliveries {
            first
                .entry((d.shard.as_str(), d.seq.as_str()))
                .or_insert(d.at);
        }
        let mut lat: Vec<i64> = self
            .puts
            .iter()
            .filter_map(|p| {
                first
                    .get(&(
                        p.result.shard_id.as_str(),
                        p.result.sequence_number.as_str(),
                    ))
                    .map(|&at| at - p.at)
            })
            .collect();
        lat.sort_unstable();
        let pick = |q: f64| {
            lat.get(((lat.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0)
        };
        (pick(0.5), pick(0.99), lat.last().copied().unwrap_or(0))
    }

    /// Every graceful hand-off seen in the lease table (`checkpointOwner` set):
    /// `(lease, span)`.
    pub fn handoffs(&self) -> Vec<(String, OwnerSpan)> {
        self.timeline
            .leases()
            .into_iter()
            .flat_map(|l| {
                self.timeline
                    .handoffs(&l)
                    .into_iter()
                    .map(move |s| (l.clone(), s))
            })
            .collect()
    }

    pub fn assert_none_lost(&self) {
        assert!(
            self.lost.is_empty() && self.unexpected.is_empty(),
            "{} of {} put records never delivered (first: {:?}); unexpected deliveries: {:?}",
            self.lost.len(),
            self.puts.len(),
            self.lost.iter().take(5).collect::<Vec<_>>(),
            self.unexpected.iter().take(5).collect::<Vec<_>>()
        );
    }

    pub fn assert_in_order(&self) {
        assert!(
            self.order_violations.is_empty(),
            "per-shard order broken within an incarnation: {:?}",
            self.order_violations.iter().take(10).collect::<Vec<_>>()
        );
    }

    /// No lease went back to a worker that had lost it.
    pub fn assert_no_back_and_forth(&self) {
        let back: Vec<(String, Vec<String>)> = self
            .timeline
            .leases()
            .into_iter()
            .map(|l| {
                let r = self.timeline.returned_to(&l);
                (l, r)
            })
            .filter(|(_, r)| !r.is_empty())
            .collect();
        assert!(back.is_empty(), "leases moved back and forth: {back:?}");
    }

    /// No shard was delivered by two workers at once for longer than `limit_ms`.
    pub fn assert_no_long_overlap(&self, limit_ms: i64) {
        let long: Vec<&Overlap> = self.overlaps.iter().filter(|o| o.ms > limit_ms).collect();
        assert!(
            long.is_empty(),
            "shards delivered by two workers at once for longer than {}: {long:?}",
            secs(limit_ms)
        );
    }
}

/// The Java daemon logs every stderr line of a record processor at ERROR level.
const CHILD_STDERR: &str = "Received error line from subprocess";

/// ` WARN ` / ` ERROR ` lines of a log, normalized (digits masked) for counting; the
/// processors' stderr lines the Java daemon forwards as ERROR are left out.
fn complaints(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| !l.contains(CHILD_STDERR))
        .filter_map(|l| {
            let i = l.find(" WARN ").or_else(|| l.find(" ERROR "))?;
            let msg: String = l[i + 1..]
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect();
            let mut short = String::new();
            let mut last_hash = false;
            for c in msg.chars() {
                if c == '#' && last_hash {
                    continue;
                }
                last_hash = c == '#';
                short.push(c);
            }
            let short: String = short.chars().take(220).collect();
            Some((short, l.chars().take(400).collect()))
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// Fleet
// ------------------------------------------------------------------------------------------

/// The scenario driver: one stream, one application, a producer, a lease poller and workers
/// that come and go.
pub struct Fleet {
    pub name: String,
    pub setup: FleetSetup,
    pub shards: usize,
    /// When the fleet started (unix ms).
    pub t0: i64,
    /// Kept for its `Drop` (removed when the test passes, kept when it fails).
    _scratch: Scratch,
    producer: Option<Producer>,
    pub poller: LeasePoller,
    live: Vec<Worker>,
    stopped: Vec<Worker>,
    runs: Vec<WorkerRun>,
    marks: Vec<(i64, String)>,
}

impl Fleet {
    /// Creates a stream of `shards` shards and a fresh application name, and starts the lease
    /// poller (nothing is put yet, no worker runs).
    pub async fn start(name: &str, shards: i32) -> Fleet {
        let aws = LocalAws::shared().await.unwrap_or_else(|e| panic!("{e:#}"));
        let kclpy = kclpy().await.unwrap_or_else(|e| panic!("{e:#}"));
        let scratch = Scratch::new(name).unwrap();
        let stream = testkit::unique_name(name);
        testkit::create_stream(&aws.kinesis_client(), &stream, shards)
            .await
            .unwrap_or_else(|e| panic!("create_stream {stream}: {e:#}"));
        let app = testkit::unique_name(&format!("{name}-app"));
        let poller = LeasePoller::start(aws.dynamodb_client(), &app);
        let t0 = unix_ms();
        eprintln!(
            "fleet {name}: stream {stream}, application {app}, files in {}",
            scratch.path.display()
        );
        Fleet {
            name: name.into(),
            setup: FleetSetup {
                aws,
                kclpy,
                stream,
                app,
                output: scratch.file("records.txt"),
                dir: scratch.path.clone(),
                settings: fleet_settings(),
                java: None,
            },
            shards: shards as usize,
            t0,
            _scratch: scratch,
            producer: None,
            poller,
            live: Vec::new(),
            stopped: Vec::new(),
            runs: Vec::new(),
            marks: vec![(t0, format!("stream of {shards} shards created"))],
        }
    }

    /// Notes a step of the scenario (with the time) for the report.
    pub fn mark(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("fleet {}: +{} {what}", self.name, secs(unix_ms() - self.t0));
        self.marks.push((unix_ms(), what));
    }

    /// Starts putting `per_second` records per second.
    pub fn start_producer(&mut self, per_second: usize) {
        assert!(self.producer.is_none(), "the producer already runs");
        self.producer = Some(Producer::start(
            self.setup.aws.kinesis_client(),
            self.setup.stream.clone(),
            per_second,
        ));
        self.mark(format!("producer started: {per_second} records/s"));
    }

    /// Stops the producer and returns every put.
    pub async fn stop_producer(&mut self) -> Vec<Put> {
        let puts = self
            .producer
            .as_mut()
            .expect("the producer runs")
            .stop()
            .await
            .unwrap_or_else(|e| panic!("the producer failed: {e:#}"));
        self.mark(format!("producer stopped after {} records", puts.len()));
        puts
    }

    /// Everything put so far.
    pub fn puts(&self) -> Vec<Put> {
        self.producer.as_ref().map(|p| p.puts()).unwrap_or_default()
    }

    fn started(&mut self, worker: Worker) {
        let run = WorkerRun {
            id: worker.id().to_string(),
            kind: worker.kind(),
            started: unix_ms(),
            sigterm: None,
            exited: None,
            status: None,
        };
        assert!(
            !self.runs.iter().any(|r| r.id == run.id),
            "worker id {} used twice",
            run.id
        );
        self.mark(format!(
            "{:?} worker {} started (pid {})",
            run.kind,
            run.id,
            worker.pid()
        ));
        self.runs.push(run);
        self.live.push(worker);
    }

    /// Starts a Java MultiLangDaemon worker `id`.
    pub async fn start_java(&mut self, id: &str) {
        let w = JavaWorker::start(&mut self.setup, id)
            .await
            .unwrap_or_else(|e| panic!("cannot start Java worker {id}: {e:#}"));
        self.started(Worker::Java(w));
    }

    /// Starts a `kcl-multilang` worker `id`.
    #[allow(dead_code)]
    pub fn start_rust(&mut self, id: &str) {
        let w = RustWorker::start(&self.setup, id)
            .unwrap_or_else(|e| panic!("cannot start Rust worker {id}: {e:#}"));
        self.started(Worker::Rust(w));
    }

    /// Ids of the running workers.
    pub fn live_ids(&self) -> Vec<String> {
        self.live.iter().map(|w| w.id().to_string()).collect()
    }

    /// SIGTERM to worker `id`, then waits (up to `within`) for it to exit; returns how long
    /// the exit took.
    pub async fn terminate(&mut self, id: &str, within: Duration) -> Duration {
        let i = self
            .live
            .iter()
            .position(|w| w.id() == id)
            .unwrap_or_else(|| panic!("no running worker {id}"));
        let mut w = self.live.remove(i);
        let sent = unix_ms();
        self.runs.iter_mut().find(|r| r.id == id).unwrap().sigterm = Some(sent);
        self.mark(format!("SIGTERM to {id}"));
        let result = w.terminate(within).await;
        let exited = unix_ms();
        self.stopped.push(w);
        match result {
            Ok((status, took)) => {
                let run = self.runs.iter_mut().find(|r| r.id == id).unwrap();
                run.exited = Some(exited);
                run.status = Some(status.to_string());
                self.mark(format!(
                    "{id} exited ({status}) {} after SIGTERM",
                    secs(took.as_millis() as i64)
                ));
                took
            }
            Err(e) => self.fail(&format!("stopping {id}: {e:#}")),
        }
    }

    /// The recording so far.
    pub fn recording(&self) -> Recording {
        Recording::read(&self.setup.output)
    }

    /// The newest lease-table sample.
    pub fn latest(&self) -> Sample {
        self.poller.latest().unwrap_or_default()
    }

    /// True once every record put so far has been delivered.
    pub fn all_put_delivered(&self) -> bool {
        self.recording().lost(&self.puts()).is_empty()
    }

    /// Current state in a few lines (for failure messages).
    pub fn state(&self) -> String {
        let s = self.latest();
        let rec = self.recording();
        let puts = self.puts();
        let owners: Vec<String> = s
            .leases
            .iter()
            .map(|(k, l)| {
                format!(
                    "{k}={}{}",
                    l.owner.clone().unwrap_or_else(|| "-".into()),
                    l.checkpoint_owner
                        .as_ref()
                        .map(|c| format!("<-{c}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        format!(
            "at +{}: live workers {:?}; leases {}; leader {:?}; metrics rows {:?}; put {}, delivered {} distinct, {} not yet",
            secs(unix_ms() - self.t0),
            self.live_ids(),
            owners.join(" "),
            s.leader,
            s.metrics.keys().collect::<Vec<_>>(),
            puts.len(),
            rec.distinct().len(),
            rec.lost(&puts).len()
        )
    }

    /// Prints the state and the report so far, then panics with `msg` (the workers' logs are
    /// printed as they drop).
    pub fn fail(&self, msg: &str) -> ! {
        eprintln!("fleet {}: FAILING: {msg}\n{}", self.name, self.state());
        let report = self.build_report(self.puts());
        report.print();
        panic!("{msg}");
    }

    /// Polls `check` every 500 ms until it returns `Some`; fails (with the state) after
    /// `limit`, when a running worker exits or when the producer fails.
    pub async fn until<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Fleet) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            let mut exited = None;
            for w in &mut self.live {
                if let Some(status) = w.exited() {
                    exited = Some(format!("worker {} exited ({status})", w.id()));
                }
            }
            if let Some(e) = exited {
                self.fail(&format!("{e} while waiting for: {what}"));
            }
            if self.producer.as_ref().map(|p| p.failed()).unwrap_or(false) {
                let err = match self.producer.as_mut().unwrap().stop().await {
                    Err(e) => format!("{e:#}"),
                    Ok(_) => "stopped".into(),
                };
                self.fail(&format!(
                    "the producer failed ({err}) while waiting for: {what}"
                ));
            }
            if start.elapsed() > limit {
                self.fail(&format!("timed out after {limit:?} waiting for: {what}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits up to `limit` until each of `ids` owns a lease with no hand-off in flight (so it
    /// processes it); returns when each first did (`None`: not within `limit`; no failure,
    /// the report says so).
    pub async fn wait_for_work(
        &mut self,
        ids: &[&str],
        limit: Duration,
    ) -> BTreeMap<String, Option<i64>> {
        let since = unix_ms();
        let mut got: BTreeMap<String, Option<i64>> =
            ids.iter().map(|i| (i.to_string(), None)).collect();
        let start = Instant::now();
        while start.elapsed() < limit && got.values().any(Option::is_none) {
            let s = self.latest();
            for (id, at) in got.iter_mut() {
                if at.is_none()
                    && s.at >= since
                    && s.leases.values().any(|l| {
                        l.owner.as_deref() == Some(id.as_str()) && l.checkpoint_owner.is_none()
                    })
                {
                    *at = Some(s.at);
                }
            }
            for w in &mut self.live {
                if let Some(status) = w.exited() {
                    let msg = format!(
                        "worker {} exited ({status}) while waiting for {ids:?} to get work",
                        w.id()
                    );
                    self.fail(&msg);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let text: Vec<String> = got
            .iter()
            .map(|(id, at)| match at {
                Some(t) => format!("{id} owns a lease at +{}", secs(t - self.t0)),
                None => format!("{id} NEVER got a lease within {limit:?}"),
            })
            .collect();
        self.mark(text.join("; "));
        got
    }

    /// SIGTERM to every running worker (one after the other).
    pub async fn stop_all(&mut self, within: Duration) {
        for id in self.live_ids() {
            self.terminate(&id, within).await;
        }
    }

    fn build_report(&self, puts: Vec<Put>) -> Report {
        let timeline = Timeline::new(self.poller.samples());
        let recording = self.recording();
        let stops: BTreeMap<String, i64> = self
            .runs
            .iter()
            .filter_map(|r| r.sigterm.map(|t| (r.id.clone(), t)))
            .collect();
        let mut log_complaints: BTreeMap<String, (usize, BTreeSet<String>, String)> =
            BTreeMap::new();
        let mut leaderless_handoffs = 0;
        for w in self.live.iter().chain(&self.stopped) {
            let log = w.log();
            leaderless_handoffs += log
                .matches("asked the lease's owner to hand it over")
                .count();
            for (msg, line) in complaints(&log) {
                let e = log_complaints
                    .entry(msg)
                    .or_insert_with(|| (0, BTreeSet::new(), line));
                e.0 += 1;
                e.1.insert(w.id().to_string());
            }
        }
        Report {
            name: self.name.clone(),
            t0: self.t0,
            marks: self.marks.clone(),
            runs: self.runs.clone(),
            lost: recording.lost(&puts),
            unexpected: recording.unexpected(&puts),
            order_violations: recording.order_violations(),
            duplicates: recording.duplicates(&timeline, &stops),
            overlaps: recording.overlaps(),
            puts,
            timeline,
            recording,
            log_complaints,
            figures: Vec::new(),
            settings: self.setup.settings.clone(),
            takeover: None,
            joiners_given_work: false,
            leaderless_handoffs,
        }
    }

    /// Stops the poller and builds the report from everything recorded.
    pub fn report(&mut self, puts: Vec<Put>) -> Report {
        self.poller.stop();
        self.build_report(puts)
    }
}

// ------------------------------------------------------------------------------------------
// Scenarios
// ------------------------------------------------------------------------------------------

/// Records per second the producer puts.
const RATE: usize = 20;
/// JVM start, 3.x set-up (tables, GSI), lease creation, first deliveries of every shard.
const FIRST_RECORDS_LIMIT: Duration = Duration::from_secs(180);
/// How long joining workers may wait for their first lease before the stops go ahead.
const JOIN_LIMIT: Duration = Duration::from_secs(150);
/// SIGTERM until exit.
const EXIT_LIMIT: Duration = Duration::from_secs(90);
/// Last stop until the remaining workers own every lease and delivered every record.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(330);

/// One side of a rolling migration: the kind of daemon, its two worker ids, and settings on
/// top of [`fleet_settings`].
pub struct Side {
    pub kind: Kind,
    pub ids: [&'static str; 2],
    pub extra: Vec<(&'static str, String)>,
}

impl Side {
    pub fn java(ids: [&'static str; 2]) -> Side {
        Side {
            kind: Kind::Java,
            ids,
            extra: Vec::new(),
        }
    }

    pub fn rust(ids: [&'static str; 2]) -> Side {
        Side {
            kind: Kind::Rust,
            ids,
            extra: Vec::new(),
        }
    }

    pub fn with(mut self, key: &'static str, value: &str) -> Side {
        self.extra.push((key, value.to_string()));
        self
    }
}

impl Fleet {
    async fn start_side(&mut self, side: &Side) {
        let base = fleet_settings();
        self.setup.settings = base;
        for (k, v) in &side.extra {
            self.setup.settings.retain(|(key, _)| key != k);
            self.setup.settings.push((k, v.clone()));
        }
        for id in side.ids {
            match side.kind {
                Kind::Java => self.start_java(id).await,
                Kind::Rust => self.start_rust(id),
            }
        }
    }
}

/// A rolling migration: the two workers of `old` start; once records flow on all 4 shards the
/// two of `new` join; once those own a lease (or after [`JOIN_LIMIT`]) the first two get
/// SIGTERM one after the other; then the remaining two must own every lease and deliver every
/// record, and the producer stops. Returns the report (printed), with the scenario's figures.
async fn roll_over(name: &str, old: Side, new: Side) -> Report {
    let wall = Instant::now();
    let mut fleet = Fleet::start(name, 4).await;
    fleet.start_producer(RATE);
    fleet.start_side(&old).await;
    let [a, b] = old.ids;
    fleet
        .until(
            FIRST_RECORDS_LIMIT,
            &format!("{a} and {b} to deliver records of all 4 shards"),
            |f| (f.recording().delivered_shards().len() == f.shards).then_some(()),
        )
        .await;
    fleet.mark("records delivered on all 4 shards");

    let joiners = new.ids;
    fleet.start_side(&new).await;
    let joined_at = unix_ms();
    let given_work = fleet.wait_for_work(&joiners, JOIN_LIMIT).await;

    fleet.terminate(a, EXIT_LIMIT).await;
    fleet.terminate(b, EXIT_LIMIT).await;
    let last_stop = fleet.runs.iter().filter_map(|r| r.sigterm).max().unwrap();

    let [c, d] = joiners;
    fleet
        .until(
            TAKEOVER_LIMIT,
            &format!(
                "{c} and {d} to own every lease (no hand-off in flight) and to deliver every \
                 record put so far"
            ),
            |f| (sample_all_owned_by(&f.latest(), &joiners) && f.all_put_delivered()).then_some(()),
        )
        .await;
    fleet.mark(format!(
        "{c} and {d} own every lease and delivered every record"
    ));
    let puts = fleet.stop_producer().await;
    fleet
        .until(
            Duration::from_secs(60),
            "every record put to be delivered after the producer stopped",
            |f| f.recording().lost(&puts).is_empty().then_some(()),
        )
        .await;
    fleet.mark("every record delivered");
    let mut report = fleet.report(puts);
    fleet.stop_all(EXIT_LIMIT).await;

    for id in joiners {
        let started = report.runs.iter().find(|r| r.id == id).unwrap().started;
        let figure = match given_work[id] {
            Some(t) => format!("{} after it started", secs(t - started)),
            None => format!("never within {JOIN_LIMIT:?}"),
        };
        report.figure(&format!("{id}: first lease"), figure);
    }
    report.joiners_given_work = joiners.iter().all(|id| given_work[*id].is_some());
    report.figure(
        "joiners started -> both own a lease",
        given_work
            .values()
            .map(|t| t.map(|t| t - joined_at))
            .collect::<Option<Vec<i64>>>()
            .and_then(|v| v.into_iter().max())
            .map(secs)
            .unwrap_or_else(|| "never".into()),
    );
    let new_leader = report.timeline.leader_among(&joiners, last_stop);
    report.figure(
        &format!("last SIGTERM -> {c}/{d} hold the leader lock"),
        new_leader
            .map(|(t, who)| format!("{} ({who})", secs(t - last_stop)))
            .unwrap_or_else(|| "never".into()),
    );
    let takeover = report.timeline.all_owned_by(&joiners, last_stop);
    report.takeover = takeover.map(|t| t - last_stop);
    report.figure(
        &format!("last SIGTERM -> {c}/{d} own every lease"),
        takeover
            .map(|t| secs(t - last_stop))
            .unwrap_or_else(|| "never".into()),
    );
    let gaps = report.recording.longest_gaps(last_stop);
    report.figure(
        "longest delivery gap per shard after the last SIGTERM",
        gaps.iter()
            .map(|(s, (ms, _))| format!("{s}: {}", secs(*ms)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let changes: Vec<String> = report
        .timeline
        .leases()
        .iter()
        .map(|l| format!("{l}: {}", report.timeline.owner_changes(l)))
        .collect();
    report.figure("owner changes per lease", changes.join(", "));
    report.figure("duplicates", report.duplicates.len());
    report.figure(
        "duplicates after a planned move",
        report
            .duplicates
            .iter()
            .filter(|d| d.after_planned_move)
            .count(),
    );
    report.figure(
        "leases per owner at the end",
        format!("{:?}", report.timeline.balance_at_end()),
    );
    report.figure("test wall time", secs(wall.elapsed().as_millis() as i64));
    report.print();
    report
}

/// Two Java workers of `roll_over`'s first side, two more Java workers joining.
async fn roll_over_java_fleet(name: &str, extra: Vec<(&'static str, String)>) -> Report {
    let mut old = Side::java(["java-a", "java-b"]);
    let mut new = Side::java(["java-c", "java-d"]);
    old.extra.extend(extra.iter().cloned());
    new.extra.extend(extra);
    roll_over(name, old, new).await
}

/// No record repeated by a planned move: in a 3.x fleet, moves are hand-offs (the old owner
/// checkpoints first), as in a Java-only fleet.
fn assert_no_planned_repeats(report: &Report) {
    let planned: Vec<_> = report
        .duplicates
        .iter()
        .filter(|d| d.after_planned_move)
        .collect();
    assert!(
        planned.is_empty(),
        "records repeated by planned moves: {planned:#?}"
    );
}

/// What every migration must show: nothing lost, order within each tenure, the joining side
/// given work while the other still ran, no lease moving back and forth, no two live owners
/// beyond one failover time, every lease with the remaining side, balanced (2 + 2).
fn assert_migration(report: &Report, remaining: [&str; 2]) {
    report.assert_none_lost();
    report.assert_in_order();
    report.assert_no_back_and_forth();
    report.assert_no_long_overlap(FAILOVER_MS);
    assert!(
        report.joiners_given_work,
        "the joining workers were given no lease while the others ran"
    );
    assert!(
        report.takeover.is_some(),
        "{remaining:?} never owned every lease"
    );
    let balance = report.timeline.balance_at_end();
    for w in remaining {
        assert_eq!(
            balance.get(w),
            Some(&2),
            "not balanced at the end: {balance:?}"
        );
    }
}

/// The baseline: a Java-only fleet in native 3.x mode rolls over to new Java workers
/// ([`roll_over_java_fleet`] with the Java daemon's defaults otherwise). No record may be
/// lost, each incarnation must deliver its shard in order, no lease may go back to a former
/// owner, no shard may be delivered by two workers at once for longer than the failover time,
/// and the remaining workers must end up owning every lease; duplicates, owner changes and
/// timings are reported.
///
/// Measured on a 2-core machine (two runs of this version): records flow on all 4 shards
/// 51-55 s after the first two JVMs start; the joiners get their first lease 30 s and 88-91 s
/// after they start (in an earlier run neither got one within 210 s: see the module docs);
/// each daemon exits 0.3 s after SIGTERM; a remaining worker holds the leader lock 122-125 s
/// after the last SIGTERM and owns every lease 152-155 s after it (the 155 s), so the
/// stopped workers' shards go 164-167 s without a delivery; 0 duplicates, 1 owner change per
/// lease, 2 + 2 leases at the end; 5.2-5.5 minutes in all. The limits below add up to 12 minutes
/// (plus the exits).
#[tokio::test]
async fn java_3x_fleet_rolls_over_to_new_java_workers() {
    let report = roll_over_java_fleet("java3x-roll", Vec::new()).await;
    report.assert_none_lost();
    report.assert_in_order();
    report.assert_no_back_and_forth();
    report.assert_no_long_overlap(FAILOVER_MS);
    assert!(
        report.takeover.is_some(),
        "java-c/java-d never owned every lease"
    );
}

/// Two Java workers in native 3.x mode; two `kcl-multilang` workers join (they follow the
/// fleet's `Migration3.0` item into the 3.x protocol and are assigned leases by the Java
/// leader, by hand-off); the Java workers are stopped one after the other (with a shutdown
/// grace, so that they release the leader lock and checkpoint, as a rolling deploy does).
///
/// The Java side runs its variance balancing at every LAM run (`varianceBalancingFrequency =
/// 1`: every 20 s, where the default is every third run). Java's leader moves a lease to an
/// idle worker only when that lease's `throughputKBps` is at most the fleet's mean lease
/// throughput (`willAnyMetricStatsGoAboveAverageUtilizationOrOperatingRange`). With four
/// near-equal leases, that is a coin flip on each round's noise. With the default, a joiner's
/// 150 s allowance held two rounds, and in one CI run both of them left `rust-c` without a
/// lease (`java-a` held the two busiest shards). That was Java's balancing, not the joiners'.
#[tokio::test]
async fn a_java_3x_fleet_moves_to_kcl_multilang() {
    let old = Side::java(["java-a", "java-b"])
        .with("shutdownGraceMillis", "30000")
        .with("varianceBalancingFrequency", "1");
    let new = Side::rust(["rust-c", "rust-d"]);
    let report = roll_over("java-to-rust", old, new).await;
    assert_migration(&report, ["rust-c", "rust-d"]);
    assert_no_planned_repeats(&report);
}

/// The other way: two `kcl-multilang` workers start a 3.x fleet
/// (`clientVersionConfig = CLIENT_VERSION_CONFIG_3X`), two Java workers join and are assigned
/// leases by our leader, ours are stopped one after the other.
#[tokio::test]
async fn a_kcl_multilang_3x_fleet_moves_to_java() {
    let old = Side::rust(["rust-a", "rust-b"]);
    let new = Side::java(["java-c", "java-d"]).with("shutdownGraceMillis", "30000");
    let report = roll_over("rust-to-java", old, new).await;
    assert_migration(&report, ["java-c", "java-d"]);
    assert_no_planned_repeats(&report);
}

/// A Java fleet in 2.x-compatible mode (`CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X`, the first
/// step of the Java KCL's own 2.x → 3.x migration: its `Migration3.0` item says
/// `CLIENT_VERSION_UPGRADE_FROM_2X`); `kcl-multilang` workers with the same properties join.
/// They follow the item into the leaderless protocol (the Java workers run the 2.x lease
/// taker in this mode) and write metrics rows (so the Java leader could flip the fleet to 3.x
/// later); they take their share by graceful hand-off (their steals name the Java owner as
/// `checkpointOwner`, which the Java KCL 3.x renewer honours in this mode too: its processor
/// checkpoints, then it passes the lease on), and take over when the Java workers stop.
#[tokio::test]
async fn a_2x_compatible_java_fleet_moves_to_kcl_multilang() {
    let compatible = "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X";
    let old = Side::java(["java-a", "java-b"])
        .with("clientVersionConfig", compatible)
        .with("shutdownGraceMillis", "30000");
    let new = Side::rust(["rust-c", "rust-d"]).with("clientVersionConfig", compatible);
    let report = roll_over("compat-to-rust", old, new).await;
    assert_migration(&report, ["rust-c", "rust-d"]);
    assert!(
        report.leaderless_handoffs > 0,
        "the joiners' steals were hand-offs"
    );
    assert_no_planned_repeats(&report);
}
