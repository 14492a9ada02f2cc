//! # A minimal record processor
//!
//! What it teaches: a [`RecordProcessor`] is one method, `process_records`, which checkpoints
//! after each batch. `initialize` and `shutdown` have defaults: nothing, and a checkpoint at
//! shard end (so the shard's children may start) and on a graceful shutdown (so the next
//! owner repeats nothing). Override them when the processor has something to open or flush.
//! (Without a type at all: `kinesis_client::processor::from_fn`, see the crate docs.)
//!
//! ```sh
//! # against AWS (credentials and region from the usual AWS environment):
//! cargo run --example minimal -- my-stream my-application
//! # against local services (e.g. the ones the demo starts):
//! KCL_KINESIS_ENDPOINT=http://127.0.0.1:4567 KCL_DYNAMODB_ENDPOINT=http://127.0.0.1:8000 \
//!   cargo run --example minimal -- my-stream my-application
//! ```
//!
//! Delivery is at-least-once: after a crash, the next owner of a shard starts after the last
//! checkpoint, so the records of the last unfinished batch are delivered again.

use kinesis_client::async_trait;
use kinesis_client::{
    Checkpointer, Config, ProcessRecordsInput, ProcessorError, RecordProcessor, Scheduler,
};

struct PrintingProcessor {
    shard_id: String,
}

#[async_trait]
impl RecordProcessor for PrintingProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        for record in &input.records {
            println!(
                "{} {}: {}",
                self.shard_id,
                record.sequence_number,
                String::from_utf8_lossy(&record.data)
            );
        }
        // Everything delivered so far is done: record it. If this fails (e.g. the lease was
        // lost), returning the error makes the library deliver the batch again.
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(stream), Some(app)) = (args.next(), args.next()) else {
        eprintln!("usage: minimal STREAM APPLICATION");
        std::process::exit(2);
    };
    let config = Config::builder(app, stream).build()?;
    let sdk = aws_config::load_from_env().await;
    let endpoints = kinesis_client::aws::Endpoints {
        kinesis: std::env::var("KCL_KINESIS_ENDPOINT").ok(),
        dynamodb: std::env::var("KCL_DYNAMODB_ENDPOINT").ok(),
    };
    let factory = |shard_id: &str| PrintingProcessor {
        shard_id: shard_id.to_string(),
    };
    let scheduler = Scheduler::from_sdk_config(config, factory, &sdk, &endpoints);
    // Ctrl-C starts a graceful shutdown: processors checkpoint, leases are released.
    scheduler
        .run(async { tokio::signal::ctrl_c().await.expect("Ctrl-C handler") })
        .await?;
    Ok(())
}
