//! The shard consumer: runs one [`RecordProcessor`] over one lease tenure.
//!
//! The consumer is an explicit state machine ([`state`]); this module runs each state's task
//! and returns a [`ShardExit`] saying why it ended. It never decides anything about leases:
//! the coordinator signals loss through the tenure's `lost` token, the scheduler signals
//! graceful shutdown through `shutdown`.

pub mod redelivery;
pub mod state;

use crate::backoff::Backoff;
use crate::checkpoint::Checkpoint;
use crate::checkpointer::Checkpointer;
use crate::config::{Config, InitialPosition};
use crate::coordinator::{LeaseCoordinator, LeaseTenure};
use crate::lease::LeaseStore;
use crate::processor::{InitializationInput, ProcessRecordsInput, RecordProcessor, Shutdown};
use crate::processor::{ProcessorPanicked, RetriesExhausted, RetryDecision, SharedError};
use crate::record::{Record, Records};
use crate::resharding::create_child_leases;
use crate::retrieval::fanout::{self, ConsumerRegistration};
use crate::retrieval::fetcher::{self, FetcherConfig};
use crate::retrieval::source::{
    BufferConfig, FetchedBatch, PrefetchBudget, RecordSource, StartPosition,
};
use crate::retrieval::{ChildShard, IteratorPosition, StreamClient};
use crate::stream::StreamIdentifier;
use crate::telemetry::{self, names, ShardMetrics};
use futures::FutureExt;
use redelivery::{backoff_delay, Plan, SharedRedelivery};
use state::{initial_state, next_state, ShardState, ShutdownReason, TaskOutcome};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a shard consumer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardExit {
    /// The shard was fully processed and `SHARD_END` recorded; its children may start.
    ShardEnded,
    /// The lease was lost; another worker continues from the last checkpoint.
    LeaseLost,
    /// Graceful shutdown: the processor was told and could checkpoint.
    Shutdown,
    /// The processor panicked; the scheduler restarts the shard from its last checkpoint.
    Failed(String),
}

/// What a shard consumer needs from its worker.
#[derive(Debug, Clone)]
pub struct ShardContext {
    /// Holds the lease and writes checkpoints.
    pub coordinator: LeaseCoordinator,
    /// Reads the stream.
    pub stream: Arc<dyn StreamClient>,
    /// The stream, as the processors are told it.
    pub stream_id: StreamIdentifier,
    /// Where the stream's shards start without a checkpoint (its `AT_TIMESTAMP` time).
    pub initial_position: InitialPosition,
    /// The worker's settings.
    pub config: Arc<Config>,
    /// The worker's read-ahead byte budget, shared by its shards' record sources.
    pub prefetch_budget: PrefetchBudget,
    /// The worker's enhanced fan-out consumer: `Some` reads by SubscribeToShard, `None` polls.
    pub fan_out: Option<Arc<ConsumerRegistration>>,
    /// Records this worker skipped with the processors' consent (retry policy exhausted).
    pub skipped_records: Arc<AtomicU64>,
}

