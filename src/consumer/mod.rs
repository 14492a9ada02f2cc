//! The shard consumer: runs one [`RecordProcessor`] over one lease tenure.
//!
//! The consumer is an explicit state machine ([`state`]); this module runs each state's task
//! and returns a [`ShardExit`] saying why it ended. It never decides anything about leases:
//! the coordinator signals loss through the tenure's `lost` token, the scheduler signals
//! graceful shutdown through `shutdown`.

pub mod state;

use crate::backoff::Backoff;
use crate::checkpoint::Checkpoint;
use crate::checkpointer::Checkpointer;
use crate::config::{Config, InitialPosition};
use crate::coordinator::{LeaseCoordinator, LeaseTenure};
use crate::lease::LeaseStore;
use crate::processor::{
    InitializationInput, ProcessRecordsInput, RecordProcessor, RestartShard, Shutdown,
};
use crate::record::Records;
use crate::resharding::create_child_leases;
use crate::retrieval::fetcher::{
    FetchedBatch, Fetcher, FetcherConfig, PrefetchBudget, StartPosition,
};
use crate::retrieval::{ChildShard, IteratorPosition, StreamClient};
use crate::telemetry::{self, names, ShardMetrics};
use futures::FutureExt;
use state::{initial_state, next_state, ShardState, ShutdownReason, TaskOutcome};
use std::panic::AssertUnwindSafe;
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
    /// The worker's settings.
    pub config: Arc<Config>,
    /// The worker's read-ahead byte budget, shared by its shards' fetchers.
    pub prefetch_budget: PrefetchBudget,
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
pub async fn run_shard<P: RecordProcessor>(
    ctx: ShardContext,
    tenure: LeaseTenure,
    processor: P,
    shutdown: CancellationToken,
) -> ShardExit {
    let shard_id = tenure.lease.key.clone();
    let span = tracing::info_span!(
        names::SPAN_SHARD,
        { names::FIELD_WORKER_ID } = %ctx.coordinator.worker_id(),
        { names::FIELD_SHARD_ID } = %shard_id
    );
    let ctx_task_backoff = ctx.config.task_backoff.max(Duration::from_millis(1));
    let mut consumer = Consumer {
        metrics: ShardMetrics::new(&shard_id),
        ctx,
        tenure,
        processor,
        shutdown,
        initialized: false,
        fetcher: None,
        checkpointer: None,
        batch: None,
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
    ctx: ShardContext,
    tenure: LeaseTenure,
    processor: P,
    shutdown: CancellationToken,
    initialized: bool,
    fetcher: Option<Fetcher>,
    checkpointer: Option<Checkpointer>,
    /// A batch the processor has not accepted yet (redelivered after a failure).
    batch: Option<Batch>,
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
}

impl From<FetchedBatch> for Batch {
    fn from(b: FetchedBatch) -> Self {
        Batch {
            records: b.records.into(),
            deaggregated: b.deaggregated,
            millis_behind_latest: b.millis_behind_latest,
            shard_end: b.shard_end,
        }
    }
}

/// The longest wait before restarting a fetcher task that died (the first wait is the task
/// backoff, doubling each time).
pub const FETCHER_RESTART_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A processor call that panicked (or returned [`RestartShard`]): the consumer stops and the
/// scheduler restarts the shard from its last checkpoint. The second field is the cause (a
/// `Cause` dimension value of `ShardRestarts`).
struct Panicked(String, &'static str);

impl Panicked {
    fn panic(p: Box<dyn std::any::Any + Send>) -> Self {
        Panicked(
            format!("record processor panicked: {}", panic_message(p)),
            names::CAUSE_PROCESSOR_PANIC,
        )
    }

    fn restart(e: &crate::ProcessorError) -> Self {
        Panicked(e.to_string(), names::CAUSE_RESTART_REQUESTED)
    }
}

impl<P: RecordProcessor> Consumer<P> {
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
            let blocked = match self.ctx.store().get_lease(&parent).await {
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
            Checkpoint::AtTimestamp => match self.ctx.config.initial_position {
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

    fn spawn_fetcher(&mut self, start: StartPosition) {
        let cfg = &self.ctx.config;
        let fetcher_config = FetcherConfig {
            max_records: cfg.max_records,
            idle_time_between_reads: cfg.idle_time_between_reads,
            max_pending_batches: cfg.max_pending_batches,
            max_pending_bytes: cfg.max_prefetch_bytes_per_shard,
            budget: self.ctx.prefetch_budget.clone(),
            deaggregate: cfg.deaggregate_records,
            hash_key_range: self.tenure.lease.hash_key_range,
        };
        self.fetcher = Some(Fetcher::spawn(
            self.ctx.stream.clone(),
            self.key().to_string(),
            start,
            fetcher_config,
        ));
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
            ));
        }
        let input = InitializationInput {
            shard_id: self.key().to_string(),
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
            Ok(Err(e)) if e.is::<RestartShard>() => Err(Panicked::restart(&e)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, backoff = ?self.ctx.config.task_backoff, "record processor failed to initialize; retrying");
                self.pause(self.ctx.config.task_backoff).await;
                Ok(TaskOutcome::Failed)
            }
        }
    }

    async fn process_batch(&mut self) -> Result<TaskOutcome, Panicked> {
        let batch = match self.batch.take() {
            Some(b) => b,
            None => {
                let fetcher = self.fetcher.as_mut().expect("fetcher starts in initialize");
                let next = tokio::select! {
                    biased;
                    _ = self.tenure.lost.cancelled() => return Ok(TaskOutcome::Succeeded),
                    _ = self.shutdown.cancelled() => return Ok(TaskOutcome::Succeeded),
                    b = fetcher.next() => b,
                };
                let Some(batch) = next else {
                    self.restart_fetcher().await;
                    return Ok(TaskOutcome::Failed);
                };
                self.fetcher_restarts.reset();
                self.metrics.batch_received(batch.millis_behind_latest);
                Batch::from(batch)
            }
        };
        let task_started = tokio::time::Instant::now();
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
                records: batch.records.clone(),
                millis_behind_latest: batch.millis_behind_latest,
                deaggregated: batch.deaggregated,
            };
            let count = input.records.len();
            let bytes: usize = input.records.iter().map(|r| r.data.len()).sum();
            let started = tokio::time::Instant::now();
            let result = AssertUnwindSafe(self.processor.process_records(input, checkpointer))
                .catch_unwind()
                .await;
            let ok = matches!(result, Ok(Ok(())));
            self.metrics.processed(count, bytes, started.elapsed(), ok);
            if !ok {
                self.metrics.task(false, task_started.elapsed());
            }
            match result {
                Err(p) => return Err(Panicked::panic(p)),
                Ok(Ok(())) => tracing::trace!(records = count, "batch processed"),
                Ok(Err(e)) if e.is::<RestartShard>() => return Err(Panicked::restart(&e)),
                Ok(Err(e)) if self.tenure.lost.is_cancelled() => {
                    tracing::info!(error = %e, records = count, "batch not finished: the lease was lost meanwhile; the next owner resumes from the last checkpoint");
                    return Ok(TaskOutcome::Failed);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, records = count, backoff = ?self.ctx.config.task_backoff,
                        "record processor failed; the same batch is delivered again after the backoff");
                    checkpointer.undeliver(accepted);
                    self.batch = Some(batch);
                    self.metrics.redelivery(names::CAUSE_PROCESSOR_ERROR);
                    self.pause(self.ctx.config.task_backoff).await;
                    return Ok(TaskOutcome::Failed);
                }
            }
        }
        self.metrics.task(true, task_started.elapsed());
        match batch.shard_end {
            Some(children) => {
                tracing::info!(children = ?children.iter().map(|c| &c.shard_id).collect::<Vec<_>>(), "reached the end of the shard");
                self.children = Some(children);
                Ok(TaskOutcome::ShardEndReached)
            }
            None => Ok(TaskOutcome::Succeeded),
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
            Ok(Err(e)) if e.is::<RestartShard>() => Err(Panicked::restart(&e)),
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
        if let Err(why) =
            create_child_leases(self.ctx.store(), stream, key, &children, &holds).await
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
mod tests;
