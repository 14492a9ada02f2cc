//! The recording kclpy processor (`samples/python/recording_processor.py`): exact delivery,
//! per-shard order, and a reshard while the daemon runs.

use kinesis_client::Checkpoint;

use crate::harness::*;
use testkit::LocalAws;

/// Every record is delivered exactly once and in shard order; after a split of one shard
/// mid-run, the parent reaches SHARD_END in the lease table (through the processor's
/// `shard_ended` checkpoint) and its children's records are delivered only after all of the
/// parent's.
#[tokio::test]
async fn every_record_in_order_and_a_split_mid_run() -> anyhow::Result<()> {
    let kclpy = kclpy().await?;
    let aws = LocalAws::shared().await?;
    let scratch = Scratch::new("recording-split")?;
    let output = scratch.file("out.txt");
    let (stream, mut put) = stream_with_records(&aws, "e2e-split", 2, "before", 40).await?;
    let app = testkit::unique_name("e2e-split-app");
    let props = Props::new(
        &aws,
        &stream,
        &app,
        &command_line(&[&kclpy.python, &recording_processor()]),
    )
    // Keep the parent's lease after the split, so that its SHARD_END can be asserted.
    .set("cleanupLeasesUponShardCompletion", "false")
    .write(&scratch.file("app.properties"))?;
    let mut daemon = Daemon::start(&scratch.path, &props, &python_env(&kclpy, &output))?;

    daemon
        .until(LIMIT, "the first 40 records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;

    // Split shard 0 at the middle of its hash key range, while the daemon runs.
    let kinesis = aws.kinesis_client();
    let (parent, children) = split_first_shard(&kinesis, &stream).await?;

    let after =
        testkit::put_records(&kinesis, &stream, testkit::numbered_records("after", 60)).await?;
    assert!(
        after.iter().any(|p| children.contains(&p.shard_id)),
        "records after the split land in the children"
    );
    put.extend(after);
    daemon
        .until(LIMIT, "all 100 records", || {
            std::future::ready(all_delivered(&Output::read(&output), &put).then_some(()))
        })
        .await;

    let out = Output::read(&output);
    // Exactly once, in sequence order, with the payloads that were put.
    let expected = expected_by_shard(&put);
    let got = out.by_shard();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "shards with deliveries"
    );
    for (shard, want) in &expected {
        assert_eq!(
            &got[shard], want,
            "{shard}: deliveries (exactly once, in order)"
        );
    }
    // Parent: shard_ended checkpointed SHARD_END.
    let (ended_at, _) = out
        .shard_events("shard_ended", &parent)
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("{parent} never got shardEnded"));
    let parent_last = out
        .records()
        .filter(|r| r.1 == parent)
        .map(|r| r.0)
        .max()
        .unwrap();
    assert!(parent_last < ended_at);
    for child in &children {
        if let Some(first) = out.records().find(|r| r.1 == child).map(|r| r.0) {
            assert!(
                first > ended_at,
                "{child}'s first record (line {first}) must come after {parent} ended (line {ended_at})"
            );
        }
    }
    let leases = leases(&aws, &app).await;
    assert_eq!(leases[&parent].checkpoint, Checkpoint::ShardEnd, "{parent}");
    let mut parent_children = leases[&parent].child_shard_ids.clone();
    parent_children.sort();
    let mut want_children = children.clone();
    want_children.sort();
    assert_eq!(parent_children, want_children, "childShardIds of {parent}");
    for child in &children {
        assert_eq!(
            leases[child].parent_shard_ids,
            vec![parent.clone()],
            "{child}"
        );
    }
    // No shard was restarted: one child process each, told its stream (KCL_STREAM_NAME:
    // amazon-kclpy does not pass the initialize message's `streamName` on).
    for shard in expected.keys() {
        let inits = out.shard_events("initialize", shard);
        assert_eq!(inits.len(), 1, "{shard} restarted");
        assert_eq!(inits[0].1.get(2), Some(&stream), "{shard}: its stream");
    }
    // The parent's child process exited on its own after shardEnded (stdin closed).
    daemon
        .until(LIMIT, "the parent's child process to exit", || {
            std::future::ready(
                (!Output::read(&output)
                    .shard_events("exit", &parent)
                    .is_empty())
                .then_some(()),
            )
        })
        .await;

    let (status, _) = daemon.terminate(LIMIT).await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}
