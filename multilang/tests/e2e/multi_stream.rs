//! Issue 27: one daemon, one properties file, two streams (`streamNames`), an unmodified
//! amazon-kclpy processor (`samples/python/recording_processor.py`).

use std::collections::BTreeSet;

use crate::harness::*;
use kinesis_client::StreamIdentifier;
use testkit::LocalAws;

/// Every record of both streams reaches a processor, one child per shard of each stream, each
/// told its stream; the leases are the Java KCL's multi-stream leases, named by the account
/// and creation time Kinesis reports.
#[tokio::test]
async fn kclpy_processor_consumes_two_streams_from_one_properties_file() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("multi-stream")?;
    let output = scratch.file("out.txt");
    let (one, put_one) = stream_with_records(&aws, "e2e-ms-one", 2, "one", 30).await?;
    let (two, put_two) = stream_with_records(&aws, "e2e-ms-two", 1, "two", 20).await?;
    let app = testkit::unique_name("e2e-ms-app");
    let props = Props::new(
        &aws,
        &one,
        &app,
        &command_line(&[&kclpy.python, &recording_processor()]),
    )
    .without("streamName")
    .set("streamNames", &format!("{one}, {two}"))
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(&scratch.path, &props, &python_env(&kclpy, &output))?;

    let want: BTreeSet<Vec<u8>> = put_one
        .iter()
        .chain(&put_two)
        .map(|p| p.data.clone())
        .collect();
    daemon
        .until(LIMIT, "every record of both streams", || {
            let got: BTreeSet<Vec<u8>> = Output::read(&output)
                .records()
                .map(|r| r.3.to_vec())
                .collect();
            std::future::ready(want.is_subset(&got).then_some(()))
        })
        .await;

    // One child per shard of each stream, started once, told its stream.
    let out = Output::read(&output);
    let mut inits: Vec<(String, String)> = out
        .events("initialize")
        .into_iter()
        .map(|(_, shard, args)| (shard, args.get(2).cloned().unwrap_or_default()))
        .collect();
    inits.sort();
    let mut expected: Vec<(String, String)> = put_one
        .iter()
        .map(|p| (p.shard_id.clone(), one.clone()))
        .chain(put_two.iter().map(|p| (p.shard_id.clone(), two.clone())))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    expected.sort();
    assert_eq!(inits, expected, "(shard, stream) of each initialize");

    // The leases: account and creation epoch from DescribeStreamSummary.
    let kinesis = aws.kinesis_client();
    let mut ids = BTreeSet::new();
    for name in [&one, &two] {
        let s = kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await?
            .stream_description_summary
            .unwrap();
        let epoch = s.stream_creation_timestamp.secs().max(1) as u64;
        ids.insert(StreamIdentifier::from_arn(&s.stream_arn, epoch)?);
    }
    let leases = leases(&aws, &app).await;
    assert_eq!(leases.len(), 3, "{:?}", leases.keys());
    for (key, lease) in &leases {
        let (stream, shard) = StreamIdentifier::split_lease_key(key).expect("multi-stream key");
        assert!(ids.contains(&stream), "{key} names a stream of {ids:?}");
        assert_eq!(lease.shard_id(), shard);
    }

    let (status, _) = daemon.terminate(LIMIT).await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}
