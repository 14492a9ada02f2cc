//! Redelivery on paused time over the in-memory backends: restarts, attempt numbers, backoff,
//! the retry policy and its hook, partial progress.

use super::tests::{config, Harness};
use super::*;
use crate::ProcessorError;
use std::sync::Mutex;

/// Fails the first batch with a `RestartShard` wrapped in `anyhow::Context` (through `?`).
struct WrappedRestart {
    batches: Arc<Mutex<u32>>,
}

#[async_trait::async_trait]
impl RecordProcessor for WrappedRestart {
    async fn process_records(
        &mut self,
        _: ProcessRecordsInput,
        _: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        use anyhow::Context;
        *self.batches.lock().unwrap() += 1;
        let broken: Result<(), crate::RestartShard> =
            Err(crate::RestartShard("state is broken".into()));
        broken.context("while writing to the sink")?;
        Ok(())
    }
}

/// `RestartShard` inside `anyhow::Context` still ends the consumer for a restart (before,
/// the downcast missed it and the batch was redelivered forever).
#[tokio::test(start_paused = true)]
async fn a_restart_wrapped_in_anyhow_context_still_restarts_the_shard() {
    let h = Harness::new(Checkpoint::TrimHorizon).await;
    h.stream.put("pk", b"r0");
    let batches = Arc::new(Mutex::new(0));
    let p = WrappedRestart {
        batches: batches.clone(),
    };
    let exit = tokio::time::timeout(
        Duration::from_secs(600),
        run_shard(
            h.ctx(config()),
            h.tenure.clone(),
            p,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the consumer must end (a restart), not redeliver forever");
    assert!(
        matches!(&exit, ShardExit::Failed(why) if why.contains("while writing to the sink")),
        "{exit:?}"
    );
    assert_eq!(
        *batches.lock().unwrap(),
        1,
        "no redelivery to this processor"
    );
    h.stop().await;
}
