//! A journaling record processor and worker helpers for the consumer tests.

use async_trait::async_trait;
use kinesis_client::retrieval::StreamRef;
use kinesis_client::{
    Checkpoint, Checkpointer, Config, ConfigBuilder, InitializationInput, ProcessRecordsInput,
    ProcessorError, RecordProcessor, Scheduler, Shutdown,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::LocalAws;

/// What happened to one shard's processors.
#[derive(Debug, Default, Clone)]
pub struct ShardLog {
    /// Every delivered record: (worker, sequence number, payload, global event index).
    pub deliveries: Vec<(String, String, String, u64)>,
    /// Checkpoint each `initialize` started from.
    pub initialized_at: Vec<Checkpoint>,
    /// Shutdown reasons, in order.
    pub shutdowns: Vec<String>,
    /// Global event index of each shutdown call.
    pub shutdown_at: Vec<u64>,
    /// Batches that were failed on purpose.
    pub failed_batches: Vec<Vec<String>>,
    /// Panics raised on purpose.
    pub panics: usize,
    /// Every batch delivered: (worker, when).
    pub batches: Vec<(String, std::time::Instant)>,
    /// Every `shutdown`: (worker, reason, when).
    pub shutdown_times: Vec<(String, String, std::time::Instant)>,
}

/// Everything every processor saw, by shard.
#[derive(Debug, Default, Clone)]
pub struct Journal(
    pub Arc<Mutex<BTreeMap<String, ShardLog>>>,
    Arc<std::sync::atomic::AtomicU64>,
);

impl Journal {
    pub fn snapshot(&self) -> BTreeMap<String, ShardLog> {
        self.0.lock().unwrap().clone()
    }

    /// Distinct payloads delivered over all shards.
    pub fn distinct_payloads(&self) -> std::collections::BTreeSet<String> {
        self.snapshot()
            .values()
            .flat_map(|l| l.deliveries.iter().map(|d| d.2.clone()))
            .collect()
    }

    fn with<R>(&self, shard: &str, f: impl FnOnce(&mut ShardLog) -> R) -> R {
        f(self.0.lock().unwrap().entry(shard.to_string()).or_default())
    }

    fn next_index(&self) -> u64 {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }
}

/// How a test processor behaves.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// Checkpoint after every batch.
    pub checkpoint_every_batch: bool,
    /// Fail the first delivery of every batch whose first record has this payload.
    pub fail_once_on_payload: Option<String>,
    /// Do not checkpoint at shard end.
    pub skip_shard_end_checkpoint: bool,
    /// Panic the first time a batch starts with this payload.
    pub panic_once_on_payload: Option<String>,
}

pub struct TestProcessor {
    shard: String,
    worker: String,
    journal: Journal,
    behavior: Behavior,
}

#[async_trait]
impl RecordProcessor for TestProcessor {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        self.journal
            .with(&self.shard, |l| l.initialized_at.push(input.checkpoint));
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let payloads: Vec<String> = input
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect();
        if let Some(p) = &self.behavior.panic_once_on_payload {
            if payloads.first() == Some(p) && self.journal.with(&self.shard, |l| l.panics == 0) {
                self.journal.with(&self.shard, |l| l.panics += 1);
                panic!("processor bug on purpose");
            }
        }
        if let Some(fail) = &self.behavior.fail_once_on_payload {
            let first_time = payloads.first() == Some(fail)
                && self
                    .journal
                    .with(&self.shard, |l| l.failed_batches.is_empty());
            if first_time {
                self.journal
                    .with(&self.shard, |l| l.failed_batches.push(payloads.clone()));
                return Err("failing this batch on purpose".into());
            }
        }
        self.journal.with(&self.shard, |l| {
            if !input.records.is_empty() {
                l.batches
                    .push((self.worker.clone(), std::time::Instant::now()));
            }
            for r in &input.records {
                let i = self.journal.next_index();
                l.deliveries.push((
                    self.worker.clone(),
                    r.sequence_number.to_string(),
                    String::from_utf8_lossy(&r.data).into_owned(),
                    i,
                ));
            }
        });
        if self.behavior.checkpoint_every_batch {
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }

    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        let i = self.journal.next_index();
        self.journal.with(&self.shard, |l| {
            l.shutdowns.push(reason.name().to_string());
            l.shutdown_at.push(i);
            l.shutdown_times.push((
                self.worker.clone(),
                reason.name().to_string(),
                std::time::Instant::now(),
            ));
        });
        match reason {
            Shutdown::ShardEnded { checkpointer } if !self.behavior.skip_shard_end_checkpoint => {
                checkpointer.checkpoint().await?
            }
            Shutdown::Requested { checkpointer } => checkpointer.checkpoint().await?,
            _ => {}
        }
        Ok(())
    }
}

