//! # Graceful shutdown on SIGTERM (containers, systemd, Kubernetes)
//!
//! What it teaches: the library installs no signal handlers; the application passes the
//! shutdown signal to [`Scheduler::run`] (or calls [`kinesis_client::SchedulerHandle::request_shutdown`]).
//! On shutdown every processor gets `Shutdown::Requested` **while its lease is still held**
//! and checkpoints; then the worker releases its leases, so other workers take the shards at
//! once instead of waiting for the failover time. The whole sequence is bounded by
//! `graceful_shutdown_timeout` (give your orchestrator's termination grace period a little
//! more than that). A second signal exits immediately.
//!
//! ```sh
//! KCL_KINESIS_ENDPOINT=... KCL_DYNAMODB_ENDPOINT=... cargo run --example graceful_shutdown -- STREAM APPLICATION &
//! kill -TERM $!
//! ```

use kinesis_client::async_trait;
use kinesis_client::{
    Checkpointer, Config, ProcessRecordsInput, ProcessorError, RecordProcessor, Scheduler, Shutdown,
};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

struct CountingProcessor {
    shard_id: String,
    seen: usize,
}

#[async_trait]
impl RecordProcessor for CountingProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        _checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        // Checkpoint rarely (here: never during processing) and rely on the graceful shutdown
        // checkpoint: cheaper, and a clean stop still repeats nothing.
        self.seen += input.records.len();
        Ok(())
    }

    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        match reason {
            Shutdown::Requested { checkpointer } | Shutdown::ShardEnded { checkpointer } => {
                checkpointer.checkpoint().await?;
                eprintln!(
                    "{}: checkpointed after {} records",
                    self.shard_id, self.seen
                );
            }
            // The lease was lost (or a reason a later version adds): no checkpoint is possible.
            _ => eprintln!(
                "{}: lease lost after {} records (not checkpointed)",
                self.shard_id, self.seen
            ),
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(stream), Some(app)) = (args.next(), args.next()) else {
        eprintln!("usage: graceful_shutdown STREAM APPLICATION");
        std::process::exit(2);
    };
    let config = Config::builder(app, stream)
        .graceful_shutdown_timeout(Duration::from_secs(20))
        .build()?;
    let sdk = aws_config::load_from_env().await;
    let endpoints = kinesis_client::aws::Endpoints {
        kinesis: std::env::var("KCL_KINESIS_ENDPOINT").ok(),
        dynamodb: std::env::var("KCL_DYNAMODB_ENDPOINT").ok(),
    };
    let scheduler = Scheduler::from_sdk_config(
        config,
        |shard: &str| CountingProcessor {
            shard_id: shard.into(),
            seen: 0,
        },
        &sdk,
        &endpoints,
    );

    let handle = scheduler.handle();
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("shutting down gracefully");
        handle.request_shutdown();
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
    scheduler.run(std::future::pending()).await?;
    eprintln!("leases released; bye");
    Ok(())
}
