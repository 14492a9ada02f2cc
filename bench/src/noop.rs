//! The no-op record processor: calls a hook with each batch, then checkpoints the batch.

use async_trait::async_trait;
use kinesis_client::{
    Checkpointer, InitializationInput, ProcessRecordsInput, ProcessorError, Record,
    RecordProcessor, Shutdown,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Called with (shard id, records) for every batch, before the checkpoint.
pub type BatchHook = Arc<dyn Fn(&str, &[Record]) + Send + Sync>;

/// Does nothing with the records but call its hook; checkpoints after every batch, at shard
/// end and on a requested shutdown.
pub struct NoopProcessor {
    shard: String,
    hook: BatchHook,
}

impl NoopProcessor {
    /// A processor for `shard` calling `hook`.
    pub fn new(shard: &str, hook: BatchHook) -> Self {
        NoopProcessor {
            shard: shard.to_string(),
            hook,
        }
    }
}

#[async_trait]
impl RecordProcessor for NoopProcessor {
    async fn initialize(&mut self, _: InitializationInput) -> Result<(), ProcessorError> {
        Ok(())
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        (self.hook)(&self.shard, &input.records);
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        if let Shutdown::ShardEnded { checkpointer } | Shutdown::Requested { checkpointer } = reason
        {
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }
}

/// Counts processed records and wakes a waiter once a target is reached, remembering what
/// `at_target` returned at that moment (e.g. the CPU clock).
pub struct Countdown<T> {
    processed: AtomicU64,
    target: u64,
    notify: Notify,
    at_target: Box<dyn Fn() -> T + Send + Sync>,
    reached: Mutex<Option<T>>,
}

impl<T: Send + 'static> Countdown<T> {
    /// A countdown to `target` records.
    pub fn new(target: u64, at_target: impl Fn() -> T + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Countdown {
            processed: AtomicU64::new(0),
            target,
            notify: Notify::new(),
            at_target: Box::new(at_target),
            reached: Mutex::new(None),
        })
    }

    /// Count `n` more records.
    pub fn add(&self, n: u64) {
        let before = self.processed.fetch_add(n, Ordering::SeqCst);
        if before < self.target && before + n >= self.target {
            *self.reached.lock().unwrap() = Some((self.at_target)());
            self.notify.notify_one();
        }
    }

    /// Records counted so far.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::SeqCst)
    }

    /// Wait until the target is reached; returns what `at_target` returned then.
    pub async fn wait(&self) -> T {
        loop {
            if let Some(v) = self.reached.lock().unwrap().take() {
                return v;
            }
            self.notify.notified().await;
        }
    }

    /// A hook counting every record of every batch.
    pub fn hook(self: &Arc<Self>) -> BatchHook {
        let me = self.clone();
        Arc::new(move |_, records| me.add(records.len() as u64))
    }
}