/// Short timings for tests.
pub fn config(app: &str, stream: &str, worker: &str) -> ConfigBuilder {
    Config::builder(app, StreamRef::Name(stream.into()))
        .worker_id(worker)
        .initial_position(kinesis_client::InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(3))
        .idle_time_between_reads(Duration::from_millis(200))
        .max_records(100)
        .parent_shard_poll_interval(Duration::from_millis(300))
        .shard_sync_interval(Duration::from_secs(1))
        .lease_cleanup_interval(Duration::from_secs(1))
        .task_backoff(Duration::from_millis(200))
        .graceful_shutdown_timeout(Duration::from_secs(10))
}

/// A worker running in the background.
pub struct Worker {
    pub handle: kinesis_client::SchedulerHandle,
    pub task: tokio::task::JoinHandle<Result<(), kinesis_client::SchedulerError>>,
}

impl Worker {
    /// Graceful shutdown, waiting for it to finish.
    pub async fn stop(self) {
        self.handle.request_shutdown();
        self.task.await.expect("worker task").expect("worker run");
    }

    /// Die without warning (no release, no processor shutdown).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub fn start_worker(
    aws: &LocalAws,
    config: Config,
    journal: &Journal,
    behavior: Behavior,
) -> Worker {
    let journal = journal.clone();
    let worker = config.worker_id().to_string();
    let factory = move |shard: &str| TestProcessor {
        shard: shard.to_string(),
        worker: worker.clone(),
        journal: journal.clone(),
        behavior: behavior.clone(),
    };
    start_scheduler(aws, config, factory)
}

/// A worker running `factory`'s processors on the local services.
pub fn start_scheduler<F: kinesis_client::RecordProcessorFactory>(
    aws: &LocalAws,
    config: Config,
    factory: F,
) -> Worker {
    let endpoints = kinesis_client::aws::Endpoints {
        kinesis: Some(aws.kinesis_endpoint().into()),
        dynamodb: Some(aws.dynamodb_endpoint().into()),
    };
    let scheduler = Scheduler::from_sdk_config(config, factory, &aws.sdk_config(), &endpoints);
    let handle = scheduler.handle();
    let task = tokio::spawn(scheduler.run(std::future::pending()));
    Worker { handle, task }
}

/// A new stream of `shards` shards named after `prefix`, with `n` numbered records put.
pub async fn stream_with_records(
    aws: &testkit::LocalAws,
    prefix: &str,
    shards: i32,
    n: usize,
) -> (String, Vec<testkit::PutResult>) {
    let kinesis = aws.kinesis_client();
    let name = testkit::unique_name(prefix);
    testkit::create_stream(&kinesis, &name, shards)
        .await
        .unwrap();
    let put = testkit::put_records(&kinesis, &name, testkit::numbered_records(prefix, n))
        .await
        .unwrap();
    (name, put)
}

/// Poll `cond` every 100 ms until it holds, or panic with `what` after `limit`.
pub async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per shard, the sequence numbers put, in order.
pub fn expected_by_shard(put: &[testkit::PutResult]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in put {
        m.entry(p.shard_id.clone())
            .or_default()
            .push(p.sequence_number.clone());
    }
    for v in m.values_mut() {
        v.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    }
    m
}

/// Sequence numbers delivered for a shard, in delivery order.
pub fn delivered_seqs(log: &ShardLog) -> Vec<String> {
    log.deliveries.iter().map(|d| d.1.clone()).collect()
}

/// The Java MultiLangDaemon's settings for the local services (short timings, polling,
/// `TRIM_HORIZON`, 2.x-compatible lease assignment), running `executable`.
pub fn java_daemon_properties(
    aws: &LocalAws,
    stream: &str,
    app: &str,
    worker: &str,
    executable: String,
) -> Vec<(&'static str, String)> {
    let region = aws
        .sdk_config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    vec![
        ("executableName", executable),
        ("processingLanguage", "python/3".into()),
        ("streamName", stream.into()),
        ("applicationName", app.into()),
        ("workerId", worker.into()),
        (
            "AwsCredentialsProvider",
            "EnvironmentVariableCredentialsProvider".into(),
        ),
        ("regionName", region),
        ("kinesisEndpoint", aws.kinesis_endpoint().into()),
        ("dynamoDBEndpoint", aws.dynamodb_endpoint().into()),
        ("initialPositionInStream", "TRIM_HORIZON".into()),
        ("failoverTimeMillis", "3000".into()),
        ("idleTimeBetweenReadsInMillis", "200".into()),
        ("retrievalMode", "POLLING".into()),
        ("maxRecords", "100".into()),
        ("metricsLevel", "NONE".into()),
        ("parentShardPollIntervalMillis", "500".into()),
        (
            "clientVersionConfig",
            "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X".into(),
        ),
    ]
}
