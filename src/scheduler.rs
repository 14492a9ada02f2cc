//! The worker: leases shards, runs a consumer per held lease, shuts down gracefully.

use crate::aws::{dynamodb_client, kinesis_client, Endpoints};
use crate::backoff::RetryPolicy;
use crate::config::{Config, RetrievalMode};
use crate::consumer::redelivery::{Redelivery, SharedRedelivery};
use crate::consumer::{run_shard_with, ShardContext, ShardExit};
use crate::coordinator::{CoordinatorConfig, HeldLeases, LeaseCoordinator};
use crate::lease::{DynamoDbLeaseStore, LeaseStore, LeaseStoreError};
use crate::processor::RecordProcessorFactory;
use crate::resharding::{
    periodic_cleanup, periodic_shard_sync, sync_shards_within, ShardSyncError,
};
use crate::retrieval::fanout::{ConsumerRegistration, RegistrationPolicy};
use crate::retrieval::source::PrefetchBudget;
use crate::retrieval::{ConsumerRegistrationError, KinesisStreamClient, StreamClient};
use crate::stream::StreamIdentifier;
use crate::telemetry::{self, names, Health};
use futures::FutureExt;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The worker could not start, or had to stop: once running, failures are retried, except
/// that an enhanced fan-out worker whose stream consumer is gone for good stops
/// ([`SchedulerError::FanOutConsumerDeleted`], [`SchedulerError::FanOutConsumer`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The lease table could not be created or reached.
    #[error("cannot use the lease table: {0}")]
    LeaseTable(#[source] LeaseStoreError),
    /// The first shard sync failed for good (e.g. the stream does not exist).
    #[error("cannot list the stream's shards: {0}")]
    ShardSync(#[source] ShardSyncError),
    /// Enhanced fan-out: the stream consumer could not be found, registered or seen `ACTIVE`
    /// (e.g. no permission to RegisterStreamConsumer, or a consumer ARN that names nothing
    /// or a consumer of another stream), at start, or after it was deleted while running
    /// (registered by name, it could not be registered again: the worker stopped as for
    /// [`SchedulerError::FanOutConsumerDeleted`]).
    #[error("cannot use the enhanced fan-out consumer: {0}")]
    FanOutConsumer(#[source] ConsumerRegistrationError),
    /// Enhanced fan-out: the stream consumer configured by ARN was deleted while the worker
    /// read through it. A consumer given by ARN is never registered again, so the worker
    /// stopped: its processors were shut down as for a requested shutdown (they could
    /// checkpoint) and its leases released, for other workers to take.
    #[error("the enhanced fan-out consumer {consumer_arn} was deleted: the worker stopped and released its leases (a consumer configured by ARN is not registered again: register one and configure its ARN, or configure a consumer name instead, which is registered again when deleted)")]
    FanOutConsumerDeleted {
        /// The configured consumer ARN.
        consumer_arn: String,
    },
}

impl From<ConsumerRegistrationError> for SchedulerError {
    fn from(e: ConsumerRegistrationError) -> Self {
        match e {
            ConsumerRegistrationError::Deleted(consumer_arn) => {
                SchedulerError::FanOutConsumerDeleted { consumer_arn }
            }
            e => SchedulerError::FanOutConsumer(e),
        }
    }
}

/// Requests a graceful shutdown of a running [`Scheduler`], and tells which shards it holds.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    graceful: CancellationToken,
    coordinator: LeaseCoordinator,
    skipped_records: Arc<AtomicU64>,
}

impl SchedulerHandle {
    /// Ask the worker to shut down gracefully: processors get `Shutdown::Requested` while
    /// their leases are still held, then the leases are released.
    pub fn request_shutdown(&self) {
        self.graceful.cancel();
    }

    /// Whether the worker is live and ready (for container orchestrators; see [`Health`]).
    pub fn health(&self) -> Health {
        self.coordinator.health_state().health()
    }

    /// The shards whose leases this worker holds now (for monitoring and tests; a lease can be
    /// lost at any moment, so this is a snapshot, not a promise).
    pub fn held_shards(&self) -> BTreeSet<String> {
        self.coordinator.held_keys()
    }

    /// Records this worker skipped since it started, each with its processor's consent
    /// ([`RetryDecision::Skip`](crate::processor::RetryDecision::Skip) after the retry policy
    /// was exhausted). Each skip is also logged with the shard and the sequence numbers.
    pub fn skipped_records(&self) -> u64 {
        self.skipped_records.load(Ordering::Relaxed)
    }
}

/// A worker of an application: holds leases and runs one processor per held shard.
pub struct Scheduler<F: RecordProcessorFactory> {
    config: Arc<Config>,
    factory: Arc<F>,
    coordinator: LeaseCoordinator,
    stream: Arc<dyn StreamClient>,
    /// The stream, as the processors are told it.
    stream_id: StreamIdentifier,
    graceful: CancellationToken,
    prefetch_budget: PrefetchBudget,
    /// The enhanced fan-out consumer, in [`RetrievalMode::FanOut`].
    fan_out: Option<Arc<ConsumerRegistration>>,
    skipped_records: Arc<AtomicU64>,
}

impl<F: RecordProcessorFactory> std::fmt::Debug for Scheduler<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("worker_id", &self.config.worker_id)
            .field("stream", &self.config.stream)
            .finish()
    }
}

