//! The daemon with `retrievalMode = FANOUT` and an amazon-kclpy processor (the recording
//! processor): records arrive by SubscribeToShard through a stream consumer the daemon
//! registers. (Shard end through fan-out cannot be shown on kinesis-mock, which never sends
//! the final `ChildShards` event: see `tests/integration/fan_out.rs`.)

use kinesis_client::retrieval::{
    ConsumerRef, ConsumerStatus, KinesisStreamClient, StreamClient, StreamRef,
};

use crate::harness::*;
use testkit::LocalAws;

/// Every record, put before and while the daemon runs, is delivered once and in order per
/// shard by fan-out; the consumer named in `fanoutConfig.consumerName` is registered; the
/// checkpoints reach the last records; a graceful stop exits 0.
#[tokio::test]
async fn kclpy_processor_reads_by_enhanced_fan_out() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("fanout")?;
    let output = scratch.file("out.txt");
    let (stream, mut put) = stream_with_records(&aws, "e2e-fo", 2, "before", 30).await?;
    let app = testkit::unique_name("e2e-fo-app");
    let consumer = format!("{app}-consumer");
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &recording_processor()]),
    )
    .set("retrievalMode", "FANOUT")
    .set("fanoutConfig.consumerName", &consumer)
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(&scratch.path, &props, &python_env(&kclpy, &output))?;

    daemon
        .until(LIMIT, "the first 30 records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;
    let kinesis = aws.kinesis_client();
    put.extend(
        testkit::put_records(&kinesis, &stream, testkit::numbered_records("during", 30)).await?,
    );
    daemon
        .until(LIMIT, "all 60 records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;

    let out = Output::read(&output);
    for (shard, want) in expected_by_shard(&put) {
        assert_eq!(
            out.by_shard()[&shard],
            want,
            "{shard}: deliveries (exactly once, in order)"
        );
    }
    let client = KinesisStreamClient::new(aws.kinesis_client(), StreamRef::Name(stream.clone()));
    let registered = client
        .describe_stream_consumer(&ConsumerRef::Name(consumer.clone()))
        .await?
        .expect("the daemon registered fanoutConfig.consumerName");
    assert_eq!(registered.status, ConsumerStatus::Active);
    let log = daemon.log();
    assert!(
        log.contains("registered the stream consumer"),
        "the log says so:\n{log}"
    );
    assert!(!log.contains("not implemented"), "no fallback:\n{log}");

    let (status, _) = daemon.terminate(LIMIT).await?;
    assert!(status.success(), "exit status {status}");
    let leases = leases(&aws, &app).await;
    for (shard, want) in expected_by_shard(&put) {
        assert_eq!(
            checkpoint_seq(&leases[&shard]).as_ref(),
            want.last().map(|(seq, _)| seq),
            "{shard}: checkpointed through the last record"
        );
    }
    Ok(())
}
