//! # One application over several streams
//!
//! What it teaches: a multi-stream application names its streams with a
//! [`MultiStreamTracker`]; each worker asks it again every minute, so streams can join and
//! leave the set while the fleet runs. Each stream is named by account, name and creation
//! epoch (its lease keys are `account:name:epoch:shardId`, as the Java KCL's), so a stream
//! deleted and re-created under its name is a new stream. This tracker takes the stream names
//! from the command line and asks Kinesis (DescribeStreamSummary) for each one's account and
//! creation time. Every processor is told its stream and shard.
//!
//! ```sh
//! KCL_KINESIS_ENDPOINT=... KCL_DYNAMODB_ENDPOINT=... cargo run --example multi_stream -- APPLICATION STREAM...
//! ```

use kinesis_client::multi_stream::{
    FormerStreamsLeasesDeletionStrategy, MultiStreamTracker, StreamConfig, TrackerError,
};
use kinesis_client::{async_trait, processor, Config, InitialPosition, Scheduler};
use kinesis_client::{ProcessRecordsInput, StreamIdentifier};
use std::time::Duration;

/// The streams named on the command line, identified by Kinesis.
struct NamedStreams {
    kinesis: aws_sdk_kinesis::Client,
    names: Vec<String>,
}

#[async_trait]
impl MultiStreamTracker for NamedStreams {
    async fn stream_config_list(&self) -> Result<Vec<StreamConfig>, TrackerError> {
        let mut streams = Vec::new();
        for name in &self.names {
            let summary = self
                .kinesis
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await?
                .stream_description_summary
                .ok_or("no stream summary")?;
            // The account and the name from the stream's ARN.
            let epoch = summary.stream_creation_timestamp.secs() as u64;
            let id = StreamIdentifier::from_arn(&summary.stream_arn, epoch)?;
            streams.push(StreamConfig::new(id, InitialPosition::TrimHorizon));
        }
        Ok(streams)
    }

    fn former_streams_leases_deletion_strategy(&self) -> FormerStreamsLeasesDeletionStrategy {
        // Delete the leases of a stream that has left the set for a day (or at once, when it
        // no longer exists).
        FormerStreamsLeasesDeletionStrategy::AutoDetectionAndDeferredDeletion {
            wait: Duration::from_secs(24 * 3600),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(app) = args.next() else {
        eprintln!("usage: multi_stream APPLICATION STREAM...");
        std::process::exit(2);
    };
    let names: Vec<String> = args.collect();
    let sdk = aws_config::load_from_env().await;
    let endpoints = kinesis_client::aws::Endpoints {
        kinesis: std::env::var("KCL_KINESIS_ENDPOINT").ok(),
        dynamodb: std::env::var("KCL_DYNAMODB_ENDPOINT").ok(),
    };
    let tracker = NamedStreams {
        kinesis: kinesis_client::aws::kinesis_client(&sdk, endpoints.kinesis.as_deref()),
        names,
    };
    let config = Config::multi_stream_builder(app, tracker).build()?;
    let factory = |_: &str| {
        processor::from_fn(|input: ProcessRecordsInput| async move {
            println!(
                "{} {}: {} records",
                input.stream.name(),
                input.shard_id,
                input.records.len()
            );
            Ok(())
        })
    };
    let scheduler = Scheduler::from_sdk_config(config, factory, &sdk, &endpoints);
    scheduler
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
