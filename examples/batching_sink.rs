//! # Batching to a sink, checkpointing only after the sink acknowledged
//!
//! What it teaches: how to keep at-least-once delivery when records are buffered. Records are
//! collected until a batch is full (or a time limit passes), written to a sink, and only
//! **after the sink acknowledged the write** is the checkpoint moved to the last record of
//! that batch, with `checkpoint_at`. A crash before the acknowledgement leaves the checkpoint
//! behind the buffered records, so the next owner reads them again: nothing is lost, some
//! records may be written twice (make the sink idempotent, e.g. keyed by sequence number).
//!
//! A sink failure returns an error: the library delivers the same batch again after the task
//! backoff, so records are never skipped.
//!
//! ```sh
//! KCL_KINESIS_ENDPOINT=... KCL_DYNAMODB_ENDPOINT=... cargo run --example batching_sink -- STREAM APPLICATION
//! ```

use kinesis_client::async_trait;
use kinesis_client::{
    Checkpointer, Config, ProcessRecordsInput, ProcessorError, Record, RecordProcessor, Scheduler,
    Shutdown,
};
use std::time::{Duration, Instant};

/// Stands for a database, a queue, an object store: anything with an acknowledged write.
struct Sink;

impl Sink {
    async fn write(&self, shard: &str, batch: &[Record]) -> Result<(), ProcessorError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        println!("{shard}: wrote {} records to the sink", batch.len());
        Ok(())
    }
}

struct BatchingProcessor {
    shard_id: String,
    sink: Sink,
    buffer: Vec<Record>,
    oldest: Option<Instant>,
}

const MAX_BATCH: usize = 500;
const MAX_AGE: Duration = Duration::from_secs(5);

impl BatchingProcessor {
    async fn flush(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        let Some(last) = self.buffer.last().cloned() else {
            return Ok(());
        };
        self.sink.write(&self.shard_id, &self.buffer).await?; // acknowledged...
        checkpointer.checkpoint_record(&last).await?; // ...then progress is recorded
        self.buffer.clear();
        self.oldest = None;
        Ok(())
    }
}

#[async_trait]
impl RecordProcessor for BatchingProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        // A redelivered batch (after an error below) may overlap the buffer: keep each record once.
        let newest = self.buffer.last().map(|r| r.extended_sequence_number());
        self.buffer.extend(input.records.into_iter().filter(|r| {
            newest
                .as_ref()
                .is_none_or(|n| r.extended_sequence_number() > *n)
        }));
        self.oldest.get_or_insert_with(Instant::now);
        if self.buffer.len() >= MAX_BATCH || self.oldest.is_some_and(|t| t.elapsed() >= MAX_AGE) {
            self.flush(checkpointer).await?;
        }
        Ok(())
    }

    /// Not the default `shutdown`: the buffer must reach the sink before the checkpoint.
    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        match reason {
            Shutdown::ShardEnded { checkpointer } => {
                self.flush(checkpointer).await?;
                checkpointer.checkpoint().await?; // SHARD_END: the children may start
            }
            Shutdown::Requested { checkpointer } => self.flush(checkpointer).await?,
            // The lease was lost (or a reason a later version adds): the buffer is dropped;
            // those records were not checkpointed, so the next owner delivers them again.
            _ => self.buffer.clear(),
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(stream), Some(app)) = (args.next(), args.next()) else {
        eprintln!("usage: batching_sink STREAM APPLICATION");
        std::process::exit(2);
    };
    let config = Config::builder(app, stream)
        // Empty batches too, so a half-full buffer is flushed when its age limit passes.
        .call_process_records_even_for_empty_list(true)
        .build()?;
    let sdk = aws_config::load_from_env().await;
    let endpoints = kinesis_client::aws::Endpoints {
        kinesis: std::env::var("KCL_KINESIS_ENDPOINT").ok(),
        dynamodb: std::env::var("KCL_DYNAMODB_ENDPOINT").ok(),
    };
    let factory = |shard: &str| BatchingProcessor {
        shard_id: shard.to_string(),
        sink: Sink,
        buffer: Vec::new(),
        oldest: None,
    };
    Scheduler::from_sdk_config(config, factory, &sdk, &endpoints)
        .run(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    Ok(())
}