impl<F: RecordProcessorFactory> Scheduler<F> {
    /// A worker over explicit stream and lease-store implementations.
    pub fn new(
        config: Config,
        factory: F,
        stream: Arc<dyn StreamClient>,
        store: Arc<dyn LeaseStore>,
    ) -> Self {
        let coordinator = LeaseCoordinator::new(
            store,
            CoordinatorConfig {
                worker_id: config.worker_id.clone(),
                failover_time: config.failover_time,
                renew_interval: config.lease_renew_interval,
                take_interval: config.lease_take_interval,
                max_leases_for_worker: config.max_leases_for_worker,
                max_leases_to_steal_at_one_time: config.max_leases_to_steal_at_one_time,
                rng_seed: config.rng_seed,
                // One stream per scheduler (multi-stream applications are not built yet).
                multi_stream: false,
            },
        );
        let fan_out = (config.retrieval_mode == RetrievalMode::FanOut).then(|| {
            let f = &config.fan_out;
            Arc::new(ConsumerRegistration::new(
                stream.clone(),
                config.fan_out_consumer(),
                RegistrationPolicy {
                    max_describe_stream_consumer_retries: f.max_describe_stream_consumer_retries,
                    register_stream_consumer_retries: f.register_stream_consumer_retries,
                    retry_backoff: f.retry_backoff,
                },
            ))
        });
        Scheduler {
            fan_out,
            stream_id: StreamIdentifier::single(config.stream().name()),
            prefetch_budget: PrefetchBudget::new(config.max_prefetch_bytes_per_worker),
            config: Arc::new(config),
            factory: Arc::new(factory),
            coordinator,
            stream,
            graceful: CancellationToken::new(),
            skipped_records: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A worker on Kinesis and DynamoDB, with clients built from `sdk_config` (e.g. from
    /// `aws_config::load_from_env()`; see [`aws`](crate::aws) for the credential providers)
    /// and optional endpoint overrides.
    pub fn from_sdk_config(
        config: Config,
        factory: F,
        sdk_config: &aws_types::SdkConfig,
        endpoints: &Endpoints,
    ) -> Self {
        let stream = KinesisStreamClient::new(
            kinesis_client(sdk_config, endpoints.kinesis.as_deref()),
            config.stream.clone(),
        );
        let store = DynamoDbLeaseStore::new(
            dynamodb_client(sdk_config, endpoints.dynamodb.as_deref()),
            config.table_name.clone(),
        );
        Self::new(config, factory, Arc::new(stream), Arc::new(store))
    }

    /// A handle to request graceful shutdown and to see which shards this worker holds.
    pub fn handle(&self) -> SchedulerHandle {
        SchedulerHandle {
            graceful: self.graceful.clone(),
            coordinator: self.coordinator.clone(),
            skipped_records: self.skipped_records.clone(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Run until `shutdown_signal` completes or [`SchedulerHandle::request_shutdown`] is
    /// called, then shut down gracefully. Dropping this future instead stops everything at once
    /// without releasing leases (as a crash would; other workers take them after the failover time).
    ///
    /// A shutdown during start-up (lease table creation, the first shard sync, which retry for
    /// about a minute when the services are unreachable) returns `Ok(())` at once: no lease is
    /// held yet, so there is nothing to hand back.
    ///
    /// Enhanced fan-out: when the stream consumer is gone for good — a consumer configured by
    /// ARN was deleted ([`SchedulerError::FanOutConsumerDeleted`]), or a consumer registered
    /// by name was deleted and cannot be registered again ([`SchedulerError::FanOutConsumer`])
    /// — the worker is no longer ready, shuts down gracefully as if asked to (processors can
    /// checkpoint, leases are released for other workers) and returns that error.
    pub async fn run(
        self,
        shutdown_signal: impl Future<Output = ()>,
    ) -> Result<(), SchedulerError> {
        let span = tracing::info_span!(
            names::SPAN_WORKER,
            { names::FIELD_WORKER_ID } = %self.config.worker_id
        );
        telemetry::describe();
        let health = self.coordinator.health_state().clone();
        let result = tracing::Instrument::instrument(self.run_inner(shutdown_signal), span).await;
        health.stopped();
        result
    }

    async fn run_inner(
        self,
        shutdown_signal: impl Future<Output = ()>,
    ) -> Result<(), SchedulerError> {
        tokio::pin!(shutdown_signal);
        // Start-up (table creation, the first shard sync) retries for a while when the services
        // are unreachable; a shutdown request must not wait for it. Nothing is held yet, so
        // there is nothing to release: stop at once.
        tokio::select! {
            biased;
            _ = &mut shutdown_signal => return self.stopped_during_startup(),
            _ = self.graceful.cancelled() => return self.stopped_during_startup(),
            started = self.initialize() => {
                telemetry::scheduler_initialized(started.is_ok());
                started?;
                self.coordinator.health_state().initialized();
            }
        }
        let stop = CancellationToken::new();
        let mut background = JoinSet::new();
        background.spawn({
            let c = self.coordinator.clone();
            let s = stop.clone();
            async move { c.run(s).await }
        });
        background.spawn(periodic_shard_sync(
            self.stream.clone(),
            self.coordinator.clone(),
            self.config.clone(),
            stop.clone(),
        ));
        if self.config.cleanup_leases_upon_shard_completion {
            background.spawn(periodic_cleanup(
                self.coordinator.clone(),
                self.stream.clone(),
                self.config.clone(),
                stop.clone(),
            ));
        }
        let mut shards = Shards::default();
        let consumers_stop = CancellationToken::new();
        let mut held_rx = self.coordinator.subscribe();
        // Why the worker stops on its own (its fan-out consumer is gone for good), if it does.
        let mut failure = None;
        loop {
            self.reconcile(
                &mut shards,
                &held_rx.borrow_and_update().clone(),
                &consumers_stop,
            );
            let next_restart = shards.restart_at.values().min().copied();
            tokio::select! {
                biased;
                _ = &mut shutdown_signal => break,
                _ = self.graceful.cancelled() => break,
                changed = held_rx.changed() => if changed.is_err() { break },
                Some(done) = shards.tasks.join_next() => shards.finished(done, self.config.task_backoff, self.config.max_task_backoff),
                _ = sleep_until_opt(next_restart) => {}
                e = fan_out_failed(self.fan_out.as_deref()) => {
                    tracing::error!(error = %e, "the enhanced fan-out consumer is gone for good: stopping the worker (processors shut down as requested, leases released for other workers)");
                    failure = Some(e);
                    break;
                }
            }
        }
        tracing::info!(shards = shards.running.len(), timeout = ?self.config.graceful_shutdown_timeout, "graceful shutdown: asking processors to checkpoint");
        self.coordinator.health_state().shutting_down();
        self.coordinator.stop_taking();
        consumers_stop.cancel();
        let drained = tokio::time::timeout(self.config.graceful_shutdown_timeout, async {
            while let Some(done) = shards.tasks.join_next().await {
                shards.finished(done, self.config.task_backoff, self.config.max_task_backoff);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(shards = ?shards.running.keys().collect::<Vec<_>>(), "graceful shutdown timed out; stopping the remaining processors");
            shards.tasks.shutdown().await;
        }
        self.coordinator.release_all().await;
        stop.cancel();
        while background.join_next().await.is_some() {}
        tracing::info!("worker stopped");
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    fn stopped_during_startup(&self) -> Result<(), SchedulerError> {
        tracing::info!("shutdown requested during start-up: stopping before any lease was taken");
        Ok(())
    }

    async fn initialize(&self) -> Result<(), SchedulerError> {
        let store = self.coordinator.store();
        let mut retry = STARTUP_RETRY.start();
        loop {
            match store.create_table_if_not_exists().await {
                Ok(()) => break,
                Err(e) if e.kind().is_retryable() && retry.may_retry() => {
                    tracing::warn!(error = %e, "lease table not ready; retrying");
                    tokio::time::sleep(retry.next_delay().unwrap_or_default()).await;
                }
                Err(e) => return Err(SchedulerError::LeaseTable(e)),
            }
        }
        let mut retry = STARTUP_RETRY.start();
        loop {
            match sync_shards_within(
                self.stream.as_ref(),
                store.as_ref(),
                self.config.initial_position,
                self.config.failover_time,
            )
            .await
            {
                Ok(n) => {
                    tracing::info!(created = n, stream = %self.config.stream, table = %self.config.table_name, "shard sync done");
                    break;
                }
                Err(e) if retry.may_retry() && !e.is_fatal() => {
                    tracing::warn!(error = %e, "shard sync failed; retrying");
                    tokio::time::sleep(retry.next_delay().unwrap_or_default()).await;
                }
                Err(e) => return Err(SchedulerError::ShardSync(e)),
            }
        }
        if let Some(registration) = &self.fan_out {
            let mut retry = STARTUP_RETRY.start();
            loop {
                match registration.arn().await {
                    Ok(_) => break,
                    Err(e) if e.kind().is_retryable() && retry.may_retry() => {
                        tracing::warn!(error = %e, "enhanced fan-out consumer not ready; retrying");
                        tokio::time::sleep(retry.next_delay().unwrap_or_default()).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        tracing::info!(stream = %self.config.stream, table = %self.config.table_name, retrieval = ?self.config.retrieval_mode, "worker started");
        Ok(())
    }

    /// Start a consumer for every held lease tenure that has none.
    fn reconcile(
        &self,
        shards: &mut Shards,
        held: &HeldLeases,
        consumers_stop: &CancellationToken,
    ) {
        let now = Instant::now();
        for (key, tenure) in held.iter() {
            let id = (key.clone(), tenure.token);
            // A snapshot can lag behind the coordinator (a take round publishes when it ends):
            // a tenure already over must not get a consumer, which would end at once and be
            // started again, in a busy loop, until the next snapshot.
            if tenure.lost.is_cancelled()
                || shards.running.contains_key(key)
                || shards.ended.contains(&id)
                || shards.restart_at.get(&id).is_some_and(|t| *t > now)
            {
                continue;
            }
            shards.restart_at.remove(&id);
            let ctx = ShardContext {
                coordinator: self.coordinator.clone(),
                stream: self.stream.clone(),
                stream_id: self.stream_id.clone(),
                config: self.config.clone(),
                prefetch_budget: self.prefetch_budget.clone(),
                fan_out: self.fan_out.clone(),
                skipped_records: self.skipped_records.clone(),
            };
            let redelivery = shards
                .redelivery
                .entry(id.clone())
                .or_insert_with(Redelivery::shared)
                .clone();
            let processor = self.factory.create(key);
            let stop = consumers_stop.child_token();
            let tenure = tenure.clone();
            shards.running.insert(key.clone(), tenure.token);
            shards.tasks.spawn(async move {
                let id = (tenure.lease.key.clone(), tenure.token);
                let exit =
                    AssertUnwindSafe(run_shard_with(ctx, tenure, processor, stop, redelivery))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            telemetry::ShardMetrics::new(&id.0)
                                .restart(names::CAUSE_CONSUMER_PANIC);
                            ShardExit::Failed("shard consumer panicked".into())
                        });
                (id, exit)
            });
        }
        let current = |(k, t): &ShardTaskId| held.get(k).is_some_and(|h| h.token == *t);
        shards.ended.retain(current);
        // A restart pending for a tenure that ended would stay due forever: the run loop would
        // wake at once, every time (a busy loop).
        shards.restart_at.retain(|id, _| current(id));
        shards.redelivery.retain(|id, _| current(id));
    }
}

/// Retries of each start-up step (lease table creation, the first shard sync): eleven attempts,
/// from 500 ms doubling up to 10 s (about a minute in all).
const STARTUP_RETRY: RetryPolicy =
    RetryPolicy::new(11, Duration::from_millis(500), Duration::from_secs(10));

/// The fan-out consumer's lasting failure; never, without one.
async fn fan_out_failed(registration: Option<&ConsumerRegistration>) -> ConsumerRegistrationError {
    match registration {
        Some(r) => r.failed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

type ShardTaskId = (String, Uuid);

/// The consumers this worker runs.
#[derive(Default)]
struct Shards {
    tasks: JoinSet<(ShardTaskId, ShardExit)>,
    /// Lease key → tenure token of its running consumer (one consumer per shard at a time).
    running: BTreeMap<String, Uuid>,
    /// Tenures whose shard ended: no new consumer.
    ended: BTreeSet<ShardTaskId>,
    /// Tenures whose consumer failed: restart after the backoff.
    restart_at: BTreeMap<ShardTaskId, Instant>,
    /// What failed in each tenure, handed from a failed consumer to its replacement.
    redelivery: BTreeMap<ShardTaskId, SharedRedelivery>,
}

impl Shards {
    fn finished(
        &mut self,
        done: Result<(ShardTaskId, ShardExit), tokio::task::JoinError>,
        backoff: Duration,
        max_backoff: Duration,
    ) {
        // Tasks catch their own panics, so an error here means the task was aborted.
        let Ok((id, exit)) = done else { return };
        if self.running.get(&id.0) == Some(&id.1) {
            self.running.remove(&id.0);
        }
        match exit {
            ShardExit::ShardEnded => {
                self.ended.insert(id);
            }
            ShardExit::Failed(why) => {
                // The backoff grows with each failure on the same records.
                let backoff = self
                    .redelivery
                    .get(&id)
                    .map_or(backoff, |r| r.lock().restart_delay(backoff, max_backoff));
                tracing::warn!(shard_id = %id.0, %why, ?backoff, "restarting shard from its last checkpoint");
                self.restart_at.insert(id, Instant::now() + backoff);
            }
            ShardExit::LeaseLost | ShardExit::Shutdown => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpointer::Checkpointer;
    use crate::processor::{
        InitializationInput, ProcessRecordsInput, ProcessorError, RecordProcessor, Shutdown,
    };
    use crate::retrieval::StreamRef;
    use crate::testing::lease_store::{Fault, InMemoryLeaseStore, LeaseOp};
    use crate::testing::stream::{InMemoryStream, StreamFault, StreamOp};

    struct Noop;

    #[async_trait::async_trait]
    impl RecordProcessor for Noop {
        async fn initialize(&mut self, _: InitializationInput) -> Result<(), ProcessorError> {
            Ok(())
        }
        async fn process_records(
            &mut self,
            _: ProcessRecordsInput,
            _: &mut Checkpointer,
        ) -> Result<(), ProcessorError> {
            Ok(())
        }
        async fn shutdown(&mut self, _: Shutdown<'_>) -> Result<(), ProcessorError> {
            Ok(())
        }
    }

    fn scheduler(
        stream: &InMemoryStream,
        store: &InMemoryLeaseStore,
    ) -> Scheduler<impl RecordProcessorFactory> {
        let config = Config::builder("app", StreamRef::Name("s".into()))
            .worker_id("w")
            .build()
            .unwrap();
        Scheduler::new(
            config,
            |_: &str| Noop,
            Arc::new(stream.clone()),
            Arc::new(store.clone()),
        )
    }

    /// How long `run` takes to return when shutdown is signalled one second into start-up.
    async fn time_to_stop(s: Scheduler<impl RecordProcessorFactory>, by_handle: bool) -> Duration {
        let handle = s.handle();
        let start = Instant::now();
        let signal = async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if by_handle {
                handle.request_shutdown();
                std::future::pending::<()>().await
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(600), s.run(signal))
            .await
            .expect("run must return after the shutdown signal");
        assert!(
            result.is_ok(),
            "a shutdown during start-up is not an error: {result:?}"
        );
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_table_creation_stops_at_once() {
        for (fault, by_handle) in [
            (Fault::Timeout, false),
            (Fault::Delay(Duration::from_secs(3600)), false),
            (Fault::Timeout, true),
        ] {
            let stream = InMemoryStream::new("s", 2);
            let store = InMemoryLeaseStore::new();
            store.set_fault_injector(Some(Arc::new(move |op: LeaseOp, _: Option<&str>| {
                (op == LeaseOp::CreateTable).then_some(fault)
            })));
            let took = time_to_stop(scheduler(&stream, &store), by_handle).await;
            assert!(
                took < Duration::from_millis(1100),
                "{fault:?}: took {took:?}"
            );
            assert!(store.snapshot().is_empty(), "no lease may be created");
        }
    }

    /// Records each shard's deliveries (and the shard of every batch, in delivery order);
    /// checkpoints every batch and at shard end.
    #[derive(Clone, Default)]
    struct Journal(
        Arc<crate::sync::Mutex<BTreeMap<String, Vec<String>>>>,
        Arc<crate::sync::Mutex<Vec<String>>>,
    );

    struct Recording {
        shard: String,
        journal: Journal,
    }

    #[async_trait::async_trait]
    impl RecordProcessor for Recording {
        async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
            // The processor is told its stream (from the configuration) and its shard; a
            // panic here fails every delivery, and with it the test.
            assert_eq!(input.stream, StreamIdentifier::single("s"));
            assert_eq!(input.shard_id, self.shard);
            Ok(())
        }
        async fn process_records(
            &mut self,
            input: ProcessRecordsInput,
            cp: &mut Checkpointer,
        ) -> Result<(), ProcessorError> {
            assert_eq!(input.stream.name(), "s");
            assert_eq!(&*input.shard_id, self.shard);
            {
                let mut j = self.journal.0.lock();
                let log = j.entry(self.shard.clone()).or_default();
                log.extend(input.records.iter().map(|r| r.sequence_number.to_string()));
                if !input.records.is_empty() {
                    self.journal.1.lock().push(self.shard.clone());
                }
            }
            Ok(cp.checkpoint().await?)
        }
        async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
            if let Shutdown::ShardEnded { checkpointer } | Shutdown::Requested { checkpointer } =
                reason
            {
                checkpointer.checkpoint().await?;
            }
            Ok(())
        }
    }

    /// A fan-out worker registers its consumer at start and reads every shard by
    /// subscription (no GetRecords at all), through a split and a merge: every record once,
    /// in order per shard, children after their parents.
    #[tokio::test(start_paused = true)]
    async fn a_fan_out_worker_reads_every_shard_by_subscription_through_reshards() {
        let stream = InMemoryStream::new("s", 2);
        let store = InMemoryLeaseStore::new();
        let journal = Journal::default();
        let config = Config::builder("app", StreamRef::Name("s".into()))
            .worker_id("w")
            .initial_position(crate::InitialPosition::TrimHorizon)
            .retrieval_mode(RetrievalMode::FanOut)
            .parent_shard_poll_interval(Duration::from_millis(500))
            .shard_sync_interval(Duration::from_secs(2))
            .build()
            .unwrap();
        let factory = {
            let journal = journal.clone();
            move |shard: &str| Recording {
                shard: shard.to_string(),
                journal: journal.clone(),
            }
        };
        let scheduler = Scheduler::new(
            config,
            factory,
            Arc::new(stream.clone()),
            Arc::new(store.clone()),
        );
        let handle = scheduler.handle();
        let task = tokio::spawn(scheduler.run(std::future::pending()));
        let mut put: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut produce = |n: usize| {
            for i in 0..n {
                let (shard, seq) = stream.put(&format!("k{i}"), b"x");
                put.entry(shard).or_default().push(seq);
            }
        };
        produce(40);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let shards = stream.shards();
        let (a, b) = stream
            .split(&shards[0].shard_id, shards[0].hash_key_range.end / 2)
            .unwrap();
        produce(40);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let merged = stream.merge(&a, &b).unwrap();
        produce(40);
        let delivered = || journal.0.lock().values().map(Vec::len).sum::<usize>();
        let deadline = Instant::now() + Duration::from_secs(600);
        while delivered() < 120 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            *journal.0.lock(),
            put,
            "every record once, in order per shard"
        );
        assert!(
            put.contains_key(&merged),
            "records reached the merged child"
        );
        let order = journal.1.lock().clone();
        let first = |s: &str| order.iter().position(|x| x == s).unwrap();
        let last = |s: &str| order.iter().rposition(|x| x == s).unwrap();
        for (parent, child) in [
            (&shards[0].shard_id, &a),
            (&shards[0].shard_id, &b),
            (&a, &merged),
            (&b, &merged),
        ] {
            assert!(
                last(parent) < first(child),
                "{parent} finished before {child} started"
            );
        }
        assert_eq!(stream.get_records_calls(), 0, "no polling");
        let consumers = stream.consumers();
        assert_eq!(consumers.len(), 1);
        assert_eq!(consumers[0].consumer_name, "app");
        handle.request_shutdown();
        task.await.unwrap().unwrap();
    }

    /// A configured consumer ARN that names no consumer stops the worker at start with an
    /// error saying so (no lease is taken).
    #[tokio::test(start_paused = true)]
    async fn an_unknown_consumer_arn_stops_the_worker_at_start() {
        let stream = InMemoryStream::new("s", 1);
        let store = InMemoryLeaseStore::new();
        let config = Config::builder("app", StreamRef::Name("s".into()))
            .worker_id("w")
            .retrieval_mode(RetrievalMode::FanOut)
            .fan_out(crate::FanOutConfig {
                consumer_arn: Some(
                    "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/nope:1".into(),
                ),
                ..Default::default()
            })
            .build()
            .unwrap();
        let scheduler = Scheduler::new(
            config,
            |_: &str| Noop,
            Arc::new(stream.clone()),
            Arc::new(store.clone()),
        );
        let err = tokio::time::timeout(
            Duration::from_secs(600),
            scheduler.run(std::future::pending()),
        )
        .await
        .expect("the worker gives up")
        .unwrap_err();
        assert!(matches!(err, SchedulerError::FanOutConsumer(_)), "{err}");
        assert!(
            err.to_string().contains("no stream consumer has the ARN"),
            "{err}"
        );
        assert!(store.snapshot().values().all(|l| l.owner.is_none()));
    }

    /// A fan-out worker (`app`, TRIM_HORIZON) on `stream` whose processors record into
    /// `journal` and checkpoint every batch.
    fn fan_out_worker(
        stream: &InMemoryStream,
        store: &InMemoryLeaseStore,
        journal: &Journal,
        fan_out: crate::FanOutConfig,
    ) -> Scheduler<impl RecordProcessorFactory> {
        let config = Config::builder("app", StreamRef::Name("s".into()))
            .worker_id("w")
            .initial_position(crate::InitialPosition::TrimHorizon)
            .retrieval_mode(RetrievalMode::FanOut)
            .fan_out(fan_out)
            .build()
            .unwrap();
        let journal = journal.clone();
        let factory = move |shard: &str| Recording {
            shard: shard.to_string(),
            journal: journal.clone(),
        };
        Scheduler::new(
            config,
            factory,
            Arc::new(stream.clone()),
            Arc::new(store.clone()),
        )
    }

    /// Put `n` records (spread over the shards by key), adding their sequence numbers to
    /// `put`, by shard.
    fn put_records(stream: &InMemoryStream, put: &mut BTreeMap<String, Vec<String>>, n: usize) {
        for i in 0..n {
            let (shard, seq) = stream.put(&format!("k{i}"), b"x");
            put.entry(shard).or_default().push(seq);
        }
    }

    fn delivered(journal: &Journal) -> usize {
        journal.0.lock().values().map(Vec::len).sum()
    }

    /// Wait until `done`, at most `limit`; whether it happened.
    async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !done() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// Wait until the worker's `task` ends (at most `limit`), checking its readiness every
    /// 100 ms: once false it must stay false. The time it took.
    async fn wait_for_the_worker_to_stop<T>(
        task: &tokio::task::JoinHandle<T>,
        handle: &SchedulerHandle,
        limit: Duration,
    ) -> Duration {
        let start = Instant::now();
        let mut not_ready = false;
        while !task.is_finished() && start.elapsed() < limit {
            let ready = handle.health().ready;
            assert!(!(ready && not_ready), "ready again after it was not");
            not_ready |= !ready;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            task.is_finished(),
            "the worker still runs {limit:?} after its consumer was deleted, holding {:?}, health: {}",
            handle.held_shards(),
            handle.health()
        );
        start.elapsed()
    }

    /// After the worker stopped: it is neither ready nor live, its leases are released (so
    /// other workers take them at once) and checkpointed at the last record each processor
    /// got, which is every record `put`.
    fn assert_stopped_cleanly(
        handle: &SchedulerHandle,
        store: &InMemoryLeaseStore,
        journal: &Journal,
        put: &BTreeMap<String, Vec<String>>,
    ) {
        let health = handle.health();
        assert!(!health.ready && !health.live && health.stopped, "{health}");
        assert_eq!(*journal.0.lock(), *put, "every record once, in order");
        let leases = store.snapshot();
        for (shard, seqs) in put {
            let lease = &leases[shard];
            assert_eq!(lease.owner, None, "{shard} released");
            assert_eq!(
                Some(lease.checkpoint.stored_value()),
                seqs.last().map(String::as_str),
                "{shard} checkpointed"
            );
        }
    }

    /// A stream consumer configured by ARN that is deleted while the worker reads through it
    /// is not registered again (the worker was told to use that one): the worker stops, not
    /// ready from when it noticed, with an error naming the ARN, after its processors
    /// checkpointed and with its leases released, so that other workers take the shards at
    /// once. (It used to retry every shard every 10 s forever, renewing its leases and ready.)
    #[tokio::test(start_paused = true)]
    async fn a_deleted_consumer_given_by_arn_stops_the_worker_and_releases_its_leases() {
        let stream = InMemoryStream::new("s", 4);
        stream.set_consumer_activation_delay(Duration::ZERO);
        let arn = stream
            .register_stream_consumer("external")
            .await
            .unwrap()
            .consumer_arn;
        let (store, journal) = (InMemoryLeaseStore::new(), Journal::default());
        let fan_out = crate::FanOutConfig {
            consumer_arn: Some(arn.clone()),
            ..Default::default()
        };
        let scheduler = fan_out_worker(&stream, &store, &journal, fan_out);
        let handle = scheduler.handle();
        let task = tokio::spawn(scheduler.run(std::future::pending()));
        let mut put = BTreeMap::new();
        put_records(&stream, &mut put, 40);
        assert!(wait_for(Duration::from_secs(120), || delivered(&journal) == 40).await);
        assert!(handle.health().ready, "{}", handle.health());
        assert!(stream.deregister_consumer("external"));
        let took = wait_for_the_worker_to_stop(&task, &handle, Duration::from_secs(600)).await;
        assert!(
            took < Duration::from_secs(30),
            "stopped {took:?} after the deletion"
        );
        let err = task.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, SchedulerError::FanOutConsumerDeleted { consumer_arn } if *consumer_arn == arn),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&arn) && text.contains("deleted"), "{text}");
        assert_stopped_cleanly(&handle, &store, &journal, &put);
    }

    /// A stream consumer registered by name that is deleted is registered again, once for
    /// all the worker's shards, and every shard goes on where it was: every record once, in
    /// order; the worker stays ready (it can read).
    #[tokio::test(start_paused = true)]
    async fn a_deleted_consumer_registered_by_name_is_registered_again_once_for_every_shard() {
        let stream = InMemoryStream::new("s", 4);
        let registers = stream.count_calls(StreamOp::RegisterStreamConsumer);
        let (store, journal) = (InMemoryLeaseStore::new(), Journal::default());
        let scheduler = fan_out_worker(&stream, &store, &journal, Default::default());
        let handle = scheduler.handle();
        let task = tokio::spawn(scheduler.run(std::future::pending()));
        let mut put = BTreeMap::new();
        put_records(&stream, &mut put, 40);
        assert!(wait_for(Duration::from_secs(120), || delivered(&journal) == 40).await);
        let first = stream.consumers()[0].consumer_arn.clone();
        assert!(stream.deregister_consumer("app"));
        // (A new registration in the same second would get the same ARN.)
        tokio::time::sleep(Duration::from_secs(1)).await;
        put_records(&stream, &mut put, 40);
        assert!(wait_for(Duration::from_secs(120), || delivered(&journal) == 80).await);
        assert_eq!(*journal.0.lock(), put, "every record once, in order");
        let consumers = stream.consumers();
        assert_eq!(consumers.len(), 1);
        assert_ne!(consumers[0].consumer_arn, first, "registered again");
        assert_eq!(registers.load(Ordering::SeqCst), 2, "registered again once");
        assert_eq!(
            stream.subscribed_shards(&consumers[0].consumer_arn).len(),
            4,
            "every shard subscribed with the new consumer"
        );
        assert!(handle.health().ready, "{}", handle.health());
        handle.request_shutdown();
        task.await.unwrap().unwrap();
    }

    /// A stream consumer registered by name that is deleted and cannot be registered again
    /// (a permission is missing: retrying does not help) stops the worker as a deleted
    /// consumer given by ARN does, with the registration's error.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_consumer_that_cannot_be_registered_again_stops_the_worker() {
        let stream = InMemoryStream::new("s", 2);
        let (store, journal) = (InMemoryLeaseStore::new(), Journal::default());
        let scheduler = fan_out_worker(&stream, &store, &journal, Default::default());
        let handle = scheduler.handle();
        let task = tokio::spawn(scheduler.run(std::future::pending()));
        let mut put = BTreeMap::new();
        put_records(&stream, &mut put, 20);
        assert!(wait_for(Duration::from_secs(120), || delivered(&journal) == 20).await);
        stream.set_fault_injector(Some(Arc::new(|op: StreamOp, _: Option<&str>| {
            (op == StreamOp::RegisterStreamConsumer).then_some(StreamFault::AccessDenied)
        })));
        assert!(stream.deregister_consumer("app"));
        let took = wait_for_the_worker_to_stop(&task, &handle, Duration::from_secs(600)).await;
        assert!(
            took < Duration::from_secs(30),
            "stopped {took:?} after the deletion"
        );
        let err = task.await.unwrap().unwrap_err();
        assert!(
            matches!(
                &err,
                SchedulerError::FanOutConsumer(ConsumerRegistrationError::Call { .. })
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("AccessDenied"), "{text}");
        assert_stopped_cleanly(&handle, &store, &journal, &put);
    }

    /// A configured consumer ARN of another account or region than the stream's (the same
    /// stream name: the configuration cannot tell) is refused at start, before any call
    /// about the consumer, with an error saying which part differs.
    #[tokio::test(start_paused = true)]
    async fn a_consumer_arn_of_another_account_or_region_is_refused_at_start() {
        for (arn, part) in [
            (
                "arn:aws:kinesis:us-east-1:111111111111:stream/s/consumer/app:1",
                "account",
            ),
            (
                "arn:aws:kinesis:eu-west-1:000000000000:stream/s/consumer/app:1",
                "region",
            ),
        ] {
            let stream = InMemoryStream::new("s", 1);
            let describes = stream.count_calls(StreamOp::DescribeStreamConsumer);
            let (store, journal) = (InMemoryLeaseStore::new(), Journal::default());
            let fan_out = crate::FanOutConfig {
                consumer_arn: Some(arn.into()),
                ..Default::default()
            };
            let scheduler = fan_out_worker(&stream, &store, &journal, fan_out);
            let err = tokio::time::timeout(
                Duration::from_secs(600),
                scheduler.run(std::future::pending()),
            )
            .await
            .expect("the worker gives up")
            .unwrap_err();
            assert!(
                matches!(
                    &err,
                    SchedulerError::FanOutConsumer(ConsumerRegistrationError::OtherStream { mismatch, .. })
                        if *mismatch == part
                ),
                "{err}"
            );
            let text = err.to_string();
            assert!(text.contains(&format!("{part} differs")), "{text}");
            assert_eq!(describes.load(Ordering::SeqCst), 0, "{arn}");
            assert!(store.snapshot().values().all(|l| l.owner.is_none()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_the_first_shard_sync_stops_at_once() {
        for fault in [
            StreamFault::Timeout,
            StreamFault::Delay(Duration::from_secs(3600)),
        ] {
            let stream = InMemoryStream::new("s", 2);
            stream.set_fault_injector(Some(Arc::new(move |op: StreamOp, _: Option<&str>| {
                (op == StreamOp::ListShards).then_some(fault)
            })));
            let store = InMemoryLeaseStore::new();
            let took = time_to_stop(scheduler(&stream, &store), false).await;
            assert!(
                took < Duration::from_millis(1100),
                "{fault:?}: took {took:?}"
            );
        }
    }
}
