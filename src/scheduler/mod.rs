//! The worker: leases shards, runs a consumer per held lease, shuts down gracefully.

pub(crate) mod streams;
mod tracker;

pub use streams::StreamClients;

use crate::aws::{dynamodb_client, kinesis_client, Endpoints};
use crate::backoff::RetryPolicy;
use crate::config::{Config, ConfigError};
use crate::consumer::redelivery::{Redelivery, SharedRedelivery};
use crate::consumer::{run_shard_with, ShardContext, ShardExit};
use crate::coordinator::{CoordinatorConfig, HeldLeases, LeaseCoordinator};
use crate::fleet::{ClientVersionConfig, Fleet, FleetError, FleetSettings, FleetStore};
use crate::lease::{DynamoDbLeaseStore, LeaseStore, LeaseStoreError};
use crate::multi_stream::{StreamConfig, TrackerError};
use crate::processor::RecordProcessorFactory;
use crate::resharding::sync::sync_stream_shards_within;
use crate::resharding::{periodic_cleanup, periodic_shard_sync, ShardSyncError};
use crate::retrieval::source::PrefetchBudget;
use crate::retrieval::{ConsumerRegistrationError, KinesisStreamClient, StreamClient, StreamRef};
use crate::status::WorkerStatus;
use crate::telemetry::{self, names, Health};
use futures::FutureExt;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use streams::{ActiveStream, StreamSet};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracker::Tracker;
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
    /// A multi-stream application's [`MultiStreamTracker`](crate::multi_stream::MultiStreamTracker)
    /// failed at start, for about a minute (later failures keep the streams of the moment).
    #[error("the stream tracker cannot name the streams to consume: {0}")]
    StreamTracker(#[source] TrackerError),
    /// The worker was built for another kind of configuration (e.g. [`Scheduler::new`], which
    /// takes one stream client, with a multi-stream configuration).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The fleet's KCL 3.x items (its `Migration3.0` item, the lease table's owner index)
    /// could not be read or written at start, for about a minute.
    #[error("cannot tell which protocol the fleet runs: {0}")]
    Fleet(#[source] FleetError),
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

    /// The shards whose leases this worker holds now, by lease key (the shard id; for a
    /// multi-stream application `account:stream:epoch:shardId`, see
    /// [`StreamIdentifier::split_lease_key`](crate::StreamIdentifier::split_lease_key)). For
    /// monitoring and tests: a lease can be lost at any moment, so this is a snapshot, not a
    /// promise.
    pub fn held_shards(&self) -> BTreeSet<String> {
        self.coordinator.held_keys()
    }

    /// What this worker sees of itself and of the lease table (for the status page; see
    /// [`status`](crate::status)). A snapshot from memory: it calls no AWS API.
    pub fn status(&self) -> WorkerStatus {
        let mut status = self.coordinator.status();
        status.skipped_records = self.skipped_records();
        status
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
    /// The streams consumed now.
    streams: StreamSet,
    /// Builds the clients of a multi-stream application's streams.
    clients: Option<Arc<dyn StreamClients>>,
    /// Why the worker cannot run, found when it was built.
    misconfigured: Option<ConfigError>,
    /// This worker's part in a KCL 3.x fleet, when its lease store has the fleet's items.
    fleet: Option<Arc<Fleet>>,
    graceful: CancellationToken,
    prefetch_budget: PrefetchBudget,
    skipped_records: Arc<AtomicU64>,
}

impl<F: RecordProcessorFactory> std::fmt::Debug for Scheduler<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("worker_id", &self.config.worker_id)
            .field("streams", &self.config.streams)
            .finish()
    }
}

impl<F: RecordProcessorFactory> Scheduler<F> {
    /// A single-stream worker over explicit stream and lease-store implementations (a
    /// multi-stream one: [`Scheduler::multi_stream`]; given a multi-stream configuration,
    /// [`run`](Scheduler::run) returns [`SchedulerError::Config`]).
    pub fn new(
        config: Config,
        factory: F,
        stream: Arc<dyn StreamClient>,
        store: Arc<dyn LeaseStore>,
    ) -> Self {
        let misconfigured = config.is_multi_stream().then(|| ConfigError {
            setting: "streams",
            message: "a multi-stream configuration needs a client per stream: build the worker with Scheduler::multi_stream or Scheduler::from_sdk_config".into(),
        });
        let streams = StreamSet::new(
            (!config.is_multi_stream()).then(|| ActiveStream::single(&config, stream)),
        );
        let mut s = Self::build(config, factory, streams, None, store);
        s.misconfigured = misconfigured;
        s
    }

