//! # Poison records: a retry policy and a dead-letter file
//!
//! What it teaches: a record that can never be processed (here: a payload that is not a
//! number) fails its batch again and again. By default the library redelivers it forever,
//! with a growing backoff, and `input.attempt` says which delivery this is. With a
//! [`RetryPolicy`] (3 deliveries, or records older than 10 minutes), the processor's
//! `retries_exhausted` hook is asked once what to do with the failing records: this one
//! appends them to a dead-letter file (shard, sequence number, payload) and skips them
//! (`RetryDecision::Skip`); if it cannot write the file, it keeps retrying
//! (`RetryDecision::KeepRetrying`) rather than lose them. The library logs every skip with
//! the shard and the sequence numbers and counts it (`SchedulerHandle::skipped_records`).
//!
//! Records after a failing one are not held up longer than the policy allows, and records
//! before it are not redelivered: the processor reports the ones it finished with
//! `ProcessorError::done_through`, so the redelivery starts at the poison record.
//!
//! ```sh
//! KCL_KINESIS_ENDPOINT=... KCL_DYNAMODB_ENDPOINT=... cargo run --example dead_letter -- STREAM APPLICATION
//! ```

use kinesis_client::async_trait;
use kinesis_client::processor::{RetriesExhausted, RetryDecision, RetryPolicy};
use kinesis_client::{
    Checkpointer, Config, ProcessRecordsInput, ProcessorError, RecordProcessor, Scheduler,
};
use std::io::Write;
use std::time::Duration;

const DEAD_LETTER_FILE: &str = "dead-letter.tsv";

struct SummingProcessor {
    sum: i64,
}

#[async_trait]
impl RecordProcessor for SummingProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        if input.attempt > 1 {
            eprintln!(
                "delivery #{} of {} records",
                input.attempt,
                input.records.len()
            );
        }
        for (i, record) in input.records.iter().enumerate() {
            let parsed = std::str::from_utf8(&record.data)
                .map_err(|e| e.to_string())
                .and_then(|s| s.trim().parse::<i64>().map_err(|e| e.to_string()));
            match parsed {
                Ok(n) => self.sum += n,
                Err(why) => {
                    let error = ProcessorError::new(format!(
                        "record {} is not a number: {why}",
                        record.sequence_number
                    ));
                    // The records before this one are done: redeliver from here on.
                    return Err(match i.checked_sub(1) {
                        Some(before) => error.done_through(&input.records[before]),
                        None => error,
                    });
                }
            }
        }
        println!("sum so far: {}", self.sum);
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn retries_exhausted(&mut self, failed: RetriesExhausted) -> RetryDecision {
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(DEAD_LETTER_FILE)?;
            for r in &failed.records {
                let payload = String::from_utf8_lossy(&r.data).replace(['\t', '\n'], " ");
                writeln!(
                    file,
                    "{}\t{}\t{payload}",
                    failed.shard_id, r.sequence_number
                )?;
            }
            file.sync_all()
        })();
        match written {
            Ok(()) => {
                eprintln!(
                    "{}: {} records after {} attempts ({}) went to {DEAD_LETTER_FILE}",
                    failed.shard_id,
                    failed.records.len(),
                    failed.attempts,
                    failed.last_error
                );
                RetryDecision::Skip
            }
            Err(e) => {
                eprintln!("cannot write {DEAD_LETTER_FILE} ({e}); keeping the records");
                RetryDecision::KeepRetrying
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(stream), Some(app)) = (args.next(), args.next()) else {
        eprintln!("usage: dead_letter STREAM APPLICATION");
        std::process::exit(2);
    };
    let config = Config::builder(app, stream)
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(3)
                .with_max_record_age(Duration::from_secs(600)),
        )
        .build()?;
    let sdk = aws_config::load_from_env().await;
    let endpoints = kinesis_client::aws::Endpoints {
        kinesis: std::env::var("KCL_KINESIS_ENDPOINT").ok(),
        dynamodb: std::env::var("KCL_DYNAMODB_ENDPOINT").ok(),
    };
    let scheduler = Scheduler::from_sdk_config(
        config,
        |_: &str| SummingProcessor { sum: 0 },
        &sdk,
        &endpoints,
    );
    let handle = scheduler.handle();
    scheduler
        .run(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    eprintln!("skipped {} records in all", handle.skipped_records());
    Ok(())
}