impl ShardContext {
    fn store(&self) -> &dyn LeaseStore {
        self.coordinator.store().as_ref()
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Run `processor` on the shard of `tenure` until the shard ends, the lease is lost, or
/// `shutdown` is cancelled (graceful shutdown).
#[cfg(test)]
pub async fn run_shard<P: RecordProcessor>(
    ctx: ShardContext,
    tenure: LeaseTenure,
    processor: P,
    shutdown: CancellationToken,
) -> ShardExit {
    run_shard_with(
        ctx,
        tenure,
        processor,
        shutdown,
        redelivery::Redelivery::shared(),
    )
    .await
}

/// [`run_shard`] with the tenure's `redelivery` state (shared with the consumers that ran
/// before this one in the same tenure, and with the one after it).
pub async fn run_shard_with<P: RecordProcessor>(
    ctx: ShardContext,
    tenure: LeaseTenure,
    processor: P,
    shutdown: CancellationToken,
    redelivery: SharedRedelivery,
) -> ShardExit {
    let shard_id = tenure.lease.shard_id().to_string();
    let span = tracing::info_span!(
        names::SPAN_SHARD,
        { names::FIELD_WORKER_ID } = %ctx.coordinator.worker_id(),
        { names::FIELD_SHARD_ID } = %shard_id
    );
    let ctx_task_backoff = ctx.config.task_backoff.max(Duration::from_millis(1));
    let mut consumer = Consumer {
        metrics: ShardMetrics::new(&tenure.lease.key),
        shard_id: shard_id.as_str().into(),
        ctx,
        tenure,
        processor,
        shutdown,
        initialized: false,
        fetcher: None,
        checkpointer: None,
        pending: VecDeque::new(),
        redelivery,
        children: None,
        waiting_logged: false,
        fetcher_restarts: Backoff::new(
            ctx_task_backoff,
            FETCHER_RESTART_MAX_BACKOFF.max(ctx_task_backoff),
        ),
    };
    tracing::Instrument::instrument(consumer.run(), span).await
}

struct Consumer<P> {
    metrics: ShardMetrics,
    /// The lease's shard id (what Kinesis knows it by), shared by every batch's input.
    shard_id: Arc<str>,
    ctx: ShardContext,
    tenure: LeaseTenure,
    processor: P,
    shutdown: CancellationToken,
    initialized: bool,
    fetcher: Option<RecordSource>,
    checkpointer: Option<Checkpointer>,
    /// Batches fetched and not accepted by the processor yet (the first one is redelivered
    /// after a failure).
    pending: VecDeque<Batch>,
    /// What failed before, in this tenure.
    redelivery: SharedRedelivery,
    children: Option<Vec<ChildShard>>,
    waiting_logged: bool,
    /// Delays between restarts of a fetcher task that died (reset by a delivered batch).
    fetcher_restarts: Backoff,
}

/// A batch on its way to the processor. Its records are shared with the processor's input,
/// so keeping it for redelivery copies nothing.
#[derive(Debug)]
struct Batch {
    records: Records,
    deaggregated: bool,
    millis_behind_latest: Option<i64>,
    shard_end: Option<Vec<ChildShard>>,
    /// Which delivery of these records the next one is (1 = the first).
    attempt: u32,
}

/// A skip logs every sequence number up to this many records (beyond, the first and last).
pub const MAX_LOGGED_SEQUENCE_NUMBERS: usize = 100;

/// The longest wait before restarting a fetcher task that died (the first wait is the task
/// backoff, doubling each time).
pub const FETCHER_RESTART_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A processor call that panicked (or returned [`RestartShard`]): the consumer stops and the
/// scheduler restarts the shard from its last checkpoint. The second field is the cause (a
/// `Cause` dimension value of `ShardRestarts`).
struct Panicked(String, &'static str);

impl Panicked {
    fn panic(p: Box<dyn std::any::Any + Send>) -> Self {
        Self::panic_with_error(p).0
    }

    fn restart(e: &crate::ProcessorError) -> Self {
        Panicked(format!("{e:#}"), names::CAUSE_RESTART_REQUESTED)
    }

    /// A panic: the message to log, and the typed error for the retry hook.
    fn panic_with_error(p: Box<dyn std::any::Any + Send>) -> (Self, SharedError) {
        let panicked = ProcessorPanicked::new(panic_message(p));
        (
            Panicked(panicked.to_string(), names::CAUSE_PROCESSOR_PANIC),
            Arc::new(panicked),
        )
    }

    /// A restart the processor asked for: the message to log, and its error for the hook.
    fn restart_with_error(e: crate::ProcessorError) -> (Self, SharedError) {
        (Self::restart(&e), Arc::from(e.into_error()))
    }
}

impl<P: RecordProcessor> Consumer<P> {
    /// The lease key (the shard id in a single-stream application): what the lease table and
    /// the coordinator know the lease by. Kinesis knows the shard by [`Self::shard_id`].
    fn key(&self) -> &str {
        &self.tenure.lease.key
    }

    fn pending(&self) -> Option<ShutdownReason> {
        if self.tenure.lost.is_cancelled() {
            Some(ShutdownReason::LeaseLost)
        } else if self.shutdown.is_cancelled() {
            Some(ShutdownReason::Requested)
        } else {
            None
        }
    }

    /// Sleep, waking early on lease loss or shutdown.
    fn pause(&self, d: Duration) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (lost, shutdown) = (self.tenure.lost.clone(), self.shutdown.clone());
        async move {
            tokio::select! {
                biased;
                _ = tokio::time::sleep(d) => {}
                _ = lost.cancelled() => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    async fn run(&mut self) -> ShardExit {
        let mut state = initial_state(self.tenure.lease.checkpoint.is_shard_end());
        loop {
            let outcome = match state {
                ShardState::Done(reason) => {
                    tracing::info!(reason = ?reason, "shard consumer finished");
                    return match reason {
                        ShutdownReason::ShardEnd => ShardExit::ShardEnded,
                        ShutdownReason::LeaseLost => ShardExit::LeaseLost,
                        ShutdownReason::Requested => ShardExit::Shutdown,
                    };
                }
                ShardState::WaitingOnParents => self.wait_for_parents().await,
                ShardState::Initializing => self.initialize().await,
                ShardState::Processing => self.process_batch().await,
                ShardState::ShuttingDown(reason) => self.shut_down(reason).await,
            };
            let outcome = match outcome {
                Ok(o) => o,
                Err(Panicked(msg, cause)) => {
                    self.metrics.restart(cause);
                    self.ctx
                        .coordinator
                        .record_restart(&self.tenure.lease.key, &msg);
                    tracing::error!(reason = %msg, "record processor failed for good; the shard restarts from its last checkpoint");
                    return ShardExit::Failed(msg);
                }
            };
            let next = next_state(state, outcome, self.pending());
            if next != state {
                tracing::debug!(from = ?state, to = ?next, "shard consumer state change");
            }
            state = next;
        }
    }

    async fn wait_for_parents(&mut self) -> Result<TaskOutcome, Panicked> {
        for parent in self.tenure.lease.parent_shard_ids.clone() {
            let parent_key = self.ctx.stream_id.lease_key(&parent);
            let blocked = match self.ctx.store().get_lease(&parent_key).await {
                Ok(Some(l)) if !l.checkpoint.is_shard_end() => {
                    Some(format!("parent {parent} is at {}", l.checkpoint))
                }
                Ok(_) => None,
                Err(e) => Some(format!("cannot read parent {parent}: {e}")),
            };
            if let Some(why) = blocked {
                if !self.waiting_logged {
                    tracing::info!(%why, "waiting for parent shards to finish before processing this child shard");
                    self.waiting_logged = true;
                } else {
                    tracing::debug!(%why, "still waiting for parent shards");
                }
                self.pause(self.ctx.config.parent_shard_poll_interval).await;
                return Ok(TaskOutcome::Failed);
            }
        }
        Ok(TaskOutcome::Succeeded)
    }

    fn start_position(&self, checkpoint: &Checkpoint) -> StartPosition {
        let position = match checkpoint {
            Checkpoint::Sequence(esn) => {
                return StartPosition {
                    position: IteratorPosition::AtSequenceNumber(esn.sequence_number().to_string()),
                    skip_through: Some(esn.clone()),
                };
            }
            Checkpoint::TrimHorizon | Checkpoint::ShardEnd => IteratorPosition::TrimHorizon,
            Checkpoint::Latest => IteratorPosition::Latest,
            Checkpoint::AtTimestamp => match self.ctx.initial_position {
                InitialPosition::AtTimestamp(t) => IteratorPosition::AtTimestamp(t),
                _ => {
                    tracing::warn!("lease is at AT_TIMESTAMP but no timestamp is configured; starting at TRIM_HORIZON");
                    IteratorPosition::TrimHorizon
                }
            },
        };
        StartPosition {
            position,
            skip_through: None,
        }
    }

    /// Start the shard's record source: polling, or enhanced fan-out when the worker has a
    /// fan-out consumer.
    fn spawn_fetcher(&mut self, start: StartPosition) {
        let cfg = &self.ctx.config;
        let buffer = BufferConfig {
            max_pending_batches: cfg.max_pending_batches,
            max_pending_bytes: cfg.max_prefetch_bytes_per_shard,
            budget: self.ctx.prefetch_budget.clone(),
            deaggregate: cfg.deaggregate_records,
            hash_key_range: self.tenure.lease.hash_key_range,
        };
        let (stream, shard) = (self.ctx.stream.clone(), self.shard_id.to_string());
        self.fetcher = Some(match &self.ctx.fan_out {
            Some(registration) => fanout::spawn(stream, registration.clone(), shard, start, buffer),
            None => {
                let polling = FetcherConfig {
                    max_records: cfg.max_records,
                    idle_time_between_reads: cfg.idle_time_between_reads,
                    metrics: Some(self.metrics.clone()),
                };
                fetcher::spawn(stream, shard, start, polling, buffer)
            }
        });
    }

    /// The fetcher task died (it panicked): restart it after a growing backoff, right after
    /// the last record it delivered (so this processor gets nothing twice and misses nothing;
    /// that is the last checkpoint with the records delivered since filtered out).
    async fn restart_fetcher(&mut self) {
        let Some(dead) = self.fetcher.take() else {
            return;
        };
        let resume = dead.resume_from();
        drop(dead);
        let delay = self
            .fetcher_restarts
            .next()
            .unwrap_or(self.ctx.config.task_backoff);
        tracing::error!(position = ?resume.position, backoff = ?delay, "record fetcher died; restarting it after the backoff");
        self.pause(delay).await;
        self.spawn_fetcher(resume);
    }

    async fn initialize(&mut self) -> Result<TaskOutcome, Panicked> {
        let lease = self
            .ctx
            .coordinator
            .current(self.key())
            .await
            .unwrap_or_else(|| self.tenure.lease.clone());
        if self.fetcher.is_none() {
            let start = self.start_position(&lease.checkpoint);
            tracing::debug!(checkpoint = %lease.checkpoint, position = ?start.position, "starting record fetcher");
            self.spawn_fetcher(start);
            self.checkpointer = Some(Checkpointer::new(
                self.key().to_string(),
                self.ctx.coordinator.clone(),
                self.tenure.token,
                lease.checkpoint.clone(),
                lease.pending_checkpoint.is_some(),
            ));
        }
        let input = InitializationInput {
            stream: self.ctx.stream_id.clone(),
            shard_id: self.shard_id.to_string(),
            checkpoint: lease.checkpoint.clone(),
            pending_checkpoint: lease.pending_checkpoint.clone(),
            pending_checkpoint_state: lease.pending_checkpoint_state.clone(),
        };
        let started = tokio::time::Instant::now();
        let result = AssertUnwindSafe(self.processor.initialize(input))
            .catch_unwind()
            .await;
        telemetry::initialize_time(started.elapsed());
        match result {
            Err(p) => Err(Panicked::panic(p)),
            Ok(Ok(())) => {
                tracing::info!(checkpoint = %lease.checkpoint, "record processor initialized");
                self.initialized = true;
                Ok(TaskOutcome::Succeeded)
            }
            Ok(Err(e)) if e.is_restart() => Err(Panicked::restart(&e)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, backoff = ?self.ctx.config.task_backoff, "record processor failed to initialize; retrying");
                self.pause(self.ctx.config.task_backoff).await;
                Ok(TaskOutcome::Failed)
            }
        }
    }

    /// Queue a fetched batch: without records skipped earlier with consent, and split where
    /// the records that failed before start (after a restart re-read them).
    fn enqueue(&mut self, fetched: FetchedBatch) {
        let FetchedBatch {
            mut records,
            deaggregated,
            millis_behind_latest,
            mut shard_end,
        } = fetched;
        let checkpoint = self
            .checkpointer
            .as_ref()
            .expect("checkpointer starts in initialize")
            .last_checkpoint()
            .clone();
        let mut redelivery = self.redelivery.lock();
        let dropped = redelivery.drop_skipped(&mut records, &checkpoint);
        if dropped > 0 {
            tracing::info!(
                records = dropped,
                "not delivering again records skipped earlier with the processor's consent"
            );
        }
        let plan = redelivery.plan(&records);
        drop(redelivery);
        let batch = |records: Vec<Record>, attempt, shard_end| Batch {
            records: records.into(),
            deaggregated,
            millis_behind_latest,
            shard_end,
            attempt,
        };
        match plan {
            Plan::Whole(attempt) => self.pending.push_back(batch(records, attempt, shard_end)),
            Plan::Split { from, to, attempt } => {
                let after = records.split_off(to);
                let failing = records.split_off(from);
                let last = if after.is_empty() {
                    shard_end.take()
                } else {
                    None
                };
                if !records.is_empty() {
                    self.pending.push_back(batch(records, 1, None));
                }
                self.pending.push_back(batch(failing, attempt, last));
                if !after.is_empty() {
                    self.pending.push_back(batch(after, 1, shard_end));
                }
            }
        }
    }

    /// Call `retries_exhausted` if the retry policy is exhausted for `batch` (a redelivery)
    /// and the processor was not asked about these records yet.
    async fn ask_if_exhausted(&mut self, batch: &Batch) -> Result<RetryDecision, Panicked> {
        let policy = self.ctx.config.retry_policy;
        let (Some(first), false) = (batch.records.first(), policy.is_unlimited()) else {
            return Ok(RetryDecision::KeepRetrying);
        };
        let (attempts, last_error) = match self.redelivery.lock().failing() {
            Some(f) if !f.asked && f.first == first.extended_sequence_number() => {
                (f.failures, f.last_error.clone())
            }
            _ => return Ok(RetryDecision::KeepRetrying),
        };
        let age = first
            .approximate_arrival_timestamp
            .and_then(|t| self.ctx.stream.now().duration_since(t).ok());
        if !policy.is_exhausted(attempts, age) {
            return Ok(RetryDecision::KeepRetrying);
        }
        let failure = RetriesExhausted {
            shard_id: self.shard_id.to_string(),
            records: batch.records.clone(),
            attempts,
            age,
            last_error,
        };
        tracing::info!(
            attempts,
            ?age,
            records = batch.records.len(),
            "retry policy exhausted; asking the record processor (retries_exhausted)"
        );
        match AssertUnwindSafe(self.processor.retries_exhausted(failure))
            .catch_unwind()
            .await
        {
            Err(p) => Err(Panicked(
                format!(
                    "record processor panicked in retries_exhausted: {}",
                    panic_message(p)
                ),
                names::CAUSE_PROCESSOR_PANIC,
            )),
            Ok(decision) => {
                if decision == RetryDecision::KeepRetrying {
                    self.redelivery.lock().keep_retrying();
                }
                Ok(decision)
            }
        }
    }

    /// Skip `batch` with the processor's consent: log and count it, let checkpoints cover it,
    /// and, when everything before it is checkpointed already, checkpoint past it (so that
    /// nothing else is covered), which makes the skip last beyond this tenure.
    async fn skip(&mut self, batch: &Batch) {
        let (Some(first), Some(last)) = (batch.records.first(), batch.records.last()) else {
            return;
        };
        let count = batch.records.len();
        let sequence_numbers = (count <= MAX_LOGGED_SEQUENCE_NUMBERS).then(|| {
            batch
                .records
                .iter()
                .map(|r| r.sequence_number.as_str())
                .collect::<Vec<_>>()
                .join(",")
        });
        tracing::warn!(
            records = count,
            first_sequence_number = %first.sequence_number,
            last_sequence_number = %last.sequence_number,
            sequence_numbers = sequence_numbers.as_deref().unwrap_or("(first..=last)"),
            attempts = batch.attempt - 1,
            "SKIPPING records: the retry policy is exhausted and the record processor consented (retries_exhausted returned Skip)"
        );
        self.ctx
            .skipped_records
            .fetch_add(count as u64, Ordering::Relaxed);
        self.redelivery.lock().skipped(first, last);
        let checkpointer = self
            .checkpointer
            .as_mut()
            .expect("checkpointer starts in initialize");
        let all_before_checkpointed =
            checkpointer.last_checkpoint() >= checkpointer.largest_permitted();
        checkpointer.delivered(last.checkpoint());
        if all_before_checkpointed {
            match checkpointer.checkpoint_record(last).await {
                Ok(()) => {
                    tracing::info!(checkpoint = %last.sequence_number, "checkpointed past the skipped records")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not checkpoint past the skipped records; this worker does not deliver them again, another owner would")
                }
            }
        }
    }

    async fn process_batch(&mut self) -> Result<TaskOutcome, Panicked> {
        if self.pending.is_empty() {
            let fetcher = self.fetcher.as_mut().expect("fetcher starts in initialize");
            let next = tokio::select! {
                biased;
                _ = self.tenure.lost.cancelled() => return Ok(TaskOutcome::Succeeded),
                _ = self.shutdown.cancelled() => return Ok(TaskOutcome::Succeeded),
                b = fetcher.next() => b,
            };
            let Some(fetched) = next else {
                self.restart_fetcher().await;
                return Ok(TaskOutcome::Failed);
            };
            self.fetcher_restarts.reset();
            self.metrics.batch_received(fetched.millis_behind_latest);
            self.enqueue(fetched);
        }
        let task_started = tokio::time::Instant::now();
        let mut batch = self.pending.pop_front().expect("a batch was queued");
        if batch.attempt > 1 && self.ask_if_exhausted(&batch).await? == RetryDecision::Skip {
            self.skip(&batch).await;
            return Ok(self.accepted(batch, task_started));
        }
        let checkpointer = self
            .checkpointer
            .as_mut()
            .expect("checkpointer starts in initialize");
        // Until the processor accepts the batch, `checkpoint()` may cover it; if it fails the
        // batch (to be delivered again), checkpoints go back to covering only accepted records.
        let accepted = checkpointer.largest_permitted().clone();
        if let Some(last) = batch.records.last() {
            checkpointer.delivered(last.checkpoint());
        }
        if !batch.records.is_empty() || self.ctx.config.call_process_records_even_for_empty_list {
            let input = ProcessRecordsInput {
                stream: self.ctx.stream_id.clone(),
                shard_id: self.shard_id.clone(),
                records: batch.records.clone(),
                millis_behind_latest: batch.millis_behind_latest,
                attempt: batch.attempt,
                deaggregated: batch.deaggregated,
            };
            let count = input.records.len();
            let attempt = batch.attempt;
            let bytes: usize = input.records.iter().map(|r| r.data.len()).sum();
            let started = tokio::time::Instant::now();
            let result = AssertUnwindSafe(self.processor.process_records(input, checkpointer))
                .catch_unwind()
                .await;
            let ok = matches!(result, Ok(Ok(())));
            self.metrics.processed(count, bytes, started.elapsed(), ok);
            self.ctx.coordinator.record_processed(
                &self.tenure.lease.key,
                count as u64,
                bytes as u64,
                batch.millis_behind_latest,
            );
            let error = match result {
                Ok(Ok(())) => {
                    tracing::trace!(records = count, attempt, "batch processed");
                    if let Some(last) = batch.records.last() {
                        self.redelivery.lock().passed(last);
                    }
                    return Ok(self.accepted(batch, task_started));
                }
                Err(p) => {
                    self.metrics.task(false, task_started.elapsed());
                    let (panicked, error) = Panicked::panic_with_error(p);
                    self.failed(&batch, error);
                    return Err(panicked);
                }
                Ok(Err(e)) if e.is_restart() => {
                    self.metrics.task(false, task_started.elapsed());
                    let (restart, error) = Panicked::restart_with_error(e);
                    self.failed(&batch, error);
                    return Err(restart);
                }
                Ok(Err(e)) => e,
            };
            let checkpointer = self.checkpointer.as_mut().expect("initialized");
            checkpointer.undeliver(accepted);
            if let Some(through) = error.processed_through() {
                // Partial progress: the records up to `through` are done.
                let done = batch
                    .records
                    .partition_point(|r| r.extended_sequence_number() <= *through);
                if done > 0 {
                    let last_done = &batch.records[done - 1];
                    checkpointer.delivered(last_done.checkpoint());
                    self.redelivery.lock().passed(last_done);
                    if done == batch.records.len() {
                        tracing::warn!(error = %format!("{error:#}"), records = count, "record processor failed the batch but reported every record of it done; the batch counts as processed");
                        return Ok(self.accepted(batch, task_started));
                    }
                    tracing::debug!(
                        done,
                        records = count,
                        "partial progress: redelivering the records after the last one done"
                    );
                    batch.records = batch.records.skip(done);
                }
            }
            self.metrics.task(false, task_started.elapsed());
            if self.tenure.lost.is_cancelled() {
                tracing::info!(error = %format!("{error:#}"), records = count, "batch not finished: the lease was lost meanwhile; the next owner resumes from the last checkpoint");
                return Ok(TaskOutcome::Failed);
            }
            let message = format!("{error:#}");
            let failures = self.failed(&batch, Arc::from(error.into_error()));
            let delay = backoff_delay(
                failures,
                self.ctx.config.task_backoff,
                self.ctx.config.max_task_backoff,
            );
            tracing::warn!(error = %message, records = batch.records.len(), attempt, backoff = ?delay,
                "record processor failed; the same batch (or the part not done) is delivered again after the backoff");
            batch.attempt = if batch.records.is_empty() {
                batch.attempt + 1
            } else {
                failures + 1
            };
            self.pending.push_front(batch);
            self.metrics.redelivery(names::CAUSE_PROCESSOR_ERROR);
            self.pause(delay).await;
            return Ok(TaskOutcome::Failed);
        }
        Ok(self.accepted(batch, task_started))
    }

    /// A delivery of `batch` failed with `error`: count it; returns the failures so far of
    /// the records at its head.
    fn failed(&mut self, batch: &Batch, error: SharedError) -> u32 {
        match (batch.records.first(), batch.records.last()) {
            (Some(first), Some(last)) => self.redelivery.lock().failed(first, last, error),
            _ => batch.attempt,
        }
    }

    /// `batch` is done (its task started at `task_started`): the next one follows, or the
    /// shard ends.
    fn accepted(&mut self, batch: Batch, task_started: tokio::time::Instant) -> TaskOutcome {
        self.metrics.task(true, task_started.elapsed());
        match batch.shard_end {
            Some(children) => {
                tracing::info!(children = ?children.iter().map(|c| &c.shard_id).collect::<Vec<_>>(), "reached the end of the shard");
                self.children = Some(children);
                TaskOutcome::ShardEndReached
            }
            None => TaskOutcome::Succeeded,
        }
    }

    async fn shut_down(&mut self, reason: ShutdownReason) -> Result<TaskOutcome, Panicked> {
        self.fetcher = None;
        match reason {
            ShutdownReason::ShardEnd => self.shard_end().await,
            ShutdownReason::LeaseLost => {
                if self.initialized {
                    self.call_shutdown(Shutdown::LeaseLost).await?;
                }
                Ok(TaskOutcome::Succeeded)
            }
            ShutdownReason::Requested => {
                if self.initialized {
                    let checkpointer = self.checkpointer.as_mut().expect("initialized");
                    let started = tokio::time::Instant::now();
                    let result = AssertUnwindSafe(
                        self.processor
                            .shutdown(Shutdown::Requested { checkpointer }),
                    )
                    .catch_unwind()
                    .await;
                    Self::log_shutdown_result(result, "requested", started)?;
                }
                Ok(TaskOutcome::Succeeded)
            }
        }
    }

    async fn call_shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), Panicked> {
        let name = reason.name();
        let started = tokio::time::Instant::now();
        let result = AssertUnwindSafe(self.processor.shutdown(reason))
            .catch_unwind()
            .await;
        Self::log_shutdown_result(result, name, started)
    }

    fn log_shutdown_result(
        result: std::thread::Result<Result<(), crate::ProcessorError>>,
        name: &str,
        started: tokio::time::Instant,
    ) -> Result<(), Panicked> {
        telemetry::shutdown_time(started.elapsed());
        match result {
            Err(p) => Err(Panicked::panic(p)),
            Ok(Err(e)) if e.is_restart() => Err(Panicked::restart(&e)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, reason = name, "record processor's shutdown failed");
                Ok(())
            }
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Create the children's leases, then let the processor record `SHARD_END`.
    async fn shard_end(&mut self) -> Result<TaskOutcome, Panicked> {
        let children = self.children.clone().unwrap_or_default();
        let (coordinator, token) = (&self.ctx.coordinator, self.tenure.token);
        let key = self.key();
        let holds = || coordinator.holds(key, token);
        let stream = self.ctx.stream.as_ref();
        if let Err(why) = create_child_leases(
            self.ctx.store(),
            stream,
            &self.ctx.stream_id,
            key,
            &children,
            &holds,
        )
        .await
        {
            tracing::warn!(%why, backoff = ?self.ctx.config.task_backoff, "cannot create child shard leases yet; retrying");
            self.pause(self.ctx.config.task_backoff).await;
            return Ok(TaskOutcome::Failed);
        }
        let checkpointer = self
            .checkpointer
            .as_mut()
            .expect("processing implies initialized");
        checkpointer.set_shard_end();
        let started = tokio::time::Instant::now();
        let result = AssertUnwindSafe(
            self.processor
                .shutdown(Shutdown::ShardEnded { checkpointer }),
        )
        .catch_unwind()
        .await;
        Self::log_shutdown_result(result, "shard_ended", started)?;
        let recorded = self
            .ctx
            .coordinator
            .current(self.key())
            .await
            .is_some_and(|l| l.checkpoint.is_shard_end());
        if recorded {
            return Ok(TaskOutcome::Succeeded);
        }
        if self.pending() == Some(ShutdownReason::LeaseLost) {
            return Ok(TaskOutcome::Failed);
        }
        tracing::error!(
            children = ?children.iter().map(|c| &c.shard_id).collect::<Vec<_>>(),
            backoff = ?self.ctx.config.task_backoff,
            "the record processor did not checkpoint at shard end (call checkpointer.checkpoint() in Shutdown::ShardEnded); \
             the child shards stay blocked until it does; asking again after the backoff"
        );
        self.pause(self.ctx.config.task_backoff).await;
        Ok(TaskOutcome::Failed)
    }
}

#[cfg(test)]
mod retry_tests;
#[cfg(test)]
mod tests;