    /// A multi-stream worker (a configuration from
    /// [`Config::multi_stream_builder`]) over explicit lease-store and stream
    /// implementations: `clients` gives each stream's. Given a single-stream configuration,
    /// it reads that stream with the client `clients` gives for it.
    pub fn multi_stream(
        config: Config,
        factory: F,
        clients: impl StreamClients,
        store: Arc<dyn LeaseStore>,
    ) -> Self {
        match (!config.is_multi_stream()).then(|| config.stream().clone()) {
            Some(stream) => {
                let id = crate::StreamIdentifier::single(stream.name());
                let mut one = StreamConfig::new(id, config.initial_position);
                if let StreamRef::Arn(arn) = &stream {
                    one = one.with_stream_arn(arn.clone());
                }
                let client = clients.client(&one);
                Self::new(config, factory, client, store)
            }
            None => Self::build(
                config,
                factory,
                StreamSet::new([]),
                Some(Arc::new(clients)),
                store,
            ),
        }
    }

    fn build(
        config: Config,
        factory: F,
        streams: StreamSet,
        clients: Option<Arc<dyn StreamClients>>,
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
                multi_stream: config.is_multi_stream(),
                discovery_interval: config.fleet.lease_discovery_interval,
                handoff_timeout: config.fleet.graceful_lease_handoff_timeout,
                graceful_steals: config.fleet.graceful_lease_handoff_enabled,
                balance_by_load: config.lease_assignment_strategy
                    == crate::config::LeaseAssignmentStrategy::Throughput,
            },
        );
        if config.is_multi_stream() {
            // Nothing is taken before the tracker named the streams.
            coordinator.track_streams(Default::default());
        }
        let fleet = coordinator
            .store()
            .fleet_store(&config.application_name, &config.fleet)
            .map(|store| {
                Arc::new(Fleet::new(
                    store,
                    fleet_settings(&config),
                    coordinator.clone(),
                ))
            });
        let misconfigured = (fleet.is_none()
            && config.fleet.client_version_config != ClientVersionConfig::Auto)
            .then(|| ConfigError {
                setting: "fleet.client_version_config",
                message: format!(
                    "{:?} needs a lease store with a KCL 3.x fleet store (DynamoDbLeaseStore has one; see Scheduler::with_fleet_store)",
                    config.fleet.client_version_config
                ),
            });
        Scheduler {
            streams,
            clients,
            misconfigured,
            fleet,
            prefetch_budget: PrefetchBudget::new(config.max_prefetch_bytes_per_worker),
            config: Arc::new(config),
            factory: Arc::new(factory),
            coordinator,
            graceful: CancellationToken::new(),
            skipped_records: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A worker on Kinesis and DynamoDB, with clients built from `sdk_config` (e.g. from
    /// `aws_config::load_from_env()`; see [`aws`](crate::aws) for the credential providers)
    /// and optional endpoint overrides; single- or multi-stream, as `config` is.
    pub fn from_sdk_config(
        config: Config,
        factory: F,
        sdk_config: &aws_types::SdkConfig,
        endpoints: &Endpoints,
    ) -> Self {
        let kinesis = kinesis_client(sdk_config, endpoints.kinesis.as_deref());
        let store = Arc::new(DynamoDbLeaseStore::new(
            dynamodb_client(sdk_config, endpoints.dynamodb.as_deref()),
            config.table_name.clone(),
        ));
        let clients = move |s: &StreamConfig| -> Arc<dyn StreamClient> {
            Arc::new(KinesisStreamClient::new(kinesis.clone(), s.stream_ref()))
        };
        Self::multi_stream(config, factory, clients, store)
    }

    /// Keep this application's KCL 3.x fleet items in `store` (instead of the lease store's
    /// own, [`LeaseStore::fleet_store`]): the leader's lock, the `Migration3.0` item and the
    /// workers' metrics rows.
    pub fn with_fleet_store(mut self, store: Arc<dyn FleetStore>) -> Self {
        self.fleet = Some(Arc::new(Fleet::new(
            store,
            fleet_settings(&self.config),
            self.coordinator.clone(),
        )));
        if self
            .misconfigured
            .as_ref()
            .is_some_and(|e| e.setting == "fleet.client_version_config")
        {
            self.misconfigured = None;
        }
        self
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
    /// checkpoint, leases are released for other workers) and returns that error. In a
    /// multi-stream application the worker runs on instead: that stream's shards fail and
    /// restart with the task backoff (logged), and the other streams go on.
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
        mut self,
        shutdown_signal: impl Future<Output = ()>,
    ) -> Result<(), SchedulerError> {
        if let Some(e) = self.misconfigured.take() {
            return Err(e.into());
        }
        tokio::pin!(shutdown_signal);
        let mut tracker = self.tracker();
        // Start-up (table creation, the first shard sync) retries for a while when the services
        // are unreachable; a shutdown request must not wait for it. Nothing is held yet, so
        // there is nothing to release: stop at once.
        tokio::select! {
            biased;
            _ = &mut shutdown_signal => return self.stopped_during_startup(),
            _ = self.graceful.cancelled() => return self.stopped_during_startup(),
            started = self.initialize(tracker.as_mut()) => {
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
        if let Some(fleet) = self.fleet.clone() {
            let s = stop.clone();
            background.spawn(async move { fleet.run(s).await });
        }
        background.spawn(periodic_shard_sync(
            self.streams.clone(),
            self.coordinator.clone(),
            self.config.clone(),
            stop.clone(),
        ));
        if self.config.cleanup_leases_upon_shard_completion {
            background.spawn(periodic_cleanup(
                self.coordinator.clone(),
                self.streams.clone(),
                self.config.clone(),
                stop.clone(),
            ));
        }
        if let Some(tracker) = tracker {
            background.spawn(tracker::every_interval(
                tracker,
                self.config.stream_tracker_interval,
                stop.clone(),
            ));
        }
        let mut shards = Shards::default();
        let consumers_stop = CancellationToken::new();
        let mut held_rx = self.coordinator.subscribe();
        let mut streams_rx = self.streams.subscribe();
        // Why the worker stops on its own (its fan-out consumer is gone for good), if it does.
        let mut failure = None;
        loop {
            // Marked seen before the set is read: a change made meanwhile wakes the loop.
            streams_rx.borrow_and_update();
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
                _ = streams_rx.changed() => {}
                Some(done) = shards.tasks.join_next() => shards.finished(done, self.config.task_backoff, self.config.max_task_backoff),
                _ = sleep_until_opt(next_restart) => {}
                e = self.streams.fan_out_failed(), if !self.config.is_multi_stream() => {
                    tracing::error!(error = %e, "the enhanced fan-out consumer is gone for good: stopping the worker (processors shut down as requested, leases released for other workers)");
                    failure = Some(e);
                    break;
                }
            }
        }
        tracing::info!(shards = shards.running.len(), timeout = ?self.config.graceful_shutdown_timeout, "graceful shutdown: asking processors to checkpoint");
        self.coordinator.health_state().shutting_down();
        self.coordinator.stop_taking();
        if let Some(fleet) = &self.fleet {
            fleet.begin_leaving().await;
        }
        let drain = self.hand_over_before_stopping().await;
        consumers_stop.cancel();
        let drained = tokio::time::timeout(drain, async {
            while let Some(done) = shards.tasks.join_next().await {
                shards.finished(done, self.config.task_backoff, self.config.max_task_backoff);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(shards = ?shards.running.keys().collect::<Vec<_>>(), "graceful shutdown timed out; stopping the remaining processors");
            shards.tasks.shutdown().await;
        }
        let receivers = match &self.fleet {
            Some(fleet) => fleet.receivers_for(self.coordinator.held().len()).await,
            None => Vec::new(),
        };
        self.coordinator.release_all_to(receivers).await;
        if self.fleet.is_some() {
            // A lease assigned to this worker as it stopped, never adopted.
            self.coordinator.pass_on_unheld().await;
        }
        self.coordinator.give_back_incoming().await;
        stop.cancel();
        while background.join_next().await.is_some() {}
        tracing::info!("worker stopped");
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// A leaderless worker leaving a fleet of live workers names each lease's next owner, and
    /// keeps processing until every other worker has scanned the table since (a take interval;
    /// at most half the graceful-shutdown timeout): the processors then checkpoint and the
    /// leases pass on, and the next owners, already watching, start within a look at the lease.
    /// Not in a fleet with a `Migration3.0` item (a Java KCL 3.x worker in its 2.x-compatible
    /// mode does not adopt a lease passed to it: released with no owner, it is taken at once).
    /// Returns how long the processors may then take to finish: what is left of the
    /// graceful-shutdown timeout and, when leases were named, of the hand-off timeout (after
    /// it, plus the failover time, their next owners take them anyway).
    async fn hand_over_before_stopping(&self) -> Duration {
        let timeout = self.config.graceful_shutdown_timeout;
        if self
            .fleet
            .as_ref()
            .is_some_and(|f| f.client_version().is_some())
        {
            return timeout;
        }
        let started = Instant::now();
        let keep_processing = self.coordinator.announce_leaving().await;
        if keep_processing.is_zero() {
            return timeout;
        }
        let wait = keep_processing.min(timeout / 2);
        tracing::info!(
            ?wait,
            "leases named to their next owners: processing on until they watch them"
        );
        tokio::time::sleep(wait).await;
        timeout
            .min(self.config.fleet.graceful_lease_handoff_timeout)
            .saturating_sub(started.elapsed())
    }

    /// A multi-stream worker's tracker rounds.
    fn tracker(&self) -> Option<Tracker> {
        let tracker = self.config.multi_stream_tracker()?.clone();
        let clients = self.clients.clone()?;
        Some(Tracker::new(
            tracker,
            clients,
            self.config.clone(),
            self.coordinator.clone(),
            self.streams.clone(),
        ))
    }

    fn stopped_during_startup(&self) -> Result<(), SchedulerError> {
        tracing::info!("shutdown requested during start-up: stopping before any lease was taken");
        Ok(())
    }

    async fn initialize(&self, tracker: Option<&mut Tracker>) -> Result<(), SchedulerError> {
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
        if let Some(fleet) = &self.fleet {
            let mut retry = STARTUP_RETRY.start();
            loop {
                match fleet.start().await {
                    Ok(()) => break,
                    Err(e) if e.is_retryable() && retry.may_retry() => {
                        tracing::warn!(error = %e, "reading the fleet's protocol failed; retrying");
                        tokio::time::sleep(retry.next_delay().unwrap_or_default()).await;
                    }
                    Err(e) => return Err(SchedulerError::Fleet(e)),
                }
            }
        }
        if let Some(tracker) = tracker {
            // Each stream's shard sync and fan-out consumer: a failure is retried later, and
            // does not hold up the other streams.
            let mut retry = STARTUP_RETRY.start();
            loop {
                match tracker.round().await {
                    Ok(()) => break,
                    Err(e) if retry.may_retry() => {
                        tracing::warn!(error = %e, "the stream tracker failed; retrying");
                        tokio::time::sleep(retry.next_delay().unwrap_or_default()).await;
                    }
                    Err(e) => return Err(SchedulerError::StreamTracker(e)),
                }
            }
            tracing::info!(streams = ?self.streams.keys(), table = %self.config.table_name, retrieval = ?self.config.retrieval_mode, "multi-stream worker started");
            return Ok(());
        }
        for stream in self.streams.all() {
            let mut retry = STARTUP_RETRY.start();
            loop {
                match sync_stream_shards_within(
                    stream.client.as_ref(),
                    stream.lease_stream(),
                    store.as_ref(),
                    stream.initial_position,
                    self.config.failover_time,
                )
                .await
                {
                    Ok(n) => {
                        tracing::info!(created = n, stream = %self.config.streams, table = %self.config.table_name, "shard sync done");
                        break;
                    }
                    Err(e) if retry.may_retry() && !e.is_fatal() => {
                        tracing::warn!(error = %e, "shard sync failed; retrying");
                        tokio::time::sleep(retry.next_delay().unwrap_or_default()).await;
                    }
                    Err(e) => return Err(SchedulerError::ShardSync(e)),
                }
            }
            if let Some(registration) = &stream.fan_out {
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
        }
        tracing::info!(stream = %self.config.streams, table = %self.config.table_name, retrieval = ?self.config.retrieval_mode, "worker started");
        Ok(())
    }

    /// Start a consumer for every held lease tenure of a consumed stream that has none; stop
    /// the consumers of streams no longer consumed, and release their leases.
    fn reconcile(
        &self,
        shards: &mut Shards,
        held: &HeldLeases,
        consumers_stop: &CancellationToken,
    ) {
        let now = Instant::now();
        for (key, tenure) in held.iter() {
            let id = (key.clone(), tenure.token);
            let stream = self.streams.of_lease(&tenure.lease);
            if stream.is_none() || tenure.handoff.is_cancelled() {
                // No restart is due for it any more: a due one would wake the run loop at
                // once, every time (a busy loop) until the lease is released.
                shards.restart_at.remove(&id);
                let why = if stream.is_none() {
                    "stream no longer consumed"
                } else {
                    "lease being handed to another worker (a hand-off: its processor may checkpoint)"
                };
                self.let_go(shards, &id, why);
                continue;
            }
            let stream = stream.expect("checked above");
            // A snapshot can lag behind the coordinator (a take round publishes when it ends):
            // a tenure already over must not get a consumer, which would end at once and be
            // started again, in a busy loop, until the next snapshot.
            if tenure.lost.is_cancelled()
                || shards.running.contains_key(key)
                || shards.ended.contains(&id)
                || shards.released.contains(&id)
                || shards.restart_at.get(&id).is_some_and(|t| *t > now)
            {
                continue;
            }
            shards.restart_at.remove(&id);
            let ctx = ShardContext {
                coordinator: self.coordinator.clone(),
                stream: stream.client.clone(),
                stream_id: stream.id.clone(),
                initial_position: stream.initial_position,
                config: self.config.clone(),
                prefetch_budget: self.prefetch_budget.clone(),
                fan_out: stream.fan_out.clone(),
                skipped_records: self.skipped_records.clone(),
            };
            let redelivery = shards
                .redelivery
                .entry(id.clone())
                .or_insert_with(Redelivery::shared)
                .clone();
            let processor = self.factory.create(tenure.lease.shard_id());
            let stop = consumers_stop.child_token();
            let tenure = tenure.clone();
            shards
                .running
                .insert(key.clone(), (tenure.token, stop.clone()));
            let coordinator = self.coordinator.clone();
            shards.tasks.spawn(async move {
                let id = (tenure.lease.key.clone(), tenure.token);
                let exit =
                    AssertUnwindSafe(run_shard_with(ctx, tenure, processor, stop, redelivery))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            telemetry::ShardMetrics::new(&id.0)
                                .restart(names::CAUSE_CONSUMER_PANIC);
                            coordinator.record_restart(&id.0, "its shard consumer panicked");
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
        shards.released.retain(current);
    }

    /// A held lease of a stream no longer consumed, or one a hand-off moves to another
    /// worker: stop its consumer (its processor shuts down as requested, and may checkpoint),
    /// then release the lease (or complete the hand-off), once.
    fn let_go(&self, shards: &mut Shards, id: &ShardTaskId, why: &str) {
        if let Some((token, stop)) = shards.running.get(&id.0) {
            if *token == id.1 && !stop.is_cancelled() {
                tracing::info!(lease_key = %id.0, why, "shutting down its processor");
                stop.cancel();
            }
            return;
        }
        if shards.released.insert(id.clone()) {
            let coordinator = self.coordinator.clone();
            let (key, token) = id.clone();
            let release = async move { coordinator.release(&key, token).await };
            tokio::spawn(tracing::Instrument::in_current_span(release));
        }
    }
}

fn fleet_settings(config: &Config) -> FleetSettings {
    FleetSettings {
        worker_id: config.worker_id.clone(),
        failover_time: config.failover_time,
        max_leases_for_worker: config.max_leases_for_worker,
        config: config.fleet.clone(),
    }
}

/// Retries of each start-up step (lease table creation, the first shard sync, a multi-stream
/// application's tracker): eleven attempts, from 500 ms doubling up to 10 s (about a minute in
/// all).
const STARTUP_RETRY: RetryPolicy =
    RetryPolicy::new(11, Duration::from_millis(500), Duration::from_secs(10));

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
    /// Lease key → tenure token of its running consumer (one consumer per shard at a time),
    /// and what stops it.
    running: BTreeMap<String, (Uuid, CancellationToken)>,
    /// Tenures whose shard ended: no new consumer.
    ended: BTreeSet<ShardTaskId>,
    /// Tenures whose consumer failed: restart after the backoff.
    restart_at: BTreeMap<ShardTaskId, Instant>,
    /// What failed in each tenure, handed from a failed consumer to its replacement.
    redelivery: BTreeMap<ShardTaskId, SharedRedelivery>,
    /// Tenures of streams no longer consumed whose lease is being released.
    released: BTreeSet<ShardTaskId>,
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
        if self.running.get(&id.0).is_some_and(|(t, _)| *t == id.1) {
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
mod balance_tests;
#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod multi_tests;
#[cfg(test)]
mod status_tests;
#[cfg(test)]
mod tests;
