//! [`from_fn`]: a record processor made of one async function, for the simplest programs.

use super::{
    ProcessRecordsInput, ProcessorError, RecordProcessor, RecordProcessorFactory, RetriesExhausted,
    RetryDecision,
};
use crate::checkpointer::Checkpointer;
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;

/// A processor (and its factory: pass it straight to [`Scheduler`](crate::Scheduler)) that
/// calls `f` with each batch and, when `f` returns `Ok`, checkpoints the batch.
///
/// ```no_run
/// use kinesis_client::{processor, Config, ProcessRecordsInput, Scheduler, StreamRef};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let printer = processor::from_fn(|input: ProcessRecordsInput| async move {
///     for r in &input.records {
///         println!("{}", String::from_utf8_lossy(&r.data));
///     }
///     Ok(())
/// });
/// let config = Config::builder("my-app", StreamRef::Name("my-stream".into())).build()?;
/// let sdk = aws_config::load_from_env().await;
/// Scheduler::from_sdk_config(config, printer, &sdk, &Default::default())
///     .run(async { tokio::signal::ctrl_c().await.ok(); })
///     .await?;
/// # Ok(()) }
/// ```
///
/// One function serves every shard (calls for one shard never overlap; different shards call
/// it concurrently). An `Err` redelivers the batch, as from
/// [`RecordProcessor::process_records`]. Each successful batch costs one checkpoint write;
/// shard end and graceful shutdown checkpoint as the default
/// [`RecordProcessor::shutdown`] does. Log lines of the library carry the shard id; a
/// function that needs per-shard state implements [`RecordProcessor`] instead. For a
/// dead-letter destination, see [`FnProcessor::on_retries_exhausted`].
pub fn from_fn<F, Fut>(f: F) -> FnProcessor<F>
where
    F: Fn(ProcessRecordsInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProcessorError>> + Send + 'static,
{
    FnProcessor {
        f: Arc::new(f),
        on_exhausted: None,
    }
}

type ExhaustedHook =
    Arc<dyn Fn(RetriesExhausted) -> BoxFuture<'static, RetryDecision> + Send + Sync>;

/// The processor [`from_fn`] makes.
pub struct FnProcessor<F> {
    f: Arc<F>,
    on_exhausted: Option<ExhaustedHook>,
}

impl<F> FnProcessor<F> {
    /// Call `hook` when the [`RetryPolicy`](super::RetryPolicy) of
    /// [`Config::retry_policy`](crate::Config::retry_policy) is exhausted (see
    /// [`RecordProcessor::retries_exhausted`]); without it, failing records are redelivered
    /// until they succeed.
    ///
    /// ```
    /// use kinesis_client::processor::{self, RetriesExhausted, RetryDecision};
    /// use kinesis_client::ProcessRecordsInput;
    ///
    /// let processor = processor::from_fn(|input: ProcessRecordsInput| async move {
    ///     for r in &input.records {
    ///         std::str::from_utf8(&r.data)?; // a record that is not UTF-8 fails the batch
    ///     }
    ///     Ok(())
    /// })
    /// .on_retries_exhausted(|failed: RetriesExhausted| async move {
    ///     eprintln!("dead letter: {} records of {}", failed.records.len(), failed.shard_id);
    ///     RetryDecision::Skip
    /// });
    /// ```
    pub fn on_retries_exhausted<H, HF>(mut self, hook: H) -> Self
    where
        H: Fn(RetriesExhausted) -> HF + Send + Sync + 'static,
        HF: Future<Output = RetryDecision> + Send + 'static,
    {
        self.on_exhausted = Some(Arc::new(move |failure| Box::pin(hook(failure))));
        self
    }
}

impl<F> Clone for FnProcessor<F> {
    fn clone(&self) -> Self {
        FnProcessor {
            f: self.f.clone(),
            on_exhausted: self.on_exhausted.clone(),
        }
    }
}

impl<F> std::fmt::Debug for FnProcessor<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnProcessor").finish_non_exhaustive()
    }
}

#[async_trait]
impl<F, Fut> RecordProcessor for FnProcessor<F>
where
    F: Fn(ProcessRecordsInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProcessorError>> + Send + 'static,
{
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        (self.f)(input).await?;
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn retries_exhausted(&mut self, failure: RetriesExhausted) -> RetryDecision {
        match &self.on_exhausted {
            Some(hook) => hook(failure).await,
            None => super::retry::keep_retrying(&failure),
        }
    }
}

impl<F, Fut> RecordProcessorFactory for FnProcessor<F>
where
    F: Fn(ProcessRecordsInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProcessorError>> + Send + 'static,
{
    type Processor = FnProcessor<F>;

    fn create(&self, _shard_id: &str) -> Self::Processor {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::testing::TestShard;
    use crate::RecordProcessor;

    /// `Ok` checkpoints the batch; `Err` leaves the checkpoint where it was; shard end
    /// checkpoints `SHARD_END` through the default `shutdown`.
    #[tokio::test(start_paused = true)]
    async fn checkpoints_each_successful_batch_and_the_shard_end() {
        let factory = from_fn(|input: ProcessRecordsInput| async move {
            if input.records.iter().any(|r| r.data == "bad") {
                return Err("bad record".into());
            }
            Ok(())
        });
        let mut shard = TestShard::new("shardId-000000000000").await;
        let mut p = factory.create(shard.shard_id());
        shard.initialize(&mut p).await.unwrap();
        let batch = shard.records(["a", "b"]);
        let b = batch[1].checkpoint();
        shard.process(&mut p, batch).await.unwrap();
        assert_eq!(shard.stored_checkpoint(), b);
        let batch = shard.records(["c", "bad"]);
        assert!(shard.process(&mut p, batch).await.is_err());
        assert_eq!(
            shard.stored_checkpoint(),
            b,
            "a failed batch is not checkpointed"
        );
        shard.end_shard(&mut p).await.unwrap();
        assert_eq!(shard.stored_checkpoint(), Checkpoint::ShardEnd);
    }

    /// A processor that writes only `process_records` (and never checkpoints there) gets
    /// the default `initialize` and `shutdown`: a requested shutdown checkpoints everything
    /// delivered, a lost lease does nothing.
    #[tokio::test(start_paused = true)]
    async fn the_default_shutdown_checkpoints_on_request_and_at_shard_end() {
        struct OneMethod;
        #[async_trait]
        impl RecordProcessor for OneMethod {
            async fn process_records(
                &mut self,
                _: ProcessRecordsInput,
                _: &mut Checkpointer,
            ) -> Result<(), ProcessorError> {
                Ok(())
            }
        }
        let mut shard = TestShard::new("shardId-000000000001").await;
        let mut p = OneMethod;
        shard.initialize(&mut p).await.unwrap();
        let batch = shard.records(["a", "b"]);
        let last = batch[1].checkpoint();
        shard.process(&mut p, batch).await.unwrap();
        assert_eq!(shard.stored_checkpoint(), Checkpoint::TrimHorizon);
        p.shutdown(crate::Shutdown::LeaseLost).await.unwrap();
        assert_eq!(shard.stored_checkpoint(), Checkpoint::TrimHorizon);
        shard.request_shutdown(&mut p).await.unwrap();
        assert_eq!(shard.stored_checkpoint(), last);
        shard.end_shard(&mut p).await.unwrap();
        assert_eq!(shard.stored_checkpoint(), Checkpoint::ShardEnd);
    }
}
